"""A local stand-in for Zenodo's REST deposit API on 127.0.0.1, following its documented
endpoints (developers.zenodo.org, "Deposit"): the real service cannot be reached from the test
machines.

- ``POST /api/deposit/depositions`` -> 201, a draft with ``links.bucket`` and a pre-reserved DOI
- ``GET /api/deposit/depositions/<id>`` and ``GET .../<id>/files`` (``checksum``: MD5, hex)
- ``PUT /api/files/<bucket>/<name>`` -> 201 with ``checksum: "md5:..."``
- ``PUT /api/deposit/depositions/<id>`` with ``{"metadata": ...}`` -> 200, or 400 with the
  fields that are missing
- ``POST /api/deposit/depositions/<id>/actions/publish`` -> 202 with the DOI

Every call needs ``Authorization: Bearer <token>`` (401 otherwise). ``break_upload`` makes the
upload of that file name drop the connection half-way through its body, once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUIRED = ("upload_type", "title", "creators", "description")


class ZenodoState:
    def __init__(self, token: str) -> None:
        self.token = token
        self.depositions: dict[int, dict] = {}
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.break_upload: str | None = None
        self.next_id = 1001


def _handler(state: ZenodoState, base: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: object | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, missing: tuple[str, ...] = ()) -> None:
            errors = [{"field": f"metadata.{k}", "message": "Field is required."} for k in missing]
            self._send(status, {"status": status, "message": message, "errors": errors})

        def _deposition(self, number: int) -> dict:
            deposition = state.depositions[number]
            bucket = state.buckets[deposition["bucket"]]
            return {
                "id": number,
                "state": deposition["state"],
                "submitted": deposition["state"] == "done",
                "metadata": deposition["metadata"],
                "links": {
                    "bucket": f"{base[0]}/api/files/{deposition['bucket']}",
                    "html": f"{base[0]}/deposit/{number}",
                    "publish": f"{base[0]}/api/deposit/depositions/{number}/actions/publish",
                },
                "files": self._files(bucket),
            }

        @staticmethod
        def _files(bucket: dict[str, bytes]) -> list[dict]:
            return [
                {
                    "id": name,
                    "filename": name,
                    "filesize": len(data),
                    "checksum": hashlib.md5(data).hexdigest(),
                }
                for name, data in bucket.items()
            ]

        def _route(self, method: str) -> None:
            state.requests.append((method, self.path, dict(self.headers)))
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._error(401, "The server could not verify that you are authorized.")
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            length = int(self.headers.get("Content-Length") or 0)
            if parts[:3] == ["api", "deposit", "depositions"]:
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                self._depositions(method, parts[3:], body)
            elif parts[:2] == ["api", "files"] and method == "PUT" and len(parts) == 4:
                self._upload(parts[2], parts[3], length)
            else:
                self._send(404, {"status": 404, "message": "not found"})

        def _depositions(self, method: str, rest: list[str], body: dict) -> None:
            if not rest and method == "POST":
                number = state.next_id
                state.next_id += 1
                bucket = str(uuid.uuid4())
                state.buckets[bucket] = {}
                doi = f"10.5072/zenodo.{number}"
                state.depositions[number] = {
                    "bucket": bucket,
                    "state": "unsubmitted",
                    "metadata": {"prereserve_doi": {"doi": doi, "recid": number}},
                }
                self._send(201, self._deposition(number))
                return
            number = int(rest[0]) if rest and rest[0].isdigit() else None
            if number not in state.depositions:
                self._send(404, {"status": 404, "message": "PID does not exist."})
                return
            deposition = state.depositions[number]
            if rest[1:] == [] and method == "GET":
                self._send(200, self._deposition(number))
            elif rest[1:] == ["files"] and method == "GET":
                self._send(200, self._files(state.buckets[deposition["bucket"]]))
            elif rest[1:] == [] and method == "PUT":
                metadata = body.get("metadata", {})
                missing = [k for k in REQUIRED if not metadata.get(k)]
                if missing:
                    self._error(400, "Validation error.", tuple(missing))
                    return
                deposition["metadata"] = {**deposition["metadata"], **metadata}
                self._send(200, self._deposition(number))
            elif rest[1:] == ["actions", "publish"] and method == "POST":
                if not state.buckets[deposition["bucket"]]:
                    self._error(400, "Minimum one file must be provided.")
                    return
                deposition["state"] = "done"
                doi = deposition["metadata"]["prereserve_doi"]["doi"]
                links = {
                    "record_html": f"{base[0]}/records/{number}",
                    "doi": f"https://doi.org/{doi}",
                }
                done = {**self._deposition(number), "doi": doi, "record_id": number}
                self._send(202, {**done, "links": links})
            else:
                self._send(405, {"status": 405, "message": "method not allowed"})

        def _upload(self, bucket: str, name: str, length: int) -> None:
            if bucket not in state.buckets:
                self._send(404, {"status": 404, "message": "bucket not found"})
                return
            if state.break_upload == name:
                state.break_upload = None
                self.rfile.read(length // 2)
                self.close_connection = True
                self.connection.shutdown(2)  # cut off mid-body: no answer
                return
            data = self.rfile.read(length)
            state.buckets[bucket][name] = data
            digest = hashlib.md5(data).hexdigest()
            self._send(201, {"key": name, "size": len(data), "checksum": f"md5:{digest}"})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PUT(self):
            self._route("PUT")

    return Handler


@contextmanager
def zenodo_server(token: str):
    """Serve the deposit API on 127.0.0.1 (a free port); yield (base API URL, state)."""
    state = ZenodoState(token)
    base: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, base))
    base.append(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{base[0]}/api", state
    finally:
        server.shutdown()
        server.server_close()

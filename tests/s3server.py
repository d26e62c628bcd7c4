"""A real S3 API on 127.0.0.1 for the tests (moto's server mode), and a TCP relay in front of it
that can be cut mid-transfer to play a server dying during a push."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3_environment(bucket: str) -> Iterator[str]:
    """:func:`moto_s3` with the AWS variables a client needs set in the environment only
    (moto accepts any credentials; none is real and none is written to a file)."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        for key, value in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            # One attempt per request: a dead server is then reported in seconds, not after
            # botocore's back-off (the tests check that failures are loud, not their delay).
            ("AWS_MAX_ATTEMPTS", "1"),
        ):
            patch.setenv(key, value)
        with moto_s3(bucket) as endpoint:
            yield endpoint


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """Start moto's S3 server on a free loopback port with ``bucket``; yield its endpoint."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


class Relay:
    """Forward TCP connections from a loopback port to ``target``; after ``cut_after`` bytes
    from clients, close every connection and stop listening (a server that died)."""

    def __init__(self, target_port: int, cut_after: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.forwarded = 0
        self.port = free_port()
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.cut.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _serve(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                if count:
                    with self._lock:
                        self.forwarded += len(data)
                        over = self.cut_after is not None and self.forwarded > self.cut_after
                    if over:
                        threading.Thread(target=self.stop, daemon=True).start()
                        return
                sink.sendall(data)
        except OSError:
            pass

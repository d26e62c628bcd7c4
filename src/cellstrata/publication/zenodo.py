"""A Zenodo deposit through its REST API: a draft (``POST /api/deposit/depositions``), the
files through the draft's bucket (``PUT <links.bucket>/<name>``), the metadata (``PUT
/api/deposit/depositions/<id>``) and, when asked, publication (``POST
.../actions/publish``).

The token comes from the environment only and travels in the ``Authorization`` header, never
in a URL, a file or a message. An interrupted upload resumes: the draft's id is recorded in
``publications.yaml`` as soon as it exists, and the next run asks the service which files it
holds (``GET .../files``) and sends only those whose MD5 it does not report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from cellstrata.config import schema_default
from cellstrata.io import atomic_path
from cellstrata.levels import PROVENANCE_PATH
from cellstrata.stewardship.provenance import md5_file

#: Where a workspace lists its deposits (the user commits it).
PUBLICATIONS = "publications.yaml"
#: Each deposit also in the provenance of its plates (YAML: never taken for a job record).
PUBLICATIONS_DIR = "publications"


class ZenodoError(RuntimeError):
    """The service refused or could not be reached; what was uploaded stays in the draft."""


class Zenodo:
    """The deposit endpoints of a Zenodo service at ``url`` (e.g. ``https://zenodo.org/api``)."""

    def __init__(self, url: str, token: str, *, timeout: float = 120.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, url: str, *, expect: Sequence[int], **kwargs: Any) -> Any:
        import requests

        if not url.startswith(("http://", "https://")):
            url = f"{self.url}{url}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as err:
            # The exception's text names the URL, never the headers that hold the token.
            raise ZenodoError(f"{method} {url}: {type(err).__name__}: {err}") from None
        if response.status_code not in expect:
            try:
                body = response.json()
                message = body.get("message", "")
                errors = "; ".join(
                    f"{e.get('field')}: {e.get('message') or e.get('messages')}"
                    for e in body.get("errors") or []
                )
            except ValueError:
                message, errors = response.text[:200], ""
            raise ZenodoError(
                f"{method} {url}: HTTP {response.status_code} {message}"
                + (f" ({errors})" if errors else "")
            )
        return response.json() if response.content else {}

    def create(self) -> dict[str, Any]:
        """A new, empty draft."""
        return self._call("POST", "/deposit/depositions", json={}, expect=(201,))

    def get(self, deposition: int | str) -> dict[str, Any]:
        return self._call("GET", f"/deposit/depositions/{deposition}", expect=(200,))

    def files(self, deposition: int | str) -> list[dict[str, Any]]:
        """The draft's files: ``filename``, ``filesize``, ``checksum`` (MD5, hex)."""
        return self._call("GET", f"/deposit/depositions/{deposition}/files", expect=(200,))

    def upload(self, bucket: str, name: str, path: Path) -> dict[str, Any]:
        """Send one file to the draft's bucket; the service answers with its checksum."""
        with open(path, "rb") as handle:
            return self._call("PUT", f"{bucket}/{name}", data=handle, expect=(200, 201))

    def set_metadata(self, deposition: int | str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        return self._call(
            "PUT", f"/deposit/depositions/{deposition}", json={"metadata": metadata}, expect=(200,)
        )

    def publish(self, deposition: int | str) -> dict[str, Any]:
        return self._call(
            "POST", f"/deposit/depositions/{deposition}/actions/publish", expect=(200, 202)
        )


def token_from_environment(variable: str) -> str:
    """The access token in ``$variable``.

    Raises
    ------
    ZenodoError
        When it is not set (the token is read from nowhere else).
    """
    token = os.environ.get(variable)
    if not token:
        raise ZenodoError(
            f"no Zenodo token: set the environment variable {variable} (a personal access "
            "token with deposit:write; read from the environment only, never from a file)"
        )
    return token


def deposit(
    client: Zenodo,
    files: Sequence[Path],
    metadata: Mapping[str, Any],
    *,
    draft: int | str | None = None,
    publish: bool = False,
    on_draft: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Deposit ``files`` with ``metadata`` into a draft (``draft``: one made earlier, to
    resume), check each file's checksum as the service reports it, and publish on request.

    ``on_draft`` receives the draft as soon as it exists, before any upload, so that an
    interrupted run can be resumed.

    Returns
    -------
    dict
        ``id``, ``doi``, ``state`` (``draft`` or ``published``), ``url``, ``uploaded`` and
        ``skipped`` (file names).
    """
    deposition = client.get(draft) if draft is not None else client.create()
    if on_draft is not None:
        on_draft(deposition)
    number = deposition["id"]
    held = {f["filename"]: f.get("checksum") for f in client.files(number)}
    uploaded, skipped = [], []
    for path in files:
        checksum = md5_file(path)
        if held.get(path.name) == checksum:
            skipped.append(path.name)
            continue
        answer = client.upload(deposition["links"]["bucket"], path.name, path)
        if answer.get("checksum") != f"md5:{checksum}":
            raise ZenodoError(
                f"{path.name}: the service holds checksum {answer.get('checksum')}, the file "
                f"md5:{checksum}; run the upload again to resend it"
            )
        uploaded.append(path.name)
    client.set_metadata(number, metadata)
    state, doi = "draft", (deposition.get("metadata", {}).get("prereserve_doi") or {}).get("doi")
    url = deposition.get("links", {}).get("html")
    if publish:
        done = client.publish(number)
        state, doi = "published", done.get("doi") or doi
        url = done.get("links", {}).get("record_html") or url
    return {
        "id": number,
        "doi": doi,
        "state": state,
        "url": url,
        "uploaded": uploaded,
        "skipped": skipped,
    }


def zenodo_metadata(
    config: Mapping[str, Any],
    *,
    title: str,
    description: str,
    licenses: Sequence[str],
    holders: Sequence[str],
    version: str | None,
) -> dict[str, Any]:
    """The deposit's metadata (Zenodo's deposition ``metadata``): a dataset, open access."""
    publication = config.get("publication") or {}
    creators = (
        [
            {k: v for k, v in person.items() if v is not None}
            for person in publication.get("creators") or []
        ]
        or [{"name": holder} for holder in holders]
        or [{"name": config["experiment"]}]
    )
    metadata = {
        "upload_type": "dataset",
        "title": title,
        "description": description,
        "creators": creators,
        "access_right": "open",
        "license": licenses[0].lower() if len(licenses) == 1 else "other-open",
        "keywords": list(publication.get("keywords") or []),
    }
    if version:
        metadata["version"] = version
    return metadata


def read_publications(workspace: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(workspace, PUBLICATIONS)
    return (yaml.safe_load(path.read_text()) or {}).get("publications", []) if path.exists() else []


def record_publication(workspace: str | os.PathLike, entry: Mapping[str, Any]) -> Path:
    """Add or update (by service and id) a deposit in ``publications.yaml``."""
    entries = [
        e
        for e in read_publications(workspace)
        if (e.get("service"), e.get("id")) != (entry.get("service"), entry.get("id"))
    ]
    entries.append(dict(entry))
    path = Path(workspace, PUBLICATIONS)
    with atomic_path(path) as tmp:
        tmp.write_text(
            "# Deposits made by `cellstrata publish --upload`; commit this file.\n"
            + yaml.safe_dump({"publications": entries}, sort_keys=False)
        )
    return path


def resumable_draft(
    workspace: str | os.PathLike, *, service: str, package: str
) -> int | str | None:
    """The draft an earlier, unfinished upload of ``package`` left (None: none)."""
    for entry in reversed(read_publications(workspace)):
        if (entry.get("service"), entry.get("package"), entry.get("state")) == (
            service,
            package,
            "draft",
        ):
            return entry["id"]
    return None


def zenodo_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The Zenodo base URL and token variable (``publication.zenodo``, schema defaults)."""
    given = (config.get("publication") or {}).get("zenodo") or {}
    return {
        key: given.get(key) or schema_default("publication", "zenodo", key)
        for key in ("url", "token_env")
    }


def upload_package(
    config: Mapping[str, Any],
    workspace: str | os.PathLike,
    out: str | os.PathLike,
    *,
    publish: bool = False,
    day: date | None = None,
) -> list[dict[str, Any]]:
    """Deposit the package ``cellstrata publish`` wrote in ``out`` (each ``part-N`` a record
    of its own): its zip, README and metadata, after checking every checksum again; resume
    the draft an interrupted run left. Each deposit goes to ``publications.yaml`` and to the
    provenance of its plates (:data:`PUBLICATIONS_DIR` in each plate's provenance folder).
    """
    from cellstrata.publication.crate import verify_crate, zip_crate

    workspace, out = Path(workspace), Path(out)
    settings = zenodo_settings(config)
    client = Zenodo(settings["url"], token_from_environment(settings["token_env"]))
    directories = sorted(p for p in out.glob("part-*") if p.is_dir()) or [out]
    results = []
    for directory in directories:
        verify_crate(directory)
        archive = directory.with_suffix(".zip")
        if not archive.exists():
            zip_crate(directory)
        crate = yaml.safe_load((directory / "ro-crate-metadata.json").read_text())
        graph = {e["@id"]: e for e in crate["@graph"]}
        root = graph["./"]
        licences = [root["license"]] if isinstance(root["license"], dict) else root["license"]
        creators = root.get("creator") or []
        creators = [creators] if isinstance(creators, dict) else creators
        plates = [
            p["name"]
            for p in yaml.safe_load((directory / "workflow/config/config.yaml").read_text())[
                "plates"
            ]
        ]
        metadata = zenodo_metadata(
            config,
            title=root["name"],
            description=root["description"],
            licenses=[graph[x["@id"]]["identifier"] for x in licences],
            holders=[graph[c["@id"]]["name"] for c in creators],
            version=None,
        )
        key = directory.relative_to(out.parent).as_posix()
        entry = {
            "service": settings["url"],
            "package": key,
            "plates": plates,
            "date": (day or date.today()).isoformat(),
        }

        def drafted(deposition: Mapping[str, Any], entry=entry) -> None:
            doi = (deposition.get("metadata", {}).get("prereserve_doi") or {}).get("doi")
            record_publication(
                workspace, {**entry, "id": deposition["id"], "doi": doi, "state": "draft"}
            )

        files = [archive, directory / "README.md", directory / "ro-crate-metadata.json"]
        result = deposit(
            client,
            files,
            metadata,
            draft=resumable_draft(workspace, service=settings["url"], package=key),
            publish=publish,
            on_draft=drafted,
        )
        done = {
            **entry,
            "id": result["id"],
            "doi": result["doi"],
            "state": result["state"],
            "url": result["url"],
            "files": {f.name: md5_file(f) for f in files},
        }
        record_publication(workspace, done)
        for plate in plates:
            path = Path(
                workspace, PROVENANCE_PATH.format(plate=plate), PUBLICATIONS_DIR,
                f"zenodo-{result['id']}.yaml",
            )  # fmt: skip
            with atomic_path(path) as tmp:
                tmp.write_text(yaml.safe_dump(done, sort_keys=False))
        results.append(result)
    return results

"""The guard of every publication: what must never appear in a package (other plates' names,
holders, agreements and paths, absolute paths of this machine, the records' host and user),
and a byte-by-byte search of a written package for it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cellstrata.publication.crate import repository_root
from cellstrata.publication.package import files_under
from cellstrata.stewardship.origin import plate_origin


def forbidden_strings(
    config: Mapping[str, Any],
    plates: Sequence[str],
    workspace: Path,
    records: Iterable[Mapping[str, Any]],
) -> dict[str, str]:
    """What must never appear in a package of ``plates``: each other plate's name, holder,
    agreement and paths (where no published plate shares them), the absolute paths of the
    workspace, the repository and the home directory, and the host and user names of the
    records. Value: why."""
    published = [plate_origin(config, p) for p in plates]
    shared = {str(o.get(k)) for o in published for k in ("holder", "agreement")}
    entries = {p["name"]: p for p in config["plates"]}
    shared_paths = {str(entries[p].get("platemap")) for p in plates}
    found: dict[str, str] = {}
    for name, entry in entries.items():
        if name in plates:
            continue
        found[name] = f"plate {name} is not published"
        origin = plate_origin(config, name)
        for key in ("holder", "agreement"):
            value = origin.get(key)
            if value and str(value) not in shared:
                found[str(value)] = f"the {key} of plate {name}"
        for key in ("images", "cellprofiler", "platemap"):
            value = entry.get(key)
            if value and str(value) not in shared_paths:
                found[str(value)] = f"the {key} path of plate {name}"
    for path in {str(workspace.resolve()), str(repository_root()), str(Path.home())}:
        if len(path) > 1:
            found[path] = "an absolute path of this machine"
    for record in records:
        for key in ("host", "user"):
            value = record.get(key)
            # Too short a name matches by chance (a user "ci" inside any word).
            if value and len(str(value)) >= 5:
                found[str(value)] = f"the {key} of a provenance record"
    return found


def find_leaks(root: Path, forbidden: Mapping[str, str], skip: Sequence[str] = ()) -> list[str]:
    """Every file under ``root`` (``skip``: relative prefixes, the workflow's own source)
    whose name or bytes hold a forbidden string: ``path: why``."""
    needles = {text.encode(): why for text, why in forbidden.items() if text}
    leaks = []
    for path in files_under(root):
        relative = path.relative_to(root).as_posix()
        if any(relative.startswith(prefix) for prefix in skip):
            continue
        data = relative.encode() + b"\n" + path.read_bytes()
        leaks += [f"{relative}: {why}" for needle, why in needles.items() if needle in data]
    return leaks

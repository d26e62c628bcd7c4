"""``cellstrata publish``: a FAIR package of any level, as a Workflow Run RO-Crate.

:func:`publish` collects what may go (:mod:`.package`), splits it for a target solution,
writes each record (:mod:`.crate`), searches it for what must never leave (:mod:`.leaks`),
reads it back and checks every checksum; a package that fails any step is removed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from cellstrata.publication.crate import (
    WORKFLOW_DIR,
    WORKFLOW_PARTS,
    build_crate,
    verify_crate,
    zip_crate,
)
from cellstrata.publication.leaks import find_leaks, forbidden_strings
from cellstrata.publication.package import (
    Package,
    PublishError,
    add_references,
    collect,
    lineage_for,
    target_parts,
)


def publish(
    config: Mapping[str, Any],
    workspace: str | os.PathLike,
    out: str | os.PathLike,
    *,
    levels: Sequence[str],
    plates: Sequence[str] | None = None,
    version: str | None = None,
    day: date | None = None,
    zip_archive: bool = False,
    target: str | None = None,
    by_reference: bool = False,
    config_name: str = "config/config.yaml",
) -> list[Path]:
    """Write the package (several, ``out/part-N``, where ``target``'s per-dataset limit
    splits it), check it holds nothing it must not, read it back and check every checksum;
    return the crate directories (and their ``.zip`` with ``zip_archive``).

    Raises
    ------
    PublishError
        A refusal (see :func:`collect`, :func:`target_parts`), or a package found to hold a
        forbidden string (it is removed, nothing stays).
    """
    workspace = Path(workspace)
    out = Path(out)
    if out.exists():
        raise PublishError(f"{out} exists; publish writes a new directory")
    package = collect(
        config,
        workspace,
        levels=levels,
        plates=plates,
        version=version,
        day=day,
        config_name=config_name,
    )
    if by_reference:
        add_references(config, workspace, package)
    parts = target_parts(config, package, target) if target else [package.entries]
    forbidden = forbidden_strings(config, package.plates, workspace, package.records)
    written = []
    try:
        for index, entries in enumerate(parts):
            part = Package(
                package.plates,
                package.levels,
                package.version,
                package.day,
                entries,
                lineage_for(package.records, {e.path for e in entries}),
                list(package.notes),
            )
            if len(parts) > 1:
                part.notes.append(f"Record {index + 1} of {len(parts)} of this publication.")
            directory = out / f"part-{index + 1}" if len(parts) > 1 else out
            build_crate(config, part, workspace, directory)
            leaks = find_leaks(
                directory, forbidden, skip=[f"{WORKFLOW_DIR}/{p}" for p in WORKFLOW_PARTS]
            )
            if leaks:
                raise PublishError(
                    "publish refused: the package would hold what it must not (removed):\n"
                    + "\n".join(f"  - {leak}" for leak in leaks)
                )
            verify_crate(directory)
            written.append(directory)
            if zip_archive:
                written.append(zip_crate(directory))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        for path in written:
            path.unlink(missing_ok=True) if path.suffix == ".zip" else None
        raise
    return written

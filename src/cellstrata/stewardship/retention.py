"""Retention (keep / archive / delete) applied to a workspace: never let ``temp()`` remove what
an earlier retention kept, and remove what a level's retention no longer keeps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellstrata.levels import (
    LEVEL_PATHS,
    retention_of,
)
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.tracked import StewardshipError


def check_retention(config: Mapping[str, Any], workspace: str | os.PathLike = ".") -> None:
    """Refuse a run that would silently delete data kept under an earlier retention.

    Snakemake removes temp() outputs once their consumers finish, also outputs that an earlier
    run made while the level was kept. Such files are found through their provenance records;
    files no record names (outputs of an interrupted job, which Snakemake redoes) are not.

    Raises
    ------
    StewardshipError
        Naming the files and the explicit command that deletes them.
    """
    workspace = Path(workspace)
    retention = config["retention"]
    doomed, made_as = [], None
    for level, template in LEVEL_PATHS.items():
        if retention_of(retention, level) != "delete":
            continue
        root = workspace.joinpath(*Path(template).parts[:2])  # e.g. results/masks
        files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if not files:
            continue
        if made_as is None:  # read the records only when something is at stake
            made_as = {
                output["path"]: record["retention"]
                for record in read_records(workspace / "results")
                for output in record["outputs"]
            }
        for file in files:
            relative = file.relative_to(workspace).as_posix()
            made = made_as.get(relative)
            # Unrecorded: the output of a job killed before it wrote its record (a half-filled
            # directory, a table written just before the kill). Snakemake redoes that job
            # whatever the retention (the record is one of its outputs) and removes the file
            # first, so refusing would protect nothing, yet it blocked every later run (the
            # reliability suite's kill soak), and apply-retention, which deletes recorded
            # files only, could not clear it.
            if made is not None and made != "delete":
                doomed.append(f"{relative} (made as {made})")
    if doomed:
        listing = "\n".join(f"  - {d}" for d in doomed[:20])
        more = f"\n  ... and {len(doomed) - 20} more" if len(doomed) > 20 else ""
        raise StewardshipError(
            f"retention is now delete for {len(doomed)} existing file(s) that were kept; "
            f"Snakemake would remove them silently:\n{listing}{more}\n"
            "Run `cellstrata apply-retention` to delete them explicitly (their provenance "
            "records stay as tombstones), or set their level's retention back."
        )


def apply_retention(
    config: Mapping[str, Any], workspace: str | os.PathLike = ".", *, dry_run: bool = False
) -> list[str]:
    """Explicitly delete local outputs of levels whose retention is delete.

    Only files with a provenance record are deleted (the record stays as the tombstone).
    """
    workspace = Path(workspace)
    recorded = {
        output["path"]
        for record in read_records(workspace / "results")
        for output in record["outputs"]
    }
    removed = []
    for level, template in LEVEL_PATHS.items():
        if retention_of(config["retention"], level) != "delete":
            continue
        for plate in config["plates"]:
            files = []
            for root in workspace.glob(template.format(plate=plate["name"], version="*")):
                files += [root] if root.is_file() else list(root.rglob("*"))
            for file in files:
                relative = file.relative_to(workspace).as_posix()
                if file.is_file() and relative in recorded:
                    removed.append(relative)
                    if not dry_run:
                        file.unlink()
    return removed

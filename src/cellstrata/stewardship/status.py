"""``cellstrata status``: per plate, level and version, where its data is and in which state."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cellstrata.levels import (
    LEVELS,
    level_path,
    plate_level_versions,
    retention_kind,
)
from cellstrata.stewardship.dvc import (
    remote_has,
)
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.solutions import remote_solution
from cellstrata.stewardship.stale import stale_outputs, visible
from cellstrata.stewardship.storage import disk_usage
from cellstrata.stewardship.tracked import extra_versions, locked_outputs, tracked_outputs


def status(config: Mapping[str, Any], workspace: str | os.PathLike = ".") -> pd.DataFrame:
    """Per plate × level (× segmentation version): where its data is, and its state.

    ``remote`` is the remote the routing sends the level to, ``solution`` the storage
    solution that remote is. States: ``present`` (in the workspace), ``archived`` (on the
    archive remote, not local), ``on remote`` (kept level not local but on its remote),
    ``deleted`` (retention delete, tombstones say what existed), ``not built`` (a level the
    config turns off, such as crops), ``missing`` (nowhere known).
    """
    workspace = Path(workspace)
    records = read_records(workspace / "results")
    locked = locked_outputs(workspace)
    # The records are read once: the versions they name serve the tracked outputs too.
    extra = extra_versions(config, workspace, records)
    tracked = {
        (o.level, o.plate, o.version): o for o in tracked_outputs(config, workspace, extra=extra)
    }
    # Batch files of an old batching: reported apart, never counted as the level's data.
    stale = {key: visible(files) for key, files in stale_outputs(config, workspace).items()}
    rows = []
    for plate in (p["name"] for p in config["plates"]):
        for level in LEVELS:
            if level == "raw":
                continue
            action = retention_kind(config["retention"], level, plate)
            versions = plate_level_versions(config, plate, level) + extra.get((plate, level), [])
            for version in versions:
                files, size = disk_usage(workspace / level_path(level, plate, version))
                old = stale.get((plate, level, version), [])
                stale_bytes = sum(f.stat().st_size for f in old)
                files, size = files - len(old), size - stale_bytes
                made = [
                    r
                    for r in records
                    if r["level"] == level
                    and r["wildcards"].get("plate") == plate
                    and r["wildcards"].get("seg") == version
                ]
                out = tracked.get((level, plate, version))
                oid = locked.get(out.path, {}).get("md5") if out else None
                on_remote = remote_has(workspace, out.remote, oid) if oid else None
                if files:
                    state = "present"
                elif on_remote:
                    # A lifecycle move archives a level whose first step is keep.
                    archived = (out.retention if out else action) == "archive"
                    state = "archived" if archived else "on remote"
                elif made and action == "delete":
                    state = "deleted"
                elif level == "crops" and not config["crops"]["enabled"]:
                    state = "not built"  # as the run summary says: off, not lost
                else:
                    state = "missing"
                rows.append(
                    {
                        "plate": plate,
                        "level": level,
                        "version": version,
                        "retention": action,
                        "state": state,
                        "files": files,
                        "bytes": size,
                        "remote": out.remote if out else None,
                        "solution": remote_solution(config, out.remote) if out else None,
                        "on_remote": on_remote,
                        "stale_files": len(old),
                        "stale_bytes": stale_bytes,
                        "note": "; ".join(
                            note
                            for note in (
                                f"reproducible from rule {made[0]['rule']} "
                                f"({len(made)} job record(s))"
                                if state == "deleted"
                                else "",
                                f"{len(old)} stale file(s) beside: cellstrata clean-stale"
                                if old
                                else "",
                            )
                            if note
                        ),
                    }
                )
    return pd.DataFrame(rows)

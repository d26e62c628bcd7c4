"""Storage plan: what every level costs to keep, per plate, now and for N plates."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cellstrata.images.ingest import IngestError, scan_plate
from cellstrata.levels import (
    LEVEL_PATHS,
    LEVELS,
    level_path,
    plate_level_versions,
    retention_kind,
)
from cellstrata.stewardship.origin import data_access
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.routing import route
from cellstrata.stewardship.solutions import (
    cost,
    human_size,
    limit_problems,
    remote_solution,
    solutions,
)
from cellstrata.stewardship.tracked import (
    extra_versions,
    locked_outputs,
)


def disk_usage(path: Path) -> tuple[int, int]:
    """Files and bytes of a file or directory (hidden bookkeeping files skipped)."""
    if path.is_file():
        return 1, path.stat().st_size
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        return len(files), sum(p.stat().st_size for p in files)
    return 0, 0


def _raw_size(
    plate: Mapping[str, Any], workspace: Path, config: Mapping[str, Any]
) -> tuple[int, int, str]:
    """Raw images of a plate: from its manifest, else the image files of its root that
    ``images.pattern`` matches (a CellProfiler plate: its whole output), else unknown."""
    manifest = workspace / LEVEL_PATHS["manifest"].format(plate=plate["name"])
    if manifest.exists():
        sizes = pd.read_parquet(manifest, columns=["bytes"])["bytes"]
        return len(sizes), int(sizes.sum()), "manifest"
    if plate.get("images") is None:  # a CellProfiler plate: all of its output
        root = workspace / plate["cellprofiler"]
        if root.exists():
            files, size = disk_usage(root)
            return files, size, "disk"
        return 0, 0, "unknown"
    root = workspace / plate["images"]
    if not root.is_dir():
        return 0, 0, "unknown"
    # The images ingest would use, not every file of the root (a platemap, notes, thumbnails).
    try:
        frame = scan_plate(
            plate["name"],
            root,
            config["images"]["pattern"],
            config["channels"],
            extensions=config["images"]["extensions"],
        )
    except IngestError:  # no image the pattern matches: nothing to count
        return 0, 0, "disk"
    return len(frame), sum(os.path.getsize(path) for path in frame["path"]), "disk"


def _level_size(
    workspace: Path,
    level: str,
    plate: str,
    version: str | None,
    locked: Mapping[str, Mapping[str, Any]],
    recorded: Mapping[tuple, list[int]],
) -> tuple[int, int, str]:
    """Size of a plate's level: on disk, else in dvc.lock (archived), else in the records."""
    path = level_path(level, plate, version)
    files, size = disk_usage(workspace / path)
    if files:
        return files, size, "disk"
    if path in locked:
        return locked[path]["nfiles"], locked[path]["size"], "dvc.lock"
    sizes = recorded.get((level, plate, version))
    if sizes:
        return len(sizes), sum(sizes), "records"
    return 0, 0, "disk"


def _cost(
    config: Mapping[str, Any], plate: str, level: str, action: str, size: int
) -> dict[str, Any]:
    """Where ``size`` bytes of a plate's level live under its retention and routing, the
    solution(s) of those places, and their one-time and monthly cost (low and high ends of a
    range); a size over a solution's per-file or per-dataset limits is flagged."""
    table = solutions(config)
    if action == "delete":
        where, places = "deleted after use", ["deleted"]
    else:
        access = data_access(config, [plate], level)
        remote = route(config, level=level, plate=plate, retention=action, access=access)
        url = config["storage"]["remotes"][remote]["url"]
        places = [remote_solution(config, remote)]
        where = f"remote {remote} ({url})"
        if action == "keep":
            places.insert(0, config["storage"]["workspace_solution"])
            where = f"workspace + {where}"
    once, monthly = [0.0, 0.0], [0.0, 0.0]
    for place in places:
        (once_low, once_high), (month_low, month_high) = cost(table[place], size)
        once = [once[0] + once_low, once[1] + once_high]
        monthly = [monthly[0] + month_low, monthly[1] + month_high]
        for problem in limit_problems(place, table[place], size=size, largest_file=0, total=0):
            where += f"; exceeds {problem}"
    return {
        "where": where,
        "solution": " + ".join(places),
        "one_time_usd": round(once[0], 6),
        "one_time_usd_high": round(once[1], 6),
        "monthly_usd": round(monthly[0], 6),
        "monthly_usd_high": round(monthly[1], 6),
    }


def storage_plan(config: Mapping[str, Any], workspace: str | os.PathLike = ".") -> pd.DataFrame:
    """One row per plate × level: files, bytes (and where the figure comes from), retention,
    where the data lives, and its one-time and monthly cost.

    Sizes come, in order, from the workspace, from ``dvc.lock`` (archived data), from the
    provenance records (deleted data), or are estimated from the raw size and
    ``storage.size_ratios``, so the plan works before anything has run.
    """
    workspace = Path(workspace)
    storage = config["storage"]
    locked = locked_outputs(workspace)
    recorded: dict[tuple[str, str], list[int]] = {}
    records = read_records(workspace / "results")
    # Versions the config no longer makes still occupy storage until they are retired.
    extra = extra_versions(config, workspace, records)
    for record in records:
        wildcards = record["wildcards"]
        key = (record["level"], wildcards.get("plate"), wildcards.get("seg"))
        recorded.setdefault(key, []).extend(o["size"] for o in record["outputs"])
    rows = []
    for plate in config["plates"]:
        name = plate["name"]
        raw_files, raw_bytes, raw_source = _raw_size(plate, workspace, config)
        for level in LEVELS:
            action = retention_kind(config["retention"], level, name)
            versions = (
                [None]
                if level == "raw"
                else plate_level_versions(config, name, level) + extra.get((name, level), [])
            )
            for version in versions:
                if level == "raw":
                    files, size, source = raw_files, raw_bytes, raw_source
                else:
                    files, size, source = _level_size(
                        workspace, level, name, version, locked, recorded
                    )
                    if not files and source == "disk":
                        size = int(raw_bytes * storage["size_ratios"].get(level, 0.0))
                        source = "estimate (level not built)" if level == "crops" else "estimate"
                rows.append(
                    {
                        "plate": name,
                        "level": level,
                        "version": version,
                        "retention": action,
                        "files": files,
                        "bytes": size,
                        "size_source": source,
                        **_cost(config, name, level, action, size),
                    }
                )
    return pd.DataFrame(rows)


#: The plan's cost columns: low ends, and the high ends of ranges.
COSTS = ("one_time_usd", "one_time_usd_high", "monthly_usd", "monthly_usd_high")


def project(plan: pd.DataFrame, n_plates: int) -> pd.DataFrame:
    """Scale the per-plate mean of each level to ``n_plates`` plates."""
    per_plate = plan.groupby("level", sort=False)[["files", "bytes", *COSTS]].mean()
    projected = (per_plate * n_plates).round(2)
    first = plan.groupby("level", sort=False)[["retention", "solution"]].first()
    projected.insert(0, "solution", first["solution"])
    projected.insert(0, "retention", first["retention"])
    return projected.reset_index()


def usd_range(low: float, high: float) -> str:
    """``$12.00``, or ``$12.00-$24.00`` for a range."""
    return f"${low:.2f}" if round(high - low, 2) == 0 else f"${low:.2f}-${high:.2f}"


def _totals(frame: pd.DataFrame) -> str:
    once = usd_range(frame["one_time_usd"].sum(), frame["one_time_usd_high"].sum())
    monthly = usd_range(frame["monthly_usd"].sum(), frame["monthly_usd_high"].sum())
    return f"one-time {once}, monthly {monthly}"


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """A plan or projection as printed: sizes in units, each cost as one (range) column."""
    return frame.assign(
        size=frame["bytes"].map(human_size),
        one_time=[usd_range(a, b) for a, b in zip(frame[COSTS[0]], frame[COSTS[1]], strict=True)],
        monthly=[usd_range(a, b) for a, b in zip(frame[COSTS[2]], frame[COSTS[3]], strict=True)],
    ).drop(columns=["bytes", *COSTS])


def format_plan(plan: pd.DataFrame, projection: pd.DataFrame | None = None) -> str:
    """The plan as a terminal table with totals (and the projection when given); a cost
    range (the playbook's "$0.02-0.04/GB-month") shows both ends."""
    lines = [_shown(plan).to_string(index=False), ""]
    lines.append(
        f"total: {human_size(plan['bytes'].sum())} kept or archived: "
        f"{human_size(plan.loc[plan['retention'] != 'delete', 'bytes'].sum())}; " + _totals(plan)
    )
    if projection is not None:
        lines += ["", "projection:", _shown(projection).to_string(index=False)]
        lines.append(f"projected {_totals(projection)}")
    return "\n".join(lines)

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
    retention_of,
)
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.tracked import (
    extra_versions,
    locked_outputs,
)

GB = 1e9
TB = 1e12


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


def _cost(storage: Mapping[str, Any], action: str, size: int) -> tuple[float, float, str]:
    """One-time cost, monthly cost and location of ``size`` bytes under a retention.

    A location whose price entry has a ``limit_gb`` (a free service such as Zenodo) is flagged
    when the data exceed it.
    """
    remotes, prices = storage["remotes"], storage["prices"]
    if action == "delete":
        return 0.0, 0.0, "deleted after use"
    if action == "archive":
        where = f"remote archive ({remotes['archive']['url']})"
        kinds = [remotes["archive"]["kind"]]
    else:
        where = f"workspace + remote default ({remotes['default']['url']})"
        kinds = [storage["workspace_kind"], remotes["default"]["kind"]]
    once = sum(prices[k]["per_tb_once"] for k in kinds) * size / TB
    monthly = sum(prices[k]["per_gb_month"] for k in kinds) * size / GB
    for kind in kinds:
        limit = prices[kind].get("limit_gb")
        if limit is not None and size > limit * GB:
            where += f"; exceeds the {kind} limit of {limit:g} GB"
    return once, monthly, where


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
            action = retention_of(config["retention"], level, name)
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
                once, monthly, where = _cost(storage, action, size)
                rows.append(
                    {
                        "plate": name,
                        "level": level,
                        "version": version,
                        "retention": action,
                        "files": files,
                        "bytes": size,
                        "size_source": source,
                        "where": where,
                        "one_time_usd": round(once, 6),
                        "monthly_usd": round(monthly, 6),
                    }
                )
    return pd.DataFrame(rows)


def project(plan: pd.DataFrame, n_plates: int) -> pd.DataFrame:
    """Scale the per-plate mean of each level to ``n_plates`` plates."""
    per_plate = plan.groupby("level", sort=False)[
        ["files", "bytes", "one_time_usd", "monthly_usd"]
    ].mean()
    projected = (per_plate * n_plates).round(2)
    projected.insert(0, "retention", plan.groupby("level", sort=False)["retention"].first())
    return projected.reset_index()


def format_plan(plan: pd.DataFrame, projection: pd.DataFrame | None = None) -> str:
    """The plan as a terminal table with totals (and the projection when given)."""
    table = plan.assign(size=plan["bytes"].map(human_size)).drop(columns="bytes")
    lines = [table.to_string(index=False), ""]
    lines.append(
        f"total: {human_size(plan['bytes'].sum())} kept or archived: "
        f"{human_size(plan.loc[plan['retention'] != 'delete', 'bytes'].sum())}; "
        f"one-time ${plan['one_time_usd'].sum():.2f}, monthly ${plan['monthly_usd'].sum():.2f}"
    )
    if projection is not None:
        n = "projection"
        lines += [
            "",
            f"{n}:",
            projection.assign(size=projection["bytes"].map(human_size))
            .drop(columns="bytes")
            .to_string(index=False),
        ]
        lines.append(
            f"projected one-time ${projection['one_time_usd'].sum():.2f}, monthly "
            f"${projection['monthly_usd'].sum():.2f}"
        )
    return "\n".join(lines)


def human_size(size: float) -> str:
    """Bytes as a short decimal figure, e.g. ``12.3 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")

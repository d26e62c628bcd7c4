"""A short run summary a scientist can read: plates, sites, cells, every level's size."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from cellstrata.config import LEVELS, retention_of

#: Where each produced level lives under the results directory.
LEVEL_DIRS = {
    "manifest": "manifest",
    "illumination": "illumination",
    "corrected": "corrected",
    "masks": "masks",
    "crops": "crops",
    "features": "features",
    "profiles": "profiles",
}


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def level_sizes(results: str | os.PathLike, plates: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Files and bytes on disk per level, counting only the given plates' outputs.

    A level stores a plate either as a directory ``{level}/{plate}/`` or as a file
    ``{level}/{plate}.parquet``.
    """
    sizes = {}
    for level, name in LEVEL_DIRS.items():
        files = []
        for plate in plates:
            for entry in Path(results, name).glob(f"{plate}*"):
                if entry.name != plate and not entry.name.startswith(f"{plate}."):
                    continue  # another plate whose name starts with this one
                candidates = entry.rglob("*") if entry.is_dir() else [entry]
                # Hidden files are bookkeeping (Snakemake's .snakemake_timestamp), not data.
                files += [p for p in candidates if p.is_file() and not p.name.startswith(".")]
        sizes[level] = (len(files), sum(p.stat().st_size for p in files))
    return sizes


def summarize(
    manifests: Sequence[str | os.PathLike],
    *,
    experiment: str,
    retention: Mapping[str, Any],
    results: str | os.PathLike = "results",
) -> str:
    """Render the run summary as plain text."""
    manifest = pd.concat([pd.read_parquet(p) for p in manifests], ignore_index=True)
    sites = manifest[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].drop_duplicates()
    raw_bytes = int(manifest["bytes"].sum())
    lines = [f"cellstrata run summary: experiment {experiment}", ""]
    lines.append(f"{'plate':<16}{'wells':>7}{'sites':>7}{'cells':>9}")
    cells_total = 0
    for plate, plate_sites in sites.groupby("Metadata_Plate"):
        aggregated = Path(results, "profiles", plate, f"{plate}_aggregated.parquet")
        cells = int(pd.read_parquet(aggregated, columns=["Metadata_Object_Count"]).sum().iloc[0])
        cells_total += cells
        lines.append(
            f"{plate:<16}{plate_sites['Metadata_Well'].nunique():>7}{len(plate_sites):>7}{cells:>9}"
        )
    lines.append(f"{'total':<16}{'':>7}{len(sites):>7}{cells_total:>9}")
    lines += ["", f"{'level':<14}{'retention':<11}{'files':>7}{'size':>11}  where"]
    sizes = level_sizes(results, sorted(sites["Metadata_Plate"].unique()))
    sizes["raw"] = (len(manifest), raw_bytes)
    for level in LEVELS:
        files, size = sizes[level]
        policy = retention_of(retention, level)
        where = "image roots" if level == "raw" else f"{Path(results, LEVEL_DIRS[level])}/"
        if level == "crops":
            state = "not built yet (reserved level)"
        elif files == 0 and policy == "delete":
            state = "deleted after use (retention: delete)"
        else:
            state = ""
        lines.append(
            f"{level:<14}{policy:<11}{files:>7}{_human(size):>11}  {where} {state}".rstrip()
        )
    lines += ["", "profiles written:"]
    for plate in sorted(sites["Metadata_Plate"].unique()):
        for path in sorted(Path(results, "profiles", plate).glob("*.parquet")):
            meta = pq.ParquetFile(path).metadata
            lines.append(f"  {path}  ({meta.num_rows} wells x {meta.num_columns} columns)")
    return "\n".join(lines) + "\n"


def write_summary(
    manifests: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    experiment: str,
    retention: Mapping[str, Any],
) -> str:
    """Write :func:`summarize` output next to the results it describes."""
    text = summarize(
        manifests, experiment=experiment, retention=retention, results=Path(output).parent
    )
    Path(output).write_text(text)
    return text

"""A short run summary a scientist can read: plates, sites, cells, every level's size."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from cellstrata.config import (
    CELLPROFILER_VERSION,
)
from cellstrata.images.ingest import SkippedFiles
from cellstrata.io import atomic_path
from cellstrata.levels import (
    BATCH_LEVELS,
    LEVEL_PATHS,
    LEVELS,
    RULE_LEVELS,
    VERSIONED_LEVELS,
    retention_kind,
)
from cellstrata.stewardship.solutions import human_size
from cellstrata.stewardship.stale import stale_files, visible
from cellstrata.stewardship.storage import disk_usage

#: Report tables beside the profiles: what one of their rows is (a profile's row is a well).
REPORT_ROWS = {
    "_nonfinite": "features",
    "_normalization": "features",
    "_platemap": "reported wells",
}


def summarize(
    manifests: Sequence[str | os.PathLike],
    *,
    experiment: str,
    retention: Mapping[str, Any],
    version: str,
    results: str | os.PathLike = "results",
    cellprofiler: Sequence[str | os.PathLike] = (),
    current_versions: Sequence[str] = (),
) -> str:
    """Render the run summary as plain text (cell counts from segmentation ``version``).

    ``cellprofiler``: the features tables of plates given as CellProfiler output, whose sites
    and cells are counted from them and from their ``cellprofiler`` profiles.
    ``current_versions``: the segmentation versions of the config (default: ``version``); batch
    files of theirs that no batch of the manifests makes are stale
    (:mod:`cellstrata.stewardship.stale`):
    listed apart, not counted as the level's files.
    """
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    tables = [pd.read_parquet(p) for p in manifests]
    manifest = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*keys, "bytes"])
    )
    parts = [manifest[keys].drop_duplicates()] if tables else []
    versions = dict.fromkeys(manifest["Metadata_Plate"], version)
    for path in cellprofiler:
        parts.append(pd.read_parquet(path, columns=keys).drop_duplicates())
        versions[Path(path).parent.name] = CELLPROFILER_VERSION
    sites = pd.concat(parts, ignore_index=True)
    raw_bytes = int(manifest["bytes"].sum())
    made = ([f"segmentation {version}"] if tables else []) + (
        [f"CellProfiler output (version {CELLPROFILER_VERSION})"] if cellprofiler else []
    )
    lines = [f"cellstrata run summary: experiment {experiment}, {'; '.join(made)}", ""]
    lines.append(f"{'plate':<16}{'wells':>7}{'sites':>7}{'cells':>9}")
    cells_total = 0
    for plate, plate_sites in sites.groupby("Metadata_Plate"):
        aggregated = Path(
            results, "profiles", versions[plate], plate, f"{plate}_aggregated.parquet"
        )
        cells = int(pd.read_parquet(aggregated, columns=["Metadata_Object_Count"]).sum().iloc[0])
        cells_total += cells
        lines.append(
            f"{plate:<16}{plate_sites['Metadata_Well'].nunique():>7}{len(plate_sites):>7}{cells:>9}"
        )
    lines.append(f"{'total':<16}{'':>7}{len(sites):>7}{cells_total:>9}")
    # Files ingest did not use (pattern or channel map): a pattern that misses wells must
    # show here, not only in a job log. No section when nothing was skipped.
    skipped = [_skipped_line(path, table) for path, table in zip(manifests, tables, strict=True)]
    if any(skipped):
        lines += ["", "image files skipped by ingest:"]
        lines += [f"  {line}" for line in skipped if line]
    lines += ["", f"{'level':<14}{'retention':<11}{'files':>7}{'size':>11}  where"]
    plates = sorted(sites["Metadata_Plate"].unique())
    workspace = Path(results).parent
    batches = {plate: set(rows["batch"]) for plate, rows in manifest.groupby("Metadata_Plate")}
    stale_lines = []
    for level in LEVELS:
        if level == "raw":
            files, size = len(manifest), raw_bytes
        else:
            usage = [
                disk_usage(path)
                for p in plates
                for path in workspace.glob(LEVEL_PATHS[level].format(plate=p, version="*"))
            ]
            files, size = sum(u[0] for u in usage), sum(u[1] for u in usage)
        policy = retention_kind(retention, level)
        where = "image roots" if level == "raw" else f"{Path(*Path(LEVEL_PATHS[level]).parts[:2])}/"
        if level in BATCH_LEVELS:
            stale = [
                file
                for plate in batches
                for level_version in (
                    list(current_versions) or [version] if level in VERSIONED_LEVELS else [None]
                )
                for file in visible(
                    stale_files(workspace, plate, level, level_version, batches[plate])
                )
            ]
            if stale:
                stale_size = sum(f.stat().st_size for f in stale)
                files, size = files - len(stale), size - stale_size
                stale_lines.append(
                    f"  {len(stale)} stale file(s) in {where} ({human_size(stale_size)}), not "
                    "counted above: no current job makes them (an old batching); remove them "
                    "with `cellstrata clean-stale`"
                )
        rules = [rule for rule, made in RULE_LEVELS.items() if made == level]
        recorded = any(Path(results, "provenance").glob(f"*/{rules[0]}/*")) if rules else False
        if files or level == "raw":
            state = ""
        elif recorded:
            state = f"deleted after use (retention: {policy})"
        else:
            state = "not built"
        lines.append(
            f"{level:<14}{policy:<11}{files:>7}{human_size(size):>11}  {where} {state}".rstrip()
        )
    lines += ["", "stale outputs:", *stale_lines] if stale_lines else []
    lines += ["", "profiles written:"]
    for plate in sorted(sites["Metadata_Plate"].unique()):
        for path in sorted(Path(results, "profiles").glob(f"*/{plate}/*.parquet")):
            meta = pq.ParquetFile(path).metadata
            unit = next(
                (unit for end, unit in REPORT_ROWS.items() if path.stem.endswith(end)), "wells"
            )
            lines.append(f"  {path}  ({meta.num_rows} {unit} x {meta.num_columns} columns)")
    return "\n".join(lines) + "\n"


def _skipped_line(manifest: str | os.PathLike, table: pd.DataFrame) -> str | None:
    skipped = SkippedFiles.from_manifest(manifest)
    if skipped is None or table.empty:
        return None
    return skipped.describe(str(table["Metadata_Plate"].iloc[0]))


def write_summary(
    manifests: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    experiment: str,
    retention: Mapping[str, Any],
    version: str,
    cellprofiler: Sequence[str | os.PathLike] = (),
    current_versions: Sequence[str] = (),
) -> str:
    """Write :func:`summarize` output next to the results it describes."""
    text = summarize(
        manifests,
        experiment=experiment,
        retention=retention,
        version=version,
        results=Path(output).parent,
        cellprofiler=cellprofiler,
        current_versions=current_versions,
    )
    # Atomically, like every other output: a killed job leaves no partial summary.
    with atomic_path(output) as tmp:
        tmp.write_text(text)
    return text

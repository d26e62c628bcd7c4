"""Stale outputs: batch files of the current versions that no current job makes.

A plate's image levels are made per batch of wells (``A01-A04``). Changing
``batching.wells_per_job``, or removing a well's images, gives the plate new batches; Snakemake
makes their outputs and never looks at the old ones again, which stay beside them. Such files
are *stale*: status and the run summary report them apart from the current files, archive
refuses to store them with a level, and only ``cellstrata clean-stale`` removes them.

Only batch files inside the plate directories of the current segmentation versions are
considered (whole versions the config no longer names are not stale in this sense).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from cellstrata.config import (
    is_cellprofiler_plate,
)
from cellstrata.images.ingest import plate_inventory
from cellstrata.levels import (
    BATCH_LEVELS,
    LEVEL_PATHS,
    PROVENANCE_PATH,
    plate_level_versions,
)

# A batch output's name: the batch (as rules/common.smk constrains it) and any extensions.
_BATCH_NAME = re.compile(r"(?P<batch>[A-Z]{1,2}\d{2,3}(?:-[A-Z]{1,2}\d{2,3})?)(?:\.\w+)*")


def current_batches(
    config: Mapping[str, Any], plate: str, workspace: str | os.PathLike = "."
) -> set[str] | None:
    """The batches the workflow makes for an image plate now, found as rules/common.smk finds
    them (file names under the image root, else the manifest); None for a CellProfiler plate
    or when neither is there (then nothing can be called stale)."""
    workspace = Path(workspace)
    entry = next(p for p in config["plates"] if p["name"] == plate)
    if is_cellprofiler_plate(entry):
        return None
    inventory = plate_inventory(
        plate,
        workspace / entry["images"],
        config["images"]["pattern"],
        config["channels"],
        manifest=workspace / LEVEL_PATHS["manifest"].format(plate=plate),
        extensions=config["images"]["extensions"],
        wells_per_job=config["batching"]["wells_per_job"],
    )
    return set(inventory["batch"]) or None


def stale_files(
    workspace: str | os.PathLike,
    plate: str,
    level: str,
    version: str | None,
    batches: Collection[str],
) -> list[Path]:
    """Files of a plate's ``level`` directory (of ``version``) whose batch is not in
    ``batches``, hidden bookkeeping files (``.snakemake_timestamp``) included."""
    root = Path(workspace, LEVEL_PATHS[level].format(plate=plate, version=version))
    files: list[Path] = []
    if not root.is_dir():
        return files
    for child in sorted(root.iterdir()):
        match = _BATCH_NAME.fullmatch(child.name)
        if match is None or match["batch"] in batches:
            continue
        files += [child] if child.is_file() else sorted(p for p in child.rglob("*") if p.is_file())
    return files


def stale_outputs(
    config: Mapping[str, Any], workspace: str | os.PathLike = "."
) -> dict[tuple[str, str, str | None], list[Path]]:
    """Stale files of every image plate, by (plate, level, version); only non-empty entries."""
    stale = {}
    for plate in (p["name"] for p in config["plates"]):
        batches = current_batches(config, plate, workspace)
        if batches is None:
            continue
        for level in BATCH_LEVELS:
            for version in plate_level_versions(config, plate, level):
                files = stale_files(workspace, plate, level, version, batches)
                if files:
                    stale[(plate, level, version)] = files
    return stale


def stale_records(
    config: Mapping[str, Any], plate: str, workspace: str | os.PathLike = "."
) -> list[Path]:
    """Provenance records of a plate's batch jobs (correct, segment, features, ...) of the
    current versions whose batch no current job makes."""
    batches = current_batches(config, plate, workspace)
    if batches is None:
        return []
    versions = {v for level in BATCH_LEVELS for v in plate_level_versions(config, plate, level)}
    records = []
    for path in sorted(Path(workspace, PROVENANCE_PATH.format(plate=plate)).rglob("*.json")):
        wildcards = json.loads(path.read_text()).get("wildcards", {})
        batch, version = wildcards.get("batch"), wildcards.get("seg")
        if batch is not None and batch not in batches and version in versions:
            records.append(path)
    return records


def visible(files: list[Path]) -> list[Path]:
    """The files a level's count and size include (hidden bookkeeping files left out, as
    :func:`cellstrata.stewardship.storage.disk_usage` does)."""
    return [f for f in files if not f.name.startswith(".")]

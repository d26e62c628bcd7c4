"""Experiment configuration: schema validation, semantic checks and retention lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"

#: The data levels in chain order; ``crops`` is reserved for the image-levels issue.
LEVELS = (
    "raw",
    "manifest",
    "qc",
    "illumination",
    "corrected",
    "masks",
    "crops",
    "embeddings",
    "features",
    "profiles",
)

#: The level each rule's outputs belong to.
RULE_LEVELS = {
    "ingest": "manifest",
    "qc": "qc",
    "illumination": "illumination",
    "correct": "corrected",
    "segment": "masks",
    "crops": "crops",
    "embed": "embeddings",
    "features": "features",
    "cellprofiler_features": "features",
    "profiles": "profiles",
    "experiment": "profiles",
    "quality": "profiles",
}

#: Where a level keeps one plate's outputs: one directory (or file) per plate, which is also
#: the unit DVC tracks (few entries per plate, never one per site).
#: Levels downstream of segmentation carry its version: ``{version}`` is
#: ``<method>-<paramhash>`` (see :func:`cellstrata.segment.versions.segmentation_versions`).
LEVEL_PATHS = {
    "manifest": "results/manifest/{plate}.parquet",
    "qc": "results/qc/{plate}.parquet",
    "illumination": "results/illumination/{plate}",
    "corrected": "results/corrected/{plate}",
    "masks": "results/masks/{version}/{plate}",
    "crops": "results/crops/{version}/{plate}",
    "embeddings": "results/embeddings/{version}/{plate}",
    "features": "results/features/{version}/{plate}",
    "profiles": "results/profiles/{version}/{plate}",
}
VERSIONED_LEVELS = ("masks", "crops", "embeddings", "features", "profiles")
#: Provenance records of a plate (tombstones included): always kept.
PROVENANCE_PATH = "results/provenance/{plate}"
#: What a version makes across its plates (stacked profiles, consensus, quality tables):
#: stored with the profiles' retention.
EXPERIMENT_PATH = "results/experiment/{version}"
#: Provenance records of the experiment-level jobs: always kept.
EXPERIMENT_PROVENANCE_PATH = "results/provenance/experiment"
#: One record per version retired with ``cellstrata retire`` (YAML, so that they are never
#: taken for job records): the versions the workspace no longer keeps, and the remote objects
#: that still hold their data.
RETIRED_PATH = "results/provenance/retired"

#: The per-plate profile tables, in the order pycytominer makes them.
PROFILE_STEPS = ("aggregated", "annotated", "normalized", "feature_selected")
#: Per-plate reports written beside the profiles: cells flagged/excluded by single-cell QC per
#: well, NaN/Inf counts per feature, platemap findings (duplicates, unmapped and never-imaged
#: wells), and features normalization left out or found NaN.
PROFILE_REPORTS = ("cell_qc", "nonfinite", "platemap", "normalization")

#: A plate given as CellProfiler output (``plates[].cellprofiler``) enters the chain at the
#: features level: its one version name (in place of ``<method>-<paramhash>``), its one batch,
#: and the levels it has (CellProfiler made the image levels, outside this workflow).
CELLPROFILER_VERSION = "cellprofiler"
CELLPROFILER_BATCH = "all"
CELLPROFILER_LEVELS = ("features", "profiles")


class ConfigError(ValueError):
    """The configuration is well-formed but inconsistent; the message says where."""


def level_path(level: str, plate: str, version: str | None = None) -> str:
    """Path of one plate's outputs of a level (a directory, or the manifest file)."""
    if level in VERSIONED_LEVELS and version is None:
        raise ConfigError(f"level {level} needs a segmentation version")
    return LEVEL_PATHS[level].format(plate=plate, version=version)


def is_cellprofiler_plate(plate: dict[str, Any]) -> bool:
    """Whether a ``plates`` entry is CellProfiler output rather than an image root."""
    return plate.get("cellprofiler") is not None


def version_plates(config: dict[str, Any], version: str) -> list[str]:
    """The plates a version has profiles of (CellProfiler plates for
    :data:`CELLPROFILER_VERSION`, image plates for a segmentation version)."""
    cellprofiler = version == CELLPROFILER_VERSION
    return [p["name"] for p in config["plates"] if is_cellprofiler_plate(p) == cellprofiler]


def plate_definition(config: dict[str, Any], plate: str) -> dict[str, str]:
    """What a plate of the config is made from, as written: its name, image root (or
    CellProfiler output) and platemap. Every job record of the plate carries it, so that a
    config reusing the plate name for other data is refused instead of overwriting it."""
    entry = next(p for p in config["plates"] if p["name"] == plate)
    source = "cellprofiler" if is_cellprofiler_plate(entry) else "images"
    return {"name": plate, source: entry[source], "platemap": entry["platemap"]}


def embedding_enabled(config: dict[str, Any]) -> bool:
    """Whether the embeddings level is built (``features.embedding.model`` is set)."""
    return (config["features"].get("embedding") or {}).get("model") is not None


def channel_names(config: dict[str, Any]) -> list[str]:
    """Channel names in the order of the channel map."""
    return list(config["channels"].values())


def retention_of(retention: dict[str, Any], level: str, plate: str | None = None) -> str:
    """Retention (keep, archive or delete) of a level, optionally for one plate.

    Parameters
    ----------
    retention : dict
        The validated ``retention`` block of the configuration.
    level : str
        One of :data:`LEVELS`.
    plate : str, optional
        Apply the plate's override, if any.
    """
    if level not in LEVELS:
        raise ConfigError(f"unknown level {level!r}; levels are {LEVELS}")
    override = retention.get("plates", {}).get(plate, {}).get(level) if plate else None
    return override or retention["levels"].get(level) or retention["default"]

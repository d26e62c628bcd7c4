"""Experiment configuration: constants and readers of the config (levels: cellstrata.levels)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"

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


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_default(*keys: str) -> Any:
    """The default the configuration schema gives the setting at ``keys``.

    Package defaults that mirror a configuration setting take it from here, so that each is
    written once, in the schema beside its description.

    Examples
    --------
    >>> schema_default("batching", "wells_per_job")
    4
    """
    node = _schema()
    for key in keys:
        node = node["properties"][key]
    return node["default"]


class ConfigError(ValueError):
    """The configuration is well-formed but inconsistent; the message says where."""


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

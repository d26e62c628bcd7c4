"""Experiment configuration: constants and readers of the config (levels: cellstrata.levels)."""

from __future__ import annotations

import functools
import hashlib
import json
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


def _version_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of one version that its method uses, cellpose defaults filled in.

    Dropping the cellpose block from classical versions keeps their hashes (and paths) what
    they were before the cellpose method existed; a cellpose version drops the classical
    nucleus parameters, and the cell parameters when a cell model makes the cells.
    """
    from cellstrata.segment import DEFAULT_CELL_METHOD, CellposeOptions

    params = dict(params)
    # The cytoplasm block at its default (all nuclear pixels removed) is left out, so versions
    # made before it existed keep their hashes.
    if not (params.get("cytoplasm") or {}).get("shrink_nuclei"):
        params.pop("cytoplasm", None)
    if params.get("cell_channel") is not None and params.get("cells") is not None:
        # The cells method is named even where the default was taken, so a new default makes
        # a new version (see _version_tag).
        params["cells"] = {"method": DEFAULT_CELL_METHOD, **params["cells"]}
    if params["method"] != "cellpose":
        params.pop("cellpose", None)
        return params

    params["cellpose"] = {**CellposeOptions().as_dict(), **(params.get("cellpose") or {})}
    params.pop("nuclei", None)
    if params["cellpose"]["cell_model"] is not None:
        params.pop("cells", None)
    return params


def _version_tag(params: dict[str, Any]) -> str:
    cells = params.get("cells")
    if isinstance(cells, dict) and cells.get("method") == "watershed":
        # The watershed was the only cells method before propagation: hashed without its
        # name, a watershed version keeps the tag (and outputs) it had then.
        params = {**params, "cells": {k: v for k, v in cells.items() if k != "method"}}
    digest = hashlib.md5(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{params['method']}-{digest}"


def _segmentation_params(config: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict]]:
    """``(where, mapping as written, version parameters)`` of the main and each extra version."""
    block = config["segmentation"]
    base = {k: v for k, v in block.items() if k != "extra_versions"}
    written = [("segmentation", base)] + [
        (f"segmentation.extra_versions[{i}]", extra)
        for i, extra in enumerate(block["extra_versions"])
    ]
    return [(where, item, _version_params({**base, **item})) for where, item in written]


def segmentation_versions(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Segmentation versions to build, ``{"<method>-<paramhash>": parameters}``, main first.

    The hash covers every parameter the version's method uses, so changing any of them
    makes a new version (new output paths) and leaves the old outputs where they are.
    """
    return {_version_tag(params): params for _, _, params in _segmentation_params(config)}


def is_cellprofiler_plate(plate: dict[str, Any]) -> bool:
    """Whether a ``plates`` entry is CellProfiler output rather than an image root."""
    return plate.get("cellprofiler") is not None


def experiment_versions(config: dict[str, Any]) -> list[str]:
    """The versions with experiment-level outputs: every segmentation version when there are
    image plates, and :data:`CELLPROFILER_VERSION` when there are CellProfiler plates."""
    plates = config["plates"]
    versions = (
        list(segmentation_versions(config)) if not all(map(is_cellprofiler_plate, plates)) else []
    )
    return versions + ([CELLPROFILER_VERSION] if any(map(is_cellprofiler_plate, plates)) else [])


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

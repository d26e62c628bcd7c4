"""Segmentation versions: the ``<method>-<paramhash>`` names of the configured versions,
and the versions with experiment-level outputs.

Outputs downstream of segmentation live under these names (the ``{version}`` of the level
paths in :mod:`cellstrata.levels`): a version's tag must never change for the same parameters.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cellstrata.config import (
    CELLPROFILER_VERSION,
    is_cellprofiler_plate,
)
from cellstrata.segment.params import DEFAULT_CELL_METHOD, CellposeOptions


def _version_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of one version that its method uses, cellpose defaults filled in.

    Dropping the cellpose block from classical versions keeps their hashes (and paths) what
    they were before the cellpose method existed; a cellpose version drops the classical
    nucleus parameters, and the cell parameters when a cell model makes the cells.
    """
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


def experiment_versions(config: dict[str, Any]) -> list[str]:
    """The versions with experiment-level outputs: every segmentation version when there are
    image plates, and :data:`CELLPROFILER_VERSION` when there are CellProfiler plates."""
    plates = config["plates"]
    versions = (
        list(segmentation_versions(config)) if not all(map(is_cellprofiler_plate, plates)) else []
    )
    return versions + ([CELLPROFILER_VERSION] if any(map(is_cellprofiler_plate, plates)) else [])

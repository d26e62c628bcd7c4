"""Experiment configuration: schema validation, semantic checks and retention lookup."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

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
#: ``<method>-<paramhash>`` (see :func:`segmentation_versions`).
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


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config, fill schema defaults, validate it and return it.

    Parameters
    ----------
    path : str or os.PathLike
        YAML file.

    Returns
    -------
    dict
        The validated configuration with defaults filled in.
    """
    # Imported here so that the light modules of the package do not pull in Snakemake.
    from snakemake.utils import validate

    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    validate(config, str(SCHEMA_PATH))
    check_config(config)
    return config


def check_config(config: dict[str, Any]) -> None:
    """Check what the JSON schema cannot: pattern groups, channel roles, unique plates,
    segmentation options that fit their method (cellpose model files exist).

    Raises
    ------
    ConfigError
        Naming the offending key.
    """
    pattern = config["images"]["pattern"]
    try:
        groups = set(re.compile(pattern).groupindex)
    except re.error as err:
        raise ConfigError(f"images.pattern is not a valid regular expression: {err}") from err
    if "channel" not in groups:
        raise ConfigError("images.pattern needs a named group 'channel'")
    if "well" not in groups and not {"row", "column"} <= groups:
        raise ConfigError("images.pattern needs a named group 'well', or both 'row' and 'column'")
    names = list(config["channels"].values())
    image_plates = any(not is_cellprofiler_plate(plate) for plate in config["plates"])
    if not names and image_plates:
        raise ConfigError("channels: image plates need at least one channel")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"channels: channel names used twice: {duplicated}")
    # Segmentation is for image plates only: CellProfiler plates come segmented.
    for where, written, params in _segmentation_params(config) if image_plates else []:
        version = _version_tag(params)
        for key in ("nuclei_channel", "cell_channel"):
            if params[key] is not None and params[key] not in names:
                raise ConfigError(
                    f"segmentation version {version}: {key} {params[key]!r} is not a channel "
                    f"name {names}"
                )
        _check_method_blocks(where, written, params)
        # Imported here: the segmentation module pulls in scikit-image (never cellpose).
        from cellstrata.segment import check_cellpose_options, check_site_params

        try:
            check_site_params(params.get("nuclei"), params.get("cells"), params.get("cytoplasm"))
            if params["method"] == "cellpose":
                check_cellpose_options(params["cellpose"], cell_channel=params["cell_channel"])
        except ValueError as err:
            raise ConfigError(f"segmentation version {version}: {err}") from err
    plates = [plate["name"] for plate in config["plates"]]
    duplicated = sorted({name for name in plates if plates.count(name) > 1})
    if duplicated:
        raise ConfigError(f"plates: plate names used twice: {duplicated}")
    # Plate names are directory names (results/<level>/<plate>): on a case-insensitive file
    # system (macOS, Windows, many SMB shares) BBBC013 and bbbc013 are one directory.
    folded: dict[str, list[str]] = {}
    for name in plates:
        folded.setdefault(name.casefold(), []).append(name)
    clashes = [names for names in folded.values() if len(names) > 1]
    if clashes:
        raise ConfigError(
            f"plates: plate names {' and '.join(clashes[0])} differ only in case; they would "
            "share directories on case-insensitive file systems: rename one"
        )
    retention = config["retention"]
    for plate, overrides in retention["plates"].items():
        if plate not in plates:
            raise ConfigError(f"retention.plates: {plate!r} is not a plate of this config")
        for level in overrides:
            if level not in LEVELS:
                raise ConfigError(f"retention.plates.{plate}: unknown level {level!r}")
            if retention_of(retention, level) == "delete":
                raise ConfigError(
                    f"retention.plates.{plate}.{level}: level {level} is temp() (delete) for "
                    f"every plate, which one plate cannot override; set retention.levels."
                    f"{level} to keep or archive instead"
                )
    _check_cellprofiler(config.get("cellprofiler", {}))
    _check_remote_plugins(config.get("storage", {}).get("remotes", {}))
    illumination = config["illumination"]
    if illumination["filter_size"] is not None and illumination["object_size"] is not None:
        raise ConfigError("illumination: give filter_size or object_size, not both")
    pm = config["platemap"]
    if pm["well_column"] is None and (pm["row_column"] is None or pm["column_column"] is None):
        raise ConfigError("platemap: set well_column, or both row_column and column_column")
    from cellstrata.singlecell.features import feature_columns

    try:
        measured = feature_columns(
            names, groups=config["features"]["groups"], options=config["features"]["options"]
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"features: {err}") from err
    if image_plates:
        _check_readout(config, measured)
    # Embeddings: crops on, a local model file, crop channels (cellstrata.singlecell.embed).
    from cellstrata.singlecell.embed import check_embedding_config

    check_embedding_config(config)


def _check_readout(config: dict[str, Any], measured: list[str]) -> None:
    """``quality.readout`` must name columns the profiles of image plates will have.

    Rule quality reads the readout from the annotated profiles: the measured features
    (``measured``), the embedding's columns, ``Metadata_`` columns (the cell count, the
    platemap's). A misspelt name would fail that job only after Snakemake removed the previous
    quality tables. CellProfiler plates name their own features, unknown here: they are not
    checked.
    """
    readout = config["quality"]["readout"]
    if readout["feature"] is None:
        return
    embedding = config["features"].get("embedding") or {}
    prefixes = ["Metadata_"]
    if embedding_enabled(config):
        prefixes.append(embedding.get("prefix", "Cells_Embedding_"))
    known = set(measured)
    for key in ("feature", "divide_by"):
        name = readout[key]
        if name is None or name in known or name.startswith(tuple(prefixes)):
            continue
        near = difflib.get_close_matches(name, measured, n=3, cutoff=0.8)
        raise ConfigError(
            f"quality.readout.{key} {name!r} is not a feature this config measures "
            f"(features.groups of channels {channel_names(config)})"
            + (f"; did you mean {' or '.join(near)}?" if near else "")
        )


def _check_remote_plugins(remotes: dict[str, Any]) -> None:
    """Refuse a remote URL whose DVC plugin (dvc-gs, dvc-azure, ...) is not installed: DVC
    would fail only at push or archive, with an ImportError traceback."""
    for role, remote in remotes.items():
        url = str(remote.get("url") or "")
        scheme = url.split("://", 1)[0].lower() if "://" in url else None
        if scheme in (None, "file", "local"):
            continue
        # Imported only for URLs with a scheme: DVC's file-system table, not DVC itself.
        try:
            from dvc_objects.fs import known_implementations
        except ImportError:  # an environment without DVC (a job's conda env) pushes nothing
            return

        entry = known_implementations.get(scheme)
        where = f"storage.remotes.{role}.url {url!r}"
        if entry is None:
            raise ConfigError(
                f"{where}: DVC has no remote kind {scheme}:// (it knows "
                f"{sorted(k for k in known_implementations if k not in ('local', 'memory'))})"
            )
        module = entry["class"].rsplit(".", 1)[0]
        if module.startswith("dvc_") and importlib.util.find_spec(module) is None:
            package = module.replace("_", "-")
            raise ConfigError(
                f"{where}: {scheme}:// remotes need DVC's {package} plugin, which is not "
                f"installed; run `pip install {package}` in the workflow's environment"
            )


def _check_cellprofiler(block: dict[str, Any]) -> None:
    """The file-name pattern of CellProfiler plates must compile and give the well."""
    pattern = block.get("file_pattern")
    if pattern is None:
        if block.get("well_column") is None:
            raise ConfigError("cellprofiler: set well_column, or file_column and file_pattern")
        return
    try:
        groups = set(re.compile(pattern).groupindex)
    except re.error as err:
        raise ConfigError(
            f"cellprofiler.file_pattern is not a valid regular expression: {err}"
        ) from err
    if block.get("file_column") is None:
        raise ConfigError("cellprofiler.file_pattern needs file_column (e.g. FileName_DNA)")
    if (
        block.get("well_column") is None
        and "well" not in groups
        and not {"row", "column"} <= groups
    ):
        raise ConfigError(
            "cellprofiler.file_pattern needs a named group 'well', or both 'row' and 'column' "
            "(well_column is null)"
        )


def _check_method_blocks(where: str, written: dict[str, Any], params: dict[str, Any]) -> None:
    """Refuse option blocks, written at ``where``, that the version's method would not use."""
    # Imported here: the segmentation module pulls in scikit-image (never cellpose).
    from cellstrata.segment import CellposeOptions

    method = params["method"]
    if method != "cellpose":
        # The schema fills the main block's defaults: only values that differ were written.
        defaults = CellposeOptions().as_dict()
        changed = sorted(
            k for k, v in (written.get("cellpose") or {}).items() if v != defaults.get(k)
        )
        if changed:
            raise ConfigError(
                f"{where}.cellpose: {changed} apply to method cellpose only (method is {method})"
            )
    elif written.get("nuclei"):
        raise ConfigError(
            f"{where}.nuclei: segment_nuclei parameters apply to method classical only; the "
            f"cellpose method takes its nucleus options from {where}.cellpose"
        )
    elif written.get("cells") and params["cellpose"]["cell_model"] is not None:
        raise ConfigError(
            f"{where}.cells: segment_cells parameters are not used when cellpose.cell_model "
            "segments the cells; remove one of them"
        )


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


def level_path(level: str, plate: str, version: str | None = None) -> str:
    """Path of one plate's outputs of a level (a directory, or the manifest file)."""
    if level in VERSIONED_LEVELS and version is None:
        raise ConfigError(f"level {level} needs a segmentation version")
    return LEVEL_PATHS[level].format(plate=plate, version=version)


def level_versions(config: dict[str, Any], level: str) -> list[str | None]:
    """The versions a level exists in: segmentation versions, or ``[None]`` if unversioned."""
    return list(segmentation_versions(config)) if level in VERSIONED_LEVELS else [None]


def is_cellprofiler_plate(plate: dict[str, Any]) -> bool:
    """Whether a ``plates`` entry is CellProfiler output rather than an image root."""
    return plate.get("cellprofiler") is not None


def plate_level_versions(config: dict[str, Any], plate: str, level: str) -> list[str | None]:
    """The versions a level exists in for one plate (:func:`level_versions` for image plates).

    A CellProfiler plate has only the features and profiles levels, in the version
    :data:`CELLPROFILER_VERSION`; every other level is empty (``[]``).
    """
    entry = next(p for p in config["plates"] if p["name"] == plate)
    if is_cellprofiler_plate(entry):
        return [CELLPROFILER_VERSION] if level in CELLPROFILER_LEVELS else []
    if level == "embeddings" and not embedding_enabled(config):
        return []
    return level_versions(config, level)


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

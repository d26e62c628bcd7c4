"""Experiment configuration: schema validation, semantic checks and retention lookup."""

from __future__ import annotations

import hashlib
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
    "features": "features",
    "profiles": "profiles",
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
    "features": "results/features/{version}/{plate}",
    "profiles": "results/profiles/{version}/{plate}",
}
VERSIONED_LEVELS = ("masks", "crops", "features", "profiles")
#: Provenance records of a plate (tombstones included): always kept.
PROVENANCE_PATH = "results/provenance/{plate}"

#: The per-plate profile tables, in the order pycytominer makes them.
PROFILE_STEPS = ("aggregated", "annotated", "normalized", "feature_selected")


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
    """Check what the JSON schema cannot: pattern groups, channel roles, unique plates.

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
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"channels: channel names used twice: {duplicated}")
    # Imported here: the segmentation module pulls in scikit-image.
    from cellstrata.segment import check_site_params

    for version, params in segmentation_versions(config).items():
        for key in ("nuclei_channel", "cell_channel"):
            if params[key] is not None and params[key] not in names:
                raise ConfigError(
                    f"segmentation version {version}: {key} {params[key]!r} is not a channel "
                    f"name {names}"
                )
        try:
            check_site_params(params["nuclei"], params["cells"])
        except ValueError as err:
            raise ConfigError(f"segmentation version {version}: {err}") from err
    plates = [plate["name"] for plate in config["plates"]]
    duplicated = sorted({name for name in plates if plates.count(name) > 1})
    if duplicated:
        raise ConfigError(f"plates: plate names used twice: {duplicated}")
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
    pm = config["platemap"]
    if pm["well_column"] is None and (pm["row_column"] is None or pm["column_column"] is None):
        raise ConfigError("platemap: set well_column, or both row_column and column_column")
    from cellstrata.features import feature_columns

    try:
        feature_columns(
            names, groups=config["features"]["groups"], options=config["features"]["options"]
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"features: {err}") from err


def segmentation_versions(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Segmentation versions to build, ``{"<method>-<paramhash>": parameters}``, main first.

    The hash covers every parameter of the version, so changing any of them makes a new
    version (new output paths) and leaves the old outputs where they are.
    """
    base = {k: v for k, v in config["segmentation"].items() if k != "extra_versions"}
    versions = {}
    for extra in [{}, *config["segmentation"]["extra_versions"]]:
        params = {**base, **extra}
        digest = hashlib.md5(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        versions[f"{params['method']}-{digest}"] = params
    return versions


def level_path(level: str, plate: str, version: str | None = None) -> str:
    """Path of one plate's outputs of a level (a directory, or the manifest file)."""
    if level in VERSIONED_LEVELS and version is None:
        raise ConfigError(f"level {level} needs a segmentation version")
    return LEVEL_PATHS[level].format(plate=plate, version=version)


def level_versions(config: dict[str, Any], level: str) -> list[str | None]:
    """The versions a level exists in: segmentation versions, or ``[None]`` if unversioned."""
    return list(segmentation_versions(config)) if level in VERSIONED_LEVELS else [None]


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

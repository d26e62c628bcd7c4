"""Config validation: the JSON schema, then what the schema cannot check, with the level
modules' own checks (segmentation, features, embeddings).

The top floor of the package: it imports the level modules, and nothing below imports it
(cellstrata.config, which every module reads constants from, imports nothing of the package).
"""

from __future__ import annotations

import datetime
import difflib
import importlib.util
import os
import re
from typing import Any

import yaml

from cellstrata.config import (
    SCHEMA_PATH,
    ConfigError,
    channel_names,
    embedding_enabled,
    is_cellprofiler_plate,
    schema_default,
)
from cellstrata.levels import (
    LEVELS,
    retention_of,
)
from cellstrata.segment.batch import check_site_params
from cellstrata.segment.params import CellposeOptions, check_cellpose_options
from cellstrata.segment.versions import _segmentation_params, _version_tag
from cellstrata.singlecell.embed import check_embedding_config
from cellstrata.singlecell.features import feature_columns
from cellstrata.stewardship.lifecycle import check_retention_forms, check_schedules
from cellstrata.stewardship.origin import check_origin, plate_origin
from cellstrata.stewardship.solutions import check_solutions


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
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    validate_config(config)
    return config


def validate_config(config: dict[str, Any]) -> None:
    """Refuse the storage keys of earlier versions (saying how to convert them), read YAML
    dates as text, fill the schema's defaults, validate, then :func:`check_config`."""
    # Imported here so that the light modules of the package do not pull in Snakemake.
    from snakemake.utils import validate

    _refuse_old_storage(config.get("storage") or {})
    # An unquoted YAML date (embargo_until: 2027-06-01) is a date object, not the schema's
    # string.
    for origin in [config.get("origin"), *(p.get("origin") for p in config.get("plates", []))]:
        if isinstance(origin, dict) and isinstance(origin.get("embargo_until"), datetime.date):
            origin["embargo_until"] = origin["embargo_until"].isoformat()
    check_retention_forms(config.get("retention") or {})
    validate(config, str(SCHEMA_PATH))
    check_config(config)


def _refuse_old_storage(storage: dict[str, Any]) -> None:
    """``storage.prices``, a remote's ``kind`` and ``workspace_kind`` became the solutions
    table, a remote's ``solution`` and ``workspace_solution``: say how to convert."""
    if "prices" in storage:
        entries = "; ".join(
            f"{name}: {{{', '.join(f'{k}: {v}' for k, v in (entry or {}).items())}}}"
            for name, entry in storage["prices"].items()
        )
        raise ConfigError(
            "storage.prices is now storage.solutions (the storage-solutions table; its "
            "defaults already hold the playbook's prices): move each entry there under the "
            "same name, with limit_gb renamed limit_gb_dataset, or delete the block to use the "
            f"defaults. Yours: {entries}"
        )
    if "workspace_kind" in storage:
        raise ConfigError(
            "storage.workspace_kind is now storage.workspace_solution: rename the key "
            f"(workspace_solution: {storage['workspace_kind']})"
        )
    for name, remote in (storage.get("remotes") or {}).items():
        if isinstance(remote, dict) and "kind" in remote:
            raise ConfigError(
                f"storage.remotes.{name}.kind is now storage.remotes.{name}.solution (a "
                f"storage.solutions entry, same names): write solution: {remote['kind']}"
            )


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
    check_solutions(config)
    check_schedules(config)
    _check_remote_plugins(config.get("storage", {}).get("remotes", {}))
    _check_origins(config, plates)
    illumination = config["illumination"]
    if illumination["filter_size"] is not None and illumination["object_size"] is not None:
        raise ConfigError("illumination: give filter_size or object_size, not both")
    pm = config["platemap"]
    if pm["well_column"] is None and (pm["row_column"] is None or pm["column_column"] is None):
        raise ConfigError("platemap: set well_column, or both row_column and column_column")
    try:
        measured = feature_columns(
            names, groups=config["features"]["groups"], options=config["features"]["options"]
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"features: {err}") from err
    if image_plates:
        _check_readout(config, measured)
    # Embeddings: crops on, a local model file, crop channels.
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


def _check_origins(config: dict[str, Any], plates: list[str]) -> None:
    """Each plate's origin (the experiment-wide one merged in) is coherent, and the routes
    name remotes and plates of this config."""
    check_origin("origin", {**schema_default("origin"), **config["origin"]})
    for plate in plates:
        check_origin(f"plates[{plate}].origin", plate_origin(config, plate))
    remotes = config["storage"]["remotes"]
    for index, entry in enumerate(config["storage"]["routes"]):
        where = f"storage.routes[{index}]"
        if entry["remote"] not in remotes:
            raise ConfigError(
                f"{where}.remote {entry['remote']!r} is not a remote of storage.remotes "
                f"{sorted(remotes)}"
            )
        unknown = sorted(set(entry.get("plates", [])) - set(plates))
        if unknown:
            raise ConfigError(f"{where}.plates: {unknown} are not plates of this config")
        known = [*LEVELS, "provenance", "platemap"]
        levels = sorted(set(entry.get("levels", [])) - set(known))
        if levels:
            raise ConfigError(f"{where}.levels: unknown level(s) {levels}; one of {known}")


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

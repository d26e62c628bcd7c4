"""Reading a level of a plate from a workspace, for notebooks: tables as DataFrames, image
levels as their files. The paths come from the level declarations
(:func:`cellstrata.config.level_path`)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cellstrata.levels import LEVEL_PATHS, VERSIONED_LEVELS, level_path

#: Levels stored as Parquet tables (the rest are images, masks or crop stores).
TABLE_LEVELS = ("manifest", "qc", "embeddings", "features", "profiles")


def _only_version(workspace: Path, level: str, plate: str) -> str:
    """The one version of ``level`` the workspace holds for ``plate``."""
    found = sorted(p.parent.name for p in workspace.glob(level_path(level, plate, "*")))
    if len(found) != 1:
        held = f"versions {found}" if found else "no version"
        raise ValueError(f"{workspace} holds {held} of the {level} of plate {plate}: pass version=")
    return found[0]


def read_level(
    workspace: str | os.PathLike,
    level: str,
    plate: str,
    version: str | None = None,
    *,
    table: str = "normalized",
) -> pd.DataFrame | list[Path]:
    """Read one level of one plate from a workspace.

    Parameters
    ----------
    workspace : str or os.PathLike
        The workspace directory (the one holding ``results/``).
    level : str
        A level of :data:`cellstrata.config.LEVEL_PATHS`: ``manifest``, ``qc``,
        ``illumination``, ``corrected``, ``masks``, ``crops``, ``embeddings``, ``features`` or
        ``profiles``.
    plate : str
        Plate name.
    version : str, optional
        Segmentation version of a versioned level (masks, crops, embeddings, features,
        profiles); default the only one the workspace holds for the plate.
    table : str, default "normalized"
        For ``profiles``: which per-plate table (``aggregated``, ``annotated``, ``normalized``,
        ``feature_selected``, or a report: ``cell_qc``, ``nonfinite``, ``platemap``,
        ``normalization``).

    Returns
    -------
    pandas.DataFrame or list of pathlib.Path
        A table level as one DataFrame (the batches of features and embeddings stacked in
        file order); an image level as the sorted paths of its files (TIFFs, crop stores).

    Raises
    ------
    ValueError
        An unknown level, a version for an unversioned level, or no ``version`` when the
        workspace holds none or several.
    FileNotFoundError
        The level is not in the workspace (not made yet, deleted by retention, or archived:
        ``cellstrata pull`` brings an archived one back).
    """
    if level not in LEVEL_PATHS:
        raise ValueError(f"unknown level {level!r}; one of {list(LEVEL_PATHS)}")
    root = Path(workspace)
    if level not in VERSIONED_LEVELS and version is not None:
        raise ValueError(f"the {level} level has no versions (version={version!r})")
    if level in VERSIONED_LEVELS and version is None:
        version = _only_version(root, level, plate)
    path = root / level_path(level, plate, version)
    if level == "profiles":
        path = path / f"{plate}_{table}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the {level} of plate {plate} is not in {root}")
    if path.is_file():
        return pd.read_parquet(path)
    # Hidden files are bookkeeping (Snakemake's .snakemake_timestamp in directory outputs).
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if level in TABLE_LEVELS:
        tables = [pd.read_parquet(p) for p in files if p.suffix == ".parquet"]
        return pd.concat(tables, ignore_index=True)
    return files

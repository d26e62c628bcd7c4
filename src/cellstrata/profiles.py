"""Level 6: per-well profiles with pycytominer (aggregate, annotate, normalize, select)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycytominer import aggregate, annotate, feature_select, normalize
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.config import PROFILE_STEPS
from cellstrata.ingest import IngestError, normalize_well
from cellstrata.io import write_parquet

log = logging.getLogger(__name__)

STRATA = ["Metadata_Plate", "Metadata_Well"]
CONTROL_COLUMN = "Metadata_control_type"


class PlatemapError(ValueError):
    """Platemap and imaged wells disagree; the message names the plate and wells."""


def read_platemap(
    path: str | os.PathLike,
    *,
    well_column: str | None = "well",
    row_column: str | None = None,
    column_column: str | None = None,
) -> pd.DataFrame:
    """Read a CSV/TSV platemap and give it a canonical ``Metadata_Well`` column.

    Every other column is kept, prefixed with ``Metadata_`` unless it already is.

    Raises
    ------
    PlatemapError
        When the well column(s) are missing, a well cannot be read, or a well is listed twice.
    """
    path = Path(path)
    sep = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    needed = [well_column] if well_column else [row_column, column_column]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise PlatemapError(f"platemap {path}: column(s) {missing} not found in {list(table)}")
    try:
        if well_column:
            wells = [normalize_well(w) for w in table[well_column]]
        else:
            wells = [
                normalize_well(row=r, column=c)
                for r, c in zip(table[row_column], table[column_column], strict=True)
            ]
    except IngestError as err:
        raise PlatemapError(f"platemap {path}: {err}") from err
    table = table.rename(columns=lambda c: c if c.startswith("Metadata_") else f"Metadata_{c}")
    table.insert(0, "Metadata_Well", wells)
    duplicated = sorted(table.loc[table["Metadata_Well"].duplicated(), "Metadata_Well"].unique())
    if duplicated:
        raise PlatemapError(f"platemap {path}: well(s) listed more than once: {duplicated}")
    return _restore_numbers(table)


def _restore_numbers(table: pd.DataFrame) -> pd.DataFrame:
    # Read as text so wells like "01" survive; give numeric columns their numbers back.
    for column in table.columns:
        if column == "Metadata_Well":
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.notna().all():
            table[column] = numbers
    return table


def mark_controls(
    platemap: pd.DataFrame,
    *,
    column: str | None = "control",
    negative: Sequence[Any] = ("negative",),
    positive: Sequence[Any] = ("positive",),
    negative_wells: Sequence[str] = (),
    positive_wells: Sequence[str] = (),
) -> pd.DataFrame:
    """Add ``Metadata_control_type`` (negative / positive / treated) to a platemap."""
    types = pd.Series("treated", index=platemap.index)
    for kind, values, wells in (
        ("negative", negative, negative_wells),
        ("positive", positive, positive_wells),
    ):
        if wells:
            chosen = platemap["Metadata_Well"].isin([normalize_well(w) for w in wells])
        elif column:
            name = column if column.startswith("Metadata_") else f"Metadata_{column}"
            if name not in platemap:
                raise PlatemapError(f"controls.column {column!r} is not a platemap column")
            as_text = platemap[name].astype(str)
            chosen = as_text.isin([str(v) for v in values])
        else:
            continue
        types[chosen] = kind
    return platemap.assign(**{CONTROL_COLUMN: types})


def aggregate_features(
    paths: Sequence[str | os.PathLike], *, operation: str = "median"
) -> pd.DataFrame:
    """Aggregate single cells per well, one feature file at a time.

    Jobs hold whole wells, so per-file aggregation is exact and only one job's cells are in
    memory at once.
    """
    parts = []
    for path in paths:
        cells = pd.read_parquet(path)
        if cells.empty:
            log.warning("%s: no cells", path)
            continue
        parts.append(
            aggregate(
                cells,
                strata=STRATA,
                features="infer",
                operation=operation,
                compute_object_count=True,
                object_feature="Metadata_ObjectNumber",
            )
        )
    if not parts:
        raise ValueError(f"no cells in any of {len(paths)} feature file(s)")
    return pd.concat(parts, ignore_index=True).sort_values(STRATA, ignore_index=True)


def annotate_profiles(aggregated: pd.DataFrame, platemap: pd.DataFrame) -> pd.DataFrame:
    """Join profiles with the platemap, refusing wells the platemap does not describe.

    pycytominer's annotate is an inner join, so an imaged well absent from the platemap would
    vanish silently; here it is an error. Platemap wells never imaged are logged.
    """
    plate = ", ".join(map(str, aggregated["Metadata_Plate"].unique()))
    imaged = set(aggregated["Metadata_Well"])
    described = set(platemap["Metadata_Well"])
    unmapped = sorted(imaged - described)
    if unmapped:
        raise PlatemapError(f"plate {plate}: imaged well(s) missing from the platemap: {unmapped}")
    never = sorted(described - imaged)
    if never:
        log.warning("plate %s: platemap wells never imaged: %s", plate, never)
    annotated = annotate(
        aggregated,
        platemap,
        join_on=["Metadata_Well", "Metadata_Well"],
        add_metadata_id_to_platemap=False,
    )
    if len(annotated) != len(aggregated):
        raise PlatemapError(
            f"plate {plate}: annotation changed the row count {len(aggregated)} -> {len(annotated)}"
        )
    return annotated


def normalize_profiles(
    annotated: pd.DataFrame, *, method: str = "mad_robustize", samples: str = "negative_controls"
) -> pd.DataFrame:
    """Normalize features to the negative controls (or to all wells)."""
    if samples == "negative_controls":
        n_controls = int((annotated[CONTROL_COLUMN] == "negative").sum())
        if n_controls == 0:
            plate = ", ".join(map(str, annotated["Metadata_Plate"].unique()))
            raise PlatemapError(f"plate {plate}: no negative-control well to normalize to")
        query = f"{CONTROL_COLUMN} == 'negative'"
    else:
        query = "all"
    features = infer_cp_features(annotated)
    if method == "mad_robustize":
        reference = annotated.query(query) if query != "all" else annotated
        deviation = (reference[features] - reference[features].median()).abs().median()
        flat = sorted(deviation.index[deviation == 0])
        if flat:
            log.warning("%d feature(s) have zero MAD in the reference wells: %s", len(flat), flat)
    return normalize(annotated, features=features, samples=query, method=method)


def select_features(
    normalized: pd.DataFrame, *, operations: Sequence[str] = ("variance_threshold",)
) -> pd.DataFrame:
    """Apply pycytominer feature_select operations."""
    selected = feature_select(normalized, features="infer", operation=list(operations))
    dropped = len(infer_cp_features(normalized)) - len(infer_cp_features(selected))
    log.info(
        "feature selection kept %d features, dropped %d", len(infer_cp_features(selected)), dropped
    )
    return selected


def build_profiles(
    feature_paths: Sequence[str | os.PathLike],
    platemap_path: str | os.PathLike,
    *,
    platemap_options: Mapping[str, Any],
    controls: Mapping[str, Any],
    aggregate_operation: str = "median",
    normalize_method: str = "mad_robustize",
    normalize_samples: str = "negative_controls",
    feature_select_operations: Sequence[str] = ("variance_threshold",),
) -> dict[str, pd.DataFrame]:
    """Run the whole profile chain for one plate.

    Returns
    -------
    dict
        ``{"aggregated", "annotated", "normalized", "feature_selected"}`` -> DataFrame.
    """
    platemap = mark_controls(read_platemap(platemap_path, **platemap_options), **controls)
    aggregated = aggregate_features(feature_paths, operation=aggregate_operation)
    if len(aggregated) < 2:
        # pycytominer's normalize and variance filter need a spread of wells; its own error
        # for one well ("X contains only one sample") names neither the plate nor the cause.
        wells = aggregated["Metadata_Well"].tolist() if len(aggregated) else []
        raise ValueError(
            f"plate {', '.join(map(str, feature_paths))}: per-well profiles need at least 2 "
            f"wells with cells to normalize and select features; found {wells}. The single-cell "
            "features are complete; stop at the features level for such a plate."
        )
    annotated = annotate_profiles(aggregated, platemap)
    normalized = normalize_profiles(annotated, method=normalize_method, samples=normalize_samples)
    selected = select_features(normalized, operations=feature_select_operations)
    return dict(zip(PROFILE_STEPS, (aggregated, annotated, normalized, selected), strict=True))


def zprime(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Z'-factor of a readout between positive and negative control wells."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    spread = 3 * (positive.std(ddof=1) + negative.std(ddof=1))
    return float(1 - spread / abs(positive.mean() - negative.mean()))


def write_profiles(
    feature_paths: Sequence[str | os.PathLike],
    platemap_path: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """Run :func:`build_profiles` and write each step to ``outputs[step]`` as Parquet."""
    missing = [step for step in PROFILE_STEPS if step not in outputs]
    if missing:
        raise ValueError(f"no output path for profile step(s) {missing}")
    tables = build_profiles(feature_paths, platemap_path, **options)
    for step, table in tables.items():
        write_parquet(outputs[step], table)
    return tables

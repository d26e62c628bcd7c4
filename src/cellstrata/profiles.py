"""Level 6: per-well profiles with pycytominer (aggregate, annotate, normalize, select)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pycytominer import aggregate, annotate, feature_select, normalize
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.cellqc import (
    DEFAULT_CONDITIONS,
    check_conditions,
    condition_features,
    flag_cells,
    nonfinite_counts,
    plate_statistics,
)
from cellstrata.config import PROFILE_STEPS
from cellstrata.ingest import IngestError, normalize_well
from cellstrata.io import write_parquet

log = logging.getLogger(__name__)

STRATA = ["Metadata_Plate", "Metadata_Well"]
#: The columns that identify a cell in every single-cell table.
CELL_KEYS = [*STRATA, "Metadata_Site", "Metadata_ObjectNumber"]
CONTROL_COLUMN = "Metadata_control_type"
#: feature_select operations that compare wells: undefined for a plate of one well.
ACROSS_WELLS = ("variance_threshold", "correlation_threshold")


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


def join_embeddings(
    cells: pd.DataFrame, features_path: str | os.PathLike, embedding_path: str | os.PathLike
) -> pd.DataFrame:
    """Join one job's embedding table (:mod:`cellstrata.embed`) to its features on the cell keys.

    Every cell must have exactly one embedding and every embedding one cell; anything else
    (crops of another segmentation, duplicated keys, columns in both) is an error naming the
    batch.
    """
    embeddings = pd.read_parquet(embedding_path)
    batch = f"batch {Path(features_path).stem} ({features_path} and {embedding_path})"
    shared = sorted(set(cells.columns) & set(embeddings.columns) - set(CELL_KEYS))
    if shared:
        raise ValueError(f"{batch}: features and embeddings both have column(s) {shared[:5]}")
    for name, table in (("features", cells), ("embeddings", embeddings)):
        duplicated = int(table.duplicated(CELL_KEYS).sum())
        if duplicated:
            raise ValueError(f"{batch}: {duplicated} cell key(s) appear twice in the {name}")
    joined = cells.merge(embeddings, on=CELL_KEYS, how="inner")
    if not len(joined) == len(cells) == len(embeddings):
        raise ValueError(
            f"{batch}: {len(cells)} cells in the features, {len(embeddings)} embeddings, "
            f"{len(joined)} in both; every cell needs its embedding (were the crops made "
            "from the same masks?)"
        )
    return joined


class Aggregation(NamedTuple):
    """Per-well profiles and what single-cell QC found on the way."""

    #: Per-well aggregated features, ``Metadata_Object_Count`` included.
    profiles: pd.DataFrame
    #: Per well: cells, cells flagged per QC condition, cells excluded.
    cell_qc: pd.DataFrame
    #: Per feature with non-finite values: ``feature, nan, inf`` counts over the plate.
    nonfinite: pd.DataFrame


def aggregate_features(
    paths: Sequence[str | os.PathLike],
    *,
    operation: str = "median",
    embedding_paths: Sequence[str | os.PathLike] = (),
    cell_qc: Mapping[str, Any] | None = None,
) -> Aggregation:
    """Aggregate single cells per well, one feature file at a time, after single-cell QC.

    Jobs hold whole wells, so per-file aggregation is exact and only one job's cells are in
    memory at once. ``embedding_paths`` (one per feature file, the same file name) are joined
    to their features first (:func:`join_embeddings`), so the embedding columns are
    aggregated with the features.

    Parameters
    ----------
    cell_qc : mapping, optional
        ``{"conditions": {name: {feature: z threshold}} or None (coSMicQC's defaults),
        "exclude": bool}``: cells are flagged per condition on per-plate z-scores
        (:mod:`cellstrata.cellqc`, statistics from a first pass over the files) and, with
        ``exclude``, left out of the aggregation. ``None`` flags nothing.

    Notes
    -----
    Non-finite values are counted per feature (logged and returned), and ±Inf become NaN
    before aggregation so a median or mean of the finite cells is taken, never an Inf.
    """
    embeddings = {Path(p).name: p for p in embedding_paths}
    if embeddings and sorted(embeddings) != sorted(Path(p).name for p in paths):
        raise ValueError(
            f"embedding files {sorted(embeddings)} do not match the feature files "
            f"{sorted(Path(p).name for p in paths)}"
        )
    conditions, exclude, statistics = _cell_qc_setup(paths, cell_qc)
    parts, qc_rows, nonfinite = [], [], []
    for path in paths:
        cells = pd.read_parquet(path)
        if embeddings:
            cells = join_embeddings(cells, path, embeddings[Path(path).name])
        if cells.empty:
            log.warning("%s: no cells", path)
            continue
        features = infer_cp_features(cells)
        nonfinite.append(nonfinite_counts(cells, features))
        cells[features] = cells[features].replace([np.inf, -np.inf], np.nan)
        flags = flag_cells(cells, conditions, statistics)
        flagged = flags.any(axis=1).to_numpy()
        qc = flags.groupby(cells["Metadata_Well"]).sum()
        qc.insert(0, "Metadata_Cells", cells.groupby("Metadata_Well").size())
        qc["Metadata_cqc_excluded"] = (
            pd.Series(flagged & exclude, index=cells.index).groupby(cells["Metadata_Well"]).sum()
        )
        qc = qc.reset_index()
        qc.insert(0, "Metadata_Plate", cells["Metadata_Plate"].iloc[0])
        qc_rows.append(qc)
        if exclude and flagged.any():
            cells = cells[~flagged]
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
    report = _sum_nonfinite(nonfinite)
    for row in report.itertuples():
        log.warning("feature %s: %d NaN and %d Inf cell values", row.feature, row.nan, row.inf)
    cell_qc_table = pd.concat(qc_rows, ignore_index=True)
    for column in cell_qc_table.columns[3:]:
        log.info("cell QC %s: %d cells", column, int(cell_qc_table[column].sum()))
    profiles = pd.concat(parts, ignore_index=True).sort_values(STRATA, ignore_index=True)
    return Aggregation(profiles, cell_qc_table.sort_values(STRATA, ignore_index=True), report)


def _cell_qc_setup(
    paths: Sequence[str | os.PathLike], cell_qc: Mapping[str, Any] | None
) -> tuple[dict[str, dict[str, float]], bool, dict[str, tuple[float, float]]]:
    """Conditions, exclude flag and per-plate statistics (first pass over the files)."""
    if not cell_qc:
        return {}, False, {}
    conditions = dict(cell_qc.get("conditions") or DEFAULT_CONDITIONS)
    columns = pq.read_schema(paths[0]).names if paths else []
    check_conditions(conditions, columns, str(paths[0]) if paths else "no feature files")
    statistics = plate_statistics(paths, condition_features(conditions))
    return conditions, bool(cell_qc.get("exclude", False)), statistics


def _sum_nonfinite(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [part for part in parts if len(part)]
    if not frames:
        return pd.DataFrame({"feature": [], "nan": [], "inf": []}).astype(
            {"feature": str, "nan": np.int64, "inf": np.int64}
        )
    return pd.concat(frames).groupby("feature", as_index=False, sort=True).sum()


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
    """Apply pycytominer feature_select operations (on one well, those that need no spread)."""
    operations = list(operations)
    if len(normalized) < 2:
        skipped = [op for op in operations if op in ACROSS_WELLS]
        operations = [op for op in operations if op not in ACROSS_WELLS]
        if skipped:
            log.warning("one well: feature selection skips %s, which compare wells", skipped)
    if not operations:
        return normalized
    selected = feature_select(normalized, features="infer", operation=operations)
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
    embedding_paths: Sequence[str | os.PathLike] = (),
    cell_qc: Mapping[str, Any] | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the whole profile chain for one plate (``embedding_paths``, ``cell_qc``: see
    :func:`aggregate_features`).

    Returns
    -------
    dict
        ``{"aggregated", "annotated", "normalized", "feature_selected"}`` -> DataFrame, plus
        the reports ``"cell_qc"`` and ``"nonfinite"`` (:data:`PROFILE_REPORTS`).
    """
    platemap = mark_controls(read_platemap(platemap_path, **platemap_options), **controls)
    aggregation = aggregate_features(
        feature_paths,
        operation=aggregate_operation,
        embedding_paths=embedding_paths,
        cell_qc=cell_qc,
    )
    aggregated = aggregation.profiles
    if len(aggregated) < 2:
        # A plate of one well (e.g. CellProfiler's ExampleHuman site): aggregated and annotated
        # are its profile; normalized to itself every feature is 0 (pycytominer's convention
        # for a reference without spread), and feature selection skips what compares wells.
        log.warning(
            "plate %s has one well with cells (%s): its normalized features are 0 and only "
            "aggregated/annotated carry its measurements",
            ", ".join(map(str, aggregated["Metadata_Plate"].unique())),
            ", ".join(aggregated["Metadata_Well"]),
        )
    annotated = annotate_profiles(aggregated, platemap)
    normalized = normalize_profiles(annotated, method=normalize_method, samples=normalize_samples)
    selected = select_features(normalized, operations=feature_select_operations)
    tables = dict(zip(PROFILE_STEPS, (aggregated, annotated, normalized, selected), strict=True))
    return {**tables, "cell_qc": aggregation.cell_qc, "nonfinite": aggregation.nonfinite}


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
    """Run :func:`build_profiles`; write each step (and each report given an output path) to
    ``outputs[name]`` as Parquet."""
    missing = [step for step in PROFILE_STEPS if step not in outputs]
    if missing:
        raise ValueError(f"no output path for profile step(s) {missing}")
    tables = build_profiles(feature_paths, platemap_path, **options)
    for name, table in tables.items():
        if name in outputs:
            write_parquet(outputs[name], table)
    return tables

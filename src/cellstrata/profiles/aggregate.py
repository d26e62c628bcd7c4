"""Level 6: per-well profiles of a plate with pycytominer (aggregate, annotate, normalize,
select) and their reports. The platemap is read by :mod:`cellstrata.profiles.platemap`; the
experiment level across plates is :mod:`cellstrata.profiles.experiment`."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pycytominer import aggregate, annotate, feature_select, normalize
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.config import PROFILE_STEPS
from cellstrata.io import write_parquet
from cellstrata.profiles.cellqc import (
    DEFAULT_CONDITIONS,
    check_conditions,
    condition_features,
    flag_cells,
    nonfinite_counts,
    plate_statistics,
)
from cellstrata.profiles.platemap import (
    CONTROL_COLUMN,
    PLATEMAP_REPORT,
    UNANNOTATED,
    PlatemapError,
    _read_options,
    mark_controls,
    metadata_name,
    read_platemap,
)

log = logging.getLogger(__name__)

STRATA = ["Metadata_Plate", "Metadata_Well"]
#: The columns that identify a cell in every single-cell table.
CELL_KEYS = [*STRATA, "Metadata_Site", "Metadata_ObjectNumber"]
#: feature_select operations that compare wells: undefined for a plate of one well.
ACROSS_WELLS = ("variance_threshold", "correlation_threshold")


#: Bytes of one float64 block of single-cell values (all cells of a file, some feature
#: columns) held at once while aggregating: what bounds memory, whatever the plate size.
CHUNK_BYTES = 128 * 2**20


def embedding_rows(
    keys: pd.DataFrame, features_path: str | os.PathLike, embedding_path: str | os.PathLike
) -> tuple[np.ndarray, list[str]]:
    """Match one job's embedding table (:mod:`cellstrata.singlecell.embed`) to its cells by the
    cell keys.

    Parameters
    ----------
    keys : pandas.DataFrame
        The :data:`CELL_KEYS` columns of the feature file, one row per cell.

    Returns
    -------
    rows : numpy.ndarray
        For each cell (row of ``keys``), its row in the embedding table.
    columns : list of str
        The embedding feature columns.

    Raises
    ------
    ValueError
        Naming the batch, when a cell has no embedding or an embedding no cell (crops of
        another segmentation), a key appears twice, or a column is in both tables.
    """
    schema = pq.read_schema(embedding_path).names
    columns = [c for c in schema if c not in CELL_KEYS]
    batch = f"batch {Path(features_path).stem} ({features_path} and {embedding_path})"
    shared = sorted(set(columns) & set(pq.read_schema(features_path).names))
    if shared:
        raise ValueError(f"{batch}: features and embeddings both have column(s) {shared[:5]}")
    embedded = pq.read_table(embedding_path, columns=CELL_KEYS).to_pandas()
    for name, table in (("features", keys), ("embeddings", embedded)):
        duplicated = int(table.duplicated(CELL_KEYS).sum())
        if duplicated:
            raise ValueError(f"{batch}: {duplicated} cell key(s) appear twice in the {name}")
    position = embedded.assign(_row=np.arange(len(embedded)))
    joined = keys.merge(position, on=CELL_KEYS, how="left")
    matched = int(joined["_row"].notna().sum())
    if not len(keys) == len(embedded) == matched:
        raise ValueError(
            f"{batch}: {len(keys)} cells in the features, {len(embedded)} embeddings, "
            f"{matched} in both; every cell needs its embedding (were the crops made "
            "from the same masks?)"
        )
    return joined["_row"].to_numpy(np.int64), columns


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
    chunk_bytes: int = CHUNK_BYTES,
) -> Aggregation:
    """Aggregate single cells per well with pycytominer, streaming columns from Parquet.

    The single-cell table is never loaded whole: per file, the cell keys are read once, then
    pycytominer's ``aggregate`` runs on blocks of feature columns sized so one float64 block
    holds at most ``chunk_bytes`` (memory is bounded by cells per file × block width, not by
    the feature count). A well must lie in one file (jobs hold whole wells; a CellProfiler
    plate is one file), which makes per-file aggregation exact; a well in two files is an
    error naming both.

    Parameters
    ----------
    embedding_paths : sequence of path-like
        One per feature file, the same file name: their columns are matched to the cells by
        :data:`CELL_KEYS` (:func:`embedding_rows`) and aggregated with the features.
    cell_qc : mapping, optional
        ``{"conditions": {name: {feature: z threshold}} or None (coSMicQC's defaults),
        "exclude": bool}``: cells are flagged per condition on per-plate z-scores
        (:mod:`cellstrata.profiles.cellqc`, statistics from a first pass over the files) and, with
        ``exclude``, left out of the aggregation. ``None`` flags nothing.
    chunk_bytes : int
        Memory of one float64 block of cell values.

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
    _check_wells_in_one_file(paths)
    conditions, exclude, statistics = _cell_qc_setup(paths, cell_qc)
    parts, qc_rows, nonfinite = [], [], []
    for path in paths:
        keys = pq.read_table(path, columns=CELL_KEYS).to_pandas()
        if keys.empty:
            log.warning("%s: no cells", path)
            continue
        sources = [(path, _feature_columns(path), None)]
        if embeddings:
            rows, columns = embedding_rows(keys, path, embeddings[Path(path).name])
            sources.append((embeddings[Path(path).name], columns, rows))
        flags = flag_cells(
            pd.read_parquet(path, columns=condition_features(conditions)), conditions, statistics
        )
        flagged = flags.any(axis=1).to_numpy()
        qc_rows.append(_cell_qc_counts(keys, flags, flagged & exclude))
        kept = ~(flagged & exclude)
        well_parts = []
        for source, rows, block_columns in _blocks(sources, len(keys), chunk_bytes):
            block = pq.read_table(source, columns=block_columns).to_pandas()
            if rows is not None:
                block = block.iloc[rows].reset_index(drop=True)
            nonfinite.append(nonfinite_counts(block, block_columns))
            block = block.replace([np.inf, -np.inf], np.nan)
            cells = pd.concat([keys, block], axis=1)[kept]
            well_parts.append(
                aggregate(
                    cells,
                    strata=STRATA,
                    features=block_columns,
                    operation=operation,
                    compute_object_count=not well_parts,
                    object_feature="Metadata_ObjectNumber",
                ).set_index(STRATA)
            )
            del block, cells
        parts.append(pd.concat(well_parts, axis=1).reset_index())
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


def _feature_columns(path: str | os.PathLike) -> list[str]:
    """pycytominer's feature columns of a Parquet file, from its schema alone."""
    return infer_cp_features(pd.DataFrame(columns=pq.read_schema(path).names))


def _blocks(
    sources: Sequence[tuple[Any, list[str], np.ndarray | None]], n_cells: int, chunk_bytes: int
) -> Iterator[tuple[Any, np.ndarray | None, list[str]]]:
    """Yield ``(source, rows, columns)``: each source's columns in blocks of ``chunk_bytes``."""
    width = max(1, chunk_bytes // (8 * max(n_cells, 1)))
    for source, columns, rows in sources:
        for start in range(0, len(columns), width):
            yield source, rows, columns[start : start + width]


def _check_wells_in_one_file(paths: Sequence[str | os.PathLike]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        wells = pq.read_table(path, columns=STRATA).to_pandas().drop_duplicates()
        for plate, well in wells.itertuples(index=False):
            first = seen.setdefault((plate, well), str(path))
            if first != str(path):
                raise ValueError(
                    f"plate {plate} well {well}: cells in two feature files ({first} and "
                    f"{path}); per-well aggregation needs each well in one file"
                )


def _cell_qc_counts(keys: pd.DataFrame, flags: pd.DataFrame, excluded: np.ndarray) -> pd.DataFrame:
    """Per well: cells, cells flagged per condition, cells excluded."""
    wells = keys["Metadata_Well"].to_numpy()
    qc = flags.groupby(wells).sum()
    qc.insert(0, "Metadata_Cells", pd.Series(wells).value_counts())
    qc["Metadata_cqc_excluded"] = pd.Series(excluded).groupby(wells).sum()
    qc = qc.rename_axis("Metadata_Well").reset_index()
    qc.insert(0, "Metadata_Plate", keys["Metadata_Plate"].iloc[0])
    return qc


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


def _treated_wells(platemap: pd.DataFrame, treatment_columns: Sequence[str]) -> set[str]:
    """Wells of an annotated platemap with a value in a treatment column (any annotation
    column when none are given; the control type :func:`mark_controls` adds does not count)."""
    columns = [metadata_name(c) for c in treatment_columns] or [
        c for c in platemap.columns if c not in ("Metadata_Well", CONTROL_COLUMN)
    ]
    values = platemap[columns].fillna("").astype(str).apply(lambda column: column.str.strip())
    has = (values != "").any(axis=1)
    return set(platemap.loc[has, "Metadata_Well"])


def annotate_profiles(
    aggregated: pd.DataFrame,
    platemap: pd.DataFrame,
    *,
    on_mismatch: str = "error",
    empty_wells: Sequence[str] = (),
    never_imaged: str = "report",
    treatment_columns: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join profiles with the platemap (pycytominer's annotate); no well may vanish.

    pycytominer's annotate is an inner join, so an imaged well absent from the platemap would
    vanish silently. Here it is an error naming the plate and wells or, with
    ``on_mismatch="report"``, the well is kept with empty annotations and
    ``Metadata_control_type`` :data:`UNANNOTATED` (so it is never a control). Platemap wells
    never imaged are reported; with ``never_imaged="error"``, those with a treatment (a value
    in ``treatment_columns``, or in any annotation column when none are given) are an error.

    ``empty_wells`` are wells that were imaged but gave no cells (empty fields, or every site
    excluded by QC): they have no profile and are reported as ``no_cells``, not mistaken for
    platemap wells never imaged (and, when the platemap lacks them too, not passed over).

    Returns
    -------
    annotated : pandas.DataFrame
        One row per aggregated well.
    issues : pandas.DataFrame
        :data:`PLATEMAP_REPORT` rows for unmapped, empty and never-imaged wells.
    """
    plate = ", ".join(map(str, aggregated["Metadata_Plate"].unique()))
    imaged = set(aggregated["Metadata_Well"])
    empty = set(empty_wells) - imaged
    described = set(platemap["Metadata_Well"])
    unmapped = sorted(imaged - described)
    if (unmapped or empty - described) and on_mismatch != "report":
        raise PlatemapError(
            f"plate {plate}: imaged well(s) missing from the platemap: "
            f"{sorted([*unmapped, *(empty - described)])}"
        )
    never = sorted(described - imaged - empty)
    if never:
        log.warning("plate %s: platemap wells never imaged: %s", plate, never)
    treated = _treated_wells(platemap, treatment_columns)
    missed = [well for well in never if well in treated]
    if missed and never_imaged == "error":
        raise PlatemapError(
            f"plate {plate}: platemap well(s) with a treatment never imaged: {missed}; check "
            "images.pattern and the image root, or set platemap.never_imaged: report to "
            "profile the imaged wells only"
        )
    issues = [(plate, w, "never_imaged", "none", "in the platemap, no cells") for w in never]
    if empty:
        log.warning(
            "plate %s: imaged well(s) without any cell, no profile: %s", plate, sorted(empty)
        )
    issues += [
        (
            plate,
            w,
            "no_cells",
            "no profile",
            "imaged, no cells" + ("" if w in described else "; not in the platemap"),
        )
        for w in sorted(empty)
    ]
    if unmapped:
        log.warning("plate %s: imaged wells missing from the platemap kept: %s", plate, unmapped)
        issues += [(plate, w, "not_in_platemap", "kept unannotated", "imaged") for w in unmapped]
        platemap = pd.concat(
            [platemap, pd.DataFrame({"Metadata_Well": unmapped, CONTROL_COLUMN: UNANNOTATED})],
            ignore_index=True,
        )
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
    return annotated, pd.DataFrame(issues, columns=PLATEMAP_REPORT)


#: Columns of the normalization report (``<plate>_normalization.parquet``).
NORMALIZATION_REPORT = ["feature", "issue", "action", "wells_nan", "reference_spread"]


def normalize_profiles(
    annotated: pd.DataFrame, *, method: str = "mad_robustize", samples: str = "negative_controls"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalize features to the negative controls (or to all wells) with pycytominer.

    A feature without spread in the reference wells (zero MAD, standard deviation or IQR,
    by ``method``) or without any value there cannot be scaled: pycytominer would divide by
    its epsilon (values near 1e18) or return a NaN column. Such features are left out of the
    normalized table and reported by name; features NaN in some wells are kept and reported.
    With fewer than two reference wells, spread is undefined and nothing is left out.

    Returns
    -------
    normalized : pandas.DataFrame
    report : pandas.DataFrame
        :data:`NORMALIZATION_REPORT` rows, one per reported feature.
    """
    plate = ", ".join(map(str, annotated["Metadata_Plate"].unique()))
    if samples == "negative_controls":
        reference = annotated[annotated[CONTROL_COLUMN] == "negative"]
        if reference.empty:
            raise PlatemapError(f"plate {plate}: no negative-control well to normalize to")
        query = f"{CONTROL_COLUMN} == 'negative'"
    else:
        reference, query = annotated, "all"
    features = infer_cp_features(annotated)
    spread = _reference_spread(reference[features], method)
    wells_nan = annotated[features].isna().sum()
    rows = []
    if len(reference) >= 2:
        for feature in features:
            if reference[feature].isna().all():
                rows.append((feature, "no_reference_value", "left out"))
            elif spread[feature] == 0:
                rows.append((feature, f"zero_{_SPREAD[method]}", "left out"))
    left_out = {row[0] for row in rows}
    rows += [(f, "nan_in_wells", "kept") for f in features if wells_nan[f] and f not in left_out]
    report = pd.DataFrame(
        [(f, issue, action, int(wells_nan[f]), float(spread[f])) for f, issue, action in rows],
        columns=NORMALIZATION_REPORT,
    )
    if left_out:
        log.warning(
            "plate %s: %d feature(s) cannot be normalized and are left out: %s",
            plate,
            len(left_out),
            sorted(left_out),
        )
    kept = [f for f in features if f not in left_out]
    normalized = normalize(
        annotated.drop(columns=sorted(left_out)), features=kept, samples=query, method=method
    )
    return normalized, report


_SPREAD = {"mad_robustize": "mad", "standardize": "sd", "robustize": "iqr"}


def _reference_spread(values: pd.DataFrame, method: str) -> pd.Series:
    """The spread each method divides by, per feature, over the reference wells."""
    if method == "mad_robustize":
        return (values - values.median()).abs().median()
    if method == "standardize":
        return values.std(ddof=0)
    return values.quantile(0.75) - values.quantile(0.25)


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
    plate: str | None = None,
    platemap_options: Mapping[str, Any],
    controls: Mapping[str, Any],
    aggregate_operation: str = "median",
    normalize_method: str = "mad_robustize",
    normalize_samples: str = "negative_controls",
    feature_select_operations: Sequence[str] = ("variance_threshold",),
    embedding_paths: Sequence[str | os.PathLike] = (),
    cell_qc: Mapping[str, Any] | None = None,
    manifest: str | os.PathLike | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the whole profile chain for one plate (``embedding_paths``, ``cell_qc``: see
    :func:`aggregate_features`; ``plate`` and ``platemap_options``: :func:`read_platemap`,
    whose ``on_mismatch`` also decides about imaged wells missing from the platemap).

    ``manifest``, the plate's image manifest, says which wells were imaged: those without any
    cell are reported as ``no_cells`` (:func:`annotate_profiles`). Without it (CellProfiler
    plates) only wells with cells are known.

    The platemap is read and checked first, so a bad platemap fails before any aggregation.

    Returns
    -------
    dict
        ``{"aggregated", "annotated", "normalized", "feature_selected"}`` -> DataFrame, plus
        the reports ``"cell_qc"``, ``"nonfinite"``, ``"platemap"`` (:data:`PLATEMAP_REPORT`)
        and ``"normalization"`` (:data:`NORMALIZATION_REPORT`); see :data:`PROFILE_REPORTS`.
    """
    read_options = _read_options(platemap_options)
    platemap = read_platemap(platemap_path, plate=plate, **read_options)
    on_mismatch = platemap_options.get("on_mismatch", "error")
    annotation = mark_controls(platemap.table, **controls)
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
    empty_wells: list[str] = []
    if manifest is not None:
        imaged = pd.read_parquet(manifest, columns=["Metadata_Well"])["Metadata_Well"]
        empty_wells = sorted(set(imaged) - set(aggregated["Metadata_Well"]))
    annotated, unmatched = annotate_profiles(
        aggregated,
        annotation,
        on_mismatch=on_mismatch,
        empty_wells=empty_wells,
        never_imaged=platemap_options.get("never_imaged", "report"),
        treatment_columns=platemap_options.get("treatment_columns") or (),
    )
    normalized, normalization = normalize_profiles(
        annotated, method=normalize_method, samples=normalize_samples
    )
    selected = select_features(normalized, operations=feature_select_operations)
    tables = dict(zip(PROFILE_STEPS, (aggregated, annotated, normalized, selected), strict=True))
    reports = {
        "cell_qc": aggregation.cell_qc,
        "nonfinite": aggregation.nonfinite,
        "platemap": pd.concat([platemap.issues, unmatched], ignore_index=True),
        "normalization": normalization,
    }
    return {**tables, **reports}


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


def plate_profiles(
    cells: pd.DataFrame,
    platemap: pd.DataFrame | str | os.PathLike,
    *,
    platemap_options: Mapping[str, Any] | None = None,
    controls: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """Build one plate's profiles from a single-cell table: the workflow's profile chain
    (:func:`build_profiles`: aggregate, annotate, normalize, feature select) on tables in
    memory.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per cell of one plate: ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_Site``, ``Metadata_ObjectNumber`` and CellProfiler-named feature columns
        (``Nuclei_AreaShape_Area``, ...), e.g. :func:`cellstrata.measure_site` tables with
        those keys added.
    platemap : pandas.DataFrame or path
        The platemap as in its CSV (a ``well`` column, the ``control`` column, treatments), or
        the path of the CSV.
    platemap_options : mapping, optional
        The config's ``platemap`` options (``well_column``, ``on_mismatch``,
        ``treatment_columns``, ...); default their defaults.
    controls : mapping, optional
        The config's ``controls`` (default: column ``control``, value ``negative``).
    **options
        Further :func:`build_profiles` options: ``aggregate_operation``, ``normalize_method``,
        ``normalize_samples``, ``feature_select_operations``, ``cell_qc``.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``aggregated``, ``annotated``, ``normalized``, ``feature_selected`` and the reports
        ``cell_qc``, ``nonfinite``, ``platemap``, ``normalization``.
    """
    # build_profiles streams the cells from Parquet, as the workflow does: writing them once
    # gives the very same chain instead of a second in-memory copy of it.
    with tempfile.TemporaryDirectory() as tmp:
        cells_path = Path(tmp, "cells.parquet")
        write_parquet(cells_path, cells)
        if isinstance(platemap, pd.DataFrame):
            platemap_path = Path(tmp, "platemap.csv")
            platemap.to_csv(platemap_path, index=False)
        else:
            platemap_path = Path(platemap)
        return build_profiles(
            [cells_path],
            platemap_path,
            platemap_options=dict(platemap_options or {}),
            controls=dict(controls or {}),
            **options,
        )

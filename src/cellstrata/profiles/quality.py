"""Profile quality metrics: Z'-factor of a readout, mean average precision, cells per well.

All functions but :func:`write_quality` are pure: per-well profile tables (pycytominer layout:
``Metadata_*`` columns and CellProfiler-named features) in, DataFrames out.

Mean average precision (mAP) comes from copairs in two kinds:

``activity``
    Each treatment's replicate wells against the negative-control wells: a well's rank list
    holds its replicates (positives) and the negative controls (negatives), never other
    treatments. Can the treatment be told apart from the controls?
``consistency``
    Replicate retrieval among treatments: positives are the well's replicates, negatives the
    wells of every other treatment; negative controls take no part.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.io import write_parquet
from cellstrata.profiles.experiment import combine_plates
from cellstrata.profiles.platemap import CONTROL_COLUMN, metadata_name

log = logging.getLogger(__name__)

PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
OBJECT_COUNT = "Metadata_Object_Count"
#: Metadata_Plate of the rows computed over the wells of every plate together.
ALL_PLATES = "all"
#: The mAP kinds of :func:`average_precision_table`.
MAP_KINDS = ("activity", "consistency")
#: The tables of :func:`quality_tables`, each written by :func:`write_quality`.
QUALITY_TABLES = ("map", "zprime", "cell_counts")
ZPRIME_COLUMNS = [
    PLATE,
    "readout",
    "n_positive",
    "n_negative",
    "positive_mean",
    "negative_mean",
    "positive_sd",
    "negative_sd",
    "zprime",
    "zprime_low",
    "zprime_high",
    "robust_zprime",
    "robust_zprime_low",
    "robust_zprime_high",
    "ssmd",
    "ssmd_low",
    "ssmd_high",
]
#: Bootstrap resamples and the two-sided level of the intervals of :func:`zprime_table`.
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_LEVEL = 0.9
#: Readout transforms (``quality.readout.transform``): a log makes a ratio's spread
#: independent of its level.
READOUT_TRANSFORMS = (None, "log")
#: Columns of :func:`average_precision_table` after the treatment columns.
MAP_COLUMNS = [
    "n_wells",
    "mean_average_precision",
    "p_value",
    "corrected_p_value",
    "below_corrected_p",
    "kind",
]
# dtypes of the computed columns, so that an empty table has the schema of a full one.
_DTYPES = {
    "n_positive": "int64",
    "n_negative": "int64",
    "n_wells": "int64",
    "below_corrected_p": "bool",
    **dict.fromkeys(
        ["positive_mean", "negative_mean", "positive_sd", "negative_sd", *ZPRIME_COLUMNS[8:]],
        "float64",
    ),
    **dict.fromkeys(["mean_average_precision", "p_value", "corrected_p_value"], "float64"),
}
#: Keyword options of :func:`average_precision_table` that ``map_options`` may set.
MAP_OPTIONS = ("control_column", "features", "null_size", "threshold", "seed", "batch_size")
#: Metadata columns of profiles or cell QC tables that are counts, not platemap annotations.
_COUNT_PREFIXES = (OBJECT_COUNT, "Metadata_Cells", "Metadata_cqc_")
# copairs metadata columns built here (treatment code and the activity reference index).
_GROUP = "group"
_REFERENCE = "reference"


def zprime(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Z'-factor of a readout between positive and negative control wells.

    ``Z' = 1 - 3 (sd_p + sd_n) / |mean_p - mean_n|`` with sample standard deviations
    (``ddof=1``).

    Parameters
    ----------
    positive, negative : sequence of float
        The readout of the positive and of the negative control wells.

    Returns
    -------
    float
        The Z'-factor (1 is a perfect separation; above 0.5 is an excellent assay).

    Raises
    ------
    ValueError
        When a group has fewer than 2 values or a non-finite one, or the means are equal.
    """
    pos, neg = _control_groups(positive, negative, "Z'-factor")
    separation = abs(pos.mean() - neg.mean())
    if separation == 0:
        raise ValueError(
            f"Z'-factor is undefined: positive and negative controls have the same mean "
            f"({pos.mean():g})"
        )
    return float(1 - 3 * (pos.std(ddof=1) + neg.std(ddof=1)) / separation)


def robust_zprime(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Robust Z'-factor: :func:`zprime` with medians and scaled MADs (1.4826 x MAD, the SD of
    a normal sample), so that one outlying control well does not dominate it.

    Raises
    ------
    ValueError
        As :func:`zprime` (too few or non-finite values, equal medians).
    """
    pos, neg = _control_groups(positive, negative, "robust Z'-factor")
    separation = abs(np.median(pos) - np.median(neg))
    if separation == 0:
        raise ValueError("robust Z'-factor is undefined: the control medians are equal")
    spread = sum(1.4826 * np.median(np.abs(g - np.median(g))) for g in (pos, neg))
    return float(1 - 3 * spread / separation)


def ssmd(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Strictly standardized mean difference, ``(mean_p - mean_n) / sqrt(var_p + var_n)``
    (sample variances): its sign says the direction, its size the separation (|SSMD| >= 3
    is a strong control).

    Raises
    ------
    ValueError
        As :func:`zprime` (too few or non-finite values), or both groups constant.
    """
    pos, neg = _control_groups(positive, negative, "SSMD")
    spread = np.sqrt(pos.var(ddof=1) + neg.var(ddof=1))
    if spread == 0:
        raise ValueError("SSMD is undefined: both control groups are constant")
    return float((pos.mean() - neg.mean()) / spread)


#: The assay-quality statistics of :func:`zprime_table`, each with a bootstrap interval.
SEPARATION_STATISTICS = {"zprime": zprime, "robust_zprime": robust_zprime, "ssmd": ssmd}


def _control_groups(
    positive: Sequence[float], negative: Sequence[float], what: str
) -> tuple[np.ndarray, np.ndarray]:
    groups = {
        "positive": np.asarray(positive, dtype=float).ravel(),
        "negative": np.asarray(negative, dtype=float).ravel(),
    }
    for name, values in groups.items():
        if values.size < 2:
            raise ValueError(f"{what} needs at least 2 {name} control values; got {values.size}")
        if not np.isfinite(values).all():
            raise ValueError(f"{what}: the {name} control values are not all finite")
    return groups["positive"], groups["negative"]


def bootstrap_interval(
    positive: Sequence[float],
    negative: Sequence[float],
    statistic,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(positive, negative)``.

    The wells of each control group are resampled with replacement, separately (the design
    keeps its group sizes); resamples where the statistic is undefined are left out.

    Returns
    -------
    tuple of float
        ``(low, high)`` at the two-sided ``level``; NaN when no resample is defined.
    """
    pos, neg = _control_groups(positive, negative, "bootstrap interval")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        try:
            values.append(
                statistic(
                    rng.choice(pos, size=pos.size, replace=True),
                    rng.choice(neg, size=neg.size, replace=True),
                )
            )
        except ValueError:
            continue
    if not values:
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def readout_name(feature: str, divide_by: str | None = None, transform: str | None = None) -> str:
    """Readable name of a readout: ``"feature"``, ``"feature / divide_by"``, or either in
    ``log(...)``."""
    name = f"{feature} / {divide_by}" if divide_by else feature
    return f"{transform}({name})" if transform else name


def readout(
    profiles: pd.DataFrame,
    feature: str,
    divide_by: str | None = None,
    transform: str | None = None,
) -> pd.Series:
    """The readout of each well: one feature column, or the ratio ``feature / divide_by``,
    optionally log-transformed.

    Parameters
    ----------
    profiles : DataFrame
        Per-well profiles.
    feature : str
        The feature column.
    divide_by : str, optional
        A second feature column to divide by (a zero divisor gives ±Inf or NaN).
    transform : {None, "log"}
        ``log``: the natural log (non-positive values give NaN), so that the spread of a
        ratio does not grow with its level.

    Returns
    -------
    Series
        Aligned with ``profiles``, named by :func:`readout_name`.

    Raises
    ------
    ValueError
        When a column is missing; the message names it and the plate(s) of the table.
    """
    needed = [feature, divide_by] if divide_by else [feature]
    missing = [column for column in needed if column not in profiles.columns]
    if missing:
        raise ValueError(
            f"readout column(s) {missing} not in the profiles of plate(s) {_plates(profiles)}"
        )
    if transform not in READOUT_TRANSFORMS:
        raise ValueError(f"unknown readout transform {transform!r}; use {READOUT_TRANSFORMS}")
    values = profiles[feature].astype(float)
    if divide_by:
        values = values / profiles[divide_by].astype(float)
    if transform == "log":
        values = np.log(values.where(values > 0))
    return values.rename(readout_name(feature, divide_by, transform))


def zprime_table(
    profiles: pd.DataFrame,
    *,
    feature: str,
    divide_by: str | None = None,
    transform: str | None = None,
    control_column: str = CONTROL_COLUMN,
) -> pd.DataFrame:
    """Z'-factor of a readout per plate and, with more than one plate, over all wells, with
    the robust Z'-factor and the SSMD, each with a 90 % bootstrap interval
    (:func:`bootstrap_interval`, columns ``<statistic>_low`` / ``<statistic>_high``).

    Parameters
    ----------
    profiles : DataFrame
        Per-well profiles with ``Metadata_Plate`` and ``control_column`` (``"positive"`` /
        ``"negative"`` / anything else).
    feature, divide_by, transform : str
        The readout (:func:`readout`).
    control_column : str
        The column that marks control wells.

    Returns
    -------
    DataFrame
        :data:`ZPRIME_COLUMNS`: one row per plate (sorted), then a ``Metadata_Plate == "all"``
        row of the pooled wells when there are several plates. ``Metadata_Plate`` is text. A
        plate without 2 positive and 2 negative control wells (or with equal means) gets
        ``zprime`` NaN and a logged warning.

    Raises
    ------
    ValueError
        When a column is missing.
    """
    _require(profiles, [PLATE, control_column], "Z'-factor")
    values = readout(profiles, feature, divide_by, transform)
    name = str(values.name)
    finite = np.isfinite(values.to_numpy())
    if not finite.all():
        wells = _wells(profiles.loc[~finite])
        log.warning("%d well(s) with a non-finite %s left out: %s", len(wells), name, wells)
    types = profiles[control_column].astype(str).to_numpy()[finite]
    plates = profiles[PLATE].astype(str).to_numpy()[finite]
    values = values.to_numpy()[finite]
    rows = [
        _zprime_row(plate, values[plates == plate], types[plates == plate], name)
        for plate in sorted(set(plates))
    ]
    if len(rows) > 1:
        rows.append(_zprime_row(ALL_PLATES, values, types, name))
    return pd.DataFrame(rows, columns=ZPRIME_COLUMNS)


def _zprime_row(plate: str, values: np.ndarray, types: np.ndarray, name: str) -> dict[str, Any]:
    positive = pd.Series(values[types == "positive"])
    negative = pd.Series(values[types == "negative"])
    row = {
        PLATE: plate,
        "readout": name,
        "n_positive": len(positive),
        "n_negative": len(negative),
        "positive_mean": positive.mean(),
        "negative_mean": negative.mean(),
        "positive_sd": positive.std(ddof=1),
        "negative_sd": negative.std(ddof=1),
        **dict.fromkeys(ZPRIME_COLUMNS[8:], np.nan),
    }
    if len(positive) < 2 or len(negative) < 2:
        log.warning(
            "plate %s: Z'-factor of %s needs 2 positive and 2 negative control wells, has %d "
            "and %d; zprime is NaN",
            plate,
            name,
            len(positive),
            len(negative),
        )
        return row
    for column, statistic in SEPARATION_STATISTICS.items():
        try:
            row[column] = statistic(positive, negative)
        except ValueError as err:
            log.warning("plate %s: %s; %s is NaN", plate, err, column)
            continue
        row[f"{column}_low"], row[f"{column}_high"] = bootstrap_interval(
            positive, negative, statistic
        )
    return row


def average_precision_table(
    profiles: pd.DataFrame,
    *,
    treatment_columns: Sequence[str],
    kind: str,
    control_column: str = CONTROL_COLUMN,
    features: Sequence[str] | None = None,
    null_size: int = 10000,
    threshold: float = 0.05,
    seed: int = 0,
    batch_size: int = 20000,
) -> pd.DataFrame:
    """Mean average precision (copairs, cosine similarity) of each treatment's replicates.

    Parameters
    ----------
    profiles : DataFrame
        Per-well profiles; wells of several plates with the same treatment are replicates.
    treatment_columns : sequence of str
        Metadata columns that together name a treatment (``Metadata_`` prefix optional).
    kind : {"activity", "consistency"}
        ``"activity"``: positives are a well's replicates, negatives the negative-control
        wells only. ``"consistency"``: positives are the replicates, negatives the wells of
        every other treatment (single-well treatments included); negative controls are left
        out. Negative controls are never reported.
    control_column : str
        The column whose value ``"negative"`` marks negative-control wells.
    features : sequence of str, optional
        Feature columns; by default pycytominer's ``infer_cp_features`` (embedding columns
        such as ``Cells_Embedding_0000`` included). Features with a non-finite value in any
        well are dropped (logged).
    null_size : int
        Samples of copairs' null distribution per (positives, total) configuration.
    threshold : float
        Significance level of ``below_corrected_p`` (Benjamini-Hochberg over the rows).
    seed : int
        Seed of the null distributions: the same inputs and seed give the same table.
    batch_size : int
        copairs' batch size for the similarity computation.

    Returns
    -------
    DataFrame
        The treatment columns (prefixed names) followed by :data:`MAP_COLUMNS`, one row per
        treatment with at least 2 wells, sorted by treatment. Treatments with one well are
        left out (logged); the table is empty (logged) when nothing can be scored.

    Raises
    ------
    ValueError
        For an unknown ``kind``, a missing treatment, control or feature column, or no
        usable feature.
    """
    if kind not in MAP_KINDS:
        raise ValueError(f"mAP kind {kind!r} is not one of {list(MAP_KINDS)}")
    columns = _treatment_columns(profiles, treatment_columns)
    if not columns:
        raise ValueError("mAP needs at least one treatment column")
    _require(profiles, [control_column], "mAP")
    features = _usable_features(profiles, features)
    empty = _empty([*columns, *MAP_COLUMNS])
    where = f"mAP {kind} (plate(s) {_plates(profiles)})"

    negative = profiles[control_column].astype(str).eq("negative").to_numpy()
    # One integer code per treatment; NaN is a value (e.g. no dose for a vehicle).
    codes = profiles.groupby(columns, dropna=False, sort=True).ngroup().to_numpy()
    codes = np.where(negative, -1, codes)
    sizes = pd.Series(codes[~negative]).value_counts().sort_index()
    single = sizes.index[sizes < 2]
    if len(single):
        log.warning(
            "%s: %d treatment(s) with one well cannot be scored: %s",
            where,
            len(single),
            _describe(profiles, columns, codes, single),
        )
    scored = sizes.index[sizes >= 2]
    if not len(scored):
        log.warning("%s: no treatment has 2 wells; nothing to score", where)
        return empty

    if kind == "activity":
        if not negative.any():
            log.warning(
                "%s: no negative-control well (%s); nothing to score", where, control_column
            )
            return empty
        rows = negative | np.isin(codes, scored)
        meta = pd.DataFrame({_GROUP: codes[rows]})
        # copairs' reference-index recipe: each control gets its own index, treatments -1, so
        # controls have no positives, and "differ in group and reference" pairs a treatment
        # with controls only (two treatments share reference -1).
        meta[_REFERENCE] = np.where(negative[rows], np.arange(len(meta)), -1)
        sameby = diffby = [_GROUP, _REFERENCE]
    else:
        rows = ~negative
        if sizes.size < 2:
            log.warning("%s: one treatment only, no other to rank against", where)
            return empty
        meta = pd.DataFrame({_GROUP: codes[rows]})
        sameby = diffby = [_GROUP]
    values = profiles[features].to_numpy(dtype=np.float64)[rows]
    ap = average_precision(
        meta,
        values,
        pos_sameby=sameby,
        pos_diffby=[],
        neg_sameby=[],
        neg_diffby=diffby,
        batch_size=batch_size,
        progress_bar=False,
    )
    ap = ap[ap[_GROUP].isin(scored)]
    # copairs caches null distributions under ~/.copairs by default, and the seed each
    # configuration gets depends on the others in the call: a private cache keeps the result a
    # function of the inputs and seed alone (and writes nothing to the home directory).
    with tempfile.TemporaryDirectory(prefix="cellstrata-copairs-") as cache:
        scores = mean_average_precision(
            ap,
            sameby=[_GROUP],
            null_size=null_size,
            threshold=threshold,
            seed=seed,
            progress_bar=False,
            cache_dir=cache,
        )
    first = pd.DataFrame({_GROUP: codes}).drop_duplicates(_GROUP)
    names = profiles[columns].iloc[first.index].set_axis(first[_GROUP].to_numpy())
    table = names.loc[scores[_GROUP].to_numpy()].reset_index(drop=True)
    table["n_wells"] = sizes.loc[scores[_GROUP].to_numpy()].to_numpy()
    for column in ("mean_average_precision", "p_value", "corrected_p_value"):
        table[column] = scores[column].to_numpy(dtype=float)
    table["below_corrected_p"] = scores["below_corrected_p"].to_numpy(dtype=bool)
    table["kind"] = kind
    return table


def cell_count_table(profiles: pd.DataFrame, cell_qc: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cells per well, with the platemap annotations and, optionally, single-cell QC counts.

    Parameters
    ----------
    profiles : DataFrame
        Per-well profiles with ``Metadata_Plate``, ``Metadata_Well`` and
        ``Metadata_Object_Count`` (the cells aggregated into the well).
    cell_qc : DataFrame, optional
        Per-well cell QC counts (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Cells``,
        one ``Metadata_cqc_<condition>`` column per condition, ``Metadata_cqc_excluded``).

    Returns
    -------
    DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, the other platemap metadata columns, ``cells``
        and the cell QC count columns (left join on plate and well: a well missing there gets
        0 flagged and its ``cells`` as ``Metadata_Cells``), sorted by plate and well.
    """
    _require(profiles, [PLATE, WELL, OBJECT_COUNT], "cell counts")
    annotations = [
        column
        for column in profiles.columns
        if column.startswith("Metadata_")
        and column not in (PLATE, WELL)
        and not column.startswith(_COUNT_PREFIXES)
    ]
    table = profiles[[PLATE, WELL, *annotations]].copy()
    table["cells"] = profiles[OBJECT_COUNT].astype(np.int64)
    if cell_qc is not None:
        _require(cell_qc, [PLATE, WELL], "cell QC table")
        counts = [column for column in cell_qc.columns if column not in (PLATE, WELL)]
        table = table.merge(cell_qc[[PLATE, WELL, *counts]], on=[PLATE, WELL], how="left")
        absent = table[counts].isna().all(axis=1).to_numpy()
        if absent.any():
            log.warning(
                "%d well(s) missing from the cell QC table get 0 flagged cells: %s",
                int(absent.sum()),
                _wells(table.loc[absent]),
            )
        if "Metadata_Cells" in counts:
            table["Metadata_Cells"] = table["Metadata_Cells"].fillna(table["cells"])
        table[counts] = table[counts].fillna(0).astype(np.int64)
    return table.sort_values([PLATE, WELL], ignore_index=True)


def quality_tables(
    profiles: pd.DataFrame,
    *,
    annotated: pd.DataFrame | None = None,
    treatment_columns: Sequence[str] | None,
    readout: Mapping[str, str | None] | None = None,
    cell_qc: pd.DataFrame | None = None,
    map_options: Mapping[str, Any] | None = None,
) -> dict[str, pd.DataFrame]:
    """All quality tables of a set of profiles.

    Parameters
    ----------
    profiles : DataFrame
        Per-well profiles of one or more plates (normalized, feature-selected), for mAP.
    annotated : DataFrame, optional
        The same wells before normalization, for the Z'-factor of the readout (a ratio of
        normalized features means nothing) and the cell counts; ``profiles`` when None.
    treatment_columns : sequence of str or None
        Columns naming a treatment (:func:`average_precision_table`); none: no mAP (logged).
    readout : mapping, optional
        ``{"feature": str, "divide_by": str or None}`` for the Z'-factor; none (or feature
        None): no Z'.
    cell_qc : DataFrame, optional
        Per-well cell QC counts (:func:`cell_count_table`).
    map_options : mapping, optional
        Options of :func:`average_precision_table` (:data:`MAP_OPTIONS`).

    Returns
    -------
    dict
        ``"map"``: activity and consistency rows per plate and, with several plates, over all
        wells (``Metadata_Plate == "all"``), ``Metadata_Plate`` as text first;
        ``"zprime"``: :func:`zprime_table` (empty with its columns without ``readout``);
        ``"cell_counts"``: :func:`cell_count_table`.
    """
    options = dict(map_options or {})
    unknown = sorted(set(options) - set(MAP_OPTIONS))
    if unknown:
        raise ValueError(f"unknown mAP option(s) {unknown}; known: {list(MAP_OPTIONS)}")
    if treatment_columns:
        columns = _treatment_columns(profiles, treatment_columns)
        map_table = _map_per_plate(profiles, columns, options)
    else:
        log.warning("no treatment columns given: the mAP table is empty")
        map_table = _empty([PLATE, *MAP_COLUMNS])
    if readout and readout.get("feature") is not None:
        unknown = sorted(set(readout) - {"feature", "divide_by", "transform"})
        if unknown or "feature" not in readout:
            raise ValueError(
                "readout must be {'feature': ..., 'divide_by': ... or None, 'transform': ... or "
                f"None}}; got {dict(readout)}"
            )
        zprimes = zprime_table(
            profiles if annotated is None else annotated,
            feature=str(readout["feature"]),
            divide_by=readout.get("divide_by"),
            transform=readout.get("transform"),
            control_column=options.get("control_column", CONTROL_COLUMN),
        )
    else:
        zprimes = _empty(ZPRIME_COLUMNS)
    counts = cell_count_table(profiles if annotated is None else annotated, cell_qc)
    return {"map": map_table, "zprime": zprimes, "cell_counts": counts}


def _map_per_plate(
    profiles: pd.DataFrame, columns: list[str], options: Mapping[str, Any]
) -> pd.DataFrame:
    _require(profiles, [PLATE], "mAP per plate")
    plates = profiles[PLATE].astype(str)
    subsets = [(plate, profiles[plates == plate]) for plate in sorted(plates.unique())]
    if len(subsets) > 1:
        subsets.append((ALL_PLATES, profiles))
    parts = []
    for plate, subset in subsets:
        for kind in MAP_KINDS:
            part = average_precision_table(subset, treatment_columns=columns, kind=kind, **options)
            if len(part):
                parts.append(part.assign(**{PLATE: plate}))
    if not parts:
        return _empty([PLATE, *columns, *MAP_COLUMNS])
    table = pd.concat(parts, ignore_index=True)
    return table[[PLATE, *columns, *MAP_COLUMNS]]


def write_quality(
    profiles_path: str | os.PathLike,
    annotated_paths: Sequence[str | os.PathLike],
    outputs: Mapping[str, str | os.PathLike],
    *,
    cell_qc_paths: Sequence[str | os.PathLike] = (),
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """Read an experiment's profiles, its plates' annotated profiles (and cell QC tables),
    compute :func:`quality_tables`, and write each table to ``outputs[name]`` as Parquet.

    Parameters
    ----------
    profiles_path : path
        The experiment's normalized, feature-selected profiles (all plates, one table).
    annotated_paths : sequence of path
        Per-plate annotated profiles (stacked with
        :func:`cellstrata.profiles.experiment.combine_plates`).
    outputs : mapping
        An output path for each of :data:`QUALITY_TABLES`.
    cell_qc_paths : sequence of path
        Per-plate Parquet cell QC tables, optional.
    **options
        Keyword arguments of :func:`quality_tables` (``treatment_columns``, ``readout``,
        ``map_options``).
    """
    missing = [name for name in QUALITY_TABLES if name not in outputs]
    if missing:
        raise ValueError(f"no output path for quality table(s) {missing}")
    annotated = combine_plates([pd.read_parquet(path) for path in annotated_paths])
    cell_qc = None
    if cell_qc_paths:
        cell_qc = pd.concat([pd.read_parquet(path) for path in cell_qc_paths], ignore_index=True)
    tables = quality_tables(
        pd.read_parquet(profiles_path), annotated=annotated, cell_qc=cell_qc, **options
    )
    for name, table in tables.items():
        write_parquet(outputs[name], table)
    return tables


def _feature_columns(profiles: pd.DataFrame) -> list[str]:
    # infer_cp_features raises on a table without features; here that is an empty list.
    if not any(str(c).startswith(("Cells", "Nuclei", "Cytoplasm")) for c in profiles.columns):
        return []
    return infer_cp_features(profiles)


def _usable_features(profiles: pd.DataFrame, features: Sequence[str] | None) -> list[str]:
    """The features to compare wells on: those given or inferred, without non-finite ones."""
    if features is None:
        features = _feature_columns(profiles)
    else:
        features = list(features)
        missing = [f for f in features if f not in profiles.columns]
        if missing:
            raise ValueError(f"feature(s) {missing} not in the profiles of {_plates(profiles)}")
    finite = np.isfinite(profiles[features].to_numpy(dtype=np.float64)).all(axis=0)
    dropped = [f for f, ok in zip(features, finite, strict=True) if not ok]
    if dropped:
        log.warning(
            "%d feature(s) with NaN or Inf values dropped for mAP: %s", len(dropped), dropped
        )
    kept = [f for f, ok in zip(features, finite, strict=True) if ok]
    if not kept:
        raise ValueError(f"no feature without NaN values in the profiles of {_plates(profiles)}")
    return kept


def _treatment_columns(profiles: pd.DataFrame, columns: Sequence[str] | str | None) -> list[str]:
    """Prefixed treatment column names, each checked to be in ``profiles``."""
    if isinstance(columns, str):
        columns = [columns]
    names = [metadata_name(c) for c in columns or ()]
    missing = [name for name in names if name not in profiles.columns]
    if missing:
        available = [c for c in profiles.columns if str(c).startswith("Metadata_")]
        raise ValueError(
            f"treatment column(s) {missing} not in the profiles; Metadata columns: {available}"
        )
    return list(dict.fromkeys(names))


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, "object")) for c in columns})


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not in the table of {_plates(table)}")


def _plates(table: pd.DataFrame) -> str:
    if PLATE not in table.columns:
        return "unknown plate(s) (no Metadata_Plate column)"
    return ", ".join(sorted(map(str, table[PLATE].unique()))) or "no plate (no rows)"


def _wells(table: pd.DataFrame) -> list[str]:
    plates = table[PLATE].astype(str) if PLATE in table.columns else pd.Series("?", table.index)
    wells = table[WELL].astype(str) if WELL in table.columns else table.index.astype(str)
    return [f"{p}/{w}" for p, w in zip(plates, wells, strict=True)]


def _describe(
    profiles: pd.DataFrame, columns: list[str], codes: np.ndarray, chosen: Sequence[int]
) -> list[str]:
    """``"Metadata_treatment=X, Metadata_dose=1"`` for each chosen treatment code."""
    first = profiles[columns][np.isin(codes, chosen)].drop_duplicates()
    return [
        ", ".join(f"{column}={value}" for column, value in zip(columns, row, strict=True))
        for row in first.itertuples(index=False)
    ]

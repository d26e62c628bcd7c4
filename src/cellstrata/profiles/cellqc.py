"""Single-cell QC: coSMicQC-style outlier flags from z-scored features, and non-finite reports.

A *condition* is a named set of ``{feature: threshold}`` on per-plate z-scores; a cell is an
outlier for the condition when every feature passes its threshold (below a negative
threshold, above a positive one), as coSMicQC's ``find_outliers`` does. The plate statistics
come from a first pass that reads only the condition features, so flagging never needs the
whole single-cell table in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: coSMicQC's default conditions (z-score thresholds on nucleus shape).
DEFAULT_CONDITIONS: dict[str, dict[str, float]] = {
    "small_and_low_formfactor_nuclei": {
        "Nuclei_AreaShape_Area": -1.0,
        "Nuclei_AreaShape_FormFactor": -1.0,
    },
    "elongated_nuclei": {"Nuclei_AreaShape_Eccentricity": 2.0},
    "large_nuclei": {"Nuclei_AreaShape_Area": 2.0, "Nuclei_AreaShape_FormFactor": -2.0},
}
#: Prefix of the per-condition flag columns (Metadata_, so pycytominer never takes them as
#: features).
FLAG_PREFIX = "Metadata_cqc_"


def condition_features(conditions: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Every feature the conditions use, in first-use order."""
    return list(dict.fromkeys(f for condition in conditions.values() for f in condition))


def check_conditions(
    conditions: Mapping[str, Mapping[str, float]], columns: Sequence[str], where: str
) -> None:
    """Raise ValueError naming ``where`` and each condition feature absent from ``columns``."""
    missing = [f for f in condition_features(conditions) if f not in set(columns)]
    if missing:
        raise ValueError(f"{where}: cell QC feature(s) not in the single-cell table: {missing}")
    for name, condition in conditions.items():
        if not condition or any(t == 0 for t in condition.values()):
            raise ValueError(f"cell QC condition {name!r}: needs features with non-zero thresholds")


def plate_statistics(
    paths: Sequence[str | os.PathLike], features: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """Mean and population standard deviation of ``features`` over all cells of the files.

    Reads only those columns, one file at a time (sums and sums of squares, float64).
    """
    total = np.zeros(len(features))
    squares = np.zeros(len(features))
    count = np.zeros(len(features))
    for path in paths:
        values = pd.read_parquet(path, columns=list(features)).to_numpy(np.float64)
        finite = np.isfinite(values)
        values = np.where(finite, values, 0.0)
        total += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        count += finite.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return {f: (float(m), float(s)) for f, m, s in zip(features, mean, std, strict=True)}


def flag_cells(
    cells: pd.DataFrame,
    conditions: Mapping[str, Mapping[str, float]],
    statistics: Mapping[str, tuple[float, float]],
) -> pd.DataFrame:
    """One boolean column ``Metadata_cqc_<condition>`` per condition, aligned with ``cells``.

    A feature with zero spread on the plate flags nobody (its z-score is undefined), and a
    non-finite value never satisfies a threshold.
    """
    flags = {}
    for name, condition in conditions.items():
        hit = np.ones(len(cells), dtype=bool)
        for feature, threshold in condition.items():
            mean, std = statistics[feature]
            if not std > 0:
                hit[:] = False
                continue
            z = (cells[feature].to_numpy(np.float64) - mean) / std
            hit &= z < threshold if threshold < 0 else z > threshold
        flags[f"{FLAG_PREFIX}{name}"] = hit
    return pd.DataFrame(flags, index=cells.index)


def nonfinite_counts(cells: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Features holding NaN or ±Inf values: ``feature, nan, inf`` rows (empty if none)."""
    values = cells[list(features)].to_numpy(np.float64)
    nan = np.isnan(values).sum(axis=0)
    inf = np.isinf(values).sum(axis=0)
    bad = (nan + inf) > 0
    return pd.DataFrame(
        {"feature": np.asarray(features)[bad], "nan": nan[bad], "inf": inf[bad]}
    ).reset_index(drop=True)

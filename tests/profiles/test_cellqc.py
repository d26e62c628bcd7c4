"""Single-cell QC: coSMicQC-style outlier flags and non-finite reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellstrata.profiles.cellqc import (
    DEFAULT_CONDITIONS,
    FLAG_PREFIX,
    check_conditions,
    condition_features,
    flag_cells,
    nonfinite_counts,
    plate_statistics,
)


def _cells(n=200, seed=0):
    rng = np.random.default_rng(seed)
    cells = pd.DataFrame(
        {
            "Metadata_Well": np.repeat(["A01", "A02"], n // 2),
            "Nuclei_AreaShape_Area": rng.normal(150, 15, n),
            "Nuclei_AreaShape_FormFactor": rng.normal(0.85, 0.03, n),
            "Nuclei_AreaShape_Eccentricity": rng.normal(0.5, 0.05, n),
        }
    )
    # Planted outliers: a tiny ragged fragment, a very elongated nucleus, a huge irregular one.
    cells.loc[0, ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_FormFactor"]] = [60, 0.6]
    cells.loc[1, "Nuclei_AreaShape_Eccentricity"] = 0.99
    cells.loc[2, ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_FormFactor"]] = [400, 0.5]
    return cells


def test_statistics_stream_over_files(tmp_path):
    cells = _cells()
    paths = []
    for i, (_, part) in enumerate(cells.groupby("Metadata_Well")):
        paths.append(tmp_path / f"{i}.parquet")
        part.to_parquet(paths[-1])
    stats = plate_statistics(paths, ["Nuclei_AreaShape_Area"])
    mean, std = stats["Nuclei_AreaShape_Area"]
    assert mean == pytest.approx(cells["Nuclei_AreaShape_Area"].mean())
    assert std == pytest.approx(cells["Nuclei_AreaShape_Area"].std(ddof=0))


def test_planted_outliers_are_flagged_and_only_they(tmp_path):
    cells = _cells()
    path = tmp_path / "cells.parquet"
    cells.to_parquet(path)
    features = condition_features(DEFAULT_CONDITIONS)
    flags = flag_cells(cells, DEFAULT_CONDITIONS, plate_statistics([path], features))
    assert list(flags) == [f"{FLAG_PREFIX}{name}" for name in DEFAULT_CONDITIONS]
    assert flags.loc[0, f"{FLAG_PREFIX}small_and_low_formfactor_nuclei"]
    assert flags.loc[1, f"{FLAG_PREFIX}elongated_nuclei"]
    assert flags.loc[2, f"{FLAG_PREFIX}large_nuclei"]
    # Every feature of a condition must pass: large but round nuclei are not flagged.
    assert flags[f"{FLAG_PREFIX}large_nuclei"].sum() == 1
    assert flags.any(axis=1).sum() < 0.1 * len(cells)


def test_constant_feature_flags_nobody():
    cells = _cells().assign(Nuclei_AreaShape_Eccentricity=0.5)
    stats = {"Nuclei_AreaShape_Eccentricity": (0.5, 0.0)}
    flags = flag_cells(cells, {"elongated_nuclei": DEFAULT_CONDITIONS["elongated_nuclei"]}, stats)
    assert not flags.any().any()


def test_missing_condition_feature_is_named():
    with pytest.raises(ValueError, match=r"plate P1: .*\['Nuclei_AreaShape_Eccentricity'\]"):
        check_conditions(
            DEFAULT_CONDITIONS, ["Nuclei_AreaShape_Area", "Nuclei_AreaShape_FormFactor"], "plate P1"
        )
    with pytest.raises(ValueError, match="non-zero thresholds"):
        check_conditions({"odd": {"Nuclei_AreaShape_Area": 0}}, ["Nuclei_AreaShape_Area"], "x")


def test_nonfinite_counts_name_the_features():
    cells = _cells()
    cells.loc[3, "Nuclei_AreaShape_Area"] = np.nan
    cells.loc[4:5, "Nuclei_AreaShape_FormFactor"] = np.inf
    report = nonfinite_counts(cells, condition_features(DEFAULT_CONDITIONS))
    assert report.to_dict("records") == [
        {"feature": "Nuclei_AreaShape_Area", "nan": 1, "inf": 0},
        {"feature": "Nuclei_AreaShape_FormFactor", "nan": 0, "inf": 2},
    ]

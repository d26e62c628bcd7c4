"""Profile quality metrics (cellstrata.profiles.quality) on tiny synthetic per-well profiles."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from cellstrata.profiles.quality import (
    MAP_COLUMNS,
    ZPRIME_COLUMNS,
    average_precision_table,
    bootstrap_interval,
    cell_count_table,
    quality_tables,
    readout,
    robust_zprime,
    ssmd,
    write_quality,
    zprime,
    zprime_table,
)

FEATURES = [f"Cells_AreaShape_F{i:02d}" for i in range(8)] + [
    f"Nuclei_Intensity_MeanIntensity_C{i}" for i in range(8)
]
# Few null samples: enough to separate p ~ 0.001 from p ~ 0.3, fast.
FAST = {"null_size": 1000, "seed": 0}


def direction(rng: np.random.Generator, size: float = 4.0) -> np.ndarray:
    """A random shift of ``size`` standard deviations per feature on average."""
    vector = rng.normal(size=len(FEATURES))
    return size * np.sqrt(len(FEATURES)) * vector / np.linalg.norm(vector)


def plate(
    rng: np.random.Generator,
    groups: list[tuple[str, int, np.ndarray | float]],
    *,
    name: str = "P1",
    negatives: int = 16,
    features: list[str] = FEATURES,
) -> pd.DataFrame:
    """Per-well profiles: ``negatives`` DMSO controls, then ``(treatment, wells, shift)``.

    Every well is standard normal noise plus its treatment's shift; treatments named
    ``pos*`` are positive controls.
    """
    rows = []
    for treatment, wells, shift in [("DMSO", negatives, 0.0), *groups]:
        for _ in range(wells):
            control = "negative" if treatment == "DMSO" else "treated"
            if treatment.startswith("pos"):
                control = "positive"
            values = rng.normal(size=len(features)) + shift
            rows.append(
                {
                    "Metadata_Plate": name,
                    "Metadata_Well": f"{'ABCDEFGH'[len(rows) // 12]}{len(rows) % 12 + 1:02d}",
                    "Metadata_treatment": treatment,
                    "Metadata_dose": 0.0 if treatment == "DMSO" else 1.0,
                    "Metadata_control_type": control,
                    "Metadata_Object_Count": 100 + len(rows),
                    **dict(zip(features, values, strict=True)),
                }
            )
    return pd.DataFrame(rows)


# --- Z'-factor ---------------------------------------------------------------------------------


def test_zprime_known_value():
    # means 2 and 12, sample sds 1 and 2: 1 - 3 * 3 / 10
    assert zprime([1, 2, 3], [10, 12, 14]) == pytest.approx(0.1)
    assert zprime([10, 12, 14], [1, 2, 3]) == pytest.approx(0.1)
    assert zprime([5, 5], [0, 0]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("positive", "negative", "message"),
    [
        ([1.0], [2, 3], "at least 2 positive"),
        ([1, 2], [], "at least 2 negative"),
        ([1, 3], [0, 4], "same mean"),
        ([1, np.nan], [0, 4], "finite"),
    ],
)
def test_zprime_errors(positive, negative, message):
    with pytest.raises(ValueError, match=message):
        zprime(positive, negative)


def test_robust_zprime_and_ssmd_known_values():
    # medians 2 and 12, MADs 1 and 2 (x 1.4826): 1 - 3 * 1.4826 * 3 / 10
    assert robust_zprime([1, 2, 3], [10, 12, 14]) == pytest.approx(1 - 3 * 1.4826 * 3 / 10)
    # (2 - 12) / sqrt(1 + 4)
    assert ssmd([1, 2, 3], [10, 12, 14]) == pytest.approx(-10 / np.sqrt(5))
    # One outlying positive well: Z' collapses, the robust Z' hardly moves.
    positive, negative = [1.0, 1.1, 0.9, 1.0, 3.0], [5.0, 5.1, 4.9, 5.0, 5.05]
    assert zprime(positive, negative) < 0.5 < robust_zprime(positive, negative)
    with pytest.raises(ValueError, match="medians are equal"):
        robust_zprime([1, 2, 3], [0, 2, 5])
    with pytest.raises(ValueError, match="constant"):
        ssmd([1, 1], [2, 2])


def test_bootstrap_interval_brackets_the_statistic_and_narrows_with_more_wells():
    rng = np.random.default_rng(3)
    few = rng.normal(10, 1, 4), rng.normal(0, 1, 8)
    many = rng.normal(10, 1, 64), rng.normal(0, 1, 128)
    low, high = bootstrap_interval(*few, zprime)
    assert low < zprime(*few) < high
    narrow = np.subtract(*reversed(bootstrap_interval(*many, zprime)))
    assert narrow < high - low
    # Repeatable: a seed, not the clock.
    assert bootstrap_interval(*few, ssmd) == bootstrap_interval(*few, ssmd)


def test_log_readout():
    profiles = zprime_profiles()
    values = readout(
        profiles,
        "Nuclei_Intensity_MeanIntensity_GFP",
        "Cytoplasm_Intensity_MeanIntensity_GFP",
        transform="log",
    )
    assert values.name == (
        "log(Nuclei_Intensity_MeanIntensity_GFP / Cytoplasm_Intensity_MeanIntensity_GFP)"
    )
    assert values.iloc[0] == pytest.approx(np.log(1.0)) and values.iloc[1] == pytest.approx(
        np.log(2.0)
    )
    with pytest.raises(ValueError, match="transform"):
        readout(profiles, "Nuclei_Intensity_MeanIntensity_GFP", transform="sqrt")


def zprime_profiles() -> pd.DataFrame:
    rows = []
    for plate_name, types, values in [
        ("P1", ["positive"] * 3 + ["negative"] * 3, [1, 2, 3, 10, 12, 14]),
        ("P2", ["positive"] * 2 + ["negative"] * 2 + ["treated"], [2, 4, 11, 13, 7]),
        ("P3", ["negative"] * 3 + ["treated"], [9, 10, 11, 5]),
    ]:
        for i, (kind, value) in enumerate(zip(types, values, strict=True)):
            rows.append(
                {
                    "Metadata_Plate": plate_name,
                    "Metadata_Well": f"A{i + 1:02d}",
                    "Metadata_control_type": kind,
                    "Nuclei_Intensity_MeanIntensity_GFP": value * 2.0,
                    "Cytoplasm_Intensity_MeanIntensity_GFP": 2.0,
                }
            )
    return pd.DataFrame(rows)


def test_zprime_table_per_plate_all_and_nan_for_a_plate_without_positives(caplog):
    profiles = zprime_profiles()
    with caplog.at_level(logging.WARNING, logger="cellstrata.profiles.quality"):
        table = zprime_table(
            profiles,
            feature="Nuclei_Intensity_MeanIntensity_GFP",
            divide_by="Cytoplasm_Intensity_MeanIntensity_GFP",
        )
    assert list(table.columns) == ZPRIME_COLUMNS
    assert list(table["Metadata_Plate"]) == ["P1", "P2", "P3", "all"]
    assert set(table["readout"]) == {
        "Nuclei_Intensity_MeanIntensity_GFP / Cytoplasm_Intensity_MeanIntensity_GFP"
    }
    rows = table.set_index("Metadata_Plate")
    # The ratio undoes the factor 2, so P1 is the known example.
    assert rows.loc["P1", "zprime"] == pytest.approx(0.1)
    assert rows.loc["P2", "zprime"] == pytest.approx(zprime([2, 4], [11, 13]))
    assert np.isnan(rows.loc["P3", "zprime"])
    assert rows.loc["P3", ["n_positive", "n_negative"]].tolist() == [0, 3]
    assert rows.loc["all", ["n_positive", "n_negative"]].tolist() == [5, 8]
    pooled = zprime([1, 2, 3, 2, 4], [10, 12, 14, 11, 13, 9, 10, 11])
    assert rows.loc["all", "zprime"] == pytest.approx(pooled)
    # Robust Z' and SSMD beside it, each within its bootstrap interval.
    assert rows.loc["P1", "robust_zprime"] == pytest.approx(robust_zprime([1, 2, 3], [10, 12, 14]))
    assert rows.loc["P1", "ssmd"] == pytest.approx(ssmd([1, 2, 3], [10, 12, 14]))
    for statistic in ("zprime", "robust_zprime", "ssmd"):
        low, value, high = rows.loc["all", [f"{statistic}_low", statistic, f"{statistic}_high"]]
        assert low <= value <= high, statistic
    assert rows.loc["P3", ["robust_zprime", "ssmd", "zprime_low"]].isna().all()
    assert rows.loc["all", "positive_sd"] == pytest.approx(np.std([1, 2, 3, 2, 4], ddof=1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("P3" in m and "NaN" in m for m in warnings)
    assert not any("P1" in m or "P2" in m for m in warnings)


def test_zprime_table_errors_name_what_is_missing():
    profiles = zprime_profiles()
    with pytest.raises(ValueError, match=r"Nuclei_Missing.*P1, P2, P3"):
        readout(profiles, "Nuclei_Missing")
    with pytest.raises(ValueError, match="Cytoplasm_Missing"):
        zprime_table(
            profiles,
            feature="Nuclei_Intensity_MeanIntensity_GFP",
            divide_by="Cytoplasm_Missing",
        )
    # No positive controls anywhere: a report, not a failure (NaN rows, named in the log).
    without_positives = profiles[profiles["Metadata_control_type"] != "positive"]
    table = zprime_table(without_positives, feature="Nuclei_Intensity_MeanIntensity_GFP")
    assert table["zprime"].isna().all() and list(table["n_positive"]) == [0, 0, 0, 0]


def test_zprime_table_single_plate_has_no_all_row():
    profiles = zprime_profiles().query("Metadata_Plate == 'P1'")
    table = zprime_table(profiles, feature="Nuclei_Intensity_MeanIntensity_GFP")
    assert list(table["Metadata_Plate"]) == ["P1"]
    assert table["readout"].item() == "Nuclei_Intensity_MeanIntensity_GFP"


# --- mean average precision --------------------------------------------------------------------


def test_activity_strong_treatment_is_retrieved_and_inactive_is_not():
    rng = np.random.default_rng(1)
    profiles = plate(rng, [("strong", 4, direction(rng)), ("inactive", 4, 0.0)])
    table = average_precision_table(
        profiles, treatment_columns=["treatment"], kind="activity", **FAST
    )
    assert list(table.columns) == ["Metadata_treatment", *MAP_COLUMNS]
    rows = table.set_index("Metadata_treatment")
    # Negative controls are not a treatment of the table.
    assert sorted(rows.index) == ["inactive", "strong"]
    assert rows.loc["strong", "mean_average_precision"] == pytest.approx(1.0)
    assert rows.loc["strong", "p_value"] < 0.01
    assert rows.loc["strong", "below_corrected_p"]
    assert rows.loc["inactive", "mean_average_precision"] < 0.6
    assert rows.loc["inactive", "p_value"] > 0.05
    assert not rows.loc["inactive", "below_corrected_p"]
    assert (rows["n_wells"] == 4).all()
    assert (rows["kind"] == "activity").all()


def test_activity_ranks_against_negative_controls_only():
    # A treatment's rank list holds its replicates and the negative controls: adding another
    # treatment (even one that looks exactly like it) must not change its AP.
    rng = np.random.default_rng(2)
    shift = direction(rng, 1.0)
    base = plate(rng, [("weak", 4, shift)])
    twin = plate(rng, [("twin", 4, shift)], negatives=0)
    twin["Metadata_Well"] = "H" + twin["Metadata_Well"].str[1:]
    alone = average_precision_table(base, treatment_columns=["treatment"], kind="activity", **FAST)
    both = average_precision_table(
        pd.concat([base, twin], ignore_index=True),
        treatment_columns=["treatment"],
        kind="activity",
        **FAST,
    )
    weak = both.set_index("Metadata_treatment").loc["weak", "mean_average_precision"]
    assert weak == pytest.approx(alone["mean_average_precision"].item())
    assert 0.3 < weak < 1.0  # not trivially perfect, or the comparison would prove nothing


def test_consistency_separates_distinct_treatments_from_indistinguishable_ones():
    rng = np.random.default_rng(3)
    same, control = direction(rng), direction(rng)
    profiles = plate(
        rng,
        [
            ("a", 4, direction(rng)),
            ("b", 4, direction(rng)),
            ("c", 4, same),
            ("d", 4, same),
            ("vehicle-like", 4, control),
        ],
    )
    # The controls share the direction of "vehicle-like".
    profiles.loc[profiles["Metadata_treatment"] == "DMSO", FEATURES] += control
    table = average_precision_table(
        profiles, treatment_columns=["Metadata_treatment"], kind="consistency", **FAST
    )
    rows = table.set_index("Metadata_treatment")["mean_average_precision"]
    assert sorted(rows.index) == ["a", "b", "c", "d", "vehicle-like"]  # DMSO never reported
    assert rows["a"] == pytest.approx(1.0) and rows["b"] == pytest.approx(1.0)
    # c and d are drawn from one distribution: each retrieves the other as often as itself.
    assert rows["c"] < 0.8 and rows["d"] < 0.8
    assert (table["kind"] == "consistency").all()
    # Negative controls are no negatives here: a treatment that looks like them is still
    # consistent among treatments, though inactive against the controls.
    assert rows["vehicle-like"] > 0.9
    activity = average_precision_table(
        profiles, treatment_columns=["Metadata_treatment"], kind="activity", **FAST
    ).set_index("Metadata_treatment")["mean_average_precision"]
    assert activity["vehicle-like"] < 0.6


def test_treatment_of_one_well_is_left_out_with_a_warning(caplog):
    rng = np.random.default_rng(4)
    profiles = plate(rng, [("strong", 4, direction(rng)), ("lonely", 1, 0.0)])
    for kind in ("activity", "consistency"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cellstrata.profiles.quality"):
            table = average_precision_table(
                profiles, treatment_columns=["treatment", "dose"], kind=kind, **FAST
            )
        assert list(table["Metadata_treatment"]) == ["strong"]
        assert list(table.columns[:2]) == ["Metadata_treatment", "Metadata_dose"]
        assert any("lonely" in r.getMessage() for r in caplog.records), kind


def test_missing_treatment_column_is_named():
    rng = np.random.default_rng(5)
    profiles = plate(rng, [("strong", 4, 1.0)])
    with pytest.raises(ValueError, match=r"Metadata_compound.*Metadata_treatment"):
        average_precision_table(profiles, treatment_columns=["compound"], kind="activity")
    with pytest.raises(ValueError, match="kind"):
        average_precision_table(profiles, treatment_columns=["treatment"], kind="potency")


def test_features_with_nan_are_dropped(caplog):
    rng = np.random.default_rng(6)
    profiles = plate(rng, [("strong", 4, direction(rng, 1.0)), ("other", 4, 0.0)])
    broken = FEATURES[3]
    profiles.loc[5, broken] = np.nan
    with caplog.at_level(logging.WARNING, logger="cellstrata.profiles.quality"):
        table = average_precision_table(
            profiles, treatment_columns=["treatment"], kind="activity", **FAST
        )
    assert any(broken in r.getMessage() and "1 feature" in r.getMessage() for r in caplog.records)
    kept = [f for f in FEATURES if f != broken]
    expected = average_precision_table(
        profiles, treatment_columns=["treatment"], kind="activity", features=kept, **FAST
    )
    pd.testing.assert_frame_equal(table, expected)
    assert table["mean_average_precision"].notna().all()


def test_embedding_columns_are_features():
    # The treatment differs from the controls in its embedding only.
    rng = np.random.default_rng(7)
    embedding = [f"Cells_Embedding_{i:04d}" for i in range(8)]
    profiles = plate(rng, [("strong", 4, 0.0)], features=FEATURES + embedding)
    strong = profiles["Metadata_treatment"] == "strong"
    profiles.loc[strong, embedding] += direction(rng)[:8] * 2
    table = average_precision_table(
        profiles, treatment_columns=["treatment"], kind="activity", **FAST
    )
    assert table["mean_average_precision"].item() == pytest.approx(1.0)
    plain = average_precision_table(
        profiles, treatment_columns=["treatment"], kind="activity", features=FEATURES, **FAST
    )
    assert plain["mean_average_precision"].item() < 0.9


def test_map_is_deterministic_for_a_seed():
    rng = np.random.default_rng(8)
    profiles = plate(rng, [("weak", 4, direction(rng, 0.7)), ("other", 4, 0.0)])
    run = [
        average_precision_table(profiles, treatment_columns=["treatment"], kind="activity", **FAST)
        for _ in range(2)
    ]
    pd.testing.assert_frame_equal(run[0], run[1])


# --- cell counts and the whole set -------------------------------------------------------------


def test_cell_count_table_merges_cell_qc():
    rng = np.random.default_rng(9)
    profiles = plate(rng, [("strong", 2, 1.0)], negatives=1)
    cell_qc = pd.DataFrame(
        {
            "Metadata_Plate": ["P1", "P1"],
            "Metadata_Well": ["A01", "A03"],
            "Metadata_Cells": [110, 130],
            "Metadata_cqc_large_nuclei": [3, 7],
            "Metadata_cqc_excluded": [10, 28],
        }
    )
    plain = cell_count_table(profiles)
    assert list(plain.columns) == [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_treatment",
        "Metadata_dose",
        "Metadata_control_type",
        "cells",
    ]
    assert list(plain["cells"]) == [100, 101, 102]
    table = cell_count_table(profiles, cell_qc).set_index("Metadata_Well")
    assert list(table.columns[-3:]) == [
        "Metadata_Cells",
        "Metadata_cqc_large_nuclei",
        "Metadata_cqc_excluded",
    ]
    assert table.loc["A03", ["cells", "Metadata_cqc_large_nuclei"]].tolist() == [102, 7]
    # A02 has no cell QC row: nothing flagged.
    assert table.loc["A02", ["Metadata_cqc_large_nuclei", "Metadata_cqc_excluded"]].tolist() == [
        0,
        0,
    ]
    assert table["Metadata_cqc_excluded"].dtype == np.int64


def test_quality_tables_without_treatments_or_readout(caplog):
    rng = np.random.default_rng(10)
    profiles = plate(rng, [("strong", 4, 1.0)])
    with caplog.at_level(logging.WARNING, logger="cellstrata.profiles.quality"):
        tables = quality_tables(profiles, treatment_columns=None)
    assert tables["map"].empty
    assert list(tables["map"].columns) == ["Metadata_Plate", *MAP_COLUMNS]
    assert tables["zprime"].empty and list(tables["zprime"].columns) == ZPRIME_COLUMNS
    # Empty tables keep the schema of full ones (Parquet readers see the same types).
    assert tables["zprime"]["zprime"].dtype == np.float64
    assert tables["map"]["below_corrected_p"].dtype == bool
    assert len(tables["cell_counts"]) == len(profiles)
    assert any("treatment" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="nul_size"):
        quality_tables(profiles, treatment_columns=["treatment"], map_options={"nul_size": 5})


def test_write_quality_round_trip_with_different_features_per_plate(tmp_path, caplog):
    rng = np.random.default_rng(11)
    shift = direction(rng)
    annotated, qc_paths, plates = [], [], []
    for name in ("P1", "P2"):
        profiles = plate(rng, [("strong", 3, shift), ("pos", 2, shift)], name=name, negatives=6)
        plates.append(profiles)
        # Per-plate normalization left a different feature out of each plate.
        dropped = profiles.drop(columns=FEATURES[0] if name == "P1" else FEATURES[-1])
        annotated.append(tmp_path / f"{name}.parquet")
        dropped.to_parquet(annotated[-1], index=False)
        qc = profiles[["Metadata_Plate", "Metadata_Well"]].assign(
            Metadata_Cells=200, Metadata_cqc_large_nuclei=1, Metadata_cqc_excluded=0
        )
        qc_paths.append(tmp_path / f"{name}_qc.parquet")
        qc.to_parquet(qc_paths[-1], index=False)
    experiment = tmp_path / "experiment.parquet"
    pd.concat(plates, ignore_index=True).to_parquet(experiment, index=False)
    outputs = {
        name: tmp_path / "out" / f"{name}.parquet" for name in ("map", "zprime", "cell_counts")
    }
    with caplog.at_level(logging.INFO, logger="cellstrata"):
        tables = write_quality(
            experiment,
            annotated,
            outputs,
            cell_qc_paths=qc_paths,
            treatment_columns=["treatment"],
            readout={"feature": FEATURES[5], "divide_by": None},
            map_options=FAST,
        )
    assert any("2 feature(s) missing from some plates" in r.getMessage() for r in caplog.records)
    for name, path in outputs.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), tables[name])
    mAP = tables["map"]
    assert list(mAP.columns) == ["Metadata_Plate", "Metadata_treatment", *MAP_COLUMNS]
    assert sorted(set(mAP["Metadata_Plate"])) == ["P1", "P2", "all"]
    pooled = mAP.query("Metadata_Plate == 'all' and kind == 'activity'").set_index(
        "Metadata_treatment"
    )
    assert pooled.loc["strong", "n_wells"] == 6
    assert pooled.loc["strong", "mean_average_precision"] == pytest.approx(1.0)
    assert list(tables["zprime"]["Metadata_Plate"]) == ["P1", "P2", "all"]
    assert len(tables["cell_counts"]) == 22
    assert (tables["cell_counts"]["Metadata_cqc_large_nuclei"] == 1).all()

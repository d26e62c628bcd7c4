"""Profiles: pycytominer chain per plate, platemap checks, Z'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pycytominer import aggregate

from cellstrata.config import PROFILE_REPORTS, PROFILE_STEPS
from cellstrata.profiles.aggregate import (
    aggregate_features,
    annotate_profiles,
    build_profiles,
    normalize_profiles,
    write_profiles,
)
from cellstrata.profiles.experiment import EXPERIMENT_STEPS, consensus_profiles, write_experiment
from cellstrata.profiles.platemap import UNANNOTATED, PlatemapError, mark_controls, read_platemap

WELLS = [f"{row}{col:02d}" for row in "AB" for col in range(1, 5)]


def _cells(wells, seed=0, n=30):
    rng = np.random.default_rng(seed)
    rows = []
    for well in wells:
        dose = int(well[1:]) - 1
        for obj in range(1, n + 1):
            rows.append(
                {
                    "Metadata_Plate": "P1",
                    "Metadata_Well": well,
                    "Metadata_Site": 1,
                    "Metadata_ObjectNumber": obj,
                    "Nuclei_Intensity_MeanIntensity_GFP": rng.normal(1 + dose, 0.1),
                    "Cytoplasm_Intensity_MeanIntensity_GFP": rng.normal(1, 0.1),
                    "Cells_AreaShape_Area": rng.normal(500, 50),
                    "Nuclei_AreaShape_Area": rng.normal(150, 20),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def platemap_file(tmp_path):
    controls = {1: "negative", 4: "positive"}
    table = pd.DataFrame(
        {
            "well_position": [f"{w[0]}{int(w[1:])}" for w in WELLS],  # A1 style
            "dose": [int(w[1:]) - 1 for w in WELLS],
            "role": [controls.get(int(w[1:]), "treated") for w in WELLS],
        }
    )
    path = tmp_path / "platemap.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path


def _write_batches(tmp_path, cells):
    paths = []
    for index, (_, group) in enumerate(cells.groupby(cells["Metadata_Well"].str[0])):
        path = tmp_path / f"batch{index}.parquet"
        group.to_parquet(path)
        paths.append(path)
    return paths


def test_full_chain(tmp_path, platemap_file):
    paths = _write_batches(tmp_path, _cells(WELLS))
    outputs = {step: tmp_path / f"P1_{step}.parquet" for step in PROFILE_STEPS}
    tables = write_profiles(
        paths,
        platemap_file,
        outputs,
        platemap_options={"well_column": "well_position"},
        controls={"column": "role", "negative": ["negative"], "positive": ["positive"]},
        feature_select_operations=["variance_threshold"],
    )
    for step in PROFILE_STEPS:
        assert outputs[step].exists()
    aggregated = pd.read_parquet(outputs["aggregated"])
    assert list(aggregated["Metadata_Well"]) == WELLS
    assert (aggregated["Metadata_Object_Count"] == 30).all()
    annotated = tables["annotated"]
    assert {"Metadata_dose", "Metadata_role", "Metadata_control_type"} <= set(annotated)
    assert annotated["Metadata_dose"].dtype.kind == "i"
    normalized = tables["normalized"].set_index("Metadata_Well")
    # Normalized to negative controls: the controls sit at ~0, the dose series rises.
    readout = normalized["Nuclei_Intensity_MeanIntensity_GFP"]
    assert abs(readout[["A01", "B01"]].mean()) < 1
    assert readout["A04"] > readout["A03"] > readout["A02"] > readout["A01"]


def _aggregated(wells, plate="P1"):
    return pd.DataFrame(
        {
            "Metadata_Plate": plate,
            "Metadata_Well": wells,
            "Cells_AreaShape_Area": np.arange(len(wells), dtype=float),
        }
    )


def test_imaged_well_missing_from_platemap_is_an_error_or_kept_and_reported(platemap_file):
    platemap = read_platemap(platemap_file, well_column="well_position").table
    aggregated = _aggregated(["A01", "C07"])
    with pytest.raises(PlatemapError, match=r"plate P1: imaged well\(s\) missing .*\['C07'\]"):
        annotate_profiles(aggregated, platemap)
    annotated, issues = annotate_profiles(
        aggregated, mark_controls(platemap, column="role"), on_mismatch="report"
    )
    # pycytominer's inner join alone would drop C07; here it stays, never a control.
    assert list(annotated["Metadata_Well"]) == ["A01", "C07"]
    assert annotated.set_index("Metadata_Well").loc["C07", "Metadata_control_type"] == UNANNOTATED
    assert pd.isna(annotated.set_index("Metadata_Well").loc["C07", "Metadata_dose"])
    found = issues.set_index("Metadata_Well")["issue"]
    assert found["C07"] == "not_in_platemap"
    # The platemap's other wells were never imaged: reported, not an error.
    assert (found.drop("C07") == "never_imaged").all() and len(found) == len(WELLS)


def test_well_spellings_are_read_as_one_and_mixed_styles_reported(tmp_path):
    path = tmp_path / "pm.csv"
    path.write_text("well,x\nA1,1\nA02,2\nr01c03,3\nA10,4\n")
    platemap = read_platemap(path)
    assert list(platemap.table["Metadata_Well"]) == ["A01", "A02", "A03", "A10"]
    (issue,) = platemap.issues.itertuples()
    assert issue.issue == "mixed_well_format" and issue.action == "normalized"
    assert "A1" in issue.detail and "r01c03" in issue.detail
    path.write_text("well,x\nA1,1\nA2,2\nA10,4\n")
    assert read_platemap(path).issues.empty


def test_duplicate_platemap_wells(tmp_path):
    path = tmp_path / "pm.csv"
    # The same well as A1 and A01 with one annotation: unambiguous, kept once and reported.
    path.write_text("well,x\nA1,1\nA01,1\nB01,2\n")
    platemap = read_platemap(path)
    assert list(platemap.table["Metadata_Well"]) == ["A01", "B01"]
    assert list(platemap.issues["issue"]) == ["mixed_well_format", "duplicate_well"]
    # With different annotations it is an error naming the well and the column ...
    path.write_text("well,x,y\nA01,1,a\nA01,2,a\nB01,2,b\n")
    with pytest.raises(
        PlatemapError, match=r"pm.csv: well A01 listed more than once.*\['Metadata_x'\]"
    ):
        read_platemap(path)
    # ... or, reporting, the well is left out of the platemap (so unannotated) and listed.
    platemap = read_platemap(path, on_mismatch="report")
    assert list(platemap.table["Metadata_Well"]) == ["B01"]
    assert list(platemap.issues["issue"]) == ["conflicting_duplicate"]


def test_unreadable_well_is_an_error_naming_the_file_or_reported(tmp_path):
    path = tmp_path / "pm.csv"
    path.write_text("well,x\nA01,1\nwell 7,2\n")
    with pytest.raises(PlatemapError, match=r"pm.csv: cannot read well 'well 7'"):
        read_platemap(path)
    platemap = read_platemap(path, on_mismatch="report")
    assert list(platemap.table["Metadata_Well"]) == ["A01"]
    assert list(platemap.issues[["Metadata_Well", "issue"]].itertuples(index=False)) == [
        ("well 7", "unreadable_well")
    ]


def test_platemap_of_several_plates_and_treatment_columns(tmp_path):
    path = tmp_path / "pm.csv"
    path.write_text("plate,well,compound\nP1,A01,x\nP2,A01,y\nP2,A02,z\n")
    table = read_platemap(path, plate_column="plate", plate="P2", treatment_columns=["compound"])
    assert list(table.table["Metadata_compound"]) == ["y", "z"]
    assert "Metadata_plate" not in table.table
    with pytest.raises(PlatemapError, match=r"plate P3: no row has plate == 'P3'"):
        read_platemap(path, plate_column="plate", plate="P3")
    with pytest.raises(PlatemapError, match=r"lacks platemap.treatment_columns 'dose'"):
        read_platemap(path, treatment_columns=["compound", "Metadata_dose"])


def test_row_and_column_platemap(tmp_path):
    path = tmp_path / "pm.csv"
    path.write_text("Row,Column,SBS_Controls\nA,01,-1\nA,12,1\nB,03,0\n")
    platemap = read_platemap(path, well_column=None, row_column="Row", column_column="Column")
    marked = mark_controls(platemap.table, column="SBS_Controls", negative=[-1], positive=[1])
    assert list(marked["Metadata_Well"]) == ["A01", "A12", "B03"]
    assert list(marked["Metadata_control_type"]) == ["negative", "positive", "treated"]


def test_controls_by_wells(platemap_file):
    platemap = read_platemap(platemap_file, well_column="well_position").table
    marked = mark_controls(platemap, column=None, negative_wells=["A2", "b02"])
    assert sorted(marked.loc[marked["Metadata_control_type"] == "negative", "Metadata_Well"]) == [
        "A02",
        "B02",
    ]


def test_missing_platemap_column(platemap_file):
    with pytest.raises(PlatemapError, match=r"header \(line 1\) lacks platemap.well_column 'Well'"):
        read_platemap(platemap_file, well_column="Well")


@pytest.mark.parametrize("method", ["mad_robustize", "standardize", "robustize"])
def test_features_without_spread_or_values_are_reported_not_nan_columns(method):
    annotated = _aggregated(WELLS).assign(
        Metadata_control_type=["negative"] * 3 + ["treated"] * 5,
        # Constant in the controls, different elsewhere: pycytominer would divide by ~0.
        Nuclei_Count_Flat=[1.0, 1.0, 1.0, 5, 6, 7, 8, 9],
        Nuclei_Intensity_Gone=[np.nan] * 3 + [1.0] * 5,
        Cells_Intensity_Holes=[1.0, 2.0, 3.0, np.nan, 5, 6, 7, 8],
    )
    normalized, report = normalize_profiles(annotated, method=method)
    report = report.set_index("feature")
    spread = {"mad_robustize": "mad", "standardize": "sd", "robustize": "iqr"}[method]
    assert report.loc["Nuclei_Count_Flat", "issue"] == f"zero_{spread}"
    assert report.loc["Nuclei_Intensity_Gone", "issue"] == "no_reference_value"
    assert report.loc["Cells_Intensity_Holes", "issue"] == "nan_in_wells"
    assert report.loc["Cells_Intensity_Holes", "wells_nan"] == 1
    assert "Nuclei_Count_Flat" not in normalized and "Nuclei_Intensity_Gone" not in normalized
    features = normalized.filter(regex="^(Cells|Nuclei)_")
    assert not features.isna().all().any()
    assert features.abs().max().max() < 100
    assert list(features.columns) == ["Cells_AreaShape_Area", "Cells_Intensity_Holes"]


def test_report_mode_runs_the_plate_and_writes_every_report(tmp_path, platemap_file):
    # C01 is imaged but not in the platemap: with on_mismatch report the plate still runs.
    paths = _write_batches(tmp_path, _cells([*WELLS, "C01"]))
    outputs = {name: tmp_path / f"P1_{name}.parquet" for name in (*PROFILE_STEPS, *PROFILE_REPORTS)}
    options = dict(
        platemap_options={"well_column": "well_position"},
        controls={"column": "role", "negative": ["negative"], "positive": ["positive"]},
    )
    with pytest.raises(PlatemapError, match="C01"):
        write_profiles(paths, platemap_file, outputs, plate="P1", **options)
    assert not outputs["aggregated"].exists()
    options["platemap_options"]["on_mismatch"] = "report"
    write_profiles(paths, platemap_file, outputs, plate="P1", **options)
    assert len(pd.read_parquet(outputs["normalized"])) == 9
    report = pd.read_parquet(outputs["platemap"])
    assert list(report[["Metadata_Well", "issue"]].itertuples(index=False)) == [
        ("C01", "not_in_platemap")
    ]
    assert pd.read_parquet(outputs["normalization"]).empty


def test_one_well_plate_gives_its_profile(tmp_path, platemap_file):
    # pycytominer alone fails on one well ("X contains only one sample" in variance_threshold).
    paths = _write_batches(tmp_path, _cells(["A01"]))
    tables = build_profiles(
        paths,
        platemap_file,
        platemap_options={"well_column": "well_position"},
        controls={"column": "role", "negative": ["negative"], "positive": ["positive"]},
        feature_select_operations=["variance_threshold", "correlation_threshold", "blocklist"],
    )
    assert all(len(tables[step]) == 1 for step in PROFILE_STEPS)
    assert tables["annotated"]["Nuclei_AreaShape_Area"].iloc[0] == pytest.approx(150, abs=20)
    normalized = tables["normalized"].filter(regex="^(Cells|Nuclei|Cytoplasm)_")
    assert (normalized == 0).all().all()
    assert list(tables["feature_selected"].columns) == list(tables["normalized"].columns)


def test_cell_qc_counts_and_excludes_and_nonfinite_is_reported(tmp_path, platemap_file):
    cells = _cells(WELLS)
    # One huge, irregular nucleus in A02; an Inf and a NaN in B03.
    cells.loc[30, ["Nuclei_AreaShape_Area"]] = 2000
    cells.loc[cells["Metadata_Well"] == "B03", "Cells_AreaShape_Area"] = np.inf
    cells.loc[cells.index[-1], "Nuclei_AreaShape_Area"] = np.nan
    paths = _write_batches(tmp_path, cells)
    options = dict(
        platemap_options={"well_column": "well_position"},
        controls={"column": "role", "negative": ["negative"], "positive": ["positive"]},
    )
    conditions = {"large_nuclei": {"Nuclei_AreaShape_Area": 3.0}}
    kept = build_profiles(paths, platemap_file, cell_qc={"conditions": conditions}, **options)
    dropped = build_profiles(
        paths, platemap_file, cell_qc={"conditions": conditions, "exclude": True}, **options
    )
    qc = dropped["cell_qc"].set_index("Metadata_Well")
    assert qc.loc["A02", "Metadata_cqc_large_nuclei"] == 1
    assert qc["Metadata_cqc_large_nuclei"].sum() == 1
    assert qc.loc["A02", "Metadata_cqc_excluded"] == 1
    assert (qc["Metadata_Cells"] == 30).all()
    counts = dropped["aggregated"].set_index("Metadata_Well")["Metadata_Object_Count"]
    assert counts["A02"] == 29 and counts["A01"] == 30
    assert kept["aggregated"].set_index("Metadata_Well").loc["A02", "Metadata_Object_Count"] == 30
    assert kept["cell_qc"]["Metadata_cqc_excluded"].sum() == 0
    report = dropped["nonfinite"].set_index("feature")
    assert report.loc["Cells_AreaShape_Area", "inf"] == 30
    assert report.loc["Nuclei_AreaShape_Area", "nan"] == 1
    # Inf never reaches a profile: the median of B03's finite cells is NaN (none), not Inf.
    assert not np.isinf(dropped["aggregated"]["Cells_AreaShape_Area"]).any()


def test_cell_qc_feature_missing_names_the_file(tmp_path, platemap_file):
    paths = _write_batches(tmp_path, _cells(WELLS))
    with pytest.raises(ValueError, match=r"batch0\.parquet: cell QC feature.*Eccentricity"):
        build_profiles(
            paths,
            platemap_file,
            platemap_options={"well_column": "well_position"},
            controls={"column": "role", "negative": ["negative"], "positive": ["positive"]},
            cell_qc={"conditions": None},
        )


@pytest.mark.parametrize("operation", ["median", "mean"])
def test_streamed_aggregation_equals_pycytominer_on_the_whole_table(tmp_path, operation):
    cells = _cells(WELLS, n=25)
    cells.loc[3, "Cells_AreaShape_Area"] = np.nan
    paths = _write_batches(tmp_path, cells)
    # 600 bytes: one column per block (100 cells per file), so every feature is its own block.
    streamed = aggregate_features(paths, operation=operation, chunk_bytes=600).profiles
    whole = aggregate(
        cells,
        strata=["Metadata_Plate", "Metadata_Well"],
        features="infer",
        operation=operation,
        compute_object_count=True,
    )
    pd.testing.assert_frame_equal(
        streamed, whole[streamed.columns].sort_values("Metadata_Well", ignore_index=True)
    )


def test_a_well_in_two_feature_files_is_an_error(tmp_path):
    cells = _cells(["A01", "A02"])
    first, second = tmp_path / "A01-A02.parquet", tmp_path / "A02-A03.parquet"
    cells.to_parquet(first)
    cells[cells["Metadata_Well"] == "A02"].to_parquet(second)
    with pytest.raises(ValueError, match=r"plate P1 well A02: cells in two feature files"):
        aggregate_features([first, second])


def test_experiment_stacks_plates_selects_and_builds_consensus(tmp_path, platemap_file):
    options = dict(
        platemap_options={"well_column": "well_position", "treatment_columns": ["dose"]},
        controls={"column": "role", "negative": ["negative"], "positive": ["positive"]},
        feature_select_operations=[],
    )
    paths = []
    for plate, seed in (("P1", 0), ("P2", 1)):
        cells = _cells(WELLS, seed=seed).assign(Metadata_Plate=plate)
        directory = tmp_path / plate
        directory.mkdir()
        tables = build_profiles(_write_batches(directory, cells), platemap_file, **options)
        normalized = tables["normalized"]
        if plate == "P2":  # as if P2's controls had no spread in this feature
            normalized = normalized.drop(columns="Cells_AreaShape_Area")
        paths.append(directory / "normalized.parquet")
        normalized.to_parquet(paths[-1])
    outputs = {step: tmp_path / f"{step}.parquet" for step in EXPERIMENT_STEPS}
    tables = write_experiment(
        paths, outputs, treatment_columns=["dose"], feature_select_operations=["variance_threshold"]
    )
    normalized = pd.read_parquet(outputs["normalized"])
    assert len(normalized) == 16 and "Cells_AreaShape_Area" not in normalized
    consensus = tables["consensus"].set_index("Metadata_dose")
    # Four doses, each in two wells of each plate.
    assert sorted(consensus.index) == [0, 1, 2, 3]
    assert (consensus["Metadata_Replicates"] == 4).all()
    assert list(consensus["Metadata_control_type"]) == [
        "negative",
        "treated",
        "treated",
        "positive",
    ]
    readout = consensus["Nuclei_Intensity_MeanIntensity_GFP"]
    expected = normalized.groupby("Metadata_dose")["Nuclei_Intensity_MeanIntensity_GFP"].median()
    pd.testing.assert_series_equal(readout, expected, check_names=False)
    assert readout.is_monotonic_increasing
    with pytest.raises(PlatemapError, match=r"\['Metadata_compound'\] not in the profiles"):
        consensus_profiles(normalized, treatment_columns=["compound"])
    assert consensus_profiles(normalized, treatment_columns=[]).empty

"""Profiles: pycytominer chain per plate, platemap checks, Z'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellstrata.config import PROFILE_STEPS
from cellstrata.profiles import (
    PlatemapError,
    annotate_profiles,
    build_profiles,
    mark_controls,
    read_platemap,
    write_profiles,
    zprime,
)

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


def test_imaged_well_missing_from_platemap_is_an_error(tmp_path, platemap_file):
    platemap = read_platemap(platemap_file, well_column="well_position")
    aggregated = pd.DataFrame(
        {
            "Metadata_Plate": "P1",
            "Metadata_Well": ["A01", "C07"],
            "Cells_AreaShape_Area": [1.0, 2.0],
        }
    )
    with pytest.raises(PlatemapError, match=r"plate P1: imaged well\(s\) missing .*\['C07'\]"):
        annotate_profiles(aggregated, platemap)


def test_duplicate_platemap_wells(tmp_path):
    path = tmp_path / "pm.csv"
    path.write_text("well,x\nA1,1\nA01,2\n")
    with pytest.raises(PlatemapError, match=r"listed more than once: \['A01'\]"):
        read_platemap(path)


def test_row_and_column_platemap(tmp_path):
    path = tmp_path / "pm.csv"
    path.write_text("Row,Column,SBS_Controls\nA,01,-1\nA,12,1\nB,03,0\n")
    platemap = read_platemap(path, well_column=None, row_column="Row", column_column="Column")
    marked = mark_controls(platemap, column="SBS_Controls", negative=[-1], positive=[1])
    assert list(marked["Metadata_Well"]) == ["A01", "A12", "B03"]
    assert list(marked["Metadata_control_type"]) == ["negative", "positive", "treated"]


def test_controls_by_wells(platemap_file):
    platemap = read_platemap(platemap_file, well_column="well_position")
    marked = mark_controls(platemap, column=None, negative_wells=["A2", "b02"])
    assert sorted(marked.loc[marked["Metadata_control_type"] == "negative", "Metadata_Well"]) == [
        "A02",
        "B02",
    ]


def test_missing_platemap_column(platemap_file):
    with pytest.raises(PlatemapError, match=r"column\(s\) \['Well'\] not found"):
        read_platemap(platemap_file, well_column="Well")


def test_zprime():
    assert zprime([10, 10.1, 9.9], [0, 0.1, -0.1]) == pytest.approx(1 - 3 * 0.2 / 10)
    assert zprime([1, 3], [0, 2]) < 0


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

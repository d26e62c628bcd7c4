"""CellProfiler output (CSV folders, ExportToDatabase SQLite) entering at the features level."""

from __future__ import annotations

import copy
import re
import sqlite3
from contextlib import closing

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake, shared
from snakemake.exceptions import WorkflowError

from cellstrata.config import (
    PROFILE_STEPS,
    ConfigError,
)
from cellstrata.images.ingest import normalize_well
from cellstrata.singlecell.cellprofiler import (
    CellProfilerError,
    check_source,
    convert_plate,
    image_metadata,
)
from cellstrata.stewardship.dvc import (
    render_dvc_yaml,
)
from cellstrata.stewardship.status import (
    status,
)
from cellstrata.workflow.validate import (
    load_config,
)

METADATA = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]
BOOKKEEPING = ("Number_Object_Number", "ObjectNumber", "_Parent_", "_Children_", "_Z_", "Center_Z")
EXAMPLES = REPO / "config" / "examples"


def _options(name: str) -> dict:
    return load_config(EXAMPLES / name)["cellprofiler"]


def _check_layout(cells: pd.DataFrame) -> list[str]:
    """The single-cell layout of rule features; returns the feature columns."""
    assert list(cells.columns[:4]) == METADATA
    features = list(cells.columns[4:])
    assert features
    assert all(c.split("_")[0] in ("Cells", "Nuclei", "Cytoplasm") for c in features)
    assert not [c for c in features if any(word in c for word in BOOKKEEPING)]
    assert (cells[features].dtypes == np.float32).all()
    assert cells["Metadata_Site"].dtype == np.int64
    assert cells["Metadata_ObjectNumber"].dtype == np.int64
    assert not cells.duplicated(METADATA).any()
    return features


@pytest.mark.realdata
def test_examplehuman_csv_gives_one_row_per_cell(tmp_path):
    data = shared("cellprofiler_outputs", "ExampleHuman")
    output = tmp_path / "all.parquet"
    counts = convert_plate(
        data, "ExampleHuman", output, options=_options("examplehuman_cellprofiler.yaml")
    )
    cells = pd.read_parquet(output)
    nuclei = pd.read_csv(data / "Nuclei.csv")
    cytoplasm = pd.read_csv(data / "Cytoplasm.csv")
    # One row per cytoplasm, i.e. per cell with its nucleus; here every nucleus has a cell.
    assert len(cells) == len(cytoplasm) == len(pd.read_csv(data / "Cells.csv")) == len(nuclei)
    assert counts == {
        "cells": len(cells),
        "features": len(cells.columns) - 4,
        "wells": 1,
        "images": 1,
    }
    _check_layout(cells)
    assert set(cells["Metadata_Well"]) == {"D03"}
    assert set(cells["Metadata_Site"]) == {1}
    assert set(cells["Metadata_Plate"]) == {"ExampleHuman"}
    # The joins: each row's nucleus is the one its cytoplasm names as parent.
    by_cell = cells.set_index("Metadata_ObjectNumber")
    area = nuclei.set_index("ObjectNumber")["AreaShape_Area"]
    expected = area.loc[cytoplasm["Parent_Nuclei"]].to_numpy(np.float32)
    assert np.array_equal(
        by_cell.loc[cytoplasm["Parent_Cells"], "Nuclei_AreaShape_Area"].to_numpy(), expected
    )


@pytest.mark.realdata
def test_nf1_sqlite_gives_one_row_per_cell(tmp_path):
    data = shared("cellprofiler_outputs", "NF1_SchwannCell_data", "all_cellprofiler.sqlite")
    with closing(sqlite3.connect(f"{data.as_uri()}?mode=ro", uri=True)) as db:
        n_cells = db.execute("SELECT count(*) FROM Per_Cells").fetchone()[0]
        images = pd.read_sql_query(
            "SELECT ImageNumber, Image_Metadata_Well, Image_Metadata_Site FROM Per_Image", db
        )
    output = tmp_path / "all.parquet"
    convert_plate(data, "NF1_Plate1", output, options=_options("nf1_cellprofiler.yaml"))
    cells = pd.read_parquet(output)
    assert len(cells) == n_cells
    features = _check_layout(cells)
    assert len(features) > 1000
    assert set(cells["Metadata_Well"]) <= {normalize_well(w) for w in images["Image_Metadata_Well"]}
    assert set(cells["Metadata_Site"]) <= set(images["Image_Metadata_Site"].astype(int))
    assert cells["Metadata_Well"].is_monotonic_increasing


def _csv_export(folder, image_rows, *, tables=("Image", "Cells", "Nuclei", "Cytoplasm")):
    """A tiny ExportToSpreadsheet folder: two cells per image, Image.csv from ``image_rows``."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = []
    for image in image_rows:
        for number in (1, 2):
            objects.append({"ImageNumber": image["ImageNumber"], "ObjectNumber": number})
    objects = pd.DataFrame(objects)
    rng = np.random.default_rng(0)
    frames = {
        "Image": pd.DataFrame(image_rows),
        "Cells": objects.assign(
            Number_Object_Number=objects["ObjectNumber"],
            Parent_Nuclei=objects["ObjectNumber"],
            Children_Cytoplasm_Count=1,
            AreaShape_Area=rng.uniform(100, 200, len(objects)),
        ),
        "Nuclei": objects.assign(
            Number_Object_Number=objects["ObjectNumber"],
            Children_Cells_Count=1,
            Location_Center_Z=0,
            AreaShape_Area=rng.uniform(20, 50, len(objects)),
        ),
        "Cytoplasm": objects.assign(
            Number_Object_Number=objects["ObjectNumber"],
            Parent_Cells=objects["ObjectNumber"],
            Parent_Nuclei=objects["ObjectNumber"],
            AreaShape_Area=rng.uniform(80, 150, len(objects)),
        ),
    }
    for table in tables:
        frames[table].to_csv(folder / f"{table}.csv", index=False)
    return folder


def test_csv_export_with_metadata_and_two_plates(tmp_path):
    rows = [
        {"ImageNumber": i + 1, "Metadata_Plate": plate, "Metadata_Well": well, "FileName_DNA": name}
        for i, (plate, well, name) in enumerate(
            [("P1", "B2", "x_s3.tif"), ("P1", "B2", "x_s4.tif"), ("P2", "C1", "y_s1.tif")]
        )
    ]
    folder = _csv_export(tmp_path / "export", rows)
    with pytest.raises(
        CellProfilerError, match=r"several plates in Metadata_Plate: \['P1', 'P2'\]"
    ):
        image_metadata(folder, "mine")
    # Sites numbered in ImageNumber order, or read from the file names.
    images = image_metadata(folder, "mine", cellprofiler_plate="P1")
    assert images["Metadata_Well"].tolist() == ["B02", "B02"]
    assert images["Metadata_Site"].tolist() == [1, 2]
    images = image_metadata(
        folder,
        "mine",
        cellprofiler_plate="P1",
        file_column="FileName_DNA",
        file_pattern=r"x_s(?P<site>\d)\.tif",
    )
    assert images["Metadata_Site"].tolist() == [3, 4]
    output = tmp_path / "all.parquet"
    counts = convert_plate(folder, "mine", output, cellprofiler_plate="P1")
    cells = pd.read_parquet(output)
    _check_layout(cells)
    assert counts["cells"] == len(cells) == 4
    assert set(cells["Metadata_Plate"]) == {"mine"}
    assert cells[["Metadata_Site", "Metadata_ObjectNumber"]].values.tolist() == [
        [1, 1],
        [1, 2],
        [2, 1],
        [2, 2],
    ]
    assert sorted(c for c in cells.columns[4:]) == [
        "Cells_AreaShape_Area",
        "Cytoplasm_AreaShape_Area",
        "Nuclei_AreaShape_Area",
    ]


def test_csv_folder_without_image_csv_is_named(tmp_path):
    folder = _csv_export(
        tmp_path / "no_image", [{"ImageNumber": 1}], tables=("Cells", "Nuclei", "Cytoplasm")
    )
    with pytest.raises(CellProfilerError, match=rf"CSV folder {folder} has no Image\.csv"):
        convert_plate(folder, "P", tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_sqlite_without_per_image_is_named(tmp_path):
    path = tmp_path / "run.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE Per_Cells (ImageNumber INTEGER, Cells_Number_Object_Number INT)")
        db.commit()
    with pytest.raises(CellProfilerError, match=rf"SQLite {path} has no table\(s\) \['Per_Image'"):
        convert_plate(path, "P", tmp_path / "out.parquet")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("absent", "does not exist"),
        ("notes.txt", r"neither a folder of CSVs nor a \.sqlite file"),
        ("broken.sqlite", "cannot be read"),
    ],
)
def test_unusable_sources_are_named(tmp_path, name, message):
    path = tmp_path / name
    if name != "absent":
        path.write_text("not CellProfiler output\n" * 100)
    with pytest.raises(CellProfilerError) as err:
        check_source(path)
    assert str(path) in str(err.value)
    assert re.search(message, str(err.value))


def test_missing_metadata_is_named(tmp_path):
    folder = _csv_export(tmp_path / "export", [{"ImageNumber": 1, "Metadata_Series": 0}])
    with pytest.raises(
        CellProfilerError, match=rf"{folder}: .*no 'Metadata_Well'.*Metadata_Series"
    ):
        image_metadata(folder, "P")
    with pytest.raises(CellProfilerError, match="no 'FileName_DNA'"):
        image_metadata(
            folder, "P", well_column=None, file_column="FileName_DNA", file_pattern="(?P<well>.*)"
        )


def test_config_accepts_cellprofiler_plates(tmp_path):
    base = yaml.safe_load((EXAMPLES / "nf1_cellprofiler.yaml").read_text())

    def load(config):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return load_config(path)

    assert load(base)["channels"] == {}  # CellProfiler plates need no channel map
    both = copy.deepcopy(base)
    both["plates"][0]["images"] = "somewhere"
    with pytest.raises(WorkflowError):
        load(both)
    no_well = copy.deepcopy(base)
    no_well["cellprofiler"] = {"well_column": None}
    with pytest.raises(ConfigError, match="set well_column, or file_column and file_pattern"):
        load(no_well)
    images = copy.deepcopy(base)
    images["plates"].append({"name": "IMG", "images": "i", "platemap": "m"})
    with pytest.raises(ConfigError, match="image plates need at least one channel"):
        load(images)


def _example(name: str) -> dict:
    config = yaml.safe_load((EXAMPLES / name).read_text())
    for plate in config["plates"]:
        for key in ("cellprofiler", "platemap"):
            path = plate[key]
            plate[key] = (
                str(shared(*path.split("/")[3:])) if path.startswith("..") else str(REPO / path)
            )
    return config


@pytest.mark.workflow
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "plate", "platemap_column"),
    [
        ("examplehuman_cellprofiler.yaml", "ExampleHuman", "Metadata_treatment"),
        ("nf1_cellprofiler.yaml", "NF1_Plate1", "Metadata_genotype"),
    ],
)
def test_example_runs_to_profiles(tmp_path, name, plate, platemap_column):
    config = _example(name)
    run_snakemake(tmp_path, config)
    cells = pd.read_parquet(tmp_path / f"results/features/cellprofiler/{plate}/all.parquet")
    wells = sorted(cells["Metadata_Well"].unique())
    profiles = tmp_path / "results/profiles/cellprofiler" / plate
    for step in PROFILE_STEPS:
        table = pd.read_parquet(profiles / f"{plate}_{step}.parquet")
        assert sorted(table["Metadata_Well"]) == wells, step
    annotated = pd.read_parquet(profiles / f"{plate}_annotated.parquet")
    assert platemap_column in annotated
    assert annotated["Metadata_Object_Count"].sum() == len(cells)
    # No image level was scheduled; status and dvc.yaml know the two levels only (and the
    # experiment level of version cellprofiler).
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "experiment",
        "features",
        "figures",
        "profiles",
        "provenance",
        "provenance.parquet",
        "summary.txt",
    ]
    assert f"{plate:<16}{len(wells):>7}" in (tmp_path / "results/summary.txt").read_text()
    loaded = load_config(tmp_path / "test_config.yaml")
    table = status(loaded, tmp_path)
    assert table[["level", "version", "state"]].values.tolist() == [
        ["features", "cellprofiler", "present"],
        ["profiles", "cellprofiler", "present"],
    ]
    stages = yaml.safe_load(render_dvc_yaml(loaded, "c.yaml", str(tmp_path)))
    assert sorted(stages["stages"]) == [
        "experiment_cellprofiler",
        f"features_cellprofiler_{plate}",
        f"profiles_cellprofiler_{plate}",
        f"provenance_{plate}",
        "provenance_experiment",
    ]
    figures = sorted(p.name for p in (tmp_path / "results/figures").rglob("*.png"))
    assert figures == [
        "dose_response.png",
        "map.png",
        "overview.png",
        "pca.png",
        "storage_projection.png",
    ]

"""cellstrata export ome-zarr on the example run: an OME-NGFF HCS plate that ome-zarr's reader
and the ome-zarr-models validator read back with the plate layout, channels and labels, and
pixels equal to the workflow's; the refusals of publish."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from publication.test_publish import AFTER, _cellstrata, _config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def exported(example_run, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("omezarr")
    config = _config(example_run, tmp / "config.yaml")
    out = tmp / "SYN01.zarr"
    code, said = _cellstrata(
        "export", "ome-zarr", str(out), "--plate", "SYN01", "--levels", "raw,masks",
        "--config", str(config), "--workspace", str(example_run), "--today", AFTER,
    )  # fmt: skip
    assert code == 0, said
    return out


def test_plate_reads_back_with_layout_channels_and_labels(exported, example_run):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    plate = zarr.open_group(str(exported), mode="r").attrs["ome"]["plate"]
    manifest = pd.read_parquet(example_run / "results/manifest/SYN01.parquet")
    wells = sorted(manifest["Metadata_Well"].unique())
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert [c["name"] for c in plate["columns"]] == [str(i) for i in range(1, 7)]
    assert sorted(w["path"] for w in plate["wells"]) == sorted(
        f"{w[0]}/{int(w[1:])}" for w in wells
    )
    assert plate["field_count"] == manifest["Metadata_Site"].nunique()
    nodes = list(Reader(parse_url(str(exported / "A/1/0")))())
    image = nodes[0]
    assert image.metadata["channel_names"] == ["DNA", "GFP", "AGP"]
    assert len(image.metadata["contrast_limits"]) == 3
    assert sorted(n.metadata["name"] for n in nodes if "Label" == type(n.specs[0]).__name__) == [
        "cells", "cytoplasm", "nuclei",
    ]  # fmt: skip


def test_pixels_equal_the_workflows(exported, example_run):
    manifest = pd.read_parquet(example_run / "results/manifest/SYN01.parquet")
    root = zarr.open_group(str(exported), mode="r")
    masks = next((example_run / "results/masks").iterdir()) / "SYN01"
    compared = 0
    for (well, site), group in manifest.groupby(["Metadata_Well", "Metadata_Site"]):
        field = root[f"{well[0]}/{int(well[1:])}/{int(site) - 1}"]
        paths = dict(zip(group["channel"], group["path"], strict=True))
        expected = np.stack([tifffile.imread(paths[c]) for c in ("DNA", "GFP", "AGP")])
        np.testing.assert_array_equal(field["s0"][:], expected)
        for label in ("nuclei", "cells", "cytoplasm"):
            mask = next(masks.glob(f"*/{well}_s{site}_{label}.tiff"))
            np.testing.assert_array_equal(field[f"labels/{label}/s0"][:], tifffile.imread(mask))
        compared += 1
    assert compared == len(manifest.groupby(["Metadata_Well", "Metadata_Site"]))


def test_ngff_models_accept_the_plate(exported):
    import ome_zarr_models
    from ome_zarr_models.v05.hcs import HCS

    assert isinstance(ome_zarr_models.open_ome_zarr(zarr.open_group(str(exported), mode="r")), HCS)


def test_export_refusals(example_run, tmp_path):
    def edit(config):  # a partner's plate beside the lab's
        partner = {**config["plates"][0], "name": "PARTNER1"}
        partner["origin"] = {"source": "collaborator", "access": "restricted"}
        config["plates"].append(partner)

    config = _config(example_run, tmp_path / "config.yaml", edit)
    base = ["export", "ome-zarr", str(tmp_path / "p.zarr"), "--plate", "SYN01",
            "--config", str(config), "--workspace", str(example_run)]  # fmt: skip
    code, said = _cellstrata(*base, "--levels", "raw,masks", "--today", "2027-06-01")
    assert code == 1 and "plate SYN01, level raw: access lab on 2027-06-01" in said
    code, said = _cellstrata(*base, "--today", AFTER)  # corrected (deleted) and masks
    assert code == 1 and "level corrected: not in the workspace" in said
    assert "--notemp --until correct" in said
    partner = [a if a != "SYN01" else "PARTNER1" for a in base]
    code, said = _cellstrata(*partner, "--levels", "raw,masks", "--today", AFTER)
    assert code == 1 and f"plate PARTNER1, level raw: access restricted on {AFTER}" in said
    assert not (tmp_path / "p.zarr").exists()

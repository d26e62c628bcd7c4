"""Ingest: file-name patterns, well names, and refusal of bad image sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import PATTERN, shared, write_plate

from cellstrata.images.ingest import (
    IngestError,
    SkippedFiles,
    assign_batches,
    build_manifest,
    normalize_well,
    scan_plate,
    write_manifest,
)

CHANNELS = {"1": "DNA", "2": "GFP"}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"well": "A1"}, "A01"),
        ({"well": "a01"}, "A01"),
        ({"well": "P24"}, "P24"),
        ({"well": "r03c07"}, "C07"),
        ({"well": "AF48"}, "AF48"),
        ({"row": "B", "column": "7"}, "B07"),
        ({"row": "3", "column": "03"}, "C03"),
        ({"row": 27, "column": 1}, "AA01"),
    ],
)
def test_normalize_well(kwargs, expected):
    assert normalize_well(**kwargs) == expected


@pytest.mark.parametrize("bad", ["", "A", "1A", "r0c1", "A0", "A01;rm"])
def test_normalize_well_rejects(bad):
    with pytest.raises(IngestError, match="well"):
        normalize_well(bad)


def test_manifest_of_a_complete_plate(tmp_path):
    write_plate(tmp_path, wells=("A01", "A02", "B01"), sites=2)
    manifest = build_manifest("P1", tmp_path, PATTERN, CHANNELS, wells_per_job=2)
    assert len(manifest) == 3 * 2 * 2
    assert set(manifest["channel"]) == {"DNA", "GFP"}
    assert list(manifest.columns[:3]) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    assert (manifest[["height", "width"]] == 32).all().all()
    assert set(manifest["dtype"]) == {"uint16"}
    # Whole wells per job: A01+A02 together, B01 alone.
    assert manifest.groupby("batch")["Metadata_Well"].unique().map(list).to_dict() == {
        "A01-A02": ["A01", "A02"],
        "B01": ["B01"],
    }


def test_unlisted_channels_and_other_plates_are_ignored(tmp_path):
    write_plate(tmp_path, plate="P1", channels=("1", "2", "9"))
    write_plate(tmp_path, plate="P2", channels=("1", "2"))
    frame = scan_plate("P1", tmp_path, PATTERN, CHANNELS)
    assert set(frame["Metadata_Plate"]) == {"P1"}
    assert set(frame["channel_token"]) == {"1", "2"}


def test_skipped_files_are_counted_by_reason_and_kept_in_the_manifest(tmp_path):
    # Unlisted channel 9 (2 wells x 2 sites), one name the pattern misses, a note (no image
    # extension) and another plate's images (their own plate's, not skipped).
    write_plate(tmp_path / "img", plate="P1", channels=("1", "2", "9"))
    write_plate(tmp_path / "img", plate="P2", channels=("1", "2"))
    (tmp_path / "img/P1_A01_s1_w1_thumb.tif").write_bytes(b"")
    (tmp_path / "img/notes.txt").write_text("")
    skipped = SkippedFiles()
    frame = scan_plate("P1", tmp_path / "img", PATTERN, CHANNELS, skipped=skipped)
    assert len(frame) == 2 * 2 * 2
    assert (skipped.pattern, skipped.channel, skipped.channel_tokens) == (1, 4, ["9"])
    assert skipped.pattern_examples == ["P1_A01_s1_w1_thumb.tif"]
    assert skipped.channel_examples == ["P1_A01_s1_w9.tif", "P1_A01_s2_w9.tif", "P1_A02_s1_w9.tif"]
    assert skipped.describe("P1") == (
        "plate P1: 5 image file(s) skipped: 1 not matching images.pattern "
        "(e.g. P1_A01_s1_w1_thumb.tif); 4 with a channel token not in channels: '9' "
        "(e.g. P1_A01_s1_w9.tif, P1_A01_s2_w9.tif, P1_A02_s1_w9.tif)"
    )
    out = tmp_path / "manifest.parquet"
    manifest = write_manifest("P1", tmp_path / "img", PATTERN, CHANNELS, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), manifest.reset_index(drop=True))
    assert SkippedFiles.from_manifest(out) == skipped
    # A name the pattern misses has no plate: every plate of a shared root reports it.
    other = SkippedFiles()
    scan_plate("P2", tmp_path / "img", PATTERN, CHANNELS, skipped=other)
    assert other.total == 1
    # Nothing skipped: no line.
    write_plate(tmp_path / "clean", plate="P3")
    clean = SkippedFiles()
    scan_plate("P3", tmp_path / "clean", PATTERN, CHANNELS, skipped=clean)
    assert clean.describe("P3") is None


def test_missing_channel_is_named(tmp_path):
    write_plate(tmp_path)
    (tmp_path / "P1_A02_s2_w2.tif").unlink()
    with pytest.raises(IngestError, match=r"plate P1 well A02 site 2: channel\(s\) \['GFP'\]"):
        build_manifest("P1", tmp_path, PATTERN, CHANNELS)


def test_missing_site_is_named(tmp_path):
    write_plate(tmp_path)
    for channel in ("1", "2"):
        (tmp_path / f"P1_A01_s2_w{channel}.tif").unlink()
    with pytest.raises(IngestError, match="plate P1 well A01 site 2: site missing"):
        build_manifest("P1", tmp_path, PATTERN, CHANNELS)
    # Deliberately sparse acquisitions can opt out.
    manifest = build_manifest("P1", tmp_path, PATTERN, CHANNELS, require_all_sites=False)
    assert len(manifest) == 6


def test_duplicate_keys_are_named(tmp_path):
    write_plate(tmp_path)
    # A1 and A01 are the same well: two files for one image.
    tifffile.imwrite(tmp_path / "P1_A1_s1_w1.tif", np.zeros((32, 32), np.uint16))
    pattern = PATTERN.replace(r"\d{2}", r"\d{1,2}")
    with pytest.raises(IngestError, match="plate P1 well A01 site 1 channel DNA: 2 files"):
        build_manifest("P1", tmp_path, pattern, CHANNELS)


def test_truncated_file_is_named(tmp_path):
    write_plate(tmp_path, shape=(64, 64))
    victim = tmp_path / "P1_A02_s1_w2.tif"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=r"well A02 site 1 channel GFP .*truncated"):
        build_manifest("P1", tmp_path, PATTERN, CHANNELS)


def test_garbage_file_is_named(tmp_path):
    write_plate(tmp_path)
    (tmp_path / "P1_A01_s1_w1.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(IngestError, match=r"well A01 site 1 channel DNA .*unreadable"):
        build_manifest("P1", tmp_path, PATTERN, CHANNELS)


@pytest.mark.parametrize(
    ("shape", "dtype", "text"),
    [((40, 32), np.uint16, "40x32 uint16"), ((32, 32), np.uint8, "32x32 uint8")],
)
def test_mixed_shape_or_depth_is_named(tmp_path, shape, dtype, text):
    write_plate(tmp_path, wells=("A01", "A02", "A03"))
    tifffile.imwrite(tmp_path / "P1_A03_s2_w1.tif", np.zeros(shape, dtype))
    with pytest.raises(IngestError, match=f"well A03 site 2 channel DNA .*{text}, but most"):
        build_manifest("P1", tmp_path, PATTERN, CHANNELS)


def test_no_matching_file(tmp_path):
    write_plate(tmp_path)
    with pytest.raises(IngestError, match="plate P9: no file under"):
        scan_plate("P9", tmp_path, PATTERN, CHANNELS)


def test_failed_manifest_leaves_no_output(tmp_path):
    write_plate(tmp_path / "img")
    (tmp_path / "img" / "P1_A01_s1_w1.tif").write_bytes(b"junk")
    out = tmp_path / "manifest.parquet"
    with pytest.raises(IngestError):
        write_manifest("P1", tmp_path / "img", PATTERN, CHANNELS, out)
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == []


def test_batches_keep_wells_whole():
    frame = pd.DataFrame({"Metadata_Well": ["A01", "A01", "A02", "B01", "B03"]})
    batches = assign_batches(frame, 3)["batch"]
    assert list(batches) == ["A01-B01", "A01-B01", "A01-B01", "A01-B01", "B03"]


# Real layouts from ../shared: each must be expressible with a pattern.
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("folder", "pattern", "channels", "sparse", "n_images", "first_well"),
    [
        (
            "bbbc013_translocation",
            r"Channel(?P<channel>\d)-\d+-(?P<row>[A-H])-(?P<column>\d{2})\.tif",
            {"1": "GFP", "2": "DNA"},
            False,
            96,
            "A01",
        ),
        (
            "nf1_cellpainting_plate2/Plate_2_images",
            r"(?P<well>[A-P]\d{1,2})_01_(?P<channel>\d)_(?P<site>\d+)_\w+_001\.tif",
            {"1": "DNA", "2": "ER", "3": "Actin"},
            True,
            15,
            "B07",
        ),
        (
            "cellpainting_site_BR00143976/images",
            r"r(?P<row>\d+)c(?P<column>\d+)f(?P<site>\d+)p\d+-ch(?P<channel>\d+)sk1fk1fl1\.tiff",
            {"5": "DNA", "2": "ER", "3": "AGP", "4": "Mito", "6": "RNA"},
            False,
            5,
            "C03",
        ),
    ],
)
def test_real_layouts(folder, pattern, channels, sparse, n_images, first_well):
    root = shared(folder)
    manifest = build_manifest("P", root, pattern, channels, require_all_sites=not sparse)
    assert len(manifest) == n_images
    assert manifest["Metadata_Well"].iloc[0] == first_well
    assert set(manifest["channel"]) == set(channels.values())


def test_batching_is_decided_once(tmp_path):
    """The DAG (plate_inventory) and the ingest job (write_manifest) batch with one function
    whose default is the schema's batching.wells_per_job."""
    import inspect

    import yaml

    from cellstrata.config import SCHEMA_PATH
    from cellstrata.images import ingest

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    default = schema["properties"]["batching"]["properties"]["wells_per_job"]["default"]
    for function in (
        ingest.assign_batches,
        ingest.build_manifest,
        ingest.write_manifest,
        ingest.plate_inventory,
    ):
        parameter = inspect.signature(function).parameters["wells_per_job"]
        assert parameter.default == default, function.__name__
    wells = ("A01", "A02", "A03", "B01", "B02", "C01")
    write_plate(tmp_path / "img", wells=wells, sites=2)
    for wells_per_job in (None, 1, 4):
        given = {} if wells_per_job is None else {"wells_per_job": wells_per_job}
        dag = ingest.plate_inventory(
            "P1", tmp_path / "img", PATTERN, CHANNELS, manifest=tmp_path / "none", **given
        )
        job = ingest.write_manifest(
            "P1", tmp_path / "img", PATTERN, CHANNELS, tmp_path / "m.parquet", **given
        )
        keys = ["Metadata_Well", "Metadata_Site", "channel", "path", "batch"]
        pd.testing.assert_frame_equal(
            dag[keys].reset_index(drop=True), job[keys].reset_index(drop=True)
        )
    assert set(job["batch"]) == {"A01-B01", "B02-C01"}

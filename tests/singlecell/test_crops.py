"""Tests for cellstrata.singlecell.crops: cell-centred single-cell crops and the per-job HDF5
store."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from cellstrata.io import site_file, write_labels
from cellstrata.singlecell.crops import INDEX_COLUMNS, SITE_COLUMNS, crop_batch, crop_site

SHAPE = (40, 50)


def _images(shape: tuple[int, int] = SHAPE) -> dict[str, np.ndarray]:
    """Two channels whose pixel values encode their own coordinates (easy to check)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return {
        "DNA": (1000 * yy + xx + 1).astype(np.float32),
        "AGP": (-(1000 * yy + xx) - 0.5).astype(np.float32),
    }


def _square(labels: np.ndarray, label: int, y0: int, x0: int, side: int) -> None:
    labels[y0 : y0 + side, x0 : x0 + side] = label


# --------------------------------------------------------------------------------------------
# crop_site
# --------------------------------------------------------------------------------------------


def test_centred_crop_matches_source() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    _square(labels, 5, 15, 20, 5)  # rows 15..19, cols 20..24: centroid (17, 22)
    crops, index = crop_site(images, labels, size=16, mask_channel=False)

    assert crops.shape == (1, 2, 16, 16)
    assert crops.dtype == np.float32
    row = index.iloc[0]
    assert row["ObjectNumber"] == 5
    assert (row["Location_Center_Y"], row["Location_Center_X"]) == (17.0, 22.0)
    assert (row["Crop_Origin_Y"], row["Crop_Origin_X"]) == (17 - 8, 22 - 8)
    bbox = [row[f"BoundingBox{m}_{a}"] for m in ("Minimum", "Maximum") for a in "YX"]
    assert bbox == [15, 20, 20, 25]
    # The centroid pixel sits at the crop centre, and the crop is the source window.
    assert crops[0, 0, 8, 8] == images["DNA"][17, 22]
    np.testing.assert_array_equal(crops[0, 0], images["DNA"][9:25, 14:30])
    np.testing.assert_array_equal(crops[0, 1], images["AGP"][9:25, 14:30])


def test_channel_order_follows_images() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    _square(labels, 1, 15, 20, 5)
    swapped = {"AGP": images["AGP"], "DNA": images["DNA"]}
    crops, _ = crop_site(swapped, labels, size=8, mask_channel=False)
    np.testing.assert_array_equal(crops[0, 0], images["AGP"][13:21, 18:26])


def test_corner_cell_is_zero_padded() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    _square(labels, 1, 0, 0, 3)  # centroid (1, 1)
    crops, index = crop_site(images, labels, size=10, mask_channel=True)

    assert (index.at[0, "Crop_Origin_Y"], index.at[0, "Crop_Origin_X"]) == (-4, -4)
    crop = crops[0]
    # Rows/cols 0..3 of the crop lie above/left of the image: zero in every channel.
    assert not crop[:, :4, :].any()
    assert not crop[:, :, :4].any()
    # Crop pixel (4 + r, 4 + c) is image pixel (r, c).
    np.testing.assert_array_equal(crop[0, 4:, 4:], images["DNA"][:6, :6])
    np.testing.assert_array_equal(crop[1, 4:, 4:], images["AGP"][:6, :6])
    assert crop[0, 5, 5] == images["DNA"][1, 1]  # centroid at the centre (10 // 2)
    np.testing.assert_array_equal(crop[2, 4:7, 4:7], np.ones((3, 3)))


def test_bottom_right_corner_is_zero_padded() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    labels[-2:, -2:] = 3  # centroid (38.5, 48.5) -> rounds half up to (39, 49)
    crops, index = crop_site(images, labels, size=6, mask_channel=False)
    assert (index.at[0, "Crop_Origin_Y"], index.at[0, "Crop_Origin_X"]) == (36, 46)
    np.testing.assert_array_equal(crops[0, 0, :4, :4], images["DNA"][36:, 46:])
    assert not crops[0, :, 4:, :].any()
    assert not crops[0, :, :, 4:].any()


def test_mask_channel_is_the_object_mask() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels[(yy - 20) ** 2 + (xx - 25) ** 2 <= 16] = 2  # disc, centroid (20, 25)
    labels[20:24, 30:34] = 7  # a touching neighbour: not part of object 2's mask
    crops, index = crop_site(images, labels, size=20, mask_channel=True)

    assert crops.shape == (2, 3, 20, 20)
    assert list(index["ObjectNumber"]) == [2, 7]
    mask = crops[0, 2]
    expected = (labels[10:30, 15:35] == 2).astype(np.float32)
    np.testing.assert_array_equal(mask, expected)
    assert set(np.unique(mask)) == {0.0, 1.0}
    # Without neighbour masking the neighbour's pixels are still in the image channels.
    np.testing.assert_array_equal(crops[0, 0], images["DNA"][10:30, 15:35])


def test_mask_neighbours_zeroes_touching_neighbour() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    labels[10:20, 10:20] = 1
    labels[10:20, 20:26] = 2  # touches object 1 along column 20
    crops, index = crop_site(images, labels, size=24, mask_channel=False, mask_neighbours=True)

    oy, ox = int(index.at[0, "Crop_Origin_Y"]), int(index.at[0, "Crop_Origin_X"])
    assert (oy, ox) == (3, 3)  # centroid (14.5, 14.5) rounds half up to 15
    window = labels[oy : oy + 24, ox : ox + 24]
    for c, channel in enumerate(("DNA", "AGP")):
        source = images[channel][oy : oy + 24, ox : ox + 24]
        # Neighbour pixels are zero, the object and the background are the source values.
        assert not crops[0, c][window == 2].any()
        assert (window == 2).sum() == 60
        keep = window != 2
        np.testing.assert_array_equal(crops[0, c][keep], source[keep])
    # And the neighbour's own crop hides object 1 instead.
    oy2, ox2 = int(index.at[1, "Crop_Origin_Y"]), int(index.at[1, "Crop_Origin_X"])
    window2 = labels[oy2 : oy2 + 24, ox2 : ox2 + 24]
    assert not crops[1, 0][window2 == 1].any()
    assert crops[1, 0][window2 == 2].all()


def test_zero_objects_gives_empty_arrays_with_full_columns() -> None:
    labels = np.zeros(SHAPE, np.uint16)
    crops, index = crop_site(_images(), labels, size=12)
    assert crops.shape == (0, 3, 12, 12)
    assert crops.dtype == np.float32
    assert index.empty
    assert list(index.columns) == list(SITE_COLUMNS)
    assert dict(index.dtypes.astype(str)) == SITE_COLUMNS


def test_odd_size_centres_exactly() -> None:
    images = _images()
    labels = np.zeros(SHAPE, np.int32)
    _square(labels, 1, 10, 10, 3)  # centroid (11, 11)
    crops, index = crop_site(images, labels, size=7, mask_channel=True)
    assert crops.shape == (1, 3, 7, 7)
    assert crops[0, 0, 3, 3] == images["DNA"][11, 11]
    np.testing.assert_array_equal(crops[0, 0], images["DNA"][8:15, 8:15])
    # The 3x3 object mask is symmetric around the centre of an odd crop.
    np.testing.assert_array_equal(crops[0, 2], np.pad(np.ones((3, 3)), 2))


def test_large_sparse_labels_and_index_geometry() -> None:
    labels = np.zeros(SHAPE, np.uint32)
    labels[5:8, 30:40] = 4_000_000_000  # label far beyond any dense lookup table
    labels[25:35, 2:4] = 9
    _, index = crop_site(_images(), labels, size=8)
    assert list(index["ObjectNumber"]) == [9, 4_000_000_000]
    big = index.iloc[1]
    assert big["Location_Center_X"] == pytest.approx(34.5)
    assert big["Location_Center_Y"] == pytest.approx(6.0)
    assert (big["BoundingBoxMinimum_X"], big["BoundingBoxMaximum_X"]) == (30, 40)
    assert (big["BoundingBoxMinimum_Y"], big["BoundingBoxMaximum_Y"]) == (5, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "size"),
        ({"labels": np.zeros((3, 3), float)}, "integer"),
        ({"labels": np.zeros((3, 3, 2), int)}, "2-D"),
        ({"images": {"DNA": np.zeros((4, 4))}}, "shape"),
        ({"images": {"mask": np.zeros((3, 3))}}, "mask"),
        ({"images": {}, "mask_channel": False}, "no channel"),
    ],
)
def test_invalid_input(kwargs: dict, message: str) -> None:
    args = {"images": {"DNA": np.zeros((3, 3))}, "labels": np.zeros((3, 3), int), **kwargs}
    with pytest.raises(ValueError, match=message):
        crop_site(args.pop("images"), args.pop("labels"), **args)


# --------------------------------------------------------------------------------------------
# crop_batch
# --------------------------------------------------------------------------------------------

# Five channels as in Cell Painting (three would make tifffile guess an RGB image).
CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


def _write_job(root: Path, sites: dict[tuple[str, int], list[tuple[int, int, int, int]]]) -> tuple:
    """Corrected stacks (as correct_batch writes them) and label TIFFs for some sites.

    ``sites`` maps (well, site) to squares (label, y0, x0, side) of the cells mask; nuclei are
    the cells' centres and cytoplasm the difference.
    """
    corrected, masks = root / "corrected", root / "masks"
    corrected.mkdir()
    masks.mkdir()
    stacks = {}
    rng = np.random.default_rng(0)
    for (well, site), squares in sites.items():
        stack = rng.random((len(CHANNELS), *SHAPE), dtype=np.float32)
        # As illumination.correct_batch writes them: channel names in the TIFF metadata.
        tifffile.imwrite(
            corrected / site_file(well, site),
            stack,
            compression="zlib",
            metadata={"channels": CHANNELS},
        )
        stacks[well, site] = stack
        cells = np.zeros(SHAPE, np.int32)
        nuclei = np.zeros(SHAPE, np.int32)
        for label, y0, x0, side in squares:
            _square(cells, label, y0, x0, side)
            _square(nuclei, label, y0 + 1, x0 + 1, side - 2)
        write_labels(masks / site_file(well, site, "_cells"), cells)
        write_labels(masks / site_file(well, site, "_nuclei"), nuclei)
        write_labels(masks / site_file(well, site, "_cytoplasm"), np.where(nuclei, 0, cells))
    return corrected, masks, stacks


def test_crop_batch_end_to_end(tmp_path: Path) -> None:
    sites = {
        ("A01", 1): [(1, 5, 5, 6), (2, 20, 30, 8), (3, 34, 44, 6)],
        ("B02", 2): [(4, 10, 10, 5), (1, 30, 20, 4)],
    }
    corrected, masks, stacks = _write_job(tmp_path, sites)
    store_path, index_path = tmp_path / "out" / "crops.h5", tmp_path / "out" / "index.parquet"
    returned = crop_batch(corrected, masks, "P1", store_path, index_path, size=15)

    with h5py.File(store_path, "r") as store:
        crops = store["crops"]
        assert crops.shape == (5, 6, 15, 15)
        assert crops.dtype == np.float32
        assert crops.chunks == (1, 6, 15, 15)
        assert crops.compression in {"gzip", "lzf"}
        assert list(crops.attrs["channels"]) == [*CHANNELS, "mask"]
        assert crops.attrs["size"] == 15
        assert crops.attrs["compartment"] == "cells"
        assert crops.attrs["plate"] == "P1"
        assert [c.decode() for c in store["channels"][()]] == [*CHANNELS, "mask"]
        data = crops[()]
        wells = [w.decode() for w in store["Metadata_Well"][()]]
        objects = store["Metadata_ObjectNumber"][()]
    # No temporary file is left next to the outputs.
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["crops.h5", "index.parquet"]

    index = pd.read_parquet(index_path)
    pd.testing.assert_frame_equal(index, returned)
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert len(index) == sum(len(v) for v in sites.values())
    assert list(index["crop_index"]) == list(range(5))
    assert (index["Metadata_Plate"] == "P1").all()
    assert list(zip(index["Metadata_Well"], index["Metadata_Site"], strict=True)) == [
        ("A01", 1),
        ("A01", 1),
        ("A01", 1),
        ("B02", 2),
        ("B02", 2),
    ]
    assert list(index["Metadata_ObjectNumber"]) == [1, 2, 3, 1, 4]
    assert wells == list(index["Metadata_Well"])
    assert list(objects) == list(index["Metadata_ObjectNumber"])

    # Every index row points at its own crop: recompute it from the source stack.
    for row in index.itertuples():
        stack = stacks[row.Metadata_Well, row.Metadata_Site]
        oy, ox = row.Crop_Origin_Y, row.Crop_Origin_X
        y0, x0 = max(oy, 0), max(ox, 0)
        y1, x1 = min(oy + 15, SHAPE[0]), min(ox + 15, SHAPE[1])
        crop = data[row.crop_index]
        np.testing.assert_array_equal(
            crop[:5, y0 - oy : y1 - oy, x0 - ox : x1 - ox], stack[:, y0:y1, x0:x1]
        )
        cy, cx = round(row.Location_Center_Y), round(row.Location_Center_X)
        assert crop[5, cy - oy, cx - ox] == 1.0  # the object's mask covers its centroid
        assert crop[5].sum() == (row.BoundingBoxMaximum_Y - row.BoundingBoxMinimum_Y) * (
            row.BoundingBoxMaximum_X - row.BoundingBoxMinimum_X
        )


def test_crop_batch_nuclei_without_mask_odd_size(tmp_path: Path) -> None:
    corrected, masks, stacks = _write_job(tmp_path, {("C03", 1): [(1, 10, 10, 9)]})
    index = crop_batch(
        corrected,
        masks,
        "P2",
        tmp_path / "c.h5",
        tmp_path / "i.parquet",
        size=9,
        compartment="nuclei",
        mask_channel=False,
    )
    assert len(index) == 1
    # Nucleus rows/cols 11..17: centroid (14, 14), crop rows/cols 10..18.
    assert (index.at[0, "Crop_Origin_Y"], index.at[0, "Crop_Origin_X"]) == (10, 10)
    with h5py.File(tmp_path / "c.h5", "r") as store:
        assert store["crops"].shape == (1, 5, 9, 9)
        assert list(store["crops"].attrs["channels"]) == CHANNELS
        assert store["crops"].attrs["compartment"] == "nuclei"
        np.testing.assert_array_equal(store["crops"][0], stacks["C03", 1][:, 10:19, 10:19])


def test_crop_batch_without_cells_writes_valid_empty_outputs(tmp_path: Path) -> None:
    corrected, masks, _ = _write_job(tmp_path, {("A01", 1): [], ("A01", 2): []})
    returned = crop_batch(corrected, masks, "P1", tmp_path / "c.h5", tmp_path / "i.parquet")
    with h5py.File(tmp_path / "c.h5", "r") as store:
        assert store["crops"].shape == (0, 6, 64, 64)
        assert list(store["crops"].attrs["channels"]) == [*CHANNELS, "mask"]
        assert store["Metadata_ObjectNumber"].shape == (0,)
    index = pd.read_parquet(tmp_path / "i.parquet")
    assert index.empty
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert dict(returned.dtypes.astype(str)) == INDEX_COLUMNS
    assert str(index["Metadata_Site"].dtype) == "int64"


def test_crop_batch_rejects_unknown_compartment(tmp_path: Path) -> None:
    corrected, masks, _ = _write_job(tmp_path, {("A01", 1): [(1, 5, 5, 4)]})
    with pytest.raises(ValueError, match="compartment"):
        crop_batch(
            corrected, masks, "P1", tmp_path / "c.h5", tmp_path / "i.parquet", compartment="Cells"
        )
    assert not (tmp_path / "c.h5").exists()


def test_crop_batch_failure_leaves_no_partial_store(tmp_path: Path) -> None:
    corrected, masks, _ = _write_job(tmp_path, {("A01", 1): [(1, 5, 5, 4)], ("A01", 2): []})
    (masks / site_file("A01", 2, "_cells")).unlink()  # second site fails after the first
    out = tmp_path / "out"
    with pytest.raises(Exception, match="A01_s2_cells"):
        crop_batch(corrected, masks, "P1", out / "c.h5", out / "i.parquet")
    assert list(out.iterdir()) == []  # neither the store nor its temporary file

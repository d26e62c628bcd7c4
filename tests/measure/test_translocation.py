"""Tests for the opt-in Translocation feature group (nucleus core vs. surrounding ring)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import REPO
from scipy import ndimage
from skimage.segmentation import expand_labels

from cellstrata.config import (
    ConfigError,
)
from cellstrata.measure import translocation
from cellstrata.measure.objects import CompartmentObjects, Site
from cellstrata.singlecell import features
from cellstrata.singlecell.features import feature_columns, measure_site
from cellstrata.workflow.validate import (
    load_config,
)

CROSS = ndimage.generate_binary_structure(2, 1)
PREFIX = "Nuclei_Translocation_"


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _band(mask, low, high):
    """Pixels at Euclidean distance ``low < d <= high`` from ``mask``."""
    d = ndimage.distance_transform_edt(~mask)
    return (d > low) & (d <= high)


# --------------------------------------------------------------------------------------------
# Two separate nuclei with hand-set core, rim, gap and ring intensities
# --------------------------------------------------------------------------------------------
#
# Nucleus k (disk r=6) in cell k (disk r=18): DNA is `core` inside the nucleus eroded once by
# the cross, `rim` on the 1-px nuclear rim, 50 at distance (0, 2] from the nucleus, `ring` at
# distance (2, 7], 7 elsewhere in the cell and 0 outside the cells.
# AGP is 5 everywhere; Zero is the nuclear part of DNA and 0 elsewhere.

VALUES = {
    1: {"core": 300.0, "rim": 200.0, "ring": 100.0},
    2: {"core": 600.0, "rim": 400.0, "ring": 150.0},
}


def _two_nuclei():
    shape = (64, 96)
    nuclei = np.zeros(shape, np.int32)
    cells = np.zeros(shape, np.int32)
    dna = np.zeros(shape)
    for k, cx in ((1, 22), (2, 66)):
        nuc = _disk(shape, 30, cx, 6)
        cell = _disk(shape, 30, cx, 18)
        cells[cell] = k
        nuclei[nuc] = k
        dna[cell] = 7.0
        dna[_band(nuc, 0, 2)] = 50.0
        dna[_band(nuc, 2, 7)] = VALUES[k]["ring"]
        dna[nuc] = VALUES[k]["rim"]
        dna[ndimage.binary_erosion(nuc, CROSS)] = VALUES[k]["core"]
    cyto = np.where(nuclei > 0, 0, cells)
    labels = {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}
    images = {"DNA": dna, "AGP": np.full(shape, 5.0), "Zero": np.where(nuclei > 0, dna, 0.0)}
    return labels, images


def _measure(labels, images, **options):
    frame = measure_site(
        labels, images, groups=["Translocation"], options={"Translocation": options}
    )
    return frame.set_index("ObjectNumber")


def test_core_ring_and_ratio_by_hand():
    labels, images = _two_nuclei()
    frame = _measure(labels, images)  # defaults: shrink 1, gap 2, width 5
    for k in (1, 2):
        row = frame.loc[k]
        assert row[PREFIX + "CoreMean_DNA"] == VALUES[k]["core"]
        assert row[PREFIX + "RingMean_DNA"] == VALUES[k]["ring"]
        assert row[PREFIX + "CoreRingRatio_DNA"] == VALUES[k]["core"] / VALUES[k]["ring"]
        assert row[PREFIX + "CoreMean_AGP"] == 5.0
        assert row[PREFIX + "RingMean_AGP"] == 5.0
        assert row[PREFIX + "CoreRingRatio_AGP"] == 1.0
        # Ring mean 0 -> ratio undefined.
        assert row[PREFIX + "CoreMean_Zero"] == VALUES[k]["core"]
        assert row[PREFIX + "RingMean_Zero"] == 0.0
        assert np.isnan(row[PREFIX + "CoreRingRatio_Zero"])


def test_options_move_the_regions():
    labels, images = _two_nuclei()
    frame = _measure(labels, images, shrink=0, gap=0, width=2)
    nuclei = labels["Nuclei"]
    for k in (1, 2):
        nuc = nuclei == k
        expected_core = images["DNA"][nuc].mean()
        rim = nuc & ~ndimage.binary_erosion(nuc, CROSS)
        assert expected_core == pytest.approx(
            (VALUES[k]["core"] * (nuc.sum() - rim.sum()) + VALUES[k]["rim"] * rim.sum()) / nuc.sum()
        )
        assert frame.loc[k, PREFIX + "CoreMean_DNA"] == pytest.approx(expected_core, rel=1e-7)
        assert frame.loc[k, PREFIX + "RingMean_DNA"] == 50.0
        assert frame.loc[k, PREFIX + "CoreRingRatio_DNA"] == pytest.approx(
            expected_core / 50.0, rel=1e-7
        )
    # A ring further out than the cells' radius and a core shrunk to its middle.
    frame = _measure(labels, images, shrink=2, gap=7, width=30)
    for k in (1, 2):
        assert frame.loc[k, PREFIX + "CoreMean_DNA"] == VALUES[k]["core"]
        assert frame.loc[k, PREFIX + "RingMean_DNA"] == 7.0


# --------------------------------------------------------------------------------------------
# Touching nuclei, cell masks, vanishing cores, empty rings
# --------------------------------------------------------------------------------------------


def test_touching_nuclei_erode_apart_and_rings_do_not_overlap():
    shape = (50, 60)
    nuclei = np.zeros(shape, np.int32)
    nuclei[20:30, 20:30] = 1
    nuclei[20:30, 30:40] = 2
    # Each background pixel carries 10 x the label of its nearest nucleus; nuclei are huge.
    owner = expand_labels(nuclei, 7)
    ring_image = np.where(nuclei > 0, 1e6, 10.0 * owner)
    columns = np.tile(np.arange(shape[1], dtype=float), (shape[0], 1))
    frame = measure_site(
        {"Nuclei": nuclei},
        {"Owner": ring_image, "Column": columns},
        compartments=("Nuclei",),
        groups=["Translocation"],
        options={"Translocation": {"shrink": 1, "gap": 0, "width": 7}},
    ).set_index("ObjectNumber")
    assert frame.loc[1, PREFIX + "RingMean_Owner"] == 10.0
    assert frame.loc[2, PREFIX + "RingMean_Owner"] == 20.0
    # Each label is eroded on its own: the shared border is removed from both cores
    # (columns 21..28 and 31..38), not only the outer one.
    assert frame.loc[1, PREFIX + "CoreMean_Column"] == 24.5
    assert frame.loc[2, PREFIX + "CoreMean_Column"] == 34.5

    objects = CompartmentObjects("Nuclei", nuclei, np.array([1, 2]))
    pixels, rows = translocation.ring_pixels(objects, gap=0, width=7)
    assert np.unique(pixels).size == pixels.size
    expected = np.flatnonzero((owner > 0) & (nuclei == 0))
    np.testing.assert_array_equal(np.sort(pixels), expected)
    np.testing.assert_array_equal(rows + 1, owner.ravel()[pixels])


def test_ring_is_restricted_to_the_cell_and_empty_ring_is_nan():
    shape = (64, 96)
    nuclei = np.zeros(shape, np.int32)
    cells = np.zeros(shape, np.int32)
    small_cell = _disk(shape, 32, 30, 10)  # the default ring would reach ~13 px out
    cells[small_cell] = 1
    nuclei[_disk(shape, 32, 30, 6)] = 1
    cells[_disk(shape, 32, 70, 6)] = 2  # the cell is its nucleus: no ring at all
    nuclei[cells == 2] = 2
    image = np.where(cells > 0, 100.0, 1000.0)
    image[nuclei > 0] = 300.0
    labels = {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": np.where(nuclei > 0, 0, cells)}
    frame = _measure(labels, {"DNA": image})
    assert frame.loc[1, PREFIX + "RingMean_DNA"] == 100.0
    assert frame.loc[1, PREFIX + "CoreRingRatio_DNA"] == 3.0
    assert frame.loc[2, PREFIX + "CoreMean_DNA"] == 300.0
    assert np.isnan(frame.loc[2, PREFIX + "RingMean_DNA"])
    assert np.isnan(frame.loc[2, PREFIX + "CoreRingRatio_DNA"])

    # Without cell labels the ring is not restricted and reaches the 1000s outside the cell.
    unrestricted = measure_site(
        {"Nuclei": nuclei},
        {"DNA": image},
        compartments=("Nuclei",),
        groups=["Translocation"],
    ).set_index("ObjectNumber")
    ring = (expand_labels(nuclei, 7) == 1) & (expand_labels(nuclei, 2) == 0)
    assert unrestricted.loc[1, PREFIX + "RingMean_DNA"] == pytest.approx(
        image[ring].mean(), rel=1e-7
    )
    assert unrestricted.loc[1, PREFIX + "RingMean_DNA"] > 100.0
    assert unrestricted.loc[2, PREFIX + "RingMean_DNA"] == 1000.0  # no cell 2 around it


def test_vanishing_core_keeps_the_whole_nucleus():
    shape = (30, 30)
    nuclei = np.zeros(shape, np.int32)
    nuclei[5:7, 5:7] = 1  # 2x2: gone after one erosion
    nuclei[15:26, 15:26] = 2  # 11x11: 3x3 left after four erosions, gone after six
    image = np.zeros(shape)
    image[5:7, 5:7] = [[1.0, 2.0], [3.0, 4.0]]
    image[15:26, 15:26] = np.arange(121.0).reshape(11, 11)
    image[20, 20] = 1000.0  # the centre pixel
    for shrink, expected_2 in ((5, 1000.0), (6, image[15:26, 15:26].mean())):
        frame = measure_site(
            {"Nuclei": nuclei},
            {"DNA": image},
            compartments=("Nuclei",),
            groups=["Translocation"],
            options={"Translocation": {"shrink": shrink}},
        ).set_index("ObjectNumber")
        assert frame.loc[1, PREFIX + "CoreMean_DNA"] == 2.5
        assert frame.loc[2, PREFIX + "CoreMean_DNA"] == pytest.approx(expected_2, rel=1e-7)


# --------------------------------------------------------------------------------------------
# Agreement with a per-object reference on random touching nuclei
# --------------------------------------------------------------------------------------------


def _reference(nuclei, cells, image, shrink, gap, width):
    inner = expand_labels(nuclei, gap)
    outer = expand_labels(nuclei, gap + width)
    out = {}
    for k in np.unique(nuclei[nuclei > 0]):
        nuc = nuclei == k
        core = ndimage.binary_erosion(nuc, CROSS, iterations=shrink) if shrink else nuc
        if not core.any():
            core = nuc
        ring = (outer == k) & (inner == 0)
        if cells is not None:
            ring &= cells == k
        core_mean = image[core].mean()
        ring_mean = image[ring].mean() if ring.any() else np.nan
        ratio = core_mean / ring_mean if ring.any() and ring_mean != 0 else np.nan
        out[int(k)] = (core_mean, ring_mean, ratio)
    return out


@pytest.mark.parametrize(
    ("shrink", "gap", "width", "with_cells"),
    [(1, 2, 5, True), (0, 0, 1, True), (3, 1.5, 4.5, False), (2, 4, 3, True)],
)
def test_matches_per_object_reference(shrink, gap, width, with_cells):
    rng = np.random.default_rng(7)
    shape = (90, 110)
    seeds = np.zeros(shape, np.int32)
    ys = rng.integers(5, shape[0] - 5, 14)
    xs = rng.integers(5, shape[1] - 5, 14)
    seeds[ys, xs] = np.arange(1, 15) * 3  # sparse label values
    nuclei = expand_labels(seeds, 5)  # touching, some cut by the image border
    cells = expand_labels(nuclei, 9)
    cells[rng.random(shape) < 0.1] = 0  # holes: the ring must follow the cell mask
    cells[nuclei > 0] = nuclei[nuclei > 0]
    image = rng.random(shape) * 1000
    ids = np.unique(nuclei[nuclei > 0])
    objects = CompartmentObjects("Nuclei", nuclei, ids)
    site_labels = {"Nuclei": nuclei, "Cells": cells} if with_cells else {"Nuclei": nuclei}
    site = Site({"DNA": image}, site_labels)
    got = translocation.measure_translocation(objects, site, shrink=shrink, gap=gap, width=width)
    ref = _reference(nuclei, cells if with_cells else None, image, shrink, gap, width)
    for row, k in enumerate(ids.tolist()):
        np.testing.assert_allclose(
            [got[f"Translocation_{f}_DNA"][row] for f in translocation.TRANSLOCATION_FEATURES],
            ref[k],
            rtol=1e-9,
            equal_nan=True,
        )


def test_matches_reference_through_measure_site():
    # Same as above through the public API, all compartments (the ring follows Cells).
    rng = np.random.default_rng(3)
    shape = (70, 80)
    seeds = np.zeros(shape, np.int32)
    seeds[rng.integers(3, 67, 9), rng.integers(3, 77, 9)] = np.arange(1, 10)
    nuclei = expand_labels(seeds, 4)
    cells = expand_labels(nuclei, 6)
    image = rng.random(shape) * 100
    labels = {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": np.where(nuclei > 0, 0, cells)}
    frame = _measure(labels, {"DNA": image}, gap=1, width=3)
    ref = _reference(nuclei, cells, image, 1, 1, 3)
    for k, values in ref.items():
        got = [frame.loc[k, f"{PREFIX}{f}_DNA"] for f in translocation.TRANSLOCATION_FEATURES]
        np.testing.assert_allclose(got, values, rtol=1e-6, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Selection and options through the public API and the config
# --------------------------------------------------------------------------------------------


def test_opt_in_and_column_names():
    assert "Translocation" in features.FEATURE_GROUPS
    assert "Translocation" in features.OPT_IN_GROUPS
    assert not any("Translocation" in c for c in feature_columns(["DNA", "AGP"]))
    labels, images = _two_nuclei()
    default = measure_site(labels, images)
    assert not any("Translocation" in c for c in default.columns)
    groups = ["AreaShape", "Translocation"]
    frame = measure_site(labels, images, groups=groups)
    names = [f"{PREFIX}{f}_{c}" for f in ("CoreMean", "RingMean", "CoreRingRatio") for c in images]
    assert [c for c in frame.columns if "Translocation" in c] == names
    assert list(frame.columns[1:]) == feature_columns(list(images), groups=groups)
    assert frame[names].dtypes.eq(np.float32).all()


def test_options_are_checked():
    labels, images = _two_nuclei()
    with pytest.raises(ValueError, match="opt-in"):
        measure_site(labels, images, options={"Translocation": {"gap": 1}})
    with pytest.raises(ValueError, match="unknown option"):
        _measure(labels, images, radius=3)
    for bad in ({"shrink": -1}, {"shrink": 1.5}, {"shrink": True}, {"gap": -1}, {"width": 0}):
        with pytest.raises(ValueError, match="Translocation: "):
            _measure(labels, images, **bad)
        with pytest.raises(ValueError, match="Translocation: "):
            feature_columns(["DNA"], groups=["Translocation"], options={"Translocation": bad})


def test_zero_objects_keep_the_schema():
    empty = np.zeros((20, 20), np.int32)
    labels = {"Nuclei": empty, "Cells": empty, "Cytoplasm": empty}
    frame = measure_site(labels, {"DNA": np.ones((20, 20))}, groups=["Translocation"])
    assert len(frame) == 0
    assert list(frame.columns[1:]) == [
        f"{PREFIX}{f}_DNA" for f in translocation.TRANSLOCATION_FEATURES
    ]


def test_config_selects_translocation(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    path = tmp_path / "config.yaml"
    config["features"] = {
        "groups": ["AreaShape", "Intensity", "Translocation"],
        "options": {"Translocation": {"shrink": 2, "gap": 1, "width": 4}},
    }
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded["features"]["groups"][-1] == "Translocation"
    config["features"] = {"options": {"Translocation": {"gap": 1}}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="opt-in"):
        load_config(path)
    config["features"] = {"groups": ["Translocation"], "options": {"Translocation": {"width": 0}}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="width"):
        load_config(path)

"""AreaShape radii, Feret diameters and Zernike moments (cellstrata.measure.shape).

The references are CellProfiler's own implementations: centrosome (enclosing circle, convex
hull, Zernike polynomials) and cp_measure (CellProfiler's measurement functions as a library).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import CELLPROFILER_CHANNELS, cellprofiler_header
from skimage.measure import label as connected_components
from skimage.segmentation import expand_labels, relabel_sequential

from cellstrata.measure import shape
from cellstrata.measure.objects import CompartmentObjects
from cellstrata.singlecell.features import (
    AREASHAPE_FEATURES,
    COMPARTMENTS,
    feature_columns,
    measure_site,
)

centrosome_morphology = pytest.importorskip("centrosome.cpmorphology")
centrosome_zernike = pytest.importorskip("centrosome.zernike")
sizeshape = pytest.importorskip("cp_measure.core.measureobjectsizeshape")

NEW_FEATURES = (*shape.RADIUS_FEATURES, *shape.FERET_FEATURES, *shape.ZERNIKE_FEATURES)


def _shapes_site(seed: int) -> dict[str, np.ndarray]:
    """Touching, border-cut, concave and holed objects, labelled 1..N per compartment."""
    rng = np.random.default_rng(seed)
    shape_ = (90, 100)
    seeds = np.zeros(shape_, np.int32)
    seeds[rng.integers(0, shape_[0], 10), rng.integers(0, shape_[1], 10)] = np.arange(1, 11)
    nuclei = expand_labels(seeds, 5)
    cells = expand_labels(nuclei, 9)
    blobs = connected_components(rng.random(shape_) < 0.45, connectivity=1)
    sites = {
        "Nuclei": nuclei,
        "Cells": cells,
        "Cytoplasm": np.where(nuclei > 0, 0, cells),
        "blobs": np.where(np.bincount(blobs.ravel())[blobs] >= 3, blobs, 0),
    }
    return {name: relabel_sequential(labels)[0] for name, labels in sites.items()}


def _ours(labels: np.ndarray) -> dict[str, np.ndarray]:
    objects = CompartmentObjects("X", labels, np.arange(1, labels.max() + 1))
    return shape.measure_shape(objects)


def _centrosome_zernike(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CellProfiler's Zernike features, every pixel counted, and the pixels it drops.

    Returns the features with all pixels counted, CellProfiler's (``centrosome.zernike``),
    and per object the number of pixels CellProfiler leaves out because rounding puts them
    at ``r**2 > 1`` on the enclosing circle.
    """
    ids = np.arange(1, labels.max() + 1)
    indexes = centrosome_zernike.get_zernike_indexes(shape.ZERNIKE_N + 1)
    centers, radii = centrosome_morphology.minimum_enclosing_circle(labels, ids)
    yy, xx = np.nonzero(labels)
    row = labels[yy, xx] - 1
    ym = (yy - centers[row, 0]) / radii[row]
    xm = (xx - centers[row, 1]) / radii[row]
    dropped = np.bincount(row, weights=xm * xm + ym * ym > 1, minlength=ids.size)
    # Shrinking the coordinates by 1e-12 keeps every pixel inside the unit disk.
    basis = centrosome_zernike.construct_zernike_polynomials(
        xm * (1 - 1e-12), ym * (1 - 1e-12), indexes
    )
    real = np.stack([np.bincount(row, basis[:, k].real, ids.size) for k in range(len(indexes))])
    imag = np.stack([np.bincount(row, basis[:, k].imag, ids.size) for k in range(len(indexes))])
    all_pixels = (np.hypot(real, imag) / (np.pi * radii**2)).T
    cellprofiler = centrosome_zernike.zernike(indexes, labels, ids)
    return all_pixels, cellprofiler, dropped


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_areashape_names_equal_cellprofiler_header():
    header = cellprofiler_header()
    ours = feature_columns(CELLPROFILER_CHANNELS)
    for compartment in COMPARTMENTS:
        prefix = f"{compartment}_AreaShape_"
        theirs = {c for c in header if c.startswith(prefix)}
        assert len(theirs) == 55
        assert {c for c in ours if c.startswith(prefix)} == theirs


def test_column_order_and_zernike_option():
    columns = feature_columns(["DNA"], ["Nuclei"], groups=["AreaShape"])
    names = [c.removeprefix("Nuclei_AreaShape_") for c in columns]
    assert names == [*AREASHAPE_FEATURES, *shape.ZERNIKE_FEATURES]
    # CellProfiler's order: radii and Feret diameters follow Perimeter; Zernike last, by n, m.
    assert names[:7] == [
        "Area",
        "Perimeter",
        "MaximumRadius",
        "MeanRadius",
        "MedianRadius",
        "MinFeretDiameter",
        "MaxFeretDiameter",
    ]
    assert names[-30:][:4] == ["Zernike_0_0", "Zernike_1_1", "Zernike_2_0", "Zernike_2_2"]
    assert names[-1] == "Zernike_9_9"
    fast = feature_columns(
        ["DNA"], ["Nuclei"], groups=["AreaShape"], options={"AreaShape": {"zernike": False}}
    )
    assert fast == [c for c in columns if "Zernike" not in c]
    with pytest.raises(ValueError, match="zernike"):
        feature_columns(["DNA"], options={"AreaShape": {"zernike": "no"}})


# --------------------------------------------------------------------------------------------
# Agreement with CellProfiler's implementations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_radii_and_feret_match_cp_measure(seed):
    for name, labels in _shapes_site(seed).items():
        ours = _ours(labels)
        radii = sizeshape.get_sizeshape(labels, None, calculate_advanced=False, new_features=False)
        feret = sizeshape.get_feret(labels, None)
        for feature in shape.RADIUS_FEATURES:
            np.testing.assert_array_equal(ours[feature], radii[feature], err_msg=name)
        for feature in shape.FERET_FEATURES:
            np.testing.assert_allclose(
                ours[feature], feret[feature], rtol=1e-12, atol=1e-12, err_msg=name
            )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enclosing_circle_is_centrosomes_bit_for_bit(seed):
    for name, labels in _shapes_site(seed).items():
        ids = np.arange(1, labels.max() + 1)
        objects = CompartmentObjects(name, labels, ids)
        hulls = shape.convex_hulls(objects)
        chull, counts = centrosome_morphology.convex_hull(labels, ids)
        np.testing.assert_array_equal(np.concatenate(hulls), chull[:, 1:], err_msg=name)
        assert [len(h) for h in hulls] == counts.tolist()
        centers, radii = shape.enclosing_circles(hulls)
        expected_centers, expected_radii = centrosome_morphology.minimum_enclosing_circle(
            labels, ids
        )
        np.testing.assert_array_equal(centers, expected_centers, err_msg=name)
        np.testing.assert_array_equal(radii, expected_radii, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zernike_matches_cellprofiler(seed):
    dropped_any = 0
    for name, labels in _shapes_site(seed).items():
        measured = _ours(labels)
        ours = np.column_stack([measured[f] for f in shape.ZERNIKE_FEATURES])
        all_pixels, cellprofiler, dropped = _centrosome_zernike(labels)
        np.testing.assert_allclose(ours, cellprofiler, rtol=1e-9, atol=1e-10, err_msg=name)
        cp_measure = sizeshape.get_zernike(labels, None)
        for k, feature in enumerate(shape.ZERNIKE_FEATURES):
            np.testing.assert_allclose(ours[:, k], cp_measure[feature], rtol=1e-9, atol=1e-10)
        # The pixels CellProfiler drops are what separates it from the all-pixel sums.
        keep = dropped == 0
        np.testing.assert_allclose(ours[keep], all_pixels[keep], rtol=1e-9, atol=1e-10)
        dropped_any += int((~keep).sum())
    assert dropped_any > 0  # the rounding rule was exercised


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # cp_measure's FormFactor
def test_degenerate_objects_match_cellprofiler():
    labels = np.zeros((30, 40), np.int32)
    labels[2, 2] = 1  # one pixel
    labels[5, 5:10] = 2  # horizontal line
    labels[10:16, 3] = 3  # vertical line
    labels[np.arange(18, 24), np.arange(10, 16)] = 4  # diagonal line
    labels[2, 20:22] = 5  # two pixels
    labels[8, 20:22] = labels[9, 20] = 6  # L of three
    labels[12:15, 20:23] = 7  # 3 x 3 square
    labels[0:4, 30:40] = 8  # cut by the image border
    ours = _ours(labels)
    radii = sizeshape.get_sizeshape(labels, None, calculate_advanced=False, new_features=False)
    feret = sizeshape.get_feret(labels, None)
    zernike = sizeshape.get_zernike(labels, None)
    for feature in shape.RADIUS_FEATURES:
        np.testing.assert_array_equal(ours[feature], radii[feature])
    for feature in shape.FERET_FEATURES:
        np.testing.assert_allclose(ours[feature], feret[feature], rtol=1e-12)
    for feature in shape.ZERNIKE_FEATURES:
        # One pixel has no enclosing circle (radius 0): NaN, as in CellProfiler.
        np.testing.assert_allclose(ours[feature], zernike[feature], rtol=1e-9, atol=1e-10)
        assert np.isnan(ours[feature][0])
    assert ours["MaxFeretDiameter"][:4].tolist() == [0, 4, 5, pytest.approx(5 * math.sqrt(2))]
    assert ours["MinFeretDiameter"][:4].tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------------------------
# By hand, invariances, edge cases
# --------------------------------------------------------------------------------------------


def test_rectangle_by_hand():
    labels = np.zeros((12, 14), np.int32)
    labels[3:7, 4:9] = 1  # 4 rows x 5 columns, pixel centres span 3 x 4
    ours = _ours(labels)
    assert ours["MaxFeretDiameter"][0] == 5  # the 3-4-5 diagonal
    assert ours["MinFeretDiameter"][0] == 3
    # Padded distance transform: the two middle rows are 2 from the outside, the rest 1.
    assert ours["MaximumRadius"][0] == 2
    assert ours["MeanRadius"][0] == pytest.approx((14 * 1 + 6 * 2) / 20)
    assert ours["MedianRadius"][0] == 1
    # Z_00 counts the pixels: 20 / (pi * 2.5**2) with the enclosing circle through the corners.
    assert ours["Zernike_0_0"][0] == pytest.approx(20 / (math.pi * 2.5**2))
    # A shape symmetric under a half-turn has no odd-m moments.
    for n, m in shape.ZERNIKE_INDEXES:
        if m % 2:
            assert ours[f"Zernike_{n}_{m}"][0] == pytest.approx(0, abs=1e-12)


def test_radii_and_feret_invariant_under_quarter_turns_and_mirroring():
    # (Zernike values are too, up to the pixels CellProfiler's rounding drops, which differ.)
    labels = _shapes_site(3)["blobs"]
    reference = _ours(labels)
    for variant in (np.rot90(labels), labels.T, labels[::-1]):
        # Object numbering follows raster order, so compare the sorted values per feature.
        got = _ours(relabel_sequential(np.ascontiguousarray(variant))[0])
        for feature in (*shape.RADIUS_FEATURES, *shape.FERET_FEATURES):
            np.testing.assert_allclose(
                np.sort(got[feature]), np.sort(reference[feature]), rtol=1e-9, atol=1e-9
            )


def test_empty_site_and_absent_objects():
    labels = {c: np.zeros((16, 16), np.int32) for c in COMPARTMENTS}
    frame = measure_site(labels, {"DNA": np.ones((16, 16))})
    assert len(frame) == 0
    assert {f"Cells_AreaShape_{f}" for f in NEW_FEATURES} <= set(frame.columns)

    nuclei = np.zeros((20, 20), np.int32)
    nuclei[2:6, 2:6] = 1
    nuclei[10:14, 10:14] = 2
    cells = expand_labels(nuclei, 2)
    cytoplasm = np.where(nuclei > 0, 0, cells)
    cytoplasm[cytoplasm == 2] = 0  # object 2 has no cytoplasm
    site = ({"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cytoplasm}, {"DNA": np.ones((20, 20))})
    frame = measure_site(*site, groups=["AreaShape"])
    for feature in NEW_FEATURES:
        assert np.isnan(frame.loc[1, f"Cytoplasm_AreaShape_{feature}"])  # row 1 is object 2
        assert np.isfinite(frame.loc[0, f"Cytoplasm_AreaShape_{feature}"])
        assert np.isfinite(frame.loc[1, f"Cells_AreaShape_{feature}"])
    # Without Zernike features, the rest is unchanged.
    fast = measure_site(*site, groups=["AreaShape"], options={"AreaShape": {"zernike": False}})
    assert len(fast.columns) == len(frame.columns) - 3 * 30
    assert fast.equals(frame[fast.columns])


def test_single_pixel_object_through_measure_site():
    nuclei = np.zeros((8, 8), np.int32)
    nuclei[3, 3] = 5
    frame = measure_site({"Nuclei": nuclei}, {"DNA": np.ones((8, 8))}, compartments=("Nuclei",))
    row = frame.iloc[0]
    assert row["Nuclei_AreaShape_MaximumRadius"] == row["Nuclei_AreaShape_MedianRadius"] == 1
    assert row["Nuclei_AreaShape_MaxFeretDiameter"] == row["Nuclei_AreaShape_MinFeretDiameter"] == 0
    assert all(np.isnan(row[f"Nuclei_AreaShape_{f}"]) for f in shape.ZERNIKE_FEATURES)

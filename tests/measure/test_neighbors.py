"""Neighbors features (cellstrata.measure.neighbors): CellProfiler's MeasureObjectNeighbors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import CELLPROFILER_CHANNELS, cellprofiler_header
from skimage.segmentation import expand_labels, relabel_sequential

from cellstrata.measure import neighbors
from cellstrata.measure.objects import CompartmentObjects, Site
from cellstrata.singlecell.features import COMPARTMENTS, feature_columns, measure_site

ADJACENT = [f"Neighbors_{f}_Adjacent" for f in neighbors.NEIGHBOR_FEATURES]


def _layout() -> np.ndarray:
    """Four 4x4 squares: A|B share an edge, B and C touch at one corner, D is alone.

    Labels 1 (A), 2 (B), 3 (C), 7 (D); centroids (row, column) A (3.5, 3.5), B (3.5, 7.5),
    C (7.5, 11.5), D (15.5, 23.5).
    """
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 2:6] = 1
    labels[2:6, 6:10] = 2
    labels[6:10, 10:14] = 3
    labels[14:18, 22:26] = 7
    return labels


def _measure(labels: np.ndarray, distance: int = 0) -> dict[str, np.ndarray]:
    ids = np.unique(labels[labels > 0])
    objects = CompartmentObjects("Nuclei", labels, ids)
    return neighbors.measure_neighbors(objects, Site({}, {"Nuclei": objects.labels}), distance)


def _angle(v1, v2) -> float:
    return math.degrees(math.acos(np.dot(v1, v2) / (np.linalg.norm(v1) * np.linalg.norm(v2))))


def _random_labels(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    seeds = np.zeros((80, 90), np.int32)
    seeds[rng.integers(0, 80, 16), rng.integers(0, 90, 16)] = np.arange(1, 17)
    nuclei = expand_labels(seeds, 4)
    cells = expand_labels(nuclei, 7)  # touching, some cut by the border
    return {"Nuclei": relabel_sequential(nuclei)[0], "Cells": relabel_sequential(cells)[0]}


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_neighbors_names_equal_cellprofiler_header():
    # Nuclei and Cells, "Adjacent"; CellProfiler measured no Cytoplasm neighbours there.
    theirs = sorted(c for c in cellprofiler_header() if "_Neighbors_" in c)
    channels = CELLPROFILER_CHANNELS
    assert sorted(c for c in feature_columns(channels) if "_Neighbors_" in c) == theirs
    assert len(theirs) == 14


def test_columns_per_compartment_and_distance():
    assert feature_columns(["DNA"], ["Cytoplasm"], groups=["Neighbors"]) == []
    assert feature_columns(["DNA"], ["Nuclei", "Cytoplasm", "Cells"], groups=["Neighbors"]) == [
        *(f"Nuclei_{c}" for c in ADJACENT),
        *(f"Cells_{c}" for c in ADJACENT),
    ]
    within = feature_columns(
        ["DNA"], ["Cells"], groups=["Neighbors"], options={"Neighbors": {"distance": 5}}
    )
    assert within[0] == "Cells_Neighbors_NumberOfNeighbors_5"
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="distance"):
            feature_columns(["DNA"], groups=["Neighbors"], options={"Neighbors": {"distance": bad}})


# --------------------------------------------------------------------------------------------
# By hand
# --------------------------------------------------------------------------------------------


def test_hand_made_layout_adjacent():
    got = _measure(_layout())
    np.testing.assert_array_equal(got["Neighbors_NumberOfNeighbors_Adjacent"], [1, 1, 0, 0])
    # Outline of a 4x4 square: 12 pixels. A: its right column touches B. B: its left column,
    # plus its bottom-right corner, which is diagonal to C's top-left corner (touching, within
    # the 3x3 neighbourhood, but not adjacent: CellProfiler's Adjacent uses 4-connectivity).
    np.testing.assert_allclose(
        got["Neighbors_PercentTouching_Adjacent"], [400 / 12, 500 / 12, 100 / 12, 0]
    )
    centroid = {1: (3.5, 3.5), 2: (3.5, 7.5), 3: (7.5, 11.5), 7: (15.5, 23.5)}
    expected_order = {1: (2, 3), 2: (1, 3), 3: (2, 1), 7: (3, 2)}
    for row, (obj, (first, second)) in enumerate(expected_order.items()):
        here = np.array(centroid[obj])
        v1 = np.array(centroid[first]) - here
        v2 = np.array(centroid[second]) - here
        assert got["Neighbors_FirstClosestObjectNumber_Adjacent"][row] == first
        assert got["Neighbors_SecondClosestObjectNumber_Adjacent"][row] == second
        assert got["Neighbors_FirstClosestDistance_Adjacent"][row] == pytest.approx(
            np.linalg.norm(v1)
        )
        assert got["Neighbors_SecondClosestDistance_Adjacent"][row] == pytest.approx(
            np.linalg.norm(v2)
        )
        assert got["Neighbors_AngleBetweenNeighbors_Adjacent"][row] == pytest.approx(_angle(v1, v2))
    # e.g. A: B at 4 px, C at sqrt(80) px, 26.57 degrees apart; B: A and C at 135 degrees.
    assert got["Neighbors_AngleBetweenNeighbors_Adjacent"][1] == pytest.approx(135)


def test_hand_made_layout_within_distance():
    same = _measure(_layout(), distance=1)  # a disk of radius 1 is Adjacent's structuring element
    for suffix in neighbors.NEIGHBOR_FEATURES:
        np.testing.assert_array_equal(
            same[f"Neighbors_{suffix}_1"], _measure(_layout())[f"Neighbors_{suffix}_Adjacent"]
        )
    got = _measure(_layout(), distance=2)  # B and C now count: their corners are sqrt(2) apart
    np.testing.assert_array_equal(got["Neighbors_NumberOfNeighbors_2"], [1, 2, 1, 0])
    # Touching within 2.5 px: B's corner region and C's reach further in.
    assert (got["Neighbors_PercentTouching_2"][1:3] > [500 / 12, 100 / 12]).all()


def test_ties_go_to_the_lower_label():
    labels = np.zeros((11, 11), np.int32)
    labels[5, 5] = 4  # the centre; 9 and 2 are equally far, then 6 and 1
    labels[5, 8] = 9
    labels[2, 5] = 2
    labels[5, 0] = 6
    labels[10, 5] = 1
    got = _measure(labels)
    row = 2  # label 4 (rows are sorted labels 1, 2, 4, 6, 9)
    assert got["Neighbors_FirstClosestObjectNumber_Adjacent"][row] == 2
    assert got["Neighbors_SecondClosestObjectNumber_Adjacent"][row] == 9
    assert got["Neighbors_AngleBetweenNeighbors_Adjacent"][row] == pytest.approx(90)


# --------------------------------------------------------------------------------------------
# Agreement with CellProfiler (cp_measure's port of MeasureObjectNeighbors)
# --------------------------------------------------------------------------------------------


def _cellprofiler_closest(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CellProfiler's closest-object numbers: the full distance matrix, lexsorted."""
    ids = np.arange(1, labels.max() + 1)
    yy, xx = np.nonzero(labels)
    area = np.bincount(labels[yy, xx], minlength=ids.size + 1)[1:]
    cy = np.bincount(labels[yy, xx], yy, minlength=ids.size + 1)[1:] / area
    cx = np.bincount(labels[yy, xx], xx, minlength=ids.size + 1)[1:] / area
    distance = np.sqrt((cy[:, None] - cy[None]) ** 2 + (cx[:, None] - cx[None]) ** 2)
    order = np.lexsort([distance])
    return order[:, 1] + 1, order[:, 2] + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("distance", [0, 2, 7])
def test_matches_cp_measure(seed, distance):
    module = pytest.importorskip("cp_measure.multimask.measureobjectneighbors")
    for compartment, labels in _random_labels(seed).items():
        if distance == 0:
            expected = module.measureobjectneighbors(labels, labels, module.D_ADJACENT)
        else:
            expected = module.measureobjectneighbors(labels, labels, module.D_WITHIN, distance)
        got = _measure(labels, distance)
        scale = "Adjacent" if distance == 0 else str(distance)
        for feature in ("NumberOfNeighbors", "PercentTouching"):
            key = f"Neighbors_{feature}_{scale}"
            np.testing.assert_array_equal(got[key], expected[key], err_msg=compartment)
        for feature in ("FirstClosestDistance", "SecondClosestDistance", "AngleBetweenNeighbors"):
            key = f"Neighbors_{feature}_{scale}"
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, err_msg=compartment)
        # cp_measure 0.3.0 reports each object as its own FirstClosestObjectNumber (it takes
        # column 0 of the sorted distance matrix); CellProfiler takes columns 1 and 2.
        first, second = _cellprofiler_closest(labels)
        np.testing.assert_array_equal(got[f"Neighbors_FirstClosestObjectNumber_{scale}"], first)
        np.testing.assert_array_equal(got[f"Neighbors_SecondClosestObjectNumber_{scale}"], second)
        assert got[f"Neighbors_NumberOfNeighbors_{scale}"].any()  # contacts were exercised


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def test_few_objects_and_single_pixels():
    labels = np.zeros((10, 10), np.int32)
    labels[4, 4] = 3
    one = _measure(labels)
    assert one["Neighbors_NumberOfNeighbors_Adjacent"].tolist() == [0]
    assert one["Neighbors_PercentTouching_Adjacent"].tolist() == [0]
    # CellProfiler writes 0 where there is no closest object; we write NaN.
    assert np.isnan(one["Neighbors_FirstClosestDistance_Adjacent"]).all()
    labels[4, 5] = 8  # two single pixels side by side
    two = _measure(labels)
    assert two["Neighbors_NumberOfNeighbors_Adjacent"].tolist() == [1, 1]
    assert two["Neighbors_PercentTouching_Adjacent"].tolist() == [100, 100]
    assert two["Neighbors_FirstClosestObjectNumber_Adjacent"].tolist() == [8, 3]
    assert two["Neighbors_FirstClosestDistance_Adjacent"].tolist() == [1, 1]
    for feature in ("SecondClosestObjectNumber", "SecondClosestDistance", "AngleBetween"):
        key = next(k for k in two if feature in k)
        assert np.isnan(two[key]).all()


def test_measure_site_empty_absent_and_cytoplasm():
    shape_ = (20, 20)
    empty = {c: np.zeros(shape_, np.int32) for c in COMPARTMENTS}
    frame = measure_site(empty, {"DNA": np.ones(shape_)}, groups=["Neighbors"])
    assert list(frame.columns) == [
        "ObjectNumber",
        *(f"Nuclei_{c}" for c in ADJACENT),
        *(f"Cells_{c}" for c in ADJACENT),
    ]
    assert len(frame) == 0

    nuclei = np.zeros(shape_, np.int32)
    nuclei[2:5, 2:5] = 1
    nuclei[2:5, 8:11] = 2
    nuclei[12:15, 12:15] = 3
    cells = expand_labels(nuclei, 2)
    cells[cells == 3] = 0  # nucleus 3 has no cell: no row, and no cell neighbour of the others
    cytoplasm = np.where(nuclei > 0, 0, cells)
    frame = measure_site(
        {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cytoplasm},
        {"DNA": np.ones(shape_)},
        groups=["Neighbors"],
    ).set_index("ObjectNumber")
    assert frame.index.tolist() == [1, 2]
    assert frame.loc[[1, 2], "Cells_Neighbors_FirstClosestObjectNumber_Adjacent"].tolist() == [2, 1]
    assert frame.loc[[1, 2], "Cells_Neighbors_SecondClosestObjectNumber_Adjacent"].isna().all()
    assert frame.loc[[1, 2], "Cells_Neighbors_NumberOfNeighbors_Adjacent"].tolist() == [1, 1]
    assert frame.loc[1, "Nuclei_Neighbors_SecondClosestObjectNumber_Adjacent"] == 3

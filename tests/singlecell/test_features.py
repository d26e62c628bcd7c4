"""Tests for cellstrata.singlecell.features: CellProfiler-named AreaShape / Intensity / Location
features."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import skimage.measure
from conftest import CELLPROFILER_CHANNELS, cellprofiler_header, shared
from scipy import ndimage
from skimage.segmentation import expand_labels

from cellstrata.measure import shape
from cellstrata.singlecell import features
from cellstrata.singlecell.features import (
    COMPARTMENTS,
    FeatureGroup,
    feature_columns,
    measure_site,
)

# --------------------------------------------------------------------------------------------
# A tiny hand-checkable site
# --------------------------------------------------------------------------------------------
#
# Object 1: nucleus = 4x5 rectangle rows 3..6, cols 4..8 (area 20) inside a 7x10 cell
#           rows 2..8, cols 2..11 (area 70) -> cytoplasm = 50-pixel ring.
# Object 2: nucleus = disc of radius 3 at (15, 20) inside a disc cell of radius 5.
# Object 3: nucleus fills the cell (3x3 square at rows 14..16, cols 3..5) -> empty cytoplasm.
# DNA = 1..20 in raster order over nucleus 1 and 1.0 elsewhere; AGP = constant 2.


def _site() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    shape = (20, 30)
    nuclei = np.zeros(shape, np.int32)
    cells = np.zeros(shape, np.int32)
    cells[2:9, 2:12] = 1
    nuclei[3:7, 4:9] = 1
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - 15) ** 2 + (xx - 20) ** 2
    cells[r2 <= 25] = 2
    nuclei[r2 <= 9] = 2
    cells[14:17, 3:6] = 3
    nuclei[14:17, 3:6] = 3
    cyto = np.where(nuclei > 0, 0, cells)
    dna = np.ones(shape)
    dna[3:7, 4:9] = np.arange(1, 21).reshape(4, 5)
    agp = np.full(shape, 2.0)
    return {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}, {"DNA": dna, "AGP": agp}


@pytest.fixture(scope="module")
def site_frame() -> pd.DataFrame:
    labels, images = _site()
    return measure_site(labels, images).set_index("ObjectNumber")


def test_rectangle_areashape_by_hand(site_frame):
    row = site_frame.loc[1]
    assert row["Nuclei_AreaShape_Area"] == 20
    assert row["Nuclei_AreaShape_BoundingBoxMinimum_X"] == 4
    assert row["Nuclei_AreaShape_BoundingBoxMinimum_Y"] == 3
    # CellProfiler (skimage) bounding-box maxima are exclusive.
    assert row["Nuclei_AreaShape_BoundingBoxMaximum_X"] == 9
    assert row["Nuclei_AreaShape_BoundingBoxMaximum_Y"] == 7
    assert row["Nuclei_AreaShape_BoundingBoxArea"] == 20
    assert row["Nuclei_AreaShape_Extent"] == 1
    assert row["Nuclei_AreaShape_Solidity"] == 1
    assert row["Nuclei_AreaShape_ConvexArea"] == 20
    assert row["Nuclei_AreaShape_EulerNumber"] == 1
    assert row["Nuclei_AreaShape_Center_X"] == 6  # x is the column
    assert row["Nuclei_AreaShape_Center_Y"] == 4.5
    assert row["Nuclei_Location_Center_X"] == 6
    assert row["Nuclei_Location_Center_Y"] == 4.5
    # skimage's 4-neighbourhood perimeter of a filled h x w box is 2 * (h - 1 + w - 1).
    assert row["Nuclei_AreaShape_Perimeter"] == 14
    assert row["Nuclei_AreaShape_FormFactor"] == pytest.approx(4 * math.pi * 20 / 14**2, rel=1e-6)
    assert row["Nuclei_AreaShape_Compactness"] == pytest.approx(14**2 / (4 * math.pi * 20), 1e-6)
    assert row["Nuclei_AreaShape_EquivalentDiameter"] == pytest.approx(math.sqrt(80 / math.pi))
    # Column variance 2, row variance 1.25 -> axes 4*sqrt(2), 4*sqrt(1.25); wider than tall,
    # so the major axis is perpendicular to the row axis: |Orientation| = 90 degrees.
    assert row["Nuclei_AreaShape_MajorAxisLength"] == pytest.approx(4 * math.sqrt(2), 1e-6)
    assert row["Nuclei_AreaShape_MinorAxisLength"] == pytest.approx(4 * math.sqrt(1.25), 1e-6)
    assert row["Nuclei_AreaShape_Eccentricity"] == pytest.approx(math.sqrt(1 - 1.25 / 2), 1e-6)
    assert abs(row["Nuclei_AreaShape_Orientation"]) == pytest.approx(90)
    # The cytoplasm ring has one hole.
    assert row["Cytoplasm_AreaShape_EulerNumber"] == 0
    assert row["Cytoplasm_AreaShape_Area"] == 50


def test_disc_is_round(site_frame):
    row = site_frame.loc[2]
    assert row["Nuclei_AreaShape_Area"] == 29  # lattice points with dy^2 + dx^2 <= 9
    assert row["Nuclei_AreaShape_Center_X"] == 20
    assert row["Nuclei_AreaShape_Center_Y"] == 15
    assert row["Nuclei_AreaShape_Eccentricity"] == pytest.approx(0, abs=1e-3)
    assert row["Nuclei_AreaShape_MajorAxisLength"] == pytest.approx(
        row["Nuclei_AreaShape_MinorAxisLength"]
    )
    assert 0.85 < row["Nuclei_AreaShape_FormFactor"] <= 1.2


def test_rectangle_intensity_by_hand(site_frame):
    row = site_frame.loc[1]
    values = np.arange(1, 21, dtype=float)
    assert row["Nuclei_Intensity_IntegratedIntensity_DNA"] == 210
    assert row["Nuclei_Intensity_MeanIntensity_DNA"] == 10.5
    assert row["Nuclei_Intensity_StdIntensity_DNA"] == pytest.approx(values.std(), 1e-6)
    assert row["Nuclei_Intensity_MinIntensity_DNA"] == 1
    assert row["Nuclei_Intensity_MaxIntensity_DNA"] == 20
    # CellProfiler takes sorted value at 0-based position n*q (n = 20): 5 -> 6, 10 -> 11, 15 -> 16.
    assert row["Nuclei_Intensity_LowerQuartileIntensity_DNA"] == 6
    assert row["Nuclei_Intensity_MedianIntensity_DNA"] == 11
    assert row["Nuclei_Intensity_UpperQuartileIntensity_DNA"] == 16
    # |v - 11| sorted = 0,1,1,2,2,3,3,4,4,5,5,... -> position 10 is 5.
    assert row["Nuclei_Intensity_MADIntensity_DNA"] == 5
    # Edge = the 14-pixel ring of the 4x5 box; interior values are 7,8,9,12,13,14.
    edge_sum = 210 - (7 + 8 + 9 + 12 + 13 + 14)
    assert row["Nuclei_Intensity_IntegratedIntensityEdge_DNA"] == edge_sum
    assert row["Nuclei_Intensity_MeanIntensityEdge_DNA"] == pytest.approx(edge_sum / 14)
    assert row["Nuclei_Intensity_MinIntensityEdge_DNA"] == 1
    assert row["Nuclei_Intensity_MaxIntensityEdge_DNA"] == 20
    edge_values = np.array([1, 2, 3, 4, 5, 6, 10, 11, 15, 16, 17, 18, 19, 20], float)
    assert row["Nuclei_Intensity_StdIntensityEdge_DNA"] == pytest.approx(edge_values.std(), 1e-6)
    # Intensity centroid vs. binary centroid (6, 4.5).
    yy, xx = np.mgrid[3:7, 4:9]
    w = np.arange(1, 21).reshape(4, 5)
    cmx, cmy = (xx * w).sum() / 210, (yy * w).sum() / 210
    assert row["Nuclei_Location_CenterMassIntensity_X_DNA"] == pytest.approx(cmx, 1e-6)
    assert row["Nuclei_Location_CenterMassIntensity_Y_DNA"] == pytest.approx(cmy, 1e-6)
    assert row["Nuclei_Intensity_MassDisplacement_DNA"] == pytest.approx(
        math.hypot(cmx - 6, cmy - 4.5), 1e-5
    )
    assert row["Nuclei_Location_MaxIntensity_X_DNA"] == 8
    assert row["Nuclei_Location_MaxIntensity_Y_DNA"] == 6
    # Constant channel: no spread, no displacement.
    assert row["Cells_Intensity_MeanIntensity_AGP"] == 2
    assert row["Cells_Intensity_StdIntensity_AGP"] == 0
    assert row["Cells_Intensity_MADIntensity_AGP"] == 0
    assert row["Cells_Intensity_MassDisplacement_AGP"] == pytest.approx(0, abs=1e-5)


def test_tiny_objects_follow_cellprofiler_edge_cases():
    shape = (8, 10)
    nuclei = np.zeros(shape, np.int32)
    nuclei[2, 2] = 1  # a single pixel
    nuclei[5, 4:7] = 2  # three pixels, values 1, 2, 3
    image = np.zeros(shape)
    image[2, 2] = 4.0
    image[5, 4:7] = [3.0, 1.0, 2.0]
    frame = measure_site({"Nuclei": nuclei}, {"DNA": image}, compartments=("Nuclei",)).set_index(
        "ObjectNumber"
    )
    one, three = frame.loc[1], frame.loc[2]
    for feature in ("Min", "Max", "Median", "LowerQuartile", "UpperQuartile", "Mean"):
        assert one[f"Nuclei_Intensity_{feature}Intensity_DNA"] == 4
    assert one["Nuclei_Intensity_StdIntensity_DNA"] == 0
    assert one["Nuclei_Intensity_MADIntensity_DNA"] == 0
    # Zero perimeter: CellProfiler's FormFactor would be infinite; we report NaN.
    assert one["Nuclei_AreaShape_Perimeter"] == 0
    assert np.isnan(one["Nuclei_AreaShape_FormFactor"])
    assert one["Nuclei_AreaShape_Compactness"] == 0
    # n = 3: positions 0.75, 1.5, 2.25 of the sorted values 1, 2, 3; the last has no upper
    # neighbour, so CellProfiler takes the value at index 2.
    assert three["Nuclei_Intensity_LowerQuartileIntensity_DNA"] == 1.75
    assert three["Nuclei_Intensity_MedianIntensity_DNA"] == 2.5
    assert three["Nuclei_Intensity_UpperQuartileIntensity_DNA"] == 3
    # |v - 2.5| = 0.5, 1.5, 0.5 -> sorted 0.5, 0.5, 1.5 -> position 1.5 -> 1.0
    assert three["Nuclei_Intensity_MADIntensity_DNA"] == 1.0
    assert three["Nuclei_Location_MaxIntensity_X_DNA"] == 4


def test_pycytominer_infers_exactly_our_features():
    cyto_utils = pytest.importorskip("pycytominer.cyto_utils")
    labels, images = _site()
    frame = measure_site(labels, images)
    assert cyto_utils.infer_cp_features(frame) == feature_columns(list(images))


def test_compartments_are_consistent(site_frame):
    both = site_frame.loc[[1, 2]]
    np.testing.assert_array_equal(
        both["Cells_AreaShape_Area"],
        both["Nuclei_AreaShape_Area"] + both["Cytoplasm_AreaShape_Area"],
    )
    for channel in ("DNA", "AGP"):
        np.testing.assert_allclose(
            both[f"Cells_Intensity_IntegratedIntensity_{channel}"],
            both[f"Nuclei_Intensity_IntegratedIntensity_{channel}"]
            + both[f"Cytoplasm_Intensity_IntegratedIntensity_{channel}"],
            rtol=1e-6,
        )
    assert (both["Cells_AreaShape_Area"] > both["Nuclei_AreaShape_Area"]).all()


def test_empty_cytoplasm_is_nan_not_error(site_frame):
    row = site_frame.loc[3]
    cyto = row[[c for c in site_frame.columns if c.startswith("Cytoplasm_")]]
    assert cyto.isna().all()
    # A 3x3 object has no pixel pairs 3 px apart: its texture is NaN, as in CellProfiler.
    # AGP is constant: correlations with it (Pearson, Costes) are undefined (NaN) for all.
    undefined = ("_Texture_", "_Correlation_Correlation_", "_Correlation_Costes_")
    others = row[
        [
            c
            for c in site_frame.columns
            if not c.startswith("Cytoplasm_") and not any(u in c for u in undefined)
        ]
    ]
    assert others.notna().all()
    assert row["Cells_AreaShape_Area"] == row["Nuclei_AreaShape_Area"] == 9


def test_schema_and_dtypes(site_frame):
    frame = site_frame.reset_index()
    expected = ["ObjectNumber", *feature_columns(["DNA", "AGP"])]
    assert list(frame.columns) == expected
    assert frame["ObjectNumber"].dtype == np.int64
    assert (frame.dtypes.iloc[1:] == np.float32).all()
    assert frame["ObjectNumber"].tolist() == [1, 2, 3]
    # Per compartment: 55 AreaShape, 2 Location, 10 Correlation (one channel pair), and per
    # channel 19 (15 Intensity + 4 Location), 13 Haralick x 4 directions (scale 3),
    # 16 Granularity, 42 RadialDistribution (3 x 4 bins + 30 Zernike); + 7 Neighbors for
    # Nuclei and Cells.
    assert len(expected) - 1 == 3 * (55 + 2 + 10 + (19 + 13 * 4 + 16 + 42) * 2) + 2 * 7
    assert len(set(expected)) == len(expected)


def test_zero_objects_gives_full_schema():
    shape = (16, 16)
    labels = {c: np.zeros(shape, np.uint16) for c in COMPARTMENTS}
    images = {"DNA": np.zeros(shape), "RNA": np.ones(shape, np.float32)}
    frame = measure_site(labels, images)
    assert len(frame) == 0
    assert list(frame.columns) == ["ObjectNumber", *feature_columns(["DNA", "RNA"])]
    assert frame["ObjectNumber"].dtype == np.int64
    assert (frame.dtypes.iloc[1:] == np.float32).all()


def test_object_number_matches_labels():
    shape = (30, 30)
    nuclei = np.zeros(shape, np.int64)
    for label, (y, x, size) in {9: (3, 3, 3), 2: (10, 20, 4), 5: (22, 8, 2)}.items():
        nuclei[y : y + size, x : x + size] = label
    cells = expand_labels(nuclei, 2)
    cyto = np.where(nuclei > 0, 0, cells)
    labels = {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}
    # Any integer label dtype works, including unsigned 64-bit.
    labels = {k: v.astype(np.uint64) for k, v in labels.items()}
    frame = measure_site(labels, {"DNA": np.ones(shape, np.uint16)})
    assert frame["ObjectNumber"].tolist() == [2, 5, 9]
    assert frame["ObjectNumber"].dtype == np.int64
    assert frame["Nuclei_AreaShape_Area"].tolist() == [16, 4, 9]
    assert frame["Nuclei_AreaShape_BoundingBoxMinimum_X"].tolist() == [20, 8, 3]


def test_cell_without_nucleus_is_ignored():
    labels, images = _site()
    labels["Cells"] = labels["Cells"].copy()
    labels["Cells"][0, 20:25] = 7  # a cell with no nucleus is not an object
    frame = measure_site(labels, images)
    assert frame["ObjectNumber"].tolist() == [1, 2, 3]


def test_subset_of_compartments_and_groups():
    labels, images = _site()
    frame = measure_site(labels, images, compartments=("Nuclei",), groups=("AreaShape",))
    assert list(frame.columns) == [
        "ObjectNumber",
        *feature_columns(["DNA", "AGP"], ["Nuclei"], groups=["AreaShape"]),
    ]
    assert all(c.startswith("Nuclei_AreaShape_") for c in frame.columns[1:])


def test_unknown_compartment_key_is_named():
    labels, images = _site()
    labels["Cell"] = labels.pop("Cells")
    with pytest.raises(ValueError, match="'Cell'"):
        measure_site(labels, images)
    with pytest.raises(ValueError, match="'Organelle'"):
        feature_columns(["DNA"], ["Nuclei", "Organelle"])


def test_missing_compartment_is_named():
    labels, images = _site()
    del labels["Cytoplasm"]
    with pytest.raises(ValueError, match="'Cytoplasm'"):
        measure_site(labels, images)


def test_mismatched_image_shape_names_channel():
    labels, images = _site()
    images["Mito"] = np.zeros((10, 10))
    with pytest.raises(ValueError, match="'Mito'"):
        measure_site(labels, images)


def test_mismatched_label_shape_and_dtype():
    labels, images = _site()
    bad = dict(labels, Cells=labels["Cells"][:10])
    with pytest.raises(ValueError, match="'Cells'"):
        measure_site(bad, images)
    bad = dict(labels, Cells=labels["Cells"].astype(float))
    with pytest.raises(TypeError, match="'Cells'"):
        measure_site(bad, images)


def test_registered_group_plugs_in(monkeypatch):
    def columns(channels):
        return [f"Dummy_Count_{c}" for c in channels]

    def measure(objects, site):
        return {f"Dummy_Count_{c}": objects.counts.astype(float) for c in site.images}

    monkeypatch.setitem(features.FEATURE_GROUPS, "Dummy", FeatureGroup("Dummy", columns, measure))
    labels, images = _site()
    cols = feature_columns(["DNA"], ["Nuclei"])
    assert cols[-1] == "Nuclei_Dummy_Count_DNA"
    frame = measure_site(labels, {"DNA": images["DNA"]}).set_index("ObjectNumber")
    assert frame.loc[1, "Cells_Dummy_Count_DNA"] == 70
    assert np.isnan(frame.loc[3, "Cytoplasm_Dummy_Count_DNA"])
    with pytest.raises(ValueError, match="already registered"):
        features.register_feature_group(FeatureGroup("Dummy", columns, measure))


# --------------------------------------------------------------------------------------------
# Agreement with CellProfiler's algorithms on random, touching, border-cut objects
# --------------------------------------------------------------------------------------------


def _random_site(seed: int = 0, shape: tuple[int, int] = (48, 56), n: int = 12):
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    seeds[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = np.arange(1, n + 1)
    nuclei = expand_labels(seeds, 3)
    cells = expand_labels(nuclei, 6)  # touching cells, some cut by the image border
    image = rng.gamma(2.0, 1.0, shape)
    return nuclei, cells, image


def _cp_outline(labels):
    """centrosome.outline.outline, verbatim algorithm."""
    different = np.zeros(labels.shape, bool)
    lr = labels[1:, :] != labels[:-1, :]
    ud = labels[:, 1:] != labels[:, :-1]
    d1 = labels[1:, 1:] != labels[:-1, :-1]
    d2 = labels[1:, :-1] != labels[:-1, 1:]
    different[1:, :][lr] = different[:-1, :][lr] = True
    different[:, 1:][ud] = different[:, :-1][ud] = True
    different[1:, 1:][d1] = different[:-1, :-1][d1] = True
    different[1:, :-1][d2] = different[:-1, 1:][d2] = True
    different[0, :] = different[:, 0] = different[-1, :] = different[:, -1] = True
    return np.where(different, labels, 0)


def _cp_measure_object_intensity(labels, img):
    """Port of CellProfiler MeasureObjectIntensity.run for one image / object set."""
    lindexes = np.unique(labels[labels > 0])
    lmask = labels > 0
    limg, llabels = img[lmask], labels[lmask]
    mesh_y, mesh_x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    mesh_x, mesh_y = mesh_x[lmask], mesh_y[lmask]
    lcount = ndimage.sum(np.ones(len(limg)), llabels, lindexes)
    out = {}
    integ = ndimage.sum(limg, llabels, lindexes)
    mean = integ / lcount
    lut = np.zeros(labels.max() + 1)
    lut[lindexes] = mean
    out["IntegratedIntensity"] = integ
    out["MeanIntensity"] = mean
    out["StdIntensity"] = np.sqrt(ndimage.mean((limg - lut[llabels]) ** 2, llabels, lindexes))
    out["MinIntensity"] = ndimage.minimum(limg, llabels, lindexes)
    out["MaxIntensity"] = ndimage.maximum(limg, llabels, lindexes)
    cm_x = ndimage.mean(mesh_x, llabels, lindexes)
    cm_y = ndimage.mean(mesh_y, llabels, lindexes)
    cmi_x = ndimage.sum(mesh_x * limg, llabels, lindexes) / integ
    cmi_y = ndimage.sum(mesh_y * limg, llabels, lindexes) / integ
    out["MassDisplacement"] = np.sqrt((cm_x - cmi_x) ** 2 + (cm_y - cmi_y) ** 2)
    order = np.lexsort((limg, llabels))
    areas = lcount.astype(int)
    indices = np.cumsum(areas) - areas
    for name, fraction in (
        ("LowerQuartileIntensity", 0.25),
        ("MedianIntensity", 0.5),
        ("UpperQuartileIntensity", 0.75),
    ):
        dest = np.zeros(len(lindexes))
        qindex = indices.astype(float) + areas * fraction
        qfraction = qindex - np.floor(qindex)
        qindex = qindex.astype(int)
        qmask = qindex < indices + areas - 1
        qi, qf = qindex[qmask], qfraction[qmask]
        dest[qmask] = limg[order[qi]] * (1 - qf) + limg[order[qi + 1]] * qf
        qmask = (~qmask) & (areas > 0)
        dest[qmask] = limg[order[qindex[qmask]]]
        out[name] = dest
    lut[lindexes] = out["MedianIntensity"]
    madimg = np.abs(limg - lut[llabels])
    order = np.lexsort((madimg, llabels))
    qindex = indices.astype(float) + areas / 2.0
    qfraction = qindex - np.floor(qindex)
    qindex = qindex.astype(int)
    qmask = qindex < indices + areas - 1
    mad = np.zeros(len(lindexes))
    qi, qf = qindex[qmask], qfraction[qmask]
    mad[qmask] = madimg[order[qi]] * (1 - qf) + madimg[order[qi + 1]] * qf
    qmask = (~qmask) & (areas > 0)
    mad[qmask] = madimg[order[qindex[qmask]]]
    out["MADIntensity"] = mad
    emask = _cp_outline(labels) > 0
    eimg, elabels = img[emask], labels[emask]
    ecount = ndimage.sum(np.ones(len(eimg)), elabels, lindexes)
    esum = ndimage.sum(eimg, elabels, lindexes)
    lut[lindexes] = esum / ecount
    out["IntegratedIntensityEdge"] = esum
    out["MeanIntensityEdge"] = esum / ecount
    out["StdIntensityEdge"] = np.sqrt(ndimage.mean((eimg - lut[elabels]) ** 2, elabels, lindexes))
    out["MinIntensityEdge"] = ndimage.minimum(eimg, elabels, lindexes)
    out["MaxIntensityEdge"] = ndimage.maximum(eimg, elabels, lindexes)
    pos = np.array(ndimage.maximum_position(img, labels, lindexes))
    loc = {
        "CenterMassIntensity_X": cmi_x,
        "CenterMassIntensity_Y": cmi_y,
        "MaxIntensity_X": pos[:, 1],
        "MaxIntensity_Y": pos[:, 0],
    }
    return out, loc


@pytest.mark.parametrize("seed", [0, 1])
def test_intensity_matches_cellprofiler_algorithm(seed):
    nuclei, cells, image = _random_site(seed)
    # Exercise CellProfiler's rule that the image border is an object edge.
    assert cells[0].any() and cells[-1].any() and cells[:, 0].any() and cells[:, -1].any()
    cyto = np.where(nuclei > 0, 0, cells)
    frame = measure_site(
        {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}, {"DNA": image}
    ).set_index("ObjectNumber")
    for comp, labels in (("Nuclei", nuclei), ("Cells", cells), ("Cytoplasm", cyto)):
        ids = np.unique(labels[labels > 0])
        expected, location = _cp_measure_object_intensity(labels, image)
        for feature in features.INTENSITY_FEATURES:
            got = frame.loc[ids, f"{comp}_Intensity_{feature}_DNA"].to_numpy()
            np.testing.assert_allclose(got, expected[feature], rtol=1e-5, err_msg=feature)
        for feature, value in location.items():
            got = frame.loc[ids, f"{comp}_Location_{feature}_DNA"].to_numpy()
            np.testing.assert_allclose(got, value, rtol=1e-5, err_msg=feature)


@pytest.mark.parametrize("seed", [0, 1])
def test_areashape_matches_regionprops(seed):
    nuclei, cells, _ = _random_site(seed)
    cyto = np.where(nuclei > 0, 0, cells)
    frame = measure_site({"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}, {}).set_index(
        "ObjectNumber"
    )
    for comp, labels in (("Nuclei", nuclei), ("Cells", cells), ("Cytoplasm", cyto)):
        props = skimage.measure.regionprops_table(
            labels,
            properties=(
                "label", "area", "perimeter", "bbox", "area_bbox", "axis_major_length",
                "axis_minor_length", "orientation", "centroid", "equivalent_diameter_area",
                "extent", "eccentricity", "area_convex", "solidity", "euler_number",
            ),
        )  # fmt: skip
        got = frame.loc[props["label"]]
        # The exact mapping of CellProfiler's MeasureObjectSizeShape.analyze_objects.
        expected = {
            "Area": props["area"],
            "Perimeter": props["perimeter"],
            "FormFactor": 4 * np.pi * props["area"] / props["perimeter"] ** 2,
            "Compactness": props["perimeter"] ** 2 / np.maximum(4 * np.pi * props["area"], 1),
            "MajorAxisLength": props["axis_major_length"],
            "MinorAxisLength": props["axis_minor_length"],
            "Eccentricity": props["eccentricity"],
            "Orientation": props["orientation"] * (180 / np.pi),
            "Center_X": props["centroid-1"],
            "Center_Y": props["centroid-0"],
            "BoundingBoxArea": props["area_bbox"],
            "BoundingBoxMinimum_X": props["bbox-1"],
            "BoundingBoxMaximum_X": props["bbox-3"],
            "BoundingBoxMinimum_Y": props["bbox-0"],
            "BoundingBoxMaximum_Y": props["bbox-2"],
            "Extent": props["extent"],
            "Solidity": props["solidity"],
            "ConvexArea": props["area_convex"],
            "EulerNumber": props["euler_number"],
            "EquivalentDiameter": props["equivalent_diameter_area"],
        }
        # Radii and Feret diameters: tests/test_features_shape.py.
        assert set(expected) | {*shape.RADIUS_FEATURES, *shape.FERET_FEATURES} == set(
            features.AREASHAPE_FEATURES
        )
        assert (np.abs(got[f"{comp}_AreaShape_Orientation"]) <= 90).all()
        # An axis at +90 degrees is the same line as at -90: for mirror-symmetric objects
        # skimage's sign comes from 1e-14 round-off in mu11, so compare modulo 180.
        turn = got[f"{comp}_AreaShape_Orientation"].to_numpy() - expected.pop("Orientation")
        np.testing.assert_allclose((turn + 90) % 180 - 90, 0, atol=1e-3)
        for feature, value in expected.items():
            np.testing.assert_allclose(
                got[f"{comp}_AreaShape_{feature}"], value, rtol=1e-5, atol=1e-4, err_msg=feature
            )


# --------------------------------------------------------------------------------------------
# Names match real CellProfiler output
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_names_match_cellprofiler_csv():
    path = shared("cellprofiler_outputs", "ExampleHuman", "Nuclei.csv")
    header = set(pd.read_csv(path, nrows=0).columns)
    ours = [c.removeprefix("Nuclei_") for c in feature_columns(["DNA", "PH3"], ["Nuclei"])]
    # ConvexArea was added in CellProfiler 4.1; this file was written by 4.0.6, by a pipeline
    # that measured only size/shape and intensity.
    unmeasured = ("Neighbors_", "Texture_", "Granularity_", "Correlation_", "RadialDistribution_")
    missing = [
        c
        for c in ours
        if c not in header and c != "AreaShape_ConvexArea" and not c.startswith(unmeasured)
    ]
    assert missing == []
    for name in ("AreaShape_FormFactor", "Intensity_MADIntensity_DNA", "Location_Center_X"):
        assert name in header and name in ours


@pytest.mark.realdata
def test_names_match_cytotable_parquet():
    header = set(cellprofiler_header())
    ours = feature_columns(CELLPROFILER_CHANNELS)
    assert [c for c in ours if c not in header] == []
    assert "Cells_Intensity_MeanIntensity_CorrAGP" in ours


def test_sparse_huge_label_values():
    labels, images = _site()
    big = {k: np.where(v > 0, v.astype(np.int64) * 10**12, 0) for k, v in labels.items()}
    expected = measure_site(labels, images)
    got = measure_site(big, images)
    assert got["ObjectNumber"].tolist() == [10**12, 2 * 10**12, 3 * 10**12]
    # Neighbour object numbers are labels too (float32, so only approximately 1e12 * k).
    numbers = [c for c in expected.columns if c.endswith("ObjectNumber_Adjacent")]
    np.testing.assert_allclose(got[numbers], expected[numbers] * 10**12, rtol=1e-6)
    pd.testing.assert_frame_equal(
        got.drop(columns=numbers).iloc[:, 1:], expected.drop(columns=numbers).iloc[:, 1:]
    )


def test_group_options_are_checked_and_timings_recorded():
    labels, images = _site()
    with pytest.raises(ValueError, match="AreaShape: unknown option"):
        measure_site(labels, images, options={"AreaShape": {"scales": [3]}})
    with pytest.raises(ValueError, match="not measured"):
        measure_site(labels, images, groups=["AreaShape"], options={"Intensity": {}})
    timings = {}
    measure_site(labels, images, groups=["AreaShape", "Intensity"], timings=timings)
    assert set(timings) == {"AreaShape", "Intensity"}
    assert all(t > 0 for t in timings.values())


def test_nucleus_without_cell_is_no_object():
    # segment_cells(remove_border=True) discards a cell and keeps its nucleus: as in
    # CellProfiler's tables joined by CytoTable, that nucleus is no row.
    labels, images = _site()
    labels = {k: np.where(v == 2, 0, v) if k != "Nuclei" else v for k, v in labels.items()}
    frame = measure_site(labels, images)
    assert frame["ObjectNumber"].tolist() == [1, 3]
    # Nuclei alone: every nucleus is an object.
    frame = measure_site({"Nuclei": labels["Nuclei"]}, images, compartments=["Nuclei"])
    assert frame["ObjectNumber"].tolist() == [1, 2, 3]

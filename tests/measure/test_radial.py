"""RadialDistribution (MeasureObjectIntensityDistribution): names, cp_measure agreement, edges.

cp_measure 0.3.0 (CellProfiler's code on whole-image arrays, centrosome's ``propagate`` and
``distance_to_edge``) is the reference. The synthetic compartments cover what makes the
geometry hard: touching objects, objects cut by the image border, concave cells and
cytoplasm rings (whose path lengths from the centre are not straight-line distances), an
object in two pieces (the piece without the centre is left out) and single pixels.
"""

from __future__ import annotations

import centrosome.cpmorphology
import centrosome.propagate
import numpy as np
import pytest
import scipy.ndimage
from conftest import cellprofiler_header
from skimage.segmentation import expand_labels

from cellstrata.measure import radial
from cellstrata.measure.objects import CompartmentObjects, Site
from cellstrata.measure.shape import ZERNIKE_INDEXES
from cellstrata.singlecell.features import feature_columns, measure_site

CHANNELS = ["CorrAGP", "CorrBrightfield", "CorrDNA", "CorrER", "CorrMito", "CorrRNA"]


def _compartments() -> dict[str, np.ndarray]:
    """Nuclei, touching cells grown from them (two cut by the border) and cytoplasm rings."""
    rng = np.random.default_rng(7)
    shape = (100, 110)
    nuclei = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centers = [(12, 15), (20, 60), (50, 30), (55, 80), (85, 55), (3, 100), (90, 5)]
    for label, (cy, cx) in enumerate(centers, start=1):
        ry, rx = rng.uniform(4, 8, 2)
        nuclei[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = label
    cells = expand_labels(nuclei, 16)
    # Concave, ragged outlines.
    rough = scipy.ndimage.gaussian_filter(rng.random(shape), 2)
    cells[(rough < np.quantile(rough, 0.25)) & (nuclei == 0)] = 0
    cells[40:60, 28:31] = 0  # a slit, so paths must go around it
    cells[95:, 60:70] = 8  # an extra object in two pieces
    cells[70:73, 100:106] = 8
    nuclei[96:99, 62:66] = 8
    cells[30, 100] = 9  # single pixels
    nuclei[30, 100] = 9
    cytoplasm = np.where(nuclei > 0, 0, cells)
    return {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cytoplasm}


def _images(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ramp = (yy + 2 * xx) / (shape[0] + 2 * shape[1])
    dots = scipy.ndimage.gaussian_filter((rng.random(shape) > 0.97).astype(float), 1.5)
    noise = rng.random(shape)
    images = {"Ramp": ramp, "Dots": dots / dots.max(), "Noise": noise}
    return {k: (np.round(v * 65535) / 65535).astype(np.float32) for k, v in images.items()}


@pytest.fixture(scope="module")
def measured():
    labels = _compartments()
    images = _images(labels["Cells"].shape)
    site = Site(images, labels)
    out = {}
    for name, label_image in labels.items():
        ids = np.arange(1, int(label_image.max()) + 1)
        out[name] = radial.measure_radial(CompartmentObjects(name, label_image, ids), site)
    return labels, images, out


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_names_match_cellprofiler_header():
    header = {c for c in cellprofiler_header() if "_RadialDistribution_" in c}
    # CellProfiler's ExportToDatabase shortened the 65-character Cytoplasm Zernike names of
    # CorrBrightfield (dropping a vowel) to fit 64; the measurement name itself is unchanged.
    assert "Cytoplasm_RadialDistribution_ZernikeMagnitude_CorrBrightfild_0_0" in header
    header = {c.replace("_CorrBrightfild_", "_CorrBrightfield_") for c in header}
    ours = feature_columns(CHANNELS, groups=["RadialDistribution"])
    assert len(ours) == len(set(ours)) == 3 * 6 * 42
    assert set(ours) == header


def test_columns_and_options():
    names = radial.radial_columns(["DNA"], bin_count=2, zernike=False)
    assert names == [
        "RadialDistribution_FracAtD_DNA_1of2",
        "RadialDistribution_FracAtD_DNA_2of2",
        "RadialDistribution_MeanFrac_DNA_1of2",
        "RadialDistribution_MeanFrac_DNA_2of2",
        "RadialDistribution_RadialCV_DNA_1of2",
        "RadialDistribution_RadialCV_DNA_2of2",
    ]
    full = radial.radial_columns(["DNA"])
    assert len(full) == 12 + len(ZERNIKE_INDEXES)
    assert full[-1] == "RadialDistribution_ZernikeMagnitude_DNA_9_9"
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="bin_count"):
            radial.radial_columns(["DNA"], bin_count=bad)


# --------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # cp_measure's 0 / 0
@pytest.mark.parametrize("compartment", ["Nuclei", "Cells", "Cytoplasm"])
def test_agrees_with_cp_measure(measured, compartment):
    from cp_measure.core import measureobjectintensitydistribution as reference

    labels, images, out = measured
    ours = out[compartment]
    for channel, image in images.items():
        pixels = image.astype(np.float64)
        expected = reference.get_radial_distribution(labels[compartment], pixels)
        for name, values in expected.items():
            if "Overflow" in name:
                continue  # scaled bins never overflow; CellProfiler does not export it
            _, feature, bins = name.split("_")
            # Identical arithmetic in the same order: equal to the last bit (observed).
            np.testing.assert_allclose(
                ours[f"RadialDistribution_{feature}_{channel}_{bins}"],
                values,
                rtol=1e-13,
                atol=1e-15,
                err_msg=f"{compartment} {name} {channel}",
            )
        zernikes = reference.get_radial_zernikes(labels[compartment], pixels)
        for n, m in ZERNIKE_INDEXES:
            # Geometric moments instead of polynomials per pixel: relative error <= 1e-11.
            np.testing.assert_allclose(
                ours[f"RadialDistribution_ZernikeMagnitude_{channel}_{n}_{m}"],
                zernikes[f"RadialDistribution_ZernikeMagnitude_{n}_{m}"],
                rtol=1e-8,
                atol=1e-12,
            )


def _propagated(label_image: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """CellProfiler's centre and path lengths of one object (centrosome, whole image)."""
    d_edge = centrosome.cpmorphology.distance_to_edge(label_image)
    mask = label_image == label
    center = np.unravel_index(np.argmax(np.where(mask, d_edge, -1)), mask.shape)
    seeds = np.zeros(mask.shape, int)
    seeds[center] = label
    _, distance = centrosome.propagate.propagate(np.zeros(mask.shape), seeds, mask, 1)
    return np.array(center), distance


def test_path_lengths_around_obstacles_are_exact(measured):
    labels = _compartments()["Cytoplasm"]
    ids = np.arange(1, int(labels.max()) + 1)
    objects = CompartmentObjects("Cytoplasm", labels, ids)
    d_edge = radial._edge_distances(objects)
    centers = radial._centers(objects, d_edge)
    rows = np.flatnonzero(objects.present)
    ours = radial._geodesic(objects, rows, centers)
    for row, center in zip(rows.tolist(), centers.tolist(), strict=True):
        expected_center, distance = _propagated(labels, int(ids[row]))
        flat = objects.pixels[center]
        np.testing.assert_array_equal(expected_center, divmod(flat, labels.shape[1]))
        segment = slice(objects.starts[row], objects.starts[row] + objects.counts[row])
        expected = distance.ravel()[objects.pixels[segment]]
        expected = np.where(expected < 0, np.inf, expected)  # never reached
        np.testing.assert_array_equal(ours[segment], expected)


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def test_single_pixel_and_object_in_two_pieces(measured):
    _, _, out = measured
    cells = out["Cells"]
    one = 9 - 1  # row of label 9, a single pixel
    assert cells["RadialDistribution_FracAtD_Ramp_1of4"][one] == 1
    assert cells["RadialDistribution_FracAtD_Ramp_2of4"][one] == 0
    assert cells["RadialDistribution_RadialCV_Ramp_1of4"][one] == 0
    assert np.isnan(cells["RadialDistribution_ZernikeMagnitude_Ramp_0_0"][one])
    two = 8 - 1  # label 8: the piece without the centre is not measured
    fractions = [cells[f"RadialDistribution_FracAtD_Ramp_{i}of4"][two] for i in range(1, 5)]
    assert sum(fractions) == pytest.approx(1)


def test_empty_site_absent_objects_and_zero_intensity():
    shape = (16, 16)
    empty = {name: np.zeros(shape, np.int32) for name in ("Nuclei", "Cells", "Cytoplasm")}
    images = {"DNA": np.zeros(shape), "AGP": np.ones(shape)}
    frame = measure_site(empty, images, groups=["RadialDistribution"])
    assert len(frame) == 0
    columns = feature_columns(["DNA", "AGP"], groups=["RadialDistribution"])
    assert list(frame.columns)[1:] == columns

    nuclei = np.zeros(shape, np.int32)
    nuclei[4:10, 4:10] = 1
    labels = {"Nuclei": nuclei, "Cells": nuclei, "Cytoplasm": np.zeros(shape, np.int32)}
    row = measure_site(labels, images, groups=["RadialDistribution"]).iloc[0]
    assert row[[c for c in columns if c.startswith("Cytoplasm_")]].isna().all()
    # No intensity: fractions are 0 / 0 (NaN) and the wedge CV is 0, as in CellProfiler.
    assert np.isnan(row["Nuclei_RadialDistribution_FracAtD_DNA_1of4"])
    assert row["Nuclei_RadialDistribution_RadialCV_DNA_1of4"] == 0
    assert row["Nuclei_RadialDistribution_ZernikeMagnitude_DNA_0_0"] == 0
    # Uniform intensity: each bin's share of intensity is its share of pixels.
    for i in range(1, 5):
        assert row[f"Nuclei_RadialDistribution_MeanFrac_AGP_{i}of4"] == pytest.approx(1)
        assert row[f"Nuclei_RadialDistribution_RadialCV_AGP_{i}of4"] == 0


def test_bin_count_and_zernike_options():
    labels = _compartments()
    images = _images(labels["Cells"].shape)
    frame = measure_site(
        labels,
        images,
        groups=["RadialDistribution"],
        options={"RadialDistribution": {"bin_count": 3, "zernike": False}},
    )
    assert "Cells_RadialDistribution_FracAtD_Dots_3of3" in frame.columns
    assert not any("Zernike" in c for c in frame.columns)
    total = sum(frame[f"Cells_RadialDistribution_FracAtD_Dots_{i}of3"] for i in (1, 2, 3))
    np.testing.assert_allclose(total, 1, rtol=1e-6)

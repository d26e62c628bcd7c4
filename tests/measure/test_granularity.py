"""Granularity (CellProfiler MeasureGranularity): names, agreement with cp_measure and with
CellProfiler's own code, sharing of the openings, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import skimage.morphology
from conftest import CELLPROFILER_CHANNELS, cellprofiler_header
from skimage.segmentation import expand_labels, relabel_sequential

from cellstrata.measure import granularity
from cellstrata.measure.objects import CompartmentObjects, Site
from cellstrata.singlecell.features import feature_columns, measure_site

cp_granularity = pytest.importorskip("cp_measure.core.measuregranularity")

COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")


def _granularity_site(shape=(128, 160)) -> tuple[dict, dict]:
    """Touching cells over a sloped background with bright spots of several sizes.

    Object 7 is a nucleus that fills its cell (no cytoplasm); the others touch.
    """
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    nuclei = np.zeros(shape, np.int32)
    centres = [(25, 30), (30, 80), (28, 130), (80, 35), (85, 90), (95, 135)]
    for label, (cy, cx) in enumerate(centres, 1):
        nuclei[(yy - cy) ** 2 / 100 + (xx - cx) ** 2 / 64 <= 1] = label
    cells = expand_labels(nuclei, 20)
    nuclei[112:120, 60:70] = 7
    cells[112:120, 60:70] = 7
    cytoplasm = np.where(nuclei > 0, 0, cells)

    spots = np.zeros(shape)
    for radius in (0, 1, 2, 3, 5):
        for _ in range(12):
            y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            spots[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] += rng.uniform(0.2, 0.5)
    background = 0.1 + 0.2 * xx / shape[1]
    dna = np.clip(background + spots + 0.05 * rng.random(shape), 0, 1)
    er = scipy.ndimage.gaussian_filter(rng.random(shape), 2.0)
    labels = {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cytoplasm}
    return labels, {"DNA": dna, "ER": er}


def _per_object(mask: np.ndarray, ids: np.ndarray, measured: dict) -> dict:
    """Spread per-present-label arrays (labels relabelled 1..N) over ``ids`` rows."""
    rows = np.searchsorted(ids, np.unique(mask)[1:])
    out = {}
    for name, values in measured.items():
        out[name] = np.full(ids.size, np.nan)
        out[name][rows] = values
    return out


def _ours(labels, images, compartment, site=None, **options) -> dict[str, np.ndarray]:
    ids = np.unique(labels["Nuclei"])[1:]
    objects = CompartmentObjects(compartment, labels[compartment], ids)
    return granularity.measure_granularity(objects, site or Site(images, labels), **options)


def _cellprofiler(mask, image, subsample, image_sample, element, length) -> dict:
    """CellProfiler 4.2's MeasureGranularity.run_on_image_setting, transcribed for a 2-D
    full-frame image (all-true mask) and one object set."""
    image = image.astype(np.float64)
    new_shape = np.array(image.shape)
    if subsample < 1:
        new_shape = new_shape * subsample
        i, j = np.mgrid[0 : new_shape[0], 0 : new_shape[1]].astype(float) / subsample
        pixels = scipy.ndimage.map_coordinates(image, (i, j), order=1)
    else:
        pixels = image.copy()
    if image_sample < 1:
        back_shape = new_shape * image_sample
        i, j = np.mgrid[0 : back_shape[0], 0 : back_shape[1]].astype(float) / image_sample
        back = scipy.ndimage.map_coordinates(pixels, (i, j), order=1)
    else:
        back, back_shape = pixels, new_shape
    disk = skimage.morphology.disk(element, dtype=bool)
    back = skimage.morphology.dilation(skimage.morphology.erosion(back, disk), disk)
    if image_sample < 1:
        i, j = np.mgrid[0 : new_shape[0], 0 : new_shape[1]].astype(float)
        i *= float(back_shape[0] - 1) / float(new_shape[0] - 1)
        j *= float(back_shape[1] - 1) / float(new_shape[1] - 1)
        back = scipy.ndimage.map_coordinates(back, (i, j), order=1)
    pixels -= back
    pixels[pixels < 0] = 0
    index = np.arange(1, mask.max() + 1)
    current = np.asarray(scipy.ndimage.mean(image, mask, index))
    start = np.maximum(current, np.finfo(float).eps)
    cross = skimage.morphology.disk(1, dtype=bool)
    ero = pixels.copy()
    out = {}
    for step in range(1, length + 1):
        ero = skimage.morphology.erosion(ero, footprint=cross)
        rec = skimage.morphology.reconstruction(ero, pixels, footprint=cross)
        i, j = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(float)
        i *= float(new_shape[0] - 1) / float(image.shape[0] - 1)
        j *= float(new_shape[1] - 1) / float(image.shape[1] - 1)
        rec = scipy.ndimage.map_coordinates(rec, (i, j), order=1)
        new = np.asarray(scipy.ndimage.mean(rec, mask, index))
        out[f"Granularity_{step}"] = (current - new) * 100 / start
        current = new
    return out


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def test_columns_follow_cellprofiler_names():
    columns = granularity.granularity_columns(["DNA", "ER"])
    assert columns == [f"Granularity_{k}_{c}" for c in ("DNA", "ER") for k in range(1, 17)]
    assert granularity.granularity_columns(["DNA"], spectrum_length=3) == [
        "Granularity_1_DNA",
        "Granularity_2_DNA",
        "Granularity_3_DNA",
    ]
    assert "Cytoplasm_Granularity_16_DNA" in feature_columns(["DNA"])


@pytest.mark.parametrize(
    "options",
    [
        {"subsample_size": 0},
        {"image_sample_size": -1},
        {"element_size": 1.5},
        {"spectrum_length": 0},
    ],
)
def test_bad_options_raise(options):
    with pytest.raises(ValueError, match="Granularity"):
        feature_columns(["DNA"], groups=["Granularity"], options={"Granularity": options})


@pytest.mark.realdata
def test_names_match_cytotable_parquet():
    header = set(cellprofiler_header())
    channels = tuple(CELLPROFILER_CHANNELS)
    names = {
        f"{compartment}_Granularity_{k}_{channel}"
        for compartment in COMPARTMENTS
        for k in range(1, 17)
        for channel in channels
    }
    # CellProfiler wrote exactly these for the measured channels, and we write them too.
    assert {c for c in header if "_Granularity_" in c and c.endswith(channels)} == names
    assert names <= set(feature_columns(channels))


# --------------------------------------------------------------------------------------------
# Agreement with cp_measure and CellProfiler
# --------------------------------------------------------------------------------------------

OPTION_SETS = [
    {},
    {"subsample_size": 0.5, "image_sample_size": 0.5, "element_size": 4, "spectrum_length": 6},
    {"subsample_size": 1.0, "image_sample_size": 1.0, "element_size": 3, "spectrum_length": 4},
]


@pytest.mark.parametrize("compartment", COMPARTMENTS)
@pytest.mark.parametrize("options", OPTION_SETS)
def test_agrees_with_cp_measure(compartment, options):
    labels, images = _granularity_site()
    ids = np.unique(labels["Nuclei"])[1:]
    ours = _ours(labels, images, compartment, **options)
    length = options.get("spectrum_length", 16)
    cp_options = {k: v for k, v in options.items() if k != "spectrum_length"}
    for channel, image in images.items():
        mask = relabel_sequential(labels[compartment])[0]
        measured = cp_granularity.get_granularity(
            mask, image.copy(), granular_spectrum_length=length, **cp_options
        )
        reference = _per_object(labels[compartment], ids, measured)
        assert len(reference) == length
        for name, expected in reference.items():
            got = ours[f"{name}_{channel}"]
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=name)
            assert np.isfinite(expected).sum() >= 6
        # The spectrum is not trivial: several steps remove signal.
        assert np.nanmax(np.abs([ours[f"Granularity_{k}_{channel}"] for k in (2, 3)])) > 0.1


def test_fractional_grid_follows_cellprofiler():
    """126 x 150 at 0.25 is a 31.5 x 37.5 grid: CellProfiler keeps the fraction (cp_measure
    truncates), and this module follows CellProfiler."""
    labels, images = _granularity_site(shape=(126, 150))
    ids = np.unique(labels["Nuclei"])[1:]
    ours = _ours(labels, images, "Cells")
    expected = _per_object(
        labels["Cells"],
        ids,
        _cellprofiler(relabel_sequential(labels["Cells"])[0], images["DNA"], 0.25, 0.25, 10, 16),
    )
    for name, values in expected.items():
        np.testing.assert_allclose(ours[f"{name}_DNA"], values, rtol=1e-9, atol=1e-9)
    truncated = cp_granularity.get_granularity(
        relabel_sequential(labels["Cells"])[0], images["DNA"].copy()
    )
    assert not np.allclose(truncated["Granularity_1"], expected["Granularity_1"])


def test_cellprofiler_transcription_agrees_on_integer_grids():
    labels, images = _granularity_site()
    mask = relabel_sequential(labels["Nuclei"])[0]
    ours = _cellprofiler(mask, images["ER"], 0.25, 0.25, 10, 16)
    reference = cp_granularity.get_granularity(mask, images["ER"].copy())
    for name, values in reference.items():
        np.testing.assert_allclose(ours[name], values, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("levels", [50, 100_000])
def test_reconstruction_matches_skimage(levels):
    """Both sort paths (ranks fitting 16 bits, and wider), with ties and plateaus."""
    rng = np.random.default_rng(levels)
    mask = rng.integers(0, levels, (330, 310)).astype(np.uint32)
    mask = scipy.ndimage.maximum_filter(mask, 3)
    seed = skimage.morphology.erosion(mask, skimage.morphology.disk(2))
    expected = skimage.morphology.reconstruction(seed, mask, footprint=granularity._CROSS)
    np.testing.assert_array_equal(granularity.reconstruct_by_dilation(seed, mask), expected)


# --------------------------------------------------------------------------------------------
# Shared openings and edge cases
# --------------------------------------------------------------------------------------------


def test_openings_are_computed_once_per_channel(monkeypatch):
    calls = []
    original = granularity.openings

    def counting(image, *args):
        calls.append(image.shape)
        return original(image, *args)

    monkeypatch.setattr(granularity, "openings", counting)
    labels, images = _granularity_site()
    frame = measure_site(labels, images, groups=["Granularity"])
    assert len(calls) == len(images)  # not once per compartment
    assert frame.filter(like="Cytoplasm_Granularity_").notna().any().all()


def test_edge_cases():
    labels, images = _granularity_site()
    frame = measure_site(labels, images, groups=["Granularity"]).set_index("ObjectNumber")
    # Object 7 has no cytoplasm: NaN there, finite elsewhere.
    assert frame.loc[7].filter(like="Cytoplasm_").isna().all()
    assert frame.loc[7].filter(like="Cells_").notna().all()

    # A constant image is all background: step 1 removes everything.
    flat = _ours(labels, {"DNA": np.full(labels["Cells"].shape, 0.3)}, "Cells")
    assert np.allclose(flat["Granularity_1_DNA"], 100)
    assert np.allclose([flat[f"Granularity_{k}_DNA"] for k in range(2, 17)], 0)

    # Too small to subsample to 2 x 2: NaN (cp_measure does the same; CellProfiler fails).
    tiny = {name: mask[:6, :6] for name, mask in labels.items()}
    tiny["Nuclei"] = tiny["Cells"] = np.ones((6, 6), np.int32)
    values = _ours(tiny, {"DNA": np.random.default_rng(0).random((6, 6))}, "Cells")
    assert all(np.isnan(v).all() for v in values.values())


def test_empty_site_keeps_schema():
    labels = {name: np.zeros((40, 40), np.int32) for name in COMPARTMENTS}
    frame = measure_site(labels, {"DNA": np.zeros((40, 40))}, groups=["Granularity"])
    assert len(frame) == 0
    assert list(frame.columns)[1:] == feature_columns(["DNA"], groups=["Granularity"])


def test_background_opening_of_a_tiny_grid():
    # Under a footprint far larger than the image, an opening is the global minimum
    # everywhere. skimage's erosion (scipy's reflect mode) left such outputs unset instead
    # (np.empty garbage, different on every call) -- a tiny image's 1-2 px background grid
    # under the default disk(10).
    image = np.array([[0.2, 0.3], [0.25, 0.5]])
    disk = skimage.morphology.disk(10, dtype=bool)
    for _ in range(5):
        np.testing.assert_array_equal(granularity._grey_opening(image, disk), 0.2)
    rng = np.random.default_rng(3)
    stacks = [granularity.openings(rng.random((12, 12)) * 0 + 0.5).stack for _ in range(3)]
    assert all(np.array_equal(stacks[0], s) for s in stacks[1:])

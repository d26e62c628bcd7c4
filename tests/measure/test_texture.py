"""Texture (CellProfiler MeasureTexture): names, agreement with cp_measure, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CELLPROFILER_CHANNELS, cellprofiler_header, shared
from scipy import ndimage
from skimage.segmentation import expand_labels, relabel_sequential

from cellstrata.images.illumination import to_float
from cellstrata.io import read_image
from cellstrata.measure import texture
from cellstrata.measure.objects import CompartmentObjects, Site
from cellstrata.singlecell.features import feature_columns, measure_site

cp_texture = pytest.importorskip("cp_measure.core.measuretexture")

SHAPE = (90, 110)


def _texture_site() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Touching cells with textured intensities plus the awkward objects of the edge cases.

    Objects 1-5: ellipse nuclei in cells grown by 9 px (they touch). Object 6: a 2x2 nucleus
    (smaller than scale 3). Object 7: a 1-pixel-high line nucleus (no vertical pairs).
    Object 8: nucleus == cell (no cytoplasm). Object 9: constant intensity. Object 10: so
    dark it quantises to 0.
    """
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    nuclei = np.zeros(SHAPE, np.int32)
    for label, (cy, cx) in enumerate([(18, 20), (20, 55), (50, 25), (55, 62), (30, 90)], 1):
        nuclei[(yy - cy) ** 2 / 64 + (xx - cx) ** 2 / 36 <= 1] = label
    nuclei[75:77, 10:12] = 6
    nuclei[80, 30:38] = 7
    cells = expand_labels(nuclei, 9)
    cells[cells == 7] = 0
    cells[78:83, 28:40] = 7
    nuclei[70:76, 60:66] = 8
    cells[70:76, 60:66] = 8
    nuclei[72:78, 88:94] = 9
    cells[69:81, 85:97] = 9
    nuclei[84:88, 60:66] = 10
    cells[83:89, 58:68] = 10
    cytoplasm = np.where(nuclei > 0, 0, cells)

    rng = np.random.default_rng(7)
    image = ndimage.gaussian_filter(rng.random(SHAPE), 1.2)
    image = (image - image.min()) / (image.max() - image.min())
    image[cells == 9] = 0.5
    image[cells == 10] = 0.001
    other = rng.random(SHAPE) ** 2  # a second, rougher channel
    labels = {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cytoplasm}
    return labels, {"DNA": image, "ER": other}


def _cp_measure(mask: np.ndarray, image: np.ndarray, ids: np.ndarray, **options) -> dict:
    """cp_measure's texture per object of ``ids`` (NaN where the object is absent)."""
    present = np.unique(mask)[1:]
    sequential = relabel_sequential(mask)[0]
    rows = np.searchsorted(ids, present)
    out = {}
    for name, values in cp_texture.get_texture(sequential, image, **options).items():
        out[name] = np.full(ids.size, np.nan)
        out[name][rows] = values
    return out


def _ours(labels, images, compartment, **options) -> dict[str, np.ndarray]:
    ids = np.unique(labels["Nuclei"])[1:]
    objects = CompartmentObjects(compartment, labels[compartment], ids)
    return texture.measure_texture(objects, Site(images, labels), **options)


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def test_columns_follow_cellprofiler_names():
    columns = texture.texture_columns(["DNA", "ER"])
    assert len(columns) == 13 * 2 * 4
    assert columns[:5] == [
        "Texture_AngularSecondMoment_DNA_3_00_256",
        "Texture_AngularSecondMoment_DNA_3_01_256",
        "Texture_AngularSecondMoment_DNA_3_02_256",
        "Texture_AngularSecondMoment_DNA_3_03_256",
        "Texture_AngularSecondMoment_ER_3_00_256",
    ]
    features = {c.split("_")[1] for c in columns}
    assert features == set(texture.TEXTURE_FEATURES)
    assert "Texture_InfoMeas2_ER_3_03_256" in columns
    assert "Texture_Variance_DNA_3_02_256" in columns
    other = texture.texture_columns(["DNA"], scales=[1, 5], gray_levels=8)
    assert "Texture_Contrast_DNA_5_01_8" in other and len(other) == 13 * 2 * 4
    assert "Nuclei_Texture_Entropy_DNA_3_00_256" in feature_columns(["DNA"], ["Nuclei"])


@pytest.mark.parametrize(
    "options",
    [{"scales": []}, {"scales": [0]}, {"scales": [3, 3]}, {"scales": 3}, {"gray_levels": 1}],
)
def test_bad_options_raise(options):
    with pytest.raises(ValueError, match="Texture"):
        feature_columns(["DNA"], groups=["Texture"], options={"Texture": options})


@pytest.mark.realdata
def test_names_match_cytotable_parquet():
    channels = CELLPROFILER_CHANNELS
    ours = set(feature_columns(channels))
    # Texture_<feature>_<channel>_3_0?_256 (the brightfield channel is not measured here).
    measured = [
        c for c in cellprofiler_header() if "_Texture_" in c and c.split("_")[3] in channels
    ]
    assert len(measured) == 3 * 13 * 5 * 4
    assert [c for c in measured if c not in ours] == []


# --------------------------------------------------------------------------------------------
# Agreement with cp_measure (CellProfiler's implementation)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compartment", ["Nuclei", "Cells", "Cytoplasm"])
@pytest.mark.parametrize(("scale", "gray_levels"), [(3, 256), (1, 256), (2, 8)])
def test_agrees_with_cp_measure(compartment, scale, gray_levels):
    labels, images = _texture_site()
    ids = np.unique(labels["Nuclei"])[1:]
    ours = _ours(labels, images, compartment, scales=[scale], gray_levels=gray_levels)
    checked = 0
    for channel, image in images.items():
        reference = _cp_measure(
            labels[compartment], image, ids, scale=scale, gray_levels=gray_levels
        )
        assert len(reference) == 13 * 4
        for name, expected in reference.items():
            feature, suffix = name.split("_", 1)
            got = ours[f"Texture_{feature}_{channel}_{suffix}"]
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=name)
            checked += np.isfinite(expected).sum()
    assert checked > 13 * 4 * 2 * 5  # most objects are measurable


@pytest.mark.realdata
def test_real_site_crop_agrees_with_cp_measure():
    """Dim, narrow-range real intensities (the common case) on a crop of the real site."""
    folder = shared("cellpainting_site_BR00143976", "images")
    crop = (slice(300, 480), slice(400, 580))
    dna = to_float(read_image(folder / "r03c03f03p01-ch5sk1fk1fl1.tiff"))[crop]
    mito = to_float(read_image(folder / "r03c03f03p01-ch4sk1fk1fl1.tiff"))[crop]
    nuclei, _ = ndimage.label(ndimage.gaussian_filter(dna, 2) > np.percentile(dna, 70))
    labels = {"Nuclei": nuclei, "Cells": expand_labels(nuclei, 6)}
    images = {"DNA": dna.astype(np.float64), "Mito": mito.astype(np.float64)}
    ids = np.unique(nuclei)[1:]
    for compartment in labels:
        ours = _ours(labels, images, compartment)
        for channel, image in images.items():
            for name, expected in _cp_measure(labels[compartment], image, ids).items():
                feature, suffix = name.split("_", 1)
                got = ours[f"Texture_{feature}_{channel}_{suffix}"]
                np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=name)


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def test_edge_case_objects():
    labels, images = _texture_site()
    frame = measure_site(labels, images, groups=["Texture"]).set_index("ObjectNumber")
    nuclei = frame.filter(like="Nuclei_Texture_").filter(like="_DNA_")
    # Smaller than the scale (6), no vertical pair (7), quantised to 0 (10): NaN throughout.
    for label in (6, 7, 10):
        assert nuclei.loc[label].isna().all(), label
    # With scale 1 the 2x2 object has pairs in every direction.
    small = _ours(labels, images, "Nuclei", scales=[1])
    assert np.isfinite(small["Texture_Entropy_DNA_1_03_256"][5])
    # No cytoplasm (8): NaN there, finite elsewhere.
    assert frame.loc[8].filter(like="Cytoplasm_").isna().all()
    assert frame.loc[8].filter(like="Cells_Texture_").notna().all()
    # Constant intensity (9): CellProfiler's finite degenerate values, for every direction.
    constant = {
        "AngularSecondMoment": 1,
        "Contrast": 0,
        "Correlation": 1,
        "Variance": 0,
        "InverseDifferenceMoment": 1,
        "SumAverage": 2 * 128,  # 0.5 quantises to 128
        "SumVariance": 0,
        "SumEntropy": 0,
        "Entropy": 0,
        "DifferenceEntropy": 0,
        "InfoMeas1": 0,
        "InfoMeas2": 0,
    }
    for compartment in ("Nuclei", "Cells", "Cytoplasm"):
        row = frame.loc[9]
        for feature, value in constant.items():
            for direction in range(4):
                name = f"{compartment}_Texture_{feature}_DNA_3_{direction:02d}_256"
                assert row[name] == pytest.approx(value, abs=1e-6), name
        # Variance of the one-hot difference histogram over 129 bins.
        expected = np.var(np.eye(129)[0])
        assert row[f"{compartment}_Texture_DifferenceVariance_DNA_3_00_256"] == pytest.approx(
            expected, rel=1e-6
        )


def test_empty_site_keeps_schema():
    labels = {name: np.zeros(SHAPE, np.int32) for name in ("Nuclei", "Cells", "Cytoplasm")}
    images = {"DNA": np.zeros(SHAPE)}
    frame = measure_site(labels, images, groups=["Texture"])
    assert len(frame) == 0
    assert list(frame.columns)[1:] == feature_columns(["DNA"], groups=["Texture"])


def test_quantize_matches_cellprofiler():
    rng = np.random.default_rng(0)
    image = rng.random((20, 20))
    np.testing.assert_array_equal(texture.quantize(image), np.rint(image * 255).astype(np.uint8))
    # gray_levels != 256 rescales the fixed 0..255 range (not the observed one) and truncates.
    np.testing.assert_array_equal(
        texture.quantize(image, 8), (np.rint(image * 255) * 7 / 255).astype(np.uint8)
    )
    # Out-of-range and non-finite values: clipped / ignored instead of an error.
    odd = np.array([[-0.5, 2.0, np.nan, 1.0]])
    np.testing.assert_array_equal(texture.quantize(odd), [[0, 255, 0, 255]])
    # Integers are scaled by their dtype's range, as CellProfiler loads them.
    ints = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(texture.quantize(ints), [[0, 1, 255]])


def test_quantized_image_is_shared_by_compartments():
    labels, images = _texture_site()
    site = Site(images, labels)
    ids = np.unique(labels["Nuclei"])[1:]
    for compartment in ("Nuclei", "Cells"):
        texture.measure_texture(CompartmentObjects(compartment, labels[compartment], ids), site)
    assert sorted(k for k in site._cache if k[0] == "Texture.quantize") == [
        ("Texture.quantize", "DNA", 256),
        ("Texture.quantize", "ER", 256),
    ]

"""Illumination: CellProfiler-style functions flatten a known vignetting field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import benchmark, shared

from cellstrata.images.illumination import (
    background_image,
    block_minima,
    compute_illumination,
    correct_batch,
    correct_image,
    illumination_function,
    mean_image,
    median_smooth,
    object_size_filter,
    read_function,
    read_stack,
    to_float,
)
from cellstrata.io import write_tiff


def _vignetting(shape=(96, 128)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = ((yy - 40) / shape[0]) ** 2 + ((xx - 70) / shape[1]) ** 2
    return 1.0 - 0.9 * r2


def _sites(field, n=40, seed=0):
    """Sites of bright random blobs on a background, all dimmed by ``field``."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        scene = np.full(field.shape, 500.0)
        for y, x in rng.integers(0, field.shape, size=(6, 2)):
            scene[max(0, y - 4) : y + 4, max(0, x - 4) : x + 4] += 2000
        noisy = rng.poisson(scene * field) + 100
        yield np.clip(noisy, 0, 65535).astype(np.uint16)


# Filter size in CellProfiler's convention (sigma = size / 2.35): 40 px is a median disk of
# radius 17, a Gaussian of sigma 17, on 96 x 128 px sites.
@pytest.mark.parametrize("smoothing", ["median", "gaussian"])
def test_function_recovers_vignetting(smoothing):
    field = _vignetting()
    function = illumination_function(
        mean_image(to_float(s) for s in _sites(field)), smoothing=smoothing, filter_size=40
    )
    assert function.dtype == np.float32 and function.shape == field.shape
    r = np.corrcoef(function.ravel(), field.ravel())[0, 1]
    assert r > 0.95, r
    # Robust rescaling: nothing below 1, so correction never brightens a pixel.
    assert function.min() == pytest.approx(1.0)


def test_correction_flattens_background():
    field = _vignetting()
    sites = list(_sites(field, seed=1))
    function = illumination_function(mean_image(to_float(s) for s in sites), filter_size=40)
    raw = np.median([to_float(s) for s in sites], axis=0)
    corrected = np.median([correct_image(s, function) for s in sites], axis=0)
    # Background (median over sites) varies far less across the field after correction: at
    # least two thirds of its excess spread go (CellProfiler's median leaves some texture
    # of the 40 sites' blobs in the function; the Gaussian smooths it away).
    spread = lambda img: np.percentile(img, 95) / np.percentile(img, 5)  # noqa: E731
    assert spread(raw) > 1.3
    assert spread(corrected) - 1 < (spread(raw) - 1) / 3


def test_median_rescale():
    function = illumination_function(
        np.outer(np.linspace(1, 2, 50), np.ones(40)), rescale="median", filter_size=5
    )
    assert np.median(function) == pytest.approx(1.0, rel=1e-3)


def test_bad_options():
    with pytest.raises(ValueError, match="unknown smoothing"):
        illumination_function(np.ones((10, 10)), smoothing="tophat")
    with pytest.raises(ValueError, match="unknown rescale"):
        illumination_function(np.ones((10, 10)), rescale="max")
    with pytest.raises(ValueError, match="unknown illumination mode"):
        correct_image(np.ones((4, 4)), np.ones((4, 4)), mode="multiply")
    with pytest.raises(ValueError, match="shape"):
        mean_image([np.ones((4, 4)), np.ones((4, 5))])


def test_to_float_scales_by_dtype():
    assert to_float(np.array([255], np.uint8))[0] == 1.0
    assert to_float(np.array([65535], np.uint16))[0] == 1.0
    assert to_float(np.array([0.25], np.float64))[0] == 0.25


def test_correct_batch_writes_named_stacks(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for well in ("A01", "A02"):
        for channel in ("DNA", "GFP"):
            path = tmp_path / f"{well}_{channel}.tif"
            tifffile.imwrite(path, rng.integers(0, 60000, (16, 16)).astype(np.uint16))
            rows.append(
                {
                    "Metadata_Plate": "P",
                    "Metadata_Well": well,
                    "Metadata_Site": 1,
                    "channel": channel,
                    "path": str(path),
                }
            )
    functions = {}
    for channel, value in (("DNA", 2.0), ("GFP", 4.0)):
        functions[channel] = tmp_path / f"illum_{channel}.tiff"
        tifffile.imwrite(functions[channel], np.full((16, 16), value, np.float32))
    written = correct_batch(pd.DataFrame(rows), functions, tmp_path / "out")
    assert [p.name for p in written] == ["A01_s1.tiff", "A02_s1.tiff"]
    stack = read_stack(written[1])
    assert list(stack) == ["DNA", "GFP"]
    raw = tifffile.imread(tmp_path / "A02_GFP.tif") / 65535
    np.testing.assert_allclose(stack["GFP"], raw / 4.0, rtol=1e-6)


def _manifest(well, site, path, plate="P", channel="DNA"):
    """A one-row manifest of one image."""
    return pd.DataFrame(
        [
            {
                "Metadata_Plate": plate,
                "Metadata_Well": well,
                "Metadata_Site": site,
                "channel": channel,
                "path": str(path),
            }
        ]
    )


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"xx")
    tifffile.imwrite(tmp_path / "illum.tiff", np.ones((4, 4), np.float32))
    rows = _manifest("B03", 2, tmp_path / "bad.tif")
    with pytest.raises(Exception, match="plate P well B03 site 2 channel DNA"):
        correct_batch(rows, {"DNA": tmp_path / "illum.tiff"}, tmp_path / "out")
    assert not (tmp_path / "out" / "B03_s2.tiff").exists()


def _background_sites(shape=(96, 128), n=30, seed=2):
    """Sparse bright blobs on an additive background ramp; returns (sites, ramp in [0, 1])."""
    ramp = 0.02 + 0.06 * np.linspace(0, 1, shape[1])[None, :] * np.ones(shape)
    rng = np.random.default_rng(seed)
    sites = []
    for _ in range(n):
        scene = ramp + rng.normal(0, 0.002, shape)
        for y, x in rng.integers(0, shape, size=(8, 2)):
            scene[max(0, y - 3) : y + 3, max(0, x - 3) : x + 3] += 0.4
        sites.append(np.clip(scene * 65535, 0, 65535).astype(np.uint16))
    return sites, ramp


def test_block_minima_skip_zeros_and_pad():
    image = np.arange(1, 26, dtype=float).reshape(5, 5)
    image[0, 0] = 0  # a clipped pixel is not background
    minima = block_minima(image, 2)
    assert minima.shape == (3, 3)
    assert minima[0, 0] == 2 and minima[2, 2] == 25  # edge block padded by replication
    assert block_minima(np.zeros((4, 4)), 2).max() == 0


def test_background_mode_recovers_and_removes_an_additive_ramp(tmp_path):
    sites, ramp = _background_sites()
    background = background_image((to_float(s) for s in sites), block_size=16)
    assert background.shape == ramp.shape
    assert np.corrcoef(background.ravel(), ramp.ravel())[0, 1] > 0.95
    paths = []
    for i, site in enumerate(sites):
        paths.append(tmp_path / f"s{i}.tif")
        tifffile.imwrite(paths[-1], site)
    function = compute_illumination(
        paths, mode="background", block_size=16, smoothing="gaussian", filter_size=16
    )
    # Not rescaled: a subtracted function keeps the intensity scale of the images (block
    # minima sit a few noise sd below the mean background).
    assert ramp.mean() - 6 * 0.002 < function.mean() <= ramp.mean()
    corrected = np.median([correct_image(s, function, "background") for s in sites], axis=0)
    assert corrected.min() >= 0
    raw = np.median([to_float(s) for s in sites], axis=0)
    left, right = (slice(None), slice(0, 20)), (slice(None), slice(-20, None))
    assert raw[right].mean() - raw[left].mean() > 0.04
    assert abs(corrected[right].mean() - corrected[left].mean()) < 0.005


def test_background_image_rejects_mixed_shapes():
    with pytest.raises(ValueError, match="image 1 has shape"):
        background_image([np.ones((8, 8)), np.ones((8, 9))], block_size=4)


def test_correct_batch_applies_the_recorded_mode(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.full((8, 8), 30000, np.uint16))
    write_tiff(
        tmp_path / "bg.tiff", np.full((8, 8), 0.25, np.float32), metadata={"mode": "background"}
    )
    assert read_function(tmp_path / "bg.tiff")[1] == "background"
    rows = _manifest("A01", 1, tmp_path / "a.tif")
    (written,) = correct_batch(rows, {"DNA": tmp_path / "bg.tiff"}, tmp_path / "out")
    np.testing.assert_allclose(read_stack(written)["DNA"], 30000 / 65535 - 0.25, rtol=1e-5)


@pytest.mark.realdata
def test_agrees_with_cellprofiler_functions_on_bbbc013():
    """Like for like: CellProfiler 4.2.8.1's functions of exactly the 48 wells in ../shared,
    against ours from the same images with the same settings (config/examples/bbbc013.yaml:
    Regular, all images, median filter from object size 100, rescaled). The old
    ``Channel*ILLUM.mat`` (a 2014 CellProfiler, 96 wells) is no like-for-like reference."""
    data = shared("bbbc013_translocation", "cellprofiler_4.2.8_illumination_rowsAD").parent
    agreement = benchmark("illumination_agreement")
    settings = agreement.example_settings()
    assert settings["object_size"] == 100 and settings["smoothing"] == "median"
    for channel in (1, 2):
        r, difference, r_transposed = agreement.agreement(data, channel, settings)
        print(
            f"\nChannel{channel}ILLUM.npy (CellProfiler 4.2.8.1): r = {r:.6f}, "
            f"max |difference| {difference:.5f} (transposed control {r_transposed:.3f})"
        )
        assert r >= 0.98
        assert r_transposed < 0.3


def test_object_size_sets_cellprofilers_filter():
    # CorrectIlluminationCalculate: size = object size x 2.35 / 3.5; median radius
    # int(size / 2.35 + 0.5): 29 px for object size 100.
    assert object_size_filter(100) == pytest.approx(67.142857)
    impulse = np.zeros((101, 101))
    impulse[20:81, 20:81] = 1.0  # a 61-px square: its corners are rounded by a 29-px disk
    smooth = median_smooth(impulse, object_size_filter(100))
    assert smooth[50, 50] == 1.0 and smooth[0, 0] == 0.0
    assert smooth[20, 20] == 0.0 and smooth[20, 50] == 1.0
    with pytest.raises(ValueError, match="not both"):
        illumination_function(impulse + 1, filter_size=10, object_size=100)


def test_mode_none_only_scales(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.full((6, 7), 51, np.uint8))
    function = compute_illumination([tmp_path / "a.tif"], mode="none")
    assert function.shape == (6, 7) and np.all(function == 1)
    image = tifffile.imread(tmp_path / "a.tif")
    np.testing.assert_allclose(correct_image(image, function, "none"), 0.2, rtol=1e-6)

"""Illumination: CellProfiler-style functions flatten a known vignetting field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellstrata.illumination import (
    correct_batch,
    correct_image,
    illumination_function,
    mean_image,
    read_stack,
    to_float,
)


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


@pytest.mark.parametrize("smoothing", ["median", "gaussian"])
def test_function_recovers_vignetting(smoothing):
    field = _vignetting()
    function = illumination_function(
        mean_image(to_float(s) for s in _sites(field)), smoothing=smoothing, filter_size=24
    )
    assert function.dtype == np.float32 and function.shape == field.shape
    r = np.corrcoef(function.ravel(), field.ravel())[0, 1]
    assert r > 0.95, r
    # Robust rescaling: nothing below 1, so correction never brightens a pixel.
    assert function.min() == pytest.approx(1.0)


def test_correction_flattens_background():
    field = _vignetting()
    sites = list(_sites(field, seed=1))
    function = illumination_function(mean_image(to_float(s) for s in sites), filter_size=24)
    raw = np.median([to_float(s) for s in sites], axis=0)
    corrected = np.median([correct_image(s, function) for s in sites], axis=0)
    # Background (median over sites) varies far less across the field after correction.
    spread = lambda img: np.percentile(img, 95) / np.percentile(img, 5)  # noqa: E731
    assert spread(raw) > 1.3
    assert spread(corrected) < 1.1


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


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"xx")
    tifffile.imwrite(tmp_path / "illum.tiff", np.ones((4, 4), np.float32))
    rows = pd.DataFrame(
        [
            {
                "Metadata_Plate": "P",
                "Metadata_Well": "B03",
                "Metadata_Site": 2,
                "channel": "DNA",
                "path": str(tmp_path / "bad.tif"),
            }
        ]
    )
    with pytest.raises(Exception, match="plate P well B03 site 2 channel DNA"):
        correct_batch(rows, {"DNA": tmp_path / "illum.tiff"}, tmp_path / "out")
    assert not (tmp_path / "out" / "B03_s2.tiff").exists()

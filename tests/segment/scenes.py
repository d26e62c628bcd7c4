"""Synthetic scenes with known answers, shared by the segmentation tests."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import disk

# --------------------------------------------------------------------------------------------
# synthetic scenes
# --------------------------------------------------------------------------------------------


def _scene(
    centers,
    *,
    shape=(160, 160),
    radius=8,
    background=0.1,
    brightness=0.8,
    noise=0.02,
    seed=0,
):
    """Float image in [0, 1] of blurred bright discs on a noisy background, and the truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    signal = np.zeros(shape)
    for k, (y, x) in enumerate(centers, start=1):
        rr, cc = disk((y, x), radius, shape=shape)
        truth[rr, cc] = k
        signal[rr, cc] = brightness
    image = background + ndi.gaussian_filter(signal, 1.0) + rng.normal(0, noise, shape)
    return np.clip(image, 0, 1), truth


def _grid(n=4, spacing=36, offset=26):
    return [(offset + i * spacing, offset + j * spacing) for i in range(n) for j in range(n)]


def _as(image, dtype):
    """The same picture in another storage type."""
    if dtype is np.uint8:
        return np.round(image * 255).astype(np.uint8)
    if dtype is np.uint16:
        return np.round(image * 65535).astype(np.uint16)
    if dtype == "illum":
        # Illumination-corrected float: arbitrary scale, divided by a smooth vignetting field.
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]] / max(image.shape)
        return (image * 1234.5 / (1.0 - 0.2 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2))).astype(
            np.float32
        )
    return image.astype(np.float64)


def _assert_sequential_int32(labels, shape):
    assert labels.dtype == np.int32 and labels.shape == shape
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))


def _cell_scene(seed=0):
    """Nuclei (radius 7) inside brighter-than-background cytoplasm discs (radius 16)."""
    centers = [(30, 30), (30, 62), (34, 120), (95, 40), (100, 100), (140, 140)]
    nuclei_image, _ = _scene(centers, radius=7, seed=seed)
    cyto_image, cyto_truth = _scene(centers, radius=16, brightness=0.5, seed=seed + 1)
    return nuclei_image, cyto_image, cyto_truth


def _assert_cells_match_nuclei(nuclei, cells):
    assert cells.dtype == np.int32 and cells.shape == nuclei.shape
    assert set(np.unique(cells[cells > 0])) == set(np.unique(nuclei[nuclei > 0]))
    for k in np.unique(nuclei[nuclei > 0]):
        assert np.all(cells[nuclei == k] == k), f"nucleus {k} not inside cell {k}"

"""MeasureGranularity: per-object granular spectrum, one opening series per channel image.

Follows CellProfiler 4.2's MeasureGranularity (cp_measure 0.3.0 ``get_granularity`` is the
same computation), for a full-frame image (CellProfiler's image mask is all true):

1. Subsample the image by ``subsample_size`` with bilinear interpolation
   (``map_coordinates(order=1)`` at ``mgrid[0:h*f, 0:w*f] / f``).
2. Background: subsample that again by ``image_sample_size``, grey opening (erosion then
   dilation) with ``disk(element_size)``, interpolate back to the subsampled grid, subtract,
   clip at 0.
3. For ``k = 1..spectrum_length``: erode the previous erosion with ``disk(1)`` (the
   4-neighbour cross) and reconstruct it by dilation under the background-subtracted image
   (an opening by reconstruction).
4. Per object: each reconstruction is interpolated back to the original grid and averaged
   over the object's pixels (original labels); ``Granularity_k`` is
   ``(mean_{k-1} - mean_k) * 100 / max(mean_0, eps)``, where ``mean_0`` is the object's mean
   of the *original* image (so ``Granularity_1`` also holds the removed background, as in
   CellProfiler).

Columns are ``Granularity_{k}_{channel}``.

Speed: steps 1-3 depend only on the channel image, so they run once per channel and site
(:meth:`Site.cached`) and all three compartments reuse the openings; CellProfiler and a naive
per-compartment loop redo them for every object set. Step 4 never builds the upsampled
images: the "interpolate to the original grid, then average over the object" map is linear,
so each compartment precomputes one sparse ``objects x subsampled pixels`` operator and
multiplies it with the stacked openings of each channel. The openings by reconstruction
reuse one ranking of the channel's gray values (reconstruction commutes with monotone maps,
so reconstructing the ranks is exact) and skimage's own reconstruction loop with a radix
sort of 16-bit ranks, about 6x faster than ``skimage.morphology.reconstruction``, which
re-sorts floating-point values at every step; results are identical.

Deviations: the image is measured as float64, as CellProfiler's pixel data. An image whose
subsampled grid would have fewer than 2 rows or columns (or a 1-pixel-wide original) gets
NaN (CellProfiler fails there; cp_measure returns NaN). cp_measure truncates the subsampled
grid size to an integer where CellProfiler keeps ``size * subsample_size`` fractional (its
grid has ``ceil`` rows and the interpolation back uses the fractional size); this module
follows CellProfiler, and both agree whenever ``size * subsample_size`` is an integer (e.g.
1080 x 0.25).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.ndimage
import scipy.sparse
import skimage.morphology

from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site

try:  # skimage's compiled inner loop of reconstruction (scikit-image is pinned).
    from skimage.morphology._grayreconstruct import reconstruction_loop
except ImportError:  # pragma: no cover - a future scikit-image may move it
    reconstruction_loop = None

__all__ = ["GROUP", "Openings", "granularity_columns", "openings", "reconstruct_by_dilation"]

# The structuring element of the spectrum steps (CellProfiler: disk(1), the 4-neighbour cross).
_CROSS = skimage.morphology.disk(1, dtype=bool)


def _check_options(
    subsample_size: float, image_sample_size: float, element_size: int, spectrum_length: int
) -> None:
    for name, value in (
        ("subsample_size", subsample_size),
        ("image_sample_size", image_sample_size),
    ):
        if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
            raise ValueError(f"Granularity: {name} must be a positive number, got {value!r}")
    for name, value, low in (
        ("element_size", element_size, 0),
        ("spectrum_length", spectrum_length, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"Granularity: {name} must be an integer >= {low}, got {value!r}")


def granularity_columns(
    channels: Sequence[str],
    subsample_size: float = 0.25,
    image_sample_size: float = 0.25,
    element_size: int = 10,
    spectrum_length: int = 16,
) -> list[str]:
    """Column names (without the compartment prefix), in CellProfiler's order.

    Parameters
    ----------
    channels : sequence of str
        Channel names.
    subsample_size, image_sample_size, element_size : optional
        Do not change the names; accepted so the group's options can be passed through.
    spectrum_length : int, default 16
        Length of the granular spectrum.

    Returns
    -------
    list of str
        ``Granularity_{k}_{channel}`` for each channel, ``k = 1..spectrum_length``.
    """
    _check_options(subsample_size, image_sample_size, element_size, spectrum_length)
    return [f"Granularity_{k}_{c}" for c in channels for k in range(1, spectrum_length + 1)]


def reconstruct_by_dilation(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Greyscale reconstruction by dilation of integer ``seed`` under ``mask`` (4-connected).

    Same result as ``skimage.morphology.reconstruction(seed, mask, footprint=disk(1))``.

    Parameters
    ----------
    seed, mask : numpy.ndarray
        2-D non-negative integer images below 2**32 (e.g. gray-value ranks) of the same
        shape, ``seed <= mask``.

    Returns
    -------
    numpy.ndarray
        The reconstruction, ``uint32``.

    Raises
    ------
    ValueError
        If ``seed`` exceeds ``mask`` somewhere, or values are negative or too large.
    """
    seed = np.asarray(seed)
    mask = np.asarray(mask)
    if seed.shape != mask.shape or seed.ndim != 2:
        raise ValueError(f"seed and mask must be 2-D of one shape, got {seed.shape}, {mask.shape}")
    if seed.size == 0:
        return seed.astype(np.uint32)
    low, high = int(seed.min()), int(mask.max())
    if low < 0 or high > np.iinfo(np.uint32).max or np.any(seed > mask):
        raise ValueError("reconstruction needs 0 <= seed <= mask < 2**32")
    if reconstruction_loop is None:  # pragma: no cover - fallback, same result, slower
        rec = skimage.morphology.reconstruction(seed, mask, footprint=_CROSS)
        return rec.astype(np.uint32)
    # skimage's algorithm: seed and mask stacked in one array padded by one pixel of the
    # seed's minimum, every entry linked in descending rank order, then its compiled loop.
    # The loop stops at the first rank 0, which must be that minimum: the padding pixels
    # have no neighbours to visit (skimage guarantees it by ranking all values).
    height, width = mask.shape
    padded = np.zeros((2, height + 2, width + 2), dtype=np.uint32)
    padded[0, 1:-1, 1:-1] = seed - low
    padded[1, 1:-1, 1:-1] = mask - low
    ranks = padded.reshape(-1)
    # Ties may be linked in any order (skimage uses an unstable sort). numpy radix-sorts
    # 16-bit keys, several times faster than sorting floats; wider ranks take two such
    # passes (least significant half first), still about twice as fast as a quicksort.
    order = np.argsort((ranks & 0xFFFF).astype(np.uint16), kind="stable")
    if high - low > 0xFFFF:
        order = order[np.argsort((ranks[order] >> 16).astype(np.uint16), kind="stable")]
    index = np.int32 if ranks.size < np.iinfo(np.int32).max else np.int64
    order = order[::-1].astype(index)
    prev = np.full(ranks.size, -1, dtype=index)
    after = np.full(ranks.size, -1, dtype=index)
    prev[order[1:]] = order[:-1]
    after[order[:-1]] = order[1:]
    stride = width + 2
    neighbours = np.array([-stride, -1, 1, stride], dtype=index)
    plane = (height + 2) * stride
    reconstruction_loop(ranks, prev, after, neighbours, int(order[0]), plane)
    return ranks[:plane].reshape(height + 2, stride)[1:-1, 1:-1] + np.uint32(low)


@dataclass(frozen=True)
class Openings:
    """The granular spectrum openings of one channel image (shared by all compartments).

    Attributes
    ----------
    grid : tuple of int
        Shape of the subsampled grid.
    scale : tuple of float
        Factor from original to subsampled coordinates, per axis (CellProfiler's
        ``(new - 1) / (orig - 1)`` with the fractional ``new``).
    stack : numpy.ndarray or None
        ``(grid pixels, spectrum_length)`` reconstructions, flattened; ``None`` when the
        image is too small to measure.
    """

    grid: tuple[int, int]
    scale: tuple[float, float]
    stack: np.ndarray | None


def _resample(image: np.ndarray, shape: np.ndarray, factor: float) -> np.ndarray:
    """Bilinear samples at ``mgrid[0:shape] / factor`` (``shape`` may be fractional)."""
    i, j = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float) / factor
    return scipy.ndimage.map_coordinates(image, (i, j), order=1)


def _axis_scales(coarse: np.ndarray, fine: np.ndarray) -> tuple[float, float]:
    """CellProfiler's factors from fine-grid indices to coarse-grid coordinates.

    ``float(coarse - 1) / float(fine - 1)`` per axis, with CellProfiler's possibly
    fractional coarse size, so that the last fine index maps onto the coarse grid's end.
    """
    return float(coarse[0] - 1) / float(fine[0] - 1), float(coarse[1] - 1) / float(fine[1] - 1)


def _grey_opening(image: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Grey opening as CellProfiler's ``dilation(erosion(image, disk), disk)`` (skimage).

    skimage's ``reflect`` border mode reaches scipy.ndimage, which leaves its output unset
    when the footprint is more than about twice the image (garbage from ``np.empty``, e.g. a
    tiny image's background grid under the default ``disk(10)``; scipy 1.17.1). There the
    image is mirrored instead, which gives the same windows of image values.
    """
    radius = max(footprint.shape) // 2
    if min(image.shape) > radius:
        return skimage.morphology.dilation(skimage.morphology.erosion(image, footprint), footprint)
    eroded = scipy.ndimage.grey_erosion(image, footprint=footprint, mode="mirror")
    return scipy.ndimage.grey_dilation(eroded, footprint=footprint, mode="mirror")


def openings(
    image: np.ndarray,
    subsample_size: float = 0.25,
    image_sample_size: float = 0.25,
    element_size: int = 10,
    spectrum_length: int = 16,
) -> Openings:
    """Steps 1-3 of the module docstring for one channel image.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (measured as float64).
    subsample_size, image_sample_size, element_size, spectrum_length : optional
        CellProfiler's settings (defaults are its defaults).

    Returns
    -------
    Openings
        The reconstructions on the subsampled grid.
    """
    image = np.asarray(image, dtype=np.float64)
    orig_shape = np.array(image.shape)
    if subsample_size < 1:
        # CellProfiler keeps the fractional size: the grid has ceil(size) samples.
        new_shape = orig_shape * subsample_size
        pixels = _resample(image, new_shape, subsample_size)
    else:
        new_shape = orig_shape
        pixels = image.copy()
    grid = pixels.shape
    if min(grid) < 2 or min(image.shape) < 2:
        return Openings(grid, (np.nan, np.nan), None)
    scale = _axis_scales(new_shape, orig_shape)

    if image_sample_size < 1:
        back_shape = new_shape * image_sample_size
        back = _resample(pixels, back_shape, image_sample_size)
    else:
        back_shape = new_shape
        back = pixels
    disk = skimage.morphology.disk(element_size, dtype=bool)
    back = _grey_opening(back, disk)
    if image_sample_size < 1:
        scale_r, scale_c = _axis_scales(back_shape, new_shape)
        i, j = np.mgrid[0 : new_shape[0], 0 : new_shape[1]].astype(float)
        back = scipy.ndimage.map_coordinates(back, (i * scale_r, j * scale_c), order=1)
    pixels -= back
    pixels[pixels < 0] = 0

    # Erosion and reconstruction only compare values, so they run on the ranks of the gray
    # values (exact), sorted once instead of at every step.
    values, ranks = np.unique(pixels, return_inverse=True)
    ranks = ranks.reshape(grid).astype(np.uint32)
    stack = np.empty((pixels.size, spectrum_length))
    eroded = ranks
    for k in range(spectrum_length):
        eroded = _erode_cross(eroded)
        stack[:, k] = values[reconstruct_by_dilation(eroded, ranks).ravel()]
    return Openings(grid, scale, stack)


def _erode_cross(ranks: np.ndarray) -> np.ndarray:
    """``skimage.morphology.erosion(ranks, footprint=disk(1))`` of ``uint32`` ranks.

    By OpenCV (7x faster on the subsampled grid) on the ranks as float32, exact below
    2**24 (any grid under 16.7 million pixels); skimage's ``reflect`` border repeats the
    edge pixel for a radius-1 element, as OpenCV's replicated border.
    """
    if ranks.size and int(ranks.max()) >= 2**24:  # pragma: no cover - grids of 16.7 Mpx
        return skimage.morphology.erosion(ranks, footprint=_CROSS)
    import cv2  # imported on first use, as in cellstrata.segment.classical

    kernel = _CROSS.astype(np.uint8)
    eroded = cv2.erode(ranks.astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    return eroded.astype(np.uint32)


def _restore_mean_operator(
    objects: CompartmentObjects, spectrum: Openings
) -> scipy.sparse.csr_matrix:
    """Sparse ``(n_objects, grid pixels)`` map: grid image -> per-object sum of its bilinear
    interpolation at the objects' original pixels (CellProfiler's ``map_coordinates``).

    Pixels whose coordinate rounds past the grid's last sample are 0 there (map_coordinates'
    constant mode) but still count in the object's pixel count.
    """
    rows_n, cols_n = spectrum.grid
    scale_r, scale_c = spectrum.scale
    width = objects.shape[1]
    # The same float products as CellProfiler's ``mgrid * ((new - 1) / (orig - 1))``.
    r = (objects.pixels // width).astype(np.float64) * scale_r
    c = (objects.pixels % width).astype(np.float64) * scale_c
    inside = (r <= rows_n - 1) & (c <= cols_n - 1)
    r, c, obj = r[inside], c[inside], objects.pixel_object[inside]
    r0 = np.floor(r).astype(np.intp)
    c0 = np.floor(c).astype(np.intp)
    fr, fc = r - r0, c - c0
    r1 = np.minimum(r0 + 1, rows_n - 1)
    c1 = np.minimum(c0 + 1, cols_n - 1)

    # A COO matrix sums the ~4 entries per pixel into (object, grid pixel) weights. (A faster
    # per-object-window bincount layout was tried; its index arithmetic could point outside
    # the grid, and scipy's sparse product reads such indices unchecked: non-deterministic
    # results.)
    columns = np.concatenate(
        [rr * cols_n + cc for rr, cc in ((r0, c0), (r0, c1), (r1, c0), (r1, c1))]
    )
    weights = np.concatenate([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])
    return scipy.sparse.coo_matrix(
        (weights, (np.tile(obj, 4), columns)), shape=(objects.n_objects, rows_n * cols_n)
    ).tocsr()


def measure_granularity(
    objects: CompartmentObjects,
    site: Site,
    subsample_size: float = 0.25,
    image_sample_size: float = 0.25,
    element_size: int = 10,
    spectrum_length: int = 16,
) -> dict[str, np.ndarray]:
    """All granularity columns of one compartment, keyed by column suffix.

    Parameters
    ----------
    objects : CompartmentObjects
        One compartment: only its per-object sums are computed here.
    site : Site
        Images and cache: :func:`openings` runs once per channel and site.
    subsample_size, image_sample_size, element_size, spectrum_length : optional
        CellProfiler's settings (defaults are its defaults).

    Returns
    -------
    dict of str to numpy.ndarray
        ``{suffix: values per object row}`` for :func:`granularity_columns`.
    """
    settings = (subsample_size, image_sample_size, element_size, spectrum_length)
    names = granularity_columns(site.channels, *settings)
    n = objects.n_objects
    out = {name: np.full(n, np.nan) for name in names}
    if not objects.present.any():
        return out
    ok = objects.present
    counts = objects.counts[ok].astype(np.float64)
    operators: dict[tuple, scipy.sparse.csr_matrix] = {}
    for channel, image in site.images.items():
        spectrum = site.cached(
            ("Granularity", channel, *settings), lambda image=image: openings(image, *settings)
        )
        if spectrum.stack is None:
            continue
        key = (spectrum.grid, spectrum.scale)
        if key not in operators:
            operators[key] = _restore_mean_operator(objects, spectrum)[ok]
        values = np.asarray(image, dtype=np.float64).ravel()[objects.pixels]
        # Per-object mean of the original image, summed in raster order like ndimage.mean.
        means = np.empty((counts.size, spectrum_length + 1))
        means[:, 0] = np.bincount(objects.pixel_object, values, minlength=n)[ok] / counts
        means[:, 1:] = (operators[key] @ spectrum.stack) / counts[:, None]
        start = np.maximum(means[:, 0], np.finfo(float).eps)
        spectrum_values = (means[:, :-1] - means[:, 1:]) * 100 / start[:, None]
        for k in range(spectrum_length):
            out[f"Granularity_{k + 1}_{channel}"][ok] = spectrum_values[:, k]
    return out


#: The ``Granularity`` feature group (CellProfiler's default settings).
GROUP = FeatureGroup(
    "Granularity",
    granularity_columns,
    measure_granularity,
    options={
        "subsample_size": 0.25,
        "image_sample_size": 0.25,
        "element_size": 10,
        "spectrum_length": 16,
    },
)

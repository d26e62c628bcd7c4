"""Classical (CPU, weight-free) segmentation of nuclei, cells and cytoplasm.

CellProfiler-like: ``IdentifyPrimaryObjects`` (global threshold, hole filling, size filter,
shape-based declumping) for nuclei and ``IdentifySecondaryObjects`` (propagation from the
nuclei) for cells. Arrays in, label images out; nothing here reads files or Snakemake state.

Label images are ``int32`` with background 0. Cell ``k`` and cytoplasm ``k`` are always the
same object as nucleus ``k``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import sobel, threshold_li, threshold_otsu, threshold_triangle
from skimage.measure import label as cc_label
from skimage.measure import regionprops
from skimage.morphology import h_maxima
from skimage.segmentation import clear_border, expand_labels, relabel_sequential, watershed

from cellstrata.io import site_file, write_labels

log = logging.getLogger(__name__)

__all__ = [
    "THRESHOLD_METHODS",
    "cytoplasm",
    "default_min_area",
    "estimate_diameter",
    "segment_cells",
    "segment_nuclei",
    "segment_site",
]

THRESHOLD_METHODS: dict[str, Callable[[np.ndarray], float]] = {
    "otsu": threshold_otsu,
    "li": threshold_li,
    "triangle": threshold_triangle,
}

# Empty-field guard (see `_noise_floor`). Default for `min_contrast`: the median foreground must
# exceed the median background by this many pixel-noise standard deviations (of the smoothed
# image). Otsu on white noise scores ~1.4; the 20 DSB2018 dev images score 13-400.
DEFAULT_MIN_CONTRAST = 5.0
# Second guard criterion, the same step in units of the background's own spread (lower-side
# MAD of the below-threshold pixels). Catches what is smooth but not bimodal, such as correlated
# noise or an illumination gradient (uniform intensity distribution: 2.7); the densest, haziest
# DSB2018 dev image scores ~5.
_MIN_SEPARATION = 3.0
# Sparse fields (a few nuclei; Otsu splits the noise instead): objects exist if at least this
# many pixels, and at most this fraction of them, are `min_contrast` noise sd above the median.
_MIN_SPARSE_PIXELS = 16
_MAX_SPARSE_FRACTION = 0.1
# Declumping: the smallest dynamic (in px of distance transform, per px of diameter) a seed
# needs; two discs overlapping by 30 % of the diameter have a dynamic of ~0.1 * diameter.
DECLUMP_H = 1.0 / 40.0
# Default `min_area`: a disc of this fraction of the typical diameter (0.4 -> 16 % of the area).
MIN_AREA_DIAMETER_FRACTION = 0.4

_MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"{name} must be numeric; got dtype {image.dtype}")
    return image


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype; got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must not contain negative labels")
    return labels


def _normalize(image: np.ndarray) -> np.ndarray:
    """Float32 copy scaled so that the maximum is 1 (minimum 0 if the image has negatives).

    Dividing by the maximum (not min-max stretching) keeps zero at zero, so the threshold
    correction factor keeps CellProfiler's meaning while uint8, uint16 and float versions of
    the same picture give identical arrays.
    """
    img = image.astype(np.float32, copy=True)
    finite = np.isfinite(img)
    if not finite.all():
        # NaN/inf can appear after illumination correction divides by ~0; treat as background.
        fill = float(np.median(img[finite])) if finite.any() else 0.0
        img[~finite] = fill
    lo = float(img.min(initial=0.0))
    if lo < 0:
        img -= lo
    hi = float(img.max(initial=0.0))
    if hi > 0:
        img /= hi
    return img


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0:
        raise ValueError(f"smoothing_sigma must be >= 0; got {sigma}")
    if sigma == 0:
        return image
    return ndi.gaussian_filter(image, sigma, mode="nearest")


def _noise_sd(smoothed: np.ndarray, smoothing_sigma: float) -> float:
    """Robust standard deviation of the pixel noise left in the smoothed image.

    Differences between pixels ``lag`` apart cancel smooth background and object interiors,
    leaving noise (variance doubled) plus a minority of object edges. The lag (3 sigma + 2)
    exceeds the correlation length of the smoothed noise, so the estimate also holds for
    noise that was already correlated (binned, resampled). The RMS of the smallest half of
    the differences ignores edges and texture even in dense fields; on coarsely quantized
    unsmoothed images, where that half may be all zeros, the smallest 80 % or all are used.
    """
    lag = int(np.ceil(3 * smoothing_sigma)) + 2
    diffs = np.concatenate(
        [
            (smoothed[lag:, :] - smoothed[:-lag, :]).ravel(),
            (smoothed[:, lag:] - smoothed[:, :-lag]).ravel(),
        ]
    ).astype(np.float64)
    if diffs.size == 0:
        return 0.0
    mag = np.abs(diffs)
    # (fraction kept, sd of a standard normal restricted to that central fraction)
    for fraction, sd_kept in ((0.5, 0.3774), (0.8, 0.6610), (1.0, 1.0)):
        kept = diffs[mag <= np.quantile(mag, fraction)]
        rms = float(np.sqrt(np.mean(kept**2)))
        if rms > 0:
            return rms / sd_kept / np.sqrt(2.0)
    return 0.0


def _check_threshold_args(method: str, correction: float) -> None:
    if method not in THRESHOLD_METHODS:
        raise ValueError(
            f"unknown threshold_method {method!r}; choose one of {sorted(THRESHOLD_METHODS)}"
        )
    if not correction > 0:
        raise ValueError(f"threshold_correction must be > 0; got {correction}")


def _foreground(
    normalized: np.ndarray,
    smoothing_sigma: float,
    method: str,
    correction: float,
    min_contrast: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask (all False for an "empty" field) and the smoothed image.

    A global threshold always splits *something*: Otsu halves pure noise. So the field must
    first pass the guard (:func:`_noise_floor`), and the threshold is never below the noise
    floor it returns. ``min_contrast <= 0`` disables both.
    """
    _check_threshold_args(method, correction)
    smoothed = _smooth(normalized, smoothing_sigma)
    empty = np.zeros(smoothed.shape, dtype=bool)
    if smoothed.size == 0 or float(smoothed.max()) - float(smoothed.min()) <= 1e-6:
        return empty, smoothed  # flat field: nothing to find, and thresholds would fail
    floor = -np.inf
    if min_contrast > 0:
        noise = _noise_sd(smoothed, smoothing_sigma)
        found = _noise_floor(smoothed.ravel(), noise, min_contrast)
        if found is None:
            return empty, smoothed
        floor = found
    threshold = max(float(THRESHOLD_METHODS[method](smoothed)) * correction, floor)
    return smoothed > threshold, smoothed


def _noise_floor(values: np.ndarray, noise: float, min_contrast: float) -> float | None:
    """Empty-field guard: ``None`` if ``values`` hold no objects, else a minimum threshold.

    ``noise`` is the pixel-noise sd of the smoothed image (:func:`_noise_sd`). The field
    holds objects if either

    * *bimodal*: the Otsu split of ``values`` (whatever the threshold method) has a step
      ``median(above) - median(below)`` of at least ``min_contrast * noise`` and at least
      ``_MIN_SEPARATION`` times the lower class's own spread (1.4826 * its lower-side MAD),
      which rejects smooth unimodal fields such as gradients or correlated noise; white
      noise scores a step of ~1.35 noise sd; or
    * *sparse*: Otsu misses a few objects in a large field (it splits the noise instead),
      but some pixels, at most ``_MAX_SPARSE_FRACTION`` of them and at least
      ``_MIN_SPARSE_PIXELS``, lie ``min_contrast * noise`` above the median.

    The floor returned is the background level plus ``min_contrast * noise``, so that a
    low threshold (triangle, a small correction factor) never cuts through the noise.
    """
    if values.size < 2 or float(values.max()) - float(values.min()) <= 1e-6:
        return None
    split = float(threshold_otsu(values))
    above = values > split
    fg_values, bg_values = values[above], values[~above]
    if fg_values.size and bg_values.size:
        bg_level = float(np.median(bg_values))
        step = float(np.median(fg_values)) - bg_level
        # Lower side only: dim objects just below the split would inflate the upper side.
        lower = bg_values[bg_values < bg_level]
        spread = _MAD_TO_SD * float(np.median(bg_level - lower)) if lower.size else 0.0
        # Noiseless synthetic images have noise == 0: any positive step is real contrast.
        if step > 0 and step >= min_contrast * noise and step >= _MIN_SEPARATION * spread:
            return bg_level + min_contrast * noise
    if noise <= 0:
        return None
    floor = float(np.median(values)) + min_contrast * noise
    n_bright = int(np.count_nonzero(values > floor))
    if _MIN_SPARSE_PIXELS <= n_bright <= _MAX_SPARSE_FRACTION * values.size:
        return floor
    return None


def _fill_small_holes(mask: np.ndarray, max_hole: float) -> np.ndarray:
    """Fill background holes up to ``max_hole`` pixels.

    Only small holes: filling every hole would also fill the background enclosed by a ring of
    touching nuclei.
    """
    holes = ~mask
    lab, n = ndi.label(holes)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    small = sizes <= max_hole
    small[0] = False
    # Holes touching the image edge are open background, not holes.
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    small[edge] = False
    return mask | small[lab]


def _remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 1 or labels.max(initial=0) == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    drop = sizes < min_area
    drop[0] = False
    if drop.any():
        labels = labels.copy()
        labels[drop[labels]] = 0
    return labels


def _declump(mask: np.ndarray, diameter: float) -> np.ndarray:
    """Split touching nuclei: watershed of the smoothed distance transform from its maxima.

    Seeds are the h-maxima of the distance transform (smoothed with sigma ``diameter / 20``
    so ragged edges add no maxima) whose dynamic is >= ``DECLUMP_H * diameter`` px, i.e. the
    neck between two nuclei must be at least that much narrower than the thinner of them,
    and that contain a local maximum at least ``diameter / 4`` px from any higher one, so an
    elongated nucleus with a flat ridge gets one seed. A plateau of h-maxima is one seed.
    """
    components, n = ndi.label(mask)
    if n == 0:
        return components.astype(np.int32)
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    dist = ndi.gaussian_filter(dist, max(diameter / 20.0, 0.5))
    peaks = peak_local_max(
        dist, min_distance=max(1, round(diameter / 4.0)), labels=components, exclude_border=False
    )
    hmax = h_maxima(dist, DECLUMP_H * diameter).astype(bool) & mask
    hlab, _ = ndi.label(hmax, structure=np.ones((3, 3)))
    keep = np.unique(hlab[peaks[:, 0], peaks[:, 1]]) if len(peaks) else np.array([0])
    keep = keep[keep > 0]
    markers = np.zeros(mask.shape, dtype=np.int32)
    if keep.size:
        sel = np.isin(hlab, keep)
        markers[sel] = hlab[sel]
    labels = watershed(-dist, markers, mask=mask)
    # Components with no accepted seed (tiny or flat ones) keep their own label.
    missing = mask & (labels == 0)
    if missing.any():
        extra, _ = ndi.label(missing)
        labels = np.where(missing, extra + labels.max(initial=0), labels)
    return labels.astype(np.int32)


def _sequential(labels: np.ndarray) -> np.ndarray:
    relabelled, _, _ = relabel_sequential(labels.astype(np.int32, copy=False))
    return relabelled.astype(np.int32, copy=False)


# --------------------------------------------------------------------------------------------
# nuclei
# --------------------------------------------------------------------------------------------


def default_min_area(diameter: float) -> int:
    """Default smallest nucleus area in pixels: a disc of 0.4 times the typical ``diameter``.

    ``pi * (0.2 * diameter) ** 2``, i.e. 16 % of the typical nucleus area; smaller pieces
    are debris, micronuclei, fragments or noise.
    """
    return max(1, int(np.pi * (MIN_AREA_DIAMETER_FRACTION * diameter / 2.0) ** 2))


def estimate_diameter(
    image: np.ndarray,
    *,
    smoothing_sigma: float = 1.0,
    threshold_method: str = "otsu",
    threshold_correction: float = 1.0,
    default: float = 20.0,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
) -> float:
    """Estimate the typical nucleus diameter of ``image`` from the image alone.

    Thresholds as :func:`segment_nuclei` does, then takes the median equivalent diameter of
    the convex-looking (solidity >= 0.9) connected components of at least 16 px; clumps of
    touching nuclei are rarely convex, so they do not inflate the estimate.

    Parameters
    ----------
    image : np.ndarray
        2-D nuclear stain image (any numeric dtype).
    smoothing_sigma, threshold_method, threshold_correction, min_contrast
        As in :func:`segment_nuclei`.
    default : float
        Returned when no usable object is found (e.g. an empty field).

    Returns
    -------
    float
        The estimated diameter in pixels.
    """
    image = _check_image(image, "image")
    mask, _ = _foreground(
        _normalize(image), smoothing_sigma, threshold_method, threshold_correction, min_contrast
    )
    return _diameter_from_mask(mask, default)


def _diameter_from_mask(mask: np.ndarray, default: float) -> float:
    components, n = ndi.label(mask)
    if n == 0:
        return float(default)
    diameters = [
        r.equivalent_diameter_area
        for r in regionprops(components)
        if r.area >= 16 and r.solidity >= 0.9
    ]
    if not diameters:
        return float(default)
    return float(np.median(diameters))


def segment_nuclei(
    image: np.ndarray,
    *,
    diameter: float | None = 20.0,
    smoothing_sigma: float = 1.0,
    threshold_method: str = "otsu",
    threshold_correction: float = 1.0,
    min_area: int | None = None,
    max_area: int | None = None,
    declump: bool = True,
    remove_border: bool = False,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
) -> np.ndarray:
    """Segment nuclei in a nuclear stain (DNA/Hoechst/DAPI) image.

    Steps: scale to [0, 1] by the maximum, Gaussian smoothing, empty-field guard, global
    threshold (times ``threshold_correction``, never below the guard's noise floor), filling
    of holes up to the area of a typical nucleus, removal of pieces below ``min_area``,
    distance-transform watershed declumping, size filters again, optional removal of
    objects touching the border, sequential relabelling 1..N.

    Parameters
    ----------
    image : np.ndarray
        2-D image, any numeric dtype (uint8, uint16, float in [0, 1] or illumination-corrected
        floats); results do not depend on the intensity scale.
    diameter : float or None, default 20.0
        Typical nucleus diameter in pixels; sets the hole size, the default ``min_area`` and
        the declumping scale. ``None`` estimates it with :func:`estimate_diameter`.
    smoothing_sigma : float, default 1.0
        Gaussian sigma (pixels) applied before thresholding; 0 disables smoothing.
    threshold_method : {"otsu", "li", "triangle"}, default "otsu"
        Global threshold from :mod:`skimage.filters`.
    threshold_correction : float, default 1.0
        Factor multiplying the threshold (in units of the image scaled so its maximum is 1).
    min_area : int, optional
        Objects with fewer pixels are removed. Default :func:`default_min_area` of
        ``diameter``: ``pi * (0.2 * diameter) ** 2`` (a disc of 0.4 times the diameter).
    max_area : int, optional
        Objects with more pixels are removed (after declumping). Default: no limit.
    declump : bool, default True
        Split touching nuclei with a shape (distance-transform) watershed.
    remove_border : bool, default False
        Remove objects touching the image border.
    min_contrast : float, default 5.0
        Empty-field guard, in units of the pixel-noise sd of the smoothed image (estimated
        from differences of pixels a few sigma apart). The field holds objects only if the
        Otsu split's ``median(above) - median(below)`` is at least ``min_contrast`` noise sd
        and 3 times the spread of the lower class (pure noise: ~1.4 sd; a gradient: 2.7
        spreads; DSB2018 nuclei: 13-400 sd), or, for sparse fields where Otsu splits the
        noise, if 16 px to 10 % of the image lie ``min_contrast`` sd above the median.
        Otherwise no objects are returned. The threshold is also never set below background
        + ``min_contrast`` sd. ``0`` disables both.

    Returns
    -------
    np.ndarray
        ``int32`` label image of ``image``'s shape, nuclei labelled 1..N, background 0.
    """
    image = _check_image(image, "image")
    if diameter is not None and not diameter > 0:
        raise ValueError(f"diameter must be > 0 or None; got {diameter}")
    mask, _ = _foreground(
        _normalize(image), smoothing_sigma, threshold_method, threshold_correction, min_contrast
    )
    if not mask.any():
        return np.zeros(image.shape, dtype=np.int32)
    if diameter is None:
        diameter = _diameter_from_mask(mask, default=20.0)
    if min_area is None:
        min_area = default_min_area(diameter)
    mask = _fill_small_holes(mask, np.pi * (diameter / 2.0) ** 2)
    # Drop debris before declumping so it cannot seed markers.
    components, _ = ndi.label(mask)
    components = _remove_small(components, min_area)
    mask = components > 0

    labels = _declump(mask, diameter) if declump else components
    labels = _remove_small(labels, min_area)
    if remove_border:
        labels = clear_border(labels)
    if max_area is not None and labels.max(initial=0) > 0:
        sizes = np.bincount(labels.ravel())
        big = sizes > max_area
        big[0] = False
        labels = np.where(big[labels], 0, labels)
    return _sequential(labels)


# --------------------------------------------------------------------------------------------
# cells and cytoplasm
# --------------------------------------------------------------------------------------------


def _keep_nucleated(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Zero pieces of cells that are not connected to their own nucleus."""
    pieces = cc_label(cells, connectivity=1, background=0)
    keep = np.zeros(int(pieces.max(initial=0)) + 1, dtype=bool)
    keep[np.unique(pieces[nuclei > 0])] = True
    keep[0] = False
    return np.where(keep[pieces], cells, 0)


def segment_cells(
    nuclei: np.ndarray,
    image: np.ndarray | None = None,
    *,
    expansion: int = 10,
    smoothing_sigma: float = 1.0,
    threshold_method: str = "otsu",
    threshold_correction: float = 1.0,
    max_distance: int = 50,
    compactness: float = 0.01,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
) -> np.ndarray:
    """Grow cells from nuclei, optionally guided by a cytoplasm/actin image.

    Without ``image``: :func:`skimage.segmentation.expand_labels` by ``expansion`` pixels
    (capped at ``max_distance``). With ``image``: foreground = smoothed image above the
    threshold (union the nuclei), restricted to ``max_distance`` px from a nucleus; then a
    marker watershed on the Sobel gradient of the smoothed image with the nuclei as markers.
    ``compactness`` adds a distance-to-nucleus penalty, like the regularisation of
    CellProfiler's "Propagation", so cells stop at edges but fill flat regions fairly. If the
    image fails the empty-field guard (no contrast), falls back to expansion.

    Parameters
    ----------
    nuclei : np.ndarray
        2-D integer label image of nuclei (labels need not be sequential).
    image : np.ndarray, optional
        2-D cytoplasm/actin image of the same shape, any numeric dtype.
    expansion : int, default 10
        Expansion distance in pixels for the no-image mode (and the no-contrast fallback).
    smoothing_sigma : float, default 1.0
        Gaussian sigma applied to ``image``.
    threshold_method : {"otsu", "li", "triangle"}, default "otsu"
        Global threshold for the cell foreground.
    threshold_correction : float, default 1.0
        Factor multiplying the threshold.
    max_distance : int, default 50
        No cell pixel is farther than this (Euclidean, px) from its nucleus.
    compactness : float, default 0.01
        Compact-watershed weight on the distance from the nucleus; 0 is a plain watershed.
    min_contrast : float, default 5.0
        Empty-field guard, as in :func:`segment_nuclei`; a cell image that fails it is
        treated as absent (expansion fallback).

    Returns
    -------
    np.ndarray
        ``int32`` label image: cell ``k`` contains every pixel of nucleus ``k``, and the set
        of cell labels equals the set of nucleus labels.
    """
    nuclei = _check_labels(nuclei, "nuclei")
    if expansion < 0 or max_distance < 0:
        raise ValueError("expansion and max_distance must be >= 0")
    nuclei = nuclei.astype(np.int32, copy=False)
    if nuclei.max(initial=0) == 0:
        return np.zeros(nuclei.shape, dtype=np.int32)
    if image is None:
        return _expand(nuclei, min(expansion, max_distance))

    image = _check_image(image, "image")
    if image.shape != nuclei.shape:
        raise ValueError(f"image shape {image.shape} != nuclei shape {nuclei.shape}")
    fg, smoothed = _foreground(
        _normalize(image), smoothing_sigma, threshold_method, threshold_correction, min_contrast
    )
    if not fg.any():
        return _expand(nuclei, min(expansion, max_distance))
    within = ndi.distance_transform_edt(nuclei == 0) <= max_distance
    mask = (fg & within) | (nuclei > 0)
    # Gradient scaled by the typical foreground intensity so `compactness` does not depend
    # on the brightness of the stain.
    scale = float(np.median(smoothed[fg])) or 1.0
    landscape = sobel(smoothed) / scale
    cells = watershed(landscape, markers=nuclei, mask=mask, compactness=compactness)
    cells = np.where(nuclei > 0, nuclei, cells)  # a nucleus belongs to its own cell
    cells = _limit_distance(cells, nuclei, max_distance)
    return _keep_nucleated(cells, nuclei).astype(np.int32, copy=False)


def _limit_distance(cells: np.ndarray, nuclei: np.ndarray, max_distance: float) -> np.ndarray:
    """Zero cell pixels farther than ``max_distance`` from their *own* nucleus.

    The foreground mask only bounds the distance to the nearest nucleus; a cell can flood
    past a neighbour's nucleus. Each cell's bounding box holds its whole nucleus (nuclear
    pixels are forced into their cell), so a distance transform inside the box is exact.
    """
    cells = cells.copy()
    for k, box in enumerate(ndi.find_objects(cells), start=1):
        if box is None:
            continue
        extent = np.hypot(box[0].stop - box[0].start, box[1].stop - box[1].start)
        if extent <= max_distance:
            continue  # nothing in the box can be that far from anything in it
        dist = ndi.distance_transform_edt(nuclei[box] != k)
        cell_box = cells[box]
        cell_box[(cell_box == k) & (dist > max_distance)] = 0
    return cells


def _expand(nuclei: np.ndarray, distance: int) -> np.ndarray:
    cells = expand_labels(nuclei, distance) if distance > 0 else nuclei.copy()
    return cells.astype(np.int32, copy=False)


def cytoplasm(nuclei: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Cytoplasm label image: ``cells`` with all nuclear pixels removed.

    Parameters
    ----------
    nuclei, cells : np.ndarray
        2-D integer label images of the same shape, cell ``k`` matching nucleus ``k``.

    Returns
    -------
    np.ndarray
        ``int32`` labels; cytoplasm ``k`` is cell ``k`` minus every nucleus. A cell that is all
        nucleus has no cytoplasm pixels.
    """
    nuclei = _check_labels(nuclei, "nuclei")
    cells = _check_labels(cells, "cells")
    if nuclei.shape != cells.shape:
        raise ValueError(f"nuclei shape {nuclei.shape} != cells shape {cells.shape}")
    return np.where(nuclei > 0, 0, cells).astype(np.int32, copy=False)


# --------------------------------------------------------------------------------------------
# one site
# --------------------------------------------------------------------------------------------


def _keyword_names(func: Callable[..., Any]) -> set[str]:
    return {
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _check_params(
    params: Mapping[str, Any] | None, func: Callable[..., Any], what: str
) -> dict[str, Any]:
    params = dict(params or {})
    allowed = _keyword_names(func)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {what} key(s): {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return params


def segment_site(
    nuclei_image: np.ndarray,
    cell_image: np.ndarray | None = None,
    *,
    nuclei_params: Mapping[str, Any] | None = None,
    cell_params: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Segment one imaging site into nuclei, cells and cytoplasm.

    Parameters
    ----------
    nuclei_image : np.ndarray
        2-D nuclear stain image.
    cell_image : np.ndarray, optional
        2-D cytoplasm/actin image; ``None`` grows cells by expansion.
    nuclei_params : Mapping, optional
        Keyword arguments for :func:`segment_nuclei`.
    cell_params : Mapping, optional
        Keyword arguments for :func:`segment_cells`.

    Returns
    -------
    dict of str to np.ndarray
        ``{"nuclei", "cells", "cytoplasm"}`` int32 label images sharing object IDs.

    Raises
    ------
    ValueError
        If a params mapping has a key the target function does not accept (named in the
        message).
    """
    nuclei_kw = _check_params(nuclei_params, segment_nuclei, "nuclei_params")
    cell_kw = _check_params(cell_params, segment_cells, "cell_params")
    nuclei = segment_nuclei(nuclei_image, **nuclei_kw)
    cells = segment_cells(nuclei, cell_image, **cell_kw)
    return {"nuclei": nuclei, "cells": cells, "cytoplasm": cytoplasm(nuclei, cells)}


def check_site_params(
    nuclei_params: Mapping[str, Any] | None = None, cell_params: Mapping[str, Any] | None = None
) -> None:
    """Raise ValueError naming any key :func:`segment_site` would not accept."""
    _check_params(nuclei_params, segment_nuclei, "nuclei_params")
    _check_params(cell_params, segment_cells, "cell_params")


def segment_batch(
    corrected_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    nuclei_channel: str,
    cell_channel: str | None = None,
    nuclei: Mapping[str, Any] | None = None,
    cells: Mapping[str, Any] | None = None,
    method: str = "classical",
) -> list[Path]:
    """Segment every corrected site of one job into label TIFFs.

    The keyword arguments are one segmentation version of the config
    (:func:`cellstrata.config.segmentation_versions`).

    Parameters
    ----------
    corrected_dir : path
        Corrected site stacks ``{well}_s{site}.tiff``.
    out_dir : path
        Receives ``{well}_s{site}_{nuclei,cells,cytoplasm}.tiff`` (uint16/uint32, zlib).
    nuclei_channel, cell_channel : str
        Channel names of the nuclear stain and of the stain cells grow on (None: expansion).
    nuclei, cells : Mapping, optional
        Keyword arguments of :func:`segment_nuclei` and :func:`segment_cells`.
    method : {"classical"}
        Segmentation method.

    Returns
    -------
    list of pathlib.Path
        Written label files.
    """
    from cellstrata.illumination import iter_corrected_sites

    if method != "classical":
        raise ValueError(f"unknown segmentation method {method!r}")
    check_site_params(nuclei, cells)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for well, site, images in iter_corrected_sites(corrected_dir):
        for channel in (nuclei_channel, cell_channel):
            if channel is not None and channel not in images:
                raise ValueError(
                    f"{corrected_dir} well {well} site {site}: no channel {channel!r} "
                    f"(has {list(images)})"
                )
        masks = segment_site(
            images[nuclei_channel],
            images[cell_channel] if cell_channel else None,
            nuclei_params=nuclei,
            cell_params=cells,
        )
        for compartment, labels in masks.items():
            target = out_dir / site_file(well, site, f"_{compartment}")
            write_labels(target, labels)
            written.append(target)
        log.info("well %s site %d: %d nuclei", well, site, int(masks["nuclei"].max()))
    return written

"""MeasureTexture: Haralick's co-occurrence features per object, channel, scale and direction.

Follows CellProfiler 4.2's MeasureTexture (as packaged in cp_measure 0.3.0, which calls
``mahotas.features.haralick(crop, distance=scale, ignore_zeros=True)`` on each object's crop):

* the whole image is quantised once, ``skimage.util.img_as_ubyte`` (floats in [0, 1] map to
  ``rint(255 x)``), then for ``gray_levels != 256`` rescaled from the fixed range 0..255 to
  0..``gray_levels - 1`` and truncated -- no per-image or per-object stretching;
* each object's gray-level co-occurrence matrix (GLCM) for the offset ``scale * (dy, dx)``
  counts the pixel pairs with both pixels in the object, symmetrically (each pair adds to
  ``(i, j)`` and ``(j, i)``); pairs with a zero gray level are ignored (``ignore_zeros``);
* directions ``00``..``03`` are mahotas' offsets ``(0, 1)`` horizontal, ``(1, 1)`` diagonal
  NW-SE, ``(1, 0)`` vertical and ``(1, -1)`` diagonal NE-SW (``(dy, dx)`` times the scale);
* the 13 features are mahotas' (corrected Haralick: ``SumVariance`` uses ``SumAverage``;
  ``DifferenceVariance`` is the variance of the difference histogram over its
  ``max gray level + 1`` bins; ``Correlation`` is 1 where the marginal variance is 0;
  ``InfoMeas1`` is not divided when the marginal entropy is 0);
* an object with no valid pair in *any* direction (smaller than the scale, or dark enough to
  quantise to 0) gets NaN for all its features at that scale, as CellProfiler (mahotas raises
  and CellProfiler writes NaN). A constant non-zero object with pairs gets finite values
  (ASM 1, Contrast 0, Correlation 1, entropies 0).

Columns are ``Texture_{feature}_{channel}_{scale}_{direction:02d}_{gray_levels}``.

Vectorised: per compartment and direction the valid same-object pixel pairs are found once
for all channels (CellProfiler crops and loops per object); per channel the dense 256 x 256
GLCMs are never built. One sort of integer ``(object, low level, high level)`` keys gives the
non-empty GLCM cells of all objects and their counts; ``AngularSecondMoment`` and ``Entropy``
sum over those cells, and the marginal, sum and difference histograms that the other
features need are ``bincount`` s of the cells over ``object x gray level``. The
mutual-information terms use ``HXY1 = HXY2 = HX + HY``, which holds exactly for mahotas'
definitions (the marginals of a symmetric GLCM are equal), so values agree with CellProfiler
to rounding (relative differences of at most ~1e-11 against cp_measure).

Deviations: float images outside [-1, 1] (which ``img_as_ubyte`` rejects, so CellProfiler
stops) are clipped to [0, 1] before quantising; non-finite pixels quantise to 0 (ignored).
Integer images are scaled by their dtype's range first, like CellProfiler's image loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import numpy as np
import skimage.exposure
import skimage.util

from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site

__all__ = ["DIRECTIONS", "GROUP", "TEXTURE_FEATURES", "haralick", "quantize", "texture_columns"]

#: Haralick features in CellProfiler's order (``Texture_{feature}_...``).
TEXTURE_FEATURES = (
    "AngularSecondMoment",
    "Contrast",
    "Correlation",
    "Variance",
    "InverseDifferenceMoment",
    "SumAverage",
    "SumVariance",
    "SumEntropy",
    "Entropy",
    "DifferenceVariance",
    "DifferenceEntropy",
    "InfoMeas1",
    "InfoMeas2",
)

#: 2-D co-occurrence offsets ``(dy, dx)`` of directions 00..03 (mahotas' ``_2d_deltas``).
DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1))


def _check_options(scales: Sequence[int], gray_levels: int) -> tuple[list[int], int]:
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
        raise ValueError(f"Texture: scales must be a non-empty list of integers, got {scales!r}")
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, Integral) or scale < 1:
            raise ValueError(f"Texture: scales must be positive integers, got {scale!r}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"Texture: duplicate scale in {list(scales)}")
    if (
        isinstance(gray_levels, bool)
        or not isinstance(gray_levels, Integral)
        or not 2 <= gray_levels <= 256
    ):
        raise ValueError(f"Texture: gray_levels must be an integer in 2..256, got {gray_levels!r}")
    return [int(s) for s in scales], int(gray_levels)


def texture_columns(
    channels: Sequence[str], scales: Sequence[int] = (3,), gray_levels: int = 256
) -> list[str]:
    """Column names (without the compartment prefix), in CellProfiler's order.

    Parameters
    ----------
    channels : sequence of str
        Channel names.
    scales : sequence of int, default (3,)
        Co-occurrence distances in pixels.
    gray_levels : int, default 256
        Number of gray levels the image is quantised to.

    Returns
    -------
    list of str
        ``Texture_{feature}_{channel}_{scale}_{direction:02d}_{gray_levels}``.
    """
    scales, gray_levels = _check_options(scales, gray_levels)
    return [
        f"Texture_{feature}_{channel}_{scale}_{direction:02d}_{gray_levels}"
        for feature in TEXTURE_FEATURES
        for channel in channels
        for scale in scales
        for direction in range(len(DIRECTIONS))
    ]


def quantize(image: np.ndarray, gray_levels: int = 256) -> np.ndarray:
    """The whole image's gray levels as CellProfiler's MeasureTexture computes them.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image; floats are expected in [0, 1] (values outside are clipped, non-finite
        values become 0); integer images are first scaled to [0, 1] by their dtype's range,
        as CellProfiler does when it loads them.
    gray_levels : int, default 256
        Number of levels, 2..256.

    Returns
    -------
    numpy.ndarray
        ``uint8`` image with values in ``0..gray_levels - 1``; 0 is ignored by the texture.
    """
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        # img_as_ubyte would keep e.g. uint16 values <= 255 unscaled; CellProfiler never
        # quantises integers, it measures the loaded (dtype-scaled) float image.
        image = skimage.util.img_as_float64(image)
    if image.size:
        low, high = image.min(), image.max()  # NaN if any pixel is NaN
        if not (low >= -1.0 and high <= 1.0):
            # img_as_ubyte raises outside [-1, 1] and maps negatives to 0 anyway; clipping
            # keeps bright (e.g. illumination-corrected) pixels at the top level instead.
            image = np.clip(np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    quantized = skimage.util.img_as_ubyte(image)
    if gray_levels != 256:
        quantized = skimage.exposure.rescale_intensity(
            quantized, in_range=(0, 255), out_range=(0, gray_levels - 1)
        ).astype(np.uint8)
    return quantized


def _pairs(
    objects: CompartmentObjects, offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the pixel pairs ``(p, p + offset)`` inside one object, and its row.

    Pairs are in object order (``objects.pixels`` order), so keys built from them are
    already grouped by object.
    """
    height, width = objects.shape
    dy, dx = offset
    y = objects.pixels // width
    x = objects.pixels - y * width
    inside = (y + dy < height) & (x + dx >= 0) & (x + dx < width)
    src = objects.pixels[inside]
    dst = src + (dy * width + dx)
    labels = objects.labels.ravel()
    same = labels[dst] == labels[src]
    return src[same], dst[same], objects.pixel_object[inside][same]


def _entropy(p: np.ndarray) -> np.ndarray:
    """Row-wise ``-sum p log2 p`` over the positive entries (mahotas' ``_entropy``)."""
    return -np.sum(p * np.log2(np.where(p > 0, p, 1.0)), axis=-1)


def haralick(
    first: np.ndarray,
    second: np.ndarray,
    rows: np.ndarray,
    n_objects: int,
    gray_levels: int,
    max_level: np.ndarray,
) -> np.ndarray:
    """The 13 Haralick features of every object for one direction, from its pixel pairs.

    Parameters
    ----------
    first, second : numpy.ndarray
        Gray levels of the two pixels of each pair; pairs with a 0 are ignored.
    rows : numpy.ndarray
        Object row (0..n_objects-1) of each pair.
    n_objects : int
        Number of objects.
    gray_levels : int
        Gray levels are below this.
    max_level : numpy.ndarray
        Largest gray level of each object's pixels (sets the length of the difference
        histogram whose variance is ``DifferenceVariance``, as mahotas' GLCM size).

    Returns
    -------
    numpy.ndarray
        ``(13, n_objects)`` in :data:`TEXTURE_FEATURES` order; NaN for objects without
        pairs.
    """
    keep = (first > 0) & (second > 0)
    if not keep.all():
        first, second, rows = first[keep], second[keep], rows[keep]
    n, levels = n_objects, gray_levels
    # Distinct cells of the symmetric GLCM as sorted keys (object, low level, high level):
    # real images have several pairs per cell, so every histogram below is a bincount over
    # the cells, not the pairs. Off-diagonal cells occur twice in the matrix with the pair
    # count m, diagonal ones once with 2m; the matrix total is T = 2 x pairs.
    low = np.minimum(first, second)
    high = np.maximum(first, second)
    key_type = np.int32 if n * levels * levels < np.iinfo(np.int32).max else np.int64
    key = (rows.astype(key_type) * levels + low) * levels + high
    key.sort()
    if key.size:
        first_of_run = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        run = np.diff(np.r_[first_of_run, key.size]).astype(np.float64)
        cell = key[first_of_run].astype(np.intp)
    else:
        run = np.zeros(0)
        cell = np.zeros(0, dtype=np.intp)
    cell_row = cell // (levels * levels)
    low = (cell // levels) % levels
    high = cell % levels
    diagonal = low == high
    copies = np.where(diagonal, 1.0, 2.0)
    base = cell_row * levels
    npairs = np.bincount(cell_row, run, minlength=n)
    # The marginal counts both members of each pair; the sum / difference histograms of the
    # symmetric matrix are twice the pair histograms and normalise to (pair histogram) / n.
    marginal = np.bincount(base + low, run, minlength=n * levels) + np.bincount(
        base + high, run, minlength=n * levels
    )
    sums = np.bincount(cell_row * (2 * levels) + low + high, run, minlength=2 * n * levels)
    diffs = np.bincount(base + high - low, run, minlength=n * levels)

    out = np.full((len(TEXTURE_FEATURES), n), np.nan)
    ok = npairs > 0
    if not ok.any():
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        total = 2.0 * npairs
        p_cell = np.where(diagonal, 2.0 * run, run) / total[cell_row]
        asm = np.bincount(cell_row, copies * p_cell * p_cell, minlength=n)
        entropy = -np.bincount(cell_row, copies * p_cell * np.log2(p_cell), minlength=n)

        k = np.arange(levels, dtype=np.float64)
        s = np.arange(2 * levels, dtype=np.float64)
        sums = sums.reshape(n, 2 * levels)[ok]
        diffs = diffs.reshape(n, levels)[ok]
        px = marginal.reshape(n, levels)[ok] / total[ok, None]
        p_sum = sums / npairs[ok, None]
        p_diff = diffs / npairs[ok, None]
        mean = px @ k
        variance = px @ (k * k) - mean * mean
        # sum_ij i j p_ij from the exact integer pair histograms: ij = ((i+j)^2 - (i-j)^2) / 4.
        sum_ij = (sums @ (s * s) - diffs @ (k * k)) / (4.0 * npairs[ok])
        correlation = np.where(variance == 0, 1.0, (sum_ij - mean * mean) / variance)
        sum_average = p_sum @ s
        # DifferenceVariance: numpy's var of the difference histogram over max level + 1 bins.
        bins = max_level[ok].astype(np.float64) + 1
        in_range = k[None, :] < bins[:, None]
        diff_mean = p_diff.sum(axis=1) / bins
        diff_variance = ((p_diff - diff_mean[:, None]) ** 2 * in_range).sum(axis=1) / bins
        hx = _entropy(px)
        hxy = entropy[ok]
        # HXY1 = HXY2 = HX + HY = 2 HX for the symmetric GLCM (see the module docstring).
        info1 = np.where(hx == 0, hxy - 2 * hx, (hxy - 2 * hx) / hx)
        info2 = np.sqrt(np.maximum(0.0, 1.0 - np.exp(-2.0 * (2 * hx - hxy))))

        out[:, ok] = [
            asm[ok],
            p_diff @ (k * k),
            correlation,
            variance,
            p_diff @ (1.0 / (1.0 + k * k)),
            sum_average,
            p_sum @ (s * s) - sum_average**2,
            _entropy(p_sum),
            hxy,
            diff_variance,
            _entropy(p_diff),
            info1,
            info2,
        ]
    return out


def measure_texture(
    objects: CompartmentObjects,
    site: Site,
    scales: Sequence[int] = (3,),
    gray_levels: int = 256,
) -> dict[str, np.ndarray]:
    """All texture columns of one compartment, keyed by column suffix.

    Parameters
    ----------
    objects : CompartmentObjects
        One compartment; its same-object pixel pairs are found once per direction and
        scale, for all channels.
    site : Site
        Images and cache: each channel is quantised once per site (``site.cached``).
    scales : sequence of int, default (3,)
        Co-occurrence distances in pixels.
    gray_levels : int, default 256
        Number of gray levels (2..256).

    Returns
    -------
    dict of str to numpy.ndarray
        ``{suffix: values per object row}`` for :func:`texture_columns`.
    """
    scales, gray_levels = _check_options(scales, gray_levels)
    n = objects.n_objects
    channels = site.channels
    out = {name: np.full(n, np.nan) for name in texture_columns(channels, scales, gray_levels)}
    if not objects.present.any():
        return out
    quantized = {
        channel: site.cached(
            ("Texture.quantize", channel, gray_levels),
            lambda image=image: quantize(image, gray_levels).ravel(),
        )
        for channel, image in site.images.items()
    }
    starts = objects.starts[objects.present]
    max_level = {}
    for channel, levels in quantized.items():
        max_level[channel] = np.zeros(n, dtype=np.int64)
        max_level[channel][objects.present] = np.maximum.reduceat(levels[objects.pixels], starts)

    for scale in scales:
        features = {channel: [] for channel in channels}
        for dy, dx in DIRECTIONS:
            src, dst, rows = _pairs(objects, (dy * scale, dx * scale))
            for channel, levels in quantized.items():
                features[channel].append(
                    haralick(levels[src], levels[dst], rows, n, gray_levels, max_level[channel])
                )
        for channel, per_direction in features.items():
            values = np.stack(per_direction)  # (direction, feature, object)
            # mahotas raises when any direction has no pair -> the whole object is NaN.
            values[:, :, np.isnan(values[:, 0, :]).any(axis=0)] = np.nan
            for direction, direction_values in enumerate(values):
                for feature, feature_values in zip(TEXTURE_FEATURES, direction_values, strict=True):
                    name = f"Texture_{feature}_{channel}_{scale}_{direction:02d}_{gray_levels}"
                    out[name] = feature_values
    return out


#: The ``Texture`` feature group (CellProfiler defaults: scale 3, 256 gray levels).
GROUP = FeatureGroup(
    "Texture",
    texture_columns,
    measure_texture,
    options={"scales": [3], "gray_levels": 256},
)

"""MeasureColocalization (objects mode): correlation and colocalization of channel pairs.

Reproduces CellProfiler 4.2's ``MeasureColocalization`` "Within objects" measurements for
every pair of channels (``A`` before ``B`` in channel order, as CellProfiler pairs its image
list), with its column names:

* ``Correlation_Correlation_A_B`` -- Pearson's correlation of the object's pixels;
* ``Correlation_Overlap_A_B``, ``Correlation_K_A_B`` / ``_B_A`` -- overlap coefficient and
  its two halves ``sum(ab) / sum(a**2)`` and ``sum(ab) / sum(b**2)``;
* ``Correlation_Manders_A_B`` / ``_B_A`` -- Manders' fractions;
* ``Correlation_RWC_A_B`` / ``_B_A`` -- rank weighted colocalization;
* ``Correlation_Costes_A_B`` / ``_B_A`` -- Manders' fractions above Costes' automatic
  thresholds (option ``costes``).

Overlap, K, Manders and RWC only use the pixels at or above ``threshold`` percent of the
object's maximum in each channel (CellProfiler's "threshold as percentage of maximum
intensity", default 15).

CellProfiler details that are kept on purpose (they differ from cp_measure, which computes
everything per object):

* RWC ranks are dense ranks of each channel's values over *all* pixels of the compartment's
  objects, and the weight's denominator is the largest rank of the two channels plus one;
* Costes' thresholds are searched once per channel pair on the *whole image* and applied to
  every object ("Costes' threshold for entire image is applied to each object");
* where no pixel of the whole compartment passes both thresholds, Manders, RWC, Overlap and K
  are 0; otherwise an object without such pixels gets ``0 / total`` for Manders and RWC and
  ``0 / 0`` (NaN) for Overlap and K. The same holds for Costes.

Costes' threshold uses CellProfiler's default search, "Faster": a bisection over the
candidate thresholds ``k / scale`` of the [0, 1]-scaled intensities (``scale`` = 65535 for
16-bit acquisitions), each tested by Pearson's correlation of the image's pixels below it
(~25 candidates per pair, each a pass over the whole image in CellProfiler). Here each pixel's
first candidate below which it falls is found arithmetically, one histogram over the
candidates gives the counts and sums, and each candidate is decided in constant time -- the
same candidates and decisions (a covariance within rounding distance of zero is recomputed as
CellProfiler does), 50-100 times faster on a 1080 x 1080 site.

Deviations from CellProfiler, all at the level of rounding or degenerate input:

* the regression's covariance is a centred dot product instead of ``(var(x + y) - var(x) -
  var(y)) / 2``, so the second threshold differs in the last bits;
* when a channel is constant (over the pixels non-zero in either image) the regression is
  undefined and CellProfiler's thresholds are rounding noise; Costes is NaN here (as in
  cp_measure);
* the correlation of an object that is constant in a channel is NaN; CellProfiler divides
  ``0 / 0`` (NaN) too, unless its mean differs from the constant in the last bit;
* "Fast" and "Accurate" (linear searches) are not offered.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import scipy.stats

from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site

__all__ = [
    "COSTES_METHODS",
    "GROUP",
    "channel_pairs",
    "colocalization_columns",
    "dense_ranks",
    "measure_colocalization",
]

#: Supported Costes threshold searches: CellProfiler's default bisection. ("Fast" and
#: "Accurate" step through up to ``scale`` candidates one by one and are not offered.)
COSTES_METHODS = ("Faster",)

# Outcomes of one candidate of the Costes search (CellProfiler's branches).
_TOO_FEW, _NEGATIVE, _NONNEGATIVE, _UNDEFINED = range(4)

# Largest scale searched with histograms over the candidates (16 MiB each); finer scales
# (32-bit images) test the candidates one by one, as CellProfiler does.
_MAX_HISTOGRAM_SCALE = 1 << 21


def channel_pairs(channels: Sequence[str]) -> list[tuple[str, str]]:
    """Channel pairs in CellProfiler's order: ``(channels[i], channels[j])`` for ``i < j``."""
    chans = list(channels)
    return [(a, b) for i, a in enumerate(chans) for b in chans[i + 1 :]]


def _check_options(threshold: float, costes_method: str, scale: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= threshold < 100:
        raise ValueError(f"Correlation: threshold must be in [0, 100), got {threshold!r}")
    if costes_method not in COSTES_METHODS:
        raise ValueError(
            f"Correlation: costes_method must be one of {COSTES_METHODS}, got {costes_method!r}"
        )
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | np.integer)
        or not 2 <= scale <= 2**32
    ):
        raise ValueError(f"Correlation: scale must be an integer in [2, 2**32], got {scale!r}")


def colocalization_columns(
    channels: Sequence[str],
    *,
    threshold: float = 15.0,
    costes: bool = True,
    costes_method: str = "Faster",
    scale: int = 65535,
) -> list[str]:
    """Column names (without the ``{Compartment}_`` prefix), per pair in CellProfiler's order.

    Parameters
    ----------
    channels : sequence of str
        Channel names; every pair is measured.
    threshold, costes_method, scale
        Validated only (see :func:`measure_colocalization`).
    costes : bool, default True
        Include the two ``Correlation_Costes`` columns of each pair.

    Returns
    -------
    list of str
        ``Correlation_{Correlation,Overlap,K,Manders,RWC,Costes}_{A}_{B}`` names.
    """
    _check_options(threshold, costes_method, scale)
    names = []
    for a, b in channel_pairs(channels):
        ab, ba = f"{a}_{b}", f"{b}_{a}"
        names += [
            f"Correlation_Correlation_{ab}",
            f"Correlation_Overlap_{ab}",
            f"Correlation_K_{ab}",
            f"Correlation_K_{ba}",
            f"Correlation_Manders_{ab}",
            f"Correlation_Manders_{ba}",
            f"Correlation_RWC_{ab}",
            f"Correlation_RWC_{ba}",
        ]
        if costes:
            names += [f"Correlation_Costes_{ab}", f"Correlation_Costes_{ba}"]
    return names


# --------------------------------------------------------------------------------------------
# Dense ranks (RWC)
# --------------------------------------------------------------------------------------------


def dense_ranks(values: np.ndarray) -> np.ndarray:
    """0-based dense rank of each value: equal values share a rank, as CellProfiler's RWC.

    Parameters
    ----------
    values : numpy.ndarray
        1-D float values.

    Returns
    -------
    numpy.ndarray
        ``int64`` ranks; ``ranks.max() + 1`` is the number of distinct values. NaNs (never
        equal to anything) each get their own rank after all numbers, as in CellProfiler.
    """
    n = values.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    single = values if values.dtype == np.float32 else values.astype(np.float32)
    exact = n < 2**32 and (single is values or np.array_equal(single, values))
    lowest = single.min() if exact else np.nan  # NaN if any value is NaN
    if not np.isnan(lowest):
        # Values that float32 holds exactly (the usual case: images are float32) are sorted
        # together with their positions as one uint64 key: numpy's SIMD sort of plain keys
        # is several times faster than an argsort. -0.0 + 0.0 is +0.0, so zeros compare equal.
        bits = (single + np.float32(0)).view(np.uint32)
        if lowest < 0:
            # Order-preserving map of IEEE bit patterns to unsigned integers.
            bits = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
        keys = bits.astype(np.uint64)
        keys <<= np.uint64(32)
        keys |= np.arange(n, dtype=np.uint64)
        keys.sort()
        order = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
        keys >>= np.uint64(32)
        new = keys[1:] != keys[:-1]
    else:
        order = np.argsort(values, kind="stable")
        ordered_values = values[order]
        new = ordered_values[1:] != ordered_values[:-1]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.concatenate(([0], np.cumsum(new)))
    return ranks


# --------------------------------------------------------------------------------------------
# Costes' automatic threshold
# --------------------------------------------------------------------------------------------


def _bisection(evaluate: Callable[[float], int], scale: int) -> float:
    """CellProfiler's ``bisection_costes`` search; returns the first image's threshold.

    ``evaluate(mid)`` classifies candidate ``mid / scale`` by the correlation of the pixels
    below it. The arithmetic (float floor division by 6/5, the ``valid - 1`` at the end) is
    CellProfiler's, so the same candidates are visited.
    """
    left, right = 1, scale
    mid = ((right - left) // (6 / 5)) + left
    lastmid = 0
    valid = 1
    while lastmid != mid:
        outcome = evaluate(mid)
        if outcome in (_TOO_FEW, _NEGATIVE):
            left = mid - 1
        elif outcome == _NONNEGATIVE:
            right = mid + 1
            valid = mid
        # An undefined correlation (constant pixels) moves neither bound, which ends the
        # search, as in CellProfiler (scipy returns NaN, which is neither < 0 nor >= 0).
        lastmid = mid
        if right - left > 6:
            mid = ((right - left) // (6 / 5)) + left
        else:
            mid = ((right - left) // 2) + left
    return (valid - 1) / scale


def _first_candidate(values: np.ndarray, table: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Smallest ``m`` with ``values < table[m]`` (``table`` ascending), else ``table.size``.

    ``estimate`` (overwritten) is a real-valued guess of ``m - 1``; the guess is checked and
    corrected against the table itself, so the result follows the float comparisons exactly.
    """
    top = table.size
    # bounds[m] <= value < bounds[m + 1] holds exactly for the answer m.
    bounds = np.concatenate(([-np.inf], table, [np.inf]))
    upper = bounds[1:]
    np.clip(estimate, -1, top - 1, out=estimate)
    index = estimate.astype(np.intp)
    index += 1
    wrong = np.flatnonzero((values < bounds[index]) | ~(values < upper[index]))
    # Rounding puts a few guesses one off; walk those to the answer.
    while wrong.size:
        v, i = values[wrong], index[wrong]
        i -= v < bounds[i]
        i += (i < top) & ~(v < upper[i])
        index[wrong] = i
        settled = (v >= bounds[i]) & ((i == top) | (v < upper[i]))
        wrong = wrong[~settled]
    return index


@dataclass
class _Plane:
    """One channel's whole-image pixels and statistics, shared by the pairs it is in."""

    values: np.ndarray
    has_nan: bool
    all_positive: bool
    mean: float
    var: float
    centered: np.ndarray
    extent: float  # largest |centered|
    constant: bool
    scale: int
    _candidates: np.ndarray | None = None

    @classmethod
    def of(cls, image: np.ndarray, scale: int) -> _Plane:
        values = np.asarray(image, dtype=np.float64).ravel()
        has_nan = bool(np.isnan(values).any())
        mean = var = extent = float("nan")
        centered = values
        if not has_nan and values.size > 1:
            mean = float(np.mean(values))
            var = float(np.var(values, ddof=1))
            centered = values - mean
            extent = float(np.abs(centered).max())
        all_positive = bool((values > 0).all())
        constant = bool(values.size == 0 or values.min() == values.max())
        return cls(values, has_nan, all_positive, mean, var, centered, extent, constant, scale)

    def candidates(self) -> np.ndarray:
        """First candidate ``m`` with ``value < m / scale`` per pixel (computed once)."""
        if self._candidates is None:
            self._candidates = _x_candidates(self.values, self.scale)
        return self._candidates


def _x_candidates(x: np.ndarray, scale: int) -> np.ndarray:
    """First Costes candidate ``m`` with ``x < m / scale`` (CellProfiler's ``mid / scale``)."""
    return _first_candidate(x, np.arange(scale + 1) / scale, x * scale)


def _regression(x: np.ndarray, y: np.ndarray, stats: tuple | None) -> tuple[float, float]:
    """Slope and intercept of CellProfiler's orthogonal regression over non-zero pixels.

    ``stats`` holds ``(xmean, ymean, xvar, yvar, xc, yc, constant)`` for the full arrays when
    no pixel pair is zero in both channels, which saves recomputing them for every pair. NaN
    when a channel is constant: the line is undefined (CellProfiler gets rounding noise).
    """
    if stats is None:
        non_zero = (x > 0) | (y > 0)
        x, y = x[non_zero], y[non_zero]
        if x.size < 2 or x.min() == x.max() or y.min() == y.max():
            return float("nan"), float("nan")
        xmean, ymean = float(np.mean(x)), float(np.mean(y))
        xvar, yvar = float(np.var(x, ddof=1)), float(np.var(y, ddof=1))
        xc, yc = x - xmean, y - ymean
    else:
        xmean, ymean, xvar, yvar, xc, yc, constant = stats
        if constant:
            return float("nan"), float("nan")
    # CellProfiler derives the covariance from var(x + y); the centred dot product is the same
    # quantity (to rounding) without another pass over the sum.
    covar = float(np.dot(xc, yc)) / (xc.size - 1)
    num = (yvar - xvar) + np.sqrt((yvar - xvar) * (yvar - xvar) + 4 * (covar * covar))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.float64(num) / np.float64(2 * covar)
    return float(a), float(ymean - a * xmean)


def _direct_search(x: np.ndarray, y: np.ndarray, a: float, b: float, scale: int) -> float:
    """The bisection with CellProfiler's per-candidate Pearson test (any slope)."""

    def evaluate(mid: float) -> int:
        thr_x = mid / scale
        below = (x < thr_x) | (y < (a * thr_x) + b)
        if np.count_nonzero(below) <= 2:
            return _TOO_FEW
        return _pearson_outcome(x[below], y[below])

    return _bisection(evaluate, scale)


def _pearson_outcome(x: np.ndarray, y: np.ndarray) -> int:
    """Classify CellProfiler's ``scipy.stats.pearsonr`` of the pixels below a candidate."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, as CellProfiler gets
        r = scipy.stats.pearsonr(x, y)[0]
    if r < 0:
        return _NEGATIVE
    return _NONNEGATIVE if r >= 0 else _UNDEFINED


def _histogram_search(first: _Plane, second: _Plane, a: float, b: float) -> float:
    """The bisection with every candidate answered from cumulative histograms (slope > 0).

    With a positive slope, the pixels below candidate ``m`` (``x < m/scale`` or
    ``y < a*m/scale + b``) only grow with ``m``: each pixel has a first candidate ``k`` from
    which it is below, and the pixels below ``m`` are those with ``k <= m``. Counts and sums
    of ``x``, ``y`` and ``x*y`` (centred, for accuracy) by ``k`` give the sign of the
    correlation at any candidate. A covariance within rounding distance of zero (including
    constant pixels, where CellProfiler's correlation is NaN) is recomputed exactly as
    CellProfiler does.
    """
    scale = first.scale
    x, y, xc, yc = first.values, second.values, first.centered, second.centered
    grid = np.arange(scale + 1) / scale  # CellProfiler's mid / scale_max
    table = a * grid + b  # and (a * thr_x) + b
    estimate = y - b
    estimate *= scale / a
    k = np.minimum(first.candidates(), _first_candidate(y, table, estimate))
    size = scale + 2
    count = np.cumsum(np.bincount(k, minlength=size))
    sum_x = np.cumsum(np.bincount(k, xc, minlength=size))
    sum_y = np.cumsum(np.bincount(k, yc, minlength=size))
    sum_xy = np.cumsum(np.bincount(k, xc * yc, minlength=size))
    # Far above the summation error: n * n * extent_x * extent_y bounds every term.
    tolerance = 1e-9 * first.extent * second.extent

    def evaluate(mid: float) -> int:
        m = int(mid)
        if m < 0 or count[m] <= 2:
            return _TOO_FEW
        n = float(count[m])
        covariance = n * sum_xy[m] - sum_x[m] * sum_y[m]
        if abs(covariance) <= tolerance * n * n:
            below = k <= m
            return _pearson_outcome(x[below], y[below])
        return _NEGATIVE if covariance < 0 else _NONNEGATIVE

    return _bisection(evaluate, scale)


def _pair_thresholds(first: _Plane, second: _Plane) -> tuple[float, float] | None:
    """Costes' thresholds of two channels (CellProfiler's "Faster" search), None if no pixel."""
    scale = first.scale
    if first.has_nan or second.has_nan:
        valid = ~np.isnan(first.values) & ~np.isnan(second.values)
        if not valid.any():
            return None
        first = _Plane.of(first.values[valid], scale)
        second = _Plane.of(second.values[valid], scale)
    x, y = first.values, second.values
    stats = None
    if first.all_positive or second.all_positive:
        # No pixel is zero in both: the regression uses every pixel.
        stats = (first.mean, second.mean, first.var, second.var, first.centered, second.centered)
        stats += (first.constant or second.constant,)
    a, b = _regression(x, y, stats)
    nested = a > 0 and np.isfinite(a) and np.isfinite(b)
    if x.size < 3 or not nested or scale > _MAX_HISTOGRAM_SCALE:
        # Anti-correlated or degenerate channels (candidates are not nested) or a huge scale:
        # test each candidate.
        thr_x = _direct_search(x, y, a, b, scale)
    else:
        thr_x = _histogram_search(first, second, a, b)
    return thr_x, (a * thr_x) + b


# --------------------------------------------------------------------------------------------
# Per-object measurements
# --------------------------------------------------------------------------------------------


@dataclass
class _Channel:
    """One channel's values over a compartment's pixels and its per-object statistics."""

    values: np.ndarray
    centered_ss: np.ndarray
    centered: np.ndarray
    flat: np.ndarray  # objects whose pixels all have one value
    above: np.ndarray
    above_values: np.ndarray
    total_above: np.ndarray
    ranks: np.ndarray

    @classmethod
    def of(
        cls,
        image: np.ndarray,
        pixels: np.ndarray,
        segment: np.ndarray,
        starts: np.ndarray,
        threshold: float,
    ) -> _Channel:
        gathered = image.ravel()[pixels]
        values = gathered.astype(np.float64)
        counts = np.diff(np.r_[starts, values.size])
        mean = np.add.reduceat(values, starts) / counts
        centered = values - mean[segment]
        maximum = np.maximum.reduceat(values, starts)
        flat = np.minimum.reduceat(values, starts) == maximum
        # CellProfiler: (threshold / 100) * maximum of the object.
        above = values >= ((threshold / 100) * maximum)[segment]
        above_values = np.where(above, values, 0.0)
        return cls(
            values,
            np.add.reduceat(centered * centered, starts),
            centered,
            flat,
            above,
            above_values,
            np.add.reduceat(above_values, starts),
            dense_ranks(gathered if gathered.dtype == np.float32 else values),
        )


def _pair_features(first: _Channel, second: _Channel, starts: np.ndarray) -> list[np.ndarray]:
    """Correlation, Overlap, K x2, Manders x2, RWC x2 of the present objects."""
    n = starts.size
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.add.reduceat(first.centered * second.centered, starts) / np.sqrt(
            first.centered_ss * second.centered_ss
        )
        # No spread, no correlation: exactly NaN, not the rounding noise of a mean that
        # differs from the constant in the last bit (which CellProfiler can return).
        correlation[first.flat | second.flat] = np.nan
        both = first.above & second.above
        if not both.any():
            # CellProfiler leaves these at zero when no pixel of any object passes both.
            return [correlation] + [np.zeros(n) for _ in range(7)]
        a = first.above_values * second.above
        b = second.above_values * first.above
        # Rank weights: R is the larger number of distinct values of the two channels.
        top = max(int(first.ranks.max()), int(second.ranks.max())) + 1
        weight = (top - np.abs(first.ranks - second.ranks)) * 1.0 / top
        # One contiguous 1-D reduceat per sum: much faster than reducing a stacked 2-D array.
        sa, sb, saa, sbb, sab, wa, wb = (
            np.add.reduceat(v, starts) for v in (a, b, a * a, b * b, a * b, a * weight, b * weight)
        )
        return [
            correlation,
            sab / np.sqrt(saa * sbb),
            sab / saa,
            sab / sbb,
            sa / first.total_above,
            sb / second.total_above,
            wa / first.total_above,
            wb / second.total_above,
        ]


def _costes_features(
    first: _Channel, second: _Channel, starts: np.ndarray, thresholds: tuple[float, float]
) -> list[np.ndarray]:
    """Costes' Manders fractions of the present objects, for image-wide thresholds."""
    thr_a, thr_b = thresholds
    if not (np.isfinite(thr_a) and np.isfinite(thr_b)):
        # Undefined regression (a channel constant over the image): CellProfiler's thresholds
        # are then rounding noise; report NaN, as cp_measure does.
        return [np.full(starts.size, np.nan), np.full(starts.size, np.nan)]
    a, b = first.values, second.values
    both = (a > thr_a) & (b > thr_b)
    if not both.any():
        return [np.zeros(starts.size), np.zeros(starts.size)]
    # CellProfiler's denominators use >= where the numerators use >.
    sa, sb, ta, tb = (
        np.add.reduceat(v, starts) for v in (a * both, b * both, a * (a >= thr_a), b * (b >= thr_b))
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return [sa / ta, sb / tb]


def measure_colocalization(
    objects: CompartmentObjects,
    site: Site,
    *,
    threshold: float = 15.0,
    costes: bool = True,
    costes_method: str = "Faster",
    scale: int = 65535,
) -> dict[str, np.ndarray]:
    """Colocalization features of every object row, for every pair of the site's channels.

    Parameters
    ----------
    objects : CompartmentObjects
        The compartment's objects.
    site : Site
        The site; its images are the channels, its cache holds the per-pair Costes
        thresholds (computed on the whole image, so shared by all compartments).
    threshold : float, default 15
        Percentage of each object's maximum intensity, per channel, below which pixels are
        left out of Overlap, K, Manders and RWC.
    costes : bool, default True
        Measure ``Correlation_Costes`` (Costes' thresholds are the costly part).
    costes_method : {"Faster"}
        CellProfiler's default Costes search (the only one offered).
    scale : int, default 65535
        CellProfiler's image scale (65535 for 16-bit acquisitions): Costes' candidate
        thresholds are ``k / scale`` of the [0, 1]-scaled intensities.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{column suffix: values}`` as :func:`colocalization_columns`; NaN for absent objects.
    """
    names = colocalization_columns(
        site.channels, threshold=threshold, costes=costes, costes_method=costes_method, scale=scale
    )
    out = {name: np.full(objects.n_objects, np.nan) for name in names}
    ok = objects.present
    pairs = channel_pairs(site.channels)
    if not pairs or not ok.any():
        return out
    starts = objects.starts[ok]
    segment = (np.cumsum(ok) - 1)[objects.pixel_object]
    channels = {
        name: _Channel.of(image, objects.pixels, segment, starts, threshold)
        for name, image in site.images.items()
    }
    width = 10 if costes else 8
    for index, (a, b) in enumerate(pairs):
        if _no_valid_pixel(site, a, b):
            continue  # CellProfiler: every feature of the pair is NaN
        values = _pair_features(channels[a], channels[b], starts)
        if costes:
            thresholds = site.cached(
                ("Correlation.costes", a, b, scale),
                lambda a=a, b=b: _pair_thresholds(_plane(site, a, scale), _plane(site, b, scale)),
            )
            values += _costes_features(channels[a], channels[b], starts, thresholds)
        for column, value in zip(names[index * width : (index + 1) * width], values, strict=True):
            out[column][ok] = value
    return out


def _plane(site: Site, channel: str, scale: int) -> _Plane:
    return site.cached(
        ("Correlation.plane", channel, scale), lambda: _Plane.of(site.images[channel], scale)
    )


def _no_valid_pixel(site: Site, a: str, b: str) -> bool:
    """Whether every pixel is NaN in one of the two images (cached per site)."""

    def has_nan(channel: str) -> bool:
        return site.cached(
            ("Correlation.has_nan", channel), lambda: bool(np.isnan(site.images[channel]).any())
        )

    if not (has_nan(a) or has_nan(b)):
        return False
    return site.cached(
        ("Correlation.no_valid_pixel", a, b),
        lambda: bool((np.isnan(site.images[a]) | np.isnan(site.images[b])).all()),
    )


#: The ``Correlation`` feature group (CellProfiler MeasureColocalization, objects mode).
GROUP = FeatureGroup(
    "Correlation",
    colocalization_columns,
    measure_colocalization,
    options={"threshold": 15.0, "costes": True, "costes_method": "Faster", "scale": 65535},
)

"""MeasureObjectSizeShape features beyond regionprops: radii, Feret diameters, Zernike moments.

CellProfiler 4.2 computes these per object in Python loops over full-image arrays (centrosome's
``zernike``, ``convex_hull_ijv``, ``feret_diameter``, ``minimum_enclosing_circle``). Here they
are computed from a compartment's :class:`~cellstrata.measure.objects.CompartmentObjects`:

* radii from the Euclidean distance transform of each object's bounding-box crop, padded by one
  background pixel exactly as CellProfiler does;
* Feret diameters from each object's convex hull (of pixel centres, as centrosome), the hull
  found by qhull from the first and last pixel of each object row;
* the minimum enclosing circle by a port of centrosome's algorithm that reproduces its result
  bit for bit (CellProfiler's Zernike values depend on the last bit, see
  :func:`zernike_moments`);
* Zernike moments (n <= 9) as linear combinations of the object's geometric moments
  ``sum u**a * v**b`` in the coordinates normalised by the minimum enclosing circle, summed row
  by row, instead of evaluating 30 complex polynomials at every pixel.
"""

from __future__ import annotations

from math import comb, factorial

import numpy as np
import scipy.ndimage
from scipy.spatial import ConvexHull, QhullError

from cellstrata.measure.objects import CompartmentObjects

__all__ = [
    "FERET_FEATURES",
    "RADIUS_FEATURES",
    "ZERNIKE_FEATURES",
    "ZERNIKE_INDEXES",
    "convex_hulls",
    "enclosing_circles",
    "feret_diameters",
    "measure_shape",
    "radii",
    "zernike_moments",
]

#: Highest Zernike order CellProfiler computes.
ZERNIKE_N = 9

#: ``(n, m)`` of CellProfiler's Zernike features, in its order (``m >= 0``, ``n - m`` even).
ZERNIKE_INDEXES: tuple[tuple[int, int], ...] = tuple(
    (n, m) for n in range(ZERNIKE_N + 1) for m in range(n % 2, n + 1, 2)
)

#: Zernike feature names (without the ``{C}_AreaShape_`` prefix).
ZERNIKE_FEATURES: tuple[str, ...] = tuple(f"Zernike_{n}_{m}" for n, m in ZERNIKE_INDEXES)

#: Distance-transform radii (without the ``{C}_AreaShape_`` prefix).
RADIUS_FEATURES = ("MaximumRadius", "MeanRadius", "MedianRadius")

#: Caliper diameters of the convex hull (without the ``{C}_AreaShape_`` prefix).
FERET_FEATURES = ("MinFeretDiameter", "MaxFeretDiameter")

# Elements per chunk of the pairwise vertex arrays of the Feret computation (memory bound).
_CHUNK_ELEMENTS = 1 << 18


def _zernike_coefficients() -> np.ndarray:
    """Complex coefficients ``C[k, a, b]`` of ``u**a * v**b`` in the k-th Zernike function.

    CellProfiler's (centrosome's) Zernike function of order ``(n, m)`` at a pixel with
    normalised column offset ``u`` and row offset ``v`` is ``R_nm(r) * (z / r)**m`` with
    ``z = v + i*u`` and ``r = |z|``, i.e. ``sum_s c_s * (u**2 + v**2)**q_s * z**m`` with
    ``q_s = (n - m) / 2 - s``: a polynomial of degree ``n`` in ``u`` and ``v``.
    """
    size = ZERNIKE_N + 1
    coefficients = np.zeros((len(ZERNIKE_INDEXES), size, size), dtype=complex)
    for k, (n, m) in enumerate(ZERNIKE_INDEXES):
        for s in range((n - m) // 2 + 1):
            radial = (-1) ** s * factorial(n - s)
            radial /= factorial(s) * factorial((n + m) // 2 - s) * factorial((n - m) // 2 - s)
            q = (n - m) // 2 - s
            for j in range(q + 1):  # (u**2 + v**2)**q
                for t in range(m + 1):  # (v + i*u)**m
                    coefficients[k, 2 * j + t, 2 * (q - j) + m - t] += (
                        radial * comb(q, j) * comb(m, t) * 1j**t
                    )
    return coefficients


_ZERNIKE_COEFFICIENTS = _zernike_coefficients()


def _row_runs(objects: CompartmentObjects) -> np.ndarray:
    """Offsets into ``objects.pixels`` where a new (object, image row) segment starts.

    Pixels are grouped by object and in raster order within objects, so each segment holds
    one object row, left to right.
    """
    rows = objects.pixels // objects.shape[1]
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = (rows[1:] != rows[:-1]) | (objects.pixel_object[1:] != objects.pixel_object[:-1])
    return np.flatnonzero(np.r_[True, change])


def convex_hulls(objects: CompartmentObjects) -> list[np.ndarray]:
    """Convex hull of the pixel centres of each present object.

    Parameters
    ----------
    objects : CompartmentObjects
        Objects whose pixel centres are wrapped.

    Returns
    -------
    list of numpy.ndarray
        One ``(k, 2)`` float array of ``(row, column)`` hull vertices per present object (in
        row order of ``objects`` restricted to ``objects.present``), ordered as centrosome
        orders them (see :func:`_centrosome_order`). A single pixel gives one vertex; pixels
        on one line give the line's two end points.
    """
    starts = _row_runs(objects)
    if starts.size == 0:
        return []
    # Only the first and last pixel of each object row can be hull vertices: this cuts qhull's
    # input to about twice the object height.
    ends = np.r_[starts[1:], objects.pixels.size] - 1
    candidates = np.unique(np.r_[starts, ends])
    flat = objects.pixels[candidates]
    points = np.column_stack((flat // objects.shape[1], flat % objects.shape[1])).astype(float)
    owner = objects.pixel_object[candidates]
    bounds = np.searchsorted(owner, np.arange(objects.n_objects + 1))
    hulls = []
    for row in np.flatnonzero(objects.present).tolist():
        pts = points[bounds[row] : bounds[row + 1]]
        try:
            hulls.append(_centrosome_order(pts[ConvexHull(pts).vertices]))
        except (QhullError, ValueError):
            # Fewer than three points or all on one line: the hull is the segment between
            # the two extreme points (a point when there is only one).
            along = (pts - pts[0]) @ (pts[-1] - pts[0])
            extremes = np.unique([int(np.argmin(along)), int(np.argmax(along))])
            hulls.append(_centrosome_order(pts[extremes]))
    return hulls


def _centrosome_order(vertices: np.ndarray) -> np.ndarray:
    """Convex polygon vertices in the order of centrosome's ``convex_hull_ijv``.

    That is by ascending ``atan2(row, column)`` around the polygon, starting from the leftmost
    (then topmost) vertex. The enclosing circle's arithmetic depends on which vertices come
    first.
    """
    y, x = vertices[:, 0], vertices[:, 1]
    # Ascending atan2(row, column) is a positive signed area with x = column, y = row (qhull
    # happens to list vertices the other way round; checking is cheaper than relying on it).
    if (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() < 0:
        vertices = vertices[::-1]
    start = np.lexsort((vertices[:, 0], vertices[:, 1]))[0]
    return np.roll(vertices, -start, axis=0)


def _padded(hulls: list[np.ndarray]) -> np.ndarray:
    """Hull vertices as one ``(n, H, 2)`` array, each padded with copies of its first vertex.

    Repeated vertices change neither distances nor widths; they only add zero-length edges.
    """
    size = max(len(h) for h in hulls)
    out = np.empty((len(hulls), size, 2))
    for i, hull in enumerate(hulls):
        out[i, : len(hull)] = hull
        out[i, len(hull) :] = hull[0]
    return out


def feret_diameters(hulls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum caliper (Feret) diameters of convex polygons.

    Parameters
    ----------
    hulls : list of numpy.ndarray
        Counter-clockwise vertices per object, as from :func:`convex_hulls`.

    Returns
    -------
    min_feret, max_feret : numpy.ndarray
        The maximum is the largest vertex-to-vertex distance; the minimum is the smallest
        width, attained with one caliper flush with a hull edge (rotating calipers), so it
        is the minimum over edges of the farthest vertex's distance from the edge's line.
        Single points and segments have a minimum of 0, as in CellProfiler.
    """
    min_feret = np.zeros(len(hulls))
    max_feret = np.zeros(len(hulls))
    if not hulls:
        return min_feret, max_feret
    # Objects are processed in chunks so the (objects, vertices, vertices) arrays stay small.
    size = max(len(h) for h in hulls)
    chunk = max(1, _CHUNK_ELEMENTS // (size * size))
    for first in range(0, len(hulls), chunk):
        part = slice(first, first + chunk)
        min_feret[part], max_feret[part] = _feret_chunk(_padded(hulls[part]))
    return min_feret, max_feret


def _feret_chunk(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    delta = points[:, :, None, :] - points[:, None, :, :]
    max_feret = np.sqrt((delta**2).sum(-1).max(axis=(1, 2)))
    # Edge k runs from vertex k to vertex k+1 (cyclically); padding adds zero-length edges.
    edges = np.roll(points, -1, axis=1) - points
    length = np.sqrt((edges**2).sum(-1))
    # cross(edge_k, p_j - p_k) / |edge_k| is p_j's distance from edge k's line; delta[:, k, j]
    # is p_k - p_j, so the sign is flipped, which the absolute value ignores.
    cross = edges[:, :, None, 0] * delta[..., 1] - edges[:, :, None, 1] * delta[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.abs(cross).max(axis=2) / length
    width[length == 0] = np.inf
    min_feret = width.min(axis=1)
    min_feret[~np.isfinite(min_feret)] = 0.0
    return min_feret, max_feret


def _chrystal(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum enclosing circle of convex-polygon vertices, computed as centrosome does.

    A per-object port of ``centrosome.cpmorphology.minimum_enclosing_circle`` (Chrystal's
    algorithm: grow the chord S0-S1 towards the vertex that sees it under the smallest angle),
    keeping its arithmetic so centre and radius are bit-identical; see :func:`zernike_moments`
    for why that matters. Squares are written ``x * x``: numpy squares arrays that way, while
    ``scalar ** 2`` calls ``pow``, which can differ in the last bit.
    """
    count = len(vertices)
    if count == 1:
        return vertices[0].copy(), 0.0
    if count == 2:
        center = (vertices[0] + vertices[1]) / 2
        offset = center - vertices[0]
        return center, float(np.sqrt(offset[0] * offset[0] + offset[1] * offset[1]))
    # Vertices with index >= 2 are the candidates; S0 and S1 hold indexes 0 and 1.
    index = np.arange(count)
    s0, s1 = 0, 1
    half_pi = np.pi / 2
    while True:
        candidates = np.flatnonzero(index >= 2)
        p0, p1, v = vertices[s0], vertices[s1], vertices[candidates]
        s01 = p0 - p1
        s01_2 = s01[0] * s01[0] + s01[1] * s01[1]
        vs0, vs1 = v - p0, v - p1
        with np.errstate(invalid="ignore"):
            cos_1 = (s01[0] * vs1[:, 0] + s01[1] * vs1[:, 1]) / np.sqrt(
                s01_2 * (vs1[:, 0] * vs1[:, 0] + vs1[:, 1] * vs1[:, 1])
            )
            cos_0 = (-s01[0] * vs0[:, 0] + -s01[1] * vs0[:, 1]) / np.sqrt(
                s01_2 * (vs0[:, 0] * vs0[:, 0] + vs0[:, 1] * vs0[:, 1])
            )
            angle_1 = np.abs(np.arccos(cos_1))  # at S1
            angle_0 = np.abs(np.arccos(cos_0))  # at S0
        angle_v = np.pi - angle_1 - angle_0  # at V
        if candidates.size == 0 or angle_v.min() >= half_pi:
            # S0-S1 is a diameter.
            center = (p0 + p1) / 2
            return center, float(np.sqrt(s01_2) / 2)
        best = int(np.argmin(angle_v))
        if not (angle_1[best] > half_pi or angle_0[best] > half_pi or angle_v[best] > half_pi):
            # Acute triangle: its circumcircle.
            pv = v[best]
            d = 2 * (p0[1] * (p1[0] - pv[0]) + p1[1] * (pv[0] - p0[0]) + pv[1] * (p0[0] - p1[0]))
            n0 = p0[0] * p0[0] + p0[1] * p0[1]
            n1 = p1[0] * p1[0] + p1[1] * p1[1]
            nv = pv[0] * pv[0] + pv[1] * pv[1]
            x = (n0 * (p1[0] - pv[0]) + n1 * (pv[0] - p0[0]) + nv * (p0[0] - p1[0])) / d
            y = (n0 * (pv[1] - p1[1]) + n1 * (p0[1] - pv[1]) + nv * (p1[1] - p0[1])) / d
            center = np.array([y, x])
            offset = p0 - center
            return center, float(np.sqrt(offset[0] * offset[0] + offset[1] * offset[1]))
        # The obtuse end of the chord lies inside the circle: replace it by V.
        chosen = candidates[best]
        if angle_0[best] > half_pi:
            index[s0], index[chosen], s0 = index[chosen], 0, chosen
        else:
            index[s1], index[chosen], s1 = index[chosen], 1, chosen


def enclosing_circles(hulls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Minimum enclosing circle of each convex polygon, as CellProfiler computes it.

    Parameters
    ----------
    hulls : list of numpy.ndarray
        Vertices per object in centrosome's order, as from :func:`convex_hulls`.

    Returns
    -------
    centers : numpy.ndarray
        ``(n, 2)`` ``(row, column)`` circle centres.
    radii : numpy.ndarray
        Circle radii (0 for a single pixel).
    """
    centers = np.zeros((len(hulls), 2))
    radius = np.zeros(len(hulls))
    for i, hull in enumerate(hulls):
        centers[i], radius[i] = _chrystal(hull)
    return centers, radius


def zernike_moments(
    objects: CompartmentObjects, centers: np.ndarray, radii_: np.ndarray
) -> np.ndarray:
    """CellProfiler's Zernike shape features of each present object.

    Parameters
    ----------
    objects : CompartmentObjects
        The compartment's objects.
    centers, radii_ : numpy.ndarray
        Minimum enclosing circle of each present object (:func:`enclosing_circles`).

    Returns
    -------
    numpy.ndarray
        ``(n_present, len(ZERNIKE_INDEXES))``: ``|sum over pixels of V_nm(u, v)| / (pi r**2)``
        with ``(u, v)`` the pixel's column and row offsets from the circle centre divided by
        its radius. NaN for single pixels (radius 0), as in CellProfiler.

    Notes
    -----
    Pixels that rounding puts outside the circle (``u**2 + v**2 > 1`` in CellProfiler's
    arithmetic, though every pixel is inside it) are left out, as CellProfiler does; this
    changes an object's values by up to ``k / (pi r**2)`` for ``k`` such pixels, so the circle
    is computed exactly as centrosome computes it (:func:`enclosing_circles`).

    ``V_nm`` is a polynomial of degree <= 9 in ``u`` and ``v``, so the sums follow from the 100
    geometric moments ``sum u**a v**b``. Those are accumulated per object row (``sum u**a``
    over the row's pixels times ``v**b`` of the row), so the per-pixel work is 9
    multiplications and 10 segment sums instead of 30 complex polynomial evaluations.
    """
    n_present = int(objects.present.sum())
    out = np.full((n_present, len(ZERNIKE_INDEXES)), np.nan)
    if n_present == 0:
        return out
    # Row of each object in the present-only arrays.
    slot = np.cumsum(objects.present) - 1
    owner = slot[objects.pixel_object]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (objects.pixel_x - centers[owner, 1]) / radii_[owner]
        v = (objects.pixel_y - centers[owner, 0]) / radii_[owner]
        # CellProfiler zeroes the polynomials where u**2 + v**2 > 1. Every pixel lies in the
        # enclosing circle, but rounding puts some of those *on* it (usually 2 or 3 per
        # object) a hair outside, and CellProfiler drops them; do the same, with the same
        # arithmetic on the same (bit-identical) circle.
        counted = (u * u + v * v <= 1).astype(float)
    starts = _row_runs(objects)
    size = ZERNIKE_N + 1
    row_sums = np.empty((starts.size, size))
    power = counted
    for a in range(size):
        row_sums[:, a] = np.add.reduceat(power, starts)
        power *= u
    run_owner = owner[starts]
    v = v[starts]
    object_starts = np.searchsorted(run_owner, np.arange(n_present))
    moments = np.empty((n_present, size, size))
    power = np.ones_like(v)
    for b in range(size):
        moments[:, :, b] = np.add.reduceat(row_sums * power[:, None], object_starts)
        power *= v
    sums = np.einsum("oab,kab->ok", moments, _ZERNIKE_COEFFICIENTS)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:] = np.abs(sums) / (np.pi * radii_**2)[:, None]
    out[radii_ == 0] = np.nan
    return out


def radii(objects: CompartmentObjects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum, mean and median distance of each present object's pixels to its outside.

    Parameters
    ----------
    objects : CompartmentObjects
        Objects whose pixels' distances to the outside are summarised.

    Returns
    -------
    max_radius, mean_radius, median_radius : numpy.ndarray
        Per present object. As CellProfiler, the distance transform runs on the object's own
        mask cropped to its bounding box and padded by one background pixel, so other objects
        and the image border count as outside.
    """
    stats = []
    for label, box in zip(
        objects.object_ids[objects.present].tolist(),
        objects.bboxes[objects.present].tolist(),
        strict=True,
    ):
        mask = np.pad(objects.labels[box[0] : box[2], box[1] : box[3]] == label, 1)
        inside = scipy.ndimage.distance_transform_edt(mask)[mask]
        stats.append((inside.max(), inside.mean(), np.median(inside)))
    if not stats:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.asarray(stats, dtype=float).T)


def measure_shape(objects: CompartmentObjects, *, zernike: bool = True) -> dict[str, np.ndarray]:
    """Radius, Feret and (optionally) Zernike features of every object row.

    Parameters
    ----------
    objects : CompartmentObjects
        The compartment's objects.
    zernike : bool, default True
        Also compute the 30 Zernike features.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{feature name: values}`` (names without the ``AreaShape_`` prefix), one value per
        object row, NaN for absent objects.
    """
    names = RADIUS_FEATURES + FERET_FEATURES + (ZERNIKE_FEATURES if zernike else ())
    out = {name: np.full(objects.n_objects, np.nan) for name in names}
    ok = objects.present
    if not ok.any():
        return out
    hulls = convex_hulls(objects)
    values = dict(zip(RADIUS_FEATURES, radii(objects), strict=True))
    values.update(zip(FERET_FEATURES, feret_diameters(hulls), strict=True))
    if zernike:
        centers, radius = enclosing_circles(hulls)
        values.update(
            zip(ZERNIKE_FEATURES, zernike_moments(objects, centers, radius).T, strict=True)
        )
    for name, value in values.items():
        out[name][ok] = value
    return out

"""MeasureObjectIntensityDistribution: radial intensity distribution within objects.

Reproduces CellProfiler 4.2's ``MeasureObjectIntensityDistribution`` with its Cell Painting
settings (scaled bins, each object's own centre, Zernike magnitudes), with its column names
``RadialDistribution_{FracAtD,MeanFrac,RadialCV}_{channel}_{i}of{n}`` and
``RadialDistribution_ZernikeMagnitude_{channel}_{n}_{m}``:

* the centre of an object is its pixel farthest from the edge (largest distance-transform
  value; the first in raster order among ties, like cp_measure);
* ``d_edge`` is the Euclidean distance to the nearest pixel outside the object (other objects
  count as outside, the image border does not), as centrosome's ``distance_to_edge``;
* ``d_center`` is the 8-connected path length from the centre inside the object (steps of 1
  and sqrt 2), as centrosome's ``propagate``; pixels not connected to the centre are left out;
* a pixel's bin is ``int(bin_count * d_center / (d_center + d_edge + 0.001))``;
* ``FracAtD`` is the bin's share of the object's intensity, ``MeanFrac`` that share divided by
  the bin's share of the pixels, ``RadialCV`` the coefficient of variation (population std /
  mean) of the mean intensities of the bin's pixels in 8 wedges around the centre (0 when the
  mean is 0 or the bin is empty);
* ``ZernikeMagnitude_n_m`` is ``|sum(intensity * V_nm)| / area`` over the object's pixels in
  the coordinates of its minimum enclosing circle (same circle and polynomials as the
  ``AreaShape_Zernike`` features); CellProfiler Cell Painting exports have magnitudes only.

CellProfiler computes the distances on whole-image arrays, once per colour of a colouring of
touching objects. Here the distance to the edge is a Euclidean distance transform of each
object's bounding box, and the path length is the octile distance ``max + (sqrt 2 - 1) * min``
of the offsets whenever an octile-shortest step towards the centre stays inside the object
for every pixel (then it is the shortest path; the usual case for nuclei and convex cells),
else an exact shortest-path search (Dijkstra's, vectorised over those objects; cytoplasm
rings always take it). The Zernike sums come from intensity-weighted geometric moments
accumulated per object row instead of 30 complex polynomials per pixel.

Agreement with cp_measure (CellProfiler's code): bins, fractions and CVs to the last bit
(the octile distance may differ from the summed path in the last bit, which could only move a
pixel lying exactly on a bin boundary), Zernike magnitudes to ~1e-11 relative. Ties of the
centre are broken by raster order like cp_measure; CellProfiler's ``scipy.ndimage``
``maximum_position`` may pick another of the tied pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import scipy.ndimage
from scipy.sparse import csr_matrix

from cellstrata.measure import shape
from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site

__all__ = ["GROUP", "RADIAL_FEATURES", "measure_radial", "radial_columns"]

#: Per-bin features, in CellProfiler's order.
RADIAL_FEATURES = ("FracAtD", "MeanFrac", "RadialCV")

_SQRT2 = float(np.sqrt(2.0))


def _check_bin_count(bin_count: object) -> int:
    if isinstance(bin_count, bool) or not isinstance(bin_count, Integral) or bin_count < 1:
        raise ValueError(
            f"RadialDistribution: bin_count must be a positive integer, got {bin_count!r}"
        )
    return int(bin_count)


def radial_columns(
    channels: Sequence[str], *, bin_count: int = 4, zernike: bool = True
) -> list[str]:
    """Column names (without the ``{Compartment}_`` prefix), channel by channel.

    Parameters
    ----------
    channels : sequence of str
        Channel names.
    bin_count : int, default 4
        Number of radial bins.
    zernike : bool, default True
        Include the 30 ``ZernikeMagnitude`` columns per channel.

    Returns
    -------
    list of str
        ``RadialDistribution_{feature}_{channel}_{i}of{bin_count}`` then, with ``zernike``,
        ``RadialDistribution_ZernikeMagnitude_{channel}_{n}_{m}``.
    """
    bins = _check_bin_count(bin_count)
    names = []
    for channel in channels:
        names += [
            f"RadialDistribution_{feature}_{channel}_{i}of{bins}"
            for feature in RADIAL_FEATURES
            for i in range(1, bins + 1)
        ]
        if zernike:
            names += [
                f"RadialDistribution_ZernikeMagnitude_{channel}_{n}_{m}"
                for n, m in shape.ZERNIKE_INDEXES
            ]
    return names


# --------------------------------------------------------------------------------------------
# Geometry (shared by all channels of a compartment)
# --------------------------------------------------------------------------------------------


def _edge_distances(objects: CompartmentObjects) -> np.ndarray:
    """Distance of each pixel (``objects.pixels`` order) to the nearest pixel outside its object.

    The bounding box is padded with one outside pixel except along the image border:
    centrosome's transform of the whole image has nothing outside the image, and outside
    pixels beyond the padded box are never nearer than the padding.
    """
    height, width = objects.shape
    out = np.empty(objects.pixels.size)
    boxes = objects.bboxes
    for row in np.flatnonzero(objects.present).tolist():
        y0, x0, y1, x1 = boxes[row].tolist()
        mask = objects.labels[y0:y1, x0:x1] == objects.object_ids[row]
        pad = ((int(y0 > 0), int(y1 < height)), (int(x0 > 0), int(x1 < width)))
        distance = scipy.ndimage.distance_transform_edt(np.pad(mask, pad))
        inner = distance[
            pad[0][0] : pad[0][0] + mask.shape[0], pad[1][0] : pad[1][0] + mask.shape[1]
        ]
        start = objects.starts[row]
        # Raster order in the box is the objects' pixel order.
        out[start : start + objects.counts[row]] = inner[mask]
    return out


def _centers(objects: CompartmentObjects, d_edge: np.ndarray) -> np.ndarray:
    """Offset (into ``objects.pixels``) of each present object's first farthest-from-edge pixel."""
    starts = objects.starts[objects.present]
    peak = np.maximum.reduceat(d_edge, starts)
    segment = (np.cumsum(objects.present) - 1)[objects.pixel_object]
    candidates = np.flatnonzero(d_edge == peak[segment])
    # First candidate of each segment: raster order, like cp_measure's tie-break.
    first = np.searchsorted(segment[candidates], np.arange(starts.size))
    return candidates[first]


def _geodesic(objects: CompartmentObjects, rows: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Path lengths from the centres inside the given objects (inf elsewhere or unreachable).

    Exact shortest 8-connected paths with steps of 1 and sqrt 2 (centrosome's ``propagate`` on
    a zero image with weight 1). Dijkstra's search, vectorised over all objects and settling
    every pixel within 1 (the shortest step) of the smallest open distance at once: no such
    pixel can be improved by another, so the float values are Dijkstra's.
    """
    height, width = objects.shape
    stride = width + 2
    # Pixel offsets into an image with one pixel of background around it: no bounds checks.
    padded = objects.pixels + (objects.pixels // width) * 2 + stride + 1
    take = np.concatenate(
        [np.arange(objects.starts[r], objects.starts[r] + objects.counts[r]) for r in rows]
    )
    size = (height + 2) * stride
    labels = np.zeros(size, dtype=objects.labels.dtype)  # only the listed objects
    labels[padded[take]] = objects.labels.ravel()[objects.pixels[take]]
    distance = np.full(size, np.inf)
    settled = np.zeros(size, dtype=bool)
    queued = np.zeros(size, dtype=bool)
    slot = np.zeros(size, dtype=np.intp)
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    offsets = np.array([dy * stride + dx for dy, dx in steps])
    lengths = np.array([_SQRT2 if dy and dx else 1.0 for dy, dx in steps])
    front = padded[centers]
    distance[front] = 0.0
    queued[front] = True
    while front.size:
        open_distance = distance[front]
        now = open_distance < open_distance.min() + 1.0
        done, front = front[now], front[~now]
        settled[done] = True
        target = done[:, None] + offsets
        ok = (labels[target] == labels[done][:, None]) & ~settled[target]
        target = target[ok]
        np.minimum.at(distance, target, (distance[done][:, None] + lengths)[ok])
        # New open pixels, each once (the last write of its slot wins).
        new = target[~queued[target]]
        slot[new] = np.arange(new.size)
        new = new[slot[new] == np.arange(new.size)]
        queued[new] = True
        front = np.concatenate((front, new))
    out = np.full(objects.pixels.size, np.inf)
    out[take] = distance[padded[take]]
    return out


@dataclass
class _Geometry:
    """Per-pixel bin and wedge of the pixels connected to their object's centre."""

    good: np.ndarray  # offsets into objects.pixels of the measured pixels
    segment: np.ndarray  # present-object index of each good pixel
    bin: np.ndarray  # radial bin of each good pixel
    wedge: np.ndarray  # 0..7 wedge of each good pixel
    n_present: int
    bin_count: int
    bin_pixels: np.ndarray  # (n_present, bin_count) pixel counts
    wedge_pixels: np.ndarray  # (n_present, bin_count, 8) pixel counts

    @classmethod
    def of(cls, objects: CompartmentObjects, bin_count: int) -> _Geometry:
        present = objects.present
        n_present = int(present.sum())
        segment = (np.cumsum(present) - 1)[objects.pixel_object]
        d_edge = _edge_distances(objects)
        centers = _centers(objects, d_edge)
        cy = objects.pixel_y[centers][segment]
        cx = objects.pixel_x[centers][segment]
        dy = objects.pixel_y - cy
        dx = objects.pixel_x - cx
        ady, adx = np.abs(dy), np.abs(dx)
        low, high = np.minimum(ady, adx), np.maximum(ady, adx)
        d_center = low * _SQRT2 + (high - low)
        # The octile distance is the path length if every pixel has an octile-shortest step
        # towards the centre inside its object (by induction all pixels then reach the centre
        # along such steps); it is a lower bound otherwise.
        width = objects.shape[1]
        flat = objects.labels.ravel()
        own = flat[objects.pixels]
        sy, sx = np.sign(dy).astype(np.int64), np.sign(dx).astype(np.int64)
        diagonal = (low > 0) & (flat[objects.pixels - sy * width - sx] == own)
        along_y = ady > adx
        step = np.where(along_y, sy * width, sx)
        straight = (high > low) & (flat[objects.pixels - step] == own)
        fine = diagonal | straight | (high == 0)
        bad = np.flatnonzero(~np.logical_and.reduceat(fine, objects.starts[present]))
        if bad.size:
            rows = np.flatnonzero(present)[bad]
            exact = _geodesic(objects, rows, centers[bad])
            redo = np.isin(segment, bad)
            d_center[redo] = exact[redo]
        good = np.flatnonzero(np.isfinite(d_center))
        d_center, d_edge = d_center[good], d_edge[good]
        # CellProfiler: d_center / (d_center + d_edge + 0.001), binned by truncation.
        normalized = d_center / ((d_center + d_edge) + 0.001)
        # normalized < 1, so CellProfiler's overflow bin (bin_count) stays empty when scaled.
        bins = (normalized * bin_count).astype(np.int64)
        dy, dx = dy[good], dx[good]
        wedge = (dy > 0) + 2 * (dx > 0) + 4 * (np.abs(dy) > np.abs(dx))
        seg = segment[good]
        key = seg * bin_count + bins
        bin_pixels = np.bincount(key, minlength=n_present * bin_count)
        wedge_pixels = np.bincount(key * 8 + wedge, minlength=n_present * bin_count * 8)
        return cls(
            good,
            seg,
            bins,
            wedge,
            n_present,
            bin_count,
            bin_pixels.reshape(n_present, bin_count).astype(np.float64),
            wedge_pixels.reshape(n_present, bin_count, 8).astype(np.float64),
        )

    def measure(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FracAtD, MeanFrac and RadialCV, ``(n_present, bin_count)`` each.

        ``values`` are the channel's intensities in ``objects.pixels`` order.
        """
        n, bins = self.n_present, self.bin_count
        w = values[self.good]
        key = self.segment * bins + self.bin
        histogram = np.bincount(key, w, minlength=n * bins).reshape(n, bins)
        wedge_sums = np.bincount(key * 8 + self.wedge, w, minlength=n * bins * 8)
        wedge_sums = wedge_sums.reshape(n, bins, 8)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac_at_d = histogram / histogram.sum(axis=1, keepdims=True)
            pixel_frac = self.bin_pixels / self.bin_pixels.sum(axis=1, keepdims=True)
            mean_frac = frac_at_d / (pixel_frac + np.finfo(float).eps)
            # Masked statistics over the wedges that hold pixels, as CellProfiler's
            # numpy.ma arrays.
            filled = self.wedge_pixels > 0
            n_filled = filled.sum(axis=2)
            means = np.where(filled, wedge_sums / self.wedge_pixels, 0.0)
            mean = means.sum(axis=2) / n_filled
            spread = np.where(filled, means - mean[..., None], 0.0)
            std = np.sqrt((spread * spread).sum(axis=2) / n_filled)
            # numpy.ma's division keeps the numerator where the denominator is (about) zero.
            tiny = np.abs(std) * np.finfo(float).tiny >= np.abs(mean)
            cv = np.where(tiny, std, std / mean)
        cv[n_filled == 0] = 0
        return frac_at_d, mean_frac, cv


# --------------------------------------------------------------------------------------------
# Zernike magnitudes
# --------------------------------------------------------------------------------------------


@dataclass
class _ZernikeBasis:
    """Per-pixel powers of the circle-normalised column offset and per-row powers of the row.

    A Zernike polynomial of degree <= 9 is a combination of ``u**a * v**b``; ``v`` is constant
    along an object's row, so the intensity-weighted moments are row sums of ``w * u**a``
    times ``v**b``, summed per object. Both sums are sparse matrix products (one pass over
    the pixels, no temporaries).
    """

    u_powers: np.ndarray  # (n_pixels, 10): u**a, zero outside the unit circle
    columns: np.ndarray  # 0..n_pixels-1, the column indices of the row-sum matrix
    run_bounds: np.ndarray  # offsets where each (object, image row) run starts, then n_pixels
    v_powers: np.ndarray  # (n_runs, 10): v**b of each run's row
    objects_of_runs: csr_matrix  # (n_present, n_runs) ones: which runs make each object
    area: np.ndarray  # pixels per present object
    single: np.ndarray  # present objects whose enclosing circle has radius 0

    @classmethod
    def of(cls, objects: CompartmentObjects, site: Site) -> _ZernikeBasis:
        present = objects.present
        # The same circles as AreaShape's Zernike features, under a key that group may share.
        centers, radius = site.cached(
            ("shape.enclosing_circles", objects.name),
            lambda: shape.enclosing_circles(shape.convex_hulls(objects)),
        )
        slot = (np.cumsum(present) - 1)[objects.pixel_object]
        with np.errstate(divide="ignore", invalid="ignore"):
            # Same arithmetic as CellProfiler (and AreaShape): offsets / radius, and
            # polynomials zeroed where u**2 + v**2 > 1 (rounding puts a few boundary pixels
            # there).
            u = (objects.pixel_x - centers[slot, 1]) / radius[slot]
            v = (objects.pixel_y - centers[slot, 0]) / radius[slot]
            inside = (u * u + v * v <= 1).astype(np.float64)
        size = shape.ZERNIKE_N + 1
        powers = np.empty((size, u.size))  # filled row by row (contiguous), then transposed
        powers[0] = inside
        for a in range(1, size):
            np.multiply(powers[a - 1], u, out=powers[a])
        u_powers = np.ascontiguousarray(powers.T)
        rows = objects.pixels // objects.shape[1]
        new_run = np.ones(rows.size, dtype=bool)
        new_run[1:] = (rows[1:] != rows[:-1]) | (slot[1:] != slot[:-1])
        run_starts = np.flatnonzero(new_run)
        v_run = v[run_starts]
        v_powers = np.cumprod(np.column_stack([np.ones_like(v_run)] + [v_run] * (size - 1)), 1)
        n_present = int(present.sum())
        object_bounds = np.r_[np.searchsorted(slot[run_starts], np.arange(n_present)), v_run.size]
        objects_of_runs = csr_matrix(
            (np.ones(v_run.size), np.arange(v_run.size), object_bounds),
            shape=(n_present, v_run.size),
        )
        return cls(
            u_powers,
            np.arange(u.size),
            np.r_[run_starts, u.size],
            v_powers,
            objects_of_runs,
            objects.counts[present].astype(np.float64),
            radius == 0,
        )

    def magnitudes(self, values: np.ndarray) -> np.ndarray:
        """``(n_present, 30)`` Zernike magnitudes of the intensity ``values``."""
        n_runs, size = self.v_powers.shape
        weighted_runs = csr_matrix(
            (values, self.columns, self.run_bounds), shape=(n_runs, values.size)
        )
        row_sums = weighted_runs @ self.u_powers  # (n_runs, 10): sum of w * u**a per row
        products = (row_sums[:, :, None] * self.v_powers[:, None, :]).reshape(n_runs, -1)
        moments = (self.objects_of_runs @ products).reshape(-1, size, size)
        sums = np.einsum("oab,kab->ok", moments, shape._ZERNIKE_COEFFICIENTS)
        out = np.abs(sums) / self.area[:, None]
        out[self.single] = np.nan  # radius 0: CellProfiler's 0/0 coordinates
        return out


# --------------------------------------------------------------------------------------------
# Feature group
# --------------------------------------------------------------------------------------------


def measure_radial(
    objects: CompartmentObjects, site: Site, *, bin_count: int = 4, zernike: bool = True
) -> dict[str, np.ndarray]:
    """Radial distribution features of every object row, for every channel of the site.

    Parameters
    ----------
    objects : CompartmentObjects
        One compartment's objects (rows of the output).
    site : Site
        The site: its images are the channels measured.
    bin_count : int, default 4
        Number of scaled radial bins.
    zernike : bool, default True
        Also compute the Zernike magnitudes.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{column suffix: values}`` as :func:`radial_columns`; NaN for absent objects, and
        for FracAtD/MeanFrac of objects without intensity (0/0, as CellProfiler).
    """
    names = radial_columns(site.channels, bin_count=bin_count, zernike=zernike)
    out = {name: np.full(objects.n_objects, np.nan) for name in names}
    ok = objects.present
    if not ok.any():
        return out
    geometry = _Geometry.of(objects, bin_count)
    basis = _ZernikeBasis.of(objects, site) if zernike else None
    for channel, image in site.images.items():
        values = image.ravel()[objects.pixels].astype(np.float64)
        for feature, table in zip(RADIAL_FEATURES, geometry.measure(values), strict=True):
            for i, column in enumerate(table.T, start=1):
                out[f"RadialDistribution_{feature}_{channel}_{i}of{bin_count}"][ok] = column
        if basis is not None:
            magnitudes = basis.magnitudes(values).T
            for (n, m), column in zip(shape.ZERNIKE_INDEXES, magnitudes, strict=True):
                out[f"RadialDistribution_ZernikeMagnitude_{channel}_{n}_{m}"][ok] = column
    return out


_DEFAULTS = {"bin_count": 4, "zernike": True}

#: The ``RadialDistribution`` feature group (CellProfiler MeasureObjectIntensityDistribution).
GROUP = FeatureGroup("RadialDistribution", radial_columns, measure_radial, options=_DEFAULTS)

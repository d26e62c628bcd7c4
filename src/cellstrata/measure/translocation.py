"""Nuclear translocation: mean intensity of a shrunk nucleus core and of a ring around it.

The standard readout of nuclear/cytoplasmic shuttling (e.g. NF-kB, NFAT, FOXO reporters),
as PerkinElmer Harmony's "nucleus region" shrunk by a border and its "ring region" with
inner and outer borders. Per nucleus and channel:

* ``core``: the nucleus eroded ``shrink`` times by the 4-neighbour cross (i.e. the pixels
  whose city-block distance to every pixel of another label, the background or the image
  border exceeds ``shrink``). Each label is eroded on its own, so touching nuclei shrink away
  from each other. A nucleus that would vanish keeps its unshrunk mask, so it still gets a
  value;
* ``ring``: the pixels whose Euclidean distance to the nearest nucleus pixel is greater than
  ``gap`` and at most ``gap + width``, each assigned to that nearest nucleus, i.e.
  ``expand_labels(nuclei, gap + width)`` minus ``expand_labels(nuclei, gap)``
  (skimage.segmentation). Rings of neighbouring nuclei therefore never overlap and never
  contain nucleus pixels. When the ``Cells`` compartment is measured too, a ring keeps only
  the pixels of its own cell (same object number), so it does not leak into the background
  or a neighbouring cell.

Columns (Nuclei only): ``Translocation_CoreMean_{channel}``,
``Translocation_RingMean_{channel}`` and ``Translocation_CoreRingRatio_{channel}``
(``CoreMean / RingMean``; NaN when the ring is empty or its mean is 0). An empty ring's
``RingMean`` is NaN too.

Not a CellProfiler module and not part of the default feature set: measured only when
``Translocation`` is listed in ``features.groups`` (see
:data:`cellstrata.singlecell.features.OPT_IN_GROUPS`).

Vectorised: one erosion pass over the whole label image per ``shrink`` step, one Euclidean
distance transform with nearest-pixel indices for all rings, and two weighted ``bincount``
calls per channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from scipy import ndimage

from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site, row_index

__all__ = [
    "COMPARTMENTS",
    "GROUP",
    "TRANSLOCATION_FEATURES",
    "core_pixels",
    "measure_translocation",
    "ring_pixels",
    "shrink_labels",
    "translocation_columns",
]

#: Feature names, in column order (``Translocation_{feature}_{channel}``).
TRANSLOCATION_FEATURES = ("CoreMean", "RingMean", "CoreRingRatio")

#: The group is measured for nuclei only (core and ring are defined around the nucleus).
COMPARTMENTS = ("Nuclei",)

#: Default options: erosion steps of the core, distance of the ring from the nucleus, and
#: ring width, all in pixels.
_DEFAULTS = {"shrink": 1, "gap": 2, "width": 5}


def _check_options(shrink: object, gap: object, width: object) -> tuple[int, float, float]:
    if isinstance(shrink, bool) or not isinstance(shrink, Integral) or shrink < 0:
        raise ValueError(
            f"Translocation: shrink must be a non-negative integer (pixels), got {shrink!r}"
        )
    for name, value, low in (("gap", gap, "non-negative"), ("width", width, "positive")):
        ok = (
            not isinstance(value, bool)
            and isinstance(value, Real)
            and math.isfinite(value)
            and (value >= 0 if name == "gap" else value > 0)
        )
        if not ok:
            raise ValueError(
                f"Translocation: {name} must be a {low} number (pixels), got {value!r}"
            )
    return int(shrink), float(gap), float(width)


def translocation_columns(
    channels: Sequence[str], shrink: int = 1, gap: float = 2, width: float = 5
) -> list[str]:
    """``Translocation_{CoreMean,RingMean,CoreRingRatio}_{channel}`` names.

    The options are only validated here (the columns do not depend on them), so a bad
    configuration is refused when the config is checked.
    """
    _check_options(shrink, gap, width)
    return [f"Translocation_{f}_{c}" for f in TRANSLOCATION_FEATURES for c in channels]


def shrink_labels(labels: np.ndarray, shrink: int) -> np.ndarray:
    """Erode every label on its own ``shrink`` times by the 4-neighbour cross.

    A pixel survives a step when its four neighbours carry its own label; pixels beyond the
    image border count as background. Equivalent to ``scipy.ndimage.binary_erosion`` of each
    label's mask with the cross, ``iterations=shrink``.
    """
    out = np.asarray(labels).copy()
    for _ in range(shrink):
        if not out.any():
            break
        padded = np.pad(out, 1)
        keep = (
            (padded[:-2, 1:-1] == out)
            & (padded[2:, 1:-1] == out)
            & (padded[1:-1, :-2] == out)
            & (padded[1:-1, 2:] == out)
        )
        out = np.where(keep, out, 0)
    return out


def core_pixels(objects: CompartmentObjects, shrink: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices of the nuclei cores and the object row of each.

    Objects that the erosion removes entirely keep all their pixels.
    """
    shrunk = shrink_labels(objects.labels, shrink).ravel()
    pixels = np.flatnonzero(shrunk)
    rows = row_index(shrunk[pixels], objects.object_ids)
    counts = np.bincount(rows, minlength=objects.n_objects)
    vanished = (counts == 0)[objects.pixel_object]
    if vanished.any():
        pixels = np.concatenate((pixels, objects.pixels[vanished]))
        rows = np.concatenate((rows, objects.pixel_object[vanished]))
    return pixels, rows


def ring_pixels(
    objects: CompartmentObjects, gap: float, width: float, cells: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices of the rings around the nuclei and the object row of each.

    Parameters
    ----------
    objects : CompartmentObjects
        The nuclei.
    gap, width : float
        A ring holds the pixels at Euclidean distance ``d`` from the nearest nucleus pixel
        with ``gap < d <= gap + width``.
    cells : numpy.ndarray, optional
        Cell label image with the nuclei's object numbers; ring pixels outside the cell of
        their nucleus are dropped.
    """
    nuclei = objects.labels
    background = nuclei == 0
    if not background.any() or not objects.present.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # What skimage.segmentation.expand_labels does, once for both distances.
    distance, (iy, ix) = ndimage.distance_transform_edt(background, return_indices=True)
    pixels = np.flatnonzero((distance > gap) & (distance <= gap + width))
    labels = nuclei[iy.ravel()[pixels], ix.ravel()[pixels]]
    if cells is not None:
        keep = np.asarray(cells).ravel()[pixels] == labels
        pixels, labels = pixels[keep], labels[keep]
    return pixels, row_index(labels, objects.object_ids)


def measure_translocation(
    objects: CompartmentObjects, site: Site, shrink: int = 1, gap: float = 2, width: float = 5
) -> dict[str, np.ndarray]:
    """Core and ring mean intensities and their ratio per nucleus and channel."""
    shrink, gap, width = _check_options(shrink, gap, width)
    n = objects.n_objects
    out = {name: np.full(n, np.nan) for name in translocation_columns(site.channels)}
    if not objects.present.any() or not site.images:
        return out
    core, core_rows = core_pixels(objects, shrink)
    ring, ring_rows = ring_pixels(objects, gap, width, site.labels.get("Cells"))
    core_counts = np.bincount(core_rows, minlength=n).astype(np.float64)
    ring_counts = np.bincount(ring_rows, minlength=n).astype(np.float64)
    for channel, image in site.images.items():
        flat = np.asarray(image).ravel()
        core_sum = np.bincount(core_rows, flat[core].astype(np.float64), minlength=n)
        ring_sum = np.bincount(ring_rows, flat[ring].astype(np.float64), minlength=n)
        with np.errstate(divide="ignore", invalid="ignore"):
            core_mean = np.where(core_counts > 0, core_sum / core_counts, np.nan)
            ring_mean = np.where(ring_counts > 0, ring_sum / ring_counts, np.nan)
            ratio = np.where(ring_mean != 0, core_mean / ring_mean, np.nan)
        out[f"Translocation_CoreMean_{channel}"] = core_mean
        out[f"Translocation_RingMean_{channel}"] = ring_mean
        out[f"Translocation_CoreRingRatio_{channel}"] = ratio
    return out


#: The ``Translocation`` feature group (Nuclei only; opt-in, see the module docstring).
GROUP = FeatureGroup(
    "Translocation",
    translocation_columns,
    measure_translocation,
    options=_DEFAULTS,
    compartments=COMPARTMENTS,
)

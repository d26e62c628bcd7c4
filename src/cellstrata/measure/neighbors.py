"""MeasureObjectNeighbors: how many objects touch each object, and its closest objects.

Follows CellProfiler 4.2's MeasureObjectNeighbors with the objects as their own neighbours,
for the "Adjacent" method (the default, columns ``Neighbors_<feature>_Adjacent``) and the
"Within a specified distance" method (option ``distance``, columns
``Neighbors_<feature>_<distance>``):

* two objects are neighbours when a pixel of one lies within ``distance`` (Euclidean) of a
  pixel of the other, i.e. inside the object dilated by a disk of that radius; "Adjacent"
  dilates by 1 with CellProfiler's ``strel_disk(1)``, so only 4-connected contact counts;
* ``PercentTouching`` is the share of the object's outline pixels (CellProfiler's
  ``outline``: 8-neighbourhood or image border) within ``distance + 0.5`` of another object;
* the closest objects are by centroid distance among all objects of the compartment, touching
  or not; ``AngleBetweenNeighbors`` is the angle at the object's centroid between the first
  and second closest centroids, in degrees.

CellProfiler measures these per object set (here: compartment); the Cell Painting exports have
them for Nuclei and Cells but not for Cytoplasm, so :data:`GROUP` declares exactly those.

Vectorised: contact is found by comparing every outline pixel's label with the labels at the
offsets of the disk (CellProfiler dilates each object's crop in a Python loop), and closest
centroids come from one k-d tree query.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import numpy as np
from scipy.spatial import cKDTree

from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site, row_index

__all__ = ["COMPARTMENTS", "GROUP", "NEIGHBOR_FEATURES", "closest_objects", "touching"]

#: Feature names in CellProfiler's order (``Neighbors_<feature>_<scale>``).
NEIGHBOR_FEATURES = (
    "NumberOfNeighbors",
    "PercentTouching",
    "FirstClosestObjectNumber",
    "FirstClosestDistance",
    "SecondClosestObjectNumber",
    "SecondClosestDistance",
    "AngleBetweenNeighbors",
)

#: Compartments CellProfiler Cell Painting pipelines measure neighbours for.
COMPARTMENTS = ("Nuclei", "Cells")


def _check_distance(distance: object) -> int:
    if isinstance(distance, bool) or not isinstance(distance, Integral) or distance < 0:
        raise ValueError(
            f"Neighbors: distance must be a non-negative integer (0 = Adjacent), got {distance!r}"
        )
    return int(distance)


def _scale(distance: int) -> str:
    return "Adjacent" if distance == 0 else str(distance)


def neighbor_columns(channels: Sequence[str], distance: int = 0) -> list[str]:
    """``Neighbors_<feature>_<Adjacent | distance>`` names (channel-independent)."""
    scale = _scale(_check_distance(distance))
    return [f"Neighbors_{feature}_{scale}" for feature in NEIGHBOR_FEATURES]


def _disk_offsets(radius2: float) -> np.ndarray:
    """``(k, 2)`` integer ``(dy, dx)`` offsets with ``0 < dy**2 + dx**2 <= radius2``."""
    reach = int(np.sqrt(radius2))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    keep = (dy**2 + dx**2 <= radius2) & ((dy != 0) | (dx != 0))
    return np.column_stack((dy[keep], dx[keep]))


def touching(objects: CompartmentObjects, distance: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Number of neighbours and percentage of outline pixels touching another object.

    Parameters
    ----------
    objects : CompartmentObjects
        The compartment's objects; other objects of the same compartment are the neighbours.
    distance : int, default 0
        0 for CellProfiler's "Adjacent" (dilation by ``strel_disk(1)``), else the neighbour
        distance in pixels.

    Returns
    -------
    number_of_neighbors, percent_touching : numpy.ndarray
        Per object row (0 for absent objects).
    """
    n = objects.n_objects
    reach = max(_check_distance(distance), 1)
    edge = objects.pixel_edge
    pixels = objects.pixels[edge]
    own = objects.pixel_object[edge]
    flat = objects.labels.ravel()
    own_label = flat[pixels]
    height, width = objects.shape
    y, x = pixels // width, pixels % width
    touched = np.zeros(pixels.size, dtype=bool)
    pair_own, pair_label = [], []
    # Neighbours lie within the disk of radius `reach`; touching is tested with CellProfiler's
    # strel_disk(reach + 0.5). The object pixel nearest to any outside pixel lies on the
    # object's outline (a step towards that pixel would otherwise stay inside and get
    # closer), so looking around outline pixels finds every contact. The cost grows with the
    # disk's area, i.e. with distance**2, as CellProfiler's dilations do.
    for dy, dx in _disk_offsets((reach + 0.5) ** 2).tolist():
        qy, qx = y + dy, x + dx
        inside = (qy >= 0) & (qy < height) & (qx >= 0) & (qx < width)
        other = np.where(inside, flat[np.where(inside, qy * width + qx, 0)], 0)
        hit = (other != 0) & (other != own_label)
        touched |= hit
        if dy * dy + dx * dx <= reach * reach:
            pair_own.append(own[hit])
            pair_label.append(other[hit])
    number = np.zeros(n)
    if pair_own:
        other_row = row_index(np.concatenate(pair_label), objects.object_ids)
        pairs = np.unique(np.concatenate(pair_own) * n + other_row)
        number = np.bincount(pairs // n, minlength=n).astype(float)
    perimeter = np.bincount(own, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        percent = np.where(
            perimeter > 0, 100.0 * np.bincount(own[touched], minlength=n) / perimeter, 0.0
        )
    return number, percent


def closest_objects(objects: CompartmentObjects) -> dict[str, np.ndarray]:
    """First and second closest objects by centroid distance, and the angle between them.

    Parameters
    ----------
    objects : CompartmentObjects
        The compartment's objects; absent objects are not candidates.

    Returns
    -------
    dict of str to numpy.ndarray
        ``FirstClosestObjectNumber``, ``FirstClosestDistance``, ``SecondClosestObjectNumber``,
        ``SecondClosestDistance``, ``AngleBetweenNeighbors`` per object row. Object numbers
        are label values (:func:`~cellstrata.singlecell.features.measure_site` stores them as
        float32,
        exact up to 2**24). Where there is no first (second) other object the values are NaN
        (CellProfiler writes 0). Ties are broken by the lower label, as CellProfiler's stable
        sort does.
    """
    n = objects.n_objects
    names = NEIGHBOR_FEATURES[2:]
    out = {name: np.full(n, np.nan) for name in names}
    rows = np.flatnonzero(objects.present)
    m = rows.size
    if m < 2:
        return out
    counts = objects.counts[rows].astype(float)
    cy = np.bincount(objects.pixel_object, objects.pixel_y, minlength=n)[rows] / counts
    cx = np.bincount(objects.pixel_object, objects.pixel_x, minlength=n)[rows] / counts
    # Four nearest include the object itself (distance 0) and resolve ties among the next
    # three by label; CellProfiler sorts the full distance matrix instead.
    _, candidates = cKDTree(np.column_stack((cy, cx))).query(np.column_stack((cy, cx)), k=min(m, 4))
    # Distances as CellProfiler computes them, so equal distances compare equal.
    vy = cy[candidates] - cy[:, None]
    vx = cx[candidates] - cx[:, None]
    dist = np.sqrt(vx**2 + vy**2)
    dist[candidates == np.arange(m)[:, None]] = np.inf
    order = np.lexsort((candidates, dist), axis=-1)
    ranked = np.take_along_axis(candidates, order, axis=-1)
    first = ranked[:, 0]
    first_vec = np.column_stack((vx[np.arange(m), order[:, 0]], vy[np.arange(m), order[:, 0]]))
    out["FirstClosestObjectNumber"][rows] = objects.object_ids[rows[first]]
    out["FirstClosestDistance"][rows] = np.sqrt((first_vec**2).sum(1))
    if m >= 3:
        second = ranked[:, 1]
        second_vec = np.column_stack((vx[np.arange(m), order[:, 1]], vy[np.arange(m), order[:, 1]]))
        out["SecondClosestObjectNumber"][rows] = objects.object_ids[rows[second]]
        out["SecondClosestDistance"][rows] = np.sqrt((second_vec**2).sum(1))
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = (first_vec * second_vec).sum(1) / np.sqrt(
                (first_vec**2).sum(1) * (second_vec**2).sum(1)
            )
        # Rounding can push collinear vectors' cosine past 1, where CellProfiler gets NaN.
        out["AngleBetweenNeighbors"][rows] = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return out


def measure_neighbors(
    objects: CompartmentObjects, site: Site, distance: int = 0
) -> dict[str, np.ndarray]:
    """All :data:`NEIGHBOR_FEATURES` of one compartment, keyed by column suffix."""
    scale = _scale(_check_distance(distance))
    number, percent = touching(objects, distance)
    values = {"NumberOfNeighbors": number, "PercentTouching": percent}
    values.update(closest_objects(objects))
    return {f"Neighbors_{name}_{scale}": values[name] for name in NEIGHBOR_FEATURES}


#: The ``Neighbors`` feature group (Nuclei and Cells only).
GROUP = FeatureGroup(
    "Neighbors",
    neighbor_columns,
    measure_neighbors,
    options={"distance": 0},
    compartments=COMPARTMENTS,
)

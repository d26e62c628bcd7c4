"""Cells and cytoplasm from nuclei (CellProfiler's ``IdentifySecondaryObjects``).

Cells grow from the nuclei by propagation or watershed over the cell stain (or by expansion
without one); :func:`reconcile_cells` gives independently segmented cells the IDs of their
nuclei; :func:`cytoplasm` removes the nuclear pixels. Cell ``k`` and cytoplasm ``k`` are
always the same object as nucleus ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.filters import (
    sobel,
)
from skimage.measure import label as cc_label
from skimage.segmentation import clear_border, expand_labels, watershed

from cellstrata.io import check_labels
from cellstrata.segment.classical import (
    DEFAULT_MIN_CONTRAST,
    THRESHOLD_METHODS,
    _check_image,
    _check_threshold_args,
    _normalize,
    _threshold_field,
)
from cellstrata.segment.params import CELL_METHODS, DEFAULT_CELL_METHOD

#: CellProfiler's default regularization factor (lambda) of its propagation.
DEFAULT_REGULARIZATION = 0.05
# Method-dependent defaults of segment_cells: (smoothing_sigma, threshold_method,
# max_distance). Propagation takes CellProfiler's IdentifySecondaryObjects settings (no
# threshold smoothing, minimum cross-entropy, no distance limit); the watershed keeps what it
# always used.
_CELL_DEFAULTS = {"propagation": (0.0, "li", None), "watershed": (1.0, "otsu", 50)}


# `reconcile_cells`: a nucleus joins the independently segmented cell that holds at least this
# fraction of its pixels; a nucleus mostly outside every cell was missed by the cell model.
_CELL_NUCLEUS_OVERLAP = 0.5

# cells and cytoplasm
# --------------------------------------------------------------------------------------------


def _keep_nucleated(cells: np.ndarray, nuclei: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Zero pieces of cells that are not connected to their own nucleus."""
    pieces = cc_label(cells, connectivity=connectivity, background=0)
    keep = np.zeros(int(pieces.max(initial=0)) + 1, dtype=bool)
    keep[np.unique(pieces[nuclei > 0])] = True
    keep[0] = False
    return np.where(keep[pieces], cells, 0)


# The four undirected 8-neighbour steps; the other four are their reverses.
_STEPS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _step_costs(
    padded: np.ndarray, mask: np.ndarray, di: int, dj: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cost of every step ``p -> p + (di, dj)`` within ``mask``, before regularization.

    The cost is CellProfiler's: the sum over the 3x3 window of the absolute differences
    between the windows around ``p`` and around ``p + (di, dj)``, pixels beyond the border
    taking the value of the nearest border pixel (``padded`` is the image padded by one
    pixel in edge mode). Returns the flat image index of ``p`` of every step with both ends
    in ``mask`` (row-major order) and the costs of those steps.
    """
    h, w = mask.shape
    rows = slice(0, h - di)
    cols = slice(max(0, -dj), w - max(0, dj))
    step_rows = slice(rows.start + di, rows.stop + di)
    step_cols = slice(cols.start + dj, cols.stop + dj)
    both = mask[rows, cols] & mask[step_rows, step_cols]
    n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
    # |I(q) - I(q + step)| for every q of the padded windows, once: each of the 9 window
    # offsets below reads its term from it instead of subtracting again (same values), and
    # only at the steps inside the mask (cells cover a fraction of the image).
    r0, c0 = rows.start, cols.start  # padded index of p + (-1, -1) is (r0, c0)
    step = np.abs(
        padded[r0 : r0 + n_rows + 2, c0 : c0 + n_cols + 2]
        - padded[r0 + di : r0 + di + n_rows + 2, c0 + dj : c0 + dj + n_cols + 2]
    ).ravel()
    stride = n_cols + 2
    r, c = np.nonzero(both)
    centre = (r + 1) * stride + (c + 1)
    diff = np.zeros(centre.size)
    for oi in (-1, 0, 1):  # summed in CellProfiler's order, so the sums agree to the bit
        for oj in (-1, 0, 1):
            diff += step[centre + (oi * stride + oj)]
    return (r + rows.start) * w + (c + cols.start), diff


def propagate(
    image: np.ndarray, labels: np.ndarray, mask: np.ndarray, regularization: float
) -> tuple[np.ndarray, np.ndarray]:
    """CellProfiler's propagation: grow labels through ``mask`` along the cheapest paths.

    The algorithm of CellProfiler's ``IdentifySecondaryObjects`` (method Propagation, after
    Jones, Carpenter and Golland, 2005): a step between 8-neighbours ``p`` and ``q`` costs
    ``sqrt(d**2 + m * regularization**2)``, where ``d`` is the summed absolute difference
    of the 3x3 windows around ``p`` and ``q`` and ``m`` is their Manhattan distance (1 or
    2). Every pixel of ``mask`` reachable from a seed through ``mask`` takes the label of
    the seed with the cheapest path to it (Dijkstra from all seeds at once), so boundaries
    between touching cells fall where the image changes (large ``d``) and, where it is
    flat, halfway between the seeds; a large ``regularization`` makes distance dominate.
    The seeds are the labelled pixels inside ``mask``; labelled pixels outside it keep
    their label but grow nothing.

    Parameters
    ----------
    image : np.ndarray
        2-D intensity image (CellProfiler uses intensities scaled to [0, 1]).
    labels : np.ndarray
        2-D integer seed labels (0 = none), same shape.
    mask : np.ndarray
        2-D boolean: where labels may grow (the thresholded cell stain).
    regularization : float
        CellProfiler's regularization factor lambda (>= 0).

    Returns
    -------
    labels : np.ndarray
        ``int32`` grown labels.
    distances : np.ndarray
        Cost of the cheapest path to each pixel (0 on labelled pixels, -1 where no seed
        reaches), as CellProfiler's ``centrosome.propagate.propagate`` returns it.
    """
    image = np.asarray(image, dtype=np.float64)
    labels = np.asarray(labels)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 2 or image.shape != labels.shape or image.shape != mask.shape:
        raise ValueError(
            f"image, labels and mask must be 2-D of one shape; got {image.shape}, "
            f"{labels.shape}, {mask.shape}"
        )
    if not (np.isfinite(regularization) and regularization >= 0):
        raise ValueError(f"regularization must be a finite number >= 0; got {regularization}")
    grown = np.zeros(image.shape, dtype=np.int32)
    distances = np.full(image.shape, -1.0)
    distances[labels > 0] = 0.0
    seeds = (labels > 0) & mask
    if seeds.any():
        node = np.full(image.shape, -1, dtype=np.int64)
        nodes = np.flatnonzero(mask)
        node.flat[nodes] = np.arange(nodes.size)
        padded = np.pad(image, 1, mode="edge")
        heads, tails, costs = [], [], []
        for di, dj in _STEPS:
            start, diff = _step_costs(padded, mask, di, dj)
            # Zero-cost steps (flat image, no regularization) stay edges of the sparse graph.
            cost = np.sqrt(diff * diff + (abs(di) + abs(dj)) * regularization * regularization)
            heads.append(node.flat[start])
            tails.append(node.flat[start + (di * image.shape[1] + dj)])
            costs.append(cost)
        graph = csr_matrix(
            (np.concatenate(costs), (np.concatenate(heads), np.concatenate(tails))),
            shape=(nodes.size, nodes.size),
        )
        cost, _, source = dijkstra(
            graph,
            directed=False,
            indices=node[seeds],
            min_only=True,
            return_predecessors=True,
        )
        reached = source >= 0
        grown.flat[nodes[reached]] = labels.flat[nodes[source[reached]]]
        distances.flat[nodes[reached]] = cost[reached]
    grown[labels > 0] = labels[labels > 0]
    return grown, distances


def _fill_labeled_holes(labels: np.ndarray) -> np.ndarray:
    """Give each background region enclosed by one label alone (4-connected, not touching
    the image border) that label, as CellProfiler's "Fill holes in identified objects"."""
    holes, count = ndi.label(labels == 0)
    if count == 0:
        return labels
    # (hole, label) for every pair of 4-neighbours where one is a hole and the other a label
    pairs = []
    for a, b in (
        (holes[:-1, :], labels[1:, :]),
        (holes[1:, :], labels[:-1, :]),
        (holes[:, :-1], labels[:, 1:]),
        (holes[:, 1:], labels[:, :-1]),
    ):
        touch = (a > 0) & (b > 0)
        pairs.append(np.column_stack([a[touch], b[touch]]))
    pairs = np.unique(np.concatenate(pairs), axis=0)
    hole_ids, first, n_labels = np.unique(pairs[:, 0], return_index=True, return_counts=True)
    fill = np.zeros(count + 1, dtype=labels.dtype)
    enclosed = n_labels == 1
    fill[hole_ids[enclosed]] = pairs[first[enclosed], 1]
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill[border] = 0
    return np.where(labels == 0, fill[holes], labels)


def segment_cells(
    nuclei: np.ndarray,
    image: np.ndarray | None = None,
    *,
    method: str = DEFAULT_CELL_METHOD,
    expansion: int = 10,
    smoothing_sigma: float | None = None,
    threshold_method: str | None = None,
    threshold_correction: float = 1.0,
    regularization: float = DEFAULT_REGULARIZATION,
    max_distance: int | None = None,
    compactness: float = 0.01,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    remove_border: bool = False,
) -> np.ndarray:
    """Grow cells from nuclei, optionally guided by a cytoplasm/actin image.

    Without ``image``: :func:`skimage.segmentation.expand_labels` by ``expansion`` pixels
    (capped at ``max_distance``). With ``image``, the foreground is the (optionally smoothed)
    image above a global threshold, and cells grow from the nuclei into it:

    - ``method="propagation"`` (default): CellProfiler's ``IdentifySecondaryObjects``
      Propagation (:func:`propagate` with ``regularization``), then holes enclosed by one
      cell are filled, as CellProfiler does by default.
    - ``method="watershed"``: a marker watershed on the Sobel gradient of the smoothed
      image, with ``compactness`` adding a distance-to-nucleus penalty.

    Either way no cell pixel is farther than ``max_distance`` (if set) from its own nucleus,
    and an image that fails the empty-field guard (no contrast) falls back to expansion.
    With ``remove_border`` the cells touching the image border are then discarded.

    Parameters
    ----------
    nuclei : np.ndarray
        2-D integer label image of nuclei (labels need not be sequential).
    image : np.ndarray, optional
        2-D cytoplasm/actin image of the same shape, any numeric dtype; scaled so that its
        maximum is 1 (CellProfiler's intensities of an 8-bit image that reaches 255).
    method : {"propagation", "watershed"}, default "propagation"
        How cells grow over ``image``.
    expansion : int, default 10
        Expansion distance in pixels for the no-image mode (and the no-contrast fallback).
    smoothing_sigma : float, optional
        Gaussian sigma applied before thresholding (the watershed also floods the smoothed
        image; propagation always uses the unsmoothed one, as CellProfiler). Default: 0 for
        propagation (CellProfiler's threshold smoothing scale 0), 1 for the watershed.
    threshold_method : {"li", "otsu", "otsu3", "triangle"}, optional
        Global threshold of the cell foreground: ``li`` is minimum cross-entropy
        (CellProfiler's default), ``otsu3`` three-class Otsu with the middle class as
        foreground. Default: ``li`` for propagation, ``otsu`` for the watershed.
    threshold_correction : float, default 1.0
        Factor multiplying the threshold (CellProfiler's threshold correction factor).
    regularization : float, default 0.05
        Propagation only: CellProfiler's regularization factor lambda; 0 follows the image
        alone, large values split touching cells halfway between their nuclei.
    max_distance : int, optional
        No cell pixel is farther than this (Euclidean, px) from its nucleus. Default: no
        limit for propagation (CellProfiler has none), 50 for the watershed.
    compactness : float, default 0.01
        Watershed only: weight on the distance from the nucleus; 0 is a plain watershed.
    min_contrast : float, default 5.0
        Empty-field guard, as in :func:`segment_nuclei`; a cell image that fails it is
        treated as absent (expansion fallback).
    remove_border : bool, default False
        Discard the cells that touch the image border, after they have grown (so they still
        bound their neighbours); their nuclei stay, without a cell. CellProfiler's
        ``IdentifySecondaryObjects`` "Discard secondary objects touching the border of the
        image?" Yes, with "Discard the associated primary objects?" No. A nucleus on the
        border makes its cell touch it, so its cell always goes.

    Returns
    -------
    np.ndarray
        ``int32`` label image: cell ``k`` contains every pixel of nucleus ``k``, and the set
        of cell labels equals the set of nucleus labels (less the discarded ones with
        ``remove_border``).
    """
    if method not in CELL_METHODS:
        raise ValueError(f"cells method must be one of {', '.join(CELL_METHODS)}; got {method!r}")
    default_sigma, default_threshold, default_distance = _CELL_DEFAULTS[method]
    smoothing_sigma = default_sigma if smoothing_sigma is None else smoothing_sigma
    threshold_method = default_threshold if threshold_method is None else threshold_method
    max_distance = default_distance if max_distance is None else max_distance
    _check_threshold_args(threshold_method, threshold_correction)
    nuclei = check_labels(nuclei, "nuclei")
    if expansion < 0 or (max_distance is not None and max_distance < 0):
        raise ValueError("expansion and max_distance must be >= 0")
    if not isinstance(remove_border, (bool, np.bool_)):
        raise ValueError(f"remove_border must be true or false; got {remove_border!r}")
    reach = expansion if max_distance is None else min(expansion, max_distance)
    cells = _grow_cells(
        nuclei.astype(np.int32, copy=False),
        image,
        method=method,
        reach=reach,
        smoothing_sigma=smoothing_sigma,
        threshold_method=threshold_method,
        threshold_correction=threshold_correction,
        regularization=regularization,
        max_distance=max_distance,
        compactness=compactness,
        min_contrast=min_contrast,
    )
    # A cell cut by the image edge has lost part of itself: CellProfiler discards it (and
    # every cell of a border nucleus, which touches the edge too).
    return clear_border(cells) if remove_border else cells


def _grow_cells(
    nuclei: np.ndarray,
    image: np.ndarray | None,
    *,
    method: str,
    reach: int,
    smoothing_sigma: float,
    threshold_method: str,
    threshold_correction: float,
    regularization: float,
    max_distance: int | None,
    compactness: float,
    min_contrast: float,
) -> np.ndarray:
    """The cells of :func:`segment_cells` from checked arguments, before any border drop."""
    if nuclei.max(initial=0) == 0:
        return np.zeros(nuclei.shape, dtype=np.int32)
    if image is None:
        return _expand(nuclei, reach)

    image = _check_image(image, "image")
    if image.shape != nuclei.shape:
        raise ValueError(f"image shape {image.shape} != nuclei shape {nuclei.shape}")
    normalized = _normalize(image)
    field = _threshold_field(
        normalized, smoothing_sigma, threshold_method, threshold_correction, min_contrast
    )
    fg, smoothed = field.mask, field.smoothed
    if not fg.any():
        return _expand(nuclei, reach)
    if method == "propagation":
        # The guard only tells a stained field from an empty one; the foreground is then
        # CellProfiler's, not raised to the guard's noise floor (which would cut the dim cell
        # edges CellProfiler keeps): the threshold of the unsmoothed image, compared with the
        # smoothed one, as its Threshold module does.
        if field.smoothed is normalized:  # no smoothing: the field's threshold is that one
            threshold = field.threshold
        else:
            threshold = (
                float(THRESHOLD_METHODS[threshold_method](normalized)) * threshold_correction
            )
        fg = field.smoothed >= threshold
        cells, _ = propagate(normalized, nuclei, fg, regularization)
        cells = _fill_labeled_holes(cells)
        if max_distance is not None:
            cells = _limit_distance(cells, nuclei, max_distance)
        # Propagation grows through 8-neighbours: a cell is one 8-connected piece.
        return _keep_nucleated(cells, nuclei, connectivity=2).astype(np.int32, copy=False)
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


def _outline(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels with an 8-neighbour of another value, or on the image edge."""
    padded = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    edge = np.zeros(labels.shape, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            edge |= padded[1 + di : 1 + di + h, 1 + dj : 1 + dj + w] != labels
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return edge & (labels > 0)


def cytoplasm(nuclei: np.ndarray, cells: np.ndarray, *, shrink_nuclei: bool = False) -> np.ndarray:
    """Cytoplasm label image: ``cells`` with the nuclear pixels removed.

    Parameters
    ----------
    nuclei, cells : np.ndarray
        2-D integer label images of the same shape, cell ``k`` matching nucleus ``k``.
    shrink_nuclei : bool, default False
        Remove only the nuclei shrunk by their one-pixel outline, so the outline stays in
        the cytoplasm: CellProfiler's ``IdentifyTertiaryObjects`` with "Shrink smaller
        object prior to subtraction" (its default). False removes every nuclear pixel.

    Returns
    -------
    np.ndarray
        ``int32`` labels; cytoplasm ``k`` is cell ``k`` minus every nucleus (minus its
        interior with ``shrink_nuclei``). A cell that is all nucleus may have no pixels.
    """
    nuclei = check_labels(nuclei, "nuclei")
    cells = check_labels(cells, "cells")
    if nuclei.shape != cells.shape:
        raise ValueError(f"nuclei shape {nuclei.shape} != cells shape {cells.shape}")
    removed = nuclei > 0
    if shrink_nuclei:
        removed &= ~_outline(nuclei)
    return np.where(removed, 0, cells).astype(np.int32, copy=False)


def reconcile_cells(nuclei: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Give independently segmented cells the IDs of their nuclei (one ID per cell).

    A second model (e.g. cellpose ``cyto3`` on the cell stain) labels cells without regard
    to the nuclei. Each nucleus joins the cell that holds most of its pixels, if that is at
    least ``_CELL_NUCLEUS_OVERLAP`` of them. A cell that several nuclei join (a binucleate
    cell, or two cells the model merged) is shared among them, each pixel going to the
    nearest of its nuclei. Cells that no nucleus joins are dropped; a nucleus that joins no
    cell becomes a cell of its own pixels (no cytoplasm). Finally every nuclear pixel belongs
    to its own nucleus's cell and cell pieces cut off from their nucleus are dropped, as in
    :func:`segment_cells`.

    Parameters
    ----------
    nuclei : np.ndarray
        2-D integer label image of nuclei (labels need not be sequential).
    cells : np.ndarray
        2-D integer label image of cells of the same shape, labelled independently.

    Returns
    -------
    np.ndarray
        ``int32`` label image: cell ``k`` contains every pixel of nucleus ``k``, and the set
        of cell labels equals the set of nucleus labels.
    """
    nuclei = check_labels(nuclei, "nuclei").astype(np.int32, copy=False)
    cells = check_labels(cells, "cells")
    if nuclei.shape != cells.shape:
        raise ValueError(f"nuclei shape {nuclei.shape} != cells shape {cells.shape}")
    if nuclei.max(initial=0) == 0:
        return np.zeros(nuclei.shape, dtype=np.int32)
    stride = int(cells.max(initial=0)) + 1
    both = (nuclei > 0) & (cells > 0)
    pairs, overlap = np.unique(
        nuclei[both].astype(np.int64) * stride + cells[both], return_counts=True
    )
    nucleus, cell = pairs // stride, pairs % stride
    # Each nucleus's best cell: sort by nucleus, largest overlap first, keep the first.
    order = np.lexsort((-overlap, nucleus))
    nucleus, cell, overlap = nucleus[order], cell[order], overlap[order]
    first = np.r_[True, nucleus[1:] != nucleus[:-1]] if nucleus.size else np.zeros(0, bool)
    nucleus, cell, overlap = nucleus[first], cell[first], overlap[first]
    area = np.bincount(nuclei.ravel())
    joins = overlap >= _CELL_NUCLEUS_OVERLAP * area[nucleus]
    nucleus, cell = nucleus[joins], cell[joins]
    shared = np.bincount(cell, minlength=stride)[cell] > 1
    lookup = np.zeros(stride, dtype=np.int32)
    lookup[cell[~shared]] = nucleus[~shared]
    out = lookup[cells]
    boxes = ndi.find_objects(cells)
    for k in np.unique(cell[shared]):
        box = boxes[k - 1]
        region = cells[box] == k
        seeds = np.where(region & np.isin(nuclei[box], nucleus[cell == k]), nuclei[box], 0)
        nearest = expand_labels(seeds, distance=sum(region.shape))
        out[box][region] = nearest[region]
    out = np.where(nuclei > 0, nuclei, out)  # a nucleus belongs to its own cell
    return _keep_nucleated(out, nuclei).astype(np.int32, copy=False)


# --------------------------------------------------------------------------------------------


def _site_masks(
    nuclei: np.ndarray, cells: np.ndarray, cytoplasm_params: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    cyto = cytoplasm(nuclei, cells, **(cytoplasm_params or {}))
    return {"nuclei": nuclei, "cells": cells, "cytoplasm": cyto}

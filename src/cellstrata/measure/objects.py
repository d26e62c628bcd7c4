"""Shared per-site bookkeeping of the features level: objects, feature groups, site context.

Every measurement family (``cellstrata.measure.<family>``) receives a
:class:`CompartmentObjects` (the pixels of one compartment's objects, grouped by object, built
once per compartment) and a :class:`Site` (all images and label images of the site plus a
cache), so work that several compartments share -- e.g. the morphological openings of
granularity -- is done once per site and channel.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

# Above this many distinct label values a dense lookup table would waste memory.
_MAX_LUT_SIZE = 1 << 24


class CompartmentObjects:
    """Pixels of one compartment's objects, grouped by object, computed once per site.

    Feature groups receive this object instead of the raw label image so that expensive
    bookkeeping (finding each object's pixels, outlines, bounding boxes) is shared.

    Parameters
    ----------
    name : str
        Compartment name, e.g. ``"Cells"``.
    labels : numpy.ndarray
        2-D integer label image of the compartment.
    object_ids : numpy.ndarray
        Sorted, unique, positive label values defining the object set (one row each).
        Labels in ``labels`` that are not in ``object_ids`` are ignored.

    Attributes
    ----------
    name : str
        Compartment name.
    object_ids : numpy.ndarray
        ``int64`` label value of each output row.
    n_objects : int
        Number of output rows.
    labels : numpy.ndarray
        The label image with labels outside ``object_ids`` set to 0.
    pixels : numpy.ndarray
        Flat (raveled) pixel indices of all object pixels, grouped by object in row order and
        in raster order within each object.
    pixel_object : numpy.ndarray
        Row index (0..n_objects-1) of each entry of ``pixels``.
    counts : numpy.ndarray
        Number of pixels of each object (0 where the object is absent in this compartment).
    starts : numpy.ndarray
        Offset of each object's first pixel in ``pixels``.
    present : numpy.ndarray
        Boolean, ``counts > 0``; absent objects get NaN features.
    """

    def __init__(self, name: str, labels: np.ndarray, object_ids: np.ndarray) -> None:
        self.name = name
        self.object_ids = np.asarray(object_ids, dtype=np.int64)
        self.n_objects = int(self.object_ids.size)
        self.shape = labels.shape

        flat = labels.ravel()
        index = row_index(flat, self.object_ids)
        pixels = np.flatnonzero(index >= 0)
        rows = index[pixels]
        # A stable sort keeps raster order inside each object; uint16 keys use numpy's radix
        # sort, which is much faster than a comparison sort here.
        key = rows.astype(np.uint16) if self.n_objects <= np.iinfo(np.uint16).max else rows
        order = np.argsort(key, kind="stable")
        self.pixels = pixels[order]
        self.pixel_object = rows[order]
        self.counts = np.bincount(self.pixel_object, minlength=self.n_objects).astype(np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.present = self.counts > 0

        selected = np.zeros(flat.size, dtype=labels.dtype)
        selected[self.pixels] = flat[self.pixels]
        self.labels = selected.reshape(labels.shape)

    @cached_property
    def pixel_y(self) -> np.ndarray:
        """Row (y) coordinate of each entry of :attr:`pixels`, ``float64``."""
        return (self.pixels // self.shape[1]).astype(np.float64)

    @cached_property
    def pixel_x(self) -> np.ndarray:
        """Column (x) coordinate of each entry of :attr:`pixels`, ``float64``."""
        return (self.pixels % self.shape[1]).astype(np.float64)

    @cached_property
    def pixel_edge(self) -> np.ndarray:
        """Whether each entry of :attr:`pixels` lies on its object's outline.

        Same definition as CellProfiler's ``outline`` (centrosome): a pixel whose
        8-neighbourhood holds a different label, or that touches the image border.
        """
        return outline(self.labels).ravel()[self.pixels]

    @cached_property
    def bboxes(self) -> np.ndarray:
        """``(n_objects, 4)`` int array ``min_row, min_col, max_row + 1, max_col + 1``.

        Rows of absent objects are 0.
        """
        out = np.zeros((self.n_objects, 4), dtype=np.int64)
        if not self.present.any():
            return out
        starts = self.starts[self.present]
        ends = starts + self.counts[self.present]
        y = self.pixels // self.shape[1]
        x = self.pixels % self.shape[1]
        # Raster order within objects: first/last pixel hold the min/max row.
        out[self.present, 0] = y[starts]
        out[self.present, 2] = y[ends - 1] + 1
        out[self.present, 1] = np.minimum.reduceat(x, starts)
        out[self.present, 3] = np.maximum.reduceat(x, starts) + 1
        return out

    def slices(self) -> list[tuple[slice, slice] | None]:
        """Bounding-box slices per object (``None`` where absent), for per-object loops."""
        return [
            (slice(b[0], b[2]), slice(b[1], b[3])) if ok else None
            for b, ok in zip(self.bboxes.tolist(), self.present.tolist(), strict=True)
        ]

    def sorted_segments(self, values: np.ndarray) -> np.ndarray:
        """Copy of per-pixel ``values`` sorted ascending within each object's segment."""
        out = values.copy()
        # Sorting each object's segment separately is several times faster than a global
        # lexsort by (object, value) and exact (no composite-key rounding).
        for start, count in zip(self.starts.tolist(), self.counts.tolist(), strict=True):
            if count > 1:
                out[start : start + count].sort()
        return out


def row_index(flat_labels: np.ndarray, object_ids: np.ndarray) -> np.ndarray:
    """Row index of each pixel's label in ``object_ids``, or -1 (background / not an object)."""
    top = int(flat_labels.max(initial=0))
    if top < _MAX_LUT_SIZE:
        lut = np.full(top + 1, -1, dtype=np.int64)
        ids = object_ids[object_ids <= top]
        lut[ids] = np.searchsorted(object_ids, ids)
        return lut[flat_labels]
    # Sparse, huge label values: binary search instead of a giant lookup table.
    if object_ids.size == 0:
        return np.full(flat_labels.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(object_ids, flat_labels), object_ids.size - 1)
    return np.where(object_ids[pos] == flat_labels, pos, -1)


def outline(labels: np.ndarray) -> np.ndarray:
    """Boolean outline mask matching ``centrosome.outline.outline(labels) > 0``."""
    diff = np.zeros(labels.shape, dtype=bool)
    for a, b in (
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
        ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
    ):
        d = labels[a] != labels[b]
        diff[a] |= d
        diff[b] |= d
    # Objects cut by the image border get an edge there, as in CellProfiler.
    diff[0, :] = diff[-1, :] = True
    diff[:, 0] = diff[:, -1] = True
    return diff & (labels > 0)


class Site:
    """One site's images and label images, and a cache shared by all groups and compartments.

    Parameters
    ----------
    images : mapping of str to numpy.ndarray
        ``{channel: image}``, 2-D, all the labels' shape.
    labels : mapping of str to numpy.ndarray
        ``{compartment: label image}`` restricted to the site's object set.

    Attributes
    ----------
    images, labels : dict
        As given.
    """

    def __init__(self, images: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> None:
        self.images = dict(images)
        self.labels = dict(labels)
        self._cache: dict[Hashable, Any] = {}

    @property
    def channels(self) -> list[str]:
        """Channel names in order."""
        return list(self.images)

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per site for ``key``; later calls return the stored result."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


#: ``measure(objects, site, **options) -> {column suffix: float array of length n_objects}``.
MeasureFn = Callable[..., Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class FeatureGroup:
    """One pluggable family of measurements.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"Intensity"``.
    columns : callable
        ``columns(channels, **options) -> list[str]``: column names without the
        ``{Compartment}_`` prefix, in output order. Must not depend on data, so empty sites
        keep the schema.
    measure : callable
        ``measure(objects, site, **options) -> {suffix: array}`` where ``objects`` is a
        :class:`CompartmentObjects`, ``site`` the :class:`Site`, and each array has one value
        per object row. Must return exactly the suffixes given by ``columns``.
    options : mapping, optional
        Default options of the group (e.g. texture scales); callers override them by name.
    compartments : tuple of str, optional
        Measure the group only for these compartments (CellProfiler pipelines measure e.g.
        neighbours for Nuclei and Cells but not Cytoplasm); other compartments get none of
        its columns. Default: every compartment.
    """

    name: str
    columns: Callable[..., list[str]]
    measure: MeasureFn
    options: Mapping[str, Any] = field(default_factory=dict)
    compartments: tuple[str, ...] | None = None

    def measures(self, compartment: str) -> bool:
        """Whether the group has columns for ``compartment``."""
        return self.compartments is None or compartment in self.compartments

    def resolve(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with ``options``; an unknown option raises ValueError naming it."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"feature group {self.name}: unknown option(s) {unknown}; "
                f"options are {sorted(self.options)}"
            )
        return {**self.options, **options}

    def column_names(self, channels: Sequence[str], options: Mapping[str, Any]) -> list[str]:
        """Declared columns for ``channels`` under resolved ``options``."""
        return self.columns(channels, **options)

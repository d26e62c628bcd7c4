"""Single-cell feature extraction with CellProfiler measurement names.

Measures one site at a time: label images for the Nuclei / Cells / Cytoplasm compartments plus
one 2-D image per channel in, one row per object out. Column names follow CellProfiler's
``{Compartment}_{Category}_{Feature}[_{Channel}]`` convention exactly (as written by
ExportToSpreadsheet / joined by CytoTable), so pycytominer and existing notebooks work
unchanged.

Feature groups are pluggable: each :class:`FeatureGroup` declares its column names (known
without data) and a measuring function, and is registered in :data:`FEATURE_GROUPS`. Later
groups (texture, granularity, ...) register themselves the same way and automatically appear in
:func:`feature_columns` and :func:`measure_site`.

The groups shipped here mirror CellProfiler 4.2+:

* ``AreaShape`` -- MeasureObjectSizeShape (2-D), including radii, Feret diameters and Zernike
  moments (:mod:`cellstrata.measure.shape`; option ``zernike=False`` skips the Zernike ones).
* ``Intensity`` -- MeasureObjectIntensity, including its ``Location_CenterMassIntensity`` and
  ``Location_MaxIntensity`` X/Y outputs.
* ``Location`` -- ``Location_Center_X/Y`` as written by the Identify modules.
* ``Correlation`` -- MeasureColocalization per object for every channel pair, including
  Costes' thresholds (:mod:`cellstrata.measure.colocalization`; option ``costes=False``).
* ``RadialDistribution`` -- MeasureObjectIntensityDistribution's radial bins and Zernike
  magnitudes (:mod:`cellstrata.measure.radial`).
* ``Texture`` -- MeasureTexture's Haralick features (:mod:`cellstrata.measure.texture`).
* ``Granularity`` -- MeasureGranularity's spectrum (:mod:`cellstrata.measure.granularity`).
* ``Neighbors`` -- MeasureObjectNeighbors, for Nuclei and Cells only
  (:mod:`cellstrata.measure.neighbors`).

Opt-in groups (:data:`OPT_IN_GROUPS`) are registered but left out of the default "all groups";
they are measured only when named in ``groups``:

* ``Translocation`` -- nucleus core / surrounding ring mean intensities and their ratio, for
  Nuclei only (:mod:`cellstrata.measure.translocation`; options ``shrink``, ``gap``,
  ``width``). Not a CellProfiler module.

Z coordinates (always 0 for 2-D images) and the ``Number_Object_Number`` / ``Parent_*`` /
``Children_*`` identifier columns are not emitted: they carry no biology and would be picked up
as features by pycytominer's prefix-based feature inference; ``ObjectNumber`` holds the label.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skimage.measure
import skimage.morphology

from cellstrata.io import read_image, site_file, write_parquet
from cellstrata.measure import (
    colocalization,
    granularity,
    neighbors,
    radial,
    shape,
    texture,
    translocation,
)
from cellstrata.measure.objects import CompartmentObjects, FeatureGroup, Site

log = logging.getLogger(__name__)

__all__ = [
    "AREASHAPE_FEATURES",
    "COMPARTMENTS",
    "FEATURE_GROUPS",
    "INTENSITY_FEATURES",
    "INTENSITY_LOCATION_FEATURES",
    "OPT_IN_GROUPS",
    "CompartmentObjects",
    "FeatureGroup",
    "feature_columns",
    "measure_batch",
    "measure_site",
    "register_feature_group",
]

COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")

#: MeasureObjectSizeShape feature names (without the ``{C}_AreaShape_`` prefix), followed by
#: :data:`cellstrata.measure.shape.ZERNIKE_FEATURES` unless the ``zernike`` option is off.
AREASHAPE_FEATURES = (
    "Area",
    "Perimeter",
    *shape.RADIUS_FEATURES,
    *shape.FERET_FEATURES,
    "FormFactor",
    "Eccentricity",
    "Solidity",
    "ConvexArea",
    "Extent",
    "MajorAxisLength",
    "MinorAxisLength",
    "Orientation",
    "EquivalentDiameter",
    "Compactness",
    "EulerNumber",
    "BoundingBoxArea",
    "BoundingBoxMinimum_X",
    "BoundingBoxMinimum_Y",
    "BoundingBoxMaximum_X",
    "BoundingBoxMaximum_Y",
    "Center_X",
    "Center_Y",
)

#: MeasureObjectIntensity feature names (``{C}_Intensity_{feature}_{channel}``).
INTENSITY_FEATURES = (
    "IntegratedIntensity",
    "MeanIntensity",
    "StdIntensity",
    "MinIntensity",
    "MaxIntensity",
    "MedianIntensity",
    "LowerQuartileIntensity",
    "UpperQuartileIntensity",
    "MADIntensity",
    "MassDisplacement",
    "IntegratedIntensityEdge",
    "MeanIntensityEdge",
    "StdIntensityEdge",
    "MinIntensityEdge",
    "MaxIntensityEdge",
)

#: Location features written by MeasureObjectIntensity (``{C}_Location_{feature}_{channel}``).
INTENSITY_LOCATION_FEATURES = (
    "CenterMassIntensity_X",
    "CenterMassIntensity_Y",
    "MaxIntensity_X",
    "MaxIntensity_Y",
)

# --------------------------------------------------------------------------------------------
# Feature group registry
# --------------------------------------------------------------------------------------------

#: Registered feature groups, in output column order.
FEATURE_GROUPS: dict[str, FeatureGroup] = {}

#: Names of registered groups measured only when named in ``groups`` (left out of the default).
OPT_IN_GROUPS: set[str] = set()


def register_feature_group(
    group: FeatureGroup, *, replace: bool = False, default: bool = True
) -> FeatureGroup:
    """Add ``group`` to :data:`FEATURE_GROUPS` (appended to the column order).

    Parameters
    ----------
    group : FeatureGroup
        The group to register.
    replace : bool, default False
        Allow overwriting an existing group of the same name (keeps its position).
    default : bool, default True
        Whether the group is measured when no ``groups`` are given; False makes it opt-in
        (added to :data:`OPT_IN_GROUPS`).

    Returns
    -------
    FeatureGroup
        ``group``, so this can be used in assignments.
    """
    if group.name in FEATURE_GROUPS and not replace:
        raise ValueError(f"feature group {group.name!r} is already registered")
    FEATURE_GROUPS[group.name] = group
    if default:
        OPT_IN_GROUPS.discard(group.name)
    else:
        OPT_IN_GROUPS.add(group.name)
    return group


# --------------------------------------------------------------------------------------------
# AreaShape (MeasureObjectSizeShape)
# --------------------------------------------------------------------------------------------


def _areashape_columns(channels: Sequence[str], zernike: bool = True) -> list[str]:
    if not isinstance(zernike, bool):
        raise ValueError(f"AreaShape: zernike must be true or false, got {zernike!r}")
    names = AREASHAPE_FEATURES + (shape.ZERNIKE_FEATURES if zernike else ())
    return [f"AreaShape_{f}" for f in names]


def _second_moments(objects: CompartmentObjects) -> tuple[np.ndarray, ...]:
    """Axis lengths, eccentricity and orientation (radians) of present objects.

    Vectorised re-implementation of skimage's regionprops formulas (inertia tensor of the
    central moments), which is what CellProfiler reports; a per-object regionprops call
    spends most of its time here.
    """
    ok = objects.present
    n = objects.n_objects
    obj = objects.pixel_object
    area = objects.counts[ok].astype(np.float64)
    cy = np.zeros(n)
    cx = np.zeros(n)
    cy[ok] = np.bincount(obj, objects.pixel_y, minlength=n)[ok] / area
    cx[ok] = np.bincount(obj, objects.pixel_x, minlength=n)[ok] / area
    dy = objects.pixel_y - cy[obj]
    dx = objects.pixel_x - cx[obj]
    # Inertia tensor [[a, b], [b, c]] = [[mu02, -mu11], [-mu11, mu20]] / mu00 (skimage).
    a = np.bincount(obj, dx * dx, minlength=n)[ok] / area
    mu11 = np.bincount(obj, dx * dy, minlength=n)[ok] / area
    c = np.bincount(obj, dy * dy, minlength=n)[ok] / area
    # Symmetric shapes have mu11 == 0 or a == c exactly, but summation order leaves ~1e-16
    # noise whose sign would flip Orientation between +90 and -90 (or off +-45); snap it so
    # such shapes get skimage's exact-arithmetic answer.
    tol = 1e-12 * (a + c)
    mu11 = np.where(np.abs(mu11) <= tol, 0.0, mu11)
    c = np.where(np.abs(a - c) <= tol, a, c)
    b = -mu11
    half_trace = (a + c) / 2
    radius = np.sqrt(((a - c) / 2) ** 2 + b**2)
    l1 = np.clip(half_trace + radius, 0, None)
    l2 = np.clip(half_trace - radius, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        eccentricity = np.where(l1 == 0, 0.0, np.sqrt(1 - l2 / l1))
    orientation = np.where(
        a - c == 0,
        np.where(b < 0, np.pi / 4, -np.pi / 4),
        0.5 * np.arctan2(-2 * b, c - a),
    )
    return 4 * np.sqrt(l1), 4 * np.sqrt(l2), eccentricity, orientation


def _measure_areashape(
    objects: CompartmentObjects, site: Site, zernike: bool = True
) -> dict[str, np.ndarray]:
    n = objects.n_objects
    out = {f"AreaShape_{f}": np.full(n, np.nan) for f in AREASHAPE_FEATURES}
    out.update(
        (f"AreaShape_{f}", v) for f, v in shape.measure_shape(objects, zernike=zernike).items()
    )
    if not objects.present.any():
        return out
    ok = objects.present
    area = objects.counts[ok].astype(np.float64)
    bbox = objects.bboxes[ok].astype(np.float64)
    bbox_area = (bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1])
    cx = np.bincount(objects.pixel_object, objects.pixel_x, minlength=n)[ok] / area
    cy = np.bincount(objects.pixel_object, objects.pixel_y, minlength=n)[ok] / area
    major, minor, eccentricity, orientation = _second_moments(objects)

    # Perimeter, convex hull and Euler number need the object's pixel pattern: call the same
    # skimage functions regionprops (hence CellProfiler) uses, on each bounding-box crop.
    # Crops come from our own bboxes: regionprops' find_objects would allocate per label
    # value, which explodes for sparse 64-bit labels.
    perimeter, convex, euler = [], [], []
    for label, box in zip(
        objects.object_ids[ok].tolist(), objects.bboxes[ok].tolist(), strict=True
    ):
        mask = objects.labels[box[0] : box[2], box[1] : box[3]] == label
        perimeter.append(skimage.measure.perimeter(mask, 4))
        convex.append(np.count_nonzero(skimage.morphology.convex_hull_image(mask)))
        euler.append(skimage.measure.euler_number(mask, connectivity=2))
    perimeter = np.asarray(perimeter, dtype=np.float64)
    convex = np.asarray(convex, dtype=np.float64)
    euler = np.asarray(euler, dtype=np.float64)

    with np.errstate(divide="ignore", invalid="ignore"):
        # A perimeter of 0 (single pixel) makes FormFactor infinite in CellProfiler; NaN is
        # the honest "undefined" and does not poison downstream z-scoring.
        form_factor = np.where(perimeter > 0, 4.0 * np.pi * area / perimeter**2, np.nan)
    # CellProfiler guards this denominator with max(., 1).
    compactness = perimeter**2 / np.maximum(4.0 * np.pi * area, 1.0)

    values = {
        "Area": area,
        "Perimeter": perimeter,
        "FormFactor": form_factor,
        "Eccentricity": eccentricity,
        "Solidity": area / convex,
        "ConvexArea": convex,
        "Extent": area / bbox_area,
        "MajorAxisLength": major,
        "MinorAxisLength": minor,
        # CellProfiler reports skimage's orientation (angle from the row axis) in degrees.
        "Orientation": np.degrees(orientation),
        "EquivalentDiameter": np.sqrt(4.0 * area / np.pi),
        "Compactness": compactness,
        "EulerNumber": euler,
        "BoundingBoxArea": bbox_area,
        # skimage bbox convention: maxima are exclusive (one past the last pixel), as CP.
        "BoundingBoxMinimum_X": bbox[:, 1],
        "BoundingBoxMinimum_Y": bbox[:, 0],
        "BoundingBoxMaximum_X": bbox[:, 3],
        "BoundingBoxMaximum_Y": bbox[:, 2],
        "Center_X": cx,
        "Center_Y": cy,
    }
    for feature, value in values.items():
        out[f"AreaShape_{feature}"][ok] = value
    return out


# --------------------------------------------------------------------------------------------
# Intensity (MeasureObjectIntensity)
# --------------------------------------------------------------------------------------------


def _intensity_columns(channels: Sequence[str]) -> list[str]:
    cols = [f"Intensity_{f}_{c}" for f in INTENSITY_FEATURES for c in channels]
    cols += [f"Location_{f}_{c}" for f in INTENSITY_LOCATION_FEATURES for c in channels]
    return cols


def _cp_quantile(
    sorted_values: np.ndarray, starts: np.ndarray, counts: np.ndarray, fraction: float
) -> np.ndarray:
    """CellProfiler's per-object quantile of segment-sorted values.

    CellProfiler interpolates at 0-based position ``count * fraction`` (not ``(count - 1) *
    fraction`` like numpy), falling back to the value at that position when it is the last.
    E.g. the median of 1, 2, 3, 4 is 3.
    """
    counts = np.asarray(counts).astype(np.int64)
    pos = counts * fraction
    index = np.floor(pos).astype(np.int64)
    frac = pos - index
    has_next = index < counts - 1
    lo = sorted_values[starts + index]
    hi = sorted_values[starts + np.minimum(index + 1, counts - 1)]
    return np.where(has_next, lo * (1 - frac) + hi * frac, lo)


def _measure_intensity(objects: CompartmentObjects, site: Site) -> dict[str, np.ndarray]:
    n = objects.n_objects
    images = site.images
    out = {name: np.full(n, np.nan) for name in _intensity_columns(list(images))}
    if not objects.present.any() or not images:
        return out
    ok = objects.present
    obj = objects.pixel_object
    counts = objects.counts[ok].astype(np.float64)
    starts = objects.starts[ok]
    ends = starts + objects.counts[ok]
    x, y = objects.pixel_x, objects.pixel_y
    cm_x = np.bincount(obj, x, minlength=n)[ok] / counts
    cm_y = np.bincount(obj, y, minlength=n)[ok] / counts

    edge = objects.pixel_edge
    edge_obj = obj[edge]
    edge_counts_all = np.bincount(edge_obj, minlength=n)
    edge_counts = edge_counts_all[ok].astype(np.float64)
    edge_ok = edge_counts_all > 0  # always true for present objects; kept as a guard
    edge_starts = (np.cumsum(edge_counts_all) - edge_counts_all)[edge_ok]

    for channel, image in images.items():
        v = np.asarray(image).ravel()[objects.pixels].astype(np.float64)
        total_all = np.bincount(obj, v, minlength=n)
        total = total_all[ok]
        mean_all = np.zeros(n)
        mean_all[ok] = total / counts
        # Two-pass population std, as CellProfiler (numerically safer than E[x^2] - E[x]^2).
        var = np.bincount(obj, (v - mean_all[obj]) ** 2, minlength=n)[ok] / counts

        s = objects.sorted_segments(v)
        vmin = s[starts]
        vmax = s[ends - 1]
        lower = _cp_quantile(s, starts, counts, 0.25)
        median = _cp_quantile(s, starts, counts, 0.5)
        upper = _cp_quantile(s, starts, counts, 0.75)
        median_all = np.zeros(n)
        median_all[ok] = median
        dev = objects.sorted_segments(np.abs(v - median_all[obj]))
        mad = _cp_quantile(dev, starts, counts, 0.5)

        with np.errstate(divide="ignore", invalid="ignore"):
            # Zero integrated intensity leaves the intensity centroid undefined -> NaN.
            cmi_x = np.bincount(obj, x * v, minlength=n)[ok] / total
            cmi_y = np.bincount(obj, y * v, minlength=n)[ok] / total
        mass_displacement = np.hypot(cm_x - cmi_x, cm_y - cmi_y)

        # Position of the maximum: first maximal pixel in raster order within each object
        # (objects whose maximum is NaN get none and stay NaN).
        vmax_all = np.full(n, np.nan)
        vmax_all[ok] = vmax
        hits = np.flatnonzero(v == vmax_all[obj])
        hit_obj = obj[hits]
        first = np.r_[True, hit_obj[1:] != hit_obj[:-1]] if hits.size else hits.astype(bool)
        max_x = np.full(n, np.nan)
        max_y = np.full(n, np.nan)
        max_x[hit_obj[first]] = x[hits[first]]
        max_y[hit_obj[first]] = y[hits[first]]

        ev = v[edge]
        edge_total = np.bincount(edge_obj, ev, minlength=n)
        edge_mean_all = np.zeros(n)
        edge_mean_all[edge_ok] = edge_total[edge_ok] / edge_counts_all[edge_ok]
        edge_var = np.bincount(edge_obj, (ev - edge_mean_all[edge_obj]) ** 2, minlength=n)
        edge_min_all = np.full(n, np.nan)
        edge_max_all = np.full(n, np.nan)
        if edge_starts.size:
            edge_min_all[edge_ok] = np.minimum.reduceat(ev, edge_starts)
            edge_max_all[edge_ok] = np.maximum.reduceat(ev, edge_starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            edge_mean = edge_total[ok] / edge_counts
            edge_std = np.sqrt(edge_var[ok] / edge_counts)

        values = {
            "IntegratedIntensity": total,
            "MeanIntensity": total / counts,
            "StdIntensity": np.sqrt(var),
            "MinIntensity": vmin,
            "MaxIntensity": vmax,
            "MedianIntensity": median,
            "LowerQuartileIntensity": lower,
            "UpperQuartileIntensity": upper,
            "MADIntensity": mad,
            "MassDisplacement": mass_displacement,
            "IntegratedIntensityEdge": edge_total[ok],
            "MeanIntensityEdge": edge_mean,
            "StdIntensityEdge": edge_std,
            "MinIntensityEdge": edge_min_all[ok],
            "MaxIntensityEdge": edge_max_all[ok],
        }
        for feature, value in values.items():
            out[f"Intensity_{feature}_{channel}"][ok] = value
        for feature, value in (
            ("CenterMassIntensity_X", cmi_x),
            ("CenterMassIntensity_Y", cmi_y),
            ("MaxIntensity_X", max_x[ok]),
            ("MaxIntensity_Y", max_y[ok]),
        ):
            out[f"Location_{feature}_{channel}"][ok] = value
    return out


# --------------------------------------------------------------------------------------------
# Location (Identify modules' object centers)
# --------------------------------------------------------------------------------------------


def _location_columns(channels: Sequence[str]) -> list[str]:
    return ["Location_Center_X", "Location_Center_Y"]


def _measure_location(objects: CompartmentObjects, site: Site) -> dict[str, np.ndarray]:
    n = objects.n_objects
    with np.errstate(divide="ignore", invalid="ignore"):
        # Absent objects divide 0 by 0 -> NaN, which is what we want.
        counts = objects.counts.astype(np.float64)
        cx = np.bincount(objects.pixel_object, objects.pixel_x, minlength=n) / counts
        cy = np.bincount(objects.pixel_object, objects.pixel_y, minlength=n) / counts
    return {"Location_Center_X": cx, "Location_Center_Y": cy}


register_feature_group(
    FeatureGroup("AreaShape", _areashape_columns, _measure_areashape, options={"zernike": True})
)
register_feature_group(FeatureGroup("Intensity", _intensity_columns, _measure_intensity))
register_feature_group(FeatureGroup("Location", _location_columns, _measure_location))
register_feature_group(colocalization.GROUP)
register_feature_group(radial.GROUP)
register_feature_group(texture.GROUP)
register_feature_group(granularity.GROUP)
register_feature_group(neighbors.GROUP)
register_feature_group(translocation.GROUP, default=False)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_compartments(compartments: Sequence[str]) -> tuple[str, ...]:
    if isinstance(compartments, str):
        raise TypeError("compartments must be a sequence of names, not a single string")
    comps = tuple(compartments)
    if not comps:
        raise ValueError("compartments must name at least one compartment")
    for comp in comps:
        if comp not in COMPARTMENTS:
            raise ValueError(f"unknown compartment {comp!r}; expected one of {COMPARTMENTS}")
    if len(set(comps)) != len(comps):
        raise ValueError(f"duplicate compartment in {comps}")
    return comps


def _check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(channels, str):
        raise TypeError("channels must be a sequence of names, not a single string")
    chans = tuple(channels)
    for ch in chans:
        if not isinstance(ch, str) or not ch:
            raise ValueError(f"channel names must be non-empty strings, got {ch!r}")
    if len(set(chans)) != len(chans):
        raise ValueError(f"duplicate channel in {chans}")
    return chans


def _resolve_options(
    selected: tuple[FeatureGroup, ...], options: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    options = dict(options or {})
    names = {g.name for g in selected}
    unknown = sorted(set(options) - names)
    if unknown:
        hint = [g for g in unknown if g in OPT_IN_GROUPS]
        raise ValueError(
            f"options for feature group(s) not measured: {unknown}"
            + (f"; {hint} are opt-in: list them in groups" if hint else "")
        )
    return {g.name: g.resolve(options.get(g.name)) for g in selected}


def _check_groups(groups: Sequence[str] | None) -> tuple[FeatureGroup, ...]:
    if groups is None:
        return tuple(g for name, g in FEATURE_GROUPS.items() if name not in OPT_IN_GROUPS)
    if isinstance(groups, str):
        raise TypeError("groups must be a sequence of names, not a single string")
    missing = [g for g in groups if g not in FEATURE_GROUPS]
    if missing:
        raise ValueError(f"unknown feature group(s) {missing}; registered: {list(FEATURE_GROUPS)}")
    return tuple(FEATURE_GROUPS[g] for g in groups)


def feature_columns(
    channels: Sequence[str],
    compartments: Sequence[str] = COMPARTMENTS,
    *,
    groups: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Feature column names produced by :func:`measure_site`, in output order.

    Parameters
    ----------
    channels : sequence of str
        Channel names, in the order their columns should appear (e.g. ``["DNA", "AGP"]``).
    compartments : sequence of str, default :data:`COMPARTMENTS`
        Compartments to include, in output order.
    groups : sequence of str, optional
        Feature groups to include (keys of :data:`FEATURE_GROUPS`), in output order.
        Default: all registered groups in registration order except :data:`OPT_IN_GROUPS`.
    options : mapping, optional
        ``{group name: {option: value}}`` overriding a group's default options (e.g. texture
        scales), which can change its columns.

    Returns
    -------
    list of str
        ``{Compartment}_{Category}_{Feature}[_{Channel}]`` names; ``ObjectNumber`` is not
        included.

    Examples
    --------
    >>> feature_columns(["DNA"], ["Nuclei"])[:2]
    ['Nuclei_AreaShape_Area', 'Nuclei_AreaShape_Perimeter']
    """
    chans = _check_channels(channels)
    comps = _check_compartments(compartments)
    selected = _check_groups(groups)
    resolved = _resolve_options(selected, options)
    suffixes = {g.name: g.column_names(chans, resolved[g.name]) for g in selected}
    return [
        f"{comp}_{suffix}"
        for comp in comps
        for g in selected
        if g.measures(comp)
        for suffix in suffixes[g.name]
    ]


def _check_inputs(
    labels: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray],
    comps: tuple[str, ...],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    unknown = [k for k in labels if k not in COMPARTMENTS]
    if unknown:
        raise ValueError(f"unknown compartment {unknown[0]!r} in labels; expected {COMPARTMENTS}")
    missing = [c for c in comps if c not in labels]
    if missing:
        raise ValueError(f"no label image for compartment {missing[0]!r}")
    # The object set is the nuclei: every cell has exactly one nucleus.
    reference = "Nuclei" if "Nuclei" in labels else comps[0]

    arrays: dict[str, np.ndarray] = {}
    for name in dict.fromkeys([reference, *comps]):
        arr = np.asarray(labels[name])
        if arr.ndim != 2:
            raise ValueError(f"label image {name!r} must be 2-D, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"label image {name!r} must have an integer dtype, got {arr.dtype}")
        if arr.shape != np.shape(labels[reference]):
            raise ValueError(
                f"label image {name!r} has shape {arr.shape}, but {reference!r} has "
                f"{np.shape(labels[reference])}"
            )
        if arr.size and arr.min() < 0:
            raise ValueError(f"label image {name!r} has negative labels")
        arrays[name] = arr
    shape = arrays[reference].shape

    imgs: dict[str, np.ndarray] = {}
    for channel in _check_channels(list(images)):
        img = np.asarray(images[channel])
        if img.shape != shape:
            raise ValueError(
                f"image for channel {channel!r} has shape {img.shape}, "
                f"but the label images have shape {shape}"
            )
        if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
            raise TypeError(f"image for channel {channel!r} must be real-valued, got {img.dtype}")
        imgs[channel] = img
    return arrays, imgs, reference


def _object_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted unique positive labels (bincount is much faster than np.unique when dense)."""
    top = int(labels.max(initial=0))
    if top == 0:
        return np.zeros(0, dtype=np.int64)
    if top <= 4 * labels.size:
        flat = labels.ravel().astype(np.intp, copy=False)  # bincount refuses uint64
        return np.flatnonzero(np.bincount(flat)[1:]) + 1
    ids = np.unique(labels)
    return ids[ids > 0].astype(np.int64)


def measure_site(
    labels: Mapping[str, np.ndarray],
    images: Mapping[str, np.ndarray],
    *,
    compartments: Sequence[str] = COMPARTMENTS,
    groups: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Measure every object of one site, with CellProfiler column names.

    Parameters
    ----------
    labels : mapping of str to numpy.ndarray
        ``{"Nuclei": ..., "Cells": ..., "Cytoplasm": ...}`` 2-D integer label images of the
        same shape. Object ``k`` is the same cell in every compartment. The object set (one
        output row each) is the set of nucleus labels that also label a cell when ``"Cells"``
        is given (a nucleus whose cell was discarded at the border is no object); when
        ``"Nuclei"`` is absent, the first of ``compartments``. Labels of other compartments
        outside this set are ignored.
    images : mapping of str to numpy.ndarray
        ``{channel: image}``, 2-D real images with the labels' shape, measured as given
        (illumination correction and scaling happen upstream). Non-finite values propagate.
    compartments : sequence of str, default :data:`COMPARTMENTS`
        Compartments to measure, in output order; each needs an entry in ``labels``.
    groups : sequence of str, optional
        Feature groups to compute (keys of :data:`FEATURE_GROUPS`); default all registered
        except :data:`OPT_IN_GROUPS`.
    options : mapping, optional
        ``{group name: {option: value}}`` overriding the groups' default options.
    timings : dict, optional
        If given, the CPU seconds of this process spent in each group (all compartments)
        are added to ``timings[group name]``; benchmarks read it (CPU, not wall time, so
        that other work on the machine does not count).

    Returns
    -------
    pandas.DataFrame
        One row per object sorted by ``ObjectNumber`` (``int64``, the nucleus label),
        followed by ``feature_columns(list(images), compartments, groups=groups)`` as
        ``float32``. An object missing from a compartment (e.g. a cytoplasm that is empty
        because the nucleus fills the cell) has NaN for all of that compartment's features.
        A site without objects yields zero rows with the same columns and dtypes.

    Raises
    ------
    ValueError
        Unknown or missing compartment, non-2-D or mismatched label images, or an image
        whose shape differs from the labels (the message names the channel).
    TypeError
        Non-integer label images or non-real images.

    Notes
    -----
    Definitions follow CellProfiler 4.2 MeasureObjectSizeShape / MeasureObjectIntensity:
    quartiles, median and MAD interpolate at position ``count * q`` of the sorted values;
    ``StdIntensity`` is the population standard deviation; edge pixels are those whose
    8-neighbourhood holds another label or that touch the image border; ``Orientation`` is in
    degrees; ``BoundingBoxMaximum_*`` are exclusive; ``Center``/``Location`` X is the column.
    Where CellProfiler would divide by zero (``FormFactor`` of a 1-pixel object, intensity
    centroid of an all-zero object) the value is NaN.
    """
    comps = _check_compartments(compartments)
    selected = _check_groups(groups)
    resolved = _resolve_options(selected, options)
    arrays, imgs, reference = _check_inputs(labels, images, comps)
    channels = list(imgs)
    columns = feature_columns(channels, comps, groups=[g.name for g in selected], options=options)

    object_ids = _object_ids(arrays[reference])
    n = object_ids.size
    matrix = np.full((n, len(columns)), np.nan, dtype=np.float32)
    if n:
        position = {name: i for i, name in enumerate(columns)}
        objects = {comp: CompartmentObjects(comp, arrays[comp], object_ids) for comp in comps}
        site = Site(imgs, {comp: objs.labels for comp, objs in objects.items()})
        for comp, objs in objects.items():
            for group in selected:
                if not group.measures(comp):
                    continue
                started = time.process_time()
                expected = group.column_names(channels, resolved[group.name])
                result = group.measure(objs, site, **resolved[group.name])
                if set(result) != set(expected):
                    raise RuntimeError(
                        f"feature group {group.name!r} returned columns that differ from "
                        f"its declared columns for {comp!r}"
                    )
                for suffix in expected:
                    values = np.asarray(result[suffix], dtype=np.float64)
                    # Absent objects are NaN whatever a plug-in returned for them.
                    values = np.where(objs.present, values, np.nan)
                    matrix[:, position[f"{comp}_{suffix}"]] = values
                if timings is not None:
                    elapsed = time.process_time() - started
                    timings[group.name] = timings.get(group.name, 0.0) + elapsed

    frame = pd.DataFrame(matrix, columns=columns)
    frame.insert(0, "ObjectNumber", object_ids.astype(np.int64))
    if reference == "Nuclei" and "Cells" in labels:
        # A nucleus whose cell was discarded (segment_cells' remove_border) is no row, as in
        # CellProfiler's tables joined by CytoTable, which hold cells with their nuclei. It
        # is dropped only now: like CellProfiler's, it still counts as a nucleus' neighbour.
        with_cell = np.isin(object_ids, _object_ids(np.asarray(labels["Cells"])))
        frame = frame.loc[with_cell].reset_index(drop=True)
    return frame


def measure_batch(
    corrected_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    plate: str,
    output: str | os.PathLike,
    *,
    groups: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Measure every site of one job; write one Parquet in CytoTable's joined layout.

    Parameters
    ----------
    corrected_dir : path
        Corrected site stacks ``{well}_s{site}.tiff`` (see :mod:`cellstrata.images.illumination`).
    masks_dir : path
        Label images ``{well}_s{site}_{nuclei,cells,cytoplasm}.tiff``.
    plate : str
        Plate name written to ``Metadata_Plate``.
    output : path
        Parquet file: ``Metadata_Plate, Metadata_Well, Metadata_Site, Metadata_ObjectNumber``
        then the float32 features, one row per cell. A job without cells writes zero rows
        with the full schema.
    groups, options : optional
        Feature groups and their options, as for :func:`measure_site`.
    """
    from cellstrata.images.illumination import iter_corrected_sites

    parts, channels = [], None
    for well, site, images in iter_corrected_sites(corrected_dir):
        channels = list(images)
        labels = {
            compartment: read_image(
                Path(masks_dir, site_file(well, site, f"_{compartment.lower()}"))
            )
            for compartment in COMPARTMENTS
        }
        table = measure_site(labels, images, groups=groups, options=options)
        table.insert(0, "Metadata_Plate", plate)
        table.insert(1, "Metadata_Well", well)
        table.insert(2, "Metadata_Site", np.int64(site))
        parts.append(table.rename(columns={"ObjectNumber": "Metadata_ObjectNumber"}))
        log.info("plate %s well %s site %d: %d cells", plate, well, site, len(table))
    cells = pd.concat(parts, ignore_index=True)
    write_parquet(output, cells)
    log.info("%d cells x %d features (channels %s)", len(cells), len(cells.columns) - 4, channels)
    return cells

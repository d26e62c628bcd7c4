"""Image figures of a plate: illumination functions, image-QC distributions and segmentation
overlays."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from matplotlib import colors, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from cellstrata.images.illumination import read_stack
from cellstrata.io import check_labels
from cellstrata.report.figures import (
    CELL_OUTLINE,
    FLAGGED,
    NUCLEI_OUTLINE,
    PASSED,
    _grid,
    _new_figure,
    _pretty,
    note_figure,
)

#: Metrics drawn by :func:`qc_distributions` by default (see :mod:`cellstrata.images.qc`).
QC_METRICS = (
    "ImageQuality_PowerLogLogSlope",
    "ImageQuality_FocusScore",
    "ImageQuality_PercentMaximal",
    "ImageQuality_MeanIntensity",
)


_QC_LABELS = {
    "ImageQuality_PowerLogLogSlope": "PowerLogLogSlope (lower = blurrier)",
    "ImageQuality_FocusScore": "FocusScore (normalized variance)",
    "ImageQuality_PercentMaximal": "PercentMaximal (% of pixels at max)",
    "ImageQuality_MeanIntensity": "MeanIntensity (raw intensity units)",
}


_ILLUMINATION_LABELS = {
    "regular": "function value (images are divided by it)",
    "background": "background (subtracted; 0-1 intensity scale)",
    "none": "flat function (no correction)",
}


# Longest side, in pixels, of an image drawn in a panel: a report panel shows ~400 px, so
# larger images are reduced first (fast to draw, and outlines stay visible).
_DISPLAY_PIXELS = 512


def _reduce(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Block-mean ``image`` so its longer side is at most about :data:`_DISPLAY_PIXELS`."""
    step = max(1, math.ceil(max(image.shape) / _DISPLAY_PIXELS))
    if step == 1:
        return image.astype(np.float64), 1
    rows, columns = (n // step for n in image.shape)
    cropped = image[: rows * step, : columns * step].astype(np.float64)
    return cropped.reshape(rows, step, columns, step).mean(axis=(1, 3)), step


def illumination_figure(
    functions: Mapping[str, np.ndarray],
    *,
    plate: str,
    modes: Mapping[str, str] | None = None,
) -> Figure:
    """The illumination function of each channel of a plate, one panel each.

    Parameters
    ----------
    functions : Mapping[str, numpy.ndarray]
        Channel -> 2-D function (:func:`cellstrata.images.illumination.read_function`).
    plate : str
        Plate name for the title.
    modes : Mapping[str, str], optional
        Channel -> mode (``regular``, ``background``, ``none``), for the colour bar label.
    """
    if not functions:
        return note_figure(f"Illumination functions, plate {plate}", "No illumination function.")
    modes = modes or {}
    n_rows, n_columns = _grid(len(functions), 3)
    figure = _new_figure(4.2 * n_columns, 3.8 * n_rows + 0.4)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    for ax, (channel, function) in zip(axes, functions.items(), strict=False):
        function = np.asarray(function, dtype=np.float64)
        if function.ndim != 2:
            raise ValueError(f"channel {channel}: function has shape {function.shape}; need 2-D")
        low, high = float(np.nanmin(function)), float(np.nanmax(function))
        # The function is smooth, so a reduced copy draws the same picture faster.
        shown, _ = _reduce(function)
        height, width = function.shape
        image = ax.imshow(
            shown, cmap="magma", extent=(0, width, height, 0), interpolation="nearest"
        )
        mode = modes.get(channel, "regular")
        figure.colorbar(image, ax=ax, shrink=0.85, label=_ILLUMINATION_LABELS.get(mode, mode))
        ratio = f", max/min {high / low:.2f}" if low > 0 else ""
        ax.set_title(f"{channel} ({mode})\nmin {low:.3g}, max {high:.3g}{ratio}", fontsize=10)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    for ax in axes[len(functions) :]:
        ax.set_axis_off()
    figure.suptitle(f"Illumination functions, plate {plate}", fontsize=13)
    return figure


def _boundaries(labels: np.ndarray, shape: tuple[int, int], step: int) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    # Sample the labels on the reduced image's grid, so outlines are one display pixel wide.
    sampled = labels[: shape[0] * step : step, : shape[1] * step : step]
    return find_boundaries(sampled, mode="inner")


def overlay_figure(
    sites: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
) -> Figure:
    """Segmentation outlines over a contrast-stretched image, one panel per site.

    Parameters
    ----------
    sites : sequence of (title, image, nuclei, cells)
        ``image`` 2-D of any dtype; ``nuclei`` and ``cells`` label images of its shape
        (``cells`` may be None).

    Returns
    -------
    matplotlib.figure.Figure
        Grey image stretched between its 1st and 99.5th percentiles, nuclei outlined in cyan
        and cells in orange.
    """
    title = "Segmentation: nuclei outlined in cyan, cells in orange"
    if not sites:
        return note_figure(title, "No sample site to show.")
    n_rows, n_columns = _grid(len(sites), 4)
    figure = _new_figure(3.8 * n_columns, 3.9 * n_rows + 0.8)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    nuclei_rgb = colors.to_rgb(NUCLEI_OUTLINE)
    cells_rgb = colors.to_rgb(CELL_OUTLINE)
    for ax, (name, image, nuclei, cells) in zip(axes, sites, strict=False):
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"site {name}: image has shape {image.shape}; need 2-D")
        masks = {"nuclei": check_labels(nuclei, f"site {name} nuclei")}
        if cells is not None:
            masks["cells"] = check_labels(cells, f"site {name} cells")
        for kind, labels in masks.items():
            if labels.shape != image.shape:
                raise ValueError(
                    f"site {name}: {kind} labels {labels.shape} != image {image.shape}"
                )
        reduced, step = _reduce(image)
        low, high = np.percentile(reduced, [1, 99.5])
        grey = np.clip((reduced - low) / (high - low), 0, 1) if high > low else reduced * 0
        rgb = np.repeat(grey[..., None], 3, axis=2)
        # Cells first, so nuclei outlines stay visible where the two touch.
        counts = []
        for kind, colour in (("cells", cells_rgb), ("nuclei", nuclei_rgb)):
            if kind in masks:
                rgb[_boundaries(masks[kind], grey.shape, step)] = colour
        for kind in ("nuclei", "cells"):
            if kind in masks:
                counts.append(f"{len(np.setdiff1d(np.unique(masks[kind]), [0]))} {kind}")
            else:
                counts.append(f"no {kind[:-1]} mask")
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{name}\n{', '.join(counts)}", fontsize=10)
        ax.set_axis_off()
    for ax in axes[len(sites) :]:
        ax.set_axis_off()
    figure.suptitle(title, fontsize=13)
    figure.get_layout_engine().set(h_pad=0.1)  # room between the title and the site names
    figure.legend(
        handles=[
            Line2D([], [], color=NUCLEI_OUTLINE, linewidth=3, label="nuclei outline"),
            Line2D([], [], color=CELL_OUTLINE, linewidth=3, label="cell outline"),
        ],
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    return figure


def qc_distributions(
    image_qc: pd.DataFrame,
    *,
    metrics: Sequence[str] = QC_METRICS,
    flag_column: str = "Flag_Any",
) -> Figure:
    """Histograms of image QC metrics, one row per metric and one column per channel.

    Parameters
    ----------
    image_qc : pandas.DataFrame
        The QC table of :func:`cellstrata.images.qc.flag_outliers`: one row per site and channel.
    metrics : sequence of str
        Metric columns (``ImageQuality_`` may be left out); those absent are skipped.
    flag_column : str
        Boolean column splitting each histogram into passed (blue) and flagged (red) images;
        ignored when absent.
    """
    plate = ", ".join(map(str, pd.unique(image_qc.get("Metadata_Plate", pd.Series(dtype=str)))))
    title = f"Image QC, plate {plate}" if plate else "Image QC"
    present = []
    for metric in metrics:
        for name in (metric, f"ImageQuality_{metric}"):
            if name in image_qc.columns:
                present.append(name)
                break
    if image_qc.empty or not present:
        return note_figure(title, "No image QC metric to show.")
    if "channel" in image_qc.columns:
        channels = list(pd.unique(image_qc["channel"]))
    else:
        channels = [None]
    if flag_column in image_qc.columns:
        flagged = image_qc[flag_column].fillna(False).astype(bool).to_numpy()
    else:
        flagged = np.zeros(len(image_qc), dtype=bool)

    n_rows, n_columns = len(present), len(channels)
    figure = _new_figure(2.9 * n_columns + 0.3, 2.2 * n_rows + 1.0)
    axes = figure.subplots(n_rows, n_columns, squeeze=False)
    for row, metric in enumerate(present):
        for col, channel in enumerate(channels):
            ax = axes[row, col]
            rows = (
                np.ones(len(image_qc), dtype=bool)
                if channel is None
                else (image_qc["channel"] == channel).to_numpy()
            )
            values = image_qc[metric].to_numpy(dtype=float)
            finite = rows & np.isfinite(values)
            if not finite.any():
                ax.text(
                    0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes
                )
            else:
                bins = np.histogram_bin_edges(
                    values[finite], bins=int(np.clip(1.5 * np.sqrt(finite.sum()), 8, 40))
                )
                ax.hist(
                    [values[finite & ~flagged], values[finite & flagged]],
                    bins=bins,
                    stacked=True,
                    color=[PASSED, FLAGGED],
                )
            ax.tick_params(labelsize=8)
            # Few ticks: metrics like FocusScore have long decimals that would overlap.
            ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
            ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # image counts
            ax.set_xlabel(_QC_LABELS.get(metric, _pretty(metric)), fontsize=8.5)
            if col == 0:
                ax.set_ylabel("images")
            if row == 0:
                ax.set_title(channel if channel is not None else "all channels")
    # Count sites, not images: a site is one row per channel.
    keys = [c for c in ("Metadata_Well", "Metadata_Site") if c in image_qc.columns]
    n_sites = len(image_qc.drop_duplicates(keys)) if keys else len(image_qc)
    n_flagged = len(image_qc[flagged].drop_duplicates(keys)) if keys else int(flagged.sum())
    figure.suptitle(f"{title}: {n_flagged} of {n_sites} sites flagged ({flag_column})")
    figure.legend(
        handles=[
            Patch(color=PASSED, label="passed"),
            Patch(color=FLAGGED, label=f"flagged ({flag_column})"),
        ],
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    return figure


def _read_sites(sample_sites: Sequence[Mapping[str, Any]]) -> list[tuple]:
    sites = []
    for site in sample_sites:
        image = tifffile.imread(site["image"])
        if image.ndim == 3:
            # A corrected CYX stack: the plane of the named channel (default the first).
            planes = read_stack(site["image"])
            image = planes[site.get("channel") or next(iter(planes))]
        cells = tifffile.imread(site["cells"]) if site.get("cells") else None
        sites.append((site["title"], image, tifffile.imread(site["nuclei"]), cells))
    return sites

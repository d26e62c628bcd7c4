"""Figures for the Snakemake HTML report: plate maps, illumination, segmentation, QC, profiles.

Every plotting function takes tables or arrays and returns a :class:`matplotlib.figure.Figure`
drawn with the object API on an Agg canvas: no pyplot state, so figures can be made from
threads and without a display. :func:`save_figure` writes one as PNG; :func:`write_plate_figures`
and :func:`write_experiment_figures` are the entry points of the Snakemake scripts (file paths
in, PNG files out).

Column name arguments may be given with or without the ``Metadata_`` prefix.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from matplotlib import colormaps, colors, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.images.illumination import read_function, read_stack
from cellstrata.io import atomic_path, check_labels
from cellstrata.profiles import quality
from cellstrata.profiles.cellqc import FLAG_PREFIX

log = logging.getLogger(__name__)

#: Resolution of every PNG: with the default 10 pt font, text stays legible in the report.
DPI = 100
#: Standard plate formats: wells -> (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
#: Metrics drawn by :func:`qc_distributions` by default (see :mod:`cellstrata.images.qc`).
QC_METRICS = (
    "ImageQuality_PowerLogLogSlope",
    "ImageQuality_FocusScore",
    "ImageQuality_PercentMaximal",
    "ImageQuality_MeanIntensity",
)
#: Figure names :func:`write_plate_figures` and :func:`write_experiment_figures` can write.
PLATE_FIGURES = ("overview", "illumination", "qc", "overlays")
EXPERIMENT_FIGURES = ("pca", "map", "dose_response")

EMPTY_WELL = "#d9d9d9"
EMPTY_HATCH = "#9e9e9e"
FLAGGED = "#d62728"
PASSED = "#4c72b0"
SIGNIFICANT = "#1b7837"
NOT_SIGNIFICANT = "#bdbdbd"
# Cyan and orange stay distinct on a grey image and for the common colour-vision deficiencies.
NUCLEI_OUTLINE = "#00e5ff"
CELL_OUTLINE = "#ff9f1c"
#: Largest absolute normalized feature value :func:`pca_figure` uses (see _usable_features).
MAX_NORMALIZED = 1e6
PLATE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")

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
_LEFT_OUT = f"missing or infinite values, no variance, or |value| > {MAX_NORMALIZED:g}"
_WELL = re.compile(r"^\s*([A-Za-z]{1,2})0*(\d{1,3})\s*$")
# Longest side, in pixels, of an image drawn in a panel: a report panel shows ~400 px, so
# larger images are reduced first (fast to draw, and outlines stay visible).
_DISPLAY_PIXELS = 512

PathLike = str | os.PathLike


# --- helpers -------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # explicit Agg canvas: no display, no pyplot
    return figure


def note_figure(title: str, message: str) -> Figure:
    """A figure holding only a title and a message, for a figure that cannot be drawn.

    The report then says why a panel is missing instead of the workflow failing.
    """
    figure = _new_figure(7.0, 2.2)
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, color="0.3")
    return figure


def save_figure(figure: Figure, path: PathLike, *, dpi: int = DPI) -> None:
    """Write ``figure`` as PNG at ``dpi``, atomically, creating parent directories.

    Nothing global is touched or closed; the figure is freed with its last reference.
    """
    with atomic_path(path) as tmp:
        # "tight" trims the margins a fixed-aspect plate leaves in its figure.
        figure.savefig(
            tmp, dpi=dpi, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.15
        )
    log.info("wrote %s", path)


def _column(table: pd.DataFrame, name: str) -> str:
    """The column of ``table`` called ``name``, with or without the ``Metadata_`` prefix."""
    bare = name.removeprefix("Metadata_")
    for candidate in (name, f"Metadata_{bare}", bare):
        if candidate in table.columns:
            return candidate
    raise KeyError(f"column {name!r} (with or without Metadata_) not in {list(table.columns)}")


def _pretty(name: str) -> str:
    """Readable form of a column name: no Metadata_/cqc_/ImageQuality_ prefix, no underscores."""
    for prefix in ("Metadata_", "cqc_", "ImageQuality_"):
        name = name.removeprefix(prefix)
    return name.replace("_", " ")


def _format_number(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def _single(table: pd.DataFrame, column: str, what: str) -> str | None:
    """The one value of ``column`` (None when absent or empty); several -> ValueError."""
    if column not in table.columns or table.empty:
        return None
    values = pd.unique(table[column].astype(str))
    if len(values) > 1:
        raise ValueError(f"{what} needs one plate; the table holds {sorted(values)}")
    return values[0]


def _grid(count: int, max_columns: int) -> tuple[int, int]:
    columns = max(1, min(count, max_columns))
    return math.ceil(count / columns), columns


# --- plate maps ------------------------------------------------------------------------------


def well_position(well: str) -> tuple[int, int]:
    """Zero-based ``(row, column)`` of a well such as ``B03``, ``b3`` or ``AF48``.

    Rows run A..Z, then AA..AF (1536-well plates).
    """
    match = _WELL.match(str(well))
    if match is None:
        raise ValueError(f"cannot read well {well!r}: expected a form like A01")
    letters, number = match[1].upper(), int(match[2])
    if len(letters) == 1:
        row = ord(letters) - ord("A")
    elif letters[0] == "A":
        row = 26 + ord(letters[1]) - ord("A")
    else:
        raise ValueError(f"well {well!r}: rows beyond AZ are not plate rows")
    if number < 1:
        raise ValueError(f"well {well!r}: columns start at 1")
    return row, number - 1


def _row_label(row: int) -> str:
    return chr(ord("A") + row) if row < 26 else "A" + chr(ord("A") + row - 26)


def plate_format_of(wells: Sequence[str], plate_format: int | None = None) -> int:
    """The plate format (96, 384 or 1536) to draw ``wells`` on.

    Parameters
    ----------
    wells : sequence of str
        Wells to place.
    plate_format : {96, 384, 1536}, optional
        Format to check the wells against; default the smallest that holds every well.

    Raises
    ------
    ValueError
        For an unknown format, or wells outside it (or outside a 1536-well plate).
    """
    positions = [well_position(well) for well in wells]
    rows = max((r for r, _ in positions), default=0) + 1
    columns = max((c for _, c in positions), default=0) + 1
    if plate_format is not None:
        if plate_format not in PLATE_FORMATS:
            raise ValueError(f"plate_format {plate_format!r}: use one of {list(PLATE_FORMATS)}")
        size = PLATE_FORMATS[plate_format]
        outside = sorted(
            {w for w, (r, c) in zip(wells, positions, strict=True) if r >= size[0] or c >= size[1]}
        )
        if outside:
            raise ValueError(f"well(s) {outside} do not fit a {plate_format}-well plate")
        return plate_format
    for fmt, (n_rows, n_columns) in PLATE_FORMATS.items():
        if rows <= n_rows and columns <= n_columns:
            return fmt
    raise ValueError(f"wells up to row {_row_label(rows - 1)} column {columns} exceed 1536 wells")


def _values(series: pd.Series, what: str) -> tuple[np.ndarray, bool]:
    """``series`` as float (booleans as 0/1) and whether it is boolean."""
    present = series.dropna()
    boolean = pd.api.types.is_bool_dtype(series) or (
        len(present) > 0 and all(isinstance(v, (bool, np.bool_)) for v in present)
    )
    if boolean:
        return series.map({True: 1.0, False: 0.0}).to_numpy(float), True
    if not pd.api.types.is_numeric_dtype(series):
        raise TypeError(f"{what}: values must be numbers or booleans, got {series.dtype}")
    return series.to_numpy(float), False


def _draw_plate(
    ax: Axes,
    table: pd.DataFrame,
    value: str,
    *,
    title: str,
    label: str | None = None,
    plate_format: int | None = None,
    cmap: str = "viridis",
    annotate: bool | None = None,
) -> None:
    """Draw one plate heatmap (and its colour bar) into ``ax``.

    Wells without a value (not in ``table``, or NaN) are hatched grey, so unimaged wells show.
    ``annotate`` writes each value in its well (default: whole numbers on 96-well plates).
    """
    column = _column(table, value)
    wells = table["Metadata_Well"].astype(str)
    duplicated = sorted(wells[wells.duplicated()].unique())
    if duplicated:
        raise ValueError(
            f"well(s) {duplicated} appear more than once; give one plate, one row each"
        )
    fmt = plate_format_of(list(wells), plate_format)
    n_rows, n_columns = PLATE_FORMATS[fmt]
    numbers, boolean = _values(table[column], column)
    grid = np.full((n_rows, n_columns), np.nan)
    for well, number in zip(wells, numbers, strict=True):
        grid[well_position(well)] = number
    data = np.ma.masked_invalid(grid)

    if boolean:
        palette = colors.ListedColormap(["#c6dbef", FLAGGED])
        norm: colors.Normalize = colors.BoundaryNorm([-0.5, 0.5, 1.5], 2)
    else:
        palette = colormaps[cmap]
        finite = grid[np.isfinite(grid)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        norm = colors.Normalize(low, high if high > low else low + 1)
    # Masked wells are transparent and show the hatched background patch below.
    palette = palette.with_extremes(bad=(0, 0, 0, 0))
    ax.add_patch(
        Rectangle(
            (-0.5, -0.5),
            n_columns,
            n_rows,
            facecolor=EMPTY_WELL,
            hatch="////",
            hatchcolor=EMPTY_HATCH,
            edgecolor="none",
            zorder=0,
        )
    )
    image = ax.imshow(
        data, cmap=palette, norm=norm, interpolation="nearest", aspect="equal", zorder=1
    )
    integral = bool(np.all(np.mod(grid[np.isfinite(grid)], 1) == 0))
    colorbar = ax.figure.colorbar(image, ax=ax, shrink=0.9, pad=0.02)
    colorbar.set_label(label or _pretty(column))
    if boolean:
        colorbar.set_ticks([0, 1], labels=["no", "yes"])
    elif integral:
        colorbar.locator = ticker.MaxNLocator(integer=True)  # counts: no 0.25 cells

    step = 2 if fmt == 1536 else 1
    size = {96: 8, 384: 7, 1536: 7}[fmt]
    ax.set_xticks(range(0, n_columns, step), [str(c + 1) for c in range(0, n_columns, step)])
    ax.set_yticks(range(0, n_rows, step), [_row_label(r) for r in range(0, n_rows, step)])
    ax.tick_params(axis="both", which="major", labelsize=size, length=0)
    ax.xaxis.tick_top()  # column numbers above the plate, as printed on plates
    # White lines between wells make single wells easy to find on large plates.
    ax.set_xticks(np.arange(-0.5, n_columns), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0 if fmt == 96 else 0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlim(-0.5, n_columns - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    n_valued = int(np.isfinite(grid).sum())
    ax.set_xlabel(f"{n_valued} of {fmt} wells with a value; hatched: none", fontsize=8)
    # An explicit y turns off matplotlib's late title shift above top tick labels, which the
    # constrained layout does not see (the title would overlap the panel above).
    ax.set_title(title, y=1.0, pad=size + 8)

    if annotate is None:
        # Counts fit a 96-well well; decimals would overflow it (the colour bar has them).
        annotate = fmt == 96 and integral and not boolean
    if annotate:
        for (row, col), number in np.ndenumerate(grid):
            if not np.isfinite(number):
                continue
            red, green, blue, _ = palette(norm(number))
            # Dark text on light wells, light on dark (relative luminance).
            shade = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            text = f"{number:.0f}" if integral else f"{number:.2g}"
            ax.text(col, row, text, ha="center", va="center", fontsize=6.5, color=shade)


def _plate_figure(fmt: int, n_rows: int, n_columns: int) -> Figure:
    """An empty figure for ``n_rows`` x ``n_columns`` plate panels of format ``fmt``."""
    width, height = {96: (6.0, 4.2), 384: (7.0, 5.0), 1536: (10.0, 7.4)}[fmt]
    figure = _new_figure(width * n_columns, height * n_rows + 0.4)
    # "compressed" packs fixed-aspect axes (square wells) without the gaps "constrained"
    # leaves; the panel sizes above keep slack for the labels above and below each plate,
    # which the layout underestimates when column numbers sit on top.
    figure.set_layout_engine("compressed")
    return figure


def plate_heatmap(
    table: pd.DataFrame,
    value: str,
    *,
    title: str,
    label: str | None = None,
    plate_format: int | None = None,
) -> Figure:
    """One plate as a grid of wells coloured by ``value``.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per well of one plate: ``Metadata_Well`` (``A01`` form) and ``value``.
    value : str
        Numeric or boolean column (booleans, e.g. QC flags, are drawn in two colours).
    title : str
        Panel title.
    label : str, optional
        Colour bar label (with units); default the column name.
    plate_format : {96, 384, 1536}, optional
        Default the smallest standard format that holds every well.

    Returns
    -------
    matplotlib.figure.Figure
        Rows labelled A.., columns 1..; wells absent from ``table`` (or NaN) are hatched grey.
    """
    fmt = plate_format_of(list(table["Metadata_Well"].astype(str)), plate_format)
    figure = _plate_figure(fmt, 1, 1)
    _draw_plate(figure.add_subplot(), table, value, title=title, label=label, plate_format=fmt)
    return figure


def plate_overview(
    cell_counts: pd.DataFrame,
    *,
    readout: str | pd.Series | None = None,
    flag_columns: Sequence[str] = (),
    plate_format: int | None = None,
    title: str | None = None,
) -> Figure:
    """Plate heatmaps of one plate: cells per well, cells flagged per QC condition, a readout.

    Parameters
    ----------
    cell_counts : pandas.DataFrame
        One row per well: ``Metadata_Well``, ``cells`` and the ``flag_columns``.
    readout : str or pandas.Series, optional
        A column of ``cell_counts``, or values aligned with it (same index; the Series name
        labels the panel).
    flag_columns : sequence of str
        Counts of cells flagged by single-cell QC, one panel each.
    plate_format : {96, 384, 1536}, optional
        Default the smallest standard format that holds every well.
    title : str, optional
        Figure title; default ``Plate <Metadata_Plate>``.
    """
    table = cell_counts.copy()
    panels = [(_column(table, "cells"), "Cells per well", "cells", "viridis")]
    for flag in flag_columns:
        column = _column(table, flag)
        panels.append((column, f"Flagged: {_pretty(column)}", "flagged cells", "OrRd"))
    if isinstance(readout, pd.Series):
        if not readout.index.equals(table.index):
            raise ValueError("readout Series must have the index of cell_counts")
        name = str(readout.name or "readout")
        table["_readout"] = readout.to_numpy()
        panels.append(("_readout", f"Readout: {_pretty(name)}", _pretty(name), "cividis"))
    elif readout is not None:
        column = _column(table, readout)
        panels.append((column, f"Readout: {_pretty(column)}", _pretty(column), "cividis"))

    fmt = plate_format_of(list(table["Metadata_Well"].astype(str)), plate_format)
    n_rows, n_columns = _grid(len(panels), 1 if fmt == 1536 else 2)
    figure = _plate_figure(fmt, n_rows, n_columns)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    for ax, (column, panel_title, label, cmap) in zip(axes, panels, strict=False):
        _draw_plate(ax, table, column, title=panel_title, label=label, plate_format=fmt, cmap=cmap)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    plate = _single(cell_counts, "Metadata_Plate", "plate_overview")
    figure.suptitle(title or (f"Plate {plate}" if plate else "Plate"), fontsize=13)
    return figure


# --- images ----------------------------------------------------------------------------------


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


# --- image QC --------------------------------------------------------------------------------


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


# --- profiles --------------------------------------------------------------------------------


def _group_colours(groups: Sequence[Any]) -> dict[Any, Any]:
    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {group: palette(i % palette.N) for i, group in enumerate(groups)}


def dose_response(
    profiles: pd.DataFrame,
    *,
    dose_column: str,
    values: pd.Series | str,
    label: str,
    group_column: str | None = None,
    note: str | None = None,
) -> Figure:
    """Per-well values against dose: a point per well and the median per dose joined by a line.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Per-well table holding ``dose_column`` (and ``group_column``).
    dose_column : str
        Numeric dose column.
    values : pandas.Series or str
        Values aligned with ``profiles`` (same index), or a column of it.
    label : str
        y-axis label (with units where known).
    group_column : str, optional
        Column whose values (e.g. treatments) get a colour and a line each.
    note : str, optional
        Text under the axes (e.g. :func:`assay_quality_note`).

    Notes
    -----
    When the positive doses span more than one decade the dose axis is logarithmic, and dose
    0 is drawn one decade left of the smallest dose, labelled ``0``, behind an axis break.
    """
    dose_name = _column(profiles, dose_column)
    if isinstance(values, str):
        label_values = profiles[_column(profiles, values)]
    else:
        if not values.index.equals(profiles.index):
            raise ValueError("values must have the index of profiles")
        label_values = values
    data = pd.DataFrame(
        {
            "dose": pd.to_numeric(profiles[dose_name], errors="coerce"),
            "value": pd.to_numeric(label_values, errors="coerce"),
            "group": (
                profiles[_column(profiles, group_column)].astype(str) if group_column else ""
            ),
        }
    )
    data = data[np.isfinite(data["dose"]) & np.isfinite(data["value"])]
    title = f"{label[:1].upper()}{label[1:]} by {_pretty(dose_name)}"
    if data.empty:
        return note_figure(title, "No well with both a dose and a value.")

    positive = data.loc[data["dose"] > 0, "dose"]
    log_x = (
        bool((data["dose"] >= 0).all())
        and len(positive) > 0
        and positive.max() > 10 * positive.min()
    )
    zero_at = positive.min() / 10 if log_x else 0.0
    data["x"] = data["dose"].where(data["dose"] > 0, zero_at) if log_x else data["dose"]

    figure = _new_figure(7.0, 4.6)
    ax = figure.add_subplot()
    groups = list(pd.unique(data["group"]))
    palette = _group_colours(groups)
    for group in groups:
        rows = data[data["group"] == group]
        colour = palette[group]
        ax.scatter(rows["x"], rows["value"], s=22, color=colour, alpha=0.55, linewidths=0)
        medians = rows.groupby("x")["value"].median().sort_index()
        ax.plot(
            medians.index,
            medians.to_numpy(),
            marker="D",
            markersize=6,
            color=colour,
            linewidth=1.8,
            label=str(group) if group_column else "median",
        )
    if log_x:
        ax.set_xscale("log")
        low, high = math.ceil(np.log10(positive.min())), math.floor(np.log10(positive.max()))
        decades = [10.0**k for k in range(low, high + 1)]
        ax.xaxis.set_major_locator(ticker.FixedLocator([zero_at, *decades]))
        ax.xaxis.set_major_formatter(
            ticker.FuncFormatter(lambda v, _: "0" if v == zero_at else f"{v:g}")
        )
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        # A pair of slashes on the axis, halfway between "0" and the smallest dose, says the
        # axis is broken there (a log axis has no zero).
        gap = math.sqrt(zero_at * positive.min())
        ax.plot(
            [gap / 1.06, gap * 1.06],
            [0, 0],
            transform=ax.get_xaxis_transform(),
            marker=[(-1, -2.5), (1, 2.5)],
            markersize=9,
            linestyle="none",
            color="black",
            clip_on=False,
        )
        ax.set_xlim(zero_at / 2, positive.max() * 2)
    ax.set_xlabel(f"{_pretty(dose_name)}{' (log scale)' if log_x else ''}")
    ax.set_ylabel(label)
    ax.set_title(f"{title}\npoints: wells; diamonds and line: median per dose", fontsize=11)
    ax.grid(alpha=0.3)
    if group_column:
        ax.legend(title=_pretty(_column(profiles, group_column)), fontsize=8, frameon=False)
    if note:
        figure.text(0.01, 0.005, note, fontsize=8, va="bottom", ha="left", family="monospace")
        figure.subplots_adjust(bottom=0.12 + 0.035 * note.count("\n"))
    return figure


def assay_quality_note(zprimes: pd.DataFrame) -> str:
    """One line per plate of a Z' table (:func:`cellstrata.profiles.quality.zprime_table`): Z',
    robust
    Z' and SSMD with their bootstrap intervals ("" for an empty table)."""
    lines = []
    for row in zprimes.itertuples(index=False):
        parts = []
        for name, column in (("Z'", "zprime"), ("robust Z'", "robust_zprime"), ("SSMD", "ssmd")):
            value = getattr(row, column)
            low, high = getattr(row, f"{column}_low"), getattr(row, f"{column}_high")
            parts.append(
                f"{name} {value:.2f} [{low:.2f}, {high:.2f}]" if np.isfinite(value) else f"{name} -"
            )
        lines.append(
            f"plate {row.Metadata_Plate} ({row.n_positive} pos, {row.n_negative} neg): "
            + "; ".join(parts)
        )
    if lines:
        lines.insert(0, "controls, 90 % bootstrap intervals:")
    return "\n".join(lines)


def _usable_features(
    profiles: pd.DataFrame, features: Sequence[str] | None
) -> tuple[list[str], int]:
    """Features a PCA can use, and how many of ``features`` were left out."""
    if features is None:
        try:
            features = infer_cp_features(profiles)
        except ValueError:  # no Cells_/Cytoplasm_/Nuclei_ column at all
            return [], 0
    numeric = [f for f in features if pd.api.types.is_numeric_dtype(profiles[f])]
    values = profiles[numeric].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        # PCA needs every value finite, and a feature without variance adds nothing.
        keep = np.isfinite(values).all(axis=0) & (np.ptp(values, axis=0) > 0)
        # mad_robustize divides by MAD + 1e-18: a feature without spread in the reference
        # wells reaches ~1e18 and would be the whole PCA; no real normalized value is that big.
        keep &= np.abs(values).max(axis=0, initial=0) <= MAX_NORMALIZED
    usable = [f for f, k in zip(numeric, keep, strict=True) if k]
    return usable, len(features) - len(usable)


def pca_figure(
    profiles: pd.DataFrame,
    *,
    color_by: str,
    features: Sequence[str] | None = None,
) -> Figure:
    """PC1 against PC2 of per-well profiles, coloured by a metadata column.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Per-well profiles (already normalized, so no scaling is applied).
    color_by : str
        Column colouring the points: a categorical legend, or a colour bar for numbers
        (logarithmic when its positive values span more than a decade).
    features : sequence of str, optional
        Feature columns; default pycytominer's ``infer_cp_features``. Features with a missing
        or infinite value, or without variance, are left out.

    Returns
    -------
    matplotlib.figure.Figure
        Axis labels give the variance each component explains; one marker per plate when
        there are several. With fewer than 3 wells or 2 usable features the figure is a
        note saying so.
    """
    title = "PCA of per-well profiles"
    colour_name = _column(profiles, color_by)
    usable, dropped = _usable_features(profiles, features)
    if len(profiles) < 3 or len(usable) < 2:
        reason = (
            f"{len(profiles)} well(s); a PCA needs at least 3"
            if len(profiles) < 3
            else f"{len(usable)} usable feature(s); a PCA needs 2 ({dropped} left out: {_LEFT_OUT})"
        )
        return note_figure(title, f"No PCA drawn: {reason}.")
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2)
    scores = pca.fit_transform(profiles[usable].to_numpy(dtype=np.float64))
    explained = pca.explained_variance_ratio_ * 100

    figure = _new_figure(7.6, 5.4)
    ax = figure.add_subplot()
    plates = (
        profiles["Metadata_Plate"].astype(str).to_numpy()
        if "Metadata_Plate" in profiles.columns
        else np.full(len(profiles), "")
    )
    plate_names = list(pd.unique(plates))
    markers = {
        plate: PLATE_MARKERS[i % len(PLATE_MARKERS)] if len(plate_names) > 1 else "o"
        for i, plate in enumerate(plate_names)
    }
    colour_values = profiles[colour_name]
    numeric = pd.api.types.is_numeric_dtype(colour_values) and not pd.api.types.is_bool_dtype(
        colour_values
    )
    handles = []
    if numeric:
        numbers = colour_values.to_numpy(dtype=float)
        finite = numbers[np.isfinite(numbers)]
        positive = finite[finite > 0]
        if len(positive) and (finite >= 0).all() and positive.max() > 10 * positive.min():
            # Doses typically span decades: a log-like scale (linear below the smallest
            # positive value, so 0 stays drawable) separates the low doses.
            norm: colors.Normalize = colors.SymLogNorm(
                linthresh=positive.min(), linscale=0.5, vmin=0, vmax=positive.max()
            )
        else:
            norm = colors.Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
        for plate in plate_names:
            rows = plates == plate
            mappable = ax.scatter(
                scores[rows, 0],
                scores[rows, 1],
                c=numbers[rows],
                cmap=colormaps["viridis"].with_extremes(bad="0.6"),
                norm=norm,
                marker=markers[plate],
                s=45,
                edgecolors="0.2",
                linewidths=0.4,
                plotnonfinite=True,
            )
        figure.colorbar(mappable, ax=ax, label=_pretty(colour_name))
    else:
        categories = colour_values.astype(str).where(colour_values.notna(), "NA").to_numpy()
        palette = _group_colours(list(pd.unique(categories)))
        for plate in plate_names:
            for category, colour in palette.items():
                rows = (plates == plate) & (categories == category)
                if rows.any():
                    ax.scatter(
                        scores[rows, 0],
                        scores[rows, 1],
                        color=colour,
                        marker=markers[plate],
                        s=45,
                        edgecolors="0.2",
                        linewidths=0.4,
                    )
        handles += [
            Line2D([], [], marker="o", linestyle="none", color=c, markersize=7, label=k)
            for k, c in palette.items()
        ]
    if len(plate_names) > 1:
        handles += [
            Line2D(
                [], [], marker=m, linestyle="none", color="0.3", markersize=7, label=f"plate {p}"
            )
            for p, m in markers.items()
        ]
    if handles:
        ax.legend(
            handles=handles,
            title=_pretty(colour_name) if not numeric else None,
            # Beside the plot for categories; a colour bar already sits there for numbers.
            loc="best" if numeric else "upper left",
            bbox_to_anchor=None if numeric else (1.02, 1),
            frameon=numeric,
            fontsize=8,
        )
    ax.axhline(0, color="0.85", linewidth=0.8, zorder=0)
    ax.axvline(0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"PC1 ({explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.1f}% of variance)")
    subtitle = f"\n{dropped} feature(s) left out: {_LEFT_OUT}" if dropped else ""
    ax.set_title(f"{title}: {len(profiles)} wells, {len(usable)} features{subtitle}", fontsize=10.5)
    return figure


def map_bars(
    map_table: pd.DataFrame,
    *,
    label_columns: Sequence[str],
    max_bars: int = 50,
) -> Figure:
    """Mean average precision per treatment, one panel per ``kind`` (activity, consistency).

    Parameters
    ----------
    map_table : pandas.DataFrame
        ``mean_average_precision``, ``below_corrected_p`` (bar colour: significant or not),
        ``kind`` and the ``label_columns``.
    label_columns : sequence of str
        Columns whose values, joined, label each bar.
    max_bars : int, default 50
        Bars per panel at most (the highest mAP); the panel title says when some are left out.
    """
    title = "Mean average precision (mAP) per treatment"
    if map_table.empty:
        return note_figure(title, "No mAP to show: the mAP table is empty.")
    table = map_table.copy()
    label_names = [_column(table, c) for c in label_columns]
    if (
        "Metadata_Plate" in table.columns
        and "Metadata_Plate" not in label_names
        and table["Metadata_Plate"].nunique() > 1
    ):
        label_names.append("Metadata_Plate")
    table["_label"] = (
        table[label_names].apply(lambda row: ", ".join(_format_number(v) for v in row), axis=1)
        if label_names
        else table.index.astype(str)
    )
    table = table[np.isfinite(table["mean_average_precision"].astype(float))]
    if table.empty:
        return note_figure(title, "No mAP to show: every mAP is missing.")
    coloured = "below_corrected_p" in table.columns
    if "kind" in table.columns:
        present = list(pd.unique(table["kind"].astype(str)))
        kinds = [k for k in ("activity", "consistency") if k in present]
        kinds += sorted(k for k in present if k not in kinds)
    else:
        kinds = [None]

    longest = max(
        min(max_bars, int((table["kind"].astype(str) == k).sum()) if k else len(table))
        for k in kinds
    )
    figure = _new_figure(5.6 * len(kinds), 1.6 + 0.24 * longest)
    axes = figure.subplots(1, len(kinds), squeeze=False).ravel()
    for ax, kind in zip(axes, kinds, strict=True):
        rows = table if kind is None else table[table["kind"].astype(str) == kind]
        rows = rows.sort_values("mean_average_precision", ascending=False)
        total = len(rows)
        significant = rows["below_corrected_p"].fillna(False).astype(bool) if coloured else None
        n_significant = int(significant.sum()) if coloured else None
        rows = rows.head(max_bars)
        positions = np.arange(len(rows))[::-1]  # highest mAP on top
        bar_colours = (
            [SIGNIFICANT if s else NOT_SIGNIFICANT for s in significant.loc[rows.index]]
            if coloured
            else PASSED
        )
        ax.barh(positions, rows["mean_average_precision"], color=bar_colours, height=0.75)
        for y, value in zip(positions, rows["mean_average_precision"], strict=True):
            inside = value > 0.9  # no room right of the bar: write the value on it
            ax.text(
                value - 0.01 if inside else value + 0.01,
                y,
                f"{value:.2f}",
                va="center",
                ha="right" if inside else "left",
                color="white" if inside else "black",
                fontsize=7,
            )
        ax.set_yticks(positions, rows["_label"], fontsize=8)
        ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
        ax.set_xlim(0, 1)
        ax.set_xlabel("mean average precision (0-1)")
        name = (kind or "mAP").capitalize()
        summary = f"{n_significant} of {total} significant" if coloured else f"{total} treatments"
        shown = f"; top {len(rows)} shown" if len(rows) < total else ""
        ax.set_title(f"{name}: {summary}{shown}", fontsize=10.5)
        ax.grid(axis="x", alpha=0.3)
    figure.suptitle(title, fontsize=12)
    if coloured:
        figure.legend(
            handles=[
                Patch(color=SIGNIFICANT, label="significant (corrected p below threshold)"),
                Patch(color=NOT_SIGNIFICANT, label="not significant"),
            ],
            loc="outside lower center",
            ncols=2,
            frameon=False,
            fontsize=8.5,
        )
    return figure


# --- Snakemake entry points ------------------------------------------------------------------


def _check_outputs(outputs: Mapping[str, PathLike], known: Sequence[str]) -> None:
    unknown = sorted(set(outputs) - set(known))
    if unknown:
        raise ValueError(f"unknown figure name(s) {unknown}; use {list(known)}")


def readout_values(
    profiles: pd.DataFrame, readout: Mapping[str, str | None] | str
) -> tuple[pd.Series, str]:
    """The per-well readout of ``profiles`` and its label.

    ``readout`` is a feature column, or ``{"feature": column, "divide_by": column or None,
    "transform": None or "log"}`` (e.g. a total intensity per cell count); a division by 0
    gives NaN.
    """
    if isinstance(readout, str):
        readout = {"feature": readout}
    feature = _column(profiles, readout["feature"])
    divide_by = readout.get("divide_by")
    divisor = _column(profiles, divide_by) if divide_by else None
    transform = readout.get("transform")
    values = quality.readout(profiles, feature, divisor, transform)
    label = _pretty(feature) + (f" / {_pretty(divisor)}" if divisor else "")
    label = f"{transform}({label})" if transform else label
    return values.replace([np.inf, -np.inf], np.nan).rename(label), label


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


def write_plate_figures(
    *,
    plate: str,
    cell_counts_path: PathLike,
    image_qc_path: PathLike | None,
    illumination_paths: Mapping[str, PathLike],
    sample_sites: Sequence[Mapping[str, Any]],
    outputs: Mapping[str, PathLike],
    readout: Mapping[str, str | None] | str | None = None,
    profiles_path: PathLike | None = None,
    flag_columns: Sequence[str] | None = None,
    plate_format: int | None = None,
) -> None:
    """Write the report figures of one plate as PNG.

    Parameters
    ----------
    plate : str
        Plate name.
    cell_counts_path : path
        Parquet of cells per well (``Metadata_Plate``, ``Metadata_Well``, ``cells``, flag
        counts, platemap columns); the rows of ``plate`` are drawn.
    image_qc_path : path or None
        Image QC Parquet (:mod:`cellstrata.images.qc`); None (a CellProfiler-only plate) draws a
        note.
    illumination_paths : Mapping[str, path]
        Channel -> illumination function TIFF.
    sample_sites : sequence of mapping
        ``{"title", "image", "nuclei", "cells" (or None), "channel" (optional, for a corrected
        stack)}`` with file paths.
    outputs : Mapping[str, path]
        Figure name -> PNG path, for any of ``overview``, ``illumination``, ``qc`` and
        ``overlays``; only the figures named are drawn.
    readout : mapping or str, optional
        With ``profiles_path``, the per-well readout (see :func:`readout_values`) added to the
        overview as a panel.
    profiles_path : path, optional
        Per-well profiles Parquet the readout is taken from.
    flag_columns : sequence of str, optional
        Flag count columns of the overview; default every ``Metadata_cqc_*`` column except
        ``Metadata_cqc_excluded``.
    plate_format : {96, 384, 1536}, optional
        Default the smallest standard format that holds every well.
    """
    _check_outputs(outputs, PLATE_FIGURES)
    if "overview" in outputs:
        counts = pd.read_parquet(cell_counts_path)
        if "Metadata_Plate" in counts.columns:
            counts = counts[counts["Metadata_Plate"].astype(str) == str(plate)]
        counts = counts.reset_index(drop=True)
        if counts.empty:
            log.warning("%s: no well of plate %s", cell_counts_path, plate)
        if flag_columns is None:
            flag_columns = [
                c
                for c in counts.columns
                if c.startswith(FLAG_PREFIX) and c != f"{FLAG_PREFIX}excluded"
            ]
        readout_column = None
        if readout is not None and profiles_path is not None:
            profiles = pd.read_parquet(profiles_path)
            if "Metadata_Plate" in profiles.columns:
                profiles = profiles[profiles["Metadata_Plate"].astype(str) == str(plate)]
            values, readout_column = readout_values(profiles, readout)
            per_well = pd.Series(values.to_numpy(), index=profiles["Metadata_Well"].astype(str))
            counts[readout_column] = counts["Metadata_Well"].astype(str).map(per_well)
        figure = plate_overview(
            counts,
            readout=readout_column,
            flag_columns=flag_columns,
            plate_format=plate_format,
            title=f"Plate {plate}",
        )
        save_figure(figure, outputs["overview"])
    if "illumination" in outputs:
        functions, modes = {}, {}
        for channel, path in illumination_paths.items():
            functions[channel], modes[channel] = read_function(path)
        save_figure(
            illumination_figure(functions, plate=plate, modes=modes), outputs["illumination"]
        )
    if "qc" in outputs:
        if image_qc_path is None:
            figure = note_figure(
                f"Image QC, plate {plate}",
                "No image QC for this plate (its measurements come from CellProfiler).",
            )
        else:
            image_qc = pd.read_parquet(image_qc_path)
            if "Metadata_Plate" in image_qc.columns:
                image_qc = image_qc[image_qc["Metadata_Plate"].astype(str) == str(plate)]
            figure = qc_distributions(image_qc)
        save_figure(figure, outputs["qc"])
    if "overlays" in outputs:
        save_figure(overlay_figure(_read_sites(sample_sites)), outputs["overlays"])


def _read_tables(paths: PathLike | Sequence[PathLike]) -> pd.DataFrame:
    if isinstance(paths, (str, os.PathLike)):
        return pd.read_parquet(paths)
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def write_experiment_figures(
    *,
    profiles_path: PathLike | Sequence[PathLike],
    map_path: PathLike | None,
    outputs: Mapping[str, PathLike],
    color_by: str,
    annotated_path: PathLike | Sequence[PathLike] | None = None,
    dose_column: str | None = None,
    readout: Mapping[str, str | None] | str | None = None,
    group_column: str | None = None,
    zprime_path: PathLike | None = None,
) -> None:
    """Write the experiment-wide report figures as PNG.

    Parameters
    ----------
    profiles_path : path or sequence of paths
        Per-well profiles Parquet (several are concatenated, e.g. one per plate).
    map_path : path or None
        mAP Parquet (treatment ``Metadata_`` columns, ``mean_average_precision``,
        ``below_corrected_p``, ``kind``, ``Metadata_Plate``); its ``Metadata_Plate == "all"``
        rows are drawn when there are any. None draws a note.
    outputs : Mapping[str, path]
        Figure name -> PNG path, for any of ``pca``, ``map`` and ``dose_response``.
    color_by : str
        Column colouring the PCA.
    annotated_path : path or sequence of paths, optional
        Per-well profiles before normalization (one per plate) for the dose response, whose
        readout is a measurement (a ratio of normalized features means nothing); default
        ``profiles_path``.
    dose_column : str, optional
        Dose column of the dose-response figure; without it that figure is a note.
    readout : mapping or str, optional
        Dose-response values (see :func:`readout_values`); default the cell count
        ``Metadata_Object_Count``.
    group_column : str, optional
        Column giving each group (e.g. treatment) its own colour in the dose response.
    zprime_path : path, optional
        The readout's Z' table (Parquet), written under the dose response
        (:func:`assay_quality_note`).
    """
    _check_outputs(outputs, EXPERIMENT_FIGURES)
    profiles = _read_tables(profiles_path) if {"pca", "dose_response"} & set(outputs) else None
    if "pca" in outputs:
        save_figure(pca_figure(profiles, color_by=color_by), outputs["pca"])
    if "map" in outputs:
        if map_path is None:
            figure = note_figure("Mean average precision (mAP)", "No mAP was computed.")
        else:
            table = pd.read_parquet(map_path)
            # With several plates the table holds each plate's mAP and, as plate "all", the
            # mAP over every well together: that is the experiment's answer.
            combined = table.get("Metadata_Plate", pd.Series(dtype=str)).astype(str) == "all"
            if combined.any():
                table = table[combined]
            labels = [
                c for c in table.columns if c.startswith("Metadata_") and c != "Metadata_Plate"
            ]
            figure = map_bars(table, label_columns=labels)
        save_figure(figure, outputs["map"])
    if "dose_response" in outputs:
        if annotated_path is not None:
            profiles = _read_tables(annotated_path)
        if dose_column is None:
            figure = note_figure("Dose response", "No dose column is configured.")
        else:
            if readout is not None:
                values, label = readout_values(profiles, readout)
            else:
                values = profiles[_column(profiles, "Object_Count")]
                label = "cells per well"
            note = assay_quality_note(pd.read_parquet(zprime_path)) if zprime_path else None
            figure = dose_response(
                profiles,
                dose_column=dose_column,
                values=values,
                label=label,
                group_column=group_column,
                note=note,
            )
        save_figure(figure, outputs["dose_response"])

"""Plate figures: plate maps (:func:`plate_overview`) and :func:`write_plate_figures`, the entry
point of the per-plate figure rules (plate_overview, image_figures, overlays: file paths in, PNG
files out)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cellstrata.images.illumination import read_function
from cellstrata.profiles.cellqc import FLAG_PREFIX
from cellstrata.report.figures import (
    EMPTY_HATCH,
    EMPTY_WELL,
    FLAGGED,
    PathLike,
    _check_outputs,
    _column,
    _grid,
    _new_figure,
    _pretty,
    _single,
    note_figure,
    readout_values,
    save_figure,
)
from cellstrata.report.images import (
    _read_sites,
    illumination_figure,
    overlay_figure,
    qc_distributions,
)

log = logging.getLogger(__name__)

#: Standard plate formats: wells -> (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}


#: Figure names :func:`write_plate_figures` can write.
PLATE_FIGURES = ("overview", "illumination", "qc", "overlays")


_WELL = re.compile(r"^\s*([A-Za-z]{1,2})0*(\d{1,3})\s*$")


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

"""What every report figure shares: the Agg figure, the PNG writer, the palette, column
name helpers and the per-well readout.

Every plotting function of :mod:`cellstrata.report` takes tables or arrays and returns a
:class:`matplotlib.figure.Figure` drawn with the object API on an Agg canvas: no pyplot state, so
figures can be made from threads and without a display. :func:`save_figure` writes one as PNG.
Column name arguments may be given with or without the ``Metadata_`` prefix.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cellstrata.io import atomic_path
from cellstrata.profiles import quality

log = logging.getLogger(__name__)


#: Resolution of every PNG: with the default 10 pt font, text stays legible in the report.
DPI = 100


EMPTY_WELL = "#d9d9d9"


EMPTY_HATCH = "#9e9e9e"


FLAGGED = "#d62728"


PASSED = "#4c72b0"


SIGNIFICANT = "#1b7837"


NOT_SIGNIFICANT = "#bdbdbd"


# Cyan and orange stay distinct on a grey image and for the common colour-vision deficiencies.
NUCLEI_OUTLINE = "#00e5ff"


CELL_OUTLINE = "#ff9f1c"


PathLike = str | os.PathLike


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


def _group_colours(groups: Sequence[Any]) -> dict[Any, Any]:
    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    return {group: palette(i % palette.N) for i, group in enumerate(groups)}


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

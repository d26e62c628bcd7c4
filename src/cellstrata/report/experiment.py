"""Experiment figures of a version: PCA, mAP bars and dose response, and
:func:`write_experiment_figures`, the entry point of rule experiment_figures."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.report.figures import (
    NOT_SIGNIFICANT,
    PASSED,
    SIGNIFICANT,
    PathLike,
    _check_outputs,
    _column,
    _format_number,
    _group_colours,
    _new_figure,
    _pretty,
    note_figure,
    readout_values,
    save_figure,
)

#: Figure names :func:`write_experiment_figures` can write.
EXPERIMENT_FIGURES = ("pca", "map", "dose_response")


#: Largest absolute normalized feature value :func:`pca_figure` uses (see _usable_features).
MAX_NORMALIZED = 1e6


PLATE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


_LEFT_OUT = f"missing or infinite values, no variance, or |value| > {MAX_NORMALIZED:g}"


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

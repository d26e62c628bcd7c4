"""Platemaps: reading one (separators, well spellings, duplicates, unreadable rows), marking
its controls, and checking every plate's platemap before any job runs."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from cellstrata.images.ingest import IngestError, normalize_well

log = logging.getLogger(__name__)

CONTROL_COLUMN = "Metadata_control_type"


def metadata_name(column: str) -> str:
    """A platemap column's name in the profiles: ``Metadata_`` prefixed unless it already is."""
    return column if column.startswith("Metadata_") else f"Metadata_{column}"


class PlatemapError(ValueError):
    """Platemap and imaged wells disagree; the message names the plate and wells."""


#: Columns of the platemap report (``<plate>_platemap.parquet``): one row per finding.
PLATEMAP_REPORT = ["Metadata_Plate", "Metadata_Well", "issue", "action", "detail"]
#: ``Metadata_control_type`` of an imaged well the platemap does not describe (report mode):
#: never a control, never silently dropped.
UNANNOTATED = "unannotated"


class Platemap(NamedTuple):
    """A platemap read for one plate, and what reading it found."""

    #: One row per well, canonical ``Metadata_Well`` (A01) first, ``Metadata_`` columns.
    table: pd.DataFrame
    #: :data:`PLATEMAP_REPORT` rows: duplicates, mixed well spellings, unreadable wells.
    issues: pd.DataFrame


def read_platemap(
    path: str | os.PathLike,
    *,
    well_column: str | None = "well",
    row_column: str | None = None,
    column_column: str | None = None,
    plate_column: str | None = None,
    plate: str | None = None,
    on_mismatch: str = "error",
    treatment_columns: Sequence[str] | None = None,
) -> Platemap:
    """Read a CSV/TSV platemap and give it a canonical ``Metadata_Well`` column.

    Every other column is kept, prefixed with ``Metadata_`` unless it already is. Wells
    written ``A1``, ``A01``, ``a01`` or ``r01c01`` are all read as ``A01``; a well listed
    twice with the same annotation is kept once. What cannot be resolved is an error, or,
    with ``on_mismatch="report"``, left out and reported.

    Parameters
    ----------
    plate_column, plate : str, optional
        For a platemap of several plates: the column naming the plate, and this plate.
    on_mismatch : {"error", "report"}
        What an unreadable well or a well listed twice with different annotations does.
    treatment_columns : sequence of str, optional
        Columns naming a treatment (consensus, mAP): checked here, so a typo fails before any
        work.

    Raises
    ------
    PlatemapError
        Naming the file, plate and wells: missing columns, no rows for the plate, and (unless
        reporting) unreadable wells or conflicting duplicates.
    """
    path = Path(path)
    where = f"platemap {path}" + (f", plate {plate}" if plate is not None else "")
    sep = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    text = _platemap_text(path, where)
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PlatemapError(f"{where}: cannot be read as a table: {err}") from err
    lines = _record_lines(text, sep, len(table))
    # Each needed column with the config key that names it (platemap.<parameter>).
    needed = (
        [("well_column", well_column)]
        if well_column
        else [("row_column", row_column), ("column_column", column_column)]
    )
    needed += [("plate_column", plate_column)] if plate_column else []
    needed += [("treatment_columns", c.removeprefix("Metadata_")) for c in treatment_columns or ()]
    missing = [f"platemap.{key} {c!r}" for key, c in needed if c not in table.columns]
    if missing:
        raise PlatemapError(
            f"{where}: the header (line 1) lacks {', '.join(missing)}; its columns are "
            f"{list(table)}{_separator_hint(table, sep)}"
        )
    if plate_column:
        table = table[table[plate_column] == str(plate)].drop(columns=plate_column)
        if table.empty:
            raise PlatemapError(f"{where}: no row has {plate_column} == {plate!r}")
    spelled = (
        table[well_column]
        if well_column
        else table[row_column].str.strip() + "/" + table[column_column].str.strip()
    )
    key = (
        f"platemap.well_column {well_column!r}"
        if well_column
        else f"platemap.row_column/column_column {row_column!r}/{column_column!r}"
    )
    issues = []
    wells = []
    for index, text in spelled.items():
        try:
            if well_column:
                wells.append(normalize_well(text))
            else:
                wells.append(normalize_well(row=text.split("/")[0], column=text.split("/")[1]))
        except IngestError as err:
            detail = _unreadable_row(table.loc[index], lines(index), key, err)
            if on_mismatch != "report":
                raise PlatemapError(f"{where}: {detail}") from err
            wells.append(None)
            issues.append((plate, text, "unreadable_well", "row left out", detail))
    table = table.rename(columns=metadata_name)
    table.insert(0, "Metadata_Well", wells)
    table = table[table["Metadata_Well"].notna()]
    if well_column:
        issues += _mixed_spellings(table["Metadata_Well"], spelled[table.index], plate, where)
    spellings = [metadata_name(c) for c in (well_column, row_column, column_column) if c]
    table, duplicate_issues = _resolve_duplicates(table, spellings, plate, where, on_mismatch)
    issues += duplicate_issues
    return Platemap(
        _restore_numbers(table.reset_index(drop=True)),
        pd.DataFrame(issues, columns=PLATEMAP_REPORT),
    )


#: Separators a platemap is saved with by mistake (a locale's "CSV" in Excel is often ";").
_SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _platemap_text(path: Path, where: str) -> str:
    """The platemap's text: UTF-8 (a byte-order mark allowed); anything else is an error
    saying how to save the file."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data[:4096]:
        raise PlatemapError(
            f"{where}: the file is UTF-16 encoded (Excel's 'Unicode Text'); save it as UTF-8 "
            "(Excel: 'CSV UTF-8 (Comma delimited)')"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PlatemapError(
            f"{where}: line {line} is not UTF-8 text (byte {data[err.start]:#04x}); save the "
            "file as UTF-8"
        ) from err


def _record_lines(text: str, sep: str, rows: int) -> Callable[[int], str]:
    """Where data row ``i`` of the table read from ``text`` is in the file, as ``line N``
    (the header is line 1; blank lines, which the table skips, are counted)."""
    starts = []
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    end = 0
    for record in reader:
        if record:
            starts.append(end + 1)
        end = reader.line_num
    if len(starts) != rows + 1:  # the reader and pandas disagree (odd quoting): row numbers
        return lambda i: f"data row {i + 1}"
    return lambda i: f"line {starts[i + 1]}"


def _separator_hint(table: pd.DataFrame, sep: str) -> str:
    """When the header reads as one column holding another separator: say which."""
    if len(table.columns) != 1:
        return ""
    found = [s for s in _SEPARATORS if s != sep and s in str(table.columns[0])]
    if not found:
        return ""
    return (
        f"; the file reads as one column: its separator looks like {found[0]!r} "
        f"({_SEPARATORS[found[0]]}), but a {'.csv' if sep == ',' else '.tsv/.txt'} platemap is "
        f"read {_SEPARATORS[sep]}-separated: save it {_SEPARATORS[sep]}-separated"
    )


def _unreadable_row(row: pd.Series, line: str, key: str, err: IngestError) -> str:
    """What is wrong with a platemap row (at ``line``) whose well (``key``) cannot be read."""
    values = [str(v).strip() for v in row]
    if not any(values):
        return f"{line} is empty (only separators), so it has no {key}; delete it"
    if values == [str(c).strip() for c in row.index]:
        return f"{line} repeats the header row (files pasted together?); delete it"
    return f"{err} ({key}, {line})"


def _well_style(text: str) -> str:
    text = text.strip().upper()
    if text.startswith("R") and "C" in text[1:]:
        return "r01c01"
    digits = text.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return "A01" if len(digits) > 1 and digits.startswith("0") else "A1"


def _mixed_spellings(
    wells: pd.Series, spelled: pd.Series, plate: str | None, where: str
) -> list[tuple]:
    """One report row when a platemap writes wells in more than one style (A1, A01, r01c01):
    unambiguous, so read, but a sign of a hand-merged file."""
    styles = spelled.map(_well_style)
    # A1 and A01 agree for two-digit columns (A10), so only single-digit columns tell.
    single = wells.str[-2:].astype(int) < 10
    found = sorted(set(styles[single | (styles == "r01c01")]))
    if len(found) < 2:
        return []
    examples = {
        style: spelled[single & (styles == style)].iloc[0]
        for style in found
        if (single & (styles == style)).any()
    }
    log.warning("%s: wells written in several styles %s, all read as A01", where, examples)
    return [(plate, None, "mixed_well_format", "normalized", f"styles {examples}")]


def _resolve_duplicates(
    table: pd.DataFrame, spellings: Sequence[str], plate: str | None, where: str, on_mismatch: str
) -> tuple[pd.DataFrame, list[tuple]]:
    """Keep a well listed twice with one annotation once (``spellings``, the columns the well
    was read from, may differ); conflicting annotations are an error, or (reporting) the well
    is left unannotated."""
    issues = []
    repeated = table[table["Metadata_Well"].duplicated(keep=False)]
    for well, rows in repeated.groupby("Metadata_Well"):
        annotations = rows.drop(columns=["Metadata_Well", *spellings]).drop_duplicates()
        if len(annotations) == 1:
            log.warning("%s: well %s listed %d times with one annotation", where, well, len(rows))
            issues.append((plate, well, "duplicate_well", "kept once", f"{len(rows)} rows"))
            continue
        differing = [c for c in annotations.columns if annotations[c].nunique() > 1]
        detail = f"{len(rows)} rows differ in {differing}"
        if on_mismatch != "report":
            raise PlatemapError(f"{where}: well {well} listed more than once: {detail}")
        issues.append((plate, well, "conflicting_duplicate", "left unannotated", detail))
    conflicting = [i[1] for i in issues if i[2] == "conflicting_duplicate"]
    table = table[~table["Metadata_Well"].isin(conflicting)]
    return table.drop_duplicates("Metadata_Well"), issues


def _restore_numbers(table: pd.DataFrame) -> pd.DataFrame:
    # Read as text so wells like "01" survive; give numeric columns their numbers back.
    for column in table.columns:
        if column == "Metadata_Well":
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.notna().all():
            table[column] = numbers
    return table


def mark_controls(
    platemap: pd.DataFrame,
    *,
    column: str | None = "control",
    negative: Sequence[Any] = ("negative",),
    positive: Sequence[Any] = ("positive",),
    negative_wells: Sequence[str] = (),
    positive_wells: Sequence[str] = (),
) -> pd.DataFrame:
    """Add ``Metadata_control_type`` (negative / positive / treated) to a platemap."""
    types = pd.Series("treated", index=platemap.index)
    for kind, values, wells in (
        ("negative", negative, negative_wells),
        ("positive", positive, positive_wells),
    ):
        if wells:
            chosen = platemap["Metadata_Well"].isin([normalize_well(w) for w in wells])
        elif column:
            name = metadata_name(column)
            if name not in platemap:
                raise PlatemapError(f"controls.column {column!r} is not a platemap column")
            as_text = platemap[name].astype(str)
            chosen = as_text.isin([str(v) for v in values])
        else:
            continue
        types[chosen] = kind
    return platemap.assign(**{CONTROL_COLUMN: types})


def _read_options(platemap_options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``platemap`` config options of :func:`read_platemap` (``never_imaged`` is decided
    when the profiles are annotated, not when the platemap is read)."""
    return {k: v for k, v in platemap_options.items() if k != "never_imaged"}


def check_platemaps(config: Mapping[str, Any]) -> None:
    """Read every plate's platemap and mark its controls as rule profiles will, before any job.

    A bad platemap found by the profiles job is found late: Snakemake has already removed the
    outputs the job would replace. The same functions read it here (:func:`read_platemap`,
    :func:`mark_controls`), so what passes here passes there. A platemap that does not exist
    is left to Snakemake, which names a missing input itself.

    Raises
    ------
    PlatemapError
        Naming the plate, its config key, the file and line and what is wrong; or, when the
        profiles are normalized to negative controls, a plate without any.
    """
    controls = config["controls"]
    for index, plate in enumerate(config["plates"]):
        path = Path(plate["platemap"])
        if not path.is_file():
            continue
        where = f"plates[{index}].platemap of plate {plate['name']}"
        try:
            table = read_platemap(
                path, plate=plate["name"], **_read_options(config["platemap"])
            ).table
            annotation = mark_controls(table, **controls)
        except PlatemapError as err:
            raise PlatemapError(f"{where}: {err}") from err
        if config["profiles"]["normalize_samples"] != "negative_controls":
            continue
        if (annotation[CONTROL_COLUMN] == "negative").any():
            continue
        if controls["negative_wells"]:
            why = f"controls.negative_wells {list(controls['negative_wells'])} are not in it"
        elif controls["column"] is None:
            why = "controls.column is null and controls.negative_wells is empty"
        else:
            found = sorted(set(table[metadata_name(controls["column"])].astype(str)))
            why = (
                f"controls.negative {list(controls['negative'])} matches no value of its "
                f"column {controls['column']!r} (controls.column), whose values are {found}"
            )
        raise PlatemapError(
            f"{where}: platemap {path}: no negative-control well to normalize to "
            f"(profiles.normalize_samples is negative_controls): {why}"
        )

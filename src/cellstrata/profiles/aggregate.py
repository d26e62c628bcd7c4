"""Level 6: per-well profiles with pycytominer (aggregate, annotate, normalize, select)."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pycytominer import aggregate, annotate, consensus, feature_select, normalize
from pycytominer.cyto_utils import infer_cp_features

from cellstrata.config import PROFILE_STEPS
from cellstrata.images.ingest import IngestError, normalize_well
from cellstrata.io import write_parquet
from cellstrata.profiles.cellqc import (
    DEFAULT_CONDITIONS,
    check_conditions,
    condition_features,
    flag_cells,
    nonfinite_counts,
    plate_statistics,
)

log = logging.getLogger(__name__)

STRATA = ["Metadata_Plate", "Metadata_Well"]
#: The columns that identify a cell in every single-cell table.
CELL_KEYS = [*STRATA, "Metadata_Site", "Metadata_ObjectNumber"]
CONTROL_COLUMN = "Metadata_control_type"
#: feature_select operations that compare wells: undefined for a plate of one well.
ACROSS_WELLS = ("variance_threshold", "correlation_threshold")


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


#: Bytes of one float64 block of single-cell values (all cells of a file, some feature
#: columns) held at once while aggregating: what bounds memory, whatever the plate size.
CHUNK_BYTES = 128 * 2**20


def embedding_rows(
    keys: pd.DataFrame, features_path: str | os.PathLike, embedding_path: str | os.PathLike
) -> tuple[np.ndarray, list[str]]:
    """Match one job's embedding table (:mod:`cellstrata.singlecell.embed`) to its cells by the
    cell keys.

    Parameters
    ----------
    keys : pandas.DataFrame
        The :data:`CELL_KEYS` columns of the feature file, one row per cell.

    Returns
    -------
    rows : numpy.ndarray
        For each cell (row of ``keys``), its row in the embedding table.
    columns : list of str
        The embedding feature columns.

    Raises
    ------
    ValueError
        Naming the batch, when a cell has no embedding or an embedding no cell (crops of
        another segmentation), a key appears twice, or a column is in both tables.
    """
    schema = pq.read_schema(embedding_path).names
    columns = [c for c in schema if c not in CELL_KEYS]
    batch = f"batch {Path(features_path).stem} ({features_path} and {embedding_path})"
    shared = sorted(set(columns) & set(pq.read_schema(features_path).names))
    if shared:
        raise ValueError(f"{batch}: features and embeddings both have column(s) {shared[:5]}")
    embedded = pq.read_table(embedding_path, columns=CELL_KEYS).to_pandas()
    for name, table in (("features", keys), ("embeddings", embedded)):
        duplicated = int(table.duplicated(CELL_KEYS).sum())
        if duplicated:
            raise ValueError(f"{batch}: {duplicated} cell key(s) appear twice in the {name}")
    position = embedded.assign(_row=np.arange(len(embedded)))
    joined = keys.merge(position, on=CELL_KEYS, how="left")
    matched = int(joined["_row"].notna().sum())
    if not len(keys) == len(embedded) == matched:
        raise ValueError(
            f"{batch}: {len(keys)} cells in the features, {len(embedded)} embeddings, "
            f"{matched} in both; every cell needs its embedding (were the crops made "
            "from the same masks?)"
        )
    return joined["_row"].to_numpy(np.int64), columns


class Aggregation(NamedTuple):
    """Per-well profiles and what single-cell QC found on the way."""

    #: Per-well aggregated features, ``Metadata_Object_Count`` included.
    profiles: pd.DataFrame
    #: Per well: cells, cells flagged per QC condition, cells excluded.
    cell_qc: pd.DataFrame
    #: Per feature with non-finite values: ``feature, nan, inf`` counts over the plate.
    nonfinite: pd.DataFrame


def aggregate_features(
    paths: Sequence[str | os.PathLike],
    *,
    operation: str = "median",
    embedding_paths: Sequence[str | os.PathLike] = (),
    cell_qc: Mapping[str, Any] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Aggregation:
    """Aggregate single cells per well with pycytominer, streaming columns from Parquet.

    The single-cell table is never loaded whole: per file, the cell keys are read once, then
    pycytominer's ``aggregate`` runs on blocks of feature columns sized so one float64 block
    holds at most ``chunk_bytes`` (memory is bounded by cells per file × block width, not by
    the feature count). A well must lie in one file (jobs hold whole wells; a CellProfiler
    plate is one file), which makes per-file aggregation exact; a well in two files is an
    error naming both.

    Parameters
    ----------
    embedding_paths : sequence of path-like
        One per feature file, the same file name: their columns are matched to the cells by
        :data:`CELL_KEYS` (:func:`embedding_rows`) and aggregated with the features.
    cell_qc : mapping, optional
        ``{"conditions": {name: {feature: z threshold}} or None (coSMicQC's defaults),
        "exclude": bool}``: cells are flagged per condition on per-plate z-scores
        (:mod:`cellstrata.profiles.cellqc`, statistics from a first pass over the files) and, with
        ``exclude``, left out of the aggregation. ``None`` flags nothing.
    chunk_bytes : int
        Memory of one float64 block of cell values.

    Notes
    -----
    Non-finite values are counted per feature (logged and returned), and ±Inf become NaN
    before aggregation so a median or mean of the finite cells is taken, never an Inf.
    """
    embeddings = {Path(p).name: p for p in embedding_paths}
    if embeddings and sorted(embeddings) != sorted(Path(p).name for p in paths):
        raise ValueError(
            f"embedding files {sorted(embeddings)} do not match the feature files "
            f"{sorted(Path(p).name for p in paths)}"
        )
    _check_wells_in_one_file(paths)
    conditions, exclude, statistics = _cell_qc_setup(paths, cell_qc)
    parts, qc_rows, nonfinite = [], [], []
    for path in paths:
        keys = pq.read_table(path, columns=CELL_KEYS).to_pandas()
        if keys.empty:
            log.warning("%s: no cells", path)
            continue
        sources = [(path, _feature_columns(path), None)]
        if embeddings:
            rows, columns = embedding_rows(keys, path, embeddings[Path(path).name])
            sources.append((embeddings[Path(path).name], columns, rows))
        flags = flag_cells(
            pd.read_parquet(path, columns=condition_features(conditions)), conditions, statistics
        )
        flagged = flags.any(axis=1).to_numpy()
        qc_rows.append(_cell_qc_counts(keys, flags, flagged & exclude))
        kept = ~(flagged & exclude)
        well_parts = []
        for source, rows, block_columns in _blocks(sources, len(keys), chunk_bytes):
            block = pq.read_table(source, columns=block_columns).to_pandas()
            if rows is not None:
                block = block.iloc[rows].reset_index(drop=True)
            nonfinite.append(nonfinite_counts(block, block_columns))
            block = block.replace([np.inf, -np.inf], np.nan)
            cells = pd.concat([keys, block], axis=1)[kept]
            well_parts.append(
                aggregate(
                    cells,
                    strata=STRATA,
                    features=block_columns,
                    operation=operation,
                    compute_object_count=not well_parts,
                    object_feature="Metadata_ObjectNumber",
                ).set_index(STRATA)
            )
            del block, cells
        parts.append(pd.concat(well_parts, axis=1).reset_index())
    if not parts:
        raise ValueError(f"no cells in any of {len(paths)} feature file(s)")
    report = _sum_nonfinite(nonfinite)
    for row in report.itertuples():
        log.warning("feature %s: %d NaN and %d Inf cell values", row.feature, row.nan, row.inf)
    cell_qc_table = pd.concat(qc_rows, ignore_index=True)
    for column in cell_qc_table.columns[3:]:
        log.info("cell QC %s: %d cells", column, int(cell_qc_table[column].sum()))
    profiles = pd.concat(parts, ignore_index=True).sort_values(STRATA, ignore_index=True)
    return Aggregation(profiles, cell_qc_table.sort_values(STRATA, ignore_index=True), report)


def _feature_columns(path: str | os.PathLike) -> list[str]:
    """pycytominer's feature columns of a Parquet file, from its schema alone."""
    return infer_cp_features(pd.DataFrame(columns=pq.read_schema(path).names))


def _blocks(
    sources: Sequence[tuple[Any, list[str], np.ndarray | None]], n_cells: int, chunk_bytes: int
) -> Iterator[tuple[Any, np.ndarray | None, list[str]]]:
    """Yield ``(source, rows, columns)``: each source's columns in blocks of ``chunk_bytes``."""
    width = max(1, chunk_bytes // (8 * max(n_cells, 1)))
    for source, columns, rows in sources:
        for start in range(0, len(columns), width):
            yield source, rows, columns[start : start + width]


def _check_wells_in_one_file(paths: Sequence[str | os.PathLike]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        wells = pq.read_table(path, columns=STRATA).to_pandas().drop_duplicates()
        for plate, well in wells.itertuples(index=False):
            first = seen.setdefault((plate, well), str(path))
            if first != str(path):
                raise ValueError(
                    f"plate {plate} well {well}: cells in two feature files ({first} and "
                    f"{path}); per-well aggregation needs each well in one file"
                )


def _cell_qc_counts(keys: pd.DataFrame, flags: pd.DataFrame, excluded: np.ndarray) -> pd.DataFrame:
    """Per well: cells, cells flagged per condition, cells excluded."""
    wells = keys["Metadata_Well"].to_numpy()
    qc = flags.groupby(wells).sum()
    qc.insert(0, "Metadata_Cells", pd.Series(wells).value_counts())
    qc["Metadata_cqc_excluded"] = pd.Series(excluded).groupby(wells).sum()
    qc = qc.rename_axis("Metadata_Well").reset_index()
    qc.insert(0, "Metadata_Plate", keys["Metadata_Plate"].iloc[0])
    return qc


def _cell_qc_setup(
    paths: Sequence[str | os.PathLike], cell_qc: Mapping[str, Any] | None
) -> tuple[dict[str, dict[str, float]], bool, dict[str, tuple[float, float]]]:
    """Conditions, exclude flag and per-plate statistics (first pass over the files)."""
    if not cell_qc:
        return {}, False, {}
    conditions = dict(cell_qc.get("conditions") or DEFAULT_CONDITIONS)
    columns = pq.read_schema(paths[0]).names if paths else []
    check_conditions(conditions, columns, str(paths[0]) if paths else "no feature files")
    statistics = plate_statistics(paths, condition_features(conditions))
    return conditions, bool(cell_qc.get("exclude", False)), statistics


def _sum_nonfinite(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [part for part in parts if len(part)]
    if not frames:
        return pd.DataFrame({"feature": [], "nan": [], "inf": []}).astype(
            {"feature": str, "nan": np.int64, "inf": np.int64}
        )
    return pd.concat(frames).groupby("feature", as_index=False, sort=True).sum()


def _treated_wells(platemap: pd.DataFrame, treatment_columns: Sequence[str]) -> set[str]:
    """Wells of an annotated platemap with a value in a treatment column (any annotation
    column when none are given; the control type :func:`mark_controls` adds does not count)."""
    columns = [metadata_name(c) for c in treatment_columns] or [
        c for c in platemap.columns if c not in ("Metadata_Well", CONTROL_COLUMN)
    ]
    values = platemap[columns].fillna("").astype(str).apply(lambda column: column.str.strip())
    has = (values != "").any(axis=1)
    return set(platemap.loc[has, "Metadata_Well"])


def annotate_profiles(
    aggregated: pd.DataFrame,
    platemap: pd.DataFrame,
    *,
    on_mismatch: str = "error",
    empty_wells: Sequence[str] = (),
    never_imaged: str = "report",
    treatment_columns: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join profiles with the platemap (pycytominer's annotate); no well may vanish.

    pycytominer's annotate is an inner join, so an imaged well absent from the platemap would
    vanish silently. Here it is an error naming the plate and wells or, with
    ``on_mismatch="report"``, the well is kept with empty annotations and
    ``Metadata_control_type`` :data:`UNANNOTATED` (so it is never a control). Platemap wells
    never imaged are reported; with ``never_imaged="error"``, those with a treatment (a value
    in ``treatment_columns``, or in any annotation column when none are given) are an error.

    ``empty_wells`` are wells that were imaged but gave no cells (empty fields, or every site
    excluded by QC): they have no profile and are reported as ``no_cells``, not mistaken for
    platemap wells never imaged (and, when the platemap lacks them too, not passed over).

    Returns
    -------
    annotated : pandas.DataFrame
        One row per aggregated well.
    issues : pandas.DataFrame
        :data:`PLATEMAP_REPORT` rows for unmapped, empty and never-imaged wells.
    """
    plate = ", ".join(map(str, aggregated["Metadata_Plate"].unique()))
    imaged = set(aggregated["Metadata_Well"])
    empty = set(empty_wells) - imaged
    described = set(platemap["Metadata_Well"])
    unmapped = sorted(imaged - described)
    if (unmapped or empty - described) and on_mismatch != "report":
        raise PlatemapError(
            f"plate {plate}: imaged well(s) missing from the platemap: "
            f"{sorted([*unmapped, *(empty - described)])}"
        )
    never = sorted(described - imaged - empty)
    if never:
        log.warning("plate %s: platemap wells never imaged: %s", plate, never)
    treated = _treated_wells(platemap, treatment_columns)
    missed = [well for well in never if well in treated]
    if missed and never_imaged == "error":
        raise PlatemapError(
            f"plate {plate}: platemap well(s) with a treatment never imaged: {missed}; check "
            "images.pattern and the image root, or set platemap.never_imaged: report to "
            "profile the imaged wells only"
        )
    issues = [(plate, w, "never_imaged", "none", "in the platemap, no cells") for w in never]
    if empty:
        log.warning(
            "plate %s: imaged well(s) without any cell, no profile: %s", plate, sorted(empty)
        )
    issues += [
        (
            plate,
            w,
            "no_cells",
            "no profile",
            "imaged, no cells" + ("" if w in described else "; not in the platemap"),
        )
        for w in sorted(empty)
    ]
    if unmapped:
        log.warning("plate %s: imaged wells missing from the platemap kept: %s", plate, unmapped)
        issues += [(plate, w, "not_in_platemap", "kept unannotated", "imaged") for w in unmapped]
        platemap = pd.concat(
            [platemap, pd.DataFrame({"Metadata_Well": unmapped, CONTROL_COLUMN: UNANNOTATED})],
            ignore_index=True,
        )
    annotated = annotate(
        aggregated,
        platemap,
        join_on=["Metadata_Well", "Metadata_Well"],
        add_metadata_id_to_platemap=False,
    )
    if len(annotated) != len(aggregated):
        raise PlatemapError(
            f"plate {plate}: annotation changed the row count {len(aggregated)} -> {len(annotated)}"
        )
    return annotated, pd.DataFrame(issues, columns=PLATEMAP_REPORT)


#: Columns of the normalization report (``<plate>_normalization.parquet``).
NORMALIZATION_REPORT = ["feature", "issue", "action", "wells_nan", "reference_spread"]


def normalize_profiles(
    annotated: pd.DataFrame, *, method: str = "mad_robustize", samples: str = "negative_controls"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalize features to the negative controls (or to all wells) with pycytominer.

    A feature without spread in the reference wells (zero MAD, standard deviation or IQR,
    by ``method``) or without any value there cannot be scaled: pycytominer would divide by
    its epsilon (values near 1e18) or return a NaN column. Such features are left out of the
    normalized table and reported by name; features NaN in some wells are kept and reported.
    With fewer than two reference wells, spread is undefined and nothing is left out.

    Returns
    -------
    normalized : pandas.DataFrame
    report : pandas.DataFrame
        :data:`NORMALIZATION_REPORT` rows, one per reported feature.
    """
    plate = ", ".join(map(str, annotated["Metadata_Plate"].unique()))
    if samples == "negative_controls":
        reference = annotated[annotated[CONTROL_COLUMN] == "negative"]
        if reference.empty:
            raise PlatemapError(f"plate {plate}: no negative-control well to normalize to")
        query = f"{CONTROL_COLUMN} == 'negative'"
    else:
        reference, query = annotated, "all"
    features = infer_cp_features(annotated)
    spread = _reference_spread(reference[features], method)
    wells_nan = annotated[features].isna().sum()
    rows = []
    if len(reference) >= 2:
        for feature in features:
            if reference[feature].isna().all():
                rows.append((feature, "no_reference_value", "left out"))
            elif spread[feature] == 0:
                rows.append((feature, f"zero_{_SPREAD[method]}", "left out"))
    left_out = {row[0] for row in rows}
    rows += [(f, "nan_in_wells", "kept") for f in features if wells_nan[f] and f not in left_out]
    report = pd.DataFrame(
        [(f, issue, action, int(wells_nan[f]), float(spread[f])) for f, issue, action in rows],
        columns=NORMALIZATION_REPORT,
    )
    if left_out:
        log.warning(
            "plate %s: %d feature(s) cannot be normalized and are left out: %s",
            plate,
            len(left_out),
            sorted(left_out),
        )
    kept = [f for f in features if f not in left_out]
    normalized = normalize(
        annotated.drop(columns=sorted(left_out)), features=kept, samples=query, method=method
    )
    return normalized, report


_SPREAD = {"mad_robustize": "mad", "standardize": "sd", "robustize": "iqr"}


def _reference_spread(values: pd.DataFrame, method: str) -> pd.Series:
    """The spread each method divides by, per feature, over the reference wells."""
    if method == "mad_robustize":
        return (values - values.median()).abs().median()
    if method == "standardize":
        return values.std(ddof=0)
    return values.quantile(0.75) - values.quantile(0.25)


def select_features(
    normalized: pd.DataFrame, *, operations: Sequence[str] = ("variance_threshold",)
) -> pd.DataFrame:
    """Apply pycytominer feature_select operations (on one well, those that need no spread)."""
    operations = list(operations)
    if len(normalized) < 2:
        skipped = [op for op in operations if op in ACROSS_WELLS]
        operations = [op for op in operations if op not in ACROSS_WELLS]
        if skipped:
            log.warning("one well: feature selection skips %s, which compare wells", skipped)
    if not operations:
        return normalized
    selected = feature_select(normalized, features="infer", operation=operations)
    dropped = len(infer_cp_features(normalized)) - len(infer_cp_features(selected))
    log.info(
        "feature selection kept %d features, dropped %d", len(infer_cp_features(selected)), dropped
    )
    return selected


def build_profiles(
    feature_paths: Sequence[str | os.PathLike],
    platemap_path: str | os.PathLike,
    *,
    plate: str | None = None,
    platemap_options: Mapping[str, Any],
    controls: Mapping[str, Any],
    aggregate_operation: str = "median",
    normalize_method: str = "mad_robustize",
    normalize_samples: str = "negative_controls",
    feature_select_operations: Sequence[str] = ("variance_threshold",),
    embedding_paths: Sequence[str | os.PathLike] = (),
    cell_qc: Mapping[str, Any] | None = None,
    manifest: str | os.PathLike | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the whole profile chain for one plate (``embedding_paths``, ``cell_qc``: see
    :func:`aggregate_features`; ``plate`` and ``platemap_options``: :func:`read_platemap`,
    whose ``on_mismatch`` also decides about imaged wells missing from the platemap).

    ``manifest``, the plate's image manifest, says which wells were imaged: those without any
    cell are reported as ``no_cells`` (:func:`annotate_profiles`). Without it (CellProfiler
    plates) only wells with cells are known.

    The platemap is read and checked first, so a bad platemap fails before any aggregation.

    Returns
    -------
    dict
        ``{"aggregated", "annotated", "normalized", "feature_selected"}`` -> DataFrame, plus
        the reports ``"cell_qc"``, ``"nonfinite"``, ``"platemap"`` (:data:`PLATEMAP_REPORT`)
        and ``"normalization"`` (:data:`NORMALIZATION_REPORT`); see :data:`PROFILE_REPORTS`.
    """
    read_options = _read_options(platemap_options)
    platemap = read_platemap(platemap_path, plate=plate, **read_options)
    on_mismatch = platemap_options.get("on_mismatch", "error")
    annotation = mark_controls(platemap.table, **controls)
    aggregation = aggregate_features(
        feature_paths,
        operation=aggregate_operation,
        embedding_paths=embedding_paths,
        cell_qc=cell_qc,
    )
    aggregated = aggregation.profiles
    if len(aggregated) < 2:
        # A plate of one well (e.g. CellProfiler's ExampleHuman site): aggregated and annotated
        # are its profile; normalized to itself every feature is 0 (pycytominer's convention
        # for a reference without spread), and feature selection skips what compares wells.
        log.warning(
            "plate %s has one well with cells (%s): its normalized features are 0 and only "
            "aggregated/annotated carry its measurements",
            ", ".join(map(str, aggregated["Metadata_Plate"].unique())),
            ", ".join(aggregated["Metadata_Well"]),
        )
    empty_wells: list[str] = []
    if manifest is not None:
        imaged = pd.read_parquet(manifest, columns=["Metadata_Well"])["Metadata_Well"]
        empty_wells = sorted(set(imaged) - set(aggregated["Metadata_Well"]))
    annotated, unmatched = annotate_profiles(
        aggregated,
        annotation,
        on_mismatch=on_mismatch,
        empty_wells=empty_wells,
        never_imaged=platemap_options.get("never_imaged", "report"),
        treatment_columns=platemap_options.get("treatment_columns") or (),
    )
    normalized, normalization = normalize_profiles(
        annotated, method=normalize_method, samples=normalize_samples
    )
    selected = select_features(normalized, operations=feature_select_operations)
    tables = dict(zip(PROFILE_STEPS, (aggregated, annotated, normalized, selected), strict=True))
    reports = {
        "cell_qc": aggregation.cell_qc,
        "nonfinite": aggregation.nonfinite,
        "platemap": pd.concat([platemap.issues, unmatched], ignore_index=True),
        "normalization": normalization,
    }
    return {**tables, **reports}


def write_profiles(
    feature_paths: Sequence[str | os.PathLike],
    platemap_path: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """Run :func:`build_profiles`; write each step (and each report given an output path) to
    ``outputs[name]`` as Parquet."""
    missing = [step for step in PROFILE_STEPS if step not in outputs]
    if missing:
        raise ValueError(f"no output path for profile step(s) {missing}")
    tables = build_profiles(feature_paths, platemap_path, **options)
    for name, table in tables.items():
        if name in outputs:
            write_parquet(outputs[name], table)
    return tables


#: The experiment-level tables of a version, across its plates.
EXPERIMENT_STEPS = ("normalized", "feature_selected", "consensus")


def combine_plates(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-plate profiles, keeping the features every plate has.

    Per-plate normalization may leave a feature out of one plate (no spread in its controls);
    a stacked table with that column NaN for whole plates would mislead feature selection
    and distances, so such features are dropped and counted in the log.
    """
    if not tables:
        raise ValueError("no plate profiles to combine")
    features = [infer_cp_features(table) for table in tables]
    common = set(features[0]).intersection(*features[1:])
    dropped = sorted(set().union(*features) - common)
    if dropped:
        log.warning(
            "%d feature(s) missing from some plates left out of the experiment: %s",
            len(dropped),
            dropped[:10],
        )
    kept = [f for f in features[0] if f in common]
    metadata = list(
        dict.fromkeys(c for t in tables for c in t.columns if c.startswith("Metadata_"))
    )
    return pd.concat([t.reindex(columns=[*metadata, *kept]) for t in tables], ignore_index=True)


def consensus_profiles(
    profiles: pd.DataFrame, *, treatment_columns: Sequence[str], operation: str = "median"
) -> pd.DataFrame:
    """One profile per treatment across its replicate wells and plates (pycytominer's
    consensus), with ``Metadata_Replicates``, the wells it summarises.

    ``treatment_columns`` may be given with or without the ``Metadata_`` prefix; with none,
    the table is empty (no treatments are defined).
    """
    columns = [metadata_name(c) for c in treatment_columns]
    missing = [c for c in columns if c not in profiles]
    if missing:
        raise PlatemapError(f"treatment column(s) {missing} not in the profiles")
    if not columns:
        log.warning("platemap.treatment_columns is empty: no consensus profiles")
        return pd.DataFrame(columns=["Metadata_Replicates"])
    # Controls are one treatment whatever their other columns say.
    columns = list(dict.fromkeys([*columns, CONTROL_COLUMN]))
    grouped = consensus(profiles, replicate_columns=columns, operation=operation, features="infer")
    replicates = profiles.groupby(columns, dropna=False).size().rename("Metadata_Replicates")
    return grouped.merge(replicates.reset_index(), on=columns, how="left").reindex(
        columns=[*columns, "Metadata_Replicates", *infer_cp_features(grouped)]
    )


def build_experiment(
    normalized_paths: Sequence[str | os.PathLike],
    *,
    treatment_columns: Sequence[str] = (),
    feature_select_operations: Sequence[str] = ("variance_threshold",),
    consensus_operation: str = "median",
) -> dict[str, pd.DataFrame]:
    """Across the plates of an experiment: the normalized profiles stacked
    (:func:`combine_plates`), feature selection on all of them, and consensus per treatment.

    Returns
    -------
    dict
        :data:`EXPERIMENT_STEPS` -> DataFrame.
    """
    normalized = combine_plates([pd.read_parquet(path) for path in normalized_paths])
    selected = select_features(normalized, operations=feature_select_operations)
    return {
        "normalized": normalized,
        "feature_selected": selected,
        "consensus": consensus_profiles(
            selected, treatment_columns=treatment_columns, operation=consensus_operation
        ),
    }


def write_experiment(
    normalized_paths: Sequence[str | os.PathLike],
    outputs: Mapping[str, str | os.PathLike],
    **options: Any,
) -> dict[str, pd.DataFrame]:
    """Run :func:`build_experiment` and write each table to ``outputs[name]`` as Parquet."""
    tables = build_experiment(normalized_paths, **options)
    for name in EXPERIMENT_STEPS:
        write_parquet(outputs[name], tables[name])
    return tables

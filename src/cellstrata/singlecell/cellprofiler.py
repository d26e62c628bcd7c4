"""Level 5 from CellProfiler output: enter the chain at the single-cell features.

Labs that already ran CellProfiler point a plate at its output (``plates[].cellprofiler``): a
folder of ExportToSpreadsheet CSVs or an ExportToDatabase SQLite file. CytoTable converts it
with its presets, which know CellProfiler's tables and the joins of each cytoplasm to its cell
and nucleus; this module then gives the result the layout
:func:`cellstrata.singlecell.features.measure_batch` writes, so the profiles level runs unchanged:
``Metadata_Plate, Metadata_Well, Metadata_Site, Metadata_ObjectNumber`` then float32
``{Cells,Nuclei,Cytoplasm}_*`` features, one row per cell (per cytoplasm, joined with its cell
and nucleus; a nucleus without a cell is left out, as CytoTable's and pycytominer's joins do).

The well, site and plate of each image come from CellProfiler's image table, read here
directly (one row per image), through the names in the config's ``cellprofiler`` block.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cellstrata.config import CELLPROFILER_BATCH, CELLPROFILER_VERSION
from cellstrata.images.ingest import IngestError, normalize_well
from cellstrata.io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "CELLPROFILER_BATCH",
    "CELLPROFILER_VERSION",
    "CellProfilerError",
    "check_source",
    "convert_plate",
    "image_metadata",
    "source_files",
]

#: CytoTable preset for each kind of source (the config's ``cellprofiler.preset`` overrides).
PRESETS = {"csv": "cellprofiler_csv", "sqlite": "cellprofiler_sqlite_pycytominer"}
#: The object tables the presets join, and the image table (CSV stems / SQLite tables).
COMPARTMENTS = ("Cells", "Nuclei", "Cytoplasm")
CSV_TABLES = ("Image", *COMPARTMENTS)
SQLITE_TABLES = tuple(f"Per_{table}" for table in CSV_TABLES)
#: CytoTable reads a SQLite file only under this suffix.
SQLITE_SUFFIX = ".sqlite"

#: CellProfiler columns of the object tables that are bookkeeping, not measurements of the
#: cell, and that pycytominer's ``infer_cp_features`` (every ``Cells_``/``Nuclei_``/
#: ``Cytoplasm_`` column) would wrongly take as features:
#:
#: - ``*_Number_Object_Number``, ``*_ObjectNumber``: object ids (the cell's becomes
#:   ``Metadata_ObjectNumber``), and ``*_Neighbors_{First,Second}ClosestObjectNumber_*``,
#:   the ids of the nearest neighbours (MeasureObjectNeighbors);
#: - ``*_Parent_<Object>``: the id of the parent object (a cytoplasm's cell and nucleus);
#: - ``*_Children_<Object>_Count``: how many child objects RelateObjects found (e.g.
#:   ``Nuclei_Children_PH3_Count``), a count of other objects, not of this cell;
#: - ``*_Location_Center_Z``, ``*_Location_{CenterMassIntensity,MaxIntensity}_Z_<channel>``:
#:   z coordinates, always 0 for 2-D images.
#:
#: Image-table columns (file names and paths, URLs, MD5 digests, execution times, thresholds,
#: counts) are never kept: the well, site and plate are read from the image table directly.
NON_FEATURES = re.compile(
    r"^(?:Cells|Nuclei|Cytoplasm)_"
    r"(?:Number_Object_Number|.*ObjectNumber.*|Parent_.+|Children_.+|Location_(?:\w+_)?Z(?:_\w+)?)$"
)
FEATURE_PREFIX = re.compile(r"^(?:Cells|Nuclei|Cytoplasm)_")
#: Where each preset puts the cell's object number in the joined table.
OBJECT_COLUMNS = ("Metadata_Cells_Number_Object_Number", "Cells_Number_Object_Number")
METADATA = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]


class CellProfilerError(ValueError):
    """CellProfiler output is missing or unusable; the message names the file or folder."""


def _csv_tables(folder: Path) -> dict[str, Path]:
    """The CSVs CytoTable reads in a folder: stem (Image, Cells, ...) -> file."""
    files = {p.stem.lower(): p for p in sorted(folder.glob("*")) if p.suffix.lower() == ".csv"}
    return {table: files[table.lower()] for table in CSV_TABLES if table.lower() in files}


def _connect(path: Path) -> sqlite3.Connection:
    """A read-only connection: nothing is created or changed beside the file."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _sqlite_tables(path: Path) -> list[str]:
    """Table names of a SQLite file."""
    try:
        with closing(_connect(path)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        return [row[0] for row in rows]
    except sqlite3.DatabaseError as err:
        raise CellProfilerError(f"CellProfiler SQLite {path} cannot be read: {err}") from err


def check_source(source: str | os.PathLike) -> str:
    """Check that ``source`` is CellProfiler output CytoTable can convert; return its kind.

    Returns
    -------
    str
        ``"csv"`` for a folder of ExportToSpreadsheet CSVs, ``"sqlite"`` for an ExportToDatabase
        SQLite file.

    Raises
    ------
    CellProfilerError
        Naming the file or folder: missing, neither kind, or without the image table or an
        object table (Cells, Nuclei, Cytoplasm).
    """
    path = Path(source)
    if path.is_dir():
        found = _csv_tables(path)
        missing = [f"{table}.csv" for table in CSV_TABLES if table not in found]
        if missing:
            csvs = sorted(p.name for p in path.glob("*.csv"))
            raise CellProfilerError(
                f"CellProfiler CSV folder {path} has no {', '.join(missing)} (ExportToSpreadsheet "
                f"writes Image.csv and one CSV per object); its CSV files: {csvs}"
            )
        tables = {table.lower() for table in CSV_TABLES}
        nested = sorted(
            str(p.relative_to(path)) for p in path.glob("*/**/*.csv") if p.stem.lower() in tables
        )
        if nested:
            # CytoTable reads subfolders too and would stack their tables, but ImageNumber
            # starts at 1 in every export, so images could not be told apart.
            raise CellProfilerError(
                f"CellProfiler CSV folder {path} has more exports in subfolders ({nested[:3]}); "
                "give each export folder as its own plate"
            )
        return "csv"
    if path.is_file():
        if path.suffix.lower() != SQLITE_SUFFIX:
            raise CellProfilerError(
                f"CellProfiler output {path} is neither a folder of CSVs nor a {SQLITE_SUFFIX} "
                "file (ExportToDatabase SQLite)"
            )
        tables = _sqlite_tables(path)
        lowered = {name.lower() for name in tables}
        missing = [table for table in SQLITE_TABLES if table.lower() not in lowered]
        if missing:
            raise CellProfilerError(
                f"CellProfiler SQLite {path} has no table(s) {missing} (ExportToDatabase with one "
                f"table per object writes Per_Image, Per_<Object>); its tables: {sorted(tables)}"
            )
        return "sqlite"
    raise CellProfilerError(f"CellProfiler output {path} does not exist")


def source_files(source: str | os.PathLike) -> list[str]:
    """The files of ``source`` the conversion reads: a job's inputs (the path if unreadable)."""
    path = Path(source)
    if path.is_dir():
        tables = _csv_tables(path)
        if tables:
            return [str(p) for p in tables.values()]
    return [str(path)]


def _read_image_table(source: Path, kind: str) -> pd.DataFrame:
    """CellProfiler's image table (one row per image), every column as text."""
    if kind == "csv":
        path = _csv_tables(source)["Image"]
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    table = next(name for name in _sqlite_tables(source) if name.lower() == "per_image")
    with closing(_connect(source)) as db:
        frame = pd.read_sql_query(f'SELECT * FROM "{table}"', db)
    return frame.astype(str).where(frame.notna(), "")


def _column(image: pd.DataFrame, name: str) -> str | None:
    """The image-table column of CellProfiler measurement ``name``, with or without ``Image_``
    (Image.csv has ``Metadata_Well``, ExportToDatabase's Per_Image ``Image_Metadata_Well``)."""
    bare = name.removeprefix("Image_")
    return next((c for c in (bare, f"Image_{bare}") if c in image.columns), None)


def _require(image: pd.DataFrame, name: str, key: str, source: Path) -> str:
    column = _column(image, name)
    if column is None:
        metadata = sorted(c for c in image.columns if re.match(r"^(Image_)?Metadata_", c))
        raise CellProfilerError(
            f"CellProfiler output {source}: its image table has no {name!r} (cellprofiler."
            f"{key}); its metadata columns: {metadata}"
        )
    return column


def image_metadata(
    source: str | os.PathLike,
    plate: str,
    *,
    well_column: str | None = "Metadata_Well",
    site_column: str | None = None,
    plate_column: str = "Metadata_Plate",
    file_column: str | None = None,
    file_pattern: str | None = None,
    cellprofiler_plate: str | None = None,
    kind: str | None = None,
) -> pd.DataFrame:
    """Plate, well and site of each CellProfiler image (see the ``cellprofiler`` config block).

    Returns
    -------
    pandas.DataFrame
        ``ImageNumber`` (int) and ``Metadata_Plate`` (= ``plate``), ``Metadata_Well``
        (normalised, ``A01``), ``Metadata_Site`` (int), one row per image of this plate.

    Raises
    ------
    CellProfilerError
        Naming the source: a metadata column is missing, a well or site cannot be read, a file
        name does not match ``file_pattern``, two images get the same well and site, or the
        output holds several plates and ``cellprofiler_plate`` does not pick one.
    """
    source = Path(source)
    kind = kind or check_source(source)
    image = _read_image_table(source, kind)
    number = _require(image, "ImageNumber", "ImageNumber", source)
    image = image.assign(ImageNumber=pd.to_numeric(image[number], errors="raise").astype("int64"))

    plate_col = _column(image, plate_column)
    if cellprofiler_plate is not None:
        plate_col = _require(image, plate_column, "plate_column", source)
        values = sorted(image[plate_col].unique())
        image = image[image[plate_col] == str(cellprofiler_plate)]
        if image.empty:
            raise CellProfilerError(
                f"CellProfiler output {source}: no image of plate {cellprofiler_plate!r} "
                f"(plates[].cellprofiler_plate) in {plate_col}; its plates: {values}"
            )
    elif plate_col is not None and image[plate_col].nunique() > 1:
        raise CellProfilerError(
            f"CellProfiler output {source} holds several plates in {plate_col}: "
            f"{sorted(image[plate_col].unique())}; pick one with plates[].cellprofiler_plate"
        )

    parsed = pd.DataFrame(index=image.index)
    if file_pattern is not None:
        files = image[_require(image, file_column or "", "file_column", source)]
        regex = re.compile(file_pattern)
        matches = [regex.fullmatch(name) for name in files]
        bad = [name for name, match in zip(files, matches, strict=True) if match is None]
        if bad:
            raise CellProfilerError(
                f"CellProfiler output {source}: {len(bad)} file name(s) in {file_column} do not "
                f"match cellprofiler.file_pattern {file_pattern!r}, e.g. {bad[0]!r}"
            )
        parsed = pd.DataFrame([m.groupdict() for m in matches], index=image.index)

    try:
        if well_column is not None:
            column = _require(image, well_column, "well_column", source)
            wells = [normalize_well(w) for w in image[column]]
        elif "well" in parsed:
            wells = [normalize_well(w) for w in parsed["well"]]
        elif {"row", "column"} <= set(parsed):
            wells = [
                normalize_well(row=r, column=c)
                for r, c in zip(parsed["row"], parsed["column"], strict=True)
            ]
        else:
            raise CellProfilerError(
                f"CellProfiler output {source}: no well; set cellprofiler.well_column, or a "
                "file_pattern with a group 'well' (or 'row' and 'column')"
            )
    except IngestError as err:
        raise CellProfilerError(f"CellProfiler output {source}: {err}") from err
    image = image.assign(Metadata_Well=wells)

    if site_column is not None:
        sites = image[_require(image, site_column, "site_column", source)]
    elif "site" in parsed and parsed["site"].notna().all():
        sites = parsed["site"]
    elif _column(image, "Metadata_Site") is not None:
        sites = image[_column(image, "Metadata_Site")]
    else:
        # No site metadata: number the images of each well in CellProfiler's order.
        sites = image.groupby("Metadata_Well")["ImageNumber"].rank(method="first")
    numbers = pd.to_numeric(pd.Series(sites, index=image.index), errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        raise CellProfilerError(
            f"CellProfiler output {source}: site(s) that are not whole numbers: "
            f"{sorted(map(str, pd.Series(sites, index=image.index)[bad].unique()))[:5]}"
        )
    image = image.assign(Metadata_Site=numbers.astype("int64"), Metadata_Plate=plate)

    twice = image[image.duplicated(["Metadata_Well", "Metadata_Site"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        same = twice.loc[
            (twice["Metadata_Well"] == first["Metadata_Well"])
            & (twice["Metadata_Site"] == first["Metadata_Site"]),
            "ImageNumber",
        ]
        raise CellProfilerError(
            f"CellProfiler output {source}: images {sorted(same)} all are well "
            f"{first['Metadata_Well']} site {first['Metadata_Site']}; set cellprofiler.site_column"
        )
    columns = ["ImageNumber", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    return image[columns].sort_values("ImageNumber", ignore_index=True)


def install_duckdb_extensions() -> None:
    """Install DuckDB's sqlite_scanner and httpfs extensions from their wheels.

    CytoTable runs ``INSTALL sqlite_scanner; INSTALL httpfs;`` on every DuckDB connection, which
    downloads them unless DuckDB's extension directory (``~/.duckdb/extensions``) has them; the
    ``duckdb-extension-*`` packages carry both for the pinned DuckDB, so nothing is downloaded.
    """
    import duckdb

    with duckdb.connect() as con:
        version = con.execute("PRAGMA version").fetchone()[0]
        installed = {
            name
            for name, done in con.execute(
                "SELECT extension_name, installed FROM duckdb_extensions()"
            ).fetchall()
            if done
        }
        for name in ("sqlite_scanner", "httpfs"):
            if name in installed:
                continue
            try:
                files = importlib.resources.files(f"duckdb_extension_{name}")
            except ModuleNotFoundError:
                log.warning("duckdb-extension-%s is not installed; DuckDB will download it", name)
                continue
            wheel_file = files / "extensions" / version / f"{name}.duckdb_extension"
            if not wheel_file.is_file():
                log.warning("no %s extension for DuckDB %s in its wheel", name, version)
                continue
            con.execute(f"INSTALL '{wheel_file}'")
            log.info("installed DuckDB extension %s from %s", name, wheel_file)


def cytotable_convert(
    source: str | os.PathLike, dest: str | os.PathLike, *, preset: str, threads: int = 1
) -> Path:
    """Join CellProfiler output into one Parquet with CytoTable (``preset``'s tables and joins).

    Parsl runs CytoTable's tasks in a thread pool (its default needs a separate interchange
    process) and keeps its run directory beside ``dest``.
    """
    os.environ.setdefault("CYTOTABLE_MAX_THREADS", str(threads))
    import cytotable
    from parsl.config import Config
    from parsl.executors import ThreadPoolExecutor

    install_duckdb_extensions()
    dest = Path(dest)
    parsl_config = Config(
        executors=[ThreadPoolExecutor(max_threads=threads, label="cellstrata_cytotable")],
        run_dir=str(dest.parent / "parsl"),
    )
    # Parsl logs every task (to its run directory too); keep it out of the job's log.
    parsl_log = logging.getLogger("parsl")
    propagate, parsl_log.propagate = parsl_log.propagate, False
    try:
        output = cytotable.convert(
            source_path=str(source),
            dest_path=str(dest),
            dest_datatype="parquet",
            preset=preset,
            parsl_config=parsl_config,
        )
    finally:
        parsl_log.propagate = propagate
    return Path(output)


def _feature_columns(joined: Path) -> tuple[str, list[str]]:
    """The cell's object-number column and the feature columns of CytoTable's joined table."""
    schema = pq.read_schema(joined)
    names = schema.names
    objects = next((c for c in OBJECT_COLUMNS if c in names), None)
    if objects is None:
        raise CellProfilerError(f"CytoTable output {joined} has none of {list(OBJECT_COLUMNS)}")
    candidates = [c for c in names if FEATURE_PREFIX.match(c)]
    dropped = [c for c in candidates if NON_FEATURES.match(c)]
    text = [c for c in candidates if c not in dropped and not _numeric(schema.field(c).type)]
    if text:
        log.warning("dropped %d non-numeric object column(s): %s", len(text), text[:10])
    features = [c for c in candidates if c not in dropped and c not in text]
    log.info("dropped %d bookkeeping column(s): %s", len(dropped), dropped)
    return objects, features


def _numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)


def convert_plate(
    source: str | os.PathLike,
    plate: str,
    output: str | os.PathLike,
    *,
    options: Mapping[str, Any] | None = None,
    cellprofiler_plate: str | None = None,
    threads: int = 1,
) -> dict[str, int]:
    """Convert one plate's CellProfiler output to the package's single-cell Parquet.

    DuckDB casts, joins the image metadata and sorts out of core, so a whole plate is never
    held in memory here.

    Parameters
    ----------
    source : path
        Folder of ExportToSpreadsheet CSVs or ExportToDatabase ``.sqlite`` file.
    plate : str
        Plate name written to ``Metadata_Plate``.
    output : path
        Parquet file: ``Metadata_Plate, Metadata_Well, Metadata_Site, Metadata_ObjectNumber``
        then float32 features, one row per cell, sorted by well, site and object.
    options : mapping, optional
        The config's ``cellprofiler`` block: ``preset`` plus the keywords of
        :func:`image_metadata`.
    cellprofiler_plate : str, optional
        Keep only the images of this plate (``plates[].cellprofiler_plate``).
    threads : int
        Threads for CytoTable and DuckDB.

    Returns
    -------
    dict
        ``{"cells", "features", "wells", "images"}``: counts of what was written.
    """
    import duckdb

    options = dict(options or {})
    preset = options.pop("preset", None)
    source = Path(source)
    kind = check_source(source)
    preset = preset or PRESETS[kind]
    if preset != PRESETS[kind]:
        raise CellProfilerError(
            f"CellProfiler output {source} is a {kind} source; cellprofiler.preset {preset!r} "
            f"reads {'SQLite files' if kind == 'csv' else 'CSV folders'} (use {PRESETS[kind]})"
        )
    images = image_metadata(
        source, plate, cellprofiler_plate=cellprofiler_plate, kind=kind, **options
    )
    log.info(
        "%s: %d image(s), %d well(s) of plate %s",
        source,
        len(images),
        images["Metadata_Well"].nunique(),
        plate,
    )
    # CytoTable's intermediate tables go to the temporary directory (Snakemake's tmpdir
    # resource sets it for a job), never beside the results.
    with tempfile.TemporaryDirectory(prefix="cellstrata-cytotable-") as work:
        joined = cytotable_convert(
            source, Path(work, "joined.parquet"), preset=preset, threads=threads
        )
        objects, features = _feature_columns(joined)
        casts = ",\n".join(f'CAST(j."{c}" AS FLOAT) AS "{c}"' for c in features)
        with duckdb.connect() as con, atomic_path(output) as tmp:
            con.execute(f"SET threads={int(threads)}")
            con.register("images", images)
            con.execute(
                f"""
                COPY (
                    SELECT m.Metadata_Plate, m.Metadata_Well, m.Metadata_Site,
                        CAST(j."{objects}" AS BIGINT) AS Metadata_ObjectNumber,
                        {casts}
                    FROM read_parquet('{joined}') AS j
                    JOIN images AS m ON j.Metadata_ImageNumber = m.ImageNumber
                    ORDER BY m.Metadata_Well, m.Metadata_Site, Metadata_ObjectNumber
                ) TO '{tmp}' (FORMAT parquet)
                """
            )
            cells, distinct, wells = con.execute(
                f"""
                SELECT count(*), count(DISTINCT (Metadata_Well, Metadata_Site,
                    Metadata_ObjectNumber)), count(DISTINCT Metadata_Well)
                FROM read_parquet('{tmp}')
                """
            ).fetchone()
            if distinct != cells:
                raise CellProfilerError(
                    f"CellProfiler output {source}: {cells - distinct} cell(s) share well, site "
                    "and object number after the join; the object tables do not fit the image "
                    "table"
                )
    counts = {"cells": cells, "features": len(features), "wells": wells, "images": len(images)}
    log.info("plate %s: %s -> %s", plate, counts, output)
    return counts

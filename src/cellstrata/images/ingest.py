"""Level 1: find raw images, parse their metadata and build the validated manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import tifffile

from cellstrata.config import schema_default
from cellstrata.io import write_parquet

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "Metadata_Plate",
    "Metadata_Well",
    "Metadata_Site",
    "channel",
    "channel_token",
    "batch",
    "path",
    "height",
    "width",
    "dtype",
    "bytes",
]

_ROW_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WELL_RE = re.compile(r"^(?:([A-Za-z]{1,2})(\d{1,3})|[rR](\d{1,3})[cC](\d{1,3}))$")


class IngestError(ValueError):
    """Raw images or their metadata are unusable; the message names plate/well/site/channel."""


#: Whole wells per image-level job when none is given: the schema's ``batching.wells_per_job``,
#: so that the DAG (:func:`plate_inventory`) and the ingest job (:func:`write_manifest`), which
#: both batch with :func:`assign_batches`, can never default apart.
WELLS_PER_JOB = schema_default("batching", "wells_per_job")
#: Key of the manifest's Parquet metadata holding its :class:`SkippedFiles` (as JSON): the
#: summary reports them from there, with no table of its own to keep beside the manifest.
SKIPPED_KEY = "cellstrata.skipped"
#: Example file names kept per reason.
SKIPPED_EXAMPLES = 3


@dataclass
class SkippedFiles:
    """Image files under a plate's root that ingest did not use, by reason.

    ``pattern``: files with an image extension that ``images.pattern`` does not match;
    ``channel``: files it matches whose channel token is not in ``channels`` (a lab's pattern
    that misses wells, or a channel left out of the map, would otherwise go unnoticed). Each
    reason keeps a count and the first :data:`SKIPPED_EXAMPLES` names (relative to the root).
    """

    pattern: int = 0
    pattern_examples: list[str] = field(default_factory=list)
    channel: int = 0
    channel_tokens: list[str] = field(default_factory=list)
    channel_examples: list[str] = field(default_factory=list)

    def add(self, name: str, *, token: str | None = None) -> None:
        """Count ``name``: unmatched by the pattern, or (with ``token``) an unmapped channel."""
        if token is None:
            self.pattern += 1
            examples = self.pattern_examples
        else:
            self.channel += 1
            examples = self.channel_examples
            if token not in self.channel_tokens:
                self.channel_tokens.append(token)
        if len(examples) < SKIPPED_EXAMPLES:
            examples.append(name)

    @property
    def total(self) -> int:
        return self.pattern + self.channel

    def describe(self, plate: str) -> str | None:
        """One line for the log and the run summary, or None when nothing was skipped."""
        if not self.total:
            return None
        reasons = []
        if self.pattern:
            reasons.append(
                f"{self.pattern} not matching images.pattern "
                f"(e.g. {', '.join(self.pattern_examples)})"
            )
        if self.channel:
            tokens = ", ".join(repr(token) for token in sorted(self.channel_tokens))
            reasons.append(
                f"{self.channel} with a channel token not in channels: {tokens} "
                f"(e.g. {', '.join(self.channel_examples)})"
            )
        return f"plate {plate}: {self.total} image file(s) skipped: {'; '.join(reasons)}"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_manifest(cls, path: str | os.PathLike) -> SkippedFiles | None:
        """What ingest skipped for a manifest (None for a manifest written without it)."""
        import pyarrow.parquet as pq

        metadata = pq.read_schema(path).metadata or {}
        text = metadata.get(SKIPPED_KEY.encode())
        return None if text is None else cls(**json.loads(text))


def normalize_well(
    well: str | None = None, *, row: str | int | None = None, column: str | int | None = None
) -> str:
    """Return a well in the canonical zero-padded form ``A01``.

    Parameters
    ----------
    well : str, optional
        ``A1``, ``A01``, ``a01`` or Phenix-style ``r01c01``.
    row, column : str or int, optional
        Row as a letter or a 1-based number and column number, used when ``well`` is None.

    Returns
    -------
    str
        E.g. ``"B07"``; rows beyond Z (1536-well plates) are ``AA``, ``AB``, ...
    """
    if well is not None:
        match = _WELL_RE.match(str(well).strip())
        if match is None:
            raise IngestError(f"cannot read well {well!r}: expected A01, A1 or r01c01")
        letters, number, row_num, col_num = match.groups()
        if letters is not None:
            return _format_well(letters.upper(), int(number))
        return _format_well(_row_letter(int(row_num), well), int(col_num))
    if row is None or column is None:
        raise IngestError("a well needs either a well name or both row and column")
    row_text = str(row).strip()
    row_letters = row_text.upper() if row_text.isalpha() else _row_letter(int(row_text), row)
    try:
        return _format_well(row_letters, int(str(column).strip()))
    except ValueError as err:
        raise IngestError(f"cannot read well column {column!r}") from err


def _row_letter(number: int, source: object) -> str:
    if number < 1 or number > 52:
        raise IngestError(f"well row {source!r} is outside 1..52")
    if number <= 26:
        return _ROW_LETTERS[number - 1]
    return "A" + _ROW_LETTERS[number - 27]


def _format_well(row: str, column: int) -> str:
    if column < 1:
        raise IngestError(f"well column {column} must be >= 1")
    return f"{row}{column:02d}"


def scan_plate(
    plate: str,
    root: str | os.PathLike,
    pattern: str,
    channels: Mapping[str, str],
    *,
    extensions: Sequence[str] = (".tif", ".tiff"),
    skipped: SkippedFiles | None = None,
) -> pd.DataFrame:
    """List a plate's images and parse plate/well/site/channel from their paths.

    Only names are read here (it runs when Snakemake builds its DAG); file contents are
    checked by :func:`inspect_images`.

    Parameters
    ----------
    plate : str
        Plate name. When ``pattern`` has a ``plate`` group, only files whose group equals it count.
    root : str or os.PathLike
        Image root of the plate; the pattern is matched against paths relative to it.
    pattern : str
        Regular expression with named groups (see the config schema).
    channels : Mapping[str, str]
        Channel token in the file name -> channel name. Tokens not listed are ignored.
    extensions : Sequence[str]
        File extensions considered (case-insensitive).
    skipped : SkippedFiles, optional
        Filled with the image files not used. Files of another plate (a ``plate`` group
        naming another plate in a shared root) and files without an image extension are not
        counted as skipped.

    Returns
    -------
    pandas.DataFrame
        Columns ``Metadata_Plate, Metadata_Well, Metadata_Site, channel, channel_token, path``,
        sorted by well, site and channel order.
    """
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"plate {plate}: image root {root} is not a directory")
    regex = re.compile(pattern)
    suffixes = tuple(ext.lower() for ext in extensions)
    channel_order = {token: index for index, token in enumerate(channels)}
    # This runs for every plate while Snakemake builds its DAG (~17,000 files a plate): path
    # prefixes are made once per directory and each distinct well spelling is parsed once,
    # instead of Path objects and a normalize_well call per file.
    columns: dict[str, list] = {
        "Metadata_Well": [],
        "Metadata_Site": [],
        "channel": [],
        "channel_token": [],
        "path": [],
        "_order": [],
    }
    wells: dict[tuple[str | None, str | None, str | None], str] = {}
    skipped = SkippedFiles() if skipped is None else skipped
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        directory = Path(dirpath)
        # As str(Path(dirpath, name)) and Path(...).relative_to(root).as_posix() would give.
        base = str(directory)
        prefix = "" if base == "." else base if base.endswith(os.sep) else base + os.sep
        relative = directory.relative_to(root).as_posix()
        relative = "" if relative == "." else relative + "/"
        for filename in sorted(filenames):
            if not filename.lower().endswith(suffixes):
                continue
            match = regex.fullmatch(relative + filename)
            if match is None:
                skipped.add(relative + filename)
                continue
            groups = match.groupdict()
            if groups.get("plate") not in (None, plate):
                continue
            token = groups["channel"]
            if token not in channels:
                skipped.add(relative + filename, token=token)
                continue
            key = (groups.get("well"), groups.get("row"), groups.get("column"))
            well = wells.get(key)
            if well is None:
                try:
                    well = wells[key] = normalize_well(key[0], row=key[1], column=key[2])
                except IngestError as err:
                    raise IngestError(f"plate {plate}, file {prefix}{filename}: {err}") from err
            site = groups.get("site")
            # A pattern may capture any text as the site; it becomes part of output file
            # names (B03_s2.tiff), so only a number is accepted, and the file is named.
            if site is not None and not (site.isascii() and site.isdigit()):
                raise IngestError(
                    f"plate {plate}, file {prefix}{filename}: cannot read site {site!r}: "
                    "expected a number"
                )
            columns["Metadata_Well"].append(well)
            columns["Metadata_Site"].append(int(site) if site is not None else 1)
            columns["channel"].append(channels[token])
            columns["channel_token"].append(token)
            columns["path"].append(prefix + filename)
            columns["_order"].append(channel_order[token])
    if not columns["path"]:
        raise IngestError(
            f"plate {plate}: no file under {root} matches images.pattern {pattern!r} "
            f"with a channel in {sorted(channels)}"
            + (f" ({skipped.describe(plate)})" if skipped.total else "")
        )
    frame = pd.DataFrame({"Metadata_Plate": plate, **columns})
    frame = frame.sort_values(["Metadata_Well", "Metadata_Site", "_order"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def assign_batches(frame: pd.DataFrame, wells_per_job: int = WELLS_PER_JOB) -> pd.DataFrame:
    """Group whole wells into jobs; add a ``batch`` column (``A01`` or ``A01-A04``)."""
    if wells_per_job < 1:
        raise IngestError(f"wells_per_job must be >= 1, got {wells_per_job}")
    wells = sorted(frame["Metadata_Well"].unique())
    names = {}
    for start in range(0, len(wells), wells_per_job):
        chunk = wells[start : start + wells_per_job]
        name = chunk[0] if len(chunk) == 1 else f"{chunk[0]}-{chunk[-1]}"
        names.update(dict.fromkeys(chunk, name))
    return frame.assign(batch=frame["Metadata_Well"].map(names))


def check_complete(
    frame: pd.DataFrame, channels: Sequence[str], *, require_all_sites: bool = True
) -> None:
    """Refuse duplicate keys, incomplete channel sets and (optionally) missing sites.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`scan_plate`.
    channels : Sequence[str]
        Channel names every site must have.
    require_all_sites : bool
        Every well must have every site seen anywhere on the plate (a field the microscope
        skipped is an error, not a silently smaller well).

    Raises
    ------
    IngestError
        Listing each offending plate/well/site/channel.
    """
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "channel"]
    problems = []
    duplicated = frame[frame.duplicated(keys, keep=False)]
    for key, group in duplicated.groupby(keys, sort=True):
        plate, well, site, channel = key
        files = ", ".join(group["path"])
        problems.append(
            f"plate {plate} well {well} site {site} channel {channel}: "
            f"{len(group)} files for one image ({files})"
        )
    all_sites = sorted(int(site) for site in frame["Metadata_Site"].unique())
    for (plate, well), group in frame.groupby(["Metadata_Plate", "Metadata_Well"], sort=True):
        present = set(zip(group["Metadata_Site"], group["channel"], strict=True))
        sites = all_sites if require_all_sites else sorted(group["Metadata_Site"].unique())
        for site in sites:
            missing = [channel for channel in channels if (site, channel) not in present]
            if len(missing) == len(channels):
                problems.append(
                    f"plate {plate} well {well} site {site}: site missing "
                    f"(other wells have sites {all_sites})"
                )
            elif missing:
                problems.append(
                    f"plate {plate} well {well} site {site}: channel(s) {missing} missing"
                )
    if problems:
        raise IngestError(_bullet("incomplete or ambiguous image set", problems))


def inspect_images(frame: pd.DataFrame) -> pd.DataFrame:
    """Read every image's header; add shape, dtype and size; refuse unreadable or mixed images.

    Truncated files are caught without decoding pixels: the strips/tiles the header
    points to must lie inside the file.

    Raises
    ------
    IngestError
        Naming each unreadable file, or each file whose shape or dtype differs from the rest
        of its channel.
    """
    shapes, problems = [], []
    for row in frame.itertuples(index=False):
        where = (
            f"plate {row.Metadata_Plate} well {row.Metadata_Well} site {row.Metadata_Site} "
            f"channel {row.channel} ({row.path})"
        )
        try:
            shapes.append(_tiff_header(row.path))
        except Exception as err:  # any reader failure is reported, with the file
            problems.append(f"{where}: unreadable: {err}")
            shapes.append((0, 0, "", 0))
    if problems:
        raise IngestError(_bullet("unreadable image file(s)", problems))
    frame = frame.assign(
        height=[s[0] for s in shapes],
        width=[s[1] for s in shapes],
        dtype=[s[2] for s in shapes],
        bytes=[s[3] for s in shapes],
    )
    for channel, group in frame.groupby("channel", sort=False):
        kinds = group.groupby(["height", "width", "dtype"]).size().sort_values(ascending=False)
        if len(kinds) < 2:
            continue
        height, width, dtype = kinds.index[0]
        odd = group[
            (group["height"] != height) | (group["width"] != width) | (group["dtype"] != dtype)
        ]
        for row in odd.itertuples(index=False):
            problems.append(
                f"plate {row.Metadata_Plate} well {row.Metadata_Well} site {row.Metadata_Site} "
                f"channel {channel} ({row.path}): {row.height}x{row.width} {row.dtype}, "
                f"but most images of this channel are {height}x{width} {dtype}"
            )
    if problems:
        raise IngestError(_bullet("mixed image shapes or bit depths within a channel", problems))
    return frame


def _tiff_header(path: str) -> tuple[int, int, str, int]:
    size = os.path.getsize(path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        # A z-stack or time series (several pages) would be read as its first plane, or fail
        # later in illumination naming the file only: refused here, with its site.
        pages = len(tif.pages)
        if pages > 1:
            raise IngestError(
                f"{pages} pages (a z-stack or time series?): expected one 2-D plane per file; "
                "project the stack (e.g. maximum intensity) or write one file per plane"
            )
        if len(page.shape) != 2:
            raise IngestError(f"expected one 2-D plane, found shape {page.shape}")
        end = max(
            (o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)), default=0
        )
        if end > size or 0 in page.databytecounts:
            raise IngestError(f"truncated: image data needs {end} bytes, file has {size}")
        return int(page.shape[0]), int(page.shape[1]), str(page.dtype), size


def _bullet(title: str, problems: Sequence[str], limit: int = 50) -> str:
    lines = [f"{title} ({len(problems)} problem(s)):"]
    lines += [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def build_manifest(
    plate: str,
    root: str | os.PathLike,
    pattern: str,
    channels: Mapping[str, str],
    *,
    extensions: Sequence[str] = (".tif", ".tiff"),
    wells_per_job: int = WELLS_PER_JOB,
    require_all_sites: bool = True,
) -> pd.DataFrame:
    """Scan, check and describe every image of one plate.

    Parameters are those of :func:`scan_plate`, :func:`assign_batches` and
    :func:`check_complete`. Image files skipped (:class:`SkippedFiles`) are logged as a
    warning.

    Returns
    -------
    pandas.DataFrame
        The manifest, columns :data:`MANIFEST_COLUMNS`, one row per image.
    """
    return _manifest(
        plate,
        root,
        pattern,
        channels,
        extensions=extensions,
        wells_per_job=wells_per_job,
        require_all_sites=require_all_sites,
    )[0]


def _manifest(
    plate: str,
    root: str | os.PathLike,
    pattern: str,
    channels: Mapping[str, str],
    *,
    extensions: Sequence[str],
    wells_per_job: int,
    require_all_sites: bool,
) -> tuple[pd.DataFrame, SkippedFiles]:
    skipped = SkippedFiles()
    frame = scan_plate(plate, root, pattern, channels, extensions=extensions, skipped=skipped)
    if skipped.total:
        log.warning("%s", skipped.describe(plate))
    check_complete(frame, list(channels.values()), require_all_sites=require_all_sites)
    frame = inspect_images(assign_batches(frame, wells_per_job))
    counts = frame.groupby("channel").size().to_dict()
    log.info(
        "plate %s: %d wells, %d sites, images per channel %s",
        plate,
        frame["Metadata_Well"].nunique(),
        frame[["Metadata_Well", "Metadata_Site"]].drop_duplicates().shape[0],
        counts,
    )
    return frame[MANIFEST_COLUMNS], skipped


def write_manifest(
    plate: str,
    root: str | os.PathLike,
    pattern: str,
    channels: Mapping[str, str],
    output: str | os.PathLike,
    *,
    extensions: Sequence[str] = (".tif", ".tiff"),
    wells_per_job: int = WELLS_PER_JOB,
    require_all_sites: bool = True,
) -> pd.DataFrame:
    """Build the manifest of one plate (see :func:`build_manifest`) and write it as Parquet,
    with the files it skipped in the file's metadata (:meth:`SkippedFiles.from_manifest`)."""
    manifest, skipped = _manifest(
        plate,
        root,
        pattern,
        channels,
        extensions=extensions,
        wells_per_job=wells_per_job,
        require_all_sites=require_all_sites,
    )
    write_parquet(output, manifest, metadata={SKIPPED_KEY: skipped.to_json()})
    return manifest


def image_signature(paths: Sequence[str]) -> str:
    """A digest of the image files of a plate: names, sizes and modification times.

    Rule ingest takes it as a parameter instead of listing every image as an input (17,280
    paths for a 384-well x 9-site x 5-channel plate, which Snakemake checks one by one in
    every job that depends on them); an added, removed, rewritten or touched image changes it,
    and Snakemake re-runs ingest and what follows. A file that cannot be read counts as absent
    (a collaborator's clone without raw images).
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\tabsent\n".encode())
    return f"{len(paths)} files, sha256 {digest.hexdigest()[:16]}"


def plate_inventory(
    plate: str,
    root: str | os.PathLike,
    pattern: str,
    channels: Mapping[str, str],
    *,
    manifest: str | os.PathLike,
    extensions: Sequence[str] = (".tif", ".tiff"),
    wells_per_job: int = WELLS_PER_JOB,
) -> pd.DataFrame:
    """The images and batches of a plate as known when Snakemake builds its DAG.

    From the image root when it is there (file names only); otherwise from the plate's
    manifest, so a collaborator who pulled results without the raw images can still plan
    the DAG. With neither, an empty table (the caller decides whether that is an error).
    """
    if Path(root).is_dir():
        frame = scan_plate(plate, root, pattern, channels, extensions=extensions)
        return assign_batches(frame, wells_per_job)
    columns = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "channel", "path", "batch"]
    if Path(manifest).exists():
        log.warning("plate %s: image root %s absent; using manifest %s", plate, root, manifest)
        return pd.read_parquet(manifest, columns=columns)
    return pd.DataFrame({column: pd.Series(dtype=object) for column in columns})

"""Image and table I/O shared by every level: atomic writes, named read errors."""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

_SITE_FILE = re.compile(r"^(?P<well>[A-Z]{1,2}\d{2,3})_s(?P<site>\d+)(?P<suffix>_[a-z]+)?\.tiff$")


def site_file(well: str, site: int, suffix: str = "") -> str:
    """File name of one site's image in a level directory, e.g. ``B03_s2_nuclei.tiff``."""
    return f"{well}_s{site}{suffix}.tiff"


def parse_site_file(name: str) -> tuple[str, int, str]:
    """Inverse of :func:`site_file`: ``(well, site, suffix)``."""
    match = _SITE_FILE.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a site file name like B03_s2.tiff")
    return match["well"], int(match["site"]), match["suffix"] or ""


class ImageReadError(RuntimeError):
    """An image file could not be read; the message names the file."""


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Elsewhere: set and restore at once (not thread-safe, hence the /proc route first).
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path that is renamed onto ``path`` on success.

    A killed or failing writer never leaves a partial file under the final name. A writer
    killed with SIGKILL does leave its temporary file (``.<name>.<random>.part``, hidden); the
    next successful write of ``path`` removes such leftovers that are older than its own, so a
    resumed run does not keep them (they would be counted, and pushed by DVC, with the level's
    directory; a crops store can be gigabytes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        # mkstemp makes the file 0600 whatever the umask, and writers that truncate it keep
        # that mode: give it what the umask gives any new file, so colleagues can read it.
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    started = tmp_path.stat().st_mtime_ns
    try:
        yield tmp_path
        os.replace(tmp_path, path)
        _remove_stale_parts(path, started)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _remove_stale_parts(path: Path, before_ns: int) -> None:
    """Remove temporary files of killed writers of ``path`` (see :func:`atomic_path`) made
    before ``before_ns``; a writer that started later is left alone."""
    stale = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.part$")
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        try:
            if stale.match(sibling.name) and sibling.stat().st_mtime_ns < before_ns:
                sibling.unlink()
        except FileNotFoundError:  # another writer finished meanwhile
            pass


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Return ``labels`` as an array, refusing anything but a 2-D non-negative integer image."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype; got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must not contain negative labels")
    return labels


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a single-plane image, raising :class:`ImageReadError` naming the file."""
    try:
        image = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for corrupt files
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    if image.ndim != 2:
        raise ImageReadError(f"image {path} has shape {image.shape}; expected a 2-D plane")
    return image


def write_tiff(path: str | os.PathLike, array: np.ndarray, metadata: dict | None = None) -> None:
    """Write ``array`` as a zlib-compressed TIFF, atomically.

    ``metadata`` is stored as tifffile's JSON shaped metadata (read back with
    ``TiffFile.shaped_metadata``).
    """
    with atomic_path(path) as tmp:
        # minisblack: a 3-plane stack is channels, not RGB.
        tifffile.imwrite(
            tmp, array, compression="zlib", photometric="minisblack", metadata=metadata or {}
        )


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label image as uint16 (uint32 when needed), zlib-compressed, atomically."""
    dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    write_tiff(path, labels.astype(dtype, copy=False))


def write_parquet(
    path: str | os.PathLike, frame, *, metadata: dict[str, str] | None = None
) -> None:
    """Write a DataFrame to Parquet atomically (no index), with ``metadata`` (key -> text)
    added to the file's key-value metadata."""
    with atomic_path(path) as tmp:
        if not metadata:
            frame.to_parquet(tmp, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        extra = {key.encode(): value.encode() for key, value in metadata.items()}
        pq.write_table(
            table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), tmp
        )


def write_csv(parquet: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy a Parquet table to gzipped CSV atomically (profile tables, for tools without
    Parquet)."""
    with atomic_path(path) as tmp:
        pd.read_parquet(parquet).to_csv(tmp, index=False, compression="gzip")

"""Single-cell crops: fixed-size, cell-centred, multi-channel image tiles per object.

:func:`crop_site` cuts one site's crops from in-memory arrays; :func:`crop_batch` does every
site of one job and writes an HDF5 store plus an index Parquet. Nothing here reads Snakemake
state.

Geometry
--------
A crop is ``size x size`` pixels. The object's centroid (mean pixel row / column, rounded half
up) lands on crop pixel ``(size // 2, size // 2)``: the exact centre for odd sizes, the pixel
just below and right of the geometric centre for even sizes. The crop's origin (its top-left
pixel, in image coordinates) is therefore ``round(centroid) - size // 2`` and may be negative;
pixels outside the image are zero. An object larger than ``size`` is cut at the crop edge.

Store layout (one HDF5 file per job)
------------------------------------
``crops``
    ``float32`` dataset ``(N, C, size, size)`` (axes ``NCYX``), chunked one crop per chunk,
    gzip-compressed with the shuffle filter (readable by any HDF5 library, no plug-in).
    Attributes: ``channels`` (channel names in axis-1 order, ending with ``"mask"`` when the
    object's own mask is included), ``size``, ``compartment``, ``plate``, ``mask_channel``,
    ``mask_neighbours``, ``axes`` (``"NCYX"``), ``format_version``.
``channels``
    The channel names again, as a string dataset, for readers that skip attributes.
``Metadata_Well``, ``Metadata_Site``, ``Metadata_ObjectNumber``
    One entry per crop (row ``i`` describes ``crops[i]``), so the store is usable alone.

The index Parquet holds one row per crop: ``Metadata_Plate, Metadata_Well, Metadata_Site,
Metadata_ObjectNumber`` (the label value, which joins the feature tables), the centroid
``Location_Center_X/Y`` (X is the column), the bounding box
``BoundingBoxMinimum_X/Y, BoundingBoxMaximum_X/Y`` (maxima exclusive, as in
:mod:`cellstrata.singlecell.features`), the crop origin ``Crop_Origin_X/Y`` and ``crop_index``,
the row
of ``crops`` holding the crop. A job without objects writes a zero-length ``crops`` dataset
and a zero-row index with the same columns.

Reading crops without cellstrata
--------------------------------
>>> import h5py, pandas as pd  # doctest: +SKIP
>>> index = pd.read_parquet("crops_index.parquet")  # doctest: +SKIP
>>> with h5py.File("crops.h5", "r") as store:  # doctest: +SKIP
...     crops = store["crops"]
...     channels = list(crops.attrs["channels"])
...     row = index.query("Metadata_Well == 'B03' and Metadata_ObjectNumber == 7").iloc[0]
...     tile = crops[row.crop_index]  # (C, size, size) float32, one chunk read
...     dna = tile[channels.index("DNA")]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cellstrata.io import atomic_path, check_labels, read_image, site_file, write_parquet

log = logging.getLogger(__name__)

__all__ = [
    "COMPARTMENTS",
    "FORMAT_VERSION",
    "INDEX_COLUMNS",
    "SITE_COLUMNS",
    "crop_batch",
    "crop_site",
]

#: Label images a job has, by the suffix of their file names.
COMPARTMENTS = ("nuclei", "cells", "cytoplasm")

#: Version of the store layout documented above; bump on incompatible changes.
FORMAT_VERSION = 1

#: Columns of :func:`crop_site`'s index, in order, with their dtypes.
SITE_COLUMNS: dict[str, str] = {
    "ObjectNumber": "int64",
    "Location_Center_X": "float64",
    "Location_Center_Y": "float64",
    "BoundingBoxMinimum_X": "int64",
    "BoundingBoxMinimum_Y": "int64",
    "BoundingBoxMaximum_X": "int64",
    "BoundingBoxMaximum_Y": "int64",
    "Crop_Origin_X": "int64",
    "Crop_Origin_Y": "int64",
}

#: Columns of :func:`crop_batch`'s index Parquet, in order, with their dtypes.
INDEX_COLUMNS: dict[str, str] = {
    "Metadata_Plate": "object",
    "Metadata_Well": "object",
    "Metadata_Site": "int64",
    "Metadata_ObjectNumber": "int64",
    **{name: dtype for name, dtype in SITE_COLUMNS.items() if name != "ObjectNumber"},
    "crop_index": "int64",
}

_MASK = "mask"


def _empty_frame(columns: Mapping[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def _object_geometry(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Label values, centroids (y, x) and bounding boxes of every object of ``labels``.

    Vectorised over all objects (one pass over the object pixels), and independent of how
    large or sparse the label values are.
    """
    flat = labels.ravel()
    pixels = np.flatnonzero(flat)
    ids, row = np.unique(flat[pixels], return_inverse=True)
    n = ids.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ids.astype(np.int64), np.zeros(0), np.zeros(0), np.zeros((0, 4), np.int64), empty
    y, x = np.divmod(pixels, labels.shape[1])
    counts = np.bincount(row, minlength=n)
    cy = np.bincount(row, y.astype(np.float64), minlength=n) / counts
    cx = np.bincount(row, x.astype(np.float64), minlength=n) / counts
    # Group pixels by object so min/max are per-segment reductions.
    order = np.argsort(row, kind="stable")
    starts = np.cumsum(counts) - counts
    ys, xs = y[order], x[order]
    bbox = np.stack(
        [
            np.minimum.reduceat(ys, starts),
            np.minimum.reduceat(xs, starts),
            np.maximum.reduceat(ys, starts) + 1,
            np.maximum.reduceat(xs, starts) + 1,
        ],
        axis=1,
    ).astype(np.int64)
    return ids.astype(np.int64), cy, cx, bbox, counts


def _round_half_up(values: np.ndarray) -> np.ndarray:
    # np.rint rounds half to even, which would shift x.5 centroids inconsistently.
    return np.floor(values + 0.5).astype(np.int64)


def crop_site(
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    size: int = 64,
    mask_channel: bool = True,
    mask_neighbours: bool = False,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cut a fixed-size, cell-centred, multi-channel crop around every object of one site.

    Parameters
    ----------
    images : Mapping[str, numpy.ndarray]
        ``{channel: image}``, 2-D real images with the shape of ``labels``; crops stack the
        channels in this order, as float32 (values are copied unchanged).
    labels : numpy.ndarray
        2-D non-negative integer label image; every positive label is one object.
    size : int, default 64
        Side of the square crop in pixels (odd sizes allowed).
    mask_channel : bool, default True
        Append the object's own mask as a last channel (1 inside the object, 0 elsewhere,
        including outside the image).
    mask_neighbours : bool, default False
        Set the pixels of every other object of ``labels`` to 0 in all image channels, so a
        crop shows one cell only. Background pixels are kept.

    Returns
    -------
    crops : numpy.ndarray
        ``(N, C, size, size)`` float32, one crop per object in ``ObjectNumber`` order; ``C``
        is ``len(images)`` plus one with ``mask_channel``. Zero-padded past the image border.
    index : pandas.DataFrame
        One row per crop with the columns of :data:`SITE_COLUMNS`: ``ObjectNumber`` (label
        value), centroid ``Location_Center_X/Y`` (X is the column), bounding box
        ``BoundingBoxMinimum_X/Y`` and ``BoundingBoxMaximum_X/Y`` (exclusive) and the crop's
        top-left pixel in image coordinates ``Crop_Origin_X/Y`` (negative near the top/left
        border). No object: zero rows with the same columns.

    Raises
    ------
    ValueError
        Non-positive ``size``, no channel at all, a non-2-D or non-integer or negative label
        image, an image whose shape differs from ``labels``, or an image channel named
        ``"mask"`` together with ``mask_channel``.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer; got {size!r}")
    size = int(size)
    labels = check_labels(labels, "labels")
    channels = list(images)
    if mask_channel and _MASK in channels:
        raise ValueError(f"an image channel is named {_MASK!r}, which the mask channel uses")
    if not channels and not mask_channel:
        raise ValueError("no channel to crop: no image and mask_channel=False")
    stack = np.empty((len(channels), *labels.shape), dtype=np.float32)
    for i, channel in enumerate(channels):
        image = np.asarray(images[channel])
        if image.shape != labels.shape:
            raise ValueError(
                f"image {channel!r} has shape {image.shape}; labels have {labels.shape}"
            )
        stack[i] = image

    ids, cy, cx, bbox, _ = _object_geometry(labels)
    n_channels = len(channels) + int(mask_channel)
    crops = np.zeros((ids.size, n_channels, size, size), dtype=np.float32)
    origin_y = _round_half_up(cy) - size // 2
    origin_x = _round_half_up(cx) - size // 2
    height, width = labels.shape
    for i, (label, oy, ox) in enumerate(
        zip(ids.tolist(), origin_y.tolist(), origin_x.tolist(), strict=True)
    ):
        # Part of the crop window inside the image, in image (y0:y1) and crop (oy-shifted)
        # coordinates; the rest stays zero.
        y0, y1 = max(oy, 0), min(oy + size, height)
        x0, x1 = max(ox, 0), min(ox + size, width)
        if y0 >= y1 or x0 >= x1:
            continue  # cannot happen for a centroid inside the image; kept for safety
        dst = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
        window = labels[y0:y1, x0:x1]
        tile = stack[:, y0:y1, x0:x1]
        if mask_neighbours:
            others = (window != 0) & (window != label)
            tile = np.where(others, np.float32(0), tile)
        crops[i, : len(channels), dst[0], dst[1]] = tile
        if mask_channel:
            crops[i, -1, dst[0], dst[1]] = window == label

    index = pd.DataFrame(
        {
            "ObjectNumber": ids,
            "Location_Center_X": cx,
            "Location_Center_Y": cy,
            "BoundingBoxMinimum_X": bbox[:, 1],
            "BoundingBoxMinimum_Y": bbox[:, 0],
            "BoundingBoxMaximum_X": bbox[:, 3],
            "BoundingBoxMaximum_Y": bbox[:, 2],
            "Crop_Origin_X": origin_x,
            "Crop_Origin_Y": origin_y,
        }
    )
    return crops, index.astype(SITE_COLUMNS)


def crop_batch(
    corrected_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    plate: str,
    store_path: str | os.PathLike,
    index_path: str | os.PathLike,
    *,
    size: int = 64,
    compartment: str = "cells",
    mask_channel: bool = True,
    mask_neighbours: bool = False,
) -> pd.DataFrame:
    """Crop every object of every site of one job into an HDF5 store and an index Parquet.

    Parameters
    ----------
    corrected_dir : path
        Corrected site stacks ``{well}_s{site}.tiff`` (see :mod:`cellstrata.images.illumination`).
    masks_dir : path
        Label images ``{well}_s{site}_{nuclei,cells,cytoplasm}.tiff``.
    plate : str
        Plate name written to ``Metadata_Plate`` and the store's ``plate`` attribute.
    store_path : path
        HDF5 store to write (layout in the module docstring), atomically.
    index_path : path
        Index Parquet to write (columns :data:`INDEX_COLUMNS`), atomically.
    size : int, default 64
        Crop side in pixels.
    compartment : {"cells", "nuclei", "cytoplasm"}
        Label image that defines the objects, their centroids, the mask channel and the
        neighbours. An object absent from it (e.g. an empty cytoplasm) gets no crop.
    mask_channel, mask_neighbours : bool
        As in :func:`crop_site`.

    Returns
    -------
    pandas.DataFrame
        The index written to ``index_path``; ``crop_index`` is the row of ``crops``.

    Raises
    ------
    ValueError
        Unknown compartment, sites whose channels differ, or :func:`crop_site` errors (the
        message names the site).
    """
    # Imported here so the array function above works where h5py is not installed.
    import h5py

    from cellstrata.images.illumination import iter_corrected_sites

    if compartment not in COMPARTMENTS:
        raise ValueError(f"unknown compartment {compartment!r}; choose one of {COMPARTMENTS}")
    parts: list[pd.DataFrame] = []
    n_total = 0
    with atomic_path(store_path) as tmp, h5py.File(tmp, "w") as store:
        dataset = None
        channels: list[str] | None = None
        for well, site, images in iter_corrected_sites(corrected_dir):
            if channels is None:
                channels = list(images)
                names = channels + ([_MASK] if mask_channel else [])
                dataset = _create_crops(store, names, size, compartment, plate)
                dataset.attrs["mask_channel"] = bool(mask_channel)
                dataset.attrs["mask_neighbours"] = bool(mask_neighbours)
            elif list(images) != channels:
                raise ValueError(
                    f"{corrected_dir} well {well} site {site}: channels {list(images)} differ "
                    f"from the job's first site {channels}"
                )
            labels = read_image(Path(masks_dir, site_file(well, site, f"_{compartment}")))
            try:
                crops, index = crop_site(
                    images,
                    labels,
                    size=size,
                    mask_channel=mask_channel,
                    mask_neighbours=mask_neighbours,
                )
            except ValueError as err:
                raise ValueError(f"plate {plate} well {well} site {site}: {err}") from err
            # Appending site by site keeps memory at one site's crops, not the job's.
            if len(crops):
                dataset.resize(n_total + len(crops), axis=0)
                dataset[n_total:] = crops
            index = index.rename(columns={"ObjectNumber": "Metadata_ObjectNumber"})
            index.insert(0, "Metadata_Plate", plate)
            index.insert(1, "Metadata_Well", well)
            index.insert(2, "Metadata_Site", np.int64(site))
            index["crop_index"] = np.arange(n_total, n_total + len(crops), dtype=np.int64)
            if len(index):  # empty frames in pd.concat would trigger dtype warnings
                parts.append(index)
            n_total += len(crops)
            log.info("plate %s well %s site %d: %d crops", plate, well, site, len(crops))
        table = pd.concat(parts, ignore_index=True) if parts else _empty_frame(INDEX_COLUMNS)
        table = table.astype(INDEX_COLUMNS)
        # Per-crop identifiers inside the store, so it can be used without the Parquet.
        store.create_dataset(
            "Metadata_Well",
            data=table["Metadata_Well"].to_numpy(dtype=object),
            dtype=h5py.string_dtype(),
        )
        store.create_dataset("Metadata_Site", data=table["Metadata_Site"].to_numpy())
        store.create_dataset(
            "Metadata_ObjectNumber", data=table["Metadata_ObjectNumber"].to_numpy()
        )
    write_parquet(index_path, table)
    log.info("plate %s: %d crops of %d x %d px into %s", plate, n_total, size, size, store_path)
    return table


def _create_crops(store, names: list[str], size: int, compartment: str, plate: str):
    """Create the empty, growable ``crops`` dataset and its attributes."""
    import h5py

    dataset = store.create_dataset(
        "crops",
        shape=(0, len(names), size, size),
        maxshape=(None, len(names), size, size),
        dtype=np.float32,
        # One crop per chunk: reading one cell decompresses nothing else.
        chunks=(1, len(names), size, size),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )
    dataset.attrs["channels"] = np.array(names, dtype=h5py.string_dtype())
    dataset.attrs["size"] = np.int64(size)
    dataset.attrs["compartment"] = compartment
    dataset.attrs["plate"] = plate
    dataset.attrs["axes"] = "NCYX"
    dataset.attrs["format_version"] = np.int64(FORMAT_VERSION)
    store.create_dataset("channels", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
    return dataset

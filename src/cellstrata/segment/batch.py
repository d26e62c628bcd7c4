"""One site, and one job's batch of corrected sites (the workflow's segment rule).

Label images are written as TIFFs ``{well}_s{site}_{nuclei,cells,cytoplasm}.tiff``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from skimage.segmentation import clear_border

from cellstrata.io import site_file, write_labels
from cellstrata.segment.cellpose import _CELLPOSE_TILE_PIXELS, _cellpose_segmenter
from cellstrata.segment.cells import _site_masks, cytoplasm, segment_cells
from cellstrata.segment.classical import segment_nuclei
from cellstrata.segment.params import SEGMENTATION_METHODS, _check_params, check_cellpose_options

log = logging.getLogger(__name__)


def _site_groups(
    sites: Iterable[tuple[str, int, dict[str, np.ndarray]]], max_pixels: int
) -> Iterator[list[tuple[str, int, dict[str, np.ndarray]]]]:
    """Consecutive sites of one image shape, up to ``max_pixels`` per group (at least one)."""
    group: list[tuple[str, int, dict[str, np.ndarray]]] = []
    shape, pixels = None, 0
    for item in sites:
        site_shape = next(iter(item[2].values())).shape
        size = int(np.prod(site_shape))
        if group and (site_shape != shape or pixels + size > max_pixels):
            yield group
            group, pixels = [], 0
        group.append(item)
        shape, pixels = site_shape, pixels + size
    if group:
        yield group


def segment_site(
    nuclei_image: np.ndarray,
    cell_image: np.ndarray | None = None,
    *,
    nuclei_params: Mapping[str, Any] | None = None,
    cell_params: Mapping[str, Any] | None = None,
    cytoplasm_params: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Segment one imaging site into nuclei, cells and cytoplasm.

    Parameters
    ----------
    nuclei_image : np.ndarray
        2-D nuclear stain image.
    cell_image : np.ndarray, optional
        2-D cytoplasm/actin image; ``None`` grows cells by expansion.
    nuclei_params : Mapping, optional
        Keyword arguments for :func:`segment_nuclei`.
    cell_params : Mapping, optional
        Keyword arguments for :func:`segment_cells`. When both these and ``nuclei_params``
        set ``remove_border``, the cells grow from every nucleus, those touching the border
        included, and the cells touching the border are then discarded (the border nuclei's
        among them): CellProfiler's ``IdentifySecondaryObjects``, which seeds with the
        nuclei its ``IdentifyPrimaryObjects`` discarded at the border. The nuclei are those
        of :func:`segment_nuclei` with ``remove_border``.
    cytoplasm_params : Mapping, optional
        Keyword arguments for :func:`cytoplasm` (``shrink_nuclei``).

    Returns
    -------
    dict of str to np.ndarray
        ``{"nuclei", "cells", "cytoplasm"}`` int32 label images sharing object IDs; with
        the cells' ``remove_border`` a nucleus may have no cell and no cytoplasm.

    Raises
    ------
    ValueError
        If a params mapping has a key the target function does not accept (named in the
        message).
    """
    nuclei_kw = _check_params(nuclei_params, segment_nuclei, "nuclei_params")
    cell_kw = _check_params(cell_params, segment_cells, "cell_params")
    cyto_kw = _check_params(cytoplasm_params, cytoplasm, "cytoplasm_params")
    if not (nuclei_kw.get("remove_border") and cell_kw.get("remove_border")):
        nuclei = segment_nuclei(nuclei_image, **nuclei_kw)
        return _site_masks(nuclei, segment_cells(nuclei, cell_image, **cell_kw), cyto_kw)
    # CellProfiler grows the cells from the border nuclei it discarded too, so that they
    # bound their neighbours' cells; theirs touch the border and are discarded with the rest.
    seeds = segment_nuclei(nuclei_image, **{**nuclei_kw, "remove_border": False})
    cells = segment_cells(seeds, cell_image, **cell_kw)
    kept = np.unique(clear_border(seeds))[1:]
    # The kept nuclei numbered 1..N in their order, as segment_nuclei numbers them.
    number = np.zeros(int(seeds.max(initial=0)) + 1, dtype=np.int32)
    number[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return _site_masks(number[seeds], number[cells], cyto_kw)


def check_site_params(
    nuclei_params: Mapping[str, Any] | None = None,
    cell_params: Mapping[str, Any] | None = None,
    cytoplasm_params: Mapping[str, Any] | None = None,
) -> None:
    """Raise ValueError naming any key :func:`segment_site` would not accept."""
    _check_params(nuclei_params, segment_nuclei, "nuclei_params")
    _check_params(cell_params, segment_cells, "cell_params")
    _check_params(cytoplasm_params, cytoplasm, "cytoplasm_params")


def segment_batch(
    corrected_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    nuclei_channel: str,
    cell_channel: str | None = None,
    nuclei: Mapping[str, Any] | None = None,
    cells: Mapping[str, Any] | None = None,
    method: str = "classical",
    cellpose: Mapping[str, Any] | None = None,
    cytoplasm: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Segment every corrected site of one job into label TIFFs.

    The keyword arguments are one segmentation version of the config
    (:func:`cellstrata.segment.versions.segmentation_versions`). With ``method="cellpose"`` the
    model(s) are loaded once for the job and run on several sites per call (as many as fill
    a batch of ``batch_size`` tiles).

    Parameters
    ----------
    corrected_dir : path
        Corrected site stacks ``{well}_s{site}.tiff``.
    out_dir : path
        Receives ``{well}_s{site}_{nuclei,cells,cytoplasm}.tiff`` (uint16/uint32, zlib).
    nuclei_channel, cell_channel : str
        Channel names of the nuclear stain and of the stain cells grow on (None: expansion).
    nuclei : Mapping, optional
        Keyword arguments of :func:`segment_nuclei` (classical method only).
    cells : Mapping, optional
        Keyword arguments of :func:`segment_cells`: how cells grow from the nuclei (not with
        a cellpose ``cell_model``).
    method : {"classical", "cellpose"}
        Segmentation method.
    cellpose : Mapping, optional
        Keyword arguments of :class:`CellposeOptions` (cellpose method only).
    cytoplasm : Mapping, optional
        Keyword arguments of :func:`cytoplasm` (``shrink_nuclei``), either method.

    Returns
    -------
    list of pathlib.Path
        Written label files.

    Raises
    ------
    ValueError
        For an unknown method, parameters that do not belong to the method, or a missing
        channel.
    CellposeError
        If cellpose is not installed or a model cannot be loaded.
    """
    from cellstrata.images.illumination import iter_corrected_sites

    if method == "classical":
        if cellpose:
            raise ValueError("cellpose options apply to method 'cellpose' only")
        check_site_params(nuclei, cells, cytoplasm)

        def segment(nuclear: list[np.ndarray], cell: list[np.ndarray | None]) -> list[dict]:
            return [
                segment_site(
                    n, c, nuclei_params=nuclei, cell_params=cells, cytoplasm_params=cytoplasm
                )
                for n, c in zip(nuclear, cell, strict=True)
            ]

        max_pixels = 0  # one site at a time
    elif method == "cellpose":
        if nuclei:
            raise ValueError(
                "nuclei parameters (segment_nuclei) apply to method 'classical' only; "
                "cellpose takes its nucleus options from the cellpose block"
            )
        options = check_cellpose_options(cellpose, cell_channel=cell_channel)
        if options.cell_model is not None and cells:
            raise ValueError("cells parameters (segment_cells) are not used with a cell_model")
        check_site_params(None, cells, cytoplasm)
        segment = _cellpose_segmenter(options, cells, cytoplasm)
        max_pixels = options.batch_size * _CELLPOSE_TILE_PIXELS
    else:
        raise ValueError(
            f"unknown segmentation method {method!r}; choose one of {list(SEGMENTATION_METHODS)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for group in _site_groups(iter_corrected_sites(corrected_dir), max_pixels):
        for well, site, images in group:
            for channel in (nuclei_channel, cell_channel):
                if channel is not None and channel not in images:
                    raise ValueError(
                        f"{corrected_dir} well {well} site {site}: no channel {channel!r} "
                        f"(has {list(images)})"
                    )
        all_masks = segment(
            [images[nuclei_channel] for _, _, images in group],
            [images[cell_channel] if cell_channel else None for _, _, images in group],
        )
        for (well, site, _), masks in zip(group, all_masks, strict=True):
            for compartment, labels in masks.items():
                target = out_dir / site_file(well, site, f"_{compartment}")
                write_labels(target, labels)
                written.append(target)
            log.info("well %s site %d: %d nuclei", well, site, int(masks["nuclei"].max()))
    return written


# --------------------------------------------------------------------------------------------

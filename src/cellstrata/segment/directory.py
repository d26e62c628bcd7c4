"""Nuclei of a directory of images (``cellstrata segment-nuclei IN_DIR OUT_DIR``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cellstrata.io import ImageReadError, write_labels
from cellstrata.segment.cellpose import _CellposeModel
from cellstrata.segment.classical import _check_image, segment_nuclei
from cellstrata.segment.params import SEGMENTATION_METHODS, _check_params, check_cellpose_options

log = logging.getLogger(__name__)

# a directory of nuclear images
# --------------------------------------------------------------------------------------------

# File types :func:`segment_directory` reads (lower-case suffixes).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def read_nuclear_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2-D plane from a TIFF or PNG: the first channel of RGB(A) images.

    Raises :class:`cellstrata.io.ImageReadError` naming the file if it cannot be read or
    holds more than one plane.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from skimage.io import imread

            image = np.asarray(imread(path))
        else:
            import tifffile

            image = tifffile.imread(path)
    except Exception as err:  # readers raise many types for corrupt files
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]  # leading singleton axes (a 1-page stack)
    if image.ndim == 3 and image.shape[-1] in (1, 2, 3, 4):
        image = image[..., 0]  # grey(+alpha), RGB or RGBA: the first channel
    if image.ndim != 2:
        raise ImageReadError(
            f"image {path} has shape {image.shape}; expected a 2-D plane or an RGB(A) image"
        )
    return image


def nuclei_segmenter(
    method: str = "classical", model: str | os.PathLike | None = None, **params: Any
) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``image -> nuclei labels`` for ``method``, parameters checked up front.

    Parameters
    ----------
    method : {"classical", "cellpose"}, default "classical"
        ``"classical"``: :func:`segment_nuclei` with ``params``. ``"cellpose"``: the cellpose
        model ``model``, loaded here once.
    model : path or str, optional
        Cellpose model: a built-in name or a model file (None: the installed cellpose's
        default nuclei model, see :class:`CellposeOptions`); ``"classical"`` takes none.
    **params
        Keyword arguments of :func:`segment_nuclei` (classical), or the nucleus options of
        :class:`CellposeOptions` (cellpose: ``diameter``, ``channels``, ``batch_size``,
        ``gpu``, ``flow_threshold``, ``cellprob_threshold``, ``min_size``).

    Raises
    ------
    ValueError
        For an unknown method or parameter, or a ``model`` with ``"classical"``.
    CellposeError
        If cellpose is not installed or the model cannot be loaded.
    """
    if method not in SEGMENTATION_METHODS:
        raise ValueError(
            f"unknown segmentation method {method!r}; choose one of {list(SEGMENTATION_METHODS)}"
        )
    if method == "cellpose":
        cell_keys = sorted(k for k in params if k.startswith("cell_"))
        if cell_keys:
            raise ValueError(f"cellpose options {cell_keys} are not used for nuclei alone")
        options = check_cellpose_options({**params, "model": model})
        cellpose_model = _CellposeModel(options.model, gpu=options.gpu)

        def segment_with_cellpose(image: np.ndarray) -> np.ndarray:
            image = _check_image(image, "image")
            (labels,) = cellpose_model.segment(
                [image[np.newaxis]], options, diameter=options.diameter, channels=options.channels
            )
            return labels

        return segment_with_cellpose
    if model is not None:
        raise ValueError(f"method {method!r} takes no model (got model={model!r})")
    kwargs = _check_params(params, segment_nuclei, "segment_nuclei parameter")

    def segment(image: np.ndarray) -> np.ndarray:
        return segment_nuclei(image, **kwargs)

    return segment


def segment_directory(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    method: str = "classical",
    model: str | os.PathLike | None = None,
    **params: Any,
) -> list[Path]:
    """Segment the nuclei of every image in ``in_dir`` into one label TIFF each.

    Backs ``cellstrata segment-nuclei IN_DIR OUT_DIR``. Reads every ``*.tif``, ``*.tiff`` and
    ``*.png`` directly in ``in_dir`` (sorted; hidden files skipped), the first channel of
    RGB(A) images, and writes a label image of the same name (``<stem>.tif`` for a PNG) to
    ``out_dir``: uint16, uint32 beyond 65535 objects, zlib-compressed, written atomically.

    Parameters
    ----------
    in_dir : path
        Directory of single-plane nuclear stain images.
    out_dir : path
        Created if missing; must not be ``in_dir`` (outputs would overwrite inputs).
    method : {"classical", "cellpose"}, default "classical"
        ``"classical"``: :func:`segment_nuclei`. ``"cellpose"``: a cellpose model (optional
        dependency), loaded once for all images.
    model : path or str, optional
        Cellpose model name or file (see :func:`nuclei_segmenter`); not used by
        ``"classical"``.
    **params
        Keyword arguments of :func:`segment_nuclei` (the same for every image), e.g.
        ``diameter=None`` to estimate the diameter per image; for cellpose, the nucleus
        options of :class:`CellposeOptions`.

    Returns
    -------
    list of pathlib.Path
        The written label files, in input order.

    Raises
    ------
    ValueError
        For an unknown method or parameter, a ``model`` with ``"classical"``, no images in
        ``in_dir``, ``out_dir == in_dir``, or two inputs mapping to the same output name.
    CellposeError
        If cellpose is not installed or the model cannot be loaded.
    FileNotFoundError
        If ``in_dir`` is not a directory.
    cellstrata.io.ImageReadError
        If an image cannot be read or is not a 2-D plane (the message names the file).
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input directory {in_dir} does not exist")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ValueError(f"out_dir must differ from in_dir ({in_dir}): outputs would overwrite")
    inputs = sorted(
        path
        for path in in_dir.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_SUFFIXES
    )
    if not inputs:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {in_dir}")
    targets: dict[str, Path] = {}
    for path in inputs:
        name = f"{path.stem}.tif" if path.suffix.lower() == ".png" else path.name
        if name in targets:
            raise ValueError(f"{targets[name].name} and {path.name} would both write {name}")
        targets[name] = path
    # After the inputs are checked: loading a cellpose model takes seconds.
    segment = nuclei_segmenter(method, model, **params)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in targets.items():
        labels = segment(read_nuclear_image(path))
        target = out_dir / name
        write_labels(target, labels)
        written.append(target)
        log.info("%s: %d nuclei", path.name, int(labels.max(initial=0)))
    return written

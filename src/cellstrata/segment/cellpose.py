"""The cellpose backend: models loaded once and run on batches of sites.

cellpose (and torch) are an optional dependency, imported only when a model is loaded;
its options and their checks are in :mod:`cellstrata.segment.params`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellstrata.segment.cells import _site_masks, reconcile_cells, segment_cells
from cellstrata.segment.classical import _normalize, _sequential
from cellstrata.segment.params import CellposeOptions, cellpose_version

log = logging.getLogger(__name__)

#: The nuclei model when ``model`` is None: cellpose 3's nucleus model; cellpose 4 has only
#: generalist models, of which cpsam is the one its documentation describes.
DEFAULT_CELLPOSE_MODEL = {3: "nuclei", 4: "cpsam"}
# Sites per cellpose call: enough to fill one network batch of `batch_size` tiles of this many
# pixels (cellpose 3's 224 px tiles); more would only hold more images and flows in memory.
_CELLPOSE_TILE_PIXELS = 224 * 224


def _not_per_plane_notice(record: logging.LogRecord) -> bool:
    """Log filter: drop cellpose 3's warning that a stack of sites is segmented plane by
    plane, which is what :class:`_CellposeModel` wants when it batches sites."""
    return "3D stack used" not in record.getMessage()


class CellposeError(RuntimeError):
    """cellpose is missing or a model cannot be loaded; the message names it and says why."""


class _CellposeModel:
    """One cellpose model, loaded once and then run on many images.

    Written against the documented ``cellpose.models.CellposeModel`` API of cellpose 3
    (``model_type`` for built-in names, ``channels`` in ``eval``) and cellpose 4 (built-in
    names through ``pretrained_model``, no ``channels``). Only cellpose 3 is tested here.
    """

    def __init__(self, model: str | None, *, gpu: bool) -> None:
        version = cellpose_version()
        try:
            from cellpose import models
        except ImportError as err:
            raise CellposeError(
                "method 'cellpose' needs the optional cellpose package, which cannot be "
                f"imported ({err}); install torch first, then cellpose: see the README, "
                "section Segmentation (cellpose method)"
            ) from err
        major = int(str(version).split(".")[0]) if version else 3
        if major not in DEFAULT_CELLPOSE_MODEL:
            raise CellposeError(f"cellpose {version} is not supported; use cellpose 3 or 4")
        name = DEFAULT_CELLPOSE_MODEL[major] if model is None else os.fspath(model)
        builtin = not Path(name).is_file()
        if builtin and name not in models.MODEL_NAMES:
            raise CellposeError(
                f"cellpose model {name!r}: no such model file, and not a built-in model of "
                f"the installed cellpose {version} ({', '.join(models.MODEL_NAMES)})"
            )
        # Cellpose 3 finds built-in weights by model_type; cellpose 4 by pretrained_model.
        source = {"model_type": name} if builtin and major == 3 else {"pretrained_model": name}
        try:
            self.model = models.CellposeModel(gpu=gpu, **source)
        except OSError as err:  # urllib's errors are OSErrors: no network, HTTP 404, ...
            if not builtin:
                raise CellposeError(f"cannot read cellpose model file {name}: {err}") from err
            raise CellposeError(
                f"cellpose model {name!r} (built-in, cellpose {version}): its weights are not "
                f"in {models.MODEL_DIR} and could not be fetched ({type(err).__name__}: {err}). "
                "Without internet access, put the weights file there (or point "
                "CELLPOSE_LOCAL_MODELS_PATH at a folder holding it), or pass the path of a "
                "local model file as the model"
            ) from err
        except Exception as err:  # torch raises many types for a wrong or corrupt file
            raise CellposeError(f"cannot load cellpose model {name!r}: {err}") from err
        self.name, self.version, self.major = name, version, major
        logging.getLogger("cellpose.models").addFilter(_not_per_plane_notice)
        if gpu and not self.model.gpu:
            log.warning("cellpose: gpu requested but torch finds no GPU; running on the CPU")
        log.info("cellpose %s: model %s on %s", version, name, self.model.device)

    def segment(
        self,
        images: Sequence[np.ndarray],
        options: CellposeOptions,
        *,
        diameter: float | None,
        channels: tuple[int, int],
    ) -> list[np.ndarray]:
        """Label images of ``images`` (each ``C x Y x X``, all of one shape), in one call.

        An image whose first channel (the stain to segment) is flat gets no objects.
        """
        shape = images[0].shape[1:]
        out = [np.zeros(shape, dtype=np.int32) for _ in images]
        todo = [i for i, image in enumerate(images) if np.ptp(image[0]) > 0]
        if not todo:
            return out
        # Scaled so that the maximum is 1: cellpose's percentile normalization treats a
        # range below 1e-3 as flat, and corrected images can be that dim on their own scale.
        stack = np.stack([np.stack([_normalize(c) for c in images[i]], axis=-1) for i in todo])
        if self.major == 3:
            # One array of sites (planes): cellpose 3 runs their tiles together in batches.
            if len(todo) == 1:
                x, axes = stack[0], {"channel_axis": 2}
            else:
                x, axes = stack, {"channel_axis": 3, "z_axis": 0}
            axes["channels"] = list(channels)
        else:
            # Cellpose 4 documents 3-channel images, and 4.0 refuses a 4-D array of 2-D
            # images: a list of sites, each padded with empty channels.
            pad = np.zeros((*stack.shape[:3], max(0, 3 - stack.shape[3])), dtype=np.float32)
            x, axes = list(np.concatenate([stack, pad], axis=3)), {"channel_axis": 2}
        kwargs: dict[str, Any] = {
            **axes,
            "batch_size": options.batch_size,
            # A dict, not True: cellpose then neither warns about norm3D for each call nor
            # changes its module-level defaults.
            "normalize": {"normalize": True, "norm3D": False},
            "diameter": diameter,
            "flow_threshold": options.flow_threshold,
            "cellprob_threshold": options.cellprob_threshold,
            "min_size": options.min_size,
        }
        masks = np.asarray(self.model.eval(x, **kwargs)[0]).reshape(len(todo), *shape)
        for i, labels in zip(todo, masks, strict=True):
            out[i] = _sequential(labels)
        return out


# Segments the sites of one group: nuclear images, cell images (or None) -> masks per site.
_SiteSegmenter = Callable[[list[np.ndarray], list[np.ndarray | None]], list[dict[str, np.ndarray]]]


def _cellpose_segmenter(
    options: CellposeOptions,
    cell_params: Mapping[str, Any] | None,
    cytoplasm_params: Mapping[str, Any] | None = None,
) -> _SiteSegmenter:
    """Load the model(s) of ``options`` once; return a function segmenting groups of sites."""
    cell_kw = dict(cell_params or {})
    nuclei_model = _CellposeModel(options.model, gpu=options.gpu)
    cell_model = _CellposeModel(options.cell_model, gpu=options.gpu) if options.cell_model else None
    defaults = (CellposeOptions.channels, CellposeOptions.cell_channels)
    if nuclei_model.major >= 4 and (options.channels, options.cell_channels) != defaults:
        log.warning(
            "cellpose %s takes no channels argument: channels and cell_channels are ignored",
            nuclei_model.version,
        )

    def segment(nuclear: list[np.ndarray], cell: list[np.ndarray | None]) -> list[dict]:
        nuclei = nuclei_model.segment(
            [image[np.newaxis] for image in nuclear],
            options,
            diameter=options.diameter,
            channels=options.channels,
        )
        if cell_model is None:
            cells = [segment_cells(n, c, **cell_kw) for n, c in zip(nuclei, cell, strict=True)]
        else:
            found = cell_model.segment(
                [np.stack([c, n]) for c, n in zip(cell, nuclear, strict=True)],
                options,
                diameter=options.cell_diameter,
                channels=options.cell_channels,
            )
            cells = [reconcile_cells(n, f) for n, f in zip(nuclei, found, strict=True)]
        return [_site_masks(n, c, cytoplasm_params) for n, c in zip(nuclei, cells, strict=True)]

    return segment


# --------------------------------------------------------------------------------------------

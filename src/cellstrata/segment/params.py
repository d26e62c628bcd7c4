"""Segmentation parameters and their checks, importable without scikit-image, torch or cellpose.

The methods and their defaults, the cellpose options (:class:`CellposeOptions`) and the key
checks that config validation, :func:`cellstrata.segment.batch.segment_batch` and the
directory CLI share.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: How cells grow from the nuclei over the cell stain (:func:`segment_cells`); the first is
#: the default.
CELL_METHODS = ("propagation", "watershed")
DEFAULT_CELL_METHOD = CELL_METHODS[0]
# Segmentation methods; "cellpose" needs the optional cellpose package.
SEGMENTATION_METHODS = ("classical", "cellpose")

#: (into ``~/.cellpose/models``, or ``$CELLPOSE_LOCAL_MODELS_PATH``); any other ``model`` is the
#: path of a model file. Used to tell names from paths without importing cellpose; at load
#: time the installed cellpose's own list decides.
CELLPOSE_BUILTIN_MODELS: dict[int, tuple[str, ...]] = {
    3: (
        "cyto3",
        "nuclei",
        "cyto2",
        "cyto",
        "cyto2_cp3",
        "tissuenet_cp3",
        "livecell_cp3",
        "yeast_PhC_cp3",
        "yeast_BF_cp3",
        "bact_phase_cp3",
        "bact_fluor_cp3",
        "deepbacs_cp3",
        "transformer_cp3",
        "neurips_cellpose_default",
        "neurips_cellpose_transformer",
        "neurips_grayscale_cyto2",
    ),
    4: ("cpsam", "cpsam_v2", "cpdino", "cpdino-vitb"),
}


@dataclass(frozen=True, kw_only=True)
class CellposeOptions:
    """Options of the cellpose method: the ``segmentation.cellpose`` block of the config.

    Nuclei come from ``model`` run on the nuclear stain. Cells are grown from them by
    :func:`segment_cells` (``segmentation.cells``) unless ``cell_model`` is set; then a
    second model segments the cell stain and :func:`reconcile_cells` gives each cell the ID
    of its nucleus.

    Parameters
    ----------
    model : str, optional
        Nuclei model: a built-in name (:data:`CELLPOSE_BUILTIN_MODELS`: cellpose 3 ``nuclei``,
        ``cyto3``, ...; cellpose 4 ``cpsam``) or the path of a model file. None:
        ``nuclei`` with cellpose 3, ``cpsam`` with cellpose 4.
    diameter : float, optional
        Typical nucleus diameter in px; images are rescaled by the model's training diameter
        over this. None: no rescaling beyond the model's own (cellpose 3: its mean training
        diameter; cellpose 4: none).
    channels : pair of int, default (0, 0)
        Cellpose 3 ``channels`` of the nuclei model, whose input is the nuclear stain alone:
        ``(0, 0)`` (grayscale). Cellpose 4 has no such argument and takes the input as is.
    batch_size : int, default 8
        Tiles (224 px) per network pass; sites of a job are run together so that small sites
        fill a batch (cellpose 4: 256 px tiles, one site at a time).
    gpu : bool, default False
        Run on the GPU (CUDA, or Apple MPS). Without one torch can use, cellpose runs on the
        CPU and a warning is logged.
    flow_threshold : float, default 0.4
        Maximum flow error of a mask (cellpose's quality check); 0 turns the check off.
    cellprob_threshold : float, default 0.0
        Cell-probability logit above which pixels can be in a mask; lower finds more and
        larger objects.
    min_size : int, default 15
        Masks smaller than this (px) are dropped.
    cell_model : str, optional
        Cell model (built-in name such as ``cyto3`` or ``cpsam``, or a file). None: cells are
        grown from the nuclei by :func:`segment_cells`.
    cell_diameter : float, optional
        Typical cell diameter in px for ``cell_model``; None as for ``diameter``.
    cell_channels : pair of int, default (1, 2)
        Cellpose 3 ``channels`` of the cell model, whose input is (cell stain, nuclear stain):
        ``(1, 2)`` segments channel 1 helped by the nuclei in channel 2; ``(1, 0)`` ignores
        the nuclear stain. Ignored by cellpose 4.
    """

    model: str | None = None
    diameter: float | None = None
    channels: tuple[int, int] = (0, 0)
    batch_size: int = 8
    gpu: bool = False
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
    min_size: int = 15
    cell_model: str | None = None
    cell_diameter: float | None = None
    cell_channels: tuple[int, int] = (1, 2)

    def __post_init__(self) -> None:
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        def integer(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        for key in ("model", "cell_model"):
            value = getattr(self, key)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                    raise ValueError(f"cellpose {key} must be a model name or path; got {value!r}")
                object.__setattr__(self, key, os.fspath(value))
        for key in ("diameter", "cell_diameter"):
            value = getattr(self, key)
            if value is not None and not (number(value) and value > 0):
                raise ValueError(f"cellpose {key} must be > 0 or null; got {value!r}")
        # The nuclei model sees one channel, the cell model two (cell stain, nuclear stain).
        for key, n_inputs in (("channels", 1), ("cell_channels", 2)):
            value = getattr(self, key)
            if not (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(integer(c) and 0 <= c <= n_inputs for c in value)
            ):
                raise ValueError(
                    f"cellpose {key} must be two channel numbers from 0 to {n_inputs}; "
                    f"got {value!r}"
                )
            object.__setattr__(self, key, tuple(int(c) for c in value))
        if not (integer(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"cellpose batch_size must be an integer >= 1; got {self.batch_size}")
        if not isinstance(self.gpu, bool):
            raise ValueError(f"cellpose gpu must be true or false; got {self.gpu!r}")
        if not (number(self.flow_threshold) and self.flow_threshold >= 0):
            raise ValueError(f"cellpose flow_threshold must be >= 0; got {self.flow_threshold!r}")
        if not number(self.cellprob_threshold):
            raise ValueError(
                f"cellpose cellprob_threshold must be a number; got {self.cellprob_threshold!r}"
            )
        if not (integer(self.min_size) and self.min_size >= 0):
            raise ValueError(f"cellpose min_size must be an integer >= 0; got {self.min_size!r}")

    def as_dict(self) -> dict[str, Any]:
        """The options as the config holds them (pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def cellpose_version() -> str | None:
    """Version of the installed cellpose (None if absent), read without importing it."""
    try:
        return importlib.metadata.version("cellpose")
    except importlib.metadata.PackageNotFoundError:
        return None


def _builtin_model(name: str) -> bool:
    """Whether ``name`` is a built-in model name of some cellpose version."""
    return any(name in names for names in CELLPOSE_BUILTIN_MODELS.values())


def check_cellpose_options(
    options: Mapping[str, Any] | CellposeOptions | None, *, cell_channel: str | None = None
) -> CellposeOptions:
    """Check the options of a cellpose segmentation without importing cellpose or torch.

    Parameters
    ----------
    options : Mapping or CellposeOptions, optional
        Keyword arguments of :class:`CellposeOptions`; None for the defaults.
    cell_channel : str, optional
        The version's cell stain; a ``cell_model`` needs one.

    Returns
    -------
    CellposeOptions
        The options with defaults filled in.

    Raises
    ------
    ValueError
        Naming an unknown key, a bad value, a model that is neither a built-in model name
        nor an existing file (relative paths are relative to the working directory), or a
        ``cell_model`` without a cell channel.
    """
    if not isinstance(options, CellposeOptions):
        options = CellposeOptions(**_check_params(options, CellposeOptions, "cellpose option"))
    for key in ("model", "cell_model"):
        name = getattr(options, key)
        if name is not None and not Path(name).is_file() and not _builtin_model(name):
            known = "; ".join(
                f"cellpose {major}: {', '.join(names[:3])}, ..."
                for major, names in CELLPOSE_BUILTIN_MODELS.items()
            )
            raise ValueError(
                f"cellpose {key} {name!r}: no such model file, and not a built-in model name "
                f"({known})"
            )
    if options.cell_model is not None and cell_channel is None:
        raise ValueError("cellpose cell_model needs a cell_channel: the stain it segments")
    return options


def cellpose_model_files(options: Mapping[str, Any] | None) -> list[str]:
    """The model files (not built-in names) that cellpose ``options`` load, as given."""
    options = options or {}
    return [
        str(options[key])
        for key in ("model", "cell_model")
        if options.get(key) is not None and Path(options[key]).is_file()
    ]


def _keyword_names(func: Callable[..., Any]) -> set[str]:
    return {
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _check_params(
    params: Mapping[str, Any] | None, func: Callable[..., Any], what: str
) -> dict[str, Any]:
    params = dict(params or {})
    allowed = _keyword_names(func)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {what} key(s): {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return params

"""Single-cell embeddings: a user's model applied to the crops of one job.

:func:`load_model` opens a local TorchScript or ONNX file, :func:`embed_crops` runs it over a
crop store of :mod:`cellstrata.singlecell.crops` batch by batch and returns one row per crop, and
:func:`embed_batch` writes that table for the ``embed`` rule. Nothing here reads Snakemake
state, and nothing is ever downloaded: a model is a file the user gives.

torch and onnxruntime are imported only when a model of their format is loaded, so a default
install (without either) still imports this module and validates configs.

Model contract
--------------
Input
    One ``float32`` array ``(N, C, H, W)``: ``N`` crops (at most ``batch_size``; the last
    batch of a job is smaller, so the batch axis must be dynamic), ``C`` the chosen channels in
    the order of ``channels`` (default: every image channel of the store, in store order,
    without the trailing mask channel), ``H = W = crops.size``. Values are the corrected
    intensities (illumination-corrected, about 0..1) unless ``normalize`` rescales them.
Output
    One array ``(N, D)``, row ``i`` the embedding of crop ``i``; ``D`` is the same for every
    batch. Anything else (another rank, another row count, a tuple) is refused with an error
    naming the model file.

TorchScript files are made with ``torch.jit.script(model).save(path)`` (or
``torch.jit.trace``); ONNX files need exactly one input (opset of the installed
onnxruntime), and their first output is the embedding.

Output table
------------
``Metadata_Plate, Metadata_Well, Metadata_Site, Metadata_ObjectNumber`` (the keys of the
feature tables of :mod:`cellstrata.singlecell.features`), then ``D`` float32 columns
``{prefix}0000``, ``{prefix}0001``, ... in crop order. A job without crops still learns ``D``:
the model is run once on one all-zero crop of the store's shape, so the zero-row table has
the same columns as every other job's.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellstrata.config import ConfigError
from cellstrata.io import write_parquet

log = logging.getLogger(__name__)

__all__ = [
    "CELL_KEYS",
    "DEVICES",
    "FORMATS",
    "NORMALIZATIONS",
    "EmbeddingError",
    "EmbeddingModel",
    "check_embedding_config",
    "embed_batch",
    "embed_crops",
    "embedding_columns",
    "load_model",
    "model_format",
    "normalize_crops",
]

#: The columns that identify a cell in every single-cell table.
CELL_KEYS = ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber")
_KEY_DTYPES = {
    "Metadata_Plate": "object",
    "Metadata_Well": "object",
    "Metadata_Site": "int64",
    "Metadata_ObjectNumber": "int64",
}
#: Model formats, and the file suffixes that imply them.
FORMATS = ("torchscript", "onnx")
SUFFIXES = {".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript", ".onnx": "onnx"}
DEVICES = ("cpu", "cuda", "auto")
NORMALIZATIONS = ("none", "minmax", "zscore")
DEFAULT_PREFIX = "Cells_Embedding_"
_MASK = "mask"


class EmbeddingError(ValueError):
    """A model or crop store that cannot give embeddings; the message names the file."""


def model_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The model format: ``format`` when given, else from the file suffix.

    Raises
    ------
    EmbeddingError
        An unknown format, or a suffix that names none (``.pt``, ``.pth``, ``.ts`` are
        TorchScript, ``.onnx`` is ONNX).
    """
    if format is not None:
        if format not in FORMATS:
            raise EmbeddingError(
                f"model {path}: unknown format {format!r}; choose one of {FORMATS}"
            )
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise EmbeddingError(
            f"model {path}: cannot tell the format from the suffix {suffix!r} (known: "
            f"{sorted(SUFFIXES)}); set format: torchscript or onnx"
        )
    return SUFFIXES[suffix]


class EmbeddingModel:
    """A loaded model: call it with a float32 ``(N, C, H, W)`` array, get ``(N, D)`` float32.

    Made by :func:`load_model`; ``path``, ``format`` and ``device`` (the one in use, never
    ``auto``) say what runs.
    """

    def __init__(self, path: Path, format: str, device: str, run: Any) -> None:
        self.path, self.format, self.device, self._run = path, format, device, run

    def __repr__(self) -> str:
        return f"EmbeddingModel({str(self.path)!r}, format={self.format!r}, device={self.device!r})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            out = self._run(batch)
        except Exception as err:
            raise EmbeddingError(
                f"model {self.path} failed on an input of shape {batch.shape} (N, C, H, W): {err}"
            ) from err
        if not isinstance(out, np.ndarray):
            raise EmbeddingError(
                f"model {self.path} returned {type(out).__name__}; an embedding model returns "
                "one (N, D) tensor"
            )
        if out.ndim != 2 or out.shape[0] != batch.shape[0] or out.shape[1] == 0:
            raise EmbeddingError(
                f"model {self.path} returned shape {out.shape} for an input of shape "
                f"{batch.shape}; an embedding model must return (N, D) = ({batch.shape[0]}, D) "
                "with D >= 1"
            )
        return out.astype(np.float32, copy=False)


def load_model(
    path: str | os.PathLike,
    format: str | None = None,
    device: str = "cpu",
    *,
    threads: int | None = None,
) -> EmbeddingModel:
    """Load a local TorchScript or ONNX model for :func:`embed_crops`.

    Parameters
    ----------
    path : path
        The model file; never a URL (nothing is downloaded).
    format : {"torchscript", "onnx"}, optional
        Default: from the suffix (:func:`model_format`).
    device : {"cpu", "cuda", "auto"}
        ``auto`` takes a GPU when torch (or onnxruntime's CUDA provider) finds one, else the
        CPU; ``cuda`` without a GPU is an error.
    threads : int, optional
        CPU threads of the model (torch's intra-op threads, onnxruntime's
        ``intra_op_num_threads``); default: the library's own choice.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a file.
    EmbeddingError
        The file is not a model of its format, the device is unknown or has no GPU, or the
        ONNX model does not take one float (N, C, H, W) input. Messages name the file.
    ImportError
        torch (TorchScript) or onnxruntime (ONNX) is not installed; names the extra.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding model {path} does not exist (models are never downloaded)"
        )
    format = model_format(path, format)
    if device not in DEVICES:
        raise EmbeddingError(f"model {path}: unknown device {device!r}; choose one of {DEVICES}")
    loader = _load_torchscript if format == "torchscript" else _load_onnx
    model = loader(path, device, threads)
    log.info("loaded %r", model)
    return model


def _import(module: str, path: Path, install: str) -> Any:
    """Import the runtime of a model's format, or say which install it needs."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"model {path} needs {module}: {install}") from err


def _load_torchscript(path: Path, device: str, threads: int | None) -> EmbeddingModel:
    # Exactly this pin: another torch spec can fetch GBs of CUDA packages.
    torch = _import("torch", path, "pip install torch==2.13.0")
    if threads:
        torch.set_num_threads(int(threads))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise EmbeddingError(f"model {path}: device cuda asked for, but torch finds no GPU")
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript in favour of torch.export; the file format is
            # the one the workflow documents, so the notice would only repeat in every log.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated")
            module = torch.jit.load(str(path), map_location=device)
    except Exception as err:
        raise EmbeddingError(
            f"model {path} is not a TorchScript file ({err}); save a model with "
            "torch.jit.script(model).save(path), or give an .onnx file"
        ) from err
    module.eval()

    def run(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            out = module(torch.from_numpy(batch).to(device))
        return out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else out

    return EmbeddingModel(path, "torchscript", device, run)


def _load_onnx(path: Path, device: str, threads: int | None) -> EmbeddingModel:
    onnxruntime = _import("onnxruntime", path, "pip install -e '.[embed]'")
    available = onnxruntime.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise EmbeddingError(
            f"model {path}: device cuda asked for, but onnxruntime has no CUDAExecutionProvider "
            f"(available: {available}; install onnxruntime-gpu)"
        )
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    providers = ["CUDAExecutionProvider"] if device == "cuda" else []
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=[*providers, "CPUExecutionProvider"]
        )
    except Exception as err:
        raise EmbeddingError(
            f"model {path} is not an ONNX model onnxruntime can run: {err}"
        ) from err
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise EmbeddingError(
            f"model {path} has {len(inputs)} inputs {[i.name for i in inputs]}; an embedding "
            "model takes one (N, C, H, W) float input"
        )
    if inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
        raise EmbeddingError(
            f"model {path}: input {inputs[0].name!r} is {inputs[0].type} of shape "
            f"{inputs[0].shape}; an embedding model takes one (N, C, H, W) float32 input"
        )
    name = inputs[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch})[0]

    return EmbeddingModel(path, "onnx", device, run)


def normalize_crops(batch: np.ndarray, method: str = "none") -> np.ndarray:
    """Scale each crop's channels on their own, as the model expects.

    ``none`` leaves the values; ``minmax`` maps each crop-channel's minimum to 0 and maximum
    to 1; ``zscore`` subtracts its mean and divides by its (population) standard deviation.
    Statistics cover all ``H x W`` pixels of the crop, zero padding included; a constant
    crop-channel becomes 0.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {method!r}; choose one of {NORMALIZATIONS}")
    batch = np.asarray(batch, dtype=np.float32)
    if method == "none" or batch.size == 0:
        return batch
    flat = batch.reshape(*batch.shape[:2], -1).astype(np.float64)
    if method == "minmax":
        low = flat.min(axis=-1, keepdims=True)
        span = flat.max(axis=-1, keepdims=True) - low
    else:
        low = flat.mean(axis=-1, keepdims=True)
        span = flat.std(axis=-1, keepdims=True)
    scaled = (flat - low) / np.where(span > 0, span, 1.0)
    return scaled.reshape(batch.shape).astype(np.float32)


def embedding_columns(dim: int, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """``{prefix}0000`` ... for ``dim`` embedding dimensions."""
    return [f"{prefix}{i:04d}" for i in range(dim)]


def _channel_rows(names: list[str], channels: Sequence[str] | None, store: Path) -> list[int]:
    """Positions in the store's channel axis of the channels fed to the model."""
    if channels is None:
        picked = [i for i, name in enumerate(names) if name != _MASK]
        if not picked:
            raise EmbeddingError(f"crop store {store} has no image channel ({names})")
        return picked
    missing = [c for c in channels if c not in names]
    if missing:
        raise EmbeddingError(
            f"crop store {store}: channel(s) {missing} not in its channels {names}"
        )
    return [names.index(c) for c in channels]


def embed_crops(
    store_path: str | os.PathLike,
    index_path: str | os.PathLike,
    model: EmbeddingModel | str | os.PathLike,
    *,
    batch_size: int = 256,
    channels: Sequence[str] | None = None,
    normalize: str = "none",
    prefix: str = DEFAULT_PREFIX,
    format: str | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Embed every crop of one crop store, ``batch_size`` crops at a time.

    Parameters
    ----------
    store_path, index_path : path
        A crop store and its index Parquet (:func:`cellstrata.singlecell.crops.crop_batch`).
    model : EmbeddingModel or path
        A loaded model, or a model file opened with ``format`` and ``device``.
    batch_size : int, default 256
        Crops read from the store and run through the model together; only one batch of
        crops is in memory at a time.
    channels : sequence of str, optional
        Store channels fed to the model, in this order; ``"mask"`` may be one of them.
        Default: every image channel, in store order, without the mask channel.
    normalize : {"none", "minmax", "zscore"}
        Per-crop, per-channel scaling (:func:`normalize_crops`).
    prefix : str, default ``"Cells_Embedding_"``
        Column prefix; pycytominer counts columns starting with ``Cells_``, ``Nuclei_`` or
        ``Cytoplasm_`` as features.

    Returns
    -------
    pandas.DataFrame
        The cell keys (:data:`CELL_KEYS`) and ``D`` float32 columns
        (:func:`embedding_columns`), one row per crop in crop order.

    Raises
    ------
    EmbeddingError
        Index and store disagree, a channel is missing, or the model fails or returns
        another shape than ``(N, D)`` (messages name the file).
    """
    import h5py

    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    batch_size = int(batch_size)
    store_path = Path(store_path)
    if not isinstance(model, EmbeddingModel):
        model = load_model(model, format, device)
    index = pd.read_parquet(index_path, columns=[*CELL_KEYS, "crop_index"])
    index = index.sort_values("crop_index", kind="stable", ignore_index=True)
    started = time.perf_counter()
    with h5py.File(store_path, "r") as store:
        crops = store["crops"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in crops.attrs["channels"]]
        rows = _channel_rows(names, channels, store_path)
        n = crops.shape[0]
        if not np.array_equal(index["crop_index"].to_numpy(), np.arange(n)):
            raise EmbeddingError(
                f"crop index {index_path} does not describe crop store {store_path}: "
                f"{len(index)} rows for {n} crops"
            )
        parts: list[np.ndarray] = []
        for start in range(0, n, batch_size):
            batch = normalize_crops(crops[start : start + batch_size][:, rows], normalize)
            out = model(batch)
            if parts and out.shape[1] != parts[0].shape[1]:
                raise EmbeddingError(
                    f"model {model.path} returned {out.shape[1]} dimensions for crops "
                    f"{start}.., {parts[0].shape[1]} before"
                )
            parts.append(out)
        if not parts:
            # No crop: one all-zero crop of the store's shape tells the embedding width.
            dummy = np.zeros((1, len(rows), *crops.shape[2:]), dtype=np.float32)
            parts.append(model(dummy)[:0])
    values = np.concatenate(parts)
    table = pd.concat(
        [
            index[list(CELL_KEYS)].astype(_KEY_DTYPES),
            pd.DataFrame(values, columns=embedding_columns(values.shape[1], prefix)),
        ],
        axis=1,
    )
    elapsed = time.perf_counter() - started
    log.info(
        "%s: %d crops x %d channels %s -> %d dimensions on %s in %.1f s",
        store_path,
        n,
        len(rows),
        [names[i] for i in rows],
        values.shape[1],
        model.device,
        elapsed,
    )
    return table


def embed_batch(
    store_path: str | os.PathLike,
    index_path: str | os.PathLike,
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    channels: Sequence[str] | None = None,
    normalize: str = "none",
    prefix: str = DEFAULT_PREFIX,
    threads: int | None = None,
) -> pd.DataFrame:
    """Embed one job's crops and write the table (:func:`embed_crops`) to ``output``."""
    model = load_model(model_path, format, device, threads=threads)
    table = embed_crops(
        store_path,
        index_path,
        model,
        batch_size=batch_size,
        channels=channels,
        normalize=normalize,
        prefix=prefix,
    )
    write_parquet(output, table)
    return table


def check_embedding_config(config: dict[str, Any]) -> None:
    """Refuse a ``features.embedding`` block the workflow cannot run.

    Embeddings need crops (``crops.enabled``) cut around every cell the features measure
    (compartment ``cells`` or ``nuclei``), a local model file whose format is known, and
    channels that the crops have.

    Raises
    ------
    ConfigError
        Naming the key.
    """
    block = config["features"].get("embedding") or {}
    model = block.get("model")
    if model is None:
        return
    crops = config["crops"]
    if not crops["enabled"]:
        raise ConfigError(
            "features.embedding needs crops.enabled: true (the model runs on the single-cell crops)"
        )
    if crops["compartment"] == "cytoplasm":
        raise ConfigError(
            "features.embedding needs crops.compartment cells or nuclei: with cytoplasm, a cell "
            "whose cytoplasm is empty has no crop, and its embedding could not join its features"
        )
    if not Path(model).is_file():
        raise ConfigError(
            f"features.embedding.model: {model} is not a file (models are never downloaded; "
            "give a local TorchScript .pt or ONNX .onnx file)"
        )
    try:
        model_format(model, block.get("format"))
    except EmbeddingError as err:
        raise ConfigError(f"features.embedding: {err}") from err
    channels = block.get("channels")
    if channels is not None:
        known = list(config["channels"].values()) + ([_MASK] if crops["mask_channel"] else [])
        unknown = [c for c in channels if c not in known]
        if unknown:
            raise ConfigError(
                f"features.embedding.channels: {unknown} are not crop channels {known}"
            )
        if len(set(channels)) != len(channels):
            raise ConfigError(f"features.embedding.channels: a channel is listed twice: {channels}")

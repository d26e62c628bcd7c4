"""Level 2: CellProfiler-style illumination functions and corrected images."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from skimage.transform import resize

from cellstrata.io import ImageReadError, parse_site_file, read_image, site_file, write_tiff

log = logging.getLogger(__name__)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale an integer image to [0, 1] by its dtype's maximum, as CellProfiler does."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    return image.astype(np.float32, copy=False)


def mean_image(images: Iterable[np.ndarray]) -> np.ndarray:
    """Pixel-wise mean of images, accumulated one at a time (memory of one image)."""
    total, count = None, 0
    for image in images:
        if total is None:
            total = np.zeros(image.shape, dtype=np.float64)
        elif image.shape != total.shape:
            raise ValueError(f"image {count} has shape {image.shape}, expected {total.shape}")
        total += image
        count += 1
    if total is None:
        raise ValueError("no images to average")
    return total / count


#: How a function is made and applied: ``regular`` (mean intensity, applied by division),
#: ``background`` (block minima, applied by subtraction), as CellProfiler's
#: CorrectIlluminationCalculate "Regular" and "Background" intensities, or ``none`` (a flat
#: function: images are only scaled to [0, 1], e.g. for a plate of one site, whose mean is
#: no estimate of the illumination).
MODES = ("regular", "background", "none")
#: Default rescaling per mode: a function that is subtracted must keep its intensity scale.
DEFAULT_RESCALE = {"regular": "robust", "background": "none", "none": "none"}


def block_minima(image: np.ndarray, block_size: int) -> np.ndarray:
    """Minimum positive pixel of each ``block_size`` square block (edge-padded), CellProfiler-style.

    Blocks with no positive pixel get 0.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    pad = [(0, -n % block_size) for n in image.shape]
    padded = np.pad(np.asarray(image, dtype=np.float64), pad, mode="edge")
    # Zero pixels are usually clipped or masked, not background: CellProfiler skips them too.
    padded[padded <= 0] = np.inf
    rows, cols = (n // block_size for n in padded.shape)
    minima = padded.reshape(rows, block_size, cols, block_size).min(axis=(1, 3))
    minima[np.isinf(minima)] = 0.0
    return minima


def background_image(images: Iterable[np.ndarray], block_size: int = 60) -> np.ndarray:
    """Background estimate: block minima averaged over images, bilinearly resized to full size.

    Parameters
    ----------
    images : iterable of numpy.ndarray
        Images of one channel on one plate (all the same shape).
    block_size : int, default 60
        Side of the blocks in pixels; large enough that every block holds some background.

    Returns
    -------
    numpy.ndarray
        float64 image of the input shape.
    """
    shapes = []

    def minima() -> Iterator[np.ndarray]:
        for count, image in enumerate(images):
            if not shapes:
                shapes.append(image.shape)
            elif image.shape != shapes[0]:
                raise ValueError(f"image {count} has shape {image.shape}, expected {shapes[0]}")
            yield block_minima(image, block_size)

    mean = mean_image(minima())
    return resize(mean, shapes[0], order=1, mode="edge", anti_aliasing=False)


def object_size_filter(object_size: float) -> float:
    """The smoothing filter size CellProfiler derives from an approximate object size
    (CorrectIlluminationCalculate, "Object size": size x 2.35 / 3.5)."""
    return object_size * 2.35 / 3.5


def median_smooth(image: np.ndarray, filter_size: float) -> np.ndarray:
    """CellProfiler's median smoothing of an illumination function.

    As CorrectIlluminationCalculate does it: sigma = size / 2.35, the median over a disk of
    radius ``int(sigma + 0.5)``, on the image quantised to 16 bits. The result has the
    image's scale.
    """
    from skimage.filters import median
    from skimage.morphology import disk

    radius = max(1, int(filter_size / 2.35 + 0.5))
    # Images scaled to [0, 1] as CellProfiler's are; anything brighter (float input) is
    # scaled into the 16 bits instead of overflowing them.
    scale = 65535 / max(1.0, float(np.max(image)))
    quantised = (np.clip(image, 0, None) * scale).astype(np.uint16)
    with warnings.catch_warnings():
        # skimage warns that a 16-bit rank filter is slow; the mean image is one per plate
        # and channel (about 2 s for 640 x 640 px, radius 29).
        warnings.filterwarnings("ignore", "Bad rank filter performance", UserWarning)
        smooth = median(quantised, disk(radius), behavior="rank")
    return smooth.astype(np.float64) / scale


def illumination_function(
    mean: np.ndarray,
    *,
    smoothing: str = "median",
    filter_size: float | None = None,
    object_size: float | None = None,
    rescale: str = "robust",
) -> np.ndarray:
    """Smooth a mean (or background) image into an illumination function and rescale it.

    Parameters
    ----------
    mean : numpy.ndarray
        Average of all images of one channel on one plate, or :func:`background_image`.
    smoothing : {"median", "gaussian"}
        Median filtering ignores cells better (:func:`median_smooth`, CellProfiler's); the
        Gaussian uses sigma = size / 2.35 (CellProfiler's convention).
    filter_size : float, optional
        Filter size in pixels (sigma = size / 2.35); default a fifth of the larger image side.
    object_size : float, optional
        CellProfiler's "Object size" setting instead of ``filter_size``
        (:func:`object_size_filter`).
    rescale : {"robust", "median", "none"}
        ``robust`` divides by the 2nd percentile of the positive values and clips at 1
        (CellProfiler's "Yes"), so dividing by the function never brightens a pixel;
        ``median`` divides by the median; ``none`` keeps the intensity scale (for a background
        function that is subtracted).

    Returns
    -------
    numpy.ndarray
        float32 function with the shape of ``mean``.
    """
    if filter_size is not None and object_size is not None:
        raise ValueError("give filter_size or object_size, not both")
    if object_size is not None:
        size = object_size_filter(object_size)
    else:
        size = filter_size or max(mean.shape) // 5
    if smoothing == "median":
        smooth = median_smooth(mean, size)
    elif smoothing == "gaussian":
        smooth = ndimage.gaussian_filter(mean, sigma=size / 2.35, mode="nearest")
    else:
        raise ValueError(f"unknown smoothing {smoothing!r}; use 'median' or 'gaussian'")
    if rescale == "robust":
        # CellProfiler's robust minimum: the value 2 % into the sorted positive pixels.
        positive = np.sort(smooth[smooth > 0], axis=None)
        if positive.size == 0:
            raise ValueError("illumination function has no positive value")
        floor = positive[int(positive.size * 0.02)]
        function = np.maximum(smooth, floor) / floor
    elif rescale == "median":
        function = smooth / np.median(smooth)
    elif rescale == "none":
        function = smooth
    else:
        raise ValueError(f"unknown rescale {rescale!r}; use 'robust', 'median' or 'none'")
    return function.astype(np.float32)


def compute_illumination(
    paths: Sequence[str | os.PathLike],
    *,
    mode: str = "regular",
    block_size: int = 60,
    smoothing: str = "median",
    filter_size: float | None = None,
    object_size: float | None = None,
    rescale: str | None = None,
) -> np.ndarray:
    """Illumination function of one plate × channel from its image files.

    Parameters
    ----------
    paths : sequence of path
        Every image of the channel on the plate.
    mode : {"regular", "background", "none"}, default "regular"
        ``regular`` smooths the mean image (apply by division); ``background`` smooths
        :func:`background_image` (apply by subtraction); ``none`` returns ones.
    block_size : int, default 60
        Block side for ``background`` mode.
    smoothing, filter_size, object_size : see :func:`illumination_function`
    rescale : {"robust", "median", "none"}, optional
        Default :data:`DEFAULT_RESCALE` of the mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown illumination mode {mode!r}; use one of {list(MODES)}")
    if mode == "none":
        return np.ones(read_image(paths[0]).shape, dtype=np.float32)
    log.info("%s illumination from %d images", mode, len(paths))
    images = (to_float(read_image(path)) for path in paths)
    source = mean_image(images) if mode == "regular" else background_image(images, block_size)
    return illumination_function(
        source,
        smoothing=smoothing,
        filter_size=filter_size,
        object_size=object_size,
        rescale=rescale or DEFAULT_RESCALE[mode],
    )


def write_illumination(
    manifest_path: str | os.PathLike,
    channel: str,
    output: str | os.PathLike,
    **options: Any,
) -> np.ndarray:
    """Compute one channel's illumination function from a plate manifest; write it as TIFF.

    ``options`` are the keyword arguments of :func:`compute_illumination` (the config's
    ``illumination`` block). The TIFF metadata records the mode, so the correction applies
    the function the way it was made (:func:`read_function`).
    """
    manifest = pd.read_parquet(manifest_path)
    paths = list(manifest.loc[manifest["channel"] == channel, "path"])
    if not paths:
        raise ValueError(f"{manifest_path}: no image of channel {channel}")
    function = compute_illumination(paths, **options)
    log.info("channel %s: %s", channel, describe_function(function))
    write_tiff(output, function, metadata={"mode": options.get("mode", "regular")})
    return function


def read_function(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read an illumination function TIFF and its mode (``regular`` when not recorded)."""
    with tifffile.TiffFile(path) as tif:
        mode = (tif.shaped_metadata or [{}])[0].get("mode", "regular")
        function = tif.asarray()
    if mode not in MODES:
        raise ImageReadError(f"{path}: unknown illumination mode {mode!r} in its metadata")
    return function, mode


def correct_image(image: np.ndarray, function: np.ndarray, mode: str = "regular") -> np.ndarray:
    """Apply an illumination function to a raw image (scaled to [0, 1]).

    ``regular`` divides by the function; ``background`` subtracts it and clips at 0;
    ``none`` only scales.
    """
    if image.shape != function.shape:
        raise ValueError(f"image shape {image.shape} != illumination shape {function.shape}")
    if mode == "none":
        return to_float(image)
    if mode == "regular":
        return to_float(image) / function
    if mode == "background":
        return np.maximum(to_float(image) - function, np.float32(0))
    raise ValueError(f"unknown illumination mode {mode!r}; use one of {list(MODES)}")


def correct_batch(
    manifest: pd.DataFrame,
    functions: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
) -> list[Path]:
    """Correct every site of a manifest slice; write one float32 CYX stack per site.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Manifest rows of the sites to correct (one batch).
    functions : Mapping[str, path]
        Channel name -> illumination function TIFF (applied as its recorded mode says).
    out_dir : path
        Directory receiving ``{well}_s{site}.tiff``; channel names are stored in the TIFF
        metadata (``channels``) in the order of ``functions``.

    Returns
    -------
    list of pathlib.Path
        Written files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    illum = {channel: read_function(path) for channel, path in functions.items()}
    written = []
    for (well, site), group in manifest.groupby(["Metadata_Well", "Metadata_Site"], sort=True):
        paths = dict(zip(group["channel"], group["path"], strict=True))
        planes = []
        for channel, (function, mode) in illum.items():
            try:
                planes.append(correct_image(read_image(paths[channel]), function, mode))
            except (ImageReadError, ValueError) as err:
                plate = group["Metadata_Plate"].iloc[0]
                raise ImageReadError(
                    f"plate {plate} well {well} site {site} channel {channel}: {err}"
                ) from err
        target = out_dir / site_file(well, int(site))
        write_tiff(target, np.stack(planes), metadata={"channels": list(illum)})
        written.append(target)
    log.info("corrected %d sites into %s", len(written), out_dir)
    return written


def correct_plate_batch(
    manifest_path: str | os.PathLike,
    batch: str,
    functions: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    qc_path: str | os.PathLike | None = None,
    exclude: Sequence[str] = (),
) -> list[Path]:
    """Correct the sites of one batch of a plate manifest (see :func:`correct_batch`).

    Sites the QC table flags for one of the ``exclude`` reasons (see
    :func:`cellstrata.images.qc.excluded_sites`) are left out, and every one is logged.
    """
    manifest = pd.read_parquet(manifest_path)
    rows = manifest[manifest["batch"] == batch]
    if rows.empty:
        raise ValueError(f"{manifest_path}: no site in batch {batch}")
    if exclude and qc_path is not None:
        from cellstrata.images.qc import excluded_sites

        dropped = excluded_sites(pd.read_parquet(qc_path), exclude=exclude)
        keys = list(
            zip(rows["Metadata_Plate"], rows["Metadata_Well"], rows["Metadata_Site"], strict=True)
        )
        skip = [key in dropped for key in keys]
        for plate, well, site in sorted({k for k, s in zip(keys, skip, strict=True) if s}):
            log.warning(
                "plate %s well %s site %d excluded by QC (%s)",
                plate,
                well,
                site,
                ", ".join(exclude),
            )
        rows = rows[[not s for s in skip]]
        if rows.empty:
            raise ValueError(
                f"batch {batch}: every site is excluded by QC ({', '.join(exclude)}); "
                "see the QC table, or relax qc.exclude"
            )
    return correct_batch(rows, functions, out_dir)


def read_stack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a corrected site stack back as {channel name: image}."""
    with tifffile.TiffFile(path) as tif:
        names = (tif.shaped_metadata or [{}])[0].get("channels")
        stack = tif.asarray()
    if names is None or len(names) != stack.shape[0]:
        raise ImageReadError(f"{path}: no channel names in the TIFF metadata")
    return dict(zip(names, stack, strict=True))


def iter_corrected_sites(
    corrected_dir: str | os.PathLike,
) -> Iterator[tuple[str, int, dict[str, np.ndarray]]]:
    """Yield ``(well, site, {channel: image})`` for every corrected stack of a job, in order."""
    stacks = sorted(Path(corrected_dir).glob("*.tiff"))
    if not stacks:
        raise ValueError(f"{corrected_dir}: no corrected site images")
    for stack in stacks:
        well, site, _ = parse_site_file(stack.name)
        yield well, site, read_stack(stack)


def describe_function(function: np.ndarray) -> str:
    """One-line summary of an illumination function for the log."""
    return json.dumps(
        {
            "min": float(function.min()),
            "max": float(function.max()),
            "max/min": float(function.max() / function.min()),
        }
    )

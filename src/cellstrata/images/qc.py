"""Per-site, per-channel image quality control in the style of CellProfiler's MeasureImageQuality.

Every raw image gets blur, saturation and intensity metrics (:func:`image_metrics`); each
plate/channel is then screened for outliers with robust z-scores (:func:`flag_outliers`), and
a site is flagged when any of its channels is. Downstream steps skip the sites flagged for the
reasons they care about (:func:`excluded_sites`).

Metric names follow CellProfiler's ``ImageQuality_<Feature>`` convention so values can be read
next to a CellProfiler pipeline's ``Image_ImageQuality_*`` columns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.fft

from cellstrata.io import read_image, write_parquet

logger = logging.getLogger(__name__)

PREFIX = "ImageQuality_"
SITE_KEYS = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
IMAGE_KEYS = [*SITE_KEYS, "channel"]
METRICS = [
    f"{PREFIX}{name}"
    for name in (
        "PowerLogLogSlope",
        "FocusScore",
        "PercentMaximal",
        "PercentMinimal",
        "PercentSaturated",
        "MeanIntensity",
        "MedianIntensity",
        "StdIntensity",
        "MADIntensity",
        "MinIntensity",
        "MaxIntensity",
    )
]

#: Outlier rules applied by :func:`flag_outliers`; override any subset with ``thresholds``.
#:
#: ``blur_z``
#:     ``Flag_Blur`` when the robust z-score of PowerLogLogSlope is below this (a blurred image
#:     has less high-frequency power, so a steeper, more negative slope than its plate/channel).
#: ``saturation_percent``
#:     ``Flag_Saturation`` when PercentMaximal (percent of pixels at the image's own maximum)
#:     exceeds this absolute percentage. Absolute rather than z-scored because in good images
#:     the value is ~0 for nearly every image, so its MAD is 0 and a z-score says nothing.
#: ``dim_z`` / ``bright_z``
#:     ``Flag_Dim`` / ``Flag_Bright`` when the robust z-score of MeanIntensity is below / above
#:     these. Deliberately loose: cell density and treatments move intensity legitimately; these
#:     catch empty or shutter-failure fields and debris, fibres or fluorescent precipitate.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "blur_z": -3.0,
    "saturation_percent": 1.0,
    "dim_z": -5.0,
    "bright_z": 5.0,
}
REASONS = ("Blur", "Saturation", "Dim", "Bright")

# 1.4826 * MAD estimates the standard deviation of normal data; when MAD is 0 (half or more of
# the values tie), 1.2533 * mean absolute deviation from the median is the usual fallback of the
# modified z-score (Iglewicz & Hoaglin 1993; IBM SPSS), which stays finite and still flags a
# value that deviates from an otherwise constant metric.
_MAD_SCALE = 1.4826
_MEANAD_SCALE = 1.253314


class QCError(ValueError):
    """An image cannot be measured or a QC table is malformed; the message says which."""


def power_log_log_slope(image: np.ndarray) -> float:
    """CellProfiler's ``PowerLogLogSlope`` blur metric of a 2-D image.

    Follows CellProfiler's ``MeasureImageQuality`` (``calculate_power_spectrum``, now
    ``cellprofiler_library``'s ``get_power_spectrum_measurement_values``) and
    ``centrosome.radial_power_spectrum.rps``; agrees with them to ~1e-14:

    1. power spectrum ``|FFT2(image - mean)|**2``;
    2. every frequency gets the radius label ``floor(sqrt(fy**2 + fx**2)) + 1``, where ``fy``
       and ``fx`` are the distances to the nearest corner of the unshifted spectrum as centrosome
       computes them, ``min(i, H - 1 - i)`` (sic, not ``min(i, H - i)``), kept for parity;
    3. the power is *summed* (not averaged) per label for labels ``2 .. floor(min(H, W) / 8) - 1``
       (label 1, the DC term, is skipped; high frequencies are cut to avoid edge effects);
    4. the slope of a least-squares line through ``(log(label), log(power sum))`` over labels
       with non-zero power.

    Because power is summed over annuli, white noise has a slope near +1 rather than 0; real
    images are negative and blur makes the slope more negative. centrosome first divides the
    image by ``median(|I - mean(I)|)``, which only shifts the intercept, so it is skipped here.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image of any real dtype.

    Returns
    -------
    float
        The slope; NaN for a constant image or one under 32 px on a side (fewer than two
        radii). CellProfiler writes 0 there, which would read as the sharpest image on the plate.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise QCError(f"PowerLogLogSlope needs a 2-D image, got shape {image.shape}")
    height, width = image.shape
    n_radii = int(np.floor(min(height, width) / 8.0))  # labels run 2 .. n_radii - 1
    if n_radii < 4 or np.ptp(image) == 0:
        return float("nan")
    pixels = image.astype(np.float64)
    # rfft2 is ~5x faster than fft2 on real input; the other half-plane follows from Hermitian
    # symmetry, P[i, j] = P[-i % H, -j % W].
    half = np.abs(scipy.fft.rfft2(pixels - pixels.mean())) ** 2
    # Only the low-frequency corners (distance < n_radii along each axis) reach a kept label.
    rows = np.r_[0:n_radii, height - n_radii : height]
    low_cols = np.arange(n_radii)
    high_cols = np.arange(width - n_radii, width)
    power = np.hstack(
        [half[np.ix_(rows, low_cols)], half[np.ix_(-rows % height, width - high_cols)]]
    )
    cols = np.r_[low_cols, high_cols]
    fy = np.minimum(rows, height - 1 - rows)
    fx = np.minimum(cols, width - 1 - cols)
    labels = np.floor(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)).astype(np.intp) + 1
    sums = np.bincount(labels.ravel(), weights=power.ravel(), minlength=n_radii)
    radius = np.arange(2, n_radii)
    sums = sums[2:n_radii]
    valid = sums > 0
    if valid.sum() < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(radius[valid]), np.log(sums[valid]), 1)
    return float(slope)


def image_metrics(image: np.ndarray) -> dict[str, float]:
    """Blur, saturation and intensity metrics of one image.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (raw, before illumination correction, as CellProfiler recommends).

    Returns
    -------
    dict[str, float]
        Keys :data:`METRICS`:

        - ``ImageQuality_PowerLogLogSlope``: see :func:`power_log_log_slope`.
        - ``ImageQuality_FocusScore``: CellProfiler's normalized variance,
          ``var(I) / mean(I)`` (0 when the mean is <= 0), computed on ``I`` scaled to 0..1 by
          the dtype maximum for integer images, as CellProfiler's loaders do, so values compare
          with CellProfiler's. Higher = sharper, but it also grows with cell density.
        - ``ImageQuality_PercentMaximal`` / ``PercentMinimal``: percent of pixels equal to the
          image's *own* maximum / minimum (CellProfiler's definition; catches saturation at a
          camera limit below the dtype maximum, e.g. 12-bit data in uint16).
        - ``ImageQuality_PercentSaturated``: percent of pixels at the *dtype* maximum (e.g.
          65535 for uint16); NaN for float images, which have no such limit.
        - ``ImageQuality_{Mean,Median,Std,MAD,Min,Max}Intensity``: in raw units; MAD is the
          unscaled median absolute deviation from the median; Std is the population std.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise QCError(f"image metrics need a non-empty 2-D image, got shape {image.shape}")
    stats = _intensity_stats(image)
    if np.issubdtype(image.dtype, np.integer):
        scale = float(np.iinfo(image.dtype).max)
        saturated = 100.0 * stats["n_dtype_max"] / image.size
    else:
        scale, saturated = 1.0, float("nan")
    mean, std = stats["mean"], stats["std"]
    focus = (std / scale) ** 2 / (mean / scale) if mean > 0 else 0.0
    return {
        f"{PREFIX}PowerLogLogSlope": power_log_log_slope(image),
        f"{PREFIX}FocusScore": float(focus),
        f"{PREFIX}PercentMaximal": 100.0 * stats["n_max"] / image.size,
        f"{PREFIX}PercentMinimal": 100.0 * stats["n_min"] / image.size,
        f"{PREFIX}PercentSaturated": float(saturated),
        f"{PREFIX}MeanIntensity": mean,
        f"{PREFIX}MedianIntensity": stats["median"],
        f"{PREFIX}StdIntensity": std,
        f"{PREFIX}MADIntensity": stats["mad"],
        f"{PREFIX}MinIntensity": stats["min"],
        f"{PREFIX}MaxIntensity": stats["max"],
    }


def _intensity_stats(image: np.ndarray) -> dict[str, float]:
    """Min, max, mean, std, median, MAD and counts at min / max / dtype max of ``image``."""
    if image.dtype in (np.uint8, np.uint16):
        # A histogram gives every statistic exactly in one pass; ~5x faster than sorting a
        # 2160x2160 float copy twice for median and MAD.
        hist = np.bincount(image.ravel(), minlength=np.iinfo(image.dtype).max + 1)
        values = np.flatnonzero(hist)
        counts = hist[values]
        values = values.astype(np.float64)
        mean = float(values @ counts / image.size)
        median = _sorted_median(values, counts)
        distance = np.abs(values - median)
        order = np.argsort(distance, kind="stable")
        return {
            "min": float(values[0]),
            "max": float(values[-1]),
            "mean": mean,
            "std": float(np.sqrt(((values - mean) ** 2) @ counts / image.size)),
            "median": median,
            "mad": _sorted_median(distance[order], counts[order]),
            "n_min": float(counts[0]),
            "n_max": float(counts[-1]),
            "n_dtype_max": float(hist[-1]),
        }
    pixels = image.astype(np.float64).ravel()
    minimum, maximum = float(pixels.min()), float(pixels.max())
    median = float(np.median(pixels))
    dtype_max = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else None
    return {
        "min": minimum,
        "max": maximum,
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
        "median": median,
        "mad": float(np.median(np.abs(pixels - median))),
        "n_min": float(np.count_nonzero(pixels == minimum)),
        "n_max": float(np.count_nonzero(pixels == maximum)),
        "n_dtype_max": float(np.count_nonzero(image == dtype_max)) if dtype_max else 0.0,
    }


def _sorted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """Median of ``values`` (ascending) repeated ``counts`` times, as :func:`numpy.median`."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    # Element k (0-based) of the expanded array is the first bin whose cumulative count > k.
    low = values[np.searchsorted(cumulative, (total - 1) // 2, side="right")]
    high = values[np.searchsorted(cumulative, total // 2, side="right")]
    return float((low + high) / 2)


def measure_plate(manifest: pd.DataFrame) -> pd.DataFrame:
    """Measure every image of a manifest.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The ingest manifest (at least ``Metadata_Plate, Metadata_Well, Metadata_Site, channel,
        path``).

    Returns
    -------
    pandas.DataFrame
        One row per manifest row: ``Metadata_Plate, Metadata_Well, Metadata_Site, channel,
        path`` and :data:`METRICS`.

    Raises
    ------
    cellstrata.io.ImageReadError
        For an unreadable image (the message names the file).
    QCError
        For an image that cannot be measured, naming plate/well/site/channel and file.
    """
    _require(manifest, [*IMAGE_KEYS, "path"], "manifest")
    records = []
    for row in manifest.itertuples(index=False):
        image = read_image(row.path)
        try:
            metrics = image_metrics(image)
        except QCError as err:
            raise QCError(
                f"plate {row.Metadata_Plate} well {row.Metadata_Well} site {row.Metadata_Site} "
                f"channel {row.channel} ({row.path}): {err}"
            ) from err
        records.append(
            {
                "Metadata_Plate": row.Metadata_Plate,
                "Metadata_Well": row.Metadata_Well,
                "Metadata_Site": int(row.Metadata_Site),
                "channel": row.channel,
                "path": str(row.path),
                **metrics,
            }
        )
    columns = [*IMAGE_KEYS, "path", *METRICS]
    return pd.DataFrame.from_records(records, columns=columns)


def robust_z(values: pd.Series) -> pd.Series:
    """Robust z-score ``(x - median) / (1.4826 * MAD)``, NaN-aware.

    When MAD is 0, the scale falls back to ``1.2533 * mean absolute deviation``; when that is 0
    too (every value equal), all z-scores are 0. NaN inputs stay NaN.
    """
    x = values.astype(np.float64)
    if x.isna().all():  # nothing to centre on; avoids empty-slice warnings
        return x
    median = x.median()
    deviation = (x - median).abs()
    scale = _MAD_SCALE * deviation.median()
    if not scale > 0:
        scale = _MEANAD_SCALE * deviation.mean()
    if not scale > 0:
        return (x - median) * 0.0
    return (x - median) / scale


def flag_outliers(
    metrics: pd.DataFrame, *, thresholds: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Flag outlier images per plate and channel, and sites with any flagged channel.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Output of :func:`measure_plate` (site keys, ``channel`` and the metrics used).
    thresholds : Mapping[str, float], optional
        Overrides of :data:`DEFAULT_THRESHOLDS` (keys ``blur_z``, ``saturation_percent``,
        ``dim_z``, ``bright_z``); use ``-inf``/``inf`` to switch a rule off.

    Returns
    -------
    pandas.DataFrame
        A copy of ``metrics`` plus ``Zscore_PowerLogLogSlope`` and ``Zscore_MeanIntensity``
        (robust z within plate and channel, see :func:`robust_z`), per-image ``Flag_Blur``,
        ``Flag_Saturation``, ``Flag_Dim``, ``Flag_Bright``, and the per-site ``Flag_Any``
        (True on every row of a site when any flag is set on any of its channels). A metric
        that is NaN (PowerLogLogSlope of a constant image) flags nothing by itself; a blank
        field is caught by ``Flag_Dim`` instead.
    """
    limits = _thresholds(thresholds)
    slope, mean = f"{PREFIX}PowerLogLogSlope", f"{PREFIX}MeanIntensity"
    _require(metrics, [*IMAGE_KEYS, slope, mean, f"{PREFIX}PercentMaximal"], "metrics table")
    out = metrics.copy()
    groups = out.groupby(["Metadata_Plate", "channel"], sort=False, dropna=False)
    out["Zscore_PowerLogLogSlope"] = groups[slope].transform(robust_z)
    out["Zscore_MeanIntensity"] = groups[mean].transform(robust_z)
    # Comparisons with NaN are False, so unmeasurable values are never flagged here.
    out["Flag_Blur"] = out["Zscore_PowerLogLogSlope"] < limits["blur_z"]
    out["Flag_Saturation"] = out[f"{PREFIX}PercentMaximal"] > limits["saturation_percent"]
    out["Flag_Dim"] = out["Zscore_MeanIntensity"] < limits["dim_z"]
    out["Flag_Bright"] = out["Zscore_MeanIntensity"] > limits["bright_z"]
    image_flag = out[[f"Flag_{reason}" for reason in REASONS]].any(axis=1)
    out["Flag_Any"] = image_flag.groupby(
        [out[key] for key in SITE_KEYS], sort=False, dropna=False
    ).transform("any")
    return out


def qc_plate(
    manifest_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    thresholds: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Measure and flag every image of a plate's manifest; write the table as Parquet.

    Parameters
    ----------
    manifest_path : str or os.PathLike
        The plate manifest Parquet written by :func:`cellstrata.images.ingest.write_manifest`.
    output : str or os.PathLike
        Parquet file to write (atomically).
    thresholds : Mapping[str, float], optional
        See :func:`flag_outliers`.

    Returns
    -------
    pandas.DataFrame
        The table written: :func:`measure_plate` output plus :func:`flag_outliers` columns.
    """
    manifest = pd.read_parquet(manifest_path)
    qc = flag_outliers(measure_plate(manifest), thresholds=thresholds)
    write_parquet(output, qc)
    n_sites = len(qc[SITE_KEYS].drop_duplicates())
    counts = {
        reason: len(qc.loc[qc[f"Flag_{reason}"], SITE_KEYS].drop_duplicates()) for reason in REASONS
    }
    flagged = qc.loc[qc["Flag_Any"], SITE_KEYS].drop_duplicates()
    logger.info(
        "QC %s: %d images, %d sites; sites flagged by reason %s; %d site(s) flagged in all",
        ", ".join(map(str, qc["Metadata_Plate"].unique())) or manifest_path,
        len(qc),
        n_sites,
        counts,
        len(flagged),
    )
    for row in qc.loc[qc["Flag_Any"]].itertuples(index=False):
        reasons = [reason for reason in REASONS if getattr(row, f"Flag_{reason}")]
        if reasons:
            logger.info(
                "QC flag: plate %s well %s site %s channel %s: %s",
                row.Metadata_Plate,
                row.Metadata_Well,
                row.Metadata_Site,
                row.channel,
                "+".join(reasons),
            )
    return qc


def excluded_sites(qc: pd.DataFrame, *, exclude: Sequence[str]) -> set[tuple[str, str, int]]:
    """Sites flagged for any of the given reasons.

    Parameters
    ----------
    qc : pandas.DataFrame
        Output of :func:`flag_outliers` / :func:`qc_plate`.
    exclude : Sequence[str]
        Reasons, e.g. ``["Blur", "Saturation"]`` (names in :data:`REASONS`, or ``"Any"``).

    Returns
    -------
    set[tuple[str, str, int]]
        ``(plate, well, site)`` of every site with at least one channel flagged for a listed
        reason; empty when ``exclude`` is empty.
    """
    if isinstance(exclude, str):  # a bare "Blur" would otherwise iterate as letters
        exclude = [exclude]
    unknown = [reason for reason in exclude if reason not in (*REASONS, "Any")]
    if unknown:
        raise QCError(f"unknown QC reason(s) {unknown}; choose from {[*REASONS, 'Any']}")
    columns = [f"Flag_{reason}" for reason in exclude]
    if not columns:
        return set()
    _require(qc, [*SITE_KEYS, *columns], "QC table")
    hit = qc[columns].any(axis=1)
    return {
        (str(plate), str(well), int(site))
        for plate, well, site in qc.loc[hit, SITE_KEYS].itertuples(index=False)
    }


def _thresholds(overrides: Mapping[str, float] | None) -> dict[str, float]:
    limits = dict(DEFAULT_THRESHOLDS)
    unknown = sorted(set(overrides or {}) - set(limits))
    if unknown:
        raise QCError(f"unknown QC threshold(s) {unknown}; known: {sorted(limits)}")
    limits.update({key: float(value) for key, value in (overrides or {}).items()})
    return limits


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise QCError(f"{what} lacks column(s) {missing}")

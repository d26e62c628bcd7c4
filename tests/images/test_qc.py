"""Image QC: CellProfiler-style blur/saturation/intensity metrics and robust outlier flags."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi
from scipy.stats import norm

from cellstrata.images.qc import (
    METRICS,
    QCError,
    excluded_sites,
    flag_outliers,
    image_metrics,
    measure_plate,
    power_log_log_slope,
    qc_plate,
    robust_z,
)
from cellstrata.io import ImageReadError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SORT = ["Metadata_Well", "Metadata_Site", "channel"]
FLAGS = ["Flag_Blur", "Flag_Saturation", "Flag_Dim", "Flag_Bright", "Flag_Any"]


def blobs(seed: int, shape: tuple[int, int] = (256, 256), n: int = 80) -> np.ndarray:
    """A uint16 field of nucleus-sized bright spots on a noisy background, in focus."""
    rng = np.random.default_rng(seed)
    field = np.zeros(shape)
    n = int(rng.integers(0.8 * n, 1.2 * n + 1))  # cell density varies from field to field
    field[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 1.0
    # Spots of sigma 3 px (about 10 px across); scaled by the peak of one spot so that the
    # brightness of every image is comparable.
    field = ndi.gaussian_filter(field, 3.0) * (2 * np.pi * 3.0**2)
    field = 200 + 5000 * field + rng.normal(0, 20, shape)
    return np.clip(field, 0, 65535).astype(np.uint16)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(ndi.gaussian_filter(image.astype(float), sigma)).astype(image.dtype)


def brute_force_slope(image: np.ndarray) -> float:
    """The CellProfiler definition written the obvious way: full FFT, every radius binned."""
    height, width = image.shape
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy = np.minimum(np.arange(height), np.arange(height)[::-1])
    fx = np.minimum(np.arange(width), np.arange(width)[::-1])
    labels = np.floor(np.hypot(fy[:, None], fx[None, :])).astype(int) + 1
    sums = np.bincount(labels.ravel(), weights=power.ravel())
    radius = np.arange(2, int(min(height, width) / 8))
    return float(np.polyfit(np.log(radius), np.log(sums[radius]), 1)[0])


# --- PowerLogLogSlope -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (101, 77), (96, 130), (33, 40)])
def test_slope_equals_full_spectrum_definition(shape):
    # The implementation rebuilds half the spectrum from an rfft; odd sizes test that path.
    image = ndi.gaussian_filter(np.random.default_rng(3).random(shape), 1.0)
    assert power_log_log_slope(image) == pytest.approx(brute_force_slope(image), abs=1e-9)


def test_slope_of_white_noise_is_about_plus_one():
    # Power is summed over annuli of circumference ~ 2*pi*r, so a flat spectrum gives ~ +1.
    noise = np.random.default_rng(0).random((256, 256))
    assert 0.8 < power_log_log_slope(noise) < 1.2


def test_blurred_image_has_clearly_lower_slope():
    sharp = blobs(1)
    slopes = [power_log_log_slope(sharp)] + [
        power_log_log_slope(blur(sharp, sigma)) for sigma in (1, 2, 4)
    ]
    print(f"\nslope sharp -> sigma 1, 2, 4: {np.round(slopes, 3).tolist()}")
    assert all(np.isfinite(slopes))
    assert slopes[0] < 0
    assert np.all(np.diff(slopes) < 0), slopes  # more blur, steeper fall-off
    assert slopes[2] < slopes[0] - 0.5


def test_slope_is_invariant_to_gain_and_offset():
    image = blobs(2).astype(float)
    assert power_log_log_slope(3.5 * image + 1000) == pytest.approx(
        power_log_log_slope(image), abs=1e-9
    )


def test_slope_nan_for_constant_or_tiny_images_and_error_for_3d():
    assert math.isnan(power_log_log_slope(np.full((64, 64), 7, np.uint16)))
    assert math.isnan(power_log_log_slope(np.random.default_rng(0).random((20, 20))))
    with pytest.raises(QCError, match="2-D"):
        power_log_log_slope(np.zeros((4, 64, 64)))


# --- image_metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int32, np.float32], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("shape", [(40, 50), (41, 49)])  # even and odd pixel counts
def test_intensity_statistics_equal_numpy(dtype, shape):
    values = np.random.default_rng(5).integers(0, 200, shape).astype(dtype)
    values[0, :3] = 250  # three pixels at the maximum
    pixels = values.astype(float)
    median = np.median(pixels)
    metrics = image_metrics(values)
    assert list(metrics) == METRICS
    expected = {
        "MeanIntensity": pixels.mean(),
        "MedianIntensity": median,
        "StdIntensity": pixels.std(),
        "MADIntensity": np.median(np.abs(pixels - median)),
        "MinIntensity": pixels.min(),
        "MaxIntensity": 250.0,
        "PercentMaximal": 100 * 3 / pixels.size,
        "PercentMinimal": 100 * np.count_nonzero(pixels == pixels.min()) / pixels.size,
    }
    for name, value in expected.items():
        assert metrics[f"ImageQuality_{name}"] == pytest.approx(value, rel=1e-12), name


def test_known_array_statistics():
    image = np.array([[0, 10, 10], [20, 30, 100]], dtype=np.uint16)
    metrics = image_metrics(np.tile(image, (12, 12)))  # big enough for a slope
    assert metrics["ImageQuality_MeanIntensity"] == pytest.approx(170 / 6)
    assert metrics["ImageQuality_MedianIntensity"] == 15.0
    assert metrics["ImageQuality_MADIntensity"] == 10.0  # |x - 15| = 15, 5, 5, 5, 15, 85
    assert metrics["ImageQuality_PercentMaximal"] == pytest.approx(100 / 6)
    assert metrics["ImageQuality_PercentSaturated"] == 0.0
    # CellProfiler's FocusScore on the image scaled to 0..1: var / mean.
    scaled = np.tile(image, (12, 12)) / 65535
    assert metrics["ImageQuality_FocusScore"] == pytest.approx(scaled.var() / scaled.mean())


def test_saturated_image_percent_maximal():
    image = blobs(4)
    flat = image.reshape(-1)
    rng = np.random.default_rng(0)
    flat[rng.choice(flat.size, flat.size // 10, replace=False)] = 65535
    metrics = image_metrics(image)
    assert metrics["ImageQuality_PercentMaximal"] == pytest.approx(10.0, abs=0.01)
    assert metrics["ImageQuality_PercentSaturated"] == pytest.approx(10.0, abs=0.01)
    # A 12-bit camera clipping at 4095 inside uint16: the own-maximum percentage sees it, the
    # dtype-maximum one does not.
    clipped = np.minimum(blobs(4), 4095)
    metrics = image_metrics(clipped)
    assert metrics["ImageQuality_PercentMaximal"] > 1.0
    assert metrics["ImageQuality_PercentSaturated"] == 0.0
    assert math.isnan(image_metrics(clipped.astype(np.float32))["ImageQuality_PercentSaturated"])


def test_image_metrics_refuses_empty_images():
    with pytest.raises(QCError, match="non-empty 2-D"):
        image_metrics(np.zeros((0, 5), np.uint8))


# --- robust z and flags ----------------------------------------------------------------------


def test_robust_z_values_and_fallbacks():
    z = robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0]))
    np.testing.assert_allclose(z, (np.array([1, 2, 3, 4, 100]) - 3) / 1.4826)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warnings on MAD = 0
        assert robust_z(pd.Series([5.0] * 6)).tolist() == [0.0] * 6
        z = robust_z(pd.Series([5.0] * 19 + [6.0]))  # MAD 0, mean-AD fallback
        assert np.isfinite(z).all() and z.iloc[-1] > 10 and (z.iloc[:-1] == 0).all()
        z = robust_z(pd.Series([np.nan, 1.0, 2.0, 3.0]))
        assert np.isnan(z.iloc[0]) and np.isfinite(z.iloc[1:]).all()
        assert robust_z(pd.Series([np.nan, np.nan])).isna().all()


def plate_table(n_sites: int = 21, seed: int = 0) -> pd.DataFrame:
    """Metrics of n_sites sites x 2 channels on one plate, all unremarkable.

    Values are normal quantiles in shuffled order, so no chance draw lands past |z| = 3.
    """
    rng = np.random.default_rng(seed)
    normal = norm.ppf((np.arange(n_sites) + 0.5) / n_sites)
    rows = []
    for channel, level in (("DNA", 1000.0), ("AGP", 3000.0)):
        slopes = -2.0 + 0.05 * rng.permutation(normal)
        means = level * (1 + 0.05 * rng.permutation(normal))
        for site in range(n_sites):
            rows.append(
                {
                    "Metadata_Plate": "P1",
                    "Metadata_Well": f"A{site // 3 + 1:02d}",
                    "Metadata_Site": site % 3 + 1,
                    "channel": channel,
                    "ImageQuality_PowerLogLogSlope": slopes[site],
                    "ImageQuality_PercentMaximal": 1e-4,
                    "ImageQuality_MeanIntensity": means[site],
                }
            )
    return pd.DataFrame(rows).sort_values(SORT).reset_index(drop=True)


def test_flag_outliers_finds_the_blurred_and_the_saturated_site():
    table = plate_table()
    blurred = (table["Metadata_Well"] == "A02") & (table["Metadata_Site"] == 2)
    saturated = (table["Metadata_Well"] == "A05") & (table["Metadata_Site"] == 1)
    table.loc[blurred & (table["channel"] == "DNA"), "ImageQuality_PowerLogLogSlope"] = -2.6
    table.loc[saturated & (table["channel"] == "AGP"), "ImageQuality_PercentMaximal"] = 4.0
    before = table.copy()
    out = flag_outliers(table)
    pd.testing.assert_frame_equal(table, before)  # input untouched
    assert set(FLAGS) <= set(out.columns)
    assert (
        out.loc[out["Flag_Blur"]].index.tolist()
        == table.index[blurred & (table["channel"] == "DNA")].tolist()
    )
    assert (
        out.loc[out["Flag_Saturation"]].index.tolist()
        == table.index[saturated & (table["channel"] == "AGP")].tolist()
    )
    # Flag_Any is per site: both channels of both sites, nothing else.
    assert out["Flag_Any"].tolist() == (blurred | saturated).tolist()
    assert not out[["Flag_Dim", "Flag_Bright"]].any().any()
    assert out.loc[blurred & (out["channel"] == "DNA"), "Zscore_PowerLogLogSlope"].item() < -3


def test_flag_outliers_scores_each_plate_and_channel_separately():
    # AGP is 3x brighter than DNA everywhere; pooled it would flag every AGP image Bright.
    table = pd.concat([plate_table(), plate_table(seed=1).assign(Metadata_Plate="P2")])
    table.loc[table["Metadata_Plate"] == "P2", "ImageQuality_MeanIntensity"] *= 4
    out = flag_outliers(table)
    assert not out[FLAGS].any().any()


def test_constant_metric_and_nan_slope_do_not_crash_or_flag():
    table = plate_table().assign(ImageQuality_PowerLogLogSlope=-1.5)
    table.loc[0, "ImageQuality_MeanIntensity"] = np.nan
    table.loc[1, "ImageQuality_PowerLogLogSlope"] = np.nan  # a constant image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = flag_outliers(table)
    assert (out["Zscore_PowerLogLogSlope"].drop(index=1) == 0).all()
    assert not out[FLAGS].any().any()
    # ... but a value that deviates from an otherwise constant metric is flagged.
    table.loc[4, "ImageQuality_PowerLogLogSlope"] = -1.6
    out = flag_outliers(table)
    assert out.index[out["Flag_Blur"]].tolist() == [4]


def test_dim_and_bright_images_are_flagged():
    table = plate_table()
    table.loc[0, "ImageQuality_MeanIntensity"] = 10.0  # empty field
    table.loc[3, "ImageQuality_MeanIntensity"] = 20000.0  # fluorescent debris
    out = flag_outliers(table)
    assert out.index[out["Flag_Dim"]].tolist() == [0]
    assert out.index[out["Flag_Bright"]].tolist() == [3]


def test_thresholds_override_and_validation():
    table = plate_table()
    table.loc[0, "ImageQuality_PowerLogLogSlope"] = -2.6
    assert flag_outliers(table, thresholds={"blur_z": -math.inf})["Flag_Blur"].sum() == 0
    strict = flag_outliers(table, thresholds={"saturation_percent": 0.0})
    assert strict["Flag_Saturation"].all()
    with pytest.raises(QCError, match="blur_zz"):
        flag_outliers(table, thresholds={"blur_zz": -2})
    with pytest.raises(QCError, match="PercentMaximal"):
        flag_outliers(table.drop(columns="ImageQuality_PercentMaximal"))


def test_excluded_sites_by_reason():
    table = plate_table()
    table.loc[0, "ImageQuality_PowerLogLogSlope"] = -2.6  # A01 site 1
    table.loc[9, "ImageQuality_PercentMaximal"] = 5.0  # A02 site 2
    table.loc[13, "ImageQuality_MeanIntensity"] = 1e5  # A03 site 1
    qc = flag_outliers(table)
    assert excluded_sites(qc, exclude=["Blur"]) == {("P1", "A01", 1)}
    assert excluded_sites(qc, exclude="Saturation") == {("P1", "A02", 2)}
    assert excluded_sites(qc, exclude=["Blur", "Saturation"]) == {
        ("P1", "A01", 1),
        ("P1", "A02", 2),
    }
    assert len(excluded_sites(qc, exclude=["Any"])) == 3
    assert excluded_sites(qc, exclude=[]) == set()
    site = next(iter(excluded_sites(qc, exclude=["Blur"])))[2]
    assert type(site) is int
    with pytest.raises(QCError, match="Blurry"):
        excluded_sites(qc, exclude=["Blurry"])


# --- plate level -----------------------------------------------------------------------------


def write_manifest(tmp_path: Path, images: dict[tuple[str, int, str], np.ndarray]) -> Path:
    rows = []
    for (well, site, channel), image in images.items():
        path = tmp_path / "images" / f"P1_{well}_s{site}_{channel}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, image)
        rows.append(
            {
                "Metadata_Plate": "P1",
                "Metadata_Well": well,
                "Metadata_Site": site,
                "channel": channel,
                "channel_token": channel[0],
                "batch": well,
                "path": str(path),
                "height": image.shape[0],
                "width": image.shape[1],
                "dtype": str(image.dtype),
                "bytes": path.stat().st_size,
            }
        )
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def test_qc_plate_end_to_end(tmp_path, caplog):
    images = {}
    for index, well in enumerate(["A01", "A02", "B01", "B02"]):
        for site in (1, 2, 3):
            seed = 10 * index + site
            images[(well, site, "DNA")] = blobs(seed, (128, 128), 60)
            images[(well, site, "Mito")] = blobs(seed + 1000, (128, 128), 60)
    images[("B01", 2, "Mito")] = blur(images[("B01", 2, "Mito")], 3)
    manifest = write_manifest(tmp_path, images)
    output = tmp_path / "qc" / "P1_qc.parquet"
    with caplog.at_level(logging.INFO, logger="cellstrata.images.qc"):
        returned = qc_plate(manifest, output)
    qc = pd.read_parquet(output)
    assert len(qc) == len(images) == 24
    assert set(FLAGS) <= set(qc.columns) and set(METRICS) <= set(qc.columns)
    pd.testing.assert_frame_equal(qc, returned)
    assert not list(output.parent.glob("*.part"))  # atomic write left no temporary
    flagged = qc.loc[qc["Flag_Blur"], ["Metadata_Well", "Metadata_Site", "channel"]]
    assert flagged.values.tolist() == [["B01", 2, "Mito"]]
    assert excluded_sites(qc, exclude=["Blur", "Saturation"]) == {("P1", "B01", 2)}
    assert qc.loc[qc["Flag_Any"], "Metadata_Well"].eq("B01").all()
    assert qc["Flag_Any"].sum() == 2  # both channels of the flagged site
    assert "'Blur': 1" in caplog.text and "B01 site 2 channel Mito: Blur" in caplog.text


def test_measure_plate_errors_name_the_file(tmp_path):
    manifest = pd.read_parquet(write_manifest(tmp_path, {("A01", 1, "DNA"): blobs(0, (64, 64))}))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    with pytest.raises(ImageReadError, match="broken.tif"):
        measure_plate(manifest.assign(path=str(broken)))
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 64, 64), np.uint16), photometric="minisblack")
    with pytest.raises(ImageReadError, match="stack.tif"):
        measure_plate(manifest.assign(path=str(stack)))
    empty = tmp_path / "empty.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a 0-pixel TIFF is nonconformant
        tifffile.imwrite(empty, np.zeros((0, 8), np.uint16))
    with pytest.raises(QCError, match=r"plate P1 well A01 site 1 channel DNA \(.*empty.tif\)"):
        measure_plate(manifest.assign(path=str(empty)))
    with pytest.raises(QCError, match="path"):
        measure_plate(manifest.drop(columns="path"))
    nothing = measure_plate(manifest.iloc[:0])
    assert nothing.empty and set(METRICS) <= set(nothing.columns)


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.realdata
def test_bbbc013_power_log_log_slope():
    folder = SHARED_DATA / "bbbc013_translocation"
    files = sorted(folder.glob("Channel2-*.tif"))
    if not files:
        pytest.skip(f"real data not available: no {folder}/Channel2-*.tif")
    images = [tifffile.imread(path) for path in files]
    assert all(image.shape == (640, 640) and image.dtype == np.uint8 for image in images)
    slopes = np.array([power_log_log_slope(image) for image in images])
    print(
        f"\nBBBC013 DNA PowerLogLogSlope over {len(files)} images: "
        f"{slopes.min():.3f} .. {slopes.max():.3f} (median {np.median(slopes):.3f})"
    )
    assert np.isfinite(slopes).all() and (slopes < 0).all()
    # An in-focus plate: nothing flagged; the same plate with one image blurred (sigma 2 px):
    # exactly that one is flagged.
    rows = [
        {
            "Metadata_Plate": "BBBC013",
            "Metadata_Well": path.stem.split("-", 2)[2].replace("-", ""),
            "Metadata_Site": 1,
            "channel": "DNA",
            **image_metrics(image),
        }
        for path, image in zip(files, images, strict=True)
    ]
    table = pd.DataFrame(rows)
    assert not flag_outliers(table)[["Flag_Blur", "Flag_Saturation"]].any().any()
    table.loc[5, METRICS] = pd.Series(image_metrics(blur(images[5], 2)))
    out = flag_outliers(table)
    assert out.index[out["Flag_Blur"]].tolist() == [5]

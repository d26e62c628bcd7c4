"""Correlation (MeasureColocalization, objects mode): names, agreement with references, edges.

cp_measure 0.3.0 is the reference for Correlation, Overlap, K and Manders. It computes RWC
ranks and Costes' thresholds per object, while CellProfiler ranks over all of the
compartment's pixels and searches Costes' thresholds on the whole image: those two are checked
against a transcription of CellProfiler 4.2's code (``_cellprofiler_rwc_costes``), and against
cp_measure where the scopes coincide (one object covering the whole image).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from conftest import cellprofiler_header
from skimage.segmentation import expand_labels

from cellstrata.measure import colocalization
from cellstrata.measure.colocalization import (
    GROUP,
    channel_pairs,
    colocalization_columns,
    dense_ranks,
)
from cellstrata.measure.objects import CompartmentObjects, Site
from cellstrata.singlecell.features import feature_columns, measure_site

CHANNELS = ["CorrAGP", "CorrBrightfield", "CorrDNA", "CorrER", "CorrMito", "CorrRNA"]


def _touching_site(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Nine touching, irregular objects and three structured channels on the 16-bit grid."""
    rng = np.random.default_rng(seed)
    shape = (90, 100)
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[rng.integers(8, shape[0] - 8, 9), rng.integers(8, shape[1] - 8, 9)] = np.arange(1, 10)
    labels = expand_labels(seeds, 18)
    rough = scipy.ndimage.gaussian_filter(rng.random(shape), 3)
    labels[rough < np.quantile(rough, 0.1)] = 0
    labels = np.unique(labels, return_inverse=True)[1].reshape(shape)  # contiguous 1..N
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    spots = sum(
        np.exp(-((yy - rng.uniform(0, 90)) ** 2 + (xx - rng.uniform(0, 100)) ** 2) / 30)
        for _ in range(12)
    )
    common = scipy.ndimage.gaussian_filter(rng.random(shape), 2)
    images = {}
    for i, name in enumerate(["A", "B", "C"]):
        own = scipy.ndimage.gaussian_filter(rng.random(shape), 1 + i)
        image = 0.2 * common + 0.4 * spots / spots.max() * (i != 2) + 0.4 * own
        images[name] = np.round(image / image.max() * 65535) / 65535
    return labels, images


def _measure(labels: np.ndarray, images: dict[str, np.ndarray], **options) -> dict:
    ids = np.arange(1, int(labels.max()) + 1)
    objects = CompartmentObjects("Cells", labels, ids)
    return colocalization.measure_colocalization(
        objects, Site(images, {"Cells": objects.labels}), **options
    )


def _pearson_sign(x: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scipy.stats.pearsonr(x, y)[0]


def _cellprofiler_bisection(fi: np.ndarray, si: np.ndarray, scale_max: int) -> tuple:
    """CellProfiler 4.2 ``MeasureColocalization.bisection_costes``, transcribed."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # degenerate inputs, as in CellProfiler
        return _bisection_transcribed(fi, si, scale_max)


def _bisection_transcribed(fi: np.ndarray, si: np.ndarray, scale_max: int) -> tuple:
    non_zero = (fi > 0) | (si > 0)
    xvar = np.var(fi[non_zero], axis=0, ddof=1)
    yvar = np.var(si[non_zero], axis=0, ddof=1)
    xmean = np.mean(fi[non_zero], axis=0)
    ymean = np.mean(si[non_zero], axis=0)
    zvar = np.var(fi[non_zero] + si[non_zero], axis=0, ddof=1)
    covar = 0.5 * (zvar - (xvar + yvar))
    num = (yvar - xvar) + np.sqrt((yvar - xvar) * (yvar - xvar) + 4 * (covar * covar))
    a = num / (2 * covar)
    b = ymean - a * xmean
    # The search: 6/5 == 1.2; r stands for "too few pixels" (-1), Pearson's r or NaN.
    left, right, valid, last, mid = 1, scale_max, 1, 0, (scale_max - 1) // 1.2 + 1
    while mid != last:
        thr = mid / scale_max
        below = (fi < thr) | (si < a * thr + b)
        r = _pearson_sign(fi[below], si[below]) if np.count_nonzero(below) > 2 else -1.0
        if r < 0:
            left = mid - 1
        elif r >= 0:
            right, valid = mid + 1, mid
        last = mid
        mid = (right - left) // (1.2 if right - left > 6 else 2) + left
    return (valid - 1) / scale_max, a * ((valid - 1) / scale_max) + b


def _cellprofiler_rwc_costes(first, second, labels, thr=15, scale=65535) -> list[np.ndarray]:
    """RWC1, RWC2, C1, C2 of ``run_image_pair_objects`` (CellProfiler 4.2), transcribed."""
    mask = labels > 0
    fp, sp, lab = first[mask], second[mask], labels[mask]
    index = np.arange(1, labels.max() + 1)
    tff = (thr / 100) * np.asarray(scipy.ndimage.maximum(fp, lab, index))
    tss = (thr / 100) * np.asarray(scipy.ndimage.maximum(sp, lab, index))
    comb = (fp >= tff[lab - 1]) & (sp >= tss[lab - 1])
    f_up, s_up = fp >= tff[lab - 1], sp >= tss[lab - 1]
    tot_f = np.asarray(scipy.ndimage.sum(fp[f_up], lab[f_up], index))
    tot_s = np.asarray(scipy.ndimage.sum(sp[s_up], lab[s_up], index))
    ranks = []
    for pixels in (fp, sp):
        [order] = np.lexsort(([lab], [pixels]))
        steps = np.hstack([[False], pixels[order[:-1]] != pixels[order[1:]]])
        rank = np.zeros(pixels.shape, dtype=int)
        rank[order] = np.cumsum(steps)
        ranks.append(rank)
    top = max(ranks[0].max(), ranks[1].max()) + 1
    weight = (top - abs(ranks[0] - ranks[1])) * 1.0 / top
    rwc1 = np.asarray(scipy.ndimage.sum(fp[comb] * weight[comb], lab[comb], index)) / tot_f
    rwc2 = np.asarray(scipy.ndimage.sum(sp[comb] * weight[comb], lab[comb], index)) / tot_s
    thr_f, thr_s = _cellprofiler_bisection(first.ravel(), second.ravel(), scale)
    comb_c = (fp > thr_f) & (sp > thr_s)
    f_c, s_c = fp >= thr_f, sp >= thr_s
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 -> NaN, as CellProfiler
        c1 = np.asarray(scipy.ndimage.sum(fp[comb_c], lab[comb_c], index)) / np.asarray(
            scipy.ndimage.sum(fp[f_c], lab[f_c], index)
        )
        c2 = np.asarray(scipy.ndimage.sum(sp[comb_c], lab[comb_c], index)) / np.asarray(
            scipy.ndimage.sum(sp[s_c], lab[s_c], index)
        )
    return [rwc1, rwc2, c1, c2]


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_names_match_cellprofiler_header():
    compartments = ("Nuclei_Correlation_", "Cells_Correlation_", "Cytoplasm_Correlation_")
    header = {c for c in cellprofiler_header() if c.startswith(compartments)}
    ours = feature_columns(CHANNELS, groups=["Correlation"])
    assert len(ours) == len(set(ours)) == 3 * 150
    assert set(ours) == header


def test_pairs_and_columns_follow_cellprofiler_order():
    assert channel_pairs(["A", "B", "C"]) == [("A", "B"), ("A", "C"), ("B", "C")]
    names = colocalization_columns(["A", "B"])
    assert names == [
        "Correlation_Correlation_A_B",
        "Correlation_Overlap_A_B",
        "Correlation_K_A_B",
        "Correlation_K_B_A",
        "Correlation_Manders_A_B",
        "Correlation_Manders_B_A",
        "Correlation_RWC_A_B",
        "Correlation_RWC_B_A",
        "Correlation_Costes_A_B",
        "Correlation_Costes_B_A",
    ]
    assert colocalization_columns(["A", "B"], costes=False) == names[:8]
    assert colocalization_columns(["A"]) == []


@pytest.mark.parametrize(
    "options",
    [{"threshold": 100}, {"threshold": -1}, {"costes_method": "Accurate"}, {"scale": 1}],
)
def test_bad_options_raise(options):
    with pytest.raises(ValueError, match="Correlation"):
        colocalization_columns(["A", "B"], **{**GROUP.options, **options})


# --------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def touching():
    labels, images = _touching_site()
    return labels, images, _measure(labels, images)


def test_agrees_with_cp_measure(touching):
    from cp_measure.core import measurecolocalization as mc

    labels, images, ours = touching
    assert labels.max() >= 8
    for a, b in channel_pairs(images):
        x, y = images[a], images[b]
        pearson = mc.get_correlation_pearson(x, y, labels)
        manders = mc.get_correlation_manders_fold(x, y, labels)
        overlap = mc.get_correlation_overlap(x, y, labels)
        for ours_name, reference in (
            (f"Correlation_{a}_{b}", pearson["Correlation_Pearson"]),
            (f"Overlap_{a}_{b}", overlap["Correlation_Overlap"]),
            (f"K_{a}_{b}", overlap["Correlation_K_1"]),
            (f"K_{b}_{a}", overlap["Correlation_K_2"]),
            (f"Manders_{a}_{b}", manders["Correlation_Manders_1"]),
            (f"Manders_{b}_{a}", manders["Correlation_Manders_2"]),
        ):
            # Observed: within 4e-15 (summation order).
            np.testing.assert_allclose(
                ours[f"Correlation_{ours_name}"], reference, rtol=1e-12, err_msg=ours_name
            )


def test_rwc_and_costes_follow_cellprofiler(touching):
    labels, images, ours = touching
    for a, b in channel_pairs(images):
        expected = _cellprofiler_rwc_costes(images[a], images[b], labels)
        names = [f"RWC_{a}_{b}", f"RWC_{b}_{a}", f"Costes_{a}_{b}", f"Costes_{b}_{a}"]
        for name, reference in zip(names, expected, strict=True):
            np.testing.assert_allclose(
                ours[f"Correlation_{name}"], reference, rtol=1e-12, err_msg=name
            )


def test_rwc_and_costes_match_cp_measure_for_a_whole_image_object():
    from cp_measure.core import measurecolocalization as mc

    _, images = _touching_site(seed=3)
    labels = np.ones(images["A"].shape, dtype=np.int32)
    ours = _measure(labels, images)
    rwc = mc.get_correlation_rwc(images["A"], images["B"], labels)
    costes = mc.get_correlation_costes(images["A"], images["B"], labels, scale_max=65535)
    np.testing.assert_allclose(ours["Correlation_RWC_A_B"], rwc["Correlation_RWC_1"], rtol=1e-12)
    np.testing.assert_allclose(ours["Correlation_RWC_B_A"], rwc["Correlation_RWC_2"], rtol=1e-12)
    np.testing.assert_allclose(ours["Correlation_Costes_A_B"], costes["Correlation_Costes_1"])
    np.testing.assert_allclose(ours["Correlation_Costes_B_A"], costes["Correlation_Costes_2"])


def costes_thresholds(
    first: np.ndarray, second: np.ndarray, scale: int = 65535
) -> tuple[float, float] | None:
    """Costes' automatic thresholds of two whole images, CellProfiler's "Faster" search: the
    search the per-object measurements run, on whole images, to compare with CellProfiler's.

    Parameters
    ----------
    first, second : numpy.ndarray
        Images of the same shape, intensities scaled to [0, 1] as CellProfiler's.
    scale : int, default 65535
        CellProfiler's image scale (maximum of the acquisition dtype); candidates are
        ``k / scale``.

    Returns
    -------
    tuple of float or None
        ``(threshold of first, threshold of second)``; ``None`` when no pixel is non-NaN in
        both images. Like CellProfiler, ``(0, b)`` when no candidate has a non-negative
        correlation below it.

    Notes
    -----
    Pixels that are NaN in either image are ignored. The regression line is fitted to the
    pixels that are non-zero in at least one image, as CellProfiler does.
    """
    colocalization._check_options(15.0, "Faster", scale)
    return colocalization._pair_thresholds(
        colocalization._Plane.of(first, scale), colocalization._Plane.of(second, scale)
    )


@pytest.mark.parametrize("scale", [255, 4095, 65535])
@pytest.mark.parametrize(
    "kind", ["smooth", "sparse zeros", "anti-correlated", "coarse steps", "clipped"]
)
def test_costes_search_matches_cellprofiler(kind, scale):
    rng = np.random.default_rng([scale, len(kind)])
    for size in (5, 300, 4000):
        x = rng.random(size) ** 2
        y = np.clip(0.7 * x + 0.3 * rng.random(size), 0, 1)
        if kind == "sparse zeros":
            x[rng.random(size) < 0.4] = 0
            y[rng.random(size) < 0.3] = 0
        elif kind == "anti-correlated":
            y = 1 - x
        elif kind == "coarse steps":
            x, y = np.round(x * 8) / 8, np.round(y * 5) / 5
        elif kind == "clipped":
            x, y = np.maximum(x - 0.4, 0), np.maximum(y - 0.3, 0)
        x = np.round(x * scale) / scale
        expected = _cellprofiler_bisection(x, y, scale)
        got = costes_thresholds(x, y, scale)
        # The first threshold is a search result: identical. The second is a * thr + b with
        # the regression's rounding.
        assert got[0] == expected[0]
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-9, atol=1e-12)


def test_costes_thresholds_ignore_nan_pixels():
    rng = np.random.default_rng(5)
    x = rng.random((30, 30))
    y = 0.5 * x + 0.5 * rng.random((30, 30))
    x[3, :] = np.nan
    keep = ~np.isnan(x)
    assert costes_thresholds(x, y, 255) == pytest.approx(
        _cellprofiler_bisection(x[keep], y[keep], 255)
    )
    assert costes_thresholds(np.full((4, 4), np.nan), y[:4, :4]) is None


def test_dense_ranks():
    values = np.array([0.5, -0.0, 0.0, 0.25, 0.5, -1.0, np.float32(0.1)], dtype=np.float64)
    np.testing.assert_array_equal(dense_ranks(values), [4, 1, 1, 3, 4, 0, 2])
    # Values float32 cannot hold take the argsort path; NaNs rank last, each on its own.
    values = np.array([0.1, np.nan, 0.3, 0.1, np.nan])
    np.testing.assert_array_equal(dense_ranks(values), [0, 2, 1, 0, 3])
    np.testing.assert_array_equal(dense_ranks(values.astype(np.float32)), [0, 2, 1, 0, 3])
    np.testing.assert_array_equal(
        dense_ranks(np.array([0.5, -2, 0, -0.0, 3], dtype=np.float32)), [2, 0, 1, 1, 3]
    )
    assert dense_ranks(np.zeros(0)).size == 0
    rng = np.random.default_rng(0)
    values = rng.integers(0, 50, 1000).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(dense_ranks(values), np.unique(values, return_inverse=True)[1])


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def test_empty_site_has_full_schema():
    labels = {name: np.zeros((10, 10), np.int32) for name in ("Nuclei", "Cells", "Cytoplasm")}
    images = {"DNA": np.zeros((10, 10)), "AGP": np.ones((10, 10))}
    frame = measure_site(labels, images, groups=["Correlation"])
    assert len(frame) == 0
    assert list(frame.columns)[1:] == feature_columns(["DNA", "AGP"], groups=["Correlation"])


def test_single_pixel_constant_and_absent_objects():
    shape = (12, 12)
    nuclei = np.zeros(shape, np.int32)
    nuclei[2, 2] = 1  # one pixel
    nuclei[6:10, 6:10] = 2
    cells = nuclei.copy()
    cells[5:11, 5:11] = np.where(cells[5:11, 5:11] == 0, 2, cells[5:11, 5:11])
    cyto = np.where(nuclei > 0, 0, cells)  # object 1 has no cytoplasm
    rng = np.random.default_rng(1)
    images = {"A": rng.random(shape), "B": rng.random(shape), "Flat": np.full(shape, 0.1)}
    frame = measure_site(
        {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}, images, groups=["Correlation"]
    ).set_index("ObjectNumber")
    one = frame.loc[1]
    # One pixel: no spread, so no correlation; it passes every threshold of its own maximum.
    assert np.isnan(one["Nuclei_Correlation_Correlation_A_B"])
    assert one["Nuclei_Correlation_Manders_A_B"] == 1
    assert one["Nuclei_Correlation_Overlap_A_B"] == pytest.approx(1)
    assert one[[c for c in frame.columns if c.startswith("Cytoplasm_")]].isna().all()
    two = frame.loc[2]
    assert np.isfinite(two["Cells_Correlation_Correlation_A_B"])
    # A constant channel: Pearson and Costes' regression are undefined (NaN).
    assert np.isnan(two["Cells_Correlation_Correlation_A_Flat"])
    assert np.isnan(two["Cells_Correlation_Costes_A_Flat"])
    # Every pixel of the flat channel passes its threshold: all of A is colocalized.
    assert two["Cells_Correlation_Manders_A_Flat"] == 1


def test_costes_option_and_shared_thresholds(monkeypatch):
    labels, images = _touching_site(seed=2)
    ids = np.arange(1, int(labels.max()) + 1)
    site = Site(images, {"Cells": labels, "Nuclei": labels})
    without = colocalization.measure_colocalization(
        CompartmentObjects("Cells", labels, ids), site, costes=False
    )
    assert not any("Costes" in name for name in without)
    searches = []
    search = colocalization._pair_thresholds
    monkeypatch.setattr(
        colocalization, "_pair_thresholds", lambda *args: searches.append(1) or search(*args)
    )
    for compartment in ("Cells", "Nuclei"):
        colocalization.measure_colocalization(CompartmentObjects(compartment, labels, ids), site)
    # Costes' thresholds are per image pair: searched once per site, for every compartment.
    assert len(searches) == len(channel_pairs(images))


def test_no_pixel_pair_is_all_nan():
    labels = np.zeros((6, 6), np.int32)
    labels[1:4, 1:4] = 1
    images = {"A": np.full((6, 6), np.nan), "B": np.ones((6, 6))}
    for costes in (True, False):
        result = _measure(labels, images, costes=costes)
        assert all(np.isnan(v).all() for v in result.values())


def test_measure_site_runs_the_group():
    labels, images = _touching_site(seed=4)
    cyto = labels.copy()
    cyto[labels % 2 == 0] = 0
    frame = measure_site(
        {"Nuclei": labels, "Cells": labels, "Cytoplasm": cyto}, images, groups=["Correlation"]
    )
    direct = _measure(labels, images)
    for name, value in direct.items():
        np.testing.assert_allclose(frame[f"Cells_{name}"], value.astype(np.float32))

"""Tests for the synthetic Cell Painting example plate generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import expand_labels, watershed

from cellstrata.example import CAMERA_OFFSET, example_platemap, generate_example

PLATE = "SYN01"
ROWS = "AB"
COLUMNS = 6
SITES = 2
SIZE = 256


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("example")
    return generate_example(out, plates=(PLATE,), rows=ROWS, columns=COLUMNS, sites=SITES, seed=0)


def _image(paths: dict[str, Path], well: str, site: int, channel: int) -> np.ndarray:
    return tifffile.imread(paths["images"] / PLATE / f"{PLATE}_{well}_s{site}_w{channel}.tif")


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_returned_paths_and_image_names(example: dict[str, Path]) -> None:
    assert set(example) == {"images", "platemap", "cells", "wells"}
    root = example["images"].parent
    assert example["images"] == root / "images"
    assert example["platemap"] == root / "platemap.csv"
    assert example["cells"] == root / "ground_truth" / "cells.parquet"
    assert example["wells"] == root / "ground_truth" / "wells.csv"
    for key in ("platemap", "cells", "wells"):
        assert example[key].is_file()

    wells = [f"{r}{c:02d}" for r in ROWS for c in range(1, COLUMNS + 1)]
    expected = {
        f"{PLATE}_{w}_s{s}_w{ch}.tif"
        for w in wells
        for s in range(1, SITES + 1)
        for ch in (1, 2, 3)
    }
    found = {p.name for p in (example["images"] / PLATE).iterdir()}
    assert found == expected
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".part")]
    assert leftovers == []

    image = _image(example, "A01", 1, 1)
    assert image.dtype == np.uint16
    assert image.shape == (SIZE, SIZE)
    with tifffile.TiffFile(example["images"] / PLATE / f"{PLATE}_B06_s2_w3.tif") as tif:
        assert len(tif.pages) == 1
        assert tif.pages[0].dtype == np.uint16


def test_images_have_camera_offset_and_signal(example: dict[str, Path]) -> None:
    for channel in (1, 2, 3):
        image = _image(example, "A03", 1, channel).astype(float)
        background = np.percentile(image, 5)
        assert 90 <= background <= 160  # offset ~100 ADU plus a dark background
        assert np.percentile(image, 99.5) > background + 500
    dna = _image(example, "A03", 1, 1)
    assert 1500 <= np.percentile(dna, 99.5) <= 10000  # nuclei at a few thousand ADU


def test_platemap_layout(example: dict[str, Path]) -> None:
    platemap = pd.read_csv(example["platemap"])
    assert list(platemap.columns) == ["well", "treatment", "dose", "control"]
    assert len(platemap) == len(ROWS) * COLUMNS
    assert platemap["well"].tolist()[:3] == ["A01", "A02", "A03"]
    col = platemap["well"].str[1:].astype(int)

    first = platemap[col == 1]
    assert (first["treatment"] == "DMSO").all() and (first["control"] == "negative").all()
    assert (first["dose"] == 0.0).all()
    last = platemap[col == COLUMNS]
    assert (last["treatment"] == "positive").all() and (last["control"] == "positive").all()
    middle = platemap[(col > 1) & (col < COLUMNS)]
    assert (middle["treatment"] == "compound").all() and (middle["control"] == "treated").all()

    series = middle[middle["well"].str[0] == "A"]["dose"].to_numpy()
    assert len(series) == COLUMNS - 2
    assert np.all(np.diff(series) > 0)
    assert np.allclose(np.diff(np.log(series)), np.log(series[1] / series[0]))  # log-spaced
    assert last["dose"].iloc[0] > series.max()
    pd.testing.assert_frame_equal(platemap, example_platemap(ROWS, COLUMNS))


def test_ground_truth_tables_consistent(example: dict[str, Path]) -> None:
    cells = pd.read_parquet(example["cells"])
    wells = pd.read_csv(example["wells"])
    assert {
        "plate",
        "well",
        "site",
        "cell",
        "x",
        "y",
        "nucleus_area_px",
        "cell_area_px",
        "gfp_nuclear_fraction",
    } <= set(cells.columns)
    assert list(wells.columns[:5]) == ["plate", "well", "dose", "control", "n_cells"]
    assert "gfp_nuc_cyto_ratio" in wells.columns
    assert len(wells) == len(ROWS) * COLUMNS

    per_site = cells.groupby(["plate", "well", "site"])["cell"]
    assert per_site.size().between(20, 40).all()
    assert per_site.size().nunique() > 3  # varies by site
    for _, numbers in per_site:
        assert numbers.tolist() == list(range(1, len(numbers) + 1))

    counts = cells.groupby(["plate", "well"]).size().rename("counted").reset_index()
    merged = wells.merge(counts, on=["plate", "well"], how="left")
    assert (merged["n_cells"] == merged["counted"]).all()

    assert cells["x"].between(0, SIZE - 1).all() and cells["y"].between(0, SIZE - 1).all()
    assert (cells["cell_area_px"] > cells["nucleus_area_px"]).all()
    assert cells["gfp_nuclear_fraction"].between(0, 1).all()
    radius = np.sqrt(cells["nucleus_area_px"] / np.pi)
    interior = cells["x"].between(12, SIZE - 13) & cells["y"].between(12, SIZE - 13)
    assert radius[interior].between(5, 11).all()

    platemap = pd.read_csv(example["platemap"])
    check = wells.merge(platemap, on="well", suffixes=("", "_map"))
    assert np.allclose(check["dose"], check["dose_map"])
    assert (check["control"] == check["control_map"]).all()


def test_ratio_dose_response(example: dict[str, Path]) -> None:
    wells = pd.read_csv(example["wells"])
    by_dose = wells.groupby(["control", "dose"])["gfp_nuc_cyto_ratio"].mean().reset_index()
    treated = by_dose[by_dose["control"] == "treated"].sort_values("dose")
    assert np.all(np.diff(treated["gfp_nuc_cyto_ratio"].to_numpy()) > 0)
    negative = wells.loc[wells["control"] == "negative", "gfp_nuc_cyto_ratio"]
    positive = wells.loc[wells["control"] == "positive", "gfp_nuc_cyto_ratio"]
    assert negative.between(0.5, 0.75).all()
    assert positive.between(3.0, 4.5).all()
    assert positive.min() > 3 * negative.max()

    cells = pd.read_parquet(example["cells"])
    frac = cells.merge(pd.read_csv(example["platemap"]), on="well")
    mean_frac = frac.groupby("control")["gfp_nuclear_fraction"].mean()
    assert mean_frac["negative"] < mean_frac["treated"] < mean_frac["positive"]
    spread = frac[frac["control"] == "positive"]["gfp_nuc_cyto_ratio"].std()
    assert spread > 0.1  # cell-to-cell variability


def _corner_centre_ratio(image: np.ndarray) -> float:
    """Mean of the four corner patches over the mean of a central patch (1/8 of the side)."""
    q = image.shape[0] // 8
    corner = np.mean(
        [image[:q, :q].mean(), image[:q, -q:].mean(), image[-q:, :q].mean(), image[-q:, -q:].mean()]
    )
    mid = image.shape[0] // 2
    return float(corner / image[mid - q // 2 : mid + q // 2, mid - q // 2 : mid + q // 2].mean())


def test_vignetting_visible(example: dict[str, Path]) -> None:
    root = example["images"].parent
    fields, stacks = [], []
    for channel in (1, 2, 3):
        field = tifffile.imread(root / "ground_truth" / f"illumination_w{channel}.tiff")
        assert field.dtype == np.float32 and field.shape == (SIZE, SIZE)
        assert field.max() == pytest.approx(1.0)
        corners = np.array([field[0, 0], field[0, -1], field[-1, 0], field[-1, -1]])
        assert np.all((corners > 0.4) & (corners < 0.7))
        fields.append(field)

        # Mean over all sites, offset subtracted: the corners are clearly darker.
        stack = np.mean(
            [
                tifffile.imread(p).astype(float) - CAMERA_OFFSET
                for p in (example["images"] / PLATE).glob(f"*_w{channel}.tif")
            ],
            axis=0,
        )
        assert _corner_centre_ratio(stack) < 0.8
        stacks.append(stack / stack.mean())
    # Pooled over channels the random cell layout averages out (about 0.9 without vignetting).
    assert _corner_centre_ratio(np.sum(stacks, axis=0)) < 0.7
    assert not np.allclose(fields[0], fields[1]) and not np.allclose(fields[1], fields[2])


def _segment_nuclei(dna: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(dna.astype(float), 1.0)
    mask = smooth > threshold_otsu(smooth)
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=5, labels=ndimage.label(mask)[0])
    markers = np.zeros(dna.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def test_classical_segmentation_sanity(example: dict[str, Path]) -> None:
    cells = pd.read_parquet(example["cells"])
    ratios = {}
    for well in ("A01", f"A{COLUMNS:02d}"):
        nuclei = _segment_nuclei(_image(example, well, 1, 1))
        truth = ((cells["well"] == well) & (cells["site"] == 1)).sum()
        found = len(np.unique(nuclei)) - 1
        assert abs(found - truth) <= 0.15 * truth, (well, found, truth)

        # Nuclear vs ring-cytoplasm GFP, offset subtracted: the dose response is measurable.
        gfp = _image(example, well, 1, 2).astype(float) - CAMERA_OFFSET
        ring = expand_labels(nuclei, 4)
        ring[nuclei > 0] = 0
        index = np.arange(1, nuclei.max() + 1)
        nuc_mean = ndimage.mean(gfp, nuclei, index)
        cyto_mean = ndimage.mean(gfp, ring, index)
        ratios[well] = np.nanmedian(nuc_mean / cyto_mean)
    assert ratios["A01"] < 0.9
    assert ratios[f"A{COLUMNS:02d}"] > 2.0


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    kwargs = {"rows": "A", "columns": 3, "sites": 1, "size": 96}
    generate_example(tmp_path / "a", plates=("P1",), seed=7, **kwargs)
    generate_example(tmp_path / "b", plates=("P1",), seed=7, **kwargs)
    generate_example(tmp_path / "c", plates=("P1",), seed=8, **kwargs)
    generate_example(tmp_path / "d", plates=("P0", "P1"), seed=7, **kwargs)
    a, b, c = (_digest(tmp_path / k) for k in "abc")
    assert len(a) == 3 * 3 + 1 + 2 + 3  # images, platemap, cells + wells, illumination
    assert a == b
    images_a = {k: v for k, v in a.items() if k.startswith("images")}
    images_c = {k: v for k, v in c.items() if k.startswith("images")}
    assert images_a.keys() == images_c.keys()
    assert all(images_a[k] != images_c[k] for k in images_a)
    # Adding a plate leaves the existing plate's images untouched.
    d = _digest(tmp_path / "d")
    assert all(d[k] == v for k, v in images_a.items())
    assert tifffile.imread(tmp_path / "a" / "images" / "P1" / "P1_A01_s1_w1.tif").shape == (96, 96)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"columns": 2},
        {"rows": ""},
        {"rows": "AA"},
        {"sites": 0},
        {"size": 32},
        {"seed": -1},
        {"plates": ()},
        {"plates": ("A_B",)},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_example(tmp_path, **kwargs)

"""The whole chain through the Snakemake API on tiny synthetic plates in temp dirs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import matplotlib.image as plt_image
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, example_config, main_version, run_snakemake

from cellstrata.images.illumination import correct_image, read_function, to_float

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def version(small_example):
    return main_version(example_config(small_example))


def _profiles(workdir, step, version=None):
    version = version or main_version(yaml.safe_load((workdir / "test_config.yaml").read_text()))
    return pd.read_parquet(workdir / f"results/profiles/{version}/SYN01/SYN01_{step}.parquet")


def test_all_levels_written(example_run, version):
    results = example_run / "results"
    assert (results / "manifest/SYN01.parquet").exists()
    assert sorted(p.name for p in (results / "illumination/SYN01").iterdir()) == [
        "AGP.tiff",
        "DNA.tiff",
        "GFP.tiff",
    ]
    # Two batches of six whole wells; three label images per site.
    masks = sorted((results / "masks" / version / "SYN01").glob("*/*.tiff"))
    assert len(masks) == 12 * 2 * 3
    assert {p.parent.name for p in masks} == {"A01-A06", "B01-B06"}
    labels = tifffile.imread(masks[0])
    assert labels.dtype in (np.uint16, np.uint32)
    assert len(list((results / "features" / version / "SYN01").glob("*.parquet"))) == 2
    for step in ("aggregated", "annotated", "normalized", "feature_selected"):
        assert len(_profiles(example_run, step)) == 12
    # retention: corrected images are temp() and gone once segment + features finished.
    assert not any((results / "corrected").rglob("*.tiff"))


def test_single_cell_table_layout(example_run, version):
    cells = pd.read_parquet(example_run / f"results/features/{version}/SYN01/A01-A06.parquet")
    assert list(cells.columns[:4]) == [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Site",
        "Metadata_ObjectNumber",
    ]
    for column in (
        "Nuclei_AreaShape_Area",
        "Cells_Intensity_MeanIntensity_GFP",
        "Cytoplasm_Intensity_MeanIntensity_AGP",
    ):
        assert cells[column].dtype == np.float32
    assert set(cells["Metadata_Well"]) == {f"A{c:02d}" for c in range(1, 7)}


def test_cell_counts_match_ground_truth(example_run, small_example):
    truth = pd.read_csv(small_example / "ground_truth/wells.csv").set_index("well")
    counts = _profiles(example_run, "aggregated").set_index("Metadata_Well")
    error = counts["Metadata_Object_Count"] / truth.loc[counts.index, "n_cells"] - 1
    assert error.abs().max() <= 0.10, error.to_dict()


def test_illumination_flattened(example_run, small_example):
    function = tifffile.imread(example_run / "results/illumination/SYN01/AGP.tiff")
    truth = tifffile.imread(small_example / "ground_truth/illumination_w3.tiff")
    assert np.corrcoef(function.ravel(), truth.ravel())[0, 1] > 0.9
    manifest = pd.read_parquet(example_run / "results/manifest/SYN01.parquet")
    paths = manifest.loc[manifest["channel"] == "AGP", "path"]
    raw = np.mean([to_float(tifffile.imread(p)) for p in paths], axis=0)
    corrected = np.mean([correct_image(tifffile.imread(p), function) for p in paths], axis=0)
    # Corner/centre brightness of the plate mean, before and after correction.
    size = raw.shape[0] // 8

    def corner_over_centre(img):
        corners = [img[:size, :size], img[:size, -size:], img[-size:, :size], img[-size:, -size:]]
        return np.mean(corners) / img[3 * size : 5 * size, 3 * size : 5 * size].mean()

    before, after = corner_over_centre(raw), corner_over_centre(corrected)
    print(f"corner/centre of the AGP plate mean: raw {before:.2f}, corrected {after:.2f}")
    assert before < 0.85
    assert abs(after - 1) < abs(before - 1) / 2


def test_background_mode_reaches_the_rule(small_example, tmp_path):
    config = example_config(small_example)
    config["illumination"] = {"mode": "background", "block_size": 32}
    run_snakemake(tmp_path, config, targets=["results/illumination/SYN01/AGP.tiff"])
    function, mode = read_function(tmp_path / "results/illumination/SYN01/AGP.tiff")
    assert mode == "background"
    # Not rescaled to >= 1: a background estimate on the images' [0, 1] scale.
    assert 0 < function.min() and function.max() < 0.5


def test_dose_response_in_profiles(example_run):
    profiles = _profiles(example_run, "annotated")
    ratio = (
        profiles["Nuclei_Intensity_MeanIntensity_GFP"]
        / profiles["Cytoplasm_Intensity_MeanIntensity_GFP"]
    )
    by_dose = ratio.groupby(profiles["Metadata_dose"]).mean()
    print("nuclear/cytoplasmic GFP by dose:", by_dose.round(2).to_dict())
    assert by_dose.is_monotonic_increasing
    assert by_dose.iloc[-1] > 3 * by_dose.iloc[0]
    normalized = _profiles(example_run, "normalized")
    readout = normalized.groupby("Metadata_control_type")["Nuclei_Intensity_MeanIntensity_GFP"]
    assert readout.mean()["positive"] > readout.mean()["negative"] + 3


def test_experiment_consensus_quality_and_figures(example_run, version):
    experiment = example_run / "results/experiment" / version
    consensus = pd.read_parquet(experiment / "consensus.parquet")
    # Six treatments (DMSO, four compound doses, the positive control), two wells each.
    assert len(consensus) == 6 and (consensus["Metadata_Replicates"] == 2).all()
    zprime = pd.read_parquet(experiment / "zprime.parquet")
    assert zprime["readout"].item() == (
        "Nuclei_Intensity_MeanIntensity_GFP / Cytoplasm_Intensity_MeanIntensity_GFP"
    )
    assert zprime["zprime"].item() > 0.5
    mAP = pd.read_parquet(experiment / "map.parquet")
    assert set(mAP["kind"]) == {"activity", "consistency"}
    activity = mAP[mAP["kind"] == "activity"].set_index("Metadata_dose")
    # Five treatments of two wells against the two DMSO wells (too few wells for the values
    # to say much: tests/test_quality.py checks them on plates built for it).
    assert sorted(activity.index) == pytest.approx([0.03, 0.208, 1.442, 10.0, 100.0], abs=1e-3)
    assert (activity["n_wells"] == 2).all()
    assert activity["mean_average_precision"].between(0, 1).all()
    counts = pd.read_parquet(experiment / "cell_counts.parquet")
    assert len(counts) == 12 and (counts["cells"] > 0).all()
    figures = sorted((example_run / "results/figures").rglob("*.png"))
    names = {str(p.relative_to(example_run / "results/figures")) for p in figures}
    assert names == {
        "SYN01/illumination.png",
        "SYN01/image_qc.png",
        f"{version}/SYN01/overview.png",
        f"{version}/SYN01/overlays.png",
        f"{version}/pca.png",
        f"{version}/map.png",
        f"{version}/dose_response.png",
        "storage_projection.png",
    }
    for path in figures:
        image = plt_image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image[..., :3].std() > 0.05, path


def test_report_builds_with_every_figure(example_run):
    report = example_run / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            "test_config.yaml",
            "--report",
            str(report),
        ],
        cwd=example_run,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    for name in (
        "overview.png",
        "overlays.png",
        "illumination.png",
        "image_qc.png",
        "pca.png",
        "map.png",
        "dose_response.png",
        "storage_projection.png",
    ):
        assert name in html, name
    # The catalog page is linked beside the report, never embedded in it.
    # (the title page is stored as JSON in the report: its quotes escaped)
    assert 'href=\\"catalog.html\\"' in html and "cellstrata catalog:" not in html


def test_profiles_as_csv_on_request(example_run, small_example, version):
    config = example_config(small_example)
    config["profiles"] = {"csv": True}
    run_snakemake(example_run, config)
    for path in [
        example_run / f"results/profiles/{version}/SYN01/SYN01_normalized",
        example_run / f"results/experiment/{version}/consensus",
    ]:
        csv = pd.read_csv(path.with_suffix(".csv.gz"))
        parquet = pd.read_parquet(path.with_suffix(".parquet"))
        pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)


def test_summary(example_run, version):
    text = (example_run / "results/summary.txt").read_text()
    assert "SYN01" in text and "cells" in text
    assert "deleted after use (retention: delete)" in text
    assert f"results/profiles/{version}/SYN01/SYN01_feature_selected.parquet" in text
    # Each table's rows named for what they are: wells, or features for the reports on them.
    rows = {
        line.split()[0].rsplit("_", 1)[1]: line.split("(")[1].split(" x ")[0]
        for line in text.splitlines()
        if f"profiles/{version}/SYN01/" in line
    }
    assert rows["normalized.parquet"].endswith(" wells")
    assert rows["normalization.parquet"].endswith(" features")
    assert rows["nonfinite.parquet"].endswith(" features")


def test_records_carry_the_origin(example_run):
    from cellstrata.stewardship.provenance import read_records

    records = read_records(example_run / "results")
    plate = next(r for r in records if r["rule"] == "segment")
    # The example's experiment-wide origin (the run's config gives SYN01 no origin of its own).
    assert plate["origin"]["holder"] == "Example Lab" and plate["origin"]["access"] == "lab"
    assert plate["origin"]["license"] == "CC-BY-4.0"
    experiment = next(r for r in records if r["rule"] == "experiment")
    assert set(experiment["origin"]["plates"]) == {"SYN01"}
    assert experiment["origin"]["access"] == "lab"
    # Origin is no rule parameter: who may see a plate never recomputes it.
    assert "origin" not in json.dumps(plate["params"])


def test_second_run_has_nothing_to_do(example_run, small_example):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--directory",
            str(example_run),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(example_run / "test_config.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Nothing to be done" in result.stdout + result.stderr


def test_bad_image_fails_named_and_keeps_other_plate(tmp_path):
    from cellstrata.example import generate_example

    data = tmp_path / "data"
    generate_example(data, plates=("PA", "PB"), rows="A", columns=3, sites=1)
    victim = data / "images/PB/PB_A02_s1_w2.tif"
    victim.write_bytes(victim.read_bytes()[:1000])
    config = example_config(data)
    config["plates"] = [
        {"name": p, "images": str(data / "images" / p), "platemap": str(data / "platemap.csv")}
        for p in ("PA", "PB")
    ]
    workdir = tmp_path / "run"
    with pytest.raises(Exception):  # noqa: B017 - Snakemake raises its own error types
        run_snakemake(workdir, config, keep_going=True)
    log = (workdir / "logs/ingest/PB.log").read_text()
    assert "plate PB well A02 site 1 channel GFP" in log and "truncated" in log
    assert "PB_A02_s1_w2.tif" in log
    # The healthy plate went all the way; nothing exists for the broken one past ingest.
    version = main_version(config)
    assert (workdir / f"results/profiles/{version}/PA/PA_feature_selected.parquet").exists()
    assert not (workdir / "results/manifest/PB.parquet").exists()
    assert not (workdir / f"results/profiles/{version}/PB").exists()
    assert len(victim.read_bytes()) == 1000  # raw data untouched


def test_dry_run_creates_nothing(small_example, tmp_path):
    run_snakemake(tmp_path, example_config(small_example), dryrun=True)
    assert not (tmp_path / "results").exists()


def test_lint_and_format(example_run):
    lint = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--lint",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(example_run),
            "--configfile",
            str(example_run / "test_config.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    snakefmt = shutil.which("snakefmt", path=str(REPO / ".venv/bin")) or "snakefmt"
    fmt = subprocess.run(
        [snakefmt, "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stderr


def test_new_segmentation_lands_beside_the_old(small_example, tmp_path):
    config = example_config(small_example)
    run_snakemake(tmp_path, config)
    old = main_version(config)
    old_files = {
        p: p.read_bytes()
        for level in ("masks", "features", "profiles")
        for p in (tmp_path / "results" / level / old).rglob("*")
        if p.is_file()
    }
    assert old_files
    config["segmentation"]["extra_versions"] = [{"nuclei": {"diameter": 24}}]
    run_snakemake(tmp_path, config)
    new = [v for v in (tmp_path / "results/profiles").iterdir() if v.name != old]
    assert len(new) == 1 and new[0].name.startswith("classical-")
    assert (new[0] / "SYN01/SYN01_normalized.parquet").exists()
    # The old version is still there, byte for byte. (Its jobs may run again: the corrected
    # images are temp() and must be remade for the new version, and Snakemake reruns every
    # consumer of a remade input; the computation is deterministic.)
    for path, data in old_files.items():
        assert path.read_bytes() == data, path
    records = json.loads(
        (tmp_path / f"results/provenance/SYN01/segment/{new[0].name}/A01-A06.json").read_text()
    )
    assert records["params"]["segmentation"]["nuclei"] == {"diameter": 24}


def test_keep_to_delete_is_refused_without_the_explicit_command(example_run):
    config = yaml.safe_load((example_run / "test_config.yaml").read_text())
    config["retention"]["levels"]["masks"] = "delete"
    with pytest.raises(Exception, match="cellstrata apply-retention"):
        run_snakemake(example_run, config, dryrun=True)
    assert any((example_run / "results/masks").rglob("*.tiff"))
    # A cluster job re-reads the Snakefile while other jobs write: it must not take their
    # unfinished outputs for kept files (the check belongs to the planning process only).
    (example_run / "delete.yaml").write_text(yaml.safe_dump(config))
    job = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n"]
        + ["--configfile", "delete.yaml", "--mode", "remote"],
        cwd=example_run,
        capture_output=True,
        text=True,
    )
    (example_run / "delete.yaml").unlink()
    assert job.returncode == 0, job.stderr[-3000:]
    # Leave the module's run as it was for the other tests.
    config["retention"]["levels"]["masks"] = "keep"
    run_snakemake(example_run, config, dryrun=True)


def test_qc_flags_a_blurred_site_and_config_excludes_it(tmp_path):
    from scipy import ndimage

    from cellstrata.example import generate_example

    data = tmp_path / "data"
    generate_example(data, plates=("SYN01",), rows="AB", columns=3, sites=2, seed=4)
    for channel in (1, 2, 3):
        path = data / f"images/SYN01/SYN01_A02_s2_w{channel}.tif"
        tifffile.imwrite(path, ndimage.gaussian_filter(tifffile.imread(path), 6))
    config = example_config(data)
    config["batching"] = {"wells_per_job": 3}
    config["qc"] = {"exclude": ["Blur"]}
    run_snakemake(tmp_path / "run", config)
    results = tmp_path / "run/results"
    qc = pd.read_parquet(results / "qc/SYN01.parquet")
    flagged = qc.loc[qc["Flag_Blur"], ["Metadata_Well", "Metadata_Site"]].drop_duplicates()
    assert flagged.values.tolist() == [["A02", 2]]
    cells = pd.read_parquet(results / f"features/{main_version(config)}/SYN01/A01-A03.parquet")
    sites = set(zip(cells["Metadata_Well"], cells["Metadata_Site"], strict=True))
    assert ("A02", 2) not in sites and ("A02", 1) in sites
    log = next((tmp_path / "run/logs/correct").rglob("A01-A03.log")).read_text()
    assert "well A02 site 2 excluded by QC (Blur)" in log


def test_empty_fields_give_empty_masks_and_full_schema(tmp_path):
    from cellstrata.example import generate_example

    data = tmp_path / "data"
    generate_example(data, plates=("SYN01",), rows="AB", columns=3, sites=1, seed=3)
    # Row A becomes empty fields: camera offset and noise, no cells.
    rng = np.random.default_rng(0)
    for path in (data / "images/SYN01").glob("SYN01_A*.tif"):
        tifffile.imwrite(path, (100 + rng.poisson(20, (256, 256))).astype(np.uint16))
    config = example_config(data)
    config["batching"] = {"wells_per_job": 3}
    run_snakemake(tmp_path / "run", config)
    results, version = tmp_path / "run/results", main_version(config)
    masks = sorted((results / "masks" / version / "SYN01/A01-A03").glob("*.tiff"))
    assert len(masks) == 3 * 3 and all(not tifffile.imread(m).any() for m in masks)
    empty = pd.read_parquet(results / f"features/{version}/SYN01/A01-A03.parquet")
    full = pd.read_parquet(results / f"features/{version}/SYN01/B01-B03.parquet")
    assert len(empty) == 0 and len(full) > 0
    assert list(empty.columns) == list(full.columns)
    assert dict(empty.dtypes) == dict(full.dtypes)
    profiles = _profiles(tmp_path / "run", "aggregated", version)
    assert list(profiles["Metadata_Well"]) == ["B01", "B02", "B03"]

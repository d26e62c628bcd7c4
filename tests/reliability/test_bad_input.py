"""Reliability, bad input: the real workflow on tiny synthetic plates (64 x 64 px) in temp dirs,
fed broken images, empty fields, flagged sites, wrong platemaps, poisoned features and hostile
names. Each case asserts what a user must see: a named error or an explicit report, never a
silent loss, and nothing outside the job that failed.

The unit tests (tests/test_ingest.py, tests/test_profiles.py, tests/test_qc.py) check the
functions; these check the same behaviour end to end, through Snakemake, as users run it.
Two module-wide runs carry most cases: ``broken_run`` (one healthy plate beside six broken
ones, keep-going) and ``screened_run`` (a plate with an empty row, a blurred and a saturated
site and a platemap with benign mismatches); the platemap and feature cases re-run only the
profiles job on copies of the latter.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import example_config, main_version, run_snakemake
from scipy import ndimage

from cellstrata.cli import main as cellstrata
from cellstrata.config import PROFILE_STEPS
from cellstrata.example import generate_example

SIZE = 64
WELLS_ABC = [f"{row}{col:02d}" for row in "ABC" for col in (1, 2, 3)]


def _config(data: Path, plates: Sequence[str], platemap: str | Path, **overrides) -> dict:
    """The example config for tiny plates under ``data/images``: cheap but complete chain."""
    config = example_config(data)
    config["plates"] = [
        {"name": plate, "images": str(data / "images" / plate), "platemap": str(platemap)}
        for plate in plates
    ]
    config["batching"] = {"wells_per_job": 3}
    config["crops"] = {"enabled": False}
    # Two of the feature groups: these faults are about which images, cells and wells are
    # measured, not how; the other groups only cost time.
    config["features"] = {"groups": ["AreaShape", "Intensity"]}
    config["illumination"] = {"smoothing": "gaussian", "filter_size": 16}
    # The example's 256 px sizes scaled to 64 px.
    config["segmentation"]["nuclei"] = {"diameter": 5}
    config["segmentation"]["cells"] = {"max_distance": 8}
    config.update(overrides)
    return config


def _profile_targets(config: dict, plates: Sequence[str]) -> list[str]:
    version = main_version(config)
    return [f"results/profiles/{version}/{p}/{p}_feature_selected.parquet" for p in plates]


def _profiles_dir(workdir: Path, config: dict, plate: str) -> Path:
    return workdir / "results/profiles" / main_version(config) / plate


def _table(workdir: Path, config: dict, plate: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(_profiles_dir(workdir, config, plate) / f"{plate}_{name}.parquet")


def _fingerprints(root: Path) -> dict[str, tuple[int, int, str]]:
    """Size, mtime (ns) and MD5 of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.md5(p.read_bytes()).hexdigest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _files_of(root: Path, plate: str, *, skip: Sequence[str] = ()) -> list[str]:
    """Files under ``root`` with ``plate`` as a path component (outside the ``skip`` dirs)."""
    if not root.exists():
        return []
    return [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and plate in p.relative_to(root).parts
        and not set(skip) & set(p.relative_to(root).parts)
    ]


# --- one healthy plate beside six broken ones (cases 3, 4, 5) --------------------------------

#: plate -> (how its images are broken, what the ingest log must say)
BROKEN = {
    "TRUNC": (
        "half of the bytes of one TIFF",
        r"plate TRUNC well A02 site 1 channel GFP \(\S*TRUNC_A02_s1_w2\.tif\): unreadable: "
        r"truncated",
    ),
    "HEADER": (
        "a TIFF cut after its header (no pixel data)",
        r"plate HEADER well A03 site 2 channel DNA \(\S*HEADER_A03_s2_w1\.tif\): unreadable: "
        r"truncated",
    ),
    "NOCHAN": (
        "one channel of one site missing",
        r"plate NOCHAN well A02 site 2: channel\(s\) \['AGP'\] missing",
    ),
    "NOSITE": (
        "every channel of one site missing",
        r"plate NOSITE well A01 site 2: site missing \(other wells have sites \[1, 2\]\)",
    ),
    "SHAPE": (
        "one image of a channel 48 x 64 px",
        r"plate SHAPE well A03 site 1 channel GFP \(\S*SHAPE_A03_s1_w2\.tif\): 48x64 uint16, "
        r"but most images of this channel are 64x64 uint16",
    ),
    "DEPTH": (
        "one image of a channel 8-bit",
        r"plate DEPTH well A02 site 1 channel DNA \(\S*DEPTH_A02_s1_w1\.tif\): 64x64 uint8, "
        r"but most images of this channel are 64x64 uint16",
    ),
}


def _break_images(images: Path) -> None:
    def cut(path: Path, keep: int) -> None:
        path.write_bytes(path.read_bytes()[:keep])

    victim = images / "TRUNC/TRUNC_A02_s1_w2.tif"
    cut(victim, victim.stat().st_size // 2)
    victim = images / "HEADER/HEADER_A03_s2_w1.tif"
    with tifffile.TiffFile(victim) as tif:
        first_pixel = int(tif.pages.first.dataoffsets[0])
    cut(victim, first_pixel)
    (images / "NOCHAN/NOCHAN_A02_s2_w3.tif").unlink()
    for channel in (1, 2, 3):
        (images / f"NOSITE/NOSITE_A01_s2_w{channel}.tif").unlink()
    tifffile.imwrite(images / "SHAPE/SHAPE_A03_s1_w2.tif", np.full((48, 64), 300, np.uint16))
    image = tifffile.imread(images / "DEPTH/DEPTH_A02_s1_w1.tif")
    # The same picture in 8 bits: a workflow that guessed a rescaling would run on.
    tifffile.imwrite(images / "DEPTH/DEPTH_A02_s1_w1.tif", (image >> 8).astype(np.uint8))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """Plate OK and the BROKEN plates in one keep-going run; returns what the tests need."""
    root = tmp_path_factory.mktemp("broken")
    data = root / "data"
    plates = ["OK", *BROKEN]
    generate_example(data, plates=plates, rows="A", columns=3, sites=2, size=SIZE, seed=3)
    _break_images(data / "images")
    raw_before = _fingerprints(data)
    config = _config(data, plates, data / "platemap.csv")
    workdir = root / "run"
    with pytest.raises(Exception):  # noqa: B017 - Snakemake raises its own error types
        run_snakemake(workdir, config, targets=_profile_targets(config, plates), keep_going=True)
    return {"workdir": workdir, "config": config, "data": data, "raw_before": raw_before}


def _assert_stopped_at_ingest(broken_run, plate: str) -> None:
    workdir = broken_run["workdir"]
    log = (workdir / f"logs/ingest/{plate}.log").read_text()
    assert re.search(BROKEN[plate][1], log), f"{BROKEN[plate][0]}: log says\n{log}"
    # Nothing past ingest exists for the plate: no manifest (so no shorter or rescaled image
    # set), no QC, illumination, masks, features or profiles, and no job of a later rule ran.
    assert not (workdir / f"results/manifest/{plate}.parquet").exists()
    assert _files_of(workdir / "results", plate) == []
    assert _files_of(workdir / "logs", plate, skip=["ingest"]) == []


@pytest.mark.case("3", "truncated TIFF: named error, plate stops, raw untouched")
@pytest.mark.parametrize("plate", ["TRUNC", "HEADER"])
def test_truncated_tiff_stops_its_plate_with_a_named_error(broken_run, plate):
    _assert_stopped_at_ingest(broken_run, plate)


@pytest.mark.case("4", "missing channel or site: error naming plate/well/site/channel")
@pytest.mark.parametrize("plate", ["NOCHAN", "NOSITE"])
def test_missing_channel_or_site_stops_its_plate_with_a_named_error(broken_run, plate):
    _assert_stopped_at_ingest(broken_run, plate)


@pytest.mark.case("5", "mixed shapes or bit depths in a channel: named error")
@pytest.mark.parametrize("plate", ["SHAPE", "DEPTH"])
def test_mixed_shape_or_depth_stops_its_plate_with_a_named_error(broken_run, plate):
    _assert_stopped_at_ingest(broken_run, plate)


@pytest.mark.case("3", "truncated TIFF: named error, plate stops, raw untouched")
def test_healthy_plate_completes_and_raw_data_is_untouched(broken_run):
    workdir, config = broken_run["workdir"], broken_run["config"]
    # keep-going: the healthy plate went all the way in the same run.
    aggregated = _table(workdir, config, "OK", "aggregated")
    assert list(aggregated["Metadata_Well"]) == ["A01", "A02", "A03"]
    assert (aggregated["Metadata_Object_Count"] > 0).all()
    for step in PROFILE_STEPS:
        assert (_profiles_dir(workdir, config, "OK") / f"OK_{step}.parquet").exists()
    # Every raw file, broken or not, has its bytes and modification time unchanged.
    assert _fingerprints(broken_run["data"]) == broken_run["raw_before"]


# --- an empty row, a blurred and a saturated site, benign platemap mismatches -----------------


def _platemap(data: Path) -> pd.DataFrame:
    """The example's platemap plus a well never imaged (D05) and B01 listed again as B1 with
    the same annotation: both reported, neither an error."""
    table = pd.read_csv(data / "platemap.csv", dtype=str, keep_default_na=False)
    extra = [
        {**table.set_index("well").loc["B01"].to_dict(), "well": "B1"},
        {"well": "D05", "treatment": "compound", "dose": "0.5", "control": "treated"},
    ]
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def _write_platemap(workdir: Path, table: pd.DataFrame, *, keep_mtime: bool = False) -> None:
    path = workdir / "platemap.csv"
    stat = path.stat() if keep_mtime else None
    table.to_csv(path, index=False)
    if stat is not None:
        # Rule ingest also takes the platemap as input; keeping the time means only the
        # profiles job (whose outputs the caller removes) runs again, not the image levels.
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def screened_run(tmp_path_factory):
    """Plate SCR (rows A-C x 3 columns x 2 sites): row C empty fields, A02 site 2 blurred in
    GFP and AGP, B03 site 1 saturated in GFP; qc.exclude [Saturation]; the platemap inside
    the workdir."""
    root = tmp_path_factory.mktemp("screened")
    data = root / "data"
    generate_example(data, plates=("SCR",), rows="ABC", columns=3, sites=2, size=SIZE, seed=5)
    images = data / "images/SCR"
    rng = np.random.default_rng(0)
    for path in images.glob("SCR_C*.tif"):
        # Camera offset and shot noise, no cells.
        tifffile.imwrite(path, (100 + rng.poisson(20, (SIZE, SIZE))).astype(np.uint16))
    for channel in (2, 3):
        # GFP and AGP out of focus, DNA sharp: the site is flagged and its nuclei still found.
        path = images / f"SCR_A02_s2_w{channel}.tif"
        tifffile.imwrite(path, ndimage.gaussian_filter(tifffile.imread(path), 3))
    path = images / "SCR_B03_s1_w2.tif"
    image = tifffile.imread(path)
    image[:20, :20] = np.iinfo(np.uint16).max  # 10 % of the pixels at the maximum
    tifffile.imwrite(path, image)
    workdir = root / "run"
    workdir.mkdir()
    _write_platemap(workdir, _platemap(data))
    # Relative to the workdir, so a copy of the workdir carries its own platemap.
    config = _config(data, ["SCR"], "platemap.csv", qc={"exclude": ["Saturation"]})
    run_snakemake(workdir, config, targets=_profile_targets(config, ["SCR"]))
    return workdir, config


def _platemap_of(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "platemap.csv", dtype=str, keep_default_na=False)


def _copy_run(screened_run, dest: Path) -> tuple[Path, dict]:
    """A copy of the screened run (times kept, so Snakemake sees it up to date)."""
    workdir, config = screened_run
    shutil.copytree(workdir, dest, symlinks=True)
    return dest, yaml.safe_load(yaml.safe_dump(config))


def _rerun_profiles(workdir: Path, config: dict, *, expect_failure: bool = False) -> str:
    """Remove the profiles and run their job again; return its log."""
    shutil.rmtree(workdir / "results/profiles")
    targets = _profile_targets(config, ["SCR"])
    if expect_failure:
        with pytest.raises(Exception):  # noqa: B017 - Snakemake raises its own error types
            run_snakemake(workdir, config, targets=targets)
    else:
        run_snakemake(workdir, config, targets=targets)
    return (workdir / f"logs/profiles/{main_version(config)}/SCR.log").read_text()


@pytest.mark.case("6", "empty field: empty masks, zero-row tables, well reported")
def test_empty_field_gives_empty_masks_zero_rows_and_a_reported_well(screened_run):
    workdir, config = screened_run
    version = main_version(config)
    masks = sorted((workdir / "results/masks" / version / "SCR/C01-C03").glob("*.tiff"))
    assert len(masks) == 3 * 2 * 3  # 3 wells x 2 sites x nuclei/cells/cytoplasm
    for path in masks:
        labels = tifffile.imread(path)
        assert labels.shape == (SIZE, SIZE) and labels.dtype.kind == "u", path
        assert not labels.any(), path
    empty = pd.read_parquet(workdir / f"results/features/{version}/SCR/C01-C03.parquet")
    full = pd.read_parquet(workdir / f"results/features/{version}/SCR/A01-A03.parquet")
    assert len(empty) == 0 and len(full) > 0
    assert list(empty.columns) == list(full.columns)
    assert dict(empty.dtypes) == dict(full.dtypes)
    # Aggregation copes: profiles for the six wells with cells ...
    wells_with_cells = [w for w in WELLS_ABC if not w.startswith("C")]
    for step in PROFILE_STEPS:
        assert sorted(_table(workdir, config, "SCR", step)["Metadata_Well"]) == wells_with_cells
    # ... and each empty well is reported as imaged without cells (not as never imaged).
    report = _table(workdir, config, "SCR", "platemap").set_index("Metadata_Well")
    assert report.loc[["C01", "C02", "C03"], "issue"].tolist() == ["no_cells"] * 3
    log = (workdir / f"logs/profiles/{version}/SCR.log").read_text()
    assert "imaged well(s) without any cell, no profile: ['C01', 'C02', 'C03']" in log
    # Wells in = wells out + wells reported.
    imaged = set(pd.read_parquet(workdir / "results/manifest/SCR.parquet")["Metadata_Well"])
    assert imaged == set(wells_with_cells) | set(report.index[report["issue"] == "no_cells"])


@pytest.mark.case("7", "saturated and blurred sites: flagged and counted, not dropped")
def test_saturated_and_blurred_sites_are_flagged_and_counted(screened_run):
    workdir, config = screened_run
    qc = pd.read_parquet(workdir / "results/qc/SCR.parquet")
    keys = ["Metadata_Well", "Metadata_Site"]
    blurred = qc.loc[qc["Flag_Blur"], keys].drop_duplicates().values.tolist()
    saturated = qc.loc[qc["Flag_Saturation"], [*keys, "channel"]].values.tolist()
    assert blurred == [["A02", 2]]
    assert saturated == [["B03", 1, "GFP"]]
    # Every image stays in the QC table, flagged or not.
    assert len(qc) == len(WELLS_ABC) * 2 * 3
    log = (workdir / "logs/qc/SCR.log").read_text()
    assert "'Blur': 1" in log and "'Saturation': 1" in log
    assert "QC flag: plate SCR well B03 site 1 channel GFP: Saturation" in log
    assert re.search(r"QC flag: plate SCR well A02 site 2 channel \w+: Blur", log)
    # qc.exclude [Saturation]: the saturated site is left out, and the correct job says so;
    # the blurred site, only flagged, is segmented and measured like any other.
    version = main_version(config)
    correct_log = (workdir / "logs/correct/SCR/B01-B03.log").read_text()
    assert "well B03 site 1 excluded by QC (Saturation)" in correct_log
    masks = workdir / "results/masks" / version / "SCR"
    assert not list(masks.glob("B01-B03/B03_s1_*.tiff"))
    assert len(list(masks.glob("A01-A03/A02_s2_*.tiff"))) == 3
    cells = pd.concat(
        pd.read_parquet(p) for p in (workdir / "results/features" / version / "SCR").iterdir()
    )
    sites = set(zip(cells["Metadata_Well"], cells["Metadata_Site"], strict=True))
    assert ("A02", 2) in sites and ("B03", 2) in sites and ("B03", 1) not in sites


@pytest.mark.case("8", "platemap mismatch either way, duplicates: error or report")
def test_platemap_benign_mismatches_are_reported_in_error_mode(screened_run):
    workdir, config = screened_run
    assert config["platemap"].get("on_mismatch", "error") == "error"
    report = _table(workdir, config, "SCR", "platemap")
    found = {(r.Metadata_Well, r.issue) for r in report.itertuples()}
    assert ("D05", "never_imaged") in found  # in the platemap, never imaged
    assert ("B01", "duplicate_well") in found  # B01 and B1, one annotation: kept once
    assert (None, "mixed_well_format") in found
    annotated = _table(workdir, config, "SCR", "annotated").set_index("Metadata_Well")
    assert annotated.loc["B01", "Metadata_control_type"] == "negative"
    # Platemap wells in = annotated + never imaged + imaged without cells.
    platemap_wells = set(WELLS_ABC) | {"D05"}
    reported = set(report.loc[report["issue"].isin(["never_imaged", "no_cells"]), "Metadata_Well"])
    assert set(annotated.index) | reported == platemap_wells
    assert not set(annotated.index) & reported


@pytest.mark.case("8", "platemap mismatch either way, duplicates: error or report")
@pytest.mark.parametrize(
    ("edit", "message", "at_start"),
    [
        (
            lambda table: table[table["well"] != "A02"],
            "plate SCR: imaged well(s) missing from the platemap: ['A02']",
            False,
        ),
        (
            lambda table: pd.concat([table, table[table["well"] == "A03"].assign(dose="7")]),
            "well A03 listed more than once: 2 rows differ in ['Metadata_dose']",
            True,
        ),
    ],
    ids=["imaged-well-missing", "conflicting-duplicate"],
)
def test_platemap_mismatch_stops_the_plate_in_error_mode(
    screened_run, tmp_path, edit: Callable, message, at_start
):
    workdir, config = _copy_run(screened_run, tmp_path / "run")
    _write_platemap(workdir, edit(_platemap_of(workdir)), keep_mtime=True)
    if at_start:
        # What the platemap alone shows is refused when the workflow starts, before any job
        # (case 14.3): nothing is run, the profiles are kept.
        kept = sorted((workdir / "results/profiles").rglob("*.parquet"))
        with pytest.raises(Exception, match=re.escape(message)):
            run_snakemake(workdir, config, targets=_profile_targets(config, ["SCR"]))
        assert kept and all(p.is_file() for p in kept)
        return
    log = _rerun_profiles(workdir, config, expect_failure=True)
    assert message in log
    assert not any(p.is_file() for p in (workdir / "results/profiles").rglob("*"))


@pytest.mark.case("8", "platemap mismatch either way, duplicates: error or report")
def test_platemap_mismatch_is_kept_and_reported_in_report_mode(screened_run, tmp_path):
    workdir, config = _copy_run(screened_run, tmp_path / "run")
    table = _platemap_of(workdir)
    # A02 imaged but not in the platemap; A03 listed twice with different doses.
    table = pd.concat(
        [table[table["well"] != "A02"], table[table["well"] == "A03"].assign(dose="7")]
    )
    _write_platemap(workdir, table, keep_mtime=True)
    config["platemap"]["on_mismatch"] = "report"
    _rerun_profiles(workdir, config)
    annotated = _table(workdir, config, "SCR", "annotated").set_index("Metadata_Well")
    report = _table(workdir, config, "SCR", "platemap")
    found = {
        (r.Metadata_Well, r.issue) for r in report.dropna(subset=["Metadata_Well"]).itertuples()
    }
    assert found == {
        ("A02", "not_in_platemap"),
        # Its two rows disagree, so it is left out of the platemap, and then it is an imaged
        # well the platemap lacks.
        ("A03", "conflicting_duplicate"),
        ("A03", "not_in_platemap"),
        ("B01", "duplicate_well"),
        ("C01", "no_cells"),
        ("C02", "no_cells"),
        ("C03", "no_cells"),
        ("D05", "never_imaged"),
    }
    # Neither well vanished: both kept, unannotated, so never taken as controls.
    assert annotated.loc[["A02", "A03"], "Metadata_control_type"].tolist() == ["unannotated"] * 2
    assert annotated.loc["A01", "Metadata_control_type"] == "negative"
    # Imaged wells in = profiles out + wells reported without cells.
    imaged = set(pd.read_parquet(workdir / "results/manifest/SCR.parquet")["Metadata_Well"])
    empty = {well for well, issue in found if issue == "no_cells"}
    assert len(imaged) == len(annotated) + len(empty)
    assert imaged == set(annotated.index) | empty
    for step in ("normalized", "feature_selected"):
        assert len(_table(workdir, config, "SCR", step)) == len(annotated)


# --- poisoned features between levels (case 9) ------------------------------------------------

POISON = {
    "Nuclei_Intensity_PoisonInf": "some cells +Inf or -Inf",
    "Nuclei_Intensity_PoisonSomeNaN": "some cells NaN",
    "Nuclei_Intensity_PoisonAllNaN": "every cell NaN",
    "Nuclei_Intensity_PoisonConstant": "one value in every cell: zero MAD everywhere",
    "Nuclei_Intensity_PoisonControlConstant": "one value in the negative controls only",
}


def _poison(path: Path, negative_wells: set[str]) -> dict[str, tuple[int, int]]:
    """Add the POISON features to a single-cell table; return their (NaN, Inf) cell counts."""
    cells = pd.read_parquet(path)
    n = len(cells)
    rng = np.random.default_rng(sum(path.name.encode()))
    values = rng.normal(10, 1, n)
    inf = values.copy()
    inf[::5] = np.inf
    inf[1::7] = -np.inf
    some_nan = values.copy()
    some_nan[::4] = np.nan
    negative = cells["Metadata_Well"].isin(negative_wells).to_numpy()
    columns = {
        "Nuclei_Intensity_PoisonInf": inf,
        "Nuclei_Intensity_PoisonSomeNaN": some_nan,
        "Nuclei_Intensity_PoisonAllNaN": np.full(n, np.nan),
        "Nuclei_Intensity_PoisonConstant": np.full(n, 3.0),
        "Nuclei_Intensity_PoisonControlConstant": np.where(negative, 1.0, values),
    }
    poisoned = cells.assign(**{k: v.astype(np.float32) for k, v in columns.items()})
    poisoned.to_parquet(path, index=False)
    return {k: (int(np.isnan(v).sum()), int(np.isinf(v).sum())) for k, v in columns.items()}


@pytest.mark.case("9", "NaN/Inf, all-NaN, zero-MAD features: finite profiles, named")
def test_nonfinite_and_flat_features_give_finite_profiles_and_named_reports(screened_run, tmp_path):
    workdir, config = _copy_run(screened_run, tmp_path / "run")
    version = main_version(config)
    counts: dict[str, np.ndarray] = {}
    for path in sorted((workdir / "results/features" / version / "SCR").glob("*.parquet")):
        # Newer single-cell tables: Snakemake re-runs only the profiles job, as it would
        # after any change between the two levels.
        for name, found in _poison(path, {"A01", "B01", "C01"}).items():
            counts[name] = counts.get(name, np.zeros(2, int)) + found
    run_snakemake(workdir, config, targets=_profile_targets(config, ["SCR"]))
    # The features job did not run again (that would have measured the poison away).
    for path in (workdir / "results/features" / version / "SCR").glob("*.parquet"):
        assert set(POISON) <= set(pd.read_parquet(path).columns), path

    nonfinite = _table(workdir, config, "SCR", "nonfinite").set_index("feature")
    for name in ("Nuclei_Intensity_PoisonInf", "Nuclei_Intensity_PoisonSomeNaN"):
        assert nonfinite.loc[name, ["nan", "inf"]].tolist() == counts[name].tolist(), name
    assert (
        nonfinite.loc["Nuclei_Intensity_PoisonAllNaN", "nan"]
        == counts["Nuclei_Intensity_PoisonAllNaN"][0]
    )
    normalization = _table(workdir, config, "SCR", "normalization").set_index("feature")
    assert normalization.loc["Nuclei_Intensity_PoisonAllNaN", "issue"] == "no_reference_value"
    for name in ("Nuclei_Intensity_PoisonConstant", "Nuclei_Intensity_PoisonControlConstant"):
        assert normalization.loc[name, ["issue", "action"]].tolist() == ["zero_mad", "left out"]
    log = (workdir / f"logs/profiles/{version}/SCR.log").read_text()
    assert "Nuclei_Intensity_PoisonControlConstant" in log and "left out" in log

    # No profile holds an Inf; the features that cannot be scaled are gone, not 1e18 or NaN
    # columns; Inf and scattered NaN cells leave a finite per-well value.
    for step in PROFILE_STEPS:
        table = _table(workdir, config, "SCR", step)
        numbers = table.select_dtypes("number").to_numpy(np.float64)
        assert not np.isinf(numbers).any(), step
        for name in ("Nuclei_Intensity_PoisonInf", "Nuclei_Intensity_PoisonSomeNaN"):
            if name in table:
                assert np.isfinite(table[name]).all(), (step, name)
    normalized = _table(workdir, config, "SCR", "normalized")
    flat = [
        "Nuclei_Intensity_PoisonAllNaN",
        "Nuclei_Intensity_PoisonConstant",
        "Nuclei_Intensity_PoisonControlConstant",
    ]
    assert not set(flat) & set(normalized.columns)
    assert np.isfinite(normalized["Nuclei_Intensity_PoisonInf"]).all()
    selected = _table(workdir, config, "SCR", "feature_selected")
    features = [c for c in selected if not c.startswith("Metadata_")]
    assert features and np.isfinite(selected[features].to_numpy(np.float64)).all()


# --- hostile names (case 14) ------------------------------------------------------------------

#: Where a `touch pwned` run from the repository would leave its file.
REPO_PWNED = Path(__file__).resolve().parents[2] / "pwned"

HOSTILE_PLATES = [
    "plate one",
    "P1;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "P1|x",
    "..",
    "../escape",
    "P1/../../escape",
    "P1..x",
]


def _tree(root: Path, *, skip: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if skip != p and skip not in p.parents
    }


@pytest.mark.case("14", "hostile plate/well/file names: refused, nothing escapes")
def test_hostile_plate_names_are_refused_by_validate_and_the_snakefile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command that ran `touch pwned` would leave it here
    generate_example(tmp_path, plates=("P1",), rows="A", columns=3, sites=1, size=SIZE)
    workdir = tmp_path / "run"
    before = _tree(tmp_path, skip=workdir)
    for name in HOSTILE_PLATES:
        config = _config(tmp_path, ["P1"], tmp_path / "platemap.csv")
        config["plates"][0]["name"] = name
        path = tmp_path / "hostile.yaml"
        path.write_text(yaml.safe_dump(config))
        # Only around the command: pytest's capsys would also capture Snakemake's log
        # streams, which its job subprocesses then cannot use.
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            assert cellstrata(["validate", str(path)]) == 1, name
        err = stderr.getvalue()
        assert "does not match" in err and repr(name)[1:-1] in err, err
        path.unlink()
    # The Snakefile validates the same schema before it builds a job (three of them; each
    # Snakemake start costs a second or two).
    for name in ("P1;touch pwned", "$(touch pwned)", "../escape"):
        config = _config(tmp_path, ["P1"], tmp_path / "platemap.csv")
        config["plates"][0]["name"] = name
        with pytest.raises(Exception, match="does not match"):
            run_snakemake(workdir, config, dryrun=True)
    assert not list(tmp_path.rglob("pwned")) and not REPO_PWNED.exists()
    assert not (workdir / "results").exists()
    # Nothing appeared beside the workdir (an escaping path would land there or above).
    assert _tree(tmp_path, skip=workdir) == before


#: File names dropped into a plate's image root next to its good images.
HOSTILE_FILES = [
    "H1_A01_s1_w1 ;touch pwned.tif",
    "H1_A01_s1_w1.tif;touch pwned.tif",
    "..H1_A01_s1_w1.tif",
    "H1_..A01_s1_w1.tif",
    "$(touch pwned)_A01_s1_w1.tif",
    "H1_A01_s..;touch pwned_w1.tif",
]


@pytest.mark.case("14", "hostile plate/well/file names: refused, nothing escapes")
def test_hostile_file_names_are_ignored_or_refused_and_nothing_escapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    generate_example(data, plates=("H1",), rows="A", columns=3, sites=1, size=SIZE, seed=2)
    images = data / "images/H1"
    good = sorted(p.name for p in images.iterdir())
    for name in HOSTILE_FILES:
        shutil.copy(images / "H1_A01_s1_w1.tif", images / name)
    workdir = tmp_path / "run"
    before = _tree(tmp_path, skip=workdir)

    # The configured pattern does not match them: ignored, the manifest lists the good files.
    config = _config(data, ["H1"], data / "platemap.csv")
    run_snakemake(workdir, config, targets=["results/manifest/H1.parquet"])
    manifest = pd.read_parquet(workdir / "results/manifest/H1.parquet")
    assert sorted(Path(p).name for p in manifest["path"]) == good
    # A wildcard value the config does not name is no target: no rule makes it.
    with pytest.raises(Exception, match="MissingRuleException|No rule to produce"):
        run_snakemake(workdir, config, targets=["results/manifest/H1;touch pwned.parquet"])

    # A pattern loose enough to capture them: the run is refused before any job, naming the
    # file (well and site become output file names, so only real ones are accepted).
    loose = r"(?P<plate>[^_/]+)_(?P<well>[^_/]+)_s(?P<site>[^_/]+)_w(?P<channel>\d)\.tif"
    for victim, what in (
        ("H1_..A01_s1_w1.tif", "cannot read well '..A01'"),
        ("H1_A01_s..;touch pwned_w1.tif", "cannot read site '..;touch pwned'"),
    ):
        for name in HOSTILE_FILES:
            (images / name).unlink(missing_ok=True)
        shutil.copy(images / "H1_A01_s1_w1.tif", images / victim)
        config["images"] = {"pattern": loose}
        fresh = tmp_path / f"loose-{len(what)}"
        with pytest.raises(Exception, match=re.escape(what)) as refused:
            run_snakemake(fresh, config)
        assert victim in str(refused.value)
        assert not (fresh / "results").exists()
        (images / victim).unlink()
    assert not list(tmp_path.rglob("pwned")) and not REPO_PWNED.exists()
    # Outside the workdirs nothing was created or changed but the image root's own files.
    after = _tree(tmp_path, skip=workdir)
    new = {p for p in after - before if not p.startswith("loose-")}
    assert new == set(), new

"""Reliability, silent omissions and messages that say nothing (issue 15, cases 4-9): files
ingest skips are counted with the reason, z-stacks are refused at ingest, every wrapped DVC
failure carries DVC's message and what to do, remotes whose DVC plugin is missing are refused
at validation, the workspace is found from a subdirectory, and status, storage plan and the
config validation say what is true.

One tiny workflow run (``base_run``: one plate, 3 wells, 64 x 64 px, crops off, features
archived, a few files in the image root that ingest must skip) is copied into a fresh
workspace per test, as tests/reliability/test_stewardship_faults.py does; cases that need no
workflow call the package functions or the ``cellstrata`` command directly.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, example_config, main_version, run_snakemake, write_plate

from cellstrata.cli import main as cellstrata_main
from cellstrata.config import (
    ConfigError,
)
from cellstrata.example import generate_example
from cellstrata.images.ingest import IngestError, write_manifest
from cellstrata.workflow.validate import (
    check_config,
    load_config,
)

from .test_stewardship_faults import (
    _base_config as stewardship_config,
)
from .test_stewardship_faults import (
    _cellstrata,
    _remote_dirs,
    _state,
    _workspace,
    _write_config,
)

SIZE = 64
PLATE = "OM1"
#: Files in the image root that ingest must skip, and why.
UNMAPPED = f"{PLATE}_A01_s1_w7.tif"  # channel token 7 is not in `channels`
UNMATCHED = f"{PLATE}_A02_s1_w1_thumb.tif"  # the pattern does not match


def _base_config(data: Path) -> dict:
    """The stewardship suites' tiny config of this plate, without crops."""
    config = stewardship_config(data, PLATE)
    config["crops"] = {"enabled": False}
    config["retention"] = {"levels": {"corrected": "delete", "features": "archive"}}
    return config


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("omissions")
    data = root / "data"
    generate_example(data, plates=(PLATE,), rows="A", columns=3, sites=1, size=SIZE, seed=3)
    images = data / "images" / PLATE
    shutil.copy(images / f"{PLATE}_A01_s1_w1.tif", images / UNMAPPED)
    shutil.copy(images / f"{PLATE}_A02_s1_w1.tif", images / UNMATCHED)
    (images / "notes.txt").write_text("not an image: not counted\n")
    workdir = root / "base"
    workdir.mkdir()
    shutil.copy(data / "platemap.csv", workdir / "platemap.csv")
    config = _base_config(data)
    run_snakemake(workdir, config, targets=["results/summary.txt"])
    return workdir, config


def _features(workspace: Path, config: dict) -> Path:
    return workspace / f"results/features/{main_version(config)}/{PLATE}/A01-A03.parquet"


def _cli(*args: str, cwd: Path, monkeypatch) -> tuple[int, str]:
    """Run ``cellstrata`` in-process from ``cwd`` with the arguments as given (no
    ``--workspace`` added): what a user types in a shell."""
    monkeypatch.chdir(cwd)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cellstrata_main(list(args))
    return code, out.getvalue()


# --- case 4: skipped files counted with the reason; never-imaged platemap wells -------------


@pytest.mark.case("15.4", "skipped files counted with why; never-imaged wells option")
def test_skipped_image_files_are_counted_with_the_reason_in_log_and_summary(base_run):
    workspace, _ = base_run
    log = (workspace / f"logs/ingest/{PLATE}.log").read_text()
    summary = (workspace / "results/summary.txt").read_text()
    for text in (log, summary):
        # Per plate: how many, and why, with an example of each (notes.txt is no image).
        assert f"plate {PLATE}: 2 image file(s) skipped" in text, text
        assert f"1 not matching images.pattern (e.g. {UNMATCHED})" in text, text
        assert f"1 with a channel token not in channels: '7' (e.g. {UNMAPPED})" in text, text
        assert "notes.txt" not in text
    # The manifest holds only the images used.
    manifest = pd.read_parquet(workspace / f"results/manifest/{PLATE}.parquet")
    assert len(manifest) == 3 * 3
    assert not manifest["path"].str.contains("w7|thumb").any()


@pytest.mark.case("15.4", "skipped files counted with why; never-imaged wells option")
def test_never_imaged_platemap_wells_are_reported_by_default_and_an_error_on_request(
    base_run, tmp_path
):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    platemap = pd.read_csv(workspace / "platemap.csv", dtype=str, keep_default_na=False)
    extra = pd.DataFrame(
        [
            # A treated well never imaged (the lab's pattern missed it) ...
            {**platemap.iloc[1].to_dict(), "well": "A04"},
            # ... and an empty well of the platemap: no treatment, nothing to miss.
            {**dict.fromkeys(platemap.columns, ""), "well": "A05"},
        ]
    )
    before = (workspace / "platemap.csv").stat()
    pd.concat([platemap, extra]).to_csv(workspace / "platemap.csv", index=False)
    # Its old time: only the profiles are redone here (an edit re-running more is case 15.1).
    os.utime(workspace / "platemap.csv", ns=(before.st_atime_ns, before.st_mtime_ns))
    version = main_version(config)
    target = f"results/profiles/{version}/{PLATE}/{PLATE}_feature_selected.parquet"
    profiles = workspace / "results/profiles" / version / PLATE
    # Default (report): the plate's profiles are made, both wells reported.
    assert load_config(_write_config(workspace, config))["platemap"]["never_imaged"] == "report"
    shutil.rmtree(profiles)
    run_snakemake(workspace, config, targets=[target])
    report = pd.read_parquet(profiles / f"{PLATE}_platemap.parquet")
    assert {"A04", "A05"} <= set(report.loc[report["issue"] == "never_imaged", "Metadata_Well"])
    # error: the treated well stops the plate, named with the option that decides it.
    config["platemap"] = {**config.get("platemap", {}), "never_imaged": "error"}
    shutil.rmtree(profiles)
    with pytest.raises(Exception):  # noqa: B017 - Snakemake raises its own error types
        run_snakemake(workspace, config, targets=[target])
    log = (workspace / f"logs/profiles/{version}/{PLATE}.log").read_text()
    assert f"plate {PLATE}: platemap well(s) with a treatment never imaged: ['A04']" in log
    assert "platemap.never_imaged" in log
    assert not profiles.exists() or not any(profiles.glob("*.parquet"))
    # The shipped configs image part of their platemaps: they keep the default.
    for name in ("bbbc013.yaml", "nf1.yaml"):
        shipped = yaml.safe_load((REPO / "config/examples" / name).read_text())
        assert shipped.get("platemap", {}).get("never_imaged", "report") == "report"


# --- case 5: z-stacks refused at ingest ----------------------------------------------------


@pytest.mark.case("15.5", "multi-page z-stack refused at ingest, named")
@pytest.mark.parametrize("writer", ["stack", "appended"])
def test_a_multi_page_z_stack_is_refused_at_ingest_naming_plate_well_site_channel(tmp_path, writer):
    config = example_config(tmp_path)
    channels = config["channels"]
    root = tmp_path / "images"
    write_plate(root, plate="ZS", wells=("A01", "A02"), sites=1, channels=list(channels))
    stack = root / "ZS_A02_s1_w2.tif"
    planes = np.random.default_rng(1).integers(0, 1000, (3, 32, 32)).astype(np.uint16)
    if writer == "stack":  # one series of 3 pages, as microscopes write a z-stack
        tifffile.imwrite(stack, planes, photometric="minisblack")
    else:  # 3 pages of one plane each
        for index, plane in enumerate(planes):
            tifffile.imwrite(stack, plane, append=index > 0)
    with pytest.raises(IngestError) as caught:
        write_manifest(
            "ZS", root, config["images"]["pattern"], channels, tmp_path / "manifest.parquet"
        )
    message = str(caught.value)
    assert f"plate ZS well A02 site 1 channel {channels['2']} ({stack}):" in message, message
    assert "3 pages" in message and "one 2-D plane per file" in message, message
    assert not (tmp_path / "manifest.parquet").exists()


# --- case 6: wrapped DVC failures say DVC's message and what to do; dry runs check ---------


@pytest.mark.case("15.6", "DVC failures carry DVC's message + what to do; dry run checks")
@pytest.mark.parametrize("command", ["push", "archive"])
def test_dvc_failures_show_dvcs_message_and_what_to_do(base_run, tmp_path, command):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    features = _features(workspace, config).read_bytes()
    code, out = _cellstrata(workspace, command)
    assert code == 1, out
    # DVC's own words (it prints them only without --quiet) and the command that mends it.
    assert "you are not inside of a DVC repository" in out, out
    assert "cellstrata dvc setup" in out, out
    assert "Traceback" not in out
    assert _features(workspace, config).read_bytes() == features


@pytest.mark.case("15.6", "DVC failures carry DVC's message + what to do; dry run checks")
def test_archive_dry_run_checks_what_the_real_run_needs(base_run, tmp_path):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    features = _features(workspace, config)
    # No DVC: the dry run fails as the real run would, saying what to do.
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 1 and "would archive" not in out, out
    assert "DVC is not initialised" in out and "cellstrata dvc setup" in out, out
    # DVC set up, then the archive remote removed by hand: named, with the fix.
    _remote_dirs(workspace)
    assert _cellstrata(workspace, "dvc", "setup")[0] == 0
    dvc_config = workspace / ".dvc/config"
    text = dvc_config.read_text()
    dvc_config.write_text(text.replace("['remote \"archive\"']", "['remote \"elsewhere\"']"))
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 1 and "would archive" not in out, out
    assert "remote 'archive'" in out and "cellstrata dvc setup" in out, out
    # A dvc.yaml without the stage the archive commits: named too.
    dvc_config.write_text(text)
    dvc_yaml = workspace / "dvc.yaml"
    written = dvc_yaml.read_text()
    stages = yaml.safe_load(written)
    stage = next(name for name in stages["stages"] if name.startswith("features"))
    del stages["stages"][stage]
    dvc_yaml.write_text(yaml.safe_dump(stages))
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 1 and stage in out and "cellstrata dvc setup" in out, out
    # Everything in place: the dry run lists what it would archive, and removes nothing.
    dvc_yaml.write_text(written)
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 0 and "would archive" in out, out
    assert features.exists()


# --- case 7: remotes whose DVC plugin is missing --------------------------------------------


@pytest.mark.case("15.7", "ssh:// remotes work; missing DVC plugin refused at validation")
@pytest.mark.parametrize(
    ("url", "package"),
    [("gs://lab-bucket/archive", "dvc-gs"), ("azure://lab/archive", "dvc-azure")],
)
def test_a_remote_whose_dvc_plugin_is_missing_is_refused_at_validation(
    base_run, tmp_path, url, package
):
    _, config = base_run
    config = yaml.safe_load(yaml.safe_dump(config))
    config["storage"] = {"remotes": {"archive": {"url": url}}}
    path = _write_config(tmp_path, config)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "storage.remotes.archive.url" in message and url in message, message
    assert f"pip install {package}" in message, message
    assert cellstrata_main(["validate", str(path)]) == 1


@pytest.mark.case("15.7", "ssh:// remotes work; missing DVC plugin refused at validation")
def test_an_ssh_remote_is_usable_and_an_unreachable_one_fails_without_a_traceback(
    base_run, tmp_path
):
    # Nothing listens on port 9 of this host: the push fails, DVC's plugin is there.
    workspace, config = _workspace(
        base_run,
        tmp_path / "ws",
        storage={"remotes": {"archive": {"url": "ssh://127.0.0.1:9/srv/archive"}}},
    )
    load_config(workspace / "config.yaml")  # valid: dvc-ssh is a dependency
    _remote_dirs(workspace)
    assert _cellstrata(workspace, "dvc", "setup")[0] == 0
    code, out = _cellstrata(workspace, "archive")
    assert code == 1, out
    assert "Traceback" not in out and "nothing removed locally" in out, out
    assert "Connect call failed" in out and "the remote cannot be reached" in out, out
    assert _features(workspace, config).exists()


# --- case 8: the workspace found from a subdirectory; paths as the shell gives them --------


@pytest.mark.case("15.8", "workspace found from a subdirectory; absolute provenance paths")
def test_status_from_a_subdirectory_finds_the_workspace_or_fails_clearly(
    base_run, tmp_path, monkeypatch
):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    _remote_dirs(workspace)
    assert _cellstrata(workspace, "dvc", "setup")[0] == 0  # the workspace now has .dvc/
    expected = _state(workspace)
    assert expected["features"] == "present"
    subdirectory = _features(workspace, config).parent
    code, out = _cli(
        "status",
        "--config",
        "../../../../config.yaml",
        "--json",
        cwd=subdirectory,
        monkeypatch=monkeypatch,
    )
    assert code == 0, out
    found = pd.read_json(io.StringIO(out)).set_index("level")["state"].to_dict()
    assert found == expected
    # Outside any workspace: an error saying how to name it, not a table of "missing".
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out = _cli(
        "status", "--config", str(workspace / "config.yaml"), cwd=elsewhere, monkeypatch=monkeypatch
    )
    assert code == 1 and "missing" not in out, out
    assert "no cellstrata workspace" in out and "--workspace" in out, out


@pytest.mark.case("15.8", "workspace found from a subdirectory; absolute provenance paths")
def test_provenance_accepts_absolute_and_cwd_relative_paths(base_run, tmp_path, monkeypatch):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    features = _features(workspace, config)
    relative = features.relative_to(workspace).as_posix()
    code, expected = _cellstrata(workspace, "provenance", relative)
    assert code == 0 and "features" in expected, expected
    code, out = _cellstrata(workspace, "provenance", str(features))
    assert (code, out) == (0, expected)
    code, out = _cli(
        "provenance",
        features.name,
        "--config",
        str(workspace / "config.yaml"),
        "--workspace",
        str(workspace),
        cwd=features.parent,
        monkeypatch=monkeypatch,
    )
    assert (code, out) == (0, expected)
    # A file outside the workspace: said so, not "no provenance record".
    code, out = _cellstrata(workspace, "provenance", str(tmp_path / "elsewhere.parquet"))
    assert code == 1 and "outside the workspace" in out, out


# --- case 9: crops not built, raw counted by the pattern, plate names by case ---------------


@pytest.mark.case("15.9", "status/plan/validation: crops off, platemap in root, name case")
def test_status_says_not_built_for_crops_when_crops_are_off(base_run, tmp_path):
    workspace, _ = _workspace(base_run, tmp_path / "ws")
    state = _state(workspace)
    assert state["crops"] == "not built", state
    summary = (workspace / "results/summary.txt").read_text()
    assert any(line.startswith("crops") and "not built" in line for line in summary.splitlines())


@pytest.mark.case("15.9", "status/plan/validation: crops off, platemap in root, name case")
def test_storage_plan_counts_only_images_the_pattern_matches(base_run, tmp_path):
    _, config = base_run
    images = tmp_path / "ws/images"
    shutil.copytree(config["plates"][0]["images"], images)
    # The platemap beside the images, as labs often keep it.
    shutil.copy(base_run[0] / "platemap.csv", images / "platemap.csv")
    config = yaml.safe_load(yaml.safe_dump(config))
    config["plates"][0].update(images="images", platemap="images/platemap.csv")
    workspace = tmp_path / "ws"
    _write_config(workspace, config)
    code, out = _cellstrata(workspace, "storage", "plan", "--json")
    assert code == 0, out
    plan = pd.read_json(io.StringIO(out))
    raw = plan[plan["level"] == "raw"].iloc[0]
    images_used = sorted(images.glob(f"{PLATE}_A0?_s1_w[123].tif"))
    assert raw["files"] == len(images_used) == 9, raw.to_dict()
    assert raw["bytes"] == sum(p.stat().st_size for p in images_used)


@pytest.mark.case("15.9", "status/plan/validation: crops off, platemap in root, name case")
def test_plate_names_differing_only_in_case_are_refused(base_run):
    _, config = base_run
    config = yaml.safe_load(yaml.safe_dump(config))
    first = config["plates"][0]
    config["plates"] = [{**first, "name": "BBBC013"}, {**first, "name": "bbbc013"}]
    from snakemake.utils import validate

    from cellstrata.config import SCHEMA_PATH

    validate(config, str(SCHEMA_PATH))
    with pytest.raises(ConfigError, match=r"BBBC013.*bbbc013.*differ only in case"):
        check_config(config)

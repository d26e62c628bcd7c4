"""Reliability, issue 14 cases 1 and 2: what a workspace holds stays in stewardship across
method versions and experiments.

1. A segmentation parameter change makes a new version (``classical-<hash>``) beside the old
   one. The old one stays known to every command (status, storage plan, dvc.yaml, push,
   archive, pull) until ``cellstrata retire`` retires it, which removes nothing a remote does
   not verifiably hold.
2. A second config that would overwrite another experiment's data in the same workspace (a
   plate name reused, or the experiment-level tables of the same version) is refused before any
   job, naming both; ``cellstrata adopt`` takes data over explicitly (raw images moved to a new
   mount, an experiment renamed).

One tiny run (one plate, 64 x 64 px) is made once, then segmented again with another nucleus
diameter; each test works on a copy of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import check_dvc_yaml, main_version, run_snakemake, snakemake_command

from cellstrata.example import generate_example
from cellstrata.stewardship.status import (
    status,
)
from cellstrata.stewardship.storage import storage_plan
from cellstrata.stewardship.tracked import (
    StewardshipError,
    locked_outputs,
)
from cellstrata.workflow.validate import (
    load_config,
)

from .test_stewardship_faults import PLATE, _base_config, _cellstrata, _md5s, _write_config

EXPERIMENT = "screen-a"


def _config(data: Path) -> dict:
    config = _base_config(data)
    config["experiment"] = EXPERIMENT
    config["crops"] = {"enabled": False}
    config["retention"] = {
        "levels": {"corrected": "delete", "masks": "archive", "features": "keep"}
    }
    return config


def _targets(config: dict) -> list[str]:
    version = main_version(config)
    return [
        f"results/profiles/{version}/{PLATE}/{PLATE}_feature_selected.parquet",
        f"results/experiment/{version}/consensus.parquet",
    ]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """A workspace holding two segmentation versions of one plate: the old one first made
    with nucleus diameter 5, then the config changed to diameter 6 and run again."""
    root = tmp_path_factory.mktemp("versions")
    data = root / "data"
    generate_example(data, plates=(PLATE,), rows="A", columns=3, sites=1, size=64, seed=7)
    workdir = root / "base"
    workdir.mkdir()
    shutil.copy(data / "platemap.csv", workdir / "platemap.csv")
    config = _config(data)
    run_snakemake(workdir, config, targets=_targets(config))
    old = main_version(config)
    config["segmentation"]["nuclei"] = {"diameter": 6}
    run_snakemake(workdir, config, targets=_targets(config))
    new = main_version(config)
    assert old != new
    return workdir, config, data, old, new


def _workspace(two_versions, dest: Path) -> tuple[Path, dict]:
    """A copy of the two-version workspace with its own directory remotes (created)."""
    workdir, config, *_ = two_versions
    shutil.copytree(workdir, dest, symlinks=True)
    config = yaml.safe_load(yaml.safe_dump(config))
    remotes = {}
    for role in ("default", "archive"):
        path = dest.parent / f"{dest.name}-{role}-remote"
        path.mkdir()
        remotes[role] = {"url": str(path)}
    config["storage"] = {"remotes": remotes}
    _write_config(dest, config)
    return dest, config


def _stages(workspace: Path) -> set[str]:
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    return {next(iter(stage["outs"][0])) for stage in stages.values()}


def _states(workspace: Path, version: str) -> dict[str, str]:
    table = status(load_config(workspace / "config.yaml"), workspace)
    rows = table[table["version"] == version]
    return rows.set_index("level")["state"].to_dict()


# --- case 14.1: old method versions stay in stewardship ----------------------------------------


@pytest.mark.case("14.1", "old method versions stay known until retired")
def test_an_old_version_is_pushed_archived_counted_and_pulled(two_versions, tmp_path):
    workspace, config = _workspace(two_versions, tmp_path / "ws")
    *_, old, new = two_versions
    masks, features = (f"results/{level}/{old}/{PLATE}" for level in ("masks", "features"))
    profiles = f"results/profiles/{old}/{PLATE}"
    # status and the storage plan see both versions, the config naming only the new one.
    for version in (old, new):
        states = _states(workspace, version)
        assert states["masks"] == states["features"] == states["profiles"] == "present", version
    plan = storage_plan(load_config(workspace / "config.yaml"), workspace)
    assert plan.loc[plan["version"] == old, "bytes"].sum() > 0
    # dvc.yaml tracks the old version's levels, and keeps them when generated again.
    code, out = _cellstrata(workspace, "dvc", "setup")
    assert code == 0, out
    assert {masks, features, profiles, f"results/experiment/{old}"} <= _stages(workspace)
    # The drift check covers the config plus the recorded versions: a dvc.yaml without the
    # old version's stages drifts.
    config_path = str(workspace / "config.yaml")
    check_dvc_yaml(load_config(config_path), config_path, workspace)
    text = (workspace / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    (workspace / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {k: v for k, v in stages.items() if old not in str(v)}})
    )
    with pytest.raises(StewardshipError, match="does not match"):
        check_dvc_yaml(load_config(config_path), config_path, workspace)
    (workspace / "dvc.yaml").write_text(text)
    # push sends the old version's kept levels too ...
    code, out = _cellstrata(workspace, "push")
    assert code == 0, out
    locked = locked_outputs(workspace)
    assert features in locked and profiles in locked
    # ... archive archives its masks (verified on the remote, then removed) ...
    kept = _md5s(workspace, masks)
    code, out = _cellstrata(workspace, "archive")
    assert code == 0, out
    assert masks in out and not (workspace / masks).exists()
    assert _states(workspace, old)["masks"] == "archived"
    code, out = _cellstrata(workspace, "dvc", "setup")
    assert code == 0, out
    assert masks in _stages(workspace)
    # ... and pull brings them back bit for bit.
    code, out = _cellstrata(workspace, "pull", masks)
    assert code == 0, out
    assert _md5s(workspace, masks) == kept


@pytest.mark.case("14.1", "old method versions stay known until retired")
def test_retire_removes_only_what_a_remote_verifiably_holds(two_versions, tmp_path):
    workspace, config = _workspace(two_versions, tmp_path / "ws")
    *_, old, new = two_versions
    code, out = _cellstrata(workspace, "dvc", "setup")
    assert code == 0, out
    old_dirs = [f"results/{level}/{old}/{PLATE}" for level in ("masks", "features", "profiles")] + [
        f"results/experiment/{old}"
    ]
    before = {path: _md5s(workspace, path) for path in old_dirs}
    assert all(before.values())
    # The version the config makes cannot be retired; an unknown one neither.
    code, out = _cellstrata(workspace, "retire", new)
    assert code == 1 and "current config" in out, out
    code, out = _cellstrata(workspace, "retire", "classical-00000000")
    assert code == 1 and old in out, out
    # The default remote cannot take the kept levels: nothing is removed.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the remote's parent should be")
    broken = yaml.safe_load(yaml.safe_dump(config))
    broken["storage"]["remotes"]["default"]["url"] = str(blocker / "remote")
    _write_config(workspace, broken)
    code, out = _cellstrata(workspace, "dvc", "setup")
    code, out = _cellstrata(workspace, "retire", old)
    assert code == 1, out
    assert "nothing removed" in out
    assert {path: _md5s(workspace, path) for path in old_dirs} == before
    # With a working remote the version is pushed, verified, removed and forgotten.
    _write_config(workspace, config)
    code, out = _cellstrata(workspace, "dvc", "setup")
    assert code == 0, out
    code, out = _cellstrata(workspace, "retire", old, "--dry-run")
    assert code == 0 and all(path in out for path in old_dirs), out
    assert {path: _md5s(workspace, path) for path in old_dirs} == before
    code, out = _cellstrata(workspace, "retire", old)
    assert code == 0, out
    assert not any((workspace / path).exists() for path in old_dirs)
    assert old not in set(status(load_config(workspace / "config.yaml"), workspace)["version"])
    assert not any(old in stage for stage in _stages(workspace))
    code, out = _cellstrata(workspace, "dvc", "setup")
    assert not any(old in stage for stage in _stages(workspace))
    plan = storage_plan(load_config(workspace / "config.yaml"), workspace)
    assert old not in set(plan["version"])
    # The retirement is recorded, with the remote objects that still hold the data.
    record = yaml.safe_load((workspace / f"results/provenance/retired/{old}.yaml").read_text())
    assert record["version"] == old
    assert {entry["path"] for entry in record["outputs"]} == set(old_dirs)
    assert all(entry["md5"] and entry["remote"] for entry in record["outputs"])
    # The new version is untouched.
    assert _states(workspace, new)["masks"] == "present"


# --- case 14.2: two experiments in one workspace -----------------------------------------------


def _dry_run(workspace: Path) -> subprocess.CompletedProcess:
    """``snakemake -n`` on the workspace; its messages (both streams) in ``stdout``."""
    return subprocess.run(
        snakemake_command(workspace, "-n"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


@pytest.mark.case("14.2", "a second experiment cannot overwrite the first")
def test_records_name_the_experiment_and_the_plate_definition(two_versions):
    workdir, config, *_ = two_versions
    record = json.loads((workdir / f"results/provenance/{PLATE}/ingest.json").read_text())
    assert record["experiment"] == EXPERIMENT
    assert record["plate"] == {
        "name": PLATE,
        "images": config["plates"][0]["images"],
        "platemap": "platemap.csv",
    }
    records = list((workdir / "results/provenance/experiment").rglob("experiment.json"))
    assert len(records) == 2  # one per version
    assert all(json.loads(path.read_text())["experiment"] == EXPERIMENT for path in records)


@pytest.mark.case("14.2", "a second experiment cannot overwrite the first")
def test_a_config_of_another_experiment_is_refused_before_any_job(two_versions, tmp_path):
    workspace, config = _workspace(two_versions, tmp_path / "ws")
    before = _md5s(workspace, "results")
    # The same plate name in another experiment.
    other = yaml.safe_load(yaml.safe_dump(config))
    other["experiment"] = "screen-b"
    _write_config(workspace, other)
    result = _dry_run(workspace)
    assert result.returncode != 0
    message = result.stdout
    for text in (EXPERIMENT, "screen-b", PLATE, "--directory", "cellstrata adopt"):
        assert text in message, (text, message)
    # Other plates of another experiment would still share the experiment-level tables, the
    # summary and the report of this workspace.
    other["plates"][0]["name"] = "OTHER1"
    _write_config(workspace, other)
    result = _dry_run(workspace)
    assert result.returncode != 0
    assert EXPERIMENT in result.stdout and "--directory" in result.stdout, result.stdout
    assert _md5s(workspace, "results") == before


@pytest.mark.case("14.2", "a second experiment cannot overwrite the first")
def test_images_moved_to_a_new_mount_are_adopted_explicitly(two_versions, tmp_path):
    workspace, config = _workspace(two_versions, tmp_path / "ws")
    images = Path(config["plates"][0]["images"])
    moved = tmp_path / "new-mount" / PLATE
    shutil.copytree(images, moved)  # copy2 keeps times, as a move does
    config["plates"][0]["images"] = str(moved)
    _write_config(workspace, config)
    before = _md5s(workspace, "results")
    result = _dry_run(workspace)
    assert result.returncode != 0
    for text in (PLATE, str(images), str(moved), "cellstrata adopt"):
        assert text in result.stdout, (text, result.stdout)
    assert _md5s(workspace, "results") == before
    code, out = _cellstrata(workspace, "adopt", "--dry-run")
    assert code == 0 and str(moved) in out, out
    assert _dry_run(workspace).returncode != 0
    code, out = _cellstrata(workspace, "adopt")
    assert code == 0, out
    result = _dry_run(workspace)
    assert result.returncode == 0, result.stdout
    record = json.loads((workspace / f"results/provenance/{PLATE}/ingest.json").read_text())
    assert record["plate"]["images"] == str(moved)
    (adoption,) = record["adopted"]
    assert adoption["from"]["plate"]["images"] == str(images)
    # A renamed experiment is adopted the same way.
    config["experiment"] = "screen-a-renamed"
    _write_config(workspace, config)
    assert _dry_run(workspace).returncode != 0
    code, out = _cellstrata(workspace, "adopt")
    assert code == 0, out
    assert _dry_run(workspace).returncode == 0

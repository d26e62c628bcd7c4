"""Stewardship on real remotes: a local directory remote and an S3 API (moto server) on
127.0.0.1. A lab clones the workflow, runs it, tracks its levels with DVC, archives, and a
collaborator pulls only the profiles."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, check_dvc_yaml, example_config, main_version
from s3server import Relay, moto_s3_environment

from cellstrata.cli import main
from cellstrata.stewardship.provenance import write_record
from cellstrata.stewardship.retention import (
    apply_retention,
    check_retention,
)
from cellstrata.stewardship.status import (
    status,
)
from cellstrata.stewardship.tracked import (
    StewardshipError,
)
from cellstrata.workflow.validate import (
    load_config,
)

pytestmark = pytest.mark.workflow

WORKFLOW_FILES = ("Snakefile", "rules", "scripts", "src", "envs", "profiles", ".gitignore")
BUCKET = "lab-archive"


def _run(args, cwd, **kwargs):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _git(cwd, *args):
    return _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd)


def _tree_md5(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _local_endpoint(lab: Path, endpoint: str | None) -> None:
    """Point the archive remote at ``endpoint`` in .dvc/config.local (None: back to config)."""
    value = [endpoint] if endpoint else []
    unset = [] if endpoint else ["--unset"]
    _run(
        [
            sys.executable,
            "-m",
            "dvc",
            "remote",
            "modify",
            "--local",
            *unset,
            "archive",
            "endpointurl",
            *value,
        ],
        lab,
    )


def _cellstrata(cwd: Path, *args: str) -> int:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return main(list(args))
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def s3():
    with moto_s3_environment(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def lab(tmp_path_factory, s3):
    """A lab's clone of the workflow that has run the example and set up DVC."""
    from cellstrata.example import generate_example

    root = tmp_path_factory.mktemp("stewardship")
    lab = root / "lab"
    lab.mkdir()
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, lab / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy(source, lab / name)
    generate_example(
        lab / "resources/example", plates=("SYN01",), rows="A", columns=4, sites=1, seed=2
    )
    config = example_config(lab / "resources/example")
    config["plates"] = [
        {
            "name": "SYN01",
            "images": "resources/example/images/SYN01",
            "platemap": "resources/example/platemap.csv",
        }
    ]
    config["batching"] = {"wells_per_job": 2}
    config["retention"] = {
        "levels": {"corrected": "delete", "masks": "archive", "features": "archive"}
    }
    config["storage"] = {
        "remotes": {
            "default": {"url": str(root / "lab-server"), "solution": "local_disk"},
            "archive": {"url": f"s3://{BUCKET}/cellstrata", "solution": "cloud", "endpointurl": s3},
        }
    }
    (lab / "config").mkdir()
    (lab / "config/config.yaml").write_text(yaml.safe_dump(config))
    _git(lab, "init", "-q")
    _git(lab, "add", ".")
    _git(lab, "commit", "-qm", "lab clone")
    _run([sys.executable, "-m", "snakemake", "--cores", "2"], lab)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes") == 0
    return lab


@pytest.fixture(scope="module")
def seg(lab):
    return main_version(yaml.safe_load((lab / "config/config.yaml").read_text()))


def test_dvc_yaml_follows_config(lab, seg):
    config = load_config(lab / "config/config.yaml")
    check_dvc_yaml(config, "config/config.yaml", lab)
    stages = yaml.safe_load((lab / "dvc.yaml").read_text())["stages"]
    outs = {next(iter(s["outs"][0])): next(iter(s["outs"][0].values())) for s in stages.values()}
    # One entry per plate and level (never per site); deleted levels are not tracked.
    assert outs[f"results/masks/{seg}/SYN01"]["remote"] == "archive"
    assert outs[f"results/features/{seg}/SYN01"]["remote"] == "archive"
    assert outs[f"results/profiles/{seg}/SYN01"]["remote"] == "default"
    assert outs["resources/example/images/SYN01"]["remote"] == "default"
    assert "results/corrected/SYN01" not in outs
    # Drift is caught: the same dvc.yaml no longer fits a changed retention.
    config["retention"]["levels"]["masks"] = "keep"
    with pytest.raises(StewardshipError, match="does not match"):
        check_dvc_yaml(config, "config/config.yaml", lab)
    dvc_config = (lab / ".dvc/config").read_text()
    assert "endpointurl" in dvc_config and "secret" not in dvc_config.lower()


def test_archive_lifecycle(lab, s3, seg):
    masks, features = lab / f"results/masks/{seg}/SYN01", lab / f"results/features/{seg}/SYN01"
    before = {"masks": _tree_md5(masks), "features": _tree_md5(features)}
    assert before["masks"] and before["features"]

    # keep: pushed to the default (local directory) remote, verified, left in place.
    assert _cellstrata(lab, "push") == 0
    assert any((lab.parent / "lab-server/files/md5").rglob("*"))
    assert (lab / f"results/profiles/{seg}/SYN01").is_dir()

    # A dry run removes nothing.
    assert _cellstrata(lab, "archive", "--dry-run") == 0
    assert _tree_md5(masks) == before["masks"]

    # The S3 server dies mid-push: loud failure, nothing removed locally.
    port = int(s3.rsplit(":", 1)[1])
    with Relay(port, cut_after=40_000) as relay:
        _local_endpoint(lab, relay.endpoint)
        failed = subprocess.run(
            [sys.executable, "-m", "cellstrata.cli", "archive"],
            cwd=lab,
            capture_output=True,
            text=True,
        )
        assert relay.cut.is_set(), "the relay never cut the transfer"
    assert failed.returncode != 0
    assert "nothing removed" in failed.stderr and "missing on the remote" in failed.stderr
    assert _tree_md5(masks) == before["masks"]
    assert _tree_md5(features) == before["features"]

    # Retry with the server back: pushed, verified object by object, removed locally (from
    # the DVC cache too, as configured here).
    config_path = lab / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["storage"]["drop_cache_after_archive"] = True
    config_path.write_text(yaml.safe_dump(config))
    _local_endpoint(lab, None)
    assert _cellstrata(lab, "archive") == 0
    assert not masks.exists() and not features.exists()
    lock = yaml.safe_load((lab / "dvc.lock").read_text())["stages"]
    masks_dir_oid = next(s for n, s in lock.items() if n.startswith("masks_"))["outs"][0]["md5"]
    assert not (lab / ".dvc/cache/files/md5" / masks_dir_oid[:2] / masks_dir_oid[2:]).exists()
    table = status(load_config(lab / "config/config.yaml"), lab)
    state = table.set_index(["plate", "level"])["state"].to_dict()
    assert state[("SYN01", "masks")] == "archived"
    assert state[("SYN01", "features")] == "archived"
    assert state[("SYN01", "profiles")] == "present"
    assert state[("SYN01", "corrected")] == "deleted"
    note = table.set_index("level").loc["corrected", "note"]
    assert "reproducible from rule correct" in note

    # Missing archived intermediates do not make Snakemake recompute anything.
    dry = _run([sys.executable, "-m", "snakemake", "-n"], lab)
    assert "Nothing to be done" in dry, dry

    # dvc pull brings the archive back, bit for bit.
    _run(
        [
            sys.executable,
            "-m",
            "dvc",
            "pull",
            str(masks.relative_to(lab)),
            str(features.relative_to(lab)),
        ],
        lab,
    )
    assert _tree_md5(masks) == before["masks"]
    assert _tree_md5(features) == before["features"]


def test_collaborator_pulls_only_profiles(lab, tmp_path, seg):
    _git(lab, "add", "dvc.yaml", "dvc.lock", ".dvc/config", ".dvcignore", ".dvc/.gitignore")
    _git(lab, "commit", "-qm", "track levels with DVC")
    collab = tmp_path / "collab"
    _git(tmp_path, "clone", "-q", str(lab), str(collab))
    assert _cellstrata(collab, "pull", f"results/profiles/{seg}/SYN01") == 0
    assert (collab / f"results/profiles/{seg}/SYN01/SYN01_normalized.parquet").exists()
    # Only what was asked for (plus provenance and platemap): no raw images, no features.
    assert not (collab / "results/features").exists()
    assert not (collab / "resources/example/images").exists()
    dry = _run([sys.executable, "-m", "snakemake", "-n", "profiles_all"], collab)
    assert "Nothing to be done" in dry, dry


def test_status_and_plan_match_disk(lab, seg):
    assert _cellstrata(lab, "status", "--json") == 0
    config = load_config(lab / "config/config.yaml")
    from cellstrata.stewardship.storage import storage_plan

    plan = storage_plan(config, lab).set_index(["plate", "level"])
    profiles = lab / f"results/profiles/{seg}/SYN01"
    on_disk = sum(
        p.stat().st_size for p in profiles.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    assert plan.loc[("SYN01", "profiles"), "bytes"] == on_disk
    assert plan.loc[("SYN01", "profiles"), "size_source"] == "disk"


def test_provenance_command(lab, capsys, seg):
    target = f"results/profiles/{seg}/SYN01/SYN01_normalized.parquet"
    assert _cellstrata(lab, "provenance", target) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"profiles [plate=SYN01, seg={seg}]")
    for rule in ("features", "segment", "correct", "illumination", "ingest"):
        assert f"{rule} [" in text
    assert "raw inputs: resources/example/images/SYN01/SYN01_A01_s1_w1.tif" in text


def test_retention_change_needs_explicit_command(tmp_path):
    config = load_config(REPO / "config/config.yaml")
    kept = tmp_path / "results/masks/classical-0123abcd/SYN01/A01-A04/A01_s1_nuclei.tiff"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"labels")
    write_record(
        tmp_path / "results/provenance/SYN01/segment/A01-A04.json",
        {
            "rule": "segment",
            "level": "masks",
            "retention": "keep",
            "wildcards": {"plate": "SYN01"},
            "inputs": [],
            "outputs": [{"path": kept.relative_to(tmp_path).as_posix(), "size": 6, "md5": "x"}],
            "end": "2026-01-01T00:00:00+00:00",
        },
    )
    check_retention(config, tmp_path)  # masks kept: fine
    config["retention"]["levels"]["masks"] = "delete"
    with pytest.raises(StewardshipError, match="cellstrata apply-retention"):
        check_retention(config, tmp_path)
    assert kept.exists()
    assert apply_retention(config, tmp_path, dry_run=True) == [
        kept.relative_to(tmp_path).as_posix()
    ]
    assert kept.exists()
    apply_retention(config, tmp_path)
    assert not kept.exists()
    check_retention(config, tmp_path)
    # The record stays as the tombstone.
    record = json.loads((tmp_path / "results/provenance/SYN01/segment/A01-A04.json").read_text())
    assert record["outputs"][0]["size"] == 6


# The committed tree is scanned for credentials by the reliability suite (case 15):
# tests/reliability/test_stewardship_faults.py::test_no_secrets_in_committed_files.


def test_committed_dvc_yaml_matches_the_example_config():
    # Regenerate with `cellstrata dvc setup` whenever config/config.yaml's retention changes.
    check_dvc_yaml(load_config(REPO / "config/config.yaml"), "config/config.yaml", REPO)


def test_storage_plan_before_any_run(small_example, tmp_path, capsys):
    config = example_config(small_example)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    from cellstrata.stewardship.storage import storage_plan

    plan = storage_plan(load_config(config_path), tmp_path).set_index("level")
    raw = sum(p.stat().st_size for p in (small_example / "images/SYN01").iterdir())
    assert plan.loc["raw", "bytes"] == raw and plan.loc["raw", "size_source"] == "disk"
    assert plan.loc["masks", "size_source"] == "estimate"
    assert plan.loc["masks", "bytes"] == int(raw * 0.05)
    # No Snakefile or .dvc/ marks tmp_path as a workspace: named (cellstrata.cli.find_workspace).
    plan_args = ["--config", str(config_path), "--workspace", str(tmp_path), "--plates", "384"]
    assert _cellstrata(tmp_path, "storage", "plan", *plan_args) == 0
    assert "projected one-time" in capsys.readouterr().out


def test_zenodo_limit_is_flagged(tmp_path):
    config = load_config(REPO / "config/config.yaml")
    config["storage"]["remotes"]["default"]["solution"] = "zenodo"
    from cellstrata.stewardship.storage import _cost

    cost = _cost(config, "SYN01", "profiles", "keep", 60 * 10**9)
    assert "exceeds zenodo: 50.0 GB per dataset < 60.0 GB" in cost["where"]
    assert cost["solution"] == "local_disk + zenodo"
    assert "exceeds" not in _cost(config, "SYN01", "profiles", "keep", 10 * 10**9)["where"]

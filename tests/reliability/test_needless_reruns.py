"""Reliability, work redone for nothing (issue 15, cases 1-3): only what a change affects
re-runs, pulling an archived level back plans nothing, and outputs of an old batching are
reported as stale and removed only by an explicit command.

One complete run of a tiny plate (64 x 64 px, 6 wells in batches of 2, images and platemap
inside the workspace as in a lab's clone) is copied, times kept, into a fresh workspace per
test; the tests then change something as a user would and ask ``snakemake -n`` (the command
line) what it would run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import FEATURES_AND_AFTER, REPO, example_config, main_version

from cellstrata.example import generate_example
from cellstrata.levels import (
    level_path,
)
from cellstrata.stewardship.status import (
    status,
)
from cellstrata.workflow.validate import (
    load_config,
)
from reliability.test_reruns import plan, snakemake
from reliability.test_stewardship_faults import (
    _cellstrata,
    _fingerprints,
    _md5s,
    _workspace,
    _write_config,
)

SIZE = 64
PLATE = "RR1"
SNAKEFILE = REPO / "Snakefile"
# Relative to the workspace, so a copy of it plans with the same image paths (the image
# signature holds paths, sizes and times).
IMAGES = f"data/images/{PLATE}"
PLATEMAP = "data/platemap.csv"


def _base_config() -> dict:
    config = example_config(Path("data"))
    config["plates"] = [{"name": PLATE, "images": IMAGES, "platemap": PLATEMAP}]
    config["batching"] = {"wells_per_job": 2}
    config["crops"] = {"enabled": False}
    config["features"] = {"groups": ["AreaShape", "Intensity"]}
    config["illumination"] = {"smoothing": "gaussian", "filter_size": 16}
    config["segmentation"]["nuclei"] = {"diameter": 5}
    config["segmentation"]["cells"] = {"max_distance": 8}
    config["retention"] = {"levels": {"corrected": "keep", "masks": "keep", "features": "keep"}}
    return config


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> tuple[Path, dict, dict[str, int]]:
    """A complete run; with the plan of a fresh workspace (every job of the plate)."""
    workdir = tmp_path_factory.mktemp("needless-reruns") / "base"
    generate_example(
        workdir / "data", plates=(PLATE,), rows="AB", columns=3, sites=1, size=SIZE, seed=5
    )
    config = _base_config()
    _write_config(workdir, config)
    fresh, out = plan(SNAKEFILE, workdir)
    assert fresh.get("ingest") == 1, out
    result = snakemake(SNAKEFILE, workdir, "--cores", "2")
    assert result.returncode == 0, result.output[-4000:]
    assert plan(SNAKEFILE, workdir)[0] == {}
    return workdir, config, fresh


def _copy(base_run, dest: Path, **changes) -> tuple[Path, dict]:
    workdir, config, _ = base_run
    return _workspace((workdir, config), dest, **changes)


# --- case 15.1: only what a change affects re-runs ----------------------------------------------


@pytest.mark.case("15.1", "only what changed re-runs: image root, platemap, images")
def test_a_file_the_pattern_ignores_reruns_nothing(base_run, tmp_path):
    workspace, _ = _copy(base_run, tmp_path / "ws")
    (workspace / IMAGES / "notes.txt").write_text("focus drifted on row B\n")
    counts, out = plan(SNAKEFILE, workspace)
    assert counts == {}, out


@pytest.mark.case("15.1", "only what changed re-runs: image root, platemap, images")
def test_a_platemap_edit_reruns_profiles_and_after_only(base_run, tmp_path):
    workspace, _ = _copy(base_run, tmp_path / "ws")
    platemap = pd.read_csv(workspace / PLATEMAP)
    # One cell: the dose of one treated well.
    row = platemap.index[platemap["control"] == "treated"][0]
    platemap.loc[row, "dose"] = platemap.loc[row, "dose"] * 2
    platemap.to_csv(workspace / PLATEMAP, index=False)
    counts, out = plan(SNAKEFILE, workspace)
    profiles_and_after = {rule: n for rule, n in FEATURES_AND_AFTER.items() if rule != "features"}
    assert counts == profiles_and_after, out


@pytest.mark.case("15.1", "only what changed re-runs: image root, platemap, images")
def test_a_touched_image_reruns_its_plate_from_ingest(base_run, tmp_path):
    workspace, _ = _copy(base_run, tmp_path / "ws")
    image = sorted((workspace / IMAGES).glob("*.tif"))[0]
    os.utime(image)
    counts, out = plan(SNAKEFILE, workspace)
    # Every job of the plate, as in a fresh workspace.
    assert counts == base_run[2], out


# --- case 15.2: pulling a level back plans nothing ---------------------------------------------


@pytest.mark.case("15.2", "pulling an archived level back into a workspace plans nothing")
@pytest.mark.parametrize("level", ["masks", "features"])
def test_pulling_an_archived_level_back_plans_nothing(base_run, tmp_path, level):
    remotes = {role: {"url": str(tmp_path / f"{role}-remote")} for role in ("default", "archive")}
    workspace, config = _copy(base_run, tmp_path / "ws", storage={"remotes": remotes})
    config["retention"]["levels"][level] = "archive"
    _write_config(workspace, config)
    # The summary names each level's retention: it alone is remade.
    assert plan(SNAKEFILE, workspace)[0] == {"summary": 1, "all": 1}
    assert snakemake(SNAKEFILE, workspace, "--cores", "1").returncode == 0
    path = level_path(level, PLATE, main_version(config))
    before = _md5s(workspace, path)
    for command in (("dvc", "setup", "--create-remotes"), ("archive",)):
        code, out = _cellstrata(workspace, *command)
        assert code == 0, out
    assert not (workspace / path).exists()
    assert plan(SNAKEFILE, workspace)[0] == {}

    code, out = _cellstrata(workspace, "pull", path)
    assert code == 0, out
    assert _md5s(workspace, path) == before
    counts, out = plan(SNAKEFILE, workspace)
    assert counts == {}, out


# --- case 15.3: outputs of an old batching --------------------------------------------------------


def _files(workspace: Path, level: str, version: str | None = None) -> set[str]:
    root = workspace / level_path(level, PLATE, version)
    return {p.relative_to(workspace).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.case("15.3", "outputs of an old batching: reported stale, removed on command")
def test_outputs_of_an_old_batching_are_stale_until_removed_on_command(base_run, tmp_path):
    remotes = {role: {"url": str(tmp_path / f"{role}-remote")} for role in ("default", "archive")}
    workspace, config = _copy(
        base_run, tmp_path / "ws", batching={"wells_per_job": 3}, storage={"remotes": remotes}
    )
    config["retention"]["levels"]["features"] = "archive"
    _write_config(workspace, config)
    version = main_version(config)
    old_files = {
        level: _files(workspace, level, version if level != "corrected" else None)
        for level in ("corrected", "masks", "features")
    }
    old_records = {
        p.relative_to(workspace).as_posix()
        for p in (workspace / "results/provenance" / PLATE).rglob("*.json")
        if p.parent.name in ("correct", version)
    }
    result = snakemake(SNAKEFILE, workspace, "--cores", "2")
    assert result.returncode == 0, result.output[-4000:]
    # Batches of 2 wells (A01-A02, A03-B01, B02-B03) became batches of 3 (A01-A03, B01-B03);
    # the old files stay beside the new ones, and nothing else is stale.
    features = level_path("features", PLATE, version)
    assert _files(workspace, "features", version) == old_files["features"] | {
        f"{features}/A01-A03.parquet",
        f"{features}/B01-B03.parquet",
    }
    stale = set().union(*old_files.values())
    before = _fingerprints(workspace, "results")

    # status and the run summary count the current files only and report the stale ones apart.
    table = status(load_config(workspace / "config.yaml"), workspace).set_index("level")
    assert table.loc["features", "files"] == 2 and table.loc["features", "stale_files"] == 3
    assert table.loc["features", "state"] == "present"
    for level in ("corrected", "masks"):
        visible = {p for p in old_files[level] if not p.endswith(".snakemake_timestamp")}
        assert table.loc[level, "stale_files"] == len(visible), level
    assert table.loc["illumination", "stale_files"] == 0
    summary = (workspace / "results/summary.txt").read_text()
    assert re.search(r"^features +archive +2 ", summary, re.MULTILINE), summary
    assert "3 stale file(s) in results/features/" in summary, summary

    # archive would store them with the level: it refuses, dry run included, and says why.
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 1 and "would archive" not in out, out
    assert f"{features}/A01-A02.parquet" in out and "cellstrata clean-stale" in out, out

    # Only the explicit command removes them, and nothing a current job makes.
    code, out = _cellstrata(workspace, "clean-stale", "--dry-run")
    assert code == 0 and f"would remove {len(stale)} stale file(s)" in out, out
    assert _fingerprints(workspace, "results") == before
    code, out = _cellstrata(workspace, "clean-stale")
    assert code == 0, out
    after = _fingerprints(workspace, "results")
    log = f"results/provenance/{PLATE}/stale.jsonl"
    assert set(before) - set(after) == stale | old_records
    assert {p: before[p] for p in after if p != log} == {p: f for p, f in after.items() if p != log}
    # Their records are kept out of the live ones, one line each in the plate's stale log.
    moved = [json.loads(line) for line in (workspace / log).read_text().splitlines()]
    assert {m["record"]["wildcards"]["batch"] for m in moved} == {"A01-A02", "A03-B01", "B02-B03"}
    assert len(moved) == len(old_records)
    table = status(load_config(workspace / "config.yaml"), workspace)
    assert table["stale_files"].sum() == 0
    # A dry run checks what the real one needs (case 15.6): DVC set up, the remotes there.
    code, out = _cellstrata(workspace, "dvc", "setup", "--create-remotes")
    assert code == 0, out
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 0 and f"would archive: {features} -> remote archive" in out, out
    assert plan(SNAKEFILE, workspace)[0] == {}

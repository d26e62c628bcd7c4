"""Reliability, work redone for nothing (issue 15, cases 1-3): only what a change affects
re-runs, pulling an archived level back plans nothing, and outputs of an old batching are
reported as stale and removed only by an explicit command.

One complete run of a tiny plate (64 x 64 px, 6 wells in batches of 2, images and platemap
inside the workspace as in a lab's clone) is copied, times kept, into a fresh workspace per
test; the tests then change something as a user would and ask ``snakemake -n`` (the command
line) what it would run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import FEATURES_AND_AFTER, REPO, example_config, main_version

from cellstrata.config import level_path
from cellstrata.example import generate_example
from reliability.test_reruns import plan, snakemake
from reliability.test_stewardship_faults import _cellstrata, _md5s, _workspace, _write_config

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
    for command in (("dvc", "setup"), ("archive",)):
        code, out = _cellstrata(workspace, *command)
        assert code == 0, out
    assert not (workspace / path).exists()
    assert plan(SNAKEFILE, workspace)[0] == {}

    code, out = _cellstrata(workspace, "pull", path)
    assert code == 0, out
    assert _md5s(workspace, path) == before
    counts, out = plan(SNAKEFILE, workspace)
    assert counts == {}, out

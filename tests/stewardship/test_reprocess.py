"""``cellstrata plan-reprocess`` on the example run: plan a new segmentation version, run it,
and hold the plan to what ran (jobs exactly, core-hours within 2x)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from datetime import datetime

import pytest
import yaml
from conftest import REPO, job_counts, run_snakemake

from cellstrata.cli import main as cellstrata_main
from cellstrata.stewardship.provenance import read_records

pytestmark = pytest.mark.workflow


def _seconds(record) -> float:
    end, start = datetime.fromisoformat(record["end"]), datetime.fromisoformat(record["start"])
    return (end - start).total_seconds()


def test_plan_of_a_new_segmentation_version_matches_its_run(example_run, tmp_path):
    lab = tmp_path / "lab"
    shutil.copytree(example_run, lab, symlinks=True)  # the session's run stays as it was
    config = yaml.safe_load((lab / "test_config.yaml").read_text())
    config["segmentation"]["extra_versions"] = [{"nuclei": {"threshold_correction": 1.2}}]
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cellstrata_main(
            [
                "plan-reprocess",
                "--config",
                str(new),
                "--workspace",
                str(lab),
                "--snakefile",
                str(REPO / "Snakefile"),
                "--json",
            ]
        )
    assert code == 0
    plan = json.loads(out.getvalue())
    planned: dict[str, int] = {}
    for row in plan["jobs"]:
        planned[row["rule"]] = planned.get(row["rule"], 0) + row["jobs"]
    versions = {(v["level"], v["version"]): v["what"] for v in plan["versions"]}
    new_version = next(v for (level, v), what in versions.items() if what == "new")
    old_version = next(v for (level, v), what in versions.items() if what == "made again" and v)
    # The corrected images were deleted: the new version's segmentation remakes them, and the
    # old version's masks, features and profiles are then older than their input: made again.
    assert versions[("masks", old_version)] == "made again"
    assert ("corrected", None) in versions
    assert any(
        r["path"] == "results/corrected/SYN01" and r["state"] == "deleted" for r in plan["restore"]
    )
    assert {r["level"] for r in plan["storage"]} >= {"masks", "features", "profiles"}
    assert all(r["version"] == new_version and r["bytes"] > 0 for r in plan["storage"])

    before = {json.dumps(r, sort_keys=True) for r in read_records(lab / "results")}
    logs = set((lab / ".snakemake/log").glob("*.log"))
    run_snakemake(lab, config)
    (log,) = set((lab / ".snakemake/log").glob("*.log")) - logs
    assert job_counts(log.read_text()) == planned
    made = [r for r in read_records(lab / "results") if json.dumps(r, sort_keys=True) not in before]
    took = sum(_seconds(r) for r in made) / 3600
    estimated = sum(r["core_hours"] for r in plan["jobs"] if r["source"] == "recorded")
    assert took / 2 <= estimated <= took * 2, (estimated, took)

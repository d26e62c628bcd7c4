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

DRY_RUN = """
rule segment:
    input: results/corrected/P1/A01-A02
    output: results/masks/classical-1/P1/A01-A02
    wildcards: seg=classical-1, plate=P1, batch=A01-A02
    resources: tmpdir=/tmp, runtime=11, gpu=0, mem_mb=1200

localrule all:
    input: results/summary.txt
    jobid: 0
    resources: tmpdir=/tmp
"""


def test_estimates_scale_recorded_seconds_per_site(tmp_path):
    import pandas as pd

    from cellstrata.stewardship.reprocess import (
        _estimate,
        planned_jobs,
        recorded_seconds,
        site_counts,
    )

    jobs = planned_jobs(DRY_RUN)
    assert [j["rule"] for j in jobs] == ["segment", "all"]
    assert jobs[0]["wildcards"] == {"seg": "classical-1", "plate": "P1", "batch": "A01-A02"}
    assert jobs[0]["inputs"] == ["results/corrected/P1/A01-A02"] and jobs[0]["runtime_min"] == 11
    manifest = tmp_path / "results/manifest/P1.parquet"
    manifest.parent.mkdir(parents=True)
    # A01-A02: 2 wells x 3 sites; A03: 1 well x 3 sites (two channels each: counted once).
    rows = [
        (w, s, b)
        for w, b in (("A01", "A01-A02"), ("A02", "A01-A02"), ("A03", "A03"))
        for s in (1, 2, 3)
        for _ in "ab"
    ]
    pd.DataFrame(rows, columns=["Metadata_Well", "Metadata_Site", "batch"]).to_parquet(manifest)
    sites = site_counts(tmp_path, ["P1"])
    assert sites({"plate": "P1", "batch": "A01-A02"}) == 6 and sites({"plate": "P1"}) == 9
    # Recorded: the 3-site batch took 30 s, so 10 s per site; the planned 6-site batch 60 s.
    record = {
        "rule": "segment",
        "wildcards": {"seg": "classical-0", "plate": "P1", "batch": "A03"},
        "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-01-01T00:00:30+00:00",
    }
    recorded = recorded_seconds([record], sites)
    assert _estimate(jobs[0], recorded, tmp_path, sites) == (60.0, "recorded (per site)")
    # Nothing recorded for a rule: its declared runtime, said to be an upper bound.
    assert _estimate(jobs[0], {}, tmp_path, sites) == (660.0, "declared runtime (upper bound)")


@pytest.mark.workflow
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
    estimated = sum(r["core_hours"] for r in plan["jobs"] if r["source"].startswith("recorded"))
    assert took / 2 <= estimated <= took * 2, (estimated, took)

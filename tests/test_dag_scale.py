"""DAG planning at screen scale: the fast image scan and benchmarks/dag_scale.py on a tiny tree."""

from __future__ import annotations

import pytest
from conftest import benchmark

from cellstrata.images.ingest import IngestError, scan_plate

CHANNELS = {"1": "DNA", "2": "GFP"}
NESTED = (
    r"(?:[^/]+/)?(?P<plate>[^_/]+)_(?P<well>[A-Pa-p]\d{1,2})_s(?P<site>\d+)"
    r"_w(?P<channel>\d)\.tif"
)


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@pytest.mark.parametrize("root", ["img", "./img", "img/"])
def test_scan_paths_of_nested_and_relative_roots(tmp_path, monkeypatch, root):
    # Paths as str(Path(dirpath, name)) gave them; the pattern sees them relative to the root.
    _touch(
        tmp_path / "img",
        "P1_B1_s1_w1.tif",
        "b/P1_a01_s1_w2.tif",
        "a/P1_A01_s1_w1.tif",
        "a/P1_A01_s1_w2.TIF",
        "a/deeper/P1_A01_s2_w1.tif",
        "a/notes.txt",
    )
    monkeypatch.chdir(tmp_path)
    # Upper-case .TIF passes the extension filter but not the pattern; deeper/ is too deep.
    frame = scan_plate("P1", root, NESTED, CHANNELS)
    assert list(frame["path"]) == [
        "img/a/P1_A01_s1_w1.tif",
        "img/b/P1_a01_s1_w2.tif",
        "img/P1_B1_s1_w1.tif",
    ]
    assert list(frame["Metadata_Well"]) == ["A01", "A01", "B01"]
    assert list(frame["channel"]) == ["DNA", "GFP", "DNA"]


def test_scan_names_the_file_of_a_bad_well(tmp_path):
    _touch(tmp_path, "P1_A01_s1_w1.tif", "sub/P1_A0_s1_w1.tif")
    with pytest.raises(IngestError, match=r"plate P1, file .*sub/P1_A0_s1_w1\.tif: well column"):
        scan_plate("P1", tmp_path, NESTED, CHANNELS)


def test_job_stats_are_parsed():
    output = (
        "Building DAG of jobs...\nJob stats:\njob        count\n---------  -------\n"
        "ingest           2\ncorrect         96\ntotal           98\n\nrule ingest:\n"
    )
    assert benchmark("dag_scale").job_stats(output) == {"ingest": 2, "correct": 96, "total": 98}


@pytest.mark.workflow
def test_dry_run_counts_jobs_per_batch(tmp_path):
    dag_scale = benchmark("dag_scale")
    configfile, sites = dag_scale.generate(tmp_path, plates=2, wells=8, sites=2, wells_per_job=4)
    seconds, counts = dag_scale.dry_run(tmp_path, configfile)
    assert sites == 2 * 8 * 2
    # Two batches of four wells per plate; one job per plate and channel for illumination.
    assert {rule: counts[rule] for rule in ("ingest", "illumination", "correct", "segment")} == {
        "ingest": 2,
        "illumination": 10,
        "correct": 4,
        "segment": 4,
    }
    assert seconds > 0

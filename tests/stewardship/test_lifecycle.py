"""Retention schedules (cellstrata.stewardship.lifecycle) without DVC: the schema and checks,
what reads retention today, and when each transition falls due (made or last used)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import config_with, main_version

from cellstrata.config import ConfigError
from cellstrata.levels import level_path, retention_kind, retention_of
from cellstrata.stewardship.lifecycle import parse_duration, project_months, transitions
from cellstrata.stewardship.tracked import tracked_outputs

MASKS = [
    {"keep": "90d", "since": "used"},
    {"archive": "archive", "for": "1y"},
    {"archive": "partner"},
]


def _scheduled(tmp_path, schedule=MASKS, level="masks"):
    def edit(raw):
        raw["retention"]["levels"][level] = schedule

    return config_with(tmp_path, edit)


def test_durations():
    assert [parse_duration(t) for t in ("90d", "2w", "3m", "1y")] == [90, 14, 90, 365]
    with pytest.raises(ValueError, match="'90 days' is not a duration"):
        parse_duration("90 days")


def test_a_schedule_is_its_first_step_to_everything_that_reads_retention(tmp_path):
    config = _scheduled(tmp_path)
    assert retention_of(config["retention"], "masks") == MASKS
    assert retention_kind(config["retention"], "masks") == "keep"
    assert retention_kind(config["retention"], "features") == "keep"  # plain keep unchanged
    seg = main_version(config)
    outs = {o.path: o for o in tracked_outputs(config, tmp_path)}
    masks = outs[level_path("masks", "SYN01", seg)]
    assert masks.retention == "keep" and masks.remote == "default"


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ([{"keep": "90d"}, {"archive": "nowhere"}], r"masks\[1\]: archive names remote 'nowhere'"),
        ([{"keep": "90d"}, {"archive": "archive", "for": "1y"}], r"masks\[1\]: the last step"),
        ([{"keep": "90d"}, {"archive": "archive"}, {"archive": "partner"}], r"masks\[1\]: every"),
        ([{"archive": "archive", "for": "1m"}, {"keep": "1d"}], r"masks\[1\]: keep after an"),
        ([{"keep": "90d", "archive": "archive"}, {"archive": "partner"}], r"masks\[0\]: give keep"),
    ],
)
def test_bad_schedules_are_refused_naming_the_step(tmp_path, schedule, words):
    with pytest.raises(ConfigError, match=words):
        _scheduled(tmp_path, schedule)


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ([{"keep": "90 days"}, {"archive": "archive"}], r"masks\[0\].keep: '90 days' is not a"),
        ([{"keep": "90d"}], "masks: a schedule has two steps or more"),
        ([{"keep": "90d", "until": "x"}, {"archive": "archive"}], r"masks\[0\]: .* a step is"),
        ([{"keep": "9d", "since": "seen"}, {"archive": "archive"}], "since: 'seen' is not made"),
        ("sometimes", r"retention.levels.masks: 'sometimes' is not keep, archive or delete"),
    ],
)
def test_the_schema_refuses_malformed_schedules(tmp_path, schedule, words):
    with pytest.raises(Exception, match=words):
        _scheduled(tmp_path, schedule)


def _record(workspace, plate, rule, end, *, inputs=(), outputs=()):
    path = workspace / f"results/provenance/{plate}/{rule}/{end[:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "rule": rule,
        "level": None,
        "wildcards": {"plate": plate},
        "inputs": [{"path": p} for p in inputs],
        "outputs": [{"path": p, "size": 0} for p in outputs],
        "start": end,
        "end": end,
    }
    path.write_text(json.dumps(record))


def test_steps_fall_due_from_when_the_level_was_made_or_last_used(tmp_path):
    config = _scheduled(tmp_path)
    seg = main_version(config)
    masks = level_path("masks", "SYN01", seg)
    _record(tmp_path, "SYN01", "segment", "2026-01-01T09:00:00+00:00", outputs=[f"{masks}/A.tif"])
    # Never read yet: counted from when it was made.
    (due,) = [t for t in transitions(config, tmp_path) if t.out.path == masks]
    assert due.due == date(2026, 4, 1) and due.target == "archive" and due.step == 1
    _record(tmp_path, "SYN01", "features", "2026-02-10T09:00:00+00:00", inputs=[f"{masks}/A.tif"])
    (due,) = [t for t in transitions(config, tmp_path) if t.out.path == masks]
    assert due.due == date(2026, 5, 11) and due.since == "used"
    # SYN02 was never made here: no day to count from, nothing due.
    assert not [t for t in transitions(config, tmp_path) if t.out.plate == "SYN02"]


def test_projection_applies_the_schedule_month_by_month(tmp_path):
    config = _scheduled(tmp_path, [{"keep": "90d"}, {"archive": "archive"}])
    seg = main_version(config)
    masks = level_path("masks", "SYN01", seg)
    (tmp_path / masks).mkdir(parents=True)
    (tmp_path / masks / "A.tif").write_bytes(b"x" * 10**7)
    _record(tmp_path, "SYN01", "segment", "2026-01-01T09:00:00+00:00", outputs=[f"{masks}/A.tif"])
    frame = project_months(config, tmp_path, months=6, day=date(2026, 1, 15))
    masks_cost = frame[frame["level"] == "masks"]
    # Kept on the local disk (one-time cost only) until 2026-04-01, then 10 MB on the archive
    # remote (cloud, $0.02-0.04 per GB and month) from month 4 (2026-04-15) on.
    assert masks_cost["monthly_usd"].round(6).tolist() == [0, 0, 0, 0.0002, 0.0002, 0.0002]
    assert masks_cost["monthly_usd_high"].round(6).tolist() == [0, 0, 0, 0.0004, 0.0004, 0.0004]
    total = frame[frame["level"] == "total"]
    assert total["monthly_usd"].round(6).tolist()[3] == round(
        frame[(frame["month"] == 4) & (frame["level"] != "total")]["monthly_usd"].sum(), 6
    )
    doubled = project_months(config, tmp_path, months=6, day=date(2026, 1, 15), plates=4)
    assert doubled[doubled["level"] == "masks"]["monthly_usd"].round(6).tolist()[-1] == 0.0004


def test_experiment_tables_follow_the_profiles_schedule(tmp_path):
    config = _scheduled(tmp_path, [{"keep": "30d"}, {"archive": "archive"}], level="profiles")
    seg = main_version(config)
    table = f"results/experiment/{seg}/profiles.parquet"
    _record(tmp_path, "experiment", "experiment", "2026-01-01T09:00:00+00:00", outputs=[table])
    (move,) = [t for t in transitions(config, tmp_path) if t.out.plate is None]
    assert move.out.path == f"results/experiment/{seg}" and move.due == date(2026, 1, 31)
    assert str(move).startswith("all plates profiles")

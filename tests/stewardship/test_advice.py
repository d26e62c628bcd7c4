"""`cellstrata storage advise` (cellstrata.stewardship.advice): the solutions that meet a level's
needs, access and limits, cheapest first, and why every other one is excluded."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import config_with

from cellstrata.cli import main
from cellstrata.stewardship.advice import advise, format_advice

MB = 10**6


@pytest.fixture
def workspace(tmp_path):
    """The example config over 2 plates of 3 one-megabyte images each (nothing run yet)."""
    for plate in ("SYN01", "SYN02"):
        root = tmp_path / "resources/example/images" / plate
        root.mkdir(parents=True)
        for channel in (1, 2, 3):
            (root / f"{plate}_A01_s1_w{channel}.tif").write_bytes(b"\0" * MB)
    return tmp_path


def _rows(frame, plate, level):
    return frame[(frame["plate"] == plate) & (frame["level"] == level)].set_index("solution")


def test_public_solutions_are_excluded_for_restricted_data_with_the_reason(workspace):
    config = config_with(workspace)
    frame = advise(config, workspace, day=date(2026, 12, 5))
    raw = _rows(frame, "SYN02", "raw")
    assert raw.loc["zenodo", "reason"] == "zenodo: public, plate restricted"
    assert not raw.loc["idr", "suitable"]
    assert raw.loc["idr", "reason"].startswith("idr: public, plate restricted; datasets of 2.0 TB")
    assert raw["bytes"].iloc[0] == 3 * MB  # measured from the images, before any run
    # The lab's embargoed plate: public solutions wait for the embargo's end.
    own = _rows(frame, "SYN01", "raw")
    assert own.loc["zenodo", "reason"] == (
        "zenodo: public, plate lab (embargo until 2027-12-31, then public)"
    )
    after = _rows(advise(config, workspace, day=date(2028, 1, 1)), "SYN01", "raw")
    assert after.loc["zenodo", "suitable"] and after.loc["zenodo", "reason"] == ""


def test_suitable_solutions_come_cheapest_first(workspace):
    config = config_with(workspace)
    frame = advise(config, workspace, plates=2000, months=12)
    features = _rows(frame, "2000 plates", "features")
    suitable = features[features["suitable"]]
    assert list(suitable["rank"]) == list(range(1, len(suitable) + 1))
    assert suitable["cost_usd"].is_monotonic_increasing
    # A range ($0.02-0.04/GB-month) is shown at both ends.
    assert suitable.loc["cloud_cold", "cost_usd"] == suitable.loc["cloud_cold", "cost_usd_high"]
    assert features.loc["cloud", "cost_usd"] < features.loc["cloud", "cost_usd_high"]
    # 8000 plates of 3 MB of raw images each: over Figshare's 20 GB in total.
    big = _rows(advise(config, workspace, plates=8000, day=date(2028, 1, 1)), "8000 plates", "raw")
    assert "; 20.0 GB total < 24.0 GB" in big.loc["figshare", "reason"]
    # Corrected images need no longevity: deletion is a suitable, free choice.
    corrected = _rows(frame, "2000 plates", "corrected")
    assert corrected.loc["deleted", "suitable"] and corrected.loc["deleted", "cost_usd"] == 0
    text = format_advice(frame, 12)
    assert "2000 plates features:" in text and "excluded zenodo: public, plate" in text


def test_advise_command(workspace, capsys, monkeypatch):
    config_with(workspace)  # writes workspace/config.yaml
    monkeypatch.chdir(workspace)
    args = ["storage", "advise", "--config", "config.yaml", "--workspace", "."]
    assert main([*args, "--json", "--today", "2026-12-05"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["plate"] for r in rows} == {"SYN01", "SYN02"}
    with pytest.raises(SystemExit):
        main([*args, "--today", "someday"])
    assert "not a date" in capsys.readouterr().err

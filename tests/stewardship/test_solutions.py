"""The storage-solutions table (cellstrata.stewardship.solutions): defaults, overrides, costs
with ranges, limits and needs."""

from __future__ import annotations

import pytest
from conftest import config_with

from cellstrata.stewardship.solutions import (
    cost,
    limit_problems,
    need_problems,
    remote_access,
    remote_solution,
    solutions,
)

GB = 10**9


def test_defaults_hold_the_playbook_table(tmp_path):
    table = solutions(config_with(tmp_path))
    assert {
        "local_disk",
        "external_disk",
        "cluster",
        "cloud",
        "cloud_cold",
        "idr",
        "zenodo",
        "figshare",
        "figshare_plus",
        "github",
        "github_lfs",
        "onedrive",
        "dropbox",
        "google_drive",
        "deleted",
    } <= set(table)
    assert table["zenodo"]["access"] == "public" and table["zenodo"]["limit_gb_dataset"] == 50
    assert table["figshare_plus"]["per_dataset_once"] == [745, 11860]
    assert table["deleted"]["longevity"] == "none"


def test_an_entry_given_keeps_the_default_attributes(tmp_path):
    def edit(raw):
        raw["storage"]["solutions"] = {
            "cloud": {"per_gb_month": 0.03},
            "lab_nas": {"access": "private", "longevity": "high", "speed": "instant"},
        }

    config = config_with(tmp_path, edit)
    table = solutions(config)
    assert table["cloud"]["per_gb_month"] == 0.03 and table["cloud"]["access"] == "private"
    assert table["lab_nas"]["longevity"] == "high"
    # A remote's access: its own, else its solution's.
    assert remote_access(config, "public") == "public"
    assert remote_access(config, "partner") == "private"
    assert remote_solution(config, "archive") == "cloud"


def test_cost_ranges_give_both_ends():
    cloud = {"per_gb_month": [0.02, 0.04]}
    (once_low, once_high), (month_low, month_high) = cost(cloud, 100 * GB)
    assert (once_low, once_high) == (0.0, 0.0)
    assert (month_low, month_high) == pytest.approx((2.0, 4.0))
    disk = {"per_tb_once": 15}
    assert cost(disk, 2 * 10**12)[0] == pytest.approx((30.0, 30.0))
    plus = {"per_dataset_once": [745, 11860]}
    assert cost(plus, 300 * GB)[0] == (745, 11860)
    assert cost({"per_month": 12.5}, 1)[1] == (12.5, 12.5)
    assert cost(plus, 0) == ((0.0, 0.0), (0.0, 0.0))  # nothing stored costs nothing


def test_limits_and_needs_say_which_and_by_how_much():
    figshare = {"limit_gb_total": 20}
    assert limit_problems("figshare", figshare, size=GB, largest_file=GB, total=1.4e12) == [
        "figshare: 20.0 GB total < 1.4 TB"
    ]
    assert limit_problems("figshare", figshare, size=GB, largest_file=GB, total=19 * GB) == []
    github = {"limit_gb_file": 0.1}
    assert (
        "100.0 MB per file < 200.0 MB"
        in limit_problems("github", github, size=GB, largest_file=0.2 * GB, total=GB)[0]
    )
    idr = {"min_gb_dataset": 2000}
    assert (
        "datasets of 2.0 TB and more"
        in limit_problems("idr", idr, size=GB, largest_file=GB, total=GB)[0]
    )
    cloud = {"speed": "download", "longevity": "low", "dvc_remote": True}
    need = {"speed": "instant", "longevity": "high", "version_control": True}
    problems = need_problems("cloud", cloud, need)
    assert problems == [
        "cloud: download speed, level used in place (instant)",
        "cloud: longevity low < high",
    ]  # version control through DVC
    assert need_problems("onedrive", {**cloud, "dvc_remote": False}, need)[-1].endswith(
        "no version control (neither its own nor through DVC)"
    )

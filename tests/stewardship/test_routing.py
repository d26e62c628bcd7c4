"""Routing of tracked outputs to remotes and the rules every move obeys
(cellstrata.stewardship.routing), without DVC: what dvc.yaml, push and archive are given."""

from __future__ import annotations

import pytest
import yaml
from conftest import config_with, main_version

from cellstrata.levels import level_path
from cellstrata.stewardship.dvc import pull, render_dvc_yaml
from cellstrata.stewardship.routing import access_refusals, route, size_refusals
from cellstrata.stewardship.tracked import StewardshipError, tracked_outputs


def _by_stage(config, workspace):
    return {o.stage: o for o in tracked_outputs(config, workspace)}


def test_example_routes_the_partner_plate_apart(tmp_path):
    config = config_with(tmp_path)
    seg = main_version(config)
    outs = _by_stage(config, tmp_path)
    assert outs[f"masks_{seg}_SYN02"].remote == "partner"
    assert outs[f"masks_{seg}_SYN02"].access == "restricted"
    assert outs[f"profiles_{seg}_SYN02"].remote == "default"  # granted lab access
    assert outs[f"masks_{seg}_SYN01"].remote == "default"
    # The experiment tables: SYN01 lab over its schedule, SYN02's profiles lab by grant.
    assert outs[f"experiment_{seg}"].access == "lab"
    assert outs["provenance_experiment"].remote == "partner"  # SYN02's records are in it
    assert access_refusals(config, list(outs.values())) == []


def test_first_matching_route_wins(tmp_path):
    config = config_with(tmp_path)
    assert route(config, level="masks", plate="SYN01", retention="archive", access="lab") == (
        "archive"
    )
    assert route(config, level="raw", plate="SYN02", retention="keep", access="restricted") == (
        "partner"
    )
    assert route(config, level="profiles", plate=None, retention="keep", access="public") == (
        "public"
    )
    config["storage"]["routes"] = [{"levels": ["profiles"], "remote": "public"}]
    with pytest.raises(ValueError, match="no route for level masks of SYN01"):
        route(config, level="masks", plate="SYN01", retention="keep", access="lab")


def test_restricted_data_routed_to_a_public_remote_is_refused(tmp_path):
    def everything_public(raw):
        raw["storage"]["routes"] = [{"remote": "public"}]

    config = config_with(tmp_path, everything_public)
    outs = tracked_outputs(config, tmp_path)
    refused = {r.path: r for r in access_refusals(config, outs)}
    # Nothing here is public yet: every output is refused, each naming plate, level, remote,
    # solution and the rule.
    assert set(refused) == {o.path for o in outs}
    seg = main_version(config)
    masks = refused[level_path("masks", "SYN02", seg)]
    text = str(masks)
    for words in (
        "plate SYN02",
        "level masks",
        "remote public",
        "solution cloud",
        "access restricted",
        "only public data may go to a public remote",
    ):
        assert words in text
    assert "SYN01 embargoed until 2027-12-31, then public" in str(
        refused[level_path("masks", "SYN01", seg)]
    )
    # dvc.yaml never routes them there.
    stages = yaml.safe_load(render_dvc_yaml(config, "config.yaml", str(tmp_path)))["stages"]
    assert not stages


def test_size_limits_count_files_datasets_and_what_the_workspace_puts_there(tmp_path):
    def small_remote(raw):
        raw["storage"]["solutions"] = {
            "tiny": {
                "access": "private",
                "longevity": "low",
                "speed": "download",
                "limit_gb_file": 0.000002,
                "limit_gb_total": 0.000005,
            }
        }
        raw["storage"]["remotes"]["default"] = {"url": "r", "solution": "tiny"}

    config = config_with(tmp_path, small_remote)
    seg = main_version(config)
    profiles = tmp_path / level_path("profiles", "SYN01", seg)
    profiles.mkdir(parents=True)
    (profiles / "a.parquet").write_bytes(b"x" * 1500)
    (profiles / "b.parquet").write_bytes(b"x" * 2500)  # over 2 KB per file
    outs = tracked_outputs(config, tmp_path)
    mine = [o for o in outs if o.path == level_path("profiles", "SYN01", seg)]
    refused = size_refusals(config, mine, tmp_path, tracked=outs)
    assert [r.rule for r in refused] == ["tiny: 2.0 KB per file < 2.5 KB"]
    # Another 2 KB routed to the same solution crosses its 5 KB total.
    manifest = tmp_path / level_path("manifest", "SYN01", None)
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(b"x" * 2000)
    outs = tracked_outputs(config, tmp_path)
    refused = size_refusals(config, mine, tmp_path, tracked=outs)
    assert "tiny: 5.0 KB total < 6.0 KB" in [r.rule for r in refused]


def test_pull_refuses_what_the_workspace_may_not_hold(tmp_path):
    def public_workspace(raw):
        raw["storage"]["workspace_solution"] = "zenodo"

    config = config_with(tmp_path, public_workspace)
    masks = level_path("masks", "SYN02", main_version(config))
    with pytest.raises(StewardshipError) as refused:
        pull(config, [masks], tmp_path)  # refused before DVC is asked for anything
    text = str(refused.value)
    assert "pull: 1 refused, nothing of them sent" in text
    assert f"plate SYN02, level masks ({masks}) -> remote workspace (solution zenodo)" in text
    assert "access restricted in a public workspace" in text

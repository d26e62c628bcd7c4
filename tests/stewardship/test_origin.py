"""Origin and access of plates and of what is derived from them (cellstrata.stewardship.origin),
and the config checks of origin, remotes and routes."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import config_with
from snakemake.exceptions import WorkflowError

from cellstrata.config import ConfigError
from cellstrata.stewardship.origin import (
    allowed_on,
    data_access,
    level_access,
    origin_record,
    plate_origin,
)


def test_plate_origin_merges_the_experiment_default(tmp_path):
    config = config_with(tmp_path)
    own, partner = plate_origin(config, "SYN01"), plate_origin(config, "SYN02")
    assert own["source"] == "own" and own["holder"] == "Example Lab"
    assert own["license"] == "CC-BY-4.0"  # from the experiment-wide origin
    assert partner["source"] == "collaborator" and partner["license"] is None
    assert partner["access"] == "restricted"

    def bare(raw):
        del raw["origin"]
        for plate in raw["plates"]:
            plate.pop("origin")

    plain = config_with(tmp_path, bare)
    assert plate_origin(plain, "SYN01")["source"] == "own"
    assert plate_origin(plain, "SYN01")["access"] == "lab"


def test_embargo_the_day_before_and_on_its_end(tmp_path):
    origin = plate_origin(config_with(tmp_path), "SYN01")  # lab until 2027-12-31
    assert origin["embargo_until"] == "2027-12-31"  # unquoted YAML date read as text
    assert level_access(origin, "profiles", date(2027, 12, 30)) == "lab"
    assert level_access(origin, "profiles", date(2027, 12, 31)) == "public"
    assert level_access(origin, "raw", date(2028, 1, 1)) == "public"
    # Over the whole schedule (what routing and dvc.yaml use): the strictest, lab.
    assert level_access(origin, "profiles") == "lab"


def test_derived_access_and_mixed_plates(tmp_path):
    config = config_with(tmp_path)
    day = date(2028, 6, 1)  # SYN01 public by then
    # SYN02 grants its profiles lab access, never its images or single cells.
    assert data_access(config, ["SYN02"], "profiles", day) == "lab"
    assert data_access(config, ["SYN02"], "features", day) == "restricted"
    assert data_access(config, ["SYN02"], "raw", day) == "restricted"
    # A table of a public and a restricted plate is restricted...
    assert data_access(config, ["SYN01", "SYN02"], "features", day) == "restricted"
    # ...the experiment's profiles only as strict as the grant.
    assert data_access(config, ["SYN01", "SYN02"], "profiles", day) == "lab"
    assert data_access(config, ["SYN01"], "profiles", day) == "public"
    record = origin_record(config, None)
    assert set(record["plates"]) == {"SYN01", "SYN02"} and record["access"] == "lab"
    assert origin_record(config, "SYN02")["agreement"].startswith("DUA 2026-14")


def test_only_public_data_on_public_remotes():
    assert allowed_on("public", "public") and allowed_on("restricted", "private")
    assert not allowed_on("lab", "public") and not allowed_on("restricted", "public")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda c: c["plates"][1]["origin"].update(access="secret"), "secret"),
        (lambda c: c["plates"][1]["origin"].update(source="someone"), "someone"),
        (lambda c: c["plates"][1]["origin"].update(license="CC BY"), "CC BY"),
        (lambda c: c["plates"][1]["origin"]["derived_access"].update(raw="lab"), "raw"),
    ],
    ids=["unknown access", "unknown source", "not an SPDX id", "raw is never derived"],
)
def test_schema_refuses_bad_origin(tmp_path, edit, words):
    with pytest.raises(WorkflowError, match=words):
        config_with(tmp_path, edit)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda c: c["plates"][0]["origin"].pop("after_embargo"),
            r"plates\[SYN01\].origin: embargo_until 2027-12-31 needs after_embargo",
        ),
        (
            lambda c: c["plates"][0]["origin"].update(access="public"),
            r"plates\[SYN01\].origin: access public with an embargo",
        ),
        (
            lambda c: c["plates"][0]["origin"].update(embargo_until="next spring"),
            r"embargo_until: 'next spring' is not a date",
        ),
        (
            lambda c: c["storage"]["remotes"]["partner"].update(solution="tape_robot"),
            r"storage.remotes.partner.solution 'tape_robot' is not a storage solution",
        ),
        (
            lambda c: c["storage"]["remotes"].update(extra={"solution": "cloud"}),
            r"storage.remotes.extra: needs a url",
        ),
        (
            lambda c: c["storage"]["routes"].insert(0, {"remote": "nowhere"}),
            r"storage.routes\[0\].remote 'nowhere' is not a remote",
        ),
        (
            lambda c: c["storage"]["routes"].insert(0, {"plates": ["SYN9"], "remote": "public"}),
            r"storage.routes\[0\].plates: \['SYN9'\] are not plates",
        ),
        (
            lambda c: c["storage"]["remotes"].update(default={"url": "r", "kind": "local_disk"}),
            r"storage.remotes.default.kind is now storage.remotes.default.solution",
        ),
        (
            lambda c: c["storage"].update(prices={"cloud": {"per_gb_month": 0.02}}),
            r"storage.prices is now storage.solutions .* Yours: cloud: \{per_gb_month: 0.02\}",
        ),
        (
            lambda c: c["storage"].update(workspace_kind="local_disk"),
            r"workspace_kind is now storage.workspace_solution",
        ),
    ],
    ids=[
        "embargo without after",
        "public embargo",
        "not a date",
        "unknown solution",
        "remote without url",
        "route to unknown remote",
        "route to unknown plate",
        "old kind",
        "old prices",
        "old workspace_kind",
    ],
)
def test_config_errors_name_the_key(tmp_path, edit, words):
    with pytest.raises(ConfigError, match=words):
        config_with(tmp_path, edit)

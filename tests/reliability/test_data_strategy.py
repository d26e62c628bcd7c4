"""Cases 17.x: nobody sees data they must not. Origin, access and size limits decide where data
may go; every move obeys them, against real remotes: a local directory remote (private) and
moto's S3 server on 127.0.0.1 (a public bucket).

Each lab is a workspace holding the level outputs of two plates (no Snakemake run is needed to
move them); each test pushes to its own prefix of the bucket and reads back what arrived."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, main_version
from s3server import moto_s3_environment

from cellstrata.cli import main as cellstrata_main
from cellstrata.levels import EXPERIMENT_PATH, level_path
from cellstrata.workflow.validate import load_config

BUCKET = "public-data"
PLATES = ("SYN01", "SYN02")
LEVELS = ("manifest", "masks", "features", "profiles")


@pytest.fixture(scope="module")
def s3():
    with moto_s3_environment(BUCKET) as endpoint:
        yield endpoint


def _bucket_md5s(endpoint: str, prefix: str) -> set[str]:
    """The object ids DVC stored under ``prefix`` of the bucket (``files/md5/ab/cdef...``)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {"".join(key.split("/")[-2:]).removesuffix(".dir") for key in keys}


def _dir_md5s(root: Path) -> set[str]:
    return {
        "".join(p.relative_to(root).parts[-2:]).removesuffix(".dir")
        for p in root.rglob("*")
        if p.is_file()
    }


def _level_md5s(lab: Path, path: str) -> set[str]:
    """MD5 of every file of a tracked output (what DVC stores of it)."""
    import hashlib

    full = lab / path
    files = [full] if full.is_file() else [p for p in full.rglob("*") if p.is_file()]
    return {hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _cellstrata(lab: Path, *args: str) -> tuple[int, str]:
    """Run ``cellstrata`` in-process on the lab; return (status, everything it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cellstrata_main([*args, "--workspace", str(lab)])
    return code, out.getvalue()


def _lab(tmp_path: Path, endpoint: str, edit) -> tuple[Path, dict, str]:
    """A workspace with images and the outputs of ``LEVELS`` for both plates, its config
    (the example's, with remotes default/archive/private as directories and public as the
    bucket prefix named after the test) changed by ``edit``; returns (lab, config, version)."""
    lab = tmp_path / "lab"
    prefix = tmp_path.name
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["plates"] = [
        {"name": p, "images": f"images/{p}", "platemap": "platemap.csv"} for p in PLATES
    ]
    config.pop("origin")
    remotes = tmp_path / "remotes"
    config["storage"] = {
        "remotes": {
            "default": {"url": str(remotes / "default"), "solution": "local_disk"},
            "archive": {"url": str(remotes / "archive"), "solution": "cloud"},
            "private": {"url": str(remotes / "private"), "solution": "external_disk"},
            "public": {
                "url": f"s3://{BUCKET}/{prefix}",
                "solution": "cloud",
                "access": "public",
                "endpointurl": endpoint,
            },
        }
    }
    edit(config)
    (lab / "config").mkdir(parents=True)
    (lab / "config/config.yaml").write_text(yaml.safe_dump(config))
    version = main_version(load_config(lab / "config/config.yaml"))
    (lab / "platemap.csv").write_text("well,treatment\nA01,x\n")
    for plate in PLATES:
        images = lab / "images" / plate
        images.mkdir(parents=True)
        (images / f"{plate}_A01_s1_w1.tif").write_bytes(f"image of {plate}".encode())
        for level in LEVELS:
            path = lab / level_path(level, plate, None if level == "manifest" else version)
            content = f"{level} of {plate}".encode()
            if level == "manifest":  # read by storage plans and advice: a real one
                path.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"plate": [plate], "bytes": [len(f"image of {plate}")]}).to_parquet(
                    path
                )
            else:
                path.mkdir(parents=True)
                (path / "A01.parquet").write_bytes(content)
    experiment = lab / EXPERIMENT_PATH.format(version=version)
    experiment.mkdir(parents=True)
    (experiment / "profiles.parquet").write_bytes(b"experiment table of both plates")
    return lab, config, version


def _restricted_partner(config: dict) -> None:
    config["plates"][1]["origin"] = {
        "source": "collaborator",
        "holder": "Partner Lab",
        "access": "restricted",
        "agreement": "DUA: the partner's data stay private",
    }


@pytest.mark.case("17.1", "restricted plate routed to a public remote: refused, none sent")
def test_restricted_plate_routed_to_a_public_remote_is_refused(tmp_path, s3):
    def edit(config):
        config["plates"][0]["origin"] = {"access": "public", "license": "CC0-1.0"}
        _restricted_partner(config)
        # A careless route: every level of SYN02 to the public bucket.
        config["storage"]["routes"] = [
            {"plates": ["SYN02"], "remote": "public"},
            {"remote": "default"},
        ]

    lab, _, version = _lab(tmp_path, s3, edit)
    code, said = _cellstrata(lab, "dvc", "setup", "--create-remotes")
    assert code == 1
    for words in ("plate SYN02", "level masks", "remote public", "solution cloud"):
        assert words in said, said
    assert "access restricted" in said and "only public data may go to a public remote" in said
    # dvc.yaml was written without them: no stage of SYN02 names the public remote.
    stages = yaml.safe_load((lab / "dvc.yaml").read_text())["stages"]
    assert not [s for s in stages if s.endswith("SYN02")]
    assert all(next(iter(s["outs"][0].values()))["remote"] != "public" for s in stages.values())
    code, said = _cellstrata(lab, "push")
    assert code == 1 and "push: " in said and "refused, nothing of them sent" in said
    assert "plate SYN02, level raw" in said
    # The public bucket holds nothing; SYN01 went where the routing sends it.
    assert _bucket_md5s(s3, tmp_path.name) == set()
    held = _dir_md5s(tmp_path / "remotes/default")
    assert _level_md5s(lab, level_path("masks", "SYN01", version)) <= held
    assert not _level_md5s(lab, level_path("masks", "SYN02", version)) & held


@pytest.mark.case("17.2", "restricted plate on a private remote beside a public plate")
def test_each_plate_goes_where_it_belongs(tmp_path, s3):
    def edit(config):
        config["plates"][0]["origin"] = {"access": "public", "license": "CC-BY-4.0"}
        _restricted_partner(config)
        config["storage"]["routes"] = [
            {"access": ["public"], "remote": "public"},
            {"access": ["restricted"], "remote": "private"},
            {"remote": "default"},
        ]

    lab, _, version = _lab(tmp_path, s3, edit)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes")[0] == 0
    code, said = _cellstrata(lab, "push")
    assert code == 0, said
    public, private = _bucket_md5s(s3, tmp_path.name), _dir_md5s(tmp_path / "remotes/private")
    for level in LEVELS:
        version_of = None if level == "manifest" else version
        mine = _level_md5s(lab, level_path(level, "SYN01", version_of))
        theirs = _level_md5s(lab, level_path(level, "SYN02", version_of))
        assert mine <= public and not mine & private, level
        assert theirs <= private and not theirs & public, level


def _public_and_partner(config: dict) -> None:
    """SYN01 public, SYN02 a partner's restricted plate; public data to the bucket, the
    rest to the private directory remote."""
    config["plates"][0]["origin"] = {"access": "public", "license": "CC-BY-4.0"}
    _restricted_partner(config)
    config["storage"]["routes"] = [
        {"access": ["public"], "remote": "public"},
        {"remote": "private"},
    ]


@pytest.mark.case("17.4", "an experiment mixing a public and a restricted plate is restricted")
def test_experiment_of_a_public_and_a_restricted_plate_is_restricted(tmp_path, s3):
    lab, _, version = _lab(tmp_path, s3, _public_and_partner)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes")[0] == 0
    assert _cellstrata(lab, "push")[0] == 0
    public, private = _bucket_md5s(s3, tmp_path.name), _dir_md5s(tmp_path / "remotes/private")
    table = _level_md5s(lab, EXPERIMENT_PATH.format(version=version))
    assert table <= private and not table & public
    assert _level_md5s(lab, level_path("profiles", "SYN01", version)) <= public
    code, said = _cellstrata(lab, "access", "--json")
    assert code == 0, said  # no violation
    rows = {(r["plate"], r["level"]): r for r in json.loads(said)}
    assert rows[("all", "profiles")]["access"] == "restricted"
    assert rows[("all", "profiles")]["source"] == "own, collaborator"
    assert rows[("SYN01", "profiles")]["access"] == "public"


@pytest.mark.case("17.11", "the access report finds data on a remote it may no longer be on")
def test_access_report_finds_violations(tmp_path, s3):
    lab, _, _ = _lab(tmp_path, s3, _public_and_partner)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes")[0] == 0
    assert _cellstrata(lab, "push")[0] == 0
    code, said = _cellstrata(lab, "access")
    assert code == 0 and "workspace, remote public" in said
    # Someone narrows SYN01 after the push: its data is on the bucket, the report says so.
    config = yaml.safe_load((lab / "config/config.yaml").read_text())
    config["plates"][0]["origin"]["access"] = "lab"
    (lab / "config/config.yaml").write_text(yaml.safe_dump(config))
    config = load_config(lab / "config/config.yaml")
    code, said = _cellstrata(lab, "access")
    assert code == 1 and "violation(s)" in said
    assert "on remote public (public, solution cloud) but access lab" in said
    # Nothing moves by the old dvc.yaml (it still names the bucket for SYN01)...
    code, said = _cellstrata(lab, "push")
    assert code == 1 and "dvc.yaml: public, config: private" in said
    assert "regenerate it with `cellstrata dvc setup" in said
    # ...then moves follow the new access (SYN01 to the private remote); the copies already on
    # the bucket stay reported until the lab removes them there.
    assert _cellstrata(lab, "dvc", "setup")[0] == 0
    assert _cellstrata(lab, "push")[0] == 0
    masks = _level_md5s(lab, level_path("masks", "SYN01", main_version(config)))
    assert masks <= _dir_md5s(tmp_path / "remotes/private")
    code, said = _cellstrata(lab, "access")
    assert code == 1 and "workspace, remote private, remote public" in said


@pytest.mark.case("17.3", "embargoed plate: refused the day before its end, moved the day after")
def test_embargo_day_before_and_after(tmp_path, s3):
    def edit(config):
        config["plates"][0]["origin"] = {
            "access": "lab",
            "embargo_until": "2027-06-01",
            "after_embargo": "public",
            "license": "CC-BY-4.0",
        }
        _restricted_partner(config)
        config["storage"]["routes"] = [{"remote": "default"}]

    lab, _, version = _lab(tmp_path, s3, edit)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes")[0] == 0
    assert _cellstrata(lab, "push")[0] == 0
    # dvc.yaml routes by the strictest access over the schedule: the same on either day.
    before_yaml = (lab / "dvc.yaml").read_text()
    move = ["push", "--to", "public", "--plates", "SYN01", "--levels", "profiles"]
    code, said = _cellstrata(lab, *move, "--today", "2027-05-31")
    assert code == 1
    assert "plate SYN01, level profiles" in said and "embargoed until 2027-06-01" in said
    assert _bucket_md5s(s3, tmp_path.name) == set()
    code, said = _cellstrata(lab, "access", "--today", "2027-05-31")
    assert "until 2027-06-01, then public" in said
    code, said = _cellstrata(lab, *move, "--today", "2027-06-02")
    assert code == 0, said
    profiles = _level_md5s(lab, level_path("profiles", "SYN01", version))
    assert profiles <= _bucket_md5s(s3, tmp_path.name)
    # Only what was named: no mask, no partner data.
    assert not _level_md5s(lab, level_path("masks", "SYN01", version)) & _bucket_md5s(
        s3, tmp_path.name
    )
    # The partner's plate stays refused whatever the day.
    code, said = _cellstrata(
        lab, "push", "--to", "public", "--plates", "SYN02", "--today", "2030-01-01"
    )
    assert code == 1 and "plate SYN02" in said
    assert (lab / "dvc.yaml").read_text() == before_yaml


@pytest.mark.case("17.5", "derived_access grants the profiles of a restricted plate only")
def test_derived_access_grants_profiles_only(tmp_path, s3):
    def edit(config):
        config["plates"][0]["origin"] = {"access": "public", "license": "CC0-1.0"}
        _restricted_partner(config)
        config["plates"][1]["origin"]["derived_access"] = {"profiles": "public"}
        config["storage"]["routes"] = [
            {"access": ["public"], "levels": ["profiles"], "remote": "public"},
            {"access": ["restricted"], "remote": "private"},
            {"remote": "default"},
        ]

    lab, _, version = _lab(tmp_path, s3, edit)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes")[0] == 0
    assert _cellstrata(lab, "push")[0] == 0
    public = _bucket_md5s(s3, tmp_path.name)
    assert _level_md5s(lab, level_path("profiles", "SYN02", version)) <= public
    # Both plates' profiles are public now: so is the experiment table.
    assert _level_md5s(lab, EXPERIMENT_PATH.format(version=version)) <= public
    for level in ("masks", "features"):
        assert not _level_md5s(lab, level_path(level, "SYN02", version)) & public, level


@pytest.mark.case("17.6", "a level over a size-limited solution's limits is refused")
def test_over_limit_level_is_refused(tmp_path, s3):
    def edit(config):
        config["storage"]["solutions"] = {
            "small_share": {
                "access": "private",
                "longevity": "low",
                "speed": "download",
                "limit_gb_dataset": 0.00000001,  # 10 bytes: a plate's masks (14) are over
            }
        }
        config["storage"]["remotes"]["private"]["solution"] = "small_share"
        config["storage"]["routes"] = [
            {"levels": ["masks"], "remote": "private"},
            {"remote": "default"},
        ]

    lab, _, version = _lab(tmp_path, s3, edit)
    code, said = _cellstrata(lab, "dvc", "setup", "--create-remotes")
    assert code == 1 and "small_share: 10 B per dataset < 14 B" in said
    code, said = _cellstrata(lab, "push")
    assert code == 1 and "level masks" in said and "solution small_share" in said
    assert _dir_md5s(tmp_path / "remotes/private") == set()
    assert _level_md5s(lab, level_path("features", "SYN01", version)) <= _dir_md5s(
        tmp_path / "remotes/default"
    )


def _validate(tmp_path: Path, edit) -> str:
    """``cellstrata validate`` of the example config changed by ``edit``: what it says (it
    must fail)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = io.StringIO()
    with contextlib.redirect_stderr(out):
        assert cellstrata_main(["validate", str(path)]) == 1
    return out.getvalue()


@pytest.mark.case("17.7", "a remote naming an unknown solution is a config error")
def test_unknown_solution_is_refused(tmp_path):
    said = _validate(
        tmp_path, lambda c: c["storage"]["remotes"]["partner"].update(solution="tape_robot")
    )
    assert "storage.remotes.partner.solution 'tape_robot' is not a storage solution" in said


@pytest.mark.case("17.8", "an unknown access value is a schema error")
def test_unknown_access_is_refused(tmp_path):
    said = _validate(tmp_path, lambda c: c["plates"][1]["origin"].update(access="partners-only"))
    assert "'partners-only' is not one of ['public', 'lab', 'restricted']" in said


@pytest.mark.case("17.9", "dvc.yaml never routes data that is not public to a public remote")
@pytest.mark.parametrize(
    "routes",
    [
        [{"remote": "public"}],
        [{"levels": ["profiles"], "remote": "public"}, {"remote": "default"}],
        [{"plates": ["SYN02"], "remote": "public"}, {"remote": "private"}],
        [{"retention": ["keep"], "remote": "public"}, {"remote": "archive"}],
        [{"access": ["lab", "restricted"], "remote": "public"}, {"remote": "default"}],
    ],
    ids=["everything", "profiles", "the partner's plate", "kept levels", "by access"],
)
def test_dvc_yaml_never_routes_private_data_to_a_public_remote(tmp_path, routes):
    from cellstrata.stewardship.dvc import render_dvc_yaml
    from cellstrata.stewardship.tracked import tracked_outputs

    def edit(config):
        config["plates"][0]["origin"] = {
            "access": "lab",
            "embargo_until": "2020-01-01",  # ended: public now, lab in its schedule
            "after_embargo": "public",
        }
        config["plates"][0]["origin"]["derived_access"] = {"profiles": "public"}
        _restricted_partner(config)
        config["storage"]["routes"] = routes

    lab, _, _ = _lab(tmp_path, "http://127.0.0.1:9", edit)  # no remote is reached
    config = load_config(lab / "config/config.yaml")
    stages = yaml.safe_load(render_dvc_yaml(config, "config.yaml", str(lab)))["stages"]
    access = {o.path: o.access for o in tracked_outputs(config, lab)}
    public = [
        path
        for stage in stages.values()
        for path, out in stage["outs"][0].items()
        if out["remote"] == "public"
    ]
    assert all(access[path] == "public" for path in public), public
    # SYN01's profiles are granted public: they go there when the first route says so.
    if routes[0] in ({"remote": "public"}, {"levels": ["profiles"], "remote": "public"}):
        assert level_path("profiles", "SYN01", main_version(config)) in public


@pytest.mark.case("17.10", "advice excludes public solutions for restricted data, with reasons")
def test_advice_excludes_public_solutions_for_restricted_data(tmp_path, s3):
    lab, _, _ = _lab(tmp_path, s3, _restricted_partner)
    code, said = _cellstrata(lab, "storage", "advise", "--json", "--today", "2026-12-05")
    assert code == 0
    rows = [r for r in json.loads(said) if r["plate"] == "SYN02" and r["level"] == "raw"]
    public = [r for r in rows if r["solution"] in ("idr", "zenodo", "figshare", "github")]
    assert public and all(not r["suitable"] for r in public)
    assert all(f"{r['solution']}: public, plate restricted" in r["reason"] for r in public)
    assert any(r["suitable"] for r in rows)

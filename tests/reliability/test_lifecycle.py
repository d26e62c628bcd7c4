"""Cases 21.x: data move along their level's schedule (``cellstrata lifecycle``) between real
remotes, a local directory remote and moto's S3 server on 127.0.0.1; a move the access rules
forbid is refused, and an interrupted move always leaves a verified copy.

The labs are those of the data-strategy cases (level outputs of two plates, no Snakemake run),
with job records that date when each level was made and used."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from s3server import moto_s3_environment

from cellstrata.levels import LIFECYCLE_PATH, level_path
from cellstrata.workflow.failpoint import FAULT_VARIABLE

from .test_data_strategy import BUCKET, PLATES, _cellstrata, _lab, _restricted_partner

MADE, USED = "2026-01-01T10:00:00+00:00", "2026-03-01T10:00:00+00:00"


@pytest.fixture(scope="module")
def s3():
    with moto_s3_environment(BUCKET) as endpoint:
        yield endpoint


def _records(lab: Path, version: str) -> None:
    """A segmentation job (made) and a features job that read the masks (used) per plate."""
    for plate in PLATES:
        masks = lab / level_path("masks", plate, version)
        files = [p.relative_to(lab).as_posix() for p in sorted(masks.rglob("*")) if p.is_file()]
        for rule, end, inputs, outputs in (
            ("segment", MADE, [], files),
            ("features", USED, files, []),
        ):
            path = lab / f"results/provenance/{plate}/{rule}/{version}/A01-A01.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "rule": rule,
                "level": "masks" if rule == "segment" else "features",
                "wildcards": {"plate": plate, "seg": version, "batch": "A01-A01"},
                "inputs": [{"path": p} for p in inputs],
                "outputs": [{"path": p} for p in outputs],
                "start": end,
                "end": end,
            }
            path.write_text(json.dumps(record))


def _objects(lab: Path, path: str) -> dict[str, bytes]:
    """MD5 -> content of every file of an output (what DVC stores of it)."""
    full = lab / path
    files = [full] if full.is_file() else [p for p in full.rglob("*") if p.is_file()]
    return {hashlib.md5(p.read_bytes()).hexdigest(): p.read_bytes() for p in files}


def _dir_intact(root: Path, md5s) -> bool:
    """Whether a directory remote holds every object of ``md5s`` with its MD5."""
    for md5 in md5s:
        path = root / "files/md5" / md5[:2] / md5[2:]
        if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
            return False
    return True


def _bucket_intact(endpoint: str, prefix: str, md5s) -> bool:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for md5 in md5s:
        try:
            body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}")
        except client.exceptions.NoSuchKey:
            return False
        if hashlib.md5(body["Body"].read()).hexdigest() != md5:
            return False
    return True


def _scheduled_lab(tmp_path: Path, endpoint: str, target: str, edit=None, schedule=None):
    """A lab whose masks are kept 90 days, then archived on ``target``; remote cold is a
    private prefix of the bucket (solution cloud_cold). SYN01's masks hold one file equal to
    its kept profiles' file: an object two outputs on the default remote reference."""

    def scheduled(config):
        config["storage"]["remotes"]["cold"] = {
            "url": f"s3://{BUCKET}/{tmp_path.name}-cold",
            "solution": "cloud_cold",
            "endpointurl": endpoint,
        }
        config["retention"]["levels"]["masks"] = schedule or [
            {"keep": "90d"},
            {"archive": target},
        ]
        if edit is not None:
            edit(config)

    lab, config, version = _lab(tmp_path, endpoint, scheduled)
    shared = lab / level_path("masks", "SYN01", version) / "B01.parquet"
    shared.write_bytes(
        (lab / level_path("profiles", "SYN01", version) / "A01.parquet").read_bytes()
    )
    _records(lab, version)
    assert _cellstrata(lab, "dvc", "setup", "--create-remotes")[0] == 0
    code, said = _cellstrata(lab, "push")
    assert code == 0, said
    return lab, version


def _masks(lab: Path, version: str) -> dict[str, dict[str, bytes]]:
    return {p: _objects(lab, level_path("masks", p, version)) for p in PLATES}


@pytest.mark.case("21.1", "lifecycle: kept masks move from a directory remote to S3 when due")
def test_lifecycle_moves_due_levels_between_remotes(tmp_path, s3):
    lab, version = _scheduled_lab(tmp_path, s3, "cold")
    masks = _masks(lab, version)
    default = tmp_path / "remotes/default"
    shared = hashlib.md5(
        (lab / level_path("profiles", "SYN01", version) / "A01.parquet").read_bytes()
    ).hexdigest()
    # Made 2026-01-01: kept 90 days, due 2026-04-01.
    code, said = _cellstrata(lab, "lifecycle", "--dry-run", "--today", "2026-03-31")
    assert code == 0 and "nothing due on 2026-03-31" in said, said
    assert "later: SYN01 masks" in said and "due 2026-04-01" in said
    code, said = _cellstrata(lab, "lifecycle", "--dry-run", "--today", "2026-04-01")
    assert code == 0 and said.count("due: ") == 2, said
    assert all(_dir_intact(default, m) for m in masks.values())  # a dry run moves nothing
    code, said = _cellstrata(lab, "lifecycle", "--today", "2026-04-01")
    assert code == 0, said
    for plate in PLATES:
        assert _bucket_intact(s3, f"{tmp_path.name}-cold", masks[plate]), plate
        assert not (lab / level_path("masks", plate, version)).exists()
        only_masks = set(masks[plate]) - {shared}
        assert not any(_dir_intact(default, [m]) for m in only_masks), plate
    # The object SYN01's kept profiles also reference stays on the default remote.
    assert _dir_intact(default, [shared])
    record = yaml.safe_load(
        (lab / LIFECYCLE_PATH / f"masks_{version.replace('.', '-')}_SYN01.yaml").read_text()
    )
    assert record["remote"] == "cold" and record["step"] == 1 and record["pending"] is None
    (move,) = record["history"]
    assert move["from"] == "default" and move["to"] == "cold" and move["kept_on_old"] == 1
    stages = yaml.safe_load((lab / "dvc.yaml").read_text())["stages"]
    assert (
        stages[f"masks_{version.replace('.', '-')}_SYN01"]["outs"][0][
            level_path("masks", "SYN01", version)
        ]["remote"]
        == "cold"
    )
    code, said = _cellstrata(lab, "status", "--json")
    rows = {(r["plate"], r["level"]): r for r in json.loads(said)}
    assert rows[("SYN01", "masks")]["state"] == "archived"
    assert rows[("SYN01", "masks")]["remote"] == "cold"
    # Nothing more to do; the data come back bit for bit from the new remote.
    assert "nothing due" in _cellstrata(lab, "lifecycle", "--today", "2027-01-01")[1]
    code, said = _cellstrata(lab, "pull", level_path("masks", "SYN01", version))
    assert code == 0, said
    assert _objects(lab, level_path("masks", "SYN01", version)) == masks["SYN01"]


@pytest.mark.case("21.2", "lifecycle: a move of restricted data to a public remote is refused")
def test_lifecycle_refuses_a_move_the_access_rules_forbid(tmp_path, s3):
    def edit(config):
        config["plates"][0]["origin"] = {"access": "public", "license": "CC0-1.0"}
        _restricted_partner(config)

    lab, version = _scheduled_lab(tmp_path, s3, "public", edit)
    masks = _masks(lab, version)
    code, said = _cellstrata(lab, "lifecycle", "--today", "2026-06-01")
    assert code == 1, said
    for words in ("plate SYN02, level masks", "remote public", "access restricted"):
        assert words in said, said
    assert "the others moved:" in said and "SYN01 masks" in said
    # SYN02 stays where it was, in the workspace and on the default remote; none of it public.
    assert _objects(lab, level_path("masks", "SYN02", version)) == masks["SYN02"]
    assert _dir_intact(tmp_path / "remotes/default", masks["SYN02"])
    assert not any(_bucket_intact(s3, tmp_path.name, [m]) for m in masks["SYN02"])
    assert _bucket_intact(s3, tmp_path.name, masks["SYN01"])


@pytest.mark.case("21.3", "lifecycle: an interrupted move leaves a verified copy, then resumes")
@pytest.mark.parametrize("point", ["pushed", "recorded", "removing"])
def test_interrupted_move_leaves_a_verified_copy(tmp_path, s3, monkeypatch, point):
    lab, version = _scheduled_lab(tmp_path, s3, "cold")
    masks = _masks(lab, version)["SYN01"]
    default, cold = tmp_path / "remotes/default", f"{tmp_path.name}-cold"
    monkeypatch.setenv(FAULT_VARIABLE, f"lifecycle/SYN01/masks/{point}:after-write")
    code, said = _cellstrata(lab, "lifecycle", "--today", "2026-04-01")
    assert code == 1 and "fault injected" in said, said
    assert _dir_intact(default, masks) or _bucket_intact(s3, cold, masks)
    monkeypatch.delenv(FAULT_VARIABLE)
    code, said = _cellstrata(lab, "lifecycle", "--today", "2026-04-01")
    assert code == 0, said
    assert _bucket_intact(s3, cold, masks)
    assert not (lab / level_path("masks", "SYN01", version)).exists()
    shared = hashlib.md5(
        (lab / level_path("profiles", "SYN01", version) / "A01.parquet").read_bytes()
    ).hexdigest()
    assert not any(_dir_intact(default, [m]) for m in set(masks) - {shared})


@pytest.mark.case("21.4", "lifecycle: an archived level moves on from a directory remote to S3")
def test_archived_level_moves_on_to_its_next_remote(tmp_path, s3):
    import shutil

    schedule = [{"keep": "90d"}, {"archive": "archive", "for": "30d"}, {"archive": "cold"}]
    lab, version = _scheduled_lab(tmp_path, s3, "cold", schedule=schedule)
    masks = _masks(lab, version)["SYN01"]
    archive, cold = tmp_path / "remotes/archive", f"{tmp_path.name}-cold"
    code, said = _cellstrata(lab, "lifecycle", "--today", "2026-04-01")
    assert code == 0, said
    assert (
        _dir_intact(archive, masks) and not (lab / level_path("masks", "SYN01", version)).exists()
    )
    assert "later: SYN01 masks" in said and "due 2026-05-01" in said
    # Its objects now come from the archive remote: nothing of it is left in the workspace.
    shutil.rmtree(lab / ".dvc/cache")
    code, said = _cellstrata(lab, "lifecycle", "--today", "2026-05-01")
    assert code == 0, said
    assert _bucket_intact(s3, cold, masks)
    assert not any(_dir_intact(archive, [m]) for m in masks)
    record = yaml.safe_load((lab / LIFECYCLE_PATH / f"masks_{version}_SYN01.yaml").read_text())
    assert [(m["from"], m["to"]) for m in record["history"]] == [
        ("default", "archive"),
        ("archive", "cold"),
    ]
    code, said = _cellstrata(lab, "pull", level_path("masks", "SYN01", version))
    assert code == 0, said
    assert _objects(lab, level_path("masks", "SYN01", version)) == masks

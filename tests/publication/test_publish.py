"""cellstrata publish on the example run: a Workflow Run RO-Crate that roc-validator accepts
offline and rocrate reads back with every checksum right; the refusals (a level deleted by
retention, an embargoed or restricted plate, a solution's limits); nothing restricted in any
byte of the package."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import zipfile
from pathlib import Path

import pytest
import yaml

from cellstrata.cli import main as cellstrata_main

pytestmark = pytest.mark.workflow

#: The day SYN01's embargo is over (it ends 2027-12-31 in these configs, as in the example's).
AFTER = "2028-01-01"
SECRET_PLATE = "PX7Q"
SECRET_HOLDER = "Secret Partner GmbH"


def _cellstrata(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cellstrata_main(list(args))
    return code, out.getvalue()


def _config(workspace: Path, path: Path, edit=None) -> Path:
    """The example run's config with SYN01 the lab's plate until 2027-12-31, public after."""
    config = yaml.safe_load((workspace / "test_config.yaml").read_text())
    config["plates"][0]["origin"] = {
        "access": "lab",
        "embargo_until": "2027-12-31",
        "after_embargo": "public",
    }
    if edit is not None:
        edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


def validate_offline(crate: Path, cache: Path) -> list[str]:
    """roc-validator's issues (REQUIRED) with the Workflow Run Crate profile, offline.

    The one remote document it needs, the RO-Crate 1.1 JSON-LD context, is the copy the
    pinned ``rocrate`` ships (``rocrate/data/ro-crate.jsonld``): it is put into the
    validator's HTTP cache (requests-cache, SQLite) through a transport adapter that serves
    that file, and the validator runs in its offline mode, which reads the cache only. The
    network is closed while it runs, so a fetch of anything else fails the test.
    """
    import requests
    import requests_cache
    import rocrate
    import urllib3
    from rocrate_validator import models, services

    bundled = {
        "https://w3id.org/ro/crate/1.1/context": Path(rocrate.__file__).parent
        / "data"
        / "ro-crate.jsonld"
    }

    class Bundled(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            body = bundled[request.url].read_bytes()
            raw = urllib3.HTTPResponse(
                body=io.BytesIO(body),
                headers={"Content-Type": "application/ld+json"},
                status=200,
                preload_content=False,
                request_url=request.url,
            )
            return requests.adapters.HTTPAdapter().build_response(request, raw)

        def close(self):
            pass

    session = requests_cache.CachedSession(cache_name=str(cache), backend="sqlite", expire_after=-1)
    session.mount("https://", Bundled())
    for url in bundled:
        assert session.get(url).status_code == 200
    session.close()

    def no_network(*args, **kwargs):
        raise OSError("network closed during validation")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        settings = services.ValidationSettings(
            rocrate_uri=str(crate),
            profile_identifier="workflow-run-crate",
            requirement_severity=models.Severity.REQUIRED,
            offline=True,
            cache_path=str(cache),
        )
        result = services.validate(settings)
    return [f"{i.check.identifier}: {i.message}" for i in result.get_issues()] + (
        [] if result.passed() else ["not passed"]
    )


@pytest.fixture(scope="module")
def published(example_run, tmp_path_factory) -> Path:
    """profiles and masks of SYN01, published on the day after its embargo, zipped."""
    tmp = tmp_path_factory.mktemp("publish")
    config = _config(example_run, tmp / "config.yaml")
    code, out = _cellstrata(
        "publish", "--config", str(config), "--workspace", str(example_run),
        "--levels", "profiles,masks", "--out", str(tmp / "crate"), "--zip", "--today", AFTER,
    )  # fmt: skip
    assert code == 0, out
    return tmp / "crate"


def _graph(crate: Path) -> dict[str, dict]:
    metadata = json.loads((crate / "ro-crate-metadata.json").read_text())
    return {entity["@id"]: entity for entity in metadata["@graph"]}


def test_crate_validates_offline(published, tmp_path):
    assert validate_offline(published, tmp_path / "http_cache") == []


def test_every_checksum_reads_back(published, example_run, tmp_path):
    from rocrate.rocrate import ROCrate

    from cellstrata.publication.crate import verify_crate
    from cellstrata.publication.package import PublishError, sha256_file

    crate = ROCrate(published)
    data = {e.id: e for e in crate.data_entities if e.id.startswith("results/") and "sha256" in e}
    levels = [example_run / "results" / "profiles", example_run / "results" / "masks"]
    expected = {
        p.relative_to(example_run).as_posix()
        for root in levels
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert expected <= set(data)  # plus the experiment tables: the one plate is every plate
    for entity_id, entity in data.items():
        assert entity["sha256"] == sha256_file(example_run / entity_id), entity_id
        assert int(entity["contentSize"]) == (example_run / entity_id).stat().st_size
        assert entity["encodingFormat"] in ("application/vnd.apache.parquet", "image/tiff")
        assert entity["license"]["@id"] == "https://spdx.org/licenses/CC-BY-4.0"
        assert "public on 2028-01-01" in entity["conditionsOfAccess"]
    assert verify_crate(published) >= len(data)
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    victim = next(iter(sorted(data)))
    (broken / victim).write_bytes(b"changed" + (broken / victim).read_bytes()[7:])
    with pytest.raises(PublishError, match="checksum or size differs"):
        verify_crate(broken)


def test_workflow_and_provenance_in_the_crate(published, example_run):
    from cellstrata.stewardship.provenance import read_records

    graph = _graph(published)
    root = graph["./"]
    workflow = graph[root["mainEntity"]["@id"]]
    assert "ComputationalWorkflow" in workflow["@type"]
    for part in (
        "workflow/Snakefile",
        "workflow/rules/profiles.smk",
        "workflow/scripts/profiles.py",
    ):
        assert (published / part).is_file()
    assert (published / "workflow/src/cellstrata/publication/publish.py").is_file()
    records = read_records(example_run / "results")
    snakemake = records[0]["software"]["snakemake"]
    software = [graph[s["@id"]] for s in workflow["softwareRequirements"]]
    assert any(s["name"] == "snakemake" and s["softwareVersion"] == snakemake for s in software)
    config = yaml.safe_load((published / "workflow/config/config.yaml").read_text())
    assert [p["name"] for p in config["plates"]] == ["SYN01"]
    assert config["plates"][0]["images"] == "raw/SYN01"
    assert "remotes" not in config["storage"]
    # One action per job behind the files, back to ingest and its raw images.
    jobs = [
        e for e in graph.values() if e["@type"] == "CreateAction" and e["@id"] != "#workflow-run"
    ]
    rules = {e["name"].split()[1] for e in jobs}
    assert {"ingest", "illumination", "correct", "segment", "features", "profiles"} <= rules
    made = {
        r["rule"]
        for r in records
        if any(o["path"].startswith("results/masks") for o in r["outputs"])
    }
    assert made <= rules
    for job in jobs:
        assert job["startTime"] and job["endTime"] and job["result"]
    ingest = next(e for e in jobs if e["name"].startswith("rule ingest"))
    raw = [graph[i["@id"]]["name"] for i in ingest["object"]]
    assert raw and all(name.startswith("raw/SYN01/SYN01_") for name in raw)
    text = (published / "ro-crate-metadata.json").read_text()
    assert str(example_run) not in text and '"host"' not in text and '"user"' not in text
    assert records[0]["host"] not in text
    assert (published / "ro-crate-preview.html").is_file()
    assert "CC-BY-4.0" in (published / "README.md").read_text()
    with zipfile.ZipFile(published.with_suffix(".zip")) as archive:
        assert "ro-crate-metadata.json" in archive.namelist()


def test_deleted_level_refused_with_the_command_that_remakes_it(example_run, tmp_path):
    config = _config(example_run, tmp_path / "config.yaml")
    code, out = _cellstrata(
        "publish", "--config", str(config), "--workspace", str(example_run),
        "--levels", "profiles,corrected", "--out", str(tmp_path / "crate"), "--today", AFTER,
    )  # fmt: skip
    assert code == 1
    assert "plate SYN01, level corrected: not in the workspace" in out
    assert "retention delete" in out and "--notemp --until correct" in out
    assert not (tmp_path / "crate").exists()


def test_embargoed_plate_refused(example_run, tmp_path):
    config = _config(example_run, tmp_path / "config.yaml")
    code, out = _cellstrata(
        "publish", "--config", str(config), "--workspace", str(example_run),
        "--levels", "profiles", "--out", str(tmp_path / "crate"), "--today", "2027-06-01",
    )  # fmt: skip
    assert code == 1
    assert "plate SYN01, level profiles: access lab on 2027-06-01" in out
    assert "embargo until 2027-12-31, then public" in out
    assert not (tmp_path / "crate").exists()


@pytest.fixture(scope="module")
def lab(example_run, tmp_path_factory) -> tuple[Path, Path]:
    """The example run beside a partner's restricted plate (its profiles and records in the
    workspace, its images elsewhere): the workspace and its config."""
    from cellstrata.stewardship.provenance import read_records, write_record

    root = tmp_path_factory.mktemp("lab")
    workspace = root / "lab"
    shutil.copytree(example_run, workspace, ignore=shutil.ignore_patterns("crops", "masks"))
    images = root / f"partner_images_{SECRET_PLATE}"
    images.mkdir()
    version = next((workspace / "results/profiles").iterdir()).name
    profiles = workspace / "results/profiles" / version
    shutil.copytree(profiles / "SYN01", profiles / SECRET_PLATE)
    record = next(r for r in read_records(workspace / "results") if r["rule"] == "profiles")
    record = json.loads(json.dumps(record).replace("SYN01", SECRET_PLATE))
    record["origin"]["holder"] = SECRET_HOLDER
    write_record(workspace / f"results/provenance/{SECRET_PLATE}/profiles/{version}.json", record)

    def edit(config):
        config["plates"].append(
            {
                "name": SECRET_PLATE,
                "images": str(images),
                "platemap": config["plates"][0]["platemap"],
                "origin": {
                    "source": "collaborator",
                    "holder": SECRET_HOLDER,
                    "license": "CC-BY-4.0",
                    "access": "restricted",
                    "agreement": "DUA 99: nothing of this plate leaves the lab",
                },
            }
        )

    return workspace, _config(workspace, root / "config.yaml", edit)


def _all_bytes(path: Path) -> bytes:
    """Every byte of a directory's files and names, and of a zip's members and names."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return path.read_bytes() + b"".join(
                name.encode() + archive.read(name) for name in archive.namelist()
            )
    return b"".join(
        p.relative_to(path).as_posix().encode() + p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    )


def test_restricted_plate_refused_and_never_in_the_package(lab, tmp_path):
    workspace, config = lab
    base = ["publish", "--config", str(config), "--workspace", str(workspace), "--today", AFTER]
    for plates in ([], ["--plates", SECRET_PLATE]):
        code, out = _cellstrata(
            *base, "--levels", "profiles", *plates, "--out", str(tmp_path / "x")
        )
        assert code == 1
        assert f"plate {SECRET_PLATE}, level profiles: access restricted on {AFTER}" in out
        assert not (tmp_path / "x").exists()
    crate = tmp_path / "crate"
    code, out = _cellstrata(
        *base, "--levels", "profiles", "--plates", "SYN01", "--out", str(crate), "--zip"
    )
    assert code == 0, out
    for written in (crate, crate.with_suffix(".zip")):
        data = _all_bytes(written)
        for secret in (SECRET_PLATE, SECRET_HOLDER, "DUA 99", str(workspace)):
            assert secret.encode() not in data, (written, secret)
    assert "combine plates that are not published" in (crate / "README.md").read_text()


def test_leak_guard_finds_a_planted_name(tmp_path):
    from cellstrata.publication.leaks import find_leaks

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "table.parquet").write_bytes(b"PAR1\x00" + SECRET_PLATE.encode() + b"\x00")
    (tmp_path / f"{SECRET_PLATE}.txt").write_text("nothing")
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "code.py").write_text(SECRET_PLATE)
    leaks = find_leaks(tmp_path, {SECRET_PLATE: "restricted"}, skip=["workflow/"])
    assert sorted(leaks) == [f"{SECRET_PLATE}.txt: restricted", "a/table.parquet: restricted"]


def test_target_limits_split_or_refuse(example_run, tmp_path):
    def edit(config):
        config["storage"]["solutions"] = {
            "zenodo": {"limit_gb_dataset": 0.004},
            "github": {"limit_gb_file": 0.000002},
            "figshare": {"limit_gb_total": 0.001},
        }

    config = _config(example_run, tmp_path / "config.yaml", edit)
    base = ["publish", "--config", str(config), "--workspace", str(example_run), "--today", AFTER]
    code, out = _cellstrata(
        *base, "--levels", "profiles", "--target", "github", "--out", str(tmp_path / "g")
    )
    assert code == 1 and "over github's 2.0 KB per file" in out and "_normalized.parquet" in out
    code, out = _cellstrata(
        *base, "--levels", "profiles", "--target", "figshare", "--out", str(tmp_path / "f")
    )
    assert code == 1 and "figshare: 1.0 MB total" in out
    assert not (tmp_path / "g").exists() and not (tmp_path / "f").exists()
    code, out = _cellstrata(
        *base, "--levels", "profiles", "--target", "zenodo", "--out", str(tmp_path / "z")
    )
    assert code == 0, out
    parts = sorted((tmp_path / "z").iterdir())
    assert len(parts) >= 2 and all(p.name.startswith("part-") for p in parts)
    from rocrate.rocrate import ROCrate

    held = []
    for part in parts:
        files = [e for e in ROCrate(part).data_entities if "sha256" in e]
        assert sum(int(e["contentSize"]) for e in files) <= 0.004e9
        held += [e.id for e in files]
    assert len(held) == len(set(held))
    assert {p for p in held if "/SYN01/" in p} == {
        p.relative_to(example_run).as_posix()
        for p in (example_run / "results/profiles").rglob("*.parquet")
    }


def test_by_reference_names_objects_a_public_remote_holds(example_run, tmp_path):
    from s3server import moto_s3_environment

    from cellstrata.stewardship.provenance import md5_file

    lab = tmp_path / "lab"
    skip = ("crops", "masks", "features", "illumination", "qc", "figures", "corrected")
    shutil.copytree(example_run, lab, ignore=shutil.ignore_patterns(*skip))
    with moto_s3_environment("public-data") as endpoint:

        def edit(config):
            remotes = tmp_path / "remotes"
            config["storage"] = {
                "remotes": {
                    "default": {"url": str(remotes / "default"), "solution": "local_disk"},
                    "archive": {"url": str(remotes / "archive"), "solution": "cloud"},
                    "public": {
                        "url": "s3://public-data/lab",
                        "solution": "cloud",
                        "access": "public",
                        "endpointurl": endpoint,
                    },
                },
                "routes": [{"remote": "default"}],
            }

        config = _config(lab, tmp_path / "config.yaml", edit)
        base = ["--config", str(config), "--workspace", str(lab)]
        publish = ["publish", *base, "--levels", "profiles", "--by-reference", "--today", AFTER]
        code, out = _cellstrata(*publish, "--out", str(tmp_path / "early"))
        assert code == 1 and "on no public remote (public)" in out
        assert "cellstrata push --to public --plates SYN01 --levels profiles" in out
        assert not (tmp_path / "early").exists()
        assert _cellstrata("dvc", "setup", "--create-remotes", *base)[0] == 0
        code, out = _cellstrata(
            "push", *base, "--to", "public", "--levels", "profiles", "--today", AFTER
        )
        assert code == 0, out
        crate = tmp_path / "crate"
        code, out = _cellstrata(*publish, "--out", str(crate))
        assert code == 0, out
        assert validate_offline(crate, tmp_path / "http_cache") == []
    data = [e for e in _graph(crate).values() if "sha256" in e]
    assert data and not (crate / "results").exists()
    for entity in data:
        md5 = md5_file(lab / entity["name"])
        assert entity["@id"] == f"s3://public-data/lab/files/md5/{md5[:2]}/{md5[2:]}"


def test_workflow_files_are_the_recorded_commits(tmp_path):
    import subprocess

    from cellstrata.publication.crate import workflow_files

    repo = tmp_path / "repo"
    (repo / "rules").mkdir(parents=True)
    (repo / "Snakefile").write_text("include: 'rules/a.smk'\n")
    (repo / "rules/a.smk").write_text("rule a:\n    output: 'x'\n")

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "workflow")
    commit = git("rev-parse", "HEAD")
    (repo / "rules/a.smk").write_text("rule a:\n    output: 'changed since the run'\n")
    files, note = workflow_files(commit, False, repo)
    assert files == {
        "Snakefile": b"include: 'rules/a.smk'\n",
        "rules/a.smk": b"rule a:\n    output: 'x'\n",
    }
    assert commit in note
    files, note = workflow_files(commit, True, repo)  # the run's code was not committed
    assert b"changed since the run" in files["rules/a.smk"] and "uncommitted" in note


def test_reduced_config_holds_only_the_published_plates():
    from cellstrata.publication.crate import reduced_config

    config = {
        "experiment": "e",
        "plates": [
            {"name": "A1", "images": "/data/lab/A1", "platemap": "/data/lab/maps/a.csv"},
            {"name": SECRET_PLATE, "images": "/partner/x", "platemap": "/partner/m.csv"},
        ],
        "retention": {"plates": {SECRET_PLATE: {"masks": "keep"}, "A1": {"masks": "keep"}}},
        "storage": {"remotes": {"default": {"url": "s3://lab/dvc"}}, "routes": [], "needs": {}},
    }
    reduced = reduced_config(config, ["A1"])
    assert reduced["plates"] == [{"name": "A1", "images": "raw/A1", "platemap": "a.csv"}]
    assert reduced["retention"]["plates"] == {"A1": {"masks": "keep"}}
    assert reduced["storage"] == {"needs": {}}
    assert SECRET_PLATE not in json.dumps(reduced) and "/data" not in json.dumps(reduced)


def test_unknown_version_refused_naming_its_path(example_run, tmp_path):
    config = _config(example_run, tmp_path / "config.yaml")
    code, out = _cellstrata(
        "publish", "--config", str(config), "--workspace", str(example_run), "--levels",
        "profiles", "--version", "classical-00000000", "--out", str(tmp_path / "c"),
        "--today", AFTER,
    )  # fmt: skip
    assert code == 1
    assert "level profiles: not in the workspace (results/profiles/classical-00000000/SYN01)" in out

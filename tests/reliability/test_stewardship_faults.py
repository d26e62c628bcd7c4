"""Reliability, data stewardship under faults: retention never destroys what is still needed
or not verifiably stored elsewhere, dry runs touch nothing, remote faults (an S3 server cut
mid-push, a corrupted object) fail loudly and are recoverable, and no credential is committed.

One tiny workflow run (``base_run``: one plate, 64 x 64 px, corrected images and masks with
retention delete, features archived) is copied into a fresh workspace per test, and the
``cellstrata`` commands run on it as a lab would run them. tests/test_stewardship.py covers
the happy path (the archive lifecycle, a collaborator's pull); these are its faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, example_config, main_version, run_snakemake
from s3server import Relay, moto_s3_environment

from cellstrata.cli import main as cellstrata_main
from cellstrata.example import generate_example
from cellstrata.stewardship.dvc import (
    push,
)
from cellstrata.stewardship.status import (
    status,
)
from cellstrata.workflow.validate import (
    load_config,
)

SIZE = 64
PLATE = "ST1"
BUCKET = "lab-bucket"


def _base_config(data: Path, plate: str = PLATE) -> dict:
    """The tiny config of the stewardship suites, its platemap inside the workspace (a copy of
    the run carries it, as in a lab's clone)."""
    config = example_config(data)
    config["plates"] = [
        {"name": plate, "images": str(data / "images" / plate), "platemap": "platemap.csv"}
    ]
    config["batching"] = {"wells_per_job": 3}
    config["features"] = {"groups": ["AreaShape", "Intensity"]}
    config["illumination"] = {"smoothing": "gaussian", "filter_size": 16}
    config["segmentation"]["nuclei"] = {"diameter": 5}
    config["segmentation"]["cells"] = {"max_distance": 8}
    config["crops"] = {"enabled": True, "size": 16}
    # corrected images are read by segment, features and crops, masks by features and crops:
    # delete levels with several consumers.
    config["retention"] = {
        "levels": {
            "corrected": "delete",
            "masks": "delete",
            "crops": "keep",
            "illumination": "keep",
            "features": "archive",
        }
    }
    return config


def _targets(config: dict) -> list[str]:
    version = main_version(config)
    return [
        f"results/profiles/{version}/{PLATE}/{PLATE}_feature_selected.parquet",
        f"results/crops/{version}/{PLATE}/A01-A03.h5",
        f"results/crops/{version}/{PLATE}/A01-A03.parquet",
    ]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stewardship-faults")
    data = root / "data"
    generate_example(data, plates=(PLATE,), rows="A", columns=3, sites=1, size=SIZE, seed=7)
    workdir = root / "base"
    workdir.mkdir()
    # Inside the workspace, as in a lab's clone: DVC tracks it with the results.
    shutil.copy(data / "platemap.csv", workdir / "platemap.csv")
    config = _base_config(data)
    run_snakemake(workdir, config, targets=_targets(config))
    return workdir, config


def _workspace(base_run, dest: Path, **changes) -> tuple[Path, dict]:
    """A copy of the base run (times kept) with ``config.yaml``: the base config updated."""
    workdir, config = base_run
    shutil.copytree(workdir, dest, symlinks=True)
    config = yaml.safe_load(yaml.safe_dump(config))
    for key, value in changes.items():
        config[key] = value
    _write_config(dest, config)
    return dest, config


def _write_config(workspace: Path, config: dict, name: str = "config.yaml") -> Path:
    path = workspace / name
    path.write_text(yaml.safe_dump(config))
    return path


def _remote_dirs(workspace: Path) -> None:
    """The config's default directory remotes, made as a lab makes them before `dvc setup`."""
    for role in ("default", "archive"):
        (workspace / "resources/remotes" / role).mkdir(parents=True, exist_ok=True)


def _cellstrata(workspace: Path, *args: str, config: str = "config.yaml") -> tuple[int, str]:
    """Run a ``cellstrata`` command in-process on ``workspace``; return (status, output)."""
    # Only around the command: a pytest capture fixture would also hold Snakemake's logging
    # streams, which its job subprocesses then cannot use.
    out = io.StringIO()
    command, rest = list(args[:1]), list(args[1:])
    if command == ["dvc"]:
        command, rest = args[:2], list(args[2:])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cellstrata_main(
            [*command, *rest, "--config", str(workspace / config), "--workspace", str(workspace)]
        )
    return code, out.getvalue()


def _cellstrata_process(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """The same in a fresh process: commands that talk to S3 keep no client state between
    attempts, as when a user runs them again."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cellstrata.cli",
            *args,
            "--config",
            str(workspace / "config.yaml"),
            "--workspace",
            str(workspace),
        ],
        cwd=workspace,
        capture_output=True,
        text=True,
    )


def _fingerprints(root: Path, *parts: str) -> dict[str, tuple[int, int, str]]:
    """Size, mtime (ns) and MD5 of every file under ``root/parts...``."""
    base = root.joinpath(*parts)
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.md5(p.read_bytes()).hexdigest(),
        )
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def _md5s(root: Path, *parts: str) -> dict[str, str]:
    return {path: md5 for path, (_, _, md5) in _fingerprints(root, *parts).items()}


def _record(workspace: Path, rule: str) -> dict:
    (path,) = (workspace / "results/provenance" / PLATE / rule).rglob("*.json")
    return json.loads(path.read_text())


def _state(workspace: Path, config_name: str = "config.yaml") -> dict:
    table = status(load_config(workspace / config_name), workspace)
    return table.set_index("level")["state"].to_dict()


# --- case 11: retention ------------------------------------------------------------------------


@pytest.mark.case("11", "retention: delete/archive/dry runs never lose needed data")
def test_a_delete_level_stays_until_its_last_consumer_has_read_it(base_run, tmp_path):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    version = main_version(config)
    # Both delete levels are gone after the run ...
    for level in ("corrected", "masks"):
        assert not [p for p in (workspace / "results" / level).rglob("*") if p.is_file()], level
    # ... but each of their consumers read every file of them, byte for byte as written:
    # the records hash the inputs when the job ends.
    corrected = {o["path"]: o["md5"] for o in _record(workspace, "correct")["outputs"]}
    masks = {o["path"]: o["md5"] for o in _record(workspace, "segment")["outputs"]}
    corrected = {p: m for p, m in corrected.items() if p.endswith(".tiff")}
    masks = {p: m for p, m in masks.items() if p.endswith(".tiff")}
    assert len(corrected) == 3 and len(masks) == 3 * 3
    for rule, needs in (("segment", corrected), ("features", corrected | masks)):
        read = {i["path"]: i["md5"] for i in _record(workspace, rule)["inputs"]}
        assert needs.items() <= read.items(), rule
    read = {i["path"]: i["md5"] for i in _record(workspace, "crops")["inputs"]}
    assert (corrected | masks).items() <= read.items()
    # Their products are complete: one crop per measured cell.
    cells = pd.read_parquet(workspace / f"results/features/{version}/{PLATE}/A01-A03.parquet")
    crops = pd.read_parquet(workspace / f"results/crops/{version}/{PLATE}/A01-A03.parquet")
    assert len(cells) > 0 and len(crops) == len(cells)
    state = _state(workspace)
    assert state["corrected"] == state["masks"] == "deleted"


@pytest.mark.case("11", "retention: delete/archive/dry runs never lose needed data")
def test_dry_runs_delete_nothing(base_run, tmp_path):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    stricter = yaml.safe_load(yaml.safe_dump(config))
    stricter["retention"]["levels"]["illumination"] = "delete"
    _write_config(workspace, stricter, "stricter.yaml")
    before = _fingerprints(workspace, "results")
    version = main_version(config)

    # The dry run checks what the real run needs (case 15.6): DVC set up, remotes there.
    _remote_dirs(workspace)
    assert _cellstrata(workspace, "dvc", "setup")[0] == 0
    code, out = _cellstrata(workspace, "archive", "--dry-run")
    assert code == 0, out
    assert f"would archive: results/features/{version}/{PLATE} -> remote archive" in out
    code, out = _cellstrata(workspace, "apply-retention", "--dry-run", config="stricter.yaml")
    assert code == 0 and "would delete 3 file(s)" in out, out
    run_snakemake(workspace, config, targets=_targets(config), dryrun=True)
    # With the stricter retention even a dry run is refused (temp() would delete kept files).
    with pytest.raises(Exception, match="cellstrata apply-retention"):
        run_snakemake(workspace, stricter, targets=_targets(config), dryrun=True)
    assert _fingerprints(workspace, "results") == before


@pytest.mark.case("11", "retention: delete/archive/dry runs never lose needed data")
def test_keep_to_delete_destroys_nothing_without_the_explicit_command(base_run, tmp_path):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    config["retention"]["levels"]["illumination"] = "delete"
    _write_config(workspace, config)
    before = _fingerprints(workspace, "results")
    illumination = {p for p in before if p.startswith(f"results/illumination/{PLATE}/")}
    assert len(illumination) == 3

    # A real run (not a dry run) with the new retention is refused before any job.
    with pytest.raises(Exception, match="cellstrata apply-retention"):
        run_snakemake(workspace, config, targets=_targets(config))
    assert _fingerprints(workspace, "results") == before

    # The explicit command deletes exactly those files; their records stay as tombstones.
    code, out = _cellstrata(workspace, "apply-retention")
    assert code == 0 and "deleted 3 file(s)" in out, out
    after = _fingerprints(workspace, "results")
    assert set(before) - set(after) == illumination
    assert {p: before[p] for p in after} == after
    assert _state(workspace)["illumination"] == "deleted"
    # Now the workflow accepts the retention and recomputes nothing.
    run_snakemake(workspace, config, targets=_targets(config))
    assert _fingerprints(workspace, "results") == after


def _remote_object(remote: Path, oid: str) -> Path:
    return remote / "files/md5" / oid[:2] / oid[2:]


@pytest.mark.case("11", "retention: delete/archive/dry runs never lose needed data")
def test_archive_removes_nothing_the_remote_does_not_verifiably_hold(base_run, tmp_path):
    remote = tmp_path / "archive-remote"
    workspace, config = _workspace(
        base_run,
        tmp_path / "ws",
        storage={
            "remotes": {
                "default": {"url": str(tmp_path / "default-remote")},
                "archive": {"url": str(remote)},
            }
        },
    )
    config["retention"]["levels"]["illumination"] = "archive"  # three files in one stage
    _write_config(workspace, config)
    version = main_version(config)
    levels = (f"results/illumination/{PLATE}", f"results/features/{version}/{PLATE}")
    code, out = _cellstrata(workspace, "dvc", "setup", "--create-remotes")
    assert code == 0, out
    # An earlier push put every object on the archive remote; since then one object was
    # corrupted there and another lost.
    push(load_config(workspace / "config.yaml"), workspace, retentions=("archive",))
    local = {level: _md5s(workspace, level) for level in levels}
    gfp = workspace / f"results/illumination/{PLATE}/GFP.tiff"
    dna = workspace / f"results/illumination/{PLATE}/DNA.tiff"
    corrupt = _remote_object(remote, hashlib.md5(gfp.read_bytes()).hexdigest())
    lost = _remote_object(remote, hashlib.md5(dna.read_bytes()).hexdigest())
    corrupt.chmod(stat.S_IWUSR | stat.S_IRUSR)
    corrupt.write_bytes(b"bit rot")
    lost.unlink()

    code, out = _cellstrata(workspace, "archive")
    assert code == 1, out
    assert "archive not verified, nothing removed" in out
    assert re.search(rf"1 missing on the remote:\n  - illumination_{PLATE}:{lost.parent.name}", out)
    assert re.search(rf"1 corrupt on the remote:\n  - illumination_{PLATE}:\w+{corrupt.name}", out)
    # Every local file is still there, untouched, the one the remote holds corrupt included.
    assert {level: _md5s(workspace, level) for level in levels} == local
    # dvc push alone would never send them again (the directory's listing object is on the
    # remote, so DVC takes its files to be there); archive sent both from the local cache ...
    assert "sent 2 of them again from the local cache" in out
    for path in (gfp, dna):
        oid = hashlib.md5(path.read_bytes()).hexdigest()
        assert hashlib.md5(_remote_object(remote, oid).read_bytes()).hexdigest() == oid

    # ... and running it again verifies them before it removes anything.
    code, out = _cellstrata(workspace, "archive")
    assert code == 0, out
    assert not any((workspace / level).exists() for level in levels)
    state = _state(workspace)
    assert state["illumination"] == state["features"] == "archived"
    subprocess.run(
        [sys.executable, "-m", "dvc", "pull", *levels],
        cwd=workspace,
        capture_output=True,
        check=True,
    )
    for level in levels:
        assert _md5s(workspace, level) == local[level], level


# --- case 12: remote faults on an S3 API --------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    with moto_s3_environment(BUCKET) as endpoint:
        yield endpoint


def _s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _dvc_local(workspace: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "modify", "--local", *args],
        cwd=workspace,
        capture_output=True,
        check=True,
    )


@pytest.mark.case("12", "remote faults: S3 cut mid-push, corrupt object; loud, recoverable")
def test_s3_faults_fail_loudly_keep_local_data_and_recover(base_run, s3, tmp_path):
    workspace, config = _workspace(
        base_run,
        tmp_path / "lab",
        storage={
            "remotes": {
                "default": {"url": f"s3://{BUCKET}/lab", "solution": "cloud", "endpointurl": s3},
                "archive": {"url": str(tmp_path / "archive-remote")},
            }
        },
    )
    version = main_version(config)
    profiles = f"results/profiles/{version}/{PLATE}"
    code, out = _cellstrata(workspace, "dvc", "setup", "--create-remotes")
    assert code == 0, out
    dvc_config = (workspace / ".dvc/config").read_text()
    # Pulls check every object's MD5 (DVC does not by default), and no credential is written.
    assert dvc_config.count("verify = true") == 2, dvc_config
    assert "testing" not in dvc_config and "secret" not in dvc_config.lower()
    # Bytes, not times: `dvc commit` links single-file outputs back from its cache.
    kept = _md5s(workspace, "results")

    # The S3 server dies mid-push: the command fails, naming what failed; nothing local changes.
    port = int(s3.rsplit(":", 1)[1])
    with Relay(port, cut_after=30_000) as relay:
        _dvc_local(workspace, "default", "endpointurl", relay.endpoint)
        failed = _cellstrata_process(workspace, "push")
        assert relay.cut.is_set(), "the relay never cut the transfer"
    assert failed.returncode != 0
    assert "cellstrata push: dvc push" in failed.stderr and "failed" in failed.stderr
    assert _md5s(workspace, "results") == kept

    # The server is back: the same command resumes, pushes and verifies every object.
    _dvc_local(workspace, "--unset", "default", "endpointurl")
    done = _cellstrata_process(workspace, "push")
    assert done.returncode == 0, done.stderr
    assert re.search(r"pushed and verified \d+ object\(s\)", done.stdout)

    # An object rots on the server. A collaborator's pull verifies every object it fetches:
    # it fails, and no corrupt file is checked out.
    victim = workspace / profiles / f"{PLATE}_normalized.parquet"
    oid = hashlib.md5(victim.read_bytes()).hexdigest()
    key = f"lab/files/md5/{oid[:2]}/{oid[2:]}"
    client = _s3_client(s3)
    client.put_object(Bucket=BUCKET, Key=key, Body=b"bit rot")
    collab = tmp_path / "collab"
    (collab / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", "dvc.lock", ".dvc/config", "config.yaml"):
        shutil.copy(workspace / name, collab / name)
    pulled = _cellstrata_process(collab, "pull", profiles)
    assert pulled.returncode != 0, pulled.stdout
    assert f"Checkout failed for following targets:\n{profiles}" in pulled.stderr
    target = collab / profiles / victim.name
    assert not target.exists() or hashlib.md5(target.read_bytes()).hexdigest() == oid

    # The lab's push verifies too: it fails loudly naming the object, keeps the local copy
    # and sends the object again; the next push verifies it, and the pull then succeeds,
    # bit for bit the lab's files.
    failed = _cellstrata_process(workspace, "push")
    assert failed.returncode != 0
    assert "push could not be verified" in failed.stderr
    assert re.search(rf"1 corrupt on the remote:\n  - profiles_\S+:{oid}", failed.stderr)
    assert _md5s(workspace, "results") == kept
    done = _cellstrata_process(workspace, "push")
    assert done.returncode == 0, done.stderr
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == victim.read_bytes()
    pulled = _cellstrata_process(collab, "pull", profiles)
    assert pulled.returncode == 0, pulled.stderr
    assert _md5s(collab, profiles) == _md5s(workspace, profiles)
    assert _md5s(workspace, "results") == kept


# --- case 15: no secret in committed files -----------------------------------------------------

#: What a leaked credential looks like (values of 8+ characters: placeholders such as
#: "testing", which moto takes in the tests, are shorter).
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "credential assignment": re.compile(
        r"(?i)\b(?:aws_secret_access_key|secret_access_key|access_key_id|session_token|"
        r"password|passwd|api_?key|auth_?token|secret)\b['\"]?\s*[:=]\s*['\"]?"
        r"(?![$<{])[A-Za-z0-9/+_\-]{8,}"
    ),
}
#: DVC remote options that hold credentials: allowed only in .dvc/config.local.
DVC_CREDENTIAL_OPTIONS = re.compile(
    r"(?im)^\s*(access_key_id|secret_access_key|session_token|password|ask_password|"
    r"key_file|keyfile|credentialpath|account_key|sas_token|connection_string|"
    r"gdrive_client_secret|token)\s*="
)


def _secrets_in(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=check)


@pytest.mark.case("15", "no secret in committed files; credentials only local or env")
def test_no_secrets_in_committed_files():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no committed files to scan")
    # The scanner finds what it is meant to find (built here, so this file holds none).
    planted = {
        "AWS access key id": "AKIA" + "Q" * 16,
        "private key": "-----BEGIN " + "RSA PRIVATE KEY-----",
        "GitHub token": "ghp_" + "a1" * 18,
        "credential assignment": "secret_access_key = " + "wJalrXUtnFEMI/K7MDENG",
    }
    for name, text in planted.items():
        assert name in _secrets_in(f"x\n{text}\n"), name
    assert _secrets_in('AWS_SECRET_ACCESS_KEY="testing"\npassword = os.environ["PW"]') == []

    files = [f.decode() for f in _git("ls-files", "-z").stdout.split(b"\0") if f]
    assert files and "Snakefile" in files
    offenders = []
    for name in files:
        path = REPO / name
        if path.is_file():  # every tracked file, binary or not
            text = path.read_bytes().decode("latin-1")
            offenders += [f"{name}: {kind}" for kind in _secrets_in(text)]
    assert not offenders, offenders
    # Remote URLs are committed (.dvc/config); credentials only in .dvc/config.local, which,
    # like a .env file, is never committed and is git-ignored.
    dvc_config = REPO / ".dvc/config"
    if dvc_config.exists():
        assert not DVC_CREDENTIAL_OPTIONS.search(dvc_config.read_text())
    for private in (".dvc/config.local", ".env", "config/.env"):
        assert private not in files, private
        assert _git("check-ignore", "-q", private, check=False).returncode == 0, (
            f"{private} is not git-ignored"
        )

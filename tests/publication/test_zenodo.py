"""The Zenodo deposit of cellstrata publish against a local server on 127.0.0.1 that follows
Zenodo's documented deposit API (tests/zenodo_server.py): a deposit published with its record
in publications.yaml and provenance, an interrupted upload resumed, the token never written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from zenodo_server import zenodo_server

from publication.test_publish import AFTER, _all_bytes, _cellstrata, _config

pytestmark = pytest.mark.workflow

TOKEN = "zenodo-test-token-4f1c9a"


@pytest.fixture
def lab(example_run, tmp_path) -> Path:
    """A copy of the example run's profiles and records (the deposit writes publications.yaml
    into its workspace)."""
    workspace = tmp_path / "lab"
    keep = shutil.ignore_patterns("crops", "masks", "features", "illumination", "qc", "figures")
    shutil.copytree(example_run, workspace, ignore=keep)
    return workspace


def _run(lab: Path, url: str, out: Path, *extra: str) -> tuple[int, str]:
    def edit(config):
        config["publication"] = {
            "title": "Synthetic translocation screen, plate SYN01",
            "creators": [{"name": "Doe, Jane", "affiliation": "Example Lab"}],
            "zenodo": {"url": url},
        }

    config = _config(lab, lab.parent / "config.yaml", edit)
    return _cellstrata(
        "publish", "--config", str(config), "--workspace", str(lab), "--levels", "profiles",
        "--target", "zenodo", "--upload", "--out", str(out), "--today", AFTER, *extra,
    )  # fmt: skip


def _uploads(state) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path, _ in state.requests if "/api/files/" in path]


def test_deposit_published_and_recorded(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    out = tmp_path / "deposit"
    with zenodo_server(TOKEN) as (url, state):
        code, printed = _run(lab, url, out, "--publish")
    assert code == 0, printed
    assert list(state.depositions) == [1001]
    deposition = state.depositions[1001]
    assert deposition["state"] == "done"
    metadata = deposition["metadata"]
    assert metadata["title"] == "Synthetic translocation screen, plate SYN01"
    assert metadata["license"] == "cc-by-4.0" and metadata["upload_type"] == "dataset"
    assert metadata["creators"] == [{"name": "Doe, Jane", "affiliation": "Example Lab"}]
    held = state.buckets[deposition["bucket"]]
    local = {"deposit.zip": out.with_suffix(".zip"), "README.md": out / "README.md",
             "ro-crate-metadata.json": out / "ro-crate-metadata.json"}  # fmt: skip
    assert {name: path.read_bytes() for name, path in local.items()} == held
    entries = yaml.safe_load((lab / "publications.yaml").read_text())["publications"]
    assert [(e["id"], e["doi"], e["state"]) for e in entries] == [
        (1001, "10.5072/zenodo.1001", "published")
    ]
    record = yaml.safe_load(
        (lab / "results/provenance/SYN01/publications/zenodo-1001.yaml").read_text()
    )
    assert record["doi"] == "10.5072/zenodo.1001" and record["files"].keys() == local.keys()
    # The token travels in the Authorization header only, and is written nowhere.
    assert all(TOKEN not in path for _, path, _ in state.requests)
    assert TOKEN not in printed
    for written in (out, out.with_suffix(".zip"), lab / "publications.yaml"):
        assert (
            TOKEN.encode() not in _all_bytes(written)
            if written.is_dir() or written.suffix == ".zip"
            else TOKEN not in written.read_text()
        )


def test_interrupted_upload_resumes(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    out = tmp_path / "deposit"
    with zenodo_server(TOKEN) as (url, state):
        state.break_upload = "README.md"
        code, printed = _run(lab, url, out)
        assert code == 1 and "README.md" in printed and "ConnectionError" in printed
        entries = yaml.safe_load((lab / "publications.yaml").read_text())["publications"]
        assert [(e["id"], e["state"]) for e in entries] == [(1001, "draft")]
        assert _uploads(state) == ["deposit.zip", "README.md"]
        state.requests.clear()
        code, printed = _run(lab, url, out)
        assert code == 0, printed
        assert "uploaded 2 file(s), 1 already there" in printed
        assert _uploads(state) == ["README.md", "ro-crate-metadata.json"]  # the zip is skipped
    assert list(state.depositions) == [1001]  # the draft resumed, no second one
    held = state.buckets[state.depositions[1001]["bucket"]]
    assert held["README.md"] == (out / "README.md").read_bytes()
    assert held["deposit.zip"] == out.with_suffix(".zip").read_bytes()
    entries = yaml.safe_load((lab / "publications.yaml").read_text())["publications"]
    assert [(e["id"], e["state"]) for e in entries] == [(1001, "draft")]


def test_no_token_no_request(lab, tmp_path, monkeypatch):
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    with zenodo_server(TOKEN) as (url, state):
        code, printed = _run(lab, url, tmp_path / "deposit")
    assert code == 1 and "set the environment variable ZENODO_TOKEN" in printed
    assert state.requests == [] and not (tmp_path / "deposit").exists()

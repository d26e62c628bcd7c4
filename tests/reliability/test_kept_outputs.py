"""Reliability, kept outputs (issue 14, cases 3-5): nothing kept is lost or unreadable.

A bad platemap, control value or readout is refused when the workflow starts, before any job
(a job that fails late has already had Snakemake remove the previous outputs it would replace);
a directory remote that is absent (an unmounted NAS) is never created behind the user's back;
outputs get the permissions the umask gives any file, so colleagues can read them.

One tiny run (``base_run``: one plate of 2 x 3 wells, 64 x 64 px, up to the experiment's
quality tables, made under umask 022) is copied into a fresh workspace per test.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import main_version, run_snakemake

from cellstrata.example import generate_example
from reliability.test_stewardship_faults import (
    _base_config as stewardship_config,
)
from reliability.test_stewardship_faults import (
    _cellstrata,
    _fingerprints,
    _state,
    _write_config,
)

SIZE = 64
PLATE = "KO1"


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    """Run the block (and the jobs it starts, which inherit it) under ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _base_config(data: Path) -> dict:
    """The stewardship suites' tiny config of this plate, without crops."""
    config = stewardship_config(data, PLATE)
    config["crops"] = {"enabled": False}
    config["retention"] = {"levels": {"corrected": "delete", "masks": "keep", "features": "keep"}}
    return config


def _targets(config: dict) -> list[str]:
    version = main_version(config)
    return [
        f"results/profiles/{version}/{PLATE}/{PLATE}_feature_selected.parquet",
        f"results/experiment/{version}/zprime.parquet",
    ]


def _run(workdir: Path, data: Path) -> dict:
    workdir.mkdir(parents=True)
    shutil.copy(data / "platemap.csv", workdir / "platemap.csv")
    config = _base_config(data)
    run_snakemake(workdir, config, targets=_targets(config))
    return config


@pytest.fixture(scope="module")
def example_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("kept-outputs-data")
    generate_example(data, plates=(PLATE,), rows="AB", columns=3, sites=1, size=SIZE, seed=3)
    return data


@pytest.fixture(scope="module")
def base_run(example_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kept-outputs") / "base"
    with _umask(0o022):
        config = _run(workdir, example_data)
    return workdir, config


def _workspace(base_run, dest: Path) -> tuple[Path, dict]:
    """A copy of the base run (times and modes kept) and its config, with ``config.yaml``."""
    workdir, config = base_run
    shutil.copytree(workdir, dest, symlinks=True)
    config = yaml.safe_load(yaml.safe_dump(config))
    _write_config(dest, config)
    return dest, config


# --- case 14.3: bad platemap, controls, readout: refused before any job --------------------------


def _edit_platemap(edit: Callable[[str], str], *, encoding: str = "utf-8") -> Callable:
    def apply(workspace: Path, config: dict) -> None:
        path = workspace / "platemap.csv"
        path.write_bytes(edit(path.read_text()).encode(encoding))

    return apply


def _insert_line(text: str, number: int, line: str) -> str:
    """``text`` with ``line`` as its line ``number`` (1 = the header)."""
    lines = text.splitlines(keepends=True)
    return "".join([*lines[: number - 1], line + "\n", *lines[number - 1 :]])


def _set(*keys: str, value) -> Callable:
    def apply(workspace: Path, config: dict) -> None:
        block = config
        for key in keys[:-1]:
            block = block[key]
        block[keys[-1]] = value

    return apply


#: variant -> (what the lab changed, what the message must name besides the platemap file)
BAD_INPUTS = {
    "well-column-renamed": (
        _edit_platemap(lambda text: text.replace("well,", "position,", 1)),
        ["platemap.well_column", "'well'", "line 1", "'position'"],
    ),
    "semicolons": (
        _edit_platemap(lambda text: text.replace(",", ";")),
        ["reads as one column", "';'", "line 1"],
    ),
    "blank-row": (
        _edit_platemap(lambda text: _insert_line(text, 4, ",,,")),
        ["line 4", "empty", "platemap.well_column"],
    ),
    "utf-16": (
        _edit_platemap(lambda text: text, encoding="utf-16"),
        ["UTF-16", "UTF-8"],
    ),
    "duplicated-header": (
        _edit_platemap(lambda text: _insert_line(text, 5, text.splitlines()[0])),
        ["line 5", "repeats the header"],
    ),
    "control-not-in-platemap": (
        _set("controls", "negative", value=["DMSO"]),
        ["controls.negative", "['DMSO']", "no negative-control well", "'negative'"],
    ),
    "misspelt-readout": (
        _set("quality", "readout", "feature", value="Nuclei_Intensity_MeanIntensity_GPF"),
        [
            "quality.readout.feature",
            "'Nuclei_Intensity_MeanIntensity_GPF'",
            "Nuclei_Intensity_MeanIntensity_GFP",  # the near miss, suggested
        ],
    ),
}


@pytest.mark.case("14.3", "bad platemap/controls/readout refused at start, outputs kept")
@pytest.mark.parametrize("variant", list(BAD_INPUTS))
def test_a_bad_input_is_refused_before_any_job_and_the_kept_outputs_stay(
    base_run, tmp_path, variant
):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    # status reads the good config: the bad one is refused by every command.
    _write_config(workspace, config, "good.yaml")
    edit, expected = BAD_INPUTS[variant]
    edit(workspace, config)
    _write_config(workspace, config)
    results = _fingerprints(workspace, "results")
    logs = _fingerprints(workspace, "logs")
    with pytest.raises(Exception) as refused:  # noqa: PT011 - Snakemake wraps the error
        run_snakemake(workspace, config, targets=_targets(config))
    # No job ran (none wrote a log), and every output is still there, untouched.
    assert _fingerprints(workspace, "results") == results
    assert _state(workspace, "good.yaml")["profiles"] == "present"
    assert _fingerprints(workspace, "logs") == logs
    # The message names the config key, the file and the line, and what is wrong.
    message = str(refused.value)
    for text in expected:
        assert text in message, (text, message)
    if variant not in ("control-not-in-platemap", "misspelt-readout"):
        assert "platemap.csv" in message, message


# --- case 14.4: a directory remote must exist; archive says where the copies are -----------------


@pytest.mark.case("14.4", "absent directory remote: never created; --create-remotes")
def test_archive_to_an_absent_directory_remote_fails_and_creates_nothing(base_run, tmp_path):
    workspace, config = _workspace(base_run, tmp_path / "ws")
    # The lab's NAS, not mounted: its mount point is there, the archive directory is not.
    nas = tmp_path / "mnt/labnas"
    nas.mkdir(parents=True)
    archive_remote = nas / "archive"
    config["storage"] = {
        "remotes": {
            # Relative: resolved against the workspace, as DVC does.
            "default": {"url": "remotes/default"},
            "archive": {"url": str(archive_remote)},
        }
    }
    config["retention"]["levels"]["features"] = "archive"
    _write_config(workspace, config)
    version = main_version(config)
    features = f"results/features/{version}/{PLATE}"
    code, out = _cellstrata(workspace, "dvc", "setup")
    assert code == 0, out
    before = _fingerprints(workspace, "results")

    profiles = f"results/profiles/{version}/{PLATE}"
    for command in (["archive"], ["push"], ["pull", profiles]):
        code, out = _cellstrata(workspace, *command)
        assert code == 1, out
        assert "does not exist" in out and "--create-remotes" in out, out
    # They name the remote, its config key and the directory; none created anything.
    code, out = _cellstrata(workspace, "archive")
    assert f"storage.remotes.archive.url: {archive_remote}" in out, out
    assert not archive_remote.exists() and not (workspace / "remotes").exists()
    assert _fingerprints(workspace, "results") == before
    assert _state(workspace)["features"] == "present"

    # Created explicitly, the remotes take the archive, and it says where the copies are.
    code, out = _cellstrata(workspace, "dvc", "setup", "--create-remotes")
    assert code == 0, out
    assert archive_remote.is_dir() and (workspace / "remotes/default").is_dir()
    code, out = _cellstrata(workspace, "archive")
    assert code == 0, out
    assert f"{features} -> remote archive at {archive_remote}" in out, out
    assert not (workspace / features).exists()
    assert _state(workspace)["features"] == "archived"
    code, out = _cellstrata(workspace, "push")
    assert code == 0, out
    assert f"remote default at {(workspace / 'remotes/default').resolve()}" in out, out


# --- case 14.5: outputs readable as the umask allows ----------------------------------------------


def _modes(workspace: Path) -> dict[str, int]:
    """Permission bits of every output file (results, provenance records included)."""
    return {
        p.relative_to(workspace).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in (workspace / "results").rglob("*")
        if p.is_file()
    }


@pytest.mark.case("14.5", "outputs get the umask's permissions (022, 002)")
@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask-022", "umask-002"])
def test_outputs_get_the_permissions_of_the_umask(base_run, example_data, tmp_path, umask):
    if umask == 0o022:
        workspace = base_run[0]  # made under umask 022
    else:
        workspace = tmp_path / "ws"
        with _umask(umask):
            _run(workspace, example_data)
    modes = _modes(workspace)
    suffixes = {Path(p).suffix for p in modes}
    assert {".parquet", ".tiff", ".json"} <= suffixes, suffixes
    assert any(p.startswith("results/provenance/") for p in modes)
    expected = 0o666 & ~umask
    wrong = {p: oct(m) for p, m in modes.items() if m != expected}
    assert not wrong, f"expected {oct(expected)}: {wrong}"

"""The public API of ``cellstrata`` (its ``__init__``) and the README's *Python API* examples,
run as written so that they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import cellstrata

REPO = Path(__file__).resolve().parents[1]


def _examples() -> list[str]:
    """The ```python blocks of the README's Python API section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def _workspace(tmp_path: Path, example: Path, run: Path | None = None) -> Path:
    """A directory laid out like the repository root: the example under resources/, and the
    results of a run of it, if given."""
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "example").symlink_to(example)
    if run is not None:
        (tmp_path / "results").symlink_to(run / "results")
    return tmp_path


def _run(blocks: list[str], workdir: Path, monkeypatch) -> dict:
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_api_names():
    assert set(cellstrata.__all__) == {
        "__version__",
        "segment_site",
        "measure_site",
        "plate_profiles",
        "read_level",
    }
    assert set(cellstrata.__all__) <= set(dir(cellstrata))
    for name in cellstrata.__all__[1:]:
        function = getattr(cellstrata, name)
        assert "Parameters\n    ----------" in function.__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cellstrata.nothing  # noqa: B018


def test_importing_cellstrata_loads_no_subpackage():
    # Every workflow job imports cellstrata: the API must cost nothing until used.
    code = "import sys, cellstrata; print(sorted(m for m in sys.modules if 'cellstrata' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # cellstrata.lazy: the few lines that make the exports lazy.
    assert out.stdout.strip() == "['cellstrata', 'cellstrata.lazy']"


def test_readme_examples_without_a_run(small_example, tmp_path, monkeypatch):
    blocks = [b for b in _examples() if "read_level" not in b]
    assert len(blocks) == 3
    namespace = _run(blocks, _workspace(tmp_path, small_example), monkeypatch)
    assert namespace["masks"]["nuclei"].max() > 0
    assert len(namespace["features"]) > 0 and namespace["features"]["ObjectNumber"].is_unique
    assert len(namespace["profiles"]["normalized"]) == 12


@pytest.mark.workflow
def test_readme_examples(small_example, example_run, tmp_path, monkeypatch):
    namespace = _run(_examples(), _workspace(tmp_path, small_example, example_run), monkeypatch)
    assert len(namespace["normalized"]) == 12
    assert namespace["mask_files"] and all(p.suffix == ".tiff" for p in namespace["mask_files"])


def test_read_level_says_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="unknown level 'cells'"):
        cellstrata.read_level(tmp_path, "cells", "P1")
    with pytest.raises(ValueError, match="no versions"):
        cellstrata.read_level(tmp_path, "qc", "P1", version="v1")
    with pytest.raises(FileNotFoundError, match="the qc of plate P1"):
        cellstrata.read_level(tmp_path, "qc", "P1")
    with pytest.raises(ValueError, match="no version of the masks of plate P1"):
        cellstrata.read_level(tmp_path, "masks", "P1")
    for version in ("v1", "v2"):
        (tmp_path / "results" / "masks" / version / "P1").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"versions \['v1', 'v2'\]"):
        cellstrata.read_level(tmp_path, "masks", "P1")
    assert cellstrata.read_level(tmp_path, "masks", "P1", "v2") == []

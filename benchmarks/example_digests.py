"""MD5 of every mask, features, profiles and experiment file of a workspace, and of its dvc.yaml.

A refactoring that does not change behaviour must leave these bytes as they were: run the
embedded example on the commit before and on the commit after, print the digests of both
workspaces and compare them (``diff``). The script uses the command line only (``snakemake``,
``cellstrata``), never the package's import paths, so one copy serves both commits.

    python benchmarks/example_digests.py WORKSPACE [--run] [--cores 2]

``--run`` first makes the example in WORKSPACE (a clone of the repository: ``cellstrata
example``, ``snakemake``) and writes its dvc.yaml with ``cellstrata dvc setup``. The last line
is ``files=<n> digest=<md5 of all lines>``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

# The levels whose bytes a refactoring must keep: masks, single-cell features, per-plate
# profiles and the experiment tables (stacked profiles, consensus, quality).
LEVEL_GLOBS = (
    "results/masks/**/*.tiff",
    "results/features/**/*.parquet",
    "results/profiles/**/*.parquet",
    "results/experiment/**/*.parquet",
)


def _bin(name: str) -> str:
    """A command of the interpreter's environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def run_example(workspace: Path, cores: int) -> None:
    """The example of ``make run`` (without the report) and its dvc.yaml, in ``workspace``."""
    steps = [
        [_bin("cellstrata"), "example", "resources/example"],
        [_bin("snakemake"), "--cores", str(cores), "--quiet"],
        [_bin("cellstrata"), "dvc", "setup"],
    ]
    # The package of the workspace's own commit, whatever the venv's editable install points at.
    env = {**os.environ, "PYTHONPATH": str(workspace.resolve() / "src")}
    for step in steps:
        # Their messages go to stderr: stdout is the digest list.
        subprocess.run(step, cwd=workspace, check=True, env=env, stdout=sys.stderr)


def digests(workspace: Path) -> list[tuple[str, str]]:
    """``(relative path, md5)`` of every level file and of dvc.yaml, sorted by path."""
    paths = sorted({p for pattern in LEVEL_GLOBS for p in workspace.glob(pattern)})
    paths.append(workspace / "dvc.yaml")
    return [
        (path.relative_to(workspace).as_posix(), hashlib.md5(path.read_bytes()).hexdigest())
        for path in paths
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--run", action="store_true", help="make the example there first")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    if args.run:
        run_example(args.workspace, args.cores)
    lines = [f"{md5}  {path}" for path, md5 in digests(args.workspace)]
    print("\n".join(lines))
    total = hashlib.md5("\n".join(lines).encode()).hexdigest()
    print(f"files={len(lines)} digest={total}")


if __name__ == "__main__":
    main()

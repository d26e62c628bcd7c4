"""Shared fixtures: paths to ../shared, tiny synthetic plates, and a Snakemake API runner."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# The snakemake command of the environment running the tests (the Makefile's .venv).
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake_command(workdir: Path, *args: str, snakefile: Path | None = None) -> list[str]:
    """The `snakemake` command line, as a user types it, on ``workdir`` and its config.yaml
    (``snakefile``: the repository's unless given)."""
    return [
        SNAKEMAKE,
        "--snakefile",
        str(snakefile or REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


# The example's jobs from the features level on (rule -> jobs; features: one per batch of wells):
# what a change or a failure of the features level must re-run, and nothing else.
FEATURES_AND_AFTER = {
    "features": 2,
    "profiles": 1,
    "experiment": 1,
    "quality": 1,
    "plate_overview": 1,
    "experiment_figures": 1,
    "summary": 1,
    "provenance": 1,
    "all": 1,
}


def benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package)."""
    if name not in sys.modules:
        # As when it runs as a script: its siblings (single_thread, dag_scale) import.
        if str(REPO / "benchmarks") not in sys.path:
            sys.path.append(str(REPO / "benchmarks"))
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table Snakemake printed (rule -> jobs, no total); {} when it printed
    none ("Nothing to be done")."""
    counts = benchmark("dag_scale").job_stats(output)
    counts.pop("total", None)
    return counts


def shared(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test when it is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


#: Fluorescent channels of the real Cell Painting site, as its CellProfiler run named them.
CELLPROFILER_CHANNELS = ["CorrAGP", "CorrDNA", "CorrER", "CorrMito", "CorrRNA"]


def cellprofiler_header() -> list[str]:
    """Column names of real CellProfiler single-cell output (the Cell Painting site of
    ../shared, joined by CytoTable); skips the test when it is absent."""
    import pyarrow.parquet as pq

    path = shared("cellpainting_site_BR00143976", "BR00143976_shrunken.parquet")
    return pq.read_schema(path).names


def write_plate(
    root: Path,
    *,
    plate: str = "P1",
    wells: Sequence[str] = ("A01", "A02"),
    sites: int = 2,
    channels: Sequence[str] = ("1", "2"),
    shape: tuple[int, int] = (32, 32),
    dtype: type = np.uint16,
) -> list[Path]:
    """Write a tiny ImageXpress-style plate of random images; return the files."""
    rng = np.random.default_rng(0)
    files = []
    for well in wells:
        for site in range(1, sites + 1):
            for channel in channels:
                path = root / f"{plate}_{well}_s{site}_w{channel}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(path, rng.integers(0, 1000, shape).astype(dtype))
                files.append(path)
    return files


PATTERN = r"(?P<plate>[^_/]+)_(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif"


@pytest.fixture(scope="session")
def small_example(tmp_path_factory) -> Path:
    """One synthetic plate (2 rows x 6 columns, 2 sites) generated once per session."""
    from cellstrata.example import generate_example

    out = tmp_path_factory.mktemp("example")
    generate_example(out, plates=("SYN01",), rows="AB", columns=6, sites=2, seed=1)
    return out


@pytest.fixture(scope="session")
def example_run(small_example, tmp_path_factory) -> Path:
    """One full local run of the example config on the small example; returns the workdir.

    Session-wide: the workflow tests read it, the Slurm profile test compares against it."""
    workdir = tmp_path_factory.mktemp("run")
    run_snakemake(workdir, example_config(small_example))
    return workdir


def assert_same_results(ours: Path, reference: Path) -> int:
    """Assert that the tables and images (masks, illumination functions) under
    ``ours/results`` equal ``reference``'s (the provenance table, which holds times and hosts,
    aside); return how many were compared."""
    import pandas as pd

    compared = 0
    for path in sorted((reference / "results").rglob("*")):
        relative = path.relative_to(reference)
        if path.suffix == ".parquet" and path.name != "provenance.parquet":
            pd.testing.assert_frame_equal(
                pd.read_parquet(ours / relative), pd.read_parquet(path), obj=str(relative)
            )
        elif path.suffix in (".tif", ".tiff"):
            np.testing.assert_array_equal(tifffile.imread(ours / relative), tifffile.imread(path))
        else:
            continue
        compared += 1
    return compared


def main_version(config: dict) -> str:
    """The main segmentation version tag (``<method>-<paramhash>``) of a config."""
    import copy

    from snakemake.utils import validate

    from cellstrata.config import SCHEMA_PATH
    from cellstrata.segment.versions import segmentation_versions

    config = copy.deepcopy(config)
    validate(config, str(SCHEMA_PATH))
    return next(iter(segmentation_versions(config)))


def config_with(tmp_path: Path, edit=None) -> dict:
    """The repository's example config changed by ``edit`` (a function of the raw YAML dict),
    written to ``tmp_path`` and loaded (validated, defaults filled)."""
    from cellstrata.workflow.validate import load_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    if edit is not None:
        edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def example_config(example: Path, **overrides) -> dict:
    """The repository's example config pointed at ``example``, with overrides merged."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["plates"] = [
        {
            "name": "SYN01",
            "images": str(example / "images" / "SYN01"),
            "platemap": str(example / "platemap.csv"),
        }
    ]
    config["batching"] = {"wells_per_job": 6}
    for key, value in overrides.items():
        config[key] = value
    return config


def run_snakemake(
    workdir: Path,
    config: dict,
    *,
    targets: Sequence[str] = (),
    dryrun: bool = False,
    keep_going: bool = False,
    cores: int = 2,
    snakefile: Path = REPO / "Snakefile",
) -> None:
    """Run the repository's Snakefile through the Snakemake API in ``workdir``.

    Raises whatever Snakemake raises when a job fails.
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        ResourceSettings,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "test_config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    with SnakemakeApi(OutputSettings(dryrun=dryrun)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=cores),
            config_settings=ConfigSettings(configfiles=[configfile]),
            snakefile=snakefile,
            workdir=workdir,
        )
        dag = workflow.dag(dag_settings=DAGSettings(targets=set(targets)))
        dag.execute_workflow(
            executor="dryrun" if dryrun else "local",
            execution_settings=ExecutionSettings(latency_wait=1, keep_going=keep_going),
        )


def check_dvc_yaml(config: dict, config_name: str, workspace: str | Path = ".") -> None:
    """Raise when ``dvc.yaml`` differs from what the config implies (no silent drift): the
    tests' check of a committed or regenerated ``dvc.yaml`` against its config."""
    from cellstrata.stewardship.dvc import render_dvc_yaml
    from cellstrata.stewardship.tracked import StewardshipError

    path = Path(workspace, "dvc.yaml")
    expected = render_dvc_yaml(config, config_name, str(workspace))
    if not path.exists() or path.read_text() != expected:
        raise StewardshipError(
            f"{path} does not match {config_name}; regenerate it with "
            f"`cellstrata dvc setup --config {config_name}`"
        )

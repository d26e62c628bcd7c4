"""Time Snakemake needs to plan the DAG of a 10-plate screen, and its overhead on a real run.

Builds, in a temp dir, the input tree of a screen (default 10 plates x 384 wells x 9 sites x 5
channels = 172,800 empty ``.tif`` placeholders, ImageXpress-style names, a platemap CSV) and a
config for it (the example config with these plates and five Cell Painting channels), then
times ``snakemake -n`` on it in a fresh process, as a user types it, and prints the job count
per rule from the dry run's job stats. A dry run reads file names only, so empty files do.
The seconds are those of the whole ``snakemake -n`` process, its start-up included (about
3 s on a tiny config).

Where the time goes: rules ingest, qc, illumination and correct each list every image as an
input (4 x 172,800 paths for 10 plates), and Snakemake builds, checks and prints each path of
each job; a job that consumes the output of a job with 17,000 inputs also scans that input
list (``file in job.input`` in ``DAG.update``). Our own part (scanning file names, the input
functions in rules/common.smk) takes about a second of it.

``--local-run`` also runs the embedded example (``cellstrata example``, what ``make run``
runs) with ``snakemake --cores 2`` in a temp dir, and prints its wall time beside the sum of
the job times the rules' benchmark TSVs record (``logs/benchmark/**.tsv``, column ``s``): what
is left is Snakemake's own scheduling, job start-up and the unbenchmarked jobs (figures, CSV
copies, summary, provenance table).

    python benchmarks/dag_scale.py [--plates 10] [--wells-per-job 4] [--local-run]

The last line is ``sites=<n> jobs=<n> dag_seconds=<s>`` for the dry run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
ROWS, COLUMNS = "ABCDEFGHIJKLMNOP", range(1, 25)
WELLS = [f"{row}{column:02d}" for row in ROWS for column in COLUMNS]
# Channel token in the file name -> Cell Painting channel name.
CHANNELS = {"1": "DNA", "2": "ER", "3": "RNA", "4": "AGP", "5": "Mito"}
PATTERN = r"(?P<plate>[^_/]+)_(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif"


def snakemake_command() -> list[str]:
    """The ``snakemake`` of this interpreter's environment (the venv's, not one on PATH)."""
    script = Path(sys.executable).parent / "snakemake"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snakemake"]


def workflow_command(configfile: Path, *args: str) -> list[str]:
    """``snakemake`` on the repository's Snakefile with ``configfile``, then ``args``."""
    return snakemake_command() + [
        "--snakefile",
        str(SNAKEFILE),
        "--configfile",
        str(configfile),
        *args,
    ]


def generate(
    directory: Path, plates: int, wells: int, sites: int, wells_per_job: int
) -> tuple[Path, int]:
    """Write the image placeholders, a platemap and ``config.yaml`` under ``directory``.

    Parameters
    ----------
    directory : Path
        Empty directory; becomes the Snakemake working directory.
    plates, wells, sites : int
        Plates, wells per plate (the first ``wells`` of a 384-well plate) and sites per well.
    wells_per_job : int
        ``batching.wells_per_job`` of the config.

    Returns
    -------
    tuple of (Path, int)
        The config file and the number of sites (plates x wells x sites).
    """
    platemap = directory / "platemap.csv"
    pd.DataFrame(
        {
            "well": WELLS,
            "treatment": [
                "DMSO" if int(w[1:]) <= 2 else f"compound{int(w[1:]) % 8}" for w in WELLS
            ],
            "dose": [0.0 if int(w[1:]) <= 2 else float(ROWS.index(w[0]) + 1) for w in WELLS],
            "control": [
                "negative" if int(w[1:]) <= 2 else "positive" if int(w[1:]) == 24 else "treated"
                for w in WELLS
            ],
        }
    ).to_csv(platemap, index=False)
    entries = []
    for index in range(1, plates + 1):
        name = f"BENCH{index:02d}"
        root = directory / "images" / name
        root.mkdir(parents=True)
        for well in WELLS[:wells]:
            for site in range(1, sites + 1):
                for token in CHANNELS:
                    # Empty files: the dry run reads names, never pixels.
                    (root / f"{name}_{well}_s{site}_w{token}.tif").touch()
        entries.append({"name": name, "images": str(root), "platemap": str(platemap)})
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiment"] = "dag-scale"
    config["images"] = {"pattern": PATTERN}
    config["channels"] = CHANNELS
    config["plates"] = entries
    config["batching"] = {"wells_per_job": wells_per_job}
    config["segmentation"]["cell_channel"] = "AGP"
    config["quality"] = {"readout": {"feature": "Nuclei_Intensity_MeanIntensity_RNA"}}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, plates * wells * sites


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from the ``Job stats:`` table Snakemake prints (``total`` last)."""
    counts: dict[str, int] = {}
    lines = iter(output.splitlines())
    for line in lines:
        if line.strip() == "Job stats:":
            break
    for line in lines:
        match = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if match:
            counts[match[1]] = int(match[2])
            if match[1] == "total":
                break
    return counts


def dry_run(workdir: Path, configfile: Path) -> tuple[float, dict[str, int]]:
    """Time ``snakemake -n`` in a fresh process; return seconds and jobs per rule."""
    command = workflow_command(configfile, "-n", "--cores", "2")
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    counts = job_stats(result.stdout + result.stderr)
    if "total" not in counts:
        sys.exit("snakemake -n printed no job stats")
    return seconds, counts


def local_run(directory: Path, cores: int = 2) -> dict[str, float]:
    """Run the embedded example for real; wall time beside the benchmarked job times.

    Returns
    -------
    dict
        ``wall_seconds`` of the whole ``snakemake --cores`` run, ``job_seconds`` (sum of
        column ``s`` of every benchmark TSV), ``jobs`` (total) and ``benchmarked`` (jobs with
        a benchmark TSV).
    """
    from cellstrata.example import generate_example

    example = directory / "example"
    generate_example(example)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for plate in config["plates"]:
        plate["images"] = str(example / "images" / plate["name"])
        plate["platemap"] = str(example / "platemap.csv")
    workdir = directory / "run"
    workdir.mkdir()
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    command = workflow_command(configfile, "--cores", str(cores))
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake run failed:\n{result.stderr[-3000:]}")
    tables = sorted((workdir / "logs" / "benchmark").rglob("*.tsv"))
    job_seconds = sum(float(pd.read_csv(path, sep="\t")["s"].sum()) for path in tables)
    counts = job_stats(result.stdout + result.stderr)
    return {
        "wall_seconds": wall,
        "job_seconds": job_seconds,
        "jobs": counts.get("total", 0),
        "benchmarked": len(tables),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=10)
    parser.add_argument("--wells", type=int, default=384, help="wells per plate (<= 384)")
    parser.add_argument("--sites", type=int, default=9)
    parser.add_argument("--wells-per-job", type=int, default=4)
    parser.add_argument("--local-run", action="store_true", help="also time the example run")
    parser.add_argument("--cores", type=int, default=2, help="--cores of the example run")
    parser.add_argument("--workdir", type=Path, help="make the temp dirs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        began = time.perf_counter()
        configfile, sites = generate(
            Path(tmp), args.plates, min(args.wells, len(WELLS)), args.sites, args.wells_per_job
        )
        print(
            f"generated {args.plates} plates x {min(args.wells, len(WELLS))} wells x "
            f"{args.sites} sites x {len(CHANNELS)} channels = {sites * len(CHANNELS):,} files "
            f"in {time.perf_counter() - began:.0f} s"
        )
        seconds, counts = dry_run(Path(tmp), configfile)
        # The tree is large: free the disk before the local run needs its own.
        shutil.rmtree(Path(tmp, "images"))
    print(f"snakemake -n, wells_per_job {args.wells_per_job}: {seconds:.1f} s")
    print(f"  {'rule':<22} {'jobs':>6}")
    for rule, count in counts.items():
        print(f"  {rule:<22} {count:>6}")
    if args.local_run:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            figures = local_run(Path(tmp), args.cores)
        wall, busy = figures["wall_seconds"], figures["job_seconds"]
        print(
            f"example run, --cores {args.cores}, {figures['jobs']} jobs "
            f"({figures['benchmarked']} with a benchmark TSV):"
        )
        print(f"  {'wall time':<36} {wall:7.1f} s")
        print(f"  {'sum of benchmarked job times':<36} {busy:7.1f} s")
        print(f"  {'ratio wall / sum of job times':<36} {wall / busy:7.2f}")
        # With every core busy all the time the run would take busy / cores: the rest is
        # Snakemake (DAG, scheduling, job start-up), unbenchmarked jobs and idle cores.
        print(f"  {f'sum of job times / {args.cores} cores':<36} {busy / args.cores:7.1f} s")
        print(
            f"  {'overhead per job':<36} "
            f"{(wall - busy / args.cores) / max(figures['jobs'], 1):7.2f} s"
        )
    print(f"sites={sites} jobs={counts['total']} dag_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()

"""Measured memory and time of every rule, beside the resources the rule declares.

Builds, in a temp dir, a batch of real-size Cell Painting sites and runs the workflow on it
with ``snakemake --cores 1``, then reads every benchmark TSV (``logs/benchmark/**.tsv``, one
per job) and prints per rule: jobs, sites per job, the largest ``max_rss`` (MB), seconds per
job and per site, and the ``mem_mb`` / ``runtime`` the rule declares, with the ratio
declared / measured (below 1: the job would be killed on a cluster).

The sites are the real Cell Painting site ``../shared/data/cellpainting_site_BR00143976``
(1080x1080 uint16, LZW; the five fluorescent channels ch5 DNA, ch2 ER, ch3 AGP, ch4 Mito,
ch6 RNA; about 40 cells) replicated under Phenix names into two plates (default 5 and 2 wells
x 9 sites, ``wells_per_job`` 4: image-level jobs of 36, 9 and 18 sites, plates of 45 and 18
sites; about 7 minutes on a 2-core machine).
Each copy is rotated or mirrored and shifted, and treated wells get dimmer Mito and brighter
RNA with dose, so sites and wells differ as on a real plate. Per rule, job seconds are fitted
as ``overhead + per_site x sites`` over the jobs (job sizes differ on purpose), which
separates the per-job start-up from the per-site work. Crops (``size`` 96) and a toy ONNX
embedding model are switched on so that rules crops and embed run too (the embed figures are
the rule's own cost: a real model adds its weights and activations). A second, small run
converts the real NF1 CellProfiler SQLite of ``../shared/data/cellprofiler_outputs`` for
rule cellprofiler_features.

``max_rss`` is Snakemake's: the script's process tree, sampled every 0.5 s for the first
15 s, then every 30 s, so a short peak of a long job can fall between samples. Each script
process also records its exact peak (``VmHWM``, through a ``sitecustomize`` on the jobs'
``PYTHONPATH``), printed beside it. On a cluster a job also holds its own Snakemake process
(``--target-jobs``), which parses the workflow and so the image inventory of every plate:
it is measured on a dry run of one job of a 10-plate screen (the empty placeholder tree of
``benchmarks/dag_scale.py``, 172,800 files) and added to the scripts' peaks before the
declared ``mem_mb`` is compared. Memory figures are robust; times are approximate (a
2-core machine with other work on it).

    python benchmarks/rule_resources.py [--wells 5 2] [--sites 9] [--wells-per-job 4]
    python benchmarks/rule_resources.py --from DIR   # report on an earlier --keep run

The last line is ``rules=<n> jobs=<n> sites=<n> max_rss_mb=<MB> job_process_mb=<MB>
min_mem_ratio=<x> min_runtime_ratio=<x> cells_per_site=<n> wall_seconds=<s>``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml

# The benchmarks run as scripts, so their folder is on sys.path.
from dag_scale import workflow_command

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SITE = SHARED / "cellpainting_site_BR00143976" / "images"
SITE_FILE = "r03c03f03p01-ch{}sk1fk1fl1.tiff"
CELLPROFILER = SHARED / "cellprofiler_outputs" / "NF1_SchwannCell_data"
# Phenix channel token -> Cell Painting channel (ch1, brightfield, is not measured).
CHANNELS = {"5": "DNA", "2": "ER", "3": "AGP", "4": "Mito", "6": "RNA"}
PATTERN = r"r(?P<row>\d+)c(?P<column>\d+)f(?P<site>\d+)p\d+-ch(?P<channel>\d+)sk1fk1fl1\.tiff"
ROW = 2  # wells B02, B03, ... of each plate
# Rules in the order the data flows (the report's row order).
RULE_ORDER = [
    "ingest",
    "qc",
    "illumination",
    "correct",
    "segment",
    "features",
    "crops",
    "embed",
    "cellprofiler_features",
    "profiles",
    "experiment",
    "quality",
]
# Rules whose work is per site (the rest: per plate or experiment table).
PER_SITE_RULES = RULE_ORDER[:8]
# Written into the jobs' PYTHONPATH: every script job, and Snakemake itself, appends its exact
# peak RSS to $RULE_RESOURCES_PEAKS when it exits (with the rule and wildcards of a script).
# VmHWM, not ru_maxrss: a process started by fork + exec keeps its parent's ru_maxrss (here
# the main Snakemake process's), while VmHWM belongs to the memory map that exec made.
SITECUSTOMIZE = """\
import atexit, json, os, sys


def _record_peak():
    smk = getattr(sys.modules.get("__main__"), "snakemake", None)
    if smk is not None and hasattr(smk, "rule"):
        record = {"rule": smk.rule, "wildcards": dict(smk.wildcards.items())}
    elif os.path.basename(sys.argv[0]) in ("snakemake", "__main__.py") and (
        "snakemake" in sys.argv[0]
    ):
        record = {"rule": SNAKEMAKE, "wildcards": {}}
    else:
        return
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    record["peak_mb"] = peak / 1024
    with open(os.environ["RULE_RESOURCES_PEAKS"], "a") as handle:
        handle.write(json.dumps(record) + "\\n")


SNAKEMAKE = "(snakemake)"
atexit.register(_record_peak)
"""
SNAKEMAKE = "(snakemake)"


def check_data() -> None:
    """Stop with a clear message when the real data of ../shared is absent."""
    missing = [p for p in [SITE / SITE_FILE.format(c) for c in CHANNELS] if not p.exists()]
    if missing:
        sys.exit(
            f"rule_resources needs the real Cell Painting site of ../shared/data: "
            f"{missing[0]} is absent (see ../shared/README.md)"
        )


def well_layout(wells: int) -> pd.DataFrame:
    """Platemap of one plate: two negative-control wells first, a positive control last,
    a dose series of one compound between (a two-well plate: one of each control)."""
    names = [f"{'ABCDEFGHIJKLMNOP'[ROW - 1]}{column:02d}" for column in range(2, 2 + wells)]
    control = ["negative", "negative"] + ["treated"] * (wells - 3) + ["positive"]
    control = control[:wells] if wells > 2 else ["negative", "positive"][:wells]
    dose, treatment = [], []
    for index, kind in enumerate(control):
        dose.append(0.0 if kind == "negative" else 10.0 if kind == "positive" else index - 1.0)
        treatment.append({"negative": "DMSO", "positive": "control"}.get(kind, "compound"))
    return pd.DataFrame({"well": names, "treatment": treatment, "dose": dose, "control": control})


def write_plates(directory: Path, wells: list[int], sites: int, seed: int = 0) -> list[dict]:
    """Write the plates' images (Phenix names, LZW) and platemaps; return config entries."""
    rng = np.random.default_rng(seed)
    planes = {token: tifffile.imread(SITE / SITE_FILE.format(token)) for token in CHANNELS}
    entries = []
    for number, count in enumerate(wells, start=1):
        name = f"BENCH{number:02d}"
        root = directory / "images" / name
        root.mkdir(parents=True)
        layout = well_layout(count)
        layout.to_csv(directory / f"platemap_{name}.csv", index=False)
        for row in layout.itertuples():
            column = int(row.well[1:])
            # Dose 0..10 -> Mito 1.0..0.7, RNA 1.0..1.5 of the control intensity.
            scale = {"4": 1 - 0.03 * row.dose, "6": 1 + 0.05 * row.dose}
            for site in range(1, sites + 1):
                turns, flip = rng.integers(4), rng.integers(2)
                shift = tuple(rng.integers(0, 1080, 2))
                for token, plane in planes.items():
                    image = np.rot90(plane[:, ::-1] if flip else plane, turns)
                    image = np.roll(image, shift, axis=(0, 1)).astype(np.float64)
                    image = np.clip(image * scale.get(token, 1.0), 0, 65535).astype(np.uint16)
                    path = root / f"r{ROW:02d}c{column:02d}f{site:02d}p01-ch{token}sk1fk1fl1.tiff"
                    tifffile.imwrite(path, image, compression="lzw")
        entries.append(
            {
                "name": name,
                "images": str(root),
                "platemap": str(directory / f"platemap_{name}.csv"),
            }
        )
    return entries


def toy_model(path: Path, channels: int, dim: int = 8) -> Path | None:
    """A tiny ONNX embedding model (GlobalAveragePool -> Flatten -> Gemm); None without
    onnx/onnxruntime (rule embed then does not run)."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    weight = np.random.default_rng(0).standard_normal((dim, channels)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["crops"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
            helper.make_node("Gemm", ["means", "weight", "bias"], ["embedding"], transB=1),
        ],
        "pool_linear",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", channels, "H", "W"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.zeros(dim, np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime reads IR versions up to its own
    onnx.save(model, str(path))
    return path


def image_config(directory: Path, wells: list[int], sites: int, wells_per_job: int) -> Path:
    """The example config pointed at the replicated Cell Painting plates."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiment"] = "rule-resources"
    config["images"] = {"pattern": PATTERN}
    config["channels"] = CHANNELS
    config["plates"] = write_plates(directory, wells, sites)
    config["batching"] = {"wells_per_job": wells_per_job}
    # The example's small-site illumination settings do not apply: the defaults.
    config.pop("illumination", None)
    # Nuclei as benchmarks/site_throughput.py segments them (its cells grow on RNA, as the
    # CellProfiler pipeline it is compared with).
    config["segmentation"] = {
        "nuclei_channel": "DNA",
        "cell_channel": "AGP",
        "nuclei": {"diameter": 60},
    }
    config["quality"] = {
        "readout": {
            "feature": "Nuclei_Intensity_MeanIntensity_RNA",
            "divide_by": "Cytoplasm_Intensity_MeanIntensity_RNA",
        }
    }
    config["crops"] = {"enabled": True, "size": 96}
    model = toy_model(directory / "toy_embedding.onnx", len(CHANNELS))
    if model:
        config.setdefault("features", {})["embedding"] = {"model": str(model), "format": "onnx"}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cellprofiler_config(directory: Path) -> Path | None:
    """The NF1 CellProfiler example config pointed at ../shared; None when absent."""
    if not CELLPROFILER.exists():
        return None
    config = yaml.safe_load((REPO / "config/examples/nf1_cellprofiler.yaml").read_text())
    config["plates"][0]["cellprofiler"] = str(CELLPROFILER / "all_cellprofiler.sqlite")
    config["plates"][0]["platemap"] = str(CELLPROFILER / "platemap_NF1_plate1.csv")
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_workflow(workdir: Path, configfile: Path, hooks: Path, *extra: str) -> float:
    """``snakemake --cores 1`` in ``workdir`` (peaks to ``peaks.jsonl`` there); wall seconds.
    Exits when the run fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")]))
    env["RULE_RESOURCES_PEAKS"] = str(workdir / "peaks.jsonl")
    options = extra or ["--benchmark-extended"]
    command = workflow_command(configfile, "--directory", str(workdir), "--cores", "1", *options)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"snakemake run in {workdir} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start


def screen_job_process(directory: Path, hooks: Path, plates: int) -> float:
    """Peak RSS (MB) of the Snakemake process of one job of a screen of ``plates`` plates.

    On a cluster every job runs Snakemake beside its script (``--target-jobs``): it parses
    the workflow, so it holds the image inventory of every plate, and builds the job's DAG.
    Emulated on the empty placeholder tree of ``benchmarks/dag_scale.py`` (384 wells x 9
    sites x 5 channels per plate) as a dry run of one ingest job.
    """
    sys.path.insert(0, str(REPO / "benchmarks"))
    from dag_scale import generate

    configfile, _ = generate(directory, plates, 384, 9, 4)
    run_workflow(
        directory,
        configfile,
        hooks,
        "-n",
        "--target-jobs",
        "ingest:plate=BENCH01",
        "--allowed-rules",
        "ingest",
    )
    return max(peak for rule, _, peak in read_peaks(directory) if rule == SNAKEMAKE)


def read_peaks(workdir: Path) -> list[tuple[str, str, float]]:
    """``(rule, wildcards as JSON, peak MB)`` of every process the sitecustomize recorded."""
    log = workdir / "peaks.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(r["rule"], json.dumps(r["wildcards"], sort_keys=True), r["peak_mb"]) for r in records]


def _literal(text: object) -> dict:
    """A dict column of an extended benchmark TSV (``{'plate': 'BENCH01', ...}``)."""
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


def sites_of_job(workdir: Path, rule: str, wildcards: dict[str, str]) -> float:
    """Sites a job works on, from the plates' manifests (NaN for CellProfiler input)."""
    manifests = {
        path.stem: pd.read_parquet(path).drop_duplicates(["Metadata_Well", "Metadata_Site"])
        for path in (workdir / "results" / "manifest").glob("*.parquet")
    }
    if "plate" in wildcards:
        manifest = manifests.get(wildcards["plate"])
        if manifest is None:
            return math.nan
        if "batch" in wildcards and rule != "profiles":
            return float((manifest["batch"] == wildcards["batch"]).sum())
        return float(len(manifest))
    return float(sum(len(m) for m in manifests.values())) if manifests else math.nan


def read_jobs(workdir: Path) -> pd.DataFrame:
    """One row per benchmarked job: rule, sites, s, max_rss, declared resources, exact peak."""
    peaks: dict[tuple[str, str], float] = {}
    for rule, wildcards, peak in read_peaks(workdir):
        peaks[rule, wildcards] = max(peaks.get((rule, wildcards), 0.0), peak)
    rows = []
    for path in sorted((workdir / "logs" / "benchmark").rglob("*.tsv")):
        for record in pd.read_csv(path, sep="\t").to_dict("records"):
            wildcards = {k: str(v) for k, v in _literal(record.get("wildcards")).items()}
            rule = record["rule_name"]
            declared = _literal(record.get("resources"))
            rows.append(
                {
                    "rule": rule,
                    "sites": sites_of_job(workdir, rule, wildcards),
                    "s": float(record["s"]),
                    "max_rss": pd.to_numeric(record["max_rss"], errors="coerce"),
                    "script_peak": peaks.get(
                        (rule, json.dumps(wildcards, sort_keys=True)), math.nan
                    ),
                    "mem_mb": float(declared.get("mem_mb", math.nan)),
                    "runtime": float(declared.get("runtime", math.nan)),
                }
            )
    return pd.DataFrame(rows)


def cells_per_site(workdir: Path) -> float:
    """Cells per site of the image plates: rows of the feature tables over their sites."""
    import pyarrow.parquet as pq

    tables = sorted((workdir / "results" / "features").glob("*/*/*.parquet"))
    cells = sum(pq.read_metadata(path).num_rows for path in tables)
    sites = sum(
        len(pd.read_parquet(path).drop_duplicates(["Metadata_Well", "Metadata_Site"]))
        for path in (workdir / "results" / "manifest").glob("*.parquet")
    )
    return cells / sites if sites else math.nan


def per_rule(jobs: pd.DataFrame, job_process: float) -> pd.DataFrame:
    """Per rule: jobs, sites per job, peaks, the fit of seconds = overhead + per_site x
    sites, and declared / measured ratios: memory against the peak of a cluster job (the
    script's peak plus ``job_process`` MB of the job's own Snakemake process), runtime against
    each job's seconds."""
    rows = []
    order = {rule: index for index, rule in enumerate(RULE_ORDER)}
    for rule, group in sorted(jobs.groupby("rule"), key=lambda item: order.get(item[0], 99)):
        # Jobs with sites (image plates; not CellProfiler plates) for the per-site figures.
        sized = group[np.isfinite(group["sites"])]
        sites, seconds = sized["sites"].to_numpy(), sized["s"].to_numpy()
        overhead, per_site = math.nan, math.nan
        if rule not in PER_SITE_RULES:
            pass
        elif len(np.unique(sites)) > 1:
            per_site, overhead = np.polyfit(sites, seconds, 1)
        elif len(sites):
            per_site = float(np.mean(seconds / sites))
        peak = np.fmax(group["max_rss"], group["script_peak"].fillna(0)) + job_process
        rows.append(
            {
                "rule": rule,
                "jobs": len(group),
                "sites": f"{sites.min():.0f}-{sites.max():.0f}" if len(sites) else "-",
                "max_rss": group["max_rss"].max(),
                "script_peak": group["script_peak"].max(),
                "cluster_job": peak.max(),
                "s_job": group["s"].mean(),
                "s_max": group["s"].max(),
                "overhead": overhead,
                "per_site": per_site,
                "mem_mb": group["mem_mb"].max(),
                "runtime": group["runtime"].min(),
                "mem_ratio": (group["mem_mb"] / peak).min(),
                "runtime_ratio": (group["runtime"] * 60 / group["s"]).min(),
            }
        )
    return pd.DataFrame(rows)


def report(table: pd.DataFrame, job_process: float) -> None:
    header = (
        f"{'rule':<22}{'jobs':>5}{'sites/job':>10}{'max_rss':>8}{'script':>7}{'+smk':>6}"
        f"{'s/job':>7}{'s max':>7}{'overhd':>7}{'s/site':>7}"
        f"{'mem_mb':>7}{'ratio':>6}{'runtime':>8}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in table.itertuples():
        print(
            f"{row.rule:<22}{row.jobs:>5}{row.sites:>10}{row.max_rss:>8.0f}"
            f"{row.script_peak:>7.0f}{row.cluster_job:>6.0f}{row.s_job:>7.1f}{row.s_max:>7.1f}"
            f"{row.overhead:>7.1f}{row.per_site:>7.2f}{row.mem_mb:>7.0f}{row.mem_ratio:>6.1f}"
            f"{row.runtime:>8.0f}{row.runtime_ratio:>7.1f}"
        )
    print(
        f"""
max_rss   Snakemake's benchmark: the script's process tree, sampled (MB)
script    the script's exact peak, VmHWM (MB)
+smk      what a cluster job holds: the larger of the two + {job_process:.0f} MB of the job's own
          Snakemake process (parsing the workflow and its image inventory)
s/job     mean job seconds (s max: the slowest job); overhd and s/site: the fit of
          job seconds = overhd + s/site x sites (s/site alone: job seconds / sites)
mem_mb    declared (largest job); ratio: declared / +smk, lowest job
runtime   declared minutes (smallest job); ratio: declared / measured, lowest job
Memory figures are robust; times are approximate (--cores 1 on a shared 2-core machine)."""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, nargs="+", default=[5, 2], help="wells per plate")
    parser.add_argument("--sites", type=int, default=9, help="sites per well")
    parser.add_argument("--wells-per-job", type=int, default=4)
    parser.add_argument("--no-cellprofiler", action="store_true", help="skip the NF1 run")
    parser.add_argument(
        "--screen-plates",
        type=int,
        default=10,
        help="size a job's Snakemake process for a screen of N plates (0: this run's)",
    )
    parser.add_argument("--workdir", type=Path, help="make the temp dir here")
    parser.add_argument("--keep", action="store_true", help="keep the run (path printed)")
    parser.add_argument("--from", dest="source", type=Path, help="report on a kept run")
    args = parser.parse_args()
    wall = math.nan
    if args.source:
        tmp = args.source
    else:
        check_data()
        tmp = Path(tempfile.mkdtemp(prefix="rule_resources_", dir=args.workdir))
        hooks = tmp / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
        began = time.perf_counter()
        (tmp / "images").mkdir()
        configfile = image_config(tmp / "images", args.wells, args.sites, args.wells_per_job)
        sites = sum(args.wells) * args.sites
        print(
            f"wrote {len(args.wells)} plates ({'+'.join(map(str, args.wells))} wells) x "
            f"{args.sites} sites x {len(CHANNELS)} channels of 1080x1080 uint16 LZW "
            f"({sites} sites) in {time.perf_counter() - began:.0f} s; wells_per_job "
            f"{args.wells_per_job}",
            flush=True,
        )
        wall = run_workflow(tmp / "images", configfile, hooks)
        print(f"snakemake --cores 1 on the image plates: {wall:.0f} s", flush=True)
        cellprofiler = None if args.no_cellprofiler else tmp / "cellprofiler"
        if cellprofiler:
            cellprofiler.mkdir()
            configfile = cellprofiler_config(cellprofiler)
            if configfile:
                seconds = run_workflow(cellprofiler, configfile, hooks)
                wall += seconds
                print(f"snakemake --cores 1 on the NF1 CellProfiler SQLite: {seconds:.0f} s")
        if args.screen_plates:
            screen = tmp / "screen"
            screen.mkdir()
            began = time.perf_counter()
            process = screen_job_process(screen, hooks, args.screen_plates)
            shutil.rmtree(screen / "images")
            print(
                f"Snakemake process of one job of a {args.screen_plates}-plate screen "
                f"({args.screen_plates * 384 * 9 * 5:,} image files): {process:.0f} MB "
                f"({time.perf_counter() - began:.0f} s)",
                flush=True,
            )
    jobs = pd.concat(
        [read_jobs(run) for run in (tmp / "images", tmp / "cellprofiler") if run.exists()],
        ignore_index=True,
    )
    if jobs.empty:
        sys.exit(f"no benchmark TSVs under {tmp}")
    screen_peaks = [p for rule, _, p in read_peaks(tmp / "screen") if rule == SNAKEMAKE]
    run_peaks = [p for rule, _, p in read_peaks(tmp / "images") if rule == SNAKEMAKE]
    job_process = max(screen_peaks or run_peaks or [0.0])
    table = per_rule(jobs, job_process)
    cells = cells_per_site(tmp / "images")
    print()
    report(table, job_process)
    print(f"{cells:.0f} cells per site (feature and crop time grow with them)")
    if args.keep or args.source:
        print(f"run kept in {tmp}")
    else:
        shutil.rmtree(tmp)
    sites = int(jobs.loc[jobs["rule"] == "ingest", "sites"].sum())
    print(
        f"rules={len(table)} jobs={len(jobs)} sites={sites} "
        f"max_rss_mb={np.nanmax(table[['max_rss', 'script_peak']].to_numpy()):.0f} "
        f"job_process_mb={job_process:.0f} "
        f"min_mem_ratio={table['mem_ratio'].min():.2f} "
        f"min_runtime_ratio={table['runtime_ratio'].min():.2f} cells_per_site={cells:.0f} "
        f"wall_seconds={wall:.0f}"
    )


if __name__ == "__main__":
    main()

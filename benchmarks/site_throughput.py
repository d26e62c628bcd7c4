"""Per-site cost of the image levels: raw TIFFs -> corrected -> masks -> full feature set,
and the same site measured side by side against CellProfiler 4.2.8.1 (``--vs-cellprofiler``).

Runs single-threaded (BLAS/OpenMP pools pinned to one thread before numpy loads) on

* the real Cell Painting site ``../shared/data/cellpainting_site_BR00143976`` (6 channels,
  1080x1080 uint16 LZW; ch5 DNA, ch2 ER, ch3 AGP, ch4 Mito, ch6 RNA, ch1 brightfield, which
  is not measured), and
* a denser real site, BBBC013 well A01 (640x640, GFP + DNA, about 190 nuclei), so per-cell
  costs show,

and prints core-seconds (process CPU time) per stage and per feature group, core-seconds per
site and per cell, and peak RSS. ``--naive`` also times cp_measure (the Broad's CellProfiler
measurements as a library) called the straightforward way, once per compartment x channel
(x channel pair for correlation) on the same masks, the "naive loop" of the issue.

The illumination function is computed once per plate and channel in the workflow; here it is
computed from the site itself and *applying* it counts as the per-site cost.

Both sites are measured at the peer pipeline's feature settings
(``../shared/tools/cellprofiler/cellpainting_analysis.cppipe``): Costes off, no radial
Zernikes, texture scale 3 at 256 levels, granularity defaults, and cells by propagation on RNA.

    python benchmarks/site_throughput.py [--naive]
    python benchmarks/site_throughput.py --vs-cellprofiler [--runs 3]

Without ``--vs-cellprofiler`` the last line is ``core_seconds_per_site=<s> peak_rss_mb=<MB>
naive_core_seconds_per_site=<s>`` for the Cell Painting site (``nan`` for the naive figure
without ``--naive``).

``--vs-cellprofiler`` runs, in this one invocation and interleaved, ``--runs`` rounds of four
child processes: CellProfiler headless (``cellprofiler -c -r``) with the peer pipeline on a
copy of the site's images, CellProfiler with that pipeline's input modules only (start-up: JVM,
pipeline, image set; no pixel is read), cellstrata's child doing the same work (read the 5
channels, nuclei, cells by propagation on RNA, cytoplasm, every feature, a Parquet of them),
and cellstrata's child with no site (start-up: the same imports, OpenCV included). A tool's
time is the CPU seconds (user + sys, ``os.wait4``) of its whole process minus its start-up of
the same round, the median over rounds. Neither side applies illumination correction: the
peer pipeline has none. The last line is ``cellprofiler_cpu_s=<v> cellstrata_core_s=<v> ratio=<v>
peak_rss_mb=<v> features_cp=<n> features_us=<n>`` (peak RSS of cellstrata's child; feature
counts per cell over the three compartments, CellProfiler's without its identifier columns).
Without the peer installed it prints how to install it and exits with status 2.
"""

from __future__ import annotations

import single_thread  # noqa: F401  (pins the thread pools before numpy loads)

# isort: split
import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from cellstrata.images.illumination import correct_image, illumination_function, to_float
from cellstrata.io import read_image
from cellstrata.segment import segment_site
from cellstrata.singlecell.features import FEATURE_GROUPS, measure_site

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PEER_TOOLS = REPO.parent / "shared" / "tools" / "cellprofiler"
PEER_PIPELINE = PEER_TOOLS / "cellpainting_analysis.cppipe"
# install.sh's default; CELLPROFILER_VENV points elsewhere.
PEER_VENV = Path(
    os.environ.get(
        "CELLPROFILER_VENV", Path(os.environ.get("TMPDIR", "/tmp"), "cellprofiler-peer", "venv39")
    )
)
# The peer pipeline's input modules (Images, Metadata, NamesAndTypes, Groups): its start-up run.
PEER_INPUT_MODULES = 4
CELL_PAINTING = {
    "files": SHARED / "cellpainting_site_BR00143976/images/r03c03f03p01-ch{}sk1fk1fl1.tiff",
    "channels": {"DNA": 5, "ER": 2, "AGP": 3, "Mito": 4, "RNA": 6},
    "nuclei": "DNA",
    # The peer's IdentifySecondaryObjects: propagation on RNA.
    "cells": "RNA",
    "nuclei_params": {"diameter": 60},
    "cell_params": {"method": "propagation"},
}
#: The peer pipeline's feature settings where cellstrata's defaults differ (MeasureColocalization
#: without Costes, MeasureObjectIntensityDistribution without Zernikes); texture (scale 3, 256
#: levels) and granularity are at both tools' defaults.
PEER_FEATURE_OPTIONS = {"Correlation": {"costes": False}, "RadialDistribution": {"zernike": False}}
BBBC013 = {
    "files": SHARED / "bbbc013_translocation/Channel{}-01-A-01.tif",
    "channels": {"GFP": 1, "DNA": 2},
    "nuclei": "DNA",
    "cells": None,
    "nuclei_params": {"diameter": 14, "local_contrast": None},
    "cell_params": {},
}


def _cpu(func: Callable[[], Any]) -> tuple[Any, float]:
    started = time.process_time()
    result = func()
    return result, time.process_time() - started


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_site(site: Mapping[str, Any]) -> dict[str, Any]:
    """Time every stage for one site; returns the figures."""
    stages: dict[str, float] = {}
    raw, stages["read"] = _cpu(
        lambda: {
            name: read_image(str(site["files"]).format(i)) for name, i in site["channels"].items()
        }
    )
    functions = {name: illumination_function(to_float(image)) for name, image in raw.items()}
    images, stages["illumination (apply)"] = _cpu(
        lambda: {name: correct_image(image, functions[name]) for name, image in raw.items()}
    )
    cell_image = images[site["cells"]] if site["cells"] else None
    masks, stages["segmentation"] = _cpu(
        lambda: segment_site(
            images[site["nuclei"]],
            cell_image,
            nuclei_params=site["nuclei_params"],
            cell_params=site["cell_params"],
        )
    )
    labels = {"Nuclei": masks["nuclei"], "Cells": masks["cells"], "Cytoplasm": masks["cytoplasm"]}
    timings: dict[str, float] = {}
    # measure_site's timings are the CPU seconds of each group.
    table, stages["features"] = _cpu(
        lambda: measure_site(labels, images, options=PEER_FEATURE_OPTIONS, timings=timings)
    )
    return {
        "stages": stages,
        "groups": timings,
        "cells": len(table),
        "features": table.shape[1] - 1,
        "labels": labels,
        "images": images,
    }


def naive_cp_measure(labels: Mapping[str, np.ndarray], images: Mapping[str, np.ndarray]) -> float:
    """CPU seconds of cp_measure called once per compartment x channel (x pair)."""
    from cp_measure.bulk import get_core_measurements, get_correlation_measurements

    core = get_core_measurements()
    correlation = get_correlation_measurements()
    started = time.process_time()
    for mask in labels.values():
        mask = mask.astype(np.int32)
        for image in images.values():
            pixels = np.clip(image, 0, 1)
            for func in core.values():
                func(mask, pixels)
        for a, b in combinations(images, 2):
            for name, func in correlation.items():
                # Costes needs the intensity scale of float images (16-bit here).
                extra = {"scale_max": 65535} if name == "costes" else {}
                func(np.clip(images[a], 0, 1), np.clip(images[b], 0, 1), mask, **extra)
    return time.process_time() - started


def report(name: str, figures: Mapping[str, Any]) -> float:
    total = sum(figures["stages"].values())
    cells = figures["cells"]
    print(f"\n== {name}: {cells} cells, {figures['features']} features per cell")
    for stage, seconds in figures["stages"].items():
        print(f"  {stage:24s} {seconds:7.3f} core-s")
    for group in FEATURE_GROUPS:
        print(f"    {group:22s} {figures['groups'].get(group, float('nan')):7.3f} s")
    print(f"  {'total per site':24s} {total:7.3f} core-s")
    print(f"  {'per cell':24s} {1000 * total / max(cells, 1):7.1f} core-ms")
    return total


def child_site(out_dir: Path, *, empty: bool) -> dict[str, int]:
    """The cellstrata side of ``--vs-cellprofiler``: the peer pipeline's work on the site.

    Reads the 5 channels, segments nuclei, cells (propagation on RNA) and cytoplasm, measures
    every feature at the peer's settings and writes them to ``out_dir/features.parquet``.
    ``empty`` does nothing after the imports: the start-up that is subtracted. It also
    imports OpenCV, which segmentation imports on first use (once per process, as a
    workflow job that measures many sites does), so that no import counts as per-site work.
    """
    if empty:
        import cv2  # noqa: F401

        return {"cells": 0, "features": 0}
    site = CELL_PAINTING
    images = {
        name: to_float(read_image(str(site["files"]).format(i)))
        for name, i in site["channels"].items()
    }
    masks = segment_site(
        images[site["nuclei"]],
        images[site["cells"]],
        nuclei_params=site["nuclei_params"],
        cell_params=site["cell_params"],
    )
    labels = {"Nuclei": masks["nuclei"], "Cells": masks["cells"], "Cytoplasm": masks["cytoplasm"]}
    table = measure_site(labels, images, options=PEER_FEATURE_OPTIONS)
    table.to_parquet(out_dir / "features.parquet")
    return {"cells": len(table), "features": table.shape[1] - 1}


def run_timed(command: list[str], **kwargs: Any) -> tuple[float, float, str]:
    """CPU seconds (user + sys) and peak RSS (MB) of one child process, and its stdout."""
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, **kwargs)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read()
    if process.returncode:
        raise RuntimeError(f"{command[0]} exited {process.returncode}:\n{text[-3000:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def peer_startup_pipeline(pipeline: str) -> str:
    """The peer pipeline cut to its input modules: CellProfiler's start-up, no image read."""
    header, *modules = pipeline.strip().split("\n\n")
    header = "\n".join(
        f"ModuleCount:{PEER_INPUT_MODULES}" if line.startswith("ModuleCount:") else line
        for line in header.splitlines()
    )
    return "\n\n".join([header, *modules[:PEER_INPUT_MODULES]]) + "\n"


def peer_feature_count(out_dir: Path) -> int:
    """Per-cell features in CellProfiler's ExportToSpreadsheet CSVs (3 compartments).

    Leaves out what cellstrata does not emit either: image and object numbers, parents and
    children counts, and z coordinates (0 in 2-D).
    """
    ids = ("ImageNumber", "ObjectNumber", "Number_Object_Number")
    total = 0
    for compartment in ("Nuclei", "Cells", "Cytoplasm"):
        with open(out_dir / f"{compartment}.csv", newline="") as handle:
            header = next(csv.reader(handle))
        total += sum(
            1
            for name in header
            if name not in ids
            and not name.startswith(("Parent_", "Children_"))
            and "Z" not in name.split("_")
        )
    return total


def peer_missing() -> str | None:
    """Why the peer cannot run here (with how to install it), or None."""
    executable = PEER_VENV / "bin" / "cellprofiler"
    if executable.exists() and PEER_PIPELINE.exists():
        return None
    return (
        f"CellProfiler 4.2.8.1 (the peer) is not installed: no {executable}.\n"
        f"Install it once, as root (about 2 minutes): bash {PEER_TOOLS / 'install.sh'}\n"
        f"(see {PEER_TOOLS / 'README.md'}; CELLPROFILER_VENV names another venv)"
    )


def _java_home() -> str:
    java = shutil.which("javac") or shutil.which("java")
    return str(Path(java).resolve().parents[1]) if java else ""


def vs_cellprofiler(runs: int) -> int:
    """Time CellProfiler and cellstrata on the site, interleaved; print the comparison."""
    missing = peer_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("JAVA_HOME", _java_home())
    with tempfile.TemporaryDirectory(prefix="site-vs-cp-") as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        for channel in CELL_PAINTING["channels"].values():
            source = Path(str(CELL_PAINTING["files"]).format(channel))
            shutil.copy(source, images / source.name)
        startup = work / "startup.cppipe"
        startup.write_text(peer_startup_pipeline(PEER_PIPELINE.read_text()))
        peer = str(PEER_VENV / "bin" / "cellprofiler")

        def cellprofiler(pipeline: Path, name: str) -> tuple[float, float, str]:
            out = work / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            command = [peer, "-c", "-r", "-p", str(pipeline), "-i", str(images), "-o", str(out)]
            return run_timed(command, env=env, cwd=work)

        def cellstrata(mode: str) -> tuple[float, float, str]:
            out = work / f"us-{mode}"
            out.mkdir(exist_ok=True)
            command = [sys.executable, __file__, "--child", mode, "--out", str(out)]
            return run_timed(command, env=env)

        rounds = []
        for i in range(runs):
            cp_empty, _, _ = cellprofiler(startup, "cp-startup")
            cp_full, cp_rss, _ = cellprofiler(PEER_PIPELINE, "cp")
            us_empty, _, _ = cellstrata("empty")
            us_full, us_rss, text = cellstrata("site")
            counts = json.loads(text.strip().splitlines()[-1])
            rounds.append((cp_full - cp_empty, us_full - us_empty, us_rss, cp_rss))
            print(
                f"round {i + 1}: CellProfiler {cp_full:.2f} - {cp_empty:.2f} start-up = "
                f"{cp_full - cp_empty:.2f} CPU-s ({cp_rss:.0f} MB); cellstrata {us_full:.2f} - "
                f"{us_empty:.2f} = {us_full - us_empty:.2f} CPU-s ({us_rss:.0f} MB), "
                f"{counts['cells']} cells",
                flush=True,
            )
        features_cp = peer_feature_count(work / "cp")
    cp_s = statistics.median(r[0] for r in rounds)
    us_s = statistics.median(r[1] for r in rounds)
    rss = max(r[2] for r in rounds)
    print(
        f"median of {runs} rounds: CellProfiler 4.2.8.1 {cp_s:.2f} CPU-s per site, "
        f"cellstrata {us_s:.2f}; {features_cp} against {counts['features']} features per cell"
    )
    print(
        f"cellprofiler_cpu_s={cp_s:.2f} cellstrata_core_s={us_s:.3f} ratio={cp_s / us_s:.1f} "
        f"peak_rss_mb={rss:.0f} features_cp={features_cp} features_us={counts['features']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--naive", action="store_true", help="also time cp_measure (slow)")
    parser.add_argument(
        "--vs-cellprofiler",
        action="store_true",
        help="time CellProfiler 4.2.8.1 and cellstrata side by side on the Cell Painting site",
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds for --vs-cellprofiler")
    parser.add_argument("--child", choices=("site", "empty"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_site(args.out, empty=args.child == "empty")))
        return 0
    if args.vs_cellprofiler:
        if args.runs < 3:
            parser.error("--runs must be at least 3 (the median of at least 3 rounds)")
        return vs_cellprofiler(args.runs)
    dense = run_site(BBBC013)
    report("BBBC013 A01 (dense)", dense)
    painting = run_site(CELL_PAINTING)
    total = report("Cell Painting BR00143976 C03 f03", painting)
    rss = peak_rss_mb()
    naive = float("nan")
    if args.naive:
        naive = naive_cp_measure(painting["labels"], painting["images"])
        print(
            f"\nnaive cp_measure features alone: {naive:.1f} core-s "
            f"({naive / max(painting['stages']['features'], 1e-9):.1f}x ours)"
        )
        naive += total - painting["stages"]["features"]
    print(
        f"\nours {total:.2f} core-s, peak RSS {rss:.0f} MB; the ratio to CellProfiler comes from "
        "--vs-cellprofiler (both tools in one run)"
    )
    print(
        f"core_seconds_per_site={total:.3f} peak_rss_mb={rss:.0f} "
        f"naive_core_seconds_per_site={naive:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-site cost of the image levels: raw TIFFs -> corrected -> masks -> full feature set.

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

    python benchmarks/site_throughput.py [--naive]

The last line is ``core_seconds_per_site=<s> peak_rss_mb=<MB> naive_core_seconds_per_site=<s>``
for the Cell Painting site (``nan`` for the naive figure without ``--naive``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from itertools import combinations  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from cellstrata.images.illumination import correct_image, illumination_function, to_float  # noqa: E402
from cellstrata.io import read_image  # noqa: E402
from cellstrata.segment import segment_site  # noqa: E402
from cellstrata.singlecell.features import FEATURE_GROUPS, measure_site  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CELL_PAINTING = {
    "files": SHARED / "cellpainting_site_BR00143976/images/r03c03f03p01-ch{}sk1fk1fl1.tiff",
    "channels": {"DNA": 5, "ER": 2, "AGP": 3, "Mito": 4, "RNA": 6},
    "nuclei": "DNA",
    "cells": "AGP",
    "nuclei_params": {"diameter": 60},
}
BBBC013 = {
    "files": SHARED / "bbbc013_translocation/Channel{}-01-A-01.tif",
    "channels": {"GFP": 1, "DNA": 2},
    "nuclei": "DNA",
    "cells": None,
    "nuclei_params": {"diameter": 14, "local_contrast": None},
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
            images[site["nuclei"]], cell_image, nuclei_params=site["nuclei_params"]
        )
    )
    labels = {"Nuclei": masks["nuclei"], "Cells": masks["cells"], "Cytoplasm": masks["cytoplasm"]}
    timings: dict[str, float] = {}
    # measure_site's timings are wall seconds per group; single-threaded they equal CPU time.
    table, stages["features"] = _cpu(lambda: measure_site(labels, images, timings=timings))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--naive", action="store_true", help="also time cp_measure (slow)")
    args = parser.parse_args(argv)
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
        f"\nCellProfiler 4.2.8 on this site (issue): 28.8 core-s; ours {total:.2f} core-s "
        f"({28.8 / total:.1f}x faster); peak RSS {rss:.0f} MB"
    )
    print(
        f"core_seconds_per_site={total:.3f} peak_rss_mb={rss:.0f} "
        f"naive_core_seconds_per_site={naive:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

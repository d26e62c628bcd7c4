"""Memory and time of the profile chain at plate scale: aggregate + annotate + normalize.

Generates a plate of single cells on disk (default 1,000,000 cells x 1,000 float32 features
across the 384 wells of a plate, one Parquet file written in row groups, as a CellProfiler
plate arrives; about 4 GB), then runs in a fresh process what the profiles rule runs:
:func:`cellstrata.profiles.aggregate.aggregate_features` (pycytominer's aggregate on streamed column
blocks), :func:`~cellstrata.profiles.aggregate.annotate_profiles` and
:func:`~cellstrata.profiles.aggregate.normalize_profiles`, and prints its wall time and peak RSS.

``--naive-cells N`` also runs pycytominer the usual way (the whole single-cell table read
into pandas, then aggregate, annotate, normalize) on a plate of N cells, beside the streamed
chain on the same N cells, and prints the two side by side: the whole-table way does not fit
this machine at 1,000,000 cells x 1,000 features (4 GB as float32 on disk, 8 GB as float64
in pandas, plus pycytominer's copies).

    python benchmarks/aggregate_scale.py [--cells 1000000] [--features 1000] [--naive-cells 100000]

The last line is ``cells=<n> wall_seconds=<s> peak_rss_mb=<MB>`` for the streamed chain.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROWS, COLUMNS = "ABCDEFGHIJKLMNOP", range(1, 25)
WELLS = [f"{row}{column:02d}" for row in ROWS for column in COLUMNS]
COMPARTMENTS = ("Cells", "Cytoplasm", "Nuclei")


def generate(directory: Path, cells: int, features: int, seed: int = 0) -> Path:
    """Write ``plate.parquet`` (wells in order, one row group per well) and ``platemap.csv``.

    Written well by well, so generating never holds more than one well in memory. Every
    well's features are shifted by a per-well offset, so profiles differ between wells.
    """
    rng = np.random.default_rng(seed)
    names = [f"{COMPARTMENTS[i % 3]}_Intensity_Feature{i:04d}_DNA" for i in range(features)]
    per_well = np.full(len(WELLS), cells // len(WELLS))
    per_well[: cells % len(WELLS)] += 1
    schema = pa.schema(
        [
            ("Metadata_Plate", pa.string()),
            ("Metadata_Well", pa.string()),
            ("Metadata_Site", pa.int64()),
            ("Metadata_ObjectNumber", pa.int64()),
            *[(name, pa.float32()) for name in names],
        ]
    )
    path = directory / "plate.parquet"
    with pq.ParquetWriter(path, schema) as writer:
        for well, n in zip(WELLS, per_well, strict=True):
            values = rng.standard_normal((n, features), dtype=np.float32)
            values += rng.normal(0, 0.5, features).astype(np.float32)
            columns = {
                "Metadata_Plate": pa.array(["BENCH"] * n),
                "Metadata_Well": pa.array([well] * n),
                "Metadata_Site": pa.array(np.arange(n) % 9 + 1),
                "Metadata_ObjectNumber": pa.array(np.arange(1, n + 1)),
            }
            columns |= {name: pa.array(values[:, i]) for i, name in enumerate(names)}
            writer.write_table(pa.table(columns, schema=schema))
    pd.DataFrame(
        {
            "well": WELLS,
            "treatment": ["DMSO" if int(w[1:]) <= 2 else f"compound{int(w[1:])}" for w in WELLS],
            "control": ["negative" if int(w[1:]) <= 2 else "treated" for w in WELLS],
        }
    ).to_csv(directory / "platemap.csv", index=False)
    return path


def chain(directory: Path, naive: bool) -> dict[str, float]:
    """Aggregate + annotate + normalize the plate in ``directory``; wall seconds, peak RSS."""
    from pycytominer import aggregate

    from cellstrata.profiles.aggregate import (
        aggregate_features,
        annotate_profiles,
        normalize_profiles,
    )
    from cellstrata.profiles.platemap import mark_controls, read_platemap

    start = time.perf_counter()
    platemap = mark_controls(read_platemap(directory / "platemap.csv").table)
    if naive:
        cells = pd.read_parquet(directory / "plate.parquet")
        aggregated = aggregate(
            cells,
            strata=["Metadata_Plate", "Metadata_Well"],
            features="infer",
            compute_object_count=True,
        )
        del cells
    else:
        aggregated = aggregate_features([directory / "plate.parquet"]).profiles
    annotated, _ = annotate_profiles(aggregated, platemap)
    normalized, _ = normalize_profiles(annotated)
    wall = time.perf_counter() - start
    return {
        "wells": len(normalized),
        "wall_seconds": wall,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(directory: Path, naive: bool) -> dict[str, float]:
    """Run :func:`chain` in a fresh process, so its peak RSS is the chain's alone."""
    command = [sys.executable, __file__, "--run", str(directory)] + (["--naive"] if naive else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {
            "wells": 0,
            "wall_seconds": float("nan"),
            "peak_rss_mb": float("nan"),
            "error": result.stderr.strip().splitlines()[-1] if result.stderr else "killed",
        }
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--naive-cells", type=int, default=0, help="also compare at N cells")
    parser.add_argument("--workdir", type=Path, help="keep the generated plates here")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(chain(args.run, args.naive)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.naive_cells:
            small = Path(tmp, "small")
            small.mkdir()
            generate(small, args.naive_cells, args.features)
            print(f"{args.naive_cells:,} cells x {args.features:,} features, 384 wells:")
            for label, naive in (
                ("pycytominer, whole table", True),
                ("cellstrata, streamed", False),
            ):
                figures = measure(small, naive)
                print(
                    f"  {label:<26} wall {figures['wall_seconds']:7.1f} s  "
                    f"peak RSS {figures['peak_rss_mb']:8.0f} MB  {figures.get('error', '')}"
                )
        large = Path(tmp, "large")
        large.mkdir()
        began = time.perf_counter()
        path = generate(large, args.cells, args.features)
        size = path.stat().st_size / 2**30
        print(
            f"generated {args.cells:,} cells x {args.features:,} float32 features "
            f"({size:.1f} GiB Parquet) in {time.perf_counter() - began:.0f} s"
        )
        figures = measure(large, naive=False)
        if "error" in figures:
            sys.exit(f"streamed chain failed: {figures['error']}")
        print(
            f"aggregate + annotate + normalize, {figures['wells']} wells: "
            f"wall {figures['wall_seconds']:.1f} s, peak RSS {figures['peak_rss_mb']:.0f} MB"
        )
    print(
        f"cells={args.cells} wall_seconds={figures['wall_seconds']:.1f} "
        f"peak_rss_mb={figures['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()

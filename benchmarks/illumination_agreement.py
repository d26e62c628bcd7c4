"""Illumination functions against CellProfiler 4.2.8.1's own, like for like, on BBBC013.

``../shared/data/bbbc013_translocation/cellprofiler_4.2.8_illumination_rowsAD`` holds the
functions CellProfiler 4.2.8.1 made from exactly the 48 wells of ``../shared`` (its ExampleSBS
illumination pipeline: Regular, all images, median filter sized from object size 100,
rescaled). This computes ours from the same images with the settings of
``config/examples/bbbc013.yaml`` (the same settings) and prints, per channel, the Pearson r
and the largest absolute difference, next to the package defaults and a transposed control.
(The older ``Channel*ILLUM.mat`` of the folder were made by a 2014 CellProfiler from 96 wells,
half of them not in ``../shared``: no like-for-like reference.)

    python benchmarks/illumination_agreement.py [--data DIR]

The last line is ``r_channel1=<r> r_channel2=<r>`` for the bbbc013.yaml settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cellstrata.images.illumination import compute_illumination
from cellstrata.workflow.validate import (
    load_config,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bbbc013_translocation"
REFERENCE = "cellprofiler_4.2.8_illumination_rowsAD"
CONFIG = REPO / "config" / "examples" / "bbbc013.yaml"


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def example_settings() -> dict:
    """The illumination block of config/examples/bbbc013.yaml, schema defaults filled in."""
    return load_config(CONFIG)["illumination"]


def agreement(data: Path, channel: int, settings: dict) -> tuple[float, float, float]:
    """(r, max |difference|, r of the transposed function) of our function of ``channel``
    with CellProfiler 4.2.8.1's ``Channel<channel>ILLUM.npy``."""
    reference = np.load(data / REFERENCE / f"Channel{channel}ILLUM.npy")
    function = compute_illumination(sorted(data.glob(f"Channel{channel}-*.tif")), **settings)
    difference = float(np.abs(function - reference).max())
    return pearson(function, reference), difference, pearson(function.T, reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    results = {}
    print(f"{'channel':8} {'setting':22} {'r':>12} {'max |diff|':>11} {'r transposed':>13}")
    for channel in (1, 2):
        for name, settings in (("bbbc013.yaml", example_settings()), ("package defaults", {})):
            r, difference, transposed = agreement(args.data, channel, settings)
            print(f"{channel:<8} {name:22} {r:12.6f} {difference:11.5f} {transposed:13.3f}")
            results.setdefault(channel, r)
    print(f"r_channel1={results[1]:.4f} r_channel2={results[2]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

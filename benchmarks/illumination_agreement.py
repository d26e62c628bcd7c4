"""Illumination functions against CellProfiler's own, on the BBBC013 plate.

``../shared/data/bbbc013_translocation`` holds CellProfiler's ``Channel1ILLUM.mat`` and
``Channel2ILLUM.mat``, computed from all 96 images per channel of the ExampleSBS plate, but
only the 48 images of rows A-D (SOURCES.md). This prints, per channel and smoothing setting,
the Pearson r of our function with CellProfiler's, next to a ceiling for any method that
sees half of the images: the r between the *same* method's function from half of our
images and from all of them. CellProfiler's smoothing of this file is close to a 61-px box
(its old "Median Filter" was a Gaussian truncated at 30 px), listed as ``box61``.

    python benchmarks/illumination_agreement.py [--data DIR]

The last line is ``r_channel1=<r> r_channel2=<r>`` for the package defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import io as sio
from scipy import ndimage

from cellstrata.illumination import illumination_function, mean_image, to_float
from cellstrata.io import read_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bbbc013_translocation"

SETTINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "defaults (median, 1/5 side)": illumination_function,
    "gaussian 80": lambda mean: illumination_function(mean, smoothing="gaussian", filter_size=80),
    "box61 (CellProfiler-like)": lambda mean: ndimage.uniform_filter(mean, 61, mode="nearest"),
}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    results = {}
    print(f"{'channel':8} {'setting':28} {'r vs CellProfiler':>17} {'half vs all':>12}")
    for channel in (1, 2):
        reference = sio.loadmat(args.data / f"Channel{channel}ILLUM.mat")["Image"]
        images = [to_float(read_image(p)) for p in sorted(args.data.glob(f"Channel{channel}-*"))]
        means = {
            "all": mean_image(images),
            "even": mean_image(images[0::2]),
            "odd": mean_image(images[1::2]),
        }
        for name, smooth in SETTINGS.items():
            full = smooth(means["all"])
            r = pearson(full, reference)
            ceiling = min(pearson(smooth(means[h]), full) for h in ("even", "odd"))
            print(f"{channel:<8} {name:28} {r:17.3f} {ceiling:12.3f}")
            results.setdefault(channel, r)
        print(
            f"{channel:<8} {'control: transposed defaults':28} "
            f"{pearson(illumination_function(means['all']).T, reference):17.3f}"
        )
    print(f"images per channel: {len(images)} here (CellProfiler used 96)")
    print(f"r_channel1={results[1]:.4f} r_channel2={results[2]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Segmentation speed against a base commit, with its masks as the reference (same run).

A speed change to segmentation must not change what it finds. This script checks out the base
commit (default: where this branch left ``main``) in a temporary ``git worktree``, segments the
same inputs with the base and with this tree, each in its own child process, and compares:

* every object of every compartment (nuclei, cells, cytoplasm) of the base masks with the
  object of the new masks that overlaps it most: IoU per object, and the object counts;
* core-seconds (process CPU time, single-threaded) per input set, both sides timed in this
  invocation, so the speed-up is a ratio from one run.

Inputs (read by path, nothing is written beside them): the synthetic example (8 sites of
``SYN01`` rendered into a temporary folder: DNA nuclei, cells on AGP, the example config's
parameters), the real Cell Painting site BR00143976 (nuclei on DNA with diameter 60, cells by
propagation on RNA, as ``benchmarks/site_throughput.py``), BBBC013 A01 (dense, nuclei only,
as ``site_throughput.py``) and the 20 DSB2018 dev images (nuclei, package defaults). No mask
fixture is stored: the base commit's code makes the reference each time.

    python benchmarks/segmentation_speed.py [--base REV] [--repeat 3]

The last line is ``min_iou=<v> objects=<n> below=<n> site_core_s_base=<v> site_core_s=<v>
dense_ms_per_cell_base=<v> dense_ms_per_cell=<v>``; ``below`` counts objects under
``--min-iou`` (default 0.99) or missing, and the exit status is 1 if there is any.
"""

from __future__ import annotations

import single_thread  # noqa: F401  (pins the thread pools before numpy loads)

# isort: split
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SITE = SHARED / "cellpainting_site_BR00143976/images/r03c03f03p01-ch{}sk1fk1fl1.tiff"
DENSE = SHARED / "bbbc013_translocation/Channel2-01-A-01.tif"
DSB = SHARED / "nuclei_dsb2018_dev/images"
COMPARTMENTS = ("nuclei", "cells", "cytoplasm")
#: name -> (nuclei_params, cell_params); a set without cell images gets nuclei only.
PARAMS = {
    "example": ({"diameter": 16}, {"max_distance": 30}),
    "site": ({"diameter": 60}, {"method": "propagation"}),
    "dense": ({"diameter": 14, "local_contrast": None}, {}),
    "dsb2018": ({}, {}),
}


def prepare_inputs(folder: Path) -> Path:
    """Write every input image set to ``folder/inputs.npz``; returns its path."""
    from cellstrata.example import generate_example
    from cellstrata.images.illumination import to_float
    from cellstrata.io import read_image
    from cellstrata.segment import read_nuclear_image

    arrays: dict[str, np.ndarray] = {}
    example = folder / "example"
    generate_example(example, plates=("SYN01",), rows="AB", columns=4, sites=1)
    for i, dna in enumerate(sorted(example.rglob("*_w1.tif"))):
        arrays[f"example/{i}/nuclei"] = to_float(read_image(dna))
        arrays[f"example/{i}/cells"] = to_float(read_image(dna.with_name(dna.name[:-5] + "3.tif")))
    if SITE.parent.is_dir():
        arrays["site/0/nuclei"] = to_float(read_image(str(SITE).format(5)))
        arrays["site/0/cells"] = to_float(read_image(str(SITE).format(6)))
    if DENSE.is_file():
        arrays["dense/0/nuclei"] = to_float(read_image(DENSE))
    if DSB.is_dir():
        for i, path in enumerate(sorted(DSB.iterdir())):
            arrays[f"dsb2018/{i}/nuclei"] = read_nuclear_image(path)
    path = folder / "inputs.npz"
    np.savez(path, **arrays)
    return path


def segment_inputs(inputs: Path, output: Path, repeat: int) -> None:
    """Child: segment every image set with the importable cellstrata; save masks and times.

    Each set is segmented ``repeat`` times; its time is the median core-seconds of one pass.
    """
    from cellstrata.segment import segment_nuclei, segment_site

    data = np.load(inputs)
    items = sorted({key.rsplit("/", 1)[0] for key in data.files})
    out: dict[str, np.ndarray] = {}
    for item in items:
        name = item.split("/")[0]
        nuclei_params, cell_params = PARAMS[name]
        cells = data[f"{item}/cells"] if f"{item}/cells" in data.files else None
        nuclei_image = data[f"{item}/nuclei"]

        seconds = []
        for _ in range(repeat):
            started = time.process_time()
            if name == "dsb2018":
                masks = {"nuclei": segment_nuclei(nuclei_image, **nuclei_params)}
            else:
                masks = segment_site(
                    nuclei_image, cells, nuclei_params=nuclei_params, cell_params=cell_params
                )
            seconds.append(time.process_time() - started)
        for compartment, mask in masks.items():
            out[f"{item}/{compartment}"] = mask
        out[f"{item}/seconds"] = np.array(np.median(seconds))
    np.savez_compressed(output, **out)


def object_ious(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """For each object of ``base``, its IoU with the ``new`` object overlapping it most."""
    ids = np.unique(base[base > 0])
    if ids.size == 0:
        return np.zeros(0)
    both = (base > 0) & (new > 0)
    pairs, overlap = np.unique(
        np.stack([base[both], new[both]]).astype(np.int64), axis=1, return_counts=True
    )
    base_area = dict(zip(*np.unique(base[base > 0], return_counts=True), strict=True))
    new_area = dict(zip(*np.unique(new[new > 0], return_counts=True), strict=True))
    best = dict.fromkeys(ids.tolist(), 0.0)
    for (a, b), inter in zip(pairs.T.tolist(), overlap.tolist(), strict=True):
        iou = inter / (base_area[a] + new_area[b] - inter)
        best[a] = max(best[a], iou)
    return np.array([best[k] for k in ids.tolist()])


def _child(inputs: Path, output: Path, pythonpath: Path, repeat: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    command = [sys.executable, __file__, "--child", str(inputs), str(output), "--repeat"]
    subprocess.run([*command, str(repeat)], env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="base revision (default: git merge-base HEAD main)")
    parser.add_argument("--repeat", type=int, default=3, help="passes per image set")
    parser.add_argument("--min-iou", type=float, default=0.99)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        segment_inputs(*args.child, repeat=args.repeat)
        return 0

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *command], check=True, capture_output=True, text=True
        ).stdout.strip()

    base = git("rev-parse", args.base or git("merge-base", "HEAD", "main"))
    with tempfile.TemporaryDirectory(prefix="segspeed-") as tmp:
        folder = Path(tmp)
        inputs = prepare_inputs(folder)
        checkout = folder / "base"
        git("worktree", "add", "--detach", str(checkout), base)
        try:
            _child(inputs, folder / "base.npz", checkout / "src", args.repeat)
        finally:
            git("worktree", "remove", "--force", str(checkout))
        _child(inputs, folder / "new.npz", REPO / "src", args.repeat)
        old, new = np.load(folder / "base.npz"), np.load(folder / "new.npz")
        print(f"base {base[:10]} against this tree ({git('rev-parse', '--short', 'HEAD')}+)")
        items = sorted({key.rsplit("/", 1)[0] for key in old.files})
        groups: dict[str, dict[str, float]] = {}
        all_ious, below = [], 0
        for item in items:
            name = item.split("/")[0]
            group = groups.setdefault(name, {"base": 0.0, "new": 0.0, "objects": 0})
            group["base"] += float(old[f"{item}/seconds"])
            group["new"] += float(new[f"{item}/seconds"])
            for compartment in COMPARTMENTS:
                key = f"{item}/{compartment}"
                if key not in old.files:
                    continue
                ious = object_ious(old[key], new[key])
                extra = int(np.unique(new[key][new[key] > 0]).size) - ious.size
                below += int(np.count_nonzero(ious < args.min_iou)) + abs(extra)
                all_ious.append(ious)
                if compartment == "nuclei":
                    group["objects"] += ious.size
        for name, group in groups.items():
            print(
                f"{name:8s} {group['objects']:5d} nuclei: base {group['base']:.3f} core-s, "
                f"now {group['new']:.3f} ({group['base'] / max(group['new'], 1e-9):.2f}x)"
            )
        ious = np.concatenate(all_ious)
        print(f"{ious.size} objects, min IoU {ious.min():.4f}, {below} below {args.min_iou}")
        dense = groups.get("dense", {"base": np.nan, "new": np.nan, "objects": 1})
        site = groups.get("site", {"base": np.nan, "new": np.nan})
        per_cell = 1000 / max(dense["objects"], 1)
        print(
            f"min_iou={ious.min():.4f} objects={ious.size} below={below} "
            f"site_core_s_base={site['base']:.3f} site_core_s={site['new']:.3f} "
            f"dense_ms_per_cell_base={dense['base'] * per_cell:.2f} "
            f"dense_ms_per_cell={dense['new'] * per_cell:.2f}"
        )
    return 1 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Nuclei segmentation accuracy: object F1 at IoU >= 0.5 against annotated label images.

Runs :func:`cellstrata.segment.segment_nuclei` (package defaults, one parameter set for all
images) on every image of a folder, matches predicted to true nuclei one-to-one at
``IoU >= --iou`` (:func:`cellstrata.segment.evaluate.match_f1`, shared with the test suite)
and prints, per image, the counts, F1, precision, recall and the segmentation time, then the pooled
(micro-averaged) scores. The last line is always ``f1=<F1> precision=<P> recall=<R>``.

Default data: the DSB2018 fluorescence dev set beside the repository,
``../shared/data/nuclei_dsb2018_dev/{images,labels}`` (label files share the image's name;
``<stem>.tif`` for a PNG image). Never point this at a held-out evaluation set while tuning.

    python benchmarks/segmentation_accuracy.py
    python benchmarks/segmentation_accuracy.py --images DIR --labels DIR --method classical
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nuclei_dsb2018_dev"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_DATA / "images",
        help="folder of nuclear stain images (.tif/.tiff/.png; default: %(default)s)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=DEFAULT_DATA / "labels",
        help="folder of ground-truth label images, same file names (default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        default="classical",
        help="segmentation method, as for cellstrata.segment.segment_directory (classical)",
    )
    parser.add_argument(
        "--iou", type=float, default=0.5, help="IoU a match needs (default: %(default)s)"
    )
    return parser.parse_args(argv)


def _label_path(labels_dir: Path, image: Path) -> Path:
    name = f"{image.stem}.tif" if image.suffix.lower() == ".png" else image.name
    return labels_dir / name


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    from cellstrata.io import read_image
    from cellstrata.segment import (
        IMAGE_SUFFIXES,
        nuclei_segmenter,
        read_nuclear_image,
    )
    from cellstrata.segment.evaluate import MatchCounts, match_f1

    for folder in (args.images, args.labels):
        if not folder.is_dir():
            print(f"error: {folder} is not a directory", file=sys.stderr)
            return 2
    images = sorted(
        p
        for p in args.images.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not images:
        print(f"error: no images in {args.images}", file=sys.stderr)
        return 2
    missing = [p.name for p in images if not _label_path(args.labels, p).is_file()]
    if missing:
        print(f"error: no label image in {args.labels} for {missing}", file=sys.stderr)
        return 2
    try:
        segment = nuclei_segmenter(args.method)
    except (NotImplementedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print(f"method={args.method} iou>={args.iou} images={args.images} labels={args.labels}")
    header = (
        f"{'image':<28} {'shape':>11} {'true':>5} {'pred':>5} {'TP':>5} {'FP':>4} {'FN':>4} "
        f"{'F1':>6} {'prec':>6} {'recall':>6} {'time_s':>7}"
    )
    print(header)
    total = MatchCounts(0, 0, 0)
    seconds = []
    for path in images:
        image = read_nuclear_image(path)
        truth = read_image(_label_path(args.labels, path))
        if truth.shape != image.shape:
            print(f"error: {path.name}: labels {truth.shape} != image {image.shape}")
            return 2
        start = time.perf_counter()
        pred = segment(image)
        seconds.append(time.perf_counter() - start)
        counts = match_f1(truth, pred, iou=args.iou)
        total = total + counts
        shape = "x".join(map(str, image.shape))
        print(
            f"{path.name:<28} {shape:>11} {counts.tp + counts.fn:>5} {counts.tp + counts.fp:>5} "
            f"{counts.tp:>5} {counts.fp:>4} {counts.fn:>4} {counts.f1:>6.3f} "
            f"{counts.precision:>6.3f} {counts.recall:>6.3f} {seconds[-1]:>7.2f}"
        )
    print(
        f"total: {len(images)} images, {total.tp + total.fn} true / {total.tp + total.fp} "
        f"predicted nuclei, TP={total.tp} FP={total.fp} FN={total.fn}; "
        f"{sum(seconds):.1f} s, {sum(seconds) / len(seconds):.2f} s per image "
        f"(max {max(seconds):.2f} s)"
    )
    print(f"f1={total.f1:.4f} precision={total.precision:.4f} recall={total.recall:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Object matching against ground truth (segment/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cellstrata.segment.evaluate import MatchCounts, match_f1

# --------------------------------------------------------------------------------------------
# match_f1
# --------------------------------------------------------------------------------------------


def _squares(shape, squares):
    """Label image with ``label: (row0, row1, col0, col1)`` rectangles."""
    labels = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in squares.items():
        labels[r0:r1, c0:c1] = k
    return labels


def test_match_f1_known_counts():
    truth = _squares(
        (80, 80),
        {1: (10, 20, 10, 20), 2: (10, 20, 40, 50), 3: (40, 50, 10, 20), 4: (40, 50, 40, 50)},
    )
    pred = _squares(
        (80, 80),
        {
            7: (10, 20, 10, 20),  # true 1 exactly: IoU 1
            3: (10, 20, 42, 52),  # true 2 shifted by 2 px: IoU 80 / 120 = 0.67
            9: (40, 43, 10, 20),  # a sliver of true 3: IoU 0.3 -> FP, and true 3 is a FN
            2: (70, 75, 70, 75),  # nothing there: FP
        },  # true 4 not found: FN
    )
    counts = match_f1(truth, pred)
    assert counts == MatchCounts(tp=2, fp=2, fn=2)
    assert (counts.precision, counts.recall, counts.f1) == (0.5, 0.5, 0.5)
    assert match_f1(truth, pred, iou=0.7) == MatchCounts(tp=1, fp=3, fn=3)
    assert match_f1(truth, pred, iou=0.25) == MatchCounts(tp=3, fp=1, fn=1)
    # Symmetric, and indifferent to label values and integer types.
    assert match_f1(pred, truth) == MatchCounts(tp=2, fp=2, fn=2)
    assert match_f1(truth.astype(np.uint16) * 1000, pred.astype(np.int64) + (pred > 0) * 5) == (
        counts
    )


def test_match_f1_is_one_to_one_at_iou_half():
    # Two halves of one true square both have IoU exactly 0.5: only one may match.
    truth = _squares((20, 20), {1: (4, 8, 4, 8)})
    halves = _squares((20, 20), {1: (4, 6, 4, 8), 2: (6, 8, 4, 8)})
    assert match_f1(truth, halves) == MatchCounts(tp=1, fp=1, fn=0)
    assert match_f1(halves, truth) == MatchCounts(tp=1, fp=0, fn=1)
    assert match_f1(truth, halves, iou=0.51) == MatchCounts(tp=0, fp=2, fn=1)


def test_match_f1_empty_images_and_pooling():
    empty = np.zeros((10, 10), np.int32)
    one = _squares((10, 10), {5: (2, 6, 2, 6)})
    assert match_f1(empty, empty) == MatchCounts(0, 0, 0)
    assert match_f1(empty, empty).f1 == 1.0
    assert match_f1(empty, one) == MatchCounts(tp=0, fp=1, fn=0)
    assert match_f1(one, empty) == MatchCounts(tp=0, fp=0, fn=1)
    pooled = match_f1(one, one) + match_f1(one, empty) + match_f1(empty, one)
    assert pooled == MatchCounts(tp=1, fp=1, fn=1)
    assert pooled.f1 == pytest.approx(0.5)


def test_match_f1_bad_arguments():
    one = _squares((10, 10), {1: (2, 6, 2, 6)})
    with pytest.raises(ValueError, match="shape"):
        match_f1(one, one[:-1])
    with pytest.raises(ValueError, match="iou"):
        match_f1(one, one, iou=0)
    with pytest.raises(ValueError, match="integer"):
        match_f1(one.astype(float), one)
    with pytest.raises(ValueError, match="negative"):
        match_f1(one, -one)

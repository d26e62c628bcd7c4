"""Segmentation accuracy against ground truth: object matching and F1.

Used by benchmarks/segmentation_accuracy.py and the tests, not by the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from cellstrata.io import check_labels

# accuracy against ground truth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchCounts:
    """Object-level match counts; add instances to pool images (micro-average).

    ``tp``: matched pairs; ``fp``: predicted objects left unmatched; ``fn``: true objects
    left unmatched.
    """

    tp: int
    fp: int
    fn: int

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / predicted objects (1.0 if nothing was predicted)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """TP / true objects (1.0 if there are none)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)`` (1.0 if both images are empty)."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0


def match_f1(truth: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> MatchCounts:
    """Match predicted to true objects one-to-one at ``IoU >= iou`` and count TP/FP/FN.

    Every pair of overlapping objects whose intersection over union is at least ``iou`` is a
    candidate; a maximum one-to-one matching of the candidates gives the true positives. For
    ``iou > 0.5`` an object can reach the threshold with at most one partner, so this is
    simply the number of such pairs; at exactly 0.5 ties are resolved by the matching. The
    F1 at IoU 0.5 is the usual object-detection score for nuclei (e.g. CellPose, StarDist).

    Parameters
    ----------
    truth, pred : np.ndarray
        Label images of the same shape (any non-negative integer dtype, 0 = background;
        labels need not be sequential).
    iou : float, default 0.5
        Minimum intersection over union of a match, in (0, 1].

    Returns
    -------
    MatchCounts
        ``tp``, ``fp``, ``fn`` and the derived ``precision``, ``recall`` and ``f1``.
    """
    truth = check_labels(truth, "truth")
    pred = check_labels(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} != pred shape {pred.shape}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1]; got {iou}")
    if truth.size == 0:
        return MatchCounts(0, 0, 0)
    t_ids, t = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p = np.unique(pred.ravel(), return_inverse=True)
    # Dense indices 0..n-1 for objects; background (label 0, always first if present) -> -1.
    t = t - (1 if t_ids[0] == 0 else 0)
    p = p - (1 if p_ids[0] == 0 else 0)
    n_true = len(t_ids) - (1 if t_ids[0] == 0 else 0)
    n_pred = len(p_ids) - (1 if p_ids[0] == 0 else 0)
    if n_true == 0 or n_pred == 0:
        return MatchCounts(0, n_pred, n_true)
    area_t = np.bincount(t[t >= 0], minlength=n_true)
    area_p = np.bincount(p[p >= 0], minlength=n_pred)
    both = (t >= 0) & (p >= 0)
    pairs, inter = np.unique(t[both].astype(np.int64) * n_pred + p[both], return_counts=True)
    ti, pi = pairs // n_pred, pairs % n_pred
    overlap = inter / (area_t[ti] + area_p[pi] - inter)
    good = overlap >= iou
    if not good.any():
        return MatchCounts(0, n_pred, n_true)
    graph = coo_matrix(
        (np.ones(int(good.sum()), dtype=np.int8), (ti[good], pi[good])), shape=(n_true, n_pred)
    ).tocsr()
    matched = maximum_bipartite_matching(graph, perm_type="column")
    tp = int(np.count_nonzero(matched >= 0))
    return MatchCounts(tp, n_pred - tp, n_true - tp)


# --------------------------------------------------------------------------------------------

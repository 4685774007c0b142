"""Ranking metrics in numpy: PR-AUC (average precision), precision at a recall, thresholds.

Average precision is the step-wise area under the precision-recall curve (the definition
scikit-learn uses): sum over positives ranked by score of precision at that rank. Tied scores
are taken as one step, so a scorer that quantizes its outputs cannot gain from tie order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pr_curve", "average_precision", "precision_at_recall", "threshold_at_recall"]


def pr_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at each distinct score, highest threshold first."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # Keep the last index of each run of equal scores: ties form one step.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1] if len(s) else np.array([], dtype=int)
    tp, fp, thr = tp[last], fp[last], s[last]
    positives = max(int(y.sum()), 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / positives
    return precision, recall, thr


def average_precision(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the precision-recall curve (step-wise); None without positives."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return None
    precision, recall, _ = pr_curve(y, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_recall(y: np.ndarray, scores: np.ndarray, recall: float) -> float | None:
    """The best precision among thresholds that reach at least ``recall``; None if unreachable."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return None
    p, r, _ = pr_curve(y, scores)
    ok = r >= recall - 1e-12
    return float(p[ok].max()) if ok.any() else None


def threshold_at_recall(y: np.ndarray, scores: np.ndarray, recall: float) -> float:
    """The highest score threshold whose recall reaches ``recall`` (score >= threshold alerts)."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        raise ValueError("no positive labels: cannot pick a threshold for a recall")
    p, r, thr = pr_curve(y, scores)
    idx = int(np.argmax(r >= recall - 1e-12))
    return float(thr[idx])

"""Alert quality against ground truth: precision, recall and lead time.

An alert (store, facing, t) is *true* when the facing's shelf goes empty within the horizon
after it, or is empty at t. A stock-out (store, facing, start, end) is *caught* when an alert
was raised in [start - horizon, start]; its lead time is start minus the first such alert. It
is *caught late* when the first alert falls inside the empty interval instead (what a detector
of empty shelves, as for facings without a sensor, can at best do).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from statistics import median
from typing import Iterable

import numpy as np

__all__ = ["match_alerts", "hysteresis_alerts", "hysteresis_episodes", "match_episodes", "evaluate_scores"]


def match_alerts(
    alerts: Iterable[tuple[str, str, int]],
    stockouts: Iterable[tuple[str, str, int, int | None]],
    horizon_ms: int,
) -> dict:
    """Compare raised alerts with ground-truth stock-out intervals.

    Returns ``{"alerts", "stockouts", "true_alerts", "caught", "caught_late", "precision",
    "recall", "detected_recall", "median_lead_min", "median_delay_min"}``; ``recall`` counts
    stock-outs caught ahead, ``detected_recall`` those caught ahead or late; rates are None when
    undefined (no alerts / no stock-outs).
    """
    by_facing: dict[tuple[str, str], list[tuple[int, int | None]]] = defaultdict(list)
    n_stockouts = 0
    for store, facing, start, end in stockouts:
        by_facing[(store, facing)].append((start, end))
        n_stockouts += 1
    for intervals in by_facing.values():
        intervals.sort(key=lambda iv: iv[0])
    alerts_by_facing: dict[tuple[str, str], list[int]] = defaultdict(list)
    n_alerts = true_alerts = 0
    for store, facing, t in alerts:
        n_alerts += 1
        alerts_by_facing[(store, facing)].append(t)
        for start, end in by_facing.get((store, facing), ()):
            if start <= t + horizon_ms and (end is None or end > t):
                true_alerts += 1
                break
    caught = caught_late = 0
    leads: list[float] = []
    delays: list[float] = []
    for key, intervals in by_facing.items():
        times = sorted(alerts_by_facing.get(key, ()))
        for start, end in intervals:
            i = bisect.bisect_left(times, start - horizon_ms)
            if i < len(times) and times[i] <= start:
                caught += 1
                leads.append((start - times[i]) / 60_000)
            elif i < len(times) and (end is None or times[i] < end):
                caught_late += 1
                delays.append((times[i] - start) / 60_000)
    return {
        "alerts": n_alerts,
        "stockouts": n_stockouts,
        "true_alerts": true_alerts,
        "caught": caught,
        "caught_late": caught_late,
        "precision": true_alerts / n_alerts if n_alerts else None,
        "recall": caught / n_stockouts if n_stockouts else None,
        "detected_recall": (caught + caught_late) / n_stockouts if n_stockouts else None,
        "median_lead_min": median(leads) if leads else None,
        "median_delay_min": median(delays) if delays else None,
    }


def hysteresis_alerts(
    store: np.ndarray,
    facing: np.ndarray,
    t: np.ndarray,
    probs: np.ndarray,
    raise_at: float,
    clear_at: float | None = None,
    *,
    group: np.ndarray | None = None,
) -> list[tuple[str, str, int]]:
    """Alerts a gateway would raise: per facing, in time order, an alert is raised when the
    probability reaches ``raise_at`` and re-armed only once it falls below ``clear_at``
    (default ``raise_at / 2``). Returns the raise instants ``(store, facing, t)``.

    The edge's own hysteresis may add minimum hold times; this is the plain policy used to
    compare scorers on the same footing. ``group`` (one integer per (store, facing), optional)
    saves building string keys when the caller already has them.
    """
    return [(store_id, facing_id, raised) for store_id, facing_id, raised, _ in
            hysteresis_episodes(store, facing, t, probs, raise_at, clear_at, group=group)]


def hysteresis_episodes(
    store: np.ndarray,
    facing: np.ndarray,
    t: np.ndarray,
    probs: np.ndarray,
    raise_at: float,
    clear_at: float | None = None,
    *,
    group: np.ndarray | None = None,
) -> list[tuple[str, str, int, int | None]]:
    """Like :func:`hysteresis_alerts`, with each alert's clear instant: ``(store, facing,
    raised, cleared)``, ``cleared`` None when still raised at the facing's last row."""
    clear_at = raise_at / 2 if clear_at is None else clear_at
    if clear_at > raise_at:
        raise ValueError(f"clear_at {clear_at} above raise_at {raise_at}")
    n = len(t)
    if n == 0:
        return []
    if group is None:
        keys = np.char.add(np.char.add(np.asarray(store).astype(str), "\x1f"), np.asarray(facing).astype(str))
        _, group = np.unique(keys, return_inverse=True)
    order = np.lexsort((np.asarray(t), group))
    k, p, tt = group[order], np.asarray(probs)[order], np.asarray(t)[order]
    # Vectorized state machine: each row is a "raise" (+1), "clear" (-1) or no-op (0) signal;
    # the state before a row is the last non-zero signal of the same facing before it.
    signal = np.where(p >= raise_at, 1, np.where(p < clear_at, -1, 0))
    starts = np.r_[True, k[1:] != k[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    last = np.maximum.accumulate(np.where(signal != 0, np.arange(n), -1))
    prev = np.r_[-1, last[:-1]]
    prev_state = np.where(prev >= group_start, signal[np.maximum(prev, 0)], -1)
    raised = np.flatnonzero((signal == 1) & (prev_state != 1))
    # The next clear signal at or after each row (n when none), then checked to be same facing.
    idx = np.where(signal == -1, np.arange(n), n)
    next_clear = np.minimum.accumulate(idx[::-1])[::-1]
    out = []
    for i in raised:
        j = next_clear[i]
        cleared = int(tt[j]) if j < n and k[j] == k[i] else None
        r = order[i]
        out.append((str(store[r]), str(facing[r]), int(tt[i]), cleared))
    return out


def match_episodes(
    episodes: Iterable[tuple[str, str, int, int | None]],
    stockouts: Iterable[tuple[str, str, int, int | None]],
    horizon_ms: int,
) -> dict:
    """Alert quality when an alert stays on the staff page from raise to clear.

    An episode is *true* when the shelf is empty at some moment while it is raised or within
    the horizon after it was raised. A stock-out is *caught* when an episode is raised at its
    start, or was raised within the horizon before it; its lead time is start minus the raise,
    **capped at the horizon** (an alert raised earlier and still on gave at least that much
    warning, and no more is claimed). *Caught late*: first raised while the shelf was empty.
    """
    by_facing: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    n_stockouts = 0
    for store, facing, start, end in stockouts:
        by_facing[(store, facing)].append((start, float("inf") if end is None else end))
        n_stockouts += 1
    eps_by: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    n_eps = true_eps = 0
    for store, facing, raised, cleared in episodes:
        n_eps += 1
        until = max(float("inf") if cleared is None else cleared, raised + horizon_ms)
        eps_by[(store, facing)].append((raised, until))
        if any(start <= until and end > raised for start, end in by_facing.get((store, facing), ())):
            true_eps += 1
    caught = caught_late = 0
    leads: list[float] = []
    for key, intervals in by_facing.items():
        eps = eps_by.get(key, ())
        for start, end in intervals:
            active = [r for r, u in eps if r <= start and (u > start)]
            if active:
                caught += 1
                leads.append(min(start - min(active), horizon_ms) / 60_000)
            elif any(start < r < end for r, _u in eps):
                caught_late += 1
    return {
        "episodes": n_eps,
        "true_episodes": true_eps,
        "caught": caught,
        "caught_late": caught_late,
        "precision": true_eps / n_eps if n_eps else None,
        "recall": caught / n_stockouts if n_stockouts else None,
        "detected_recall": (caught + caught_late) / n_stockouts if n_stockouts else None,
        "median_lead_min": median(leads) if leads else None,
    }


def evaluate_scores(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    threshold: float,
    store: np.ndarray,
    facing: np.ndarray,
    t: np.ndarray,
    stockouts: list[tuple[str, str, int, int | None]],
    horizon_ms: int,
    store_days: float,
    empty_now: np.ndarray | None = None,
    target_recall: float = 0.75,
    group: np.ndarray | None = None,
) -> dict:
    """Row-level and alert-level quality of one scorer's probabilities on labelled rows.

    Row level: PR-AUC, precision at ``target_recall``, precision and recall at ``threshold``
    (chosen elsewhere, on validation rows). Alert level (hysteresis at ``threshold``): alerts,
    stock-outs caught, median lead time, false alerts per store per day.
    """
    from models.metrics import average_precision, precision_at_recall

    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    hit = probs >= threshold
    tp = int((hit & y).sum())
    out = {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "pr_auc": average_precision(y, probs),
        f"precision_at_recall_{target_recall:g}": precision_at_recall(y, probs, target_recall),
        "threshold": float(threshold),
        "precision": tp / int(hit.sum()) if hit.any() else None,
        "recall": tp / int(y.sum()) if y.any() else None,
    }
    if empty_now is not None:
        # Rows whose shelf is not empty yet: the pure "will it run out" question.
        ahead = ~np.asarray(empty_now, dtype=bool)
        out["pr_auc_not_yet_empty"] = average_precision(y[ahead], probs[ahead])
    alerts = hysteresis_alerts(store, facing, t, probs, threshold, group=group)
    m = match_alerts(alerts, stockouts, horizon_ms)
    out.update({
        "alerts": m["alerts"],
        "true_alerts": m["true_alerts"],
        "stockouts": m["stockouts"],
        "stockouts_caught": m["caught"],
        "alert_precision": m["precision"],
        "stockouts_caught_late": m["caught_late"],
        "stockout_recall": m["recall"],
        "stockout_detected_recall": m["detected_recall"],
        "median_lead_min": m["median_lead_min"],
        "median_delay_min": m["median_delay_min"],
        "false_alerts_per_store_day": (m["alerts"] - m["true_alerts"]) / store_days if store_days else None,
    })
    e = match_episodes(hysteresis_episodes(store, facing, t, probs, threshold, group=group), stockouts, horizon_ms)
    out.update({
        "episode_precision": e["precision"],
        "episode_stockout_recall": e["recall"],
        "episode_detected_recall": e["detected_recall"],
        "episode_median_lead_min": e["median_lead_min"],
        "episode_false_per_store_day": (e["episodes"] - e["true_episodes"]) / store_days if store_days else None,
    })
    return out

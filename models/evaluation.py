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

# clear_level: the gateway's clear level for a raise threshold at its default clear_at (one rule
# for the gateway, the cloud and this replay), re-exported here for the replay's callers.
from models.alert_budget import AlertBudget, ForecastBudget, clear_level

__all__ = ["match_alerts", "forecast_outcomes", "hysteresis_alerts", "hysteresis_episodes", "match_episodes", "evaluate_scores",
           "evaluate_alert_kinds", "hysteresis_state", "clear_level", "budget_thresholds"]


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


def forecast_outcomes(
    alerts: Iterable[tuple[str, str, int]],
    intervals: Iterable[tuple[str, str, int, int | None]],
    horizon_ms: int,
) -> dict[str, int]:
    """What each forecast told, against the facings' empty intervals (the lake's
    ``gold.alert_outcomes.outcome`` judged on ground truth): ``warned_ahead``, the shelf held
    stock when it was raised and went empty within ``horizon_ms``; ``on_empty_shelf``, the
    shelf was already empty (right, but it warned of nothing: "empty in 0 min"); ``false``,
    neither. :func:`match_alerts` counts the first two alike as true alerts."""
    by_facing: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for store, facing, start, end in intervals:
        by_facing[(store, facing)].append((start, float("inf") if end is None else end))
    out = {"warned_ahead": 0, "on_empty_shelf": 0, "false": 0}
    for store, facing, t in alerts:
        ivs = by_facing.get((store, facing), ())
        if any(start <= t < end for start, end in ivs):
            out["on_empty_shelf"] += 1
        elif any(t < start <= t + horizon_ms for start, _ in ivs):
            out["warned_ahead"] += 1
        else:
            out["false"] += 1
    return out


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
    raised, cleared)``, ``cleared`` None when still raised at the facing's last row.
    ``raise_at`` may be one threshold per row (``clear_at`` then must be given or is half the
    lowest)."""
    per_row = np.ndim(raise_at) > 0  # a threshold per row (an alert budget's: evaluate_alert_kinds)
    clear_at = float(np.min(raise_at)) / 2 if clear_at is None else clear_at
    if clear_at > np.min(raise_at):
        raise ValueError(f"clear_at {clear_at} above raise_at {np.min(raise_at)}")
    n = len(t)
    if n == 0:
        return []
    if group is None:
        from models.replay import facing_groups

        _, group = facing_groups(store, facing)
    order = np.lexsort((np.asarray(t), group))
    k, p, tt = group[order], np.asarray(probs)[order], np.asarray(t)[order]
    ra = np.asarray(raise_at, dtype=np.float64)[order] if per_row else raise_at
    # Vectorized state machine: each row is a "raise" (+1), "clear" (-1) or no-op (0) signal;
    # the state before a row is the last non-zero signal of the same facing before it.
    signal = np.where(p >= ra, 1, np.where(p < clear_at, -1, 0))
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


# --------------------------------------------------------------------------------------------
# Two alert kinds, as the gateway raises them (edge.inference)
# --------------------------------------------------------------------------------------------

def _dead_band(raise_at: float) -> float:
    """A probability between the clear level and ``raise_at``: it neither raises nor clears."""
    return (raise_at + clear_level(raise_at)) / 2


def hysteresis_state(group: np.ndarray, t: np.ndarray, probs: np.ndarray, raise_at: float,
                     clear_at: float) -> np.ndarray:
    """Per row, whether its facing's alert is on after that row (rows in any order)."""
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((np.asarray(t), group))
    k, p = np.asarray(group)[order], np.asarray(probs)[order]
    signal = np.where(p >= raise_at, 1, np.where(p < clear_at, -1, 0))  # as hysteresis_episodes
    starts = np.r_[True, k[1:] != k[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    last = np.maximum.accumulate(np.where(signal != 0, np.arange(n), -1))
    on_sorted = (last >= group_start) & (signal[np.maximum(last, 0)] == 1)
    out = np.empty(n, dtype=bool)
    out[order] = on_sorted
    return out


def evaluate_alert_kinds(
    *,
    store: np.ndarray,
    facing: np.ndarray,
    t: np.ndarray,
    group: np.ndarray,
    forecast: np.ndarray,
    now: np.ndarray,
    forecast_at: float,
    now_at: float,
    stockouts: list[tuple[str, str, int, int | None]],
    no_sensor: set[tuple[str, str]],
    horizon_ms: int,
    store_days: float,
    intervals: list[tuple[str, str, int, int | None]] | None = None,
    ready: np.ndarray | None = None,
    now_ready: np.ndarray | None = None,
    budget: AlertBudget | None = None,
) -> dict:
    """Replay both alert kinds as a gateway raises them and judge each by its own promise.

    ``empty_now`` alerts come from ``now`` (hysteresis at ``now_at``); ``empty_within_h`` from
    ``forecast`` (at ``forecast_at``), never raised on a facing whose ``empty_now`` alert is on,
    nor on a row whose ``ready`` is False (``models.scoring.forecast_ready`` of its features:
    the gateway's rule; None: every row may raise). ``empty_now`` is not raised on a row whose
    ``now_ready`` is False (``models.scoring.empty_now_ready``; None: every row may raise).
    A forecast is true when the shelf is empty at some moment within H after it is raised; a
    detection when the shelf is empty at the instant it is raised. A stock-out is *caught
    ahead* when a forecast was raised within H before it started (strict: an alert raised
    earlier and still on does not count); its lead is the time from that first raise.
    ``intervals`` (default ``stockouts``): every empty interval of the facings, also those that
    began before the evaluated span, to judge whether an alert's shelf was empty.
    ``budget`` (``models.alert_budget``; None or off: none): each store's forecast threshold
    rises above ``forecast_at`` as the gateway's does under its alert budget
    (:func:`budget_thresholds`); ``forecast_threshold_raised_share`` says on what share of the
    rows it did.
    """
    t = np.asarray(t, dtype=np.int64)
    intervals = stockouts if intervals is None else intervals
    if now_ready is not None:  # a row that may not raise empty_now may keep one on: the dead band
        now = np.where(np.asarray(now_ready, dtype=bool), now, np.minimum(now, _dead_band(now_at)))
    now_on = hysteresis_state(group, t, now, now_at, clear_level(now_at))
    # While the detection is on (or the facing is not ready), the forecast may clear but not
    # raise: hold it in the dead band.
    hold = now_on if ready is None else now_on | ~np.asarray(ready, dtype=bool)
    fc = np.where(hold, np.minimum(forecast, _dead_band(forecast_at)), forecast)
    fc_at: float | np.ndarray = forecast_at
    if budget is not None and budget.on:
        fc_at = budget_thresholds(store, group, t, fc, forecast_at, clear_level(forecast_at), budget)
    fc_alerts = hysteresis_alerts(store, facing, t, fc, fc_at, clear_level(forecast_at), group=group)
    now_alerts = hysteresis_alerts(store, facing, t, now, now_at, clear_level(now_at), group=group)
    f = match_alerts(fc_alerts, stockouts, horizon_ms)
    f_true = match_alerts(fc_alerts, intervals, horizon_ms)
    d = match_alerts(now_alerts, intervals, 0)
    # Detection on facings without a sensor: the till's silence is the only evidence.
    ns_alerts = [a for a in now_alerts if (a[0], a[1]) in no_sensor]
    ns_outs = [s for s in stockouts if (s[0], s[1]) in no_sensor]
    ns = match_alerts(ns_alerts, [s for s in intervals if (s[0], s[1]) in no_sensor], 0)
    ns_found = match_alerts(ns_alerts, ns_outs, 0)
    delays = _delays(ns_alerts, ns_outs)
    ns_delay = median(delays) if delays else None
    false_fc = f_true["alerts"] - f_true["true_alerts"]
    false_now = d["alerts"] - d["true_alerts"]
    return {
        "forecast_alerts": f["alerts"],
        "forecast_precision": f_true["precision"],
        "forecast_caught_share": f["recall"],
        "forecast_strict_median_lead_min": f["median_lead_min"],
        "empty_now_alerts": d["alerts"],
        "empty_now_precision": d["precision"],
        "empty_now_no_sensor_alerts": ns["alerts"],
        "empty_now_no_sensor_precision": ns["precision"],
        "empty_now_no_sensor_detected_share": ns_found["detected_recall"],
        "empty_now_median_delay_min": ns_delay,
        "stockouts": f["stockouts"],
        "false_forecasts_per_store_day": false_fc / store_days if store_days else None,
        "false_empty_now_per_store_day": false_now / store_days if store_days else None,
        "false_alerts_per_store_day": (false_fc + false_now) / store_days if store_days else None,
        "forecast_threshold_raised_share": float(np.mean(np.asarray(fc_at) > forecast_at)) if len(t) else 0.0,
    }


def budget_thresholds(store: np.ndarray, group: np.ndarray, t: np.ndarray, forecast: np.ndarray,
                      raise_at: float, clear_at: float, budget: AlertBudget) -> np.ndarray:
    """Each row's store forecast threshold under ``budget``: per store, its rows in time order,
    cycle by cycle (rows of one instant), through ``models.alert_budget.ForecastBudget`` as the
    gateway steps it: the threshold read before the cycle's scores are folded in. ``forecast``:
    the scores the forecast hysteresis sees (blocked rows already held below ``raise_at``)."""
    t = np.asarray(t, dtype=np.int64)
    p = np.asarray(forecast, dtype=np.float64)
    out = np.full(len(t), float(raise_at))
    stores = np.asarray(store).astype(str)
    names, store_idx = np.unique(stores, return_inverse=True)
    order = np.lexsort((t, store_idx.reshape(-1)))
    s_sorted = store_idx.reshape(-1)[order]
    bounds = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = order[a:b]
        _, local = np.unique(np.asarray(group)[rows], return_inverse=True)
        local = local.reshape(-1)
        fb = ForecastBudget(int(local.max()) + 1, raise_at, clear_at, budget)
        tt = t[rows]
        ticks = np.flatnonzero(np.r_[True, tt[1:] != tt[:-1], True])
        for c, d in zip(ticks[:-1], ticks[1:]):
            r = rows[c:d]
            out[r] = fb.threshold(int(tt[c]))
            fb.observe(int(tt[c]), p[r], idx=local[c:d])
    return out


def _delays(alerts, stockouts) -> list[float]:
    """Minutes from each stock-out's start to the first alert raised while it lasted."""
    by: dict[tuple[str, str], list[int]] = defaultdict(list)
    for s, f, t in alerts:
        by[(s, f)].append(t)
    for v in by.values():
        v.sort()
    out = []
    for s, f, start, end in stockouts:
        times = by.get((s, f), ())
        i = bisect.bisect_left(times, start)
        if i < len(times) and (end is None or times[i] < end):
            out.append((times[i] - start) / 60_000)
    return out

"""Alert quality against ground truth: precision, recall and lead time.

An alert (store, facing, t) is *true* when the facing's shelf goes empty within the horizon
after it, or is empty at t. A stock-out (store, facing, start, end) is *caught* when an alert
was raised in [start - horizon, start]; its lead time is start minus the first such alert.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from statistics import median
from typing import Iterable

__all__ = ["match_alerts"]


def match_alerts(
    alerts: Iterable[tuple[str, str, int]],
    stockouts: Iterable[tuple[str, str, int, int | None]],
    horizon_ms: int,
) -> dict:
    """Compare raised alerts with ground-truth stock-out intervals.

    Returns ``{"alerts", "stockouts", "true_alerts", "caught", "precision", "recall",
    "median_lead_min"}``; precision / recall are None when undefined (no alerts / no stock-outs).
    """
    by_facing: dict[tuple[str, str], list[tuple[int, int | None]]] = defaultdict(list)
    n_stockouts = 0
    for store, facing, start, end in stockouts:
        by_facing[(store, facing)].append((start, end))
        n_stockouts += 1
    for intervals in by_facing.values():
        intervals.sort()
    alerts_by_facing: dict[tuple[str, str], list[int]] = defaultdict(list)
    n_alerts = true_alerts = 0
    for store, facing, t in alerts:
        n_alerts += 1
        alerts_by_facing[(store, facing)].append(t)
        for start, end in by_facing.get((store, facing), ()):
            if start <= t + horizon_ms and (end is None or end > t):
                true_alerts += 1
                break
    caught = 0
    leads: list[float] = []
    for key, intervals in by_facing.items():
        times = sorted(alerts_by_facing.get(key, ()))
        for start, _end in intervals:
            i = bisect.bisect_left(times, start - horizon_ms)
            if i < len(times) and times[i] <= start:
                caught += 1
                leads.append((start - times[i]) / 60_000)
    return {
        "alerts": n_alerts,
        "stockouts": n_stockouts,
        "true_alerts": true_alerts,
        "caught": caught,
        "precision": true_alerts / n_alerts if n_alerts else None,
        "recall": caught / n_stockouts if n_stockouts else None,
        "median_lead_min": median(leads) if leads else None,
    }

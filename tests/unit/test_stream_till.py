"""till_silent: a lane is flagged once it missed enough baskets that the other lanes took."""

from __future__ import annotations

import numpy as np

from cloud.stream.detectors import DetectorConfig, StoreWatch
from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS

CFG = DetectorConfig()


def _run(down_from: int | None, down_to: int | None, *, rate_per_h: float = 40.0, hours: float = 50.0,
         open_hours: tuple[int, int] = (0, 24)) -> tuple[list[dict], list[int]]:
    """4 lanes taking baskets at random (``rate_per_h`` for the store) in opening hours; lane r2
    down in [down_from, down_to) (its shoppers pay elsewhere). Returns anomaly rows and when each
    basket r2 would have had fell in its downtime."""
    rng = np.random.default_rng(5)
    w = StoreWatch("s1")
    t0 = 10 * DAY_MS
    w.start(t0, None)
    rows: list[dict] = []
    missed: list[int] = []
    t, next_tick, seq = t0, t0 + 5 * MINUTE_MS, 0
    while t < t0 + hours * HOUR_MS:
        t += int(rng.exponential(HOUR_MS / rate_per_h))
        while next_tick <= t:
            rows += w.tick(next_tick, CFG)
            next_tick += 5 * MINUTE_MS
        if not open_hours[0] <= (t % DAY_MS) // HOUR_MS < open_hours[1]:
            continue
        lane = int(rng.integers(0, 4))
        if lane == 2 and down_from is not None and down_from <= t - t0 < down_to:
            missed.append(t)
            lane = 3
        seq += 1
        w.observe("pos.line", f"pos-s1-r{lane}", t, {"txn_id": seq, "sku": "a", "qty": 1, "kind": "sale"}, CFG)
        w.observe("shelf.reading", "shelf-1", t, {"facing_id": "f1", "sku": "b", "units_est": 5}, CFG)
    return [r for r in rows if r["kind"] == "till_silent"], missed


def test_a_lane_down_is_flagged_once_it_missed_enough_baskets():
    rows, missed = _run(44 * HOUR_MS, 47 * HOUR_MS)  # 20:00-23:00 on the second day
    assert [r["subject"] for r in rows] == ["pos-s1-r2"]
    r = rows[0]
    assert r["score"] >= CFG.till_expected
    # Found inside the failure, after the lane missed about till_expected baskets (not before).
    at = sum(1 for ts in missed if ts <= r["first_seen"])
    assert 44 * HOUR_MS <= r["first_seen"] - 10 * DAY_MS < 47 * HOUR_MS
    assert CFG.till_expected * 0.5 <= at <= CFG.till_expected * 2.5


def test_a_short_lane_failure_and_chance_gaps_raise_nothing():
    rows, missed = _run(44 * HOUR_MS, 44 * HOUR_MS + 30 * MINUTE_MS)
    assert rows == [] and 1 <= len(missed) < CFG.till_expected


def test_a_lane_usually_closed_at_that_hour_is_not_flagged():
    # The store is closed 22:00-06:00: nobody sells then, so no lane is "silent while others sell".
    rows, _ = _run(None, None, hours=72, open_hours=(6, 22))
    assert rows == []

"""demand_band: a spike shows in the early part of the day; a share that rises late does not count."""

from __future__ import annotations

from cloud.stream.detectors import DetectorConfig, StoreWatch
from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS

CFG = DetectorConfig()
T0 = 20 * DAY_MS
OPEN, CLOSE = 7, 22


def _sales(day: int, sku: str, per_day: float, start_h: float = OPEN, end_h: float = CLOSE,
           phase: float = 0.5) -> list[tuple[int, str]]:
    """``per_day`` units of ``sku`` spread evenly over [start_h, end_h) of ``day``, at the rate of a
    full opening day (a shorter stretch sells its share of that), shifted by ``phase`` of a step."""
    n = int(round(per_day * (end_h - start_h) / (CLOSE - OPEN)))
    step = (end_h - start_h) * HOUR_MS / max(n, 1)
    return [(T0 + day * DAY_MS + int(start_h * HOUR_MS + (k + phase) * step), sku) for k in range(n)]


def _run(day2: list[tuple[int, str]]) -> list[dict]:
    """A store selling 200 units a day (96 SKUs at 2, 'x' and 'y' at 4) for two days, then
    ``day2`` on top of the background on the third."""
    sales: list[tuple[int, str]] = []
    for day in range(3):
        for k in range(96):
            sales += _sales(day, f"b{k:02d}", 2.0, phase=k / 96)
        if day < 2:
            sales += _sales(day, "x", 4.0) + _sales(day, "y", 4.0)
    sales = sorted(sales + day2)
    w = StoreWatch("s1")
    w.start(T0, None)
    rows: list[dict] = []
    tick = T0 + 5 * MINUTE_MS
    for seq, (ts, sku) in enumerate(sales):
        while tick <= ts:
            rows += w.tick(tick, CFG)
            tick += 5 * MINUTE_MS
        w.observe("pos.line", f"pos-s1-r{seq % 3}", ts, {"txn_id": seq, "sku": sku, "qty": 1, "kind": "sale",
                                                          "price_cents": 100}, CFG)
    while tick <= T0 + 3 * DAY_MS:
        rows += w.tick(tick, CFG)
        tick += 5 * MINUTE_MS
    return [r for r in rows if r["kind"] == "demand_band"]


def test_a_spike_from_the_opening_is_flagged_in_the_morning():
    # 'x' sells 8 x its usual 4 a day from the opening on (and 'y' as usual).
    rows = _run(_sales(2, "x", 32.0) + _sales(2, "y", 4.0))
    assert [r["subject"] for r in rows] == ["x"]
    assert OPEN * HOUR_MS <= rows[0]["first_seen"] - T0 - 2 * DAY_MS < 15 * HOUR_MS  # the early part of the day
    assert rows[0]["score"] >= CFG.band_ratio


def test_a_share_that_rises_late_in_the_day_is_not_judged():
    # 'y' sells as usual until 16:00, then at 20 x (shoppers switching from a product that ran
    # empty): 34 units by the close against 4 usual. The rule that judged the whole day flagged it.
    rows = _run(_sales(2, "x", 4.0) + _sales(2, "y", 4.0, OPEN, 16) + _sales(2, "y", 80.0, 16, CLOSE))
    assert rows == []

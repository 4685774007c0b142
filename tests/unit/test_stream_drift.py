"""``sensor_drift`` counts sales against readings in event time, whatever order they arrive in.

A gateway drains its buffer by priority: POS lines and restocks go up before shelf readings, so
the cloud often sees a sensor's sales before the sensor's first reading - at the job's start, for
a new store or a new sensor. Those sales happened after that reading and must count against it
(QA, session 8: 3 h of sales and matching readings gave 2 ``sensor_drift`` rows, both false).
"""

from __future__ import annotations

from types import SimpleNamespace

from cloud.stream.detectors import DetectorConfig, StoreWatch
from firmware_sim.store import DEFAULT_START_MS
from gondola.clock import HOUR_MS, MINUTE_MS

T0 = DEFAULT_START_MS + 8 * HOUR_MS  # 08:00 UTC
CFG = DetectorConfig()
PLAN = [SimpleNamespace(sku="A", capacity=40), SimpleNamespace(sku="B", capacity=40)]


def _batch(start: int, hours: float, units0: float, bias=lambda t: 0.0) -> tuple[list[tuple], float]:
    """One gateway drain of ``hours`` from ``start``: a sale of A every 20 minutes, then (after all
    the POS lines, as the gateway sends them) A's readings every 10 minutes of the true units plus
    ``bias(t)``; B sells too and has no sensor. Returns the events in arrival order and A's units
    at the end."""
    sales, readings, units = [], [], units0
    for i, t in enumerate(range(start, start + int(hours * HOUR_MS), 10 * MINUTE_MS)):
        readings.append((t, "shelf.reading", "shelf-fA", {"facing_id": "fA", "sku": "A", "units_est": units + bias(t)}))
        if i % 2 == 1:
            units -= 1
            sales.append((t + MINUTE_MS, "pos.line", "pos-r01", {"txn_id": f"t{t}", "sku": "A", "qty": 1,
                                                                "kind": "sale", "price_cents": 100}))
            sales.append((t + 2 * MINUTE_MS, "pos.line", "pos-r01", {"txn_id": f"t{t}", "sku": "B", "qty": 1,
                                                                    "kind": "sale", "price_cents": 100}))
    return sales + readings, units


def _feed(watch: StoreWatch, events: list[tuple]) -> list[dict]:
    rows = []
    for ts, etype, device, data in events:
        rows += watch.observe(etype, device, ts, data, CFG)
    return [r for r in rows if r["kind"] == "sensor_drift"]


def _watch() -> StoreWatch:
    watch = StoreWatch("s1")
    watch.start(T0, PLAN)
    return watch


def test_sales_that_reach_the_job_before_a_sensors_first_reading_count_against_it():
    watch = _watch()
    events, units = _batch(T0, 3.0, 30.0)
    # The old code dropped A's 9 sales (no sensor yet) and flagged the honest cell's falling readings.
    assert _feed(watch, events) == []
    # The till agreed with each reading: re-anchored at the last one (the batch's last sale came after it).
    assert watch.sensors["fA"].anchor_units == units + 1

    # A cell that then reads 3 units high is still flagged, once.
    later, _ = _batch(T0 + 3 * HOUR_MS, 1.0, units, bias=lambda t: 3.0)
    rows = _feed(watch, later)
    assert [(r["subject"], r["score"]) for r in rows] == [("shelf-fA", 3.0)]


def test_a_restock_drained_before_the_first_reading_counts_in_event_time_too():
    watch = _watch()
    restock = (T0 + 25 * MINUTE_MS, "shelf.restock", "hh-1", {"facing_id": "fA", "sku": "A", "units_added": 6})
    readings = [(T0 + i * 10 * MINUTE_MS, "shelf.reading", "shelf-fA",
                 {"facing_id": "fA", "sku": "A", "units_est": 10.0 if i < 3 else 16.0}) for i in range(8)]
    b_sales = [(t - MINUTE_MS, "pos.line", "pos-r01", {"txn_id": f"t{t}", "sku": "B", "qty": 1, "kind": "sale",
                                                       "price_cents": 100}) for t, *_ in readings]  # the POS record is current
    assert _feed(watch, b_sales + [restock] + readings) == []
    assert watch.sensors["fA"].anchor_units == 16.0


def test_a_first_reading_older_than_the_sales_kept_anchors_nothing_and_the_state_stays_bounded():
    watch = _watch()
    # A 10-hour drain: the sales kept for sensors not heard from yet reach back 6 to 7 hours.
    events, units = _batch(T0, 10.0, 80.0)
    assert _feed(watch, events) == []
    cut = watch.pending_cut
    assert T0 + 10 * HOUR_MS - 8 * HOUR_MS < cut <= T0 + 10 * HOUR_MS - CFG.drift_pending_ms
    assert min(t for t, _ in watch.pending_sales["B"]) >= cut  # B (no sensor) keeps only the last hours
    s = watch.sensors["fA"]
    assert s.anchor_ts >= cut  # anchored at the first reading after the cut, not at 08:00
    later, _ = _batch(T0 + 10 * HOUR_MS, 1.0, units, bias=lambda t: -2.0)
    assert [r["score"] for r in _feed(watch, later)] == [2.0]

"""The stream job's batched paths give what the per-store / per-event paths give."""

from __future__ import annotations

import json

import numpy as np

from cloud.ingest.source import ReceivedMessage
from cloud.stream.pipeline import PartitionProcessor, PartitionState, StreamConfig
from cloud.stream.tables import STORE_HEALTH
from cloud.stream.windows import EventClock
from firmware_sim import StoreSim
from gondola.clock import HOUR_MS, MINUTE_MS
from gondola.contracts import encode_batch, parse_lines
from models.features import FEATURES, FeatureCacheGroup
from models.replay import StoreFeatures, planograms_from_rows

_SINCE_SALE = FEATURES.index("hours_since_sale")


def _fed_stores(n: int, hours: int) -> tuple[list[StoreFeatures], int]:
    stores, t = [], 0
    for i in range(n):
        sim = StoreSim(f"s09{i:02d}", skus=120, seed=9 + i)
        f = StoreFeatures(sim.store_id, planograms_from_rows(sim.planogram)[sim.store_id])
        t = sim.start_ms + hours * HOUR_MS
        for m in sim.run_until(t):
            if m.valid:
                f.apply(json.loads(m.payload))
        stores.append(f)
    return stores, t


def test_one_feature_pass_for_many_stores_equals_one_pass_per_store():
    stores, t = _fed_stores(3, 30)
    group = FeatureCacheGroup([s.cache for s in stores])
    sku = stores[1]._ordered[0].sku
    for k in range(3):  # the stores keep changing between passes: each writes through its views
        now = t + k * 15 * MINUTE_MS
        joint = group.matrices(now)
        alone = [s.matrix(now) for s in stores]
        assert [len(x) for x in joint] == [len(s.facing_ids) for s in stores] == [len(x) for x in alone]
        for a, b in zip(joint, alone):
            assert np.array_equal(a, b)
        if k:  # the sale below reached the joint pass through the second store's view
            assert joint[1][0, _SINCE_SALE] < 0.3
        stores[1].apply({"type": "pos.line", "ts": now + MINUTE_MS, "data": {"sku": sku, "qty": 2, "kind": "sale"}})


def test_parse_lines_parses_a_batch_at_once_and_marks_only_the_bad_lines():
    good = [json.dumps({"n": i, "s": "a,b}{"}) for i in range(5)]
    assert parse_lines(good) == [json.loads(x) for x in good]
    mixed = good[:2] + ['{"n": 2, broken}', "[1, 2]", '{"a": 1}, {"b": 2}'] + good[4:]
    out = parse_lines(mixed)
    assert out[:2] == [{"n": 0, "s": "a,b}{"}, {"n": 1, "s": "a,b}{"}]
    assert out[2] is None and out[3] == [1, 2] and out[4] is None and out[5] == {"n": 4, "s": "a,b}{"}
    assert parse_lines([]) == []


def test_hopping_health_windows_from_panes_count_each_event_in_every_window_that_holds_it():
    cfg = StreamConfig()
    proc = PartitionProcessor(PartitionState("0", EventClock(cfg.allowed_lateness_ms, cfg.max_skew_ms)), cfg,
                              scorer=None, planograms={}, source="t", wall_clock=lambda: 0)
    t0 = 1_000 * HOUR_MS
    events, seq = [], 0
    # One reading a minute from sensors d0..d2 (low battery) for an hour, a POS line every 7 minutes.
    for minute in range(60):
        ts = t0 + minute * MINUTE_MS
        seq += 1
        events.append({"type": "shelf.reading", "store_id": "s1", "device_id": f"d{minute % 3}", "seq": seq,
                       "ts": ts, "data": {"facing_id": "f1", "units_est": 3, "battery_pct": 10.0}})
        if minute % 7 == 0:
            seq += 1
            events.append({"type": "pos.line", "store_id": "s1", "device_id": "r1", "seq": seq, "ts": ts,
                           "data": {"sku": "x", "qty": 1, "txn_id": f"t{minute}"}})
    msgs = []
    for k in range(0, len(events), 10):
        b = encode_batch(events[k:k + 10], store_id="s1")
        msgs.append(ReceivedMessage("0", str(k), k, events[k]["ts"], b.properties, b.body))
    rows = {r["window_start"]: r for r in proc.process(msgs)[STORE_HEALTH.name]}
    watermark = t0 + 59 * MINUTE_MS - cfg.allowed_lateness_ms
    assert sorted(rows) == list(range(t0 - 10 * MINUTE_MS, watermark - 15 * MINUTE_MS + 1, 5 * MINUTE_MS))
    for s, r in rows.items():
        minutes = [m for m in range(60) if s <= t0 + m * MINUTE_MS < s + 15 * MINUTE_MS]
        assert r["readings"] == len(minutes) and r["sensors_reporting"] == min(3, len(minutes))
        assert r["sensors_low_battery"] == r["sensors_reporting"]
        assert r["pos_lines"] == sum(1 for m in minutes if m % 7 == 0)
        assert r["events"] == r["readings"] + r["pos_lines"]
        assert r["registers_reporting"] == (1 if r["pos_lines"] else 0)
    assert rows[t0 - 10 * MINUTE_MS]["readings"] == 5 and rows[t0]["readings"] == 15

"""Parity: the gateway's online features equal the cloud's features computed from silver.

The gateway path feeds each event to ``StoreFeatures.apply`` as it arrives and asks for the
feature matrix at each scoring cycle; the cloud path flattens the same events into per-type
silver tables (envelope columns + data fields, as ``cloud.lake`` stores them), shuffles the
rows, and replays them with ``features_from_silver``.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from gondola.clock import HOUR_MS, MINUTE_MS
from models._synthetic import synthetic_store
from models.features import FEATURES
from models.replay import StoreFeatures, features_from_silver, replay_features, sample_instants

_SILVER = {"pos.line": "silver.pos_line", "shelf.reading": "silver.shelf_reading", "shelf.restock": "silver.shelf_restock"}


def to_silver(events: list[dict]) -> dict[str, pa.Table]:
    rows: dict[str, list[dict]] = {}
    for ev in events:
        if ev["type"] not in _SILVER:
            continue
        flat = {k: v for k, v in ev.items() if k not in ("data", "type", "schema")}
        flat.update(ev["data"])
        flat["received_at"] = ev["ts"] + 250
        rows.setdefault(_SILVER[ev["type"]], []).append(flat)
    shuffled = {}
    for name, rs in rows.items():
        random.Random(7).shuffle(rs)
        shuffled[name] = pa.Table.from_pylist(rs)
    return shuffled


@pytest.fixture(scope="module")
def store():
    return synthetic_store("s042", facings=25, days=6, seed=3)


def gateway_features(store, instants: list[int]) -> np.ndarray:
    """What the gateway computes: apply events as they arrive, one matrix per cycle."""
    gw = StoreFeatures(store.store_id, store.facings)
    gw.start(store.start_ms)
    pending = iter(store.events)
    ev = next(pending, None)
    out = []
    for now in instants:
        while ev is not None and ev["ts"] <= now:
            gw.apply(ev)
            ev = next(pending, None)
        out.append(gw.matrix(now))
    return np.concatenate(out)


def test_cloud_features_from_silver_equal_gateway_features_for_the_same_events(store):
    instants = sample_instants(store.start_ms + 2 * 24 * HOUR_MS, store.end_ms, every_min=20)
    online = gateway_features(store, instants)
    planogram = [{"store_id": store.store_id, "facing_id": f.facing_id, "sku": f.sku, "capacity": f.capacity}
                 for f in store.facings]
    offline = features_from_silver(to_silver(store.events), pa.Table.from_pylist(planogram), instants,
                                   start_ms=store.start_ms)
    assert offline.X.shape == online.shape == (len(instants) * len(store.facings), len(FEATURES))
    # Same code, same event order: equal up to float addition order of same-instant events.
    np.testing.assert_allclose(offline.X, online, rtol=1e-6, atol=1e-6)
    # And the features are not trivially equal: sales, readings and restocks all moved them.
    assert offline.X[:, FEATURES.index("rate_24h")].max() > 0
    assert offline.X[:, FEATURES.index("has_sensor")].sum() > 0
    assert (offline.X[:, FEATURES.index("hours_since_restock")] < 168).any()


def test_events_of_unknown_facings_and_skus_are_counted_not_fatal(store):
    gw = StoreFeatures(store.store_id, store.facings)
    gw.apply({"type": "pos.line", "ts": store.start_ms, "store_id": store.store_id,
              "data": {"sku": "nope", "qty": 1, "price_cents": 100}})
    gw.apply({"type": "shelf.reading", "ts": store.start_ms, "facing_id": "ghost", "units_est": 3})
    gw.apply({"type": "edge.health", "ts": store.start_ms})
    assert gw.unknown == 2 and gw.applied == 0


def test_returns_and_voids_put_units_back_on_the_estimate(store):
    f = store.facings[0]
    gw = StoreFeatures(store.store_id, [f])
    t = store.start_ms
    gw.apply({"type": "shelf.restock", "ts": t, "data": {"facing_id": f.facing_id, "units_added": f.capacity}})
    gw.apply({"type": "pos.line", "ts": t + MINUTE_MS, "data": {"sku": f.sku, "qty": 2, "price_cents": 100}})
    gw.apply({"type": "pos.line", "ts": t + 2 * MINUTE_MS, "data": {"sku": f.sku, "qty": 1, "price_cents": 100, "kind": "void"}})
    assert gw.matrix(t + 3 * MINUTE_MS)[0, FEATURES.index("units_est")] == f.capacity - 1


def test_replay_is_independent_of_the_input_order_of_events(store):
    instants = sample_instants(store.start_ms + 24 * HOUR_MS, store.start_ms + 3 * 24 * HOUR_MS, every_min=60)
    a = replay_features(store.events, {store.store_id: store.facings}, instants)
    shuffled = list(store.events)
    random.Random(1).shuffle(shuffled)
    b = replay_features(shuffled, {store.store_id: store.facings}, instants)
    np.testing.assert_array_equal(a.X, b.X)
    assert list(a.facing[: len(store.facings)]) == [f.facing_id for f in store.facings]

"""models.batch_replay (the lake's lock-step replay) against StoreFeatures (the gateway's, event
by event): every feature and every state field bit for bit, on adversarial histories."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from models.batch_replay import READING, RESTOCK, SALE, StoreEvents, replay_stores
from models.features import pos_line_qty
from models.replay import Facing, StoreFeatures

H = 3_600_000
T0 = 1_760_000_000_000 - 1_760_000_000_000 % (24 * H)


def _planogram(rng, n_facings: int) -> list[Facing]:
    facings = []
    for i in range(n_facings):
        # a few SKUs held on 2-3 facings (a POS line is split over them), capacity 0 now and then
        sku = f"S{i // 3}" if i < 9 else f"S{i}"
        facings.append(Facing(f"F{i:02d}", sku, int(rng.choice([0, 4, 12, 30])) if i % 7 == 3 else int(rng.integers(5, 40)),
                              bool(rng.random() < 0.5)))
    return sorted(facings, key=lambda f: f.facing_id)


def _history(rng, facings: list[Facing], n_events: int, *, span_h: float, gaps: bool, creep: bool = False) -> list[tuple]:
    """Events as (kind, ts, key, value, extra, kind_text or a reading's weight_g): sales (voids, returns, zero and fractional
    quantities, missing and odd prices), readings (stuck values, jumps, drift, zeros), restocks,
    unknown facings and SKUs, ties in time. ``creep``: most restocks are read at once a few units
    short of capacity (a load cell's crept zero, ``FacingState.zero_creep``)."""
    capacity = {f.facing_id: f.capacity for f in facings}
    crept = {f: int(rng.choice([0, 1, 1, 2])) for f in list(capacity) + ["F99"]}
    skus = sorted({f.sku for f in facings}) + ["UNKNOWN"]
    fids = [f.facing_id for f in facings] + ["F99"]
    ts = T0 + np.sort(rng.integers(0, int(span_h * H), n_events))
    if gaps:  # a silence of 500 days in the middle: the profiles rebase
        ts[n_events // 2:] += 500 * 24 * H
    ts[5:25:3] = ts[5]  # ties
    ts = np.sort(ts)
    out = []
    stuck_value = {}
    ts_list = ts.tolist() + [None]
    for k, t in enumerate(ts_list[:-1]):
        r = rng.random()
        if r < 0.45:
            kind = rng.choice(["sale", "sale", "sale", "void", "return", None])
            qty = float(rng.choice([1, 1, 2, 3, 0, 0.5, -1, 7]))
            price = rng.choice([None, 0, -5, 199, 250, 89.5])
            out.append((SALE, t, str(rng.choice(skus)), qty, price, kind))
        elif r < 0.9:
            fid = str(rng.choice(fids))
            if rng.random() < 0.4:  # a sensor repeating its value (heartbeat, or stuck)
                u = stuck_value.setdefault(fid, float(rng.integers(0, 8)))
            else:
                u = float(rng.choice([0, 0, 1, 2, 5, 9, 20, 35, 60]))
                stuck_value[fid] = u
            # the load cell's grams (unknown now and then; well under empty now and then: drift)
            weight = None if rng.random() < 0.2 else float(u * 150.0 + rng.normal(0.0, 60.0) - 400.0 * (rng.random() < 0.15))
            if weight is not None and rng.random() < 0.03:  # grams in another scale (a cell replaced, another firmware)
                weight *= float(rng.choice([1000.0, -1000.0, 1e300]))
            out.append((READING, t, fid, u, float(rng.integers(0, 101)), weight))
        else:
            fid = str(rng.choice(fids))
            refill = creep and rng.random() < 0.7 and ts_list[k + 1] != t + 1 and ts_list[k + 1] != t
            if refill:  # read before and 1 ms after, short of capacity: the crept zero
                out.append((READING, t, fid, float(rng.integers(0, 3)), 50.0, float(rng.normal(0.0, 60.0))))
            out.append((RESTOCK, t + refill, fid, float(rng.choice([0, 1, 6, 12, 40])), None, None))
            if refill:
                u = float(max(0, capacity.get(fid, 10) - crept[fid] - int(rng.random() < 0.2)))
                out.append((READING, t + 1, fid, u, 50.0, None if rng.random() < 0.1 else float(u * 150.0 + rng.normal(0.0, 60.0))))
    return out


def _online(facings, history, instants, snapshots, restore=None):
    """The gateway's way: StoreFeatures, one event at a time, sampled between events."""
    store = StoreFeatures("s", facings)
    if restore is not None:
        for fid, st in store.states.items():
            for k, v in vars(restore[fid]).items():
                setattr(st, k, copy.deepcopy(v))
            store.cache.mark(st)
    points = sorted([(d, 0) for d in snapshots] + [(t, 1) for t in instants])
    X, states, i = [], [], 0
    for t, kind in points:
        while i < len(history) and (history[i][1] <= t if kind else history[i][1] < t):
            k, ts, key, value, extra, text = history[i]
            if k == SALE:
                store.sale(ts, key, value, text if text is not None else "sale", extra)
            elif k == READING:
                store.reading(ts, key, value, extra, text)
            else:
                store.restock(ts, key, value)
            i += 1
        if kind:
            X.append(store.matrix(t))
        else:
            states.append([copy.deepcopy(vars(store.states[f])) for f in store.facing_ids])
    return np.concatenate(X) if X else np.zeros((0, 0), np.float32), states, store


def _batch_input(facings, history, instants, snapshots, restore=None) -> StoreEvents:
    store = StoreFeatures("s", facings)
    if restore is not None:
        for fid, st in store.states.items():
            for k, v in vars(restore[fid]).items():
                setattr(st, k, copy.deepcopy(v))
    kinds = np.array([h[0] for h in history], dtype=np.int8)
    value, returned = [], []
    for k, _ts, _key, v, _extra, text in history:
        if k == SALE:
            q, ret = pos_line_qty(v, text if text is not None else "sale")
            value.append(q)
            returned.append(ret)
        else:
            value.append(v)
            returned.append(False)
    extra = [math.nan if h[4] is None else float(h[4]) for h in history]
    weight = [h[5] if h[0] == READING and h[5] is not None else math.nan for h in history]
    return StoreEvents(states=store._ordered, kind=kinds, ts=np.array([h[1] for h in history], dtype=np.int64),
                       key=np.array([h[2] for h in history], dtype=object), value=np.array(value, dtype=np.float64),
                       extra=np.array(extra), returned=np.array(returned), instants=list(instants),
                       snapshots=list(snapshots), weight=np.array(weight, dtype=np.float64))


def _same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, np.ndarray):
            assert np.array_equal(va, vb), k
            assert va.tobytes() == np.asarray(vb, dtype=np.float64).tobytes(), k
        else:
            assert type(va) is type(vb) and va == vb or (va != va and vb != vb), (k, va, vb)
            if isinstance(va, float):
                assert math.copysign(1, va) == math.copysign(1, vb), (k, va, vb)


@pytest.mark.parametrize("seed", range(6))
def test_the_lock_step_replay_equals_the_gateways_replay_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    stores, expected = [], []
    for s in range(3):
        facings = _planogram(rng, int(rng.integers(4, 16)))
        history = _history(rng, facings, int(rng.integers(50, 600)), span_h=float(rng.choice([6, 48, 400])),
                           gaps=(seed + s) % 3 == 0, creep=(seed + s) % 2 == 1)
        lo, hi = history[0][1] - H, history[-1][1] + 2 * H
        instants = sorted({int(t) for t in rng.integers(lo, hi, 12)} | {history[3][1], history[7][1], hi})
        snapshots = sorted({int(t) for t in rng.integers(lo, hi, 4)} | {history[5][1], hi})
        restore = None
        if s == 2:  # a restored snapshot: the state of another history's end
            _, _, before = _online(facings, _history(rng, facings, 80, span_h=30, gaps=False), [], [])
            restore = before.states
        stores.append(_batch_input(facings, history, instants, snapshots, restore))
        expected.append(_online(facings, history, instants, snapshots, restore))
    got = replay_stores(stores)
    for (X, states), (X0, states0, _) in zip(got, expected):
        assert X.dtype == np.float32 and X.shape == X0.shape
        assert X.tobytes() == X0.tobytes()
        assert len(states) == len(states0)
        for snap, snap0 in zip(states, states0):
            for a, b in zip(snap, snap0):
                _same_state(a, b)

"""cloud.lake.labels.evidence_labels (every facing at once) against a simple per-facing reference
(the rules of the module docstring, one facing at a time, as the lake computed them before the
vectorized version): equal on random stores with ties, shared SKUs, nulls, unknown facings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cloud.lake.labels import EVIDENCE_MS, LABEL_SOURCES, RESTOCK_SLACK_MS, SENSOR_SILENCE_MS, evidence_labels
from models.features import pos_line_qty
from models.replay import Facing

H = 3_600_000
DAY = 1_767_571_200_000  # 2026-01-05 00:00 UTC
_INF = np.iinfo(np.int64).max // 4


# ---- the reference: one facing at a time, plain Python over sorted lists ----------------------

def _rows(table: pa.Table | None, cols) -> list[tuple]:
    if table is None or table.num_rows == 0 or not set(cols) <= set(table.column_names):
        return []
    return list(zip(*(table[c].to_pylist() for c in cols)))


def _by_facing(rows):
    out = {}
    for facing, *rest in rows:
        if facing is not None:
            out.setdefault(str(facing), []).append(tuple(rest))
    return out


def _sensor_watched(t, readings, horizon_ms):
    if len(readings) == 0:
        return np.zeros(len(t), bool)
    r = np.sort(readings)
    long_gap = np.r_[np.diff(r) > SENSOR_SILENCE_MS, False].astype(np.int64)
    gaps_before = np.r_[0, np.cumsum(long_gap)]
    lo = np.searchsorted(r, t, side="right") - 1
    hi = np.searchsorted(r, t + horizon_ms, side="left")
    ok = (lo >= 0) & (hi < len(r))
    lo_c, hi_c = np.clip(lo, 0, len(r) - 1), np.clip(hi, 0, len(r) - 1)
    return ok & (gaps_before[hi_c] - gaps_before[lo_c] == 0)


def _ledger(restocks, checks, lines):
    """A facing's ledger, sorted as (ts, is_sale, delta): restocks and restock checks in, till lines out."""
    events = [(int(ts), 0, float(added)) for ts, added in restocks if (added or 0) > 0]
    events += [(int(ts), 0, float(2 ** 40)) for ts, outcome in checks if outcome == "restocked"]
    events += [(int(ts), 1, -float(q)) for ts, q in lines]
    events.sort()
    c, out = 0.0, []
    for ts, is_sale, delta in events:
        c += delta
        out.append((ts, is_sale, delta, c))
    return out


def _balance(ledger, x):
    return ([c for ts, _, _, c in ledger if ts <= x] or [0.0])[-1]


def _ledger_proofs(ledger, capacity):
    proofs = []
    for i, (ts, is_sale, delta, c) in enumerate(ledger):
        if not (is_sale and delta < 0 and capacity > 0):
            continue
        most = max([_balance(ledger, ts - EVIDENCE_MS)] + [cj for tj, _, _, cj in ledger[:i + 1] if tj > ts - EVIDENCE_MS])
        if capacity + c - most > 0:
            continue
        if i + 1 < len(ledger) and ledger[i + 1][0] - ts < EVIDENCE_MS and \
                (ledger[i + 1][1] or ledger[i + 1][0] - ts <= RESTOCK_SLACK_MS):
            continue  # the till sells again before a restock, or a restock follows at once
        proofs.append((ts + 1, LABEL_SOURCES.index("ledger")))
    return proofs


def _stocked(ledger, x, until):
    later = [c for ts, _, _, c in ledger if x < ts <= until]
    return bool(later) and _balance(ledger, x) - min(later) > 0


def _facing_evidence(t, horizon_ms, restocks, capacity, scans, checks, sales, lines=None):
    n = len(t)
    label, now, source = np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    b = np.array(sorted([int(ts) for ts, added in restocks if (added or 0) > 0]
                        + [int(ts) for ts, outcome in checks if outcome == "restocked"]), np.int64)
    seen = [(int(ts), LABEL_SOURCES.index("shelf_check")) for ts, outcome in checks if outcome == "was_fine"]
    if sales is not None:
        seen += [(int(ts), LABEL_SOURCES.index("till")) for ts in sales.tolist()]
    seen.sort()
    s_ts = np.array([s for s, _ in seen], np.int64)
    s_src = np.array([k for _, k in seen], np.int64)
    proofs = [(int(ts), LABEL_SOURCES.index("gap_scan")) for (ts,) in scans]
    proofs += [(int(ts) - 1, LABEL_SOURCES.index("restock")) for ts, added in restocks
               if capacity > 0 and (added or 0) >= capacity]
    ledger = _ledger(restocks, checks, lines) if lines is not None else []
    proofs += _ledger_proofs(ledger, capacity)
    proofs.sort()
    if len(s_ts):
        limit = np.r_[b, _INF][np.searchsorted(b, t, side="right")]
        last = np.searchsorted(s_ts, limit, side="left") - 1
        has = last >= 0
        e = np.where(has, s_ts[np.maximum(last, 0)], -_INF)
        neg = has & (e >= t + horizon_ms) & (e <= t + EVIDENCE_MS)
        label[neg] = 0
        source[neg] = s_src[np.maximum(last, 0)][neg]
        now[has & (e >= t)] = 0
    if ledger:
        for i in np.flatnonzero(label < 0).tolist():
            ti = int(t[i])
            points = [int(r) - 1 for r in b if ti < r <= ti + horizon_ms] + [ti + horizon_ms]
            if all(_stocked(ledger, x, ti + EVIDENCE_MS) for x in points):
                label[i], source[i] = 0, LABEL_SOURCES.index("ledger")
                now[i] = 0 if now[i] < 0 else now[i]
    for p, src in proofs:
        end = min(b[b > p][:1].tolist() + s_ts[s_ts > p][:1].tolist() + [p + EVIDENCE_MS])
        start = p
        if sales is not None:
            before = s_ts[(s_ts < p) & (s_src == LABEL_SOURCES.index("till"))]
            if len(before) and before[-1] >= p - EVIDENCE_MS and not ((b > before[-1]) & (b <= p)).any():
                start = int(before[-1]) + 1
        hit = (start <= t + horizon_ms) & (end > t)
        label[hit] = 1
        source[hit] = src
        now[(start <= t) & (t < end)] = 1
    return label, now, source


def _reference(facing, t, sensor_label, sensor_now, plan, events, horizon_ms):
    n = len(t)
    label, now, source, staff = (np.full(n, -1, np.int64) for _ in range(4))
    readings = _by_facing(_rows(events.get("readings"), ("facing_id", "ts", "units_est")))
    restocks = _by_facing(_rows(events.get("restocks"), ("facing_id", "ts", "units_added")))
    scans = _by_facing(_rows(events.get("gaps"), ("facing_id", "ts")))
    checks = _by_facing(_rows(events.get("checks"), ("facing_id", "ts", "outcome")))
    facings_of_sku = {}
    for f in plan:
        facings_of_sku[f.sku] = facings_of_sku.get(f.sku, 0) + 1
    sales, lines = {}, {}
    for sku, ts, qty, kind in _rows(events.get("pos"), ("sku", "ts", "qty", "kind")):
        if (kind or "sale") == "sale" and (qty or 0) > 0:
            sales.setdefault(str(sku), []).append(int(ts))
        if (kind or "sale") in ("sale", "void"):
            # signed units as the gateway signs them (a void gives back, whichever sign it was written with)
            signed = 0.0 if qty is None or qty != qty else pos_line_qty(qty, kind or "sale")[0]
            lines.setdefault(str(sku), []).append((int(ts), signed))
    spec = {f.facing_id: f for f in plan}
    for fid in sorted(set(facing.astype(str).tolist())):
        idx = np.flatnonzero(facing.astype(str) == fid)
        f = spec.get(fid)
        tt = t[idx].astype(np.int64)
        own_sales = own_lines = None
        if f is not None and facings_of_sku.get(f.sku) == 1:
            own_sales = np.sort(np.array(sales.get(f.sku, []), np.int64))
            own_lines = lines.get(f.sku, [])
        lab, nw, src = _facing_evidence(tt, horizon_ms, restocks.get(fid, []), int(f.capacity) if f else 0,
                                        scans.get(fid, []), checks.get(fid, []), own_sales, own_lines)
        staff[idx] = lab
        own = readings.get(fid, [])
        watched = _sensor_watched(tt, np.array([r[0] for r in own], np.int64), horizon_ms)
        zeros = np.sort(np.array([r[0] for r in own if r[1] is not None and r[1] <= 0], np.int64))
        last_zero = np.r_[-_INF, zeros][np.searchsorted(zeros, tt + horizon_ms, side="right")]
        watched |= (sensor_label[idx] > 0) & (last_zero > tt - SENSOR_SILENCE_MS)
        lab[watched] = sensor_label[idx][watched]
        nw[watched] = sensor_now[idx][watched]
        src[watched] = LABEL_SOURCES.index("sensor")
        label[idx], now[idx], source[idx] = lab, nw, src
    names = np.array(list(LABEL_SOURCES) + [None], dtype=object)
    return label, now, names[source], staff


# ---- random stores ------------------------------------------------------------------------------

def _store(rng):
    n_f = int(rng.integers(1, 9))
    # SKUs shared by two facings now and then (their sales prove nothing), capacity 0 now and then
    plan = [Facing(f"f{i}", f"k{i // 2 if rng.random() < 0.4 else i}", int(rng.choice([0, 3, 10])), bool(rng.random() < 0.5))
            for i in range(n_f)]
    fids = [f.facing_id for f in plan] + ["f_unknown", None]
    skus = sorted({f.sku for f in plan}) + ["k_unknown", None]
    span = int(rng.choice([6, 30, 80])) * H

    grid = int(rng.choice([15 * 60_000, H, 5 * H]))

    def ts(k):  # on a grid, so events tie with each other, with rows and with the rules' bounds (hours)
        return (DAY + rng.integers(0, span // grid, k) * grid).astype(np.int64)

    def pick(values, k):
        return [values[i] for i in rng.integers(0, len(values), k)]

    dense = float(rng.choice([0.1, 0.3, 1.0]))  # sparse stores too: evidence far apart, windows at their bounds

    def n(lo, hi):
        return int(rng.integers(lo, max(lo + 1, int(hi * dense))))
    k = n(0, 60)
    readings = pa.table({"facing_id": pick(fids, k), "ts": ts(k),
                         "units_est": pa.array(pick([0, 0, 1, 4, 9, None, -1], k), pa.int64())})
    k = n(0, 15)
    restocks = pa.table({"facing_id": pick(fids, k), "ts": ts(k),
                         "units_added": pa.array(pick([0, 1, 3, 10, 12, None], k), pa.int64())})
    k = n(0, 10)
    gaps = pa.table({"facing_id": pick(fids, k), "ts": ts(k)})
    k = n(0, 15)
    checks = pa.table({"facing_id": pick(fids, k), "ts": ts(k),
                       "outcome": pick(["was_fine", "restocked", "no_stock", None], k)})
    k = n(0, 60)
    pos = pa.table({"sku": pick(skus, k), "ts": ts(k), "qty": pa.array(pick([1, 2, 0, -1, None], k), pa.float64()),
                    "kind": pick(["sale", "sale", "void", "return", None], k)})
    events = {name: tab for name, tab in (("readings", readings), ("restocks", restocks), ("gaps", gaps),
                                          ("checks", checks), ("pos", pos)) if rng.random() < 0.9}
    rows = n(1, 200)
    facing = np.array(pick([f.facing_id for f in plan] + ["f_unknown"], rows), dtype=object)
    t = ts(rows) - int(rng.integers(0, 2)) * H
    sensor_label = rng.choice([0, 1], rows).astype(np.int64)
    sensor_now = rng.choice([0, 1], rows).astype(np.int64)
    return facing, t, sensor_label, sensor_now, plan, events, int(rng.choice([1, 2, 6])) * H


@pytest.mark.parametrize("seed", range(80))
def test_every_facing_at_once_equals_the_per_facing_reference(seed):
    args = _store(np.random.default_rng(seed))
    got = evidence_labels(*args)
    want = _reference(*args)
    for name, a, b in zip(("label", "empty_now", "label_source", "label_without_sensor"), got, want):
        assert a.tolist() == b.tolist(), name


def test_the_random_stores_reach_every_rule():
    """The comparison above is only as good as its stores: every source and value occurs."""
    seen_src, seen, ledger = set(), set(), set()
    for seed in range(80):
        lab, now, src, staff = _reference(*_store(np.random.default_rng(seed)))
        seen_src |= set(src.tolist())
        seen |= {("label", v) for v in lab.tolist()} | {("now", v) for v in now.tolist()}
        ledger |= {v for v, s in zip(lab.tolist(), src.tolist()) if s == "ledger"}
    assert seen_src == set(LABEL_SOURCES) | {None}
    assert ledger == {0, 1}  # the ledger's proofs of a gap and of stock
    assert seen == {("label", v) for v in (-1, 0, 1)} | {("now", v) for v in (-1, 0, 1)}

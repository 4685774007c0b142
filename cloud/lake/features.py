"""Silver -> ``gold.features``: hourly feature vectors per facing, with the online state carried
between runs so an incremental run computes exactly what a full rebuild computes.

Features come from ``models.replay.StoreFeatures`` (the gateway's own code): decayed sales
rates, hour-of-day profiles and "hours since" counters whose memory reaches weeks back (a
168-hour rate, a 336-hour profile). A window of a day or two of silver cannot reproduce them;
replaying each store's whole history on every run would not scale. So, like a gateway that keeps
its state across restarts, the runner keeps one snapshot of each store's state per UTC day
boundary in ``gold.feature_state``: the state after every event *before* that midnight. A run
whose window starts at day ``D`` restores the snapshot at ``D``, applies only events from ``D``
on, and writes the snapshots of ``D`` and of every later midnight up to the one after its last
event. Without a usable snapshot (a new store, a lake from before this table, a changed
planogram, a snapshot kept under other ``models.features.STATE_RULES_VERSION`` rules) the
store's history is replayed from its first event.

Pure functions over Arrow tables; ``cloud.lake.runner`` gathers snapshots and history, and an
engine may run :func:`store_features` per store where it likes (Spark: on the executors).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cloud.lake.tables import conform

__all__ = ["features", "store_features", "planogram_of", "planogram_hash", "split_by_store", "LABEL_HORIZON_H", "STATE_TABLE",
           "feature_vectors", "FEATURE_INPUTS", "FEATURE_TABLES"]

_H = 3_600_000
_D = 86_400_000
#: gold.features' label: the facing is empty within this many hours.
LABEL_HORIZON_H = 2.0
STATE_TABLE = "gold.feature_state"
#: FacingState fields held as numpy arrays (JSON lists in a snapshot)
_ARRAYS = ("_sales_profile", "_restock_profile")
_EVENT_TABLES = (("readings", "silver.shelf_reading"), ("pos", "silver.pos_line"), ("restocks", "silver.shelf_restock"))
#: Silver tables read only for labels (``cloud.lake.labels``), not replayed into features.
_LABEL_TABLES = (("gaps", "silver.gap_scan"), ("checks", "silver.shelf_check"))
#: Every per-store input of :func:`store_features` (an engine ships these to its workers).
FEATURE_INPUTS = tuple(k for k, _ in _EVENT_TABLES + _LABEL_TABLES)
#: each of those inputs' silver table
FEATURE_TABLES = dict(_EVENT_TABLES + _LABEL_TABLES)


def feature_vectors(matrix) -> pa.ListArray:
    """A feature matrix (rows x features) as an Arrow ``list<float>`` column, built in one go
    from the matrix's buffer (no per-row Python: JSON text per row was 85 % of this step)."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    n, k = m.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    return pa.ListArray.from_arrays(offsets, pa.array(m.reshape(-1)))


#: Feature instants are the hours within this many hours after some event of the store: a store
#: that is silent for longer has no state worth a feature vector, and one event stamped decades
#: ahead (2100-01-01 is a valid contract time) would otherwise ask for 650,000 hourly replays.
ACTIVE_WITHIN_H = 24


def _active_hours(ts: np.ndarray, start: int, last: int) -> list[int]:
    """Whole hours in [start, last] that are at most ``ACTIVE_WITHIN_H`` after an event in ``ts``.

    Every hour of a store that reports at least daily; bounded by the number of distinct event
    hours times ``ACTIVE_WITHIN_H`` whatever the span of the timestamps."""
    hours = np.unique(ts // _H)
    near = np.unique((hours[:, None] + np.arange(1, ACTIVE_WITHIN_H + 1)[None, :]).ravel()) * _H
    return [int(t) for t in near if start <= t <= last]


def planogram_of(inputs: dict[str, pa.Table]) -> pa.Table:
    """The planogram features use: ``silver.planogram``, or while no master data is loaded at all,
    the facings the sensors report on (capacity = most units seen). Decided for the whole lake,
    never per store: a store missing from a loaded planogram has no features (on every engine)."""
    planogram = inputs.get("planogram")
    if planogram is not None and planogram.num_rows:
        return planogram
    return inputs["readings"].group_by(["store_id", "facing_id"]).aggregate([("sku", "max"), ("units_est", "max")]) \
        .rename_columns(["store_id", "facing_id", "sku", "capacity"])


def planogram_hash(plan: pa.Table) -> str:
    """Identity of one store's facings and of the state's rules: a snapshot is valid only for the
    planogram it was kept with, and under the ``models.features.STATE_RULES_VERSION`` that kept it
    (a snapshot from before a rules change is not resumed: the store's history is replayed)."""
    from models.features import STATE_RULES_VERSION

    cols = [c for c in ("facing_id", "sku", "capacity", "has_sensor") if c in plan.column_names]
    rows = sorted(json.dumps([r.get(c) for c in cols], default=str) for r in plan.select(cols).to_pylist())
    rows.append(f"state rules {STATE_RULES_VERSION}")  # snapshots from before it was part of the hash: replayed
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _dump(states: list[dict[str, Any]]) -> str:
    """A store's facing states (``vars(FacingState)`` each, in facing order) as snapshot JSON."""
    return json.dumps([{k: (v.tolist() if k in _ARRAYS else v) for k, v in st.items()} for st in states],
                      separators=(",", ":"))


def _restore(store, state_json: str) -> None:
    from models.features import FeatureCache

    saved = {s["facing_id"]: s for s in json.loads(state_json)}
    for fid, state in store.states.items():
        for k, v in saved.get(fid, {}).items():
            setattr(state, k, np.array(v, dtype=np.float64) if k in _ARRAYS else v)
    store._cache = FeatureCache(store._ordered)


@dataclass
class _Store:
    """One store's replay, prepared (``_prepare``), and what its rows need afterwards (``_finish``)."""

    store_id: str
    facings: list
    events: dict[str, pa.Table]
    stockouts: pa.Table
    first: int
    plan_hash: str
    replay: Any  # models.batch_replay.StoreEvents


def _prepare(store_id: str, events: dict[str, pa.Table], plan: pa.Table, stockouts: pa.Table, *,
             cutoff: int, snapshot: dict | None, plan_hash: str) -> _Store | None:
    """The store's state before its events (fresh, or its snapshot), its events in the gateway's
    order, the feature instants and the snapshot midnights; None when it has no event."""
    from models.batch_replay import StoreEvents
    from models.replay import Facing, StoreFeatures

    facings = [Facing(str(r["facing_id"]), str(r["sku"]), int(r["capacity"]),
                      str(r.get("has_sensor", "")).strip().lower() in ("1", "true", "yes"))
               for r in plan.to_pylist()]
    # in facing order, whatever order the planogram's rows come in (the state's JSON is compared)
    store = StoreFeatures(store_id, sorted(facings, key=lambda f: f.facing_id))
    begin = None
    first = None
    if snapshot is not None:
        begin, first = int(snapshot["day_ms"]), snapshot["first_ms"]
        _restore(store, snapshot["state_json"])
    # Every event given counts for which hours are active (the window's day of context covers the
    # day before the cutoff); only those from the snapshot's midnight on are applied to its state.
    stamps = np.concatenate([events[k]["ts"].to_numpy().astype(np.int64) for k in ("readings", "pos")
                             if events.get(k) is not None] or [np.zeros(0, np.int64)])
    cols = _event_columns(events, begin)
    span = np.concatenate([c["ts"] for c in cols if c["kind"][:1].tolist() != [_RESTOCK]] or [np.zeros(0, np.int64)])
    if len(span):  # a late event may precede every event the snapshot saw (then its state is empty)
        first = int(span.min()) if first is None else min(first, int(span.min()))
    last = int(span.max()) if len(span) else None
    if first is None or last is None:
        return None
    start = max(first - first % _H + _H, begin if begin is not None else 0, cutoff - cutoff % _H)
    instants = _active_hours(stamps, start, last)
    day0 = begin if begin is not None else max(cutoff, first - first % _D)
    # Snapshots at the first midnight and at each midnight after a day with an event: a later run
    # whose window starts on a day without one finds the newest snapshot before it, and no event
    # lies between (so it is that day's state too). One event stamped in 2100 adds one snapshot.
    ev_days = np.unique(np.concatenate([c["ts"] for c in cols] or [np.zeros(0, np.int64)]) // _D) * _D + _D
    days = sorted({day0} | {int(d) for d in ev_days if d > day0})
    ordered = _in_order(cols)
    replay = StoreEvents(states=store._ordered, instants=instants, snapshots=days, **ordered)
    return _Store(store_id, facings, events, stockouts, first, plan_hash, replay)


def _finish(prep: _Store, X: np.ndarray, snapshots: list, horizon_h: float) -> tuple[pa.Table, pa.Table]:
    """Feature rows (with labels) and state snapshot rows of one replayed store."""
    from cloud.lake.labels import evidence_labels
    from models.replay import FeatureRows, label_rows

    store_id, rep = prep.store_id, prep.replay
    states = [{"store_id": store_id, "day_ms": t, "first_ms": prep.first if prep.first < t else None,
               "planogram_hash": prep.plan_hash, "state_json": _dump(st)}
              for t, st in zip(rep.snapshots, snapshots)]
    n = len(rep.states)
    if not rep.instants or n == 0:
        return _empty_features(), _states(states)
    hour = np.repeat(np.asarray(rep.instants, dtype=np.int64), n)
    facing = np.tile(np.array([st.facing_id for st in rep.states], dtype=object), len(rep.instants))
    rows = FeatureRows(np.full(len(hour), store_id, dtype=object), facing, hour, X)
    so = prep.stockouts
    so = [r for r in zip(*(so[c].to_pylist() for c in ("store_id", "facing_id", "start_ms", "end_ms"))) if r[0] == store_id]
    sensor_now, sensor_within = label_rows(rows, so, int(horizon_h * _H))
    label, now, source, staff = evidence_labels(facing, hour, sensor_within.astype(np.int64), sensor_now.astype(np.int64),
                                                prep.facings, prep.events, int(horizon_h * _H))
    sku_of = {f.facing_id: f.sku for f in prep.facings}
    out = pa.table({
        "store_id": pa.array([store_id] * len(hour), pa.string()),
        "facing_id": facing.astype(str).tolist(),
        "sku": [sku_of.get(f) for f in facing.tolist()],
        "hour_ms": hour,
        "features": feature_vectors(X),
        "label": pa.array(label, pa.int32(), mask=label < 0),
        "empty_now": pa.array(now, pa.int32(), mask=now < 0),
        "label_source": pa.array(source.tolist(), pa.string()),
        "label_without_sensor": pa.array(staff, pa.int32(), mask=staff < 0),
        "horizon_h": np.full(len(hour), horizon_h),
    })
    return conform("gold.features", out), _states(states)


def store_features(store_id: str, events: dict[str, pa.Table], plan: pa.Table, stockouts: pa.Table, *,
                   cutoff: int, snapshot: dict | None, plan_hash: str = "",
                   horizon_h: float = LABEL_HORIZON_H) -> tuple[pa.Table, pa.Table]:
    """One store's feature rows from ``cutoff`` on, and its state snapshots: ``(features, states)``.

    ``events`` are the store's silver rows (``readings``, ``pos``, ``restocks``, and for labels
    ``gaps`` and ``checks``) from the snapshot's day (or from its first event when ``snapshot`` is
    None); labels come from ``cloud.lake.labels.evidence_labels``; ``snapshot`` is a
    ``gold.feature_state`` row (``day_ms``, ``first_ms``, ``state_json``) at or before ``cutoff``.
    """
    from models.batch_replay import replay_stores

    prep = _prepare(store_id, events, plan, stockouts, cutoff=cutoff, snapshot=snapshot, plan_hash=plan_hash)
    if prep is None:
        return _empty_features(), _states([])
    (X, snaps), = replay_stores([prep.replay])
    return _finish(prep, X, snaps, horizon_h)


_SALE, _READING, _RESTOCK = 0, 1, 2


def _filled(table: pa.Table, name: str, default: Any) -> np.ndarray:
    """A column as numpy, nulls as ``default`` (what ``models.replay.event_field`` gives)."""
    if name not in table.column_names:
        return np.full(table.num_rows, default)
    return pc.fill_null(table[name], default).to_numpy(zero_copy_only=False)


def _event_columns(events: dict[str, pa.Table], begin: int | None) -> list[dict[str, np.ndarray]]:
    """Per silver table (in ``_EVENT_TABLES`` order): its rows from ``begin`` on as the columns
    ``models.batch_replay.StoreEvents`` takes, with the sort keys (device, epoch, seq)."""
    out = []
    for key, _name in _EVENT_TABLES:
        t = events.get(key)
        if t is None or t.num_rows == 0:
            continue
        if begin is not None:
            t = t.filter(pc.greater_equal(t["ts"], begin))
        n = t.num_rows
        ts = t["ts"].to_numpy().astype(np.int64)
        extra = np.full(n, np.nan)
        returned = np.zeros(n, dtype=bool)
        weight = np.full(n, np.nan)
        if key == "pos":
            # models.features.pos_line_qty, by columns: voids and returns take units back
            qty = _filled(t, "qty", 0).astype(np.float64)
            kind = _filled(t, "kind", "sale").astype(str)
            value = np.where(np.isin(kind, ["void", "return"]) & (qty > 0), -qty, qty)
            returned = kind == "return"
            if "price_cents" in t.column_names:
                extra = pc.cast(t["price_cents"], pa.float64()).to_numpy(zero_copy_only=False)
            kind_code, key_col = _SALE, "sku"
        elif key == "readings":
            value = _filled(t, "units_est", 0).astype(np.float64)
            extra = _filled(t, "battery_pct", 0.0).astype(np.float64)
            weight = _filled(t, "weight_g", np.nan).astype(np.float64)
            kind_code, key_col = _READING, "facing_id"
        else:
            value = _filled(t, "units_added", 0).astype(np.float64)
            kind_code, key_col = _RESTOCK, "facing_id"
        out.append({"kind": np.full(n, kind_code, dtype=np.int8), "ts": ts,
                    "key": (t[key_col].combine_chunks().cast(pa.string()) if key_col in t.column_names
                            else pa.nulls(n, pa.string())),
                    "value": value, "extra": extra, "returned": returned, "weight": weight,
                    "device": (pc.fill_null(t["device_id"], "").combine_chunks().cast(pa.large_string())
                               if "device_id" in t.column_names else pa.array([""] * n, pa.large_string())),
                    "epoch": _filled(t, "epoch", 0).astype(np.int64),
                    "seq": _filled(t, "seq", 0).astype(np.int64)})
    return out


def _in_order(cols: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of every table sorted by (ts, device_id, epoch, seq), stably (the gateway's order: ts,
    then each device's own counter; a stable sort over the tables in _EVENT_TABLES order)."""
    names = ("kind", "ts", "value", "extra", "returned", "weight")
    if not cols:
        return {"kind": np.zeros(0, np.int8), "ts": np.zeros(0, np.int64), "key": pa.array([], pa.string()),
                "value": np.zeros(0), "extra": np.zeros(0), "returned": np.zeros(0, bool), "weight": np.zeros(0)}
    cat = {k: np.concatenate([c[k] for c in cols]) for k in names}
    keys = pa.table({"ts": cat["ts"], "device": pa.concat_arrays([c["device"] for c in cols]),
                     "epoch": np.concatenate([c["epoch"] for c in cols]), "seq": np.concatenate([c["seq"] for c in cols])})
    # Arrow's sort is stable; text compares bytewise (UTF-8: code point order, as Python's)
    order = pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in ("ts", "device", "epoch", "seq")]).to_numpy()
    return {k: cat[k][order] for k in names} | {"key": pa.concat_arrays([c["key"] for c in cols]).take(order)}


def _empty_features() -> pa.Table:
    return conform("gold.features", pa.table({"store_id": pa.array([], pa.string())}))


def _states(rows: list[dict[str, Any]]) -> pa.Table:
    return conform(STATE_TABLE, pa.Table.from_pylist(rows) if rows else pa.table({}))


def _none(table: pa.Table | None) -> pa.Table | None:
    """No rows of ``table`` (None stays None)."""
    return None if table is None else table.slice(0, 0)


def split_by_store(table: pa.Table | None) -> dict[str, pa.Table]:
    """``table``'s rows per ``store_id`` (one sort, then slices; row order kept within a store)."""
    if table is None or table.num_rows == 0:
        return {}
    t = table.take(pc.array_sort_indices(table["store_id"]))  # Arrow's sorts are stable
    stores = t["store_id"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, stores[1:] != stores[:-1], True])
    return {str(stores[a]): t.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])}


#: stores replayed in one lock step by :func:`features`
REPLAY_BATCH_STORES = 200


def features(inputs: dict[str, pa.Table], stockouts: pa.Table, *, cutoff: dict[str, int] | None = None,
             snapshots: dict[str, dict] | None = None, horizon_h: float = LABEL_HORIZON_H) -> tuple[pa.Table, pa.Table]:
    """Every store's feature rows and state snapshots (see :func:`store_features`).

    ``cutoff`` maps store -> first instant to compute (default: each store's first event);
    ``snapshots`` maps store -> its snapshot at or before the cutoff (with its planogram hash in
    ``planogram_hash``; a snapshot of another planogram is ignored).
    """
    planogram = planogram_of(inputs)
    stores = sorted({s for k in ("readings", "pos") for s in pc.unique(inputs[k]["store_id"]).to_pylist()} - {None})
    # each table split by store once (a filter per store and table is quadratic in a fleet)
    parts = {k: split_by_store(t) for k, t in (("planogram", planogram), ("stockouts", stockouts),
                                                *((k, inputs.get(k)) for k in FEATURE_INPUTS))}
    preps = []
    for store in stores:
        plan = parts["planogram"].get(store)
        if plan is None or plan.num_rows == 0:
            continue
        digest = planogram_hash(plan)
        snap = (snapshots or {}).get(store)
        if snap is not None and snap.get("planogram_hash") != digest:
            snap = None
        events = {k: parts[k].get(store, _none(inputs.get(k))) for k in FEATURE_INPUTS}
        prep = _prepare(store, events, plan, parts["stockouts"].get(store, _none(stockouts)),
                        cutoff=(cutoff or {}).get(store, 0), snapshot=snap, plan_hash=digest)
        if prep is not None:
            preps.append(prep)
    from models.batch_replay import replay_stores

    feats, states = [], []
    # The stores replay together (one lock step over all their facings), in batches that bound the
    # memory of the sampled states (a row of ~80 floats per facing and instant).
    for at in range(0, len(preps), REPLAY_BATCH_STORES):
        batch = preps[at:at + REPLAY_BATCH_STORES]
        for prep, (X, snaps) in zip(batch, replay_stores([p.replay for p in batch])):
            f, s = _finish(prep, X, snaps, horizon_h)
            feats.append(f)
            states.append(s)
    if not feats:
        return _empty_features(), _states([])
    return conform("gold.features", pa.concat_tables(feats)), conform(STATE_TABLE, pa.concat_tables(states))

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
planogram) the store's history is replayed from its first event.

Pure functions over Arrow tables; ``cloud.lake.runner`` gathers snapshots and history, and an
engine may run :func:`store_features` per store where it likes (Spark: on the executors).
"""

from __future__ import annotations

import hashlib
import json
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
    """Identity of one store's facings (a snapshot is valid only for the planogram it was kept with)."""
    cols = [c for c in ("facing_id", "sku", "capacity", "has_sensor") if c in plan.column_names]
    rows = sorted(json.dumps([r.get(c) for c in cols], default=str) for r in plan.select(cols).to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _dump(store) -> str:
    out = []
    for fid in store.facing_ids:
        st = vars(store.states[fid])
        out.append({k: (v.tolist() if k in _ARRAYS else v) for k, v in st.items()})
    return json.dumps(out, separators=(",", ":"))


def _restore(store, state_json: str) -> None:
    from models.features import FeatureCache

    saved = {s["facing_id"]: s for s in json.loads(state_json)}
    for fid, state in store.states.items():
        for k, v in saved.get(fid, {}).items():
            setattr(state, k, np.array(v, dtype=np.float64) if k in _ARRAYS else v)
    store._cache = FeatureCache(store._ordered)


def store_features(store_id: str, events: dict[str, pa.Table], plan: pa.Table, stockouts: pa.Table, *,
                   cutoff: int, snapshot: dict | None, plan_hash: str = "",
                   horizon_h: float = LABEL_HORIZON_H) -> tuple[pa.Table, pa.Table]:
    """One store's feature rows from ``cutoff`` on, and its state snapshots: ``(features, states)``.

    ``events`` are the store's silver rows (``readings``, ``pos``, ``restocks``, and for labels
    ``gaps`` and ``checks``) from the snapshot's day (or from its first event when ``snapshot`` is
    None); labels come from ``cloud.lake.labels.evidence_labels``; ``snapshot`` is a
    ``gold.feature_state`` row (``day_ms``, ``first_ms``, ``state_json``) at or before ``cutoff``.
    """
    from cloud.lake.labels import evidence_labels
    from models.replay import Facing, StoreFeatures, label_rows

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
    ts_all, calls = _event_columns(store, events, begin)
    span = np.concatenate([t for t, c in zip(ts_all, calls) if c[0] != "restock"] or [np.zeros(0, np.int64)])
    if len(span):  # a late event may precede every event the snapshot saw (then its state is empty)
        first = int(span.min()) if first is None else min(first, int(span.min()))
    last = int(span.max()) if len(span) else None
    if first is None or last is None:
        return _empty_features(), _states([])
    start = max(first - first % _H + _H, begin if begin is not None else 0, cutoff - cutoff % _H)
    instants = _active_hours(stamps, start, last)
    day0 = begin if begin is not None else max(cutoff, first - first % _D)
    # Snapshots at the first midnight and at each midnight after a day with an event: a later run
    # whose window starts on a day without one finds the newest snapshot before it, and no event
    # lies between (so it is that day's state too). One event stamped in 2100 adds one snapshot.
    ev_days = np.unique(np.concatenate(ts_all or [np.zeros(0, np.int64)]) // _D) * _D + _D
    days = sorted({day0} | {int(d) for d in ev_days if d > day0})
    # The gateway's order: ts, then each device's own counter (a stable sort over the tables in
    # _EVENT_TABLES order, as a sort of the concatenated rows would give).
    order, ev_ts, ev_call, ev_args = _in_order(ts_all, calls)
    # Walk events, snapshot instants (state before the midnight) and feature instants in time order.
    points = sorted([(d, 0) for d in days] + [(t, 1) for t in instants])
    n = len(store.facing_ids)
    Xs, ts, states = [], [], []
    i = 0
    for t, kind in points:
        # events before t (a snapshot), or at or before t (a feature instant: an event at exactly
        # the instant counts as seen)
        stop = int(np.searchsorted(ev_ts, t, side="right" if kind else "left"))
        while i < stop:
            j = order[i]
            ev_call[j](*ev_args[j])
            i += 1
        if kind == 0:
            # first_ms only once an event before the midnight is in the state
            states.append({"store_id": store_id, "day_ms": t, "first_ms": first if first < t else None,
                           "planogram_hash": plan_hash,
                           "state_json": _dump(store)})
        else:
            Xs.append(store.matrix(t))
            ts.append(np.full(n, t, dtype=np.int64))
    if not Xs or n == 0:
        return _empty_features(), _states(states)
    hour = np.concatenate(ts)
    facing = np.tile(np.array(store.facing_ids, dtype=object), len(Xs))
    X = np.concatenate(Xs)
    from models.replay import FeatureRows

    rows = FeatureRows(np.full(len(hour), store_id, dtype=object), facing, hour, X)
    so = [r for r in zip(*(stockouts[c].to_pylist() for c in ("store_id", "facing_id", "start_ms", "end_ms")))
          if r[0] == store_id]
    sensor_now, sensor_within = label_rows(rows, so, int(horizon_h * _H))
    label, now, source, staff = evidence_labels(facing, hour, sensor_within.astype(np.int64), sensor_now.astype(np.int64),
                                         facings, events, int(horizon_h * _H))
    sku_of = {f.facing_id: f.sku for f in facings}
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


def _col(table: pa.Table, name: str, default: Any) -> list:
    """A column as Python values, nulls as ``default`` (what ``models.replay.event_field`` gives)."""
    if name not in table.column_names:
        return [default] * table.num_rows
    return table[name].fill_null(default).to_pylist() if default is not None else table[name].to_pylist()


def _event_columns(store, events: dict[str, pa.Table], begin: int | None) -> tuple[list, list]:
    """Per silver table (in ``_EVENT_TABLES`` order): its ``ts`` array and a (method, argument
    tuples, sort keys) triple calling ``StoreFeatures.sale / reading / restock`` per row."""
    ts_all, calls = [], []
    for key, _name in _EVENT_TABLES:
        t = events.get(key)
        if t is None or t.num_rows == 0:
            continue
        if begin is not None:
            t = t.filter(pc.greater_equal(t["ts"], begin))
        ts = t["ts"].to_numpy().astype(np.int64)
        if key == "pos":
            qty = [float(q) for q in _col(t, "qty", 0)]
            args = list(zip(ts.tolist(), _col(t, "sku", None), qty, _col(t, "kind", "sale"), _col(t, "price_cents", None)))
            method = store.sale
        elif key == "readings":
            args = list(zip(ts.tolist(), _col(t, "facing_id", None), [float(u) for u in _col(t, "units_est", 0)],
                            [float(b) for b in _col(t, "battery_pct", 0.0)]))
            method = store.reading
        else:
            args = list(zip(ts.tolist(), _col(t, "facing_id", None), [float(u) for u in _col(t, "units_added", 0)]))
            method = store.restock
        keys = (ts, _col(t, "device_id", ""), np.array(_col(t, "epoch", 0), dtype=np.int64),
                np.array(_col(t, "seq", 0), dtype=np.int64))
        ts_all.append(ts)
        calls.append(("restock" if key == "restocks" else key, method, args, keys))
    return ts_all, calls


def _in_order(ts_all: list, calls: list) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Rows of every table sorted by (ts, device_id, epoch, seq), stably: the row order, the
    sorted ts, and per row (unsorted) the method and its arguments."""
    if not calls:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), [], []
    ts = np.concatenate([c[3][0] for c in calls])
    devices = np.array([d for c in calls for d in c[3][1]], dtype=object)
    _, device_rank = np.unique(devices.astype(str), return_inverse=True)
    epoch = np.concatenate([c[3][2] for c in calls])
    seq = np.concatenate([c[3][3] for c in calls])
    order = np.lexsort((seq, epoch, device_rank, ts))  # last key first; lexsort is stable
    methods = [c[1] for c in calls for _ in c[2]]
    args = [a for c in calls for a in c[2]]
    return order, ts[order], methods, args


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


def features(inputs: dict[str, pa.Table], stockouts: pa.Table, *, cutoff: dict[str, int] | None = None,
             snapshots: dict[str, dict] | None = None, horizon_h: float = LABEL_HORIZON_H) -> tuple[pa.Table, pa.Table]:
    """Every store's feature rows and state snapshots (see :func:`store_features`).

    ``cutoff`` maps store -> first instant to compute (default: each store's first event);
    ``snapshots`` maps store -> its snapshot at or before the cutoff (with its planogram hash in
    ``planogram_hash``; a snapshot of another planogram is ignored).
    """
    planogram = planogram_of(inputs)
    stores = sorted(set(inputs["readings"]["store_id"].to_pylist()) | set(inputs["pos"]["store_id"].to_pylist()))
    # each table split by store once (a filter per store and table is quadratic in a fleet)
    parts = {k: split_by_store(t) for k, t in (("planogram", planogram), ("stockouts", stockouts),
                                                *((k, inputs.get(k)) for k in FEATURE_INPUTS))}
    feats, states = [], []
    for store in stores:
        plan = parts["planogram"].get(store)
        if plan is None or plan.num_rows == 0:
            continue
        digest = planogram_hash(plan)
        snap = (snapshots or {}).get(store)
        if snap is not None and snap.get("planogram_hash") != digest:
            snap = None
        events = {k: parts[k].get(store, _none(inputs.get(k))) for k in FEATURE_INPUTS}
        f, s = store_features(store, events, plan, parts["stockouts"].get(store, _none(stockouts)),
                              cutoff=(cutoff or {}).get(store, 0),
                              snapshot=snap, plan_hash=digest, horizon_h=horizon_h)
        feats.append(f)
        states.append(s)
    if not feats:
        return _empty_features(), _states([])
    return conform("gold.features", pa.concat_tables(feats)), conform(STATE_TABLE, pa.concat_tables(states))

"""Event plumbing around :class:`FacingState`: one store's facings, fed event by event.

The gateway keeps a :class:`StoreFeatures` per store and calls :meth:`StoreFeatures.apply` for
each accepted event; the cloud calls :func:`replay_features` over silver rows (envelope
columns with the ``data`` fields flattened, or event dicts with ``data``), sampling feature
rows at chosen instants. Both go through ``apply``, so a feature computed in the store and one
computed in the cloud from the same events are the same number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from gondola.clock import HOUR_MS, MINUTE_MS
from models.features import FEATURES, FacingState, FeatureCache, pos_line_qty, set_sku_facings, sku_reading, sku_sale

__all__ = [
    "Facing",
    "StoreFeatures",
    "event_field",
    "replay_features",
    "sample_instants",
    "FeatureRows",
    "label_rows",
    "events_from_silver",
    "planograms_from_rows",
    "features_from_silver",
    "facing_keys",
    "facing_groups",
    "split_facing_key",
]

#: Silver table (or short name) -> the event type its rows are.
SILVER_TYPES = {
    "silver.pos_line": "pos.line", "pos_line": "pos.line", "pos": "pos.line", "pos.line": "pos.line",
    "silver.shelf_reading": "shelf.reading", "shelf_reading": "shelf.reading", "readings": "shelf.reading",
    "shelf.reading": "shelf.reading",
    "silver.shelf_restock": "shelf.restock", "shelf_restock": "shelf.restock", "restocks": "shelf.restock",
    "shelf.restock": "shelf.restock",
}


@dataclass(frozen=True)
class Facing:
    """A planogram entry: which SKU a facing holds and how many units fit."""

    facing_id: str
    sku: str
    capacity: int
    #: From the planogram; a facing also counts as sensored from its first reading.
    has_sensor: bool = False


def event_field(event: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A ``data`` field of an event dict, or the same field flattened into a silver row."""
    data = event.get("data")
    if type(data) is dict and name in data:  # exact type check: ABC checks cost 10x per call
        return data[name]
    value = event.get(name, default)
    # Flattened columns of other event types are null (None / NaN) in an Arrow table.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


class StoreFeatures:
    """All facings of one store, fed with that store's events in event-time order.

    POS lines go to every facing of the line's SKU (split evenly when a SKU has several
    facings); readings and restocks go to their facing. Events of unknown facings or SKUs are
    counted in ``unknown`` and otherwise ignored (the planogram may lag the shelves).
    """

    def __init__(self, store_id: str, planogram: Iterable[Facing]):
        self.store_id = store_id
        self.states: dict[str, FacingState] = {}
        self._by_sku: dict[str, list[FacingState]] = {}
        for f in planogram:
            state = FacingState(facing_id=f.facing_id, sku=f.sku, capacity=int(f.capacity),
                                has_sensor=bool(f.has_sensor))
            self.states[f.facing_id] = state
            self._by_sku.setdefault(f.sku, []).append(state)
        self.facing_ids = list(self.states)
        self._ordered = [self.states[f] for f in self.facing_ids]
        set_sku_facings(self._ordered)
        self._cache = FeatureCache(self._ordered)
        self.unknown = 0
        self.applied = 0

    def apply(self, event: Mapping[str, Any]) -> None:
        """Update the facings an event is about (any event type; irrelevant ones are ignored)."""
        etype = event.get("type")
        ts = int(event["ts"])
        data = event.get("data")
        if type(data) is dict:  # an event as sent (not a flattened silver row)
            self.apply_data(etype, ts, data)
            return
        if etype == "pos.line":
            self.sale(ts, event_field(event, "sku"), float(event_field(event, "qty", 0)),
                      event_field(event, "kind", "sale"), event_field(event, "price_cents"))
        elif etype == "shelf.reading":
            self.reading(ts, event_field(event, "facing_id"), float(event_field(event, "units_est", 0)),
                         float(event_field(event, "battery_pct", 0.0)), event_field(event, "weight_g"))
        elif etype == "shelf.restock":
            self.restock(ts, event_field(event, "facing_id"), float(event_field(event, "units_added", 0)))

    def apply_data(self, etype: Any, ts: int, data: dict) -> None:
        """:meth:`apply` for an event already split into its type, time and ``data`` dict."""
        if etype == "pos.line":
            self.sale(ts, data.get("sku"), float(data.get("qty", 0)), data.get("kind", "sale"), data.get("price_cents"))
        elif etype == "shelf.reading":
            self.reading(ts, data.get("facing_id"), float(data.get("units_est", 0)), float(data.get("battery_pct", 0.0)),
                         data.get("weight_g"))
        elif etype == "shelf.restock":
            self.restock(ts, data.get("facing_id"), float(data.get("units_added", 0)))

    # The typed entry points ``apply`` routes to; a caller holding columns (the cloud's replay
    # over silver) calls them directly instead of building an event dict per row.

    def sale(self, ts: int, sku: Any, qty: float, kind: Any, price_cents: Any) -> None:
        """A POS line: to the facings of the SKU (``sku_sale`` decides which); voids add back."""
        targets = self._by_sku.get(sku)
        if not targets:
            self.unknown += 1
            return
        qty, returned = pos_line_qty(qty, kind)
        sku_sale(targets, ts, qty, price_cents, returned=returned)
        for state in targets:
            self._cache.mark(state)
        self.applied += 1

    def reading(self, ts: int, facing_id: Any, units_est: float, battery_pct: float, weight_g: Any = None) -> None:
        """A shelf sensor reading of one facing (``weight_g``: the load cell's grams, when known)."""
        state = self.states.get(facing_id)
        if state is None:
            self.unknown += 1
            return
        sibs = self._by_sku[state.sku]
        sku_reading(sibs, sibs.index(state), ts, units_est, battery_pct, None if weight_g is None else float(weight_g))
        for sib in sibs:
            self._cache.mark(sib)
        self.applied += 1

    def restock(self, ts: int, facing_id: Any, units_added: float) -> None:
        """Units put on one facing."""
        state = self.states.get(facing_id)
        if state is None:
            self.unknown += 1
            return
        state.on_restock(ts, units_added)
        self._cache.mark(state)
        self.applied += 1

    def start(self, t_ms: int) -> None:
        """Mark every facing as observed from ``t_ms`` (the gateway's start or history's first day)."""
        for state in self._ordered:
            if state.started_ms is None:
                state.started_ms = int(t_ms)
                self._cache.mark(state)

    @property
    def cache(self) -> FeatureCache:
        """The gathered state behind :meth:`matrix` (to score several stores in one pass)."""
        return self._cache

    def matrix(self, now_ms: int) -> np.ndarray:
        """Features of every facing (ordered as ``facing_ids``) at ``now_ms``, (n, F) float32."""
        return self._cache.matrix(now_ms)

    def untrusted(self, now_ms: int) -> np.ndarray:
        """Which facings' sensors are not believed at ``now_ms`` (the mask the last :meth:`matrix` at
        that instant used, unless a facing changed since)."""
        return self._cache.untrusted(now_ms)


def sample_instants(
    start_ms: int, end_ms: int, *, every_min: int = 15, open_hour: int = 7, close_hour: int = 22
) -> list[int]:
    """Instants every ``every_min`` minutes in [start, end), during opening hours (UTC hours)."""
    step = every_min * MINUTE_MS
    first = -(-start_ms // step) * step
    out = []
    for t in range(first, end_ms, step):
        hour = (t % (24 * HOUR_MS)) // HOUR_MS
        if open_hour <= hour < close_hour:
            out.append(t)
    return out


@dataclass
class FeatureRows:
    """Feature rows sampled from a replay: row i is facing ``facing[i]`` of ``store[i]`` at ``t[i]``."""

    store: np.ndarray     # (n,) object
    facing: np.ndarray    # (n,) object
    t: np.ndarray         # (n,) int64 epoch ms
    X: np.ndarray         # (n, F) float32
    #: (n,) bool: the facing's shelf sensor was not believed at t (``features.sensor_untrusted``).
    untrusted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.t)

    @staticmethod
    def concat(parts: list["FeatureRows"]) -> "FeatureRows":
        if not parts:
            return FeatureRows(np.array([], dtype=object), np.array([], dtype=object),
                               np.array([], dtype=np.int64), np.zeros((0, len(FEATURES)), np.float32))
        return FeatureRows(
            np.concatenate([p.store for p in parts]),
            np.concatenate([p.facing for p in parts]),
            np.concatenate([p.t for p in parts]),
            np.concatenate([p.X for p in parts]),
            (np.concatenate([p.untrusted for p in parts])
             if all(p.untrusted is not None for p in parts) else None),
        )


def replay_features(
    events: Iterable[Mapping[str, Any]],
    planograms: Mapping[str, Iterable[Facing]],
    instants: Iterable[int],
    *,
    start_ms: int | None = None,
    arrival: bool = False,
) -> FeatureRows:
    """Replay events (any order within a store is fine: they are sorted by ``ts``) and sample
    every facing's features at each instant, as the gateway would have seen them.

    ``events`` are event dicts or silver rows of possibly several stores; ``planograms`` maps
    store id to its facings. An event at exactly an instant counts as seen at that instant.

    ``arrival`` replays in arrival order, as a gateway sees events: each event is applied once
    it arrived (``received_at``, else the device's ``sent_at``, else ``ts``), so late and
    buffered events are missing from the instants before they arrived (event-time order is
    slightly optimistic).
    """
    by_store: dict[str, list[Mapping[str, Any]]] = {}
    for ev in events:
        by_store.setdefault(str(ev["store_id"]), []).append(ev)
    instants = sorted(set(int(t) for t in instants))
    parts = []
    for store_id, facings in planograms.items():
        store = StoreFeatures(store_id, facings)
        evs = sorted(by_store.get(store_id, ()), key=_arrival_order if arrival else _order)
        if start_ms is not None:
            store.start(start_ms)
        parts.append(_sample(store, iter(evs), instants, _arrived if arrival else _event_time))
    return FeatureRows.concat(parts)


def _order(ev: Mapping[str, Any]) -> tuple:
    # ts, then the device's own counter: ties in ts keep each device's order.
    return (int(ev["ts"]), str(ev.get("device_id", "")), int(ev.get("seq", 0) or 0))


def _event_time(ev: Mapping[str, Any]) -> int:
    return int(ev["ts"])


def _arrived(ev: Mapping[str, Any]) -> int:
    for name in ("received_at", "sent_at"):
        v = ev.get(name)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return int(v)
    return int(ev["ts"])


def _arrival_order(ev: Mapping[str, Any]) -> tuple:
    return (_arrived(ev),) + _order(ev)


def _sample(store: StoreFeatures, events: Iterator[Mapping[str, Any]], instants: list[int],
            seen_at=_event_time) -> FeatureRows:
    n = len(store.facing_ids)
    Xs, ts, us = [], [], []
    pending = next(events, None)
    for t in instants:
        while pending is not None and seen_at(pending) <= t:
            store.apply(pending)
            pending = next(events, None)
        Xs.append(store.matrix(t))
        us.append(store.untrusted(t))
        ts.append(np.full(n, t, dtype=np.int64))
    if not Xs:
        return FeatureRows.concat([])
    return FeatureRows(
        np.full(n * len(instants), store.store_id, dtype=object),
        np.tile(np.array(store.facing_ids, dtype=object), len(instants)),
        np.concatenate(ts),
        np.concatenate(Xs),
        np.concatenate(us),
    )


#: Joins a row's store and facing into one key (a control character no id contains).
_KEY_SEP = "\x1f"


def facing_keys(store: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """One string per row naming its facing in its store (``store`` and ``facing`` joined)."""
    return np.char.add(np.char.add(np.asarray(store).astype(str), _KEY_SEP), np.asarray(facing).astype(str))


def facing_groups(store: np.ndarray, facing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, group)``: the distinct :func:`facing_keys` (sorted) and per row the index of its own."""
    keys, group = np.unique(facing_keys(store, facing), return_inverse=True)
    return keys, group.reshape(-1)


def split_facing_key(key: Any) -> tuple[str, str]:
    """``(store, facing)`` of one :func:`facing_keys` key."""
    store, facing = str(key).split(_KEY_SEP, 1)
    return store, facing


def label_rows(
    rows: FeatureRows,
    stockouts: Iterable[tuple[str, str, int, int | None]],
    horizon_ms: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth labels of feature rows from stock-out intervals ``(store, facing, start, end)``.

    Returns ``(empty_now, empty_within)``: empty at the row's instant, and empty at some moment
    in (t, t + horizon]. ``end`` None means still empty at the end of the history.
    """
    by_key: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for store, facing, start, end in stockouts:
        by_key.setdefault((str(store), str(facing)), []).append((int(start), math.inf if end is None else int(end)))
    empty_now = np.zeros(len(rows), dtype=bool)
    empty_within = np.zeros(len(rows), dtype=bool)
    if not by_key or len(rows) == 0:
        return empty_now, empty_within
    # Group rows by facing so each facing's intervals are scanned once with numpy.
    keys = facing_keys(rows.store, rows.facing)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    bounds = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = order[a:b]
        store, facing = split_facing_key(sorted_keys[a])
        intervals = by_key.get((store, facing))
        if not intervals:
            continue
        t = rows.t[idx].astype(np.float64)
        starts = np.array([s for s, _ in intervals], dtype=np.float64)
        ends = np.array([e for _, e in intervals], dtype=np.float64)
        # (rows x intervals) is small per facing: a few hundred instants, a few intervals.
        now = (starts[None, :] <= t[:, None]) & (t[:, None] < ends[None, :])
        within = (starts[None, :] <= t[:, None] + horizon_ms) & (ends[None, :] > t[:, None])
        empty_now[idx] = now.any(axis=1)
        # Empty at some moment in (t, t+H]: the interval overlaps it (an interval already
        # running at t and lasting past it counts too).
        empty_within[idx] = within.any(axis=1)
    return empty_now, empty_within


def events_from_silver(tables: Mapping[str, Any]) -> list[dict]:
    """Silver event tables (pyarrow Tables or lists of row dicts, one table per event type,
    keyed by table name such as ``silver.pos_line`` or by event type) -> flat event dicts with
    ``type`` set, ready for :func:`replay_features`. Tables of other types are ignored."""
    out: list[dict] = []
    for name, table in tables.items():
        etype = SILVER_TYPES.get(name)
        if etype is None or table is None:
            continue
        rows = table.to_pylist() if hasattr(table, "to_pylist") else list(table)
        for row in rows:
            out.append({**row, "type": etype})
    return out


def planograms_from_rows(rows: Any) -> dict[str, list[Facing]]:
    """Planogram rows (``store_id, facing_id, sku, capacity[, has_sensor]``; a pyarrow Table or row dicts,
    such as ``silver.planogram`` or the simulator's master data) -> facings per store."""
    rows = rows.to_pylist() if hasattr(rows, "to_pylist") else list(rows)
    out: dict[str, list[Facing]] = {}
    for r in rows:
        sensor = str(r.get("has_sensor", "")).strip().lower() in ("1", "true", "yes")
        out.setdefault(str(r["store_id"]), []).append(
            Facing(str(r["facing_id"]), str(r["sku"]), int(r["capacity"]), sensor))
    return out


def features_from_silver(
    tables: Mapping[str, Any],
    planogram: Any,
    instants: Iterable[int],
    *,
    start_ms: int | None = None,
) -> FeatureRows:
    """The cloud's feature computation: silver event tables + planogram -> feature rows of every
    facing at each instant, through the same ``StoreFeatures.apply`` the gateway runs."""
    return replay_features(events_from_silver(tables), planograms_from_rows(planogram), instants, start_ms=start_ms)

"""One hub partition's operators: dedup, event clock, windows, cloud scoring, anomaly detectors.

``PartitionProcessor.process(messages)`` folds a partition's messages (in sequence order) into
its state and returns the rows to write, per ``stream.*`` table. Everything it emits is a
function of the partition's message sequence alone (event time, never the wall clock, decides
what closes and what fires), so replaying the same messages from a state snapshot emits the
same rows: the job relies on that for exactly-once output (``cloud.stream.job``).

Per event, in arrival order:

1. **Dedup** on ``(device_id, seq)`` (the uplink is at-least-once): a copy is counted, nothing else.
2. **Late or not**: before the watermark -> a ``stream.late_events`` row; it still updates the
   scorer's facing state and the detectors (what it says is true, only late), never a window.
3. **Windows**: a POS line adds to its store's 5-minute sales window; every event adds to its
   store's hopping health windows.
4. **Clock**: the event may move the partition's event clock; each time the clock crosses a
   ``tick_ms`` boundary T, windows whose end is at or before the watermark are emitted, the
   detectors run at T, and (every ``score_every_ms``) every store of the partition is scored at T.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cloud.ingest.source import ReceivedMessage
from cloud.stream.detectors import DetectorConfig, StoreWatch
from cloud.stream.scoring import StoreScorer
from cloud.stream.tables import ALERTS, ANOMALIES, LATE_EVENTS, SALES_5M, STORE_HEALTH
from cloud.stream.windows import EventClock, Windower
from gondola.clock import MINUTE_MS
from gondola.contracts import batch_lines, parse_lines
from gondola.errors import ContractError
from models.features import FeatureCacheGroup
from models.replay import Facing

__all__ = ["StreamConfig", "PartitionState", "PartitionProcessor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamConfig:
    """The job's stated event-time rules (docs/stream.md)."""

    #: How long after an instant events of it are still counted in windows.
    allowed_lateness_ms: int = 10 * MINUTE_MS
    #: Events further ahead of their enqueue time than this do not move the clock.
    max_skew_ms: int = 15 * MINUTE_MS
    sales_window_ms: int = 5 * MINUTE_MS
    health_window_ms: int = 15 * MINUTE_MS
    health_hop_ms: int = 5 * MINUTE_MS
    #: Detector cadence in event time.
    tick_ms: int = 5 * MINUTE_MS
    #: Scoring cadence in event time (a multiple of ``tick_ms``): the gateway's cycle; a
    #: forecast two hours ahead loses nothing at 15 minutes, and scoring is most of the job's cost.
    score_every_ms: int = 15 * MINUTE_MS
    #: Raise new forecasts for a silent store from imputed features (default: keep or clear
    #: those standing only; docs/stream.md "Cloud vs gateway").
    raise_on_imputed: bool = False
    #: A gateway that sent an edge.* event within this is alive (its alerts are compared).
    gateway_alive_ms: int = 30 * MINUTE_MS
    #: Stores silent for longer than this (and every window since) are forgotten.
    forget_store_ms: int = 7 * 24 * 60 * MINUTE_MS
    detectors: DetectorConfig = field(default_factory=DetectorConfig)


class _Seen:
    """Which seqs of one device were seen: everything <= ``floor``, plus ``above``."""

    __slots__ = ("floor", "above")

    def __init__(self) -> None:
        self.floor = -1
        self.above: set[int] = set()

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was seen before (a duplicate)."""
        if seq <= self.floor or seq in self.above:
            return False
        self.above.add(seq)
        while self.floor + 1 in self.above:  # compact the contiguous prefix
            self.floor += 1
            self.above.discard(self.floor)
        if len(self.above) > 50_000:  # a device with a huge gap: give up on the oldest
            keep = sorted(self.above)[-25_000:]
            self.floor = keep[0] - 1
            self.above = set(keep)
        return True

    def __getstate__(self):
        return (self.floor, self.above)

    def __setstate__(self, state):
        self.floor, self.above = state


@dataclass
class PartitionState:
    """Everything one partition's operators keep; pickled into ``stream.state`` snapshots."""

    partition: str
    clock: EventClock
    position: int = -1  # last hub sequence number folded in
    next_tick: int | None = None
    seen: dict[str, _Seen] = field(default_factory=dict)
    # (store, window_start) -> [lines, units, revenue, {txns}, {registers}]
    sales: dict[tuple[str, int], list] = field(default_factory=dict)
    # (store, window_start) -> dict of health aggregates (snapshots before the panes; read once)
    health: dict[tuple[str, int], dict] = field(default_factory=dict)
    # (store, pane_start) -> health aggregates of one hop: a hopping window is its panes merged
    panes: dict[tuple[str, int], dict] = field(default_factory=dict)
    watches: dict[str, StoreWatch] = field(default_factory=dict)
    scorers: dict[str, StoreScorer] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


def _health_row() -> dict:
    return {"events": 0, "readings": 0, "sensors": set(), "low_battery": set(), "pos_lines": 0, "registers": set(),
            "gateway_reports": 0, "max_unsent_rows": -1, "max_oldest_unsent_s": -1.0, "gateway_alerts_raised": 0}


def _merge_health(parts: list[dict | None]) -> dict:
    """One health window from its panes (``None``: a pane with no event)."""
    out = _health_row()
    for h in parts:
        if h is None:
            continue
        for k in ("events", "readings", "pos_lines", "gateway_reports", "gateway_alerts_raised"):
            out[k] += h[k]
        for k in ("sensors", "low_battery", "registers"):
            out[k] |= h[k]
        for k in ("max_unsent_rows", "max_oldest_unsent_s"):
            out[k] = max(out[k], h[k])
    return out


class PartitionProcessor:
    """Runs the operators of one partition over its state (see the module docstring).

    ``scorer`` is the production model (``models.runtime`` scorer) or ``None`` (no cloud
    scoring); ``planograms`` maps store id -> facings (stores without one are not scored);
    ``stock_records`` is the stores' nightly stock record (``cloud.stream.stock``) or ``None``;
    ``categories`` the products' categories (``cloud.stream.detectors.Categories``) or ``None``.
    """

    def __init__(self, state: PartitionState, config: StreamConfig, *, scorer: Any,
                 planograms: Mapping[str, Sequence[Facing]], source: str, wall_clock: Callable[[], int],
                 stock_records: Any = None, categories: Any = None):
        self.state = state
        self.stock_records = stock_records
        self.categories = categories
        self.config = config
        self.scorer = scorer
        self.planograms = planograms
        self.source = source
        self.wall = wall_clock
        self._sales_w = Windower.tumbling(config.sales_window_ms)
        self._health_w = Windower.hopping(config.health_window_ms, config.health_hop_ms)
        self._out: dict[str, list[dict]] = {}
        self._origin: dict[str, Any] = {}
        self._group: tuple[tuple[int, ...], FeatureCacheGroup] | None = None  # the stores scored together

    # ---- entry ---------------------------------------------------------------------------

    def process(self, messages: Sequence[ReceivedMessage]) -> dict[str, list[dict]]:
        """Fold messages (one partition, any order; those at or below the state's position are
        skipped) into the state; return the emitted rows per table name."""
        st = self.state
        self._out = {t.name: [] for t in (SALES_5M, STORE_HEALTH, LATE_EVENTS, ALERTS, ANOMALIES)}
        for m in sorted(messages, key=lambda m: m.sequence_number):
            if m.sequence_number <= st.position:
                continue
            self._origin = {"source": self.source, "hub_partition": st.partition, "hub_seq": m.sequence_number,
                            "origin_enqueued_ms": m.enqueued_time}
            try:
                lines = batch_lines(m.body, m.properties)
            except ContractError:
                st.count("undecodable_messages")
                lines = []
            for ev in parse_lines(lines):
                try:
                    self._event(ev, m.enqueued_time)
                except (ValueError, KeyError, TypeError) as exc:
                    st.count("bad_events")
                    log.debug("partition %s: bad event skipped: %s", st.partition, exc)
            st.position = m.sequence_number
            st.count("messages")
        return self._out

    def _emit(self, table: str, row: dict) -> None:
        row.update(self._origin)
        row["emitted_at"] = self.wall()
        self._out[table].append(row)

    # ---- per event -----------------------------------------------------------------------

    def _event(self, ev: dict, enqueued_ms: int) -> None:
        st, cfg = self.state, self.config
        etype, store, device, seq, ts = ev["type"], ev["store_id"], ev["device_id"], int(ev["seq"]), int(ev["ts"])
        data = ev.get("data") or {}
        if type(data) is not dict:
            raise TypeError(f"event data is a {type(data).__name__}, not an object")
        seen = st.seen.get(device)
        if seen is None:
            seen = st.seen[device] = _Seen()
        if not seen.add(seq):
            st.count("duplicates")
            return
        st.count("events")
        watch = st.watches.get(store)
        if watch is None:
            watch = st.watches[store] = StoreWatch(store)
            watch.start(ts, self.planograms.get(store))
        late = st.clock.is_late(ts)
        if late:
            wm = st.clock.watermark()
            st.count("late_events")
            self._emit(LATE_EVENTS.name, {"store_id": store, "device_id": device, "seq": seq, "type": etype, "ts": ts,
                                          "watermark_ms": wm, "late_by_ms": wm - ts})
        else:
            self._window(store, etype, device, ts, data)
        for row in watch.observe(etype, device, ts, data, cfg.detectors, enqueued_ms):
            self._emit(ANOMALIES.name, row)
        scorer = st.scorers.get(store) or self._scorer(store)
        if scorer is not None:
            scorer.observe(etype, ts, data)
        if st.clock.observe(ts, enqueued_ms):
            self._advance()

    def _window(self, store: str, etype: str, device: str, ts: int, data: dict) -> None:
        st = self.state
        if etype == "pos.line":
            start = self._sales_w.pane(ts)
            agg = st.sales.get((store, start))
            if agg is None:
                agg = st.sales[(store, start)] = [0, 0, 0, set(), set()]
            qty = int(data.get("qty", 0))
            if data.get("kind", "sale") in ("void", "return") and qty > 0:
                qty = -qty
            agg[0] += 1
            agg[1] += qty
            agg[2] += qty * int(data.get("price_cents", 0))
            agg[3].add((device, data.get("txn_id")))
            agg[4].add(device)
        # Each event goes to its one pane (a hop of the health windows); windows merge their
        # panes when they close (_close_windows), instead of each event updating size/hop windows.
        pane = self._health_w.pane(ts)
        h = st.panes.get((store, pane))
        if h is None:
            h = st.panes[(store, pane)] = _health_row()
        h["events"] += 1
        if etype == "shelf.reading":
            h["readings"] += 1
            h["sensors"].add(device)
            if float(data.get("battery_pct", 100.0)) < 15.0:
                h["low_battery"].add(device)
        elif etype == "pos.line":
            h["pos_lines"] += 1
            h["registers"].add(device)
        elif etype == "edge.health":
            h["gateway_reports"] += 1
            h["max_unsent_rows"] = max(h["max_unsent_rows"], int(data.get("unsent_rows", 0)))
            h["max_oldest_unsent_s"] = max(h["max_oldest_unsent_s"], float(data.get("oldest_unsent_age_s", 0.0)))
        elif etype == "edge.alert" and data.get("state") == "raised":
            h["gateway_alerts_raised"] += 1

    def _scorer(self, store: str) -> StoreScorer | None:
        st = self.state
        sc = st.scorers.get(store)
        if sc is None and self.scorer is not None:
            plan = self.planograms.get(store)
            if not plan:
                return None
            sc = st.scorers[store] = StoreScorer(store, plan)
        return sc

    # ---- event-time progress -------------------------------------------------------------

    def _advance(self) -> None:
        st, cfg = self.state, self.config
        now = st.clock.now_ms
        if st.next_tick is None:
            st.next_tick = now - now % cfg.tick_ms + cfg.tick_ms
        while st.next_tick <= now:
            t = st.next_tick
            self._close_windows(t - cfg.allowed_lateness_ms)
            self._tick(t)
            st.next_tick = t + cfg.tick_ms

    def _close_windows(self, watermark: int) -> None:
        st, cfg = self.state, self.config
        for key in sorted(k for k in st.sales if k[1] + cfg.sales_window_ms <= watermark):
            lines, units, rev, txns, regs = st.sales.pop(key)
            self._emit(SALES_5M.name, {"store_id": key[0], "window_start": key[1],
                                       "window_end": key[1] + cfg.sales_window_ms, "lines": lines, "units": units,
                                       "revenue_cents": rev, "transactions": len(txns), "registers": len(regs)})
        # Health windows are emitted for every known store, empty or not: a store that went
        # quiet shows up as a row of zeros (that is the signal), not as a missing row.
        hop, size = self._health_w.hop_ms, self._health_w.size_ms  # size is a whole number of hops
        for store, watch in sorted(st.watches.items()):
            while True:
                start = watch.next_health_start
                if start is None:
                    watch.next_health_start = start = watch.first_ts - watch.first_ts % hop - size + hop
                if start + size > watermark:
                    break
                h = _merge_health([st.health.pop((store, start), None)]
                                  + [st.panes.get((store, p)) for p in range(start, start + size, hop)])
                st.panes.pop((store, start), None)  # the last window that holds this pane
                self._emit(STORE_HEALTH.name, {
                    "store_id": store, "window_start": start, "window_end": start + size, "events": h["events"],
                    "readings": h["readings"], "sensors_reporting": len(h["sensors"]),
                    "sensors_low_battery": len(h["low_battery"]), "pos_lines": h["pos_lines"],
                    "registers_reporting": len(h["registers"]), "gateway_reports": h["gateway_reports"],
                    "max_unsent_rows": h["max_unsent_rows"], "max_oldest_unsent_s": h["max_oldest_unsent_s"],
                    "gateway_alerts_raised": h["gateway_alerts_raised"]})
                watch.next_health_start = start + hop

    def _tick(self, t: int) -> None:
        st, cfg = self.state, self.config
        due: list[tuple[str, StoreWatch, StoreScorer]] = []
        scoring = self.scorer is not None and t % cfg.score_every_ms == 0
        for store in sorted(st.watches):
            watch = st.watches[store]
            if t - watch.last_ts > cfg.forget_store_ms:
                del st.watches[store]
                st.scorers.pop(store, None)
                continue
            for row in watch.tick(t, cfg.detectors, self.stock_records, self.categories):
                self._emit(ANOMALIES.name, row)
            sc = st.scorers.get(store)
            if sc is not None and scoring:
                due.append((store, watch, sc))
        if due:
            self._score(t, due)

    def _score(self, t: int, due: list[tuple[str, StoreWatch, StoreScorer]]) -> None:
        """Score every facing of the ``due`` stores at ``t``: one feature pass and one model call
        for all of them (the model scores rows independently), then each store's alert state."""
        cfg = self.config
        caches = [sc.features.cache for _, _, sc in due]
        key = tuple(id(c) for c in caches)
        if self._group is None or self._group[0] != key:
            self._group = (key, FeatureCacheGroup(caches))
        Xs = self._group[1].matrices(t)
        fed, silent = [], []
        pool: list[int] | None = None  # every watched store's restock rounds, for a silent store's imputation
        for (_, watch, sc), X in zip(due, Xs):
            silent.append(t - watch.last_ts >= cfg.detectors.silent_min_ms)
            if silent[-1] and pool is None:
                pool = [r for other in self.state.scorers.values() for r in other.rounds]
            fed.append(sc.prepare(t, watch.last_ts if silent[-1] else None, X, pool)[1])
        probs = np.asarray(self.scorer.score(np.concatenate(fed) if len(fed) > 1 else fed[0])).reshape(-1)
        at = 0
        for (_, watch, sc), X, quiet in zip(due, Xs, silent):
            n = len(X)
            if quiet:
                watch.silent_scored_at = t
            alive = watch.last_gateway_ts is not None and t - watch.last_gateway_ts <= cfg.gateway_alive_ms
            for row in sc.decide(t, X, probs[at:at + n], self.scorer, silent=quiet,
                                  raise_on_imputed=cfg.raise_on_imputed):
                row["gateway_alive"] = alive
                self._emit(ALERTS.name, row)
            at += n
            if alive:
                undecided = sc.undecided_facings(watch.gateway_forecast_at)
                for row in watch.compare_alerts(t, sc.raised_facings("empty_within_h"), cfg.detectors, undecided):
                    self._emit(ANOMALIES.name, row)

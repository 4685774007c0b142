"""Ground truth of a simulated store: what really happened, next to what devices reported.

Shelf state is kept at the simulation step (5 minutes by default): ``units`` is the true
count on a facing at the end of a step, stamped one minute before the step ends (after the
step's last sale, before its sensor readings). A stock-out interval runs from the stamp of the
step in which the last unit left to the stamp of the step in which a restock put units back:
exactly the zero stretches of ``shelf_units``.
Everything is cumulative up to the instant of the store's last ``run_until``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["GroundTruth", "WindowRecord", "SETTLE_MS", "STOCKOUT_CAUSES"]

#: Why a shelf went empty (index = cause code).
STOCKOUT_CAUSES = ("shelf_handling", "misplaced", "phantom_inventory", "backroom_empty")

#: How long before the end of a simulation step its shelf state counts as reached.
SETTLE_MS = 60_000


@dataclass(frozen=True)
class WindowRecord:
    """A window fault: ``target`` is a device id, or the store id for store-wide windows."""

    kind: str
    target: str
    start_ms: int
    end_ms: int


@dataclass
class GroundTruth:
    """What really happened in one store, up to ``now_ms``.

    Attributes:
        emitted: per event type, the ``(device_id, seq)`` of VALID distinct events that devices
            sent at least once (dropped and malformed ones are not here).
        dropped: ``(device_id, seq)`` lost before reaching the broker (seq gaps downstream).
        malformed: ``(device_id, seq)`` whose payload was corrupted (a seq used up by a payload
            a gateway must quarantine; ``unknown_sku`` ones still pass the schema check).
        pending: events produced but held by a device (outage buffer, late) and not sent yet.
        faults: fault kind -> count; message faults count messages, window faults count windows,
            ``<window>_dropped`` / ``<window>_delayed`` count the messages they hit. A day's
            faults are planned whole, so this also holds those of a day the run only entered
            (a run ending at midnight plans the next day): ``faults_before`` counts a run's.
        windows: reboots, outages, power losses and stuck sensors with their times.
    """

    store_id: str
    facing_ids: np.ndarray
    facing_sku: np.ndarray  # sku id per facing
    track_keys: bool = True
    now_ms: int = 0
    emitted: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    dropped: set[tuple[str, int]] = field(default_factory=set)
    malformed: set[tuple[str, int]] = field(default_factory=set)
    pending: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    windows: list[WindowRecord] = field(default_factory=list)
    # (start_ms, kind, n) of the faults counted when their day was planned (``faults_before``)
    _planned: list[tuple[int, str, int]] = field(default_factory=list)
    # Closed and open stock-out intervals: facing index -> start, and closed (facing, start, end).
    _open: dict[int, tuple[int, int]] = field(default_factory=dict)  # facing -> (start, cause)
    _closed: list[tuple[int, int, int, int]] = field(default_factory=list)  # (facing, start, end, cause)
    # Per day, sparse cells: (ts at step end, facing, value).
    _shelf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    _lost: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    _daily: list[dict[str, np.ndarray]] = field(default_factory=list)
    _oos: list[tuple[int, int, int]] = field(default_factory=list)  # (day start, empty, total) open facing-steps

    # ---- queries ---------------------------------------------------------------------------

    @property
    def stockouts(self) -> list[tuple[str, str, str, int, int | None]]:
        """``(store_id, facing_id, sku, start_ms, end_ms | None)`` intervals with zero units."""
        return [r[:5] for r in self.stockouts_with_cause]

    @property
    def stockouts_with_cause(self) -> list[tuple[str, str, str, int, int | None, str]]:
        """Stock-outs as ``stockouts`` plus their cause (one of ``STOCKOUT_CAUSES``).

        The cause is judged at the end of the day the shelf emptied: stock in the backroom ->
        ``shelf_handling`` (round late, skipped, partial or not low enough yet); none, but
        cases misplaced -> ``misplaced``; none, and the record says there is ->
        ``phantom_inventory``; else ``backroom_empty`` (ordering, forecast or supplier).
        """
        out = []
        rows = [(f, start, end, cause) for f, start, end, cause in self._closed]
        rows += [(f, start, None, cause) for f, (start, cause) in self._open.items()]
        for f, start, end, cause in rows:
            if start <= self.now_ms:
                out.append((self.store_id, str(self.facing_ids[f]), str(self.facing_sku[f]), start,
                            end if end is not None and end <= self.now_ms else None, STOCKOUT_CAUSES[cause]))
        return sorted(out, key=lambda r: (r[3], r[1]))

    @property
    def lost_sales(self) -> dict[tuple[str, str], int]:
        """Units of demand that left the store unserved, per ``(facing_id, sku)``."""
        total = np.zeros(len(self.facing_ids), dtype=np.int64)
        for ts, f, v in self._lost:
            keep = ts <= self.now_ms
            total += np.bincount(f[keep], weights=v[keep], minlength=len(total)).astype(np.int64)
        return {(str(self.facing_ids[i]), str(self.facing_sku[i])): int(total[i]) for i in np.flatnonzero(total)}

    def shelf_units(self, facing_id: str) -> list[tuple[int, int]]:
        """True units on a facing as ``(ts, units)`` change points (the first at the start).

        Raises:
            KeyError: unknown facing.
        """
        hits = np.flatnonzero(self.facing_ids == facing_id)
        if len(hits) == 0:
            raise KeyError(facing_id)
        idx = hits[0]
        out: list[tuple[int, int]] = []
        for ts, f, v in self._shelf:
            keep = (f == idx) & (ts <= self.now_ms)
            out.extend(zip(ts[keep].tolist(), v[keep].tolist()))
        return out

    def oos_rate(self) -> float:
        """Share of facing-time out of stock during opening hours (0 when nothing simulated)."""
        empty = sum(e for d, e, t in self._oos if d <= self.now_ms)
        total = sum(t for d, e, t in self._oos if d <= self.now_ms)
        return empty / total if total else 0.0

    def daily(self) -> dict[str, np.ndarray]:
        """Per facing and day: ``day_ms, facing, demand, sold, lost, switched_out`` columns.

        Every day simulated so far, in full (in live mode that includes the current day).
        """
        if not self._daily:
            return {k: np.zeros(0, np.int64) for k in ("day_ms", "facing", "demand", "sold", "lost", "switched_out",
                                                       "expected")}
        return {k: np.concatenate([d[k] for d in self._daily]) for k in self._daily[0]}

    def to_tables(self) -> dict[str, Any]:
        """Ground truth as pyarrow tables: ``shelf_units``, ``stockouts``, ``lost_sales``, ``faults``, ``windows``.

        ``faults`` also holds ``pending``: events still held by devices (late, buffered) at the end.
        """
        import pyarrow as pa

        def dict_col(idx: np.ndarray, values: np.ndarray) -> pa.Array:
            return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(values.astype(str)))

        if self._shelf:
            ts = np.concatenate([s[0] for s in self._shelf])
            f = np.concatenate([s[1] for s in self._shelf])
            v = np.concatenate([s[2] for s in self._shelf])
            keep = ts <= self.now_ms
            ts, f, v = ts[keep], f[keep], v[keep]
        else:
            ts = f = v = np.zeros(0, np.int64)
        store = np.zeros(len(ts), np.int32)
        shelf = pa.table({
            "store_id": dict_col(store, np.array([self.store_id])),
            "facing_id": dict_col(f, self.facing_ids),
            "sku": dict_col(f, self.facing_sku),
            "ts": pa.array(ts, pa.int64()),
            "units": pa.array(v, pa.int32()),
        })
        so = self.stockouts_with_cause
        stockouts = pa.table({
            "store_id": pa.array([r[0] for r in so], pa.string()),
            "facing_id": pa.array([r[1] for r in so], pa.string()),
            "sku": pa.array([r[2] for r in so], pa.string()),
            "start_ms": pa.array([r[3] for r in so], pa.int64()),
            "end_ms": pa.array([r[4] for r in so], pa.int64()),
            "cause": pa.array([r[5] for r in so], pa.string()),
        })
        d = self.daily()
        keep = d["day_ms"] <= self.now_ms
        lost = pa.table({
            "store_id": dict_col(np.zeros(int(keep.sum()), np.int32), np.array([self.store_id])),
            "day_ms": pa.array(d["day_ms"][keep], pa.int64()),
            "facing_id": dict_col(d["facing"][keep], self.facing_ids),
            "sku": dict_col(d["facing"][keep], self.facing_sku),
            "demand_units": pa.array(d["demand"][keep], pa.int32()),
            "sold_units": pa.array(d["sold"][keep], pa.int32()),
            "lost_units": pa.array(d["lost"][keep], pa.int32()),
            "switched_out_units": pa.array(d["switched_out"][keep], pa.int32()),
            # The day's expected demand (Poisson mean), spread over the day by the scenario's
            # intraday profile (scenario.json ``demand_profile``): the oracle's demand truth.
            "expected_units": pa.array(d["expected"][keep], pa.float64()),
        })
        counts = dict(self.faults, pending=self.pending)
        faults = pa.table({
            "store_id": pa.array([self.store_id] * len(counts), pa.string()),
            "kind": pa.array(sorted(counts), pa.string()),
            "count": pa.array([counts[k] for k in sorted(counts)], pa.int64()),
        })
        windows = pa.table({
            "store_id": pa.array([self.store_id] * len(self.windows), pa.string()),
            "kind": pa.array([w.kind for w in self.windows], pa.string()),
            "target": pa.array([w.target for w in self.windows], pa.string()),
            "start_ms": pa.array([w.start_ms for w in self.windows], pa.int64()),
            "end_ms": pa.array([w.end_ms for w in self.windows], pa.int64()),
        })
        return {"shelf_units": shelf, "stockouts": stockouts, "lost_sales": lost, "faults": faults, "windows": windows}

    # ---- recording (the store calls these) -------------------------------------------------

    def count(self, kind: str, n: int = 1, start_ms: int | None = None) -> None:
        """Count ``n`` faults of ``kind``; ``start_ms`` for one counted when its day is planned
        (a message fault counts when its message goes out: it has happened)."""
        self.faults[kind] = self.faults.get(kind, 0) + int(n)
        if start_ms is not None and n:
            self._planned.append((int(start_ms), kind, int(n)))

    def faults_before(self, end_ms: int) -> dict[str, int]:
        """``faults`` less those planned to start at or after ``end_ms``: a run's count when it
        ended at ``end_ms`` (the day after a run that ends at midnight is planned, not run)."""
        out = dict(self.faults)
        later = set()
        for start, kind, n in self._planned:
            if start >= end_ms:
                out[kind] -= n
                later.add(kind)
        return {k: v for k, v in out.items() if v or k not in later}  # a kind only the next day had: none

    def record_day(self, day_start_ms: int, step_ms: int, units: np.ndarray, prev_units: np.ndarray,
                   lost: np.ndarray, demand: np.ndarray, sold: np.ndarray, switched: np.ndarray,
                   open_steps: np.ndarray, first: bool = False, causes: np.ndarray | None = None,
                   expected: np.ndarray | None = None) -> None:
        """Fold one simulated day (matrices of shape (steps, facings)) into the truth.

        ``expected`` (facings,) is the day's expected demand per facing (the Poisson mean before
        the intraday profile spreads it): what an oracle scorer may know and no model can.
        """
        steps, n_f = units.shape
        # A step's changes are stamped one minute before it ends: after its last sale (POS
        # lines stop 90 s before the end) and before its sensor readings (the last 30 s).
        step_end = day_start_ms + (np.arange(steps) + 1) * step_ms - SETTLE_MS
        changed = np.empty(units.shape, dtype=bool)
        np.not_equal(units[0], prev_units, out=changed[0])
        np.not_equal(units[1:], units[:-1], out=changed[1:])
        if first:
            changed[0] = True
        s, f = np.nonzero(changed)
        self._shelf.append((step_end[s], f, units[s, f].astype(np.int64)))
        lost_cols = np.flatnonzero(lost.any(axis=0))
        ls, lj = np.nonzero(lost[:, lost_cols])
        self._lost.append((step_end[ls], lost_cols[lj], lost[ls, lost_cols[lj]].astype(np.int64)))
        # Stock-out transitions, only on facings that were or became empty today.
        empty_any = (units == 0)
        cols = np.flatnonzero(empty_any.any(axis=0) | (prev_units == 0))
        empty = empty_any[:, cols]
        # On the first day, a shelf already empty at the start opens its interval at the first stamp.
        was_empty = np.vstack([((prev_units[cols] == 0) & (not first))[None, :], empty[:-1]])
        # Events in time order, so an interval that closes and reopens the same day pairs up.
        opens = [(int(s_i), 1, int(cols[j])) for s_i, j in zip(*np.nonzero(empty & ~was_empty))]
        closes = [(int(s_i), 0, int(cols[j])) for s_i, j in zip(*np.nonzero(~empty & was_empty))]
        for s_i, is_open, f_i in sorted(opens + closes):
            if is_open:
                self._open[f_i] = (int(step_end[s_i]), int(causes[f_i]) if causes is not None else 0)
                continue
            start, cause = self._open.pop(f_i, (None, 0))
            end = int(step_end[s_i])
            if start is not None and end > start:
                self._closed.append((f_i, start, end, cause))
        n_f = units.shape[1]
        self._daily.append({
            "day_ms": np.full(n_f, day_start_ms, np.int64),
            "facing": np.arange(n_f, dtype=np.int64),
            "demand": demand.sum(axis=0).astype(np.int64),
            "sold": sold.sum(axis=0).astype(np.int64),
            "lost": lost.sum(axis=0).astype(np.int64),
            "switched_out": switched.sum(axis=0).astype(np.int64),
            "expected": (np.zeros(n_f) if expected is None else np.asarray(expected, np.float64)),
        })
        if len(open_steps):
            self._oos.append((day_start_ms, int(empty[open_steps].sum()), len(open_steps) * n_f))

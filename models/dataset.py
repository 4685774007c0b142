"""Training and evaluation rows: store histories -> sampled feature rows with labels.

A :class:`StoreHistory` is what any source gives (the simulator's history files, gold tables,
the model's own synthetic store): a store's planogram, its events, the true stock-out
intervals, and the time span. :func:`build_rows` replays each store through
:func:`models.replay.replay_features` (the same code the gateway runs) and labels each row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS
from models.replay import Facing, FeatureRows, label_rows, replay_features, sample_instants

__all__ = ["StoreHistory", "LabelledRows", "build_rows"]


@dataclass
class StoreHistory:
    """One store's history: planogram, events (dicts or silver rows), true stock-outs."""

    store_id: str
    facings: list[Facing]
    events: Sequence[Mapping[str, Any]]
    #: (store, facing, start_ms, end_ms or None while still empty at the end)
    stockouts: list[tuple[str, str, int, int | None]]
    start_ms: int
    end_ms: int
    meta: dict = field(default_factory=dict)


@dataclass
class LabelledRows:
    rows: FeatureRows
    #: Empty at some moment in [t, t + H]: the target.
    y: np.ndarray
    #: Already empty at t (for the "still to happen" breakdown).
    empty_now: np.ndarray
    stockouts: list[tuple[str, str, int, int | None]]
    store_days: float
    #: False when the source does not say which rows are already empty (``empty_now`` is
    #: then all False and means nothing).
    empty_now_known: bool = True
    #: The oracle's P(empty within H) per row from the simulator's truth (``models.oracle``);
    #: None when the source has no such truth. Never a training input.
    oracle: np.ndarray | None = None
    #: Every stock-out interval of the stores, also those that started before the first row
    #: (to judge whether an alert's shelf was empty); None: ``stockouts`` serves.
    intervals: list[tuple[str, str, int, int | None]] | None = None
    #: (n,) bool: the row's shelf sensor was stuck, drifting or silent by the simulator's truth
    #: (injected faults); None when the source does not say.
    sensor_fault: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def concat(parts: list["LabelledRows"]) -> "LabelledRows":
        return LabelledRows(
            FeatureRows.concat([p.rows for p in parts]),
            np.concatenate([p.y for p in parts]) if parts else np.zeros(0, bool),
            np.concatenate([p.empty_now for p in parts]) if parts else np.zeros(0, bool),
            [s for p in parts for s in p.stockouts],
            sum(p.store_days for p in parts),
            all(p.empty_now_known for p in parts),
            (np.concatenate([p.oracle for p in parts])
             if parts and all(p.oracle is not None for p in parts) else None),
            ([s for p in parts for s in (p.intervals if p.intervals is not None else p.stockouts)]
             if any(p.intervals is not None for p in parts) else None),
            (np.concatenate([p.sensor_fault for p in parts])
             if parts and all(p.sensor_fault is not None for p in parts) else None),
        )

    def subset(self, mask: np.ndarray) -> "LabelledRows":
        """The rows under ``mask`` (stock-outs and store-days unchanged: they describe the stores)."""
        r = self.rows
        return LabelledRows(FeatureRows(r.store[mask], r.facing[mask], r.t[mask], r.X[mask],
                                        None if r.untrusted is None else r.untrusted[mask]), self.y[mask],
                            self.empty_now[mask], self.stockouts, self.store_days, self.empty_now_known,
                            None if self.oracle is None else self.oracle[mask], self.intervals,
                            None if self.sensor_fault is None else self.sensor_fault[mask])


def build_rows(
    histories: Iterable[StoreHistory],
    horizon_h: float,
    *,
    every_min: int = 15,
    warmup_days: float = 3.0,
    open_hour: int = 7,
    close_hour: int = 22,
    progress: Callable[[str], None] | None = None,
    arrival: bool = False,
) -> LabelledRows:
    """Replay every store, sample rows every ``every_min`` minutes of opening hours after a
    warm-up (features need a few days of sales to mean anything), and label them.

    Stock-outs that start during the warm-up are kept out of the evaluation's stock-out list.
    ``arrival``: features as the gateway sees events, in arrival order (``replay_features``).
    """
    horizon_ms = int(horizon_h * HOUR_MS)
    from models.oracle import oracle_probs

    parts, ys, nows, outs, oracles, intervals, faults = [], [], [], [], [], [], []
    store_days = 0.0
    for h in histories:
        first = h.start_ms + int(warmup_days * DAY_MS)
        # The last horizon of the history has incomplete labels: do not sample it.
        last = h.end_ms - horizon_ms
        instants = sample_instants(first, last, every_min=every_min, open_hour=open_hour, close_hour=close_hour)
        # No start mark: each facing's observation starts at its first event, as on a gateway
        # (edge.inference) and in the cloud's gold.features, so rows carry the features the
        # deployed model will see, cold starts included.
        rows = replay_features(h.events, {h.store_id: h.facings}, instants, arrival=arrival)
        now, within = label_rows(rows, h.stockouts, horizon_ms)
        parts.append(rows)
        truth = h.meta.get("oracle") if h.meta else None
        oracles.append(None if truth is None else oracle_probs(rows.store, rows.facing, rows.t,
                                                               {h.store_id: truth}, horizon_ms))
        ys.append(now | within)
        windows = h.meta.get("sensor_faults") if h.meta else None
        faults.append(None if windows is None else _in_windows(rows, windows))
        nows.append(now)
        outs += [s for s in h.stockouts if first <= s[2] <= last]
        intervals += h.stockouts
        store_days += max(0.0, (last - first) / DAY_MS)
        if progress:
            progress(h.store_id)
    return LabelledRows(
        FeatureRows.concat(parts),
        np.concatenate(ys) if ys else np.zeros(0, bool),
        np.concatenate(nows) if nows else np.zeros(0, bool),
        outs,
        store_days,
        oracle=(np.concatenate(oracles) if oracles and all(o is not None for o in oracles) else None),
        intervals=intervals,
        sensor_fault=(np.concatenate(faults) if faults and all(f is not None for f in faults) else None),
    )


def _in_windows(rows: FeatureRows, windows: list[tuple[str, int, int, str]]) -> np.ndarray:
    """Per row: its facing is inside one of ``windows`` (facing_id, start, end, kind) at t."""
    out = np.zeros(len(rows), dtype=bool)
    if not windows:
        return out
    facing = rows.facing.astype(str)
    by: dict[str, np.ndarray] = {}
    for f, start, end, _kind in windows:
        idx = by.get(f)
        if idx is None:
            idx = by[f] = np.flatnonzero(facing == f)
        t = rows.t[idx]
        out[idx[(t >= start) & (t < end)]] = True
    return out

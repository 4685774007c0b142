"""``gold.features`` labels from the evidence the lake holds, and which evidence gave each one.

The label of a row (facing, instant ``t``) says whether the facing is empty at some moment in
``(t, t + H]``. A label is given only where someone could have seen it; elsewhere it is NULL
(unobserved), and training and evaluation on lake data leave the row out. The evidence:

- **sensor** (``label_source = 'sensor'``): the facing's shelf sensor reported before ``t`` and
  after ``t + H`` with no silence longer than ``SENSOR_SILENCE_MS`` in between (sensors report on
  change plus a heartbeat, so a live sensor's readings cover the window), or it read zero during
  a stock-out that meets the window: the label comes from ``gold.stockouts``, the sensor's empty
  intervals.
- Facings without a sensor, or whose sensor fell silent, use what staff and the till saw. A
  shelf only gains units when someone restocks it (``shelf.restock``, or a ``shelf.check`` with
  outcome ``restocked``), so between two restocks its units can only fall:

  - **gap_scan**: a staff gap scan proves the facing empty at the scan;
  - **restock**: a restock that put a whole facing's capacity on the shelf proves it was empty
    just before;
  - each proof makes the facing empty until the next restock (or the next sale or "was fine"
    check, whichever comes first; at most ``EVIDENCE_MS``); when the SKU has one facing, the last
    sale before the proof (at most ``EVIDENCE_MS`` before) took the last unit, so the facing was
    empty from that sale on;
  - **till** (a sale of a SKU that has one facing) or **shelf_check** (outcome ``was_fine``): the
    shelf had stock then, so it had stock at every moment since the last restock before it.

  A row is 1 when its window meets a proven empty interval, 0 when a stock sighting in
  ``[t + H, t + EVIDENCE_MS]`` has no restock between ``t`` and it, and NULL otherwise. A gap scan that did not
  happen, or a ``no_stock`` check ("empty or low"), proves nothing either way.

Pure numpy over one store's silver rows; ``cloud.lake.features.store_features`` calls
:func:`evidence_labels` for the rows it computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from cloud.lake.tables import column_rows

__all__ = ["evidence_labels", "SENSOR_SILENCE_MS", "EVIDENCE_MS", "LABEL_SOURCES"]

#: A live sensor reports at least every heartbeat (180 min by default); a longer silence
#: means nobody watched the shelf through it.
SENSOR_SILENCE_MS = 4 * 3_600_000
#: How far evidence reaches: a stock sighting counts for rows up to this long before it, a proof
#: of a gap dates the stock-out from a sale at most this long before, and keeps the facing empty
#: at most this long after. Bounded so an incremental lake run recomputes every label new evidence
#: can change (``cloud.lake.runner``: ``LABEL_REACH_DAYS``): a row depends only on evidence from
#: ``2 * EVIDENCE_MS`` before it to ``EVIDENCE_MS + H`` after it.
EVIDENCE_MS = 20 * 3_600_000
#: Values of ``gold.features.label_source`` (NULL: nobody observed the label).
LABEL_SOURCES = ("sensor", "gap_scan", "restock", "till", "shelf_check")
_INF = np.iinfo(np.int64).max // 4


def _by_facing(rows: list[tuple]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for facing, *rest in rows:
        if facing is not None:
            out.setdefault(str(facing), []).append(tuple(rest))
    return out


def _sensor_watched(t: np.ndarray, readings: np.ndarray, horizon_ms: int) -> np.ndarray:
    """Rows whose window ``[t, t + H]`` lies between two readings with no long silence inside."""
    if len(readings) == 0:
        return np.zeros(len(t), bool)
    r = np.sort(readings)
    long_gap = np.r_[np.diff(r) > SENSOR_SILENCE_MS, False].astype(np.int64)
    gaps_before = np.r_[0, np.cumsum(long_gap)]  # long gaps among the first i readings' successors
    lo = np.searchsorted(r, t, side="right") - 1  # last reading at or before t
    hi = np.searchsorted(r, t + horizon_ms, side="left")  # first reading at or after t + H
    ok = (lo >= 0) & (hi < len(r))
    lo_c, hi_c = np.clip(lo, 0, len(r) - 1), np.clip(hi, 0, len(r) - 1)
    # no long gap between consecutive readings from lo to hi
    return ok & (gaps_before[hi_c] - gaps_before[lo_c] == 0)


def _facing_evidence(t: np.ndarray, horizon_ms: int, restocks: list[tuple], capacity: int, scans: list[tuple],
                     checks: list[tuple], sales: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label -1/0/1, empty_now -1/0/1, source index or -1) of one facing's rows from staff and till evidence."""
    n = len(t)
    label = np.full(n, -1, np.int64)
    now = np.full(n, -1, np.int64)
    source = np.full(n, -1, np.int64)
    boundaries = sorted([int(ts) for ts, added in restocks if (added or 0) > 0]
                        + [int(ts) for ts, outcome in checks if outcome == "restocked"])
    b = np.array(boundaries, np.int64)
    # Stock sightings: (ts, source)
    seen = [(int(ts), LABEL_SOURCES.index("shelf_check")) for ts, outcome in checks if outcome == "was_fine"]
    if sales is not None:
        seen += [(int(ts), LABEL_SOURCES.index("till")) for ts in sales.tolist()]
    seen.sort()
    s_ts = np.array([s for s, _ in seen], np.int64)
    s_src = np.array([k for _, k in seen], np.int64)
    # Empty proofs: (ts, source); a full restock proves the facing empty just before it.
    proofs = [(int(ts), LABEL_SOURCES.index("gap_scan")) for (ts,) in scans]
    proofs += [(int(ts) - 1, LABEL_SOURCES.index("restock")) for ts, added in restocks
               if capacity > 0 and (added or 0) >= capacity]
    proofs.sort()
    # Negatives first; proofs override them (a direct sighting of a gap beats an inference).
    if len(s_ts):
        limit = np.r_[b, _INF][np.searchsorted(b, t, side="right")]  # the first restock after t
        last = np.searchsorted(s_ts, limit, side="left") - 1  # last sighting before that restock
        has = last >= 0
        e = np.where(has, s_ts[np.maximum(last, 0)], -_INF)
        neg = has & (e >= t + horizon_ms) & (e <= t + EVIDENCE_MS)
        label[neg] = 0
        source[neg] = s_src[np.maximum(last, 0)][neg]
        stocked_now = has & (e >= t)
        now[stocked_now] = 0
    for p, src in proofs:
        # empty until the next restock, sale or "was fine" check after the proof
        end = min(b[b > p][:1].tolist() + s_ts[s_ts > p][:1].tolist() + [p + EVIDENCE_MS])
        start = p
        if sales is not None:
            before = s_ts[(s_ts < p) & (s_src == LABEL_SOURCES.index("till"))]
            if len(before) and before[-1] >= p - EVIDENCE_MS and not ((b > before[-1]) & (b <= p)).any():
                start = int(before[-1]) + 1  # the sale took the last unit
        hit = (start <= t + horizon_ms) & (end > t)
        label[hit] = 1
        source[hit] = src
        in_gap = (start <= t) & (t < end)
        now[in_gap] = 1
    return label, now, source


def evidence_labels(facing: np.ndarray, t: np.ndarray, sensor_label: np.ndarray, sensor_now: np.ndarray,
                    plan: list[Any], events: dict[str, pa.Table | None], horizon_ms: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed labels of one store's rows: ``(label, empty_now, label_source, label_without_sensor)``.

    ``facing``/``t`` are the rows; ``sensor_label``/``sensor_now`` the labels ``gold.stockouts``
    gives (sensor intervals); ``plan`` the store's facings (``facing_id, sku, capacity``);
    ``events`` the store's silver rows (``readings``, ``pos``, ``restocks``, ``gaps``, ``checks``).
    ``label`` and ``empty_now`` are int arrays with -1 where unobserved; ``label_source`` an
    object array (None where unobserved); ``label_without_sensor`` what staff and till evidence
    alone say (-1: nothing). On rows a sensor labels, the last one measures how much more often
    that evidence sees a stock-out than a stocked shelf (``models.gold.observed_in_lake`` evens
    it out in training).
    """
    n = len(t)
    label = np.full(n, -1, np.int64)
    now = np.full(n, -1, np.int64)
    source = np.full(n, -1, np.int64)
    staff = np.full(n, -1, np.int64)
    readings = _by_facing(column_rows(events.get("readings"), ("facing_id", "ts", "units_est")))
    restocks = _by_facing(column_rows(events.get("restocks"), ("facing_id", "ts", "units_added")))
    scans = _by_facing(column_rows(events.get("gaps"), ("facing_id", "ts")))
    checks = _by_facing(column_rows(events.get("checks"), ("facing_id", "ts", "outcome")))
    facings_of_sku: dict[str, int] = {}
    for f in plan:
        facings_of_sku[f.sku] = facings_of_sku.get(f.sku, 0) + 1
    sales: dict[str, list[int]] = {}
    for sku, ts, qty, kind in column_rows(events.get("pos"), ("sku", "ts", "qty", "kind")):
        if (kind or "sale") == "sale" and (qty or 0) > 0:
            sales.setdefault(str(sku), []).append(int(ts))
    order = np.argsort(facing.astype(str), kind="stable")
    keys = facing.astype(str)[order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True]) if n else np.zeros(1, np.int64)
    spec = {f.facing_id: f for f in plan}
    for a, z in zip(bounds[:-1], bounds[1:]):
        idx = order[a:z]
        fid = str(keys[a])
        f = spec.get(fid)
        tt = t[idx].astype(np.int64)
        own_sales = None
        if f is not None and facings_of_sku.get(f.sku) == 1:
            own_sales = np.sort(np.array(sales.get(f.sku, []), np.int64))
        lab, nw, src = _facing_evidence(tt, horizon_ms, restocks.get(fid, []), int(f.capacity) if f else 0,
                                        scans.get(fid, []), checks.get(fid, []), own_sales)
        staff[idx] = lab
        own = readings.get(fid, [])
        watched = _sensor_watched(tt, np.array([r[0] for r in own], np.int64), horizon_ms)
        # A stock-out the sensor saw (a zero reading at most a silence before the window's end and
        # not long before its start) is observed even when the sensor fell silent afterwards.
        zeros = np.sort(np.array([r[0] for r in own if r[1] is not None and r[1] <= 0], np.int64))
        last_zero = np.r_[-_INF, zeros][np.searchsorted(zeros, tt + horizon_ms, side="right")]
        watched |= (sensor_label[idx] > 0) & (last_zero > tt - SENSOR_SILENCE_MS)
        lab[watched] = sensor_label[idx][watched]
        nw[watched] = sensor_now[idx][watched]
        src[watched] = LABEL_SOURCES.index("sensor")
        label[idx], now[idx], source[idx] = lab, nw, src
    names = np.array(list(LABEL_SOURCES) + [None], dtype=object)
    return label, now, names[source], staff

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
    shelf had stock then, so it had stock at every moment since the last restock before it;
  - **ledger**: the units of a facing whose SKU has no other facing, counted from the restocks'
    ``units_added`` and the till's net sales (sales minus voids). Units only enter the shelf at a
    restock and leave it at least as fast as the till sells them (shrink only takes more), so at
    every moment ``x`` the facing holds at most ``capacity + added(s, x] - sold(s, x]`` for any
    earlier ``s`` (it held at most its capacity at ``s``) and at least ``sold(x, u] - added(x, u]``
    for any later ``u`` (what sold after ``x`` was on the shelf at ``x`` or came in after it).
    When the first bound reaches 0 at a sale, that sale took the last unit: empty until the next
    restock (a proof of a gap, as above; dropped when the till sells the SKU again before a
    restock, which contradicts it, or when a restock follows within ``RESTOCK_SLACK_MS``: a till
    and a handheld are not ordered that finely). When the second bound is above 0 at the end of
    the window and just before every restock inside it, the shelf had stock throughout: 0. No
    assumption about how full a restock leaves the shelf (staff fill partly, or a short backroom
    fills partly) and no count on the shelf is needed; a restock that was not scanned, a return put
    back on the shelf or a wrong planogram capacity would break it (a restock ``shelf_check``
    whose units are unknown only ends what the ledger can say).

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
import pyarrow.compute as pc


__all__ = ["evidence_labels", "SENSOR_SILENCE_MS", "EVIDENCE_MS", "RESTOCK_SLACK_MS", "LABEL_SOURCES"]

#: A live sensor reports at least every heartbeat (180 min by default); a longer silence
#: means nobody watched the shelf through it.
SENSOR_SILENCE_MS = 4 * 3_600_000
#: How far evidence reaches: a stock sighting counts for rows up to this long before it, a proof
#: of a gap dates the stock-out from a sale at most this long before, and keeps the facing empty
#: at most this long after. Bounded so an incremental lake run recomputes every label new evidence
#: can change (``cloud.lake.runner``: ``LABEL_REACH_DAYS``): a row depends only on evidence from
#: ``2 * EVIDENCE_MS`` before it to ``EVIDENCE_MS + H`` after it.
EVIDENCE_MS = 20 * 3_600_000
#: A ledger's proof of a gap that a restock ends within this is no proof: the unit the till rang up
#: just before the restock's scan may have been taken after the refill.
RESTOCK_SLACK_MS = 10 * 60_000
#: Units a ``shelf_check`` that restocked (units unknown) adds in the ledger: "as many as fit" (more
#: than a facing sells in any window the ledger looks at). Not larger: the ledger is one running
#: sum over a store's facings in float64, exact while it stays below 2**53 (2**33 such checks).
_UNKNOWN_FILL = float(2 ** 20)
#: Values of ``gold.features.label_source`` (NULL: nobody observed the label).
LABEL_SOURCES = ("sensor", "gap_scan", "restock", "till", "shelf_check", "ledger")
_INF = np.iinfo(np.int64).max // 4


_SHELF_CHECK, _TILL = LABEL_SOURCES.index("shelf_check"), LABEL_SOURCES.index("till")
_GAP_SCAN, _RESTOCK, _SENSOR = LABEL_SOURCES.index("gap_scan"), LABEL_SOURCES.index("restock"), LABEL_SOURCES.index("sensor")
_LEDGER = LABEL_SOURCES.index("ledger")


def _columns(table: pa.Table | None, cols: tuple[str, ...]) -> list[np.ndarray]:
    """``table``'s columns as numpy arrays (nulls: None in text, NaN in numbers); none when there is
    no table, no row, or a column is missing (a table written before the column existed)."""
    if table is None or table.num_rows == 0 or not set(cols) <= set(table.column_names):
        return [np.zeros(0, dtype=object) for _ in cols]
    return [np.asarray(table[c].to_numpy(zero_copy_only=False)) for c in cols]


def _numbers(values: np.ndarray) -> np.ndarray:
    """A numeric column of ``_columns`` as float64, nulls (None or NaN) as NaN."""
    if values.dtype == object:
        return np.array([np.nan if v is None else float(v) for v in values.tolist()], np.float64)
    return values.astype(np.float64)


def _index_in(table: pa.Table, col: str, values: np.ndarray) -> np.ndarray:
    """Per row, the index of ``table[col]`` (as text) in ``values``, -1 where absent or null."""
    found = pc.index_in(table[col].cast(pa.string()), value_set=pa.array([str(v) for v in values.tolist()], pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


class _Bands:
    """Times of many facings on one axis: facing ``i``'s instant ``x`` is ``i * width + (x - base)``,
    so one sorted array and ``searchsorted`` answer "the next / last event of the same facing"
    for every row at once (each facing's band holds every time the rules look at)."""

    def __init__(self, times: list[np.ndarray], n_facings: int, reach: int):
        allt = np.concatenate([np.asarray(x, np.int64) for x in times if len(x)] or [np.zeros(1, np.int64)])
        self.base = int(allt.min()) - reach
        self.width = int(allt.max()) - self.base + reach + 1
        if n_facings * self.width >= 2 ** 62:
            raise ValueError("facing times span too wide to share one axis")

    def key(self, fi: np.ndarray, x) -> np.ndarray:
        return np.asarray(fi, np.int64) * self.width + (np.asarray(x, np.int64) - self.base)

    def end(self, fi: np.ndarray) -> np.ndarray:
        """A key after every time of facing ``fi`` (infinity within the band)."""
        return (np.asarray(fi, np.int64) + 1) * self.width - 1


class _Events:
    """One kind of evidence of every facing, sorted by (facing, time[, tie])."""

    def __init__(self, bands: _Bands, fi: np.ndarray, ts: np.ndarray, *extra: np.ndarray):
        order = np.lexsort(tuple(reversed((fi, ts) + extra))) if len(fi) else np.zeros(0, np.int64)
        self.fi, self.ts = fi[order].astype(np.int64), ts[order].astype(np.int64)
        self.extra = [e[order] for e in extra]
        self.key = bands.key(self.fi, self.ts)

    def next_after(self, fi: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index, found) of the first event of facing ``fi`` with key > ``key``."""
        j = np.searchsorted(self.key, key, side="right")
        jc = np.minimum(j, max(len(self.key) - 1, 0))
        return jc, (j < len(self.key)) & (self.fi[jc] == fi) if len(self.key) else np.zeros(len(key), bool)

    def last_before(self, fi: np.ndarray, key: np.ndarray, side: str = "left") -> tuple[np.ndarray, np.ndarray]:
        """(index, found) of the last event of facing ``fi`` with key < ``key`` (``side='right'``: <=)."""
        j = np.searchsorted(self.key, key, side=side) - 1
        jc = np.maximum(j, 0)
        return jc, (j >= 0) & (self.fi[jc] == fi) if len(self.key) else np.zeros(len(key), bool)


class _Range:
    """Minimum or maximum of ``values[lo:hi]`` for many ranges at once (a sparse table)."""

    def __init__(self, values: np.ndarray, op):
        self.op, self.levels = op, [np.asarray(values, np.float64)]
        while 2 ** len(self.levels) <= len(values):
            prev, half = self.levels[-1], 2 ** (len(self.levels) - 1)
            self.levels.append(op(prev[:-half], prev[half:]))

    def __call__(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per range (``hi > lo`` required) the extreme of ``values[lo:hi]``."""
        k = np.floor(np.log2(np.maximum(hi - lo, 1))).astype(np.int64)
        out = np.empty(len(lo), np.float64)
        for level in np.unique(k).tolist():
            m = k == level
            out[m] = self.op(self.levels[level][lo[m]], self.levels[level][hi[m] - 2 ** level])
        return out


class _Ledger:
    """The units of every facing with its own sales: restocks in (``+units_added``; a restock
    check ``+_UNKNOWN_FILL``), net sales out, sorted by (facing, time; restocks first at a tie),
    with the running balance ``c`` per facing (0 before its first event)."""

    def __init__(self, bands: _Bands, fi: np.ndarray, ts: np.ndarray, delta: np.ndarray, is_sale: np.ndarray):
        self.ev = _Events(bands, fi, ts, is_sale.astype(np.int64), delta)
        self.is_sale, self.delta = self.ev.extra[0].astype(bool), self.ev.extra[1].astype(np.float64)
        total = np.cumsum(self.delta)
        first = np.searchsorted(self.ev.fi, self.ev.fi, side="left")
        self.c = total - np.where(first > 0, total[np.maximum(first - 1, 0)], 0.0)
        self.max, self.min = _Range(self.c, np.maximum), _Range(self.c, np.minimum)

    def balance_at(self, fi: np.ndarray, key: np.ndarray) -> np.ndarray:
        """The balance after every event of facing ``fi`` at or before ``key``."""
        j, found = self.ev.last_before(fi, key, side="right")
        return np.where(found, self.c[j] if len(self.c) else 0.0, 0.0)

    def empty_after(self, capacity: np.ndarray, bands: _Bands) -> np.ndarray:
        """Sales after which the facing held at most 0 units (the upper bound from any moment up
        to ``EVIDENCE_MS`` before), not contradicted by a next event that is a sale or void
        before a restock, nor followed by a restock within ``RESTOCK_SLACK_MS``."""
        ev, n = self.ev, len(self.c)
        if n == 0:
            return np.zeros(0, bool)
        since = bands.key(ev.fi, ev.ts - EVIDENCE_MS)
        lo = np.searchsorted(ev.key, since, side="right")
        most = np.maximum(self.max(lo, np.arange(n) + 1), self.balance_at(ev.fi, since))
        cap = capacity[ev.fi].astype(np.float64)
        proof = self.is_sale & (self.delta < 0) & (cap > 0) & (cap + self.c - most <= 0)
        nxt = np.minimum(np.arange(n) + 1, n - 1)
        has_next = (np.arange(n) + 1 < n) & (ev.fi[nxt] == ev.fi) & (ev.ts[nxt] - ev.ts < EVIDENCE_MS)
        contradicted = has_next & (self.is_sale[nxt] | (ev.ts[nxt] - ev.ts <= RESTOCK_SLACK_MS))
        return proof & ~contradicted

    def stocked(self, fi: np.ndarray, x: np.ndarray, until: np.ndarray, bands: _Bands) -> np.ndarray:
        """Whether facing ``fi`` held a unit at instant ``x``: what sold after ``x`` (up to
        ``until``) beyond what came in meanwhile was on the shelf at ``x``."""
        lo = np.searchsorted(self.ev.key, bands.key(fi, x), side="right")
        hi = np.searchsorted(self.ev.key, bands.key(fi, until), side="right")
        ok = hi > lo
        out = np.zeros(len(x), bool)
        if ok.any():
            out[ok] = self.balance_at(fi[ok], bands.key(fi[ok], x[ok])) - self.min(lo[ok], hi[ok]) > 0
        return out


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

    Every facing at once (the rules of the module docstring, per facing; ``_Bands`` keeps facings
    apart): a few sorted arrays and ``searchsorted`` calls per store, one Python step per proof.
    """
    n = len(t)
    names = np.array(list(LABEL_SOURCES) + [None], dtype=object)
    if n == 0:
        e = np.zeros(0, np.int64)
        return e, e.copy(), names[e], e.copy()
    t = np.asarray(t, np.int64)
    ids, fi = np.unique(np.asarray(facing).astype(str), return_inverse=True)
    fi = fi.reshape(-1)
    spec = {f.facing_id: f for f in plan}
    capacity = np.array([int(spec[i].capacity) if i in spec else 0 for i in ids.tolist()], np.int64)
    facings_of_sku: dict[str, int] = {}
    for f in plan:
        facings_of_sku[f.sku] = facings_of_sku.get(f.sku, 0) + 1
    # a facing whose SKU has no other facing: the till's sales of the SKU are its own
    own_sku = {spec[i].sku: k for k, i in enumerate(ids.tolist()) if i in spec and facings_of_sku.get(spec[i].sku) == 1}
    has_sales = np.zeros(len(ids), bool)
    has_sales[list(own_sku.values())] = True

    def of(table: str, cols: tuple[str, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
        _, *rest = _columns(events.get(table), ("facing_id",) + cols)
        k = _index_in(events.get(table), "facing_id", ids) if len(rest[0]) else np.zeros(0, np.int64)
        keep = k >= 0
        return k[keep], [r[keep] for r in rest]

    r_fi, (r_ts, r_units) = of("readings", ("ts", "units_est"))
    k_fi, (k_ts, k_added) = of("restocks", ("ts", "units_added"))
    g_fi, (g_ts,) = of("gaps", ("ts",))
    c_fi, (c_ts, c_out) = of("checks", ("ts", "outcome"))
    sku, p_ts, qty, kind = _columns(events.get("pos"), ("sku", "ts", "qty", "kind"))
    # (numpy over the columns, not a Python step per line: the same values, a tenth of the CPU)
    q = _numbers(qty)
    kind_or_sale = np.where(np.equal(kind, None) | (kind == ""), "sale", kind)  # a missing kind is a sale
    sold = (kind_or_sale == "sale") & (q > 0)
    own = np.full(len(ids) + 1, -1, np.int64)
    own_skus = list(own_sku)
    own[:len(own_skus)] = list(own_sku.values())
    s_fi = own[_index_in(events.get("pos"), "sku", np.array(own_skus, dtype=object))] if len(sku) else np.zeros(0, np.int64)
    s_keep = sold & (s_fi >= 0) if len(sku) else np.zeros(0, bool)
    added = np.array([a or 0 for a in k_added.tolist()], dtype=np.float64)
    k_ts = k_ts.astype(np.int64)
    bands = _Bands([t, r_ts, k_ts, g_ts, c_ts, p_ts], len(ids), 2 * EVIDENCE_MS + 2 * horizon_ms + SENSOR_SILENCE_MS + 2)
    # restocks (units added, or a check that restocked): the shelf's units only rise there
    restocked = np.array([o == "restocked" for o in c_out.tolist()], bool)
    bounds = _Events(bands, np.r_[k_fi[added > 0], c_fi[restocked]], np.r_[k_ts[added > 0], c_ts[restocked].astype(np.int64)])
    # stock sightings (ts, source): "was fine" checks and the facing's own sales; ties by source
    fine = np.array([o == "was_fine" for o in c_out.tolist()], bool)
    seen = _Events(bands, np.r_[c_fi[fine], s_fi[s_keep]], np.r_[c_ts[fine].astype(np.int64), p_ts[s_keep].astype(np.int64)],
                   np.r_[np.full(fine.sum(), _SHELF_CHECK), np.full(s_keep.sum(), _TILL)].astype(np.int64))
    till = _Events(bands, s_fi[s_keep], p_ts[s_keep].astype(np.int64))
    # the ledger of each facing with its own sales: restocks in, the till's sales and voids out
    line = ((kind_or_sale == "sale") | (kind_or_sale == "void")) & (s_fi >= 0) if len(sku) else np.zeros(0, bool)
    # signed as models.features.pos_line_qty signs them: a void gives back, whichever sign the register wrote
    units = np.where(np.isnan(q), 0.0, np.where(kind == "void", -np.abs(q), q))
    k_in, c_in = has_sales[k_fi] & (added > 0), has_sales[c_fi] & restocked
    ledger = _Ledger(bands, np.r_[k_fi[k_in], c_fi[c_in], s_fi[line]],
                     np.r_[k_ts[k_in], c_ts[c_in].astype(np.int64), p_ts[line].astype(np.int64)],
                     np.r_[added[k_in], np.full(c_in.sum(), _UNKNOWN_FILL), -units[line]],
                     np.r_[np.zeros(k_in.sum() + c_in.sum(), bool), np.ones(line.sum(), bool)])
    emptied = ledger.empty_after(capacity, bands)
    # proofs of a gap (ts, source): gap scans, just before a restock of a whole facing, just after
    # the sale that emptied a ledger
    full = (capacity[k_fi] > 0) & (added >= capacity[k_fi]) if len(k_fi) else np.zeros(0, bool)
    proofs = _Events(bands, np.r_[g_fi, k_fi[full], ledger.ev.fi[emptied]],
                     np.r_[g_ts.astype(np.int64), k_ts[full] - 1, ledger.ev.ts[emptied] + 1],
                     np.r_[np.full(len(g_fi), _GAP_SCAN), np.full(full.sum(), _RESTOCK),
                           np.full(emptied.sum(), _LEDGER)].astype(np.int64))

    # rows sorted by (facing, t): a proof labels a contiguous run of them
    order = np.lexsort((t, fi))
    rf, rt = fi[order], t[order]
    rkey = bands.key(rf, rt)
    label = np.full(n, -1, np.int64)
    now = np.full(n, -1, np.int64)
    source = np.full(n, -1, np.int64)
    # Negatives first; proofs override them (a direct sighting of a gap beats an inference).
    if len(seen.key):
        j, found = bounds.next_after(rf, rkey)  # the first restock after t
        limit = np.where(found, bounds.key[j] if len(bounds.key) else 0, bands.end(rf))
        last, has = seen.last_before(rf, limit)  # last sighting before that restock
        e = np.where(has, seen.ts[last], -_INF)
        neg = has & (e >= rt + horizon_ms) & (e <= rt + EVIDENCE_MS)
        label[neg] = 0
        source[neg] = seen.extra[0][last][neg]
        now[has & (e >= rt)] = 0
    # the ledger: stock at the window's end and just before every restock inside it
    todo = np.flatnonzero((label < 0) & has_sales[rf])
    if len(todo) and len(ledger.c):
        tf, tt = rf[todo], rt[todo]
        until = tt + EVIDENCE_MS
        ok = ledger.stocked(tf, tt + horizon_ms, until, bands)
        first = np.searchsorted(bounds.key, rkey[todo], side="right")
        inside = np.searchsorted(bounds.key, bands.key(tf, tt + horizon_ms), side="right") - first
        for k in range(int(inside.max(initial=0))):
            m = ok & (inside > k)
            x = bounds.ts[first[m] + k] - 1
            ok[m] = ledger.stocked(tf[m], x, until[m], bands)
        label[todo[ok]], source[todo[ok]] = 0, _LEDGER
        now[todo[ok & (now[todo] < 0)]] = 0
    if len(proofs.key):
        pf, p, psrc = proofs.fi, proofs.ts, proofs.extra[0]
        # empty until the next restock, sale or "was fine" check after the proof
        end = p + EVIDENCE_MS
        for ev in (bounds, seen):
            j, found = ev.next_after(pf, proofs.key)
            end = np.where(found, np.minimum(end, ev.ts[j] if len(ev.ts) else 0), end)
        # the last sale before a proof took the last unit (a facing with its own sales)
        j, found = till.last_before(pf, proofs.key)
        before = np.where(found, till.ts[j] if len(till.ts) else 0, 0)
        between = (np.searchsorted(bounds.key, proofs.key, side="right")
                   - np.searchsorted(bounds.key, bands.key(pf, before), side="right"))
        moved = has_sales[pf] & found & (before >= p - EVIDENCE_MS) & (between == 0)
        start = np.where(moved, before + 1, p)
        lo = np.searchsorted(rkey, bands.key(pf, start - horizon_ms), side="left")  # start <= t + H
        gap = np.searchsorted(rkey, bands.key(pf, start), side="left")  # start <= t
        hi = np.searchsorted(rkey, bands.key(pf, end), side="left")  # t < end
        for a, g, z, src in zip(lo.tolist(), gap.tolist(), hi.tolist(), psrc.tolist()):  # in (facing, ts, source) order
            label[a:z] = 1
            source[a:z] = src
            now[g:z] = 1
    staff = label.copy()
    # the sensor: its window [t, t + H] lies between two readings with no long silence inside
    readings = _Events(bands, r_fi, r_ts.astype(np.int64))
    watched = np.zeros(n, bool)
    if len(readings.key):
        same = np.r_[readings.fi[1:] == readings.fi[:-1], False]
        long_gap = np.r_[same[:-1] & (np.diff(readings.ts) > SENSOR_SILENCE_MS), False] if len(same) > 1 \
            else np.zeros(len(same), bool)
        gaps_before = np.r_[0, np.cumsum(long_gap.astype(np.int64))]
        lo, ok_lo = readings.last_before(rf, rkey, side="right")  # last reading at or before t
        hi, ok_hi = readings.next_after(rf, bands.key(rf, rt + horizon_ms) - 1)  # first at or after t + H
        watched = ok_lo & ok_hi & (gaps_before[hi] - gaps_before[lo] == 0)
        # A stock-out the sensor saw (a zero reading at most a silence before the window's end and
        # not long before its start) is observed even when the sensor fell silent afterwards.
        zero = _numbers(r_units) <= 0  # (NaN, a null, is not)
        zeros = _Events(bands, r_fi[zero], r_ts[zero].astype(np.int64))
        z, found = zeros.last_before(rf, bands.key(rf, rt + horizon_ms), side="right")
        last_zero = np.where(found, zeros.ts[z] if len(zeros.ts) else 0, -_INF)
        watched |= (sensor_label[order] > 0) & (last_zero > rt - SENSOR_SILENCE_MS)
    label = np.where(watched, sensor_label[order], label)
    now = np.where(watched, sensor_now[order], now)
    source = np.where(watched, _SENSOR, source)
    out = [np.empty(n, np.int64) for _ in range(4)]
    for o, v in zip(out, (label, now, source, staff)):
        o[order] = v
    return out[0], out[1], names[out[2]], out[3]

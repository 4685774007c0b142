"""Why shelves ran empty: ``gold.stockout_causes`` and the category manager's actions.

Each stock-out of ``gold.stockouts`` is given one cause from the evidence the lake holds, the
same four the store simulator records as ground truth (``docs/lake.md`` measures how often they
agree on held-out seeds):

- ``shelf_handling``: the backroom still had the product at the end of that day; the shelf was
  empty because the restock round came late, was skipped, or the facing is too small for its
  sales (``detail``: ``facing_too_small`` or ``restock_late``);
- ``misplaced``: the backroom was empty although a delivery of the product had just arrived and
  most of it never reached the shelf, or it was empty at the day's last round and the product was
  shelved again before any delivery (cases put in the wrong place, then found);
- ``phantom_inventory``: the backroom was empty while the store's stock record still counts
  units beyond the shelves (shrink it does not know about); a count fixes the record;
- ``backroom_empty``: the backroom was empty and the record agrees (the order was too small,
  missed or short-shipped).

**The book test** (the strongest evidence, when the store's ERP exports its nightly stock record,
``silver.stock_record``): the record never holds less than the store has (only unrecorded shrink
and misplaced cases set them apart), so ``book_units`` at the close of the stock-out's day, less
that day's returns (they reach the backroom after the close) and less what the product's facings
held at their last hourly reading (``gold.shelf_state``), bounds the backroom from above:

- nothing beyond the shelves (``book_nothing_beyond_shelf``): the backroom was empty and the
  record knew it: ``backroom_empty``, whatever the scans suggest, unless the product was seen
  shelved after the day before any delivery (then ``shelf_handling`` stands);
- units beyond the shelves (``+book_above_shelf``): the scans decide between stock still there
  (``shelf_handling``), misplaced cases and an empty backroom, which is then ``phantom_inventory``;
- a facing of the product without a reading that day widens the bound by its capacity; when the
  bound straddles zero, or there is no stock record, the scans decide alone and an empty backroom
  is told from phantom stock by the next delivery: a store that does not reorder the product
  believes it still has some (``+next_delivery_lacks_it``).

The evidence from handheld scans and shelf sensors:

- **restock rounds**: handheld restock scans of a store cluster into rounds (a gap of more than
  ``ROUND_GAP_MS`` starts a new one). A round that passes while a facing is empty and does not
  refill it shows the backroom was empty at that moment (staff refill every low facing they can);
- **restock scans of the product** between the end of the day and its next delivery show the
  backroom still had units at the end of the day;
- **deliveries** (receiving scans): what arrived before the stock-out and whether the store's next
  delivery carries the product;
- **flows between empty moments**: between two moments the product's backroom was empty, units
  delivered minus units shelved is what it held (less shrink). Shelving more than was delivered
  between the end of the day and the next empty moment shows stock at the end of the day; nothing
  delivered beyond what was shelved since the previous one shows none. Delivered units that were
  never shelved point to stock still there (only indirect signs of an empty backroom), to
  misplaced cases (a whole recent delivery) or to shrink the record does not know (a round saw
  the backroom empty: phantom inventory).

``confidence`` is the share of stock-outs with the same evidence path (``evidence``) that had
that cause on the training seeds (``bench/bench_causes.py`` prints it), so it is a calibrated
probability, not a score. Evidence is looked for up to ``EVIDENCE_DAYS`` before and after a
stock-out, so a run that recomputes the last ``EVIDENCE_DAYS`` gives the same table as a full run.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cloud.lake.tables import column_rows, conform

__all__ = ["CAUSES", "stockout_causes", "EVIDENCE_DAYS", "ROUND_GAP_MS", "CONFIDENCE"]

CAUSES = ("shelf_handling", "misplaced", "phantom_inventory", "backroom_empty")
_MIN = 60_000
_H = 3_600_000
_D = 86_400_000
#: Restock scans further apart than this belong to different rounds.
ROUND_GAP_MS = 15 * _MIN
#: Evidence window before and after a stock-out (days); also how far back an incremental run
#: recomputes causes.
EVIDENCE_DAYS = 7
#: A delivery counts as "just arrived" for a stock-out this many days before its day ends.
_RECENT_DELIVERY_DAYS = 4
#: Share of a recent delivery that must have reached the shelf for it to count as found.
_FOUND_SHARE = 0.5

#: evidence path -> share of training stock-outs with that path whose true cause was the one
#: assigned, shrunk towards that cause's precision by 10 stock-outs (seeds 101-103, 4 stores x
#: 300 SKUs x 28 days each, all facings with sensors, with and without the stock record;
#: ``python -m bench.bench_causes --train``). A path not seen there has no confidence (null).
CONFIDENCE: dict[str, float] = {
    "book_nothing_beyond_shelf": 0.988,
    "day_refill_short+delivered_units_not_shelved": 0.8139,
    "day_refill_short+delivered_units_not_shelved+book_above_shelf": 0.8319,
    "day_refill_short+next_delivery_has_it": 0.4987,
    "day_refill_short+next_delivery_has_it+book_above_shelf": 0.3265,
    "day_refill_short+next_delivery_lacks_it": 0.2405,
    "day_refill_short+next_delivery_lacks_it+book_above_shelf": 0.5234,
    "day_refill_short+no_next_delivery": 0.5341,
    "day_refill_short+no_next_delivery+book_above_shelf": 0.3648,
    "delivered_covers_shelved_before_next_empty+delivered_units_not_shelved": 0.6714,
    "delivered_covers_shelved_before_next_empty+delivered_units_not_shelved+book_above_shelf": 0.6847,
    "delivered_covers_shelved_before_next_empty+next_delivery_has_it": 0.6575,
    "delivered_covers_shelved_before_next_empty+next_delivery_has_it+book_above_shelf": 0.5396,
    "delivered_covers_shelved_before_next_empty+next_delivery_lacks_it": 0.4015,
    "delivered_covers_shelved_before_next_empty+next_delivery_lacks_it+book_above_shelf": 0.6938,
    "no_evidence": 0.7517,
    "no_evidence+book_above_shelf": 0.9082,
    "nothing_left_since_last_empty+delivery_not_shelved": 0.9214,
    "nothing_left_since_last_empty+delivery_not_shelved+book_above_shelf": 0.9311,
    "nothing_left_since_last_empty+next_delivery_has_it": 0.7333,
    "nothing_left_since_last_empty+next_delivery_has_it+book_above_shelf": 0.7635,
    "nothing_left_since_last_empty+next_delivery_lacks_it": 0.512,
    "nothing_left_since_last_empty+next_delivery_lacks_it+book_above_shelf": 0.8718,
    "nothing_left_since_last_empty+no_next_delivery": 0.7583,
    "nothing_left_since_last_empty+no_next_delivery+book_above_shelf": 0.574,
    "restocked_after_day": 0.9916,
    "restocked_after_day+book_above_shelf": 0.9939,
    "restocked_after_day+book_nothing_beyond_shelf": 0.7958,
    "restocked_without_delivery_after_empty_round": 0.9304,
    "restocked_without_delivery_after_empty_round+book_above_shelf": 0.9558,
    "round_passed_empty+delivery_not_shelved": 0.896,
    "round_passed_empty+delivery_not_shelved+book_above_shelf": 0.9042,
    "round_passed_empty+next_delivery_has_it": 0.7098,
    "round_passed_empty+next_delivery_has_it+book_above_shelf": 0.9147,
    "round_passed_empty+next_delivery_lacks_it": 0.4324,
    "round_passed_empty+next_delivery_lacks_it+book_above_shelf": 0.9146,
    "round_passed_empty+no_next_delivery": 0.7133,
    "round_passed_empty+no_next_delivery+book_above_shelf": 0.8291,
    "round_passed_empty+units_vanished": 0.5211,
    "round_passed_empty+units_vanished+book_above_shelf": 0.5718,
    "round_passed_this_facing+delivery_not_shelved": 0.9142,
    "round_passed_this_facing+delivery_not_shelved+book_above_shelf": 0.9248,
    "round_passed_this_facing+next_delivery_has_it": 0.822,
    "round_passed_this_facing+next_delivery_has_it+book_above_shelf": 0.8171,
    "round_passed_this_facing+no_next_delivery": 0.6311,
    "round_passed_this_facing+no_next_delivery+book_above_shelf": 0.7995,
    "shelved_more_than_delivered_before_next_empty": 0.9845,
    "shelved_more_than_delivered_before_next_empty+book_above_shelf": 0.9922,
}


def _local_offsets_ms(ts: np.ndarray, tz: str | None) -> np.ndarray:
    """UTC offsets (ms) of the time zone ``tz`` at the instants ``ts`` (epoch ms), in one
    conversion; 0 without a time zone or for an unknown one."""
    if not tz:
        return np.zeros(len(ts), np.int64)
    try:
        local = pc.local_timestamp(pa.array(ts, pa.timestamp("ms", tz))).cast(pa.int64())
        return local.to_numpy(zero_copy_only=False) - ts
    except ValueError:  # (ArrowInvalid) not in Arrow's time-zone database
        pass
    try:
        zone = ZoneInfo(tz)  # Python's own (e.g. the tzdata package where the OS has none)
    except (KeyError, ValueError):
        return np.zeros(len(ts), np.int64)
    return np.array([int(datetime.fromtimestamp(t / 1000, timezone.utc).astimezone(zone).utcoffset().total_seconds()
                         * 1000) for t in ts.tolist()], np.int64)


def _local_days(ts: list[int], tz: str | None) -> tuple[list[int], list[str]]:
    """The end (epoch ms) and the date (ISO) of the store's local day that contains each of
    ``ts`` (epoch ms), from one time-zone conversion of all of them."""
    t = np.asarray(ts, np.int64)
    off = _local_offsets_ms(t, tz)
    day = (t + off) // _D
    return ((day + 1) * _D - off).tolist(), day.astype("datetime64[D]").astype(str).tolist()


def _rounds(times: list[int]) -> list[int]:
    """Start times of restock rounds from the store's sorted restock scan times."""
    out: list[int] = []
    prev = None
    for t in times:
        if prev is None or t - prev > ROUND_GAP_MS:
            out.append(t)
        prev = t
    return out


def stockout_causes(stockouts: pa.Table, restocks: pa.Table | None, deliveries: pa.Table | None,
                    planogram: pa.Table | None = None, stores: pa.Table | None = None, *,
                    stock: pa.Table | None = None, shelf_state: pa.Table | None = None,
                    returns: pa.Table | None = None) -> pa.Table:
    """Cause, confidence and evidence of every stock-out (``gold.stockout_causes``).

    ``stock`` (``silver.stock_record``), ``shelf_state`` (``gold.shelf_state``) and ``returns``
    (``silver.pos_line`` rows of kind ``return``) give the book test; without them (a store whose
    ERP does not export its stock record) the causes come from the scans alone.
    """
    so_rows = column_rows(stockouts, ["store_id", "facing_id", "sku", "start_ms", "end_ms", "open_min",
                                "lost_sales_cents_est", "lost_units_est", "rate_per_h"])
    tz_of = dict(column_rows(stores, ["store_id", "timezone"]))
    plan = column_rows(planogram, ["store_id", "facing_id", "sku", "capacity"])
    capacity = {(s, f): c for s, f, _, c in plan}
    book = _Book(stock, shelf_state, returns, plan)
    by_store: dict[str, list[tuple]] = defaultdict(list)
    for r in so_rows:
        by_store[r[0]].append(r)
    rs_by_store: dict[str, list[tuple]] = defaultdict(list)
    for s, f, sku, ts, units in column_rows(restocks, ["store_id", "facing_id", "sku", "ts", "units_added"]):
        if ts is not None and (units or 0) > 0:
            rs_by_store[s].append((ts, f, sku, units))
    dl_by_store: dict[str, list[tuple]] = defaultdict(list)
    for s, sku, ts, units, did in column_rows(deliveries, ["store_id", "sku", "ts", "units", "delivery_id"]):
        if ts is not None:
            dl_by_store[s].append((ts, sku, units or 0, did))
    out: list[dict] = []
    for store, rows in by_store.items():
        out.extend(_store_causes(rows, sorted(rs_by_store.get(store, [])), sorted(dl_by_store.get(store, [])),
                                 capacity, tz_of.get(store), book))
    if not out:
        return conform("gold.stockout_causes", pa.table({"store_id": pa.array([], pa.string())}))
    return conform("gold.stockout_causes", pa.Table.from_pylist(out))


class _Book:
    """The book test: units the store's stock record holds beyond what its shelves hold at the
    close of a day (``book_units`` less the day's returns, which reach the backroom after the
    close, less the last hourly reading of every facing of the product that day)."""

    def __init__(self, stock: pa.Table | None, shelf_state: pa.Table | None, returns: pa.Table | None,
                 plan: list[tuple]) -> None:
        self.book = {(s, sku, d): b for s, d, sku, b in column_rows(stock, ["store_id", "date", "sku", "book_units"])
                     if b is not None}
        self.facings: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
        for s, f, sku, cap in plan:
            self.facings[(s, sku)].append((f, cap or 0))
        self.hours: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for s, f, h, u in column_rows(shelf_state, ["store_id", "facing_id", "hour_ms", "min_units"]):
            if h is not None and u is not None:
                self.hours[(s, f)].append((h, u))
        for v in self.hours.values():
            v.sort()
        self.returned: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for s, sku, ts, qty in column_rows(returns, ["store_id", "sku", "ts", "qty"]):
            if ts is not None:
                self.returned[(s, sku)].append((ts, -(qty or 0)))

    def beyond_shelf(self, store: str, sku: str, eod: int, date: str) -> tuple[int, int] | None:
        """Units the record holds beyond the shelves at the close of ``date`` (ending at ``eod``):
        ``(low, high)``, wide when a facing of the product has no reading that day (it may hold up
        to its capacity); ``None`` without a stock record of that day."""
        units = self.book.get((store, sku, date))
        if units is None:
            return None
        units -= sum(u for t, u in self.returned.get((store, sku), ()) if eod - _D <= t < eod)
        shelf, unknown = 0, 0
        for facing, cap in self.facings.get((store, sku), ()):
            hours = self.hours.get((store, facing), [])
            i = bisect_left(hours, (eod, -1)) - 1
            if i >= 0 and hours[i][0] >= eod - _D:
                shelf += hours[i][1]
            else:
                unknown += cap
        return units - shelf - unknown, units - shelf


def _units(moves: list[tuple[int, int]], after: int, until: int) -> int:
    """Units of ``(ts, units)`` moves with ``after < ts < until``."""
    return sum(u for t, u in moves if after < t < until)


def _flow(anchors: list[int], a: int, eod: int, shelved: list[tuple[int, int]], delivered: list[tuple[int, int]]
          ) -> tuple[str, str] | None:
    """The backroom at the end of the day from the product's flows between its empty moments.

    With the next moment the backroom was empty (``a2``): it held at least what was shelved minus
    what was delivered between the end of the day and ``a2``. With the previous one (``a0``): at most
    what was delivered minus what was shelved since (less shrink). ``None``: no such moment near.
    """
    a2 = anchors[a] if a < len(anchors) and anchors[a] <= eod + EVIDENCE_DAYS * _D else None
    if a2 is not None and _units(shelved, eod, a2) - _units(delivered, eod, a2) > 0:
        return "stock", "shelved_more_than_delivered_before_next_empty"
    a0 = anchors[a - 1] if a > 0 and anchors[a - 1] >= eod - EVIDENCE_DAYS * _D else None
    if a0 is not None and _units(delivered, a0, eod + 1) - _units(shelved, a0, eod + 1) <= 0:
        return "empty", "nothing_left_since_last_empty"
    if a2 is not None:
        return "empty", "delivered_covers_shelved_before_next_empty"
    return None


def _store_causes(rows: list[tuple], restocks: list[tuple], deliveries: list[tuple],
                  capacity: dict, tz: str | None, book: _Book) -> list[dict]:
    rounds = _rounds([r[0] for r in restocks])
    facing_rs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    sku_rs: dict[str, list[int]] = defaultdict(list)
    sku_units: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for ts, f, sku, units in restocks:
        facing_rs[f].append((ts, units))
        sku_rs[sku].append(ts)
        sku_units[sku].append((ts, units))
    sku_dl: dict[str, list[tuple[int, int]]] = defaultdict(list)
    store_dl: dict[str, tuple[int, set]] = {}
    for ts, sku, units, did in deliveries:
        sku_dl[sku].append((ts, units))
        first, skus = store_dl.get(did, (ts, set()))
        skus.add(sku)
        store_dl[did] = (min(first, ts), skus)
    dl_notes = sorted(store_dl.values(), key=lambda x: x[0])
    dl_times = [t for t, _ in dl_notes]
    last_seen = max([r[0] for r in restocks] + [d[0] for d in deliveries] +
                    [r[4] or r[3] for r in rows], default=0)

    # Pass 1: per stock-out, the refill and the rounds that passed it by; the product's anchors
    # (moments its backroom was known to be empty).
    first = []
    anchors: dict[str, list[int]] = defaultdict(list)
    for store, facing, sku, start, end, *_ in rows:
        limit = min(end if end is not None else last_seen, start + EVIDENCE_DAYS * _D)
        scans = facing_rs.get(facing, [])
        i = bisect_left(scans, (start, -1))
        refill = scans[i] if i < len(scans) and scans[i][0] <= limit + ROUND_GAP_MS else None
        until = refill[0] if refill else limit
        # Rounds that started after the shelf emptied and ended before the refill's round.
        passed = [t for t in rounds[bisect_right(rounds, start):bisect_left(rounds, until)] if until - t > ROUND_GAP_MS]
        anchors[sku].extend(passed)
        first.append((refill, passed))
    for v in anchors.values():
        v.sort()

    out = []
    eods, dates = _local_days([r[3] for r in rows], tz)
    for (store, facing, sku, start, end, open_min, lost_cents, lost_units, rate), (refill, passed), eod, date in zip(
            rows, first, eods, dates):
        horizon = eod + EVIDENCE_DAYS * _D
        dl = sku_dl.get(sku, [])
        dl_ts = [t for t, _ in dl]
        j = bisect_right(dl_ts, eod)
        next_sku_dl = dl_ts[j] if j < len(dl_ts) and dl_ts[j] <= horizon else None
        stop = next_sku_dl if next_sku_dl is not None else horizon
        # After the day: the product's first restock scan or empty-backroom anchor before its next delivery.
        rs_t = sku_rs.get(sku, [])
        k = bisect_right(rs_t, eod)
        next_rs = rs_t[k] if k < len(rs_t) and rs_t[k] < stop else None
        an = anchors.get(sku, [])
        a = bisect_right(an, eod)
        next_anchor = an[a] if a < len(an) and an[a] < stop else None
        # Within the day: an anchor after the product's last restock scan of the day.
        last_rs_day = rs_t[k - 1] if k > 0 and rs_t[k - 1] >= eod - _D else None
        day_anchor = an[a - 1] if a > 0 and an[a - 1] >= max(start, last_rs_day or 0) else None
        if next_rs is not None and (next_anchor is None or next_rs < next_anchor) and day_anchor is not None:
            # Empty at the day's last round, shelved again before any delivery: cases found.
            backroom, path = "found", "restocked_without_delivery_after_empty_round"
        elif next_rs is not None and (next_anchor is None or next_rs < next_anchor):
            backroom, path = "stock", "restocked_after_day"
        elif next_anchor is not None or day_anchor is not None:
            backroom, path = "empty", "round_passed_empty"
        elif passed:
            backroom, path = "empty", "round_passed_this_facing"
        elif (flow := _flow(an, a, eod, sku_units.get(sku, []), dl)) is not None:
            backroom, path = flow
        else:
            # No scan says either way: the day's last refill of this facing tells whether the
            # backroom could still fill it to capacity.
            mine = facing_rs.get(facing, [])
            q = bisect_right(mine, (eod, -1)) - 1
            cap = capacity.get((store, facing))
            # (a later scan of the product that day shows the backroom had more after it)
            later = q >= 0 and any(mine[q][0] < t <= eod for t in rs_t[bisect_right(rs_t, mine[q][0]):k])
            if q >= 0 and mine[q][0] >= start and cap is not None and mine[q][1] < cap and not later:
                backroom, path = "empty", "day_refill_short"
            else:
                backroom, path = "stock", "no_evidence"
        # The book test: nothing recorded beyond the shelves means nothing in the backroom (the
        # record never holds less than the store has), unless the product was seen shelved after
        # the day before any delivery; units recorded there while the scans say the backroom was
        # empty are phantom (or misplaced cases, which the record also counts).
        beyond = book.beyond_shelf(store, sku, eod, date)
        on_book = None
        if beyond is not None and beyond[1] <= 0 and path != "restocked_after_day":
            backroom, path, on_book = "book_empty", "book_nothing_beyond_shelf", "empty"
        elif beyond is not None and beyond[1] <= 0:
            on_book = "empty_but_shelved"
        elif beyond is not None and beyond[0] > 0:
            on_book = "above"
        detail = None
        if backroom == "book_empty":
            cause = "backroom_empty"
        elif backroom == "found":
            cause = "misplaced"
        elif backroom == "stock":
            cause = "shelf_handling"
            before = facing_rs.get(facing, [])
            b = bisect_left(before, (start, -1))
            cap = capacity.get((store, facing))
            full_before = b > 0 and cap is not None and before[b - 1][1] >= cap and start - before[b - 1][0] < 8 * _H
            detail = "facing_too_small" if full_before else "restock_late"
        else:
            # A delivery that arrived shortly before and mostly never reached the shelf.
            p = bisect_right(dl_ts, eod) - 1
            recent = dl[p] if p >= 0 and eod - dl[p][0] <= _RECENT_DELIVERY_DAYS * _D else None
            shelved = sum(u for t, u in sku_units.get(sku, []) if recent is not None and recent[0] <= t <= eod)
            n = bisect_right(dl_times, eod)
            next_note = dl_notes[n] if n < len(dl_notes) and dl_notes[n][0] <= horizon else None
            # Units that vanished from the backroom since the product's previous empty moment:
            # delivered minus shelved (shrink the store record does not know about).
            prev = an[a - 2] if day_anchor is not None and a >= 2 else (an[a - 1] if a >= 1 and day_anchor is None else None)
            vanished = None
            if prev is not None and eod - prev <= EVIDENCE_DAYS * _D:
                vanished = sum(u for t, u in dl if prev < t <= eod) - sum(u for t, u in sku_units.get(sku, []) if prev < t <= eod)
            not_shelved = recent is not None and recent[1] > 0 and shelved < _FOUND_SHARE * recent[1]
            unshelved = not_shelved or (vanished is not None and vanished > 0)
            if unshelved and not path.startswith(("round_passed", "nothing_left")):
                # Only indirect signs of an empty backroom, and delivered units it never shelved:
                # most likely still in the backroom (the round did not get to the facing).
                cause, path = "shelf_handling", path + "+delivered_units_not_shelved"
            elif not_shelved:
                cause, path = "misplaced", path + "+delivery_not_shelved"
            elif unshelved:
                # A round saw the backroom empty, yet delivered units were never shelved: shrink the
                # store record does not know about.
                cause, path = "phantom_inventory", path + "+units_vanished"
            elif next_note is None:
                cause, path = "backroom_empty", path + "+no_next_delivery"
            elif sku in next_note[1]:
                cause, path = "backroom_empty", path + "+next_delivery_has_it"
            else:
                cause, path = "phantom_inventory", path + "+next_delivery_lacks_it"
            if on_book == "above" and cause == "backroom_empty":
                cause = "phantom_inventory"
        if on_book in ("above", "empty_but_shelved"):
            path += "+book_above_shelf" if on_book == "above" else "+book_nothing_beyond_shelf"
        out.append(dict(store_id=store, facing_id=facing, sku=sku, start_ms=start, end_ms=end, cause=cause,
                        detail=detail, confidence=CONFIDENCE.get(path), evidence=path, rounds_passed=len(passed),
                        refill_ms=refill[0] if refill else None,
                        refill_wait_min=round((refill[0] - start) / _MIN, 2) if refill else None,
                        open_min=open_min, lost_units_est=lost_units, lost_sales_cents_est=lost_cents))
    return out

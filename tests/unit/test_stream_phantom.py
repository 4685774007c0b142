"""``phantom_inventory`` with the store system's stock record as side input (docs/stream.md).

Three stores live the same two days: a single-facing SKU's shelf empties on the first morning, two
deliveries come without it and a restock round after the second does not refill it. That is all
the hub shows, and the rule without the stock record flags every one of them. The nightly stock
record (CSV exports in a landing folder, read by ``StockRecordFiles``) tells them apart: store
``s1``'s book holds no unit of the SKU (an empty backroom, the store knows it is out), ``s2``'s
holds 6 (unrecorded shrink: phantom stock), ``s3`` exports no record (the rule without it judges).
"""

from __future__ import annotations

import copy
import json
import pickle
from types import SimpleNamespace

from cloud.stream.detectors import DetectorConfig, StoreWatch
from cloud.stream.stock import StockRecordFiles
from firmware_sim.store import DEFAULT_START_MS
from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS

T0 = DEFAULT_START_MS  # a UTC midnight
CFG = DetectorConfig()
PLAN = [SimpleNamespace(sku="A"), SimpleNamespace(sku="B")]


def _events(store: str) -> list[tuple]:
    """(ts, type, device, data) of one store's two and a half days, in time order."""
    ev = []
    for t in range(T0, T0 + 2 * DAY_MS + 14 * HOUR_MS, 10 * MINUTE_MS):
        a = 3.0 if t < T0 + 8 * HOUR_MS else 0.0  # facing A empties at 08:00 on day 0 and stays empty
        ev.append((t, "shelf.reading", f"shelf-{store}-fA", {"facing_id": f"{store}-fA", "sku": "A", "units_est": a}))
        ev.append((t + 1, "shelf.reading", f"shelf-{store}-fB", {"facing_id": f"{store}-fB", "sku": "B", "units_est": 5.0}))
        ev.append((t + 2, "pos.line", f"pos-{store}-r01", {"txn_id": f"t{t}", "sku": "B", "qty": 1, "kind": "sale",
                                                          "price_cents": 100}))
    for day in (1, 2):  # deliveries without A, then a restock round that cannot refill A
        t = T0 + day * DAY_MS + 9 * HOUR_MS
        ev.append((t + 3, "inventory.delivery", f"hh-{store}", {"delivery_id": f"d{day}", "sku": "B", "units": 12}))
        ev.append((t + HOUR_MS, "shelf.restock", f"hh-{store}", {"facing_id": f"{store}-fB", "sku": "B", "units_added": 4}))
    return sorted(ev, key=lambda e: e[0])


def _write_records(folder, books: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for store, book_a in books.items():
        lines = ["date,store_id,sku,book_units,counted_units"]
        for day in ("2026-01-05", "2026-01-06"):  # days 0 and 1 (T0 is 2026-01-05)
            lines += [f"{day},{store},A,{book_a},", f"{day},{store},B,20,"]
        (folder / f"stock_record_{store}.csv").write_text("\n".join(lines) + "\n")


def _replay(watch: StoreWatch, events: list[tuple], stock, start: int, end: int) -> list[dict]:
    """Feed the events in [start, end) and tick every 5 minutes, as the job does."""
    rows, i = [], 0
    for t in range(start, end, 5 * MINUTE_MS):
        while i < len(events) and events[i][0] <= t:
            ts, etype, device, data = events[i]
            if ts > start - 5 * MINUTE_MS:  # what the ticks before ``start`` did not take
                rows += watch.observe(etype, device, ts, data, CFG)
            i += 1
        rows += watch.tick(t, CFG, stock)
    return [r for r in rows if r["kind"] == "phantom_inventory"]


def _run(store: str, stock, until: int = T0 + 2 * DAY_MS + 14 * HOUR_MS) -> list[dict]:
    watch = StoreWatch(store)
    watch.start(T0, PLAN)
    return _replay(watch, _events(store), stock, T0, until)


def test_the_stock_record_tells_phantom_stock_from_an_empty_backroom_the_hub_cannot(tmp_path):
    _write_records(tmp_path / "erp" / "stock", {"s1": 0, "s2": 6})
    stock = StockRecordFiles(tmp_path / "erp")

    # Without the record (the previous rule) every store is flagged: the hub shows the same story.
    for store in ("s1", "s2", "s3"):
        assert [r["subject"] for r in _run(store, None)] == [f"{store}-fA"]

    assert _run("s1", stock) == []  # book 0: the backroom is empty and the store knows it
    (flag,) = _run("s2", stock)  # book 6 beyond an empty shelf: units the store does not have
    ev = json.loads(flag["evidence"])
    assert flag["subject"] == "s2-fA" and ev["stock_record"] == {
        "date": "2026-01-06", "book_units": 6, "returned_that_day": 0.0, "beyond_shelf": 6.0}
    assert flag["since_ms"] == T0 + 8 * HOUR_MS and flag["first_seen"] >= T0 + 2 * DAY_MS + 10 * HOUR_MS
    (none,) = _run("s3", stock)  # no record of the store: the rule without it, and it says so
    assert json.loads(none["evidence"])["stock_record"] == "none"


def test_a_replay_from_a_snapshot_looks_up_the_record_the_first_run_saw(tmp_path):
    _write_records(tmp_path / "erp", {"s2": 6})
    events = _events("s2")
    watch = StoreWatch("s2")
    watch.start(T0, PLAN)
    cut = T0 + DAY_MS + 12 * HOUR_MS  # after day 0's record was looked up
    first = _replay(watch, events, StockRecordFiles(tmp_path / "erp"), T0, cut)
    snapshot = pickle.dumps(watch)
    assert first == [] and watch.book_day == T0 // DAY_MS and watch.book == {"A": 6, "B": 20}
    end = T0 + 2 * DAY_MS + 14 * HOUR_MS
    straight = _replay(copy.deepcopy(watch), events, StockRecordFiles(tmp_path / "erp"), cut, end)
    replayed = _replay(pickle.loads(snapshot), events, StockRecordFiles(tmp_path / "erp"), cut, end)
    assert [r["subject"] for r in straight] == ["s2-fA"] and replayed == straight


def test_the_landing_folder_reader_takes_a_re_export_skips_bad_rows_and_sees_files_that_land_later(tmp_path):
    import os

    folder = tmp_path / "erp"
    folder.mkdir()
    (folder / "stock_record_s1.csv").write_text(
        "date,store_id,sku,book_units\n2026-01-05,s1,A,4\n2026-01-05,s1,B,x\n05/01/2026,s1,C,1\n")
    stock = StockRecordFiles(folder)
    assert stock.book("s1", "2026-01-05") == {"A": 4}
    (folder / "stock_record_s1_v2.csv").write_text("date,store_id,sku,book_units\n2026-01-05,s1,A,1\n2026-01-06,s1,A,0\n")
    os.utime(folder / "stock_record_s1_v2.csv", ns=(2**62, 2**62))  # written after the first
    assert stock.book("s1", "2026-01-05") == {"A": 4}  # a date already asked is not scanned for again
    assert stock.book("s1", "2026-01-06") == {"A": 0}  # a new date is: the file that landed is read
    assert stock.book("s1", "2026-01-05") == {"A": 1} == StockRecordFiles(folder).book("s1", "2026-01-05")  # re-export wins
    assert stock.book("s2", "2026-01-06") is None

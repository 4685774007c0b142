"""gold.stockout_causes: each cause from its evidence, and agreement with the simulator's truth."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cloud.lake.causes import CAUSES, stockout_causes

H = 3_600_000
D = 24 * H
DAY0 = 1_767_571_200_000  # 2026-01-05 00:00 UTC


def _stockout(start, end, facing="f1", sku="A"):
    return {"store_id": "s1", "facing_id": facing, "sku": sku, "start_ms": start, "end_ms": end, "open_min": 60.0,
            "lost_sales_cents_est": 100.0, "lost_units_est": 1.0, "rate_per_h": 1.0}


def _classify(stockouts, restocks, deliveries, book=None, shelf=None, returns=(), tz=None):
    """``book``: {(date, sku): book units}; ``shelf``: {(facing, hour_ms): min units} (gold.shelf_state);
    ``tz``: the store's time zone (none: UTC)."""
    plan = pa.Table.from_pylist([{"store_id": "s1", "facing_id": f, "sku": s, "capacity": 6}
                                 for f, s in (("f1", "A"), ("f2", "B"), ("f3", "A"))])
    rs = pa.Table.from_pylist([{"store_id": "s1", "facing_id": f, "sku": s, "ts": t, "units_added": u}
                               for f, s, t, u in restocks])
    dl = pa.Table.from_pylist([{"store_id": "s1", "sku": s, "ts": t, "units": u, "delivery_id": did}
                               for s, t, u, did in deliveries])
    stock = state = ret = None
    if book is not None:
        stock = pa.Table.from_pylist([{"store_id": "s1", "date": d, "sku": s, "book_units": u, "counted_units": None}
                                      for (d, s), u in book.items()])
        state = pa.Table.from_pylist([{"store_id": "s1", "facing_id": f, "hour_ms": h, "min_units": u}
                                      for (f, h), u in shelf.items()])
        ret = pa.Table.from_pylist([{"store_id": "s1", "sku": s, "ts": t, "qty": -1} for s, t in returns],
                                   schema=pa.schema([("store_id", pa.string()), ("sku", pa.string()),
                                                     ("ts", pa.int64()), ("qty", pa.int64())]))
    stores = pa.Table.from_pylist([{"store_id": "s1", "timezone": tz}]) if tz else None
    return stockout_causes(pa.Table.from_pylist(stockouts), rs, dl, plan, stores, stock=stock, shelf_state=state,
                           returns=ret).to_pylist()


def test_a_shelf_refilled_from_a_backroom_that_still_had_stock_is_shelf_handling():
    # Empty 10:00, refilled 13:00; next morning the product is restocked again before any delivery.
    rows = _classify([_stockout(DAY0 + 10 * H, DAY0 + 13 * H)],
                     [("f1", "A", DAY0 + 13 * H, 6), ("f1", "A", D + DAY0 + 7 * H, 3)], [])
    assert [r["cause"] for r in rows] == ["shelf_handling"]
    assert rows[0]["evidence"] == "restocked_after_day" and rows[0]["confidence"] > 0.9
    assert rows[0]["refill_wait_min"] == 180.0 and rows[0]["rounds_passed"] == 0


def test_a_round_passing_an_empty_shelf_then_a_delivery_with_the_product_is_backroom_empty():
    # Empty 10:00; the 13:00 round refills another facing only; the next delivery carries A.
    rows = _classify([_stockout(DAY0 + 10 * H, DAY0 + D + 7 * H)],
                     [("f2", "B", DAY0 + 13 * H, 4), ("f1", "A", DAY0 + D + 7 * H, 6)],
                     [("A", DAY0 + D + 5 * H, 24, "d2"), ("B", DAY0 + D + 5 * H, 12, "d2")])
    assert rows[0]["cause"] == "backroom_empty" and rows[0]["rounds_passed"] == 1


def test_an_empty_backroom_the_store_does_not_reorder_is_phantom_inventory():
    rows = _classify([_stockout(DAY0 + 10 * H, None)],
                     [("f2", "B", DAY0 + 13 * H, 4)],
                     [("B", DAY0 + D + 5 * H, 12, "d2")])
    assert rows[0]["cause"] == "phantom_inventory"
    assert rows[0]["evidence"].endswith("next_delivery_lacks_it")


def test_a_recent_delivery_that_never_reached_the_shelf_is_misplaced():
    rows = _classify([_stockout(DAY0 + 10 * H, None)],
                     [("f2", "B", DAY0 + 13 * H, 4), ("f1", "A", DAY0 - D + 7 * H, 2)],
                     [("A", DAY0 - D + 5 * H, 24, "d1"), ("A", DAY0 + D + 5 * H, 24, "d2")])
    assert rows[0]["cause"] == "misplaced"


# The stock record: 2026-01-05 is DAY0's date; f1 and f3 hold product A, the last hour of the day is 23:00.
LAST_HOUR = DAY0 + 23 * H


def test_a_book_with_nothing_beyond_the_shelves_is_an_empty_backroom_even_if_the_store_did_not_reorder():
    # scans alone say phantom (the next delivery lacks A); the book holds only the 2 units on f3
    stockout = [_stockout(DAY0 + 10 * H, None)]
    scans = ([("f2", "B", DAY0 + 13 * H, 4)], [("B", DAY0 + D + 5 * H, 12, "d2")])
    assert _classify(stockout, *scans)[0]["cause"] == "phantom_inventory"
    rows = _classify(stockout, *scans, book={("2026-01-05", "A"): 2}, shelf={("f1", LAST_HOUR): 0, ("f3", LAST_HOUR): 2})
    assert rows[0]["cause"] == "backroom_empty" and rows[0]["evidence"] == "book_nothing_beyond_shelf"
    assert rows[0]["confidence"] > 0.9


def test_a_book_above_the_shelves_while_a_round_found_the_backroom_empty_is_phantom_inventory():
    # scans alone say backroom_empty (a round passed the empty facing, the next delivery has A)
    stockout = [_stockout(DAY0 + 10 * H, DAY0 + D + 7 * H)]
    scans = ([("f2", "B", DAY0 + 13 * H, 4), ("f1", "A", DAY0 + D + 7 * H, 6)],
             [("A", DAY0 + D + 5 * H, 24, "d2"), ("B", DAY0 + D + 5 * H, 12, "d2")])
    assert _classify(stockout, *scans)[0]["cause"] == "backroom_empty"
    book = {("2026-01-05", "A"): 5}
    rows = _classify(stockout, *scans, book=book, shelf={("f1", LAST_HOUR): 0, ("f3", LAST_HOUR): 1})
    assert rows[0]["cause"] == "phantom_inventory" and rows[0]["evidence"].endswith("+book_above_shelf")
    # the same book, but a facing of A has no reading that day: it may hold the 5 (capacity 6), no verdict
    rows = _classify(stockout, *scans, book=book, shelf={("f1", LAST_HOUR): 0, ("f3", LAST_HOUR - 2 * D): 1})
    assert rows[0]["cause"] == "backroom_empty" and "book" not in rows[0]["evidence"]
    # a unit returned that day reached the backroom after the close: 1 beyond the shelf is no phantom
    rows = _classify(stockout, *scans, book={("2026-01-05", "A"): 2}, shelf={("f1", LAST_HOUR): 0, ("f3", LAST_HOUR): 1},
                     returns=[("A", DAY0 + 15 * H)])
    assert rows[0]["cause"] == "backroom_empty" and rows[0]["evidence"] == "book_nothing_beyond_shelf"


def test_units_shelved_after_the_day_outweigh_a_book_that_shows_none():
    rows = _classify([_stockout(DAY0 + 10 * H, DAY0 + 13 * H)],
                     [("f1", "A", DAY0 + 13 * H, 6), ("f1", "A", D + DAY0 + 7 * H, 3)], [],
                     book={("2026-01-05", "A"): 3}, shelf={("f1", LAST_HOUR): 3, ("f3", LAST_HOUR): 0})
    assert rows[0]["cause"] == "shelf_handling" and rows[0]["evidence"] == "restocked_after_day+book_nothing_beyond_shelf"


def test_the_book_of_the_stores_local_day_is_read_on_a_day_the_clocks_go_forward():
    # Berlin, 2026-03-29: 02:00 local became 03:00. Empty at 10:00 local (08:00 UTC); the day's
    # record holds only the 2 units on f3, read at 23:00 local (21:00 UTC). The scans alone say phantom.
    day = DAY0 + 83 * D  # 2026-03-29 00:00 UTC
    stockout = [_stockout(day + 8 * H, None)]
    scans = ([("f2", "B", day + 13 * H, 4)], [("B", day + D + 5 * H, 12, "d2")])
    shelf = {("f1", day + 21 * H): 0, ("f3", day + 21 * H): 2}
    assert _classify(stockout, *scans, tz="Europe/Berlin")[0]["cause"] == "phantom_inventory"
    rows = _classify(stockout, *scans, book={("2026-03-29", "A"): 2}, shelf=shelf, tz="Europe/Berlin")
    assert rows[0]["cause"] == "backroom_empty" and rows[0]["evidence"] == "book_nothing_beyond_shelf"
    # the day before's record is not that day's
    rows = _classify(stockout, *scans, book={("2026-03-28", "A"): 2}, shelf=shelf, tz="Europe/Berlin")
    assert rows[0]["cause"] == "phantom_inventory"


def test_no_stockouts_give_an_empty_table_with_the_schema():
    out = stockout_causes(pa.table({"store_id": pa.array([], pa.string())}), None, None)
    assert out.num_rows == 0 and "confidence" in out.column_names


@pytest.mark.slow
def test_causes_agree_with_the_simulators_truth_far_above_the_majority_class(tmp_path):
    from bench.bench_causes import evaluate

    result = evaluate([105], stores=2, skus=120, days=14)  # neither training nor held out
    assert result["matched"] > 300
    assert set(result["true_causes"]) <= set(CAUSES)
    assert result["accuracy"] >= 0.8 and result["accuracy"] > result["majority_baseline"] + 0.25
    # the stock record is what tells phantom stock from an empty backroom
    scans_only = result["without_stock_record"]
    assert result["accuracy"] > scans_only["accuracy"] + 0.05
    assert result["per_cause_recall"]["phantom_inventory"] > scans_only["per_cause_recall"]["phantom_inventory"] + 0.3

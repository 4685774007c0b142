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


def _classify(stockouts, restocks, deliveries):
    plan = pa.Table.from_pylist([{"store_id": "s1", "facing_id": f, "sku": s, "capacity": 6}
                                 for f, s in (("f1", "A"), ("f2", "B"), ("f3", "A"))])
    rs = pa.Table.from_pylist([{"store_id": "s1", "facing_id": f, "sku": s, "ts": t, "units_added": u}
                               for f, s, t, u in restocks])
    dl = pa.Table.from_pylist([{"store_id": "s1", "sku": s, "ts": t, "units": u, "delivery_id": did}
                               for s, t, u, did in deliveries])
    return stockout_causes(pa.Table.from_pylist(stockouts), rs, dl, plan).to_pylist()


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


def test_no_stockouts_give_an_empty_table_with_the_schema():
    out = stockout_causes(pa.table({"store_id": pa.array([], pa.string())}), None, None)
    assert out.num_rows == 0 and "confidence" in out.column_names


@pytest.mark.slow
def test_causes_agree_with_the_simulators_truth_far_above_the_majority_class(tmp_path):
    from bench.bench_causes import evaluate

    result = evaluate([301], stores=2, skus=120, days=14)
    assert result["matched"] > 300
    assert set(result["true_causes"]) <= set(CAUSES)
    assert result["accuracy"] > result["majority_baseline"] + 0.15

"""Master data and sales exports on real Delta tables: bad files never empty or corrupt silver."""

from __future__ import annotations

import pytest

from cloud.synth import write_master_csvs
from cloud.wiring import CloudSettings, build_cloud


@pytest.fixture
def cloud(tmp_path):
    return build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite")))


def _results(cloud, table: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in cloud.storage.read("silver.expectation_results").to_pylist():
        if r["table_name"] == table:
            out[r["expectation"]] = out.get(r["expectation"], 0) + r["failed"]
    return out


def test_a_products_file_with_every_price_broken_does_not_empty_silver_products(cloud, tmp_path):
    write_master_csvs(tmp_path / "m1", stores=2, facings=200)
    cloud.ingest_batch(tmp_path / "m1")
    cloud.transform()
    assert cloud.storage.read("silver.products").num_rows == 200
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "products_v2.csv").write_text(
        "sku,name,price_cents\n" + "".join(f"sku-{i:04d},P{i},n/a\n" for i in range(200)))
    cloud.ingest_batch(tmp_path / "m2")
    report = cloud.transform()
    products = cloud.storage.read("silver.products")
    assert products.num_rows == 200 and set(products["source_file"].to_pylist()) == {"products.csv"}
    q = [r for r in cloud.storage.read("silver.quarantine").to_pylist() if r["target_table"] == "silver.products"]
    assert len(q) == 200 and all(r["reasons"] == "snapshot_rejected,bad_number" for r in q)
    assert report["quarantined"] == 200
    assert _results(cloud, "silver.products")["snapshot_accepted"] == 1


def test_sales_exports_are_validated_cell_by_cell(cloud, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "sales_1.csv").write_text(
        "date,store_id,sku,units,revenue_cents\n"
        "2026-11-28,s001,sku-1,5,500\n"        # good
        "2026-11-28,s001,sku-2,3,x\n"          # revenue not a number
        "2026-11-28,,sku-3,1,100\n"            # empty store: no key
        "02/07/2026,s001,sku-4,1,100\n"        # not an ISO date
        "not-a-date,s001,sku-5,1,100\n"
        "2026-02-30,s001,sku-6,1,100\n"        # no such day
        "2026-11-28,s001,sku-7,-2,100\n"       # net of returns but revenue positive: signs disagree
        "2026-11-28,s001,sku-10,-1,-150\n"     # a day with only a return: net -1 unit, kept (issue 14 QA)
        "2026-11-28,s001,sku-11,0,40\n"        # a sale and a return at another price: net 0 units, 40 cents
        "2026-11-28,s001,sku-8,2.5,100\n"      # units not an integer: not rounded to 3
        "2026-11-28,s001,sku-9,1,100\n"        # duplicate key: the later row wins
        "2026-11-28,s001,sku-9,4,400\n")
    cloud.ingest_batch(tmp_path / "x")
    cloud.transform()
    rows = {r["sku"]: (r["units"], r["revenue_cents"]) for r in cloud.storage.read("silver.sales_daily").to_pylist()}
    assert rows == {"sku-1": (5, 500), "sku-9": (4, 400), "sku-10": (-1, -150), "sku-11": (0, 40)}
    q = sorted((r["raw"].split('"sku": "')[1][:5], r["reasons"]) for r in cloud.storage.read("silver.quarantine").to_pylist())
    assert q == [("sku-2", "bad_number"), ("sku-3", "missing_key"), ("sku-4", "bad_date"), ("sku-5", "bad_date"),
                 ("sku-6", "bad_date"), ("sku-7", "revenue_sign"), ("sku-8", "bad_number"), ("sku-9", "duplicate_key")]
    assert _results(cloud, "silver.sales_daily") == {"missing_key": 1, "bad_number": 2, "negative_units": 0,
                                                     "revenue_sign": 1, "bad_date": 3, "duplicate_key": 1}


def test_a_sales_file_does_not_add_empty_commits_to_the_snapshot_tables(cloud, tmp_path):
    write_master_csvs(tmp_path / "m", stores=1, facings=2)
    cloud.ingest_batch(tmp_path / "m")
    cloud.transform()
    before = {t: cloud.storage.version(t) for t in ("silver.stores", "silver.products", "silver.planogram")}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sales_1.csv").write_text("date,store_id,sku,units\n2026-11-28,s001,sku-0000,5\n")
    cloud.ingest_batch(tmp_path / "s")
    cloud.transform()
    assert {t: cloud.storage.version(t) for t in before} == before
    assert cloud.storage.read("silver.sales_daily").num_rows == 1


def test_the_nightly_stock_record_is_validated_and_a_reexported_day_replaces_its_rows(cloud, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "stock_record_s001.csv").write_text(
        "date,store_id,sku,book_units,counted_units\n"
        "2026-11-28,s001,sku-1,12,\n"          # not counted that night: null
        "2026-11-28,s001,sku-2,-3,\n"          # a book may run below zero
        "2026-11-28,s001,sku-3,9,7\n"          # counted: shrink found
        "2026-11-28,s001,sku-4,5,-1\n"         # a count cannot be negative
        "2026-11-28,s001,sku-5,,2\n"           # no book
        "2026-11-31,s001,sku-6,1,\n"           # no such day
        "2026-11-29,s001,sku-1,10,\n")
    cloud.ingest_batch(tmp_path / "a")
    cloud.transform()
    rows = {(r["date"], r["sku"]): (r["book_units"], r["counted_units"])
            for r in cloud.storage.read("silver.stock_record").to_pylist()}
    assert rows == {("2026-11-28", "sku-1"): (12, None), ("2026-11-28", "sku-2"): (-3, None),
                    ("2026-11-28", "sku-3"): (9, 7), ("2026-11-29", "sku-1"): (10, None)}
    assert _results(cloud, "silver.stock_record") == {"missing_key": 0, "bad_number": 1, "negative_units": 1,
                                                      "revenue_sign": 0, "bad_date": 1, "duplicate_key": 0}
    # the ERP re-exports the 29th: its rows are replaced, the 28th stays
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "stock_record_s001_v2.csv").write_text(
        "date,store_id,sku,book_units,counted_units\n2026-11-29,s001,sku-1,8,8\n")
    cloud.ingest_batch(tmp_path / "b")
    cloud.transform()
    rows = {(r["date"], r["sku"]): (r["book_units"], r["counted_units"])
            for r in cloud.storage.read("silver.stock_record").to_pylist()}
    assert rows[("2026-11-29", "sku-1")] == (8, 8) and len(rows) == 4

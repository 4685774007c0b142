"""``bi_category_actions``: what the dashboard tells a category manager to do."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from cloud.lake.tables import schema_of
from cloud.warehouse import BI_VIEWS, warehouse_name

MIDNIGHT = 1_773_014_400_000  # 2026-03-09 00:00 UTC
H = 3_600_000


def _table(con, name: str, rows: list[dict]) -> None:
    schema = schema_of(name)
    table = pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for r in rows], schema=schema)
    con.register("incoming", table)
    con.execute(f"CREATE TABLE {warehouse_name(name)} AS SELECT * FROM incoming")
    con.unregister("incoming")


def test_restock_earlier_never_names_an_hour_the_store_is_closed():
    # Shelves found empty at the first readings after midnight (or emptied after closing) cost
    # sales only from opening time: the advice used to read "restock round 00:00 / 01:00".
    con = duckdb.connect()
    _table(con, "silver.stores", [dict(store_id="s1", timezone="Europe/Amsterdam", currency="EUR",
                                       open_hour=8.0, close_hour=21.0)])
    _table(con, "silver.products", [])
    late = dict(store_id="s1", sku="k1", cause="shelf_handling", detail="restock_late", confidence=0.9,
                open_min=60.0, lost_sales_cents_est=100.0, refill_wait_min=90.0)
    starts = {"f1": MIDNIGHT + 1 * H,            # 02:00 in Amsterdam: before opening
              "f2": MIDNIGHT + 13 * H,           # 14:00 local, while open
              "f3": MIDNIGHT + 21 * H + H // 2}  # 22:30 local: after closing, empty at the next opening
    # f4 was already empty at its facing's first reading (issue 14): when it emptied is unknown,
    # so it names no round to move
    starts["f4"] = MIDNIGHT + 13 * H
    _table(con, "gold.stockout_causes", [dict(late, facing_id=f, start_ms=t) for f, t in starts.items()])
    _table(con, "gold.stockouts", [dict(store_id="s1", facing_id=f, sku="k1", start_ms=t, start_censored=f == "f4")
                                   for f, t in starts.items()])
    con.execute(f"CREATE VIEW bi_category_actions AS {BI_VIEWS['bi_category_actions']}")
    rows = con.execute("SELECT hour_local, stockouts FROM bi_category_actions "
                       "WHERE action = 'restock_earlier' ORDER BY hour_local").fetchall()
    assert rows == [(8, 2), (14, 1)]

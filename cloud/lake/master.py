"""Bronze batch rows -> silver master data, daily sales history and the nightly stock record (pure SQL over Arrow).

Every CSV cell is text; the one set of rules in ``cloud.lake.casts`` types it (the same in
DuckDB and Spark). A row is rejected, with every reason that applies, when:

* ``missing_key``: a key column is empty (an empty ``store_id`` is no key);
* ``bad_number``: a number column holds text that is not a number under those rules
  (``revenue_cents`` "x", ``units`` "2.5"), or a required number is empty;
* ``negative_units``: a stock count (``counted_units``) < 0. Daily sales ``units`` may be
  negative: exports are net of returns, so a day with only a return is -1 unit (rejecting it
  overstated net sales);
* ``revenue_sign``: sales ``revenue_cents`` of the opposite sign to non-zero ``units`` (net
  units and net revenue move together; 0 units may carry revenue: a sale and a return at
  different prices);
* ``bad_date``: a sales or stock ``date`` that is not a real ``YYYY-MM-DD`` date;
* ``duplicate_key``: another row of the same file has the same key (the file's last row wins,
  the others are rejected, not silently dropped).

Stores, products and planogram keep only the newest file of the kind (a master data file is a
full snapshot), and only when it is mostly valid: a snapshot with fewer than
``SNAPSHOT_MIN_VALID`` of its rows valid is rejected whole (``snapshot_rejected``) and the
previous snapshot stays, so one broken export cannot empty ``silver.products``. Daily exports
(``DAILY``: sales, stock record) keep every file's rows; a re-exported day replaces its rows.
"""

from __future__ import annotations

import pyarrow as pa

from cloud.lake.casts import sql_double, sql_int, sql_text
from cloud.lake.engine import Engine
from cloud.lake.tables import conform

__all__ = ["MASTER_SQL", "MASTER_CHECKS", "SNAPSHOT_MIN_VALID", "DAILY", "silver_master"]

_TRUE = "('true', '1', 'yes', 'y', 't')"
_FALSE = "('false', '0', 'no', 'n', 'f')"
#: share of a snapshot file's rows that must be valid for it to replace the table
SNAPSHOT_MIN_VALID = 0.5
#: row-level checks, in the order their names appear in ``reasons``
MASTER_CHECKS = ("missing_key", "bad_number", "negative_units", "revenue_sign", "bad_date", "duplicate_key")


def _f(name: str) -> str:
    return f"JSON_STR(record_json, '$.{name}')"


# column -> (kind of value, required)
_COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "silver.stores": {"store_id": ("text", True), "name": ("text", False), "region": ("text", False),
                      "timezone": ("text", False), "currency": ("text", False), "open_hour": ("double", False),
                      "close_hour": ("double", False)},
    "silver.products": {"sku": ("text", True), "name": ("text", False), "category": ("text", False),
                        "price_cents": ("int", True), "unit_weight_g": ("double", False), "pack_size": ("int", False)},
    "silver.planogram": {"store_id": ("text", True), "facing_id": ("text", True), "sku": ("text", True),
                         "capacity": ("int", True), "has_sensor": ("bool", False), "aisle": ("text", False),
                         "bay": ("text", False), "shelf": ("int", False)},
    "silver.sales_daily": {"date": ("text", True), "store_id": ("text", True), "sku": ("text", True),
                           "units": ("int", True), "revenue_cents": ("int", False)},
    "silver.stock_record": {"date": ("text", True), "store_id": ("text", True), "sku": ("text", True),
                            "book_units": ("int", True), "counted_units": ("int", False)},
}
#: daily exports: every file's rows are kept (a re-exported day replaces its rows), not snapshots
DAILY = ("silver.sales_daily", "silver.stock_record")


def _typed(col: str, kind: str) -> str:
    raw = _f(col)
    if kind == "int":
        return sql_int(raw)
    if kind == "double":
        return sql_double(raw)
    if kind == "bool":
        return (f"CASE WHEN lower(TRIM({raw})) IN {_TRUE} THEN TRUE "
                f"WHEN lower(TRIM({raw})) IN {_FALSE} THEN FALSE END")
    return sql_text(raw)


def _projection(table: str) -> str:
    return ",\n        ".join(f"{_typed(c, k)} AS {c}" for c, (k, _req) in _COLUMNS[table].items())


#: silver table -> (bronze kind, key columns, typed projection)
MASTER_SQL: dict[str, tuple[str, tuple[str, ...], str]] = {
    "silver.stores": ("stores", ("store_id",), _projection("silver.stores")),
    "silver.products": ("products", ("sku",), _projection("silver.products")),
    "silver.planogram": ("planogram", ("store_id", "facing_id"), _projection("silver.planogram")),
    "silver.sales_daily": ("sales_daily", ("date", "store_id", "sku"), _projection("silver.sales_daily")),
    "silver.stock_record": ("stock_daily", ("date", "store_id", "sku"), _projection("silver.stock_record")),
}


def _checks(table: str, key: tuple[str, ...]) -> dict[str, str]:
    """check name -> SQL condition that holds for a good row (over the typed columns ``t``)."""
    numbers = [f"({c} IS NOT NULL OR " + (f"FALSE)" if req else f"{sql_text(_f(c))} IS NULL)")
               for c, (k, req) in _COLUMNS[table].items() if k in ("int", "double")]
    out = {"missing_key": " AND ".join(f"{k} IS NOT NULL" for k in key),
           "bad_number": " AND ".join(numbers) or "TRUE"}
    if table == "silver.sales_daily":
        out["revenue_sign"] = ("units IS NULL OR revenue_cents IS NULL OR NOT ((units > 0 AND revenue_cents < 0) "
                               "OR (units < 0 AND revenue_cents > 0))")
    if table == "silver.stock_record":
        # a book may run below zero (sold more than it knew of); a count cannot
        out["negative_units"] = "counted_units IS NULL OR counted_units >= 0"
    if table in DAILY:
        out["bad_date"] = ("date IS NULL OR (regexp_replace(date, '^[0-9]{4}-[0-9]{2}-[0-9]{2}$', '') = '' "
                           "AND TRY_CAST(date AS DATE) IS NOT NULL)")
    out["duplicate_key"] = "dup_rank = 1"
    return out


def silver_master(engine: Engine, batch: pa.Table, table: str) -> tuple[pa.Table, pa.Table, bool, int]:
    """Typed rows of one master table from new batch rows: ``(rows, rejected, accepted, checked)``.

    ``accepted`` is False when the newest snapshot file was rejected whole (then ``rows`` is
    empty and must not replace the table). Daily sales keep every file's rows, the newest file
    winning per key. ``rejected`` carries the reasons (comma-separated ``MASTER_CHECKS``);
    ``checked`` is the number of file rows examined.
    """
    kind, key, projection = MASTER_SQL[table]
    snapshot = table not in DAILY
    files = "SELECT source_file, MAX(ingested_at) AS loaded_at FROM batch WHERE kind = '{k}' GROUP BY source_file".format(k=kind)
    newest = f"(SELECT source_file FROM ({files}) f ORDER BY loaded_at DESC, source_file DESC LIMIT 1)"
    where = f"kind = '{kind}'" + (f" AND source_file = {newest}" if snapshot else "")
    keys = ", ".join(key)
    checks = _checks(table, key)
    flags = ", ".join(f"COALESCE({cond}, FALSE) AS ok_{name}" for name, cond in checks.items())
    reasons = " || ".join(f"CASE WHEN ok_{n} THEN '' ELSE '{n},' END" for n in checks)
    all_ok = " AND ".join(f"ok_{n}" for n in checks)
    checked = engine.run(
        f"""WITH t AS (SELECT {projection}, source_file, ingested_at, row_number, record_json FROM batch WHERE {where}),
            d AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY source_file, {keys} ORDER BY row_number DESC) AS dup_rank FROM t)
        SELECT *, {flags} FROM d""",
        {"batch": batch},
    )
    env = {"checked": checked}
    good = engine.run(
        f"""SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys}
                   ORDER BY ingested_at DESC, source_file DESC, row_number DESC) AS rn
                   FROM checked WHERE {all_ok}) r WHERE rn = 1""", env)
    accepted = not snapshot or checked.num_rows == 0 or good.num_rows >= SNAPSHOT_MIN_VALID * checked.num_rows
    bad_rows = f"NOT ({all_ok})" if accepted else "TRUE"
    prefix = "" if accepted else "snapshot_rejected,"
    rejected = engine.run(
        f"""SELECT 'bronze.batch_records' AS source_table, '{table}' AS target_table,
                   CAST(NULL AS STRING) AS device_id, CAST(NULL AS BIGINT) AS seq,
                   TRIM(TRAILING ',' FROM '{prefix}' || {reasons}) AS reasons, record_json AS raw,
                   concat(source_file, '#', CAST(row_number AS STRING)) AS row_key
            FROM checked WHERE {bad_rows}""", env)
    rows = conform(table, good) if accepted else conform(table, good.slice(0, 0))
    return rows, rejected, accepted, checked.num_rows

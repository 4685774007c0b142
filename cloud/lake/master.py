"""Bronze batch rows -> silver master data and daily sales history (pure SQL over Arrow)."""

from __future__ import annotations

import pyarrow as pa

from cloud.lake.engine import Engine
from cloud.lake.tables import conform

__all__ = ["MASTER_SQL", "silver_master"]

_TRUE = "('true', '1', 'yes', 'y', 't')"
_FALSE = "('false', '0', 'no', 'n', 'f')"

#: silver table -> (bronze kind, key columns, typed projection)
MASTER_SQL: dict[str, tuple[str, tuple[str, ...], str]] = {
    "silver.stores": ("stores", ("store_id",), """
        JSON_STR(record_json, '$.store_id') AS store_id, JSON_STR(record_json, '$.name') AS name,
        JSON_STR(record_json, '$.region') AS region, JSON_STR(record_json, '$.timezone') AS timezone,
        JSON_STR(record_json, '$.currency') AS currency,
        TRY_CAST(JSON_STR(record_json, '$.open_hour') AS DOUBLE) AS open_hour,
        TRY_CAST(JSON_STR(record_json, '$.close_hour') AS DOUBLE) AS close_hour"""),
    "silver.products": ("products", ("sku",), """
        JSON_STR(record_json, '$.sku') AS sku, JSON_STR(record_json, '$.name') AS name,
        JSON_STR(record_json, '$.category') AS category,
        TRY_CAST(JSON_STR(record_json, '$.price_cents') AS BIGINT) AS price_cents,
        TRY_CAST(JSON_STR(record_json, '$.unit_weight_g') AS DOUBLE) AS unit_weight_g,
        TRY_CAST(JSON_STR(record_json, '$.pack_size') AS BIGINT) AS pack_size"""),
    "silver.planogram": ("planogram", ("store_id", "facing_id"), f"""
        JSON_STR(record_json, '$.store_id') AS store_id, JSON_STR(record_json, '$.facing_id') AS facing_id,
        JSON_STR(record_json, '$.sku') AS sku, TRY_CAST(JSON_STR(record_json, '$.capacity') AS BIGINT) AS capacity,
        CASE WHEN lower(JSON_STR(record_json, '$.has_sensor')) IN {_TRUE} THEN TRUE
             WHEN lower(JSON_STR(record_json, '$.has_sensor')) IN {_FALSE} THEN FALSE END AS has_sensor,
        JSON_STR(record_json, '$.aisle') AS aisle, JSON_STR(record_json, '$.bay') AS bay,
        TRY_CAST(JSON_STR(record_json, '$.shelf') AS BIGINT) AS shelf"""),
    "silver.sales_daily": ("sales_daily", ("date", "store_id", "sku"), """
        JSON_STR(record_json, '$.date') AS date, JSON_STR(record_json, '$.store_id') AS store_id,
        JSON_STR(record_json, '$.sku') AS sku, TRY_CAST(JSON_STR(record_json, '$.units') AS BIGINT) AS units,
        TRY_CAST(JSON_STR(record_json, '$.revenue_cents') AS BIGINT) AS revenue_cents"""),
}


def silver_master(engine: Engine, batch: pa.Table, table: str) -> tuple[pa.Table, pa.Table]:
    """Typed rows of one master table from new batch rows: ``(rows, rejected)``.

    Stores, products and planogram keep only the newest file of the kind (a master data file is
    a full snapshot); daily sales keep every file's rows, the newest file winning per key.
    Rows with a missing key or an unreadable number are rejected (quarantined by the runner).
    """
    kind, key, projection = MASTER_SQL[table]
    snapshot = table != "silver.sales_daily"
    keys_ok = " AND ".join(f"{k} IS NOT NULL" for k in key)
    numbers = {"silver.products": "price_cents IS NOT NULL", "silver.planogram": "capacity IS NOT NULL",
               "silver.sales_daily": "units IS NOT NULL"}.get(table, "TRUE")
    files = "SELECT source_file, MAX(ingested_at) AS loaded_at FROM batch WHERE kind = '{k}' GROUP BY source_file".format(k=kind)
    newest = f"(SELECT source_file FROM ({files}) f ORDER BY loaded_at DESC, source_file DESC LIMIT 1)"
    where = f"kind = '{kind}'" + (f" AND source_file = {newest}" if snapshot else "")
    typed = f"""SELECT {projection}, source_file, ingested_at, row_number, record_json FROM batch WHERE {where}"""
    rows = engine.run(
        f"""WITH t AS ({typed}),
            ranked AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY {', '.join(key)}
                       ORDER BY ingested_at DESC, source_file DESC, row_number DESC) AS rn
                       FROM t WHERE {keys_ok} AND {numbers})
        SELECT * FROM ranked WHERE rn = 1""",
        {"batch": batch},
    )
    rejected = engine.run(
        f"""SELECT 'bronze.batch_records' AS source_table, '{table}' AS target_table,
                   CAST(NULL AS STRING) AS device_id, CAST(NULL AS BIGINT) AS seq,
                   CASE WHEN NOT ({keys_ok}) THEN 'missing_key' ELSE 'bad_number' END AS reasons,
                   record_json AS raw
            FROM ({typed}) t WHERE NOT ({keys_ok} AND {numbers})""",
        {"batch": batch},
    )
    return conform(table, rows), rejected

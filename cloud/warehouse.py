"""The warehouse: DuckDB over gold and silver locally; Synapse serverless views in production.

``build_warehouse`` materializes the current version of every gold and silver table into a
DuckDB file (DuckDB cannot load its Delta extension offline, so tables are read through
``DeltaTable.to_pyarrow_dataset()``), then creates the Power BI-ready views (``bi_*``):
friendly names, timestamps next to epoch-ms columns, stores and products joined in.

``synapse_ddl`` generates the T-SQL for Synapse serverless SQL from the same table
definitions (``cloud.lake.tables``): one ``OPENROWSET(... FORMAT = 'DELTA')`` view per table
with an explicit ``WITH`` column list, and the same ``bi_*`` views.
"""

from __future__ import annotations

from pathlib import Path

from cloud.lake.storage import LakeStorage
from cloud.lake.tables import TABLES, TSQL, TableDef, schema_of

__all__ = ["BI_VIEWS", "WAREHOUSE_TABLES", "build_warehouse", "synapse_ddl", "warehouse_name"]


def warehouse_name(table: str) -> str:
    """``gold.hourly_sales`` -> ``gold_hourly_sales`` (DuckDB / T-SQL object name)."""
    return table.replace(".", "_")


def _ts(col: str, dialect: str) -> str:
    if dialect == "duckdb":
        return f"epoch_ms({col})"
    return f"DATEADD(SECOND, {col} / 1000, CAST('1970-01-01' AS DATETIME2))"


def _bi_views(dialect: str) -> dict[str, str]:
    ts = lambda c: _ts(c, dialect)  # noqa: E731
    return {
        "bi_stockouts": f"""
SELECT s.store_id, st.name AS store_name, s.facing_id, s.sku, p.name AS product_name, p.category,
       {ts('s.start_ms')} AS started_at, {ts('s.end_ms')} AS ended_at, s.duration_min, s.ongoing,
       s.lost_units_est, s.lost_sales_cents_est / 100.0 AS lost_sales, s.alerted, {ts('s.alert_ms')} AS alerted_at,
       s.alert_lead_min
FROM gold_stockouts s
LEFT JOIN silver_stores st ON st.store_id = s.store_id
LEFT JOIN silver_products p ON p.sku = s.sku""",
        "bi_hourly_sales": f"""
SELECT h.store_id, st.name AS store_name, h.sku, p.name AS product_name, p.category, {ts('h.hour_ms')} AS hour,
       h.units_sold, h.net_units, h.net_revenue_cents / 100.0 AS net_revenue, h.lines, h.txns
FROM gold_hourly_sales h
LEFT JOIN silver_stores st ON st.store_id = h.store_id
LEFT JOIN silver_products p ON p.sku = h.sku""",
        "bi_alert_quality": f"""
SELECT m.store_id, {ts('m.day_ms')} AS day, m.scorer, m.alerts, m.true_alerts, m.stockouts, m.caught,
       m.precision, m.recall, m.mean_lead_min
FROM gold_model_performance m""",
        "bi_fleet_health": f"""
SELECT f.store_id, f.device_id, {ts('f.day_ms')} AS day, f.events, f.missing, {ts('f.last_seen_ms')} AS last_seen,
       f.battery_min, f.buffer_rows, f.unsent_rows, f.evictions, f.model_version
FROM gold_fleet_status f""",
        "bi_shelf_state": f"""
SELECT s.store_id, s.facing_id, s.sku, {ts('s.hour_ms')} AS hour, s.readings, s.min_units, s.avg_units, s.minutes_empty
FROM gold_shelf_state s""",
    }


#: Power BI-ready views (DuckDB dialect) by name.
BI_VIEWS = _bi_views("duckdb")
WAREHOUSE_TABLES = [t for t in TABLES.values() if t.layer in ("silver", "gold")]


def build_warehouse(storage: LakeStorage, path: str | Path) -> Path:
    """(Re)build the DuckDB warehouse file from the lake's current table versions.

    Missing lake tables become empty tables, so the views always exist.

    Raises:
        StorageError: a lake table could not be read.
    """
    import duckdb
    import pyarrow as pa

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for tdef in WAREHOUSE_TABLES:
            rows = storage.read(tdef.name)
            if rows is None:
                rows = pa.Table.from_batches([], schema=schema_of(tdef.name))
            con.register("incoming", rows)
            con.execute(f"CREATE TABLE {warehouse_name(tdef.name)} AS SELECT * FROM incoming")
            con.unregister("incoming")
            con.execute(f"COMMENT ON TABLE {warehouse_name(tdef.name)} IS {_sql_text(tdef.doc)}")
            for col in tdef.columns:  # the data dictionary's text, as in the Delta field metadata
                con.execute(f"COMMENT ON COLUMN {warehouse_name(tdef.name)}.\"{col.name}\" "
                            f"IS {_sql_text(tdef.field_description(col))}")
        for name, sql in BI_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {sql}")
    finally:
        con.close()
    tmp.replace(path)  # readers never see a half-built warehouse
    return path


def _sql_text(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _tsql_table(tdef: TableDef, location: str) -> str:
    cols = ",\n        ".join(f"[{c.name}] {TSQL[c.type]}" for c in tdef.columns)
    return (
        f"CREATE OR ALTER VIEW [{warehouse_name(tdef.name)}] AS\n"
        f"SELECT * FROM OPENROWSET(\n"
        f"    BULK '{location.rstrip('/')}/{tdef.layer}/{tdef.short}/',\n"
        f"    DATA_SOURCE = 'gondola_lake',\n"
        f"    FORMAT = 'DELTA'\n"
        f") WITH (\n        {cols}\n) AS [rows];"
    )


def synapse_ddl(location: str = "") -> str:
    """T-SQL for Synapse serverless: a view per silver/gold table plus the ``bi_*`` views.

    ``location`` is the lake folder relative to the ``gondola_lake`` external data source.
    Statements are separated by ``GO`` lines, as SQL tools expect.
    """
    parts = [
        "-- Generated by cloud.warehouse.synapse_ddl from cloud/lake/tables.py; do not edit.",
        "-- Needs: CREATE EXTERNAL DATA SOURCE gondola_lake WITH (LOCATION = 'abfss://<fs>@<account>.dfs.core.windows.net');",
    ]
    for tdef in WAREHOUSE_TABLES:
        parts.append(_tsql_table(tdef, location or ""))
    for name, sql in _bi_views("tsql").items():
        parts.append(f"CREATE OR ALTER VIEW [{name}] AS{sql};")
    return "\nGO\n".join(parts) + "\nGO\n"



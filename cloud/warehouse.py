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
from cloud.lake.tables import (ALERT_KIND, EMPTY_AT_ALERT, EMPTY_NOW, FORECAST, MEASURE_ROWS, MEASURES, TABLES, TableDef,
                               conform, schema_of, stockout_days_sql, tsql_type)

__all__ = ["BI_VIEWS", "EMPTY_NOW", "FORECAST", "WAREHOUSE_TABLES", "build_warehouse", "synapse_ddl", "warehouse_name"]


def warehouse_name(table: str) -> str:
    """``gold.hourly_sales`` -> ``gold_hourly_sales`` (DuckDB / T-SQL object name)."""
    return table.replace(".", "_")


def _ts(col: str, dialect: str) -> str:
    """Epoch ms -> timestamp (UTC). T-SQL: days and milliseconds added separately, so neither
    argument of ``DATEADD`` (an ``int``) overflows for any date, and milliseconds are kept."""
    if dialect == "duckdb":
        return f"epoch_ms({col})"
    return (f"DATEADD(MILLISECOND, CAST({col} % 86400000 AS INT), "
            f"DATEADD(DAY, CAST({col} / 86400000 AS INT), CAST('1970-01-01' AS DATETIME2(3))))")


def _q(name: str, dialect: str) -> str:
    """A delimited identifier: ``[name]`` in T-SQL, ``"name"`` in DuckDB."""
    return f"[{name}]" if dialect == "tsql" else f'"{name}"'


#: IANA zone -> Windows zone name, for T-SQL ``AT TIME ZONE`` (which knows only the latter).
WINDOWS_ZONES = {
    "UTC": "UTC", "Etc/UTC": "UTC", "Europe/London": "GMT Standard Time", "Europe/Dublin": "GMT Standard Time",
    "Europe/Lisbon": "GMT Standard Time", "Europe/Amsterdam": "W. Europe Standard Time",
    "Europe/Berlin": "W. Europe Standard Time", "Europe/Rome": "W. Europe Standard Time",
    "Europe/Vienna": "W. Europe Standard Time", "Europe/Zurich": "W. Europe Standard Time",
    "Europe/Stockholm": "W. Europe Standard Time", "Europe/Oslo": "W. Europe Standard Time",
    "Europe/Paris": "Romance Standard Time", "Europe/Brussels": "Romance Standard Time",
    "Europe/Madrid": "Romance Standard Time", "Europe/Copenhagen": "Romance Standard Time",
    "Europe/Warsaw": "Central European Standard Time", "Europe/Prague": "Central Europe Standard Time",
    "Europe/Helsinki": "FLE Standard Time", "Europe/Athens": "GTB Standard Time",
    "America/New_York": "Eastern Standard Time", "America/Chicago": "Central Standard Time",
    "America/Denver": "Mountain Standard Time", "America/Los_Angeles": "Pacific Standard Time",
}


def _local(col: str, tz: str, dialect: str) -> str:
    """Epoch ms -> the store's wall-clock time (``tz``: the store's IANA zone column)."""
    if dialect == "duckdb":
        return f"timezone(COALESCE({tz}, 'UTC'), to_timestamp({col} / 1000.0))"
    zones = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in WINDOWS_ZONES.items())
    return f"CAST(({_ts(col, dialect)}) AT TIME ZONE 'UTC' AT TIME ZONE (CASE {tz} {zones} ELSE 'UTC' END) AS DATETIME2(3))"


def _date(expr: str, dialect: str) -> str:
    return f"CAST({expr} AS DATE)"


def _measures(table: str | None, group: str, dialect: str) -> str:
    """``bi_kpis`` (``group`` empty) or per ``group``: every ``MEASURES`` figure, one definition each."""
    q = lambda n: _q(n, dialect)  # noqa: E731
    by_table: dict[str, list] = {}
    for m in MEASURES:
        by_table.setdefault(m.table, []).append(m)
    parts = []
    for i, (tname, ms) in enumerate(by_table.items()):
        cols = ", ".join(f"{m.sql} AS {q(m.name)}" for m in ms)
        rows = warehouse_name(tname) + (f" WHERE {MEASURE_ROWS[tname]}" if tname in MEASURE_ROWS else "")
        if group:
            parts.append((f"t{i}", f"SELECT {group}, {cols} FROM {rows} GROUP BY {group}", ms))
        else:
            parts.append((f"t{i}", f"SELECT {cols} FROM {rows}", ms))
    select = ", ".join(f"{alias}.{q(m.name)}" for alias, _, ms in parts for m in ms)
    if not group:
        body = " CROSS JOIN ".join(f"({sql}) {alias}" for alias, sql, _ in parts)
        return f"SELECT {select} FROM {body}"
    keys = f"SELECT {group} FROM {warehouse_name('silver.stores')}"
    joins = " ".join(f"LEFT JOIN ({sql}) {alias} ON {alias}.{group} = k.{group}" for alias, sql, _ in parts)
    return (f"SELECT k.{group}, st.currency, {select} FROM ({keys}) k {joins} "
            f"LEFT JOIN {warehouse_name('silver.stores')} st ON st.store_id = k.{group}")


def _hour(expr: str, dialect: str) -> str:
    return f"hour({expr})" if dialect == "duckdb" else f"DATEPART(HOUR, {expr})"


def _actions(dialect: str) -> str:
    """What a category manager does about the causes (``bi_category_actions``), one row per target:

    ``enlarge_facing`` (a facing emptied within hours of a full refill: too small for its sales),
    ``restock_earlier`` (shelves waited for a late round while the store was open: the local hour
    they emptied, or the opening hour for shelves empty before the store opened),
    ``count_inventory`` (phantom stock: the store record counts units that are not there).
    """
    q = lambda n: _q(n, dialect)  # noqa: E731
    emptied = _hour(_local("c.start_ms", "st.timezone", dialect), dialect)
    # A shelf that emptied while the store was closed cost sales from opening time: the round to
    # move is the one before opening.
    hour = (f"CASE WHEN {emptied} < st.open_hour OR {emptied} >= st.close_hour "
            f"THEN CAST(FLOOR(st.open_hour) AS INT) ELSE {emptied} END")
    common = ("COUNT(*) AS stockouts, SUM(c.open_min) AS open_min, SUM(c.lost_sales_cents_est) / 100.0 AS lost_sales, "
              "MAX(st.currency) AS currency, AVG(c.refill_wait_min) AS mean_refill_wait_min, "
              "AVG(c.confidence) AS mean_confidence")
    base = ("FROM gold_stockout_causes c LEFT JOIN silver_stores st ON st.store_id = c.store_id "
            "LEFT JOIN silver_products p ON p.sku = c.sku")
    # the hour a shelf emptied is unknown for a stock-out already empty at its facing's first
    # evidence (gold.stockouts.start_censored): no round to move for it
    known = ("LEFT JOIN gold_stockouts so ON so.store_id = c.store_id AND so.facing_id = c.facing_id "
             "AND so.start_ms = c.start_ms")
    return f"""
SELECT c.store_id, 'enlarge_facing' AS {q('action')}, c.facing_id, c.sku, MAX(p.name) AS product_name,
       MAX(p.category) AS category, CAST(NULL AS INT) AS hour_local, {common}
{base} WHERE c.cause = 'shelf_handling' AND c.detail = 'facing_too_small' GROUP BY c.store_id, c.facing_id, c.sku
UNION ALL
SELECT c.store_id, 'restock_earlier' AS {q('action')}, CAST(NULL AS VARCHAR(128)) AS facing_id,
       CAST(NULL AS VARCHAR(128)) AS sku, CAST(NULL AS VARCHAR(256)) AS product_name,
       CAST(NULL AS VARCHAR(128)) AS category, {hour} AS hour_local, {common}
{base} {known} WHERE c.cause = 'shelf_handling' AND c.detail = 'restock_late' AND c.open_min > 0
  AND NOT COALESCE(so.start_censored, FALSE) GROUP BY c.store_id, {hour}
UNION ALL
SELECT c.store_id, 'count_inventory' AS {q('action')}, CAST(NULL AS VARCHAR(128)) AS facing_id, c.sku,
       MAX(p.name) AS product_name, MAX(p.category) AS category, CAST(NULL AS INT) AS hour_local, {common}
{base} WHERE c.cause = 'phantom_inventory' GROUP BY c.store_id, c.sku"""


def _alert_quality(dialect: str) -> str:
    """``bi_alert_quality``: per store, UTC day, scorer and alert kind, from ``gold_alert_outcomes``
    (which keeps the kind; ``gold_model_performance`` does not).

    Each kind is judged by its own promise: a forecast (``empty_within_h``) is right when its
    shelf was empty within the horizon (``outcome`` is not ``false_alarm``) and *warned ahead*
    when it was raised before the shelf emptied (``empty_after``), its lead time then counting;
    an ``empty_now`` is right only when its shelf was empty when it was raised (``already_empty``:
    one raised before the shelf emptied said "empty" of a shelf that was not; on a facing without a
    sensor, ``empty_seen``: a gap scan or a full refill found it empty, nothing sold since). ``alerts``
    counts judged alerts only and ``precision`` is over them; ``unobserved`` counts those on facings
    without a sensor that no evidence judged (``gold.alert_outcomes``). The day's stock-outs are
    not here: they belong to the store-day, not to a scorer or a kind, and repeated on each
    scorer's row a total over scorers counted each several times (``bi_stockout_recall``).
    """
    ts = lambda c: _ts(c, dialect)  # noqa: E731
    q = lambda n: _q(n, dialect)  # noqa: E731
    kind = ALERT_KIND  # a lake from before the kinds: every alert was a forecast
    # the report figures' rule (cloud.lake.tables: forecast_true_alerts, empty_now_true_alerts)
    right = (f"CASE WHEN outcome = 'unobserved' THEN 0 "
             f"WHEN {kind} = '{EMPTY_NOW}' THEN CASE WHEN outcome IN ({EMPTY_AT_ALERT}) THEN 1 ELSE 0 END "
             f"WHEN outcome = 'false_alarm' THEN 0 ELSE 1 END")
    unseen = "CASE WHEN outcome = 'unobserved' THEN 1 ELSE 0 END"
    day = "alert_ms - (alert_ms % 86400000)"
    dbl = "DOUBLE" if dialect == "duckdb" else "FLOAT"  # 8 bytes in each (DuckDB's FLOAT has 4)
    return f"""
WITH ad AS (
  SELECT store_id, {day} AS day_ms, scorer, {kind} AS kind, COUNT(*) - SUM({unseen}) AS alerts,
         SUM({unseen}) AS unobserved, SUM({right}) AS true_alerts,
         SUM(CASE WHEN {kind} = '{FORECAST}' AND outcome = 'empty_after' THEN 1 ELSE 0 END) AS warned_ahead,
         AVG(CASE WHEN {kind} = '{FORECAST}' THEN lead_min END) AS mean_lead_min
  FROM gold_alert_outcomes GROUP BY store_id, {day}, scorer, {kind})
SELECT ad.store_id, {ts('ad.day_ms')} AS {q('day')}, CAST({ts('ad.day_ms')} AS DATE) AS {q('date')}, ad.scorer,
       ad.kind, ad.alerts, ad.unobserved, ad.true_alerts,
       CASE WHEN ad.kind = '{FORECAST}' THEN ad.warned_ahead END AS warned_ahead,
       CASE WHEN ad.alerts = 0 THEN NULL ELSE CAST(ad.true_alerts AS {dbl}) / ad.alerts END AS {q('precision')},
       CASE WHEN ad.alerts = 0 OR ad.kind <> '{FORECAST}' THEN NULL
            ELSE CAST(ad.warned_ahead AS {dbl}) / ad.alerts END AS warned_ahead_share,
       ad.mean_lead_min
FROM ad"""


def _stockout_recall(dialect: str) -> str:
    """``bi_stockout_recall``: per store and UTC day, the sensor stock-outs (``gold_stockouts``),
    those whose start is known (``known_start``) and those a forecast the store saw preceded
    (``caught``: ``gold.stockouts.alerted``, shadow scorers left out), and ``recall`` = caught /
    known_start: ``cloud.lake.tables.stockout_days_sql``, the definition gold.model_performance's
    store-day rows are computed by. One row per store-day, so ``stockouts``, ``known_start`` and
    ``caught`` add up over stores and days; recall over several rows is SUM(caught) /
    SUM(known_start), never a sum or an average of ``recall``.
    """
    ts = lambda c: _ts(c, dialect)  # noqa: E731
    q = lambda n: _q(n, dialect)  # noqa: E731
    dbl = "DOUBLE" if dialect == "duckdb" else "FLOAT"
    return f"""
SELECT d.store_id, {ts('d.day_ms')} AS {q('day')}, CAST({ts('d.day_ms')} AS DATE) AS {q('date')},
       d.stockouts, d.known_start, d.caught, d.recall
FROM ({stockout_days_sql('gold_stockouts', dbl)}) d"""


def _bi_views(dialect: str) -> dict[str, str]:
    ts = lambda c: _ts(c, dialect)  # noqa: E731
    q = lambda n: _q(n, dialect)  # noqa: E731
    lt = lambda c: _local(c, "st.timezone", dialect)  # noqa: E731
    return {
        "bi_stockouts": f"""
SELECT s.store_id, st.name AS store_name, s.facing_id, s.sku, p.name AS product_name, p.category,
       pg.aisle, pg.bay, pg.shelf,
       {ts('s.start_ms')} AS started_at, {ts('s.end_ms')} AS ended_at,
       {lt('s.start_ms')} AS started_local, {lt('s.end_ms')} AS ended_local, {_date(lt('s.start_ms'), dialect)} AS {q('date')},
       s.duration_min, s.open_min, s.ongoing, COALESCE(s.start_censored, FALSE) AS start_censored,
       s.lost_units_est, s.lost_sales_cents_est / 100.0 AS lost_sales, st.currency, s.alerted, {ts('s.alert_ms')} AS alerted_at,
       s.alert_lead_min
FROM gold_stockouts s
LEFT JOIN silver_stores st ON st.store_id = s.store_id
LEFT JOIN silver_products p ON p.sku = s.sku
LEFT JOIN silver_planogram pg ON pg.store_id = s.store_id AND pg.facing_id = s.facing_id""",
        "bi_alert_outcomes": f"""
SELECT a.store_id, st.name AS store_name, a.facing_id, a.sku, p.name AS product_name, p.category,
       {ts('a.alert_ms')} AS alerted_at, {lt('a.alert_ms')} AS alerted_local, {_date(lt('a.alert_ms'), dialect)} AS {q('date')},
       a.scorer, COALESCE(a.kind, '{FORECAST}') AS kind, a.probability, a.horizon_min, a.outcome, {ts('a.stockout_start_ms')} AS stockout_started_at, a.lead_min,
       {lt('a.checked_ms')} AS checked_local, a.check_outcome
FROM gold_alert_outcomes a
LEFT JOIN silver_stores st ON st.store_id = a.store_id
LEFT JOIN silver_products p ON p.sku = a.sku""",
        "bi_hourly_sales": f"""
SELECT h.store_id, st.name AS store_name, h.sku, p.name AS product_name, p.category, {ts('h.hour_ms')} AS {q('hour')},
       {lt('h.hour_ms')} AS hour_local, {_date(lt('h.hour_ms'), dialect)} AS {q('date')},
       h.units_sold, h.net_units, h.net_revenue_cents / 100.0 AS net_revenue, st.currency, h.lines, h.txns
FROM gold_hourly_sales h
LEFT JOIN silver_stores st ON st.store_id = h.store_id
LEFT JOIN silver_products p ON p.sku = h.sku""",
        "bi_alert_quality": _alert_quality(dialect),
        "bi_stockout_recall": _stockout_recall(dialect),
        "bi_fleet_health": f"""
SELECT f.store_id, f.device_id, {ts('f.day_ms')} AS {q('day')}, CAST({ts('f.day_ms')} AS DATE) AS {q('date')}, f.events,
       f.missing, {ts('f.last_seen_ms')} AS last_seen, {lt('f.last_seen_ms')} AS last_seen_local,
       f.battery_min, f.buffer_rows, f.unsent_rows, f.evictions, f.model_version
FROM gold_fleet_status f
LEFT JOIN silver_stores st ON st.store_id = f.store_id""",
        "bi_shelf_state": f"""
SELECT s.store_id, s.facing_id, s.sku, {ts('s.hour_ms')} AS {q('hour')}, {lt('s.hour_ms')} AS hour_local,
       {_date(lt('s.hour_ms'), dialect)} AS {q('date')}, s.readings, s.min_units, s.avg_units, s.minutes_empty
FROM gold_shelf_state s
LEFT JOIN silver_stores st ON st.store_id = s.store_id""",
        "bi_stockout_causes": f"""
SELECT c.store_id, st.name AS store_name, c.facing_id, c.sku, p.name AS product_name, p.category,
       pg.aisle, pg.bay, pg.shelf, {lt('c.start_ms')} AS started_local, {_date(lt('c.start_ms'), dialect)} AS {q('date')},
       c.cause, c.detail, c.confidence, c.evidence, c.rounds_passed, c.refill_wait_min, c.open_min,
       c.lost_units_est, c.lost_sales_cents_est / 100.0 AS lost_sales, st.currency
FROM gold_stockout_causes c
LEFT JOIN silver_stores st ON st.store_id = c.store_id
LEFT JOIN silver_products p ON p.sku = c.sku
LEFT JOIN silver_planogram pg ON pg.store_id = c.store_id AND pg.facing_id = c.facing_id""",
        "bi_category_actions": _actions(dialect),
        "bi_dim_store": """
SELECT st.store_id, st.name AS store_name, st.region, st.timezone, st.currency, st.open_hour, st.close_hour
FROM silver_stores st""",
        "bi_dim_product": """
SELECT p.sku, p.name AS product_name, p.category, p.price_cents / 100.0 AS list_price, p.pack_size
FROM silver_products p""",
        "bi_dim_alert_kind": f"""
SELECT k.kind, k.promise FROM (VALUES
  ('{FORECAST}', 'the shelf will be empty within the horizon: right when it was, warned ahead when raised before it emptied'),
  ('{EMPTY_NOW}', 'the shelf is empty now: right when it was empty when raised')) AS k(kind, promise)""",
        "bi_dim_date": f"""
SELECT DISTINCT {_date(lt('h.hour_ms'), dialect)} AS {q('date')}
FROM gold_hourly_sales h
LEFT JOIN silver_stores st ON st.store_id = h.store_id""",
        "bi_kpis": _measures(None, "", dialect),
        "bi_kpis_by_store": _measures(None, "store_id", dialect),
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
            # a table written by an older version lacks the dictionary's newer columns (e.g.
            # gold.stockouts.start_censored before the next lake run adds it): nulls, as the views name them
            rows = conform(tdef.name, rows)
            con.register("incoming", rows)
            con.execute(f"CREATE TABLE {warehouse_name(tdef.name)} AS SELECT * FROM incoming")
            con.unregister("incoming")
            con.execute(f"COMMENT ON TABLE {warehouse_name(tdef.name)} IS {_sql_text(tdef.doc)}")
            for col in tdef.columns:  # the data dictionary's text, as in the Delta field metadata
                con.execute(f"COMMENT ON COLUMN {warehouse_name(tdef.name)}.\"{col.name}\" "
                            f"IS {_sql_text(tdef.field_description(col))}")
        _add_stream_tables(con, storage)
        for name, sql in BI_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {sql}")
    finally:
        con.close()
    tmp.replace(path)  # readers never see a half-built warehouse
    return path


#: The stream job's anomalies and cloud-side alerts, each with the store's local time (DuckDB
#: only: the Synapse DDL covers silver and gold, and ``stream.*`` is not among them).
STREAM_VIEWS = {
    "bi_stream_anomalies": f"""
SELECT a.*, st.name AS store_name, {_local('a.first_seen', 'st.timezone', 'duckdb')} AS first_seen_local
FROM stream_anomalies a
LEFT JOIN silver_stores st ON st.store_id = a.store_id""",
    "bi_stream_alerts": f"""
SELECT a.*, st.name AS store_name, {_local('a.ts', 'st.timezone', 'duckdb')} AS ts_local
FROM stream_alerts a
LEFT JOIN silver_stores st ON st.store_id = a.store_id""",
}


def _add_stream_tables(con, storage: LakeStorage) -> None:
    """``stream_anomalies`` and ``stream_alerts``: what the stream job's detectors found and the
    cloud's alerts (docs/stream.md), for the dashboard (empty when the job has not run); and
    ``STREAM_VIEWS``, the same rows with the store's local time."""
    import pyarrow as pa

    from cloud.stream.tables import ALERTS, ANOMALIES, stream_schema

    for tdef in (ANOMALIES, ALERTS):
        rows = storage.read(tdef.name)
        if rows is None:
            rows = pa.Table.from_batches([], schema=stream_schema(tdef))
        con.register("incoming", rows)
        con.execute(f"CREATE TABLE {warehouse_name(tdef.name)} AS SELECT * FROM incoming")
        con.unregister("incoming")
        con.execute(f"COMMENT ON TABLE {warehouse_name(tdef.name)} IS {_sql_text(tdef.doc)}")
    for name, sql in STREAM_VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")


def _sql_text(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _tsql_table(tdef: TableDef, location: str, data_source: str) -> str:
    cols = ",\n        ".join(f"[{c.name}] {tsql_type(c)}" for c in tdef.columns)
    return (
        f"CREATE OR ALTER VIEW [{warehouse_name(tdef.name)}] AS\n"
        f"SELECT * FROM OPENROWSET(\n"
        f"    BULK '{location.rstrip('/')}/{tdef.layer}/{tdef.short}/',\n"
        f"    DATA_SOURCE = '{_literal(data_source)}',\n"
        f"    FORMAT = 'DELTA'\n"
        f") WITH (\n        {cols}\n) AS [rows];"
    )


def _literal(text: str) -> str:
    return text.replace("'", "''")


def _ident(text: str) -> str:
    return "[" + text.replace("]", "]]") + "]"


def _tsql_view(name: str, sql: str) -> str:
    """A ``bi_*`` view in T-SQL, every identifier delimited (sqlglot regenerates the text)."""
    import sqlglot

    body = sqlglot.parse_one(sql, read="tsql").sql(dialect="tsql", identify=True, pretty=True)
    return f"CREATE OR ALTER VIEW [{name}] AS\n{body};"


def synapse_ddl(location: str = "", *, data_source: str = "gondola_lake", lake_url: str | None = None,
                credential: str | None = None) -> str:
    """T-SQL for Synapse serverless: a view per silver/gold table plus the ``bi_*`` views.

    ``location`` is the lake folder relative to the external data source ``data_source``.
    With ``lake_url`` (``https://<account>.dfs.core.windows.net/<filesystem>``) the script
    first creates that data source, and with ``credential`` a database scoped credential of
    that name using the workspace's managed identity (no secret in the script); without
    ``lake_url`` the data source must exist. Statements are separated by ``GO`` lines, as SQL
    tools expect. String columns are UTF-8 ``VARCHAR`` sized from the data dictionary
    (``cloud.lake.tables.STRING_BYTES``).
    """
    parts = [
        "-- Generated by cloud.warehouse.synapse_ddl from cloud/lake/tables.py; do not edit.",
    ]
    if lake_url:
        if credential:
            parts.append(
                "IF NOT EXISTS (SELECT * FROM sys.symmetric_keys WHERE name = '##MS_DatabaseMasterKey##')\n"
                "    CREATE MASTER KEY;")
            parts.append(
                f"IF NOT EXISTS (SELECT * FROM sys.database_scoped_credentials WHERE name = '{_literal(credential)}')\n"
                f"    CREATE DATABASE SCOPED CREDENTIAL {_ident(credential)} WITH IDENTITY = 'Managed Identity';")
        with_cred = f", CREDENTIAL = {_ident(credential)}" if credential else ""
        parts.append(
            f"IF NOT EXISTS (SELECT * FROM sys.external_data_sources WHERE name = '{_literal(data_source)}')\n"
            f"    CREATE EXTERNAL DATA SOURCE {_ident(data_source)} WITH (LOCATION = '{_literal(lake_url)}'{with_cred});")
    else:
        parts[0] += f"\n-- Needs the external data source {_ident(data_source)} (see docs/powerbi.md)."
    for tdef in WAREHOUSE_TABLES:
        parts.append(_tsql_table(tdef, location or "", data_source))
    for name, sql in _bi_views("tsql").items():
        parts.append(_tsql_view(name, sql))
    return "\nGO\n".join(parts) + "\nGO\n"

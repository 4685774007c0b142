"""Table definitions: one source for schemas, the warehouse views, the Synapse DDL and the catalog.

Each table has a name (``layer.name``), a one-line description, and typed, described columns.
Times are integers: epoch milliseconds UTC (``*_ms``, ``ts``), as everywhere in Gondola; the
warehouse views add timestamp columns for BI tools. Column types are a small portable set
(``string``, ``int64``, ``int32``, ``double``, ``bool``, and ``float_list``: a vector of float32,
Arrow ``list<float>``) mapped to Arrow, DuckDB, Spark and T-SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "Column", "TableDef", "TABLES", "schema_of", "tsql_type", "string_bytes", "STRING_BYTES", "conform", "BRONZE_EVENTS",
    "BRONZE_BATCH", "SILVER_EVENT_TABLES", "QUARANTINE", "Measure", "MEASURES", "EXPECTATION_RESULTS", "GOLD_TABLES",
    "LINEAGE", "CLASSIFICATIONS", "OWNERS", "with_descriptions", "LINEAGE_TABLE", "column_rows", "in_window",
    "PARTITION_COL", "partition_columns", "with_partition", "utc_dates", "utc_date", "MEASURE_ROWS", "FORECAST",
    "EMPTY_NOW", "ALERT_KIND", "EMPTY_AT_ALERT", "NOT_RIGHT", "STOCKOUT_ROW", "stockout_days_sql",
]

_ARROW = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(), "bool": pa.bool_(),
          "float_list": pa.list_(pa.float32())}
#: Synapse serverless returns a Parquet / Delta array column as JSON text: hence VARCHAR for ``float_list``.
TSQL = {"string": "VARCHAR", "int64": "BIGINT", "int32": "INT", "double": "FLOAT", "bool": "BIT", "float_list": "VARCHAR"}
#: Collation Synapse serverless wants for Parquet / Delta UTF-8 strings (no conversion warnings).
TSQL_UTF8 = "Latin1_General_100_BIN2_UTF8"
DUCKDB = {"string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER", "double": "DOUBLE", "bool": "BOOLEAN",
          "float_list": "FLOAT[]"}


#: Data classifications, most sensitive first (the catalog and Purview use these names).
CLASSIFICATIONS = ("personal", "confidential", "public")
#: Unit of a column by its name's suffix, where the column does not state one.
_UNITS = (("_per_h", "units/h"), ("_ms", "ms since epoch, UTC"), ("_cents", "cents"), ("_pct", "%"),
          ("_min", "minutes"), ("_dbm", "dBm"), ("_g", "grams"), ("_h", "hours"), ("_s", "seconds"))
#: Master-data tables whose columns are published on shelf labels and store lists: public.
_PUBLIC_TABLES = ("silver.stores", "silver.products", "silver.planogram")
#: Who answers for each layer's tables (the catalog's owner).
OWNERS = {"bronze": "data-platform (ingest)", "silver": "data-engineering", "gold": "analytics-engineering",
          "stream": "streaming-operations", "meta": "data-platform (governance)", "models": "ml-engineering"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    doc: str
    personal: bool = False  # pseudonymized personal data (a classification for the catalog)
    unit: str = ""  # empty: derived from the name's suffix (``*_ms``, ``*_cents``, ...)

    @property
    def units(self) -> str:
        """The column's unit: stated, else from the name's suffix, else empty."""
        if self.unit:
            return self.unit
        if self.type == "int64" and (self.name == "ts" or self.name.endswith(("_at", "_time"))):
            return "ms since epoch, UTC"
        return next((u for suffix, u in _UNITS if self.name.endswith(suffix)), "")

    @property
    def max_bytes(self) -> int | None:
        """Longest value a string column holds, in UTF-8 bytes (None: unbounded); see ``STRING_BYTES``."""
        if self.type != "string":
            return None
        return string_bytes(self.name)


#: Longest value per string column name, in UTF-8 bytes (the warehouse's column sizes).
#: ``None``: unbounded (JSON, raw rows, free text). Names not listed: ``*_id`` columns 128,
#: anything else 256. A value longer than its size is truncated by Synapse, so sizes are generous.
STRING_BYTES: dict[str, int | None] = {
    "event_json": None, "record_json": None, "state_json": None, "planogram_hash": 16, "raw": None, "decode_error": None,
    "reasons": None, "evidence": None, "source_file": 512, "name": 256, "product_name": 256, "store_name": 256,
    "category": 128, "region": 128, "timezone": 64, "currency": 3, "date": 10, "kind": 32, "state": 32,
    "action": 16, "type": 64, "detected_by": 16, "cause": 32, "confidence_band": 16, "scorer": 128,
    "model_version": 128, "expectation": 128, "table_name": 128, "source_table": 128, "target_table": 128,
    "register": 32, "hub_partition": 32, "hub_offset": 32, "content_hash": 64, "source": 128, "aisle": 32,
    "bay": 32, "outcome": 32, "detail": 32,
}


def string_bytes(name: str) -> int | None:
    """The size of a string column of this name (see ``STRING_BYTES``)."""
    if name in STRING_BYTES:
        return STRING_BYTES[name]
    return 128 if name.endswith("_id") or name in ("sku", "ingest_run", "run_id") else 256


def tsql_type(col: "Column") -> str:
    """The column's T-SQL type for Synapse serverless (UTF-8 ``VARCHAR`` sized from the dictionary)."""
    if col.type == "float_list":  # JSON text of the array, unbounded
        return f"VARCHAR(MAX) COLLATE {TSQL_UTF8}"
    if col.type != "string":
        return TSQL[col.type]
    size = col.max_bytes
    return f"VARCHAR({'MAX' if size is None else size}) COLLATE {TSQL_UTF8}"


@dataclass(frozen=True)
class TableDef:
    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    #: gold: the integer-ms column the incremental runner replaces windows on
    time_col: str | None = None
    #: the integer-ms column whose UTC date is the table's ``date`` partition (None: unpartitioned)
    partition_from: str | None = None

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def short(self) -> str:
        return self.name.split(".")[1]

    @property
    def owner(self) -> str:
        return OWNERS.get(self.layer, "data-platform")

    def classification(self, column: Column) -> str:
        """``personal`` (pseudonymized identifiers), ``public`` (master data), else ``confidential``."""
        if column.personal:
            return "personal"
        return "public" if self.name in _PUBLIC_TABLES else "confidential"

    def field_description(self, column: Column) -> str:
        """The text kept with a column in Delta field metadata and warehouse comments."""
        unit = column.units
        return f"{column.doc} [{unit}]" if unit else column.doc


def _cols(*specs: tuple) -> tuple[Column, ...]:
    return tuple(Column(*s) if isinstance(s, tuple) else s for s in specs)


#: the partition column of the tables that have one (``TableDef.partition_from``)
PARTITION_COL = "date"


def _date(source: str) -> Column:
    return Column(PARTITION_COL, "string", f"UTC date of {source}, YYYY-MM-DD (the table's partition; "
                                           "derived on write, cloud.lake.tables.with_partition)")


_ENVELOPE = _cols(
    ("event_id", "string", "event id (device_id:seq)"),
    ("store_id", "string", "store"),
    ("device_id", "string", "sending device"),
    ("epoch", "int64", "run of the device's seq counter (a restarted counter starts a new one; 0 when not sent)"),
    ("seq", "int64", "per-device sequence number; (device_id, epoch, seq) is the identity"),
    ("ts", "int64", "device clock, epoch ms UTC"),
    ("received_at", "int64", "gateway clock, epoch ms UTC"),
)
_LINEAGE = _cols(
    ("enqueued_time", "int64", "when the hub accepted the message, epoch ms"),
    ("ingest_run", "string", "bronze ingest run that brought the event"),
)

LINEAGE_TABLE = "meta.lineage"
BRONZE_EVENTS = "bronze.events"
BRONZE_BATCH = "bronze.batch_records"
QUARANTINE = "silver.quarantine"
EXPECTATION_RESULTS = "silver.expectation_results"

_defs: list[TableDef] = [
    TableDef(BRONZE_EVENTS, "Raw gateway events, one row per event, append-only, with source metadata.", _cols(
        ("event_json", "string", "the event line as the gateway sent it (loyalty ids already pseudonymized); "
         "null when the message is undecodable", True),
        ("type", "string", "event type, if readable"),
        ("store_id", "string", "store, if readable"),
        ("device_id", "string", "device, if readable"),
        ("seq", "int64", "sequence number, if readable"),
        ("ts", "int64", "device clock, if readable"),
        ("received_at", "int64", "gateway clock, if readable"),
        ("source", "string", "stream source name"),
        ("hub_partition", "string", "hub partition"),
        ("hub_offset", "string", "offset in the partition"),
        ("sequence_number", "int64", "sequence number in the partition"),
        ("enqueued_time", "int64", "hub enqueue time, epoch ms"),
        ("message_index", "int32", "position of the event in its message; -1 for an undecodable message"),
        ("decode_error", "string", "why the message could not be decoded"),
        ("raw_body_b64", "string", "dead letter: the undecodable message body, base64 (else null)"),
        ("ingest_run", "string", "ingest run id"),
        ("ingested_at", "int64", "bronze write time, epoch ms"),
        _date("enqueued_time"),
    ), partition_from="enqueued_time"),
    TableDef(BRONZE_BATCH, "Raw rows of batch files (master data, sales exports), append-only.", _cols(
        ("kind", "string", "stores | products | planogram | sales_daily | stock_daily"),
        ("source_file", "string", "file name"),
        ("content_hash", "string", "sha256 of the file; a file is loaded once"),
        ("row_number", "int64", "1-based data row number in the file"),
        ("record_json", "string", "the CSV row as a JSON object of strings"),
        ("ingest_run", "string", "ingest run id"),
        ("ingested_at", "int64", "bronze write time, epoch ms"),
    )),
    # ---- silver: typed events --------------------------------------------------------------
    TableDef("silver.pos_line", "Point-of-sale lines, typed and deduplicated; loyalty ids pseudonymized only.", _ENVELOPE + _cols(
        ("txn_id", "string", "transaction id"),
        ("register", "string", "register (lane)"),
        ("line", "int64", "line number in the transaction"),
        ("sku", "string", "product"),
        ("qty", "int64", "units; negative for returns and voids"),
        ("price_cents", "int64", "unit price, cents"),
        ("kind", "string", "sale | void | return"),
        ("loyalty_pid", "string", "pseudonymized loyalty id (keyed hash)", True),
    ) + _LINEAGE + (_date("ts"),), key=("device_id", "epoch", "seq"), partition_from="ts"),
    TableDef("silver.shelf_reading", "Shelf sensor readings, typed and deduplicated.", _ENVELOPE + _cols(
        ("facing_id", "string", "shelf facing"),
        ("sku", "string", "product on the facing"),
        ("weight_g", "double", "load cell, grams"),
        ("units_est", "int64", "estimated units on the shelf"),
        ("battery_pct", "double", "sensor battery"),
        ("rssi_dbm", "int64", "radio signal"),
    ) + _LINEAGE + (_date("ts"),), key=("device_id", "epoch", "seq"), partition_from="ts"),
    TableDef("silver.shelf_restock", "Restocks scanned by staff handhelds.", _ENVELOPE + _cols(
        ("facing_id", "string", "facing refilled"),
        ("sku", "string", "product"),
        ("units_added", "int64", "units put on the shelf"),
        ("staff_id", "string", "pseudonymous staff code", True),
    ) + _LINEAGE, key=("device_id", "epoch", "seq")),
    TableDef("silver.inventory_delivery", "Deliveries into store backrooms.", _ENVELOPE + _cols(
        ("delivery_id", "string", "delivery note"),
        ("sku", "string", "product"),
        ("units", "int64", "units received"),
    ) + _LINEAGE, key=("device_id", "epoch", "seq")),
    TableDef("silver.edge_alert", "Stock-out alerts raised and cleared by store gateways.", _ENVELOPE + _cols(
        ("facing_id", "string", "facing"),
        ("sku", "string", "product"),
        ("state", "string", "raised | cleared"),
        ("probability", "double", "predicted stock-out probability"),
        ("horizon_min", "int64", "prediction horizon, minutes"),
        ("scorer", "string", "model version or baseline name"),
        ("units_est", "double", "units on shelf estimated by the gateway"),
        ("kind", "string", "empty_now (detection) | empty_within_h (forecast; alerts without a kind)"),
        ("expected_empty_ts", "int64", "forecasts: when the gateway expects the shelf to run empty"),
    ) + _LINEAGE, key=("device_id", "epoch", "seq")),
    TableDef("silver.shelf_check", "What staff found when they checked a facing from the store page.", _ENVELOPE + _cols(
        ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("outcome", "string", "restocked | was_fine | no_stock"),
        ("alert_kind", "string", "the alert kind the check answered, if any"),
        ("alert_ts", "int64", "when that alert was raised, epoch ms"),
        ("units_est", "double", "units the gateway estimated at the check"),
        ("staff_id", "string", "pseudonymous staff code", True),
    ) + _LINEAGE, key=("device_id", "epoch", "seq")),
    TableDef("silver.gap_scan", "Empty facings (gaps) staff scanned with a handheld during a gap-scan round.",
             _ENVELOPE + _cols(
        ("facing_id", "string", "facing found empty"), ("sku", "string", "product"),
        ("round_id", "string", "the round (one walk of the store) the scan belongs to"),
        ("staff_id", "string", "pseudonymous staff code", True),
    ) + _LINEAGE, key=("device_id", "epoch", "seq")),
    TableDef("silver.edge_health", "Gateway health reports.", _ENVELOPE + _cols(
        ("buffer_rows", "int64", "events in the buffer"),
        ("buffer_bytes", "int64", "buffer size"),
        ("unsent_rows", "int64", "events not yet accepted by the hub"),
        ("oldest_unsent_age_s", "double", "age of the oldest unsent event"),
        ("evictions", "int64", "events evicted"),
        ("seq_gaps", "int64", "events missing in device counters"),
        ("quarantined", "int64", "payloads rejected by the collector"),
        ("last_uplink_ts", "int64", "last accepted uplink, epoch ms"),
        ("model_version", "string", "model in use"),
    ) + _LINEAGE, key=("device_id", "epoch", "seq")),
    TableDef(QUARANTINE, "Rows that failed a drop expectation or could not be parsed, with reasons.", _cols(
        ("source_table", "string", "where the row came from"),
        ("target_table", "string", "where it would have gone"),
        ("device_id", "string", "device, if known"),
        ("seq", "int64", "sequence number, if known"),
        ("reasons", "string", "failed expectations, comma-separated"),
        ("raw", "string", "the raw row (personal data masked)"),
        ("run_id", "string", "transform run"),
        ("row_key", "string", "identity of the quarantined row (target|device|seq, or a hash of the raw text): "
                              "a re-sent bad row is kept once"),
    )),
    TableDef(EXPECTATION_RESULTS, "Every expectation evaluated in every run: rows checked and failed.", _cols(
        ("run_id", "string", "transform run"),
        ("run_at", "int64", "run time, epoch ms"),
        ("table_name", "string", "target table"),
        ("expectation", "string", "expectation name"),
        ("action", "string", "warn | drop | fail | dedup"),
        ("checked", "int64", "rows evaluated"),
        ("failed", "int64", "rows that did not meet it"),
    )),
    # ---- silver: master data ---------------------------------------------------------------
    TableDef("silver.stores", "Stores (latest master data file).", _cols(
        ("store_id", "string", "store"), ("name", "string", "store name"), ("region", "string", "region"),
        ("timezone", "string", "IANA time zone of the store (e.g. Europe/Amsterdam); reports show local times in it"),
        ("currency", "string", "ISO 4217 code of the store's prices and sales (e.g. EUR)"),
        ("open_hour", "double", "opening hour, local time"), ("close_hour", "double", "closing hour, local time"),
        ("source_file", "string", "master data file"),
    ), key=("store_id",)),
    TableDef("silver.products", "Products (latest master data file).", _cols(
        ("sku", "string", "product"), ("name", "string", "product name"), ("category", "string", "category"),
        ("price_cents", "int64", "list price, cents"), ("unit_weight_g", "double", "unit weight, grams"),
        ("pack_size", "int64", "units per pack"), ("source_file", "string", "master data file"),
    ), key=("sku",)),
    TableDef("silver.planogram", "Facing -> product and capacity per store (latest file).", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("capacity", "int64", "units the facing holds"), ("has_sensor", "bool", "a shelf sensor reports on it"),
        ("aisle", "string", "aisle code"), ("bay", "string", "bay (section) along the aisle"),
        ("shelf", "int64", "shelf level in the bay, 1 = bottom"),
        ("source_file", "string", "master data file"),
    ), key=("store_id", "facing_id")),
    TableDef("silver.sales_daily", "Historical daily sales exported by the store ERP.", _cols(
        ("date", "string", "business date, YYYY-MM-DD"), ("store_id", "string", "store"), ("sku", "string", "product"),
        ("units", "int64", "net units sold (sales less returns: negative on a day with more returns)"),
        ("revenue_cents", "int64", "net revenue, cents (the sign of units)"),
        ("source_file", "string", "export file"),
    ), key=("date", "store_id", "sku")),
    TableDef("silver.stock_record", "The store system's stock record, exported by the ERP each night: book units "
             "per product at the close and the night's cycle counts.", _cols(
        ("date", "string", "business date, YYYY-MM-DD"), ("store_id", "string", "store"), ("sku", "string", "product"),
        ("book_units", "int64", "units the store system records at the close, shelf and backroom together: the "
                                "previous night's book (or count) + receipts - sales + returns; unrecorded shrink "
                                "and misplaced cases are still in it"),
        ("counted_units", "int64", "units a cycle count found that night, after the close (the next day's book "
                                   "starts from it); null: not counted"),
        ("source_file", "string", "export file"),
    ), key=("date", "store_id", "sku")),
    # ---- gold ------------------------------------------------------------------------------
    TableDef("gold.hourly_sales", "Sales per store, product and hour.", _cols(
        ("store_id", "string", "store"), ("sku", "string", "product"), ("hour_ms", "int64", "hour start, epoch ms"),
        ("units_sold", "int64", "units in sale lines"), ("net_units", "int64", "units net of returns and voids"),
        ("net_revenue_cents", "int64", "revenue net of returns and voids, cents"),
        ("lines", "int64", "POS lines"), ("txns", "int64", "distinct transactions"),
    ), key=("store_id", "sku", "hour_ms"), time_col="hour_ms"),
    TableDef("gold.shelf_state", "Shelf state per facing and hour: readings, units, minutes empty.", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("hour_ms", "int64", "hour start, epoch ms"),
        ("sku", "string", "product"), ("readings", "int64", "sensor readings"),
        ("min_units", "int64", "fewest units seen"), ("avg_units", "double", "mean units"),
        ("minutes_empty", "double", "minutes the facing read empty (gaps over 30 min not counted)"),
        ("battery_min", "double", "lowest sensor battery"),
    ), key=("store_id", "facing_id", "hour_ms"), time_col="hour_ms"),
    TableDef("gold.stockouts", "Stock-out events of sensor facings: duration, lost sales, whether the edge alerted first.", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("start_ms", "int64", "first empty reading"), ("end_ms", "int64", "first non-empty reading after; null while ongoing"),
        ("duration_min", "double", "minutes empty; null while ongoing"),
        ("open_min", "double", "minutes empty while the store was open (hours with a sale), up to the last reading "
                               "while ongoing: the stock-out minutes every report uses"),
        ("ongoing", "bool", "still empty at the last reading"),
        ("start_censored", "bool", "left-censored: already empty at the first evidence of the facing (no reading in "
                                   "the 24 h before start_ms: its first reading, or after a sensor outage). The true "
                                   "start is earlier and unknown: counted with its minutes (a lower bound), left out of "
                                   "hour-of-day and weekday views, recall and lead times"),
        ("detected_by", "string", "sensor (POS-inferred stock-outs of facings without sensors are not included)"),
        ("rate_per_h", "double", "the SKU's usual sales rate in this store, units per hour"),
        ("lost_units_est", "double", "lost sales in units: rate_per_h x open_min / 60 (opening hours only)"),
        ("lost_sales_cents_est", "double", "lost sales: lost units x list price, in cents of the store's currency"),
        ("alerted", "bool", "the edge raised a forecast (empty_within_h) within its horizon before the start; "
                            "null when start_censored (unknown)"),
        ("alert_ms", "int64", "first such alert"), ("alert_lead_min", "double", "minutes between that alert and the start"),
    ), key=("store_id", "facing_id", "start_ms"), time_col="start_ms"),
    TableDef("gold.stockout_causes", "Why each stock-out happened, from restock, delivery, sensor and stock-record "
             "evidence, with a calibrated confidence (cloud.lake.causes).", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("start_ms", "int64", "start of the stock-out (gold.stockouts)"), ("end_ms", "int64", "its end; null while ongoing"),
        ("cause", "string", "shelf_handling (backroom had stock: round late or facing too small) | misplaced "
                            "(a delivery never reached the shelf) | phantom_inventory (the store record counts units "
                            "that are not there: count it) | backroom_empty (ordered too little or supplier short)"),
        ("detail", "string", "for shelf_handling: facing_too_small (emptied within 8 h of a full refill) or restock_late"),
        ("confidence", "double", "share of training stock-outs with the same evidence that had this cause"),
        ("evidence", "string", "the evidence path that decided the cause; book_nothing_beyond_shelf / "
                               "+book_above_shelf: the stock record's verdict (cloud.lake.causes)"),
        ("rounds_passed", "int64", "restock rounds that passed the empty facing without refilling it"),
        ("refill_ms", "int64", "the restock scan that refilled the facing; null if none yet"),
        ("refill_wait_min", "double", "minutes from empty to that refill"),
        ("open_min", "double", "stock-out minutes while open (gold.stockouts)"),
        ("lost_units_est", "double", "lost units (gold.stockouts)"),
        ("lost_sales_cents_est", "double", "lost sales, cents of the store's currency (gold.stockouts)"),
    ), key=("store_id", "facing_id", "start_ms"), time_col="start_ms"),
    TableDef("gold.alert_outcomes", "Every raised alert and what became of it: the shelf emptied after it, "
             "was already empty, was seen empty (no sensor), neither (false alarm), or nobody could tell "
             "(unobserved).", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("device_id", "string", "gateway that raised it"), ("seq", "int64", "the alert event's seq"),
        ("alert_ms", "int64", "when it was raised"), ("scorer", "string", "model version or baseline"),
        ("probability", "double", "predicted stock-out probability"), ("horizon_min", "int64", "its horizon, minutes"),
        ("kind", "string", "empty_now (detection) | empty_within_h (forecast)"),
        ("outcome", "string", "empty_after (a stock-out started within the horizon) | already_empty | empty_seen "
                              "(no sensor: a gap scan or a refill of the whole facing proved it, its start unknown) | "
                              "false_alarm | unobserved (no sensor and no evidence either way: left out of precision); "
                              "a true alert is one that is neither a false alarm nor unobserved"),
        ("stockout_start_ms", "int64", "start of the stock-out it matched"),
        ("lead_min", "double", "minutes from the alert to the shelf going empty (empty_after only)"),
        ("checked_ms", "int64", "first staff check of the facing (store page 'done') up to an hour past the horizon"),
        ("check_outcome", "string", "what staff found then: restocked | was_fine | no_stock; null: not checked"),
    ), key=("device_id", "seq"), time_col="alert_ms"),
    TableDef("gold.shelf_checks", "Staff checks from the store page as labels: did the facing need stock?", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("device_id", "string", "gateway that recorded it"), ("seq", "int64", "the check event's seq"),
        ("check_ms", "int64", "when staff pressed done"),
        ("outcome", "string", "restocked | was_fine | no_stock"),
        ("alert_kind", "string", "the alert kind it answered, if any"), ("alert_ts", "int64", "when that alert was raised"),
        ("response_min", "double", "minutes from the alert to the check"),
        ("units_est", "double", "units the gateway estimated at the check"),
        ("label", "int32", "1: the facing needed stock (restocked or no_stock), 0: it was fine (a false alarm); "
                           "a label for facings without sensors, and ground truth for the alert"),
    ), key=("device_id", "seq"), time_col="check_ms"),
    TableDef("gold.fleet_status", "Per device and day: events, sequence gaps (losses), last health.", _cols(
        ("store_id", "string", "store"), ("device_id", "string", "device"), ("day_ms", "int64", "UTC day start, epoch ms"),
        ("events", "int64", "distinct events"), ("seq_min", "int64", "lowest seq"), ("seq_max", "int64", "highest seq"),
        ("missing", "int64", "gaps in seq within the day (counted losses)"), ("last_seen_ms", "int64", "latest device time"),
        ("battery_min", "double", "lowest shelf sensor battery, if a sensor"),
        ("buffer_rows", "int64", "last buffer size, if a gateway"), ("unsent_rows", "int64", "last unsent count, if a gateway"),
        ("evictions", "int64", "last eviction count, if a gateway"), ("model_version", "string", "last model, if a gateway"),
    ), key=("store_id", "device_id", "day_ms"), time_col="day_ms"),
    TableDef("gold.model_performance", "Alert quality per store, day and scorer: precision; and per store and day "
             "(its scorer '(none)' row): stock-outs, recall, lead time.", _cols(
        ("store_id", "string", "store"), ("day_ms", "int64", "UTC day start"),
        ("scorer", "string", "model version or baseline; '(none)': the store-day's row, holding its stock-outs"),
        ("alerts", "int64", "alerts judged: raised, less the unobserved ones (0 on the '(none)' row)"),
        ("true_alerts", "int64", "judged alerts whose shelf was empty within the horizon (gold.alert_outcomes)"),
        ("unobserved", "int64", "alerts on facings without a sensor that no evidence judged (left out of precision)"),
        ("stockouts", "int64", "stock-outs starting that day, on the '(none)' row only (NULL on a scorer's row: "
                               "a stock-out belongs to the store-day, so a sum over rows counts it once)"),
        ("caught", "int64", "stock-outs a forecast the store saw preceded (shadow scorers left out); '(none)' row only"),
        ("precision", "double", "true_alerts / alerts (judged alerts only)"),
        ("recall", "double", "caught / known_start; '(none)' row only"),
        ("mean_lead_min", "double", "mean alert lead time of caught stock-outs; '(none)' row only"),
        ("known_start", "int64", "stock-outs whose start is known (not left-censored): recall's denominator; "
                                 "'(none)' row only"),
    ), key=("store_id", "day_ms", "scorer"), time_col="day_ms"),
    TableDef("gold.features", "Training features per facing and hour (models.features), with the stock-out label.", _cols(
        ("store_id", "string", "store"), ("facing_id", "string", "facing"), ("sku", "string", "product"),
        ("hour_ms", "int64", "sample instant (hour start)"),
        ("features", "float_list", "feature vector (float32), ordered as models.features.FEATURES"),
        ("label", "int32", "1 when the facing is empty within the next horizon_h hours, 0 when not; NULL when "
                           "nobody observed it (left out of training and evaluation)"),
        ("empty_now", "int32", "1 when the facing is empty at the sample instant (NULL: not observed)"),
        ("label_source", "string", "the evidence behind the label: sensor, gap_scan, restock (a refill of a whole "
                                   "facing), till (a sale of a one-facing SKU after the horizon), shelf_check, ledger (a "
                                   "one-facing SKU's units from restocks in and till sales out); NULL: unobserved"),
        ("label_without_sensor", "int32", "the label staff and till evidence alone give (NULL: they say nothing); "
                                          "on sensor rows it measures that evidence's bias, which training evens out"),
        ("horizon_h", "double", "label horizon, hours"),
        _date("hour_ms"),
    ), key=("store_id", "facing_id", "hour_ms"), time_col="hour_ms", partition_from="hour_ms"),
    TableDef("gold.feature_state", "Each store's online feature state at each UTC midnight (what incremental "
             "gold.features runs resume from).", _cols(
        ("store_id", "string", "store"),
        ("day_ms", "int64", "the midnight: state after every event before it"),
        ("first_ms", "int64", "the store's first event (features start one hour after it)"),
        ("planogram_hash", "string", "identity of the planogram the state was kept with"),
        ("state_json", "string", "models.features.FacingState fields per facing, JSON (floats exact)"),
        _date("day_ms"),
    ), key=("store_id", "day_ms"), time_col="day_ms", partition_from="day_ms"),
    # ---- meta ------------------------------------------------------------------------------
    TableDef(LINEAGE_TABLE, "OpenLineage events of every pipeline run: job, state, input and output table versions.",
             _cols(
        ("event_time", "int64", "when the event was emitted, epoch ms"),
        ("run_id", "string", "OpenLineage run id (one START, then COMPLETE or FAIL)"),
        ("job", "string", "job name: gondola.ingest_stream, gondola.transform, gondola.train, ..."),
        ("state", "string", "START | COMPLETE | FAIL"),
        ("inputs_json", "string", "inputs as JSON [{namespace, name, version}]"),
        ("outputs_json", "string", "outputs as JSON [{namespace, name, version}]"),
        ("error", "string", "the error of a failed run"),
        ("event_json", "string", "the whole OpenLineage RunEvent"),
    ), key=("run_id", "state")),
]

#: All tables by name.
TABLES: dict[str, TableDef] = {t.name: t for t in _defs}
#: event type -> silver table
SILVER_EVENT_TABLES: dict[str, str] = {
    "pos.line": "silver.pos_line", "shelf.reading": "silver.shelf_reading", "shelf.restock": "silver.shelf_restock",
    "inventory.delivery": "silver.inventory_delivery", "edge.alert": "silver.edge_alert", "edge.health": "silver.edge_health",
    "shelf.check": "silver.shelf_check", "shelf.gap_scan": "silver.gap_scan",
}
GOLD_TABLES = [t.name for t in _defs if t.layer == "gold"]


@dataclass(frozen=True)
class Measure:
    """A figure every report shows, defined once: an aggregate over one gold table.

    The warehouse views (``bi_kpis``, ``bi_kpis_by_store``), the dashboard, ``summary.json``
    and the Synapse DDL all read it from here; no report computes it another way.
    """

    name: str
    table: str
    sql: str  # aggregate over the table's warehouse name (its MEASURE_ROWS); the same text in DuckDB and T-SQL
    unit: str
    doc: str


#: The two alert kinds (issue 11): a forecast and a detection, judged each by its own promise.
FORECAST, EMPTY_NOW = "empty_within_h", "empty_now"
#: An alert's kind; a lake from before the two kinds holds forecasts only (as gold.alert_outcomes says).
ALERT_KIND = f"COALESCE(kind, '{FORECAST}')"
#: Outcomes that are no true alert, and the opening of an expression that is NULL (left out of an
#: average) for an alert nobody could judge; an empty_now is right when its shelf was empty when
#: raised: a sensor saw it (already_empty) or, without one, staff or a full refill did (empty_seen).
#: The report figures here, gold.model_performance (``cloud.lake.gold``) and ``cloud.warehouse``'s
#: bi_alert_quality judge with these.
NOT_RIGHT = "'false_alarm', 'unobserved'"
_JUDGED = "CASE WHEN outcome = 'unobserved' THEN NULL ELSE"
EMPTY_AT_ALERT = "'already_empty', 'empty_seen'"

#: ``gold.model_performance``'s scorer value on the one row per store and UTC day that holds that
#: day's stock-outs (they belong to the store-day, not to a scorer: on every scorer's row a total
#: over scorers counted each stock-out once per scorer).
STOCKOUT_ROW = "(none)"


def stockout_days_sql(stockouts: str, dbl: str = "DOUBLE") -> str:
    """Stock-out recall per store and UTC day of the start, defined once: ``gold.model_performance``
    (its store-day rows, scorer ``STOCKOUT_ROW``) and the warehouse's ``bi_stockout_recall`` both
    select from this query over ``stockouts`` (a relation with gold.stockouts' columns).

    ``stockouts``: stock-outs that started that day; ``known_start``: those whose start is known
    (``alerted`` is null for a left-censored one); ``caught``: those a forecast the store saw
    preceded (``gold.stockouts.alerted``: shadow scorers left out); ``recall`` = caught /
    known_start (6 decimals; NULL without a known start); ``mean_lead_min``: from integer ms (an
    exact, order-free sum, not an average of doubles: bit-reproducible). The same text runs on
    DuckDB, Spark and T-SQL (``dbl`` names the 8-byte float: ``FLOAT`` in T-SQL).
    """
    return f"""SELECT store_id, day_ms, stockouts, known_start, caught,
       CASE WHEN known_start = 0 THEN NULL ELSE ROUND(CAST(caught AS {dbl}) / known_start, 6) END AS recall,
       mean_lead_min
FROM (SELECT store_id, start_ms - (start_ms % 86400000) AS day_ms, COUNT(*) AS stockouts,
             COUNT(alerted) AS known_start, COALESCE(SUM(CAST(alerted AS INT)), 0) AS caught,
             ROUND(CAST(SUM(start_ms - alert_ms) AS {dbl}) / COUNT(alert_ms) / 60000, 4) AS mean_lead_min
      FROM {stockouts} GROUP BY store_id, start_ms - (start_ms % 86400000)) sd_"""

#: The rows of a gold table its report figures count (the table's warehouse name, a condition in
#: DuckDB and T-SQL alike): a shadow model's would-be alerts (scorer ``shadow:...``) were never
#: raised in a store; gold.alert_outcomes and gold.model_performance judge them under their own
#: scorer (how a shadow is judged), as gold.stockouts leaves them out of ``alerted``.
MEASURE_ROWS: dict[str, str] = {"gold.alert_outcomes": "COALESCE(scorer, '') NOT LIKE 'shadow:%'"}

#: The report figures (the data dictionary's measures), each over its table's MEASURE_ROWS.
MEASURES: tuple[Measure, ...] = (
    Measure("stockouts", "gold.stockouts", "COUNT(*)", "count", "stock-outs that started (sensor facings)"),
    Measure("stockouts_ongoing", "gold.stockouts", "SUM(CAST(ongoing AS INT))", "count",
            "stock-outs still empty at the facing's last reading"),
    Measure("stockout_minutes", "gold.stockouts", "SUM(open_min)", "minutes",
            "minutes shelves stood empty while the store was open (gold.stockouts.open_min)"),
    Measure("lost_units", "gold.stockouts", "SUM(lost_units_est)", "units",
            "units not sold because the shelf was empty, opening hours only (gold.stockouts.lost_units_est)"),
    Measure("lost_sales_cents", "gold.stockouts", "SUM(lost_sales_cents_est)", "cents",
            "lost sales in cents of the stores' currency (gold.stockouts.lost_sales_cents_est)"),
    Measure("stockouts_start_unknown", "gold.stockouts", "SUM(CAST(COALESCE(start_censored, FALSE) AS INT))", "count",
            "stock-outs already empty at the first evidence of their facing (gold.stockouts.start_censored)"),
    Measure("recall_ahead", "gold.stockouts", "AVG(1.0 * CAST(alerted AS INT))", "share",
            "share of stock-outs an alert preceded within its horizon, over those with a known start "
            "(gold.stockouts.alerted, null when start_censored)"),
    Measure("mean_lead_min", "gold.stockouts", "AVG(alert_lead_min)", "minutes",
            "mean minutes from the first alert to the shelf going empty, over stock-outs alerted ahead"),
    Measure("alerts", "gold.alert_outcomes", "COUNT(*)", "count", "alerts raised by the gateways"),
    Measure("unobserved_alerts", "gold.alert_outcomes", "SUM(CASE WHEN outcome = 'unobserved' THEN 1 ELSE 0 END)",
            "count", "alerts on facings without a sensor that neither a gap scan, a staff check, a restock nor the "
                     "till judged: left out of every precision"),
    Measure("true_alerts", "gold.alert_outcomes", f"SUM(CASE WHEN outcome IN ({NOT_RIGHT}) THEN 0 ELSE 1 END)", "count",
            "alerts whose facing went empty within the horizon or was already empty"),
    Measure("alert_precision", "gold.alert_outcomes", f"AVG({_JUDGED} CASE WHEN outcome = 'false_alarm' THEN 0.0 ELSE 1.0 END END)",
            "share", "true alerts / judged alerts (gold.alert_outcomes.outcome, unobserved ones left out), both kinds "
            "together; each kind by its own promise: forecast_precision, empty_now_precision"),
    # The two alert kinds apart (issue 11), each judged by its own promise (as bi_alert_quality).
    Measure("forecast_alerts", "gold.alert_outcomes", f"SUM(CASE WHEN {ALERT_KIND} = '{FORECAST}' THEN 1 ELSE 0 END)",
            "count", "forecasts (empty_within_h alerts) raised"),
    Measure("forecast_unobserved", "gold.alert_outcomes",
            f"SUM(CASE WHEN {ALERT_KIND} = '{FORECAST}' AND outcome = 'unobserved' THEN 1 ELSE 0 END)", "count",
            "forecasts nobody could judge (no sensor, no evidence)"),
    Measure("forecast_true_alerts", "gold.alert_outcomes",
            f"SUM(CASE WHEN {ALERT_KIND} = '{FORECAST}' AND outcome NOT IN ({NOT_RIGHT}) THEN 1 ELSE 0 END)", "count",
            "forecasts whose shelf was empty within their horizon"),
    Measure("forecast_warned_ahead", "gold.alert_outcomes",
            f"SUM(CASE WHEN {ALERT_KIND} = '{FORECAST}' AND outcome = 'empty_after' THEN 1 ELSE 0 END)", "count",
            "forecasts raised before their shelf emptied (the warning that prevents a stock-out)"),
    Measure("forecast_warned_ahead_share", "gold.alert_outcomes",
            f"AVG(CASE WHEN {ALERT_KIND} = '{FORECAST}' THEN {_JUDGED} CASE WHEN outcome = 'empty_after' THEN 1.0 "
            f"ELSE 0.0 END END END)", "share",
            "forecasts warned ahead / judged forecasts (as bi_alert_quality.warned_ahead_share)"),
    Measure("forecast_precision", "gold.alert_outcomes",
            f"AVG(CASE WHEN {ALERT_KIND} = '{FORECAST}' THEN {_JUDGED} CASE WHEN outcome = 'false_alarm' THEN 0.0 "
            f"ELSE 1.0 END END END)", "share", "forecasts right / judged forecasts"),
    Measure("empty_now_alerts", "gold.alert_outcomes", f"SUM(CASE WHEN {ALERT_KIND} = '{EMPTY_NOW}' THEN 1 ELSE 0 END)",
            "count", "empty_now alerts (detections) raised"),
    Measure("empty_now_unobserved", "gold.alert_outcomes",
            f"SUM(CASE WHEN {ALERT_KIND} = '{EMPTY_NOW}' AND outcome = 'unobserved' THEN 1 ELSE 0 END)", "count",
            "empty_now alerts nobody could judge (no sensor, no evidence)"),
    Measure("empty_now_true_alerts", "gold.alert_outcomes",
            f"SUM(CASE WHEN {ALERT_KIND} = '{EMPTY_NOW}' AND outcome IN ({EMPTY_AT_ALERT}) THEN 1 ELSE 0 END)", "count",
            "empty_now alerts whose shelf was empty when raised"),
    Measure("empty_now_precision", "gold.alert_outcomes",
            f"AVG(CASE WHEN {ALERT_KIND} = '{EMPTY_NOW}' THEN {_JUDGED} CASE WHEN outcome IN ({EMPTY_AT_ALERT}) THEN 1.0 "
            f"ELSE 0.0 END END END)", "share", "empty_now alerts right / judged empty_now alerts"),
)


def schema_of(name: str) -> pa.Schema:
    """The Arrow schema of a table."""
    return pa.schema([pa.field(c.name, _ARROW[c.type]) for c in TABLES[name].columns])


def with_descriptions(name: str, data: pa.Table) -> pa.Table:
    """``data`` with the dictionary's column descriptions as Arrow field metadata (``comment``,
    as Spark and Delta readers show it) and the table's classification per field.

    Columns the dictionary does not know keep their metadata; an unknown table is returned as is.
    """
    tdef = TABLES.get(name)
    if tdef is None:
        return data
    cols = {c.name: c for c in tdef.columns}
    fields = []
    for f in data.schema:
        c = cols.get(f.name)
        if c is not None:
            meta = dict(f.metadata or {})
            meta.update({b"comment": tdef.field_description(c).encode(),
                         b"classification": tdef.classification(c).encode()})
            f = f.with_metadata(meta)
        fields.append(f)
    return data.cast(pa.schema(fields, metadata=data.schema.metadata))


def partition_columns(name: str) -> list[str]:
    """The table's partition columns (``[]``: unpartitioned)."""
    tdef = TABLES.get(name)
    return [PARTITION_COL] if tdef is not None and tdef.partition_from else []


_MIN_MS, _MAX_MS = -62_135_596_800_000, 253_402_300_799_999  # 0001-01-01 .. 9999-12-31 23:59:59.999 UTC
_DAY_MS = 86_400_000


def utc_dates(ms) -> pa.Array:
    """UTC dates (``YYYY-MM-DD`` strings) of epoch milliseconds; NULL for NULL and outside the
    years 1-9999 (what a date string and every engine's date type can hold).

    Arrow's ``strftime`` formats each distinct day once (a table's rows fall on a few days):
    on every row it was half the cost of writing a day of 100 stores' silver."""
    import numpy as np

    src = pc.cast(ms, pa.int64())
    if isinstance(src, pa.ChunkedArray):
        src = src.combine_chunks()
    ok = pc.fill_null(pc.and_(pc.greater_equal(src, _MIN_MS), pc.less_equal(src, _MAX_MS)), False)
    days = np.floor_divide(pc.if_else(ok, src, 0).to_numpy(), _DAY_MS)
    distinct, at = np.unique(days, return_inverse=True)
    names = _strftime_dates(pa.array(distinct * _DAY_MS, pa.int64()))
    return pc.if_else(ok, names.take(pa.array(at.reshape(-1), pa.int64())), pa.scalar(None, pa.string()))


def _strftime_dates(ms: pa.Array) -> pa.Array:
    """UTC dates of epoch milliseconds in the years 1-9999, formatted by Arrow."""
    return pc.strftime(ms.cast(pa.timestamp("ms", tz="UTC")), format="%Y-%m-%d").cast(pa.string())


def utc_date(ms: int) -> str | None:
    """:func:`utc_dates` of one instant (the ``date`` partition value it lies in)."""
    return utc_dates(pa.array([ms], pa.int64()))[0].as_py()


def with_partition(name: str, data: pa.Table) -> pa.Table:
    """``data`` with the table's partition column (re)computed: the UTC date (``YYYY-MM-DD``) of
    its ``partition_from`` column, NULL where that is NULL. The one derivation both engines use
    (DuckDB's writes through ``LakeStorage.write``, Spark's executors through their Parquet
    writer): a date computed in each engine's SQL could differ at the edges (time zones,
    negative or huge values); this one is Arrow's, on the integer milliseconds. Tables without a
    partition are returned as they are."""
    tdef = TABLES.get(name)
    if tdef is None or not tdef.partition_from:
        return data
    src = data[tdef.partition_from] if tdef.partition_from in data.column_names \
        else pa.nulls(data.num_rows, pa.int64())
    date = utc_dates(src)
    if PARTITION_COL in data.column_names:
        return data.set_column(data.schema.get_field_index(PARTITION_COL), PARTITION_COL, date)
    return data.append_column(PARTITION_COL, date)


def conform(name: str, data: pa.Table) -> pa.Table:
    """Select and cast ``data``'s columns to the table's schema (missing columns become nulls)."""
    schema = schema_of(name)
    arrays = []
    for f in schema:
        if f.name in data.column_names:
            arrays.append(data[f.name].cast(f.type))
        else:
            arrays.append(pa.nulls(data.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def in_window(rows: pa.Table, cutoff: dict[str, int], col: str) -> pa.Array:
    """Per row of ``rows`` (with ``store_id``), whether it is in its store's window: ``col`` at
    or after the store's cutoff (a store without a cutoff has no window; a row without a time is
    in none, as the Delta delete predicate ``col >= cut`` keeps it). Here, not in the runner, so
    Spark executors applying it need not import the runner."""
    stores = rows["store_id"]
    if isinstance(stores, pa.ChunkedArray):
        stores = stores.combine_chunks()
    codes = stores.dictionary_encode()  # one cutoff per store, not one Python lookup per row
    cuts = pa.array([cutoff.get(s, 2**62) for s in codes.dictionary.to_pylist()], pa.int64())
    cut = pc.fill_null(cuts.take(codes.indices), 2**62)
    return pc.fill_null(pc.greater_equal(rows[col], cut), False)


_EVENTS = list(SILVER_EVENT_TABLES.values())
#: table -> (the tables it is computed from, the step that computes it): lineage for the catalog.
LINEAGE: dict[str, tuple[tuple[str, ...], str]] = {
    BRONZE_EVENTS: ((), "cloud.ingest.stream.ingest_stream: hub / Event Hubs messages, one row per event"),
    BRONZE_BATCH: ((), "cloud.ingest.batch.ingest_batch: ERP CSV files, one row per CSV row, each file once"),
    **{t: ((BRONZE_EVENTS,), "cloud.lake.silver.silver_events: typed, checked, deduplicated on (device_id, epoch, seq)")
       for t in _EVENTS},
    QUARANTINE: ((BRONZE_EVENTS, BRONZE_BATCH), "cloud.lake.silver / master: rows a drop expectation rejected"),
    EXPECTATION_RESULTS: ((BRONZE_EVENTS, BRONZE_BATCH), "cloud.lake.silver / master: expectation counts per run"),
    **{t: ((BRONZE_BATCH,), "cloud.lake.master.silver_master: newest file per kind, typed")
       for t in ("silver.stores", "silver.products", "silver.planogram", "silver.sales_daily", "silver.stock_record")},
    "gold.hourly_sales": (("silver.pos_line",), "cloud.lake.gold GOLD_SQL: sum POS lines per store, SKU and hour"),
    "gold.shelf_state": (("silver.shelf_reading",), "cloud.lake.gold GOLD_SQL: readings per facing and hour"),
    "gold.stockouts": (("silver.shelf_reading", "silver.pos_line", "silver.edge_alert", "silver.products"),
                       "cloud.lake.gold GOLD_SQL: empty-reading episodes, lost sales, edge alert lead"),
    "gold.stockout_causes": (("gold.stockouts", "silver.shelf_restock", "silver.inventory_delivery", "silver.planogram",
                              "silver.stores", "silver.stock_record", "gold.shelf_state", "silver.pos_line"),
                             "cloud.lake.causes: cause of each stock-out from restock, delivery, round and stock-record "
                             "evidence (the book less the shelves and the day's returns), with a calibrated confidence"),
    "gold.shelf_checks": (("silver.shelf_check",), "cloud.lake.gold GOLD_SQL: staff checks as labels"),
    "gold.alert_outcomes": (("silver.edge_alert", "gold.stockouts", "silver.shelf_check", "silver.planogram",
                             "silver.gap_scan", "silver.shelf_restock", "silver.pos_line"),
                            "cloud.lake.gold GOLD_SQL: each raised alert matched to the stock-out that followed; "
                            "on a facing without a sensor, judged by gap scans, restocks, staff checks and the till"),
    "gold.fleet_status": (tuple(_EVENTS), "cloud.lake.gold GOLD_SQL: events, seq gaps and health per device and day"),
    "gold.model_performance": (("gold.alert_outcomes", "gold.stockouts"),
                               "cloud.lake.gold GOLD_SQL: alerts matched to stock-outs per store, day, scorer"),
    LINEAGE_TABLE: ((), "gondola.lineage: every run's OpenLineage events, stored by the cloud's lineage sink"),
    "gold.features": (("silver.shelf_reading", "silver.pos_line", "silver.shelf_restock", "silver.planogram",
                       "silver.gap_scan", "silver.shelf_check", "gold.stockouts"),
                      "cloud.lake.features: models.replay feature vectors, resumed from gold.feature_state; "
                      "cloud.lake.labels: the label where evidence observed it"),
    "gold.feature_state": (("silver.shelf_reading", "silver.pos_line", "silver.shelf_restock", "silver.planogram"),
                           "cloud.lake.features: models.replay online state per store at each midnight"),
}


def column_rows(table: pa.Table | None, cols: Sequence[str]) -> list[tuple]:
    """``table``'s columns ``cols`` as Python tuples, one per row; none when there is no table,
    no row, or a column is missing (a table written before the column existed)."""
    if table is None or table.num_rows == 0 or not set(cols) <= set(table.column_names):
        return []
    return list(zip(*(table[c].to_pylist() for c in cols)))

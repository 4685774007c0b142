"""The ``stream.*`` tables: one definition of their columns (for writers, readers and docs).

Every row carries ``source``, ``hub_partition`` and ``hub_seq``: the hub message whose
processing emitted it. That is what makes writes idempotent (see ``cloud.stream.job``): a
table's application transaction ``stream-job:<source>:<partition>`` records the highest
``hub_seq`` written, and a replay after a crash only writes rows above it.
Times are epoch milliseconds UTC, as everywhere in the lake.
"""

from __future__ import annotations

import pyarrow as pa

from cloud.lake.tables import Column, TableDef

__all__ = ["STREAM_TABLES", "SALES_5M", "STORE_HEALTH", "LATE_EVENTS", "ALERTS", "ANOMALIES", "STATE",
           "stream_schema"]

_ARROW = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(),
          "bool": pa.bool_(), "binary": pa.binary()}


def _cols(*specs: tuple) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in specs)


_ORIGIN = _cols(
    ("source", "string", "stream source name (localhub, eventhubs:<hub>/<group>)"),
    ("hub_partition", "string", "hub partition of the message that emitted the row"),
    ("hub_seq", "int64", "sequence number of that message (idempotence key with the partition)"),
    ("emitted_at", "int64", "wall clock when the job emitted the row, epoch ms"),
    ("origin_enqueued_ms", "int64", "when that message was enqueued in the hub (latency = emitted_at - this)"),
)

SALES_5M = TableDef(
    "stream.sales_5m",
    "POS sales per store per 5-minute tumbling event-time window, emitted once the watermark passes its end",
    _cols(
        ("store_id", "string", "store"),
        ("window_start", "int64", "window start, epoch ms (inclusive)"),
        ("window_end", "int64", "window end, epoch ms (exclusive)"),
        ("lines", "int64", "POS lines"),
        ("units", "int64", "net units (sales minus voids and returns)"),
        ("revenue_cents", "int64", "net revenue, integer cents"),
        ("transactions", "int64", "distinct (register, txn_id)"),
        ("registers", "int64", "registers with at least one line"),
    ) + _ORIGIN,
    key=("store_id", "window_start"),
)

STORE_HEALTH = TableDef(
    "stream.store_health",
    "Sensor and gateway health per store, 15-minute event-time windows hopping every 5 minutes",
    _cols(
        ("store_id", "string", "store"),
        ("window_start", "int64", "window start, epoch ms"),
        ("window_end", "int64", "window end, epoch ms"),
        ("events", "int64", "events of the store in the window (any type)"),
        ("readings", "int64", "shelf.reading events"),
        ("sensors_reporting", "int64", "distinct shelf sensors that reported"),
        ("sensors_low_battery", "int64", "sensors whose lowest battery in the window was under 15 %"),
        ("pos_lines", "int64", "pos.line events"),
        ("registers_reporting", "int64", "distinct registers that sent a line"),
        ("gateway_reports", "int64", "edge.health events"),
        ("max_unsent_rows", "int64", "largest gateway backlog reported (unsent_rows); -1 when no report"),
        ("max_oldest_unsent_s", "double", "age of the oldest unsent event the gateway reported; -1 when none"),
        ("gateway_alerts_raised", "int64", "edge.alert events with state raised"),
    ) + _ORIGIN,
    key=("store_id", "window_start"),
)

LATE_EVENTS = TableDef(
    "stream.late_events",
    "Events that arrived after the watermark had passed their time: kept out of the windows, routed here",
    _cols(
        ("store_id", "string", "store"),
        ("device_id", "string", "sending device"),
        ("seq", "int64", "device sequence number"),
        ("type", "string", "event type"),
        ("ts", "int64", "event time, epoch ms"),
        ("watermark_ms", "int64", "the partition's watermark when the event arrived"),
        ("late_by_ms", "int64", "watermark - ts"),
    ) + _ORIGIN,
    key=("device_id", "seq"),
)

ALERTS = TableDef(
    "stream.alerts",
    "Cloud-side stock-out alerts (state changes with hysteresis) from the production model on every facing",
    _cols(
        ("store_id", "string", "store"),
        ("facing_id", "string", "facing"),
        ("sku", "string", "product on the facing"),
        ("kind", "string", "empty_now (the shelf reads empty) or empty_within_h (forecast within the horizon)"),
        ("state", "string", "raised or cleared"),
        ("ts", "int64", "event time of the scoring tick, epoch ms"),
        ("probability", "double", "model probability (empty_now: 1.0 when the shelf reads empty)"),
        ("units_est", "double", "estimated units on the shelf"),
        ("horizon_min", "int64", "prediction horizon, minutes"),
        ("scorer", "string", "model name / version that scored"),
        ("gateway_alive", "bool", "whether the store's gateway had reported within the last 30 minutes"),
    ) + _ORIGIN,
    key=("store_id", "facing_id", "kind", "ts"),
)

ANOMALIES = TableDef(
    "stream.anomalies",
    "Anomalies found by the stream's detectors (one row per episode, at first detection)",
    _cols(
        ("store_id", "string", "store"),
        ("subject", "string", "device or facing the anomaly is about (the store id for store-wide ones)"),
        ("kind", "string", "detector (see docs/stream.md): gateway_silent, sensor_stuck, till_silent, "
                           "alert_divergence, ..."),
        ("score", "double", "strength of the evidence; larger is stronger (detector-specific, see docs/stream.md)"),
        ("evidence", "string", "JSON object with the numbers the rule looked at"),
        ("first_seen", "int64", "event time the detector fired, epoch ms"),
        ("since_ms", "int64", "event time the anomalous behaviour started, as far as the detector can tell"),
    ) + _ORIGIN,
    key=("store_id", "subject", "kind", "first_seen"),
)

STATE = TableDef(
    "stream.state",
    "Operator state snapshots, one row per (source, partition): the job resumes from here after a crash",
    _cols(
        ("source", "string", "stream source name"),
        ("hub_partition", "string", "hub partition"),
        ("position", "int64", "last hub sequence number folded into the state"),
        ("saved_at", "int64", "wall clock, epoch ms"),
        ("state", "binary", "zlib-compressed pickle of the partition's operator state (the job's own data)"),
    ),
    key=("source", "hub_partition"),
)

#: The output tables (the state table is the job's own).
STREAM_TABLES = {t.name: t for t in (SALES_5M, STORE_HEALTH, LATE_EVENTS, ALERTS, ANOMALIES)}


def stream_schema(table: TableDef) -> pa.Schema:
    """The Arrow schema of a stream table."""
    return pa.schema([pa.field(c.name, _ARROW[c.type]) for c in table.columns])

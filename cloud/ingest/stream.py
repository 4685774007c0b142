"""Streaming ingest: messages from an ``EventSource`` -> ``bronze.events``, then checkpoint.

Bronze keeps every event raw (its JSON line as the gateway sent it) with where it came from
(source, partition, offset, sequence number, enqueued time) and which ingest run wrote it.
A message whose body cannot be decoded becomes one dead-letter bronze row with ``decode_error``
set and the body kept (``raw_body_b64``), plus the events of a batch whose only fault is a wrong
``count``, a line that is not a JSON object keeps its text with ``decode_error`` set, so nothing
is lost silently; silver quarantines both. The envelope columns (type, store, device, seq, ts)
are read from the lines by DuckDB in one pass.

Exactly-once bronze over at-least-once delivery: each commit carries one application
transaction per partition, ``stream:<source>:<partition>`` -> highest sequence number written.
Before writing, messages at or below that number are dropped, so a batch re-delivered after a
crash between the bronze commit and the checkpoint appends nothing.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Callable

import pyarrow as pa

from cloud.ingest.source import EventSource, ReceivedMessage
from cloud.lake.casts import sql_int
from cloud.lake.storage import LakeStorage
from cloud.lake.tables import BRONZE_EVENTS, conform, schema_of
from gondola.contracts import batch_lines, line_problem
from gondola.errors import ContractError

__all__ = ["ingest_stream", "bronze_rows", "stream_app_id"]


def stream_app_id(source_name: str, partition: str) -> str:
    """The application-transaction id that records bronze's position in one partition."""
    return f"stream:{source_name}:{partition}"


#: The envelope read from each line. Numbers are read as text and typed by the one cast rule
#: (``cloud.lake.casts``): an out-of-range ``seq`` is NULL alone (a BIGINT in ``json_transform``
#: would null the whole envelope). An event's store is its own ``store_id``, never the message's
#: property (silver quarantines an event without one); only dead letters take the message's.
_ENVELOPE_SQL = f"""
SELECT CASE WHEN ok THEN e.type END AS type, CASE WHEN ok THEN e.store_id ELSE msg_store END AS store_id,
       CASE WHEN ok THEN e.device_id END AS device_id, CASE WHEN ok THEN {sql_int('e.seq')} END AS seq,
       CASE WHEN ok THEN {sql_int('e.ts')} END AS ts, CASE WHEN ok THEN {sql_int('e.received_at')} END AS received_at,
       CASE WHEN event_json IS NOT NULL AND NOT ok
            THEN 'bad_json: batch line ' || CAST(message_index AS VARCHAR) || ' is not a JSON object'
            ELSE decode_error END AS decode_error,
       event_json, raw_body_b64, source, hub_partition, hub_offset, sequence_number, enqueued_time, message_index, ingest_run, ingested_at
FROM (SELECT *, CASE WHEN ok THEN json_transform(event_json, '{{"type": "VARCHAR", "store_id": "VARCHAR",
        "device_id": "VARCHAR", "seq": "VARCHAR", "ts": "VARCHAR", "received_at": "VARCHAR"}}') END AS e
      FROM (SELECT *, CASE WHEN json_valid(event_json) THEN json_type(event_json) = 'OBJECT' ELSE FALSE END AS ok
            FROM raw))
"""


def _lines(m: ReceivedMessage) -> list[str]:
    """The JSON lines of one gateway batch, undecoded (DuckDB parses them, in C, in bulk).

    Raises:
        ContractError: as ``gondola.contracts.batch_lines``.
    """
    return batch_lines(m.body, m.properties)


def _salvage(m: ReceivedMessage, exc: ContractError) -> list[str]:
    """The lines of a batch whose only fault is its ``count`` property (else none)."""
    if exc.reason != "bad_count":
        return []
    props = {k: v for k, v in m.properties.items() if k != "count"}
    try:
        return batch_lines(m.body, props)
    except ContractError:
        return []


def bronze_rows(messages: list[ReceivedMessage], *, source: str, run_id: str, now_ms: int) -> pa.Table:
    """Bronze rows for messages: one per event line (kept as sent), one per undecodable message."""
    import duckdb

    event_json: list[str | None] = []
    meta: dict[str, list] = {k: [] for k in ("msg_store", "hub_partition", "hub_offset", "sequence_number",
                                             "enqueued_time", "message_index", "decode_error")}
    bodies: list[str | None] = []
    for m in messages:
        try:
            lines = _lines(m)
            errors = [None] * len(lines)
            index = list(range(len(lines)))
            body = [None] * len(lines)
        except ContractError as exc:
            # Dead letter: the message body is kept (base64) with the reason; the events a
            # count mismatch still holds are kept as ordinary rows too (silver dedups them).
            salvaged = _salvage(m, exc)
            lines = [None] + salvaged
            errors = [f"{exc.reason}: {exc.detail}"[:500]] + [None] * len(salvaged)
            index = [-1] + list(range(len(salvaged)))
            body = [base64.b64encode(m.body).decode("ascii")] + [None] * len(salvaged)
        for i, line in enumerate(lines):
            # A line no JSON reader agrees on (a lone surrogate) is a dead letter of its own: kept
            # in base64, never handed to DuckDB, which would refuse the whole batch for it.
            if line is not None and line_problem(line):
                lines[i] = None
                errors[i] = f"bad_text: batch line {index[i]} holds a lone surrogate or control character"
                body[i] = base64.b64encode(line.encode("utf-8", "surrogatepass")).decode("ascii")
        n = len(lines)
        event_json += lines
        bodies += body
        meta["msg_store"] += [m.properties.get("store_id")] * n
        meta["hub_partition"] += [m.partition] * n
        meta["hub_offset"] += [m.offset] * n
        meta["sequence_number"] += [m.sequence_number] * n
        meta["enqueued_time"] += [m.enqueued_time] * n
        meta["message_index"] += index
        meta["decode_error"] += errors
    raw = pa.table({"event_json": pa.array(event_json, pa.string()),
                    **{k: pa.array(v, schema_of(BRONZE_EVENTS).field(k).type if k != "msg_store" else pa.string())
                       for k, v in meta.items()},
                    "raw_body_b64": pa.array(bodies, pa.string()),
                    "source": pa.array([source] * len(event_json), pa.string()),
                    "ingest_run": pa.array([run_id] * len(event_json), pa.string()),
                    "ingested_at": pa.array([now_ms] * len(event_json), pa.int64())})
    con = duckdb.connect()
    try:
        con.register("raw", raw)
        return conform(BRONZE_EVENTS, con.sql(_ENVELOPE_SQL).to_arrow_table())
    finally:
        con.close()


def ingest_stream(
    storage: LakeStorage,
    source: EventSource,
    *,
    max_messages: int = 2000,
    run_id: str | None = None,
    clock: Callable[[], int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Drain ``source`` into ``bronze.events``; checkpoint after each commit. Returns new rows.

    Raises:
        StorageError: bronze could not be written (nothing was checkpointed for that batch).
        TransportError: the source failed (what was committed stays committed).
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    now = clock or (lambda: time.time_ns() // 1_000_000)
    total = messages_seen = 0
    while True:
        batch = source.receive(max_messages=max_messages, max_wait_s=1.0)
        if not batch:
            break
        messages_seen += len(batch)
        fresh: list[ReceivedMessage] = []
        done: dict[str, int] = {}
        for m in batch:
            if m.partition not in done:
                done[m.partition] = storage.txn_version(BRONZE_EVENTS, stream_app_id(source.name, m.partition))
            if m.sequence_number > done[m.partition]:
                fresh.append(m)
        if fresh:
            rows = bronze_rows(fresh, source=source.name, run_id=run_id, now_ms=now())
            last: dict[str, int] = {}
            for m in fresh:
                last[m.partition] = max(last.get(m.partition, -1), m.sequence_number)
            storage.write(
                BRONZE_EVENTS,
                rows,
                txns=[(stream_app_id(source.name, p), s) for p, s in sorted(last.items())],
            )
            total += rows.num_rows
        # Only now is the batch safe in bronze: move the checkpoint.
        source.checkpoint(batch)
        if progress:
            progress(messages_seen, total)
    return total

"""Streaming ingest: messages from an ``EventSource`` -> ``bronze.events``, then checkpoint.

Bronze keeps every event raw (its JSON line, canonicalized) with where it came from
(source, partition, offset, sequence number, enqueued time) and which ingest run wrote it.
A message whose body cannot be decoded becomes one bronze row with ``decode_error`` set and
no event, so nothing is lost silently; silver quarantines it.

Exactly-once bronze over at-least-once delivery: each commit carries one application
transaction per partition, ``stream:<source>:<partition>`` -> highest sequence number written.
Before writing, messages at or below that number are dropped, so a batch re-delivered after a
crash between the bronze commit and the checkpoint appends nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Callable

import pyarrow as pa

from cloud.ingest.source import EventSource, ReceivedMessage
from cloud.lake.storage import LakeStorage
from cloud.lake.tables import BRONZE_EVENTS, schema_of
from gondola.contracts import decode_batch
from gondola.errors import ContractError

__all__ = ["ingest_stream", "bronze_rows", "stream_app_id"]


def stream_app_id(source_name: str, partition: str) -> str:
    """The application-transaction id that records bronze's position in one partition."""
    return f"stream:{source_name}:{partition}"


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


def bronze_rows(messages: list[ReceivedMessage], *, source: str, run_id: str, now_ms: int) -> pa.Table:
    """Decode messages into bronze rows (one per event; one per undecodable message)."""
    cols: dict[str, list] = {f.name: [] for f in schema_of(BRONZE_EVENTS)}

    def add(m: ReceivedMessage, index: int, event: dict | None, error: str | None) -> None:
        ev = event if isinstance(event, dict) else {}
        cols["event_json"].append(json.dumps(event, separators=(",", ":"), sort_keys=True) if event is not None else None)
        cols["type"].append(_str(ev.get("type")))
        cols["store_id"].append(_str(ev.get("store_id")) or m.properties.get("store_id"))
        cols["device_id"].append(_str(ev.get("device_id")))
        cols["seq"].append(_int(ev.get("seq")))
        cols["ts"].append(_int(ev.get("ts")))
        cols["received_at"].append(_int(ev.get("received_at")))
        cols["source"].append(source)
        cols["hub_partition"].append(m.partition)
        cols["hub_offset"].append(m.offset)
        cols["sequence_number"].append(m.sequence_number)
        cols["enqueued_time"].append(m.enqueued_time)
        cols["message_index"].append(index)
        cols["decode_error"].append(error)
        cols["ingest_run"].append(run_id)
        cols["ingested_at"].append(now_ms)

    for m in messages:
        try:
            events = decode_batch(m.body, m.properties)
        except ContractError as exc:
            add(m, -1, None, f"{exc.reason}: {exc.detail}"[:500])
            continue
        for i, event in enumerate(events):
            if isinstance(event, dict):
                add(m, i, event, None)
            else:
                add(m, i, None, f"not_object: batch line {i} is {type(event).__name__}")
    return pa.table(cols, schema=schema_of(BRONZE_EVENTS))


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
                description="raw gateway events, append-only",
            )
            total += rows.num_rows
        # Only now is the batch safe in bronze: move the checkpoint.
        source.checkpoint(batch)
        if progress:
            progress(messages_seen, total)
    return total

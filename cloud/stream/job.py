"""The long-running stream job: source -> per-partition operators -> ``stream.*`` Delta tables.

::

    loop until stopped (SIGTERM) or, with once=True, until the source has caught up:
        batch = source.receive()                       # the lake's EventSource (local hub / Event Hubs)
        rows = each partition's PartitionProcessor.process(its messages)
        one Delta commit per output table, carrying the app transaction
            stream-job:<source>:<partition> -> last hub sequence number of the batch in that partition
        every snapshot_every_s (and when stopping): state snapshot per partition -> stream.state,
            THEN source.checkpoint(last message per partition)

Exactly-once in effect over an at-least-once source and a crash at any point (kill -9):

* The checkpoint never runs ahead of the state snapshot, so after a crash the source re-delivers
  everything after the snapshot, and the partition's operators replay it from the snapshot.
* Replaying the same messages from the same state emits the same rows (event time decides
  everything, ``cloud.stream.pipeline``); each row carries the hub sequence number that emitted
  it, and only rows above the table's recorded transaction version for that partition are
  written. So a row is in each table once, whichever tables the crashed run had committed.
* Two instances briefly owning one partition during a rebalance can both write its rows for that
  moment (the Delta commit does not compare transaction versions): rows then share
  ``(hub_partition, hub_seq)`` and the table key, and readers can drop the copy.

Partitions are balanced by the source (the Event Hubs SDK's ownership blobs); a partition this
instance has not seen before starts from its snapshot in ``stream.state``, wherever it was
written, and so does one it gets back after another instance moved it on (the source starts it
at the group's checkpoint, past the state held here: ``StreamJob._resume``).
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import zlib
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from cloud.ingest.source import EventSource, ReceivedMessage
from cloud.lake.storage import LakeStorage
from cloud.stream.pipeline import PartitionProcessor, PartitionState, StreamConfig
from cloud.stream.tables import STATE, STREAM_TABLES, stream_schema
from cloud.stream.windows import EventClock
from models.replay import Facing

__all__ = ["StreamJob", "job_app_id"]

log = logging.getLogger(__name__)


def job_app_id(source: str, partition: str) -> str:
    """The application transaction recording a stream table's position in one partition."""
    return f"stream-job:{source}:{partition}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class StreamJob:
    """See the module docstring. ``scorer`` may be None (no cloud-side scoring); ``stock_records``
    (``cloud.stream.stock``) may be None (``phantom_inventory`` without the stock record);
    ``categories`` (``cloud.stream.detectors.Categories``, from the products master) may be None
    (``demand_band`` without switching shoppers taken off)."""

    def __init__(self, storage: LakeStorage, source: EventSource, *, config: StreamConfig | None = None,
                 scorer: Any = None, planograms: Mapping[str, Sequence[Facing]] | None = None,
                 stock_records: Any = None, categories: Any = None,
                 snapshot_every_s: float = 30.0, max_messages: int = 2000,
                 wall_clock: Callable[[], int] = _now_ms, progress: Callable[[str], None] | None = None):
        self.storage = storage
        self.source = source
        self.config = config or StreamConfig()
        self.scorer = scorer
        self.planograms = dict(planograms or {})
        self.stock_records = stock_records
        self.categories = categories
        self.snapshot_every_s = snapshot_every_s
        self.max_messages = max_messages
        self.wall = wall_clock
        self.progress = progress
        self._procs: dict[str, PartitionProcessor] = {}
        self._written: dict[tuple[str, str], int] = {}  # (table, partition) -> txn version
        self._last_msg: dict[str, ReceivedMessage] = {}
        self._dirty: set[str] = set()
        self._last_snapshot = time.monotonic()
        self.stats = {"messages": 0, "batches": 0, "rows": {name: 0 for name in STREAM_TABLES}, "snapshots": 0}

    # ---- state ---------------------------------------------------------------------------

    def _processor(self, partition: str, state: PartitionState | None = None) -> PartitionProcessor:
        """The partition's operators: from ``state`` when given, else as held, else from its snapshot."""
        proc = self._procs.get(partition)
        if proc is None or state is not None:
            state = state or self._load_state(partition) or PartitionState(
                partition, EventClock(self.config.allowed_lateness_ms, self.config.max_skew_ms))
            proc = self._procs[partition] = PartitionProcessor(
                state, self.config, scorer=self.scorer, planograms=self.planograms, source=self.source.name,
                wall_clock=self.wall, stock_records=self.stock_records, categories=self.categories)
            for name in STREAM_TABLES:
                self._written[(name, partition)] = self.storage.txn_version(name, job_app_id(self.source.name, partition))
        return proc

    def _load_state(self, partition: str) -> PartitionState | None:
        rows = self.storage.read(STATE.name, filter=(pc.field("source") == self.source.name)
                                 & (pc.field("hub_partition") == partition))
        if rows is None or rows.num_rows == 0:
            return None
        best = max(range(rows.num_rows), key=lambda i: rows["position"][i].as_py())
        state = pickle.loads(zlib.decompress(rows["state"][best].as_py()))
        log.info("partition %s: resuming from the snapshot at hub seq %s", partition, state.position)
        return state

    def _stored_positions(self) -> dict[str, int]:
        """Each partition's position in this source's snapshots in ``stream.state``."""
        rows = self.storage.read(STATE.name, columns=["hub_partition", "position"],
                                 filter=pc.field("source") == self.source.name)
        out: dict[str, int] = {}
        for part, pos in zip(*(rows.columns if rows is not None else ([], []))):
            out[part.as_py()] = max(out.get(part.as_py(), -1), pos.as_py())
        return out

    def snapshot(self) -> None:
        """Write the state of every partition that moved, then move the source's checkpoints.

        A partition whose snapshot in the lake is ahead of the state held here was moved on by
        another instance since (Event Hubs balanced it away): that state is stale and is dropped,
        not written (it would take the lake's state back behind the group's checkpoint, and the
        next reader of the partition would miss the messages in between); the partition is read
        from the lake again if it comes back."""
        stored = self._stored_positions() if self._dirty else {}
        for p in sorted(self._dirty):
            if stored.get(p, -1) > self._procs[p].state.position:
                log.info("partition %s: another instance moved it on to hub seq %d (this one held %d): not "
                         "snapshotted", p, stored[p], self._procs[p].state.position)
                self._dirty.discard(p)
                self._last_msg.pop(p, None)
                del self._procs[p]
        parts = sorted(self._dirty)
        if parts:
            now = self.wall()
            blobs = [zlib.compress(pickle.dumps(self._procs[p].state, protocol=pickle.HIGHEST_PROTOCOL), 1)
                     for p in parts]
            table = pa.table({"source": [self.source.name] * len(parts), "hub_partition": parts,
                              "position": [self._procs[p].state.position for p in parts],
                              "saved_at": [now] * len(parts), "state": blobs}, schema=stream_schema(STATE))
            quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
            name = self.source.name.replace("'", "''")
            self.storage.write(STATE.name, table, mode="overwrite" if self.storage.exists(STATE.name) else "append",
                               predicate=f"source = '{name}' AND hub_partition IN ({quoted})"
                               if self.storage.exists(STATE.name) else None,
                               description=STATE.doc)
            # Only now may the source forget these messages.
            self.source.checkpoint([self._last_msg[p] for p in parts if p in self._last_msg])
            self._dirty.clear()
            self.stats["snapshots"] += 1
        self._last_snapshot = time.monotonic()

    # ---- the loop ------------------------------------------------------------------------

    def _check_checkpoints(self) -> None:
        """At start, where the source tells its checkpoints (the embedded hub's reader): a partition
        whose checkpoint is ahead of this lake's state will never deliver the messages in between;
        count and log them now (also when no new message comes), and move the state past them."""
        checkpoints = getattr(self.source, "checkpoints", None)
        if checkpoints is None:
            return
        for part, seq in sorted(checkpoints().items()):
            proc = self._resume(part, seq + 1)
            proc.state.position = max(proc.state.position, seq)

    def _resume(self, partition: str, first: int) -> PartitionProcessor:
        """The partition's operators for the messages from ``first`` on, the first one the source
        delivers. Hub sequence numbers run without holes within a partition, and the checkpoint
        never runs ahead of the snapshot, so a hole after the state's position means either:

        * another instance of the job moved the partition on in this lake while this one did not
          own it (Event Hubs balanced it away and back, and the source starts it again at the
          group's checkpoint): the state held here is stale, the lake's snapshot is ahead of it and
          is read again;
        * this lake's ``stream.state`` is behind the consumer group's checkpoint (a new lake or one
          restored from a backup, read with a consumer group another lake already moved; or
          messages expired from the hub's retention): the messages in between are never read by
          this job and its windows and alerts miss them; they are counted and logged.
        """
        proc = self._processor(partition)
        if first > proc.state.position + 1:
            stored = self._load_state(partition)
            if stored is not None and stored.position > proc.state.position:
                proc = self._processor(partition, stored)
        missed = first - proc.state.position - 1
        if missed > 0:
            proc.state.count("skipped_messages", missed)
            self._dirty.add(partition)
            log.warning("partition %s: %d hub messages before sequence number %d were never read: the consumer "
                        "group's checkpoint is ahead of this lake's stream.state (a new or restored lake with a used "
                        "--consumer-group, or messages past the hub's retention); their windows, alerts and "
                        "anomalies are missing", partition, missed, first)
        return proc

    def process_batch(self, batch: Sequence[ReceivedMessage]) -> dict[str, int]:
        """Run one received batch through the operators and commit its rows; return rows per table."""
        by_part: dict[str, list[ReceivedMessage]] = {}
        for m in batch:
            by_part.setdefault(m.partition, []).append(m)
        out: dict[str, list[dict]] = {name: [] for name in STREAM_TABLES}
        last: dict[str, int] = {}
        for part, msgs in sorted(by_part.items()):
            proc = self._resume(part, min(m.sequence_number for m in msgs))
            before = proc.state.position
            rows = proc.process(msgs)
            if proc.state.position == before:
                continue
            last[part] = proc.state.position
            self._last_msg[part] = max((m for m in msgs if m.sequence_number <= proc.state.position),
                                       key=lambda m: m.sequence_number)
            self._dirty.add(part)
            for name, table_rows in rows.items():
                done = self._written[(name, part)]
                out[name].extend(r for r in table_rows if r["hub_seq"] > done)
        written = {}
        for name, table_rows in out.items():
            if not table_rows:
                continue
            tdef = STREAM_TABLES[name]
            landed = self.wall()
            for r in table_rows:
                r["emitted_at"] = landed
            data = pa.Table.from_pylist(table_rows, schema=stream_schema(tdef))
            txns = [(job_app_id(self.source.name, p), s) for p, s in sorted(last.items())]
            self.storage.write(name, data, txns=txns, description=tdef.doc)
            for p, s in last.items():
                self._written[(name, p)] = s
            written[name] = data.num_rows
            self.stats["rows"][name] += data.num_rows
        self.stats["messages"] += len(batch)
        self.stats["batches"] += 1
        return written

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> dict:
        """Process until ``stop`` is set (or, with ``once``, until nothing new arrives).

        Stops cleanly: the batch in hand is committed, the state snapshot written and the source
        checkpointed. Returns the job's stats.

        Raises:
            StorageError: a table or the state could not be written (nothing was checkpointed
                past what is safely stored; restart to resume).
            TransportError: the source failed.
        """
        stop = stop or threading.Event()
        self._check_checkpoints()
        while not stop.is_set():
            batch = self.source.receive(max_messages=self.max_messages, max_wait_s=1.0)
            if batch:
                self.process_batch(batch)
                if self.progress and self.stats["batches"] % 20 == 0:
                    self.progress(self.summary())
            elif once:
                break
            if time.monotonic() - self._last_snapshot >= self.snapshot_every_s:
                self.snapshot()
        # Not in a ``finally``: after a failed batch the in-memory state is ahead of the tables,
        # and snapshotting it would lose rows; the next start replays from the last snapshot.
        self.snapshot()
        return self.stats

    def counters(self) -> dict[str, int]:
        """Operator counters summed over partitions (events, duplicates, late_events, ...)."""
        out: dict[str, int] = {}
        for proc in self._procs.values():
            for k, v in proc.state.counters.items():
                out[k] = out.get(k, 0) + v
        return out

    def summary(self) -> str:
        c = self.counters()
        rows = ", ".join(f"{k.split('.')[1]} {v}" for k, v in self.stats["rows"].items())
        skipped = f", {c['skipped_messages']} never read (checkpoint ahead of the lake's state)" \
            if c.get("skipped_messages") else ""
        return (f"{self.stats['messages']} messages{skipped}, {c.get('events', 0)} events ({c.get('duplicates', 0)} "
                f"duplicates, {c.get('late_events', 0)} late); rows: {rows}")

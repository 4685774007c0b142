"""The stream-source role: where bronze's streaming ingest reads gateway messages from.

Two implementations share this interface:

* :class:`LocalHubSource` (here): reads the embedded hub (``gondola.hub.LocalHub``) and keeps its
  checkpoints (one offset per partition) durably in a small SQLite file next to the hub.
* ``cloud.azure.eventhubs`` (the Azure adapter): an ``EventHubConsumerClient`` on a consumer
  group with a blob checkpoint store; partition load balancing is left to the SDK.

The runner (``cloud.ingest.stream.ingest_stream``) drives a source like this::

    while batch := source.receive(max_messages=5000, max_wait_s=1.0):
        commit batch to bronze (one Delta commit, idempotent per partition)
        source.checkpoint(batch)          # ONLY after the bronze commit returned

So a crash between the two calls re-delivers the batch; bronze recognizes it (application
transaction per partition, see ``cloud.ingest.stream``) and appends nothing: at-least-once
delivery, exactly-once bronze rows.

Rules an implementation follows:

* ``receive`` returns messages *after the last checkpoint* (or after what this same source object
  already returned, whichever is later), in order within a partition; an empty list means
  "nothing new right now" and ends one ingest pass.
* ``checkpoint`` records, per partition, the last message of the given list; it must be durable
  when it returns (SQLite commit / blob upload). Calling it again with older messages never moves
  a checkpoint backwards.
* Vendor errors are translated: ``TransportError`` (retry later), ``TransportAuthError``
  (credentials refused), ``StorageError`` (checkpoint store unreachable), ``ConfigError``.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

from gondola.errors import StorageError

__all__ = ["ReceivedMessage", "EventSource", "LocalHubSource"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One gateway -> cloud message as a stream source delivers it.

    ``partition`` is a string as Event Hubs names partitions (``"0"``, ``"1"``, ...).
    ``offset`` is the position in the partition, kept as a string because Event Hubs offsets are
    opaque strings; ``sequence_number`` is the monotonically increasing integer per partition
    that bronze's idempotence relies on. ``enqueued_time`` is epoch milliseconds UTC.
    ``body`` and ``properties`` are decoded with ``gondola.contracts.decode_batch``.
    """

    partition: str
    offset: str
    sequence_number: int
    enqueued_time: int
    properties: Mapping[str, str]
    body: bytes
    device_id: str | None = None
    system_properties: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class EventSource(Protocol):
    """Where streaming ingest reads messages; checkpoints only after bronze committed them."""

    #: A stable name for this source (e.g. ``"localhub"`` or ``"eventhubs:<hub>/<group>"``);
    #: bronze records it and keys its idempotence on it.
    name: str

    def receive(self, *, max_messages: int = 5000, max_wait_s: float = 1.0) -> list[ReceivedMessage]:
        """Up to ``max_messages`` new messages (waiting at most ``max_wait_s``); ``[]`` when none.

        Raises:
            TransportError: the hub could not be read (retry later).
            StorageError: the checkpoint store could not be read.
        """
        ...

    def checkpoint(self, messages: Sequence[ReceivedMessage]) -> None:
        """Durably record, per partition, the last of ``messages`` as processed.

        Call only after those messages are committed to bronze.

        Raises:
            StorageError: the checkpoint could not be stored (bronze is still correct; the
                messages will be re-delivered and recognized as already ingested).
        """
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


_CHECKPOINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer_group TEXT NOT NULL,
    partition TEXT NOT NULL,
    offset TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, partition)
);
"""


class LocalHubSource:
    """Reads the embedded hub partition by partition; checkpoints in a SQLite file.

    The checkpoint file defaults to ``<hub>.checkpoints.sqlite`` beside the hub; it plays the
    role of the blob checkpoint store. ``consumer_group`` separates independent readers.
    """

    def __init__(
        self,
        hub_path: str | Path,
        *,
        consumer_group: str = "$Default",
        checkpoint_path: str | Path | None = None,
    ):
        from gondola.hub import LocalHub

        self.hub_path = Path(hub_path)
        self.consumer_group = consumer_group
        self.name = "localhub"
        self._hub = LocalHub(self.hub_path)
        self._lock = threading.Lock()
        cp = Path(checkpoint_path) if checkpoint_path else self.hub_path.with_name(self.hub_path.name + ".checkpoints.sqlite")
        try:
            self._db = sqlite3.connect(cp, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_CHECKPOINT_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open checkpoint store {cp}: {exc}") from exc
        # What this object already handed out (so repeated receive() calls move forward even
        # before a checkpoint); starts at the durable checkpoint.
        self._position: dict[int, int] = {p: self.checkpoints().get(str(p), -1) for p in range(self._hub.partitions)}

    @property
    def partitions(self) -> list[str]:
        return [str(p) for p in range(self._hub.partitions)]

    def checkpoints(self) -> dict[str, int]:
        """The durable checkpoint per partition: the last processed sequence number."""
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, sequence_number FROM checkpoints WHERE consumer_group=?", (self.consumer_group,)
            ).fetchall()
        return {p: int(s) for p, s in rows}

    def receive(self, *, max_messages: int = 5000, max_wait_s: float = 1.0) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages across partitions (a fair share each); never blocks."""
        out: list[ReceivedMessage] = []
        parts = range(self._hub.partitions)
        share = max(1, max_messages // max(len(parts), 1))
        for p in parts:
            for m in self._hub.read(p, after_offset=self._position[p], limit=share):
                out.append(
                    ReceivedMessage(
                        partition=str(m.partition),
                        offset=str(m.offset),
                        sequence_number=m.sequence_number,
                        enqueued_time=m.enqueued_time,
                        properties=m.properties,
                        body=m.body,
                        device_id=m.device_id,
                    )
                )
                self._position[p] = m.offset
        return out

    def checkpoint(self, messages: Sequence[ReceivedMessage]) -> None:
        """Store the last offset per partition of ``messages``; never moves backwards."""
        last: dict[str, ReceivedMessage] = {}
        for m in messages:
            if m.partition not in last or m.sequence_number > last[m.partition].sequence_number:
                last[m.partition] = m
        if not last:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for part, m in last.items():
                    self._db.execute(
                        "INSERT INTO checkpoints VALUES (?,?,?,?) ON CONFLICT (consumer_group, partition) DO UPDATE "
                        "SET offset=excluded.offset, sequence_number=excluded.sequence_number "
                        "WHERE excluded.sequence_number > checkpoints.sequence_number",
                        (self.consumer_group, part, m.offset, m.sequence_number),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"checkpoint write failed: {exc}") from exc

    def rewind(self) -> None:
        """Forget what was handed out but not checkpointed (a restarted reader does the same)."""
        cps = self.checkpoints()
        self._position = {p: cps.get(str(p), -1) for p in range(self._hub.partitions)}

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            finally:
                self._hub.close()

    def __enter__(self) -> "LocalHubSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

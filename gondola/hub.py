"""The embedded hub: IoT Hub's role on one machine, kept on disk.

Gateways send batch messages to it (the edge's ``LocalHubTransport``); the cloud reads them by
partition and offset (the cloud's local stream reader), the way it reads the IoT Hub built-in
Event Hubs endpoint in production. Module twins (desired / reported properties) live here too,
so model rollout works offline.

One SQLite file in WAL mode with ``synchronous=FULL``: once ``send`` returns, the message
survives a crash of any process and a power cut, which is what "the hub accepted it" means.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gondola.clock import Clock, SystemClock
from gondola.errors import StorageError

__all__ = ["HubMessage", "LocalHub", "partition_for", "DEVICE_TWIN"]

#: The module id under which the embedded hub keeps a device's own twin (its tags).
DEVICE_TWIN = ""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    enqueued_time INTEGER NOT NULL,
    properties TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS twins (
    device_id TEXT NOT NULL,
    module_id TEXT NOT NULL,
    desired TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 0,
    reported TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, module_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def partition_for(device_id: str, partitions: int) -> int:
    """Stable partition of a device, as IoT Hub keeps one device's messages on one partition."""
    return zlib.crc32(device_id.encode()) % partitions


@dataclass(frozen=True)
class HubMessage:
    """A message as the cloud reads it from a partition."""

    partition: int
    offset: int
    sequence_number: int
    enqueued_time: int
    device_id: str
    properties: dict[str, str]
    body: bytes


class LocalHub:
    """A partitioned, append-only message log and twin store in one SQLite file.

    Safe to share between threads and processes (SQLite locking; a busy timeout of 30 s).
    """

    def __init__(self, path: str | Path, *, partitions: int = 4, clock: Clock | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            # Twin tags (``ring=canary|early|all``) came later: add the column to older hubs.
            if "tags" not in {r[1] for r in self._db.execute("PRAGMA table_info(twins)")}:
                self._db.execute("ALTER TABLE twins ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")
            row = self._db.execute("SELECT value FROM meta WHERE key='partitions'").fetchone()
            if row is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('partitions', ?)", (str(partitions),))
                row = self._db.execute("SELECT value FROM meta WHERE key='partitions'").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open hub at {self.path}: {exc}") from exc
        # The partition count is fixed when the hub is created, as in IoT Hub.
        self.partitions = int(row[0])

    # ---- device to cloud -------------------------------------------------------------------

    def send(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> int:
        """Append one message; return its offset. Durable when this returns.

        Raises:
            StorageError: the message could not be written (the sender should retry).
        """
        part = partition_for(device_id, self.partitions)
        props = json.dumps(dict(properties), sort_keys=True)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                (nxt,) = self._db.execute(
                    "SELECT COALESCE(MAX(offset), -1) + 1 FROM messages WHERE partition=?", (part,)
                ).fetchone()
                self._db.execute(
                    "INSERT INTO messages VALUES (?,?,?,?,?,?)",
                    (part, nxt, device_id, self._clock.now_ms(), props, bytes(body)),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"hub write failed: {exc}") from exc
        return nxt

    def read(self, partition: int, *, after_offset: int = -1, limit: int = 1000) -> list[HubMessage]:
        """Messages of one partition with offset > ``after_offset``, oldest first."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} not in 0..{self.partitions - 1}")
        with self._lock:
            rows = self._db.execute(
                "SELECT offset, enqueued_time, device_id, properties, body FROM messages "
                "WHERE partition=? AND offset>? ORDER BY offset LIMIT ?",
                (partition, after_offset, limit),
            ).fetchall()
        return [
            HubMessage(partition, off, off, enq, dev, json.loads(props), bytes(body))
            for off, enq, dev, props, body in rows
        ]

    def count(self, partition: int | None = None) -> int:
        with self._lock:
            if partition is None:
                return self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM messages WHERE partition=?", (partition,)).fetchone()[0]

    # ---- module twins ----------------------------------------------------------------------

    def set_desired(self, device_id: str, module_id: str, desired: Mapping) -> int:
        """Replace a module twin's desired properties; return the new desired version."""
        with self._lock:
            self._db.execute(
                "INSERT INTO twins (device_id, module_id, desired, desired_version) VALUES (?,?,?,1) "
                "ON CONFLICT (device_id, module_id) DO UPDATE SET desired=excluded.desired, "
                "desired_version=desired_version+1",
                (device_id, module_id, json.dumps(dict(desired), sort_keys=True)),
            )
            return self._db.execute(
                "SELECT desired_version FROM twins WHERE device_id=? AND module_id=?", (device_id, module_id)
            ).fetchone()[0]

    def get_twin(self, device_id: str, module_id: str) -> dict:
        """``{"desired": {..., "$version": n}, "reported": {...}}``; empty when never set."""
        with self._lock:
            row = self._db.execute(
                "SELECT desired, desired_version, reported FROM twins WHERE device_id=? AND module_id=?",
                (device_id, module_id),
            ).fetchone()
        if row is None:
            return {"desired": {"$version": 0}, "reported": {}}
        desired = json.loads(row[0]) | {"$version": row[1]}
        return {"desired": desired, "reported": json.loads(row[2])}

    def desired_version(self, device_id: str, module_id: str) -> int:
        """The desired properties' ``$version`` (0 when never set): a cheap poll for changes."""
        with self._lock:
            row = self._db.execute("SELECT desired_version FROM twins WHERE device_id=? AND module_id=?",
                                   (device_id, module_id)).fetchone()
        return 0 if row is None else int(row[0])

    def twin_devices(self, module_id: str) -> list[str]:
        """Devices that have a twin of ``module_id`` (desired or reported), sorted."""
        with self._lock:
            rows = self._db.execute("SELECT device_id FROM twins WHERE module_id=? ORDER BY device_id",
                                    (module_id,)).fetchall()
        return [r[0] for r in rows]

    def patch_reported(self, device_id: str, module_id: str, patch: Mapping) -> None:
        """Merge a patch into a module twin's reported properties (a ``None`` value deletes)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT reported FROM twins WHERE device_id=? AND module_id=?", (device_id, module_id)
            ).fetchone()
            reported = json.loads(row[0]) if row else {}
            for key, value in patch.items():
                if value is None:
                    reported.pop(key, None)
                else:
                    reported[key] = value
            self._db.execute(
                "INSERT INTO twins (device_id, module_id, reported) VALUES (?,?,?) "
                "ON CONFLICT (device_id, module_id) DO UPDATE SET reported=excluded.reported",
                (device_id, module_id, json.dumps(reported, sort_keys=True)),
            )
            self._db.execute("COMMIT")

    def set_tags(self, device_id: str, module_id: str, tags: Mapping) -> None:
        """Merge tags into a module twin (a ``None`` value deletes), as an IoT Hub twin patch
        of ``tags`` does. Rollout rings are the tag ``ring``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT tags FROM twins WHERE device_id=? AND module_id=?", (device_id, module_id)
            ).fetchone()
            merged = json.loads(row[0]) if row else {}
            for key, value in tags.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            self._db.execute(
                "INSERT INTO twins (device_id, module_id, tags) VALUES (?,?,?) "
                "ON CONFLICT (device_id, module_id) DO UPDATE SET tags=excluded.tags",
                (device_id, module_id, json.dumps(merged, sort_keys=True)),
            )
            self._db.execute("COMMIT")

    def get_tags(self, device_id: str, module_id: str) -> dict:
        with self._lock:
            row = self._db.execute(
                "SELECT tags FROM twins WHERE device_id=? AND module_id=?", (device_id, module_id)
            ).fetchone()
        return json.loads(row[0]) if row else {}

    def set_device_tags(self, device_id: str, tags: Mapping) -> None:
        """Merge tags into the device twin (IoT Edge deployments select gateways by these),
        kept here as the twin of module ``""``."""
        self.set_tags(device_id, DEVICE_TWIN, tags)

    def get_device_tags(self, device_id: str) -> dict:
        return self.get_tags(device_id, DEVICE_TWIN)

    def modules(self, module_id: str, *, tags: Mapping | None = None) -> list[str]:
        """Device ids with a twin for ``module_id`` whose tags include ``tags`` (all when None),
        sorted: the embedded twin query IoT Hub answers with ``tags.ring = 'canary'``."""
        with self._lock:
            rows = self._db.execute("SELECT device_id, tags FROM twins WHERE module_id=?", (module_id,)).fetchall()
        want = dict(tags or {})
        return sorted(d for d, t in rows if all(json.loads(t).get(k) == v for k, v in want.items()))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "LocalHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The gateway's durable buffer: SQLite in WAL mode, one file per store gateway.

What it guarantees, and how:

* **Committed before acknowledged.** :meth:`SqliteBuffer.append` returns only after the
  transaction holding the whole group is committed; the collector acknowledges (MQTT PUBACK) the
  messages of a group only then. ``synchronous=NORMAL`` (default) survives kill -9 of the process;
  ``synchronous=FULL`` also survives a power cut (setting ``durability``).
* **Idempotent on (device_id, epoch, seq).** Per device and epoch (one run of its counter; see
  ``gondola.contracts``) the buffer keeps the lowest and highest ``seq`` seen and the ranges of
  missing ``seq`` (the *gaps*). An event is new exactly when its ``seq`` is above the high-water
  mark, below the low-water mark, or inside an open gap; everything else is a duplicate and is
  counted, not stored. This stays exact after rows are sent and deleted, so a redelivery days
  later is still recognised. A new epoch is a new sequence: neither duplicates nor a gap.
* **Gap accounting.** A jump in ``seq`` opens a gap (a counted loss); a late arrival fills it.
  The first event seen of an epoch sets both marks; one arriving later below it (sent 1, 0, 2)
  is new, and a gap only if it skips values. ``seq_gaps`` is the number of ``seq`` values missing
  right now, per device and in total.
* **Plausibility.** A ``seq`` more than ``BufferPolicy.max_seq_jump`` beyond the marks is not
  believed (one event with seq 2^63-1 would otherwise open a gap of 9e18): it is quarantined
  (``implausible_seq``). A device that keeps sending from the new range (``REANCHOR_AFTER``
  consecutive events there) really jumped: the marks move to it, logged and counted, with no gap.
* **Conflicting repeats.** A repeat of an identity seen recently (the last ``RECENT_PER_DEVICE``
  events of each device and epoch, in memory) with different content is quarantined
  (``conflicting_repeat``) and counted, not silently dropped as a duplicate.
* **Hard byte cap with a stated policy** (:meth:`SqliteBuffer.enforce_cap`): POS lines and alerts
  are never evicted; as the cap nears, shelf readings are thinned (keep the first
  reading per facing per 5, 15, 60, then 240 minutes, oldest first), then old health events go,
  then the oldest readings, then the oldest stock movements. Each eviction is counted per reason
  and event type. When only never-evicted rows are left, ``append`` raises ``BufferFullError`` and
  the collector stops acknowledging (the broker keeps the messages): "reject new", never "drop".
* **Time to live per event type** (:meth:`SqliteBuffer.expire`), counted as evictions.
* **Sent means gone.** The uplink removes rows in the same transaction that records the hub
  accepted them (:meth:`SqliteBuffer.mark_sent`), so a restart resumes exactly at the first unsent
  row; a crash between "hub accepted" and that commit re-sends that batch (duplicates are removed
  downstream by ``(device_id, seq)``). Rows live in segment tables, per priority class and
  stretch of arrivals (migration ``0010_event_segments``): a batch that is the front of its
  class moves the class's persisted *sent prefix* (no query reads below it) and a segment all
  of whose rows are sent is dropped whole, which frees its pages without writing them; other
  batches (and rows in a class's current segment) are deleted.
* **Named, ordered migrations** (``MIGRATIONS``) and an online backup (:meth:`SqliteBuffer.backup`).

Sizes: ``bytes`` is the logical size (encoded event + a fixed per-row overhead), the figure the cap
applies to. SQLite reuses freed pages, so the file stays near the high-water mark of that figure.

Errors: ``StorageError`` for any SQLite failure, ``BufferFullError`` as above.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

from gondola.clock import MINUTE_MS
from gondola.contracts import PRIORITY
from gondola.errors import BufferFullError, StorageError

log = logging.getLogger(__name__)

__all__ = [
    "MIGRATIONS",
    "ROW_OVERHEAD_BYTES",
    "NEVER_EVICTED",
    "THIN_STEPS_MIN",
    "BufferPolicy",
    "Appended",
    "StoredEvent",
    "EventColumns",
    "priority_of",
    "SqliteBuffer",
    "encode",
    "redact_payload",
    "QUARANTINE_PREFIX_BYTES",
    "RECENT_PER_DEVICE",
    "REANCHOR_AFTER",
]

#: Per-row bytes added to the encoded event for the cap: the index entries and row header.
ROW_OVERHEAD_BYTES = 96
#: Event types the cap never evicts and no TTL expires by default.
NEVER_EVICTED = frozenset({"pos.line", "edge.alert"})
#: Thinning resolutions for shelf readings, finest first (minutes).
THIN_STEPS_MIN = (5, 15, 60, 240)
#: Bytes of a quarantined payload kept (after personal fields are removed).
QUARANTINE_PREFIX_BYTES = 2048
#: Identities remembered per device and epoch to tell a conflicting repeat from a duplicate.
RECENT_PER_DEVICE = 64
#: Consecutive implausible seqs, each near the one before, after which the marks move there.
REANCHOR_AFTER = 3

#: (name, SQL) applied in order, each once, recorded in ``migrations``. Append only.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_events",
        """
        CREATE TABLE events (
            -- AUTOINCREMENT: ids never go back after the table empties (the live lane's mark).
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            device_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            etype TEXT NOT NULL,
            priority INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            facing_id TEXT,
            size INTEGER NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX events_by_priority ON events (priority, id);
        CREATE INDEX events_readings ON events (facing_id, ts) WHERE etype = 'shelf.reading';
        """,
    ),
    (
        "0002_devices_and_gaps",
        """
        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            max_seq INTEGER NOT NULL,
            received INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL
        );
        CREATE TABLE gaps (
            device_id TEXT NOT NULL,
            lo INTEGER NOT NULL,
            hi INTEGER NOT NULL,
            detected_at INTEGER NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device_id, lo)
        );
        """,
    ),
    (
        "0003_quarantine_evictions_meta",
        """
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            received_at INTEGER NOT NULL,
            topic TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            payload BLOB NOT NULL
        );
        CREATE TABLE evictions (
            reason TEXT NOT NULL,
            etype TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (reason, etype)
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """,
    ),
    (
        "0004_facing_state",
        """
        CREATE TABLE facing_state (
            facing_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            alert TEXT NOT NULL DEFAULT 'clear',
            alert_since INTEGER NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        "0005_drop_readings_index",
        # Thinning scans readings in id order instead (SqliteBuffer._thin_readings): the partial
        # index on (facing_id, ts) cost 40 % of the append rate and served only that rare pass.
        "DROP INDEX IF EXISTS events_readings;",
    ),
    (
        "0006_epochs",
        # Identity becomes (device_id, epoch, seq): a device whose counter restarts sends a new
        # epoch. Rows of older gateways are epoch 0 (what a missing epoch means on the wire).
        # min_seq: the lowest seq seen, so a first event that arrives late is not a duplicate.
        """
        ALTER TABLE events ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE device_epochs (
            device_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            min_seq INTEGER NOT NULL,
            max_seq INTEGER NOT NULL,
            received INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (device_id, epoch)
        );
        INSERT INTO device_epochs SELECT device_id, 0, 0, max_seq, received, duplicates, first_seen, last_seen
            FROM devices;
        DROP TABLE devices;
        ALTER TABLE device_epochs RENAME TO devices;
        CREATE TABLE epoch_gaps (
            device_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            lo INTEGER NOT NULL,
            hi INTEGER NOT NULL,
            detected_at INTEGER NOT NULL,
            reported INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (device_id, epoch, lo)
        );
        INSERT INTO epoch_gaps SELECT device_id, 0, lo, hi, detected_at, reported FROM gaps;
        DROP TABLE gaps;
        ALTER TABLE epoch_gaps RENAME TO gaps;
        """,
    ),
    (
        "0007_quarantine_bytes",
        # Quarantine counts within the byte cap: each row's size, kept with it.
        """
        ALTER TABLE quarantine ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
        UPDATE quarantine SET size = length(CAST(payload AS BLOB)) + length(CAST(detail AS BLOB))
            + length(CAST(topic AS BLOB)) + 96;
        """,
    ),
    (
        "0008_events_by_priority",
        # Each priority class becomes one contiguous id range: id = priority * 2^40 + arrival
        # number (the old id; the arrival counter goes on from the highest id ever used). The
        # table's b-tree then holds a class's rows in arrival order on its own pages, so a drain
        # reads and deletes front to back through one range instead of rewriting pages shared
        # by every class, and the (priority, id) index goes (the primary key orders the same).
        """
        INSERT OR REPLACE INTO meta VALUES ('arrival', COALESCE((SELECT seq FROM sqlite_sequence
            WHERE name = 'events'), (SELECT MAX(id) FROM events), 0));
        UPDATE events SET id = priority * 1099511627776 + id WHERE priority > 0;
        DROP INDEX IF EXISTS events_by_priority;
        INSERT OR REPLACE INTO meta SELECT 'rows_p' || priority, COUNT(*) FROM events GROUP BY priority;
        """,
    ),
    (
        "0009_facing_state_blocks",
        # A facing-state snapshot is one row: the changed facings' packed states end to end
        # (``width`` bytes each), their ids, alert words and alert times, and the layout that
        # packed them. Upserting a row per facing cost ~4 us each (10,000 facings: 40 ms per
        # snapshot, as much as packing them). Rows of ``facing_state`` are older builds'.
        """
        CREATE TABLE facing_state_blocks (
            seq INTEGER PRIMARY KEY,
            layout TEXT NOT NULL,
            width INTEGER NOT NULL,
            ids TEXT NOT NULL,
            states BLOB NOT NULL,
            alerts TEXT NOT NULL,
            since TEXT NOT NULL
        );
        """,
    ),
    (
        "0010_event_segments",
        # Events go into segment tables: per priority class, the rows of a stretch of arrivals
        # (``SEGMENT_BYTES``), one table each, listed here by (class, first id). A drain marks a
        # sent prefix of a class (``sent_p<class>`` in meta) instead of deleting its rows, and
        # drops a segment whole once every row of it is sent: SQLite frees a dropped table's
        # pages without writing them, where deleting rows rewrote every page they were on
        # (through the WAL, then the checkpoint). The ``events`` table of older buffers stays
        # as the first segment of every class, dropped once all of its rows are sent.
        """
        CREATE TABLE segments (
            priority INTEGER NOT NULL,
            start INTEGER NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (priority, start)
        );
        INSERT INTO segments VALUES (0, 0, 'events'), (1, 1099511627776, 'events'),
            (2, 2199023255552, 'events'), (3, 3298534883328, 'events');
        """,
    ),
)

#: The facing id of the layout row among facing-state rows (``edge.inference`` writes it; no
#: facing has it).
LAYOUT_ROW = ""

#: ids: priority class in the high bits, arrival number in the low ones (migration 0008).
CLASS_BITS = 40
_ARRIVAL_MASK = (1 << CLASS_BITS) - 1
#: The priority classes (``gondola.contracts.PRIORITY``; unknown types are readings' class).
CLASSES = tuple(sorted(set(PRIORITY.values()) | {3}))


def arrival(event_id: int) -> int:
    """The arrival number of a stored event (its order of arrival across all classes)."""
    return event_id & _ARRIVAL_MASK


def priority_of(event_id: int) -> int:
    """The priority class of a stored event (the high bits of its id)."""
    return event_id >> CLASS_BITS


def _class_range(priority: int) -> tuple[int, int]:
    return priority << CLASS_BITS, (priority + 1) << CLASS_BITS


#: The table of older buffers (migration 0010): the first segment of every class.
LEGACY_TABLE = "events"
#: Stored bytes after which a class's current segment is closed and the next row starts a new
#: one (see ``segment_bytes``: the segment each class is drained through may hold sent rows
#: until it is dropped, a 16th of the cap for the four classes).
SEGMENT_BYTES = 32 * 1024**2
_SEGMENT_COLUMNS = ("id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, etype TEXT NOT NULL, "
                    "priority INTEGER NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, facing_id TEXT, "
                    "size INTEGER NOT NULL, body TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0")


def segment_bytes(policy: "BufferPolicy") -> int:
    """Stored bytes of one segment: ``SEGMENT_BYTES``, at most a 64th of the cap (64 KB least)."""
    cap = policy.max_bytes
    return max(64 * 1024, min(SEGMENT_BYTES, cap // 64)) if cap else SEGMENT_BYTES


def segment_table(priority: int, first_id: int) -> tuple[str, str]:
    """(name, CREATE TABLE statement) of the segment of ``priority`` whose first row is ``first_id``
    (the columns of ``events``, in its order)."""
    name = f"events_p{priority}_{arrival(first_id)}"
    return name, f"CREATE TABLE {name} ({_SEGMENT_COLUMNS})"


#: Unsent rows per class, kept with the other counters (without the (priority, id) index a
#: GROUP BY would read the whole table at every health report).
_CLASS_ROWS = {p: f"rows_p{p}" for p in CLASSES}


#: Per class, the highest id of its sent prefix: every row of the class up to it was sent (rows of
#: it may still be stored in a segment not yet dropped; no query reads them).
_SENT_TO = {p: f"sent_p{p}" for p in CLASSES}


_COUNTERS = ("arrival", "rows", "bytes", "sent", "evicted", "duplicates", "quarantined", "received", "live_hwm",
             "gw_seq", "last_uplink_ts", "conflicting_repeats", "implausible_seqs", "reanchored",
             *_CLASS_ROWS.values(), *_SENT_TO.values())


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode(event: Mapping) -> str:
    """Canonical JSON of an event (sorted keys, no spaces, one line): what the buffer ships."""
    return _ENCODER.encode(event)


def safe_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and made storable: anything that is not valid
    Unicode text (a lone surrogate) or is a control character is written as an escape."""
    text = str(text)[:limit]
    if not text.isprintable():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text


_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: Personal fields, removed from quarantined payloads (a clear loyalty id, and a pseudonym a
#: device sent: both could be a real card number).
PERSONAL_FIELDS = ("loyalty_id", "loyalty_pid")
_PERSONAL_TEXT = re.compile(rb'"(?:loyalty_id|loyalty_pid)"\s*:\s*(?:"(?:[^"\\]|\\.)*"?|[^,}\]]*)')


def redact_payload(payload: bytes, limit: int = QUARANTINE_PREFIX_BYTES) -> bytes:
    """What quarantine keeps of a payload: personal fields removed (parsed when it is JSON, by
    pattern when it is not), then at most ``limit`` bytes."""
    payload = bytes(payload)
    head = payload[:64 * 1024]
    try:
        obj = json.loads(head)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        _drop_personal(obj)
        try:
            return json.dumps(obj, separators=(",", ":"))[:limit].encode("ascii")
        except (ValueError, RecursionError):
            pass
    return _PERSONAL_TEXT.sub(b'"<personal field removed>"', head)[:limit]


def _drop_personal(obj, depth: int = 0) -> None:
    if depth > 20:
        return
    if isinstance(obj, dict):
        for k in PERSONAL_FIELDS:
            obj.pop(k, None)
        for v in obj.values():
            _drop_personal(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _drop_personal(v, depth + 1)


@dataclass
class BufferPolicy:
    """Cap, eviction and expiry settings of a buffer."""

    #: Hard cap on logical bytes (see module docstring). 0 means no cap.
    max_bytes: int = 2 * 1024**3
    #: Eviction starts when bytes exceed this fraction of the cap and stops below ``low_water``.
    high_water: float = 0.95
    low_water: float = 0.85
    #: Time to live per event type, ms since ``received_at``; ``None``: never expires.
    ttl_ms: dict[str, int | None] = field(default_factory=lambda: {
        "shelf.reading": 7 * 24 * 60 * MINUTE_MS,
        "edge.health": 3 * 24 * 60 * MINUTE_MS,
        "shelf.restock": 30 * 24 * 60 * MINUTE_MS,
        "shelf.check": 30 * 24 * 60 * MINUTE_MS,
        "shelf.gap_scan": 30 * 24 * 60 * MINUTE_MS,
        "inventory.delivery": 30 * 24 * 60 * MINUTE_MS,
        "pos.line": None,
        "edge.alert": None,
    })
    #: Keep at most this many quarantined payloads (oldest trimmed; the count stays).
    max_quarantine_rows: int = 10_000
    #: Quarantine may hold at most this share of the byte cap (its oldest rows are trimmed to
    #: stay under it; at least 64 KB), so junk can never crowd out events.
    quarantine_share: float = 0.05
    #: The WAL file is truncated back to this size after each checkpoint (SQLite's
    #: ``journal_size_limit``); at most an eighth of the cap.
    wal_limit_bytes: int = 16 * 1024**2
    #: A seq further than this beyond a device epoch's marks is quarantined (``implausible_seq``).
    max_seq_jump: int = 10_000_000
    #: ``NORMAL`` survives kill -9; ``FULL`` also survives power loss.
    durability: str = "NORMAL"


@dataclass(frozen=True)
class Appended:
    """Outcome of one ``append`` call."""

    stored: int
    duplicates: int
    #: New gaps opened by this group: (device_id, epoch, lo, hi).
    new_gaps: list[tuple[str, int, int, int]]
    #: Indexes (into the ``events`` argument) of the events that were new and stored.
    kept: list[int]
    #: Events refused and quarantined by the buffer: (index, reason).
    rejected: list[tuple[int, str]] = field(default_factory=list)


class StoredEvent(NamedTuple):
    """One unsent row as the uplink reads it (a named tuple: a drain builds millions)."""

    id: int
    device_id: str
    seq: int
    etype: str
    priority: int
    body: str


class EventColumns(NamedTuple):
    """Unsent rows as two columns, ids and bodies, in selection order: what a drain round reads
    (no object per event: building a named tuple of six fields per row cost the drain as much
    as reading the row)."""

    ids: tuple[int, ...]
    bodies: tuple[str, ...]

    @classmethod
    def of(cls, rows) -> "EventColumns":
        """From ``(id, body)`` rows or ``StoredEvent`` s."""
        rows = [(e.id, e.body) if isinstance(e, StoredEvent) else e for e in rows]
        return cls(*zip(*rows)) if rows else cls((), ())

    def take(self, start: int, end: int | None = None) -> "EventColumns":
        return EventColumns(self.ids[start:end], self.bodies[start:end])


class _DeviceSeqs:
    """Low and high marks and open gap ranges of one device epoch, mirrored from the DB, plus
    (in memory only) the content of its latest events and the current implausible streak."""

    __slots__ = ("min_seq", "max_seq", "gaps", "recent", "streak", "streak_seq", "streak_lo", "streak_hi")

    def __init__(self, max_seq: int, gaps: list[list[int]] | None = None, min_seq: int | None = None):
        self.max_seq = max_seq
        self.min_seq = max_seq if min_seq is None else min_seq
        self.gaps = gaps or []  # sorted [lo, hi] inclusive ranges
        self.recent: dict[int, tuple] = {}
        self.streak = 0
        self.streak_seq = 0
        self.streak_lo = 0
        self.streak_hi = 0

    def copy(self) -> "_DeviceSeqs":
        c = _DeviceSeqs(self.max_seq, [g[:] for g in self.gaps], self.min_seq)
        c.recent, c.streak, c.streak_seq = dict(self.recent), self.streak, self.streak_seq
        c.streak_lo, c.streak_hi = self.streak_lo, self.streak_hi
        return c

    def find_gap(self, seq: int) -> int:
        i = bisect.bisect_right(self.gaps, [seq, float("inf")]) - 1
        if i >= 0 and self.gaps[i][0] <= seq <= self.gaps[i][1]:
            return i
        return -1


class SqliteBuffer:
    """The buffer. Thread-safe: one connection behind a lock (the collector's writer thread and
    the uplink share it; SQLite work is short, network waits happen outside the lock)."""

    def __init__(self, path: str | Path, policy: BufferPolicy | None = None):
        self.path = Path(path)
        self.policy = policy or BufferPolicy()
        if self.policy.durability not in ("NORMAL", "FULL"):
            raise ValueError(f"durability must be NORMAL or FULL, got {self.policy.durability!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._segment_limit = segment_bytes(self.policy)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # The WAL counts against the cap too: truncated after checkpoints to a bounded size.
            self._db.execute(f"PRAGMA journal_size_limit={self._wal_limit()}")
            # ... and checkpointed well before it passes that size (SQLite's default waits for
            # 1,000 pages, 4 MB, twice a small cap). A WAL frame is a page plus a 24-byte header:
            # at limit // page_size frames the WAL always ended just past the limit, so every
            # few hours the cycle's cap check ran a blocking truncating checkpoint (27 ms) that
            # the writers' own passive checkpoints do in passing at three quarters of it.
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            self._db.execute(f"PRAGMA wal_autocheckpoint={max(16, self._wal_limit() * 3 // 4 // (page + 24))}")
            self._db.execute(f"PRAGMA synchronous={self.policy.durability}")
            self._db.execute("PRAGMA cache_size=-32000")
            # Many builds (Debian's among them) default to secure_delete=ON: every deleted row's
            # page is zeroed and written again, which made deleting sent rows half of a drain.
            # FAST zeroes deleted content only in pages written anyway; freed pages are left to
            # be reused. The rows hold what already left for the hub (loyalty ids pseudonymized).
            self._db.execute("PRAGMA secure_delete=FAST")
            self._migrate()
            self._load()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open buffer at {self.path}: {exc}") from exc

    # ---- setup ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {r[0] for r in db.execute("SELECT name FROM migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in sql.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute("INSERT INTO migrations VALUES (?, datetime('now'))", (name,))
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise

    def applied_migrations(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM migrations ORDER BY name")]

    def _wal_limit(self) -> int:
        cap = self.policy.max_bytes
        return int(min(self.policy.wal_limit_bytes, cap // 8)) if cap else self.policy.wal_limit_bytes

    def _quarantine_budget(self) -> int:
        cap = self.policy.max_bytes
        return max(64 * 1024, int(cap * self.policy.quarantine_share)) if cap else 1 << 62

    def _load(self) -> None:
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._c = {k: int(meta.get(k, 0)) for k in _COUNTERS}
        self._devices: dict[tuple[str, int], _DeviceSeqs] = {
            (d, e): _DeviceSeqs(hi, min_seq=lo)
            for d, e, lo, hi in db.execute("SELECT device_id, epoch, min_seq, max_seq FROM devices")
        }
        for d, e, lo, hi in db.execute("SELECT device_id, epoch, lo, hi FROM gaps ORDER BY device_id, epoch, lo"):
            self._devices[(d, e)].gaps.append([lo, hi])
        #: Every device epoch with open gaps, and maybe some whose gaps closed since (pruned by
        #: ``_open_gaps``): health reads these, not all 10,000 shelves of a large store.
        self._gappy: set[tuple[str, int]] = {k for k, st in self._devices.items() if st.gaps}
        self._device_count = (-1, 0)  # (len(self._devices), distinct device ids) when last counted
        # Quarantine's rows and bytes are read, not kept as counters: a few thousand rows at most.
        self._q_rows, self._q_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM quarantine").fetchone()
        #: rows handed to the uplink and not yet marked sent: id -> monotonic time selected
        self._inflight: dict[int, float] = {}
        #: in-flight rows evicted before their batch was accepted: id -> (reason, etype)
        self._evicted_inflight: dict[int, tuple[str, str]] = {}
        self._load_segments()

    # ---- segments --------------------------------------------------------------------------

    def _load_segments(self) -> None:
        """Read the segment list; a class's current segment (its last, unless that is the
        legacy table) takes appends until it holds ``segment_bytes`` (its stored rows counted
        at open)."""
        #: class -> [(first id, table)], oldest first
        self._segs: dict[int, list[tuple[int, str]]] = {p: [] for p in CLASSES}
        for p, start, name in self._db.execute("SELECT priority, start, name FROM segments ORDER BY priority, start"):
            self._segs.setdefault(p, []).append((start, name))
        #: class -> stored bytes appended to its current segment
        self._seg_fill: dict[int, int] = {}
        for p, segs in self._segs.items():
            if segs and segs[-1][1] != LEGACY_TABLE:
                self._seg_fill[p] = self._db.execute(f"SELECT COALESCE(SUM(size), 0) FROM {segs[-1][1]}").fetchone()[0]

    def _segments_state(self):
        return {p: list(v) for p, v in self._segs.items()}, dict(self._seg_fill)

    def _restore_segments(self, state) -> None:
        """After a rolled-back transaction: the segment list as it was before it."""
        self._segs, self._seg_fill = {p: list(v) for p, v in state[0].items()}, dict(state[1])

    def _sent_to(self, p: int) -> int:
        """The highest id of class ``p``'s sent prefix (below the class's range: none)."""
        return max(self._c[_SENT_TO[p]], (p << CLASS_BITS) - 1)

    def _parts(self, p: int, lo: int | None = None, hi: int | None = None) -> list[tuple[str, int, int]]:
        """``(table, first id, last id)`` of each segment of class ``p`` holding unsent ids in
        ``[lo, hi]`` (default: the whole class), oldest first."""
        c_lo, c_hi = _class_range(p)
        floor = max(self._sent_to(p) + 1, c_lo if lo is None else lo)
        top = c_hi - 1 if hi is None else min(hi, c_hi - 1)
        segs = self._segs.get(p, ())
        out = []
        for k, (start, name) in enumerate(segs):
            end = segs[k + 1][0] - 1 if k + 1 < len(segs) else c_hi - 1
            a, b = max(start, floor), min(end, top)
            if a <= b:
                out.append((name, a, b))
        return out

    def _scan(self, cols: str, limit: int, where: str = "", params: tuple = (), classes=CLASSES,
              lo: int | None = None, desc: bool = False) -> list[tuple]:
        """Up to ``limit`` unsent rows (``cols``) in id order (``desc``: newest first within each
        class) over ``classes``, from id ``lo`` on, matching ``where``: segment by segment."""
        out: list[tuple] = []
        order = "DESC" if desc else ""
        for p in classes:
            parts = self._parts(p, lo=lo)
            for name, a, b in (reversed(parts) if desc else parts):
                if len(out) >= limit:
                    return out
                out += self._db.execute(f"SELECT {cols} FROM {name} WHERE id BETWEEN ? AND ? {where} "
                                        f"ORDER BY id {order} LIMIT ?", (a, b, *params, limit - len(out))).fetchall()
        return out

    def _table_of(self, rid: int) -> str | None:
        """The segment that would hold unsent row ``rid``; None when it is in its class's sent
        prefix (its row, if still stored, was counted sent) or below every segment."""
        p = rid >> CLASS_BITS
        segs = self._segs.get(p, ())
        k = bisect.bisect_right(segs, (rid, "\U0010ffff")) - 1
        return segs[k][1] if k >= 0 and rid > self._sent_to(p) else None

    def _delete_ids(self, ids, returning: str = "id, etype, size") -> list[tuple]:
        """Delete these rows (each from its segment, 900 ids a statement; ids no segment holds
        unsent are skipped); return ``returning``."""
        by_table: dict[str, list[int]] = {}
        for rid in ids:
            name = self._table_of(rid)
            if name is not None:
                by_table.setdefault(name, []).append(rid)
        out: list[tuple] = []
        for name, chunk_ids in by_table.items():
            for k in range(0, len(chunk_ids), 900):
                chunk = chunk_ids[k:k + 900]
                marks = ",".join("?" * len(chunk))
                out += self._db.execute(f"DELETE FROM {name} WHERE id IN ({marks}) RETURNING {returning}",
                                        chunk).fetchall()
        return out

    def _segment_for(self, p: int, rid: int, size: int) -> str:
        """The table a new row of class ``p`` goes into: the class's current segment, or a new
        one when there is none or it is full. Caller holds the lock and a transaction."""
        segs = self._segs.setdefault(p, [])
        fill = self._seg_fill.get(p)
        if fill is None or (fill and fill + size > self._segment_limit):
            name, ddl = segment_table(p, rid)
            self._db.execute(ddl)
            self._db.execute("INSERT INTO segments VALUES (?, ?, ?)", (p, rid, name))
            segs.append((rid, name))
            fill = 0
        self._seg_fill[p] = fill + size
        return segs[-1][1]

    def _drop_spent(self) -> None:
        """Drop each class's oldest segments while they are not the current one and hold no
        unsent row (a table used by several classes, the legacy one, once no class lists it).
        Caller holds the lock and a transaction."""
        db = self._db
        for p, segs in self._segs.items():
            while segs and (len(segs) > 1 or segs[0][1] == LEGACY_TABLE):
                start, name = segs[0]
                end = segs[1][0] - 1 if len(segs) > 1 else _class_range(p)[1] - 1
                a = max(start, self._sent_to(p) + 1)
                if a <= end and db.execute(f"SELECT 1 FROM {name} WHERE id BETWEEN ? AND ? LIMIT 1",
                                           (a, end)).fetchone():
                    break
                db.execute("DELETE FROM segments WHERE priority = ? AND start = ?", (p, start))
                segs.pop(0)
                if not any(n == name for v in self._segs.values() for _, n in v):
                    db.execute(f"DROP TABLE {name}")

    def _save_counters(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(self._c.items()))

    # ---- append --------------------------------------------------------------------------

    def append(self, events: list[Mapping], *, now_ms: int, bodies: list[str] | None = None,
               quarantine: Iterable[tuple[str, str, str, bytes]] = (), gateway_seqs: int = 0) -> Appended:
        """Store a group of validated events (with ``received_at`` set) and quarantined payloads
        ``(topic, reason, detail, payload)`` in ONE transaction; durable when this returns.

        ``bodies``, when given, holds each event's one-line JSON text (the collector passes the
        device's payload with ``received_at`` spliced in, saving a re-encode); else ``encode``.
        Duplicates (``(device_id, seq)`` seen before) are counted and skipped. ``gateway_seqs``
        advances the gateway's own seq counter in the same transaction (see ``next_gateway_seq``),
        so a crash can neither reuse a seq nor leave a gap in the gateway's own events.

        Raises:
            BufferFullError: the cap is reached and the group holds never-evicted events; nothing
                of the group is stored.
            StorageError: SQLite failed; nothing of the group is stored.
        """
        with self._lock:
            undo: dict[str, _DeviceSeqs | None] = {}
            saved_c = dict(self._c)
            try:
                return self._append(events, bodies, now_ms, quarantine, gateway_seqs, undo)
            except BaseException:
                # Restore the in-memory mirror of what the rolled-back transaction changed.
                for dev, before in undo.items():
                    if before is None:
                        self._devices.pop(dev, None)
                    else:
                        self._devices[dev] = before
                self._c = saved_c
                raise

    def _append(self, events, bodies, now_ms, quarantine, gateway_seqs, undo) -> Appended:
        rows = []
        device_updates: dict[tuple[str, int], list[int]] = {}  # (device, epoch) -> [received, duplicates]
        touched_gaps: set[tuple[str, int]] = set()
        new_gaps: list[tuple[str, int, int, int]] = []
        duplicates = 0
        add_bytes = 0
        protected = False
        kept: list[int] = []
        rejected: list[tuple[int, str]] = []
        refused: list[tuple[str, str, str, bytes]] = []
        jump = self.policy.max_seq_jump
        for k, ev in enumerate(events):
            dev, seq = ev["device_id"], ev["seq"]
            epoch = ev.get("epoch", 0)
            key = (dev, epoch)
            state = self._devices.get(key)
            upd = device_updates.get(key)
            if upd is None:
                upd = device_updates[key] = [0, 0]
                undo[key] = None if state is None else state.copy()
            body = bodies[k] if bodies is not None else None
            if state is None:
                # First event of a device epoch: whatever came before the gateway saw it is not a
                # gap; one arriving later below it is new (see the module docstring).
                state = self._devices[key] = _DeviceSeqs(seq)
            elif seq > state.max_seq or seq < state.min_seq:
                above = seq > state.max_seq
                if (seq - state.max_seq if above else state.min_seq - seq) > jump:
                    if not self._reanchor(state, seq, jump):
                        rejected.append((k, "implausible_seq"))
                        refused.append(self._refusal(ev, body, "implausible_seq",
                                                     f"seq jumps more than {jump} from the device's marks"))
                        continue
                    self._c["reanchored"] += 1
                    # The streak's earlier events were quarantined: counted gaps, so their
                    # redelivery is taken and, if none comes, the loss is visible.
                    lo, hi = state.streak_lo, state.streak_hi
                    if seq > state.max_seq:
                        streak_gaps = [[lo, seq - 1]] if lo < seq else []
                        state.max_seq = seq
                    else:
                        # Below the marks: the old range came from an implausible outlier (say a
                        # first event with seq 2^63-1); the device's real range replaces it.
                        streak_gaps = ([[lo, seq - 1]] if lo < seq else []) + ([[seq + 1, hi]] if hi > seq else [])
                        state.gaps = [g for g in state.gaps if g[1] < lo]
                        state.min_seq, state.max_seq = lo, max(seq, hi)
                    for g_lo, g_hi in streak_gaps:
                        state.gaps.append([g_lo, g_hi])
                        new_gaps.append((dev, epoch, g_lo, g_hi))
                    state.gaps.sort()
                    touched_gaps.add(key)
                    log.warning("device %s epoch %d: seq moved to a new range after %d consecutive events there",
                                ascii(dev)[1:-1][:64], epoch, REANCHOR_AFTER)
                elif above:
                    if seq > state.max_seq + 1:
                        state.gaps.append([state.max_seq + 1, seq - 1])
                        new_gaps.append((dev, epoch, state.max_seq + 1, seq - 1))
                        touched_gaps.add(key)
                    state.max_seq = seq
                else:
                    if seq < state.min_seq - 1:
                        state.gaps.insert(0, [seq + 1, state.min_seq - 1])
                        new_gaps.append((dev, epoch, seq + 1, state.min_seq - 1))
                        touched_gaps.add(key)
                    state.min_seq = seq
                state.streak = 0
            else:
                i = state.find_gap(seq)
                if i < 0:
                    seen = state.recent.get(seq)
                    if seen is not None and seen != (ev["type"], ev["ts"], ev["data"]):
                        rejected.append((k, "conflicting_repeat"))
                        refused.append(self._refusal(ev, body, "conflicting_repeat",
                                                     "same device, epoch and seq as an earlier event, other content"))
                        continue
                    duplicates += 1
                    upd[1] += 1
                    continue
                lo, hi = state.gaps.pop(i)
                if lo < seq:
                    state.gaps.insert(i, [lo, seq - 1])
                    i += 1
                if seq < hi:
                    state.gaps.insert(i, [seq + 1, hi])
                touched_gaps.add(key)
            recent = state.recent
            recent[seq] = (ev["type"], ev["ts"], ev["data"])
            if len(recent) > RECENT_PER_DEVICE:
                del recent[next(iter(recent))]
            upd[0] += 1
            kept.append(k)
            etype = ev["type"]
            if body is None:
                body = encode(ev)
            size = len(body) + ROW_OVERHEAD_BYTES
            add_bytes += size
            protected = protected or etype in NEVER_EVICTED
            prio = PRIORITY.get(etype, 3)
            self._c["arrival"] += 1  # restored with the other counters if the transaction fails
            rows.append(((prio << CLASS_BITS) | self._c["arrival"], dev, epoch, seq, etype, prio, ev["ts"],
                         ev.get("received_at", now_ms), ev["data"].get("facing_id") if etype == "shelf.reading" else None,
                         size, body))
        quarantine = list(quarantine) + refused
        self._c["conflicting_repeats"] += sum(1 for _, r in rejected if r == "conflicting_repeat")
        self._c["implausible_seqs"] += sum(1 for _, r in rejected if r == "implausible_seq")
        cap = self.policy.max_bytes
        db = self._db
        segments = self._segments_state()
        try:
            db.execute("BEGIN IMMEDIATE")
            q_new = self._insert_quarantine(quarantine, now_ms) if quarantine else 0
            held = self._q_bytes  # quarantine counts within the cap (trimmed to its budget above)
            if cap and self._c["bytes"] + held + add_bytes > cap * self.policy.high_water:
                self._evict_locked(target=max(0, int(cap * self.policy.low_water) - add_bytes - held), now_ms=now_ms)
                if protected and self._c["bytes"] + held + add_bytes > cap:
                    raise BufferFullError(
                        f"buffer holds {self._c['bytes']} of {cap} bytes and only never-evicted events")
            if rows:
                by_table: dict[str, list[tuple]] = {}
                for r in rows:
                    by_table.setdefault(self._segment_for(r[5], r[0], r[9]), []).append(r)
                for name, table_rows in by_table.items():
                    db.executemany(
                        f"INSERT INTO {name} (id, device_id, epoch, seq, etype, priority, ts, received_at, facing_id, "
                        "size, body) VALUES (?,?,?,?,?,?,?,?,?,?,?)", table_rows)
            db.executemany(
                "INSERT INTO devices (device_id, epoch, min_seq, max_seq, received, duplicates, first_seen, last_seen) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (device_id, epoch) DO UPDATE SET "
                "min_seq=excluded.min_seq, max_seq=excluded.max_seq, received=received+excluded.received, "
                "duplicates=duplicates+excluded.duplicates, last_seen=excluded.last_seen",
                [(dev, ep, self._devices[(dev, ep)].min_seq, self._devices[(dev, ep)].max_seq, rec, dup, now_ms, now_ms)
                 for (dev, ep), (rec, dup) in device_updates.items()])
            self._gappy.update(touched_gaps)
            for dev, ep in touched_gaps:
                old = {lo: rep for lo, rep in db.execute(
                    "SELECT lo, reported FROM gaps WHERE device_id=? AND epoch=?", (dev, ep))}
                db.execute("DELETE FROM gaps WHERE device_id=? AND epoch=?", (dev, ep))
                db.executemany("INSERT INTO gaps VALUES (?,?,?,?,?,?)",
                               [(dev, ep, lo, hi, now_ms, old.get(lo, 0)) for lo, hi in self._devices[(dev, ep)].gaps])
            self._c["quarantined"] += q_new
            self._c["rows"] += len(rows)
            for r in rows:
                self._c[_CLASS_ROWS[r[5]]] += 1
            self._c["bytes"] += add_bytes
            self._c["duplicates"] += duplicates
            self._c["received"] += len(rows)
            self._c["gw_seq"] += gateway_seqs
            self._save_counters()
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._restore_segments(segments)
            self._q_rows, self._q_bytes = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM quarantine").fetchone()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"buffer append failed: {exc}") from exc
            raise
        return Appended(stored=len(rows), duplicates=duplicates, new_gaps=new_gaps, kept=kept, rejected=rejected)

    def _insert_quarantine(self, quarantine, now_ms: int) -> int:
        """Insert quarantine rows (text made storable, payload redacted and cut) within the row
        limit and byte budget: room is made first by trimming the oldest rows, and of a group
        larger than the budget only its newest rows are kept (all are counted), so the file never
        grows past the budget even for a moment. Caller holds the lock and a transaction."""
        budget, max_rows = self._quarantine_budget(), self.policy.max_quarantine_rows
        rows, total = [], 0
        for t, r, d, p in reversed(list(quarantine)):
            t, r, d, p = safe_text(t, 256), safe_text(r, 64), safe_text(d, 500), redact_payload(p)
            size = len(p) + len(d.encode()) + len(t.encode()) + ROW_OVERHEAD_BYTES
            if total + size > budget or len(rows) >= max_rows:
                break
            rows.append((now_ms, t, r, d, p, size))
            total += size
        rows.reverse()
        while self._q_rows and (self._q_bytes + total > budget or self._q_rows + len(rows) > max_rows):
            n = max(self._q_rows + len(rows) - max_rows, (self._q_bytes + total - budget) // 2048 + 1, 1)
            gone = self._db.execute("DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id "
                                    "LIMIT ?) RETURNING size", (n,)).fetchall()
            if not gone:
                break
            self._q_rows -= len(gone)
            self._q_bytes -= sum(g[0] for g in gone)
        self._db.executemany("INSERT INTO quarantine (received_at, topic, reason, detail, payload, size) "
                             "VALUES (?,?,?,?,?,?)", rows)
        self._q_rows += len(rows)
        self._q_bytes += total
        return len(quarantine) if isinstance(quarantine, list) else len(rows)

    @staticmethod
    def _reanchor(state: _DeviceSeqs, seq: int, jump: int) -> bool:
        """Count an implausible ``seq``; after ``REANCHOR_AFTER`` consecutive ones, each within
        ``jump`` of the one before, move the marks to it (the device really jumped) and say so.
        The skipped range is not a gap: it was never believed to exist."""
        if state.streak and abs(seq - state.streak_seq) <= jump:
            state.streak += 1
            state.streak_lo = min(state.streak_lo, seq)
            state.streak_hi = max(state.streak_hi, seq)
        else:
            state.streak = 1
            state.streak_lo = state.streak_hi = seq
        state.streak_seq = seq
        if state.streak < REANCHOR_AFTER:
            return False
        state.streak = 0
        return True

    @staticmethod
    def _refusal(ev: Mapping, body: str | None, reason: str, detail: str) -> tuple[str, str, str, bytes]:
        """A quarantine row for an event the buffer refuses (already validated and pseudonymized)."""
        text = body if body is not None else encode(ev)
        return (f"device {ascii(ev['device_id'])[1:-1][:120]}", reason, detail, text.encode("utf-8", "backslashreplace"))

    def next_gateway_seq(self) -> int:
        """The next seq for the gateway's own events; ``append(..., gateway_seqs=n)`` consumes
        ``n`` of them in the transaction that stores those events (caller serialises)."""
        with self._lock:
            return self._c["gw_seq"]

    # ---- eviction and expiry -------------------------------------------------------------

    def _count_evicted(self, reason: str, deleted: list[tuple[int, str, int]]) -> None:
        by_type: dict[str, int] = {}
        size = 0
        inflight = self._inflight
        for rid, etype, sz in deleted:
            by_type[etype] = by_type.get(etype, 0) + 1
            size += sz
            self._c[_CLASS_ROWS[rid >> CLASS_BITS]] -= 1
            if rid in inflight:
                # Its batch may yet be accepted: then mark_sent moves it from evicted to sent.
                self._evicted_inflight[rid] = (reason, etype)
        for etype, n in by_type.items():
            self._db.execute("INSERT INTO evictions VALUES (?,?,?) ON CONFLICT (reason, etype) "
                             "DO UPDATE SET count=count+excluded.count", (reason, etype, n))
        self._c["rows"] -= len(deleted)
        self._c["bytes"] -= size
        self._c["evicted"] += len(deleted)

    def _evict_locked(self, target: int, now_ms: int) -> None:
        """Evict until ``bytes <= target``, in policy order. Caller holds the lock and a txn."""
        # 1. Thin shelf readings: keep the first reading per facing per N minutes, oldest first.
        for step in THIN_STEPS_MIN:
            if self._c["bytes"] <= target:
                return
            self._thin_readings(step * MINUTE_MS, target, f"thin_{step}min")
        # 2. Then health snapshots, 3. the oldest readings, 4. the oldest stock movements.
        for reason, etypes in (("cap_health", ("edge.health",)), ("cap_oldest", ("shelf.reading",)),
                               ("cap_oldest", ("shelf.restock", "inventory.delivery"))):
            while self._c["bytes"] > target:
                need = max(1, (self._c["bytes"] - target) // 200)
                marks = ",".join("?" * len(etypes))
                doomed = self._scan("id", min(need, 5000), f"AND etype IN ({marks})", etypes,
                                    classes=(PRIORITY[etypes[0]],))
                deleted = self._delete_ids(r[0] for r in doomed)
                if not deleted:
                    break
                self._count_evicted(reason, deleted)

    def _thin_readings(self, bucket_ms: int, target: int, reason: str) -> None:
        """Delete every shelf reading that is not the first (in arrival order) of its facing and
        ``bucket_ms`` time bucket, oldest first, until ``bytes <= target``. Caller holds the lock
        and a transaction.

        One pass over the readings in ``id`` order (their class's id range), keeping per
        facing only the bucket it is in: no index on ``(facing_id, ts)`` is needed, which keeps
        appends fast (that index cost 40 % of the insert rate). A reading that arrives out of
        order, in an earlier bucket than its facing's last one, is kept.
        """
        p = PRIORITY["shelf.reading"]
        last_bucket: dict[str, int] = {}
        after = _class_range(p)[0] - 1
        while self._c["bytes"] > target:
            page = self._scan("id, facing_id, ts", 20000, "AND etype='shelf.reading'", classes=(p,), lo=after + 1)
            if not page:
                return
            after = page[-1][0]
            doomed = []
            for rid, facing, ts in page:
                b = ts - ts % bucket_ms
                if last_bucket.get(facing) == b:
                    doomed.append(rid)
                else:
                    last_bucket[facing] = b
            # Delete in slices, re-checking the byte count, so no more goes than the cap needs.
            while doomed and self._c["bytes"] > target:
                need = max(1, (self._c["bytes"] - target) // 200)
                chunk, doomed = doomed[:min(900, need)], doomed[min(900, need):]
                self._count_evicted(reason, self._delete_ids(chunk))

    def enforce_cap(self, now_ms: int) -> int:
        """Evict down to the low-water mark if above the high-water mark; return rows evicted.

        Raises:
            StorageError: SQLite failed.
        """
        cap = self.policy.max_bytes
        with self._lock:
            self._checkpoint_if_large()
            if not cap or self._c["bytes"] + self._q_bytes <= cap * self.policy.high_water:
                return 0
            return self._in_txn(lambda: self._evict_locked(int(cap * self.policy.low_water) - self._q_bytes, now_ms))

    def _checkpoint_if_large(self) -> None:
        """Truncate the WAL when it grew past its limit (a long read held the checkpoint back)."""
        try:
            if os.stat(f"{self.path}-wal").st_size > self._wal_limit():
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (OSError, sqlite3.Error):
            pass  # a busy checkpoint is retried at the next call

    def expire(self, now_ms: int) -> int:
        """Delete unsent events older than their type's TTL (counted as evictions, reason ``ttl``).

        Raises:
            StorageError: SQLite failed.
        """
        def run() -> None:
            for etype, ttl in self.policy.ttl_ms.items():
                if ttl is None:
                    continue
                deleted = []
                for name, a, b in self._parts(PRIORITY.get(etype, 3)):
                    deleted += self._db.execute(
                        f"DELETE FROM {name} WHERE id BETWEEN ? AND ? AND etype=? AND received_at < ? "
                        "RETURNING id, etype, size", (a, b, etype, now_ms - ttl)).fetchall()
                if deleted:
                    self._count_evicted("ttl", deleted)

        with self._lock:
            return self._in_txn(run)

    def _in_txn(self, fn, what: str = "eviction") -> int:
        """Run ``fn`` and save the counters in one transaction (caller holds the lock); on failure
        roll back and restore the counters. Return the rows evicted meanwhile."""
        before = self._c["evicted"]
        saved = dict(self._c)
        segments = self._segments_state()
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            fn()
            self._drop_spent()
            self._save_counters()
            db.execute("COMMIT")
        except BaseException as exc:  # any failure: never leave the transaction open
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._c = saved
            self._restore_segments(segments)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"buffer {what} failed: {exc}") from exc
            raise
        return self._c["evicted"] - before

    # ---- uplink side ---------------------------------------------------------------------

    def select_backlog(self, limit: int) -> list[StoredEvent]:
        """Oldest unsent events, by priority then arrival (alerts, POS, restocks, readings): the
        primary key's order (see ``CLASS_BITS``)."""
        with self._lock:
            rows = self._scan("id, device_id, seq, etype, priority, body", limit)
            self._note_inflight([r[0] for r in rows])
        return list(map(StoredEvent._make, rows))

    def select_backlog_columns(self, limit: int) -> EventColumns:
        """``select_backlog`` as columns (id, body), for a drain round."""
        with self._lock:
            rows = self._scan("id, body", limit)
            cols = EventColumns(*zip(*rows)) if rows else EventColumns((), ())
            self._note_inflight(cols.ids)
        return cols

    #: An in-flight mark older than this is forgotten (its batch failed; it will be selected again).
    _INFLIGHT_TTL_S = 600.0

    def _note_inflight(self, ids) -> None:
        """Remember rows handed to the uplink, so an eviction racing their send is accounted
        right (see ``mark_sent``). Bounded: marks older than ``_INFLIGHT_TTL_S`` are dropped."""
        now = time.monotonic()
        inflight = self._inflight
        if len(inflight) > 100_000 or (inflight and now - next(iter(inflight.values())) > self._INFLIGHT_TTL_S):
            cutoff = now - self._INFLIGHT_TTL_S
            self._inflight = inflight = {i: t for i, t in inflight.items() if t >= cutoff and len(inflight) <= 100_000}
            self._evicted_inflight = {i: v for i, v in self._evicted_inflight.items() if i in inflight}
        for rid in inflight.keys() & ids:
            del inflight[rid]  # re-inserted below: keeps the dict in selection-time order
        inflight.update(dict.fromkeys(ids, now))

    def select_live(self, limit: int, exclude_below: int | None = None) -> list[StoredEvent]:
        """The newest unsent events above the live high-water mark, returned in arrival order.

        The live lane only ever moves forward (``advance_live``), so per device it ships in
        ``seq`` order, as the backlog lane does.
        """
        floor = self._c["live_hwm"] if exclude_below is None else exclude_below
        with self._lock:
            rows = []
            for p in CLASSES:  # the newest of each class above the mark, then the newest of those
                rows += self._scan("id, device_id, seq, etype, priority, body", limit, classes=(p,),
                                   lo=(_class_range(p)[0] | floor) + 1, desc=True)
            rows = sorted(rows, key=lambda r: arrival(r[0]))[-limit:] if limit > 0 else []
            self._note_inflight([r[0] for r in rows])
        return list(map(StoredEvent._make, rows))

    def backlog_size(self) -> tuple[int, int]:
        """(unsent rows, their stored bytes), from the counters."""
        with self._lock:
            return self._c["rows"], self._c["bytes"]

    def _oldest_received(self) -> int | None:
        """``received_at`` of the oldest unsent event: the first row of each class, compared."""
        firsts = []
        for p in CLASSES:
            row = self._scan("id, received_at", 1, classes=(p,))
            if row:
                firsts.append((arrival(row[0][0]), row[0][1]))
        return min(firsts)[1] if firsts else None

    def pending(self) -> tuple[int, int | None, bool]:
        """(unsent rows, ``received_at`` of the oldest, whether an ``edge.alert`` waits): what the
        uplink's freshness budget decides on, in a few primary-key lookups."""
        with self._lock:
            urgent = self._scan("1", 1, "AND etype = 'edge.alert'", classes=(PRIORITY["edge.alert"],))
            return self._c["rows"], self._oldest_received(), bool(urgent)

    def last_arrival_received_by(self, t_ms: int) -> int:
        """The highest arrival number (``arrival(id)``) of an unsent event received at or before
        ``t_ms`` (0: none). Events arrive in received order, so every lower arrival number was
        received by then too. Scans the table: for the uplink's small steady-state buffer."""
        best = 0
        with self._lock:
            for p in CLASSES:
                for name, a, b in self._parts(p):
                    row = self._db.execute(f"SELECT MAX(id & ?) FROM {name} WHERE id BETWEEN ? AND ? AND received_at <= ?",
                                           (_ARRIVAL_MASK, a, b, t_ms)).fetchone()
                    best = max(best, int(row[0] or 0))
        return best

    def mark_sent(self, ids: list[int], *, now_ms: int, live_hwm: int | None = None) -> None:
        """The hub accepted these events: delete them (and move the live mark) in one transaction.

        Raises:
            StorageError: SQLite failed (the events stay and are sent again).
        """
        delivered_evicted: list[int] = []

        def run() -> None:
            deleted, size = self._delete_sent(ids)
            self._c["rows"] -= deleted
            self._c["bytes"] -= size
            self._c["sent"] += deleted
            if deleted < len(ids) and self._evicted_inflight:
                # Rows the cap or TTL evicted while their batch was on its way: the hub has them,
                # so they count as sent, not evicted (else one event would count as both).
                by_key: dict[tuple[str, str], int] = {}
                for rid in ids:
                    hit = self._evicted_inflight.get(rid)
                    if hit is not None:
                        delivered_evicted.append(rid)
                        by_key[hit] = by_key.get(hit, 0) + 1
                for (reason, etype), n in by_key.items():
                    self._db.execute("UPDATE evictions SET count = count - ? WHERE reason=? AND etype=?", (n, reason, etype))
                self._c["evicted"] -= len(delivered_evicted)
                self._c["sent"] += len(delivered_evicted)
            self._c["last_uplink_ts"] = now_ms
            if live_hwm is not None and arrival(live_hwm) > self._c["live_hwm"]:
                self._c["live_hwm"] = arrival(live_hwm)

        with self._lock:
            self._in_txn(run, "mark_sent")
            for rid in self._inflight.keys() & ids:
                del self._inflight[rid]
            for rid in delivered_evicted:
                self._evicted_inflight.pop(rid, None)

    def _delete_sent(self, ids: list[int]) -> tuple[int, int]:
        """Remove sent rows; return (rows, bytes). A class's rows sit in one id range, so a
        batch is mostly one stretch of it; where the rows stored between a stretch's first and
        last id are exactly the batch's (same count and same id sum as the batch's rows still
        stored; rows evicted in flight are known):

        * and nothing unsent of the class lies before it, the class's sent prefix moves to its
          last id (``sent_p<class>``): its rows in older segments stay where they are until
          their segment is dropped whole (``_drop_spent``), those in the current segment go by
          one range delete (what keeps a steady-state buffer small);
        * else it goes as one range delete.

        Elsewhere (the other lane's rows in between, say) by id lists. Caller holds the lock
        and a transaction."""
        db = self._db
        ordered = sorted(ids)
        gone = self._evicted_inflight
        deleted = size = i = 0
        while i < len(ordered):
            # A stretch stays within one class and 50,000 ids (id - lo < 2^40: sums stay far from
            # SQLite's 2^63 overflow).
            j = min(len(ordered), i + 50_000)
            p = ordered[i] >> CLASS_BITS
            j = bisect.bisect_left(ordered, (p + 1) << CLASS_BITS, i, j)
            lo, hi = ordered[i], ordered[j - 1]
            present = [x for x in ordered[i:j] if x not in gone] if gone else ordered[i:j]
            parts = self._parts(p, lo=lo, hi=hi)
            # One pass over the stretch: as many rows as ours, and their ids add up the same.
            n = id_sum = n_bytes = 0
            for name, a, b in parts:
                c, s_, z = db.execute(f"SELECT COUNT(*), SUM(id - ?), COALESCE(SUM(size), 0) FROM {name} "
                                      "WHERE id BETWEEN ? AND ?", (lo, a, b)).fetchone()
                n, id_sum, n_bytes = n + c, id_sum + (s_ or 0), n_bytes + z
            if n == len(present) and id_sum == sum(present) - lo * len(present):
                first = self._scan("id", 1, classes=(p,))  # the class's first unsent row
                behind = bool(first) and first[0][0] < lo  # unsent rows of the class before it
                current = self._segs[p][-1][1] if p in self._seg_fill else None
                for name, a, b in parts:
                    if behind or name == current:
                        db.execute(f"DELETE FROM {name} WHERE id BETWEEN ? AND ?", (a, b))
                if not behind and hi > self._c[_SENT_TO[p]]:
                    self._c[_SENT_TO[p]] = hi
                deleted, size = deleted + n, size + n_bytes
                self._c[_CLASS_ROWS[p]] -= n  # a stretch lies in one class
            else:  # other rows in between: only ours, by id
                j = min(j, i + 900)
                res = self._delete_ids(ordered[i:j], "id, size")
                deleted += len(res)
                size += sum(r[1] for r in res)
                for rid, _ in res:
                    self._c[_CLASS_ROWS[rid >> CLASS_BITS]] -= 1
            i = j
        return deleted, size

    # ---- gaps ----------------------------------------------------------------------------

    def unreported_gaps(self, older_than_ms: int) -> list[tuple[str, int, int, int]]:
        """Open gaps ``(device_id, epoch, lo, hi)`` detected before ``older_than_ms`` and not yet
        reported as events."""
        with self._lock:
            return self._db.execute(
                "SELECT device_id, epoch, lo, hi FROM gaps WHERE reported=0 AND detected_at < ? "
                "ORDER BY device_id, epoch, lo", (older_than_ms,)).fetchall()

    def mark_gaps_reported(self, gaps: list[tuple[str, int, int, int]]) -> None:
        with self._lock:
            self._db.executemany("UPDATE gaps SET reported=1 WHERE device_id=? AND epoch=? AND lo=?",
                                 [(d, e, lo) for d, e, lo, _ in gaps])

    def gaps(self, max_devices: int | None = None, max_ranges: int | None = None) -> dict[str, list[tuple[int, int]]]:
        """Open gaps per device: ``{device_id: [(lo, hi), ...]}`` (inclusive; a device's epoch
        other than 0 is keyed ``device_id@epoch``), optionally only the ``max_devices`` devices
        missing most and their first ``max_ranges`` ranges."""
        with self._lock:
            out = {(d if e == 0 else f"{d}@{e}"): s.gaps for (d, e), s in self._open_gaps()}
            if max_devices is not None and len(out) > max_devices:
                worst = sorted(out, key=lambda d: -sum(hi - lo + 1 for lo, hi in out[d]))[:max_devices]
                out = {d: out[d] for d in worst}
            return {d: [tuple(g) for g in gs[:max_ranges]] for d, gs in out.items()}

    def _open_gaps(self) -> list[tuple[tuple[str, int], _DeviceSeqs]]:
        """The device epochs with open gaps, by device id and epoch (the caller holds the lock);
        forgets those whose gaps closed (or that a rolled-back group had added)."""
        out = [(k, st) for k in sorted(self._gappy) if (st := self._devices.get(k)) is not None and st.gaps]
        if len(out) < len(self._gappy):
            self._gappy = {k for k, _ in out}
        return out

    def _distinct_devices(self) -> int:
        """Device ids (over their epochs); recounted only when a device epoch was added (keys
        are only added, or removed again by the rollback of the group that added them)."""
        n, count = self._device_count
        if n != len(self._devices):
            self._device_count = n, count = len(self._devices), len({d for d, _ in self._devices})
        return count

    # ---- state snapshots (inference) -----------------------------------------------------

    def save_facing_states(self, rows: list[tuple[str, object, str, int]], *, replace: bool = False) -> None:
        """Store ``(facing_id, state, alert, alert_since)`` rows in one transaction (``state``:
        packed values or JSON text, as ``edge.inference`` writes them; the row of facing id
        ``""`` is the layout of the packed ones).

        Packed states of equal size go into one block row (with the layout and the alert
        words and times); anything else is upserted per facing, as older builds did.
        ``replace``: the rows hold every facing, so older blocks and per-facing rows go in
        the same transaction (a crash keeps either all the old rows or the new ones)."""
        layout = next((str(state) for fid, state, _, _ in rows if fid == LAYOUT_ROW), None)
        packed = [r for r in rows if r[0] != LAYOUT_ROW and isinstance(r[1], bytes)]
        width = len(packed[0][1]) if packed else 0
        if layout is None or not packed or any(len(r[1]) != width for r in packed):
            packed = []
        # Rows that are not packed states (the inference's alert budget, JSON) are upserted
        # beside a block, keyed by their id.
        keyed = [r for r in rows if r[0] != LAYOUT_ROW and not (packed and isinstance(r[1], bytes))]
        if layout is not None and not packed:
            keyed.append((LAYOUT_ROW, layout, "layout", 0))
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    db.execute("DELETE FROM facing_state_blocks")
                    db.execute("DELETE FROM facing_state")
                if packed:
                    ids, states, alerts, since = zip(*packed)
                    db.execute("INSERT INTO facing_state_blocks (layout, width, ids, states, alerts, since) "
                               "VALUES (?,?,?,?,?,?)",
                               (layout, width, json.dumps(ids), b"".join(states), json.dumps(alerts),
                                json.dumps(since)))
                if keyed:
                    # An upsert rewrites the row in place; REPLACE deletes and re-inserts it (2x slower).
                    db.executemany("INSERT INTO facing_state VALUES (?,?,?,?) ON CONFLICT (facing_id) DO UPDATE SET "
                                   "state = excluded.state, alert = excluded.alert, "
                                   "alert_since = excluded.alert_since", keyed)
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise

    def load_facing_states(self) -> list[tuple[str, object, str, int]]:
        """The latest saved row of each facing: per-facing rows (older builds) first, then each
        block's layout row and its rows that no later block replaced (see
        ``Inference.restore``: a layout row applies to the packed rows after it)."""
        with self._lock:
            old = self._db.execute("SELECT facing_id, state, alert, alert_since FROM facing_state").fetchall()
            blocks = self._db.execute(
                "SELECT layout, width, ids, states, alerts, since FROM facing_state_blocks ORDER BY seq DESC").fetchall()
        seen: set[str] = set()
        newest_first = []
        for layout, width, ids, states, alerts, since in blocks:
            states = bytes(states)
            rows = [(fid, states[k * width:(k + 1) * width], alert, t)
                    for k, (fid, alert, t) in enumerate(zip(json.loads(ids), json.loads(alerts), json.loads(since)))
                    if fid not in seen]
            seen.update(r[0] for r in rows)
            newest_first.append([(LAYOUT_ROW, layout, "layout", 0)] + rows)
        # The old rows' layout row first (it applies to their packed rows), then the blocks'.
        out = sorted((r for r in old if r[0] not in seen), key=lambda r: r[0] != LAYOUT_ROW)
        for block in reversed(newest_first):
            out += block
        return out

    # ---- inspection ----------------------------------------------------------------------

    def stats(self, now_ms: int) -> dict:
        """Counters and ages for health: rows, bytes, evictions (total and per reason/type), gaps."""
        with self._lock:
            oldest = self._oldest_received()  # the first row of each class: a few lookups
            evictions = {f"{r}/{t}": n for r, t, n in self._db.execute("SELECT reason, etype, count FROM evictions")}
            per_priority = {p: self._c[k] for p, k in _CLASS_ROWS.items() if self._c[k]}
            gaps = sum(hi - lo + 1 for _, st in self._open_gaps() for lo, hi in st.gaps)
            devices = self._distinct_devices()
            c = dict(self._c)
        return {
            "buffer_rows": c["rows"],
            "buffer_bytes": c["bytes"] + self._q_bytes,
            "event_bytes": c["bytes"],
            "quarantine_bytes": self._q_bytes,
            "quarantine_rows": self._q_rows,
            "unsent_rows": c["rows"],
            "oldest_unsent_age_s": 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000),
            "evictions": c["evicted"],
            "evictions_by": evictions,
            "seq_gaps": gaps,
            "devices": devices,
            "conflicting_repeats": c["conflicting_repeats"],
            "implausible_seqs": c["implausible_seqs"],
            "seq_reanchored": c["reanchored"],
            "quarantined": c["quarantined"],
            "duplicates": c["duplicates"],
            "received": c["received"],
            "sent": c["sent"],
            "last_uplink_ts": c["last_uplink_ts"] or None,
            "unsent_by_priority": {str(k): v for k, v in per_priority.items()},
            "file_bytes": self.file_bytes(),
        }

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def quarantined(self, limit: int = 100) -> list[dict]:
        """The most recent quarantined payloads with their reasons."""
        with self._lock:
            rows = self._db.execute(
                "SELECT received_at, topic, reason, detail, payload FROM quarantine ORDER BY id DESC LIMIT ?",
                (limit,)).fetchall()
        return [dict(received_at=r[0], topic=r[1], reason=r[2], detail=r[3], payload=bytes(r[4])) for r in rows]

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

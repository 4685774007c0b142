"""The collector: store broker -> validated events -> buffer, in group commits, ack after commit.

Flow (one writer thread per gateway)::

    paho network thread            writer thread
    on_message -> handle()  --->   take a group (up to ``group_max`` messages, or what arrived
    (returns at once; PUBACK       within ``group_wait_s`` of the first) -> validate each ->
     held by edge.mqtt)            ONE buffer transaction -> release the group's PUBACKs ->
                                   feed committed events to inference

Each payload is checked against the contract (``gondola.contracts.parse_event``) and against its
topic (store and device must match the topic it came on). A bad payload becomes a quarantine row
with its reason, committed in the same transaction as the good events around it; nothing a device
sends can crash the collector. Loyalty ids are pseudonymized here, before anything is stored.

Backpressure: when the buffer is full of never-evicted events (``BufferFullError``) or SQLite
fails, the group is retried after a pause and its PUBACKs stay held, so the broker keeps the
messages: nothing is acknowledged that is not committed. Intake is bounded in messages and in
bytes (``max_pending``, ``max_pending_bytes``): when the writer is behind, ``handle`` blocks paho's
network thread, which stops reading the socket (TCP backpressure to the broker, whose own queue
is bounded in bytes by the deployment's ``mosquitto.conf``). A payload above
``MAX_PAYLOAD_BYTES`` is cut to its quarantine prefix on arrival, so a stalled gateway never
holds more than the byte bound whatever devices send.

Retained messages: no device publishes one, so a message the broker sends with the retain flag
is its stored copy of some earlier publish, replayed because the gateway (re)subscribed - at
every restart. The publish itself reached the gateway live (flag off) and was stored or
quarantined then; the replay is acknowledged in its group's turn and counted
(``retained_ignored``), never validated, stored or quarantined again.

Poison messages: any other failure of a group (a bug, text SQLite cannot store) is retried one
message at a time; a message that still fails is quarantined with reason ``internal`` (its
payload prefix and the exception's type, never its text), acknowledged and logged once, so it
cannot stop the writer, nor stop it again after a restart. The writer thread itself catches
everything, counts it (``writer_errors``) and goes on; ``Gateway.health`` reports it unhealthy
meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
import time
from typing import Callable, Iterable

from gondola.clock import Clock
from gondola.contracts import check_reading_fits, parse_event
from gondola.errors import BufferFullError, ContractError, StorageError
from gondola.privacy import pseudonymize
from gondola.topics import parse_device_topic

from edge.buffer import QUARANTINE_PREFIX_BYTES, SqliteBuffer, encode

__all__ = ["Collector", "QuarantineLog", "check_payload", "MAX_PAYLOAD_BYTES", "QUARANTINE_PREFIX_BYTES"]

#: Larger MQTT payloads are quarantined unread (a valid event is well under 2 KB).
MAX_PAYLOAD_BYTES = 16 * 1024
#: A device clock further than this ahead of, or behind, the gateway's is not believed: the
#: event is quarantined (``implausible_ts``), not stored with a date that breaks reports.
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000
MAX_PAST_SKEW_MS = 400 * 24 * 3600 * 1000
_SPLICE_MAX = 4096


class _Truncated(bytes):
    """The kept prefix of an oversized payload; ``size`` is the size that arrived."""

    size: int


class _Retained(bytes):
    """A retained message the broker replayed (``handle(retained=True)``): kept empty, only to
    hold its place in the group, so its PUBACK goes out in arrival order."""


log = logging.getLogger(__name__)

Token = tuple[int, int]


def check_payload(topic: str, payload: bytes, *, store_id: str, now_ms: int,
                  pseudonym_key: bytes | None,
                  capacity_of: Callable[[str], int | None] | None = None) -> tuple[dict, str]:
    """Validate one MQTT message; return ``(event, body)`` ready for the buffer.

    ``event`` gets ``received_at``; ``loyalty_id`` is replaced by ``loyalty_pid``. ``body`` is the
    event's one-line JSON: the device's own bytes with ``received_at`` spliced in when that is
    safe (saves a re-encode), else a fresh encoding. ``capacity_of`` (facing id -> planogram
    capacity, None when unknown) refuses a shelf reading far above its facing's capacity
    (``gondola.contracts.check_reading_fits``).

    Raises:
        ContractError: the reason to quarantine it (contract reasons, plus ``too_large``,
            ``bad_topic``, ``wrong_store``, ``topic_mismatch``, ``no_pseudonym_key``,
            ``device_pseudonym``, ``implausible_ts``).
    """
    size = getattr(payload, "size", len(payload))
    if size > MAX_PAYLOAD_BYTES:
        raise ContractError("too_large", f"payload of {size} bytes > {MAX_PAYLOAD_BYTES}")
    where = parse_device_topic(topic)
    if where is None:
        raise ContractError("bad_topic", f"topic {ascii(topic)[:120]} is not a device topic")
    event = parse_event(payload)
    ts = event["ts"]
    if ts > now_ms + MAX_FUTURE_SKEW_MS or ts < now_ms - MAX_PAST_SKEW_MS:
        raise ContractError("implausible_ts", "ts more than a day ahead of, or 400 days behind, the gateway clock")
    if event["store_id"] != store_id or where[0] != store_id:
        raise ContractError("wrong_store", f"event of store {ascii(event['store_id'])} on gateway {store_id!r}")
    if event["device_id"] != where[2]:
        raise ContractError("topic_mismatch", f"device {ascii(event['device_id'])} published on {ascii(topic)[:120]}")
    if capacity_of is not None and event["type"] == "shelf.reading":
        check_reading_fits(event, capacity_of(event["data"]["facing_id"]))
    rewritten = "received_at" in event
    data = event["data"]
    if "loyalty_pid" in data:
        # Only the gateway pseudonymizes: a device-made pid could be a clear id in disguise.
        raise ContractError("device_pseudonym", "data.loyalty_pid is set by the gateway, not by devices")
    if "loyalty_id" in data:
        if pseudonym_key is None:
            raise ContractError("no_pseudonym_key", "loyalty id received but no pseudonymization key")
        data["loyalty_pid"] = pseudonymize(data.pop("loyalty_id"), pseudonym_key)
        rewritten = True
    event["received_at"] = now_ms
    stripped = payload.strip()
    # Splice only plain one-line ASCII that is not padded: anything else (UTF-16, non-ASCII,
    # whitespace padding) is re-encoded, so a stored line is always compact, valid UTF-8 JSON.
    if (not rewritten and stripped[:1] == b"{" and len(stripped) <= _SPLICE_MAX and stripped.isascii()
            and b"\n" not in stripped and b"\r" not in stripped):
        body = '{"received_at":%d,' % now_ms + stripped[1:].decode()
    else:
        body = encode(event)
    return event, body


class QuarantineLog:
    """Logs quarantined messages without flooding: each (device, reason) once per ``interval_s``
    with the count since its last line; never the payload or its values."""

    def __init__(self, clock: Clock, interval_s: float = 60.0, max_keys: int = 10_000):
        self.clock = clock
        self.interval_ms = int(interval_s * 1000)
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str], list[int]] = {}  # key -> [last logged ms, count since]

    def note(self, topic: str, reason: str) -> bool:
        """Count one quarantined message; return whether a log line was written for it."""
        where = parse_device_topic(topic)
        device = ascii(where[2])[1:-1][:64] if where else "(no device topic)"
        key = (device, reason)
        now = self.clock.now_ms()
        entry = self._seen.get(key)
        if entry is None:
            if len(self._seen) >= self.max_keys:  # bounded: forget, and log anew, rather than grow
                self._seen.clear()
            self._seen[key] = [now, 0]
            log.warning("quarantined a message from device %s: %s", device, reason)
            return True
        entry[1] += 1
        if now - entry[0] >= self.interval_ms:
            log.warning("quarantined %d more message(s) from device %s in the last %.0f s: %s",
                        entry[1], device, (now - entry[0]) / 1000, reason)
            entry[0], entry[1] = now, 0
            return True
        return False


class Collector:
    """Validates and commits messages in groups; calls ``ack`` with their tokens after commit."""

    def __init__(self, buffer: SqliteBuffer, clock: Clock, *, store_id: str, pseudonym_key: bytes | None,
                 ack: Callable[[list[Token]], object] = lambda tokens: None,
                 on_committed: Callable[[list[dict]], None] | None = None,
                 group_max: int = 1000, group_wait_s: float = 0.005, max_pending: int = 20_000,
                 max_pending_bytes: int = 16 * 1024**2, capacity_of: Callable[[str], int | None] | None = None):
        self.buffer = buffer
        #: facing id -> planogram capacity (None: unknown): shelf readings far above it are quarantined
        self.capacity_of = capacity_of
        self.clock = clock
        self.store_id = store_id
        self.pseudonym_key = pseudonym_key
        self.ack = ack
        self.on_committed = on_committed
        self.group_max = group_max
        self.group_wait_s = group_wait_s
        # A deque, not a queue.Queue: append / popleft are atomic under the GIL, so the network
        # thread hands over a message without taking a lock or waking the writer each time
        # (queue.Queue's per-item lock and notify cost as much as validating the message).
        self._q: deque = deque()
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._q_bytes = 0  # payload bytes queued (updated by both threads; an estimate, see handle)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._count_lock = threading.Condition()
        self.committed = 0
        self.groups = 0
        self.stalled = False
        #: failures caught in the writer (bugs, unexpected errors): counted, never fatal
        self.writer_errors = 0
        self.last_writer_error_ms: int | None = None
        #: messages quarantined because storing them failed (reason ``internal``)
        self.poisoned = 0
        #: retained messages the broker replayed at a (re)subscription: acknowledged, not stored
        self.retained_ignored = 0
        #: logs quarantined messages, each reason once per device per interval with counts
        self.quarantine_log = QuarantineLog(clock)

    # ---- intake --------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, token: Token = (0, 0), retained: bool = False) -> None:
        """Queue one message (called on the MQTT network thread). Blocks when the queue is full in
        messages or bytes, which stops paho reading the socket: TCP backpressure to the broker.
        ``retained``: the broker's replay of a retained message (acknowledged and counted only)."""
        if retained:
            payload = _Retained()
        elif len(payload) > MAX_PAYLOAD_BYTES:
            # Keep only what quarantine keeps: an oversized payload is never held in full.
            cut = _Truncated(payload[:QUARANTINE_PREFIX_BYTES])
            cut.size = len(payload)
            payload = cut
        while ((len(self._q) >= self._max_pending or self._q_bytes >= self._max_pending_bytes)
               and not self._stop.is_set()):
            self._wake.set()
            time.sleep(0.001)
        # += on an int attribute is not atomic across threads; the writer corrects any drift
        # when the queue empties (see _take_group), so the bound holds within one group's bytes.
        self._q_bytes += len(payload)
        self._q.append((topic, payload, token))
        if not self._wake.is_set():
            self._wake.set()

    @property
    def started(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="collector-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def wait_committed(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` messages were committed; return whether they were."""
        with self._count_lock:
            return self._count_lock.wait_for(lambda: self.committed >= n, timeout)

    # ---- writer --------------------------------------------------------------------------

    def _take_group(self) -> list:
        if not self._q:
            self._q_bytes = 0
            self._wake.clear()
            if not self._q and not self._wake.wait(0.1):
                return []
        # Let a group fill for up to group_wait_s after its first message: fewer, larger commits.
        deadline = time.monotonic() + self.group_wait_s
        while len(self._q) < self.group_max and time.monotonic() < deadline:
            time.sleep(0.0005)
        q, group = self._q, []
        taken = 0
        while q and len(group) < self.group_max:
            item = q.popleft()
            taken += len(item[1])
            group.append(item)
        self._q_bytes = max(0, self._q_bytes - taken)
        return group

    def _run(self) -> None:
        while not (self._stop.is_set() and not self._q):
            try:
                group = self._take_group()
                if group:
                    self.commit_group(group)
            except Exception:  # the writer must outlive anything; commit_group already isolates messages
                self._writer_error("collector writer failed; continuing")
                time.sleep(0.1)

    def _writer_error(self, what: str) -> None:
        self.writer_errors += 1
        self.last_writer_error_ms = self.clock.now_ms()
        log.exception(what)

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (False before ``start``)."""
        return self._thread is not None and self._thread.is_alive()

    def commit_group(self, group: Iterable[tuple[str, bytes, Token]]) -> list[dict]:
        """Validate and commit one group (retrying until it is durable), then ack it; return
        the events that were new (not duplicates).

        Public so tests and benchmarks can drive the collector without a broker.
        """
        group = list(group)
        now = self.clock.now_ms()
        events, bodies, bad = [], [], []
        for topic, payload, _ in group:
            if isinstance(payload, _Retained):
                continue
            try:
                event, body = check_payload(topic, payload, store_id=self.store_id, now_ms=now,
                                            pseudonym_key=self.pseudonym_key, capacity_of=self.capacity_of)
            except ContractError as exc:
                bad.append((topic, exc.reason, exc.detail, payload))
                continue
            except Exception as exc:  # a validator bug must quarantine, not crash
                bad.append((topic, "internal", f"validator failed: {type(exc).__name__}", payload))
                continue
            events.append(event)
            bodies.append(body)
        try:
            result = self._append_durably(group, events, bodies, bad, now)
        except Exception:
            # Not a storage condition (those are retried inside): one message of the group cannot
            # be stored. Find it by storing one message at a time; each that fails is poison.
            self._writer_error(f"storing a group of {len(group)} failed; retrying one message at a time")
            return self._commit_one_by_one(group, now)
        fresh = [events[i] for i in result.kept]
        if bad:
            self._tell_quarantined(bad)
        self._done(group, len(group), fresh)
        return fresh

    def _append_durably(self, group, events, bodies, bad, now):
        """``buffer.append`` until it is durable: storage conditions (full, SQLite busy or
        failing) are waited out with the acks held; anything else is raised."""
        pause = 0.05
        while True:
            try:
                return self.buffer.append(events, now_ms=now, bodies=bodies, quarantine=bad)
            except (BufferFullError, StorageError) as exc:
                # Keep the PUBACKs held: the broker keeps the messages until we can store them.
                if not self.stalled:
                    log.warning("buffer cannot take a group of %d: %s; holding acks", len(group), exc)
                self.stalled = True
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                try:
                    self.buffer.enforce_cap(self.clock.now_ms())
                except StorageError:
                    pass

    def _commit_one_by_one(self, group, now) -> list[dict]:
        fresh: list[dict] = []
        for item in group:
            topic, payload, _tok = item
            try:
                fresh += self._commit_single(item, now)
                continue
            except (BufferFullError, StorageError):
                raise
            except Exception as exc:
                kind = type(exc).__name__
            # Poison: quarantine what can be stored safely (no text of the message but its
            # prefix as bytes), acknowledge, log once.
            self.poisoned += 1
            log.error("a message on %s could not be stored (%s); quarantined as 'internal' and acknowledged",
                      ascii(topic)[:120], kind)
            row = (ascii(topic)[:256], "internal", f"storing failed: {kind}", bytes(payload[:QUARANTINE_PREFIX_BYTES]))
            try:
                self._append_durably([item], [], [], [row], now)
            except (BufferFullError, StorageError):
                raise
            except Exception:
                self._writer_error("quarantining a poison message failed; acknowledging it anyway")
            self._done([item], 1, [])
        return fresh

    def _commit_single(self, item, now) -> list[dict]:
        topic, payload, _ = item
        if isinstance(payload, _Retained):
            self._done([item], 1, [])
            return []
        try:
            event, body = check_payload(topic, payload, store_id=self.store_id, now_ms=now,
                                        pseudonym_key=self.pseudonym_key, capacity_of=self.capacity_of)
            events, bodies, bad = [event], [body], []
        except ContractError as exc:
            events, bodies, bad = [], [], [(topic, exc.reason, exc.detail, payload)]
        result = self._append_durably([item], events, bodies, bad, now)
        if bad:
            self._tell_quarantined(bad)
        fresh = [events[i] for i in result.kept]
        self._done([item], 1, fresh)
        return fresh

    def _done(self, group, n: int, fresh: list[dict]) -> None:
        """Acknowledge a stored group, hand its new events to inference, then count it: whoever
        waits for ``committed`` (``wait_committed``) sees the facing state that includes them."""
        self.stalled = False
        self.ack([tok for _, _, tok in group])
        replays = sum(isinstance(payload, _Retained) for _, payload, _ in group)
        if replays:
            if not self.retained_ignored:
                log.info("ignored a retained message the broker replayed (no device publishes one; counted in "
                         "health as retained_ignored)")
            self.retained_ignored += replays
        self._observe(fresh)
        with self._count_lock:
            self.committed += n
            self.groups += 1
            self._count_lock.notify_all()

    def _tell_quarantined(self, bad) -> None:
        try:
            for topic, reason, _detail, _payload in bad:
                self.quarantine_log.note(topic, reason)
        except Exception:
            log.exception("quarantine log failed")

    def _observe(self, fresh: list[dict]) -> None:
        if self.on_committed and fresh:
            try:
                self.on_committed(fresh)
            except Exception:
                log.exception("inference update failed; events are stored and will be sent")

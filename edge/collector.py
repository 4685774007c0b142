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
messages: nothing is acknowledged that is not committed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
import time
from typing import Callable, Iterable

from gondola.clock import Clock
from gondola.contracts import parse_event
from gondola.errors import BufferFullError, ContractError, StorageError
from gondola.privacy import pseudonymize
from gondola.topics import parse_device_topic

from edge.buffer import SqliteBuffer, encode

__all__ = ["Collector", "check_payload", "MAX_PAYLOAD_BYTES"]

#: Larger MQTT payloads are quarantined unread (a valid event is well under 2 KB).
MAX_PAYLOAD_BYTES = 16 * 1024
_SPLICE_MAX = 4096

log = logging.getLogger(__name__)

Token = tuple[int, int]


def check_payload(topic: str, payload: bytes, *, store_id: str, now_ms: int,
                  pseudonym_key: bytes | None) -> tuple[dict, str]:
    """Validate one MQTT message; return ``(event, body)`` ready for the buffer.

    ``event`` gets ``received_at``; ``loyalty_id`` is replaced by ``loyalty_pid``. ``body`` is the
    event's one-line JSON: the device's own bytes with ``received_at`` spliced in when that is
    safe (saves a re-encode), else a fresh encoding.

    Raises:
        ContractError: the reason to quarantine it (contract reasons, plus ``too_large``,
            ``bad_topic``, ``wrong_store``, ``topic_mismatch``, ``no_pseudonym_key``).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError("too_large", f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    where = parse_device_topic(topic)
    if where is None:
        raise ContractError("bad_topic", f"topic {topic[:120]!r} is not a device topic")
    event = parse_event(payload)
    if event["store_id"] != store_id or where[0] != store_id:
        raise ContractError("wrong_store", f"event of store {event['store_id']!r} on gateway {store_id!r}")
    if event["device_id"] != where[2]:
        raise ContractError("topic_mismatch", f"device {event['device_id']!r} published on {topic!r}")
    rewritten = "received_at" in event
    data = event["data"]
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


class Collector:
    """Validates and commits messages in groups; calls ``ack`` with their tokens after commit."""

    def __init__(self, buffer: SqliteBuffer, clock: Clock, *, store_id: str, pseudonym_key: bytes | None,
                 ack: Callable[[list[Token]], object] = lambda tokens: None,
                 on_committed: Callable[[list[dict]], None] | None = None,
                 group_max: int = 1000, group_wait_s: float = 0.005, max_pending: int = 20_000):
        self.buffer = buffer
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
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._count_lock = threading.Condition()
        self.committed = 0
        self.groups = 0
        self.stalled = False

    # ---- intake --------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, token: Token = (0, 0)) -> None:
        """Queue one message (called on the MQTT network thread). Blocks when the queue is full,
        which stops paho reading the socket: TCP backpressure to the broker."""
        while len(self._q) >= self._max_pending and not self._stop.is_set():
            self._wake.set()
            time.sleep(0.001)
        self._q.append((topic, payload, token))
        if not self._wake.is_set():
            self._wake.set()

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
            self._wake.clear()
            if not self._q and not self._wake.wait(0.1):
                return []
        # Let a group fill for up to group_wait_s after its first message: fewer, larger commits.
        deadline = time.monotonic() + self.group_wait_s
        while len(self._q) < self.group_max and time.monotonic() < deadline:
            time.sleep(0.0005)
        q, group = self._q, []
        while q and len(group) < self.group_max:
            group.append(q.popleft())
        return group

    def _run(self) -> None:
        while not (self._stop.is_set() and not self._q):
            group = self._take_group()
            if group:
                self.commit_group(group)

    def commit_group(self, group: Iterable[tuple[str, bytes, Token]]) -> list[dict]:
        """Validate and commit one group (retrying until it is durable), then ack it; return
        the events that were new (not duplicates).

        Public so tests and benchmarks can drive the collector without a broker.
        """
        group = list(group)
        now = self.clock.now_ms()
        events, bodies, bad = [], [], []
        for topic, payload, _ in group:
            try:
                event, body = check_payload(topic, payload, store_id=self.store_id, now_ms=now,
                                            pseudonym_key=self.pseudonym_key)
            except ContractError as exc:
                bad.append((topic[:256], exc.reason, exc.detail[:500], bytes(payload[:65536])))
                continue
            except Exception as exc:  # a validator bug must quarantine, not crash
                bad.append((topic[:256], "internal", repr(exc)[:500], bytes(payload[:65536])))
                continue
            events.append(event)
            bodies.append(body)
        pause = 0.05
        while True:
            try:
                result = self.buffer.append(events, now_ms=now, bodies=bodies, quarantine=bad)
                break
            except (BufferFullError, StorageError) as exc:
                # Keep the PUBACKs held: the broker keeps the messages until we can store them.
                if not self.stalled:
                    log.warning("buffer cannot take a group of %d: %s; holding acks", len(group), exc)
                self.stalled = True
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                self.buffer.enforce_cap(self.clock.now_ms())
        self.stalled = False
        self.ack([tok for _, _, tok in group])
        with self._count_lock:
            self.committed += len(group)
            self.groups += 1
            self._count_lock.notify_all()
        fresh = [events[i] for i in result.kept]
        if self.on_committed and fresh:
            try:
                self.on_committed(fresh)
            except Exception:
                log.exception("inference update failed; events are stored and will be sent")
        return fresh

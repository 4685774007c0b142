"""The uplink: buffer -> hub, in priority order, fresh data first, at least once.

Each call of :meth:`Uplink.uplink_once` is one round, built from ordered steps:

1. **Backoff gate.** After a refused send, no attempt before ``next_attempt_ms`` (exponential
   backoff with jitter, on the gateway clock so a simulated clock drives it in tests).
1b. **Freshness budget.** IoT Hub bills every message in 4 KB units (body and properties), so
   small messages waste most of what they pay for. Alerts go at once; everything else (POS
   lines, restocks, readings, and the periodic ``edge.health`` status) may wait up to
   ``delay_ms`` (the gateway's ``uplink_delay_s``, 15 minutes by default) after it was
   received. (A health event every 5 minutes sent at once would make the gateway's own
   heartbeat the largest line of the bill: 288 messages a day per store. What the cloud must
   hear at once, scoring errors and model changes, goes through the twin; see
   ``Gateway.report_twin``.) A round runs when the oldest unsent event reached that age or a
   full round (``round_rows``) is waiting, or an alert waits; it sends what is due (and the
   small health events) topped up with younger events, as many as fit in the 4 KB units the
   message pays for anyway, so messages come out full and no event waits longer than the
   budget. ``force=True`` (and :meth:`Uplink.drain`) send everything now.
2. **Selection, two lanes.** The *backlog lane* takes the oldest unsent events by priority
   (alerts and health, then POS, then restocks and deliveries, then shelf readings). The *live
   lane* takes up to ``live_share`` of the round from the NEWEST unsent events above a persisted
   high-water mark, so after days offline fresh data is not stuck behind the backlog. Both lanes
   only move forward, so per device each lane ships in ``seq`` order; downstream orders by
   ``(device_id, seq)`` anyway.
3. **Packing.** Events are stored as one-line JSON; a message is those lines joined by newlines,
   compressed (``gzip`` by default: see ``docs/decisions/0201-uplink-compression.md`` for the
   measurement), at most 256 KB encoded (IoT Hub's limit), with the batch properties of
   ``gondola.contracts`` plus ``lane``. ``gondola.contracts.decode_batch`` reads them.
4. **Bandwidth cap.** A token bucket (``bandwidth_bytes_s``) paces sends on real time.
5. **Send, then mark.** Rows are deleted from the buffer only after ``transport.send`` returned,
   one transaction per message. A crash in between re-sends that message after restart
   (duplicates, removed downstream); never a loss.

Errors: ``uplink_once`` never raises for transport trouble (it backs off and reports in
``health()``); ``StorageError`` from the buffer propagates.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from gondola.clock import Clock
from gondola.contracts import BATCH_SCHEMA, DICT_ENCODING, ENCODINGS, MAX_MESSAGE_BYTES, BatchMessage, compress
from gondola.errors import TransportAuthError, TransportError

from edge.buffer import EventColumns, SqliteBuffer, StoredEvent, arrival, priority_of
from edge.transport import HubTransport

__all__ = ["Backoff", "TokenBucket", "Uplink", "encode_lines", "encode_bodies", "ENCODINGS", "BILLING_UNIT_BYTES", "billed_units"]

log = logging.getLogger(__name__)

_BODY = operator.attrgetter("body")
_BY_DEVICE = operator.attrgetter("device_id", "id")

#: IoT Hub meters device-to-cloud messages in units of 4 KB (body plus properties).
BILLING_UNIT_BYTES = 4096

#: Stored bytes a drain round reads (see ``Uplink._drain_rows``).
DRAIN_ROUND_BYTES = 4 * 1024**2


def billed_units(message: BatchMessage) -> int:
    """The 4 KB units IoT Hub bills for one message (body plus application properties)."""
    size = message.size + sum(len(k) + len(v) for k, v in message.properties.items())
    return -(-size // BILLING_UNIT_BYTES)


def encode_lines(events: list[StoredEvent], *, store_id: str, encoding: str = "gzip", level: int = 6,
                 lane: str = "backlog") -> BatchMessage:
    """One batch message from stored one-line JSON events (same format as
    ``gondola.contracts.encode_batch``, without decoding and re-encoding each event)."""
    return _message(list(map(_BODY, events)), events[0].device_id, events[0].seq, store_id=store_id,
                    encoding=encoding, level=level, lane=lane)


def encode_bodies(bodies, *, store_id: str, encoding: str = "gzip", level: int = 6,
                  lane: str = "backlog") -> BatchMessage:
    """``encode_lines`` from the stored bodies alone (the first event's device and seq, batch
    properties, are read from its body)."""
    first = json.loads(bodies[0])
    return _message(bodies, first["device_id"], first["seq"], store_id=store_id, encoding=encoding,
                    level=level, lane=lane)


def _message(bodies, first_device_id: str, first_seq: int, *, store_id: str, encoding: str, level: int,
             lane: str) -> BatchMessage:
    text = "\n".join(bodies)
    if encoding == DICT_ENCODING and "\x01" in text:  # not valid JSON text: cannot happen, cannot be elided
        encoding, level = "gzip", 6
    return BatchMessage(body=compress(text.encode(), encoding, level), properties={
        "schema": BATCH_SCHEMA,
        "content-type": "application/x-ndjson",
        "content-encoding": encoding,
        "store_id": store_id,
        "first_device_id": first_device_id,
        "first_seq": str(first_seq),
        "count": str(len(bodies)),
        "lane": lane,
    })


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": wait in [d/2, d], d = min(cap, base * 2^n)."""

    base_ms: int = 1_000
    cap_ms: int = 5 * 60_000
    rng: random.Random = field(default_factory=random.Random)

    def delay_ms(self, failures: int) -> int:
        d = min(self.cap_ms, self.base_ms * (2 ** min(failures - 1, 30)))
        return int(d / 2 + self.rng.random() * d / 2)


class TokenBucket:
    """Bandwidth cap in bytes per second (real time), with a burst of one second's worth."""

    def __init__(self, rate_bytes_s: float, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        if rate_bytes_s <= 0:
            raise ValueError("bandwidth must be positive")
        self.rate = float(rate_bytes_s)
        self.tokens = self.rate
        self._sleep, self._now = sleep, monotonic
        self._t = monotonic()
        self.waited_s = 0.0

    def take(self, n: int) -> None:
        """Block until ``n`` bytes may be sent."""
        now = self._now()
        self.tokens = min(self.rate, self.tokens + (now - self._t) * self.rate)
        self._t = now
        self.tokens -= n
        if self.tokens < 0:
            wait = -self.tokens / self.rate
            self.waited_s += wait
            self._sleep(wait)


class Uplink:
    """Drains a buffer to a hub transport. Not thread-safe: one uplink loop per gateway."""

    def __init__(self, buffer: SqliteBuffer, transport: HubTransport, clock: Clock, *, store_id: str,
                 encoding: str = "gzip", level: int = 6, round_rows: int = 4_000, live_share: float = 0.2,
                 max_bytes: int = MAX_MESSAGE_BYTES, bandwidth_bytes_s: float | None = None,
                 backoff: Backoff | None = None, sleep: Callable[[float], None] = time.sleep,
                 delay_ms: int = 0, budget_encoding: str = DICT_ENCODING, budget_level: int = 9):
        if encoding not in ENCODINGS or budget_encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r} or {budget_encoding!r}")
        if not 0.0 <= live_share < 1.0:
            raise ValueError("live_share must be in [0, 1)")
        self.buffer, self.transport, self.clock = buffer, transport, clock
        self.store_id = store_id
        self.encoding, self.level = encoding, level
        #: Messages of the freshness budget (a few 4 KB units each, paid whole) use the preset
        #: dictionary at level 9: 14 % fewer bytes per event than gzip-6 there. Rounds of a
        #: backlog (256 KB messages, where the dictionary gains little) keep ``encoding``.
        self.budget_encoding, self.budget_level = budget_encoding, budget_level
        self.round_rows, self.live_share = round_rows, live_share
        self.max_bytes = max_bytes
        #: freshness budget of POS lines, restocks and readings (0: send at once)
        self.delay_ms = int(delay_ms)
        self.bucket = TokenBucket(bandwidth_bytes_s, sleep) if bandwidth_bytes_s else None
        self.backoff = backoff or Backoff()
        self.failures = 0
        self.next_attempt_ms = 0
        self.last_error: str | None = None
        self.auth_failed = False
        self.messages_sent = 0
        self.bytes_sent = 0
        self.events_sent = 0
        self.units_billed = 0
        #: the last compression ratio per lane: where a message of a long batch ends
        self._ratios: dict[tuple[str, str], float] = {}

    # ---- packing -------------------------------------------------------------------------

    def _pack(self, events: EventColumns, lane: str, encoding: str, level: int,
              encoded: BatchMessage | None = None):
        """Split into messages of at most ``max_bytes`` (estimate from the lane's last ratio,
        shrink by the measured one if a message still comes out too big); yield (message, the
        ids of its events). Raw sizes are summed once (a running total), so finding a message's
        end is a bisection, not a loop. ``encoded``: all of ``events`` already encoded as one
        message (by ``_fill``), used where that is the message this would encode."""
        ratio = self._ratios.get((lane, encoding), 0.2) if encoding != "identity" else 1.0
        bodies = events.bodies
        # cum[i]: the bodies' bytes before event i (the newlines, 0.3 % more, fit in the headroom)
        cum = list(itertools.accumulate(map(len, bodies), initial=0))
        start = 0
        while start < len(bodies):
            # The last end whose raw bytes, at the last ratio with 15 % headroom, fit.
            end = bisect.bisect_right(cum, cum[start] + self.max_bytes / (ratio * 1.15)) - 1
            end = min(max(end, start + 1), len(bodies))
            while True:
                if encoded is not None and start == 0 and end == len(bodies):
                    msg = encoded
                else:
                    msg = encode_bodies(bodies[start:end], store_id=self.store_id, encoding=encoding, level=level,
                                        lane=lane)
                if msg.size <= self.max_bytes:
                    break
                if end - start == 1:
                    raise ValueError(f"one event encodes to {msg.size} bytes > {self.max_bytes}")
                n = end - start
                end = start + max(1, min(n // 2 + 1, int(n * 0.9 * self.max_bytes / msg.size)))
            ratio = self._ratios[lane, encoding] = max(msg.size / max(1, cum[end] - cum[start]), 0.01)
            yield msg, events.ids[start:end]
            start = end

    def plan_round(self, rows: int | None = None) -> list[tuple[str, EventColumns]]:
        """The events of the next round (``rows``, default ``round_rows``), as (lane, events)
        groups in send order: one group per lane, alerts and health first within it, and the
        lane holding some of them first."""
        rows = rows or self.round_rows
        n_live = int(rows * self.live_share)
        live = self.buffer.select_live(n_live) if n_live else []
        backlog = self.buffer.select_backlog_columns(rows)
        if live and backlog.ids:
            lo, hi = backlog.ids[0], backlog.ids[-1]
            if any(lo <= e.id <= hi for e in live):  # the lanes met: the backlog's end is live
                live_ids = {e.id for e in live}
                backlog = EventColumns.of([r for r in zip(*backlog) if r[0] not in live_ids])
        backlog = backlog.take(0, rows - len(live))
        live = [e for e in live if e.priority == 0] + [e for e in live if e.priority != 0]
        groups = [("backlog", backlog), ("live", EventColumns.of(live))]
        if live and live[0].priority == 0 and not (backlog.ids and priority_of(backlog.ids[0]) == 0):
            groups.reverse()
        return [(lane, evs) for lane, evs in groups if evs.ids]

    def _plan_budget(self, now_ms: int) -> tuple[list[tuple[str, EventColumns]], BatchMessage | None]:
        """What is due (alerts and health, and every event that has waited ``delay_ms``), in
        priority order, topped up in arrival order with events not due yet, as many as fit in
        the 4 KB units the message pays for anyway. A batch that makes one message is ordered
        by device (each device's events in the order they had: class, then arrival), which
        puts alike lines next to each other: 2 % fewer bytes. Also the batch as one message
        when ``_fill`` encoded it (``_pack`` sends that rather than encode it again)."""
        events = self.buffer.select_backlog(self.round_rows)
        due = self.buffer.last_arrival_received_by(now_ms - self.delay_ms)
        must = [e for e in events if e.priority == 0 or arrival(e.id) <= due]
        rest = sorted((e for e in events if not (e.priority == 0 or arrival(e.id) <= due)), key=lambda e: arrival(e.id))
        n, encoded = self._fill(must, rest)
        batch = must + rest[:n]
        if sum(len(e.body) for e in batch) <= self.max_bytes:  # one message, whatever it compresses to
            batch.sort(key=_BY_DEVICE)
        else:
            encoded = None  # _pack sends the batch in arrival order
        return [("backlog", EventColumns.of(batch))], encoded

    def _fill(self, must: list[StoredEvent], rest: list[StoredEvent]) -> tuple[int, BatchMessage | None]:
        """How many of ``rest`` fit after ``must`` without a further billing unit (binary
        search over encoded sizes; raw bytes bound it, as no batch compresses 30x), and
        ``must`` with them encoded as ``_plan_budget`` sends them (None if not encoded)."""
        def encode(evs: list[StoredEvent]) -> BatchMessage:  # as _plan_budget will send them
            return encode_lines(sorted(evs, key=_BY_DEVICE), store_id=self.store_id, encoding=self.budget_encoding,
                                level=self.budget_level)

        if not rest or not must:
            return 0, None
        best = encode(must)
        if best.size > self.max_bytes:
            return 0, None  # several messages anyway: _pack splits them
        units = billed_units(best)
        budget = units * BILLING_UNIT_BYTES * 30
        hi, raw = 0, sum(len(e.body) + 1 for e in must)
        while hi < len(rest) and raw + len(rest[hi].body) + 1 <= budget:
            raw += len(rest[hi].body) + 1
            hi += 1
        lo = 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            msg = encode(must + rest[:mid])
            if billed_units(msg) <= units and msg.size <= self.max_bytes:
                lo, best = mid, msg
            else:
                hi = mid - 1
        return lo, best

    def due(self, now_ms: int) -> str | None:
        """What the freshness budget sends now: ``"round"`` (a full round waits: big messages
        anyway), ``"budget"`` (an alert waits, or the oldest event has waited ``delay_ms``),
        or None (nothing is due yet)."""
        rows, oldest, alert = self.buffer.pending()
        if not rows:
            return None
        if self.delay_ms <= 0 or rows >= self.round_rows:
            return "round"
        if alert or (oldest is not None and now_ms - oldest >= self.delay_ms):
            return "budget"
        return None

    # ---- rounds --------------------------------------------------------------------------

    def _drain_rows(self) -> int:
        """Rows of a drain round: about 4 MB of stored events, so that the backlog lane fills
        whole 256 KB messages (event JSON gzips 10-20x; each message costs a hub write and a
        delete transaction, each round two selects), never fewer than ``round_rows``."""
        rows, size = self.buffer.backlog_size()
        return max(self.round_rows, min(DRAIN_ROUND_BYTES // max(1, size // max(1, rows)), 4 * self.round_rows))

    def uplink_once(self, force: bool = False, rows: int | None = None) -> int:
        """Send one round (up to ``rows`` events, default ``round_rows``) if the freshness budget
        says it is due, or at once with ``force``; return events the hub accepted."""
        now = self.clock.now_ms()
        if now < self.next_attempt_ms:
            return 0
        mode = "round" if force else self.due(now)
        if mode is None:
            return 0
        sent = 0
        encoded = None  # the budget's batch, already encoded as one message
        if mode == "round":
            plan, encoding, level = self.plan_round(rows), self.encoding, self.level
        else:
            (plan, encoded), encoding, level = self._plan_budget(now), self.budget_encoding, self.budget_level
        for lane, events in plan:
            for msg, chunk in self._pack(events, lane, encoding, level, encoded):  # chunk: the message's event ids
                if self.bucket:
                    self.bucket.take(msg.size)
                try:
                    self.transport.send(msg)
                except TransportError as exc:
                    self._failed(exc)
                    return sent
                ids = list(chunk)
                self.buffer.mark_sent(ids, now_ms=self.clock.now_ms(),
                                      live_hwm=max(arrival(i) for i in ids) if lane == "live" else None)
                self.failures = 0
                self.last_error = None
                self.auth_failed = False
                self.messages_sent += 1
                self.bytes_sent += msg.size
                self.units_billed += billed_units(msg)
                self.events_sent += len(chunk)
                sent += len(chunk)
        return sent

    def _failed(self, exc: TransportError) -> None:
        self.failures += 1
        self.auth_failed = isinstance(exc, TransportAuthError)
        delay = self.backoff.cap_ms if self.auth_failed else self.backoff.delay_ms(self.failures)
        self.next_attempt_ms = self.clock.now_ms() + delay
        self.last_error = str(exc)[:200]
        if self.failures == 1 or self.failures % 10 == 0:
            log.warning("uplink: hub refused a batch (%d in a row), next try in %.1f s: %s",
                        self.failures, delay / 1000, self.last_error)

    def drain(self, max_rounds: int | None = None) -> int:
        """Send rounds until the buffer is empty or a send fails, whatever the freshness
        budget; return events sent."""
        total = 0
        rounds = 0
        while max_rounds is None or rounds < max_rounds:
            n = self.uplink_once(force=True, rows=self._drain_rows())
            rounds += 1
            total += n
            if n == 0:
                break
        return total

    def reset_backoff(self) -> None:
        """Try again at once (after the network came back, or in lock-step tests)."""
        self.next_attempt_ms = 0

    def health(self) -> dict:
        return {
            "uplink_failures": self.failures,
            "uplink_next_attempt_ms": self.next_attempt_ms,
            "uplink_last_error": self.last_error,
            "uplink_auth_failed": self.auth_failed,
            "uplink_messages": self.messages_sent,
            "uplink_bytes": self.bytes_sent,
            "uplink_events": self.events_sent,
            "uplink_billed_units": self.units_billed,
            "uplink_delay_s": self.delay_ms / 1000,
            "uplink_throttled_s": round(self.bucket.waited_s, 3) if self.bucket else 0.0,
        }

"""Live mode: stores advance on a (possibly accelerated) clock and publish what devices send.

Each tick moves simulated time to ``start + elapsed_real * speed`` (or by a fixed simulated
step when ``speed`` is 0: as fast as the broker takes it), calls every store's ``run_until``
and hands the messages to a publisher (``MqttPublisher`` in production and tests). A
``SimClock`` passed in is moved along, so gateways in the same process see the same time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from gondola.clock import SimClock
from firmware_sim.store import DeviceMessage, StoreSim

__all__ = ["Publisher", "LiveStats", "run_live"]


class Publisher(Protocol):
    def publish_many(self, msgs: Sequence[DeviceMessage], *, wait: bool = True) -> int:
        """Publish in order; return the count (once all are acknowledged when ``wait``)."""
        ...

    def flush(self) -> None:
        """Wait until everything published is acknowledged."""
        ...


@dataclass(frozen=True)
class LiveStats:
    """What a live run did."""

    messages: int
    ticks: int
    sim_start_ms: int
    sim_end_ms: int
    seconds: float

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def run_live(
    stores: Sequence[StoreSim],
    publisher: Publisher,
    *,
    until_ms: int,
    speed: float = 0.0,
    tick_s: float = 0.25,
    step_ms: int = 15 * 60_000,
    clock: SimClock | None = None,
    on_tick: Callable[[int, int], None] | None = None,
    lock_step: bool = False,
) -> LiveStats:
    """Run stores from their current time to ``until_ms``, publishing as devices send.

    Args:
        speed: simulated seconds per real second (1 = real time, 3600 = an hour a second);
            0 = no pacing, advance by ``step_ms`` per tick as fast as messages are acknowledged.
        tick_s: real seconds between ticks when paced.
        clock: a ``SimClock`` moved to each tick's simulated time.
        on_tick: called with (simulated ms, messages published this tick).
        lock_step: wait for every PUBACK at the end of each tick (before ``on_tick``), so a
            gateway driven from ``on_tick`` has received the tick's messages.

    Raises:
        TransportError: from the publisher.
        ValueError: stores that do not share a clock position, or ``until_ms`` in their past.
    """
    if not stores:
        raise ValueError("run_live needs at least one store")
    start = stores[0].now_ms
    if any(s.now_ms != start for s in stores):
        raise ValueError("stores must start at the same simulated time")
    if until_ms < start:
        raise ValueError("until_ms is before the stores' time")
    real0 = time.perf_counter()
    sim_now = start
    total = ticks = 0
    while sim_now < until_ms:
        if speed > 0:
            time.sleep(tick_s)
            sim_now = min(until_ms, start + int((time.perf_counter() - real0) * speed * 1000))
        else:
            sim_now = min(until_ms, sim_now + step_ms)
        msgs: list[DeviceMessage] = []
        for store in stores:
            msgs += store.run_until(sim_now)
        if len(stores) > 1:
            msgs.sort(key=lambda m: m.sent_at)
        if clock is not None:
            clock.advance_to(sim_now)
        # Called even with nothing to send: the publisher services acks and keepalive then.
        # Ticks do not wait for every PUBACK (the window still bounds what is in flight), so
        # the broker's acks overlap the next tick's simulation; ``lock_step`` waits.
        sent = publisher.publish_many(msgs, wait=lock_step)
        total += sent
        ticks += 1
        if on_tick is not None:
            on_tick(sim_now, sent)
    publisher.flush()
    return LiveStats(total, ticks, start, sim_now, time.perf_counter() - real0)

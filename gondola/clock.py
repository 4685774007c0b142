"""Clocks: the one place that says what time it is.

Every timestamp in Gondola is an integer count of milliseconds since the Unix epoch, UTC
(``ts``, ``received_at``). Components take a :class:`Clock` so the same code runs on the wall
clock in a store and on a simulated, accelerated clock in tests and the demo.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Protocol

__all__ = ["Clock", "SystemClock", "SimClock", "ms_to_iso", "iso_to_ms", "MINUTE_MS", "HOUR_MS", "DAY_MS"]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the epoch, UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimClock:
    """A clock that only moves when told to; thread-safe.

    The simulator drives it (``advance_to``); components that wait for simulated time to pass
    call ``wait_until``, which returns when the clock reaches the instant or ``timeout`` real
    seconds elapse.
    """

    def __init__(self, start_ms: int):
        self._now = int(start_ms)
        self._cond = threading.Condition()

    def now_ms(self) -> int:
        with self._cond:
            return self._now

    def advance_to(self, t_ms: int) -> None:
        with self._cond:
            if t_ms > self._now:
                self._now = int(t_ms)
                self._cond.notify_all()

    def wait_until(self, t_ms: int, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._now >= t_ms, timeout=timeout)


def ms_to_iso(ms: int) -> str:
    """``1700000000000`` -> ``'2023-11-14T22:13:20.000Z'``."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_to_ms(text: str) -> int:
    """Parse an ISO 8601 instant (``Z`` or offset) to epoch milliseconds."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)

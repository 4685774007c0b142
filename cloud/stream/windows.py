"""Event-time windows: the clock, the watermark and the window assignment (bytewax's vocabulary).

* **Event clock** of a partition: the largest event time seen so far (``now``). An event whose
  time is more than ``max_skew_ms`` ahead of when the hub enqueued it does not move the clock
  (a device with a wrong clock must not close everyone's windows).
* **Watermark** = ``now - allowed_lateness``: the job's statement that no more events older than
  that will be counted. A window ``[start, end)`` closes (is emitted, once) when the watermark
  reaches ``end``.
* **Late event**: an event whose time is before the watermark when it arrives. It is not added to
  any window (they may be closed and written already); it is routed to ``stream.late_events``
  and counted.

The clock is per hub partition (each store's events stay on one partition), so what a partition
emits depends only on that partition's message sequence: a replay of the same messages after a
crash emits the same rows, which is what makes the outputs idempotent (``cloud.stream.job``).

No library: ``bytewax`` and ``quixstreams`` bring their own runtime (dataflow workers, Kafka),
and the windows here are a few lines over the lake's own source interface.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EventClock", "Windower"]


@dataclass
class EventClock:
    """A partition's event-time clock and watermark."""

    allowed_lateness_ms: int
    max_skew_ms: int
    now_ms: int | None = None

    def watermark(self) -> int | None:
        """Events before this time are late; ``None`` before the first event."""
        return None if self.now_ms is None else self.now_ms - self.allowed_lateness_ms

    def is_late(self, ts: int) -> bool:
        wm = self.watermark()
        return wm is not None and ts < wm

    def observe(self, ts: int, enqueued_ms: int | None) -> bool:
        """Move the clock with an event; return whether it moved."""
        if enqueued_ms and ts > enqueued_ms + self.max_skew_ms:
            return False
        if self.now_ms is None or ts > self.now_ms:
            self.now_ms = ts
            return True
        return False


@dataclass(frozen=True)
class Windower:
    """Fixed windows of ``size_ms`` starting every ``hop_ms`` (``hop_ms == size_ms``: tumbling)."""

    size_ms: int
    hop_ms: int

    @classmethod
    def tumbling(cls, size_ms: int) -> "Windower":
        return cls(size_ms, size_ms)

    @classmethod
    def hopping(cls, size_ms: int, hop_ms: int) -> "Windower":
        if size_ms % hop_ms:
            raise ValueError(f"window size {size_ms} is not a multiple of the hop {hop_ms}")
        return cls(size_ms, hop_ms)

    def pane(self, ts: int) -> int:
        """Start of the hop-long pane that holds ``ts``: the window itself when tumbling; a hopping
        window is the ``size_ms / hop_ms`` panes from its start."""
        return ts - ts % self.hop_ms

    def starts(self, ts: int) -> range:
        """Starts of the windows that contain ``ts`` (one when tumbling, size/hop when hopping)."""
        last = self.pane(ts)
        first = last - self.size_ms + self.hop_ms
        return range(first, last + 1, self.hop_ms)

"""A store gateway as the cloud sees it, without MQTT: device messages -> uplink batches on a hub.

For the cloud stream job's tests and benchmarks (docs/stream.md), where running real gateways
for many store-days would cost minutes: ``SimGateway`` commits what a ``StoreSim``'s devices send,
emits ``edge.health`` (backlog included) and ``edge.alert`` events (from an injected alerter),
and uplinks batches by priority to a hub whose clock follows simulated time. It injects the
gateway faults the cloud must notice, each with a ground-truth window in ``windows``:

* ``uplink_down``: the store's internet link is down; the gateway keeps everything and drains it
  when the link is back (so the cloud first sees silence, then late events);
* ``uplink_slow``: the link carries only ``slow_share`` of the store's traffic; health and alerts
  still go first, so the cloud sees the backlog (``unsent_rows``) grow;
* ``model_broken``: the gateway scores with a broken model (the alerter's ``broken`` mode).

The real gateway lives in ``edge/``; this plays only what the cloud can see of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from gondola.clock import DAY_MS, MINUTE_MS
from gondola.contracts import PRIORITY, make_event, pack_batches
from firmware_sim._rng import component_rng
from firmware_sim.store import StoreSim
from firmware_sim.truth import WindowRecord

__all__ = ["GatewayFaults", "SimGateway", "Alerter"]


@dataclass(frozen=True)
class GatewayFaults:
    """Per store-day probabilities of a gateway fault starting, and their lengths (log-uniform)."""

    uplink_down: float = 0.0
    down_min_min: float = 30.0
    down_max_min: float = 360.0
    uplink_slow: float = 0.0
    slow_min_min: float = 120.0
    slow_max_min: float = 480.0
    slow_share: float = 0.2
    model_broken: float = 0.0
    broken_min_min: float = 240.0
    broken_max_min: float = 720.0


class Alerter(Protocol):
    """The gateway's model, injected (the simulator does not import ``models``)."""

    def observe(self, event: dict) -> None: ...

    def alerts(self, t_ms: int, broken: bool) -> list[dict]:
        """``edge.alert`` data dicts of the alert state changes at ``t_ms``."""
        ...


@dataclass
class SimGateway:
    """One store's gateway between a ``StoreSim`` and a hub (``gondola.hub.LocalHub``-like ``send``).

    ``clock`` is moved to each uplink instant before sending (the hub stamps ``enqueued_time``
    from it), so the hub's times are simulated times. Call ``run_until(t)`` with increasing ``t``.
    """

    sim: StoreSim
    hub: Any
    clock: Any
    faults: GatewayFaults = field(default_factory=GatewayFaults)
    alerter: Alerter | None = None
    seed: int = 0
    step_ms: int = 5 * MINUTE_MS
    health_every_ms: int = 5 * MINUTE_MS
    alert_every_ms: int = 5 * MINUTE_MS
    windows: list[WindowRecord] = field(default_factory=list)
    sent_events: int = 0

    def __post_init__(self) -> None:
        self.store_id = self.sim.store_id
        self.device_id = f"gw-{self.store_id}"
        self.now_ms = self.sim.now_ms
        self._seq = 0
        self._buffer: list[dict] = []
        self._planned_days: set[int] = set()
        self._arrived = 0.0  # device events per step, smoothed (the slow link's budget)

    # ---- faults --------------------------------------------------------------------------

    def _plan(self, day_start: int) -> None:
        if day_start in self._planned_days:
            return
        self._planned_days.add(day_start)
        f = self.faults
        rng = component_rng(self.seed, self.store_id, "gateway", day_start // DAY_MS)
        for kind, p, lo, hi in (("uplink_down", f.uplink_down, f.down_min_min, f.down_max_min),
                                ("uplink_slow", f.uplink_slow, f.slow_min_min, f.slow_max_min),
                                ("model_broken", f.model_broken, f.broken_min_min, f.broken_max_min)):
            draw = rng.random()
            start = day_start + int(rng.integers(0, DAY_MS))
            length = int(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo)))) * MINUTE_MS)
            if p > 0 and draw < p:
                self.windows.append(WindowRecord(kind, self.store_id, start, start + length))

    def _in(self, kind: str, t: int) -> bool:
        return any(w.kind == kind and w.start_ms <= t < w.end_ms for w in self.windows)

    # ---- the loop ------------------------------------------------------------------------

    def _own(self, etype: str, t: int, data: dict) -> dict:
        ev = make_event(etype, store_id=self.store_id, device_id=self.device_id, seq=self._seq, ts=t, data=data)
        self._seq += 1
        ev["received_at"] = t
        return ev

    def run_until(self, t_ms: int) -> int:
        """Advance to ``t_ms``; return the events the hub accepted meanwhile."""
        sent = 0
        while self.now_ms < t_ms:
            t = min(self.now_ms + self.step_ms - self.now_ms % self.step_ms, t_ms)
            self._plan(t - t % DAY_MS)
            arrived = 0
            for m in self.sim.run_until(t):
                if not m.valid:
                    continue  # the collector quarantines it; the cloud never sees it
                ev = json.loads(m.payload)
                ev["received_at"] = m.sent_at
                self._buffer.append(ev)
                arrived += 1
                if self.alerter is not None:
                    self.alerter.observe(ev)
            self._arrived = 0.9 * self._arrived + 0.1 * arrived
            if t % self.alert_every_ms == 0 and self.alerter is not None:
                for data in self.alerter.alerts(t, self._in("model_broken", t)):
                    self._buffer.append(self._own("edge.alert", t, data))
            if t % self.health_every_ms == 0:
                self._buffer.append(self._own("edge.health", t, self._health(t)))
            self.now_ms = t
            sent += self._uplink(t)
        self.sent_events += sent
        return sent

    def _health(self, t: int) -> dict:
        oldest = min((e["received_at"] for e in self._buffer), default=t)
        out = {"buffer_rows": len(self._buffer), "buffer_bytes": 300 * len(self._buffer),
               "unsent_rows": len(self._buffer), "oldest_unsent_age_s": max(t - oldest, 0) / 1000.0,
               "evictions": 0, "seq_gaps": 0, "quarantined": 0, "model_version": "sim"}
        # as edge.gateway's health: the store's forecast threshold (its alert budget's), when known
        at = getattr(self.alerter, "forecast_threshold", None)
        if at is not None:
            out["forecast_threshold"] = round(float(at), 4)
        return out

    def _uplink(self, t: int) -> int:
        if not self._buffer or self._in("uplink_down", t):
            return 0
        self._buffer.sort(key=lambda e: (PRIORITY.get(e["type"], 9), e["received_at"]))
        if self._in("uplink_slow", t):
            n = max(1, int(self.faults.slow_share * self._arrived))
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        else:
            out, self._buffer = self._buffer, []
        self.clock.advance_to(t)
        for msg, _events in pack_batches(out, store_id=self.store_id):
            self.hub.send(self.device_id, msg.body, msg.properties)
        return len(out)

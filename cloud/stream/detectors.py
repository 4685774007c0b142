"""Anomaly detectors of one store, run in event time at every tick (rules in docs/stream.md).

Each detector is a stated rule over what the store's events say, and each fires once per
episode (a ``stream.anomalies`` row at first detection); an episode ends when the evidence goes
away (the store speaks again, the sensor's value moves, ...), and a new one may then fire.

* ``gateway_silent``: nothing from the store for ``silent_min_ms`` while the partition's clock
  moves on, and the store's own hour-of-day event rate says at least ``silent_expected`` events
  should have come in that time (so a quiet night is not an anomaly). Score: expected events.
* ``sensor_fleet_silent``: the store's POS lines keep coming but none of its shelf sensors has
  reported for ``fleet_silent_ms`` (heartbeats alone would have come). Score: sensors usually
  reporting per hour.
* ``sensor_stuck``: a sensored facing whose reading has not changed for ``stuck_min_ms`` while
  the till sold at least ``stuck_units`` units of its SKU (its share, when a SKU has several
  facings) since that value, and the store's other sensors still report. Score: units sold.
* ``till_silent``: a register that sent lines in the past hour-of-day profile is silent for
  ``till_silent_ms`` while the store's other registers sell. Score: lines expected.
* ``alert_divergence``: (run only while the gateway is alive) the gateway's raised alerts and
  the cloud's ``empty_within_h`` alerts disagree on at least ``divergence_min`` facings and on
  more than ``divergence_share`` of the facings either raises, for ``divergence_ticks`` ticks in
  a row. Score: the share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS

__all__ = ["DetectorConfig", "StoreWatch", "ANOMALY_KINDS"]

ANOMALY_KINDS = ("gateway_silent", "sensor_fleet_silent", "sensor_stuck", "till_silent", "alert_divergence")


@dataclass(frozen=True)
class DetectorConfig:
    silent_min_ms: int = 20 * MINUTE_MS
    silent_expected: float = 10.0
    warmup_ms: int = 6 * HOUR_MS
    fleet_silent_ms: int = 30 * MINUTE_MS
    fleet_min_sensors: int = 5
    stuck_min_ms: int = 30 * MINUTE_MS
    stuck_units: float = 3.0
    till_silent_ms: int = 30 * MINUTE_MS
    till_expected: float = 8.0
    divergence_min: int = 3
    divergence_share: float = 0.5
    divergence_ticks: int = 3


def _hour(ts: int) -> int:
    return int((ts % DAY_MS) // HOUR_MS)


@dataclass
class _Profile:
    """Events per hour of day, learned online: a rate per ms for each UTC hour."""

    events: list[float] = field(default_factory=lambda: [0.0] * 24)
    observed_ms: list[float] = field(default_factory=lambda: [0.0] * 24)

    def rate(self, hour: int) -> float:
        if self.observed_ms[hour] >= 30 * MINUTE_MS:
            return self.events[hour] / self.observed_ms[hour]
        total = sum(self.observed_ms)
        return sum(self.events) / total if total else 0.0

    def expected(self, start: int, end: int) -> float:
        """Events expected in [start, end) (summed hour by hour, at most one day)."""
        out, t, end = 0.0, start, min(end, start + DAY_MS)
        while t < end:
            nxt = min(end, t - t % HOUR_MS + HOUR_MS)
            out += self.rate(_hour(t)) * (nxt - t)
            t = nxt
        return out


@dataclass
class _Sensor:
    device: str
    sku: str
    units: float
    changed_ts: int
    last_ts: int
    sold: float = 0.0
    flagged: bool = False


@dataclass
class StoreWatch:
    """What the detectors keep about one store (part of the partition's state)."""

    store_id: str
    first_ts: int = 0
    last_ts: int = 0
    last_gateway_ts: int | None = None
    last_reading_ts: int | None = None
    last_pos_ts: int | None = None
    next_health_start: int | None = None
    profile: _Profile = field(default_factory=_Profile)
    sensors: dict[str, _Sensor] = field(default_factory=dict)  # facing -> sensor
    sensor_hours: float = 0.0  # readings per hour, decayed
    facings_per_sku: dict[str, int] = field(default_factory=dict)
    registers: dict[str, list] = field(default_factory=dict)  # device -> [last_ts, _Profile, flagged]
    gateway_raised: set[str] = field(default_factory=set)
    open: set[str] = field(default_factory=set)  # kinds (or kind:subject) with an open episode
    divergent_ticks: int = 0
    last_tick: int | None = None

    def start(self, ts: int, planogram: Sequence[Any] | None) -> None:
        self.first_ts = self.last_ts = ts
        for f in planogram or ():
            self.facings_per_sku[f.sku] = self.facings_per_sku.get(f.sku, 0) + 1

    # ---- events --------------------------------------------------------------------------

    def observe(self, etype: str, device: str, ts: int, data: dict, cfg: DetectorConfig) -> None:
        self.profile.events[_hour(ts)] += 1
        if ts > self.last_ts:
            self.last_ts = ts
            self.open.discard("gateway_silent")
        if etype.startswith("edge."):
            self.last_gateway_ts = max(self.last_gateway_ts or ts, ts)
            if etype == "edge.alert":
                facing = data.get("facing_id")
                if data.get("state") == "raised":
                    self.gateway_raised.add(facing)
                else:
                    self.gateway_raised.discard(facing)
        elif etype == "shelf.reading":
            self._reading(device, ts, data)
        elif etype == "pos.line":
            self._sale(device, ts, data)

    def _reading(self, device: str, ts: int, data: dict) -> None:
        self.last_reading_ts = max(self.last_reading_ts or ts, ts)
        self.open.discard("sensor_fleet_silent")
        facing, units = data.get("facing_id"), float(data.get("units_est", 0))
        s = self.sensors.get(facing)
        if s is None:
            s = self.sensors[facing] = _Sensor(device, str(data.get("sku")), units, ts, ts)
            return
        if ts < s.last_ts:
            return  # an older reading arriving late says nothing about now
        s.last_ts = ts
        if units != s.units:
            s.units, s.changed_ts, s.sold = units, ts, 0.0
            if s.flagged:
                s.flagged = False
                self.open.discard(f"sensor_stuck:{facing}")

    def _sale(self, device: str, ts: int, data: dict) -> None:
        self.last_pos_ts = max(self.last_pos_ts or ts, ts)
        reg = self.registers.get(device)
        if reg is None:
            reg = self.registers[device] = [ts, _Profile(), False]
        reg[1].events[_hour(ts)] += 1
        if ts > reg[0]:
            reg[0] = ts
            if reg[2]:
                reg[2] = False
                self.open.discard(f"till_silent:{device}")
        qty = float(data.get("qty", 0))
        if qty <= 0 or data.get("kind", "sale") != "sale":
            return
        sku = data.get("sku")
        shared = [s for s in self.sensors.values() if s.sku == sku]
        if not shared:
            return
        n = max(self.facings_per_sku.get(sku, 0), len(shared), 1)
        for s in shared:
            if ts > s.changed_ts:
                s.sold += qty / n

    # ---- ticks ---------------------------------------------------------------------------

    def _row(self, t: int, kind: str, subject: str, score: float, since: int, evidence: dict) -> dict:
        return {"store_id": self.store_id, "subject": subject, "kind": kind, "score": float(score),
                "evidence": json.dumps(evidence, sort_keys=True), "first_seen": t, "since_ms": int(since)}

    def tick(self, t: int, cfg: DetectorConfig) -> list[dict]:
        """Run the detectors at event time ``t``; return new ``stream.anomalies`` rows."""
        span = t - self.last_tick if self.last_tick is not None else 0
        self.last_tick = t
        rows: list[dict] = []
        warm = sum(self.profile.observed_ms) >= cfg.warmup_ms
        silent_for = t - self.last_ts
        # Learn the hour profile only from time the store was not silent.
        if span > 0 and silent_for < cfg.silent_min_ms:
            self.profile.observed_ms[_hour(t - span)] += span
            for reg in self.registers.values():
                reg[1].observed_ms[_hour(t - span)] += span
            if self.last_reading_ts is not None and t - self.last_reading_ts < cfg.fleet_silent_ms:
                self.sensor_hours += span / HOUR_MS
        if not warm:
            return rows
        # gateway_silent
        if silent_for >= cfg.silent_min_ms and "gateway_silent" not in self.open:
            expected = self.profile.expected(self.last_ts, t)
            if expected >= cfg.silent_expected:
                self.open.add("gateway_silent")
                rows.append(self._row(t, "gateway_silent", self.store_id, expected, self.last_ts, {
                    "last_event_ms": self.last_ts, "silent_min": round(silent_for / MINUTE_MS, 1),
                    "expected_events": round(expected, 1)}))
        if silent_for >= cfg.silent_min_ms:
            return rows  # a silent store says nothing about its sensors or tills
        # sensor_fleet_silent
        pos_recent = self.last_pos_ts is not None and t - self.last_pos_ts < cfg.fleet_silent_ms
        if (len(self.sensors) >= cfg.fleet_min_sensors and self.last_reading_ts is not None and pos_recent
                and t - self.last_reading_ts >= cfg.fleet_silent_ms and "sensor_fleet_silent" not in self.open):
            self.open.add("sensor_fleet_silent")
            rows.append(self._row(t, "sensor_fleet_silent", self.store_id, float(len(self.sensors)),
                                  self.last_reading_ts, {"last_reading_ms": self.last_reading_ts,
                                                         "sensors_known": len(self.sensors),
                                                         "last_pos_ms": self.last_pos_ts}))
        fleet_alive = self.last_reading_ts is not None and t - self.last_reading_ts < cfg.fleet_silent_ms
        # sensor_stuck
        if fleet_alive:
            for facing, s in sorted(self.sensors.items()):
                if (not s.flagged and s.sold >= cfg.stuck_units and s.units >= 1
                        and t - s.changed_ts >= cfg.stuck_min_ms):
                    s.flagged = True
                    self.open.add(f"sensor_stuck:{facing}")
                    rows.append(self._row(t, "sensor_stuck", s.device, s.sold, s.changed_ts, {
                        "facing_id": facing, "sku": s.sku, "reading_units": s.units, "units_sold_since": round(s.sold, 2),
                        "unchanged_min": round((t - s.changed_ts) / MINUTE_MS, 1)}))
        # till_silent
        others_selling = pos_recent
        for device, reg in sorted(self.registers.items()):
            last, prof, flagged = reg
            if flagged or not others_selling or t - last < cfg.till_silent_ms:
                continue
            if any(d != device and t - r[0] < cfg.till_silent_ms for d, r in self.registers.items()):
                expected = prof.expected(last, t)
                if expected >= cfg.till_expected:
                    reg[2] = True
                    self.open.add(f"till_silent:{device}")
                    rows.append(self._row(t, "till_silent", device, expected, last, {
                        "last_line_ms": last, "expected_lines": round(expected, 1)}))
        return rows

    def compare_alerts(self, t: int, cloud_raised: set[str], cfg: DetectorConfig) -> list[dict]:
        """Flag a gateway whose alerts disagree with the cloud's (stale or broken model)."""
        union = cloud_raised | self.gateway_raised
        diff = cloud_raised ^ self.gateway_raised
        share = len(diff) / len(union) if union else 0.0
        if len(diff) >= cfg.divergence_min and share > cfg.divergence_share:
            self.divergent_ticks += 1
        else:
            self.divergent_ticks = 0
            self.open.discard("alert_divergence")
        if self.divergent_ticks >= cfg.divergence_ticks and "alert_divergence" not in self.open:
            self.open.add("alert_divergence")
            return [self._row(t, "alert_divergence", self.store_id, share, t - (cfg.divergence_ticks - 1) * 5 * MINUTE_MS, {
                "cloud_only": sorted(cloud_raised - self.gateway_raised)[:20],
                "gateway_only": sorted(self.gateway_raised - cloud_raised)[:20],
                "cloud_raised": len(cloud_raised), "gateway_raised": len(self.gateway_raised)})]
        return []

"""Stock-out features: one definition for the gateway (online) and the cloud (offline).

A :class:`FacingState` is updated event by event, in event-time order, with the sales, shelf
readings and restocks of one shelf facing; ``features(now_ms)`` returns the feature vector at
an instant. The gateway keeps one state per facing and updates it as events arrive; the cloud
replays silver events through the very same class, so both compute the same values by
construction (the parity test checks it).

Sales rates are exponentially decayed counts (units per hour) over several time constants:
incremental, O(1) per event, no history kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gondola.clock import HOUR_MS

__all__ = ["FEATURES", "RATE_TAUS_H", "FacingState", "feature_matrix"]

#: Time constants of the decayed sales rates, hours.
RATE_TAUS_H = (1.0, 4.0, 24.0, 168.0)

#: Names of the columns of a feature vector, in order. Add at the end; never reorder.
FEATURES: tuple[str, ...] = (
    "units_est",            # units on shelf: sensor reading, or restock fill minus POS sales since
    "has_sensor",           # 1 when a shelf sensor reports on this facing
    "capacity",             # planogram capacity of the facing
    "fill_ratio",           # units_est / capacity
    *(f"rate_{int(t)}h" for t in RATE_TAUS_H),  # decayed sales rate, units per hour
    "hours_since_restock",  # capped at 168
    "hours_since_reading",  # sensor silence, capped at 168 (168 when no sensor)
    "battery_pct",          # last reported battery, 0 when no sensor
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "sales_since_reading",  # POS units sold since the last sensor reading
)

_CAP_H = 168.0


@dataclass
class FacingState:
    """Online state of one facing. Feed events in event-time order."""

    facing_id: str
    sku: str
    capacity: int
    has_sensor: bool = False
    units: float | None = None
    last_reading_ms: int | None = None
    last_restock_ms: int | None = None
    battery_pct: float = 0.0
    sales_since_reading: float = 0.0
    _rates: list[float] = field(default_factory=lambda: [0.0] * len(RATE_TAUS_H))
    _rates_at_ms: int | None = None

    # ---- updates -------------------------------------------------------------------------

    def _decay_to(self, t_ms: int) -> None:
        if self._rates_at_ms is None:
            self._rates_at_ms = t_ms
            return
        dt_h = (t_ms - self._rates_at_ms) / HOUR_MS
        if dt_h > 0:
            for i, tau in enumerate(RATE_TAUS_H):
                self._rates[i] *= math.exp(-dt_h / tau)
            self._rates_at_ms = t_ms

    def on_sale(self, ts_ms: int, qty: int) -> None:
        """A POS line of this facing's SKU (negative qty: a return or void)."""
        self._decay_to(ts_ms)
        for i, tau in enumerate(RATE_TAUS_H):
            # Each unit adds 1/tau to a decayed rate: a steady r units/h converges to r.
            self._rates[i] += qty / tau
        self.sales_since_reading += qty
        if self.units is not None:
            self.units = max(0.0, self.units - qty)

    def on_reading(self, ts_ms: int, units_est: int, battery_pct: float) -> None:
        """A shelf sensor reading: it replaces the POS-based estimate."""
        self.has_sensor = True
        self.units = float(units_est)
        self.last_reading_ms = ts_ms
        self.battery_pct = float(battery_pct)
        self.sales_since_reading = 0.0

    def on_restock(self, ts_ms: int, units_added: int) -> None:
        """Staff refilled the facing (handheld scan)."""
        self.last_restock_ms = ts_ms
        base = self.units if self.units is not None else 0.0
        self.units = min(float(self.capacity), base + units_added) if self.capacity else base + units_added

    # ---- features ------------------------------------------------------------------------

    def rates_at(self, now_ms: int) -> list[float]:
        """Decayed sales rates (units/h) as of ``now_ms``, without changing the state."""
        if self._rates_at_ms is None:
            return [0.0] * len(RATE_TAUS_H)
        dt_h = max(0.0, (now_ms - self._rates_at_ms) / HOUR_MS)
        return [r * math.exp(-dt_h / tau) for r, tau in zip(self._rates, RATE_TAUS_H)]

    def features(self, now_ms: int) -> list[float]:
        """The feature vector (ordered as FEATURES) at ``now_ms``."""
        units = self.units if self.units is not None else float(self.capacity)
        cap = float(self.capacity) if self.capacity else 1.0

        def hours_since(t: int | None) -> float:
            return _CAP_H if t is None else min(_CAP_H, max(0.0, (now_ms - t) / HOUR_MS))

        hour = (now_ms % (24 * HOUR_MS)) / HOUR_MS
        # 1970-01-01 was a Thursday: day 0 -> weekday 3 (Monday = 0).
        dow = ((now_ms // (24 * HOUR_MS)) + 3) % 7
        return [
            units,
            1.0 if self.has_sensor else 0.0,
            float(self.capacity),
            min(units / cap, 2.0),
            *self.rates_at(now_ms),
            hours_since(self.last_restock_ms),
            hours_since(self.last_reading_ms) if self.has_sensor else _CAP_H,
            self.battery_pct if self.has_sensor else 0.0,
            math.sin(2 * math.pi * hour / 24),
            math.cos(2 * math.pi * hour / 24),
            math.sin(2 * math.pi * dow / 7),
            math.cos(2 * math.pi * dow / 7),
            self.sales_since_reading,
        ]


def feature_matrix(states: list[FacingState], now_ms: int) -> np.ndarray:
    """Features of many facings at one instant, shape (n, len(FEATURES)), float32."""
    if not states:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    return np.asarray([s.features(now_ms) for s in states], dtype=np.float32)


"""Stock-out features: one definition for the gateway (online) and the cloud (offline).

A :class:`FacingState` is updated event by event, in event-time order, with the sales, shelf
readings and restocks of one shelf facing; ``features(now_ms)`` returns the feature vector at
an instant. The gateway keeps one state per facing and updates it as events arrive; the cloud
replays silver events through the very same class (``models.replay``), so both compute the
same values by construction (the parity test checks the plumbing around it).

Every update is O(1) and keeps no history:

* sales rates are exponentially decayed counts (units per hour) over several time constants,
  corrected for warm-up (a state that has seen 3 hours of a steady 2 units/h reports 2, not
  the 0.04 a raw week-long decay would give);
* an hour-of-day sales profile (24 decayed bins) gives the expected demand over the next two
  hours and until the next restock round;
* an hour-of-day restock profile (24 decayed bins) says when the next restock round usually is;
* a decayed mean of the unit price exposes promotions from POS alone (price below usual).

Feature values are in natural units (units, units/h, hours): the baselines read them directly.
Models see them through :func:`encode_for_model` (log scale), which keeps every column in a
small common range so a per-tensor int8 input scale loses no precision that matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS

__all__ = [
    "FEATURES",
    "RATE_TAUS_H",
    "FacingState",
    "feature_matrix",
    "encode_for_model",
    "MODEL_ENCODING",
]

#: Time constants of the decayed sales rates, hours.
RATE_TAUS_H = (1.0, 4.0, 24.0, 168.0)
#: Time constant of the hour-of-day profiles (sales and restocks), hours: two weeks.
PROFILE_TAU_H = 336.0
#: Horizon of the ``demand_next_2h`` feature, hours (fixed: features do not depend on H).
DEMAND_WINDOW_H = 2.0

#: Names of the columns of a feature vector, in order. Add at the end; never reorder.
FEATURES: tuple[str, ...] = (
    "units_est",            # units on shelf: sensor reading minus POS sales since, or restock fill minus sales
    "has_sensor",           # 1 when a shelf sensor reports on this facing
    "capacity",             # planogram capacity of the facing
    "fill_ratio",           # units_est / capacity, capped at 2
    *(f"rate_{int(t)}h" for t in RATE_TAUS_H),  # decayed sales rate, units per hour
    "hours_since_restock",  # capped at 168
    "hours_since_reading",  # sensor silence (sensor health), capped at 168 (168 when no sensor)
    "battery_pct",          # last reported battery (sensor health), 0 when no sensor
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "sales_since_reading",  # POS units sold since the last sensor reading (0 when no sensor)
    "hours_since_sale",     # silence of the till for this facing, capped at 168 (zero-sales run)
    "demand_next_2h",       # expected units sold in the next 2 h (weekly rate x hour-of-day profile)
    "hours_to_restock",     # hours until the usual next restock round (24 when none learnt yet)
    "demand_to_restock",    # expected units sold until that round
    "price_ratio",          # last unit price / usual unit price (< 1: promotion), 1 when unknown
    "demand_since_sale",    # units the profile expected since the last sale (zero-sales evidence)
)

_CAP_H = 168.0
_N = len(FEATURES)
_IDX = {name: i for i, name in enumerate(FEATURES)}


def _decay(dt_h: float, tau_h: float) -> float:
    return math.exp(-dt_h / tau_h) if dt_h > 0 else 1.0


@dataclass
class FacingState:
    """Online state of one facing. Feed events in event-time order.

    ``started_ms`` is when observation began (the first event fed, or the gateway's start): the
    decayed rates are corrected for the time seen so far.
    """

    facing_id: str
    sku: str
    capacity: int
    has_sensor: bool = False
    units: float | None = None
    last_reading_ms: int | None = None
    last_restock_ms: int | None = None
    last_sale_ms: int | None = None
    battery_pct: float = 0.0
    sales_since_reading: float = 0.0
    started_ms: int | None = None
    last_price: float | None = None
    _rates: list[float] = field(default_factory=lambda: [0.0] * len(RATE_TAUS_H))
    _rates_at_ms: int | None = None
    _sales_profile: list[float] = field(default_factory=lambda: [0.0] * 24)
    _restock_profile: list[float] = field(default_factory=lambda: [0.0] * 24)
    _profile_at_ms: int | None = None
    _price_mean: float | None = None

    # ---- updates -------------------------------------------------------------------------

    def _touch(self, t_ms: int) -> None:
        if self.started_ms is None:
            self.started_ms = t_ms

    def _decay_to(self, t_ms: int) -> None:
        self._touch(t_ms)
        if self._rates_at_ms is None:
            self._rates_at_ms = t_ms
        else:
            dt_h = (t_ms - self._rates_at_ms) / HOUR_MS
            if dt_h > 0:
                for i, tau in enumerate(RATE_TAUS_H):
                    self._rates[i] *= math.exp(-dt_h / tau)
                self._rates_at_ms = t_ms
        if self._profile_at_ms is None:
            self._profile_at_ms = t_ms
        else:
            dt_h = (t_ms - self._profile_at_ms) / HOUR_MS
            if dt_h > 0:
                k = math.exp(-dt_h / PROFILE_TAU_H)
                self._sales_profile = [v * k for v in self._sales_profile]
                self._restock_profile = [v * k for v in self._restock_profile]
                self._profile_at_ms = t_ms

    def on_sale(self, ts_ms: int, qty: float, price_cents: int | None = None) -> None:
        """A POS line of this facing's SKU (negative qty: a return or void)."""
        self._decay_to(ts_ms)
        for i, tau in enumerate(RATE_TAUS_H):
            # Each unit adds 1/tau to a decayed rate: a steady r units/h converges to r.
            self._rates[i] += qty / tau
        self._sales_profile[_hour_bin(ts_ms)] += qty
        self.sales_since_reading += qty
        if qty > 0:
            self.last_sale_ms = ts_ms
            if price_cents is not None and price_cents > 0:
                self.last_price = float(price_cents)
                # Decayed mean over about 50 sale lines: promotions last days, the usual price longer.
                self._price_mean = (
                    float(price_cents) if self._price_mean is None
                    else self._price_mean + (price_cents - self._price_mean) / 50.0
                )
        if self.units is not None:
            self.units = max(0.0, self.units - qty)

    def on_reading(self, ts_ms: int, units_est: float, battery_pct: float) -> None:
        """A shelf sensor reading: it replaces the POS-based estimate."""
        self._touch(ts_ms)
        self.has_sensor = True
        self.units = float(units_est)
        self.last_reading_ms = ts_ms
        self.battery_pct = float(battery_pct)
        self.sales_since_reading = 0.0

    def on_restock(self, ts_ms: int, units_added: float) -> None:
        """Staff refilled the facing (handheld scan)."""
        self._decay_to(ts_ms)
        self._restock_profile[_hour_bin(ts_ms)] += 1.0
        self.last_restock_ms = ts_ms
        base = self.units if self.units is not None else 0.0
        self.units = min(float(self.capacity), base + units_added) if self.capacity else base + units_added

    # ---- features ------------------------------------------------------------------------

    def rates_at(self, now_ms: int) -> list[float]:
        """Decayed sales rates (units/h) as of ``now_ms``, without changing the state.

        Corrected for warm-up: divided by ``1 - exp(-seen/tau)`` where ``seen`` is the time
        observed so far (at least one hour), so a young state is not biased towards zero.
        """
        if self._rates_at_ms is None:
            return [0.0] * len(RATE_TAUS_H)
        dt_h = max(0.0, (now_ms - self._rates_at_ms) / HOUR_MS)
        seen_h = max(1.0, (now_ms - (self.started_ms or now_ms)) / HOUR_MS)
        return [
            r * math.exp(-dt_h / tau) / (1.0 - math.exp(-seen_h / tau))
            for r, tau in zip(self._rates, RATE_TAUS_H)
        ]

    def _profile_share(self, start_h: float, length_h: float) -> float:
        """Days' worth of sales that fall in [start_h, start_h + length_h) hours of day."""
        total = sum(self._sales_profile)
        if total <= 0:
            return length_h / 24.0
        days = math.floor(length_h / 24.0)
        share, h, left = days * total, start_h, length_h - 24.0 * days
        while left > 1e-9:
            b = math.floor(h) % 24
            step = min(left, math.floor(h) + 1 - h)
            share += self._sales_profile[b] * step
            h += step
            left -= step
        return share / total

    def _hours_to_restock(self, hour: float) -> float:
        """Hours until the next hour-of-day bin that usually sees a restock (24 if none yet)."""
        peak = max(self._restock_profile)
        if peak <= 0:
            return 24.0
        start = int(hour)
        for k in range(1, 25):
            if self._restock_profile[(start + k) % 24] >= 0.5 * peak:
                return (start + k) - hour
        return 24.0

    def features(self, now_ms: int) -> list[float]:
        """The feature vector (ordered as FEATURES) at ``now_ms``."""
        units = self.units if self.units is not None else float(self.capacity)
        cap = float(self.capacity) if self.capacity else 1.0

        def hours_since(t: int | None) -> float:
            return _CAP_H if t is None else min(_CAP_H, max(0.0, (now_ms - t) / HOUR_MS))

        hour = (now_ms % DAY_MS) / HOUR_MS
        # 1970-01-01 was a Thursday: day 0 -> weekday 3 (Monday = 0).
        dow = ((now_ms // DAY_MS) + 3) % 7
        rates = self.rates_at(now_ms)
        daily = max(0.0, rates[-1]) * 24.0  # units per day at the weekly rate
        to_restock = self._hours_to_restock(hour)
        since_sale = hours_since(self.last_sale_ms if self.last_sale_ms is not None else self.started_ms)
        price_ratio = (
            self.last_price / self._price_mean if self.last_price and self._price_mean else 1.0
        )
        return [
            units,
            1.0 if self.has_sensor else 0.0,
            float(self.capacity),
            min(units / cap, 2.0),
            *rates,
            hours_since(self.last_restock_ms),
            hours_since(self.last_reading_ms) if self.has_sensor else _CAP_H,
            self.battery_pct if self.has_sensor else 0.0,
            math.sin(2 * math.pi * hour / 24),
            math.cos(2 * math.pi * hour / 24),
            math.sin(2 * math.pi * dow / 7),
            math.cos(2 * math.pi * dow / 7),
            self.sales_since_reading if self.has_sensor else 0.0,
            hours_since(self.last_sale_ms),
            daily * self._profile_share(hour, DEMAND_WINDOW_H),
            to_restock,
            daily * self._profile_share(hour, to_restock),
            min(price_ratio, 4.0),
            daily * self._profile_share(hour - since_sale, since_sale),
        ]


def _hour_bin(ts_ms: int) -> int:
    return int((ts_ms % DAY_MS) // HOUR_MS)


def feature_matrix(states: list[FacingState], now_ms: int) -> np.ndarray:
    """Features of many facings at one instant, shape (n, len(FEATURES)), float32."""
    if not states:
        return np.zeros((0, _N), dtype=np.float32)
    return np.asarray([s.features(now_ms) for s in states], dtype=np.float32)


#: Version of :func:`encode_for_model`; model manifests record it and the runtime checks it.
MODEL_ENCODING = "log1p-v1"

# Columns that are counts, rates or durations: log1p keeps small values (0, 1, 2 units left)
# apart and squeezes the long tail, so all model inputs fit in about [-1, 6].
_LOG_COLUMNS = np.array(
    [_IDX[n] for n in FEATURES if n.startswith(("units_", "capacity", "rate_", "hours_", "sales_", "demand_"))]
)
_PCT = _IDX["battery_pct"]


def encode_for_model(features: np.ndarray) -> np.ndarray:
    """Raw features (n, F) -> model inputs (n, F), float32: log1p of counts, rates and hours.

    Parameter-free and versioned (:data:`MODEL_ENCODING`), shared by training and every runtime
    so the edge still feeds only raw features. Standardization lives inside the model.
    """
    x = np.array(features, dtype=np.float32, copy=True)
    if x.ndim != 2 or x.shape[1] != _N:
        raise ValueError(f"expected (n, {_N}) features, got {x.shape}")
    x[:, _LOG_COLUMNS] = np.log1p(np.maximum(x[:, _LOG_COLUMNS], 0.0))
    x[:, _PCT] = x[:, _PCT] / 100.0
    return x

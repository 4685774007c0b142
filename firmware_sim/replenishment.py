"""Backroom, ordering, deliveries, staff restock rounds and inventory-record errors.

The causes of an empty shelf, modelled separately so ground truth can name them:

- **store ordering**: an order-up-to policy on the *recorded* inventory; an order is sometimes
  not placed at all (``order_miss_prob``);
- **phantom inventory**: unrecorded shrink (theft, damage) lowers the true stock but not the
  record, so the store under-orders until a periodic count corrects the record;
- **supplier / handling**: some delivered lines are misplaced in the backroom for days;
- **shelf handling**: restock rounds start late, are skipped, refill only facings below a
  threshold and sometimes only partly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gondola.clock import DAY_MS, MINUTE_MS
from firmware_sim.catalog import Catalog, Planogram
from firmware_sim.scenario import ReplenishmentParams

__all__ = ["Backroom", "RestockRound", "plan_rounds", "restock", "hhmm_ms"]


def hhmm_ms(text: str) -> int:
    """``'06:30'`` -> milliseconds after midnight.

    Raises:
        ValueError: not HH:MM.
    """
    hours, minutes = text.split(":")
    return (int(hours) * 60 + int(minutes)) * MINUTE_MS


@dataclass(frozen=True)
class RestockRound:
    """One staff round: when it was planned, when it happened, or that it was skipped."""

    planned_ms: int
    start_ms: int
    skipped: bool


@dataclass
class Backroom:
    """True and recorded stock per SKU, open orders and misplaced cases."""

    units: np.ndarray  # true, findable units in the backroom
    record: np.ndarray  # what the store system believes is in the store (shelf + backroom)
    on_order: dict[int, np.ndarray] = field(default_factory=dict)  # arrival day -> units
    misplaced: list[tuple[int, np.ndarray]] = field(default_factory=list)  # found day -> units

    @classmethod
    def initial(cls, rng: np.random.Generator, catalog: Catalog, plan: Planogram, shelf: np.ndarray) -> "Backroom":
        units = np.floor(plan.rate * rng.uniform(1.0, 3.0, len(catalog))).astype(np.int64)
        on_shelf = np.bincount(plan.sku_index, weights=shelf, minlength=len(catalog)).astype(np.int64)
        return cls(units=units, record=units + on_shelf)

    def receive(self, rng: np.random.Generator, day: int, params: ReplenishmentParams) -> tuple[np.ndarray, np.ndarray]:
        """Morning delivery of ``day`` and misplaced cases found that day.

        Returns (delivered units per SKU, misplaced units per SKU of this delivery).
        """
        delivered = self.on_order.pop(day, None)
        if delivered is None:
            delivered = np.zeros_like(self.units)
        found = [u for d, u in self.misplaced if d <= day]
        self.misplaced = [(d, u) for d, u in self.misplaced if d > day]
        for units in found:
            self.units += units
        lost = np.where(rng.random(len(delivered)) < params.misplaced_prob, delivered, 0)
        if lost.any():
            found_day = day + 1 + int(rng.poisson(max(params.misplaced_days_mean - 1, 0)))
            self.misplaced.append((found_day, lost))
        self.units += delivered - lost
        self.record += delivered
        return delivered, lost

    def shrink(self, rng: np.random.Generator, params: ReplenishmentParams) -> np.ndarray:
        """Unrecorded loss from the backroom: true stock falls, the record does not."""
        hit = rng.random(len(self.units)) < params.shrink_prob
        amount = np.where(hit, rng.integers(1, params.shrink_units_max + 1, len(self.units)), 0)
        amount = np.minimum(amount, self.units)
        self.units -= amount
        return amount

    def count(self, day: int, params: ReplenishmentParams, on_shelf: np.ndarray) -> np.ndarray:
        """Periodic count of a rotating slice of SKUs: their record becomes the truth.

        Returns the mask of counted SKUs.
        """
        n = len(self.units)
        counted = (np.arange(n) + day) % max(params.count_interval_days, 1) == 0
        self.record[counted] = self.units[counted] + on_shelf[counted]
        return counted

    def order(
        self,
        rng: np.random.Generator,
        day: int,
        weekday: int,
        params: ReplenishmentParams,
        catalog: Catalog,
        plan: Planogram,
        forecast: np.ndarray,
    ) -> None:
        """Evening order for the next delivery day, on the recorded (maybe phantom) position.

        ``forecast`` is the store's own estimate of units per day per SKU (biased, and blind
        to promotions). What the supplier ships is decided here too (short lines).
        """
        lead = max(params.lead_time_days, 1)
        arrival = next(
            (day + k for k in range(lead, lead + 8) if (weekday + k) % 7 in params.delivery_weekdays), None
        )
        if arrival is None or arrival in self.on_order:
            return
        shelf_cap = np.bincount(plan.sku_index, weights=plan.capacity, minlength=len(catalog))
        target = np.ceil(forecast * params.order_cover_days + shelf_cap)
        pipeline = sum(self.on_order.values()) if self.on_order else 0
        need = np.maximum(target - self.record - pipeline, 0)
        pack = catalog.pack_size
        qty = (np.ceil(need / pack) * pack).astype(np.int64)
        qty[rng.random(len(qty)) < params.order_miss_prob] = 0
        # The supplier ships what it has: some lines arrive short.
        short = rng.random(len(qty)) < params.supplier_short_prob
        fill = rng.uniform(*params.supplier_short_fill, len(qty))
        qty = np.where(short, np.floor(qty * fill), qty).astype(np.int64)
        self.on_order[arrival] = qty


def plan_rounds(rng: np.random.Generator, day_start_ms: int, params: ReplenishmentParams, open_day: bool) -> list[RestockRound]:
    """The day's restock rounds with their delays and skips (none on a closed day)."""
    rounds = []
    for text in params.restock_times:
        planned = day_start_ms + hhmm_ms(text)
        delay = int(rng.exponential(params.restock_delay_mean_min) * MINUTE_MS)
        skipped = (not open_day) or bool(rng.random() < params.restock_skip_prob)
        start = min(planned + delay, day_start_ms + DAY_MS - 1)
        rounds.append(RestockRound(planned, start, skipped))
    return sorted(rounds, key=lambda r: r.start_ms)


def restock(
    rng: np.random.Generator,
    shelf: np.ndarray,
    backroom: Backroom,
    plan: Planogram,
    params: ReplenishmentParams,
) -> np.ndarray:
    """Refill facings below the threshold from the backroom; return units added per facing.

    Facings of one SKU are served in planogram order, so a short backroom fills the first
    facing and leaves the others low. Some facings are refilled only partly.
    """
    gap = plan.capacity - shelf
    low = shelf < params.restock_threshold * plan.capacity
    fill = np.where(rng.random(len(shelf)) < params.partial_prob,
                    rng.uniform(*params.partial_fill, len(shelf)), 1.0)
    want = np.where(low, np.ceil(gap * fill), 0).astype(np.int64)
    added = np.zeros_like(shelf)
    position = np.arange(len(shelf)) - np.searchsorted(plan.sku_index, plan.sku_index)
    for p in range(int(position.max()) + 1):
        idx = np.flatnonzero((position == p) & (want > 0))
        sku = plan.sku_index[idx]
        give = np.minimum(want[idx], backroom.units[sku])
        backroom.units[sku] -= give
        added[idx] = give
    shelf += added
    return added

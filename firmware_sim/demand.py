"""Shopper demand: rates per facing per simulation step, with seasonality and promotions.

Demand for a SKU in a step is Poisson with mean
``rate[sku] * weekday[dow] * day_noise * holiday * promo[sku] * intraday[step]``, where the
intraday profile sums to 1 over the open steps of a day (so ``rate`` is units per average
open day). A SKU on k facings sends each facing a Poisson share of ``1/k`` (a sum of Poissons
is Poisson, so the SKU's total is unchanged).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS
from firmware_sim._rng import component_rng
from firmware_sim.scenario import DemandParams

__all__ = ["intraday_profile", "day_factor", "promo_mask", "draw_demand", "is_holiday"]


def intraday_profile(params: DemandParams, step_ms: int) -> np.ndarray:
    """Share of a day's demand in each step (0 outside opening hours; sums to 1).

    A flat base plus a lunch peak (12:30) and a larger after-work peak (17:45), the usual
    shape of grocery footfall by hour.
    """
    steps = DAY_MS // step_ms
    mid_h = (np.arange(steps) + 0.5) * step_ms / HOUR_MS
    shape = 0.55 + 0.6 * np.exp(-0.5 * ((mid_h - 12.5) / 1.2) ** 2) + 0.9 * np.exp(-0.5 * ((mid_h - 17.75) / 1.5) ** 2)
    open_ = (mid_h >= params.open_hour) & (mid_h < params.close_hour)
    shape = np.where(open_, shape, 0.0)
    total = shape.sum()
    if total <= 0:
        raise ValueError("opening hours leave no open step")
    return shape / total


def _day_date(day_start_ms: int) -> date:
    return datetime.fromtimestamp(day_start_ms / 1000, tz=timezone.utc).date()


def is_holiday(params: DemandParams, day_start_ms: int) -> bool:
    """True when the store is closed that day."""
    return _day_date(day_start_ms).isoformat() in set(params.holidays)


def day_factor(params: DemandParams, seed: int, store_id: str, day_start_ms: int) -> float:
    """Weekday x holiday x random day noise for one store-day (0 on a holiday)."""
    d = _day_date(day_start_ms)
    if d.isoformat() in set(params.holidays):
        return 0.0
    factor = params.weekday_factors[d.weekday()]
    tomorrow = date.fromordinal(d.toordinal() + 1).isoformat()
    if tomorrow in set(params.holidays):
        factor *= params.pre_holiday_factor
    if params.day_noise_cv > 0:
        k = 1.0 / params.day_noise_cv**2
        rng = component_rng(seed, store_id, "day_noise", day_start_ms // DAY_MS)
        factor *= rng.gamma(k, 1.0 / k)
    return float(factor)


def promo_mask(params: DemandParams, seed: int, n_skus: int, day_start_ms: int) -> np.ndarray:
    """SKUs on promotion that day, chain-wide, in blocks of ``promo_days``.

    Blocks are counted from the epoch so a given date has the same promotions whatever day a
    simulation starts on.
    """
    block = (day_start_ms // DAY_MS) // max(params.promo_days, 1)
    rng = component_rng(seed, "chain", "promo", n_skus, block)
    return rng.random(n_skus) < params.promo_share


def draw_demand(
    rng: np.random.Generator,
    rate_per_facing: np.ndarray,
    profile: np.ndarray,
    factor: float,
) -> np.ndarray:
    """Poisson demand, shape (steps, facings), int32; zero rows outside opening hours.

    Drawn as a Poisson day total per facing, each unit then placed in a step with the
    intraday profile's probabilities: the same distribution as independent Poisson cells
    (Poisson thinning), at the cost of one draw per unit instead of one per cell.
    """
    steps = len(profile)
    n = len(rate_per_facing)
    if factor <= 0:
        return np.zeros((steps, n), dtype=np.int32)
    totals = rng.poisson(rate_per_facing * factor)
    facing = np.repeat(np.arange(n), totals)
    step = np.searchsorted(np.cumsum(profile), rng.random(len(facing)) * profile.sum(), side="right")
    step = np.minimum(step, steps - 1)
    return np.bincount(step * n + facing, minlength=steps * n).reshape(steps, n).astype(np.int32)

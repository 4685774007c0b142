"""Statistical sanity of the store model: rates, tails, seasonality, promotions, out-of-stocks."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import numpy as np
import pytest

from firmware_sim import Scenario, StoreSim
from firmware_sim.catalog import build_catalog
from firmware_sim.demand import day_factor, intraday_profile, promo_mask
from gondola.clock import DAY_MS, HOUR_MS

START = 1_767_571_200_000  # Monday


def ample() -> Scenario:
    """A store that never runs out: sales equal demand."""
    sc = Scenario.default()
    repl = dataclasses.replace(
        sc.replenishment, shelf_cover_days=30.0, capacity_bounds=(10, 5000), restock_threshold=0.99,
        restock_skip_prob=0.0, partial_prob=0.0, order_cover_days=30.0, order_miss_prob=0.0,
        supplier_short_prob=0.0, shrink_prob=0.0, misplaced_prob=0.0)
    return dataclasses.replace(sc, replenishment=repl)


def simulate(scenario: Scenario, days: int, skus: int = 300, store: str = "s001", seed: int = 3) -> StoreSim:
    sim = StoreSim(store, skus, seed, START, scenario, sensor_share=0.0, track_keys=False)
    sim.advance(START + days * DAY_MS - 1)
    return sim


@pytest.fixture(scope="module")
def ample_fortnight():
    return simulate(ample(), 14)


def expected_units(sim: StoreSim, days: int) -> float:
    total = 0.0
    for d in range(days):
        day = START + d * DAY_MS
        lift = np.where(promo_mask(sim.scenario.demand, sim.seed, len(sim.catalog), day), sim.scenario.demand.promo_lift, 1)
        total += day_factor(sim.scenario.demand, sim.seed, sim.store_id, day) * float((sim.plan.rate * lift).sum())
    return total


def test_catalog_popularity_has_the_configured_mean_and_a_heavy_tail():
    params = Scenario.default().demand
    cat = build_catalog(1, 4000, params)
    assert cat.popularity.mean() == pytest.approx(params.mean_units_per_sku_day, rel=0.1)
    top = np.sort(cat.popularity)[::-1]
    assert top[: len(top) // 5].sum() / top.sum() > 0.55, "the top 20% of SKUs sell most units"
    assert np.median(cat.popularity) < 0.7 * cat.popularity.mean(), "many slow movers"


def test_mean_sales_match_the_configured_rates_when_shelves_never_run_empty(ample_fortnight):
    sim = ample_fortnight
    d = sim.truth.daily()
    assert d["lost"].sum() == 0 and sim.truth.oos_rate() == 0
    assert d["sold"].sum() == pytest.approx(expected_units(sim, 14), rel=0.03)


def test_weekly_seasonality_saturday_sells_far_more_than_sunday(ample_fortnight):
    d = ample_fortnight.truth.daily()
    weekday = np.array([datetime.fromtimestamp(t / 1000, tz=timezone.utc).weekday() for t in d["day_ms"]])
    sat, sun, tue = (d["sold"][weekday == k].sum() for k in (5, 6, 1))
    assert sat / sun > 1.4
    assert sat / tue > 1.25


def test_intraday_seasonality_evening_peak_and_no_demand_at_night():
    params = Scenario.default().demand
    profile = intraday_profile(params, 5 * 60_000)
    per_hour = profile.reshape(24, 12).sum(axis=1)
    assert per_hour[:7].sum() == 0 and per_hour[22:].sum() == 0
    assert per_hour[17] > 1.3 * per_hour[8] and per_hour[12] > per_hour[10]
    assert per_hour.sum() == pytest.approx(1.0)


def test_pos_sales_follow_the_intraday_profile():
    sim = StoreSim("s001", 300, 3, START, ample(), sensor_share=0.0)
    msgs = sim.run_until(START + 7 * DAY_MS - 1)
    hours = np.array([(m.ts % DAY_MS) // HOUR_MS for m in msgs if m.etype == "pos.line"])
    counts = np.bincount(hours, minlength=24)
    assert counts[:7].sum() == 0 and counts[22:].sum() == 0
    assert counts[17] > 1.3 * counts[8]


def test_promotions_lift_demand_of_the_promoted_skus(ample_fortnight):
    sim = ample_fortnight
    d = sim.truth.daily()
    sku = sim.plan.sku_index[d["facing"]]
    on_promo = np.zeros(len(sku), dtype=bool)
    for day in np.unique(d["day_ms"]):
        mask = d["day_ms"] == day
        on_promo[mask] = promo_mask(sim.scenario.demand, sim.seed, len(sim.catalog), int(day))[sku[mask]]
    rate = sim.plan.rate[sku] / np.bincount(sim.plan.sku_index)[sku]
    lift = (d["demand"][on_promo].sum() / rate[on_promo].sum()) / (d["demand"][~on_promo].sum() / rate[~on_promo].sum())
    assert on_promo.any()
    assert 1.8 < lift < 3.3


def test_the_store_is_closed_on_a_holiday():
    sc = Scenario.default()
    sc = dataclasses.replace(sc, demand=dataclasses.replace(sc.demand, holidays=("2026-01-06",)))
    sim = StoreSim("s001", 100, 3, START, sc, sensor_share=0.0)
    msgs = sim.run_until(START + 3 * DAY_MS - 1)
    days = {(m.ts - START) // DAY_MS for m in msgs if m.etype == "pos.line"}
    assert days == {0, 2}


def test_default_out_of_stock_rate_is_near_the_published_retail_average():
    rates = [simulate(Scenario.default(), 14, store=f"s{k:03d}").truth.oos_rate() for k in range(1, 5)]
    assert 0.05 < float(np.mean(rates)) < 0.12, rates


def test_better_shelf_handling_lowers_the_out_of_stock_rate():
    sc = Scenario.default()
    careful = dataclasses.replace(sc, replenishment=dataclasses.replace(
        sc.replenishment, restock_skip_prob=0.0, restock_delay_mean_min=5.0, restock_threshold=0.9,
        partial_prob=0.0, order_miss_prob=0.0, order_cover_days=6.0, shrink_prob=0.0))
    base = simulate(sc, 7, store="s009").truth.oos_rate()
    better = simulate(careful, 7, store="s009").truth.oos_rate()
    assert better < 0.5 * base


def test_lost_sales_follow_the_shopper_responses_to_an_empty_shelf():
    sim = simulate(Scenario.default(), 7, store="s002")
    d = sim.truth.daily()
    unmet = d["lost"].sum() + d["switched_out"].sum()
    assert d["lost"].sum() > 0
    # 45% switch brand or size when a substitute has stock; the rest are lost to the store.
    assert 0.2 < d["switched_out"].sum() / unmet < 0.6


def test_stockouts_are_caused_by_shelf_handling_ordering_and_phantom_inventory():
    from firmware_sim.truth import STOCKOUT_CAUSES

    sim = simulate(Scenario.default(), 7, skus=500, store="s003")
    hours = dict.fromkeys(STOCKOUT_CAUSES, 0.0)
    for *_, start, end, cause in sim.truth.stockouts_with_cause:
        hours[cause] += ((end or sim.now_ms) - start) / HOUR_MS
    total = sum(hours.values())
    assert hours["shelf_handling"] / total > 0.1
    assert hours["backroom_empty"] / total > 0.2
    assert hours["phantom_inventory"] / total > 0.05
    table = sim.truth.to_tables()["stockouts"]
    assert set(table.column("cause").to_pylist()) <= set(STOCKOUT_CAUSES)

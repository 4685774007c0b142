"""Online facing features: rates, profiles, restock rounds, promotions, encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from models.features import FEATURES, FacingState, encode_for_model, feature_matrix

T0 = 1_764_547_200_000  # 2025-12-01 00:00 UTC, a Monday
F = {name: i for i, name in enumerate(FEATURES)}


def steady_sales(state: FacingState, start: int, hours: float, per_hour: int, price: int = 199) -> int:
    """Feed ``per_hour`` single-unit sales per hour, evenly spaced; returns the last instant."""
    step = HOUR_MS // per_hour
    t = start
    for _ in range(int(hours * per_hour)):
        t += step
        state.on_sale(t, 1, price)
    return t


def test_feature_vector_has_one_value_per_named_feature_and_names_are_unique():
    state = FacingState("f1", "sku1", capacity=10)
    assert len(state.features(T0)) == len(FEATURES)
    assert len(set(FEATURES)) == len(FEATURES)


def test_decayed_rates_converge_to_a_steady_sales_rate_without_warm_up_bias():
    state = FacingState("f1", "sku1", capacity=100, started_ms=T0)
    t = steady_sales(state, T0, hours=6, per_hour=4)
    x = state.features(t)
    # Every time constant, even the week-long one, reports about 4 units/h after 6 hours.
    for name in ("rate_1h", "rate_4h", "rate_24h", "rate_168h"):
        assert x[F[name]] == pytest.approx(4.0, rel=0.2), name


def test_rates_decay_during_silence_and_short_rates_decay_faster():
    state = FacingState("f1", "sku1", capacity=100, started_ms=T0)
    t = steady_sales(state, T0, hours=24, per_hour=2)
    later = state.features(t + 3 * HOUR_MS)
    assert later[F["rate_1h"]] < 0.2 < later[F["rate_24h"]]
    assert later[F["hours_since_sale"]] == pytest.approx(3.0)


def test_units_follow_restock_minus_sales_and_sensor_readings_replace_the_estimate():
    state = FacingState("f1", "sku1", capacity=12)
    state.on_restock(T0 + HOUR_MS, 10)  # units before unknown: a round fills a facing up
    state.on_sale(T0 + 2 * HOUR_MS, 3)
    assert state.features(T0 + 2 * HOUR_MS)[F["units_est"]] == 9
    state.on_sale(T0 + 2 * HOUR_MS, 9)
    state.on_restock(T0 + 2 * HOUR_MS, 10)  # now known: restock minus sales
    state.on_sale(T0 + 2 * HOUR_MS, 3)
    assert state.features(T0 + 2 * HOUR_MS)[F["units_est"]] == 7
    state.on_reading(T0 + 3 * HOUR_MS, 5, battery_pct=80)
    state.on_sale(T0 + 4 * HOUR_MS, 1)
    x = state.features(T0 + 4 * HOUR_MS)
    assert x[F["units_est"]] == 4
    assert x[F["has_sensor"]] == 1.0
    assert x[F["sales_since_reading"]] == 1
    assert x[F["hours_since_reading"]] == pytest.approx(1.0)
    assert x[F["battery_pct"]] == 80
    # Never below zero, and a restock never overfills the planogram capacity.
    state.on_sale(T0 + 5 * HOUR_MS, 10)
    assert state.features(T0 + 5 * HOUR_MS)[F["units_est"]] == 0
    state.on_restock(T0 + 6 * HOUR_MS, 50)
    assert state.features(T0 + 6 * HOUR_MS)[F["units_est"]] == 12


def test_expected_demand_follows_the_learnt_hour_of_day_profile():
    state = FacingState("f1", "sku1", capacity=100, started_ms=T0)
    # Seven days where every sale happens between 17:00 and 19:00.
    for d in range(7):
        steady_sales(state, T0 + d * DAY_MS + 17 * HOUR_MS, hours=2, per_hour=6)
    morning = state.features(T0 + 7 * DAY_MS + 9 * HOUR_MS)
    evening = state.features(T0 + 7 * DAY_MS + 17 * HOUR_MS)
    assert morning[F["demand_next_2h"]] < 0.5
    # About 12 units a day (the weekly rate still counts today's quiet hours), all of them in
    # the next two hours.
    assert evening[F["demand_next_2h"]] == pytest.approx(12.0, rel=0.25)


def test_zero_sales_evidence_ignores_hours_when_nobody_buys():
    state = FacingState("f1", "sku1", capacity=100, started_ms=T0)
    for d in range(7):
        steady_sales(state, T0 + d * DAY_MS + 8 * HOUR_MS, hours=12, per_hour=2)
    last_sale = state.last_sale_ms
    # Overnight silence: expected sales since the last sale stay near zero ...
    night = state.features(last_sale + 6 * HOUR_MS)
    assert night[F["demand_since_sale"]] < 1.5
    # ... while three silent shopping hours are strong evidence.
    day = state.features(T0 + 7 * DAY_MS + 11 * HOUR_MS)
    assert day[F["demand_since_sale"]] > 4.0


def test_next_restock_round_is_learnt_from_restock_times():
    state = FacingState("f1", "sku1", capacity=10, started_ms=T0)
    for d in range(5):
        state.on_restock(T0 + d * DAY_MS + 13 * HOUR_MS + 5 * MINUTE_MS, 5)
    assert state.features(T0 + 5 * DAY_MS + 10 * HOUR_MS)[F["hours_to_restock"]] == pytest.approx(3.0)
    assert FacingState("f2", "s", 10).features(T0)[F["hours_to_restock"]] == 24.0


def test_promotion_price_shows_as_a_price_ratio_below_one():
    state = FacingState("f1", "sku1", capacity=100, started_ms=T0)
    t = steady_sales(state, T0, hours=20, per_hour=5, price=200)
    assert state.features(t)[F["price_ratio"]] == pytest.approx(1.0)
    state.on_sale(t + MINUTE_MS, 1, 160)
    assert state.features(t + MINUTE_MS)[F["price_ratio"]] == pytest.approx(0.8, abs=0.01)


def test_calendar_features_encode_hour_and_weekday():
    x = FacingState("f1", "s", 10).features(T0 + 6 * HOUR_MS)  # Monday 06:00
    assert x[F["hour_sin"]] == pytest.approx(1.0)
    assert x[F["dow_sin"]] == pytest.approx(0.0, abs=1e-9) and x[F["dow_cos"]] == pytest.approx(1.0)


def test_feature_matrix_stacks_states_in_order_as_float32():
    a, b = FacingState("a", "s", 10), FacingState("b", "t", 20)
    m = feature_matrix([a, b], T0)
    assert m.dtype == np.float32 and m.shape == (2, len(FEATURES))
    assert m[1, F["capacity"]] == 20
    assert feature_matrix([], T0).shape == (0, len(FEATURES))


def test_model_encoding_keeps_every_input_in_a_small_common_range():
    state = FacingState("f1", "sku1", capacity=60, started_ms=T0)
    steady_sales(state, T0, hours=10, per_hour=30)
    raw = feature_matrix([state, FacingState("g", "s", 4)], T0 + 10 * HOUR_MS)
    enc = encode_for_model(raw)
    # 720 units a day is the busiest facing a store has: still under 8 after encoding.
    assert enc.min() >= -1.0 and enc.max() <= 8.0
    # log1p keeps 0, 1 and 2 units well apart.
    assert encode_for_model(np.eye(1, len(FEATURES), 0, dtype=np.float32))[0, 0] == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        encode_for_model(np.zeros((2, 3)))


def test_a_slow_mover_is_many_int8_steps_from_a_dead_facing_in_the_v2_encoding():
    # Issue 11: in v1 a rate of one unit a day was about one quantization step of the input
    # range; v2 encodes rates per day, so it is at least ten steps from no sales at all.
    raw = np.zeros((2, len(FEATURES)), dtype=np.float32)
    raw[0, F["rate_168h"]] = 1.0 / 24  # one unit a day, in units per hour
    step = 9.0 / 255  # int8 step of a [-1, 8] input range
    v1 = encode_for_model(raw, "log1p-v1")
    v2 = encode_for_model(raw, "log1p-v2")
    assert (v1[0] - v1[1])[F["rate_168h"]] < 2 * step
    assert (v2[0] - v2[1])[F["rate_168h"]] > 10 * step
    with pytest.raises(ValueError):
        encode_for_model(raw, "log1p-v9")


def _reading_series(state: FacingState, start: int, values: list[int], every_min: int, sales_between: int) -> int:
    """Readings ``values`` every ``every_min``, with ``sales_between`` POS units sold before each."""
    t = start
    for v in values:
        for k in range(sales_between):
            state.on_sale(t + (k + 1) * MINUTE_MS, 1, 199)
        t += every_min * MINUTE_MS
        state.on_reading(t, v, 80.0)
    return t


def test_a_sensor_that_follows_the_till_stays_trusted_and_a_stuck_one_is_scored_on_pos_evidence():
    good = FacingState("g", "s", capacity=20, has_sensor=True)
    good.on_restock(T0, 20)
    t = _reading_series(good, T0, [18, 16, 14, 12, 10], every_min=60, sales_between=2)
    assert not good.sensor_untrusted and feature_matrix([good], t)[0, F["has_sensor"]] == 1.0
    stuck = FacingState("s", "s", capacity=20, has_sensor=True)
    stuck.on_restock(T0, 20)
    _reading_series(stuck, T0, [18], every_min=60, sales_between=2)
    # The load cell freezes at 18 while the till keeps selling 2 an hour.
    t = _reading_series(stuck, T0 + HOUR_MS, [18, 18, 18], every_min=60, sales_between=2)
    assert stuck.sensor_untrusted
    x = feature_matrix([stuck], t)[0]
    # Scored as a facing without a sensor, on the last trusted reading minus POS sales since.
    assert x[F["has_sensor"]] == 0.0 and x[F["units_est"]] == 12.0 and x[F["hours_since_reading"]] == 168.0


def test_a_drifting_load_cell_is_not_believed_and_a_silent_one_while_the_till_sells_neither():
    drift = FacingState("d", "s", capacity=20, has_sensor=True)
    drift.on_restock(T0, 10)
    # No sales, yet the reading climbs a unit every half hour.
    t = _reading_series(drift, T0, [10, 11, 12, 13, 14, 15], every_min=30, sales_between=0)
    assert drift.sensor_untrusted
    # Units vanishing without a sale (theft, shrink, a late POS line) are real: still believed.
    thief = FacingState("t", "s", capacity=20, has_sensor=True)
    thief.on_restock(T0, 10)
    _reading_series(thief, T0, [10, 7, 4, 0], every_min=30, sales_between=0)
    assert not thief.sensor_untrusted
    silent = FacingState("q", "s", capacity=20, has_sensor=True)
    silent.on_restock(T0, 10)
    t = _reading_series(silent, T0, [10], every_min=10, sales_between=0)
    for k in range(4):
        silent.on_sale(t + (k + 1) * 20 * MINUTE_MS, 1, 199)
    assert feature_matrix([silent], t + 25 * MINUTE_MS)[0, F["has_sensor"]] == 1.0  # one unit sold: fine
    # A load cell reports every change: 3 units sold and no reading for half an hour after.
    assert feature_matrix([silent], t + HOUR_MS)[0, F["has_sensor"]] == 0.0
    assert feature_matrix([silent], t + 3 * HOUR_MS)[0, F["has_sensor"]] == 0.0


def test_a_stuck_sensor_repeating_its_value_while_the_till_sells_is_untrusted_within_three_sales():
    """The cloud's sensor_stuck rule, ported: heartbeats repeat a frozen value while the till
    sells; a healthy sensor reports each sale's drop (even paid after the pick: its drop
    explains the sale) and is never flagged."""
    from models.features import STUCK_UNITS, sensor_untrusted

    stuck = FacingState("s", "k", capacity=20, has_sensor=True)
    healthy = FacingState("h", "k2", capacity=20, has_sensor=True)
    for st in (stuck, healthy):
        st.on_reading(T0, 12, 80.0)
    flagged_after = None
    for k in range(1, 7):
        t = T0 + k * 20 * MINUTE_MS
        healthy.on_reading(t - MINUTE_MS, 12 - k, 80.0)  # picked, then paid
        for st in (stuck, healthy):
            st.on_sale(t, 1, 199)
        stuck.on_reading(t + MINUTE_MS, 12, 80.0)  # a heartbeat of the frozen value
        if flagged_after is None and stuck.sensor_untrusted:
            flagged_after = k
        assert not healthy.sensor_untrusted
        assert not sensor_untrusted([healthy], t + 30 * MINUTE_MS)[0]
    assert flagged_after == STUCK_UNITS
    x = feature_matrix([stuck], t + MINUTE_MS)[0]
    assert x[F["has_sensor"]] == 0.0 and x[F["units_est"]] == 6.0  # on POS evidence: 12 - 6 sold
    stuck.on_reading(t + HOUR_MS, 5, 80.0)  # the value moves again: believed
    assert not stuck.sensor_untrusted


def test_a_store_whose_whole_sensor_fleet_goes_silent_while_the_till_sells_is_not_believed():
    from models.replay import Facing, StoreFeatures

    store = StoreFeatures("s1", [Facing(f"f{i}", f"k{i}", 10, True) for i in range(6)])
    for i in range(6):
        store.apply({"type": "shelf.reading", "ts": T0, "data": {"facing_id": f"f{i}", "units_est": 8}})
    store.apply({"type": "pos.line", "ts": T0 + 10 * MINUTE_MS, "data": {"sku": "k0", "qty": 1}})
    store.matrix(T0 + 20 * MINUTE_MS)
    assert not store.untrusted(T0 + 20 * MINUTE_MS).any()
    x = store.matrix(T0 + 40 * MINUTE_MS)  # 40 min without any reading, the till sold meanwhile
    assert store.untrusted(T0 + 40 * MINUTE_MS).all() and (x[:, F["has_sensor"]] == 0).all()
    store.apply({"type": "shelf.reading", "ts": T0 + 45 * MINUTE_MS, "data": {"facing_id": "f3", "units_est": 8}})
    store.matrix(T0 + 45 * MINUTE_MS)
    assert not store.untrusted(T0 + 45 * MINUTE_MS).any()


def test_the_trust_mask_a_matrix_used_is_reused_at_its_instant_and_never_served_stale():
    from models.features import sensor_untrusted_from
    from models.replay import Facing, StoreFeatures

    store = StoreFeatures("s1", [Facing(f"f{i}", f"k{i}", 10, True) for i in range(6)])
    for i in range(6):
        store.apply({"type": "shelf.reading", "ts": T0, "data": {"facing_id": f"f{i}", "units_est": 8}})
    store.apply({"type": "pos.line", "ts": T0 + 10 * MINUTE_MS, "data": {"sku": "k0", "qty": 1}})
    t = T0 + 40 * MINUTE_MS  # the fleet is silent while the till sells: every sensor doubted
    x = store.matrix(t)
    u = store.untrusted(t)
    assert u.all() and (x[:, F["has_sensor"]] == 0).all()
    assert u is store.untrusted(t)  # the mask the matrix used, not computed again
    # At another instant, or once a new event is read, it is computed from the state.
    assert not store.untrusted(T0 + 20 * MINUTE_MS).any()
    # A reading arrives after the matrix: asked again at the same instant, with no new matrix,
    # the mask is the facings' current one (the fleet spoke: nothing doubted), not the cached.
    store.apply({"type": "shelf.reading", "ts": t, "data": {"facing_id": "f3", "units_est": 8}})
    got = store.untrusted(t)
    fresh = sensor_untrusted_from(store.cache.refresh(), t)
    assert not fresh.any() and np.array_equal(got, fresh)
    store.matrix(t)
    assert np.array_equal(store.untrusted(t), fresh)


def test_a_facing_first_seen_at_a_restock_is_taken_as_full_and_returns_do_not_refill_the_shelf():
    # Units before the first restock are unknown; a round refills a low facing to capacity. An
    # estimate started from 0 stayed too low until the shelf truly emptied and read "empty"
    # while the till kept selling (issue 11: false empty_now alerts on facings without a sensor).
    state = FacingState("f1", "sku1", capacity=8)
    state.on_restock(T0, 3)
    assert state.features(T0)[F["units_est"]] == 8
    state.on_sale(T0 + HOUR_MS, 8)
    state.on_sale(T0 + 2 * HOUR_MS, -1, returned=True)  # a customer return goes to the backroom
    x = state.features(T0 + 2 * HOUR_MS)
    assert x[F["units_est"]] == 0
    assert x[F["rate_24h"]] == pytest.approx(state.rates_at(T0 + 2 * HOUR_MS)[2]) and x[F["rate_24h"]] > 0
    state.on_sale(T0 + 3 * HOUR_MS, -1)  # a void: the scanned unit never left the shelf
    assert state.features(T0 + 3 * HOUR_MS)[F["units_est"]] == 1


def test_sales_of_a_sku_go_to_its_facings_with_stock_and_the_sku_total_is_a_feature():
    from models.features import sale_shares
    from models.replay import Facing, StoreFeatures

    store = StoreFeatures("s1", [Facing("a", "k1", 6), Facing("b", "k1", 6), Facing("c", "k2", 6)])
    store.apply({"type": "shelf.restock", "ts": T0, "data": {"facing_id": "a", "units_added": 6}})
    store.apply({"type": "shelf.restock", "ts": T0, "data": {"facing_id": "b", "units_added": 6}})
    store.apply({"type": "shelf.restock", "ts": T0, "data": {"facing_id": "c", "units_added": 6}})
    store.apply({"type": "pos.line", "ts": T0 + HOUR_MS, "data": {"sku": "k1", "qty": 12, "price_cents": 99}})
    x = store.matrix(T0 + HOUR_MS)
    assert list(x[:, F["sku_facings"]]) == [2, 2, 1]
    assert list(x[:, F["units_est"]]) == [0, 0, 6] and list(x[:, F["sku_units_est"]]) == [0, 0, 6]
    store.apply({"type": "shelf.restock", "ts": T0 + 2 * HOUR_MS, "data": {"facing_id": "a", "units_added": 4}})
    # "b" is empty by the estimate: the SKU's next sales come from "a", where shoppers find it.
    assert sale_shares([store.states["a"], store.states["b"]], 2.0) == [2.0, 0.0]
    store.apply({"type": "pos.line", "ts": T0 + 3 * HOUR_MS, "data": {"sku": "k1", "qty": 3, "price_cents": 99}})
    x = store.matrix(T0 + 3 * HOUR_MS)
    assert list(x[:, F["units_est"]]) == [1, 0, 6] and list(x[:, F["sku_units_est"]]) == [1, 1, 6]
    # Silence is this facing's, not the SKU's: "b" sold nothing since it ran out.
    assert x[0, F["hours_since_sale"]] == 0 and x[1, F["hours_since_sale"]] == pytest.approx(2.0)


def test_a_reading_of_zero_the_till_does_not_explain_is_doubted_until_sales_explain_it():
    from models.scoring import empty_now_prob

    state = FacingState("f1", "sku1", capacity=6)
    state.on_reading(T0, 3, battery_pct=90)
    state.on_sale(T0 + HOUR_MS, 1)
    state.on_reading(T0 + HOUR_MS, 0, battery_pct=90)  # 3 - 1 sold = 2 expected: 2 units unexplained
    x = state.features(T0 + HOUR_MS)
    assert x[F["units_unexplained"]] == 2
    # Believed, "0" alone would say empty; doubted, the till's silence decides (none yet).
    assert empty_now_prob(np.array([x]))[0] < 0.5
    state.on_reading(T0 + 2 * HOUR_MS, 0, battery_pct=90)  # a heartbeat repeating 0: still doubted
    assert state.features(T0 + 2 * HOUR_MS)[F["units_unexplained"]] == 2
    state.on_sale(T0 + 3 * HOUR_MS, 2)  # the two units were there and sold: the shelf is now empty
    state.on_reading(T0 + 3 * HOUR_MS, 0, battery_pct=90)
    x = state.features(T0 + 3 * HOUR_MS)
    assert x[F["units_unexplained"]] == 0 and empty_now_prob(np.array([x]))[0] == 1.0
    # A drop the till explains is believed at once.
    other = FacingState("f2", "sku2", capacity=6)
    other.on_reading(T0, 2, battery_pct=90)
    other.on_sale(T0 + HOUR_MS, 2)
    other.on_reading(T0 + HOUR_MS, 0, battery_pct=90)
    assert empty_now_prob(np.array([other.features(T0 + HOUR_MS)]))[0] == 1.0


def test_a_noisy_sensors_lone_zero_on_a_stocked_shelf_is_not_empty_now_but_a_quiet_sensors_zero_is():
    from models.features import NOISE_TOL
    from models.replay import Facing, StoreFeatures
    from models.scoring import EMPTY_NOW_THRESHOLD, empty_now_prob

    store = StoreFeatures("s1", [Facing("quiet", "k1", 6, True), Facing("noisy", "k2", 6, True)])
    # Hourly heartbeats of two shelves, nothing sold or restocked in between: the quiet load cell
    # repeats 3, the noisy one's readings move by a unit at 8 of 11 heartbeats.
    for i, units in enumerate([3, 2, 3, 3, 4, 3, 2, 3, 3, 3, 2, 3]):
        store.apply({"type": "shelf.reading", "ts": T0 + i * HOUR_MS, "data": {"facing_id": "quiet", "units_est": 3}})
        store.apply({"type": "shelf.reading", "ts": T0 + i * HOUR_MS, "data": {"facing_id": "noisy", "units_est": units}})
    assert store.states["quiet"].reading_noise == 0.0
    assert store.states["noisy"].reading_noise == pytest.approx(8 / 11)
    # Both read 3, the till sells 3 of each, and both then read 0: the till explains both drops.
    # The quiet 0 is believed. The noisy cell's 3 may have been 4 and its 0 a unit read low: its
    # 0 is weighed like a facing without a sensor, and the till sold a moment ago (no empty_now;
    # the old rule believed it as well).
    t = T0 + 12 * HOUR_MS
    store.apply({"type": "shelf.reading", "ts": t, "data": {"facing_id": "noisy", "units_est": 3}})
    for sku in ("k1", "k2"):
        store.apply({"type": "pos.line", "ts": t + 60_000, "data": {"sku": sku, "qty": 3, "price_cents": 99}})
    for facing in ("quiet", "noisy"):
        store.apply({"type": "shelf.reading", "ts": t + 120_000, "data": {"facing_id": facing, "units_est": 0}})
    x = store.matrix(t + 120_000)
    assert list(x[:, F["units_est"]]) == [0, 0] and list(x[:, F["units_unexplained"]]) == [0, 0]
    assert x[0, F["reading_noise"]] == 0.0 and x[1, F["reading_noise"]] > NOISE_TOL
    now = empty_now_prob(x)
    assert now[0] == 1.0 and now[1] < EMPTY_NOW_THRESHOLD  # the detector's threshold without a model


def _weighed(state: FacingState, t: int, grams: float, unit_g: float = 200.0) -> None:
    """A reading as the load cell sends it: its grams and the units the device rounds from them."""
    state.on_reading(t, float(np.rint(max(grams, 0.0) / unit_g)), 80.0, grams)


def test_a_load_cell_drifting_below_an_empty_shelf_is_not_believed_though_its_units_read_a_plain_zero():
    """A reading carries the load cell's grams beside the rounded units: a cell drifting down
    past an empty shelf reads 0 units (believable) but weighs less than nothing; a healthy
    noisy cell at 0 scatters around 0 grams and stays believed."""
    from models.features import BELOW_EMPTY_UNITS

    drifting = FacingState("d", "k", capacity=10, has_sensor=True)
    healthy = FacingState("h", "k2", capacity=10, has_sensor=True)
    noise = [35.0, -60.0, 80.0, -95.0, 10.0, -70.0]  # about 0.4 unit weights, as a degraded cell
    for st in (drifting, healthy):
        st.on_restock(T0, 3)
        for k, g in enumerate((600.0, 400.0, 200.0)):  # the till sells the last three units
            t = T0 + (k + 1) * 20 * MINUTE_MS
            st.on_sale(t - MINUTE_MS, 1, 199)
            _weighed(st, t, g + noise[k])
    t0 = T0 + 2 * HOUR_MS
    st_flagged = None
    for k in range(1, 25):  # every 5 min, the till silent; the cell drifts 1.2 unit weights an hour
        t = t0 + k * 5 * MINUTE_MS
        _weighed(healthy, t, noise[k % len(noise)])
        _weighed(drifting, t, -20.0 * k + noise[k % len(noise)] / 4)
        assert drifting.units == 0.0 and not healthy.sensor_untrusted
        if st_flagged is None and drifting.sensor_untrusted:
            st_flagged = k
    # untrusted once the weight is a unit weight under empty, from the unit weight it learnt
    assert st_flagged is not None and -20.0 * st_flagged + noise[st_flagged % len(noise)] / 4 < -BELOW_EMPTY_UNITS * 200.0
    assert st_flagged >= 9  # not before: -180 g is within a unit weight of empty
    assert feature_matrix([drifting], t)[0, F["has_sensor"]] == 0.0 and feature_matrix([healthy], t)[0, F["has_sensor"]] == 1.0
    _weighed(drifting, t + 5 * MINUTE_MS, 12.0)  # recalibrated: believed again
    assert not drifting.sensor_untrusted
    # A reading without its grams (an older device, a flattened row without the column) says nothing.
    drifting.on_reading(t + 10 * MINUTE_MS, 0, 80.0)
    assert not drifting.sensor_untrusted


def test_a_load_cell_whose_zero_crept_is_re_zeroed_at_refills_and_its_zero_over_the_last_unit_is_not_empty_now():
    """A cell whose zero crept 0.7 unit weights down reads 0 over the shelf's last unit (a false
    "empty now" before): ``CREEP_REFILLS`` (4) refills to capacity all read 1 short, so its
    readings are corrected by 1 unit (a 0 from its grams), and the shelf reads empty when it is.
    A healthy cell, and a crept one before its fourth refill, are read as they are."""
    from models.scoring import empty_now_prob, empty_now_ready

    def cell(st: FacingState, t: int, true_units: int, offset_g: float) -> None:
        _weighed(st, t, true_units * 200.0 + offset_g)

    def now(st: FacingState, t: int) -> float:
        x = feature_matrix([st], t)
        return float(empty_now_prob(x)[0]) if empty_now_ready(x)[0] else 0.0

    crept, healthy, once = (FacingState(n, n, capacity=10, has_sensor=True) for n in ("c", "h", "o"))
    for st, offset, refills in ((crept, -140.0, 4), (healthy, 0.0, 4), (once, -140.0, 3)):
        t = T0
        cell(st, t, 4, offset)
        for _ in range(refills):  # a round fills the facing to capacity; the cell is read at once
            t += 4 * HOUR_MS
            st.on_restock(t, 6)
            cell(st, t + MINUTE_MS, 10, offset)
            for units in range(9, 3, -1):  # the till sells it down to 4 again
                t += 20 * MINUTE_MS
                st.on_sale(t, 1, 199)
                cell(st, t + MINUTE_MS, units, offset)
        for units in (3, 2, 1):
            t += 20 * MINUTE_MS
            st.on_sale(t, 1, 199)
            cell(st, t + MINUTE_MS, units, offset)
        t += 2 * MINUTE_MS
        # one unit left on the shelf: the crept cell's device rounds 60 g to 0 units
        if st is once:
            assert st.units == 0.0 and now(st, t) == 1.0 and st.zero_creep == 0.0  # no evidence yet
            continue
        assert st.units == 1.0 and not st.sensor_untrusted and now(st, t) == 0.0
        assert st.zero_creep == (1.0 if st is crept else 0.0)
        st.on_sale(t + 10 * MINUTE_MS, 1, 199)  # the last unit sold: the crept cell's units stay 0, no reading
        if st is healthy:
            cell(st, t + 11 * MINUTE_MS, 0, offset)
        else:  # its heartbeat: -140 g, a plain 0 from the device, 0 units once re-zeroed
            assert now(st, t + 11 * MINUTE_MS) == 0.0  # a 0 the sensor never read (empty_now_ready)
            cell(st, t + 3 * HOUR_MS, 0, offset)
        assert st.units == 0.0 and not st.sensor_untrusted and now(st, t + 3 * HOUR_MS) == 1.0


def test_the_replay_passes_a_readings_grams_to_the_facing_from_an_event_and_a_silver_row():
    from models.replay import Facing, StoreFeatures

    store = StoreFeatures("s1", [Facing("f0", "k0", 10, True), Facing("f1", "k1", 10, True)])
    for k, g in enumerate((400.0, 210.0, -150.0, -260.0)):
        t = T0 + k * 10 * MINUTE_MS
        units = float(np.rint(max(g, 0.0) / 200.0))
        store.apply({"type": "shelf.reading", "ts": t, "data": {"facing_id": "f0", "units_est": units, "weight_g": g}})
        store.apply({"type": "shelf.reading", "ts": t, "facing_id": "f1", "units_est": units, "weight_g": g})
    assert store.states["f0"].sensor_untrusted and store.states["f1"].sensor_untrusted


def test_a_sensor_distrusted_after_drifting_down_is_scored_on_the_tills_account_not_on_its_own_low_readings():
    """A load cell drifting down reads fewer units while the till sells nothing; when it is
    finally not believed (here: weighing more than a unit weight under empty), its facing is
    scored on the POS estimate. That estimate must not start from the drifting readings (they
    fell further than the till explains): it is the last reading the till agreed with, minus
    the sales since. Before, it was anchored on the last low reading: a POS zero the model
    trusts on a shelf that holds 4 units."""
    st = FacingState("d", "k", capacity=10, has_sensor=True)
    st.on_restock(T0, 6)
    _weighed(st, T0 + MINUTE_MS, 1200.0)        # 6 units, the till agrees
    st.on_sale(T0 + 10 * MINUTE_MS, 2, 199)
    _weighed(st, T0 + 11 * MINUTE_MS, 800.0)    # 4 units: the sales explain the drop
    assert st.pos_units == 4.0
    t = T0 + 11 * MINUTE_MS
    for g in (600.0, 400.0, 190.0, -40.0):       # the cell drifts down, the till silent
        t += 30 * MINUTE_MS
        _weighed(st, t, g)
        assert not st.sensor_untrusted and st.pos_units == 4.0
    assert st.units == 0.0
    t += 30 * MINUTE_MS
    _weighed(st, t, -260.0)                      # over a unit weight under empty: not believed
    assert st.sensor_untrusted
    x = feature_matrix([st], t)
    assert x[0, F["has_sensor"]] == 0.0 and x[0, F["units_est"]] == 4.0
    st.on_sale(t + MINUTE_MS, 1, 199)             # the till's account goes on from there
    assert feature_matrix([st], t + MINUTE_MS)[0, F["units_est"]] == 3.0
    # A reading the sales explain, or a rise, anchors as before.
    ok = FacingState("o", "k", capacity=10, has_sensor=True)
    ok.on_restock(T0, 5)
    _weighed(ok, T0 + MINUTE_MS, 1000.0)
    ok.on_sale(T0 + 2 * MINUTE_MS, 3, 199)
    _weighed(ok, T0 + 3 * MINUTE_MS, 400.0)      # 2 units: exactly what the till left
    _weighed(ok, T0 + 4 * MINUTE_MS, 600.0)      # 3 units: a unit put back, unscanned
    assert ok.pos_units == 3.0


def test_a_sale_the_load_cell_already_saw_lowers_no_facing_again_and_a_guess_goes_back_when_a_reading_explains_it():
    # Issue 11: a POS line of a SKU with a sensored facing "a" and a facing "b" without one was
    # split over both, so "a" was debited a pick its load cell had already reported and "b" lost
    # units nobody took from it (26 % / 82 % of such rows wrong on the training stores).
    from models.replay import Facing, StoreFeatures

    store = StoreFeatures("s1", [Facing("a", "k1", 6, True), Facing("b", "k1", 6)])
    for fid in ("a", "b"):
        store.apply({"type": "shelf.restock", "ts": T0, "data": {"facing_id": fid, "units_added": 6}})
    store.apply({"type": "shelf.reading", "ts": T0 + 60_000, "data": {"facing_id": "a", "units_est": 6, "battery_pct": 90}})

    def units(t):
        return list(store.matrix(t)[:, F["units_est"]])

    def sale(t, qty=1, kind="sale"):
        store.apply({"type": "pos.line", "ts": t, "data": {"sku": "k1", "qty": qty, "price_cents": 99, "kind": kind}})

    def reading(t, u):
        store.apply({"type": "shelf.reading", "ts": t, "data": {"facing_id": "a", "units_est": u, "battery_pct": 90}})

    # picked from "a" (the load cell reports it), then paid: "a" is not lowered twice, "b" not at all
    t = T0 + HOUR_MS
    reading(t, 5)
    assert units(t) == [5, 6] and store.states["a"].units_unexplained == 1
    sale(t + 120_000)
    assert units(t + 120_000) == [5, 6] and store.states["a"].units_unexplained == 0
    # paid first, picked from "a": "b" holds it on a guess until the reading explains it
    t += HOUR_MS
    sale(t)
    assert units(t) == [5, 5]
    reading(t + 240_000, 4)
    assert units(t + 240_000) == [4, 6] and store.states["a"].units_unexplained == 0
    # picked from "b": no reading follows, the guess stands; "a" is never lowered by the till
    t += HOUR_MS
    sale(t, 2)
    reading(t + 3 * HOUR_MS, 4)  # a heartbeat, hours later: nothing to explain
    assert units(t + 3 * HOUR_MS) == [4, 4]
    # a void puts the unit back where the line took it
    t += 4 * HOUR_MS
    sale(t)
    sale(t + 2_500, 1, "void")
    assert units(t + 2_500) == [4, 4]
    # the rates still take the even split (the till names the SKU)
    x = store.matrix(t + 2_500)
    assert x[0, F["rate_24h"]] == pytest.approx(x[1, F["rate_24h"]]) and x[0, F["rate_24h"]] > 0


def test_the_tills_count_of_zero_on_a_skus_only_facing_is_empty_now_whatever_the_model_says():
    # A slow mover without a sensor (a unit a day): its last unit sold, the till's count leaves 0.
    # Its silence says little for a day, and the model (trained on faster movers) scored such rows
    # about 0.92, under its empty_now threshold for hours (201 min on the slow held-out set). On
    # a SKU with several facings the till names only the SKU: the model still decides there.
    from models.replay import Facing, StoreFeatures
    from models.scoring import empty_now_prob

    store = StoreFeatures("s1", [Facing("slow", "k1", 2), Facing("a", "k2", 1), Facing("b", "k2", 1)])
    for fid, n in (("slow", 2), ("a", 1), ("b", 1)):
        store.apply({"type": "shelf.restock", "ts": T0, "data": {"facing_id": fid, "units_added": n}})
    for k, sku in ((1, "k1"), (2, "k2"), (3, "k2"), (20, "k1")):
        store.apply({"type": "pos.line", "ts": T0 + k * HOUR_MS, "data": {"sku": sku, "qty": 1, "price_cents": 99}})
    t = T0 + 20 * HOUR_MS + 60_000
    x = store.matrix(t)
    assert x[:, F["units_est"]].tolist() == [0.0, 0.0, 0.0] and x[:, F["sku_facings"]].tolist() == [1.0, 2.0, 2.0]
    model = np.array([0.92, 0.92, 0.92])
    assert empty_now_prob(x, model=model).tolist() == [1.0, 0.92, 0.92]
    # with stock left, or without the model (the statistical detector), the same rule
    assert empty_now_prob(x)[0] == 1.0
    store.apply({"type": "shelf.restock", "ts": t, "data": {"facing_id": "slow", "units_added": 1}})
    assert empty_now_prob(store.matrix(t + 60_000), model=model)[0] == pytest.approx(0.92)


def _creeping(state: FacingState, creep_g_per_day: float, days: int, *, last_units: int = 1,
              unit_g: float = 100.0, fault: tuple[int, int, float] | None = None) -> int:
    """A tared load cell (0 g offset at the first reading) under a facing of 10 that the till sells
    one unit a day (read hourly, noise-free), its zero creeping ``creep_g_per_day``; ``fault``:
    (first hour, last hour, units an hour) the cell runs off, then recalibrated. Returns the last
    instant."""
    t = T0
    units = 10
    for hour in range(days * 24):
        t = T0 + hour * HOUR_MS
        if hour % 24 == 12 and units > last_units:
            units -= 1
            state.on_sale(t - MINUTE_MS, 1, 199)
        grams = units * unit_g + creep_g_per_day * hour / 24.0
        if fault is not None and fault[0] <= hour < fault[1]:
            grams += fault[2] * (hour - fault[0]) * unit_g
        _weighed(state, t, grams, unit_g)
    return t


def test_a_load_cell_whose_zero_creeps_down_is_read_right_through_the_half_unit_without_a_refill():
    """A cell creeping down 9 g a day under a unit of 100 g: by day 9 the shelf's last unit
    weighs 19 g on it and the device rounds that to 0 (the false "empty now" no refill had yet
    shown, ``CREEP_REFILLS``). Its zero, tracked from the grams at every reading
    (``zero_offset``), reads that unit, and the shelf reads empty once it is."""
    from models.scoring import empty_now_prob, empty_now_ready

    st = FacingState("f", "k", capacity=10, has_sensor=True)
    t = _creeping(st, -9.0, days=10)
    assert st.zero_creep == 0.0  # no refill: the refill rule has no evidence
    assert st._g_tare == pytest.approx(100.0, abs=1.0)  # grams over units of the first readings
    assert st.zero_offset == pytest.approx(-0.9, abs=0.05)  # -9 g a day for 10 days, in units
    x = feature_matrix([st], t)
    assert x[0, F["units_est"]] == 1.0 and not st.sensor_untrusted  # the device said 0
    assert float(empty_now_prob(x)[0]) == 0.0 and empty_now_ready(x)[0]
    st.on_sale(t + 10 * MINUTE_MS, 1, 199)  # the last unit sold: the cell weighs the creep alone
    _weighed(st, t + 15 * MINUTE_MS, -9.0 * 10.0)
    x = feature_matrix([st], t + 15 * MINUTE_MS)
    assert x[0, F["units_est"]] == 0.0 and float(empty_now_prob(x)[0]) == 1.0 and empty_now_ready(x)[0]
    assert not st.sensor_untrusted  # -90 g under an empty shelf is the tracked zero, not "below empty"


def test_a_load_cell_whose_zero_creeps_up_reads_an_empty_shelf_empty():
    """A cell creeping up 8 g a day: on day 10 the empty shelf weighs 80 g, which the device rounds
    to 1 unit of 100 g (a late "empty now" before); read against the tracked zero it is 0. (The
    offset lags the creep here, 0.69 for 0.8: with no refill the fill falls day by day as the
    creep rises, and the slope of grams over units, 106 g, takes part of the creep in.)"""
    from models.scoring import empty_now_prob

    st = FacingState("f", "k", capacity=10, has_sensor=True)
    t = _creeping(st, 8.0, days=10)
    assert 0.6 < st.zero_offset < 0.8
    st.on_sale(t + 10 * MINUTE_MS, 1, 199)
    _weighed(st, t + 15 * MINUTE_MS, 80.0)  # the device: round(0.8) = 1 unit
    x = feature_matrix([st], t + 15 * MINUTE_MS)
    assert x[0, F["units_est"]] == 0.0 and float(empty_now_prob(x)[0]) == 1.0


def test_a_load_cell_running_off_by_units_an_hour_is_not_followed_and_its_zero_holds_after():
    """A fault: the cell runs off 1 unit an hour for 5 hours, then is recalibrated. Its zero moves
    at most ``OFFSET_RATE`` units a day (an hour's reading: 0.5 / 24), so the offset is still
    near the slow creep's (here none) when the fault ends, and the readings after it are right."""
    from models.features import OFFSET_RATE

    healthy = FacingState("h", "k", capacity=10, has_sensor=True)
    faulty = FacingState("f", "k", capacity=10, has_sensor=True)
    _creeping(healthy, 0.0, days=3, last_units=5)
    t = _creeping(faulty, 0.0, days=3, last_units=5, fault=(40, 45, 1.0))
    assert healthy.zero_offset == 0.0
    assert abs(faulty.zero_offset) <= 5 * OFFSET_RATE / 24.0 + 1e-9
    assert faulty.units == healthy.units == 7.0  # 10 less the three units sold in 3 days
    _weighed(faulty, t + HOUR_MS, 700.0)
    assert faulty.units == 7.0


def test_grams_that_no_longer_match_the_learnt_unit_weight_are_not_read_as_units():
    """A tracker that learnt 0.1 g a unit (20 readings of 5 units at 0.5 g) then weighs 1,250 g
    (a cell replaced, a firmware reporting another scale): read against it that is 12,500 units
    where the device says 5. That is no creep (``OFFSET_IMPLAUSIBLE``): the device's units stand,
    and the tracker starts over from that reading (its unit weight learnt again)."""
    st = FacingState("f", "k", capacity=10, has_sensor=True)
    t = T0
    for i in range(20):
        t = T0 + i * HOUR_MS
        st.on_reading(t, 5.0, 90.0, weight_g=0.5)
    assert st._g_tare == pytest.approx(0.1)
    st.on_reading(t + HOUR_MS, 5.0, 90.0, weight_g=1250.0)
    assert st.units == 5.0  # was 12,500
    assert st.zero_offset == 0.0 and st._g_n == 1.0 and st._g_tare == pytest.approx(250.0)
    st.on_reading(t + 2 * HOUR_MS, 4.0, 90.0, weight_g=1000.0)  # the new scale is learnt
    assert st.units == 4.0 and st._g_tare == pytest.approx(250.0)
    st.on_reading(t + 3 * HOUR_MS, 4.0, 90.0, weight_g=1e300)  # a value no float division survives
    assert st.units == 4.0

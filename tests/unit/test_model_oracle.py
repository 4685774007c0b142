"""The oracle (simulator truth -> P(empty within H)) and the two alert kinds' figures."""

from __future__ import annotations

import numpy as np
import pytest

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from models.baseline import poisson_tail
from models.evaluation import evaluate_alert_kinds, hysteresis_state
from models.oracle import OracleTruth, oracle_probs

T0 = 1_767_571_200_000  # 2026-01-05 00:00 UTC


def _truth() -> OracleTruth:
    # Demand only from 12:00 to 14:00 (two steps of an hourly profile), 10 units expected a day.
    shares = [0.0] * 24
    shares[12] = shares[13] = 0.5
    units = {"facing_id": ["a", "a", "a", "b"], "ts": [T0, T0 + 12 * HOUR_MS, T0 + 13 * HOUR_MS, T0],
             "units": [4, 2, 0, 9]}
    expected = {"facing_id": ["a", "b", "a", "b"], "day_ms": [T0, T0, T0 + DAY_MS, T0 + DAY_MS],
                "expected_units": [10.0, 10.0, 20.0, 20.0]}
    return OracleTruth.build(["a", "b"], units, expected, T0, 2, shares, HOUR_MS)


def test_the_oracle_knows_true_units_and_expected_demand_over_the_horizon():
    truth = _truth()
    f = np.array([0, 0, 0, 1])
    t = np.array([T0 + 11 * HOUR_MS, T0 + 12 * HOUR_MS + 30 * MINUTE_MS, T0 + 13 * HOUR_MS, T0 + 20 * HOUR_MS])
    assert truth.units_at(f, t).tolist() == [4, 2, 0, 9]
    # 11:00-13:00 holds one of the two demand hours: 5 units; 20:00-22:00 none;
    # 23:00 (+2 h) reaches 01:00 of day 2, still none.
    lam = truth.demand(f, t, 2 * HOUR_MS)
    assert lam[0] == pytest.approx(5.0) and lam[3] == pytest.approx(0.0)
    assert truth.demand(np.array([1]), np.array([T0 + 23 * HOUR_MS]), 14 * HOUR_MS)[0] == pytest.approx(10.0)
    p = oracle_probs(np.array(["s"] * 4), np.array(["a", "a", "a", "b"]), t, {"s": truth}, 2 * HOUR_MS)
    assert p[0] == pytest.approx(poisson_tail(np.array([5.0]), np.array([4]))[0])
    assert p[2] == 1.0 and p[3] == pytest.approx(0.0)  # empty now; no demand before closing
    assert np.isnan(oracle_probs(np.array(["x"]), np.array(["a"]), t[:1], {"s": truth}, HOUR_MS))[0]


def test_hysteresis_state_says_whether_each_rows_alert_is_on():
    group = np.array([0, 0, 0, 0, 1])
    t = np.array([1, 2, 3, 4, 1])
    p = np.array([0.9, 0.5, 0.1, 0.5, 0.95])
    assert hysteresis_state(group, t, p, 0.8, 0.3).tolist() == [True, True, False, False, True]


def test_alert_kinds_are_judged_each_by_its_own_promise():
    H = 2 * HOUR_MS
    step = 30 * MINUTE_MS
    t = T0 + np.arange(12) * step
    n = len(t)
    # Facing a empties at t[6]; facing b empties at t[9] and has no sensor; facing c never empties.
    outs = [("s", "a", int(t[6]), None), ("s", "b", int(t[9]), None)]
    store = np.array(["s"] * 3 * n)
    facing = np.repeat(np.array(["a", "b", "c"]), n)
    tt = np.tile(t, 3)
    group = np.repeat(np.arange(3), n)
    fc = np.zeros(3 * n)
    fc[3:6] = 0.9        # a: forecast from t[3], 90 min ahead of the stock-out (caught, lead 90)
    fc[n + 2:n + 9] = 0.9  # b: raised at t[2], 3.5 h ahead and still on at the start: not strict
    fc[2 * n + 4] = 0.9    # c: a false forecast
    now = np.zeros(3 * n)
    now[6:n] = 1.0         # a: detected when it empties
    now[n + 10:2 * n] = 1.0  # b: detected 30 min late
    m = evaluate_alert_kinds(store=store, facing=facing, t=tt, group=group, forecast=fc, now=now,
                             forecast_at=0.8, now_at=0.5, stockouts=outs, no_sensor={("s", "b")},
                             horizon_ms=H, store_days=0.5)
    assert m["forecast_alerts"] == 3 and m["forecast_caught_share"] == 0.5
    assert m["forecast_strict_median_lead_min"] == 90.0
    assert m["empty_now_alerts"] == 2 and m["empty_now_precision"] == 1.0
    assert m["empty_now_no_sensor_alerts"] == 1 and m["empty_now_median_delay_min"] == 30.0
    # b's early forecast and c's are false (neither shelf empties within H of the raise): 2 per half day.
    assert m["false_alerts_per_store_day"] == 4.0 and m["false_empty_now_per_store_day"] == 0.0


def test_the_alert_replay_raises_no_forecast_where_the_gateway_would_not():
    # models.scoring.forecast_ready is the gateway's rule (no sale seen: no forecast); the replay
    # holds such rows in the dead band: nothing is raised there, an alert raised before stays.
    from models.features import FEATURES
    from models.scoring import forecast_ready

    t = T0 + np.arange(6) * 30 * MINUTE_MS
    X = np.zeros((6, len(FEATURES)), dtype=np.float32)
    X[:, FEATURES.index("hours_since_sale")] = [168, 168, 1, 1, 168, 168]  # a sale seen at t[2] only
    ready = forecast_ready(X)
    assert ready.tolist() == [False, False, True, True, False, False]
    kw = dict(store=np.array(["s"] * 6), facing=np.array(["a"] * 6), t=t, group=np.zeros(6, dtype=int),
              forecast=np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9]), now=np.zeros(6), forecast_at=0.8, now_at=0.5,
              stockouts=[("s", "a", int(t[5]), None)], no_sensor=set(), horizon_ms=2 * HOUR_MS, store_days=0.25)
    before = evaluate_alert_kinds(**kw)
    after = evaluate_alert_kinds(**kw, ready=ready)
    # Ungated: raised at t[0], 2.5 h before the shelf empties (more than H): not caught ahead.
    assert before["forecast_alerts"] == 1 and before["forecast_caught_share"] == 0.0
    assert after["forecast_alerts"] == 1 and after["forecast_caught_share"] == 1.0
    assert after["forecast_strict_median_lead_min"] == 90.0  # raised at t[2], held through t[4]



def test_the_alert_replay_raises_no_forecast_on_a_shelf_its_sensor_reads_empty():
    # models.scoring.forecast_ready: no forecast on a sensored facing estimated at 0 units (it
    # would say "empty in 0 min" of a shelf already empty), unless the till sold from it since
    # the reading. The facing reads 0 from t[1] to t[3]
    # (doubted: empty_now stays off), stock from t[4]; the shelf empties at t[5].
    from models.features import FEATURES
    from models.scoring import forecast_ready

    t = T0 + np.arange(6) * 30 * MINUTE_MS
    X = np.zeros((6, len(FEATURES)), dtype=np.float32)
    X[:, FEATURES.index("hours_since_sale")] = 1.0
    X[:, FEATURES.index("has_sensor")] = 1.0
    X[:, FEATURES.index("units_est")] = [2, 0, 0, 0, 1, 1]
    ready = forecast_ready(X)
    assert ready.tolist() == [True, False, False, False, True, True]
    X[2, FEATURES.index("sales_since_reading")] = 1.0  # the till sold since the reading: stock
    assert forecast_ready(X).tolist() == [True, False, True, False, True, True]
    X[:, FEATURES.index("has_sensor")] = 0.0  # without a sensor, the till's 0 is only an estimate
    assert forecast_ready(X).all()
    kw = dict(store=np.array(["s"] * 6), facing=np.array(["a"] * 6), t=t, group=np.zeros(6, dtype=int),
              forecast=np.array([0.0, 0.9, 0.9, 0.9, 0.9, 0.9]), now=np.zeros(6), forecast_at=0.8, now_at=0.5,
              no_sensor=set(), stockouts=[("s", "a", int(t[5]), None)], horizon_ms=HOUR_MS, store_days=0.25,
              intervals=[("s", "a", int(t[1]), int(t[4])), ("s", "a", int(t[5]), None)])
    before = evaluate_alert_kinds(**kw)
    after = evaluate_alert_kinds(**kw, ready=ready)
    # Ungated (H = 1 h): raised at t[1] on the empty shelf ("right"), still on when the shelf
    # empties again 2 h later: that stock-out is not caught ahead (strict).
    assert before["forecast_alerts"] == 1 and before["forecast_precision"] == 1.0
    assert before["forecast_caught_share"] == 0.0
    # Gated: raised at t[4] on the refilled shelf, 30 min before it empties: caught ahead.
    assert after["forecast_alerts"] == 1 and after["forecast_caught_share"] == 1.0
    assert after["forecast_strict_median_lead_min"] == 30.0


def test_the_alert_replay_raises_no_empty_now_on_a_zero_the_sensor_never_read():
    # models.scoring.empty_now_ready is the gateway's rule: a believed sensor's facing whose 0 is
    # the till's count (units sold since a reading above 0) may not raise empty_now; one raised on
    # the sensor's own 0 stays. The replay holds such rows in the dead band, as the gateway does.
    from models.features import FEATURES
    from models.scoring import empty_now_prob, empty_now_ready

    t = T0 + np.arange(6) * 30 * MINUTE_MS
    X = np.zeros((6, len(FEATURES)), dtype=np.float32)
    X[:, FEATURES.index("has_sensor")] = 1.0
    X[:, FEATURES.index("units_est")] = [2, 0, 0, 0, 0, 3]
    X[:, FEATURES.index("sales_since_reading")] = [0, 2, 2, 0, 1, 0]  # the sensor reads 0 at t[3]
    now = empty_now_prob(X)
    assert now.tolist() == [0, 1, 1, 1, 1, 0] and empty_now_ready(X).tolist() == [True, False, False, True, False, True]
    kw = dict(store=np.array(["s"] * 6), facing=np.array(["a"] * 6), t=t, group=np.zeros(6, dtype=int),
              forecast=np.zeros(6), now=now, forecast_at=0.8, now_at=0.9, no_sensor=set(),
              stockouts=[("s", "a", int(t[3]), int(t[5]))], horizon_ms=2 * HOUR_MS, store_days=0.25)
    before = evaluate_alert_kinds(**kw)
    after = evaluate_alert_kinds(**kw, now_ready=empty_now_ready(X))
    # Ungated: raised at t[1], while the shelf still held stock: a false alert (4 a store-day).
    assert before["empty_now_alerts"] == 1 and before["empty_now_precision"] == 0.0
    assert before["false_alerts_per_store_day"] == 4.0
    # Gated: raised when the sensor read 0, kept through the sale at t[4]: right, and no false one.
    assert after["empty_now_alerts"] == 1 and after["empty_now_precision"] == 1.0
    assert after["false_alerts_per_store_day"] == 0.0


def test_a_sale_credited_to_a_read_facing_of_a_shared_sku_is_not_evidence_about_its_shelf():
    # The gates read "a sale since the reading" (models.scoring._sold_since_reading) as the till's
    # evidence about this shelf only where it can be: a SKU's only facing, or a sensor not heard
    # yet (hours_since_reading at its cap: its estimate is the till's count).
    from models.features import FEATURES
    from models.scoring import empty_now_ready, forecast_ready

    X = np.zeros((4, len(FEATURES)), dtype=np.float32)
    X[:, FEATURES.index("has_sensor")] = 1.0
    X[:, FEATURES.index("hours_since_sale")] = 0.5
    X[:, FEATURES.index("sales_since_reading")] = 0.5
    X[:, FEATURES.index("sku_facings")] = [1, 2, 2, 3]
    X[:, FEATURES.index("hours_since_reading")] = [1.0, 1.0, 168.0, 0.2]  # row 2: never read
    assert empty_now_ready(X).tolist() == [False, True, False, True]
    assert forecast_ready(X).tolist() == [True, False, True, False]

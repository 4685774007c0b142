"""Baselines, ranking metrics and alert matching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gondola.clock import HOUR_MS, MINUTE_MS
from models.baseline import poisson_stockout_prob, poisson_tail, zero_sales_prob
from models.evaluation import evaluate_scores, forecast_outcomes, hysteresis_alerts, hysteresis_episodes, match_alerts, match_episodes
from models.features import FEATURES
from models.metrics import average_precision, precision_at_recall, pr_curve, threshold_at_recall
from models.scoring import BaselineScorer, PoissonScorer, ZeroSalesScorer


def test_poisson_tail_matches_the_closed_form():
    lam, k = 3.0, 4
    expected = 1 - sum(math.exp(-lam) * lam**j / math.factorial(j) for j in range(k))
    assert poisson_tail(np.array([lam]), np.array([k]))[0] == pytest.approx(expected)
    # An empty shelf is out of stock with certainty; no demand never empties a full one.
    assert poisson_stockout_prob(np.array([0.0, 0.0]), np.array([0, 5]), 2.0).tolist() == [1.0, 0.0]


def test_zero_sales_evidence_grows_with_the_silence():
    p = zero_sales_prob(np.array([2.0, 2.0, 2.0]), np.array([0.0, 1.0, 3.0]))
    assert p[0] == 0 and p[1] < p[2] and p[2] == pytest.approx(1 - math.exp(-6))


def features(**cols) -> np.ndarray:
    x = np.zeros((len(next(iter(cols.values()))), len(FEATURES)), dtype=np.float32)
    for name, values in cols.items():
        x[:, FEATURES.index(name)] = values
    return x


def test_baseline_scorers_read_the_named_feature_columns():
    x = features(units_est=[0, 10, 1], rate_24h=[1, 1, 1], has_sensor=[1, 1, 0], demand_since_sale=[0, 0, 5])
    assert PoissonScorer(2.0).score(x)[0] == 1.0 and PoissonScorer(2.0).score(x)[1] < 1e-4
    assert ZeroSalesScorer().score(x)[2] == pytest.approx(1 - math.exp(-5))
    combined = BaselineScorer(2.0).score(x)
    # Without a sensor the zero-sales evidence counts; with one, only the depletion model.
    assert combined[2] == pytest.approx(max(PoissonScorer(2.0).score(x)[2], 1 - math.exp(-5)))
    with pytest.raises(ValueError):
        PoissonScorer(2.0).score(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        PoissonScorer(0)


def test_average_precision_of_a_known_ranking():
    y = np.array([1, 0, 1, 0, 0], bool)
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # Positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(y, -s) < 0.5
    assert average_precision(np.zeros(3, bool), np.ones(3)) is None


def test_tied_scores_form_one_step_so_quantized_scorers_gain_nothing_from_order():
    y = np.array([0, 1, 0, 1], bool)
    assert average_precision(y, np.ones(4)) == pytest.approx(0.5)
    p, r, thr = pr_curve(y, np.ones(4))
    assert len(thr) == 1 and r[-1] == 1.0


def test_precision_at_recall_and_threshold_for_a_recall():
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0], bool)
    s = np.linspace(1, 0, 8)
    assert precision_at_recall(y, s, 0.75) == pytest.approx(3 / 4)
    thr = threshold_at_recall(y, s, 0.75)
    assert ((s >= thr) & y).sum() / y.sum() >= 0.75
    assert precision_at_recall(y, s, 1.0) == pytest.approx(4 / 7)


def test_match_alerts_counts_true_alerts_caught_stockouts_and_lead_time():
    H = 2 * HOUR_MS
    stockouts = [("s1", "f1", 10 * HOUR_MS, 11 * HOUR_MS), ("s1", "f2", 20 * HOUR_MS, None),
                 ("s1", "f3", 5 * HOUR_MS, 9 * HOUR_MS)]
    alerts = [
        ("s1", "f1", 9 * HOUR_MS),            # 60 min ahead: true, caught
        ("s1", "f1", 10 * HOUR_MS + 30 * MINUTE_MS),  # while empty: true
        ("s1", "f2", 15 * HOUR_MS),           # 5 h ahead: outside the horizon, false
        ("s1", "f3", 6 * HOUR_MS),            # during the stock-out: true, caught late
        ("s1", "f9", 1 * HOUR_MS),            # no stock-out at all: false
    ]
    m = match_alerts(alerts, stockouts, H)
    assert (m["alerts"], m["true_alerts"], m["caught"], m["caught_late"]) == (5, 3, 1, 1)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(1 / 3) and m["detected_recall"] == pytest.approx(2 / 3)
    assert m["median_lead_min"] == 60 and m["median_delay_min"] == 60


def test_forecast_outcomes_tell_a_warning_ahead_from_a_forecast_on_an_empty_shelf():
    # match_alerts counts both as true alerts (3 of 5 above); what the demo's summary reports apart.
    H = 2 * HOUR_MS
    stockouts = [("s1", "f1", 10 * HOUR_MS, 11 * HOUR_MS), ("s1", "f2", 20 * HOUR_MS, None),
                 ("s1", "f3", 5 * HOUR_MS, 9 * HOUR_MS)]
    alerts = [("s1", "f1", 9 * HOUR_MS), ("s1", "f1", 10 * HOUR_MS + 30 * MINUTE_MS), ("s1", "f2", 15 * HOUR_MS),
              ("s1", "f3", 6 * HOUR_MS), ("s1", "f9", 1 * HOUR_MS), ("s1", "f2", 21 * HOUR_MS),
              ("s1", "f1", 11 * HOUR_MS)]  # the instant it was refilled: not empty, no stock-out after
    assert forecast_outcomes(alerts, stockouts, H) == {"warned_ahead": 1, "on_empty_shelf": 3, "false": 3}


def test_hysteresis_raises_once_per_episode_and_rearms_below_the_clear_level():
    t = np.arange(8) * 15 * MINUTE_MS
    p = np.array([0.1, 0.6, 0.7, 0.4, 0.6, 0.2, 0.9, 0.95])
    store = np.array(["s"] * 8, dtype=object)
    facing = np.array(["f"] * 8, dtype=object)
    alerts = hysteresis_alerts(store, facing, t, p, raise_at=0.5, clear_at=0.3)
    assert [a[2] for a in alerts] == [t[1], t[6]]
    with pytest.raises(ValueError):
        hysteresis_alerts(store, facing, t, p, raise_at=0.3, clear_at=0.5)


def test_evaluate_scores_reports_row_and_alert_level_figures():
    t = np.arange(6) * 30 * MINUTE_MS
    store = np.array(["s"] * 6, dtype=object)
    facing = np.array(["f"] * 6, dtype=object)
    y = np.array([0, 0, 1, 1, 1, 0], bool)
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.95, 0.1])
    res = evaluate_scores(p, y, threshold=0.5, store=store, facing=facing, t=t,
                          stockouts=[("s", "f", int(t[3]) + 1, int(t[5]))], horizon_ms=2 * HOUR_MS,
                          store_days=0.5, empty_now=np.array([0, 0, 0, 0, 1, 0], bool))
    assert res["pr_auc"] == pytest.approx(1.0)
    assert res["precision"] == 1.0 and res["recall"] == 1.0
    assert res["alerts"] == 1 and res["stockouts_caught"] == 1
    assert res["median_lead_min"] == pytest.approx(30, abs=0.1)
    assert res["false_alerts_per_store_day"] == 0


def test_episodes_carry_their_clear_instant_and_still_open_ones_have_none():
    t = np.arange(8) * 15 * MINUTE_MS
    p = np.array([0.1, 0.6, 0.7, 0.2, 0.1, 0.6, 0.9, 0.95])
    store = np.array(["s"] * 8, dtype=object)
    facing = np.array(["f"] * 8, dtype=object)
    eps = hysteresis_episodes(store, facing, t, p, raise_at=0.5, clear_at=0.3)
    assert eps == [("s", "f", int(t[1]), int(t[3])), ("s", "f", int(t[5]), None)]


def test_an_alert_still_on_when_the_shelf_empties_catches_it_with_lead_capped_at_the_horizon():
    H = 2 * HOUR_MS
    stockouts = [("s", "f1", 10 * HOUR_MS, 11 * HOUR_MS), ("s", "f2", 10 * HOUR_MS, None),
                 ("s", "f3", 10 * HOUR_MS, 12 * HOUR_MS)]
    episodes = [
        ("s", "f1", 5 * HOUR_MS, None),                      # on for 5 h before: caught, lead capped at 120
        ("s", "f2", 9 * HOUR_MS + 30 * MINUTE_MS, 9 * HOUR_MS + 45 * MINUTE_MS),  # cleared, but within H: caught, 30
        ("s", "f3", 11 * HOUR_MS, None),                     # raised while empty: late
        ("s", "f9", 1 * HOUR_MS, 2 * HOUR_MS),               # nothing happened: false
    ]
    m = match_episodes(episodes, stockouts, H)
    assert (m["episodes"], m["true_episodes"], m["caught"], m["caught_late"]) == (4, 3, 2, 1)
    assert m["median_lead_min"] == pytest.approx((120 + 30) / 2)
    assert m["recall"] == pytest.approx(2 / 3) and m["detected_recall"] == 1.0

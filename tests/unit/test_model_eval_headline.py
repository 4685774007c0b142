"""`gondola eval`'s headline line per set: a goal a set cannot judge is not counted as missed."""

from __future__ import annotations

from models.cli import _goals, _headline


def test_a_goal_without_data_is_neither_met_nor_missed():
    # QA: a store whose every facing has a sensor has no "empty now without a sensor" figure;
    # the headline said "3/8 goals met" and "- (missed)" for it.
    goals = {
        "fraction_of_oracle": {"goal": ">= 0.8", "value": 0.83, "met": True},
        "forecast_caught_share": {"goal": ">= 0.5", "value": 0.2, "met": False},
        "empty_now_no_sensor_precision": {"goal": ">= 0.8", "value": None, "met": None},
    }
    line = _headline("hist", goals)
    assert line.startswith("hist: 1/2 goals met (1 without data); ")
    assert "fraction_of_oracle 0.830," in line
    assert "forecast_caught_share 0.200 (missed)" in line
    assert "empty_now_no_sensor_precision - (no data)" in line
    assert line.count("(missed)") == 1


def test_every_goal_judged_keeps_the_plain_count():
    goals = {"a": {"goal": "", "value": 1.0, "met": True}, "b": {"goal": "", "value": 0.0, "met": False}}
    assert _headline("s", goals) == "s: 1/2 goals met; a 1.000, b 0.000 (missed)"


def _set(**int8):
    base = dict(fraction_of_oracle=0.9, forecast_caught_share=0.3, forecast_strict_median_lead_min=50.0,
                false_alerts_per_store_day=2.0, empty_now_median_delay_min=20.0, empty_now_no_sensor_precision=0.9,
                empty_now_no_sensor_detected_share=0.5, pr_auc_ahead=0.4)
    res = {"model-int8-tflite": dict(base, **int8), "model-float-onnx": {"pr_auc_ahead": 0.4}}
    return res, {"model-int8-tflite": {"vs_poisson_pr_auc_ahead": {"min": 1.4}}}


def test_a_store_with_a_sensor_on_every_facing_has_no_data_for_the_no_sensor_goals():
    res, seeds = _set(empty_now_no_sensor_detected_share=None, empty_now_median_delay_min=None,
                      empty_now_no_sensor_precision=None)
    goals = _goals(res, seeds, degraded=False)
    assert goals["empty_now_median_delay_min"]["met"] is None
    assert goals["empty_now_no_sensor_precision"]["met"] is None
    assert _headline("all-sensors", goals).startswith("all-sensors: 4/6 goals met (2 without data); ")


def test_empty_shelves_without_a_sensor_that_nobody_detected_are_a_miss_not_missing_data():
    res, seeds = _set(empty_now_no_sensor_detected_share=0.0, empty_now_median_delay_min=None,
                      empty_now_no_sensor_precision=None)
    goals = _goals(res, seeds, degraded=False)
    assert goals["empty_now_median_delay_min"]["met"] is False
    assert goals["empty_now_no_sensor_precision"]["met"] is False


def test_no_forecast_caught_misses_the_lead_goal_and_no_stock_out_to_catch_has_no_data():
    res, seeds = _set(forecast_caught_share=0.0, forecast_strict_median_lead_min=None)
    assert _goals(res, seeds, degraded=False)["forecast_strict_median_lead_min"]["met"] is False
    res, seeds = _set(forecast_caught_share=None, forecast_strict_median_lead_min=None)
    goals = _goals(res, seeds, degraded=False)
    assert goals["forecast_strict_median_lead_min"]["met"] is None and goals["forecast_caught_share"]["met"] is None

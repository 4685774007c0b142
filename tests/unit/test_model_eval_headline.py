"""`gondola eval`'s headline line per set: a goal a set cannot judge is not counted as missed."""

from __future__ import annotations

from models.cli import DEGRADED_MIN_FAULT_SHARE, _goals, _headline, _set_goals, degraded_sensors


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


def _trust(fault_rows: int, sensored_rows: int = 171_000) -> dict:
    return {"sensored_rows": sensored_rows, "fault_rows": fault_rows, "untrusted_rows": 10, "precision": 0.5,
            "recall": 0.1}


DEGRADED_GOAL = "precision_at_validation_recall_0.75_threshold"


def test_the_degraded_sensor_goal_is_judged_from_the_injected_faults_not_the_set_name():
    # QA: only a set named "...degraded..." or "...faults..." was judged on it, so an unseen store
    # with degraded sensors under another name never was. Measured shares: 4.7 % of the sensor
    # rows faulty on holdout-degraded, 0.10-0.14 % with the default sensors.
    res, seeds = _set(**{DEGRADED_GOAL: 0.7, "best_precision_at_recall_0.75_over_test_thresholds": 0.8})
    per_set = {"unseen-store-7": res, "test-degraded-s105": res, "test-faults-s103": res, "lake-export": res}
    trust = {"unseen-store-7": _trust(7_960), "test-degraded-s105": _trust(171), "test-faults-s103": _trust(269),
             "lake-export": None}
    goals, basis = _set_goals(per_set, {n: seeds for n in per_set}, trust)
    assert goals["unseen-store-7"][DEGRADED_GOAL] == {
        "goal": goals["unseen-store-7"][DEGRADED_GOAL]["goal"], "value": 0.7, "met": False}
    assert basis["unseen-store-7"]["fault_row_share"] == 7_960 / 171_000 and basis["unseen-store-7"]["judged"]
    for name in ("test-degraded-s105", "test-faults-s103", "lake-export"):  # healthy sensors, or no truth
        assert DEGRADED_GOAL not in goals[name] and not basis[name]["judged"], name
    assert basis["lake-export"]["fault_row_share"] is None


def test_the_fault_share_threshold_is_inclusive_and_needs_sensor_rows():
    assert degraded_sensors(_trust(1_000, 100_000))["judged"]  # exactly the minimum share
    assert not degraded_sensors(_trust(999, 100_000))["judged"]
    assert not degraded_sensors(_trust(0, 0))["judged"]  # no facing with a sensor: nothing degraded
    assert degraded_sensors(_trust(1_000, 100_000))["min_share"] == DEGRADED_MIN_FAULT_SHARE == 0.01

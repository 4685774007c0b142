"""Validation split and the forecast-row weight of training (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np

from models.dataset import LabelledRows
from models.features import FEATURES
from models.pipeline import split_validation
from models.replay import FeatureRows


def rows_of(stores: list[str], per_store: int = 3) -> LabelledRows:
    store = np.repeat(np.array(stores, dtype=object), per_store)
    n = len(store)
    rows = FeatureRows(store, np.array([f"f{i}" for i in range(n)], dtype=object),
                       np.arange(n, dtype=np.int64), np.zeros((n, len(FEATURES)), np.float32))
    return LabelledRows(rows, np.zeros(n, bool), np.zeros(n, bool), [], 1.0)


def test_validation_takes_the_last_quarter_of_stores_of_each_source():
    data = rows_of([f"{src}/s00{i}" for src in ("train-a", "train-b") for i in range(1, 5)])
    train, val = split_validation(data)
    assert sorted(set(data.rows.store[val])) == ["train-a/s004", "train-b/s004"]
    assert not (train & val).any() and (train | val).all()


def test_validation_of_plain_store_ids_is_the_last_quarter_of_stores():
    data = rows_of(["s001", "s002", "s003", "s004"])
    _, val = split_validation(data)
    assert set(data.rows.store[val]) == {"s004"}


def test_sources_of_one_store_each_give_whole_stores_to_validation():
    data = rows_of(["a/s001", "b/s001", "c/s001", "d/s001"])
    train, val = split_validation(data)
    assert set(data.rows.store[val]) == {"d/s001"} and train.sum() == 9


def test_one_store_is_split_in_time():
    data = rows_of(["s001"], per_store=8)
    train, val = split_validation(data)
    assert data.rows.t[val].min() > data.rows.t[train].max()


def test_settled_rows_start_the_given_days_after_each_stores_first_row():
    from gondola.clock import DAY_MS
    from models.pipeline import settled_rows

    t = np.array([0, 2, 3, 4, 10, 13, 14], dtype=np.int64) * DAY_MS
    store = np.array(["a", "a", "a", "a", "b", "b", "b"], dtype=object)
    rows = FeatureRows(store, store.copy(), t, np.zeros((len(t), len(FEATURES)), np.float32))
    data = LabelledRows(rows, np.zeros(len(t), bool), np.zeros(len(t), bool), [], 1.0)
    assert settled_rows(data, 3.0).tolist() == [False, False, True, True, False, True, True]


def _day_of_forecasts(stores: list[str], bumps: dict[str, list[float]]) -> tuple[LabelledRows, np.ndarray]:
    """One day (49 rows, 30 min apart) of 10 facings per store, no stock-out anywhere: every
    forecast raised is false. ``bumps``: per store, one facing per value scoring it at noon."""
    from gondola.clock import MINUTE_MS

    t0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * 60 * MINUTE_MS)
    ts = t0 + np.arange(49, dtype=np.int64) * 30 * MINUTE_MS
    store = np.repeat(np.array(stores, dtype=object), 10 * 49)
    facing = np.tile(np.repeat(np.array([f"f{i}" for i in range(10)], dtype=object), 49), len(stores))
    t = np.tile(ts, 10 * len(stores))
    p = np.full(len(t), 0.01)
    for k, s in enumerate(stores):
        for i, v in enumerate(bumps.get(s, [])):
            p[(k * 10 + i) * 49 + 24] = v
    n = len(t)
    rows = FeatureRows(store, facing, t, np.zeros((n, len(FEATURES)), np.float32))
    return LabelledRows(rows, np.zeros(n, bool), np.zeros(n, bool), [], float(len(stores))), p


def test_the_forecast_threshold_keeps_every_validation_source_within_the_false_alert_budget():
    from models.pipeline import pick_kind_thresholds

    # A quiet source raises 1 false forecast a day at 0.95; a busy one 6 (five at 0.7, one at 0.95).
    # Pooled, a threshold at 0.7 costs 3.5 a store-day (within 4), but the busy store pays 6.
    bumps = {"quiet/s1": [0.95], "busy/s1": [0.7] * 5 + [0.95]}
    val, p = _day_of_forecasts(["quiet/s1", "busy/s1"], bumps)
    th = pick_kind_thresholds(val, p, 2.0, now=np.zeros(len(p)), budget=4.0)["empty_within_h"]
    assert 0.7 < th <= 0.95
    # With a budget the busy store meets at 0.7, or with no source named (one pool), 0.7 is low enough.
    assert pick_kind_thresholds(val, p, 2.0, now=np.zeros(len(p)), budget=6.0)["empty_within_h"] <= 0.7
    plain, p2 = _day_of_forecasts(["s1", "s2"], {"s1": bumps["quiet/s1"], "s2": bumps["busy/s1"]})
    assert 0.01 < pick_kind_thresholds(plain, p2, 2.0, now=np.zeros(len(p2)), budget=4.0)["empty_within_h"] <= 0.7


def test_false_empty_now_alerts_count_against_the_forecast_budget_and_an_unmeetable_budget_is_logged(caplog):
    from models.pipeline import pick_kind_thresholds

    bumps = {"quiet/s1": [0.95], "busy/s1": [0.7] * 5 + [0.95]}
    val, p = _day_of_forecasts(["quiet/s1", "busy/s1"], bumps)
    busy = 1  # the second store; facings f7-f9 of it raise a false empty_now at noon

    def detections(n: int) -> np.ndarray:
        now = np.zeros(len(p))
        for i in range(10 - n, 10):
            now[(busy * 10 + i) * 49 + 24] = 1.0
        return now

    # Forecasts alone at 0.7 cost the busy store 6 a day, within a budget of 6; its 3 false
    # detections make 9, so the threshold must rise above 0.7 (1 + 3 = 4 at 0.95).
    assert pick_kind_thresholds(val, p, 2.0, now=np.zeros(len(p)), budget=6.0)["empty_within_h"] <= 0.7
    with caplog.at_level("WARNING", logger="models.pipeline"):
        assert 0.7 < pick_kind_thresholds(val, p, 2.0, now=detections(3), budget=6.0)["empty_within_h"] <= 0.95
    assert not [r for r in caplog.records if "empty_within_h threshold" in r.getMessage()]
    # 7 false detections alone exceed the budget: no threshold can meet it, and the pick says so.
    caplog.clear()
    with caplog.at_level("WARNING", logger="models.pipeline"):
        pick_kind_thresholds(val, p, 2.0, now=detections(7), budget=6.0)
    assert [r for r in caplog.records if "empty_within_h threshold" in r.getMessage()]



def _noon_detections(good: str, bad: str, good_tail: list[float] = (), false_top: bool = False
                     ) -> tuple[LabelledRows, np.ndarray]:
    """Facings without a sensor, one day; at noon facings of each store are scored "empty now":
    the good store's first five are empty (0.9), then one empty facing per ``good_tail`` score
    and (``false_top``) a stocked one at 0.995; the bad store's two empty ones score 0.97 and
    its three stocked ones 0.9."""
    from gondola.clock import MINUTE_MS

    val, _ = _day_of_forecasts([good, bad], {})
    noon = int(val.rows.t.min()) + 24 * 30 * MINUTE_MS
    now = np.zeros(len(val))
    scores = {good: [0.9] * 5 + list(good_tail) + ([0.995] if false_top else []), bad: [0.97, 0.97, 0.9, 0.9, 0.9]}
    for k, (store, values) in enumerate(scores.items()):
        for i, v in enumerate(values):
            now[(k * 10 + i) * 49 + 24] = v
            if (store == good and v < 0.995) or i < 2:
                val.stockouts.append((store, f"f{i}", noon - 10 * MINUTE_MS, noon + 60 * MINUTE_MS))
    return val, now


def test_the_empty_now_threshold_reaches_its_precision_on_every_validation_source():
    from models.pipeline import pick_kind_thresholds

    # Pooled, 0.9 is 7 right of 10: a pool rule for 0.7 stops there while the bad source is 2 of 5.
    val, now = _noon_detections("good/s1", "bad/s1")
    fc = np.full(len(val), 0.01)
    assert 0.9 < pick_kind_thresholds(val, fc, 2.0, now=now, precision=0.7)["empty_now"] <= 0.97
    # Stores that name no source are one pool: 0.9 meets 0.7 there.
    plain, now = _noon_detections("s1", "s2")
    assert 0.5 <= pick_kind_thresholds(plain, fc, 2.0, now=now, precision=0.7)["empty_now"] <= 0.9


def test_one_false_alert_among_the_highest_scores_does_not_send_the_empty_now_threshold_to_the_top(caplog):
    from models.pipeline import pick_kind_thresholds

    # The good store's only alert at 0.97 or above is false: there it is 0 of 1 right (as a
    # float model's scores near 1 leave a source a handful of alerts); at 0.96 it is 4 of 5 and
    # the bad store 2 of 2. The goal is met between 0.9 and 0.96, not only "at the highest".
    val, now = _noon_detections("good/s1", "bad/s1", good_tail=[0.96] * 4, false_top=True)
    fc = np.full(len(val), 0.01)
    with caplog.at_level("WARNING", logger="models.pipeline"):
        assert 0.9 < pick_kind_thresholds(val, fc, 2.0, now=now, precision=0.7)["empty_now"] <= 0.96
    assert not [r for r in caplog.records if "empty_now threshold" in r.getMessage()]

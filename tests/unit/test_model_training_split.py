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

"""Training rows from the lake's gold.features table."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from gondola.errors import ConfigError
from models.features import FEATURES
from models.gold import rows_from_gold


def gold(vectors, labels, *, legacy=False):
    n = len(vectors)
    vec = ({"features_json": [json.dumps(v) for v in vectors]} if legacy
           else {"features": pa.array(vectors, pa.list_(pa.float32()))})
    return pa.table({"store_id": ["s1"] * n, "facing_id": [f"f{i}" for i in range(n)],
                     "hour_ms": list(range(n)), **vec, "label": labels, "horizon_h": [2.0] * n})


def test_gold_rows_become_feature_rows_with_labels():
    v = [float(i) for i in range(len(FEATURES))]
    data = rows_from_gold(gold([v, v], [0, 1]))
    assert data.rows.X.shape == (2, len(FEATURES)) and data.rows.X[1, 3] == 3.0
    assert data.y.tolist() == [False, True] and list(data.rows.facing) == ["f0", "f1"]


def test_gold_written_with_json_vectors_reads_the_same_as_the_list_column():
    v = [float(i) / 3 for i in range(len(FEATURES))]
    new, old = rows_from_gold(gold([v, v[::-1]], [0, 1])), rows_from_gold(gold([v, v[::-1]], [0, 1], legacy=True))
    assert new.rows.X.dtype == old.rows.X.dtype == "float32" and (new.rows.X == old.rows.X).all()
    assert new.rows.X[1, 0] == pytest.approx(v[-1]) and new.y.tolist() == old.y.tolist() == [False, True]


def test_gold_computed_by_another_feature_set_is_refused():
    for legacy in (False, True):
        with pytest.raises(ConfigError, match="recompute gold"):
            rows_from_gold(gold([[1.0] * len(FEATURES), [1.0] * (len(FEATURES) - 1)], [0, 0], legacy=legacy))
    with pytest.raises(ConfigError, match="lacks"):
        rows_from_gold(pa.table({"store_id": ["s1"]}))


def test_gold_empty_now_column_marks_rows_already_empty():
    v = [1.0] * len(FEATURES)
    table = gold([v, v, v], [1, 1, 0]).append_column("empty_now", pa.array([1, 0, 0], pa.int32()))
    data = rows_from_gold(table)
    assert data.empty_now_known and data.empty_now.tolist() == [True, False, False]


def test_gold_without_empty_now_says_it_does_not_know():
    v = [1.0] * len(FEATURES)
    data = rows_from_gold(gold([v], [1]))
    assert not data.empty_now_known and data.empty_now.tolist() == [False]

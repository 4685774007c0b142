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


def test_rows_the_lake_left_unlabelled_are_not_trained_on_and_legacy_rows_fall_back_to_the_sensor_rule():
    from models.gold import observed_in_lake

    v = [0.0] * len(FEATURES)
    table = gold([v] * 4, pa.array([1, None, 0, 0], pa.int32())).append_column(
        "label_source", pa.array(["gap_scan", None, "till", None]))
    data = rows_from_gold(table)
    assert data.y.tolist() == [True, False, False, False]
    # row 3: a label without a source (written before label_source): no sensor in its vector -> left out
    assert observed_in_lake(table, data, 2.0).tolist() == [True, False, True, False]
    # a table without label_source: one sensor facing, hourly, its sensor reporting -> the rows whose
    # horizon ends within the data count
    sensed = [1.0 if f == "has_sensor" else 0.5 if f == "hours_since_reading" else 0.0 for f in FEATURES]
    legacy = gold([sensed] * 4, [0, 1, 0, 0]).set_column(1, "facing_id", pa.array(["f0"] * 4)).set_column(
        2, "hour_ms", pa.array([h * 3_600_000 for h in range(4)]))
    assert observed_in_lake(legacy, rows_from_gold(legacy), 2.0).tolist() == [True, True, False, False]


def test_staff_evidence_that_sees_stock_outs_three_times_as_often_keeps_a_third_of_its_positive_rows():
    from models.gold import MIN_SENSOR_ROWS, observed_in_lake

    v = [0.0] * len(FEATURES)
    n_s, n_o = 20 * MIN_SENSOR_ROWS, 3000
    # sensor rows: half positive; staff evidence saw 60 % of the positives and 20 % of the negatives
    labels = [1] * (n_s // 2) + [0] * (n_s // 2) + [1] * (n_o // 2) + [0] * (n_o // 2)
    sources = ["sensor"] * n_s + ["gap_scan"] * (n_o // 2) + ["till"] * (n_o // 2)
    staff = ([1 if i < 0.6 * n_s // 2 else None for i in range(n_s // 2)]
             + [0 if i < 0.2 * n_s // 2 else None for i in range(n_s // 2)] + labels[n_s:])
    n = len(labels)
    table = pa.table({"store_id": ["s1"] * n, "facing_id": [f"f{i % 97}" for i in range(n)],
                      "hour_ms": [i * 3_600_000 for i in range(n)], "features": pa.array([v] * n, pa.list_(pa.float32())),
                      "label": pa.array(labels, pa.int32()), "horizon_h": [2.0] * n, "label_source": sources,
                      "label_without_sensor": pa.array(staff, pa.int32())})
    data = rows_from_gold(table)
    kept = observed_in_lake(table, data, 2.0)
    assert kept[:n_s].all() and kept[n_s + n_o // 2:].all()  # sensor rows and the other class: all
    assert abs(kept[n_s:n_s + n_o // 2].mean() - 1 / 3) < 0.04
    assert (observed_in_lake(table, data, 2.0) == kept).all()  # the same rows every time


def test_staff_evidence_is_evened_out_per_kind_of_facing_and_where_it_never_sees_stock_its_positives_go():
    """Facings whose SKU has one facing (the till speaks for them) and the others are thinned
    apart: on the second kind staff evidence never labels a stocked shelf, so training keeps none
    of its stock-outs there (they would teach that such shelves are always empty)."""
    from models.gold import observed_in_lake

    rows = []  # (sku_facings, label, source, label_without_sensor)
    for facings, seen_pos, seen_neg in ((1, 0.6, 0.2), (2, 0.5, 0.0)):
        rows += [(facings, 1, "sensor", 1 if i < seen_pos * 500 else None) for i in range(500)]
        rows += [(facings, 0, "sensor", 0 if i < seen_neg * 500 else None) for i in range(500)]
        rows += [(facings, 1, "gap_scan", 1)] * 1000
    rows += [(1, 0, "ledger", 0)] * 1000
    n = len(rows)
    vec = [[float(r[0]) if f == "sku_facings" else 0.0 for f in FEATURES] for r in rows]
    table = pa.table({"store_id": ["s1"] * n, "facing_id": [f"f{i % 97}" for i in range(n)],
                      "hour_ms": [i * 3_600_000 for i in range(n)], "features": pa.array(vec, pa.list_(pa.float32())),
                      "label": pa.array([r[1] for r in rows], pa.int32()), "horizon_h": [2.0] * n,
                      "label_source": [r[2] for r in rows], "label_without_sensor": pa.array([r[3] for r in rows], pa.int32())})
    kept = observed_in_lake(table, rows_from_gold(table), 2.0)
    one_pos, many_pos = slice(1000, 2000), slice(3000, 4000)
    assert kept[:1000].all() and kept[2000:3000].all() and kept[4000:].all()  # sensor rows, ledger negatives
    assert abs(kept[one_pos].mean() - 1 / 3) < 0.05  # seen 0.6 vs 0.2 where the till speaks
    assert not kept[many_pos].any()

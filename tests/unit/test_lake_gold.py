"""Silver -> gold as pure functions over hand-made silver rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cloud.lake.engine import DuckDBEngine
from cloud.lake.features import features
from cloud.lake.gold import gold_tables
from cloud.lake.tables import conform
from models.features import FEATURES

T0 = 1_764_460_800_000  # midnight UTC
MIN = 60_000


def readings(units: list[int], *, facing: str = "s001-f01", start: int = T0 + 8 * 60 * MIN, device: str = "shelf-1"):
    return [{"store_id": "s001", "device_id": device, "seq": i + 1, "ts": start + i * 10 * MIN, "facing_id": facing,
             "sku": "sku-1", "units_est": u, "battery_pct": 80.0 - i} for i, u in enumerate(units)]


def sales(n: int, *, hour: int = 8):
    return [{"store_id": "s001", "device_id": "pos-1", "seq": i + 1, "ts": T0 + hour * 60 * MIN + i * MIN,
             "txn_id": f"t{i // 2}", "register": "r01", "sku": "sku-1", "qty": 1, "price_cents": 150, "kind": "sale"}
            for i in range(n)]


def alert(ts: int, *, horizon: int = 60, seq: int = 1, facing: str = "s001-f01", kind: str | None = None):
    out = {"store_id": "s001", "device_id": "gw-1", "seq": seq, "ts": ts, "facing_id": facing, "sku": "sku-1",
           "state": "raised", "probability": 0.9, "horizon_min": horizon, "scorer": "m1"}
    return out | ({"kind": kind} if kind else {})


def run(*, r=(), p=(), a=(), h=(), products=(), c=()):
    t = lambda name, rows: conform(name, pa.Table.from_pylist(list(rows)) if rows else pa.table({}))  # noqa: E731
    inputs = {"readings": t("silver.shelf_reading", r), "pos": t("silver.pos_line", p),
              "alerts": t("silver.edge_alert", a), "health": t("silver.edge_health", h),
              "products": t("silver.products", products), "checks": t("silver.shelf_check", c)}
    inputs["keys"] = pa.concat_tables([inputs[n].select(["store_id", "device_id", "seq", "ts"]) for n in ("readings", "pos", "alerts", "health")])
    return gold_tables(DuckDBEngine(), inputs), inputs


def test_a_stock_out_has_duration_lost_sales_and_the_alert_lead_time():
    r = readings([3, 1, 0, 0, 0, 4])
    start = r[2]["ts"]
    out, _ = run(r=r, p=sales(6), a=[alert(start - 20 * MIN)], products=[{"sku": "sku-1", "price_cents": 150}])
    [so] = out["gold.stockouts"].to_pylist()
    assert so["start_ms"] == start and so["end_ms"] == r[5]["ts"] and so["duration_min"] == 30.0
    assert so["rate_per_h"] == 6.0 and so["lost_units_est"] == 3.0 and so["lost_sales_cents_est"] == 450.0
    assert so["alerted"] is True and so["alert_lead_min"] == 20.0 and so["ongoing"] is False


def test_an_alert_outside_its_horizon_does_not_count_and_an_open_stock_out_is_ongoing():
    r = readings([2, 0, 0])
    out, _ = run(r=r, a=[alert(r[1]["ts"] - 90 * MIN, horizon=60)])
    [so] = out["gold.stockouts"].to_pylist()
    assert so["ongoing"] is True and so["end_ms"] is None and so["duration_min"] is None
    assert so["alerted"] is False and so["alert_ms"] is None


def test_only_a_forecast_counts_as_a_warning_and_outcomes_keep_the_alert_kind():
    r = readings([3, 1, 0, 0, 0, 4])
    start = r[2]["ts"]
    # A detection just before the recorded start (readings lag) is not a warning; a forecast
    # is, and an alert without a kind (an older gateway) is a forecast.
    out, _ = run(r=r, a=[alert(start - 5 * MIN, kind="empty_now"), alert(start + 5 * MIN, seq=2, kind="empty_now")])
    [so] = out["gold.stockouts"].to_pylist()
    assert so["alerted"] is False
    kinds = sorted((o["kind"], o["outcome"]) for o in out["gold.alert_outcomes"].to_pylist())
    assert kinds == [("empty_now", "already_empty"), ("empty_now", "empty_after")]
    out, _ = run(r=r, a=[alert(start - 20 * MIN), alert(start - 30 * MIN, seq=2, kind="empty_within_h")])
    [so] = out["gold.stockouts"].to_pylist()
    assert so["alerted"] is True and so["alert_lead_min"] == 30.0
    assert {o["kind"] for o in out["gold.alert_outcomes"].to_pylist()} == {"empty_within_h"}


def test_shelf_state_counts_minutes_empty_per_hour():
    out, _ = run(r=readings([3, 0, 0, 2, 2, 2]))  # readings every 10 min from 08:00
    [row] = out["gold.shelf_state"].to_pylist()
    assert row["readings"] == 6 and row["min_units"] == 0 and row["minutes_empty"] == 20.0
    assert row["avg_units"] == round(9 / 6, 4)


def test_hourly_sales_sum_units_revenue_lines_and_transactions():
    p = sales(4) + [dict(sales(1)[0], seq=99, qty=-1, kind="return", txn_id="t9")]
    out, _ = run(p=p)
    [row] = out["gold.hourly_sales"].to_pylist()
    assert (row["units_sold"], row["net_units"], row["net_revenue_cents"], row["lines"], row["txns"]) == (4, 3, 450, 5, 3)
    assert row["hour_ms"] == T0 + 8 * 60 * MIN


def test_fleet_status_counts_sequence_gaps_as_missing_events():
    r = [x for x in readings([5] * 10) if x["seq"] not in (4, 5)]
    out, _ = run(r=r)
    [row] = out["gold.fleet_status"].to_pylist()
    assert (row["events"], row["seq_min"], row["seq_max"], row["missing"]) == (8, 1, 10, 2)
    assert row["battery_min"] == 71.0


def test_model_performance_scores_true_and_false_alerts_and_caught_stock_outs():
    r = readings([3, 0, 0, 5]) + readings([5, 5, 5, 5], facing="s001-f02", device="shelf-2")
    start = r[1]["ts"]
    a = [alert(start - 10 * MIN, seq=1), alert(start - 5 * MIN, seq=2, facing="s001-f02")]
    out, _ = run(r=r, a=a)
    rows = {x["scorer"]: x for x in out["gold.model_performance"].to_pylist()}
    assert set(rows) == {"m1", "(none)"}  # the scorer's alerts; the store-day's own row: its stock-outs
    m1, day = rows["m1"], rows["(none)"]
    assert (m1["alerts"], m1["true_alerts"], m1["precision"]) == (2, 1, 0.5)
    assert (m1["stockouts"], m1["caught"], m1["known_start"], m1["recall"], m1["mean_lead_min"]) == (None,) * 5
    assert (day["alerts"], day["stockouts"], day["known_start"], day["caught"]) == (0, 1, 1, 1)
    assert day["recall"] == 1.0 and day["mean_lead_min"] == 10.0 and day["precision"] is None


def test_model_performance_counts_a_stock_out_once_however_many_scorers_judged_the_day():
    # Three scorers raised alerts that day (two the store saw, one shadow): until the store-day row,
    # each scorer's row repeated the day's 2 stock-outs and 1 caught, so a sum over the table's
    # rows (what a BI total does) gave 6 stock-outs and 3 caught.
    r = (readings([3, 0, 0, 5]) + readings([4, 0, 0, 0], facing="s001-f02", device="shelf-2")
         + readings([5, 5, 5, 5], facing="s001-f03", device="shelf-3"))
    start = r[1]["ts"]
    a = [alert(start - 10 * MIN, seq=1), alert(start - 5 * MIN, seq=2, facing="s001-f03") | {"scorer": "rules:v1"},
         alert(start - 20 * MIN, seq=3, facing="s001-f02") | {"scorer": "shadow:m2"}]
    out, _ = run(r=r, a=a)
    rows = out["gold.model_performance"].to_pylist()
    assert sorted(x["scorer"] for x in rows) == ["(none)", "m1", "rules:v1", "shadow:m2"]
    total = lambda col: sum(x[col] or 0 for x in rows)  # noqa: E731
    assert len(out["gold.stockouts"]) == 2
    # 2 stock-outs, 1 caught (f01 by m1; f02's only alert is a shadow's: never raised in the store)
    assert (total("stockouts"), total("known_start"), total("caught")) == (2, 2, 1)
    assert (total("alerts"), total("true_alerts")) == (3, 2)  # each scorer's alerts still counted apart
    [day] = [x for x in rows if x["scorer"] == "(none)"]
    assert day["recall"] == 0.5 and day["mean_lead_min"] == 10.0


def test_features_follow_models_feature_order_and_label_upcoming_stock_outs():
    r = readings([3, 2, 1, 0, 0, 0, 0, 0, 0, 5], start=T0 + 8 * 60 * MIN + 5 * MIN)
    # one unit sold just before each of the three falling readings: the till agrees with the sensor
    p = [dict(x, ts=r[i]["ts"] + MIN) for i, x in enumerate(sales(3))]
    out, inputs = run(r=r, p=p)
    inputs["planogram"] = conform("silver.planogram", pa.Table.from_pylist(
        [{"store_id": "s001", "facing_id": "s001-f01", "sku": "sku-1", "capacity": 10, "has_sensor": True}]))
    f = features(inputs, out["gold.stockouts"])[0].to_pylist()
    assert [x["hour_ms"] for x in f] == [T0 + 9 * 60 * MIN]
    vec = f[0]["features"]
    assert len(vec) == len(FEATURES) and vec[FEATURES.index("units_est")] == 0.0
    assert vec[FEATURES.index("capacity")] == 10.0 and f[0]["label"] == 1 and f[0]["empty_now"] == 1


def test_a_staff_check_answers_the_alert_before_it_and_becomes_a_label():
    r = readings([3, 2, 2, 2])
    checks = [{"store_id": "s001", "device_id": "gw-1", "seq": 10, "ts": r[1]["ts"] + 5 * MIN, "facing_id": "s001-f01",
               "sku": "sku-1", "outcome": "was_fine", "alert_kind": "empty_within_h", "alert_ts": r[1]["ts"]},
              {"store_id": "s001", "device_id": "gw-1", "seq": 11, "ts": r[1]["ts"] + 9 * 60 * MIN,
               "facing_id": "s001-f01", "sku": "sku-1", "outcome": "restocked"}]
    out, _ = run(r=r, a=[alert(r[1]["ts"], horizon=60)], c=checks)
    [ao] = out["gold.alert_outcomes"].to_pylist()
    # The first check within the horizon (+1 h) answers the alert; the later one does not.
    assert ao["outcome"] == "false_alarm" and ao["check_outcome"] == "was_fine" and ao["checked_ms"] == checks[0]["ts"]
    labels = {(x["seq"], x["label"], x["response_min"]) for x in out["gold.shelf_checks"].to_pylist()}
    assert labels == {(10, 0, 5.0), (11, 1, None)}


def test_one_pos_line_stamped_2100_does_not_make_features_replay_every_hour_until_then():
    # Issue 10 point 10: the span of timestamps asked for ~650,000 hourly replays (a hang).
    # Feature hours are those within a day after some event: the same hours as before for a
    # store that reports, 24 more for the outlier.
    r = readings([3, 2, 1, 0, 0, 0, 0, 0, 0, 5], start=T0 + 8 * 60 * MIN + 5 * MIN)
    late = sales(1)[0] | {"seq": 99, "ts": 4_102_444_800_000}
    out, inputs = run(r=r, p=sales(3) + [late])
    inputs["planogram"] = conform("silver.planogram", pa.Table.from_pylist(
        [{"store_id": "s001", "facing_id": "s001-f01", "sku": "sku-1", "capacity": 10, "has_sensor": True}]))
    rows, states = features(inputs, out["gold.stockouts"])
    hours = [x["hour_ms"] for x in rows.to_pylist()]
    assert T0 + 9 * 60 * MIN in hours and len(hours) <= 2 * 24
    # state snapshots: the first midnight and the one after each day with events, not 27,000
    assert states["day_ms"].to_pylist() == [T0, T0 + 24 * 60 * MIN, 4_102_444_800_000 + 24 * 60 * MIN]


def test_fleet_status_counts_gaps_per_epoch_so_a_restarted_counter_is_no_loss():
    r = readings([5, 5, 5, 5])
    r2 = [x | {"seq": i, "epoch": 1, "ts": x["ts"] + 60 * MIN} for i, x in enumerate(readings([5, 5]))]
    out, inputs = run(r=r + r2)
    inputs["keys"] = pa.concat_tables([inputs["keys"].append_column("epoch", pa.array([0] * 4 + [1] * 2, pa.int64()))])
    [row] = gold_tables(DuckDBEngine(), inputs)["gold.fleet_status"].to_pylist()
    assert (row["events"], row["missing"]) == (6, 0)


def test_mean_lead_time_does_not_depend_on_the_order_of_the_rows():
    import itertools

    from cloud.lake.gold import GOLD_SQL

    # Four lead times whose mean, averaged as doubles, rounds to 63.5963 or 63.5964 depending on
    # the order of addition; the exact mean of the integer milliseconds is 63.596350.
    lead_ms = [5_245_686, 5_589_432, 4_005_786, 422_220]
    engine, seen = DuckDBEngine(threads=1), set()
    for order in itertools.permutations(lead_ms):
        so = conform("gold.stockouts", pa.Table.from_pylist([
            {"store_id": "s001", "facing_id": f"f{i}", "start_ms": T0 + i * 60 * MIN + ms, "alert_ms": T0 + i * 60 * MIN,
             "alerted": True, "alert_lead_min": round(ms / MIN, 4)} for i, ms in enumerate(order)]))
        no_alerts = conform("gold.alert_outcomes", pa.table({}))
        out = engine.run(GOLD_SQL["gold.model_performance"], {"stockouts": so, "alert_outcomes": no_alerts})
        seen.add(out["mean_lead_min"].to_pylist()[0])
    assert seen == {round(sum(lead_ms) / len(lead_ms) / MIN, 4)}


def test_a_gap_scan_on_an_empty_facing_without_a_sensor_labels_it_1_and_no_scan_leaves_it_null():
    # facing f01 has a sensor (keeps the store's hours active), f02 (sku-2) none: sku-2 sold 08:00-08:02
    r = readings([5] * 30)
    p = sales(3) + [dict(x, sku="sku-2", seq=100 + i) for i, x in enumerate(sales(3))]
    plan = conform("silver.planogram", pa.Table.from_pylist([
        {"store_id": "s001", "facing_id": "s001-f01", "sku": "sku-1", "capacity": 10, "has_sensor": True},
        {"store_id": "s001", "facing_id": "s001-f02", "sku": "sku-2", "capacity": 10, "has_sensor": False}]))
    scan = [{"store_id": "s001", "device_id": "hh-1", "seq": 1, "ts": T0 + 10 * 60 * MIN + 30 * MIN,
             "facing_id": "s001-f02", "sku": "sku-2", "round_id": "r1"}]
    for gaps, want in ((scan, {9: (1, "gap_scan"), 10: (1, "gap_scan"), 11: (1, "gap_scan")}),
                       ((), {9: (None, None), 10: (None, None), 11: (None, None)})):
        out, inputs = run(r=r, p=p)
        inputs["planogram"] = plan
        inputs["gaps"] = conform("silver.gap_scan", pa.Table.from_pylist(list(gaps)) if gaps else pa.table({}))
        f = [x for x in features(inputs, out["gold.stockouts"])[0].to_pylist() if x["facing_id"] == "s001-f02"]
        got = {(x["hour_ms"] - T0) // (60 * MIN): (x["label"], x["label_source"]) for x in f}
        # the sale at 08:02 took the last unit: empty from then on (no restock since) and seen at 10:30
        assert {h: got[h] for h in want} == want


def test_a_shelf_already_empty_at_its_first_reading_is_a_left_censored_stock_out():
    # Issue 14 (QA): a shelf empty from the facing's first reading "started" at that reading,
    # which put 22 of 60 demo stock-outs at 00:00-02:59 on the heat map.
    r = readings([0, 0, 4, 3, 0, 0, 2])
    out, _ = run(r=r, p=sales(6), a=[alert(r[0]["ts"] - 10 * MIN, horizon=30), alert(r[4]["ts"] - 15 * MIN, seq=2)])
    first, second = sorted(out["gold.stockouts"].to_pylist(), key=lambda s: s["start_ms"])
    assert first["start_ms"] == r[0]["ts"] and first["start_censored"] is True
    # its minutes are kept (a lower bound), its alert and lead time are unknown, not "missed"
    assert first["duration_min"] == 20.0 and first["open_min"] > 0
    assert first["alerted"] is None and first["alert_ms"] is None and first["alert_lead_min"] is None
    assert second["start_censored"] is False and second["alerted"] is True and second["alert_lead_min"] == 15.0
    [perf] = [x for x in out["gold.model_performance"].to_pylist() if x["scorer"] == "(none)"]
    # recall and lead time over the stock-out whose start is known; both still counted
    assert (perf["stockouts"], perf["known_start"], perf["caught"], perf["recall"], perf["mean_lead_min"]) == \
        (2, 1, 1, 1.0, 15.0)
    leads = sorted(((o["outcome"], o["lead_min"]) for o in out["gold.alert_outcomes"].to_pylist()), key=str)
    assert leads == [("empty_after", 15.0), ("empty_after", None)]


def test_a_stock_out_found_after_a_sensor_silent_over_a_day_is_censored_a_shorter_silence_is_not():
    day = 24 * 60 * MIN
    # the last reading before the empty one: 10 min before the silence starts counting
    for silence, censored in ((day + 20 * MIN, True), (day, False)):
        r = readings([5, 4]) + [dict(x, seq=10 + i, ts=x["ts"] + silence) for i, x in enumerate(readings([0, 0, 3]))]
        [so] = run(r=r)[0]["gold.stockouts"].to_pylist()
        assert so["start_censored"] is censored, silence


def test_minutes_from_milliseconds_round_half_up_on_integers_so_every_engine_agrees():
    # QA: 2,409,345 ms = 40.15575 min became 40.1557 in DuckDB and 40.1558 in Spark (a double at
    # a tie rounds by its binary value in one engine, its decimal text in the other).
    first = T0 + 8 * 60 * MIN
    r = readings([3, 0, 0, 2])
    for x, ts in zip(r, (first, first + 1000, first + 1000 + 1_234_563, first + 1000 + 2_409_345)):
        x["ts"] = ts
    out, _ = run(r=r, p=sales(6), a=[alert(first + 1000 - 1_234_563)])
    [so] = out["gold.stockouts"].to_pylist()
    assert (so["duration_min"], so["open_min"], so["alert_lead_min"]) == (40.1558, 40.1558, 20.5761)
    [st] = out["gold.shelf_state"].to_pylist()
    assert st["minutes_empty"] == 40.1558  # 20.57605 + 19.5797 min of one hour
    [ao] = out["gold.alert_outcomes"].to_pylist()
    assert ao["lead_min"] == 20.5761


def test_a_state_snapshot_kept_under_other_feature_rules_is_not_resumed(monkeypatch):
    # A lake's gold.feature_state written by older code (before a change of how events update a
    # FacingState) would carry old-rule state into new-rule rows: such a snapshot is ignored and
    # the store's history replayed, so the rows equal a run without any snapshot.
    import models.features
    from cloud.lake.features import planogram_hash

    r = readings([3, 2, 1, 0, 0, 0, 0, 0, 0, 5], start=T0 + 8 * 60 * MIN + 5 * MIN)
    out, inputs = run(r=r, p=sales(3))
    plan = conform("silver.planogram", pa.Table.from_pylist(
        [{"store_id": "s001", "facing_id": "s001-f01", "sku": "sku-1", "capacity": 10, "has_sensor": True}]))
    inputs["planogram"] = plan
    monkeypatch.setattr(models.features, "STATE_RULES_VERSION", models.features.STATE_RULES_VERSION - 1)
    old_hash = planogram_hash(plan)
    monkeypatch.undo()
    assert planogram_hash(plan) != old_hash
    # a snapshot that could not even be restored: resuming it would raise
    stale = {"s001": {"day_ms": T0, "first_ms": T0, "planogram_hash": old_hash, "state_json": "not a state"}}
    fresh = features(inputs, out["gold.stockouts"])[0]
    resumed = features(inputs, out["gold.stockouts"], snapshots=stale)[0]
    assert resumed.num_rows == fresh.num_rows > 0 and resumed.equals(fresh)
    current = {"s001": dict(stale["s001"], planogram_hash=planogram_hash(plan))}
    with pytest.raises(ValueError):  # the same snapshot under the current rules is resumed (not JSON)
        features(inputs, out["gold.stockouts"], snapshots=current)


def test_a_model_performance_table_of_the_old_grain_is_rewritten_once_as_a_full_rebuild_gives(tmp_path):
    # A lake whose gold.model_performance was written before the store-day row (no known_start
    # column, the day's stock-outs on every scorer's row) is rewritten whole from the lake's
    # gold.alert_outcomes and gold.stockouts on the next run: no old row double counts after it.
    from cloud.lake.runner import _upgrade_model_performance
    from cloud.lake.storage import LocalStorage

    r = readings([3, 0, 0, 5]) + readings([5, 5, 5, 5], facing="s001-f02", device="shelf-2")
    start = r[1]["ts"]
    out, _ = run(r=r, a=[alert(start - 10 * MIN, seq=1), alert(start - 5 * MIN, seq=2, facing="s001-f02")
                         | {"scorer": "m2"}])
    lake = LocalStorage(str(tmp_path))
    lake.write("gold.alert_outcomes", out["gold.alert_outcomes"])
    lake.write("gold.stockouts", out["gold.stockouts"])
    day = T0
    old = [{"store_id": "s001", "day_ms": day, "scorer": s, "alerts": 1, "true_alerts": t, "unobserved": 0,
            "stockouts": 1, "caught": 1, "precision": float(t), "recall": 1.0, "mean_lead_min": 10.0}
           for s, t in (("m1", 1), ("m2", 0))]
    lake.write("gold.model_performance", conform("gold.model_performance", pa.Table.from_pylist(old))
               .drop(["known_start"]))
    assert sum(x["stockouts"] for x in lake.read("gold.model_performance").to_pylist()) == 2  # the old double count
    _upgrade_model_performance(lake, DuckDBEngine())
    key = lambda x: x["scorer"]  # noqa: E731
    got = sorted(lake.read("gold.model_performance").to_pylist(), key=key)
    assert got == sorted(out["gold.model_performance"].to_pylist(), key=key)
    assert sum(x["stockouts"] or 0 for x in got) == 1 and [x["scorer"] for x in got] == ["(none)", "m1", "m2"]
    version = lake.version("gold.model_performance")
    _upgrade_model_performance(lake, DuckDBEngine())  # once: the new grain is left alone
    assert lake.version("gold.model_performance") == version

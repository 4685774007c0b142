"""gold.alert_outcomes on facings without a shelf sensor: judged by gap scans, staff checks,
restocks and the till, or ``unobserved`` (left out of precision) when nothing judged them.
Before, no stock-out row (there are none without a sensor) made every such alert a false alarm."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cloud.lake.engine import DuckDBEngine
from cloud.lake.gold import gold_tables
from cloud.lake.tables import MEASURES, conform

T0 = 1_764_460_800_000  # midnight UTC
MIN = 60_000
AT = T0 + 10 * 60 * MIN  # the alerts' instant


def _alert(seq: int, facing: str, kind: str, ts: int = AT, horizon: int = 120):
    return {"store_id": "s001", "device_id": "gw-1", "seq": seq, "ts": ts, "facing_id": facing, "sku": f"sku-{facing}",
            "state": "raised", "probability": 0.9, "horizon_min": horizon, "scorer": "m1", "kind": kind}


def _plan(*facings: tuple[str, str, bool]):
    return [{"store_id": "s001", "facing_id": f, "sku": sku, "capacity": 10, "has_sensor": sensed}
            for f, sku, sensed in facings]


def _gap(facing: str, ts: int, seq: int = 1):
    return {"store_id": "s001", "device_id": "hh-1", "seq": seq, "ts": ts, "facing_id": facing, "sku": f"sku-{facing}",
            "round_id": "r1"}


def _check(facing: str, ts: int, outcome: str, seq: int = 1):
    return {"store_id": "s001", "device_id": "gw-1", "seq": 100 + seq, "ts": ts, "facing_id": facing,
            "sku": f"sku-{facing}", "outcome": outcome}


def _sale(sku: str, ts: int, seq: int = 1):
    return {"store_id": "s001", "device_id": "pos-1", "seq": seq, "ts": ts, "txn_id": f"t{seq}", "register": "r01",
            "sku": sku, "qty": 1, "price_cents": 100, "kind": "sale"}


def _restock(facing: str, ts: int, units: int, seq: int = 1):
    return {"store_id": "s001", "device_id": "hh-1", "seq": 50 + seq, "ts": ts, "facing_id": facing,
            "sku": f"sku-{facing}", "units_added": units}


def inputs_of(*, alerts, plan, gaps=(), checks=(), pos=(), restocks=(), readings=()) -> dict[str, pa.Table]:
    """The gold SQL's named inputs from hand-made silver rows."""
    t = lambda name, rows: conform(name, pa.Table.from_pylist(list(rows)) if rows else pa.table({}))  # noqa: E731
    inputs = {"readings": t("silver.shelf_reading", readings), "pos": t("silver.pos_line", pos),
              "alerts": t("silver.edge_alert", alerts), "health": t("silver.edge_health", ()),
              "products": t("silver.products", ()), "checks": t("silver.shelf_check", checks),
              "gaps": t("silver.gap_scan", gaps), "restocks": t("silver.shelf_restock", restocks),
              "planogram": t("silver.planogram", plan)}
    inputs["keys"] = pa.concat_tables([inputs[n].select(["store_id", "device_id", "seq", "ts"])
                                       for n in ("readings", "pos", "alerts")])
    return inputs


def _run(engine=None, **rows):
    out = gold_tables(engine or DuckDBEngine(), inputs_of(**rows))
    return {o["seq"]: o["outcome"] for o in out["gold.alert_outcomes"].to_pylist()}, out


#: Every case below in one store's rows (alerts on f1-f5 of each case, renamed apart): the
#: Spark parity test (tests/integration/test_lake_spark.py) runs them on both engines.
def all_cases() -> dict:
    plan = _plan(("f1", "sku-a", False), ("f2", "sku-m", False), ("f3", "sku-m", False), ("f4", "sku-x", False),
                 ("f5", "sku-y", False), ("f6", "sku-d", True), ("f7", "sku-c", False))
    alerts = [_alert(1, "f1", "empty_now"), _alert(2, "f2", "empty_now"), _alert(3, "f4", "empty_within_h"),
              _alert(4, "f5", "empty_now"), _alert(5, "f6", "empty_now"), _alert(6, "f7", "empty_within_h"),
              _alert(7, "f3", "empty_within_h")]
    return dict(alerts=alerts, plan=plan, gaps=[_gap("f5", AT + 60 * MIN, 1), _gap("f3", AT + 100 * MIN, 2)],
                checks=[_check("f2", AT + 15 * MIN, "was_fine", 1), _check("f7", AT + 60 * MIN, "restocked", 2)],
                pos=[_sale("sku-a", AT + 5 * MIN, 1), _sale("sku-m", AT + 5 * MIN, 2), _sale("sku-c", AT + 130 * MIN, 3)],
                restocks=[_restock("f4", AT + 90 * MIN, 10, 1), _restock("f5", AT + 10 * MIN, 3, 2)])


ALL_CASES_OUTCOMES = {1: "false_alarm", 2: "false_alarm", 3: "empty_seen", 4: "unobserved", 5: "false_alarm",
                      6: "unobserved", 7: "empty_seen"}


def test_empty_now_without_a_sensor_is_right_on_a_later_gap_wrong_on_a_fine_check_and_else_unobserved():
    plan = _plan(("f1", "sku-a", False), ("f2", "sku-b", False), ("f3", "sku-c", False), ("f4", "sku-d", True))
    alerts = [_alert(1, "f1", "empty_now"), _alert(2, "f2", "empty_now"), _alert(3, "f3", "empty_now"),
              _alert(4, "f4", "empty_now")]
    outcomes, out = _run(alerts=alerts, plan=plan, gaps=[_gap("f1", AT + 40 * MIN)],
                         checks=[_check("f2", AT + 15 * MIN, "was_fine")])
    # f1: a gap scan 40 min later, nothing restocked in between; f2: staff found it fine; f3: no
    # evidence at all; f4 has a sensor that saw no stock-out: a false alarm as before.
    assert outcomes == {1: "empty_seen", 2: "false_alarm", 3: "unobserved", 4: "false_alarm"}
    [perf] = [x for x in out["gold.model_performance"].to_pylist() if x["scorer"] == "m1"]
    assert (perf["alerts"], perf["true_alerts"], perf["unobserved"]) == (3, 1, 1)
    assert perf["precision"] == pytest.approx(1 / 3)


def test_till_and_restocks_judge_alerts_on_a_sku_with_one_facing():
    # sku-a has one facing (its sales are that facing's); sku-m has two: its sales prove nothing.
    plan = _plan(("f1", "sku-a", False), ("f2", "sku-m", False), ("f3", "sku-m", False), ("f4", "sku-x", False),
                 ("f5", "sku-y", False))
    alerts = [_alert(1, "f1", "empty_now"), _alert(2, "f2", "empty_now"),
              _alert(3, "f4", "empty_within_h"), _alert(4, "f5", "empty_now")]
    pos = [_sale("sku-a", AT + 5 * MIN, 1), _sale("sku-m", AT + 5 * MIN, 2)]
    # f4: a refill of the whole facing within the horizon proves it was empty just before;
    # f5: a partial refill before the only gap scan: the scan says nothing about the alert's time.
    restocks = [_restock("f4", AT + 90 * MIN, 10, 1), _restock("f5", AT + 10 * MIN, 3, 2)]
    outcomes, _ = _run(alerts=alerts, plan=plan, pos=pos, restocks=restocks, gaps=[_gap("f5", AT + 60 * MIN)])
    assert outcomes == {1: "false_alarm", 2: "unobserved", 3: "empty_seen", 4: "unobserved"}


def test_a_forecast_without_a_sensor_needs_a_gap_within_its_horizon_or_stock_past_it():
    plan = _plan(("f1", "sku-a", False), ("f2", "sku-b", False), ("f3", "sku-c", False), ("f4", "sku-d", False))
    alerts = [_alert(k, f"f{k}", "empty_within_h") for k in range(1, 5)]
    gaps = [_gap("f1", AT + 100 * MIN, 1), _gap("f2", AT + 150 * MIN, 2)]  # horizon 120 min
    # f3: sold at +130 min with no restock since the alert: stock all through the horizon;
    # f4: the same sale after a refill at +60 min says nothing about the horizon before the refill.
    pos = [_sale("sku-c", AT + 130 * MIN, 1), _sale("sku-d", AT + 130 * MIN, 2)]
    outcomes, out = _run(alerts=alerts, plan=plan, gaps=gaps, pos=pos, checks=[_check("f4", AT + 60 * MIN, "restocked")])
    assert outcomes == {1: "empty_seen", 2: "unobserved", 3: "false_alarm", 4: "unobserved"}
    [perf] = [x for x in out["gold.model_performance"].to_pylist() if x["scorer"] == "m1"]
    assert (perf["alerts"], perf["true_alerts"], perf["unobserved"]) == (2, 1, 2)


def test_report_measures_leave_unobserved_alerts_out_of_precision():
    import duckdb

    rows = [{"kind": "empty_now", "outcome": o} for o in ("empty_seen", "already_empty", "false_alarm", "unobserved")]
    rows += [{"kind": "empty_within_h", "outcome": o} for o in ("empty_after", "empty_seen", "unobserved", "unobserved")]
    con = duckdb.connect()
    con.register("gold_alert_outcomes", pa.Table.from_pylist(rows))
    got = {m.name: con.execute(f"SELECT {m.sql} FROM gold_alert_outcomes").fetchone()[0]
           for m in MEASURES if m.table == "gold.alert_outcomes"}
    assert got["empty_now_precision"] == pytest.approx(2 / 3) and got["empty_now_unobserved"] == 1
    assert got["forecast_precision"] == 1.0 and got["forecast_unobserved"] == 2
    assert got["unobserved_alerts"] == 3 and got["alert_precision"] == pytest.approx(4 / 5)
    assert got["true_alerts"] == 4 and got["alerts"] == 8


def test_all_cases_together_give_each_its_own_outcome():
    outcomes, _ = _run(**all_cases())
    assert outcomes == ALL_CASES_OUTCOMES


def test_the_rollout_and_the_drift_check_read_precision_over_judged_alerts(tmp_path):
    # gold.model_performance as the lake writes it, read by the rollout's live figures and the
    # drift check's live precision: the 2 unobserved alerts are neither right nor false alarms.
    from cloud.lake.storage import LocalStorage
    from cloud.rollout import LakeLiveFigures
    from models.drift import live_precision

    _, out = _run(**all_cases())
    lake = LocalStorage(str(tmp_path))
    lake.write("gold.model_performance", out["gold.model_performance"])
    day = T0 // 86_400_000 * 86_400_000
    live = LakeLiveFigures(str(tmp_path)).figures("m1", ["gw-s001"], day, day + 86_400_000)
    assert (live["alerts"], live["true_alerts"]) == (5, 2) and live["precision"] == pytest.approx(2 / 5)
    assert live["false_per_store_day"] == pytest.approx(3.0)  # the 3 false alarms of one store-day
    drift = live_precision(str(tmp_path), "m1", day + 86_400_000, window_days=1, min_alerts=5)
    assert drift["recent"] == {"alerts": 5, "true_alerts": 2, "precision": pytest.approx(2 / 5)}

"""The same silver and gold SQL on local Spark gives the embedded engine's tables."""

from __future__ import annotations

import importlib.util
import re
import shutil

import pyarrow as pa
import pytest

from cloud.lake.gold import gold_tables
from cloud.lake.runner import GOLD_INPUTS
from cloud.lake.silver import silver_events
from cloud.lake.tables import TABLES, with_partition
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.contracts import encode_batch
from gondola.hub import LocalHub
from tests.conftest import require

# JVM start-up and one Spark job per query: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


def _normalized(table: pa.Table, name: str) -> list[dict]:
    table = with_partition(name, table)  # the partition column is derived when rows are written
    key = [k for k in TABLES[name].key] or table.column_names[:2]
    rows = table.sort_by([(k, "ascending") for k in key]).to_pylist()
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


@pytest.fixture(scope="module")
def spark():
    require(shutil.which("java") is not None, "Java 17 (Debian package 'openjdk-17-jre-headless')")
    require(importlib.util.find_spec("pyspark") is not None, "pyspark (pip install 'gondola[dev]')")
    from cloud.lake.spark import SparkEngine

    engine = SparkEngine()
    yield engine
    engine.stop()


def test_spark_reads_the_lake_and_produces_the_same_silver_and_gold_tables_as_the_embedded_engine(tmp_path, spark):
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=2, facings=3, hours=12))
    write_master_csvs(tmp_path / "master", stores=2, facings=3)
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite")))
    cloud.ingest_batch(tmp_path / "master")
    cloud.ingest_stream()
    cloud.transform()
    storage = cloud.storage

    # Spark reads the lake's Delta tables as their current Parquet files.
    bronze = spark._collect(spark.read_delta(storage, "bronze.events"))
    assert bronze.num_rows == cloud.table_counts()["bronze.events"]
    # Silver for one event type (all six run the same generated SQL; keeps the test short).
    silver = silver_events(spark, bronze, {}, run_id="spark", run_at=0, types=("pos.line",))
    assert _normalized(spark._collect(silver["tables"]["silver.pos_line"]), "silver.pos_line") == \
        _normalized(storage.read("silver.pos_line"), "silver.pos_line")

    inputs = {alias: spark._collect(spark.read_delta(storage, table)) for table, alias in GOLD_INPUTS.items()}
    inputs["products"] = spark._collect(spark.read_delta(storage, "silver.products"))
    inputs["keys"] = pa.concat_tables([inputs[a].select(["store_id", "device_id", "seq", "ts"]) for a in GOLD_INPUTS.values()])
    gold = {name: spark._collect(rows) for name, rows in gold_tables(spark, inputs).items()}  # DataFrames
    assert gold["gold.stockouts"].num_rows > 0
    inputs["planogram"] = spark._collect(spark.read_delta(storage, "silver.planogram"))
    gold["gold.features"], gold["gold.feature_state"] = spark.features(inputs, gold["gold.stockouts"])  # per store
    # stock-out causes are plain Python over gold.stockouts, no engine's (the runner test covers them)
    assert set(gold) == {t for t in TABLES if t.startswith("gold.")} - {"gold.stockout_causes"}
    for name, rows in gold.items():
        assert _normalized(rows, name) == _normalized(storage.read(name), name), name


def _adversarial_events() -> tuple[list[dict], list[dict]]:
    """A day of two stores plus the inputs engines disagree on when left to their own casts."""
    from gondola.contracts import make_event

    events = list(day_events(stores=2, facings=2, hours=5))
    t = events[len(events) // 2]["ts"]

    def odd(n: int, etype: str, data: dict, **envelope) -> dict:
        e = make_event(etype, store_id="s001", device_id=f"odd-{etype}", seq=n, ts=t + n * 1000, data=data)
        return e | envelope

    sale = {"txn_id": "tx", "register": "r\u2603", "line": 1, "sku": "sku-0000", "qty": 2, "price_cents": 150}
    read = {"facing_id": "s001-f00", "sku": "sku-0000", "weight_g": 100.0, "units_est": 3, "battery_pct": 50.5,
            "rssi_dbm": -70}
    alert = {"facing_id": "s001-f00", "sku": "sku-0000", "state": "raised", "probability": 0.5, "horizon_min": 60,
             "scorer": "x"}
    extra = odd(8, "pos.line", sale)
    extra["data"]["coupon"] = "y"
    no_store = odd(9, "pos.line", sale)
    no_store.pop("store_id")
    return events, [
        odd(1, "pos.line", sale | {"qty": 2.7}), odd(2, "pos.line", sale | {"qty": "7"}),
        odd(3, "pos.line", sale | {"qty": 2.0, "kind": "void"}), odd(4, "pos.line", sale | {"sku": "sku-9999"}),
        odd(5, "pos.line", sale | {"price_cents": 0, "qty": -1, "kind": "return"}),
        odd(6, "pos.line", sale | {"qty": 1e3}), odd(7, "pos.line", sale, seq=2**70),
        extra, no_store,
        odd(1, "shelf.reading", read | {"weight_g": "NaN"}), odd(2, "shelf.reading", read | {"units_est": 2.5}),
        odd(3, "shelf.reading", read | {"battery_pct": 150.0}), odd(4, "shelf.reading", read | {"weight_g": 1.5e-300}),
        odd(1, "edge.alert", alert | {"probability": 1.5}), odd(2, "edge.alert", alert | {"state": "maybe"}),
        odd(3, "edge.alert", alert | {"horizon_min": 30.0}),
        # late: an old reading of a store's sensor after its newer ones, and a resent event
        odd(5, "shelf.reading", read, ts=events[0]["ts"]), events[5],
    ] + [
        # minutes at a tie: empty 1,234,563 + 1,174,782 = 2,409,345 ms (20.57605 and 40.15575 min)
        make_event("shelf.reading", store_id="s001", device_id="odd-tie", seq=i + 1, ts=t + dt,
                   data=read | {"facing_id": "s001-f99", "units_est": u, "weight_g": u * 100.0})
        for i, (dt, u) in enumerate(((0, 3), (1000, 0), (1000 + 1_234_563, 0), (1000 + 2_409_345, 2)))
    ]


def _adversarial_master(folder):
    # s002 has no planogram: it produces no feature rows (the Spark engine crashed on that)
    write_master_csvs(folder, stores=1, facings=2)
    (folder / "products.csv").write_text(
        "sku,name,category,price_cents,unit_weight_g,pack_size\n"
        "sku-0000,A,g,100,250,6\nsku-0001,B,g,110,NaN,2.5\nsku-0002,C,g,n/a,1e2,6\nsku-0003,D,g,2.7,,\n")
    (folder / "sales_daily_1.csv").write_text(
        "date,store_id,sku,units,revenue_cents\n"
        "2026-02-07,s001,sku-0000,3,300\n2026-02-07,s001,sku-0001,2.5,250\n02/07/2026,s001,sku-0000,1,100\n"
        "2026-02-08,s001,sku-0000,-1,100\n2026-02-08,s001,sku-0001,1,x\n2026-02-08,,sku-0000,1,100\n"
        "2026-02-08,s001,sku-0000,4,400\n2026-02-08,s001,sku-0000,5,500\n2026-02-30,s001,sku-0000,1,1\n"
        "2026-02-09,s001,sku-0001, 2.0 ,200\n2026-02-09,s001,sku-0000,-1,-100\n")
    (folder / "stock_record_1.csv").write_text(
        "date,store_id,sku,book_units,counted_units\n"
        "2026-02-07,s001,sku-0000,12,\n2026-02-07,s001,sku-0001,-2,0\n2026-02-07,s001,sku-0002,4,-1\n"
        "2026-02-08,s001,sku-0000,1e1,\n2026-02-08,s001,sku-0001, 3 , 3\n2026-02-31,s001,sku-0000,1,\n")


def test_the_runner_on_both_engines_builds_the_same_lake_from_adversarial_input(tmp_path, spark, monkeypatch):
    from cloud.lake import runner
    from cloud.lake.spark import _FILE_COLUMNS
    from cloud.lake.storage import LakeStorage

    with LocalHub(tmp_path / "hub.sqlite") as hub:
        events, odd = _adversarial_events()
        fill_hub(hub, events)
        msg = encode_batch(odd, store_id="s001")  # one message: the event without a store is in it
        hub.send("gw-s001", msg.body, msg.properties)
    _adversarial_master(tmp_path / "master")
    lakes = {}
    # The columns of every DataFrame whose rows came to the driver, outside the master data step
    # (master data is small and written by the driver with deltalake).
    collected, in_master = [], []
    frame_class = type(spark.session.range(1))  # the session's concrete DataFrame class
    for name in ("toArrow", "toPandas", "collect", "toLocalIterator"):
        method = getattr(frame_class, name)
        monkeypatch.setattr(frame_class, name, lambda df, *a, _m=method, **k: (
            in_master or collected.append(set(df.columns)), _m(df, *a, **k))[1])
    master_step = runner._transform_master
    monkeypatch.setattr(runner, "_transform_master", lambda *a, **k: (
        in_master.append(1), master_step(*a, **k), in_master.clear()))
    read_here = []  # tables the driver read rows of with deltalake during the Spark run
    for name in ("read", "changes"):
        method = getattr(LakeStorage, name)
        monkeypatch.setattr(LakeStorage, name, lambda st, table, *a, _m=method, **k: (
            read_here.append(table) if st.root.endswith("spark") else None, _m(st, table, *a, **k))[1])
    for engine in ("duckdb", "spark"):
        cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / engine), hub_path=str(tmp_path / "hub.sqlite"),
                                          engine=engine, consumer_group=engine))
        cloud.ingest_batch(tmp_path / "master")
        assert cloud.ingest_stream() > 0
        cloud.transform()
        lakes[engine] = cloud
    monkeypatch.undo()
    # Silver events, quarantine and gold were computed and written by the executors: what came to
    # the driver is counts, file descriptions, and the master data (small, written by deltalake).
    small = {"n", "ok_rows", "ok_keys", "late", "ts_min", "old", "store_id", "kind", "type", "table"} | set(_FILE_COLUMNS)
    table_data = [c for c in collected if not all(re.fullmatch(r"f\d+", x) or x in small for x in c)]
    assert collected and not table_data, table_data
    # ... and the driver read no bronze event, sensor reading or feature row itself (it still reads
    # master data, feature-state snapshots and what the Python stock-out causes need).
    assert read_here and not {"bronze.events", "silver.shelf_reading", "gold.features"} & set(read_here), read_here
    checked = []
    for name in TABLES:
        if not name.startswith(("silver.", "gold.")):
            continue
        tables = {e: lakes[e].storage.read(name) for e in lakes}
        if tables["duckdb"] is None:
            assert tables["spark"] is None, name
            continue
        rows = {}
        for e, table in tables.items():
            drop = [c for c in ("ingest_run", "run_id", "run_at") if c in table.column_names]
            table = table.drop(drop)
            # every column, every row; floating point to 1e-9 relative (sums may add in another order)
            rows[e] = sorted((tuple((k, _close(v)) for k, v in r.items()) for r in table.to_pylist()), key=repr)
        assert rows["spark"] == rows["duckdb"], name
        checked.append(name)
    assert {"silver.pos_line", "silver.quarantine", "silver.products", "silver.sales_daily", "silver.stock_record",
            "gold.features",
            "gold.stockouts"} <= set(checked)
    features = lakes["duckdb"].storage.read("gold.features")
    assert features.num_rows > 0 and set(features["store_id"].to_pylist()) == {"s001"}
    quarantined = lakes["duckdb"].storage.read("silver.quarantine").num_rows
    assert quarantined >= 20
    tie = [r for r in lakes["spark"].storage.read("gold.stockouts").to_pylist() if r["facing_id"] == "s001-f99"]
    assert [r["duration_min"] for r in tie] == [40.1558]


def _close(v):
    import math

    if isinstance(v, float) and math.isfinite(v) and v != 0:
        return float(f"{v:.9e}")
    return v


def test_spark_executors_write_the_feature_files_and_the_runner_commits_them_replacing_the_window(tmp_path, spark):
    """Two days on Spark in two runs (the second replaces the first's window: files holding rows
    on both sides are rewritten by executors) give the features and states of one embedded run."""
    import json

    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.spark import StagedFiles

    events = list(day_events(stores=2, facings=3, hours=36))
    half = events[0]["ts"] + 30 * 3_600_000  # the second run starts inside the first one's last day
    write_master_csvs(tmp_path / "master", stores=2, facings=3)
    with LocalHub(tmp_path / "hub_all.sqlite") as hub:
        fill_hub(hub, events)
    one = build_cloud(CloudSettings(lake_uri=str(tmp_path / "duckdb"), hub_path=str(tmp_path / "hub_all.sqlite")))
    one.ingest_batch(tmp_path / "master")
    one.ingest_stream()
    one.transform()

    staged = []

    class SqlOnDuckDBFeaturesOnSpark(DuckDBEngine):  # keeps the test short: Spark runs only the replay
        def features(self, *args, **kwargs):
            staged.append(spark.features(*args, **kwargs))
            return staged[-1]

    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "spark"), hub_path=str(tmp_path / "hub.sqlite")))
    cloud.engine = SqlOnDuckDBFeaturesOnSpark()
    cloud.ingest_batch(tmp_path / "master")
    for part in ([e for e in events if e["ts"] < half], [e for e in events if e["ts"] >= half]):
        with LocalHub(tmp_path / "hub.sqlite") as hub:
            fill_hub(hub, part)
        cloud.ingest_stream()
        cloud.transform()
    # The replay handed back files, not rows (the rows never came to the driver).
    assert len(staged) == 2 and all(isinstance(t, StagedFiles) and t.files for out in staged for t in out)
    for name in ("gold.features", "gold.feature_state"):
        rows = {}
        for e, lake in (("duckdb", one), ("spark", cloud)):
            rows[e] = sorted((tuple((k, _close(v)) for k, v in r.items()) for r in lake.storage.read(name).to_pylist()),
                             key=repr)
        assert rows["spark"] == rows["duckdb"] and rows["spark"], name
    # The second run's commit removed the files that held rows of its window and added new ones,
    # with the gold watermarks, in one Delta commit.
    log = tmp_path / "spark" / "gold" / "features" / "_delta_log"
    last = [json.loads(line) for line in sorted(log.glob("*.json"))[-1].read_text().splitlines()]
    kinds = {next(iter(a)) for a in last}
    assert {"add", "remove", "txn"} <= kinds


def test_alerts_on_facings_without_a_sensor_are_judged_the_same_on_spark(spark):
    from cloud.lake.engine import DuckDBEngine
    from tests.unit.test_lake_alert_evidence import ALL_CASES_OUTCOMES, all_cases, inputs_of

    inputs = inputs_of(**all_cases())
    got = {n: spark._collect(r) for n, r in gold_tables(spark, inputs).items()
           if n in ("gold.alert_outcomes", "gold.model_performance")}
    want = gold_tables(DuckDBEngine(), inputs)
    for name in got:
        assert _normalized(got[name], name) == _normalized(want[name], name), name
    assert {r["seq"]: r["outcome"] for r in got["gold.alert_outcomes"].to_pylist()} == ALL_CASES_OUTCOMES

"""The same silver and gold SQL on local Spark gives the embedded engine's tables."""

from __future__ import annotations

import importlib.util
import shutil

import pyarrow as pa
import pytest

from cloud.lake.gold import gold_tables
from cloud.lake.runner import GOLD_INPUTS
from cloud.lake.silver import silver_events
from cloud.lake.tables import TABLES
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub
from tests.conftest import require

# JVM start-up and one Spark job per query: minutes on a busy 2-core machine.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]


def _normalized(table: pa.Table, name: str) -> list[dict]:
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
    assert _normalized(silver["tables"]["silver.pos_line"], "silver.pos_line") == \
        _normalized(storage.read("silver.pos_line"), "silver.pos_line")

    inputs = {alias: spark._collect(spark.read_delta(storage, table)) for table, alias in GOLD_INPUTS.items()}
    inputs["products"] = spark._collect(spark.read_delta(storage, "silver.products"))
    inputs["keys"] = pa.concat_tables([inputs[a].select(["store_id", "device_id", "seq", "ts"]) for a in GOLD_INPUTS.values()])
    gold = gold_tables(spark, inputs)
    assert gold["gold.stockouts"].num_rows > 0
    inputs["planogram"] = spark._collect(spark.read_delta(storage, "silver.planogram"))
    gold["gold.features"] = spark.features(inputs, gold["gold.stockouts"])  # Python tasks per store
    # gold.stockout_causes is one Python function over gold and silver for both engines (runner)
    assert set(gold) == {t for t in TABLES if t.startswith("gold.")} - {"gold.stockout_causes"}
    for name, rows in gold.items():
        assert _normalized(rows, name) == _normalized(storage.read(name), name), name


def test_the_runner_on_the_spark_engine_builds_the_same_lake(tmp_path, spark):
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=1, facings=2, hours=4))
    lakes = {}
    for engine in ("duckdb", "spark"):
        cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / engine), hub_path=str(tmp_path / "hub.sqlite"),
                                          engine=engine, consumer_group=engine))
        assert cloud.ingest_stream() > 0
        cloud.transform()
        lakes[engine] = cloud
    for name in TABLES:
        if name.startswith(("silver.pos", "silver.shelf", "silver.edge", "gold.")):
            spark_rows, duck_rows = (_normalized(lakes[e].storage.read(name), name) for e in ("spark", "duckdb"))
            for row in spark_rows + duck_rows:
                row.pop("ingest_run", None)  # two ingest runs, one per lake
            assert spark_rows == duck_rows, name

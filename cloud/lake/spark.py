"""The Spark engine: the lake's SQL transformations on Spark (Databricks / Synapse Spark).

Runs the very SQL text ``DuckDBEngine`` runs (``JSON_STR`` becomes ``get_json_object``,
``JSON_STRUCT`` becomes ``from_json``).
Inputs are Arrow tables (``run``) or a Delta table's current Parquet files
(``read_delta``: the Delta jars are not available offline, and the lake's tables need no
deletion vectors, so reading the files of the current version is reading the table).

Locally it starts ``local[2]`` on loopback with the UI off; in production the session comes
from the platform (``SparkEngine(session=spark)``).
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

import pyarrow as pa

__all__ = ["SparkEngine"]


class SparkEngine:
    """Spark SQL over registered temporary views; results come back as Arrow."""

    name = "spark"

    def __init__(self, session=None, *, master: str = "local[2]"):
        self._session = session
        self._master = master

    @property
    def session(self):
        if self._session is None:
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # Python tasks (applyInPandas) must run in this interpreter, with its packages.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            from pyspark.sql import SparkSession

            self._session = (
                SparkSession.builder.master(self._master)
                .appName("gondola-lake")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.shuffle.partitions", "1")
                .config("spark.default.parallelism", "1")
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .getOrCreate()
            )
        return self._session

    def run(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        spark = self.session
        for name, table in inputs.items():
            spark.createDataFrame(table).createOrReplaceTempView(name)
        from cloud.lake.engine import expand_macros

        return self._collect(spark.sql(expand_macros(sql, "spark")))

    def read_delta(self, storage, table: str):
        """A Spark DataFrame of a lake table's current version (its Parquet files)."""
        files = storage.file_uris(table)
        if not files:  # a table with only empty commits has no data files
            from cloud.lake.tables import schema_of

            return self.session.createDataFrame(pa.Table.from_batches([], schema=schema_of(table)))
        return self.session.read.parquet(*files)

    def features(self, inputs: dict[str, pa.Table], stockouts: pa.Table, *, cutoff: dict[str, int] | None = None,
                 snapshots: dict[str, dict] | None = None) -> tuple[pa.Table, pa.Table]:
        """``gold.features`` and ``gold.feature_state`` on Spark: each store's inputs (events,
        planogram, stock-outs, state snapshot) travel to a Python task as Arrow IPC and run
        ``cloud.lake.features.store_features`` there (``groupBy(store).applyInPandas``)."""
        import json

        from cloud.lake.features import STATE_TABLE, planogram_hash, planogram_of, split_by_store, store_features
        from cloud.lake.tables import conform, schema_of

        # Decided on the driver for the whole lake (a store without planogram rows has no features).
        planogram = planogram_of(inputs)
        tables = {**{k: inputs[k] for k in ("readings", "pos", "restocks") if k in inputs},
                  "planogram": planogram, "stockouts": stockouts}
        rows = []
        stores = sorted(set(inputs["readings"]["store_id"].to_pylist()) | set(inputs["pos"]["store_id"].to_pylist()))
        split = {kind: split_by_store(table) for kind, table in tables.items()}  # one pass per table
        for store in stores:
            parts = {kind: split[kind].get(store, table.slice(0, 0)) for kind, table in tables.items()}
            if parts["planogram"].num_rows == 0:
                continue
            digest = planogram_hash(parts["planogram"])
            snap = (snapshots or {}).get(store)
            meta = {"cutoff": (cutoff or {}).get(store, 0), "hash": digest,
                    "snapshot": snap if snap is not None and snap.get("planogram_hash") == digest else None}
            for kind, part in parts.items():
                rows.append({"store_id": store, "kind": kind, "payload": _ipc(part)})
            rows.append({"store_id": store, "kind": "meta", "payload": json.dumps(meta).encode()})

        def per_store(frame):
            import pandas as pd

            got = dict(zip(frame["kind"], frame["payload"]))
            meta = json.loads(bytes(got.pop("meta")))
            parts = {k: pa.ipc.open_stream(p).read_all() for k, p in got.items()}
            store = frame["store_id"].iloc[0]
            feats, states = store_features(store, parts, parts["planogram"], parts["stockouts"],
                                           cutoff=meta["cutoff"], snapshot=meta["snapshot"], plan_hash=meta["hash"])
            return pd.DataFrame({"store_id": [store, store], "kind": ["features", "states"],
                                 "payload": [_ipc(feats), _ipc(states)]})

        if not rows:
            return conform("gold.features", pa.table({})), conform(STATE_TABLE, pa.table({}))
        packed = self.session.createDataFrame(pa.Table.from_pylist(rows))
        result = self._collect(packed.groupBy("store_id").applyInPandas(
            per_store, schema="store_id string, kind string, payload binary")).sort_by("store_id")
        out = {}
        for kind, name in (("features", "gold.features"), ("states", STATE_TABLE)):
            payloads = [p for k, p in zip(result["kind"].to_pylist(), result["payload"].to_pylist()) if k == kind]
            out[name] = pa.concat_tables([pa.ipc.open_stream(p).read_all().cast(schema_of(name)) for p in payloads]) \
                if payloads else conform(name, pa.table({}))
        return out["gold.features"], out[STATE_TABLE]

    @staticmethod
    def _collect(df) -> pa.Table:
        table = df.toArrow()
        # Spark hands back large_string / decimals / timestamps with its own widths: plain types.
        fields = []
        for f in table.schema:
            t = f.type
            if pa.types.is_large_string(t) or pa.types.is_string_view(t):
                t = pa.string()
            elif pa.types.is_decimal(t):
                t = pa.float64()
            fields.append(pa.field(f.name, t))
        return table.cast(pa.schema(fields))

    def stop(self) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None


def _ipc(table: pa.Table) -> bytes:
    """One Arrow table as IPC stream bytes (how store inputs and results cross to Python tasks)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()

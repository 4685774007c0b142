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
import re
import sys
from typing import Mapping

import pyarrow as pa

__all__ = ["SparkEngine"]

_JSON = re.compile(r"\bJSON_STR\(")
_SPARK_TYPES = {"string": "string", "int64": "bigint", "int32": "int", "double": "double", "bool": "boolean",
                "list<item: float>": "array<float>"}


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
        from cloud.lake.engine import expand_json_struct

        return self._collect(spark.sql(_JSON.sub("get_json_object(", expand_json_struct(sql, "spark"))))

    def read_delta(self, storage, table: str):
        """A Spark DataFrame of a lake table's current version (its Parquet files)."""
        files = storage.file_uris(table)
        if not files:  # a table with only empty commits has no data files
            from cloud.lake.tables import schema_of

            return self.session.createDataFrame(pa.Table.from_batches([], schema=schema_of(table)))
        return self.session.read.parquet(*files)

    def features(self, inputs: dict[str, pa.Table], stockouts: pa.Table) -> pa.Table:
        """``gold.features`` on Spark: each store's inputs travel to a Python task as Arrow IPC
        and run ``cloud.lake.gold.features`` there (``groupBy(store).applyInPandas``)."""
        import pyarrow.compute as pc

        from cloud.lake.gold import features as store_features
        from cloud.lake.tables import schema_of

        tables = {**{k: inputs[k] for k in ("readings", "pos", "restocks", "planogram") if k in inputs},
                  "stockouts": stockouts}
        rows = []
        for store in sorted(set(inputs["readings"]["store_id"].to_pylist()) | set(inputs["pos"]["store_id"].to_pylist())):
            for kind, table in tables.items():
                part = table.filter(pc.equal(table["store_id"], store))
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, part.schema) as writer:
                    writer.write_table(part)
                rows.append({"store_id": store, "kind": kind, "payload": sink.getvalue().to_pybytes()})
        out_schema = schema_of("gold.features")
        ddl = ", ".join(f"{f.name} {_SPARK_TYPES[str(f.type)]}" for f in out_schema)

        def per_store(frame):
            import pandas as pd

            parts = {k: pa.ipc.open_stream(p).read_all() for k, p in zip(frame["kind"], frame["payload"])}
            so = parts.pop("stockouts")
            result = store_features(parts, so)
            return result.to_pandas() if result.num_rows else pd.DataFrame({f.name: [] for f in out_schema})

        if not rows:
            return pa.Table.from_batches([], schema=out_schema)
        packed = self.session.createDataFrame(pa.Table.from_pylist(rows))
        result = self._collect(packed.groupBy("store_id").applyInPandas(per_store, schema=ddl))
        return result.cast(out_schema)

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

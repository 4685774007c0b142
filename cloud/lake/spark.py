"""The Spark engine: the lake's SQL transformations on Spark (Databricks / Synapse Spark).

Runs the very SQL text ``DuckDBEngine`` runs (``JSON_STR`` becomes ``get_json_object``,
``JSON_STRUCT`` becomes ``from_json``).
Inputs are Arrow tables (``run``) or a Delta table's current Parquet files
(``read_delta``: the Delta jars are not available offline, and the lake's tables need no
deletion vectors, so reading the files of the current version is reading the table).

Locally it starts ``local[2]`` on loopback with the UI off; in production the session comes
from the platform (``SparkEngine(session=spark)``).

**Executors write** ``gold.features`` and ``gold.feature_state`` (the Python replay, the
transform's dominant phase): each store's task computes its rows and writes them as a Parquet
file into the table's folder (``pyarrow.fs``: a local folder, ADLS Gen2 or blob storage), and
hands back only the file's path, size and statistics. The driver then commits every file with
one ``deltalake`` transaction (``create_write_transaction``: add actions, and remove actions
for the window being replaced; files that hold rows on both sides of the window are rewritten
by executors first, copy-on-write), with the run's application transactions: no row of those
tables passes through the driver. The Delta jars (delta-spark) are not available offline, so
this path does not use them; it needs only storage access from the executors.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from contextlib import contextmanager
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SparkEngine", "StagedFiles"]


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

            # py4j logs every connection it closes at INFO, also from finalizers at interpreter
            # exit, when a handler's stream may already be closed ("--- Logging error ---").
            logging.getLogger("py4j").setLevel(logging.WARNING)

            self._session = (
                SparkSession.builder.master(self._master)
                .appName("gondola-lake")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.shuffle.partitions", "1")
                # Adaptive execution runs every shuffle stage of a query as a Spark job of its own
                # (3-4 jobs for one query with a join, a window and an aggregate; measured): most of
                # the jobs of a run here. A local session's inputs are a few MB, with nothing for it
                # to adapt; a platform's session (``session=``) keeps its own setting.
                .config("spark.sql.adaptive.enabled", "false")
                .config("spark.default.parallelism", "1")
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .getOrCreate()
            )
        return self._session

    @property
    def parallelism(self) -> int:
        """Task slots: N of ``local[N]`` (all cores for ``local[*]``), else the cluster's default
        parallelism (the local session pins ``spark.default.parallelism`` to 1 for its many
        small SQL jobs, so that setting does not say how many cores there are)."""
        master = self.session.sparkContext.master
        if master.startswith("local"):
            inside = master[master.find("[") + 1:master.find("]")] if "[" in master else "1"
            return (os.cpu_count() or 1) if inside.startswith("*") else int(inside.split(",")[0])
        return max(1, self.session.sparkContext.defaultParallelism)

    def run(self, sql: str, inputs: Mapping) -> pa.Table:
        """``sql``'s result on the driver, as Arrow: for small results (counts, control data)."""
        return self._collect(self.frame(sql, inputs))

    # ---- relations (see ``DuckDBEngine``): DataFrames, whose rows stay on the executors ----------

    def frame(self, sql: str, inputs: Mapping):
        """``sql`` as a DataFrame over ``inputs`` (DataFrames, or Arrow tables shipped from the
        driver: small ones only). Views are resolved now, so later frames may reuse the names."""
        from cloud.lake.engine import expand_macros

        spark = self.session
        for name, table in inputs.items():
            (spark.createDataFrame(table) if isinstance(table, pa.Table) else table).createOrReplaceTempView(name)
        return spark.sql(expand_macros(sql, "spark"))

    @staticmethod
    def count(rel) -> int:
        return rel.num_rows if isinstance(rel, pa.Table) else rel.count()

    @staticmethod
    def columns(rel) -> list[str]:
        return rel.column_names if isinstance(rel, pa.Table) else list(rel.columns)

    def conform(self, table: str, rel):
        """``rel`` in ``table``'s schema: its columns, cast (missing ones NULL), in order."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_type

        from cloud.lake.tables import conform, schema_of

        if isinstance(rel, pa.Table):
            return conform(table, rel)
        have = set(rel.columns)
        return rel.select([(F.col(f"`{f.name}`") if f.name in have else F.lit(None))
                           .cast(from_arrow_type(f.type)).alias(f.name) for f in schema_of(table)])

    @staticmethod
    def cache(rel):
        return rel if isinstance(rel, pa.Table) else rel.persist()

    @staticmethod
    def release(rel) -> None:
        if not isinstance(rel, pa.Table):
            rel.unpersist()

    @staticmethod
    def numbered(rel):
        """``rel`` with ``row_nr`` (distinct per row; stable while the relation is cached)."""
        from pyspark.sql import functions as F

        return rel.withColumn("row_nr", F.monotonically_increasing_id())

    @staticmethod
    def take(rel, picked):
        """The rows of numbered ``rel`` that ``picked`` names, with its ``is_late`` (a join)."""
        from pyspark.sql import functions as F

        return rel.join(picked.select("row_nr", F.col("is_late").cast("int").alias("is_late")), "row_nr")

    @staticmethod
    def with_column(rel, name: str, type_: pa.DataType, compute):
        """``rel`` with column ``name`` computed by ``compute(arrow_table)`` on the executors."""
        from pyspark.sql.pandas.types import from_arrow_type
        from pyspark.sql.types import StructField, StructType

        if isinstance(rel, pa.Table):  # rows the caller holds already
            from cloud.lake.engine import DuckDBEngine

            return DuckDBEngine.with_column(rel, name, type_, compute)
        if name in rel.columns:
            rel = rel.drop(name)
        schema = StructType(list(rel.schema.fields) + [StructField(name, from_arrow_type(type_), True)])

        def apply(batches):
            for batch in batches:
                t = pa.Table.from_batches([batch])
                yield from t.append_column(pa.field(name, type_), compute(t)).to_batches()

        return rel.mapInArrow(apply, schema)

    def stage(self, storage, table: str, rel):
        """Executors write ``rel``'s rows as Parquet files into ``table``'s folder, one file per
        partition; the ``StagedFiles`` come back (nothing is committed yet). Where executors
        cannot reach the storage through ``pyarrow.fs``, the rows come back as Arrow instead."""
        return self.stage_all(storage, {table: rel})[table]

    def stage_all(self, storage, rels: Mapping) -> dict:
        """``stage`` for several tables in **one** Spark job (a job per table was a good part of a
        run's fixed cost): each table's rows go through its own writer task, and the file
        descriptions of all of them come back together. Arrow tables are handed back as they are."""
        out = {t: r for t, r in rels.items() if isinstance(r, pa.Table)}
        frames = {t: r for t, r in rels.items() if not isinstance(r, pa.Table)}
        if not frames:
            return out
        writer = _ParquetWriter.of(storage)
        if writer is None:
            return out | {t: self._collect(r) for t, r in frames.items()}
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        columns = {"table": "string", **_FILE_COLUMNS}
        schema = StructType([StructField(c, StringType() if t == "string" else LongType()) for c, t in columns.items()])
        arrow = pa.schema([(c, pa.string() if t == "string" else pa.int64()) for c, t in columns.items()])

        def writes(table: str):
            def write(batches):
                parts = list(batches)
                rows = pa.Table.from_batches(parts) if parts else None
                if rows is not None and rows.num_rows:
                    yield pa.RecordBatch.from_pylist([{"table": table, **f} for f in writer.write(table, rows)],
                                                     schema=arrow)
            return write

        union = None
        for table, rel in frames.items():
            described = rel.mapInArrow(writes(table), schema)
            union = described if union is None else union.unionByName(described)
        files = self._collect(union).to_pylist()
        return out | {t: StagedFiles(self, t, [{k: f[k] for k in _FILE_COLUMNS} for f in files if f["table"] == t])
                      for t in frames}

    def read_delta(self, storage, table: str):
        """A Spark DataFrame of a lake table's current version (its Parquet files; columns a
        later schema added are NULL in older files)."""
        return self._read_files(table, storage.file_uris(table), storage.uri(table))

    def read_changes(self, storage, table: str, after_version: int):
        """The rows commits after ``after_version`` added (``LakeStorage.changes`` on the
        executors: ``storage.change_files``), and the version read up to; ``(None, v)`` when
        nothing is new."""
        adds, cdcs, version = storage.change_files(table, after_version)
        if version <= after_version:
            return None, version
        rows = self._read_files(table, adds, storage.uri(table))
        if cdcs:
            changed = self.session.read.option("mergeSchema", "true").parquet(*cdcs) \
                .where("_change_type IN ('insert', 'update_postimage')").drop("_change_type")
            rows = rows.unionByName(changed, allowMissingColumns=True)
        return rows, version

    def _read_files(self, table: str, files: list[str], base: str):
        """The rows of ``files`` of ``table`` (at ``base``), with the partition column from the
        files' folders (``date=YYYY-MM-DD/``: a Delta writer leaves it out of the file), as text."""
        if not files:  # a table with only empty commits has no data files
            from cloud.lake.tables import schema_of

            return self.session.createDataFrame(pa.Table.from_batches([], schema=schema_of(table)))
        from cloud.lake.tables import TABLES

        reader = self.session.read.option("basePath", base)
        if table in TABLES:
            # The table's declared schema: no job to infer or merge the files' schemas (one per
            # read, a few dozen a run); a column older files lack reads as NULL, as a merge gives.
            reader = reader.schema(_spark_schema(table))
        else:
            reader = reader.option("mergeSchema", "true")
        with _conf(self.session, {"spark.sql.sources.partitionColumnTypeInference.enabled": "false"}):
            return reader.parquet(*files)

    def features(self, inputs: dict[str, pa.Table], stockouts: pa.Table, *, cutoff: dict[str, int] | None = None,
                 snapshots: dict[str, dict] | None = None, storage=None) -> tuple:
        """``gold.features`` and ``gold.feature_state`` on Spark: each store's inputs (events,
        planogram, stock-outs, state snapshot) travel to a Python task as Arrow IPC and run
        ``cloud.lake.features.store_features`` there (``groupBy(store).applyInPandas``).

        With ``storage`` (the runner passes it) each task writes its rows of the window as
        Parquet files into the tables' folders, and two ``StagedFiles`` come back (committed by
        the runner); without, the rows come back as Arrow tables."""
        from cloud.lake.features import (FEATURE_INPUTS, FEATURE_TABLES, STATE_TABLE, planogram_hash, planogram_of,
                                         split_by_store, store_features)
        from cloud.lake.tables import TABLES, conform, schema_of

        # Inputs the executors hold (DataFrames: silver windows, stock-outs) are packed per store
        # there; Arrow inputs here. Without storage, DataFrames are collected (tests, small calls).
        given = {**{k: inputs[k] for k in FEATURE_INPUTS if inputs.get(k) is not None}, "stockouts": stockouts}
        if storage is None:
            given = {k: t if isinstance(t, pa.Table) else self._collect(t) for k, t in given.items()}
            inputs = {**inputs, **{k: t for k, t in given.items() if k != "stockouts"}}
        frames = {k: t for k, t in given.items() if not isinstance(t, pa.Table)}
        # Decided on the driver for the whole lake (a store without planogram rows has no features):
        # the planogram (master data) is here; so are the stores (a DISTINCT).
        planogram = inputs["planogram"] if frames and inputs.get("planogram") is not None else planogram_of(inputs)
        tables = {k: t for k, t in given.items() if k not in frames} | {"planogram": planogram}
        rows = []
        if "readings" in frames or "pos" in frames:
            stores = sorted(self.run("SELECT store_id FROM r UNION SELECT store_id FROM p",
                                     {"r": given["readings"], "p": given["pos"]})["store_id"].to_pylist())
        else:
            stores = sorted(set(inputs["readings"]["store_id"].to_pylist()) | set(inputs["pos"]["store_id"].to_pylist()))
        table_of = {**FEATURE_TABLES, "stockouts": "gold.stockouts"}
        packed_kinds = tuple(frames)  # names only: the tasks' closures must not hold DataFrames
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

        targets = (("features", "gold.features"), ("states", STATE_TABLE))
        writer = _ParquetWriter.of(storage) if storage is not None else None

        def replay(store: str, kinds: list, payloads: list) -> tuple[pa.Table, pa.Table, int]:
            got = dict(zip(kinds, payloads))
            meta = json.loads(bytes(got.pop("meta")))
            parts = {k: pa.ipc.open_stream(p).read_all() for k, p in got.items()}
            for kind in packed_kinds:  # packed on the executors: a store without rows has no payload
                parts.setdefault(kind, conform(table_of[kind], pa.table({})))
            feats, states = store_features(store, parts, parts["planogram"], parts["stockouts"],
                                           cutoff=meta["cutoff"], snapshot=meta["snapshot"], plan_hash=meta["hash"])
            return feats, states, meta["cutoff"]

        def per_store(frame):
            import pandas as pd

            store = frame["store_id"].iloc[0]
            feats, states, _ = replay(store, list(frame["kind"]), list(frame["payload"]))
            return pd.DataFrame({"store_id": [store, store], "kind": ["features", "states"],
                                 "payload": [_ipc(feats), _ipc(states)]})

        files_schema = pa.schema([("store_id", pa.string()), ("kind", pa.string())] +
                                 [(c, pa.string() if t == "string" else pa.int64()) for c, t in _FILE_COLUMNS.items()])

        def per_store_files(group: pa.Table) -> pa.Table:  # Arrow in and out: no pandas copy of the payloads
            from cloud.lake.tables import in_window

            store = group["store_id"][0].as_py()
            if "meta" not in group["kind"].to_pylist():  # stock-outs of a store without features
                return pa.Table.from_pylist([], schema=files_schema)
            feats, states, cut = replay(store, group["kind"].to_pylist(), group["payload"].to_pylist())
            out = []
            for (kind, table), rows in zip(targets, (feats, states)):
                rows = rows.filter(in_window(rows, {store: cut}, TABLES[table].time_col))  # the window
                if rows.num_rows:
                    out.extend({"store_id": store, "kind": kind, **f} for f in writer.write(table, rows))
            return pa.Table.from_pylist(out, schema=files_schema)

        if writer is not None:
            if not rows:
                return StagedFiles(self, "gold.features", []), StagedFiles(self, STATE_TABLE, [])
            packed = self.session.createDataFrame(pa.Table.from_pylist(rows))
            for kind, frame in frames.items():
                order = ("facing_id", "start_ms") if kind == "stockouts" else ("ts", "device_id", "seq")
                packed = packed.unionByName(_packed(frame, kind, table_of[kind], order))
            # Stores spread over the task slots (a few stores per task); grouping by the key the
            # frame is partitioned on adds no second shuffle.
            tasks = max(1, min(len(stores), 4 * self.parallelism))
            schema = "store_id string, kind string, " + ", ".join(f"{c} {t}" for c, t in _FILE_COLUMNS.items())
            # Only file metadata comes back: one row per store and table. Adaptive execution would
            # coalesce the small shuffle partitions (the inputs are a few MB) into one task.
            with _conf(self.session, {"spark.sql.adaptive.coalescePartitions.enabled": "false"}):
                files = self._collect(packed.repartition(tasks, "store_id").groupBy("store_id")
                                      .applyInArrow(per_store_files, schema=schema)).to_pylist()
            return tuple(StagedFiles(self, table, [f for f in files if f["kind"] == kind]) for kind, table in targets)
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


def _packed(frame, kind: str, table: str, order: tuple[str, ...]):
    """``frame``'s rows as one Arrow IPC payload per store in ``table``'s schema, packed on the
    executors: ``store_id, kind, payload`` (rows sorted by ``order`` within a store)."""
    from cloud.lake.tables import conform

    def pack(t: pa.Table) -> pa.Table:
        t = conform(table, t).sort_by([(c, "ascending") for c in order])
        return pa.table({"store_id": [t["store_id"][0].as_py()], "kind": [kind], "payload": [_ipc(t)]})

    return frame.groupBy("store_id").applyInArrow(pack, "store_id string, kind string, payload binary")


def _spark_schema(table: str):
    """``table``'s declared columns as a Spark schema."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    from cloud.lake.tables import schema_of

    return StructType([StructField(f.name, from_arrow_type(f.type), True) for f in schema_of(table)])


def _ipc(table: pa.Table) -> bytes:
    """One Arrow table as IPC stream bytes (how store inputs and results cross to Python tasks)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@contextmanager
def _conf(session, settings: dict[str, str]):
    """Spark SQL settings for one job, restored after it."""
    before = {k: session.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        session.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                session.conf.unset(k)
            else:
                session.conf.set(k, v)


#: what an executor hands back for each file it wrote (Spark DDL types)
_FILE_COLUMNS = {"path": "string", "size": "long", "num_records": "long", "stats": "string"}


class _ParquetWriter:
    """Writes a table's rows as one Parquet file into the table's folder (on an executor) and
    describes it for a Delta add action. Picklable: the storage travels, the file system is
    opened where the writing happens."""

    def __init__(self, storage):
        self.storage = storage

    @classmethod
    def of(cls, storage) -> "_ParquetWriter | None":
        """A writer for ``storage``, or ``None`` when executors cannot reach it through ``pyarrow.fs``."""
        from cloud.meta.backup import lake_filesystem
        from gondola.errors import ConfigError

        try:
            lake_filesystem(storage)
        except ConfigError:
            return None
        return cls(storage)

    def write(self, table: str, rows: pa.Table) -> list[dict]:
        """One file per partition of the table (``date=YYYY-MM-DD/``, as Delta lays partitions out;
        the partition column is not in the file, its value is in the folder name and the add
        action), or one file for an unpartitioned table."""
        import pyarrow.parquet as pq

        from cloud.lake.storage import file_stats
        from cloud.lake.tables import PARTITION_COL, conform, partition_columns, with_partition

        rows = conform(table, rows)
        fs, folder = self.storage.table_filesystem(table)
        groups: list[tuple[str, pa.Table]] = [("", rows)]
        if partition_columns(table):
            rows = with_partition(table, rows)
            dates = rows[PARTITION_COL]
            groups = [(f"{PARTITION_COL}={'__HIVE_DEFAULT_PARTITION__' if d is None else d}/",
                       rows.filter(pc.is_null(dates) if d is None else pc.equal(dates, d)).drop_columns([PARTITION_COL]))
                      for d in sorted(pc.unique(dates).to_pylist(), key=lambda d: (d is None, d or ""))]
        out = []
        for sub, part in groups:
            fs.create_dir(f"{folder}/{sub}".rstrip("/"), recursive=True)
            name = f"{sub}part-{uuid.uuid4().hex}.parquet"
            pq.write_table(part, f"{folder}/{name}", filesystem=fs, compression="snappy")
            out.append({"path": name, "size": fs.get_file_info(f"{folder}/{name}").size,
                        "num_records": part.num_rows, "stats": file_stats(table, part)})
        return out

    def read(self, table: str, path: str) -> pa.Table:
        import pyarrow.parquet as pq

        fs, folder = self.storage.table_filesystem(table)
        return pq.read_table(f"{folder}/{path}", filesystem=fs)


class StagedFiles:
    """Parquet files executors wrote into a table's folder, not yet in its Delta log."""

    def __init__(self, engine: SparkEngine, table: str, files: list[dict]):
        self.engine, self.table, self.files = engine, table, files

    @property
    def num_rows(self) -> int:
        return sum(f["num_records"] for f in self.files)

    def commit(self, storage, *, window: dict[str, int], time_col: str, txns) -> int:
        """Replace the table's rows in ``window`` (store -> first instant) by the staged files,
        in one Delta commit with the application transactions ``txns``; returns rows added.

        Raises:
            StorageError: the commit failed, or the table changed under the plan since it was read
                (the staged files stay unreferenced; VACUUM removes them; the next run plans again).
        """
        dt = storage.open(self.table)
        removes, kept = self._rewrite(storage, dt, window, time_col) if dt is not None and window else ([], [])
        storage.commit_files(self.table, kept + self.files, removes, txns=txns, base=dt)
        return self.num_rows

    def _rewrite(self, storage, dt, window: dict[str, int], time_col: str) -> tuple[list[dict], list[dict]]:
        """The files holding rows of ``window`` (to remove), and files with what they hold
        outside it (rewritten by executors: copy-on-write; to add)."""
        actions = pa.table(dt.get_add_actions(flatten=True))
        candidates = [a for a in actions.to_pylist() if _may_hold(a, window, time_col)]
        if not candidates:
            return [], []
        writer = _ParquetWriter(storage)
        table = self.table

        def rewrite(batches):
            import pandas as pd

            from cloud.lake.tables import in_window

            for frame in batches:
                out = []
                for path in frame["path"]:
                    rows = writer.read(table, path)
                    rest = rows.filter(pc.invert(in_window(rows, window, time_col)))
                    if rest.num_rows == rows.num_rows:
                        continue  # nothing of the window in it: the file stays
                    new = writer.write(table, rest) if rest.num_rows else []  # one partition: one file
                    out.extend({"old": path if i == 0 else None, **{k: f[k] for k in _FILE_COLUMNS}}
                               for i, f in enumerate(new))
                    if not new:
                        out.append({"old": path, **{k: None for k in _FILE_COLUMNS}})
                yield pd.DataFrame(out, columns=["old"] + list(_FILE_COLUMNS))

        paths = self.engine.session.createDataFrame([(a["path"],) for a in candidates], "path string") \
            .repartition(max(1, min(len(candidates), self.engine.parallelism)))
        schema = "old string, " + ", ".join(f"{c} {t}" for c, t in _FILE_COLUMNS.items())
        with _conf(self.engine.session, {"spark.sql.adaptive.coalescePartitions.enabled": "false"}):
            done = self.engine._collect(paths.mapInPandas(rewrite, schema=schema)).to_pylist()
        sizes = {a["path"]: a["size_bytes"] for a in candidates}
        removes = [{"path": d["old"], "size": sizes[d["old"]]} for d in done if d["old"]]
        return removes, [d for d in done if d["path"]]


def _may_hold(action: dict, window: dict[str, int], time_col: str) -> bool:
    """Whether a file may hold rows of ``window``, from its partition (a day before every store's
    window: no) and its statistics (no statistics: it may)."""
    from cloud.lake.tables import PARTITION_COL, utc_date

    day = action.get(f"partition.{PARTITION_COL}")
    if day is not None and window and day < utc_date(min(window.values())):
        return False
    lo, hi, tmax = action.get("min.store_id"), action.get("max.store_id"), action.get(f"max.{time_col}")
    if lo is None or hi is None or tmax is None:
        return True
    return any(lo <= store <= hi and tmax >= cut for store, cut in window.items())

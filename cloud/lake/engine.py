"""Engines that run the lake's SQL transformations: DuckDB (embedded, default) and Spark.

Transformations are SQL over named input relations (``cloud.lake.silver``, ``cloud.lake.gold``),
written in the subset both engines share: integer epoch-ms arithmetic instead of timestamp
functions, ``TRY_CAST``, window functions, and two macros each engine expands to its own JSON
functions: ``COUNT_DISTINCT(a, b)`` (distinct tuples, one with a null left out), ``JSON_STR(col, '$.path')`` (one value as text) and
``JSON_STRUCT(col, 'a,b,data.c')`` (parse once into a struct of text fields, read as ``j.data.c``;
a field written ``data.c:BIGINT`` is typed by the parser where the engine's parser types while it
parses, DuckDB's; on Spark every field stays text, so the SQL casts it: a ``TRY_CAST`` to the type
a field already has is a no-op). So the same text runs embedded and on Spark (Databricks /
Synapse Spark), and a test compares the results.
"""

from __future__ import annotations

import re
from typing import Mapping, Protocol

import pyarrow as pa

__all__ = ["Engine", "DuckDBEngine", "expand_count_distinct", "expand_json_struct", "expand_macros"]


class Engine(Protocol):
    """Runs one SQL query over named Arrow inputs and returns an Arrow table."""

    name: str

    def run(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        """Result of ``sql`` with each input visible under its name."""
        ...


_JSON = re.compile(r"\bJSON_STR\(")
_DISTINCT = re.compile(r"\bCOUNT_DISTINCT\(([^()]*)\)")
_STRUCT = re.compile(r"\bJSON_STRUCT\((\w+),\s*'([^']*)'\)")


def _fields(spec: str) -> dict:
    """``'a,data.b:BIGINT'`` -> ``{"a": None, "data": {"b": "BIGINT"}}`` (a leaf's type, or None: text)."""
    tree: dict = {}
    for path in filter(None, (p.strip() for p in spec.split(","))):
        node = tree
        path, _, type_ = path.partition(":")
        *parents, leaf = path.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = type_ or None
    return tree


def expand_json_struct(sql: str, dialect: str) -> str:
    """Expand ``JSON_STRUCT`` for ``duckdb`` (``json_transform``, typed leaves typed) or ``spark``
    (``from_json``, every field text)."""
    import json

    def duck(tree: dict) -> dict:
        return {k: (v or "VARCHAR") if not isinstance(v, dict) else duck(v) for k, v in tree.items()}

    def spark(tree: dict) -> str:
        return ", ".join(f"`{k}` STRING" if not isinstance(v, dict) else f"`{k}` STRUCT<{spark(v).replace(' STRING', ': STRING')}>"
                         for k, v in tree.items())

    def sub(m: re.Match) -> str:
        col, tree = m.group(1), _fields(m.group(2))
        if dialect == "duckdb":
            return f"json_transform({col}, '{json.dumps(duck(tree))}')"
        return f"from_json({col}, '{spark(tree)}')"

    return _STRUCT.sub(sub, sql)


def expand_count_distinct(sql: str, dialect: str) -> str:
    """``COUNT_DISTINCT(a, b, ...)``: how many distinct tuples of the arguments, a tuple with a
    null left out (Spark's ``COUNT(DISTINCT a, b)``; DuckDB counts a tuple of nulls, so it is
    nulled first). Arguments without parentheses."""
    def sub(m: re.Match) -> str:
        args = [a.strip() for a in m.group(1).split(",")]
        if dialect == "spark" or len(args) == 1:
            return f"COUNT(DISTINCT {', '.join(args)})"
        known = " AND ".join(f"({a}) IS NOT NULL" for a in args)
        return f"COUNT(DISTINCT CASE WHEN {known} THEN ({', '.join(args)}) END)"

    return _DISTINCT.sub(sub, sql)


def expand_macros(sql: str, dialect: str) -> str:
    """Every macro of the module docstring in ``duckdb`` or ``spark`` SQL."""
    sql = expand_count_distinct(expand_json_struct(sql, dialect), dialect)
    return _JSON.sub("json_extract_string(" if dialect == "duckdb" else "get_json_object(", sql)


class DuckDBEngine:
    """One in-memory DuckDB connection, opened on first use; inputs are registered Arrow tables.

    Not thread-safe: use one engine per thread (opening a connection costs more than most of
    the lake's queries, so it is kept).
    """

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._con = None

    def run(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        import duckdb

        if self._con is None:
            self._con = duckdb.connect()
            if self.threads:
                self._con.execute(f"SET threads={int(self.threads)}")
        con = self._con
        try:
            for name, table in inputs.items():
                con.register(name, table)
            return con.sql(expand_macros(sql, "duckdb")).to_arrow_table()
        finally:
            for name in inputs:
                con.unregister(name)

    # ---- relations: how shared code handles table data without knowing where it lives ----------
    # An engine's relation is what ``frame`` returns. Here it is an Arrow table in this process;
    # on Spark (``cloud.lake.spark``) a DataFrame whose rows stay on the executors.

    def frame(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        """``sql``'s result as a relation of this engine (here: ``run``)."""
        return self.run(sql, inputs)

    @staticmethod
    def count(rel: pa.Table) -> int:
        return rel.num_rows

    @staticmethod
    def columns(rel: pa.Table) -> list[str]:
        return rel.column_names

    @staticmethod
    def conform(table: str, rel: pa.Table) -> pa.Table:
        """``rel`` in ``table``'s schema (``cloud.lake.tables.conform``)."""
        from cloud.lake.tables import conform

        return conform(table, rel)

    @staticmethod
    def cache(rel: pa.Table) -> pa.Table:
        """Keep ``rel`` computed for several uses (an Arrow table already is)."""
        return rel

    @staticmethod
    def release(rel: pa.Table) -> None:
        """Forget what ``cache`` kept."""

    @staticmethod
    def numbered(rel: pa.Table) -> pa.Table:
        """``rel`` with ``row_nr``: distinct int64 per row, increasing in its order."""
        import numpy as np

        return rel.append_column("row_nr", pa.array(np.arange(rel.num_rows, dtype=np.int64)))

    @staticmethod
    def take(rel: pa.Table, picked: pa.Table) -> pa.Table:
        """The rows of numbered ``rel`` whose ``row_nr`` ``picked`` holds, in ``rel``'s order,
        with ``picked``'s ``is_late``."""
        import numpy as np
        import pyarrow.compute as pc

        picked = picked.sort_by("row_nr")
        nrs = picked["row_nr"]
        whole = len(nrs) == rel.num_rows and (len(nrs) == 0 or pc.all(pc.equal(
            nrs, pa.array(np.arange(len(nrs), dtype=np.int64)))).as_py())
        return (rel if whole else rel.take(nrs)).append_column("is_late", picked["is_late"].cast(pa.int32()))

    @staticmethod
    def with_column(rel: pa.Table, name: str, type_: pa.DataType, compute) -> pa.Table:
        """``rel`` with column ``name`` (replaced if there) computed by ``compute(arrow_table)``,
        a Python function of a batch of rows (on Spark it runs on the executors, batch by batch)."""
        if name in rel.column_names:
            rel = rel.drop_columns([name])
        return rel.append_column(pa.field(name, type_), compute(rel))

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

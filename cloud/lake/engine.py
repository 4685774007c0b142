"""Engines that run the lake's SQL transformations: DuckDB (embedded, default) and Spark.

Transformations are SQL over named input relations (``cloud.lake.silver``, ``cloud.lake.gold``),
written in the subset both engines share: integer epoch-ms arithmetic instead of timestamp
functions, ``TRY_CAST``, window functions, and one macro, ``JSON_STR(col, '$.path')``, that each
engine expands to its JSON accessor. So the same text runs embedded and on Spark (Databricks /
Synapse Spark), and a test compares the results.
"""

from __future__ import annotations

import re
from typing import Mapping, Protocol

import pyarrow as pa

__all__ = ["Engine", "DuckDBEngine"]


class Engine(Protocol):
    """Runs one SQL query over named Arrow inputs and returns an Arrow table."""

    name: str

    def run(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        """Result of ``sql`` with each input visible under its name."""
        ...


_JSON = re.compile(r"\bJSON_STR\(")


class DuckDBEngine:
    """An in-process DuckDB connection per query (no I/O; inputs are registered Arrow tables)."""

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        import duckdb

        con = duckdb.connect()
        try:
            if self.threads:
                con.execute(f"SET threads={int(self.threads)}")
            for name, table in inputs.items():
                con.register(name, table)
            return con.sql(_JSON.sub("json_extract_string(", sql)).to_arrow_table()
        finally:
            con.close()

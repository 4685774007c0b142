"""Lake storage: backends picked from the URI, idempotent writes, change reads."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cloud.lake.storage import LocalStorage, ObjectStorage, open_storage
from gondola.errors import ConfigError, StorageError


def test_the_backend_follows_the_uri_and_tables_live_under_their_layer(tmp_path):
    local = open_storage(tmp_path / "lake")
    assert isinstance(local, LocalStorage) and local.uri("gold.stockouts") == f"{tmp_path}/lake/gold/stockouts"
    adls = open_storage("abfss://lake@acct.dfs.core.windows.net/gondola/", {"account_key": "k"})
    assert isinstance(adls, ObjectStorage)
    assert adls.uri("silver.pos_line") == "abfss://lake@acct.dfs.core.windows.net/gondola/silver/pos_line"
    assert isinstance(open_storage("az://container/lake"), ObjectStorage)
    with pytest.raises(ConfigError):
        open_storage("ftp://host/lake")
    with pytest.raises(ConfigError):
        local.uri("no_layer")


def test_application_transactions_commit_with_the_data_and_changes_read_only_new_rows(tmp_path):
    s = open_storage(tmp_path)
    assert s.version("bronze.t") == -1 and s.txn_version("bronze.t", "app") == -1 and s.read("bronze.t") is None
    v0 = s.write("bronze.t", pa.table({"a": [1, 2]}), txns=[("app", 7)])
    v1 = s.write("bronze.t", pa.table({"a": [3]}), txns=[("app", 9)])
    assert (v0, v1) == (0, 1) and s.txn_version("bronze.t", "app") == 9
    new, upto = s.changes("bronze.t", v0)
    assert new["a"].to_pylist() == [3] and upto == 1
    assert s.changes("bronze.t", v1) == (None, 1)


def test_an_overwrite_with_a_predicate_replaces_only_matching_rows(tmp_path):
    s = open_storage(tmp_path)
    s.write("gold.t", pa.table({"store_id": ["a", "a", "b"], "h": [1, 2, 1]}))
    s.write("gold.t", pa.table({"store_id": ["a"], "h": [9]}), mode="overwrite", predicate="store_id = 'a' AND h >= 2")
    rows = sorted(zip(*s.read("gold.t").to_pydict().values()))
    assert rows == [("a", 1), ("a", 9), ("b", 1)]


def test_storage_failures_are_storage_errors(tmp_path):
    s = open_storage(tmp_path)
    s.write("bronze.t", pa.table({"a": [1]}))
    with pytest.raises(StorageError):
        s.write("bronze.t", pa.table({"a": ["not an int"]}))


def test_every_table_has_lineage_to_tables_that_exist():
    from cloud.lake.tables import LINEAGE, TABLES

    assert set(LINEAGE) == set(TABLES)
    for name, (inputs, step) in LINEAGE.items():
        assert set(inputs) <= set(TABLES) and step, name


def test_change_files_name_the_files_holding_the_rows_changes_reads(tmp_path):
    """What an engine reading files (Spark) takes for a table's changes: the files the later
    commits added, or, for a commit that rewrote rows, its change-data files' inserts and
    post-images; the same rows ``changes`` reads through deltalake."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    storage = open_storage(tmp_path / "lake")
    rows = lambda ids, v: pa.table({"id": pa.array(ids, pa.int64()), "v": pa.array([v] * len(ids))})  # noqa: E731
    storage.write("silver.t", rows([1, 2], "a"))
    storage.write("silver.t", rows([3], "b"))
    storage.write("silver.t", rows([2], "c"), mode="overwrite", predicate="id = 2")  # a rewrite (erasure-like)

    def from_files(after: int) -> list[tuple]:
        adds, cdcs, version = storage.change_files("silver.t", after)
        assert version == storage.version("silver.t")
        got = [ds.dataset(adds).to_table(columns=["id", "v"])] if adds else []
        if cdcs:
            c = ds.dataset(cdcs).to_table()
            got.append(c.filter(pc.is_in(c["_change_type"], pa.array(["insert", "update_postimage"])))
                       .select(["id", "v"]))
        return sorted(r for t in got for r in zip(t["id"].to_pylist(), t["v"].to_pylist()))

    for after in (-1, 0, 1):
        changed, _ = storage.changes("silver.t", after)
        assert from_files(after) == sorted(zip(changed["id"].to_pylist(), changed["v"].to_pylist())), after
    assert from_files(0) == [(2, "c"), (3, "b")]
    assert storage.change_files("silver.t", storage.version("silver.t"))[:2] == ([], [])

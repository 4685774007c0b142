"""Lake storage: backends picked from the URI, idempotent writes, change reads."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _old_feature_state(storage, rows: list[tuple[str, int]]) -> None:
    """gold.feature_state as an older version wrote it: unpartitioned, no ``date`` column."""
    from deltalake import write_deltalake

    from cloud.lake.storage import _table_config

    write_deltalake(storage.uri("gold.feature_state"), _state_rows(rows), configuration=_table_config("gold.feature_state"))


def _state_rows(rows: list[tuple[str, int]]) -> pa.Table:
    return pa.table({"store_id": [s for s, _ in rows], "day_ms": pa.array([d for _, d in rows], pa.int64())})


_D = 1_767_225_600_000  # 2026-01-01 00:00 UTC


@pytest.mark.parametrize("meanwhile", ["append", "delete"])
def test_a_repartition_loses_no_concurrent_append_and_brings_back_no_concurrent_delete(tmp_path, monkeypatch, meanwhile):
    """Another writer commits between the rewrite's read and its commit (ingest appending to
    bronze, an erasure or a window rewrite deleting): its rows stay, its deletes stay deleted,
    and every file ends up in a partition."""
    from deltalake import DeltaTable, write_deltalake

    import cloud.lake.tables as tables

    storage = LocalStorage(str(tmp_path))
    table, uri = "gold.feature_state", storage.uri("gold.feature_state")
    _old_feature_state(storage, [("a", _D), ("x", _D)])
    describe, commits = tables.with_descriptions, []

    def concurrent_commit(name, data):  # runs after the rewrite read the table, before it commits
        if not commits:
            if meanwhile == "append":
                write_deltalake(uri, _state_rows([("b", _D + 86_400_000)]), mode="append")
            else:
                DeltaTable(uri).delete("store_id = 'x'")
            commits.append(meanwhile)
        return describe(name, data)

    monkeypatch.setattr(tables, "with_descriptions", concurrent_commit)
    assert storage.repartition(table) is True
    monkeypatch.undo()
    rows = storage.read(table).sort_by("store_id")
    want = [("a", "2026-01-01"), ("b", "2026-01-02"), ("x", "2026-01-01")] if meanwhile == "append" \
        else [("a", "2026-01-01")]
    assert list(zip(rows["store_id"].to_pylist(), rows["date"].to_pylist())) == want
    dt = storage.open(table)
    assert list(dt.metadata().partition_columns) == ["date"]
    files = pa.table(dt.get_add_actions())["path"].to_pylist()
    assert files and all(f.startswith("date=") for f in files)
    assert storage.repartition(table) is False
    # readers of the change feed see the other writer's commit and not the rewrites
    new, _ = storage.changes(table, 0, columns=["store_id"])
    assert (new["store_id"].to_pylist() if new is not None else []) == (["b"] if meanwhile == "append" else [])


def test_a_repartition_streams_the_table_a_batch_at_a_time_and_keeps_every_row(tmp_path, monkeypatch):
    """The upgrade rewrite of a fleet's table must not hold it in memory whole: rows go to the
    writer batch by batch (each shaped as it comes), and all of them arrive in their day."""
    from deltalake import write_deltalake

    import cloud.lake.tables as tables

    storage = LocalStorage(str(tmp_path))
    _old_feature_state(storage, [("a", _D), ("b", _D + 86_400_000)])
    for i in range(3):  # more files: the dataset yields more than one batch
        write_deltalake(storage.uri("gold.feature_state"), _state_rows([(f"s{i}", _D + i * 86_400_000)]), mode="append")
    shaped_rows = []
    partition = tables.with_partition

    def counting(name, data):
        shaped_rows.append(data.num_rows)
        return partition(name, data)

    monkeypatch.setattr(tables, "with_partition", counting)
    assert storage.repartition("gold.feature_state") is True
    monkeypatch.undo()
    assert max(shaped_rows) < 5 and sum(shaped_rows) == 5  # one batch at a time, never the whole table
    rows = storage.read("gold.feature_state").sort_by("store_id")
    assert list(zip(rows["store_id"].to_pylist(), rows["date"].to_pylist())) == [
        ("a", "2026-01-01"), ("b", "2026-01-02"), ("s0", "2026-01-01"), ("s1", "2026-01-02"), ("s2", "2026-01-03")]



def _changes_both_ways(storage, table: str, after: int, monkeypatch, columns=None) -> tuple:
    """``changes`` as it reads appended files itself (with whether it did), and through
    deltalake's change feed; each checked for the version read up to."""
    import cloud.lake.storage as st

    appended, took = st.LakeStorage._appended, []

    def spy(*args, **kwargs):
        took.append(appended(*args, **kwargs) is not None)
        return appended(*args, **kwargs)

    monkeypatch.setattr(st.LakeStorage, "_appended", spy)
    fast, v1 = storage.changes(table, after, columns=columns)
    monkeypatch.setattr(st.LakeStorage, "_appended", lambda *a, **k: None)
    feed, v2 = storage.changes(table, after, columns=columns)
    monkeypatch.undo()
    assert v1 == v2 == storage.version(table)
    return fast, feed, took == [True]


def _same_rows(a: pa.Table | None, b: pa.Table | None) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    assert a.schema.equals(b.schema, check_metadata=True), (a.schema, b.schema)
    key = lambda t: sorted(zip(*[t[c].to_pylist() for c in t.column_names]), key=repr)  # noqa: E731
    assert key(a) == key(b)


def test_changes_read_from_appended_files_equal_the_change_feed(tmp_path, monkeypatch):
    """The fast path of ``changes`` (the Parquet files the commits appended, read by pyarrow) gives
    the change feed's rows and schema (types, partition column last, no metadata) after every
    version: appends to a date-partitioned table with a NULL partition, a column added later, an
    empty commit, and a column subset; a rewrite (change-data files) is left to the feed."""
    storage = open_storage(tmp_path / "lake")
    t = "silver.pos_line"  # partitioned by the UTC date of ts; the dictionary gives field metadata
    day = 1_767_225_600_000
    rows = lambda devs, seqs, ts, **more: pa.table({"device_id": pa.array(devs, pa.string()),  # noqa: E731
                                                    "seq": pa.array(seqs, pa.int64()), "ts": pa.array(ts, pa.int64()),
                                                    **more})
    storage.write(t, rows(["a", "b"], [1, 2], [day, day + 86_400_000]), txns=[("app", 1)])
    storage.write(t, rows(["c"], [3], [None], sku=["x"]))  # a NULL date, and a new column
    storage.write(t, rows([], [], []), txns=[("app", 2)])  # an empty commit
    storage.write(t, rows(["d", "e"], [4, 5], [day, day + 1], sku=["y", None]))
    for after in range(-1, 4):
        for columns in (None, ["sku", "date", "device_id"]):
            fast, feed, took = _changes_both_ways(storage, t, after, monkeypatch, columns)
            _same_rows(fast, feed)
            assert took == (after < 3), after  # after the last version there is nothing to read
    fast, _, _ = _changes_both_ways(storage, t, -1, monkeypatch)
    assert fast.column_names[-1] == "date" and fast.num_rows == 5
    assert sorted(fast["date"].to_pylist(), key=str) == ["2026-01-01", "2026-01-01", "2026-01-01", "2026-01-02", None]
    fast, feed, took = _changes_both_ways(storage, t, 2, monkeypatch)  # after the empty commit
    _same_rows(fast, feed)
    assert took and sorted(fast["device_id"].to_pylist()) == ["d", "e"]
    # a rewrite writes change-data files: the change feed reads it (inserts and post-images)
    storage.write(t, rows(["d2"], [4], [day], sku=pa.array([None], pa.string())), mode="overwrite", predicate="seq = 4")
    for after in (-1, 3):
        fast, feed, took = _changes_both_ways(storage, t, after, monkeypatch)
        _same_rows(fast, feed)
        assert not took and "d2" in fast["device_id"].to_pylist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.integers(-62_135_596_800_001, 253_402_300_800_000),
                          st.integers(-86_400_001, 86_400_001)), max_size=40), st.integers(1, 3))
def test_the_dates_formatted_once_per_day_are_arrows_strftime_on_every_row(ms, chunks):
    """``utc_dates`` (the partition column) formats each distinct day once: the same strings (and
    NULLs) as Arrow's ``strftime`` on every row, over int64's whole range, the year 1 / 9999
    edges and midnight +-1 ms, from arrays and chunked columns."""
    from cloud.lake.tables import _MAX_MS, _MIN_MS, _strftime_dates, utc_dates

    want = [None if m is None or not _MIN_MS <= m <= _MAX_MS else _strftime_dates(pa.array([m], pa.int64()))[0].as_py()
            for m in ms]
    step = max(1, -(-len(ms) // chunks))
    column = pa.chunked_array([pa.array(ms[i:i + step], pa.int64()) for i in range(0, len(ms), step)], pa.int64())
    for given_ms in (pa.array(ms, pa.int64()), column):
        got = utc_dates(given_ms)
        assert got.type == pa.string() and got.to_pylist() == want


def test_changes_refuse_a_column_the_table_lacks_with_a_storage_error_on_both_paths(tmp_path, monkeypatch):
    storage = open_storage(tmp_path / "lake")
    storage.write("silver.pos_line", pa.table({"device_id": ["a"], "seq": pa.array([1], pa.int64()),
                                               "ts": pa.array([1_767_225_600_000], pa.int64())}))
    rows, _ = storage.changes("silver.pos_line", -1, columns=["device_id"])
    assert rows.to_pylist() == [{"device_id": "a"}]
    import cloud.lake.storage as st

    for path in ("appended files", "change feed"):
        with pytest.raises(StorageError, match="nosuch"):
            storage.changes("silver.pos_line", -1, columns=["device_id", "nosuch"])
        monkeypatch.setattr(st.LakeStorage, "_appended", lambda *a, **k: None)


def test_a_window_overwrite_adds_a_declared_column_a_table_written_before_it_lacks(tmp_path):
    # gold.model_performance from before its ``unobserved`` column (0867285): the runner's next
    # window overwrite carries the column; rows outside the window read it as null.
    from cloud.lake.tables import conform

    s = open_storage(tmp_path)
    day = 86_400_000
    row = lambda d, n: {"store_id": "s1", "day_ms": d * day, "scorer": "m1", "alerts": n, "true_alerts": n,  # noqa: E731
                        "unobserved": 2}
    old = conform("gold.model_performance", pa.Table.from_pylist([row(1, 5), row(2, 6)]))
    s.write("gold.model_performance", old.drop(["unobserved"]))
    assert "unobserved" not in s.read("gold.model_performance").column_names
    new = conform("gold.model_performance", pa.Table.from_pylist([row(2, 7)]))
    s.write("gold.model_performance", new, mode="overwrite", predicate=f"store_id = 's1' AND day_ms >= {2 * day}")
    got = sorted(s.read("gold.model_performance").select(["day_ms", "alerts", "unobserved"]).to_pylist(),
                 key=lambda r: r["day_ms"])
    assert got == [{"day_ms": day, "alerts": 5, "unobserved": None}, {"day_ms": 2 * day, "alerts": 7, "unobserved": 2}]

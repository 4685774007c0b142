"""Files written outside deltalake (as Spark executors do) enter a table through one commit."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cloud.lake.spark import StagedFiles, _may_hold, _ParquetWriter
from cloud.lake.storage import open_storage
from cloud.lake.tables import conform


def _states(store: str, days: list[int]) -> pa.Table:
    return conform("gold.feature_state", pa.table({
        "store_id": [store] * len(days), "day_ms": days, "first_ms": [0] * len(days),
        "planogram_hash": ["h"] * len(days), "state_json": ["{}"] * len(days)}))


def test_files_a_worker_wrote_are_committed_with_their_statistics_and_the_watermark(tmp_path):
    storage = open_storage(tmp_path / "lake")
    writer = _ParquetWriter.of(storage)
    files = [f for s in ("s001", "s002") for f in writer.write("gold.feature_state", _states(s, [10, 20]))]
    assert StagedFiles(None, "gold.feature_state", files).commit(storage, window={}, time_col="day_ms",
                                                                 txns=[("gold<-x", 7)]) == 4
    rows = storage.read("gold.feature_state")
    assert sorted(zip(rows["store_id"].to_pylist(), rows["day_ms"].to_pylist())) == \
        [("s001", 10), ("s001", 20), ("s002", 10), ("s002", 20)]
    assert storage.txn_version("gold.feature_state", "gold<-x") == 7
    actions = pa.table(storage.open("gold.feature_state").get_add_actions(flatten=True)).to_pylist()
    assert sorted((a["min.store_id"], a["max.day_ms"], a["num_records"]) for a in actions) == \
        [("s001", 20, 2), ("s002", 20, 2)]

    # A window after everything the files hold removes none of them: the new file is added.
    more = writer.write("gold.feature_state", _states("s001", [30]))
    StagedFiles(None, "gold.feature_state", more).commit(storage, window={"s001": 30}, time_col="day_ms",
                                                         txns=[("gold<-x", 8)])
    assert storage.read("gold.feature_state").num_rows == 5
    assert storage.txn_version("gold.feature_state", "gold<-x") == 8


def test_a_file_may_hold_a_window_only_if_its_store_range_and_last_instant_reach_it():
    stats = {"min.store_id": "s002", "max.store_id": "s004", "max.day_ms": 100}
    assert _may_hold(stats, {"s003": 100}, "day_ms")
    assert not _may_hold(stats, {"s003": 101}, "day_ms")        # the file ends before the window
    assert not _may_hold(stats, {"s001": 0, "s005": 0}, "day_ms")  # other stores
    assert _may_hold({"min.store_id": None}, {"s001": 0}, "day_ms")  # no statistics: it may


def test_statistics_of_files_a_worker_wrote_keep_pseudonyms_out_of_the_delta_log(tmp_path):
    """min / max of a personal column (``loyalty_pid``) would put a customer's pseudonym in the
    log, where no erasure reaches it: the executors' writer leaves personal columns out."""
    from cloud.lake.tables import TABLES

    pids = ["pid1-" + "a" * 27, "pid1-" + "z" * 27]
    rows = conform("silver.pos_line", pa.table({
        "store_id": ["s001", "s002"], "device_id": ["d1", "d2"], "seq": [1, 2], "ts": [1_000, 2_000],
        "sku": ["sku-0001", "sku-0002"], "qty": [1, 2], "loyalty_pid": pids}))
    storage = open_storage(tmp_path / "lake")
    writer = _ParquetWriter.of(storage)
    StagedFiles(None, "silver.pos_line", writer.write("silver.pos_line", rows)).commit(
        storage, window={}, time_col="ts", txns=[])
    log = "".join(p.read_text() for p in (tmp_path / "lake" / "silver" / "pos_line" / "_delta_log").glob("*.json"))
    assert "minValues" in log and "sku-0001" in log  # statistics are there, for the other columns
    assert not any(pid in log or pid[:32] in log for pid in pids)
    assert storage.read("silver.pos_line")["loyalty_pid"].to_pylist() == pids
    assert any(c.personal and c.name == "loyalty_pid" for c in TABLES["silver.pos_line"].columns)


def test_a_staged_file_with_a_column_the_table_predates_adds_the_column(tmp_path):
    """A table created before a column joined its schema (``silver.pos_line`` without ``epoch`` /
    ``loyalty_pid``): the commit evolves the table's schema, as an append through ``write`` does,
    so the column's values in the staged file are read back (not hidden until a later write)."""
    storage = open_storage(tmp_path / "lake")
    old = conform("silver.pos_line", pa.table({
        "store_id": ["s001"], "device_id": ["d1"], "seq": [1], "ts": [1_000], "sku": ["sku-0001"], "qty": [1]}))
    storage.write("silver.pos_line", old.drop_columns(["epoch", "loyalty_pid"]))
    assert "epoch" not in storage.read("silver.pos_line").column_names
    rows = conform("silver.pos_line", pa.table({
        "store_id": ["s002"], "device_id": ["d2"], "epoch": [3], "seq": [2], "ts": [2_000],
        "sku": ["sku-0002"], "qty": [2], "loyalty_pid": ["pid1-" + "b" * 27]}))
    files = _ParquetWriter.of(storage).write("silver.pos_line", rows)
    StagedFiles(None, "silver.pos_line", files).commit(storage, window={}, time_col="ts", txns=[("silver<-x", 1)])
    got = storage.read("silver.pos_line").sort_by("seq")
    assert got["seq"].to_pylist() == [1, 2]
    assert got["epoch"].to_pylist() == [None, 3]
    assert got["loyalty_pid"].to_pylist() == [None, "pid1-" + "b" * 27]
    assert storage.txn_version("silver.pos_line", "silver<-x") == 1


def _plan(storage, writer, store: str, cut: int) -> tuple:
    """A rewrite planned as ``StagedFiles.commit`` plans it: the snapshot, the store's file to
    remove, and its rows before ``cut`` rewritten (to add)."""
    from cloud.lake.tables import in_window

    base = storage.open("gold.feature_state")
    old = next(a for a in pa.table(base.get_add_actions(flatten=True)).to_pylist() if a["min.store_id"] == store)
    rows = writer.read("gold.feature_state", old["path"])
    rest = writer.write("gold.feature_state", rows.filter(pc.invert(in_window(rows, {store: cut}, "day_ms"))))
    return base, [{"path": old["path"], "size": old["size_bytes"]}], rest


@pytest.mark.parametrize("meanwhile", ["compaction", "another run's rewrite"])
def test_a_commit_planned_on_a_snapshot_the_table_moved_past_is_refused(tmp_path, meanwhile):
    """The plan (files to remove, their rewrites) was made on version v; a compaction or another
    run committed since, replacing the planned files: committing the plan would duplicate their
    rows, so it is refused (nothing committed) and the next run plans again."""
    from gondola.errors import StorageError

    storage = open_storage(tmp_path / "lake")
    writer = _ParquetWriter.of(storage)
    for s in ("s001", "s002"):
        StagedFiles(None, "gold.feature_state", writer.write("gold.feature_state", _states(s, [10, 20]))).commit(
            storage, window={}, time_col="day_ms", txns=[])
    base, removes, kept = _plan(storage, writer, "s001", 20)
    if meanwhile == "compaction":
        storage.open("gold.feature_state").optimize.compact()
    else:
        _, their_removes, their_kept = _plan(storage, writer, "s001", 20)
        storage.commit_files("gold.feature_state", their_kept, their_removes)
    rows_before = storage.read("gold.feature_state").num_rows
    version = storage.version("gold.feature_state")
    new = writer.write("gold.feature_state", _states("s001", [20]))
    with pytest.raises(StorageError, match="changed"):
        storage.commit_files("gold.feature_state", kept + new, removes, txns=[("gold<-x", 5)], base=base)
    assert storage.version("gold.feature_state") == version
    assert storage.read("gold.feature_state").num_rows == rows_before
    assert storage.txn_version("gold.feature_state", "gold<-x") == -1

    # Planned again on the current version, the same rewrite commits: no row twice.
    base, removes, kept = _plan(storage, writer, "s001", 20)
    storage.commit_files("gold.feature_state", kept + new, removes, txns=[("gold<-x", 5)], base=base)
    got = storage.read("gold.feature_state")
    assert sorted(zip(got["store_id"].to_pylist(), got["day_ms"].to_pylist())) == \
        [("s001", 10), ("s001", 20), ("s002", 10), ("s002", 20)]


def test_a_row_without_a_time_is_never_in_the_window_so_a_rewrite_keeps_it():
    """The Delta delete predicate (``day_ms >= cut``) keeps a row whose time is NULL; the
    executors' rewrite (rows not in the window) must keep it too, not drop it."""
    from cloud.lake.tables import in_window

    rows = pa.table({"store_id": ["s001", "s001", "s001", "s002"], "day_ms": pa.array([None, 10, 30, 30], pa.int64())})
    assert in_window(rows, {"s001": 20}, "day_ms").to_pylist() == [False, False, True, False]
    rest = rows.filter(pc.invert(in_window(rows, {"s001": 20}, "day_ms")))
    assert rest["day_ms"].to_pylist() == [None, 10, 30]
    # in several chunks, with a row without a store (in no window), as a concatenated table holds them
    chunked = pa.concat_tables([rows.slice(0, 2), pa.table({"store_id": pa.array([None], pa.string()),
                                                             "day_ms": pa.array([40], pa.int64())}), rows.slice(2)])
    assert in_window(chunked, {"s001": 20, "s002": 40}, "day_ms").to_pylist() == [False, False, False, True, False]


def test_executors_apply_the_window_rule_without_importing_the_runner():
    """``in_window`` lives with the tables: an executor's rewrite imports neither the runner nor
    what the runner pulls in; the runner still offers it."""
    import subprocess
    import sys

    code = ("import sys; from cloud.lake.tables import in_window; import cloud.lake.spark; "
            "print('cloud.lake.runner' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from cloud.lake import runner, tables

    assert runner.in_window is tables.in_window

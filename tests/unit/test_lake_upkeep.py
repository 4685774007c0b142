"""When VACUUM may run under a change-feed reader that lags (``cloud.lake.runner.readers_caught_up``)."""

from __future__ import annotations

import deltalake
import pyarrow as pa

from cloud.lake.runner import readers_caught_up


def test_a_reader_whose_unread_commits_left_the_log_holds_vacuum_back(tmp_path):
    # The rule reads the timestamp of a lagging reader's first unread commit; once log retention
    # removed that commit's entry it cannot know it, and must say "not safe" (it raised).
    path = str(tmp_path / "bronze")
    for i in range(4):
        deltalake.write_deltalake(path, pa.table({"a": [i]}), mode="append",
                                  configuration={"delta.logRetentionDuration": "interval 0 seconds"} if i == 0 else None)
    dt = deltalake.DeltaTable(path)
    dt.create_checkpoint()
    dt.cleanup_metadata()

    class Storage:
        def __init__(self, mark: int):
            self.mark = mark

        def version(self, table):
            return deltalake.DeltaTable(path).version()

        def txn_version(self, table, app):
            return self.mark

        def open(self, table):
            return deltalake.DeltaTable(path)

    assert [h["version"] for h in deltalake.DeltaTable(path).history()] == [3]
    assert not readers_caught_up(Storage(-1), "bronze.events", 168)  # versions 0-2 left the log
    assert readers_caught_up(Storage(2), "bronze.events", 168)  # only version 3 unread, and it is fresh
    assert not readers_caught_up(Storage(2), "bronze.events", 0)  # no window: a lag holds it back
    assert readers_caught_up(Storage(3), "bronze.events", 0)  # caught up


def test_maintenance_removes_files_no_commit_named_once_older_than_the_retention(tmp_path):
    # Executors stage Parquet files, then one commit adds them; if the driver dies in between,
    # the files are in the table's folder with no log entry. A plain VACUUM never sees them.
    import os
    import time

    import pyarrow.parquet as pq

    from cloud.lake.maintenance import maintain

    path = tmp_path / "pos_line"
    for i in range(3):
        deltalake.write_deltalake(str(path), pa.table({"a": [i]}), mode="append")
    old, fresh = path / "part-staged-old.parquet", path / "part-staged-fresh.parquet"
    for f in (old, fresh):
        pq.write_table(pa.table({"a": [99]}), f)
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old, (week_ago, week_ago))

    class Storage:
        def open(self, table):
            return deltalake.DeltaTable(str(path))

    report = maintain(Storage(), ["silver.pos_line"], small_files=2, retention_hours=168)
    assert report["silver.pos_line"]["files_after"] == 1
    assert not old.exists() and fresh.exists()  # the fresh one may be a running job's
    assert sorted(deltalake.DeltaTable(str(path)).to_pyarrow_table()["a"].to_pylist()) == [0, 1, 2]

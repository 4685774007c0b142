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

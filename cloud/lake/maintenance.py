"""Table upkeep the runner does after its writes: compaction and VACUUM.

Every incremental run adds at least one small Parquet file per table it writes (and a windowed
overwrite rewrites a store's recent rows into new files), so a lake that runs every few minutes
collects thousands of small files; readers pay per file. ``maintain`` compacts a table once it
has ``SMALL_FILES`` files or more (``optimize.compact``: a ``dataChange = false`` commit, so the
change data feed the runner reads shows nothing new and no watermark moves), then VACUUMs files
no version within ``retention_hours`` still references (readers pinned to an older version,
such as a model's lineage, need the retention to cover them: 7 days by default, as in Delta).
A table is vacuumed only when ``vacuum_ok`` says every step that reads its change data feed has
caught up with it: a lagging reader (a target with nothing new gets no commit, so its watermark
may trail) would otherwise find the files of the versions it has yet to read gone.
"""

from __future__ import annotations

from typing import Callable

from cloud.lake.storage import LakeStorage
from gondola.errors import StorageError

__all__ = ["maintain", "SMALL_FILES", "RETENTION_HOURS"]

#: compact a table once it has this many data files
SMALL_FILES = 32
#: VACUUM keeps files any version of the last this many hours references
RETENTION_HOURS = 168


def maintain(storage: LakeStorage, tables: list[str], *, small_files: int = SMALL_FILES,
             retention_hours: int = RETENTION_HOURS, vacuum_ok: Callable[[str], bool] = lambda table: True) -> dict:
    """Compact and VACUUM ``tables``; returns per table ``{"files_before", "files_after", "vacuumed"}``
    for the tables it touched (``vacuumed`` None: VACUUM skipped, a reader lags).

    Raises:
        StorageError: a table could not be compacted or vacuumed.
    """
    report: dict[str, dict] = {}
    for table in tables:
        dt = storage.open(table)
        if dt is None:
            continue
        before = len(dt.file_uris())
        if before < small_files:
            continue
        # asked before compacting: readers need not read the compaction's (no-data) commit
        may_vacuum = vacuum_ok(table)
        try:
            dt.optimize.compact()
            dt = storage.open(table)
            removed = None
            if may_vacuum:
                # full: also files no commit ever named (staged by executors, then the driver or
                # its commit failed): only a full VACUUM finds them, and they may hold personal
                # data an erasure cannot reach otherwise. The retention spares a running job's.
                removed = dt.vacuum(retention_hours=retention_hours, dry_run=False,
                                    enforce_retention_duration=False, full=True)
        except Exception as exc:  # deltalake raises its own types per backend
            raise StorageError(f"cannot compact or vacuum {table}: {exc}") from exc
        report[table] = {"files_before": before, "files_after": len(dt.file_uris()), "vacuumed": None if removed is None else len(removed)}
    return report

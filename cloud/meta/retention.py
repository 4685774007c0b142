"""Retention of the lake: what is kept how long, and the job that applies it.

=====================  ==========================================================================
what                   kept
=====================  ==========================================================================
superseded data files  ``VACUUM_HOURS`` (7 days) after a newer version replaced them: the time
                       travel window, and the time an erasure takes to reach the files
Delta log entries      ``delta.logRetentionDuration`` (Delta's default, 30 days), then removed by
                       ``cleanup_metadata``: old file statistics and change-feed pre-images go
                       with them (the last trace of an erased pseudonym)
run lineage            ``LINEAGE_DAYS`` (400 days: a model trained a year ago can still be walked
                       back to its tables and devices); older ``meta.lineage`` rows are deleted
table contents         as long as the business needs them (no expiry: sales history trains models)
gateway buffer         per event type TTLs in ``edge.buffer.BufferPolicy`` (days), plus the cap
buffer backups         the newest ``backup_keep`` (4), one every ``backup_every_s`` (6 h)
lake backups           the operator's folder; one a day, kept within the hub's retention window
=====================  ==========================================================================

``gondola cloud retention`` runs it (daily, after the pipeline): vacuum every table, clean up the
logs, prune lineage. ``--dry-run`` lists what would go. The runner also compacts and vacuums the
tables it writes (``cloud.lake.maintenance``, same window); this job covers every table,
the ones the runner does not write included (stream, meta, models). Like the runner, it leaves a
table alone while a step that reads its change data feed still needs a file VACUUM would take
(a reader whose first unread commit is older than the window).
"""

from __future__ import annotations

import time

from cloud.lake.maintenance import RETENTION_HOURS
from cloud.lake.storage import LakeStorage
from gondola.errors import StorageError

__all__ = ["VACUUM_HOURS", "LINEAGE_DAYS", "apply_retention"]

#: the time-travel window: one value for the runner's upkeep and this job
VACUUM_HOURS = RETENTION_HOURS
LINEAGE_DAYS = 400


def apply_retention(storage: LakeStorage, *, vacuum_hours: int = VACUUM_HOURS, lineage_days: int = LINEAGE_DAYS,
                    dry_run: bool = False, now_ms: int | None = None) -> dict:
    """Vacuum every table, clean its log, prune ``meta.lineage``; return what was (or would be)
    removed: ``{"files": {table: n}, "lineage_rows": n, "skipped": [tables whose readers lag]}``.

    Raises:
        StorageError: a table could not be vacuumed or pruned.
    """
    from cloud.lake.runner import readers_caught_up
    from cloud.lake.tables import LINEAGE_TABLE
    from cloud.meta.backup import list_tables

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    report: dict = {"files": {}, "lineage_rows": 0, "skipped": []}
    cutoff = now_ms - lineage_days * 86_400_000
    if storage.exists(LINEAGE_TABLE):
        old = storage.read(LINEAGE_TABLE, columns=["event_time"])
        n = sum(1 for t in old["event_time"].to_pylist() if t is not None and t < cutoff)
        if n and not dry_run:
            try:
                storage.open(LINEAGE_TABLE).delete(f"event_time < {int(cutoff)}")
            except Exception as exc:  # deltalake raises several types
                raise StorageError(f"cannot prune {LINEAGE_TABLE}: {exc}") from exc
        report["lineage_rows"] = n
    for table in list_tables(storage):
        if not readers_caught_up(storage, table, vacuum_hours):
            report["skipped"].append(table)
            continue
        dt = storage.open(table)
        try:
            # full: also files no commit ever named (an executor's staged file whose commit never
            # came), which may hold personal data an erasure's merge cannot reach.
            removed = dt.vacuum(retention_hours=vacuum_hours, dry_run=dry_run,
                                enforce_retention_duration=vacuum_hours >= VACUUM_HOURS, full=True)
            if not dry_run:
                dt.cleanup_metadata()
        except Exception as exc:
            raise StorageError(f"cannot vacuum {table}: {exc}") from exc
        report["files"][table] = len(removed)
    return report

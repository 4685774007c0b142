"""Retention on a real lake: superseded files vacuumed past the window, tables unchanged, old
lineage pruned; a dry run removes nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cloud.cli import main as cloud_main
from cloud.lake.tables import LINEAGE_TABLE
from cloud.meta.backup import content_checksum, list_tables
from cloud.meta.retention import apply_retention
from cloud.synth import day_events, fill_hub
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub


def test_retention_vacuums_superseded_files_prunes_old_lineage_and_keeps_every_row(tmp_path, capsys):
    hub = LocalHub(tmp_path / "hub.sqlite")
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    events = list(day_events(stores=1, facings=2, hours=12))
    for part in (events[: len(events) // 2], events[len(events) // 2:]):  # two runs: gold rewrites its windows
        fill_hub(hub, part)
        cloud.ingest_stream()
        cloud.transform()
    hub.close()
    storage = cloud.storage
    before = {t: content_checksum(storage.read(t)) for t in list_tables(storage) if t != LINEAGE_TABLE}
    files = sum(1 for _ in (tmp_path / "lake").rglob("*.parquet"))

    dry = apply_retention(storage, vacuum_hours=0, lineage_days=0, dry_run=True, now_ms=int(time.time() * 1000) + 1)
    assert sum(dry["files"].values()) > 0 and dry["lineage_rows"] > 0
    assert sum(1 for _ in (tmp_path / "lake").rglob("*.parquet")) == files  # a dry run removes nothing

    # Within the window nothing goes; past it, the superseded files do.
    within = apply_retention(storage, lineage_days=400)
    assert sum(within["files"].values()) == 0
    # A silver table with nothing new (shelf checks here) trails bronze by a few fresh commits: it
    # cannot need a file the 7-day VACUUM takes, so bronze is not held back by it...
    assert "bronze.events" in within["files"] and within["skipped"] == []
    done = apply_retention(storage, vacuum_hours=0, lineage_days=400)
    assert sum(done["files"].values()) == sum(dry["files"].values())
    # ...but with no window at all it is: its unread commits are older than "now"
    assert done["skipped"] == ["bronze.events"] and "gold.features" in done["files"]
    assert sum(1 for _ in (tmp_path / "lake").rglob("*.parquet")) < files
    assert {t: content_checksum(storage.read(t)) for t in before} == before  # every row kept

    # Files no commit named (staged by an executor whose driver died before the commit): the
    # next run past the window removes them; a fresh one (a running job's) stays.
    folder = Path(storage.open("silver.pos_line").table_uri.removeprefix("file://"))
    old, fresh = folder / "part-staged-old.parquet", folder / "part-staged-fresh.parquet"
    for f in (old, fresh):
        pq.write_table(pa.table({"seq": [1]}), f)
    os.utime(old, (time.time() - 8 * 86_400, time.time() - 8 * 86_400))
    orphans = apply_retention(storage, lineage_days=400)
    assert orphans["files"]["silver.pos_line"] == 1 and not old.exists() and fresh.exists()
    assert {t: content_checksum(storage.read(t)) for t in before} == before

    lineage_rows = storage.read(LINEAGE_TABLE).num_rows
    pruned = apply_retention(storage, lineage_days=0, now_ms=int(time.time() * 1000) + 1)
    assert pruned["lineage_rows"] == lineage_rows and storage.read(LINEAGE_TABLE).num_rows == 0

    assert cloud_main(["--lake", str(tmp_path / "lake"), "retention", "--dry-run"]) == 0
    assert "would remove 0 files" in capsys.readouterr().out

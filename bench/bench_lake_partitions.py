"""What date partitions buy a reader of one day, and what they cost the writes.

The same simulated days (``cloud.synth``, 30 sensor facings per store) go through the runner
(DuckDB engine) in runs of 6 hours into two lakes: one with the table dictionary as it was
before partitions (no ``date`` column, unpartitioned: the old code's layout) and one as it is.
For each partitioned table, a reader of the middle day is counted: on the partitioned lake the
files of that day's folder (``date = D``: what ``delta_scan`` / ``to_pyarrow_dataset`` with a
date filter opens); on the unpartitioned lake the files whose statistics (min / max of the time
column) reach that day, the best a reader can do there (data skipping). Counted again after
compacting both lakes (what upkeep does once a table has 32 files): compaction of an
unpartitioned table merges days into one file, so the day's reader reads them all.
Also: bytes per store-day of every table (the sizing behind which tables are partitioned),
and the transform's wall time on both layouts in the same rounds (the cost of writing
partitions; the machine is shared, so each figure sits beside its peer from the same round).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

STORES, FACINGS, DAYS, RUN_HOURS, ROUNDS = 4, 30, 3, 6, 2
_DAY = 86_400_000


@contextmanager
def unpartitioned_layout():
    """The table dictionary before partitions (the old code's layout): no ``date``, no partition."""
    from cloud.lake.tables import PARTITION_COL, TABLES

    saved = dict(TABLES)
    for name, tdef in saved.items():
        if tdef.partition_from:
            TABLES[name] = dataclasses.replace(tdef, partition_from=None,
                                               columns=tuple(c for c in tdef.columns if c.name != PARTITION_COL))
    try:
        yield
    finally:
        TABLES.update(saved)


def _build(folder: Path, hub_path: Path, slices: list, engine) -> float:
    from cloud.ingest.source import LocalHubSource
    from cloud.ingest.stream import ingest_stream
    from cloud.lake.runner import transform
    from cloud.lake.storage import open_storage
    from cloud.synth import fill_hub
    from gondola.hub import LocalHub

    storage = open_storage(folder)
    spent = 0.0
    with LocalHub(hub_path) as hub:
        for part in slices:
            fill_hub(hub, part, per_message=500)
            with LocalHubSource(hub_path, consumer_group="bench") as source:
                ingest_stream(storage, source, max_messages=500)
            t = time.perf_counter()
            transform(storage, engine, maintenance=False)
            spent += time.perf_counter() - t
    return spent


def _day_reader(storage, table: str, day: str, day_ms: int) -> dict:
    """Files and bytes a reader of ``day`` opens: the partition's, or those whose statistics reach it."""
    import pyarrow as pa

    from cloud.lake.tables import PARTITION_COL, TABLES

    dt = storage.open(table)
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    col = TABLES[table].partition_from
    if dt.metadata().partition_columns:
        hit = [a for a in actions if a.get(f"partition.{PARTITION_COL}") == day]
    else:
        hit = [a for a in actions if a.get(f"min.{col}") is None or
               (a[f"min.{col}"] < day_ms + _DAY and a[f"max.{col}"] >= day_ms)]
    return {"files": len(hit), "bytes": sum(a["size_bytes"] for a in hit), "table_files": len(actions),
            "table_bytes": sum(a["size_bytes"] for a in actions)}


def run(quick: bool = False) -> dict:
    import pyarrow as pa

    from bench.bench_lake import _stat as stat
    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.storage import open_storage
    from cloud.lake.tables import TABLES, partition_columns, utc_date
    from cloud.synth import DAY0, day_events

    stores, rounds = (2, 1) if quick else (STORES, ROUNDS)
    events = list(day_events(stores=stores, facings=FACINGS, hours=24 * DAYS))
    bounds = list(range(DAY0, DAY0 + DAYS * _DAY + 1, RUN_HOURS * 3_600_000))
    slices = [[e for e in events if lo <= e["ts"] < hi] for lo, hi in zip(bounds, bounds[1:])]
    day_ms = DAY0 + (DAYS // 2) * _DAY
    day = utc_date(day_ms)
    # bronze is partitioned by arrival (enqueue) date: every event of a bench arrives today
    tables = [t for t in TABLES if partition_columns(t) and TABLES[t].partition_from != "enqueued_time"]
    out: dict = {"stores": stores, "facings_per_store": FACINGS, "days": DAYS, "runs": len(slices), "events": len(events),
                 "rounds": rounds, "day_read": day, "tables": tables}
    walls: dict[str, list[float]] = {"unpartitioned": [], "partitioned": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(rounds):
            for layout in ("unpartitioned", "partitioned"):  # alternating, same round: same load
                folder = tmp / f"{layout}-{r}"
                if layout == "unpartitioned":
                    with unpartitioned_layout():
                        walls[layout].append(_build(folder / "lake", folder / "hub.sqlite", slices, DuckDBEngine()))
                else:
                    walls[layout].append(_build(folder / "lake", folder / "hub.sqlite", slices, DuckDBEngine()))
                print(f"  round {r} {layout}: transform {walls[layout][-1]:.1f}s over {len(slices)} runs", flush=True)
        reads: dict = {}
        for layout in ("unpartitioned", "partitioned"):
            storage = open_storage(tmp / f"{layout}-0" / "lake")
            reads[layout] = {t: _day_reader(storage, t, day, day_ms) for t in tables}
            for t in tables:
                storage.open(t).optimize.compact()
            reads[layout + "_compacted"] = {t: _day_reader(storage, t, day, day_ms) for t in tables}
        storage = open_storage(tmp / "partitioned-0" / "lake")
        sizes = {}
        for t in TABLES:
            dt = storage.open(t)
            if dt is not None and not t.startswith("meta."):
                b = sum(pa.table(dt.get_add_actions(flatten=True))["size_bytes"].to_pylist())
                sizes[t] = round(b / (stores * DAYS) / 1024, 1)
    out["kib_per_store_day"] = sizes
    out["day_reader"] = reads
    out["read_ratio_unpartitioned_vs_partitioned"] = {
        state: {t: {"files": round(reads["unpartitioned" + state][t]["files"] / max(1, reads["partitioned" + state][t]["files"]), 2),
                    "bytes": round(reads["unpartitioned" + state][t]["bytes"] / max(1, reads["partitioned" + state][t]["bytes"]), 2)}
                for t in tables} for state in ("", "_compacted")}
    out["transform_s"] = {k: stat(v) for k, v in walls.items()}
    out["transform_partitioned_vs_unpartitioned"] = stat([p / u for p, u in zip(walls["partitioned"], walls["unpartitioned"])])
    for state in ("", "_compacted"):
        print(f"  one-day reader{state or ' (as written)'}: " + "; ".join(
            f"{t}: {reads['unpartitioned' + state][t]['files']} -> {reads['partitioned' + state][t]['files']} files, "
            f"{reads['unpartitioned' + state][t]['bytes'] // 1024} -> {reads['partitioned' + state][t]['bytes'] // 1024} KiB"
            for t in tables))
    print(f"  transform partitioned / unpartitioned: {out['transform_partitioned_vs_unpartitioned']}")
    return out

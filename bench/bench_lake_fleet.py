"""A day of 1,000 stores through the lake on this machine: ingest and transform, per phase.

Sized to fit a 2-core machine shared with other work: 1,000 stores with 4 sensor facings each
(the real stores have hundreds; the per-store cost is what scales a cluster, see docs/lake.md),
one simulated day (``cloud.synth.day_events``), sent to the embedded hub in gateway batches,
ingested to ``bronze.events`` and transformed to silver and gold (DuckDB engine, Delta on a
local folder). Reports events, events/s and wall time per phase, and the lake's size on disk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

N_STORES, N_FACINGS = 1000, 4


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(quick: bool = False) -> dict:
    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.runner import transform
    from cloud.ingest.source import LocalHubSource
    from cloud.ingest.stream import ingest_stream
    from cloud.lake.storage import open_storage
    from cloud.synth import day_events, fill_hub, write_master_csvs
    from cloud.ingest.batch import ingest_batch
    from gondola.hub import LocalHub

    stores = 50 if quick else N_STORES
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        n = 0
        with LocalHub(tmp / "hub.sqlite") as hub:
            for s in range(0, stores, 50):  # generated in slices: the whole day never sits in memory
                part = list(day_events(stores=min(50, stores - s), facings=N_FACINGS, hours=24, seed=s,
                                       first_store=s + 1))
                fill_hub(hub, part, per_message=500)
                n += len(part)
        gen_s = time.perf_counter() - t
        print(f"day of {stores} stores x {N_FACINGS} facings: {n:,} events (generated + sent in {gen_s:.1f}s)")
        write_master_csvs(tmp / "master", stores=1, facings=N_FACINGS)  # products only matter here
        (tmp / "master" / "planogram.csv").unlink()
        (tmp / "master" / "stores.csv").unlink()

        storage = open_storage(tmp / "lake")
        ingest_batch(storage, tmp / "master")
        t = time.perf_counter()
        with LocalHubSource(tmp / "hub.sqlite") as source:
            bronze_rows = ingest_stream(storage, source, max_messages=2000)
        ingest_s = time.perf_counter() - t
        phases: list[tuple[str, float]] = []
        t = time.perf_counter()
        report = transform(storage, DuckDBEngine(), progress=lambda name: phases.append((name, time.perf_counter())))
        transform_s = time.perf_counter() - t
        phases.append(("end", time.perf_counter()))
        phase_s = {a[0]: round(b[1] - a[1], 2) for a, b in zip(phases, phases[1:])}
        rows = {k: v for k, v in report["rows"].items() if k.startswith("gold.")}
        lake_mb = _size(tmp / "lake") / 1e6
        hub_mb = _size(tmp) / 1e6 - lake_mb
        print(f"  ingest {ingest_s:.1f}s ({bronze_rows / ingest_s:,.0f} events/s); transform {transform_s:.1f}s "
              f"({n / transform_s:,.0f} events/s); phases {phase_s}; lake {lake_mb:.0f} MB")
        return {
            "stores": stores, "facings_per_store": N_FACINGS, "events": n, "bronze_rows": bronze_rows,
            "generate_and_send_s": round(gen_s, 2), "ingest_s": round(ingest_s, 2),
            "transform_s": round(transform_s, 2), "transform_phases_s": phase_s,
            "day_end_to_end_s": round(ingest_s + transform_s, 2),
            "events_per_s": {"ingest": round(bronze_rows / ingest_s), "transform": round(n / transform_s),
                             "end_to_end": round(n / (ingest_s + transform_s))},
            "per_store_ms": {"ingest": round(1000 * ingest_s / stores, 1), "transform": round(1000 * transform_s / stores, 1),
                             **{k: round(1000 * v / stores, 1) for k, v in phase_s.items()}},
            "gold_rows": rows, "lake_mb": round(lake_mb, 1), "hub_mb": round(hub_mb, 1),
            "note": "2-core machine shared with other agents' work; 4 facings per store to fit it",
        }

"""The whole transform on local Spark with 1 and 2 executor cores: does the work spread?

One simulated day of 8 and of 24 stores (``cloud.synth``) goes through the real runner on a fresh lake per
round, with ``SparkEngine`` as the engine: executors read bronze and silver from the tables'
Parquet files, run the silver and gold SQL and the per-store feature replay, and write every
silver event table and gold table as Parquet files that the runner commits with ``deltalake``
(``StagedFiles``; master data, small, is still written by the driver). Timed per phase with
``local[1]`` and ``local[2]``, beside the embedded engine (DuckDB, in process) on the same day
(the peer): silver (bronze -> silver, written), gold features (the replay, written), and the
rest of gold (SQL and writes: on Spark the SQL runs when its rows are written). Medians of the
rounds with spread; the machine is shared, so each figure sits beside its peer from the same run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

#: two fleet sizes: the difference gives the cost per store without Spark's fixed cost per run
SIZES, N_FACINGS, ROUNDS = (8, 24), 30, 3


def _round(tmp: Path, hub: str, tag: str, engine) -> dict:
    from cloud.ingest.source import LocalHubSource
    from cloud.ingest.stream import ingest_stream
    from cloud.lake.runner import transform
    from cloud.lake.storage import open_storage

    storage = open_storage(tmp / f"lake-{tag}")
    with LocalHubSource(tmp / hub, consumer_group=tag) as source:
        ingest_stream(storage, source, max_messages=500)
    phases: list[tuple[str, float]] = []
    session = getattr(engine, "session", None)  # Spark: count the run's jobs (its fixed cost is per job)
    if session is not None:
        session.sparkContext.setJobGroup(tag, "bench run")
    transform(storage, engine, progress=lambda name: phases.append((name, time.perf_counter())), maintenance=False)
    phases.append(("end", time.perf_counter()))
    jobs = len(session.sparkContext.statusTracker().getJobIdsForGroup(tag)) if session is not None else None
    phase_s = {a[0]: b[1] - a[1] for a, b in zip(phases, phases[1:])}
    total = phases[-1][1] - phases[0][1]
    rows = {t: storage.read(t).num_rows for t in ("silver.shelf_reading", "gold.hourly_sales", "gold.features")}
    return {"total_s": total, "silver_s": phase_s["silver"], "features_s": phase_s["gold features"],
            "gold_rest_s": total - phase_s["silver"] - phase_s["gold features"], "rows": rows, "jobs": jobs}


def run(quick: bool = False) -> dict:
    from bench.bench_lake import _median as med
    from bench.bench_lake import _stat as stat
    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.spark import SparkEngine
    from cloud.synth import day_events, fill_hub
    from gondola.hub import LocalHub

    sizes = (2, 6) if quick else SIZES
    rounds = 1 if quick else ROUNDS
    out: dict = {"stores": list(sizes), "facings_per_store": N_FACINGS, "rounds": rounds, "events": {}}
    phases = ("total_s", "silver_s", "features_s", "gold_rest_s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in sizes:
            events = list(day_events(stores=n, facings=N_FACINGS, hours=24))
            with LocalHub(tmp / f"hub{n}.sqlite") as hub:
                fill_hub(hub, events, per_message=500)
            out["events"][n] = len(events)
        print(f"days of {sizes} stores x {N_FACINGS} facings: {out['events']} events; {rounds} rounds per setting")
        results: dict[str, dict[int, list[dict]]] = {}

        def setting(name: str, engine) -> None:
            results[name] = {}
            for n in sizes:
                results[name][n] = [_round(tmp, f"hub{n}.sqlite", f"{name}-{n}-{r}", engine) for r in range(rounds)]
                for r in results[name][n]:
                    print(f"  {name}, {n} stores: total {r['total_s']:.1f}s (silver {r['silver_s']:.1f}s, features "
                          f"{r['features_s']:.1f}s, rest of gold {r['gold_rest_s']:.1f}s)", flush=True)

        for cores in (1, 2):
            spark = SparkEngine(master=f"local[{cores}]")
            _round(tmp, f"hub{sizes[0]}.sqlite", f"warm{cores}", spark)  # JVM and Python workers start once
            setting(f"spark_local_{cores}", spark)
            spark.stop()
        setting("embedded", DuckDBEngine())
    raw = Path(tempfile.gettempdir()) / "bench_lake_spark_raw.json"  # kept if the summary below fails
    raw.write_text(json.dumps({k: {str(n): rs for n, rs in v.items()} for k, v in results.items()}))
    small, big = sizes
    for name, by_size in results.items():
        out[name] = {str(n): {p: stat([r[p] for r in rs]) for p in phases} | {"rows": rs[0]["rows"],
                                                                            "spark_jobs": rs[0]["jobs"]}
                     for n, rs in by_size.items()}
        # per store: the difference between the two fleet sizes (medians), divided by the stores added
        out[name]["ms_per_store"] = {p[:-2]: round(1000 * (med([r[p] for r in by_size[big]]) -
                                                           med([r[p] for r in by_size[small]])) / (big - small), 1)
                                     for p in phases}
        out[name]["fixed_s_per_run"] = round(med([r["total_s"] for r in by_size[small]])
                                             - small * out[name]["ms_per_store"]["total"] / 1000, 2)
    out["speedup_2_vs_1_cores"] = {p[:-2]: round(out["spark_local_1"][str(big)][p]["median"]
                                                 / out["spark_local_2"][str(big)][p]["median"], 2) for p in phases}
    out["spark_2_cores_vs_embedded"] = {p[:-2]: round(out["spark_local_2"][str(big)][p]["median"]
                                                      / out["embedded"][str(big)][p]["median"], 2) for p in phases}
    out["same_rows"] = all(len({tuple(sorted(results[k][n][0]["rows"].items())) for k in results}) == 1 for n in sizes)
    print(f"  {big} stores, speed-up with 2 cores: {out['speedup_2_vs_1_cores']}; local[2] / embedded: "
          f"{out['spark_2_cores_vs_embedded']}; per store (ms): "
          + "; ".join(f"{k} {out[k]['ms_per_store']}" for k in results) + f"; same rows: {out['same_rows']}")
    return out

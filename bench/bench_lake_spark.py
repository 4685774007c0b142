"""Gold features on local Spark with 1 and 2 executor cores: does the work spread?

One simulated day of N stores (``cloud.synth``) goes through the real runner on a fresh lake per
round; the SQL runs embedded (DuckDB) and the per-store feature replay runs on Spark, where each
store's task also writes its Parquet files (``SparkEngine.features`` with storage) and the runner
commits them (``StagedFiles.commit``). Timed: the "gold features" phase (Spark job: replay +
executor writes) and the "gold writes" phase (the Delta commit among the other gold writes),
with ``local[1]`` and ``local[2]``, beside the embedded engine's in-process replay of the same
day (the peer). Medians of the rounds with spread; the machine is shared, so each figure sits
beside its peer from the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

N_STORES, N_FACINGS, ROUNDS = 40, 30, 3


def _round(tmp: Path, tag: str, engine) -> dict:
    from cloud.ingest.source import LocalHubSource
    from cloud.ingest.stream import ingest_stream
    from cloud.lake.runner import transform
    from cloud.lake.storage import open_storage

    storage = open_storage(tmp / f"lake-{tag}")
    with LocalHubSource(tmp / "hub.sqlite", consumer_group=tag) as source:
        ingest_stream(storage, source, max_messages=500)
    phases: list[tuple[str, float]] = []
    transform(storage, engine, progress=lambda name: phases.append((name, time.perf_counter())), maintenance=False)
    phases.append(("end", time.perf_counter()))
    phase_s = {a[0]: b[1] - a[1] for a, b in zip(phases, phases[1:])}
    rows = storage.read("gold.features").num_rows
    return {"features_s": phase_s["gold features"], "writes_s": phase_s["gold writes"], "rows": rows}


def run(quick: bool = False) -> dict:
    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.spark import SparkEngine
    from cloud.synth import day_events, fill_hub
    from gondola.hub import LocalHub

    stores = 6 if quick else N_STORES
    rounds = 1 if quick else ROUNDS
    from bench.bench_lake import _median as med
    from bench.bench_lake import _stat as stat
    out: dict = {"stores": stores, "facings_per_store": N_FACINGS, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        events = list(day_events(stores=stores, facings=N_FACINGS, hours=24))
        with LocalHub(tmp / "hub.sqlite") as hub:
            fill_hub(hub, events, per_message=500)
        out["events"] = len(events)
        print(f"day of {stores} stores x {N_FACINGS} facings: {len(events):,} events; {rounds} rounds per setting")
        results: dict[str, list[dict]] = {}
        for cores in (1, 2):
            spark = SparkEngine(master=f"local[{cores}]")

            class SqlEmbeddedFeaturesOnSpark(DuckDBEngine):
                def features(self, *args, **kwargs):
                    return spark.features(*args, **kwargs)

            _round(tmp, f"warm{cores}", SqlEmbeddedFeaturesOnSpark())  # JVM and Python workers start once
            results[f"spark_local_{cores}"] = [_round(tmp, f"s{cores}r{r}", SqlEmbeddedFeaturesOnSpark())
                                               for r in range(rounds)]
            spark.stop()
            for r in results[f"spark_local_{cores}"]:
                print(f"  local[{cores}]: features {r['features_s']:.1f}s, gold writes {r['writes_s']:.1f}s", flush=True)
        results["embedded"] = [_round(tmp, f"e{r}", DuckDBEngine()) for r in range(rounds)]
        for r in results["embedded"]:
            print(f"  embedded (in process): features {r['features_s']:.1f}s, gold writes {r['writes_s']:.1f}s", flush=True)
    for name, rs in results.items():
        out[name] = {"features_s": stat([r["features_s"] for r in rs]), "gold_writes_s": stat([r["writes_s"] for r in rs]),
                     "feature_rows": rs[0]["rows"],
                     "features_ms_per_store": round(1000 * med([r["features_s"] for r in rs]) / stores, 1)}
    one, two = out["spark_local_1"]["features_s"]["median"], out["spark_local_2"]["features_s"]["median"]
    out["speedup_2_vs_1_cores"] = round(one / two, 2)
    out["spark_2_cores_vs_embedded"] = round(two / out["embedded"]["features_s"]["median"], 2)
    out["same_rows"] = len({out[k]["feature_rows"] for k in results}) == 1
    print(f"  features: local[1] {one}s, local[2] {two}s -> {out['speedup_2_vs_1_cores']}x with 2 cores; "
          f"embedded {out['embedded']['features_s']['median']}s; same rows: {out['same_rows']}")
    return out

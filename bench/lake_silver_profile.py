"""Where the lake transform's CPU goes, per phase and inside silver; and two checkouts side by side.

    python bench/lake_silver_profile.py [--stores 100] [--rounds 3] [--other /path/to/old/checkout]

Builds one simulated day (``cloud.synth``, 30 sensor facings a store) into a hub and a bronze
lake once, then per round copies that bronze lake and runs the whole transform on it in a fresh
process (so imports and caches start cold each time, as in ``python -m bench lake``), printing
the CPU seconds of each phase and, inside silver, of: reading bronze's changes, the contract
verdict, each kind of SQL statement (typing, dedup / late, the rest), the Delta writes and the
partition dates. With ``--other`` each round runs that checkout first, then this one, on the
same bronze (alternating: the machine's load moves both alike); the last round's silver and gold
tables are compared row for row (run ids excepted). Not part of ``make bench``: a profiling tool
(issue 13), figures in ``docs/lake.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _prepare(tmp: Path, stores: int) -> Path:
    from cloud.ingest.source import LocalHubSource
    from cloud.ingest.stream import ingest_stream
    from cloud.lake.storage import open_storage
    from cloud.synth import day_events, fill_hub
    from gondola.hub import LocalHub

    with LocalHub(tmp / "hub.sqlite") as hub:
        fill_hub(hub, list(day_events(stores=stores, facings=30, hours=24)), per_message=500)
    with LocalHubSource(tmp / "hub.sqlite", consumer_group="profile") as source:
        ingest_stream(open_storage(tmp / "bronze"), source, max_messages=500)
    return tmp / "bronze"


def _one(bronze: str, lake: str) -> dict:
    """One transform of a copy of ``bronze`` in this process, with the silver breakdown."""
    import cloud.lake.engine as engine_mod
    import cloud.lake.silver as silver_mod
    import cloud.lake.storage as storage_mod
    import cloud.lake.tables as tables_mod
    from cloud.lake.runner import transform

    inside: dict[str, float] = defaultdict(float)
    in_silver = [False]

    def timed(owner, name: str, label):
        fn = getattr(owner, name)

        def wrapper(*args, **kwargs):
            c = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if in_silver[0]:
                    inside[label(*args) if callable(label) else label] += time.process_time() - c
        setattr(owner, name, wrapper)

    def sql_kind(_self, sql, *_):
        if "JSON_STRUCT(event_json" in sql:
            return "sql: typing"
        if "MAX(ts) OVER (PARTITION BY device_id" in sql:  # (the late window; also before the dedup cut)
            return "sql: dedup and late"
        return "sql: other"

    timed(engine_mod.DuckDBEngine, "run", sql_kind)
    timed(storage_mod.LakeStorage, "changes", "read bronze changes")
    timed(storage_mod.LakeStorage, "write", "delta writes (with partition dates)")
    timed(tables_mod, "with_partition", "partition dates")
    timed(silver_mod, "contract_verdicts", "contract verdict")
    shutil.copytree(bronze, lake)
    phases: list[tuple[str, float]] = []

    def progress(name: str) -> None:
        in_silver[0] = name == "silver"
        phases.append((name, time.process_time()))

    transform(storage_mod.open_storage(lake), engine_mod.DuckDBEngine(), progress=progress)
    phases.append(("end", time.process_time()))
    spent = {a[0]: b[1] - a[1] for a, b in zip(phases, phases[1:])}
    inside["rest (keys, Arrow, quarantine, commits' reads)"] = spent["silver"] - sum(
        v for k, v in inside.items() if k != "partition dates")  # partition dates: inside the writes
    return {"phases": spent, "silver": dict(inside)}


def _compare(a: str, b: str) -> list[str]:
    """Silver and gold tables of two lakes that differ (rows compared as sorted tuples; run ids
    and times excepted; schemas with their metadata)."""
    from cloud.lake.storage import open_storage

    one, two, differ = open_storage(a), open_storage(b), []
    for layer in ("silver", "gold"):
        for d in sorted((Path(a) / layer).iterdir()):
            name = f"{layer}.{d.name}"
            x, y = one.read(name), two.read(name)
            cols = [c for c in x.column_names if c not in ("run_id", "run_at", "ingest_run")]
            rows = lambda t: sorted(zip(*[t[c].to_pylist() for c in cols]), key=repr)  # noqa: E731
            if not x.schema.equals(y.schema, check_metadata=True) or rows(x) != rows(y):
                differ.append(name)
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", help="another checkout's root, run first in each round")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: bronze, lake
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(*args.one)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bronze = _prepare(tmp, args.stores)
        roots = ([("other", Path(args.other).resolve())] if args.other else []) + [("this", HERE)]
        got: dict[str, list[dict]] = {name: [] for name, _ in roots}
        for r in range(args.rounds):
            for name, root in roots:
                lake = tmp / f"lake-{name}"
                shutil.rmtree(lake, ignore_errors=True)
                out = subprocess.run([sys.executable, str(HERE / "bench" / "lake_silver_profile.py"), "--one",
                                      str(bronze), str(lake)], env={**os.environ, "PYTHONPATH": str(root)},
                                     check=True, capture_output=True, text=True).stdout
                got[name].append(json.loads(out.strip().splitlines()[-1]))
                p = got[name][-1]["phases"]
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in p.items())
                      + f" (CPU s; total {sum(p.values()):.2f})", flush=True)
        for name, rounds in got.items():
            print(f"\n{name}: median CPU s over {len(rounds)} rounds (min-max)")
            for part in ("phases", "silver"):
                for key in rounds[0][part]:
                    xs = [r[part].get(key, 0.0) for r in rounds]
                    print(f"  {part:7s} {key:38s} {statistics.median(xs):6.2f} ({min(xs):.2f}-{max(xs):.2f})")
        if args.other:
            differ = _compare(str(tmp / "lake-other"), str(tmp / "lake-this"))
            print("\nsilver and gold tables " + ("identical" if not differ else f"DIFFER: {differ}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""False ``sensor_drift`` rows when a gateway's first delivery holds the morning.

Stores with no fault injected (so every ``sensor_drift`` row is false) whose gateways are offline
until 11:00 on the first day: the job first hears each sensor in a batch that also holds hours of
sales (``tests.stream_sim.run_offline_first_morning``). Counted, not timed: 4 stores x 400 SKUs x
2 days, seed 5 (``--quick``: 2 x 200 x 1, the integration test's size).

The code before the first-batch fix (``f16c1f7^``) is measured by running this module on a tree
with that ``cloud/stream/detectors.py``: ``python -m bench.bench_first_batch_drift OUT.json`` there,
then ``BENCH_FIRST_BATCH_PREVIOUS=OUT.json python -m bench first_batch_drift`` here keeps it in the
results file as ``previous`` (else a ``previous`` already in the results file is carried over).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SIZE = {"stores": 4, "skus": 400, "days": 2.0, "seed": 5}
QUICK = {"stores": 2, "skus": 200, "days": 1.0, "seed": 5}


def measure(stores: int, skus: int, days: float, seed: int) -> dict:
    """The run's anomaly rows by kind (no fault injected: all false) and the readings judged."""
    from tests.stream_sim import run_job, run_offline_first_morning

    root = Path(tempfile.mkdtemp(prefix="bench-first-batch-"))
    try:
        run = run_offline_first_morning(root, stores=stores, skus=skus, days=days, seed=seed)
        run_job(run, stock=False, categories=False)
        rows = run.table("stream.anomalies")
        kinds: dict[str, int] = {}
        for r in rows:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        readings = sum(r["readings"] for r in run.table("stream.store_health"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip() or None
    return {"stores": stores, "skus": skus, "days": days, "seed": seed, "offline_until_h": 11.0,
            "sensor_drift_rows": kinds.get("sensor_drift", 0), "anomaly_rows_by_kind": dict(sorted(kinds.items())),
            "readings_judged": readings, "head": head}


def run(quick: bool = False) -> dict:
    size = QUICK if quick else SIZE
    now = measure(**size)
    print(f"first batch after 11 h offline, {size}: {now['sensor_drift_rows']} sensor_drift rows (all false); "
          f"by kind {now['anomaly_rows_by_kind']}", flush=True)
    out = {"now": now}
    given = os.environ.get("BENCH_FIRST_BATCH_PREVIOUS")
    if given:
        prev = json.loads(Path(given).read_text())
        if {k: prev.get(k) for k in size} != size:
            raise ValueError(f"BENCH_FIRST_BATCH_PREVIOUS: measured on {prev}, not on {size}")
        out["previous"] = {**prev, "code": "cloud/stream/detectors.py of f16c1f7^ (before the first-batch fix)"}
    else:
        path = Path(__file__).parent / "results" / f"first_batch_drift{'-quick' if quick else ''}.json"
        before = json.loads(path.read_text()).get("result", {}).get("previous") if path.exists() else None
        if before:
            out["previous"] = {**before, "carried_over": True}
    return out


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    paths = [a for a in sys.argv[1:] if a != "--quick"]
    result = measure(**(QUICK if quick else SIZE))
    print(json.dumps(result))
    if paths:
        Path(paths[0]).write_text(json.dumps(result, indent=2) + "\n")

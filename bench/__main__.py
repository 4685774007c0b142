"""Run the benchmarks: ``python -m bench [NAME ...] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark names (bench_NAME.py); default all")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    failed = []
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.time()
        try:
            result = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"bench {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
            continue
        record = {
            "name": name,
            "quick": args.quick,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 2),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "arch": platform.machine()},
            "result": result,
        }
        suffix = "-quick" if args.quick else ""
        (results_dir / f"{name}{suffix}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How honestly the lake judges alerts, against the simulator's truth (issue 11, points 2 and 5).

For each lake (a ``gondola demo`` output folder with ``truth_stockouts.json``, the simulator's
stock-outs ``[store_id, facing_id, sku, start_ms, end_ms | null]``), the gold SQL runs once over
its whole silver tables (DuckDB) and every raised alert is judged three ways:

* **truth**: a forecast is right when the facing was truly empty at some moment of
  ``[alert, alert + H]``; an ``empty_now`` when it was truly empty at the alert;
* **lake before**: the rule before unobserved existed, read from the same run's
  ``stockout_start_ms`` (a stock-out row matched: right; none: false alarm; an ``empty_now`` is
  right only on a shelf already empty), so before and after come from one computation;
* **lake after**: ``gold.alert_outcomes.outcome`` (``unobserved`` left out of precision).

Per kind it reports the truth precision of all alerts, the lake's before and after, the truth
precision of the alerts the lake judged, and on facings without a sensor how often the lake's
verdict agrees with the truth. Usage::

    python -m bench.bench_alert_judgement out/demo7 [out/sim11 ...] [--json bench/results/alert_judgement.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from cloud.lake.engine import DuckDBEngine
from cloud.lake.gold import gold_tables, key_columns
from cloud.lake.runner import GOLD_INPUTS
from cloud.lake.storage import LocalStorage
from cloud.lake.tables import conform

KINDS = ("empty_within_h", "empty_now")


def lake_outcomes(lake: Path) -> tuple[list[dict], dict[tuple[str, str], bool]]:
    """Every raised alert's outcome from the lake's silver tables, and each facing's has_sensor."""
    storage = LocalStorage(str(lake))
    engine = DuckDBEngine()
    inputs: dict[str, pa.Table] = {}
    for table, name in list(GOLD_INPUTS.items()) + [("silver.products", "products"), ("silver.planogram", "planogram")]:
        rows = storage.read(table)
        inputs[name] = rows if rows is not None else conform(table, pa.table({"store_id": pa.array([], pa.string())}))
    inputs["keys"] = key_columns(engine, *(inputs[n] for n in GOLD_INPUTS.values()))
    out = gold_tables(engine, inputs)
    plan = {(r["store_id"], r["facing_id"]): r["has_sensor"] is not False for r in inputs["planogram"].to_pylist()}
    return out["gold.alert_outcomes"].to_pylist(), plan


def truth_right(alert: dict, truth: dict[tuple[str, str], list[tuple[int, int | None]]]) -> bool:
    ts, end = alert["alert_ms"], alert["alert_ms"] + alert["horizon_min"] * 60_000
    spans = truth.get((alert["store_id"], alert["facing_id"]), [])
    if alert["kind"] == "empty_now":
        return any(s <= ts and (e is None or e > ts) for s, e in spans)
    return any(s <= end and (e is None or e > ts) for s, e in spans)


def before_right(alert: dict) -> bool:
    start = alert["stockout_start_ms"]
    if alert["kind"] == "empty_now":
        return start is not None and start < alert["alert_ms"]
    return start is not None


def after_right(alert: dict) -> bool | None:
    o = alert["outcome"]
    if o == "unobserved":
        return None
    if alert["kind"] == "empty_now":
        return o in ("already_empty", "empty_seen")
    return o != "false_alarm"


def _share(xs: list[bool]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def judge(folder: Path) -> dict:
    truth: dict[tuple[str, str], list] = defaultdict(list)
    for store, facing, _sku, start, end in json.loads((folder / "truth_stockouts.json").read_text()):
        truth[(store, facing)].append((start, end))
    alerts, plan = lake_outcomes(folder / "lake")
    report: dict = {"lake": str(folder)}
    for kind in KINDS:
        mine = [a for a in alerts if a["kind"] == kind]
        t = [truth_right(a, truth) for a in mine]
        b = [before_right(a) for a in mine]
        af = [after_right(a) for a in mine]
        judged = [i for i, v in enumerate(af) if v is not None]
        blind = [i for i, a in enumerate(mine) if not plan.get((a["store_id"], a["facing_id"]), True)]
        blind_judged = [i for i in blind if af[i] is not None]
        report[kind] = {
            "alerts": len(mine), "on_facings_without_sensor": len(blind),
            "unobserved": len(mine) - len(judged),
            "truth_precision_all": _share(t),
            "lake_precision_before": _share(b),
            "lake_precision_after": _share([af[i] for i in judged]),
            "truth_precision_of_judged": _share([t[i] for i in judged]),
            "before_abs_error_vs_truth_all": None if not t else round(abs(_share(b) - _share(t)), 4),
            "after_abs_error_vs_truth_all": None if not judged else round(abs(_share([af[i] for i in judged]) - _share(t)), 4),
            "without_sensor": {
                "truth_precision": _share([t[i] for i in blind]),
                "lake_precision_before": _share([b[i] for i in blind]),
                "judged": len(blind_judged),
                "lake_precision_after": _share([af[i] for i in blind_judged]),
                "truth_precision_of_judged": _share([t[i] for i in blind_judged]),
                "verdicts_agreeing_with_truth": _share([af[i] == t[i] for i in blind_judged]),
                "outcomes": dict(sorted(_count(mine[i]["outcome"] for i in blind).items())),
            },
        }
    return report


def _count(xs) -> dict:
    out: dict = defaultdict(int)
    for x in xs:
        out[x] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = [judge(f) for f in args.folders]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

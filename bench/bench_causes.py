"""How often ``gold.stockout_causes`` names the simulator's true cause, on seeds it was not tuned on.

For each seed, the store simulator writes a history (events as the devices sent them, and the
ground truth of every stock-out with its cause). The events are deduplicated on
``(device_id, seq)`` as silver does, ``gold.stockouts`` is computed with the lake's own SQL
(``cloud.lake.gold``), and ``cloud.lake.causes.stockout_causes`` classifies each stock-out. A
lake stock-out matches a true one of the same facing that started at most 15 minutes before it
(sensors report every few minutes). Accuracy = matched stock-outs whose cause is the true one.

``--train`` prints, per evidence path, the share of the training seeds' stock-outs whose true
cause was the assigned one: the ``CONFIDENCE`` table of ``cloud.lake.causes``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

TRAIN_SEEDS = (101, 102, 103)
HELD_OUT_SEEDS = (201, 202, 203, 204)
_MATCH_MS = 15 * 60_000


def _events(root: Path, etype: str):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = [pq.read_table(p) for p in sorted((root / "events" / etype).glob("*.parquet"))]
    t = pa.concat_tables(parts)
    # First send of each (device_id, seq): what silver keeps.
    t = t.append_column("_i", pa.array(range(t.num_rows)))
    first = t.group_by(["device_id", "seq"]).aggregate([("_i", "min")])["_i_min"]
    return t.filter(pc.is_in(t["_i"], first)).drop(["_i"])


def classify_history(root: Path) -> list[tuple[str, str, str]]:
    """``(assigned cause, true cause, evidence)`` for every lake stock-out matched to a true one;
    unmatched lake stock-outs are returned with true cause ``None``."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from cloud.lake.causes import stockout_causes
    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.gold import GOLD_SQL
    from cloud.lake.tables import conform

    pos, readings = _events(root, "pos.line"), _events(root, "shelf.reading")
    restocks, deliveries = _events(root, "shelf.restock"), _events(root, "inventory.delivery")
    products = pcsv.read_csv(root / "master" / "products.csv")
    planogram = pcsv.read_csv(root / "master" / "planogram.csv")
    no_alerts = conform("silver.edge_alert", pa.table({"store_id": pa.array([], pa.string())}))
    engine = DuckDBEngine(threads=1)
    try:
        stockouts = engine.run(GOLD_SQL["gold.stockouts"], {"pos": pos, "readings": readings, "products": products,
                                                            "alerts": no_alerts})
    finally:
        engine.close()
    causes = stockout_causes(stockouts, restocks, deliveries, planogram)
    truth: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for p in sorted((root / "truth" / "stockouts").glob("*.parquet")):
        for r in pq.read_table(p).to_pylist():
            truth[r["facing_id"]].append((r["start_ms"], r["cause"]))
    for v in truth.values():
        v.sort()
    out = []
    for r in causes.to_pylist():
        true = [c for s, c in truth.get(r["facing_id"], []) if r["start_ms"] - _MATCH_MS <= s <= r["start_ms"]]
        out.append((r["cause"], true[-1] if true else None, r["evidence"]))
    return out


def _generate(out: Path, seed: int, stores: int, skus: int, days: int) -> Path:
    from firmware_sim.history import generate

    root = out / f"seed{seed}"
    generate(root, stores=stores, skus=skus, days=days, seed=seed, sensor_share=1.0, workers=1, progress=False)
    return root


def evaluate(seeds, *, stores: int = 4, skus: int = 300, days: int = 28) -> dict:
    """Accuracy, confusion and per-path counts over these seeds."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows += classify_history(_generate(Path(tmp), seed, stores, skus, days))
    matched = [r for r in rows if r[1] is not None]
    confusion = Counter((a, t) for a, t, _ in matched)
    per_path = defaultdict(Counter)
    path_truth = defaultdict(Counter)
    for a, t, e in matched:
        per_path[e][t == a] += 1
        path_truth[e][t] += 1
    true_counts = Counter(t for _, t, _ in matched)
    return {
        "seeds": list(seeds), "stores": stores, "skus": skus, "days": days,
        "lake_stockouts": len(rows), "matched": len(matched),
        "accuracy": round(sum(a == t for a, t, _ in matched) / max(len(matched), 1), 4),
        "majority_baseline": round(max(true_counts.values(), default=0) / max(len(matched), 1), 4),
        "true_causes": dict(true_counts),
        "confusion": {f"{a} <- {t}": n for (a, t), n in sorted(confusion.items())},
        "per_cause_recall": {c: round(confusion[(c, c)] / n, 4) for c, n in true_counts.items()},
        "path_precision": {e: round(c[True] / (c[True] + c[False]), 4) for e, c in sorted(per_path.items())},
        "path_counts": {e: c[True] + c[False] for e, c in sorted(per_path.items())},
        "path_true_causes": {e: dict(c.most_common()) for e, c in sorted(path_truth.items())},
    }


def run(quick: bool = False) -> dict:
    seeds = HELD_OUT_SEEDS[:1] if quick else HELD_OUT_SEEDS
    result = evaluate(seeds, days=14 if quick else 28)
    print(f"held-out seeds {result['seeds']}: {result['matched']} stock-outs, accuracy {result['accuracy']:.1%} "
          f"(majority-class baseline {result['majority_baseline']:.1%})")
    return result


if __name__ == "__main__":
    if "--train" in sys.argv:
        print(json.dumps(evaluate(TRAIN_SEEDS), indent=2))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

"""``gondola train`` and ``gondola eval``: the stock-out model from simulated history to figures.

    gondola train [--data DIR ... | --gold LAKE] [--out DIR] [--horizon 2] [--every 30] [--epochs 8]
                  [--ahead-weight 5]
    gondola eval  [--model DIR] [--train-data DIR ...] [--test-data DIR ...] [--json FILE]

Without ``--data`` / ``--test-data`` both commands generate simulator history first (a
``gondola sim generate`` subprocess: ``models`` does not import the simulator) into
``--work``: training stores from seeds 1-3 with the default scenario and from the two
``train-*`` scenarios in ``models/scenarios/``, held-out stores from other seeds and the
``holdout-*`` scenarios. The signing key for manifests is
read from the ``GONDOLA_MODEL_KEY`` environment variable (an HMAC secret, or an Ed25519
private key in PEM); without it manifests are written unsigned, and the command says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gondola.errors import ConfigError
from gondola.progress import Progress

__all__ = ["train_main", "eval_main", "TRAIN_SETS", "TEST_SETS"]

_SCENARIOS = Path(__file__).parent / "scenarios"

#: name -> (seed, scenario file or None for the defaults, stores). Training uses three default
#: seeds and two training-only scenarios (other demand levels, restock rounds, faults); the
#: held-out sets below share neither a seed nor a scenario file with them.
TRAIN_SETS = {
    "train-default-s1": (1, None, 4),
    "train-default-s2": (2, None, 4),
    "train-default-s3": (3, None, 4),
    "train-varied-a-s11": (11, "train-varied-a.toml", 4),
    "train-varied-b-s12": (12, "train-varied-b.toml", 4),
}
TEST_SETS = {
    "test-default-s101": (101, None, 2),
    "test-busier-s102": (102, "holdout-busier.toml", 2),
    "test-faults-s103": (103, "holdout-faults.toml", 2),
}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _generate(work: Path, name: str, seed: int, scenario: str | None, stores: int, skus: int, days: int) -> Path:
    """Run ``gondola sim generate`` into ``work/name`` unless it is already there."""
    out = work / name
    if (out / "scenario.json").exists():
        info = json.loads((out / "scenario.json").read_text())
        if (info.get("seed"), info.get("stores"), info.get("skus"), info.get("days")) == (seed, stores, skus, days):
            _say(f"  {name}: reusing {out}")
            return out
    cmd = [sys.executable, "-m", "gondola", "sim", "generate", "--stores", str(stores), "--skus", str(skus),
           "--days", str(days), "--seed", str(seed), "--out", str(out), "--quiet"]
    if scenario:
        cmd += ["--scenario", str(_SCENARIOS / scenario)]
    _say(f"  {name}: simulating {stores} stores x {skus} SKUs x {days} days (seed {seed}, "
         f"scenario {scenario or 'default'})")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ConfigError(f"gondola sim generate failed for {name}: {res.stderr.strip()[-500:]}")
    return out


#: Days of each training history before rows are sampled. Held-out rows start after 3 days
#: (features mean something by then), but a gateway also scores from its first minute, and a
#: model that never saw a cold state raised six times the false alerts in its first two days
#: (validation): training rows start at once.
TRAIN_WARMUP_DAYS = 0.0
EVAL_WARMUP_DAYS = 3.0


def _load_rows(dirs: list[Path], horizon_h: float, every_min: int, label: str,
               warmup_days: float = EVAL_WARMUP_DAYS):
    from models.dataset import build_rows
    from models.history import load_history

    histories = []
    for d in dirs:
        histories += load_history(d, prefix=Path(d).name)
    bar = Progress(len(histories), f"features {label}")
    data = build_rows(histories, horizon_h, every_min=every_min, warmup_days=warmup_days,
                      progress=lambda _s: bar.advance(1))
    _say(f"  {label}: {len(data):,} rows, {int(data.y.sum()):,} positive "
         f"({data.y.mean():.1%}), {len(data.stockouts):,} stock-outs, {data.store_days:.0f} store-days")
    return data


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--horizon", type=float, default=2.0, help="prediction horizon, hours (default 2)")
    p.add_argument("--every", type=int, default=30, help="minutes between sampled instants (default 30)")
    p.add_argument("--work", default="out/model-data", help="where generated history goes (default out/model-data)")
    p.add_argument("--skus", type=int, default=200, help="SKUs per generated store (default 200)")
    p.add_argument("--days", type=int, default=28, help="days per generated store (default 28)")


#: Extra loss weight of positive rows whose shelf is not empty yet; picked on the training
#: stores' validation part (docs/decisions/0304-forecast-rows-goal.md).
AHEAD_WEIGHT = 5.0


def _weight(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ahead-weight", type=float, default=AHEAD_WEIGHT,
                   help=f"extra weight of forecast positives (shelf not empty yet) in the loss "
                        f"(default {AHEAD_WEIGHT:g}; 1 = none)")


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola train", description="Train the stock-out model and export it.")
    p.add_argument("--data", nargs="*", default=None, help="simulator history folders (default: generate)")
    p.add_argument("--gold", help="train on the lake's gold.features table under this lake root instead")
    p.add_argument("--out", default="out/model", help="model package folder (default out/model)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    _common(p)
    _weight(p)
    return p


def _key() -> bytes | None:
    """The signing key: ``GONDOLA_MODEL_KEY``, else the secret store's ``model-key`` (Key Vault)."""
    from gondola.secrets import secret_store_from_env

    return secret_store_from_env().get("model-key")


def _train(args, train_dirs: list[Path], *, data=None, training: dict | None = None):
    from models.pipeline import export_model, settled_rows, split_validation, train_model
    from models.train import TrainConfig

    from_history = data is None
    if from_history:
        data = _load_rows(train_dirs, args.horizon, args.every, "training stores", TRAIN_WARMUP_DAYS)
    bar = Progress(args.epochs, "training")
    # Training rows include cold starts; thresholds are picked on settled validation rows
    # (gold rows are hourly from whenever the lake starts: all of them count).
    settled = settled_rows(data, EVAL_WARMUP_DAYS) if from_history else None
    weights, summary = train_model(
        data, TrainConfig(epochs=args.epochs, seed=args.seed, ahead_weight=args.ahead_weight),
        threshold_from=settled,
        progress=lambda epoch, logs: bar.advance(1, f"loss {logs.get('loss', float('nan')):.4f}"))
    _, val = split_validation(data)
    pick = val if settled is None else val & settled
    key = _key()
    if key is None:
        _say("  GONDOLA_MODEL_KEY is not set: manifests are NOT signed (gateways with a key will refuse them)")
    files = export_model(
        weights, args.out, horizon_h=args.horizon, summary=summary, key=key,
        training=training or {"sources": [str(d) for d in train_dirs],
                              "tables": {str(d): _table_version(d) for d in train_dirs}},
        val=(data.rows.X[pick], data.y[pick]))
    return data, weights, summary, files


def _table_version(d: Path) -> dict:
    """What identifies the training data: the history's scenario/seed/sizes (or a lake version)."""
    try:
        info = json.loads((Path(d) / "scenario.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: info.get(k) for k in ("seed", "stores", "skus", "days", "start_ms")} | {
        "scenario": (info.get("scenario") or {}).get("name")}


def train_main(argv: list[str], lineage=None) -> int:
    """``gondola train``. ``lineage`` (a ``gondola.lineage.Lineage``) records the run: the
    gold.features version read and the model version written.

    Raises: ConfigError on bad arguments or failed data generation.
    """
    import contextlib

    from gondola.lineage import Dataset

    args = _train_parser().parse_args(argv)
    started = time.monotonic()
    with (lineage.run("gondola.train") if lineage else contextlib.nullcontext()) as run:
        if args.gold:
            from models.gold import read_gold_features, rows_from_gold

            table, version = read_gold_features(args.gold)
            if run is not None:
                run.inputs.append(Dataset(str(args.gold), "gold.features", version))
            data = rows_from_gold(table)
            _say(f"  gold.features version {version}: {len(data):,} rows, {int(data.y.sum()):,} positive")
            data, weights, summary, files = _train(args, [], data=data,
                                                   training={"sources": [str(args.gold)],
                                                             "tables": {"gold.features": version}})
        else:
            data, weights, summary, files = _train(args, _train_dirs(args))
        if run is not None:
            run.outputs.append(Dataset("models", files.manifest["version"]))
            run.facts.update({"train_rows": summary["train_rows"], "val_pr_auc": summary["val_pr_auc"]})
    _say(f"  exported {files.int8_tflite.name} ({files.int8_tflite.stat().st_size:,} B), "
         f"{files.float_tflite.name}, {files.onnx.name} to {args.out}")
    print(f"model {files.manifest['version']}: validation PR-AUC {summary['val_pr_auc']:.3f}, "
          f"threshold {files.manifest['threshold']:.3f} (recall {files.manifest['target_recall']:g}), "
          f"{summary['train_rows']:,} training rows, {time.monotonic() - started:.0f} s")
    return 0


def _train_dirs(args) -> list[Path]:
    if args.data:
        return [Path(d) for d in args.data]
    work = Path(args.work)
    return [_generate(work, name, seed, sc, stores, args.skus, args.days)
            for name, (seed, sc, stores) in TRAIN_SETS.items()]


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola eval",
                                description="Baselines, float and int8 models side by side on held-out stores.")
    p.add_argument("--model", help="model package folder from 'gondola train' (default: train one now)")
    p.add_argument("--train-data", nargs="*", default=None,
                   help="history folders of the training stores: their validation part picks each "
                        "baseline's threshold (default: generate)")
    p.add_argument("--test-data", nargs="*", default=None, help="held-out history folders (default: generate)")
    p.add_argument("--out", default="out/model", help="where a model trained here goes (default out/model)")
    p.add_argument("--json", default="out/model-eval.json", help="results file (default out/model-eval.json)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs when training here (default 8)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    _weight(p)
    return p


def eval_main(argv: list[str]) -> int:
    """``gondola eval``. Raises: ConfigError on bad arguments or failed data generation;
    ModelError when ``--model`` does not hold a loadable model."""
    from models.dataset import LabelledRows
    from models.metrics import threshold_at_recall
    from models.pipeline import (TARGET_RECALL, baseline_scorers, evaluate_side_by_side, format_table, settled_rows,
                                 split_validation)
    from models.runtime import LiteRtScorer, OnnxScorer

    args = _eval_parser().parse_args(argv)
    started = time.monotonic()
    args.data = args.train_data
    train_dirs = _train_dirs(args)
    if args.model:
        from models.package import read_manifest

        model_dir = Path(args.model)
        train = _load_rows(train_dirs, args.horizon, args.every, "training stores", TRAIN_WARMUP_DAYS)
        manifest = read_manifest(model_dir / "stockout-int8.manifest.json")
        summary = manifest.get("training", {})
    else:
        train, _, summary, files = _train(args, train_dirs)
        model_dir = files.int8_tflite.parent
    if args.test_data is None:
        work = Path(args.work)
        test_dirs = [_generate(work, name, seed, sc, stores, args.skus, args.days)
                     for name, (seed, sc, stores) in TEST_SETS.items()]
    else:
        test_dirs = [Path(d) for d in args.test_data]
    _, val = split_validation(train)
    val &= settled_rows(train, EVAL_WARMUP_DAYS)
    scorers = dict(baseline_scorers(args.horizon))
    scorers["model-float-onnx"] = OnnxScorer(model_dir / "stockout.onnx", args.horizon)
    scorers["model-float-tflite"] = LiteRtScorer(model_dir / "stockout-float.tflite", args.horizon)
    scorers["model-int8-tflite"] = LiteRtScorer(model_dir / "stockout-int8.tflite", args.horizon)
    thresholds = {}
    for name, scorer in scorers.items():
        if getattr(scorer, "threshold", None) is not None:
            thresholds[name] = float(scorer.threshold)
        else:
            thresholds[name] = threshold_at_recall(train.y[val], scorer.score(train.rows.X[val]), TARGET_RECALL)
    per_set, parts = {}, []
    for d in test_dirs:
        part = _load_rows([d], args.horizon, args.every, f"held-out {d.name}")
        per_set[d.name] = evaluate_side_by_side(part, scorers, thresholds, args.horizon)
        parts.append(part)
    overall = evaluate_side_by_side(LabelledRows.concat(parts), scorers, thresholds, args.horizon)
    report = _report(overall, per_set, args, train_dirs, test_dirs, summary, model_dir, time.monotonic() - started)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=_plain) + "\n")
    print(format_table(overall))
    print()
    for line in report["headline"]:
        print(line)
    print(f"\nresults: {path}")
    return 0


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v).__name__)


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def _report(overall, per_set, args, train_dirs, test_dirs, summary, model_dir, seconds) -> dict:
    int8, fl, poisson = overall["model-int8-tflite"], overall["model-float-onnx"], overall["baseline-poisson"]
    goals = {
        "int8_pr_auc_vs_poisson": {"goal": ">= 1.3", "value": _ratio(int8["pr_auc"], poisson["pr_auc"])},
        "int8_pr_auc_vs_poisson_not_yet_empty": {
            "goal": ">= 1.3 (same goal on rows whose shelf is not empty yet)",
            "value": _ratio(int8["pr_auc_not_yet_empty"], poisson["pr_auc_not_yet_empty"])},
        "int8_precision_at_recall_0.75": {"goal": ">= 0.85", "value": int8["precision_at_recall_0.75"]},
        "int8_median_lead_min": {"goal": ">= 60 (alert on when the shelf empties; lead capped at H)",
                                 "value": int8["episode_median_lead_min"]},
        "int8_median_lead_min_strict": {"goal": ">= 60 (first raise within H before the stock-out)",
                                        "value": int8["median_lead_min"]},
        "int8_minus_float_pr_auc": {"goal": ">= -0.01", "value": int8["pr_auc"] - fl["pr_auc"]},
    }
    headline = []
    for name, g in goals.items():
        v = g["value"]
        headline.append(f"{name:<40} {'-' if v is None else f'{v:.3f}':>8}   goal {g['goal']}")
    return {
        "horizon_h": args.horizon,
        "every_min": args.every,
        "train_data": [str(d) for d in train_dirs],
        "test_data": [str(d) for d in test_dirs],
        "model_dir": str(model_dir),
        "training": summary,
        "overall": overall,
        "per_test_set": per_set,
        "goals": goals,
        "headline": headline,
        "seconds": round(seconds, 1),
    }

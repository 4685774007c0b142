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
import math
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
    "train-varied-c-s13": (13, "train-varied-c.toml", 4),
}
#: Held-out sets: other seeds, and scenarios with other restock habits, sensors, demand and
#: assortments than any training scenario (issue 11: never tune to one scenario).
TEST_SETS = {
    "test-default-s101": (101, None, 2),
    "test-busier-s102": (102, "holdout-busier.toml", 2),
    "test-faults-s103": (103, "holdout-faults.toml", 2),
    "test-slow-s104": (104, "holdout-slow.toml", 2),
    "test-degraded-s105": (105, "holdout-degraded.toml", 2),
    "test-restock-s106": (106, "holdout-restock.toml", 2),
    "test-assortment-s107": (107, "holdout-assortment.toml", 2),
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
               warmup_days: float = EVAL_WARMUP_DAYS, *, arrival: bool = True, cache: Path | None = None):
    """Labelled feature rows of history folders, replayed in arrival order (as a gateway sees
    events) unless ``arrival`` is False; cached under ``cache`` (keyed by the folders' scenario
    files and every parameter) so several evaluations of the same stores replay them once."""
    from models.dataset import build_rows
    from models.history import load_history

    key = None
    if cache is not None:
        import hashlib

        h = hashlib.sha256(json.dumps([horizon_h, every_min, warmup_days, arrival, _ROWS_VERSION] + [
            [str(Path(d).resolve()), (Path(d) / "scenario.json").read_text() if (Path(d) / "scenario.json").exists()
             else ""] for d in dirs]).encode()).hexdigest()[:16]
        key = cache / f"rows-{h}.npz"
        if key.exists():
            data = _read_rows(key)
            _say(f"  {label}: {len(data):,} rows (cached)")
            return data
    histories = []
    for d in dirs:
        histories += load_history(d, prefix=Path(d).name)
    bar = Progress(len(histories), f"features {label}")
    data = build_rows(histories, horizon_h, every_min=every_min, warmup_days=warmup_days,
                      progress=lambda _s: bar.advance(1), arrival=arrival)
    if len(data) == 0:
        raise ConfigError(f"{label}: no feature rows: the histories in {', '.join(str(d) for d in dirs)} end "
                          f"within the {warmup_days:g}-day warm-up (generate more days, e.g. "
                          f"'gondola sim generate --days {int(warmup_days) + 4}')")
    _say(f"  {label}: {len(data):,} rows, {int(data.y.sum()):,} positive "
         f"({data.y.mean():.1%}), {len(data.stockouts):,} stock-outs, {data.store_days:.0f} store-days")
    if key is not None:
        _write_rows(key, data)
    return data


#: Bump when the feature rows a history gives change (features, labels, replay).
_ROWS_VERSION = 14  # 14: zero_offset (a load cell's zero tracked from its grams); 13: zero_creep (a load cell re-zeroed at refills); 12: sku_sale / sku_reading (sale attribution)


def _write_rows(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, store=data.rows.store.astype(str), facing=data.rows.facing.astype(str), t=data.rows.t,
             X=data.rows.X, y=data.y, empty_now=data.empty_now,
             oracle=data.oracle if data.oracle is not None else np.zeros(0),
             stockouts=np.array(json.dumps(data.stockouts)), store_days=np.array(data.store_days),
             intervals=np.array(json.dumps(data.intervals)),
             untrusted=data.rows.untrusted if data.rows.untrusted is not None else np.zeros(0),
             sensor_fault=data.sensor_fault if data.sensor_fault is not None else np.zeros(0))
    tmp.replace(path)


def _read_rows(path: Path):
    from models.dataset import LabelledRows
    from models.replay import FeatureRows

    z = np.load(path)
    n = len(z["t"])
    rows = FeatureRows(z["store"].astype(object), z["facing"].astype(object), z["t"], z["X"],
                       z["untrusted"].astype(bool) if len(z["untrusted"]) == n else None)
    oracle = z["oracle"] if len(z["oracle"]) == len(z["t"]) else None
    outs = [tuple(s) for s in json.loads(str(z["stockouts"]))]
    intervals = json.loads(str(z["intervals"])) if "intervals" in z else None
    return LabelledRows(rows, z["y"], z["empty_now"], outs, float(z["store_days"]), True, oracle,
                        None if intervals is None else [tuple(s) for s in intervals],
                        z["sensor_fault"].astype(bool) if len(z["sensor_fault"]) == n else None)


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
    p.add_argument("--all-labels", action="store_true",
                   help="with --gold, also train on rows whose label nobody observed (facings without a "
                        "believed sensor; default: left out, as gondola retrain does)")
    p.add_argument("--out", default="out/model", help="model package folder (default out/model)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--lr-decay", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule (default constant; cosine: decays to 5 %% over the run, "
                        "measured in docs/model.md, not adopted)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--reexport", action="store_true",
                   help="do not train: re-export the package in --out from its float weights (ONNX) with "
                        "this build's int8 export, thresholds re-picked on the training stores' validation rows")
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
        data = _load_rows(train_dirs, args.horizon, args.every, "training stores", TRAIN_WARMUP_DAYS,
                          cache=Path(args.work) / "rows")
    bar = Progress(args.epochs, "training")
    # Training rows include cold starts; thresholds are picked on settled validation rows
    # (gold rows are hourly from whenever the lake starts: all of them count).
    settled = settled_rows(data, EVAL_WARMUP_DAYS) if from_history else None
    weights, summary = train_model(
        data, TrainConfig(epochs=args.epochs, seed=args.seed, ahead_weight=args.ahead_weight,
                          lr_decay=getattr(args, "lr_decay", "constant")),
        threshold_from=settled, horizon_h=args.horizon,
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
        val=data.subset(pick) if data.empty_now_known else (data.rows.X[pick], data.y[pick]))
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
    if args.reexport:
        return _reexport(args)
    with (lineage.run("gondola.train") if lineage else contextlib.nullcontext()) as run:
        if args.gold:
            from models.gold import read_gold_features, rows_from_gold

            table, version = read_gold_features(args.gold)
            if run is not None:
                run.inputs.append(Dataset(str(args.gold), "gold.features", version))
            data = rows_from_gold(table)
            total = len(data)
            if not args.all_labels:
                # A facing without a believed sensor is labelled "not empty" when nobody could
                # have seen it empty: such rows teach that unwatched shelves never run out.
                from models.gold import observed_in_lake

                data = data.subset(observed_in_lake(table, data, args.horizon))
            _say(f"  gold.features version {version}: {total:,} rows, {len(data):,} with an observed label"
                 f"{' (all kept: --all-labels)' if args.all_labels else ''}, {int(data.y.sum()):,} positive")
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
    print(f"model {files.manifest['version']}: validation PR-AUC {summary['val_pr_auc']:.3f} "
          f"(not yet empty {summary['val_pr_auc_not_yet_empty'] or float('nan'):.3f}), thresholds "
          + _thresholds_text(files.manifest)
          + f", {summary['train_rows']:,} training rows, {time.monotonic() - started:.0f} s")
    return 0


def _reexport(args) -> int:
    """``gondola train --reexport --out DIR [--data ...]``: see ``models.pipeline.reexport_int8``."""
    from models.pipeline import reexport_int8, settled_rows, split_validation

    if args.gold:
        raise ConfigError("--reexport reads history folders (--data), not --gold")
    data = _load_rows(_train_dirs(args), args.horizon, args.every, "training stores", TRAIN_WARMUP_DAYS,
                      cache=Path(args.work) / "rows")
    _, val = split_validation(data)
    files = reexport_int8(args.out, data, val & settled_rows(data, EVAL_WARMUP_DAYS), key=_key())
    print(f"model {files.manifest['version']} re-exported to {args.out}: int8 output range "
          + " .. ".join(f"{v:.2f}" for v in files.manifest.get("int8_logit_range", [])) + ", thresholds "
          + _thresholds_text(files.manifest))
    return 0


def _thresholds_text(manifest: dict) -> str:
    """A manifest's operating thresholds per alert kind, for the one line train prints (an older
    manifest: its one threshold, the forecast's)."""
    th = manifest.get("thresholds") or {"empty_within_h": manifest["threshold"]}
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(th.items()))


def _train_dirs(args) -> list[Path]:
    if args.data:
        return [Path(d) for d in args.data]
    work = Path(args.work)
    return [_generate(work, name, seed, sc, stores, args.skus, args.days)
            for name, (seed, sc, stores) in TRAIN_SETS.items()]


def _budgets(pkg: dict, per_day: float | None) -> dict:
    """The alert budget each scorer's replay raises forecasts under: ``per_day`` for all when
    given (0: none), else each runtime's manifest's (``models.runtime``), else the defaults
    (``"*"``: the scorers outside the package, baselines and the oracle)."""
    from models.alert_budget import AlertBudget, budget_of

    if per_day is not None:
        b = AlertBudget(per_day or None)
        return {"*": b, **{n: b for n in pkg}}
    return {"*": AlertBudget(), **{n: budget_of(sc) for n, sc in pkg.items()}}


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gondola eval",
                                description="Baselines, float and int8 models and the oracle side by side on held-out stores.")
    p.add_argument("--model", nargs="*", default=None,
                   help="model package folder(s) from 'gondola train' (int8, float twin and ONNX with manifests); "
                        "several (other training seeds): every headline is reported as mean and minimum over "
                        "them (default: train one now)")
    p.add_argument("--train-data", nargs="*", default=None,
                   help="history folders of the training stores: their validation part picks the "
                        "thresholds of the baselines and the oracle (default: generate)")
    p.add_argument("--test-data", nargs="*", default=None,
                   help="held-out history folders, any made by 'gondola sim generate' (default: generate)")
    p.add_argument("--out", default="out/model", help="where a model trained here goes (default out/model)")
    p.add_argument("--json", default="out/model-eval.json", help="results file (default out/model-eval.json)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs when training here (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replay", choices=("arrival", "event", "both"), default="arrival",
                   help="feature replay of held-out events: in arrival order as the gateway sees them "
                        "(default), in event-time order, or both (event-time figures in a second block)")
    p.add_argument("--forecasts-per-store-day", type=float, default=None, metavar="N",
                   help="the alert budget the replay raises forecasts under, for every scorer: at most about "
                        "N a store-day, the surest first (models.alert_budget); 0: none (default: each "
                        "package's manifest, else the defaults)")
    _common(p)
    _weight(p)
    return p


#: The issue's figures of record, per set and scorer.
RECORD_KEYS = ("pr_auc_ahead", "oracle_pr_auc_ahead", "fraction_of_oracle", "forecast_caught_share",
               "forecast_strict_median_lead_min", "false_alerts_per_store_day", "empty_now_median_delay_min",
               "precision_at_operating_threshold", "recall_at_operating_threshold")
_MODEL_FILES = {"model-int8-tflite": "stockout-int8.tflite", "model-float-tflite": "stockout-float.tflite",
                "model-float-onnx": "stockout.onnx"}


def _package_scorers(model_dir: Path, horizon_h: float) -> dict:
    """The three runtimes of one package. Raises: ModelError naming a missing file."""
    from gondola.errors import ModelError
    from models.runtime import LiteRtScorer, OnnxScorer

    out = {}
    for name, fname in _MODEL_FILES.items():
        path = model_dir / fname
        if not path.exists():
            raise ModelError(f"{model_dir} has no {fname}: a package ships the int8 model, its float twin and "
                             f"the ONNX export, each with a manifest ('gondola train --out {model_dir}')")
        out[name] = (OnnxScorer if fname.endswith(".onnx") else LiteRtScorer)(path, horizon_h)
    return out


def eval_main(argv: list[str]) -> int:
    """``gondola eval``. Raises: ConfigError on bad arguments or failed data generation;
    ModelError when ``--model`` does not hold a loadable package."""
    from gondola.errors import ModelError
    from models.oracle import ORACLE_NAME
    from models.scoring import empty_now_prob
    from models.metrics import threshold_at_recall
    from models.pipeline import (RECALL_KEY, TARGET_RECALL, baseline_scorers, evaluate_kinds, pick_kind_thresholds,
                                 sensor_trust_report, settled_rows, split_validation)

    args = _eval_parser().parse_args(argv)
    started = time.monotonic()
    per_day = args.forecasts_per_store_day
    if per_day is not None and not (per_day >= 0 and math.isfinite(per_day)):
        raise ConfigError(f"--forecasts-per-store-day must be a number >= 0 (0: no budget), got {per_day}")
    # A mistyped history folder fails now, not after the training rows are built: that takes
    # minutes on the six training sets, and QA met the error only then (session 8).
    from models.history import history_info

    for d in (args.train_data or []) + (args.test_data or []):
        history_info(d)
    args.data = args.train_data
    train_dirs = _train_dirs(args)
    cache = Path(args.work) / "rows"
    if args.model:
        model_dirs = [Path(m) for m in args.model]
        packages = [_package_scorers(d, args.horizon) for d in model_dirs]
        train = _load_rows(train_dirs, args.horizon, args.every, "training stores", TRAIN_WARMUP_DAYS, cache=cache)
    else:
        train, _, _, files = _train(args, train_dirs)
        model_dirs = [files.int8_tflite.parent]
        packages = [_package_scorers(d, args.horizon) for d in model_dirs]
    if args.test_data is None:
        work = Path(args.work)
        test_dirs = [_generate(work, name, seed, sc, stores, args.skus, args.days)
                     for name, (seed, sc, stores) in TEST_SETS.items()]
    else:
        test_dirs = [Path(d) for d in args.test_data]
    versions = [p["model-int8-tflite"].name for p in packages]
    budgets = [_budgets(pkg, args.forecasts_per_store_day) for pkg in packages]
    # Validation rows of the training stores (settled, as held-out rows are) pick the
    # thresholds of scorers whose manifest has none: baselines, the oracle, older packages.
    _, val = split_validation(train)
    val = train.subset(val & settled_rows(train, EVAL_WARMUP_DAYS))
    del train
    if not val.y.any():
        raise ModelError("the training stores' validation rows hold no stock-out, so no operating "
                         "threshold can be picked: give --train-data with more days or stores")
    baselines = {n: s for n, s in baseline_scorers(args.horizon).items() if n in ("baseline-poisson", "baseline-combined")}
    thresholds: list[dict] = []
    for i, pkg in enumerate(packages):
        th = {}
        for name, scorer in {**(baselines if i == 0 else {}), **pkg}.items():
            per_kind = getattr(scorer, "thresholds", None)
            p_val = scorer.score(val.rows.X)
            if per_kind and {"empty_within_h", "empty_now"} <= set(per_kind):
                th[name] = dict(per_kind)
            else:  # baselines and older packages: the statistical detector, as on their gateway
                model_now = getattr(scorer, "empty_now_from_model", False)
                th[name] = pick_kind_thresholds(val, p_val, args.horizon,
                                                now=empty_now_prob(val.rows.X, model=p_val if model_now else None))
            th[name][RECALL_KEY] = threshold_at_recall(val.y, p_val, TARGET_RECALL)
        thresholds.append(th)
    oracle_now = None
    if val.oracle is not None:
        oracle_now = (val.oracle >= 1.0).astype(float)
        thresholds[0][ORACLE_NAME] = pick_kind_thresholds(val, val.oracle, args.horizon, now=oracle_now)
        thresholds[0][ORACLE_NAME][RECALL_KEY] = threshold_at_recall(val.y, val.oracle, TARGET_RECALL)
    _say("  thresholds: " + "; ".join(f"{n} " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(t.items()))
                                      for n, t in thresholds[0].items()))
    del val
    modes = {"arrival": [True], "event": [False], "both": [True, False]}[args.replay]
    per_set: dict = {}
    seeds: dict = {}
    trust: dict = {}
    event_time: dict = {}
    for d in test_dirs:
        for arrival in modes:
            part = _load_rows([d], args.horizon, args.every, f"held-out {d.name}", arrival=arrival, cache=cache)
            probs = {n: s.score(part.rows.X) for n, s in baselines.items()}
            now = {}
            if part.oracle is not None and ORACLE_NAME in thresholds[0]:
                probs[ORACLE_NAME] = part.oracle
                now[ORACLE_NAME] = (part.oracle >= 1.0).astype(float)
            runs = []
            for i, pkg in enumerate(packages):
                p_i = {n: s.score(part.rows.X) for n, s in pkg.items()}
                runs.append(evaluate_kinds(part, p_i, thresholds[i], args.horizon,
                                           now_from_model={n for n, sc in pkg.items()
                                                           if getattr(sc, "empty_now_from_model", False)},
                                           budgets=budgets[i]))
            res = evaluate_kinds(part, probs, thresholds[0], args.horizon, now=now,
                                 budgets={n: budgets[0]["*"] for n in probs})
            res.update(runs[0])
            poisson = res["baseline-poisson"]["pr_auc_ahead"]
            for r in runs:
                for name in _MODEL_FILES:
                    r[name]["vs_poisson_pr_auc_ahead"] = _ratio(r[name]["pr_auc_ahead"], poisson)
            if arrival == modes[0]:
                per_set[d.name] = res
                seeds[d.name] = _over_seeds(runs, versions)
                trust[d.name] = sensor_trust_report(part)
            else:
                event_time[d.name] = {n: {k: r.get(k) for k in RECORD_KEYS} for n, r in res.items()}
    report = _report(per_set, seeds, event_time, trust, args, train_dirs, test_dirs, model_dirs, versions,
                     thresholds[0], time.monotonic() - started)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=_plain) + "\n")
    for line in report["table"]:
        print(line)
    print()
    for line in report["headline"]:
        print(line)
    print(f"\nresults: {path}")
    return 0


def _over_seeds(runs: list[dict], versions: list[str]) -> dict:
    """Per model runtime and figure: mean, min and max over the packages (training seeds)."""
    out: dict = {}
    for name in _MODEL_FILES:
        figs = {}
        for key in RECORD_KEYS + ("vs_poisson_pr_auc_ahead", "best_precision_at_recall_0.75_over_test_thresholds",
                                  "precision_at_validation_recall_0.75_threshold",
                                  "recall_at_validation_recall_0.75_threshold", "false_empty_now_per_store_day",
                                  "empty_now_no_sensor_precision"):
            vals = [r[name].get(key) for r in runs]
            nums = [v for v in vals if v is not None]
            figs[key] = {"values": vals, "mean": sum(nums) / len(nums) if nums else None,
                         "min": min(nums) if nums else None, "max": max(nums) if nums else None}
        out[name] = figs
    out["models"] = versions
    return out


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v).__name__)


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


#: The degraded-sensor goal (precision at recall 0.75 >= 0.85) is judged on a set whose simulator
#: truth injects sensor faults (stuck, drifting, silent: ``models.history.SENSOR_FAULT_KINDS``) on
#: at least this share of the rows of facings with a sensor (``sensor_trust_report``). Measured
#: (28 days, 2 stores): 0.10-0.14 % on the six held-out sets with the default sensors (a load cell
#: stuck now and then), 4.7 % on holdout-degraded; the name of a set says nothing (an unseen store
#: with degraded sensors is called anything, and holdout-faults' faults are the network's).
DEGRADED_MIN_FAULT_SHARE = 0.01


def degraded_sensors(trust: dict | None) -> dict:
    """Whether a set is judged on the degraded-sensor goal, from its truth of injected sensor
    faults (``trust``: ``sensor_trust_report``; None when the set has no such truth, e.g. data
    that is not the simulator's: then it is not judged)."""
    rows = (trust or {}).get("sensored_rows") or 0
    share = trust["fault_rows"] / rows if rows else None
    return {"fault_row_share": share, "min_share": DEGRADED_MIN_FAULT_SHARE,
            "judged": share is not None and share >= DEGRADED_MIN_FAULT_SHARE}


def _set_goals(per_set: dict, seeds: dict, trust: dict) -> tuple[dict, dict]:
    """Each set's goals, and per set why it is (not) judged on the degraded-sensor goal."""
    basis = {name: degraded_sensors(trust.get(name)) for name in per_set}
    return {name: _goals(res, seeds[name], basis[name]["judged"]) for name, res in per_set.items()}, basis


def _goals(res: dict, seeds: dict, degraded: bool) -> dict:
    """The issue's goals for the int8 model of record on one set (seed minima where asked)."""
    int8, fl = res["model-int8-tflite"], res["model-float-onnx"]
    s8 = seeds["model-int8-tflite"]

    def g(goal, value, ok, missed_if_none=False):
        # No value: "no data" (met None) when the set has nothing to judge, a miss when it had
        # (``missed_if_none``: stock-outs to warn of but none caught, empty shelves without a
        # sensor but none detected).
        return {"goal": goal, "value": value,
                "met": (False if missed_if_none else None) if value is None else bool(ok(value))}

    caught_any = int8["forecast_caught_share"] is not None
    no_sensor_empties = int8.get("empty_now_no_sensor_detected_share") is not None

    out = {
        "fraction_of_oracle": g(">= 0.8", int8["fraction_of_oracle"], lambda v: v >= 0.8),
        "int8_vs_poisson_pr_auc_ahead_min_over_seeds": g(">= 1.3 for every seed", s8["vs_poisson_pr_auc_ahead"]["min"],
                                                         lambda v: v >= 1.3),
        "forecast_caught_share": g(">= 0.5", int8["forecast_caught_share"], lambda v: v >= 0.5),
        "forecast_strict_median_lead_min": g(">= 60", int8["forecast_strict_median_lead_min"], lambda v: v >= 60,
                                             missed_if_none=caught_any),
        "false_alerts_per_store_day": g("<= 5", int8["false_alerts_per_store_day"], lambda v: v <= 5),
        "empty_now_median_delay_min": g("<= 60 (facings without a sensor)", int8["empty_now_median_delay_min"],
                                        lambda v: v <= 60, missed_if_none=no_sensor_empties),
        "empty_now_no_sensor_precision": g(">= 0.8", int8["empty_now_no_sensor_precision"], lambda v: v >= 0.8,
                                           missed_if_none=no_sensor_empties),
        "int8_minus_float_pr_auc_ahead": g("within 0.01", None if int8["pr_auc_ahead"] is None or fl["pr_auc_ahead"] is None
                                           else int8["pr_auc_ahead"] - fl["pr_auc_ahead"], lambda v: abs(v) <= 0.01),
    }
    if degraded:
        out["precision_at_validation_recall_0.75_threshold"] = g(
            ">= 0.85 (degraded sensors; all rows, at the threshold with recall 0.75 on validation)",
            int8.get("precision_at_validation_recall_0.75_threshold"), lambda v: v >= 0.85)
        out["best_precision_at_recall_0.75_over_test_thresholds"] = g(
            ">= 0.85 (degraded sensors; best over the test set's own thresholds, optimistic)",
            int8["best_precision_at_recall_0.75_over_test_thresholds"], lambda v: v >= 0.85)
    return out


def _headline(name: str, goals: dict) -> str:
    """One set's goals in a line: met out of those the set can judge. A goal without a value (no
    facing without a sensor, no forecast raised, ...) is "no data", neither met nor missed."""
    judged = [x for x in goals.values() if x["met"] is not None]
    met = sum(1 for x in judged if x["met"])
    blank = len(goals) - len(judged)
    return (f"{name}: {met}/{len(judged)} goals met" + (f" ({blank} without data)" if blank else "") + "; "
            + ", ".join(f"{k} {'-' if x['value'] is None else format(x['value'], '.3f')}"
                        f"{' (no data)' if x['met'] is None else '' if x['met'] else ' (missed)'}"
                        for k, x in goals.items()))


def _report(per_set, seeds, event_time, trust, args, train_dirs, test_dirs, model_dirs, versions, thresholds,
            seconds) -> dict:
    goals, degraded = _set_goals(per_set, seeds, trust)
    cols = ("pr_auc_ahead", "fraction_of_oracle", "forecast_caught_share", "forecast_strict_median_lead_min",
            "false_alerts_per_store_day", "empty_now_median_delay_min", "precision_at_operating_threshold",
            "recall_at_operating_threshold")
    short = ("PR-AUC ahead", "x oracle", "caught", "lead min", "false/st-day", "now delay", "prec@thr", "rec@thr")
    table = [f"{'set / scorer':<40}" + "".join(f"{c:>13}" for c in short)]
    for name, res in per_set.items():
        table.append(name)
        for scorer, r in res.items():
            cells = "".join(f"{'-' if r.get(k) is None else format(r[k], '.3f' if abs(r[k]) < 10 else '.1f'):>13}"
                            for k in cols)
            table.append(f"  {scorer:<38}{cells}")
    headline = [_headline(name, gs) for name, gs in goals.items()]
    return {
        "horizon_h": args.horizon,
        "every_min": args.every,
        "replay": args.replay,
        "train_data": [str(d) for d in train_dirs],
        "test_data": [str(d) for d in test_dirs],
        "model_dirs": [str(d) for d in model_dirs],
        "models": versions,
        "thresholds": thresholds,
        "forecasts_per_store_day_option": args.forecasts_per_store_day,
        "record_keys": list(RECORD_KEYS),
        "per_test_set": per_set,
        "seeds": seeds,
        "event_time_replay": event_time or None,
        "sensor_trust": trust,
        "goals": goals,
        "degraded_sensors": degraded,
        "table": table,
        "headline": headline,
        "note": ("best_precision_* figures are the best precision over the test set's own thresholds (optimistic); "
                 "every other figure is at the operating thresholds picked on validation rows of the training stores. "
                 "The oracle reads the simulator's truth (true units, true expected demand): the physical limit, "
                 "never shipped."),
        "seconds": round(seconds, 1),
    }

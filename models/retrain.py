"""``gondola retrain``: central retraining behind a gate that never registers a worse model.

One round (:func:`retrain`):

1. **Data, pinned.** ``gold.features`` is read at one Delta version (the latest, or the one
   given), recorded with the decision: the same round re-run later reads the same rows.
2. **Observed labels only.** A row is kept only when someone observed its label: the lake
   marks that itself (``gold.features.label_source``: a live sensor, a staff gap scan, a full
   refill, a later sale; NULL label otherwise, see ``cloud.lake.labels``). Rows written before
   that column fall back to :func:`observed_labels`: the facing has a sensor that reported at
   or after the row's instant by the end of the label's horizon (``models.gold.observed_in_lake``).
3. **Held-out stores.** Whole stores are held out (:func:`holdout_stores`: by a hash of the
   store id, so a store stays held out from one round to the next); the candidate is trained
   on the others (their own validation stores pick the threshold, as ``gondola train``).
4. **Three seeds.** The candidate is trained and exported (int8 TFLite, the gateways' format)
   once per seed; each int8 file is scored on the held-out rows.
5. **The gate.** Against the best statistical baseline and the current production model (the
   registry's ``production`` version, else the model the gateways ship with), on the same
   held-out rows, by PR-AUC: the candidate passes only when, for both, the one-sided lower
   confidence bound of the mean gain over the seeds (Student t, n - 1 degrees of freedom) is
   at least ``margin``. A lucky seed cannot carry a model through; neither can a tie.
6. **The record.** The decision (``pass`` or ``fail``), every figure and the reasons are
   appended to the registry (``retrain`` record) whether it passes or not; only a pass
   registers a version (the median seed's package), as a ``candidate`` for the rollout.

The drift trigger (``--if-drift``, :mod:`models.drift`) runs a round only when the feature
distributions (PSI per feature) or the live alert precision moved past a threshold.

Errors: ``StorageError`` when the lake cannot be read; ``ConfigError`` for bad settings or
data the gate cannot judge (fewer than two stores, no positive held-out label); ``ModelError``
when the production model cannot be scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gondola.clock import HOUR_MS
from gondola.errors import ConfigError, ModelError

__all__ = ["RetrainConfig", "observed_labels", "holdout_stores", "lower_bound", "judge", "retrain", "main"]

log = logging.getLogger(__name__)

#: One-sided Student t quantiles by confidence, for 1..9 degrees of freedom (no scipy here).
_T = {
    0.80: (1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883),
    0.90: (3.078, 1.886, 1.638, 1.533, 1.476, 1.440, 1.415, 1.397, 1.383),
    0.95: (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833),
    0.99: (31.821, 6.965, 4.541, 3.747, 3.365, 3.143, 2.998, 2.896, 2.821),
}


@dataclass(frozen=True)
class RetrainConfig:
    """Settings of one retraining round (every field is recorded with the decision)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 8
    horizon_h: float = 2.0
    #: PR-AUC points the candidate must gain over the baseline and over production.
    margin: float = 0.01
    #: One-sided confidence of that gain over the seeds (0.8, 0.9, 0.95 or 0.99).
    confidence: float = 0.9
    #: Share of stores held out for the gate (at least one store, never all).
    holdout_share: float = 0.25
    ahead_weight: float = 5.0
    #: Fewer positive held-out labels than this: no verdict (recorded as a fail, nothing trained).
    min_holdout_positives: int = 20
    #: Keep only rows whose label someone observed (see module docstring); off only to measure.
    observed_only: bool = True
    gold_version: int | None = None
    trigger: str = "manual"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("the gate needs at least two distinct seeds (three by default)")
        if len(self.seeds) - 1 > len(_T[0.9]):
            raise ConfigError(f"at most {len(_T[0.9]) + 1} seeds")
        if self.confidence not in _T:
            raise ConfigError(f"confidence must be one of {', '.join(map(str, _T))}")
        if not 0 < self.holdout_share < 1:
            raise ConfigError("holdout share must be between 0 and 1")
        if self.epochs < 1:
            raise ConfigError("epochs must be at least 1")


def observed_labels(data, horizon_h: float) -> np.ndarray:
    """Rows whose label was observed: the facing has a shelf sensor, and at the end of the
    label's horizon (the row of the same facing at ``t + horizon``) its last reading is no
    older than the horizon, i.e. the sensor reported within ``[t, t + horizon]``. Rows whose
    horizon runs past the data are not observed either."""
    from models.features import FEATURES

    X = data.rows.X
    sensor = X[:, FEATURES.index("has_sensor")] > 0.5
    silence = X[:, FEATURES.index("hours_since_reading")].astype(np.float64)
    from models.replay import facing_groups

    _, facing = facing_groups(data.rows.store, data.rows.facing)
    t = data.rows.t.astype(np.int64)
    # One sortable int64 per (facing, instant): the row at t + horizon is found by searchsorted
    # (no per-row Python: gold.features of a fleet has hundreds of millions of rows).
    t0, span = (int(t.min()), int(t.max() - t.min()) + 1) if len(t) else (0, 1)
    horizon_ms = int(horizon_h * HOUR_MS)
    code = facing.astype(np.int64) * (span + horizon_ms) + (t - t0)
    order = np.argsort(code, kind="stable")
    target = code + horizon_ms
    pos = np.searchsorted(code[order], target)
    found = pos < len(code)
    found[found] = code[order][pos[found]] == target[found]
    silence_at_end = np.full(len(t), np.inf)
    silence_at_end[found] = silence[order][pos[found]]
    return sensor & (silence_at_end <= horizon_h + 1e-9)


def holdout_stores(stores, share: float) -> list[str]:
    """Stores held out for the gate: those whose sha256 falls in the first ``share`` of the
    hash space (a store keeps its side as stores come and go); when that leaves no store or
    every store on one side, the ``share`` of stores with the lowest hashes (at least one
    held out, at least one to train on).

    Raises:
        ConfigError: fewer than two stores.
    """
    uniq = sorted({str(s) for s in stores})
    if len(uniq) < 2:
        raise ConfigError(f"the gate needs at least two stores (held-out and training), got {len(uniq)}")
    h = {s: int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for s in uniq}
    out = [s for s in uniq if h[s] < share]
    if not out or len(out) == len(uniq):
        n = min(max(1, round(len(uniq) * share)), len(uniq) - 1)
        out = sorted(sorted(uniq, key=h.get)[:n])
    return out


def lower_bound(values: list[float], confidence: float) -> float:
    """One-sided lower confidence bound of the mean of ``values`` (Student t, n - 1 df)."""
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    return mean - _T[confidence][n - 2] * sd / n ** 0.5


def judge(candidate: list[float], references: Mapping[str, float | None], margin: float,
          confidence: float) -> dict:
    """The gate: ``candidate`` (one figure per seed) against each reference figure.

    Returns ``{"passed", "reasons", "vs": {name: {"reference", "gains", "mean_gain",
    "lower_bound", "passed"}}}``. A reference that is None (nothing to compare) fails the
    gate: a model is never shipped unjudged.
    """
    vs, reasons = {}, []
    for name, ref in references.items():
        if ref is None:
            vs[name] = {"reference": None, "passed": False}
            reasons.append(f"no {name} figure to compare with")
            continue
        gains = [c - ref for c in candidate]
        lb = lower_bound(gains, confidence)
        ok = lb >= margin
        vs[name] = {"reference": ref, "gains": gains, "mean_gain": statistics.fmean(gains), "lower_bound": lb,
                    "passed": ok}
        reasons.append(f"PR-AUC gain over {name} {statistics.fmean(gains):+.4f} (lower bound {lb:+.4f} at "
                       f"{confidence:g}) {'>=' if ok else '<'} margin {margin:g}")
    return {"passed": all(v["passed"] for v in vs.values()), "reasons": reasons, "vs": vs}


def _figures(y: np.ndarray, scores: np.ndarray) -> dict:
    from models.metrics import average_precision, precision_at_recall
    from models.pipeline import TARGET_RECALL

    return {"pr_auc": average_precision(y, scores),
            f"precision_at_recall_{TARGET_RECALL:g}": precision_at_recall(y, scores, TARGET_RECALL)}


def _production_model(registry) -> tuple[str, Path, str]:
    """(version, int8 path, where it came from): the registry's production version, else the
    model the gateways ship with."""
    from models.package import file_sha256
    from models.registry import artifact_file
    from models.runtime import DEFAULT_MODEL, read_manifest_beside

    prod = registry.production() if registry is not None else None
    if prod is not None:
        path = artifact_file(prod, "int8")
        if file_sha256(path) != (prod.artifacts.get("int8") or {}).get("sha256"):
            raise ModelError(f"production model {prod.version}: {path.name} is not the registered file")
        return prod.version, path, "registry"
    manifest = read_manifest_beside(DEFAULT_MODEL) or {}
    return str(manifest.get("version", "shipped")), DEFAULT_MODEL, "shipped with the gateways"


def _subset(data, mask: np.ndarray):
    from models.dataset import LabelledRows
    from models.replay import FeatureRows

    r = data.rows
    return LabelledRows(FeatureRows(r.store[mask], r.facing[mask], r.t[mask], r.X[mask]), data.y[mask],
                        data.empty_now[mask], [], 0.0, data.empty_now_known)


def retrain(lake_root: str | Path, registry, config: RetrainConfig = RetrainConfig(), *,
            key: bytes | None = None, work_dir: str | Path | None = None,
            storage_options: Mapping[str, str] | None = None, say=None) -> dict:
    """One retraining round; returns the decision record (also appended to ``registry``).

    Raises:
        StorageError: the lake cannot be read. ConfigError: settings or data the gate cannot
        judge. ModelError: the production model cannot be scored.
    """
    from models.gold import observed_in_lake, read_gold_features, rows_from_gold
    from models.export import int8_manifest_fields, to_tflite
    from models.pipeline import baseline_scorers, export_model, split_validation, train_model
    from models.registry import code_version, register_package
    from models.runtime import LiteRtScorer
    from models.train import TrainConfig

    config.validate()
    say = say or (lambda text: log.info("%s", text))
    started = time.monotonic()
    table, version = read_gold_features(str(lake_root), storage_options, version=config.gold_version)
    data = rows_from_gold(table)
    total = len(data)
    if config.observed_only:
        data = _subset(data, observed_in_lake(table, data, config.horizon_h))
    say(f"gold.features version {version}: {total:,} rows, {len(data):,} with an observed label "
        f"({int(data.y.sum()):,} positive)")
    stores = sorted(set(data.rows.store.astype(str).tolist()))
    held = holdout_stores(stores, config.holdout_share)
    ho_mask = np.isin(data.rows.store.astype(str), held)
    train, test = _subset(data, ~ho_mask), _subset(data, ho_mask)
    if len(test) == 0 or test.y.all():
        raise ConfigError(f"held-out stores {', '.join(held)} have {int(test.y.sum())} positive label(s) of "
                          f"{len(test)} rows: the gate cannot judge")
    X, y = test.rows.X, test.y
    say(f"held out {len(held)} of {len(stores)} stores ({len(test):,} rows, {int(y.sum()):,} positive); "
        f"training on {len(train):,} rows")

    baselines = {name: _figures(y, s.score(X)) for name, s in baseline_scorers(config.horizon_h).items()}
    best_baseline = max(baselines, key=lambda n: baselines[n]["pr_auc"] or 0.0)
    prod_version, prod_path, prod_from = _production_model(registry)
    try:
        production = _figures(y, LiteRtScorer(prod_path, config.horizon_h).score(X))
    except ModelError as exc:
        raise ModelError(f"cannot score the production model {prod_version} on the held-out rows: {exc}") from exc

    pins = {"gold.features": version}
    training = {"tables": pins, "sources": [str(lake_root)], "holdout_stores": held, "seeds": list(config.seeds),
                "rows": {"total": total, "observed": len(data), "train": len(train), "holdout": len(test),
                         "holdout_positives": int(y.sum())}}
    record: dict[str, Any] = {
        "decision": "fail", "reasons": [], "trigger": config.trigger,
        "metric": "pr_auc (held-out stores, observed labels, int8)", "candidate": None,
        "baseline": {"best": best_baseline, **baselines[best_baseline], "all": baselines},
        "production": {"version": prod_version, "from": prod_from, **production},
        "gate": {"margin": config.margin, "confidence": config.confidence, "vs": {}},
        "training": training, "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "code_version": code_version(), **config.extra,
    }
    if int(y.sum()) < config.min_holdout_positives:
        # A PR-AUC over a handful of positives swings by tenths from one seed to the next: no
        # verdict can be trusted, so nothing is trained and nothing registered.
        record["reasons"] = [f"only {int(y.sum())} positive held-out label(s), {config.min_holdout_positives} "
                             "needed for a verdict: nothing trained; wait for more data"]
        return _finish(record, registry, "", started)
    seeds: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gondola-retrain-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        trained = {}
        for seed in config.seeds:
            t0 = time.monotonic()
            weights, summary = train_model(train, TrainConfig(epochs=config.epochs, seed=seed,
                                                              ahead_weight=config.ahead_weight))
            # Only the int8 file (what gateways run) is made per seed; the full package (float,
            # ONNX, manifests) only for the seed that would be registered.
            blob = to_tflite(weights, int8=True)
            path = work / f"seed-{seed}-int8.tflite"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            figs = _figures(y, LiteRtScorer(path, config.horizon_h, manifest=int8_manifest_fields(weights)).score(X))
            trained[seed] = (weights, summary)
            seeds[seed] = {**figs, "val_pr_auc": summary["val_pr_auc"], "seconds": round(time.monotonic() - t0, 1)}
            say(f"  seed {seed}: held-out PR-AUC {figs['pr_auc']:.4f} (int8), {seeds[seed]['seconds']:.0f} s")
        cand = [seeds[s]["pr_auc"] or 0.0 for s in config.seeds]
        verdict = judge(cand, {"baseline": baselines[best_baseline]["pr_auc"], "production": production["pr_auc"]},
                        config.margin, config.confidence)
        median_seed = sorted(config.seeds, key=lambda s: seeds[s]["pr_auc"] or 0.0)[len(config.seeds) // 2]
        record.update({
            "decision": "pass" if verdict["passed"] else "fail",
            "reasons": verdict["reasons"],
            "candidate": {"seeds": {str(s): seeds[s] for s in config.seeds},
                          "mean_pr_auc": statistics.fmean(cand), "chosen_seed": median_seed},
        })
        record["gate"]["vs"] = verdict["vs"]
        version_registered = ""
        if verdict["passed"] and registry is not None:
            weights, summary = trained[median_seed]
            _, val = split_validation(train)
            files = export_model(weights, work / "candidate", horizon_h=config.horizon_h, summary=summary, key=key,
                                 training={**training, "seed": median_seed},
                                 val=(train.rows.X[val], train.y[val]))
            # The figure of the exact bytes registered (a new conversion of the same weights: its
            # scores are the seed's, only Keras' layer names in the file differ).
            registered = _figures(y, LiteRtScorer(files.int8_tflite, config.horizon_h).score(X))
            metrics = {"holdout_pr_auc": registered["pr_auc"], "holdout_pr_auc_mean": statistics.fmean(cand),
                       "baseline_pr_auc": baselines[best_baseline]["pr_auc"], "production_pr_auc": production["pr_auc"],
                       "production_version": prod_version, "gate": verdict["vs"]}
            root = str(lake_root).rstrip("/")
            artifact_root = f"{root}/models/artifacts" if "://" in root else Path(root) / "models" / "artifacts"
            mv = register_package(registry, files.int8_tflite.parent, artifact_root,
                                  metrics=metrics, training={**training, "seed": median_seed},
                                  reason="retrain: passed the gate")
            version_registered = mv.version
            record["registered"] = mv.version
    return _finish(record, registry, version_registered, started)


def _finish(record: dict, registry, version: str, started: float) -> dict:
    """Time the round and append its decision record to the registry."""
    record["seconds"] = round(time.monotonic() - started, 1)
    if registry is not None:
        record["commit"] = registry.record("retrain", record, version=version, reason=f"gate {record['decision']}")
    return record


def format_decision(record: dict) -> str:
    """A few lines a person reads: decision, figures before and after, why."""
    c, b, p = record["candidate"], record["baseline"], record["production"]
    tr = record["training"]
    lines = [f"retrain: {record['decision'].upper()} (trigger {record['trigger']}, gold.features version "
             f"{tr['tables']['gold.features']}, {tr['rows']['observed']:,} observed rows, "
             f"held-out stores {', '.join(tr['holdout_stores'])})"]
    after = "not trained" if c is None else f"{c['mean_pr_auc']:.4f} (seeds " + ", ".join(
        f"{v['pr_auc']:.4f}" for v in c["seeds"].values()) + ")"
    lines.append(f"  held-out PR-AUC: baseline {b['best']} {_num(b['pr_auc'])}, production {p['version']} "
                 f"{_num(p['pr_auc'])}, candidate {after}")
    lines += [f"  {r}" for r in record["reasons"]]
    if record.get("registered"):
        lines.append(f"  registered candidate {record['registered']}: roll it out with "
                     f"'gondola models rollout {record['registered']}'")
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _parser():
    import argparse

    d = RetrainConfig()
    p = argparse.ArgumentParser(prog="gondola retrain", description=(
        "Retrain the stock-out model from the lake's gold.features and register it only when it beats "
        "the baseline and the production model on held-out stores (three seeds, a margin); the decision "
        "is recorded in the model registry either way."))
    p.add_argument("--lake", default="out/lake", help="lake root with gold.features (default out/lake)")
    p.add_argument("--gold-version", type=int, default=None, help="pin gold.features to this Delta version "
                                                                  "(default: the latest, recorded)")
    p.add_argument("--seeds", type=int, default=len(d.seeds), help=f"training seeds (default {len(d.seeds)})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--margin", type=float, default=d.margin, help=f"PR-AUC gain required (default {d.margin:g})")
    p.add_argument("--confidence", type=float, default=d.confidence,
                   help=f"one-sided confidence of the gain over seeds: 0.8, 0.9, 0.95, 0.99 (default {d.confidence:g})")
    p.add_argument("--holdout-share", type=float, default=d.holdout_share,
                   help=f"share of stores held out (default {d.holdout_share:g})")
    p.add_argument("--horizon", type=float, default=d.horizon_h, help=f"horizon, hours (default {d.horizon_h:g})")
    p.add_argument("--min-holdout-positives", type=int, default=d.min_holdout_positives,
                   help=f"positive held-out labels needed for a verdict (default {d.min_holdout_positives})")
    p.add_argument("--all-labels", action="store_true",
                   help="also train on rows whose label nobody observed (facings without a working sensor)")
    p.add_argument("--if-drift", action="store_true",
                   help="retrain only when features (PSI) or live alert precision drifted past a threshold")
    p.add_argument("--psi-threshold", type=float, default=0.2, help="PSI of any feature that triggers (default 0.2)")
    p.add_argument("--precision-drop", type=float, default=0.1,
                   help="drop of live alert precision below the model's held-out one that triggers (default 0.1)")
    p.add_argument("--trigger", default=None, help="what started this round, recorded (default manual; "
                                                     "'schedule' from CI, 'drift' with --if-drift)")
    p.add_argument("--work", default=None, help="keep the per-seed packages here (default: a temp folder)")
    p.add_argument("--json", action="store_true", help="print the decision record as JSON")
    return p


def main(argv: list[str]) -> int:
    """``gondola retrain``. Exit 0 whether the gate passes or fails (both are recorded
    decisions); 1 on errors.

    Raises: StorageError, ConfigError, ModelError (see the module docstring)."""
    from models.cli import _key
    from models.registry import open_registry

    args = _parser().parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    registry = open_registry(args.lake)
    extra: dict = {}
    trigger = args.trigger or "manual"
    if args.if_drift:
        from models.drift import drift_check

        report = drift_check(args.lake, registry, psi_threshold=args.psi_threshold,
                             precision_drop=args.precision_drop)
        registry.record("drift", report, reason="; ".join(report["reasons"]) or "no drift")
        say("drift: " + ("; ".join(report["reasons"]) if report["drifted"] else "none past the thresholds ("
                         f"max PSI {report['max_psi'] if report['max_psi'] is not None else '-'})"))
        if not report["drifted"]:
            print(json.dumps({"decision": "skipped", "drift": report}, default=str) if args.json
                  else "retrain: skipped (no drift)")
            return 0
        extra["drift"] = {k: report[k] for k in ("reasons", "max_psi", "psi", "precision")}
        trigger = args.trigger or "drift"
    config = RetrainConfig(seeds=tuple(range(args.seeds)), epochs=args.epochs, horizon_h=args.horizon,
                           margin=args.margin, confidence=args.confidence, holdout_share=args.holdout_share,
                           observed_only=not args.all_labels, min_holdout_positives=args.min_holdout_positives,
                           gold_version=args.gold_version, trigger=trigger,
                           extra=extra)
    key = _key()
    if key is None:
        say("  GONDOLA_MODEL_KEY is not set: a registered candidate is NOT signed (gateways with a key refuse it)")
    record = retrain(args.lake, registry, config, key=key, work_dir=args.work, say=say)
    print(json.dumps(record, indent=2, sort_keys=True, default=str) if args.json else format_decision(record))
    return 0

"""Train -> export -> package, and the side-by-side evaluation, as plain functions.

``models.cli`` wires these to ``gondola train`` / ``gondola eval``; tests call them directly
on small synthetic stores.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from gondola.clock import HOUR_MS
from models.alert_budget import AlertBudget
from models.dataset import LabelledRows
from models.features import FEATURES
from models.replay import facing_groups, split_facing_key
from models.metrics import average_precision, threshold_at_recall
from models.scoring import (BaselineScorer, PoissonScorer, Scorer, ZeroSalesScorer, empty_now_prob, empty_now_ready,
                            forecast_ready)
from models.train import MlpWeights, TrainConfig

__all__ = [
    "TARGET_RECALL",
    "RECALL_KEY",
    "settled_rows",
    "ModelFiles",
    "split_validation",
    "train_model",
    "export_model",
    "reexport_int8",
    "set_logit_range",
    "evaluate_side_by_side",
    "format_table",
    "pick_kind_thresholds",
    "evaluate_kinds",
    "FALSE_ALERT_BUDGET",
    "EMPTY_NOW_PRECISION",
    "sensor_trust_report",
]

log = logging.getLogger(__name__)

#: The recall the operating point is chosen for (issue goal: precision >= 0.85 at recall 0.75).
TARGET_RECALL = 0.75
#: Key of a scorer's thresholds (``evaluate_kinds``) holding the score threshold whose recall over
#: all validation rows is TARGET_RECALL: the honest "precision at recall 0.75" is measured there.
RECALL_KEY = "recall_0.75"
MODEL_NAME = "stockout"


@dataclass
class ModelFiles:
    int8_tflite: Path
    float_tflite: Path
    onnx: Path
    manifest: dict


def split_validation(data: LabelledRows, share: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, validation): whole stores when there are several, else the last
    ``share`` of time, so validation rows never share a store-day with training rows.

    Stores named ``source/store`` (several history folders) are split per source, so every
    training scenario has its share in validation."""
    store = data.rows.store.astype(str)
    stores = np.unique(store)
    if len(stores) >= 2:
        by_source: dict[str, list[str]] = {}
        for s in stores:
            by_source.setdefault(_source_of(s), []).append(s)
        val_stores = []
        for members in by_source.values():
            if len(members) >= 2 or len(by_source) == 1:
                val_stores += members[-max(1, int(round(len(members) * share))):]
        if not val_stores:  # one store per source: whole sources instead
            val_stores = stores[-max(1, int(round(len(stores) * share))):].tolist()
        val = np.isin(store, val_stores)
    else:
        cut = np.quantile(data.rows.t, 1 - share)
        val = data.rows.t >= cut
    return ~val, val


def settled_rows(data: LabelledRows, after_days: float) -> np.ndarray:
    """Rows at least ``after_days`` after their store's first row: the steady state a gateway
    spends its life in (operating thresholds are picked there, as held-out rows are sampled)."""
    from gondola.clock import DAY_MS

    store = data.rows.store.astype(str)
    keys, inverse = np.unique(store, return_inverse=True)
    first = np.full(len(keys), np.iinfo(np.int64).max)
    np.minimum.at(first, inverse, data.rows.t)
    return data.rows.t >= first[inverse] + int(after_days * DAY_MS)


def train_model(data: LabelledRows, config: TrainConfig = TrainConfig(), *,
                threshold_from: np.ndarray | None = None,
                progress: Callable[[int, dict], None] | None = None,
                horizon_h: float = 2.0) -> tuple[MlpWeights, dict]:
    """Train on the training part of ``data``; pick the operating thresholds on its validation
    part (only its rows marked in ``threshold_from``, when given): one per alert kind
    (:func:`pick_kind_thresholds`) when the rows say which shelves are already empty, else one
    for recall :data:`TARGET_RECALL`. Returns the weights and a summary (rows, thresholds,
    validation PR-AUC).

    Raises:
        ValueError: a part without both classes.
    """
    from models.train import train_mlp

    tr, val = split_validation(data)
    X, y = data.rows.X, data.y
    pick = val if threshold_from is None else val & threshold_from
    started = time.monotonic()
    if not data.empty_now_known and config.ahead_weight != 1.0:
        log.info("the training rows do not say which shelves are already empty: no ahead weight")
        config = replace(config, ahead_weight=1.0)
    weights = train_mlp(X[tr], y[tr], config, empty_now=data.empty_now[tr], progress=progress)
    set_logit_range(weights, data.subset(pick))
    p_val = weights.predict(X[val])
    summary = {
        "train_rows": int(tr.sum()),
        "train_positives": int(y[tr].sum()),
        "val_rows": int(val.sum()),
        "val_positives": int(y[val].sum()),
        "val_pr_auc": average_precision(y[val], p_val),
        "val_pr_auc_not_yet_empty": (average_precision(y[val & ~data.empty_now], p_val[~data.empty_now[val]])
                                     if data.empty_now_known else None),
        "threshold": threshold_at_recall(y[pick], p_val[pick[val]], TARGET_RECALL) if y[pick].any() else 0.5,
        "train_seconds": round(time.monotonic() - started, 2),
        "config": asdict(config),
    }
    if data.empty_now_known and y[pick].any():
        picked = data.subset(pick)
        summary["thresholds"] = pick_kind_thresholds(picked, weights.predict(picked.rows.X), horizon_h)
        summary["threshold"] = summary["thresholds"]["empty_within_h"]
    return weights, summary


def set_logit_range(weights: MlpWeights, val: LabelledRows) -> None:
    """Pick the int8 output range on validation rows (``models.export.int8_logit_range``);
    left unset (the calibration range) when they hold no forecast positive (no positive, or
    every positive an already-empty shelf) or no row with stock."""
    from models.export import int8_logit_range
    from models.features import encode_for_model

    empty_now = np.asarray(val.empty_now, dtype=bool) if val.empty_now_known else None
    stock = np.ones(len(val.y), bool) if empty_now is None else ~empty_now
    if not (np.asarray(val.y, dtype=bool) & stock).any():
        return
    logits = weights.logits(encode_for_model(val.rows.X, weights.encoding))
    weights.logit_range = int8_logit_range(logits, val.y, empty_now)


def export_model(weights: MlpWeights, out_dir: str | Path, *, horizon_h: float, summary: dict,
                 training: dict | None = None, key: bytes | None = None,
                 val: "tuple[np.ndarray, np.ndarray] | LabelledRows | None" = None) -> ModelFiles:
    """Write int8 TFLite, float TFLite and ONNX with signed (when ``key``) manifests.

    ``val``: validation rows (labelled rows, or (X, y)): the int8 model's own thresholds are
    picked on them (its quantized scores differ slightly from the float model's); labelled
    rows give one threshold per alert kind (manifest ``thresholds``).
    """
    from models.export import int8_manifest_fields, to_onnx, to_tflite
    from models.package import write_manifest
    from models.runtime import LiteRtScorer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blobs = {
        "int8": to_tflite(weights, int8=True),
        "float": to_tflite(weights, int8=False),
        "onnx": to_onnx(weights),
    }
    digest = hashlib.sha256(blobs["int8"]).hexdigest()[:8]
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{digest}"
    paths = {
        "int8": out / f"{MODEL_NAME}-int8.tflite",
        "float": out / f"{MODEL_NAME}-float.tflite",
        "onnx": out / f"{MODEL_NAME}.onnx",
    }
    for kind, path in paths.items():
        path.write_bytes(blobs[kind])
    thresholds = {"float": summary["threshold"], "onnx": summary["threshold"], "int8": summary["threshold"]}
    per_kind = {k: summary.get("thresholds") for k in paths}
    int8_fields = int8_manifest_fields(weights)
    if isinstance(val, LabelledRows):
        if val.y.any():
            int8 = LiteRtScorer(paths["int8"], horizon_h, manifest=int8_fields)
            per_kind["int8"] = pick_kind_thresholds(val, int8.score(val.rows.X), horizon_h)
            thresholds["int8"] = per_kind["int8"]["empty_within_h"]
    elif val is not None and np.asarray(val[1]).any():
        int8 = LiteRtScorer(paths["int8"], horizon_h, manifest=int8_fields)
        thresholds["int8"] = threshold_at_recall(val[1], int8.score(val[0]), TARGET_RECALL)
    formats = {"int8": "tflite-int8", "float": "tflite-float32", "onnx": "onnx-float32"}
    manifests = {}
    for kind, path in paths.items():
        manifests[kind] = write_manifest(path, {
            "name": MODEL_NAME,
            "version": version,
            "format": formats[kind],
            "features": list(FEATURES),
            "encoding": weights.encoding,
            "horizon_h": float(horizon_h),
            "threshold": float(thresholds[kind]),
            **({"thresholds": per_kind[kind], "empty_now_from_model": True} if per_kind[kind] else {}),
            "target_recall": TARGET_RECALL,
            # The gateway's forecast budget per store-day (models.alert_budget; the defaults).
            "alert_budget": AlertBudget().to_manifest(),
            "training": {**(training or {}), **{k: v for k, v in summary.items() if k != "config"},
                         "config": summary.get("config")},
            **(int8_fields if kind == "int8" else {}),
            **({"int8_logit_range": list(weights.logit_range)} if kind == "int8" and weights.logit_range else {}),
        }, key=key)
    return ModelFiles(paths["int8"], paths["float"], paths["onnx"], manifests["int8"])


def reexport_int8(model_dir: str | Path, data: LabelledRows, pick: np.ndarray, *, key: bytes | None = None) -> ModelFiles:
    """Re-export a package's models from its float weights (the ONNX file), without training:
    the int8 model as :func:`export_model` makes it today, its thresholds re-picked on the
    validation rows in ``pick``; the float twin and ONNX compute what they computed.

    ``data`` must be the package's training rows (its calibration rows are drawn from their
    training part with the package's seed, as ``train_mlp`` drew them).

    Raises:
        ModelError: no ONNX file or manifest in ``model_dir``.
    """
    from gondola.errors import ModelError
    from models.export import AFFINE_SUFFIX, weights_from_onnx
    from models.features import encode_for_model
    from models.package import manifest_path_for, read_manifest
    from models.train import TrainConfig, set_int8_inputs

    onnx_path = Path(model_dir) / f"{MODEL_NAME}.onnx"
    if not onnx_path.exists() or not manifest_path_for(onnx_path).exists():
        raise ModelError(f"{model_dir} has no {onnx_path.name} with its manifest to re-export from")
    manifest = read_manifest(manifest_path_for(onnx_path))
    training = dict(manifest.get("training") or {})
    config = training.get("config") or {}
    weights = weights_from_onnx(onnx_path)
    weights.encoding = str(manifest.get("encoding", weights.encoding)).removesuffix(AFFINE_SUFFIX)
    tr, _ = split_validation(data)
    enc = encode_for_model(data.rows.X[tr], weights.encoding)
    seed_config = TrainConfig(seed=int(config.get("seed", 0)),
                              calibration_rows=int(config.get("calibration_rows", TrainConfig.calibration_rows)))
    set_int8_inputs(weights, enc, data.y[tr], seed_config)
    del enc
    val = data.subset(pick)
    set_logit_range(weights, val)
    return export_model(weights, model_dir, horizon_h=float(manifest["horizon_h"]), summary=training,
                        training={"reexported_from": manifest.get("version")}, key=key, val=val)


def baseline_scorers(horizon_h: float) -> dict[str, Scorer]:
    return {s.name: s for s in (PoissonScorer(horizon_h), ZeroSalesScorer(horizon_h), BaselineScorer(horizon_h))}


def evaluate_side_by_side(
    test: LabelledRows,
    scorers: dict[str, Scorer],
    thresholds: dict[str, float],
    horizon_h: float,
) -> dict[str, dict]:
    """Every scorer on the same held-out rows, with its own validation-picked threshold.

    Adds a ``by_sensor`` breakdown (facings with / without a shelf sensor) to each result.
    """
    from models.evaluation import evaluate_scores

    horizon_ms = int(horizon_h * HOUR_MS)
    rows = test.rows
    sensor = rows.X[:, FEATURES.index("has_sensor")] > 0.5
    # One integer per (store, facing), computed once for every scorer's alert replay.
    uniq, group = facing_groups(rows.store, rows.facing)
    sensored_keys = {split_facing_key(k) for k in uniq[np.unique(group[sensor])]}
    outs_by = {
        "sensor": [s for s in test.stockouts if (s[0], s[1]) in sensored_keys],
        "no_sensor": [s for s in test.stockouts if (s[0], s[1]) not in sensored_keys],
    }
    results = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        probs = scorer.score(rows.X)
        seconds = time.perf_counter() - started
        common = dict(threshold=thresholds[name], horizon_ms=horizon_ms, store_days=test.store_days)
        res = evaluate_scores(probs, test.y, stockouts=test.stockouts, empty_now=test.empty_now,
                              store=rows.store, facing=rows.facing, t=rows.t, group=group, **common)
        res["score_seconds"] = round(seconds, 3)
        res["by_sensor"] = {}
        for label, mask in (("sensor", sensor), ("no_sensor", ~sensor)):
            res["by_sensor"][label] = evaluate_scores(
                probs[mask], test.y[mask], stockouts=outs_by[label], empty_now=test.empty_now[mask],
                store=rows.store[mask], facing=rows.facing[mask], t=rows.t[mask], group=group[mask], **common)
        results[name] = res
    return results


_COLUMNS = (
    ("pr_auc", "PR-AUC", "{:.3f}"),
    ("pr_auc_not_yet_empty", "PR-AUC ahead", "{:.3f}"),
    ("precision_at_recall_0.75", "P@R0.75", "{:.3f}"),
    ("precision", "prec", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("episode_stockout_recall", "caught ahead", "{:.3f}"),
    ("episode_median_lead_min", "lead min", "{:.0f}"),
    ("episode_false_per_store_day", "false/st-day", "{:.1f}"),
)


def format_table(results: dict[str, dict]) -> str:
    """A fixed-width table of the headline figures, one row per scorer."""
    header = f"{'scorer':<22}" + "".join(f"{title:>14}" for _, title, _ in _COLUMNS)
    lines = [header, "-" * len(header)]
    for name, res in results.items():
        cells = []
        for key, _, fmt in _COLUMNS:
            v = res.get(key)
            cells.append(f"{'-' if v is None else fmt.format(v):>14}")
        lines.append(f"{name:<22}" + "".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Two alert kinds: operating thresholds from validation rows, and the figures of record
# --------------------------------------------------------------------------------------------

#: False alerts of both kinds per store-day the forecast threshold may let through on EVERY
#: validation source (training scenario), not on their pool: the issue's goal is at most 5 on
#: every store, and 1 is left for stores unlike the validation ones. (Before: 3 false forecasts
#: on the pooled validation stores; the busier source made 3.9 of both kinds there, and a
#: busier held-out set 5.5.)
FALSE_ALERT_BUDGET = 4.0
#: Precision the ``empty_now`` threshold must reach on validation facings without a sensor, on
#: EVERY validation source: the goal is 0.8 on every store, and 0.1 is left for stores unlike the
#: validation ones. (Before: 0.85 on the pooled validation stores; retrained on the rows of rules
#: version 12 it fell to 0.88-0.95, a source of busier stores sat at 0.75 inside the pool, and
#: four held-out sets fell under 0.8. Picked on five sources, a sixth fell up to 0.08 under the
#: others at 0.85 on every source, never under 0.8 at 0.9: docs/model.md.)
EMPTY_NOW_PRECISION = 0.90


def _sensored(rows) -> np.ndarray:
    """Rows of facings whose sensor reports (believed or not: an untrusted one reads as absent)."""
    out = rows.X[:, FEATURES.index("has_sensor")] > 0.5
    return out | rows.untrusted if rows.untrusted is not None else out


def _groups(rows) -> tuple[np.ndarray, set[tuple[str, str]]]:
    uniq, group = facing_groups(rows.store, rows.facing)
    has = np.zeros(len(uniq), dtype=bool)
    np.logical_or.at(has, group, _sensored(rows))
    ns = {split_facing_key(k) for k in uniq[~has]}
    return group, ns


def sensor_trust_report(data: LabelledRows) -> dict | None:
    """The sensor-trust detector against the simulator's injected sensor faults (stuck,
    drifting, silent), over rows of facings with a sensor: precision and recall per row."""
    if data.rows.untrusted is None or data.sensor_fault is None:
        return None
    sensored = _sensored(data.rows)
    pred, truth = data.rows.untrusted[sensored], data.sensor_fault[sensored]
    tp = int((pred & truth).sum())
    return {
        "sensored_rows": int(sensored.sum()),
        "fault_rows": int(truth.sum()),
        "untrusted_rows": int(pred.sum()),
        "precision": tp / int(pred.sum()) if pred.any() else None,
        "recall": tp / int(truth.sum()) if truth.any() else None,
    }


def _span(data: LabelledRows) -> tuple[list, float]:
    """The stock-outs inside the rows' stores and time span, and the store-days it covers."""
    from gondola.clock import DAY_MS

    store = data.rows.store.astype(str)
    spans = {}
    for sid in np.unique(store):
        ts = data.rows.t[store == sid]
        spans[sid] = (int(ts.min()), int(ts.max()))
    outs = [s for s in data.stockouts if s[0] in spans and spans[s[0]][0] <= s[2] <= spans[s[0]][1]]
    days = sum((b - a) / DAY_MS for a, b in spans.values())
    return outs, days


def _kinds(data: LabelledRows, forecast: np.ndarray, now: np.ndarray, forecast_at: float, now_at: float,
           horizon_h: float, cache: dict | None = None, budget: AlertBudget | None = None) -> dict:
    from models.evaluation import evaluate_alert_kinds

    if cache is None or "groups" not in cache:
        group, ns = _groups(data.rows)
        outs, days = _span(data)
        cache = {} if cache is None else cache
        cache.update(groups=(group, ns), span=(outs, days))
    group, ns = cache["groups"]
    outs, days = cache["span"]
    if "ready" not in cache:
        cache["ready"] = forecast_ready(data.rows.X)  # the gateway's rule: no forecast before a sale
        cache["now_ready"] = empty_now_ready(data.rows.X)  # nor empty_now on a 0 the sensor never read
    return evaluate_alert_kinds(store=data.rows.store, facing=data.rows.facing, t=data.rows.t, group=group,
                                forecast=forecast, now=now, forecast_at=forecast_at, now_at=now_at,
                                stockouts=outs, no_sensor=ns, horizon_ms=int(horizon_h * HOUR_MS), store_days=days,
                                intervals=data.intervals, ready=cache["ready"],
                                now_ready=cache["now_ready"], budget=budget)


def _source_of(store: str) -> str:
    """The source of a store named ``source/store`` (several history folders); "" if none."""
    return store.rsplit("/", 1)[0] if "/" in store else ""


def _source_masks(val: LabelledRows) -> list[np.ndarray]:
    """Rows of each validation source (stores named ``source/store``, as ``split_validation``
    groups them); one mask for all rows when the stores name no source."""
    store = val.rows.store.astype(str)
    source = np.array([_source_of(s) for s in np.unique(store)])
    _, inverse = np.unique(store, return_inverse=True)
    per_row = source[inverse.reshape(-1)]
    names = np.unique(per_row)
    return [per_row == n for n in names] if len(names) > 1 else [np.ones(len(store), dtype=bool)]


def pick_kind_thresholds(val: LabelledRows, forecast: np.ndarray, horizon_h: float, *,
                         now: np.ndarray | None = None, budget: float = FALSE_ALERT_BUDGET,
                         precision: float = EMPTY_NOW_PRECISION) -> dict[str, float]:
    """Operating thresholds per alert kind, each chosen on validation rows of its own kind.

    * ``empty_now``: the lowest threshold of the detector (``now``, default
      ``models.scoring.empty_now_prob`` with the forecast scores as the evidence of facings
      without a believed sensor) whose alerts on facings without a sensor reach
      ``precision`` on every validation source (:func:`_source_masks`), searched over the
      detector's scores of those facings from 0.5 up (every level of an int8 model's output);
      facings with a sensor score 0 or 1 and do not move it. The pool of sources hid one at
      0.75 and the threshold did not hold out (docs/model.md, *An empty_now threshold that
      holds out*);
    * ``empty_within_h``: the lowest forecast threshold whose false alerts of both kinds per
      store-day (replayed as the gateway raises them) stay within ``budget`` on every
      validation source (:func:`_source_masks`), searched over the scores of rows whose shelf
      still has stock. A lower threshold warns more often and earlier; the budget is what a
      store can afford to walk for nothing, so it holds per kind of store, not on average.
    """
    now = empty_now_prob(val.rows.X, model=forecast) if now is None else now
    cache: dict = {}
    goals = {"empty_now": f"precision >= {precision} on facings without a sensor on every source",
             "empty_within_h": f"false alerts of both kinds <= {budget} a store-day on every source; "
                               "false empty_now alerts alone may exceed it"}
    no_sensor = val.rows.X[:, FEATURES.index("has_sensor")] < 0.5  # untrusted sensors too: the till decides

    def bisect(cands: np.ndarray, ok, what: str) -> float:
        # The first candidate that is ok. ok is monotone but at the top, where a source has few
        # alerts left and one false alert tips it (a float model's empty_now scores near 1): the
        # search starts under the highest of every tenth candidate, from the top, that is ok.
        step = max(1, len(cands) // 10)
        hi = next((i for i in range(len(cands) - 1, -1, -step) if ok(cands[i])), None)
        if hi is None:
            log.warning("%s threshold: no candidate meets its goal on the validation rows (%s); "
                        "using the highest, %.4f", what, goals[what], cands[-1])
            return float(cands[-1])
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(cands[mid]):
                hi = mid
            else:
                lo = mid + 1
        return float(cands[lo])

    masks = _source_masks(val)
    parts = [(val, forecast, now, cache)] if len(masks) == 1 else [
        (val.subset(m), forecast[m], now[m], {}) for m in masks]

    ns_scores = now[no_sensor]
    # A score of 1 is a rule's verdict (``empty_now_prob``: the till's count of 0 on a SKU's only
    # facing): it raises at any threshold, so the grid is made of the scores a threshold decides.
    # When only such rows reach 0.5, every threshold from 0.5 up raises the same alerts: 0.5.
    high = ns_scores[(ns_scores >= 0.5) & (ns_scores < 1.0)]
    if len(high):
        cands = np.quantile(high, np.linspace(0.0, 0.999, 200))
    else:
        cands = np.array([0.5 if np.any(ns_scores >= 0.5) else 0.95])
    cands = np.clip(cands, 0.5, 0.9999)

    def now_ok(th: float) -> bool:
        for rows, _, det, part_cache in parts:
            p = _kinds(rows, np.zeros(len(rows)), det, 1.0, th, horizon_h, part_cache)["empty_now_no_sensor_precision"]
            if p is not None and p < precision:
                return False
        return True

    now_at = bisect(np.unique(cands), now_ok, "empty_now")
    ahead = forecast[~val.empty_now]
    cands = np.unique(np.quantile(ahead, 1.0 - np.geomspace(0.3, 1e-4, 48))) if len(ahead) else np.array([0.5])
    cands = np.clip(cands, 1e-4, 0.9999)

    def fc_ok(th: float) -> bool:
        for rows, fc, det, part_cache in parts:
            m = _kinds(rows, fc, det, th, now_at, horizon_h, part_cache)
            if (m["false_forecasts_per_store_day"] or 0.0) + (m["false_empty_now_per_store_day"] or 0.0) > budget:
                return False
        return True

    return {"empty_within_h": bisect(np.unique(cands), fc_ok, "empty_within_h"), "empty_now": now_at}


def _at_recall_threshold(y: np.ndarray, p: np.ndarray, at: float | None) -> dict:
    """Precision and recall over all rows at the threshold picked on validation for recall
    ``TARGET_RECALL`` (``RECALL_KEY``; None without one)."""
    hit = p >= at if at is not None else np.zeros(len(p), dtype=bool)
    tp = int((hit & y).sum())
    return {"precision_at_validation_recall_0.75_threshold": tp / int(hit.sum()) if at is not None and hit.any() else None,
            "recall_at_validation_recall_0.75_threshold": tp / int(y.sum()) if at is not None and y.any() else None}


def evaluate_kinds(test: LabelledRows, probs: dict[str, np.ndarray], thresholds: dict[str, dict[str, float]],
                   horizon_h: float, *, now: dict[str, np.ndarray] | None = None,
                   now_from_model: "set[str] | None" = None,
                   budgets: "dict[str, AlertBudget] | None" = None) -> dict[str, dict]:
    """The figures of record per scorer on one held-out set (issue 11's keys), each at the
    scorer's own thresholds picked on validation rows; the oracle's PR-AUC beside each.

    ``probs``: forecast scores per scorer (row-aligned with ``test``); ``now``: detector
    scores per scorer (default: ``empty_now_prob``, with the scorer's own scores as the
    evidence of facings without a sensor for the scorers in ``now_from_model``). Rows whose shelf is not empty yet
    are the forecast's rows (``pr_auc_ahead``); best-over-thresholds figures are labelled so.
    Alerts are replayed under each scorer's alert budget per store-day (``budgets``; a scorer
    not named there: the defaults, ``models.alert_budget.AlertBudget()``), as its gateway raises
    them; the thresholds are picked without it (:func:`pick_kind_thresholds`).
    """
    from models.metrics import precision_at_recall

    ahead = ~test.empty_now
    y_ahead = test.y[ahead]
    default_now = empty_now_prob(test.rows.X)
    from_model = set((now_from_model or ()))
    oracle_ap = None
    if test.oracle is not None:
        oracle_ap = average_precision(y_ahead, test.oracle[ahead])
    cache: dict = {}
    out = {}
    for name, p in probs.items():
        p = np.asarray(p, dtype=np.float64)
        th = thresholds[name]
        fc_at = th["empty_within_h"]
        ap = average_precision(y_ahead, p[ahead])
        hit = p[ahead] >= fc_at
        tp = int((hit & y_ahead).sum())
        res = {
            "pr_auc_ahead": ap,
            "oracle_pr_auc_ahead": oracle_ap,
            "fraction_of_oracle": (ap / oracle_ap) if ap is not None and oracle_ap else None,
            "pr_auc_all_rows": average_precision(test.y, p),
            "best_precision_at_recall_0.75_over_test_thresholds": precision_at_recall(test.y, p, 0.75),
            "best_precision_at_recall_0.75_ahead_over_test_thresholds": precision_at_recall(y_ahead, p[ahead], 0.75),
            "forecast_threshold": fc_at,
            "empty_now_threshold": th["empty_now"],
            "precision_at_operating_threshold": tp / int(hit.sum()) if hit.any() else None,
            "recall_at_operating_threshold": tp / int(y_ahead.sum()) if y_ahead.any() else None,
            **_at_recall_threshold(test.y, p, th.get(RECALL_KEY)),
            "rows": int(len(p)),
            "rows_ahead": int(ahead.sum()),
            "positives_ahead": int(y_ahead.sum()),
        }
        if now and name in now:
            now_p = now[name]
        elif name in from_model:
            now_p = empty_now_prob(test.rows.X, model=p)
        else:
            now_p = default_now
        budget = (budgets or {}).get(name, AlertBudget())
        res.update(_kinds(test, p, now_p, fc_at, th["empty_now"], horizon_h, cache, budget=budget))
        res["alert_budget"] = budget.to_manifest()
        out[name] = res
    return out

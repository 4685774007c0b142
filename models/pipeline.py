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
from models.dataset import LabelledRows
from models.features import FEATURES, MODEL_ENCODING
from models.metrics import average_precision, threshold_at_recall
from models.scoring import BaselineScorer, PoissonScorer, Scorer, ZeroSalesScorer
from models.train import MlpWeights, TrainConfig

__all__ = [
    "TARGET_RECALL",
    "settled_rows",
    "ModelFiles",
    "split_validation",
    "train_model",
    "export_model",
    "evaluate_side_by_side",
    "format_table",
]

log = logging.getLogger(__name__)

#: The recall the operating point is chosen for (issue goal: precision >= 0.85 at recall 0.75).
TARGET_RECALL = 0.75
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
            by_source.setdefault(s.rsplit("/", 1)[0] if "/" in s else "", []).append(s)
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
                progress: Callable[[int, dict], None] | None = None) -> tuple[MlpWeights, dict]:
    """Train on the training part of ``data``; pick the operating threshold on its validation
    part (only its rows marked in ``threshold_from``, when given). Returns the weights and a
    summary (rows, threshold, validation PR-AUC).

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
    return weights, summary


def export_model(weights: MlpWeights, out_dir: str | Path, *, horizon_h: float, summary: dict,
                 training: dict | None = None, key: bytes | None = None,
                 val: tuple[np.ndarray, np.ndarray] | None = None) -> ModelFiles:
    """Write int8 TFLite, float TFLite and ONNX with signed (when ``key``) manifests.

    ``val`` = (X, y) validation rows: the int8 model's own threshold is picked on them (its
    quantized scores differ slightly from the float model's).
    """
    from models.export import to_onnx, to_tflite
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
    if val is not None and np.asarray(val[1]).any():
        int8 = LiteRtScorer(paths["int8"], horizon_h, manifest={})
        thresholds["int8"] = threshold_at_recall(val[1], int8.score(val[0]), TARGET_RECALL)
    formats = {"int8": "tflite-int8", "float": "tflite-float32", "onnx": "onnx-float32"}
    manifests = {}
    for kind, path in paths.items():
        manifests[kind] = write_manifest(path, {
            "name": MODEL_NAME,
            "version": version,
            "format": formats[kind],
            "features": list(FEATURES),
            "encoding": MODEL_ENCODING,
            "horizon_h": float(horizon_h),
            "threshold": float(thresholds[kind]),
            "target_recall": TARGET_RECALL,
            "training": {**(training or {}), **{k: v for k, v in summary.items() if k != "config"},
                         "config": summary.get("config")},
        }, key=key)
    return ModelFiles(paths["int8"], paths["float"], paths["onnx"], manifests["int8"])


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
    keys = np.char.add(np.char.add(rows.store.astype(str), "\x1f"), rows.facing.astype(str))
    uniq, group = np.unique(keys, return_inverse=True)
    sensored_keys = {tuple(str(k).split("\x1f", 1)) for k in uniq[np.unique(group[sensor])]}
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

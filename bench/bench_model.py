"""One gateway scoring cycle for 10,000 facings: features + one batched inference.

Measured side by side in the same run, on the same feature matrix:

* features, full pass (every facing re-read: a gateway's first cycle or the cloud's replay),
* features, incremental (``FeatureCache``: 2 % of facings changed since the last cycle, about
  a one-minute cycle in a busy store),
* inference: int8 TFLite on LiteRT (the edge path), float32 TFLite on LiteRT, onnxruntime float32,
  the Poisson baseline (numpy) — each one batched call over all facings.

The model is trained here on the model package's own small synthetic stores (a few seconds):
timing does not depend on how good it is, only on its shape (the production shape).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS


def _facings(n: int, seed: int = 0):
    from models.features import FacingState

    rng = np.random.default_rng(seed)
    t0 = 1_767_571_200_000  # 2026-01-05 00:00 UTC
    states = []
    for i in range(n):
        s = FacingState(f"f{i:05d}", f"sku{i:05d}", int(rng.integers(4, 60)), started_ms=t0)
        sales = np.sort(t0 + rng.integers(0, 7 * DAY_MS, int(rng.integers(5, 60))))
        for t in sales:
            s.on_sale(int(t), 1, 199)
        s.on_restock(int(sales[-1]) - HOUR_MS, int(rng.integers(1, 10)))
        if i % 2:
            s.on_reading(int(sales[-1]), int(rng.integers(0, 20)), 80.0)
        states.append(s)
    return states, t0 + 7 * DAY_MS + 10 * HOUR_MS


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, tensor resize)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def _model(tmp: Path):
    from models._synthetic import synthetic_store
    from models.dataset import build_rows
    from models.pipeline import export_model, train_model
    from models.train import TrainConfig

    histories = [synthetic_store(f"s{i}", facings=30, days=8, seed=i) for i in range(2)]
    data = build_rows(histories, 2.0, every_min=30, warmup_days=2)
    weights, summary = train_model(data, TrainConfig(epochs=2))
    return export_model(weights, tmp, horizon_h=2.0, summary=summary)


def run(quick: bool = False) -> dict:
    from models.features import FeatureCache, feature_matrix
    from models.runtime import LiteRtScorer, OnnxScorer
    from models.scoring import PoissonScorer

    n = 1_000 if quick else 10_000
    repeats = 5 if quick else 20
    states, now = _facings(n)
    with tempfile.TemporaryDirectory() as tmp:
        files = _model(Path(tmp))
        int8 = LiteRtScorer(files.int8_tflite)
        fl = LiteRtScorer(files.float_tflite)
        ort = OnnxScorer(files.onnx)
        poisson = PoissonScorer(2.0)
        cache = FeatureCache(states)
        changed = states[:: 50]  # 2 %

        def incremental():
            for s in changed:
                cache.mark(s)
            return cache.matrix(now)

        X = feature_matrix(states, now)
        assert np.array_equal(X, incremental())
        res = {
            "facings": n,
            "features_full_ms": _time(lambda: feature_matrix(states, now), repeats),
            "features_incremental_ms": _time(incremental, repeats),
            "int8_litert_ms": _time(lambda: int8.score(X), repeats),
            "float_litert_ms": _time(lambda: fl.score(X), repeats),
            "onnxruntime_ms": _time(lambda: ort.score(X), repeats),
            "poisson_numpy_ms": _time(lambda: poisson.score(X), repeats),
            "int8_model_bytes": files.int8_tflite.stat().st_size,
            "float_model_bytes": files.float_tflite.stat().st_size,
            "onnx_model_bytes": files.onnx.stat().st_size,
        }
    res["cycle_int8_ms"] = res["features_incremental_ms"] + res["int8_litert_ms"]
    res["cycle_int8_full_features_ms"] = res["features_full_ms"] + res["int8_litert_ms"]
    res["ratio_int8_vs_float_litert"] = res["int8_litert_ms"] / res["float_litert_ms"]
    res["ratio_int8_vs_onnxruntime"] = res["int8_litert_ms"] / res["onnxruntime_ms"]
    res["ratio_incremental_vs_full_features"] = res["features_incremental_ms"] / res["features_full_ms"]
    print(f"{n:,} facings, median of {repeats}:")
    print(f"  features: full {res['features_full_ms']:.1f} ms, incremental (2% changed) "
          f"{res['features_incremental_ms']:.1f} ms  (x{res['ratio_incremental_vs_full_features']:.2f})")
    print(f"  inference: int8 LiteRT {res['int8_litert_ms']:.2f} ms, float LiteRT {res['float_litert_ms']:.2f} ms "
          f"(int8/float x{res['ratio_int8_vs_float_litert']:.2f}), onnxruntime {res['onnxruntime_ms']:.2f} ms "
          f"(int8/ort x{res['ratio_int8_vs_onnxruntime']:.2f}), Poisson {res['poisson_numpy_ms']:.2f} ms")
    print(f"  one cycle (incremental features + int8): {res['cycle_int8_ms']:.1f} ms; "
          f"with a full feature pass: {res['cycle_int8_full_features_ms']:.1f} ms")
    print(f"  model sizes: int8 {res['int8_model_bytes']:,} B, float {res['float_model_bytes']:,} B, "
          f"onnx {res['onnx_model_bytes']:,} B")
    return res

"""Train a tiny model, export it, and run it on the real LiteRT interpreter and onnxruntime."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from gondola.errors import ModelError
from models._synthetic import synthetic_store
from models.dataset import build_rows
from models.features import FEATURES, encode_for_model
from models.metrics import average_precision
from models.package import manifest_path_for, read_manifest, verify_model
from models.pipeline import (evaluate_side_by_side, export_model, format_table, reexport_int8, split_validation,
                             train_model)
from models.runtime import LiteRtScorer, OnnxScorer, load_scorer
from models.scoring import PoissonScorer
from models.train import TrainConfig

KEY = b"test-only-secret"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    histories = [synthetic_store(f"s{i}", facings=30, days=8, seed=10 + i) for i in range(3)]
    data = build_rows(histories, 2.0, every_min=30, warmup_days=2)
    weights, summary = train_model(data, TrainConfig(epochs=4, hidden=(32, 16)))
    _, val = split_validation(data)
    out = tmp_path_factory.mktemp("model")
    files = export_model(weights, out, horizon_h=2.0, summary=summary, training={"source": "synthetic"},
                         key=KEY, val=(data.rows.X[val], data.y[val]))
    return data, weights, files


pytestmark = pytest.mark.slow


def test_int8_model_is_full_integer_and_tracks_the_float_model(trained):
    data, weights, files = trained
    int8 = LiteRtScorer(files.int8_tflite)
    fl = LiteRtScorer(files.float_tflite)
    assert int8.int8 and not fl.int8
    x = data.rows.X
    p_ref = weights.predict(x)
    np.testing.assert_allclose(fl.score(x), p_ref, atol=1e-4)
    p8 = int8.score(x)
    # Quantization moves probabilities a little, never the ranking much.
    assert np.abs(p8 - p_ref).mean() < 0.02
    assert abs(average_precision(data.y, p8) - average_precision(data.y, p_ref)) < 0.05


def test_int8_output_clips_only_above_every_threshold_and_below_the_forecast_positives(trained):
    data, weights, files = trained
    int8 = LiteRtScorer(files.int8_tflite)
    logits = int8.logits(data.rows.X)
    scale, zero = int8._out_q
    lo, hi = (-128 - zero) * scale, (127 - zero) * scale
    ref = weights.logits(encode_for_model(data.rows.X))
    # The range was picked on validation rows (models.export.int8_logit_range), as far as the
    # calibration rows reach (this weak model's highest logit is about 2.5).
    assert weights.logit_range is not None
    calib = weights.logits(weights.calibration)
    assert abs(lo - max(weights.logit_range[0], calib.min())) < scale
    assert abs(hi - min(weights.logit_range[1], calib.max())) < scale
    for th in files.manifest["thresholds"].values():
        assert np.log(th / (1 - th)) <= hi + 1e-6
    # Rows above it are ranked at the top, in order with everything below.
    assert (logits[ref > hi + 0.5] >= hi - scale).all()
    # Within the range, int8 logits stay close to float ones; rows below the lowest forecast
    # positives (0.5 % quantile on validation) sit at the low clip, in order.
    assert (logits[ref < lo - 0.5] <= lo + scale).all()
    relevant = (ref > lo) & (ref < hi)
    assert relevant.sum() > 100
    assert np.abs(logits[relevant] - ref[relevant]).max() < 0.75


def test_a_package_re_exported_from_its_onnx_weights_scores_as_exported(trained, tmp_path):
    data, weights, files = trained
    pkg = tmp_path / "pkg"
    shutil.copytree(files.int8_tflite.parent, pkg)
    _, val = split_validation(data)
    again = reexport_int8(pkg, data, val)
    # Same float weights (read back from the ONNX file), same calibration rows (drawn with the
    # package's seed), same validation-picked output range: the same int8 model.
    assert read_manifest(manifest_path_for(again.int8_tflite))["input_affine"] == files.manifest["input_affine"]
    x = data.rows.X
    np.testing.assert_allclose(LiteRtScorer(again.int8_tflite).logits(x), LiteRtScorer(files.int8_tflite).logits(x),
                               atol=1e-6)
    np.testing.assert_allclose(OnnxScorer(again.onnx).score(x), weights.predict(x), atol=1e-5)


def test_onnx_export_passes_the_checker_and_matches_numpy(trained):
    import onnx

    data, weights, files = trained
    onnx.checker.check_model(onnx.load(str(files.onnx)), full_check=True)
    p = OnnxScorer(files.onnx).score(data.rows.X)
    np.testing.assert_allclose(p, weights.predict(data.rows.X), atol=1e-5)


def test_scorer_scores_any_batch_size_in_one_call_and_keeps_row_order(trained):
    data, _, files = trained
    s = LiteRtScorer(files.int8_tflite)
    x = data.rows.X[:50]
    full = s.score(x)
    assert s.score(x[:7]).tolist() == full[:7].tolist()
    assert s.score(x[::-1]).tolist() == full[::-1].tolist()
    assert s.score(np.zeros((0, len(FEATURES)), np.float32)).shape == (0,)


def test_manifest_records_version_hash_features_horizon_and_threshold(trained):
    _, _, files = trained
    m = read_manifest(manifest_path_for(files.int8_tflite))
    assert m["features"] == list(FEATURES) and m["horizon_h"] == 2.0 and m["format"] == "tflite-int8"
    assert 0 < m["threshold"] < 1 and m["signature"]["alg"] == "hmac-sha256"
    assert verify_model(files.int8_tflite, m, KEY) == m
    s = LiteRtScorer(files.int8_tflite)
    assert s.name == f"model:{m['version']}" and s.threshold == m["threshold"]


def test_load_scorer_returns_the_model_or_falls_back_to_the_baseline(trained, tmp_path, caplog):
    _, _, files = trained
    assert isinstance(load_scorer(None, 2.0), PoissonScorer)
    assert isinstance(load_scorer(files.int8_tflite, 2.0, key=KEY), LiteRtScorer)
    assert isinstance(load_scorer(files.onnx, 2.0), OnnxScorer)
    # A model for another horizon answers another question: baseline instead.
    with caplog.at_level(logging.WARNING, logger="models.runtime"):
        assert isinstance(load_scorer(files.int8_tflite, 4.0), PoissonScorer)
    assert "falling back" in caplog.text
    # A tampered file fails verification; a garbage file fails to load.
    bad = tmp_path / "stockout-int8.tflite"
    shutil.copy(files.int8_tflite, bad)
    shutil.copy(manifest_path_for(files.int8_tflite), manifest_path_for(bad))
    with open(bad, "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    assert isinstance(load_scorer(bad, 2.0, key=KEY), PoissonScorer)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    assert isinstance(load_scorer(junk, 2.0), PoissonScorer)
    with pytest.raises(ModelError):
        LiteRtScorer(junk)


def test_side_by_side_evaluation_reports_every_scorer(trained):
    data, _, files = trained
    scorers = {"baseline-poisson": PoissonScorer(2.0), "int8": LiteRtScorer(files.int8_tflite)}
    res = evaluate_side_by_side(data, scorers, {"baseline-poisson": 0.5, "int8": files.manifest["threshold"]}, 2.0)
    assert set(res) == set(scorers)
    assert res["int8"]["pr_auc"] > res["baseline-poisson"]["pr_auc"] * 0.8
    assert set(res["int8"]["by_sensor"]) == {"sensor", "no_sensor"}
    table = format_table(res)
    assert "baseline-poisson" in table and "PR-AUC" in table


def test_the_shipped_default_model_matches_its_manifest_and_this_build():
    from models.package import file_sha256
    from models.runtime import DEFAULT_MODEL

    m = read_manifest(manifest_path_for(DEFAULT_MODEL))
    assert file_sha256(DEFAULT_MODEL) == m["sha256"] and m["features"] == list(FEATURES)
    assert DEFAULT_MODEL.stat().st_size < 200_000
    s = load_scorer(DEFAULT_MODEL, 2.0)
    assert isinstance(s, LiteRtScorer) and s.int8
    # An empty shelf with steady sales is a near-certain stock-out; a full slow shelf is not.
    x = np.zeros((2, len(FEATURES)), np.float32)
    f = {n: i for i, n in enumerate(FEATURES)}
    x[:, f["has_sensor"]] = 1
    x[:, f["capacity"]] = 20
    x[:, f["hours_since_reading"]] = 0.2
    x[:, f["battery_pct"]] = 80
    x[0, f["units_est"]], x[1, f["units_est"]] = 0, 20
    x[0, f["fill_ratio"]], x[1, f["fill_ratio"]] = 0, 1
    x[:, f["rate_24h"]] = x[:, f["rate_168h"]] = 0.3
    x[:, f["hours_since_sale"]] = 1.0
    x[:, f["hours_since_restock"]] = 6.0
    x[:, f["hours_to_restock"]] = 3.0
    x[:, f["demand_next_2h"]] = 0.6
    x[:, f["price_ratio"]] = 1.0
    x[:, f["hour_sin"]], x[:, f["hour_cos"]] = -0.707, -0.707  # 15:00
    p = s.score(x)
    assert p[0] > 5 * p[1] and p[1] < 0.05


def test_ahead_weight_raises_the_scores_of_forecast_positives_relative_to_empty_shelves(trained):
    from models.train import train_mlp

    data, _, _ = trained
    X, y, now = data.rows.X, data.y, data.empty_now
    ahead_pos = y & ~now
    assert ahead_pos.sum() >= 20 and (y & now).sum() >= 20
    config = TrainConfig(epochs=3, hidden=(16,))
    plain = train_mlp(X, y, config, empty_now=now)
    weighted = train_mlp(X, y, TrainConfig(epochs=3, hidden=(16,), ahead_weight=10.0), empty_now=now)
    # The weight moves the loss from shelves already empty to forecasts: forecast positives
    # score higher against the empty shelves than without it.
    empty_pos = y & now

    def gap(w):
        return w.logits(encode_for_model(X[ahead_pos])).mean() - w.logits(encode_for_model(X[empty_pos])).mean()

    assert gap(weighted) > gap(plain)


def test_a_cosine_learning_rate_trains_differently_and_an_unknown_schedule_is_refused(trained):
    from models.train import train_mlp

    data, _, _ = trained
    X, y = data.rows.X, data.y
    with pytest.raises(ValueError, match="lr_decay"):
        train_mlp(X, y, TrainConfig(epochs=1, hidden=(8,), lr_decay="cosin"))
    cosine = train_mlp(X, y, TrainConfig(epochs=2, hidden=(8,), lr_decay="cosine"))
    constant = train_mlp(X, y, TrainConfig(epochs=2, hidden=(8,)))
    assert np.isfinite(cosine.layers[0][0]).all()
    # Same seed and rows: only the schedule differs, and it moves the weights.
    assert not np.allclose(cosine.layers[0][0], constant.layers[0][0])

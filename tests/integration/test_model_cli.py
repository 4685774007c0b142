"""``gondola train`` and ``gondola eval`` on tiny simulator histories, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gondola.cli import main as gondola

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    from firmware_sim.history import generate

    root = tmp_path_factory.mktemp("hist")
    train = generate(root / "train", stores=2, skus=40, days=9, seed=1).out_dir
    test = generate(root / "test", stores=1, skus=40, days=8, seed=7).out_dir
    return train, test


def test_train_then_eval_writes_a_signed_model_and_side_by_side_results(histories, tmp_path, monkeypatch, capsys):
    train, test = histories
    monkeypatch.setenv("GONDOLA_MODEL_KEY", "test-only-key")
    model = tmp_path / "model"
    assert gondola(["train", "--data", str(train), "--out", str(model), "--epochs", "2", "--every", "60"]) == 0
    out = capsys.readouterr().out
    assert "validation PR-AUC" in out
    manifest = json.loads((model / "stockout-int8.manifest.json").read_text())
    assert manifest["signature"]["alg"] == "hmac-sha256" and manifest["training"]["tables"]

    results = tmp_path / "eval.json"
    assert gondola(["eval", "--model", str(model), "--train-data", str(train), "--test-data", str(test),
                    "--every", "60", "--json", str(results)]) == 0
    table = capsys.readouterr().out
    for name in ("baseline-poisson", "oracle-truth", "model-float-onnx", "model-float-tflite", "model-int8-tflite"):
        assert name in table
    report = json.loads(results.read_text())
    assert set(report["per_test_set"]) == {test.name}
    res = report["per_test_set"][test.name]
    int8, oracle = res["model-int8-tflite"], res["oracle-truth"]
    assert int8["rows"] > int8["rows_ahead"] > 0 and int8["positives_ahead"] > 0
    for key in report["record_keys"]:
        assert key in int8
    # The oracle reads the truth: it is the ceiling, and every figure is shown as a share of it.
    assert oracle["pr_auc_ahead"] == int8["oracle_pr_auc_ahead"] and oracle["fraction_of_oracle"] == 1.0
    assert int8["fraction_of_oracle"] == pytest.approx(int8["pr_auc_ahead"] / oracle["pr_auc_ahead"])
    # Thresholds come from the package's manifest, one per alert kind, picked on validation rows.
    assert set(manifest["thresholds"]) == {"empty_now", "empty_within_h"}
    # The gateway's alert budget travels in the manifest, and the replay raised under it.
    assert manifest["alert_budget"] == {"forecasts_per_store_day": 12.0, "window_days": 7.0}
    assert int8["alert_budget"] == manifest["alert_budget"] and 0.0 <= int8["forecast_threshold_raised_share"] <= 1.0
    onnx = dict(report["thresholds"]["model-float-onnx"])
    at_recall = onnx.pop("recall_0.75")  # picked on validation rows for recall 0.75 over all rows
    assert onnx == json.loads((model / "stockout.manifest.json").read_text())["thresholds"]
    assert 0.0 < at_recall < 1.0 and res["model-float-onnx"]["recall_at_validation_recall_0.75_threshold"] > 0.0
    seeds = report["seeds"][test.name]["model-int8-tflite"]["pr_auc_ahead"]
    assert seeds["values"] == [int8["pr_auc_ahead"]] and seeds["min"] == seeds["mean"]
    assert report["goals"][test.name]["int8_minus_float_pr_auc_ahead"]["value"] is not None


def test_eval_with_a_missing_model_folder_fails_with_a_clear_error(histories, tmp_path, capsys):
    train, test = histories
    rc = gondola(["eval", "--model", str(tmp_path / "nope"), "--train-data", str(train), "--test-data", str(test),
                  "--every", "120", "--json", str(tmp_path / "e.json")])
    assert rc == 1
    assert "manifest" in capsys.readouterr().err


def test_eval_on_a_held_out_history_shorter_than_the_warm_up_says_so(histories, tmp_path, capsys):
    # It failed with "IndexError: index 0 is out of bounds" (no feature rows to label).
    from firmware_sim.history import generate

    train, _ = histories
    short = generate(tmp_path / "short", stores=1, skus=30, days=2, seed=3).out_dir
    artifacts = Path(__file__).resolve().parents[2] / "models" / "artifacts"
    rc = gondola(["eval", "--model", str(artifacts), "--train-data", str(train), "--test-data", str(short),
                  "--every", "120", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert rc == 1 and "no feature rows" in err and "3-day warm-up" in err and "IndexError" not in err
    assert not (tmp_path / "e.json").exists()


def test_train_from_the_lake_gold_features_records_the_table_version(tmp_path, capsys):
    import pyarrow as pa
    from deltalake import write_deltalake

    from cloud.lake.features import feature_vectors
    from models._synthetic import synthetic_store
    from models.dataset import build_rows

    rows = []
    for i in range(2):
        data = build_rows([synthetic_store(f"s{i}", facings=15, days=6, seed=20 + i)], 2.0, every_min=60,
                          warmup_days=1)
        rows.append(pa.table({
            "store_id": data.rows.store.astype(str), "facing_id": data.rows.facing.astype(str),
            "hour_ms": data.rows.t, "features": feature_vectors(data.rows.X),
            "label": data.y.astype("int32"), "horizon_h": [2.0] * len(data)}))
    lake = tmp_path / "lake"
    write_deltalake(str(lake / "gold" / "features"), pa.concat_tables(rows))
    write_deltalake(str(lake / "gold" / "features"), pa.concat_tables(rows), mode="overwrite")
    model = tmp_path / "model"
    assert gondola(["train", "--gold", str(lake), "--out", str(model), "--epochs", "2"]) == 0
    manifest = json.loads((model / "stockout-int8.manifest.json").read_text())
    assert manifest["training"]["tables"] == {"gold.features": 1}
    # Rows of facings without a sensor (labels nobody observed) are left out unless asked for.
    total = sum(t.num_rows for t in rows)
    used = manifest["training"]["train_rows"] + manifest["training"]["val_rows"]
    assert 0 < used < total
    assert gondola(["train", "--gold", str(lake), "--out", str(model), "--epochs", "1", "--all-labels"]) == 0
    manifest = json.loads((model / "stockout-int8.manifest.json").read_text())
    assert manifest["training"]["train_rows"] + manifest["training"]["val_rows"] == total
    assert gondola(["train", "--gold", str(tmp_path / "no-lake"), "--out", str(model)]) == 1
    assert "gold.features" in capsys.readouterr().err

"""``gondola retrain`` end to end on a lake on disk: pinned gold.features, observed labels,
held-out stores, three seeds, the gate's decision recorded pass or fail (real TensorFlow
training, LiteRT scoring, Delta registry; tiny synthetic stores and 2 epochs to stay fast)."""

from __future__ import annotations

import json

import pytest

from gondola.cli import main as gondola
from models.registry import DeltaModelRegistry
from models.retrain import RetrainConfig, holdout_stores, retrain
from tests.gold_lake import gold_features, write_gold
from tests.model_packages import KEY

STORES = [f"s{i:03d}" for i in range(5)]
SMALL = dict(facings=12, days=4)   # ~5 positive held-out labels: too few for a verdict
LARGER = dict(facings=30, days=6)  # ~25: enough

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tables():
    held = holdout_stores(STORES, 0.25)
    good = gold_features(STORES, **SMALL)
    # The label feed of every training store is broken (labels shuffled within each store);
    # the held-out stores keep their true labels, so the gate judges on the truth.
    bad = gold_features(STORES, shuffle=tuple(s for s in STORES if s not in held), **LARGER)
    return good, bad


def test_a_model_trained_on_shuffled_labels_is_stopped_by_the_gate_and_the_refusal_is_recorded(tmp_path, tables):
    _, bad = tables
    version = write_gold(tmp_path / "lake", bad)
    reg = DeltaModelRegistry(tmp_path / "lake")
    record = retrain(tmp_path / "lake", reg, RetrainConfig(epochs=2), key=KEY)
    assert record["decision"] == "fail"
    assert "registered" not in record and reg.versions() == []
    stored = reg.records("retrain")
    assert len(stored) == 1 and stored[0]["details"]["decision"] == "fail"
    d = stored[0]["details"]
    assert d["training"]["tables"] == {"gold.features": version}
    assert set(d["candidate"]["seeds"]) == {"0", "1", "2"}
    # Shuffled labels learn nothing: every seed ranks held-out rows no better than chance (PR-AUC
    # near the share of positives, 1.6 %; on these stores, seeds trained 3 epochs on the true
    # labels scored 0.18-0.47 and the Poisson baseline 0.59), far below the baseline.
    prevalence = d["training"]["rows"]["holdout_positives"] / d["training"]["rows"]["holdout"]
    assert d["training"]["rows"]["holdout_positives"] >= 20
    assert all(s["pr_auc"] < 3 * prevalence for s in d["candidate"]["seeds"].values()), d["candidate"]
    assert all(s["pr_auc"] < d["baseline"]["pr_auc"] - 0.2 for s in d["candidate"]["seeds"].values())
    assert d["gate"]["vs"]["baseline"]["lower_bound"] < 0 and not d["gate"]["vs"]["production"]["passed"]
    assert d["training"]["rows"]["observed"] < d["training"]["rows"]["total"]


def test_a_pinned_version_reads_the_same_rows_after_new_data_and_a_pass_registers_the_candidate(tmp_path, tables):
    good, bad = tables
    v0 = write_gold(tmp_path / "lake", good)
    write_gold(tmp_path / "lake", bad)  # appended later: the pin must not see it
    reg = DeltaModelRegistry(tmp_path / "lake")
    # A permissive gate (any candidate within 1.0 PR-AUC of the references passes) exercises
    # the registration path; the strict default is what the test above and the CLI use.
    record = retrain(tmp_path / "lake", reg, RetrainConfig(epochs=2, seeds=(0, 1), margin=-1.0,
                                                           min_holdout_positives=1, gold_version=v0), key=KEY)
    assert record["decision"] == "pass" and record["training"]["tables"] == {"gold.features": v0}
    assert record["training"]["rows"]["total"] == good.num_rows
    mv = reg.get(record["registered"])
    assert mv.status == "candidate" and mv.training["tables"] == {"gold.features": v0}
    assert mv.metrics["production_pr_auc"] == record["production"]["pr_auc"]
    assert set(mv.artifacts) == {"int8", "float", "onnx"} and mv.signature["alg"] == "hmac-sha256"
    chosen = record["candidate"]["chosen_seed"]
    # The registered file, converted again from that seed's weights, scores exactly as the
    # gate's (TFLite conversion differs only in layer names between runs).
    assert mv.metrics["holdout_pr_auc"] == record["candidate"]["seeds"][str(chosen)]["pr_auc"]
    assert [r["details"]["decision"] for r in reg.records("retrain")] == ["pass"]


def test_the_command_prints_the_decision_and_records_it(tmp_path, tables, capsys, monkeypatch):
    good, _ = tables
    write_gold(tmp_path / "lake", good)
    monkeypatch.setenv("GONDOLA_MODEL_KEY", KEY.decode())
    assert gondola(["retrain", "--lake", str(tmp_path / "lake"), "--epochs", "1", "--seeds", "2",
                    "--trigger", "schedule", "--min-holdout-positives", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] in ("pass", "fail") and out["trigger"] == "schedule"
    assert len(out["candidate"]["seeds"]) == 2
    assert DeltaModelRegistry(tmp_path / "lake").records("retrain")[0]["details"]["decision"] == out["decision"]
    assert gondola(["retrain", "--lake", str(tmp_path / "nowhere")]) == 1


def test_too_few_held_out_positives_is_a_recorded_fail_without_training(tmp_path, tables):
    good, _ = tables
    write_gold(tmp_path / "lake", good)
    reg = DeltaModelRegistry(tmp_path / "lake")
    record = retrain(tmp_path / "lake", reg, RetrainConfig(epochs=2))
    assert record["decision"] == "fail" and record["candidate"] is None and reg.versions() == []
    assert record["training"]["rows"]["holdout_positives"] < 20 and "needed for a verdict" in record["reasons"][0]
    assert record["production"]["pr_auc"] is not None and record["baseline"]["pr_auc"] is not None
    assert reg.records("retrain")[0]["details"]["decision"] == "fail"

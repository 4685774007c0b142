"""``gondola demo`` ends with one retraining round on the lake it built: the gate's decision and
the figures before and after are in the summary and in the lake's model registry."""

from __future__ import annotations

import re

import pytest

from gondola.demo import DemoConfig, format_summary, run_demo
from models.registry import DeltaModelRegistry

pytestmark = pytest.mark.slow


def test_the_demo_ends_with_a_recorded_retraining_round(tmp_path):
    run = run_demo(DemoConfig(stores=2, skus=80, days=1.5, seed=3, out=tmp_path / "demo", quiet=True,
                              dashboard=False, retrain=True, retrain_epochs=1))
    rt = run.summary["retrain"]
    assert rt["decision"] in ("pass", "fail"), rt
    assert rt["gold_features_version"] >= 0 and 0 < rt["rows"]["observed"] < rt["rows"]["total"]
    assert len(rt["after"]["pr_auc_seeds"]) == 3 and 0 < rt["before"]["pr_auc"] <= 1
    assert len(rt["holdout_stores"]) == 1
    records = DeltaModelRegistry(tmp_path / "demo" / "lake").records("retrain")
    assert [r["details"]["decision"] for r in records] == [rt["decision"]]
    assert records[0]["details"]["trigger"] == "demo"
    assert (rt["after"]["registered"] is not None) == (rt["decision"] == "pass")
    text = format_summary(run.summary)
    assert re.search(rf"retrain decision\s+{rt['decision']}", text) and "held-out PR-AUC before" in text

"""The drift trigger: PSI per feature against the production model's pinned training rows, and
the live confirmed alert precision (Delta tables on disk, the registry; no training)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from gondola.cli import main as gondola
from gondola.clock import DAY_MS
from models.drift import drift_check, psi
from models.registry import DeltaModelRegistry, register_package
from tests.gold_lake import gold_features, write_gold
from tests.model_packages import package_dir

STORES = ["s001", "s002", "s003"]
T0 = 1_764_547_200_000
SMALL = dict(facings=12, days=4)


def test_psi_is_near_zero_for_the_same_population_and_large_for_a_shifted_one():
    rng = np.random.default_rng(0)
    ref = rng.gamma(2.0, 1.0, 5000)
    assert psi(ref, rng.gamma(2.0, 1.0, 5000)) < 0.02
    assert psi(ref, rng.gamma(2.0, 3.0, 5000)) > 0.5
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0)  # constant: one bin
    assert psi(ref, np.array([])) is None


def _lake_with_production(tmp_path):
    lake = tmp_path / "lake"
    v0 = write_gold(lake, gold_features(STORES, **SMALL))
    reg = DeltaModelRegistry(lake)
    register_package(reg, package_dir(tmp_path / "pkg", "v1"), lake / "models" / "artifacts", metrics={},
                     training={"tables": {"gold.features": v0}})
    reg.set_status("v1", "production", "test")
    return lake, reg


def test_the_same_population_a_week_later_does_not_trigger_but_tripled_demand_does(tmp_path):
    lake, reg = _lake_with_production(tmp_path)
    write_gold(lake, gold_features(STORES, start_ms=T0 + 7 * DAY_MS, **SMALL))
    calm = drift_check(str(lake), reg)
    assert not calm["drifted"] and calm["max_psi"] < 0.05, calm
    assert calm["reference"]["gold.features"] == 0 and calm["rows"]["new"] == calm["rows"]["reference"]
    assert "hour_sin" not in calm["psi"]  # calendar features are not drift
    write_gold(lake, gold_features(STORES, start_ms=T0 + 14 * DAY_MS, demand=3.0, **SMALL))
    moved = drift_check(str(lake), reg)
    assert moved["drifted"] and moved["psi"]["rate_24h"] > 0.2 and "rate_24h" in moved["reasons"][0]
    # Sampled down to 500 rows a side (a fleet's gold is sampled the same way): same verdict.
    assert drift_check(str(lake), reg, max_rows=500)["drifted"]
    assert moved["rows"]["new"] == 2 * calm["rows"]["new"]  # the rows after the reference's last instant only


def test_a_fall_of_the_production_models_confirmed_precision_triggers(tmp_path):
    lake, reg = _lake_with_production(tmp_path)
    last_day = T0 + 3 * DAY_MS
    rows = [{"store_id": "s001", "day_ms": last_day - d * DAY_MS, "scorer": "model:v1", "alerts": 10,
             "true_alerts": 4 if d < 7 else 8} for d in range(14)]
    write_deltalake(str(lake / "gold" / "model_performance"), pa.Table.from_pylist(rows))
    report = drift_check(str(lake), reg)
    assert report["precision"]["recent"]["precision"] == pytest.approx(0.4)
    assert report["precision"]["before"]["precision"] == pytest.approx(0.8)
    assert report["drifted"] and "fell from 0.80 to 0.40" in report["reasons"][-1]


def test_retrain_if_drift_skips_without_drift_and_records_the_check(tmp_path, capsys):
    lake, reg = _lake_with_production(tmp_path)
    write_gold(lake, gold_features(STORES, start_ms=T0 + 7 * DAY_MS, **SMALL))
    assert gondola(["retrain", "--lake", str(lake), "--if-drift"]) == 0
    assert "skipped (no drift)" in capsys.readouterr().out
    checks = reg.records("drift")
    assert len(checks) == 1 and checks[0]["details"]["drifted"] is False
    assert reg.records("retrain") == []

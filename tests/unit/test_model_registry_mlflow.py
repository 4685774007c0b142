"""The registry on MLflow (mlflow-skinny's client on a local file store): the same behaviour as
the Delta registry, and MLflow's own view (model versions, tags, aliases) kept in step."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from gondola.clock import SimClock  # noqa: E402
from gondola.errors import ConfigError  # noqa: E402
from models.registry import DeltaModelRegistry, open_registry, register_package  # noqa: E402
from models.registry_mlflow import MlflowModelRegistry  # noqa: E402
from tests.model_packages import package_dir  # noqa: E402


@pytest.fixture
def mlflow_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store stands in for a server
    return MlflowModelRegistry((tmp_path / "mlruns").as_uri(), clock=SimClock(1_000))


def test_versions_statuses_history_and_decisions_behave_as_in_the_delta_registry(tmp_path, mlflow_registry):
    reg = mlflow_registry
    for v in ("v1", "v2"):
        register_package(reg, package_dir(tmp_path / v, v), tmp_path / "art", metrics={"pr_auc": 0.9},
                         training={"tables": {"gold.features": 3}})
    reg.set_status("v1", "production", "bootstrap")
    reg.set_status("v2", "canary", "rollout", ring="canary")
    reg.set_status("v2", "production", "canary held")
    assert [(v.version, v.status) for v in reg.versions()] == [("v2", "production"), ("v1", "retired")]
    assert reg.get("v1").history[-1]["reason"] == "replaced by v2"
    assert reg.get("v2").training == {"tables": {"gold.features": 3}} and len(reg.get("v2").artifacts["int8"]["sha256"]) == 64
    with pytest.raises(ConfigError, match="is production; it cannot become canary"):
        reg.set_status("v2", "canary", "x")
    reg.record("retrain", {"decision": "fail"})
    won, first = reg.claim("rollout", {"version": "a"})
    lost, winner = reg.claim("rollout", {"version": "b"})
    assert won and not lost and winner["details"]["version"] == "a"
    assert [r["details"]["decision"] for r in reg.records("retrain")] == ["fail"]


def test_mlflow_model_versions_carry_the_status_as_tags_and_aliases(tmp_path, mlflow_registry):
    reg = mlflow_registry
    for v in ("v1", "v2"):
        register_package(reg, package_dir(tmp_path / v, v), tmp_path / "art", metrics={})
    reg.set_status("v1", "production", "bootstrap")
    reg.set_status("v2", "canary", "rollout", ring="canary")
    prod = reg.client.get_model_version_by_alias("gondola-stockout", "production")
    assert prod.tags["gondola.version"] == "v1" and prod.tags["gondola.status"] == "production"
    canary = reg.client.get_model_version_by_alias("gondola-stockout", "canary")
    assert canary.tags["gondola.version"] == "v2" and canary.tags["gondola.ring"] == "canary"
    reg.set_status("v2", "production", "held")
    prod = reg.client.get_model_version_by_alias("gondola-stockout", "production")
    assert prod.tags["gondola.version"] == "v2"
    old = [m for m in reg.client.search_model_versions("name = 'gondola-stockout'") if m.tags["gondola.version"] == "v1"]
    assert old[0].tags["gondola.status"] == "retired" and "production" not in (old[0].aliases or [])


def test_the_registry_is_chosen_by_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert isinstance(open_registry(tmp_path / "lake", env={}), DeltaModelRegistry)
    chosen = open_registry(tmp_path / "lake", env={"GONDOLA_MLFLOW_TRACKING_URI": (tmp_path / "m").as_uri()})
    assert isinstance(chosen, MlflowModelRegistry)

"""The model registry on a Delta table on disk: versions, status moves, decision records."""

from __future__ import annotations

import pytest

from gondola.clock import SimClock
from gondola.errors import ConfigError, ModelError
from models.registry import DeltaModelRegistry, code_version, register_package
from tests.model_packages import KEY, package_dir


def _registry(tmp_path):
    return DeltaModelRegistry(tmp_path / "lake", clock=SimClock(1_000))


def test_a_registered_package_keeps_its_artifacts_hashes_signature_metrics_and_lineage(tmp_path):
    reg = _registry(tmp_path)
    mv = register_package(reg, package_dir(tmp_path / "pkg", "v1"), tmp_path / "lake" / "models" / "artifacts",
                          metrics={"pr_auc": 0.9}, training={"tables": {"gold.features": 3}})
    assert mv.status == "candidate" and mv.metrics == {"pr_auc": 0.9}
    assert mv.training == {"tables": {"gold.features": 3}}
    assert mv.signature == {"alg": "hmac-sha256", "key_id": "default"}
    assert set(mv.artifacts) == {"int8"} and len(mv.artifacts["int8"]["sha256"]) == 64
    assert (tmp_path / "lake" / "models" / "artifacts" / "v1" / "stockout-int8.manifest.json").is_file()
    assert mv.code_version == code_version() != "unknown"
    # A second process sees the same state: it is all in the Delta table.
    assert DeltaModelRegistry(tmp_path / "lake").get("v1").artifacts == mv.artifacts
    with pytest.raises(ConfigError, match="already registered"):
        register_package(reg, package_dir(tmp_path / "pkg2", "v1"), tmp_path / "art", metrics={})


def test_promoting_a_version_retires_the_previous_production_and_history_says_why(tmp_path):
    reg = _registry(tmp_path)
    for v in ("v1", "v2"):
        register_package(reg, package_dir(tmp_path / v, v), tmp_path / "art", metrics={})
    reg.set_status("v1", "production", "bootstrap")
    reg.set_status("v2", "canary", "rollout", ring="canary")
    reg.set_status("v2", "production", "canary held")
    assert [(v.version, v.status) for v in reg.versions()] == [("v2", "production"), ("v1", "retired")]
    assert reg.get("v1").history[-1]["reason"] == "replaced by v2"
    assert [h["status"] for h in reg.get("v2").history] == ["candidate", "canary", "production"]
    assert reg.production().version == "v2"


def test_unknown_versions_statuses_and_forbidden_moves_are_one_line_errors(tmp_path):
    reg = _registry(tmp_path)
    register_package(reg, package_dir(tmp_path / "v1", "v1"), tmp_path / "art", metrics={})
    with pytest.raises(ConfigError, match="no model version 'v9'"):
        reg.set_status("v9", "retired", "x")
    with pytest.raises(ConfigError, match="unknown status"):
        reg.set_status("v1", "shipped", "x")
    reg.set_status("v1", "production", "x")
    with pytest.raises(ConfigError, match="is production; it cannot become canary"):
        reg.set_status("v1", "canary", "x")


def test_a_package_whose_file_does_not_match_its_manifest_is_not_registered(tmp_path):
    reg = _registry(tmp_path)
    pkg = package_dir(tmp_path / "v1", "v1", key=KEY)
    (pkg / "stockout-int8.tflite").write_bytes(b"not the model")
    with pytest.raises(ModelError, match="sha256"):
        register_package(reg, pkg, tmp_path / "art", metrics={})
    assert reg.versions() == []


def test_decision_records_and_claims_come_back_in_commit_order(tmp_path):
    reg = _registry(tmp_path)
    reg.record("retrain", {"passed": False, "margin": 0.01})
    reg.record("retrain", {"passed": True})
    assert [r["details"]["passed"] for r in reg.records("retrain")] == [False, True]
    won, first = reg.claim("rollout", {"version": "a"})
    lost, winner = reg.claim("rollout", {"version": "b"})
    assert won and not lost and winner["details"]["version"] == "a"
    reg.release("rollout", first["details"]["claim_id"], "done")
    assert reg.open_claim("rollout")["details"]["version"] == "b"


def test_a_version_registered_on_a_remote_lake_can_be_published_from_any_machine(tmp_path):
    from models.package import file_sha256, manifest_path_for, read_manifest
    from models.registry import artifact_file

    reg = _registry(tmp_path)
    mv = register_package(reg, package_dir(tmp_path / "pkg", "v1"), "abfss://lake@acct.dfs.core.windows.net/g/models",
                          metrics={})
    assert mv.artifacts["int8"]["path"] is None and not (tmp_path / "abfss:").exists()
    path = artifact_file(DeltaModelRegistry(tmp_path / "lake").get("v1"), cache_dir=tmp_path / "cache")
    assert file_sha256(path) == mv.artifacts["int8"]["sha256"] == file_sha256(tmp_path / "pkg" / "stockout-int8.tflite")
    assert read_manifest(manifest_path_for(path))["version"] == "v1"  # signed manifest beside it, as published
    assert "signature" in read_manifest(manifest_path_for(path))

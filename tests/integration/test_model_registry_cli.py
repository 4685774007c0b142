"""``gondola models`` on a real fleet: the registry (Delta on disk), the embedded hub's twins and
gateways that follow them (the fleet of ``test_model_rollout_rings``)."""

from __future__ import annotations

import json

import pytest

from gondola.cli import main as gondola
from tests.integration.test_model_rollout_rings import RINGS, Fleet
from tests.model_packages import KEY


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("GONDOLA_MODEL_KEY", KEY.decode())
    f = Fleet(tmp_path)
    yield f
    f.close()


def _models(fleet, *argv):
    return gondola(["models", "--lake", str(fleet.lake), "--hub", str(fleet.tmp / "hub.sqlite"),
                    "--model-store", str(fleet.tmp / "store"), *argv])


def test_list_and_show_give_status_lineage_artifacts_and_the_gateways_running_each_version(fleet, capsys):
    fleet.register("v2")
    assert _models(fleet, "--json", "list") == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)["versions"]}
    assert rows["v1"]["status"] == "production" and rows["v1"]["gateways"] == [f"gw-{s}" for s in RINGS]
    assert rows["v2"]["status"] == "candidate" and rows["v2"]["gateways"] == []
    assert _models(fleet, "show", "v1") == 0
    text = capsys.readouterr().out
    assert "model v1: production" in text and "sha256 " + fleet.registry.get("v1").artifacts["int8"]["sha256"] in text
    assert "hmac-sha256" in text and "gw-s004" in text and "bootstrap" in text
    assert _models(fleet, "show", "v9") == 1
    assert "no model version 'v9'" in capsys.readouterr().err


def test_rollout_step_status_and_abort_from_the_command_line(fleet, capsys):
    fleet.register("v2")
    assert _models(fleet, "ring", "canary", "gw-s003") == 0
    assert _models(fleet, "rollout", "v2") == 0
    assert "v2: canary (published to 2 canary gateway(s))" in capsys.readouterr().out
    fleet.poll()
    assert fleet.running() == {"s001": "v2", "s002": "v1", "s003": "v2", "s004": "v1"}
    assert _models(fleet, "--json", "status") == 0
    st = json.loads(capsys.readouterr().out)
    assert st["rollout"]["details"]["version"] == "v2" and st["by_status"]["active"] == 4
    # Wall-clock step with a window far longer than the test: the canary ring keeps waiting.
    assert _models(fleet, "step", "--window-h", "1000000") == 0
    assert "v2: waiting (canary window:" in capsys.readouterr().out
    assert _models(fleet, "rollout", "--abort") == 0
    assert "v2: rolled_back (aborted by hand)" in capsys.readouterr().out
    fleet.poll()
    assert fleet.running() == {s: "v1" for s in RINGS}
    assert fleet.registry.get("v2").status == "retired" and fleet.registry.open_claim("rollout") is None
    assert _models(fleet, "decisions", "--kind", "rollout") == 0
    assert [ln.split()[4] for ln in capsys.readouterr().out.splitlines()] == ["canary", "rolled_back"]


def test_promote_by_hand_asks_every_gateway_and_retire_leaves_a_reason(fleet, capsys):
    fleet.register("v2")
    assert _models(fleet, "promote", "v2", "--reason", "hotfix") == 0
    assert "v2: production; 4 gateway(s) asked to run it" in capsys.readouterr().out
    fleet.poll()
    assert fleet.running() == {s: "v2" for s in RINGS}
    assert fleet.registry.get("v1").status == "retired"
    assert fleet.registry.get("v2").history[-1]["reason"] == "promoted by hand: hotfix"
    fleet.register("v3")
    assert _models(fleet, "retire", "v3", "--reason", "superseded") == 0
    assert fleet.registry.get("v3").history[-1]["reason"] == "retired by hand: superseded"


def test_shadow_compare_and_stop_from_the_command_line(fleet, capsys):
    fleet.register("v2")
    assert _models(fleet, "shadow", "v2") == 0
    assert "v2: scoring in shadow on 1 canary gateway(s)" in capsys.readouterr().out
    fleet.poll()
    assert fleet.gateways["s001"].inference.shadow is not None and fleet.running()["s001"] == "v1"
    assert _models(fleet, "compare", "v2") == 0
    out = capsys.readouterr().out
    assert "v2 in shadow on 1 gateway(s): wait" in out and "production v1" in out
    assert _models(fleet, "shadow", "--stop") == 0
    assert "shadow stopped on 1 gateway(s)" in capsys.readouterr().out
    assert _models(fleet, "compare", "v9") == 1

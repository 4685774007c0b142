"""``gondola edge manifest``: the iotedgedev layout renders, per fleet and ring, deployments that
validate against the IoT Edge schemas (SchemaStore, Apache-2.0) and serve every store."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edge.live import LIVE
from edge.manifest import (GATEWAY_MODULE, RINGS, Layout, ManifestInvalid, apply_layer, render, schema_errors,
                           split_create_options, validate)
from edge.wiring import EdgeSettings
from gondola.errors import ConfigError

pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "deployment" / "iot-edge"
SCHEMAS = LAYOUT / "schemas"
ENV = {"CONTAINER_REGISTRY_USERNAME": "pull-token", "CONTAINER_REGISTRY_PASSWORD": "s3cret"}


@pytest.fixture(scope="module")
def layout() -> Layout:
    return Layout.load(LAYOUT)


def _modules(content: dict) -> dict:
    desired = content["modulesContent"]["$edgeAgent"]["properties.desired"]
    return {**desired["systemModules"], **desired["modules"]}


def test_the_vendored_schemas_are_the_shared_copies():
    shared = ROOT.parent / "shared" / "schemas" / "iot-edge"
    if not shared.is_dir():
        shared = Path("/work/shared/schemas/iot-edge")
    if not shared.is_dir():
        pytest.skip("no shared schema folder beside this checkout")
    for path in shared.glob("*.json"):
        assert (SCHEMAS / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_template_is_a_valid_template_but_not_a_deployment(layout):
    assert schema_errors(layout.template, "azure-iot-edge-deployment-template-4.0.json", SCHEMAS) == []
    errors = schema_errors(layout.template, "azure-iot-edge-deployment-2.0.json", SCHEMAS)
    # The negative control: unrendered, it has the errors the issue found.
    assert any("$schema-template" in e for e in errors)
    assert sum("createOptions" in e and "is not of type 'string'" in e for e in errors) == 4


@pytest.mark.parametrize("fleet", ["prod", "staging"])
def test_every_fleet_renders_a_valid_deployment_with_string_create_options(layout, fleet):
    out = render(layout, fleet=fleet, version="1.4.0", env=ENV)
    validate(out, SCHEMAS)
    assert schema_errors(out.content, "azure-iot-edge-deployment-2.0.json", SCHEMAS) == []
    assert "$schema-template" not in out.content
    template_modules = _modules(layout.template)
    for name, module in _modules(out.content).items():
        settings = module["settings"]
        text = "".join(settings[k] for k in sorted(settings) if k.startswith("createOptions"))
        assert json.loads(text) == template_modules[name]["settings"]["createOptions"]
    registry = layout.fleets[fleet]["registry"]
    gateway = out.content["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][GATEWAY_MODULE]
    assert gateway["settings"]["image"] == f"{registry}/gondola-gateway:1.4.0"
    for name, value in layout.fleets[fleet]["env"].items():
        assert gateway["env"][name] == {"value": value}
    assert out.meta == {"id": f"gondola-{fleet}-base-1-4-0", "targetCondition": f"tags.fleet='{fleet}'",
                        "priority": 10, "layered": False}


def test_one_manifest_serves_every_store_identity_comes_from_the_device(layout):
    out = render(layout, fleet="prod", version="1.4.0", env=ENV)
    text = json.dumps(out.content)
    assert "STORE_ID" not in text and "s001" not in text
    env = {"IOTEDGE_DEVICEID": "gw-s042", "IOTEDGE_MODULEID": GATEWAY_MODULE}
    assert EdgeSettings.from_env(env).store_id == "s042"
    assert EdgeSettings.from_env(env | {"GONDOLA_STORE_ID": "s7"}).store_id == "s7"  # explicit wins
    assert EdgeSettings.from_env({"IOTEDGE_DEVICEID": "store-9"}).store_id == "store-9"


def test_edge_agent_and_edge_hub_keep_their_state_on_the_host_and_routes_have_priorities(layout):
    from edge.azure.iothub import DEFAULT_OUTPUT

    out = render(layout, fleet="prod", version="1.4.0", env=ENV)
    system = out.content["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]
    for name in ("edgeAgent", "edgeHub"):
        binds = json.loads(system[name]["settings"]["createOptions"])["HostConfig"]["Binds"]
        host, container = binds[0].split(":")[:2]
        assert host.startswith("/var/lib/gondola/") and container == system[name]["env"]["storageFolder"]["value"]
    hub = out.content["modulesContent"]["$edgeHub"]["properties.desired"]
    routes = hub["routes"]
    assert {r["priority"] for r in routes.values()} == {0, 1}
    assert all(r["timeToLiveSecs"] == hub["storeAndForwardConfiguration"]["timeToLiveSecs"] >= 86_400
               for r in routes.values())
    assert all(f"/outputs/{DEFAULT_OUTPUT} " in r["route"] for r in routes.values())
    live = [r for r in routes.values() if "lane = 'live'" in r["route"]]
    assert len(live) == 1 and live[0]["priority"] == 0  # fresh data before the backlog


def test_ring_layers_carry_the_release_and_live_settings_and_leave_the_model_alone(layout):
    priorities = []
    for ring in RINGS:
        out = render(layout, fleet="prod", ring=ring, version="1.5.0-rc1", env=ENV)
        validate(out, SCHEMAS)  # the base with the layer applied
        content = out.content["modulesContent"]
        assert set(content) == {"$edgeAgent", GATEWAY_MODULE}
        assert list(content["$edgeAgent"]) == [f"properties.desired.modules.{GATEWAY_MODULE}"]
        assert list(content[GATEWAY_MODULE]) == ["properties.desired.settings"]  # never `model`
        settings = content[GATEWAY_MODULE]["properties.desired.settings"]
        assert set(settings) <= set(LIVE)
        image = content["$edgeAgent"][f"properties.desired.modules.{GATEWAY_MODULE}"]["settings"]["image"]
        assert image.endswith("/gondola-gateway:1.5.0-rc1")
        assert out.meta["layered"] is True and out.meta["priority"] > 10
        priorities.append(out.meta["priority"])
    assert priorities == sorted(priorities, reverse=True)  # canary wins over early over all
    canary = render(layout, fleet="prod", ring="canary", version="1.5.0-rc1", env=ENV).meta
    early = render(layout, fleet="prod", ring="early", version="1.5.0-rc1", env=ENV).meta
    assert canary["targetCondition"] == "tags.fleet='prod' AND (tags.ring='canary')"
    assert early["targetCondition"] == "tags.fleet='prod' AND (tags.ring='canary' OR tags.ring='early')"


def test_a_broken_layer_is_caught_by_the_schema(layout):
    out = render(layout, fleet="prod", ring="canary", version="1.5.0", env=ENV)
    bad = copy.deepcopy(out)
    module = bad.content["modulesContent"]["$edgeAgent"][f"properties.desired.modules.{GATEWAY_MODULE}"]
    module["restartPolicy"] = "sometimes"
    with pytest.raises(ManifestInvalid, match="restartPolicy"):
        validate(bad, SCHEMAS)
    merged = apply_layer(out.base, out.content)
    assert merged["modulesContent"][GATEWAY_MODULE]["properties.desired"]["settings"]["log_level"] == "debug"


def test_long_create_options_split_at_512_characters():
    opts = {"HostConfig": {"Binds": [f"/var/lib/gondola/{i:04d}:/data/{i:04d}" for i in range(40)]}}
    settings = split_create_options({"image": "x", "createOptions": opts})
    keys = sorted(k for k in settings if k.startswith("createOptions"))
    assert keys[0] == "createOptions" and keys[1] == "createOptions01" and len(keys) >= 3
    assert all(len(settings[k]) <= 512 for k in keys)
    assert json.loads("".join(settings[k] for k in keys)) == opts


def test_unknown_fleet_ring_missing_credentials_and_bad_versions_are_one_line_errors(layout):
    with pytest.raises(ConfigError, match="unknown fleet 'nope'"):
        render(layout, fleet="nope", version="1", env=ENV)
    with pytest.raises(ConfigError, match="unknown ring 'early' for fleet staging"):
        render(layout, fleet="staging", ring="early", version="1", env=ENV)
    with pytest.raises(ConfigError, match="CONTAINER_REGISTRY_PASSWORD, CONTAINER_REGISTRY_USERNAME"):
        render(layout, fleet="prod", version="1", env={})
    with pytest.raises(ConfigError, match="not a valid image tag"):
        render(layout, fleet="prod", version="1.0 ; rm", env=ENV)


def test_every_module_has_a_module_json_for_both_architectures(layout):
    images = {m["settings"]["image"] for m in layout.template["modulesContent"]["$edgeAgent"]
              ["properties.desired"]["modules"].values()}
    assert images == {f"${{MODULES.{folder}}}" for folder in layout.modules}
    for folder, spec in layout.modules.items():
        platforms = spec["image"]["tag"]["platforms"]
        assert set(platforms) == {"amd64", "arm64v8"}
        assert all((LAYOUT / "modules" / folder / p).resolve().is_file() for p in platforms.values())
        assert (LAYOUT / "modules" / folder / spec["image"]["contextPath"]).resolve() == ROOT


def test_the_command_writes_the_manifest_and_its_meta_or_nothing(tmp_path, monkeypatch, capsys):
    from gondola.cli import main

    out = tmp_path / "deploy" / "prod.json"
    monkeypatch.delenv("CONTAINER_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("CONTAINER_REGISTRY_PASSWORD", raising=False)
    assert main(["edge", "manifest", "--fleet", "prod", "--version", "1.4.0", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CONTAINER_REGISTRY_PASSWORD" in err
    assert not (tmp_path / "deploy").exists()
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    assert main(["edge", "manifest", "--fleet", "prod", "--ring", "canary", "--version", "1.5.0",
                 "--out", str(out)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta == json.loads((tmp_path / "deploy" / "prod.meta.json").read_text())
    assert meta["layered"] is True and out.stat().st_mode & 0o077 == 0
    assert GATEWAY_MODULE in json.loads(out.read_text())["modulesContent"]

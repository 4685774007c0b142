"""``IotHubTwinRegistry`` at the HTTP boundary.

The real ``azure-iot-hub`` registry manager (msrest serialization, SAS signing, URL building,
error mapping) talks to an in-memory IoT Hub twin REST API (``tests/azure_fakes.py``) through
the ``requests`` adapter it sends with.
"""

from __future__ import annotations

import json

import pytest
import requests

from cloud.azure.twins import IotHubTwinRegistry
from gondola.errors import ConfigError, TransportAuthError, TransportError
from tests.azure_fakes import FakeIotHubRest

# Obviously fake service policy key.
CONN = "HostName=fake-hub.azure-devices.example.invalid;SharedAccessKeyName=registryReadWrite;SharedAccessKey=ZmFrZS1rZXk="
MODEL = {
    "version": "2026-11-29T10-40-00Z-3f2a9c1b",
    "url": "https://models.example.invalid/stockout-int8.tflite",
    "sha256": "3f" * 32,
    "signature": {"alg": "ed25519", "key_id": "rollout-1", "value": "00" * 64},
}


@pytest.fixture
def hub(monkeypatch):
    fake = FakeIotHubRest()
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", lambda adapter, request, **kw: fake.send(adapter, request, **kw))
    return fake


@pytest.fixture
def registry(hub):
    with IotHubTwinRegistry.from_connection_string(CONN) as reg:
        yield reg


def test_azure_twins_set_desired_writes_the_model_and_returns_the_new_version(hub, registry):
    hub.add_module("gw-s001", "gondola-gateway", desired={"model": {"version": "old"}, "log_level": "info"})

    version = registry.set_desired("gw-s001", "gondola-gateway", {"model": MODEL})

    assert version == 2
    patch = hub.requests[-1]
    assert patch.method == "PATCH"
    assert patch.url.startswith("https://fake-hub.azure-devices.example.invalid/twins/gw-s001/modules/gondola-gateway?api-version=")
    assert patch.headers["If-Match"] == '"AAAAAAAAAA1="'
    assert patch.headers["Authorization"].startswith("SharedAccessSignature sr=fake-hub.azure-devices.example.invalid")
    # Replace semantics: keys no longer desired are nulled, the model object is sent whole.
    assert json.loads(patch.body) == {"properties": {"desired": {"model": MODEL, "log_level": None}}}
    assert registry.get_twin("gw-s001", "gondola-gateway")["desired"] == {"model": MODEL, "$version": 2}


def test_azure_twins_get_twin_returns_desired_and_reported_without_metadata(hub, registry):
    hub.add_module("gw-s002", "gondola-gateway", desired={"model": MODEL},
                   reported={"model": {"version": MODEL["version"], "status": "active"}})
    twin = registry.get_twin("gw-s002", "gondola-gateway")
    assert twin == {
        "desired": {"model": MODEL, "$version": 1},
        "reported": {"model": {"version": MODEL["version"], "status": "active"}, "$version": 1},
    }


def test_azure_twins_concurrent_writer_is_detected_by_etag_and_the_write_retried(hub, registry):
    hub.add_module("gw-s003", "gondola-gateway")
    hub.conflicts = 1
    assert registry.set_desired("gw-s003", "gondola-gateway", {"model": MODEL}) == 2
    patches = [r for r in hub.requests if r.method == "PATCH"]
    assert [p.headers["If-Match"] for p in patches] == ['"AAAAAAAAAA1="', '"AAAAAAAAAA2="']


def test_azure_twins_gives_up_when_the_twin_keeps_changing(hub, registry):
    hub.add_module("gw-s003", "gondola-gateway")
    hub.conflicts = 10
    with pytest.raises(TransportError, match="kept changing"):
        registry.set_desired("gw-s003", "gondola-gateway", {"model": MODEL})


def test_azure_twins_modules_lists_a_ring_across_pages(hub, registry):
    for i in range(5):
        hub.add_module(f"gw-s00{i}", "gondola-gateway", tags={"ring": "canary" if i % 2 == 0 else "all"})
    hub.add_module("gw-s000", "other-module", tags={"ring": "canary"})

    assert registry.modules("gondola-gateway", page_size=2) == [f"gw-s00{i}" for i in range(5)]
    assert registry.modules("gondola-gateway", condition="tags.ring = 'canary'", page_size=2) == [
        "gw-s000", "gw-s002", "gw-s004"]
    queries = [json.loads(r.body)["query"] for r in hub.requests if r.url.split("?")[0].endswith("/devices/query")]
    assert queries[-1] == "SELECT * FROM devices.modules WHERE moduleId = 'gondola-gateway' AND tags.ring = 'canary'"
    with pytest.raises(ConfigError):
        registry.modules("x' OR '1' = '1")


@pytest.mark.parametrize(
    "status, error",
    [(401, TransportAuthError), (403, TransportAuthError), (404, ConfigError), (429, TransportError), (503, TransportError)],
)
def test_azure_twins_http_failures_are_translated(hub, registry, status, error):
    hub.add_module("gw-s001", "gondola-gateway")
    hub.fail_next = [status] * 5
    with pytest.raises(error):
        registry.get_twin("gw-s001", "gondola-gateway")


def test_azure_twins_unknown_module_is_a_config_error(hub, registry):
    with pytest.raises(ConfigError):
        registry.set_desired("gw-nope", "gondola-gateway", {"model": MODEL})


def test_azure_twins_settings_are_required():
    with pytest.raises(ConfigError):
        IotHubTwinRegistry.from_env({})
    with pytest.raises(ConfigError):
        IotHubTwinRegistry.from_connection_string("HostName=only-a-host")


def test_azure_twins_token_credential_signs_requests_with_a_bearer_token(hub):
    class FakeCredential:
        def get_token(self, *scopes, **kwargs):
            from azure.core.credentials import AccessToken

            return AccessToken("fake-entra-token", 4_102_444_800)

    hub.add_module("gw-s001", "gondola-gateway", desired={"model": MODEL})
    with IotHubTwinRegistry.from_token_credential("fake-hub.azure-devices.example.invalid", FakeCredential()) as reg:
        assert reg.get_twin("gw-s001", "gondola-gateway")["desired"]["model"] == MODEL
    assert hub.requests[-1].headers["Authorization"] == "Bearer fake-entra-token"


def test_azure_twins_registry_has_the_embedded_hubs_twin_methods():
    import inspect

    from gondola.hub import LocalHub

    for name in ("set_desired", "get_twin", "set_tags", "get_tags", "set_device_tags", "get_device_tags"):
        ours = list(inspect.signature(getattr(IotHubTwinRegistry, name)).parameters)
        local = list(inspect.signature(getattr(LocalHub, name)).parameters)
        assert ours == local, name


def test_azure_twins_unreachable_hub_is_a_transport_error(hub, registry):
    hub.add_module("gw-s001", "gondola-gateway")
    hub.fail_next = [requests.ConnectionError("connection refused")]
    with pytest.raises(TransportError, match="unreachable"):
        registry.get_twin("gw-s001", "gondola-gateway")
    assert registry.get_twin("gw-s001", "gondola-gateway")["desired"] == {"$version": 1}


def test_azure_twins_rings_are_tags_set_by_a_twin_patch_and_queried_by_tag(hub, registry):
    for i in range(3):
        hub.add_module(f"gw-s00{i}", "gondola-gateway", desired={"model": MODEL})

    registry.set_tags("gw-s001", "gondola-gateway", {"ring": "canary"})
    registry.set_tags("gw-s002", "gondola-gateway", {"ring": "early"})

    patch = hub.requests[-1]
    assert patch.method == "PATCH" and json.loads(patch.body) == {"tags": {"ring": "early"}}
    assert patch.headers["If-Match"].startswith('"AAAAAAAAAA')
    assert registry.get_tags("gw-s001", "gondola-gateway") == {"ring": "canary"}
    # Desired properties are untouched by a tags patch.
    assert registry.get_twin("gw-s001", "gondola-gateway")["desired"]["model"] == MODEL
    assert registry.modules("gondola-gateway", tags={"ring": "canary"}) == ["gw-s001"]
    query = json.loads(hub.requests[-1].body)["query"]
    assert query == "SELECT * FROM devices.modules WHERE moduleId = 'gondola-gateway' AND tags.ring = 'canary'"
    assert registry.modules("gondola-gateway") == ["gw-s000", "gw-s001", "gw-s002"]
    with pytest.raises(ConfigError):
        registry.modules("gondola-gateway", tags={"ring": "x' OR '1' = '1"})
    with pytest.raises(ConfigError):
        registry.modules("gondola-gateway", tags={"ring = 'a' OR tags.x": "a"})


def test_azure_twins_device_tags_are_a_patch_of_the_device_twin_not_the_module(hub, registry):
    hub.add_module("gw-s001", "gondola-gateway", desired={"model": MODEL}, tags={"ring": "early"})

    registry.set_device_tags("gw-s001", {"ring": "canary", "fleet": "prod"})
    registry.set_device_tags("gw-s001", {"fleet": None})

    patch = hub.requests[-1]
    assert patch.method == "PATCH"
    assert patch.url.startswith("https://fake-hub.azure-devices.example.invalid/twins/gw-s001?api-version=")
    assert json.loads(patch.body) == {"tags": {"fleet": None}}
    assert patch.headers["If-Match"] == '"AAAAAAAAAA2="'
    assert registry.get_device_tags("gw-s001") == {"ring": "canary"}
    # The module twin keeps its own tags.
    assert registry.get_tags("gw-s001", "gondola-gateway") == {"ring": "early"}
    with pytest.raises(ConfigError):
        registry.get_device_tags("gw-nope")


def test_azure_twins_tag_ring_moves_the_device_and_the_module_twin_together(hub, registry):
    from cloud.rollout import ring_devices, tag_ring

    for i in range(3):
        hub.add_module(f"gw-s00{i}", "gondola-gateway")
    assert tag_ring(registry, ["gw-s001"], "canary") == ["gw-s001"]

    # Model rollouts read the module twin, layered deployments (edge.manifest) the device twin.
    assert ring_devices(registry, "canary") == ["gw-s001"]
    assert registry.get_device_tags("gw-s001") == {"ring": "canary"}
    assert registry.get_device_tags("gw-s000") == {}

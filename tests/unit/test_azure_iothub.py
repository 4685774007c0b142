"""``IotHubTransport`` at the SDK boundary: message mapping and exception translation.

The fake client has the SDK client's method names and raises the SDK's own exception classes;
the real SDK against Mosquitto is in ``tests/integration/test_azure_iothub_mosquitto.py``.
"""

from __future__ import annotations

import pytest
from azure.iot.device import Message
from azure.iot.device import exceptions as sdk

from edge.azure.iothub import IotHubTransport, to_sdk_message
from gondola.contracts import encode_batch, make_event
from gondola.errors import ConfigError, ContractError, TransportAuthError, TransportError


class FakeModuleClient:
    """Records calls like ``IoTHubModuleClient``; raises ``fail`` from every operation if set."""

    def __init__(self, fail: BaseException | None = None):
        self.fail = fail
        self.sent: list[tuple[Message, str | None]] = []
        self.reported: list[dict] = []
        self.on_twin_desired_properties_patch_received = None
        self.shut_down = False

    def _maybe_fail(self):
        if self.fail is not None:
            raise self.fail

    def send_message(self, message):
        self._maybe_fail()
        self.sent.append((message, None))

    def send_message_to_output(self, message, output_name):
        self._maybe_fail()
        self.sent.append((message, output_name))

    def get_twin(self):
        self._maybe_fail()
        return {"desired": {"model_version": "m1", "$version": 3}, "reported": {"$version": 2}}

    def patch_twin_reported_properties(self, patch):
        self._maybe_fail()
        self.reported.append(patch)

    def shutdown(self):
        self.shut_down = True


def _batch():
    event = make_event(
        "shelf.reading",
        store_id="s002",
        device_id="shelf-s002-a1",
        seq=7,
        ts=1_764_410_400_000,
        data={"facing_id": "a1-03", "sku": "sku-1", "weight_g": 812.5, "units_est": 6, "battery_pct": 88, "rssi_dbm": -61},
    )
    return encode_batch([event], store_id="s002", encoding="deflate")


def test_azure_iothub_message_carries_body_system_and_application_properties():
    batch = _batch()
    msg = to_sdk_message(batch)
    assert msg.data == batch.body
    assert msg.content_type == "application/x-ndjson"
    assert msg.content_encoding == "deflate"
    assert msg.message_id == "shelf-s002-a1:7"
    assert msg.custom_properties == batch.properties
    assert msg.custom_properties["first_seq"] == "7"


def test_azure_iothub_sends_to_the_edgehub_output_or_straight_to_the_hub():
    routed, direct = FakeModuleClient(), FakeModuleClient()
    IotHubTransport(routed, output_name="uplink").send(_batch())
    IotHubTransport(direct, output_name=None).send(_batch())
    assert [name for _, name in routed.sent] == ["uplink"]
    assert [name for _, name in direct.sent] == [None]


@pytest.mark.parametrize(
    "sdk_exc",
    [
        sdk.ConnectionFailedError("refused"),
        sdk.ConnectionDroppedError("dropped"),
        sdk.NoConnectionError("not connected"),
        sdk.OperationTimeout("slow"),
        sdk.OperationCancelled("cancelled"),
        sdk.ClientError("tls"),
        sdk.ServiceError("twin patch 429"),
        RuntimeError("anything else"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_azure_iothub_sdk_failures_become_retryable_transport_errors(sdk_exc):
    transport = IotHubTransport(FakeModuleClient(fail=sdk_exc))
    for call in (lambda: transport.send(_batch()), transport.get_twin, lambda: transport.patch_reported({"a": 1})):
        with pytest.raises(TransportError) as info:
            call()
        assert not isinstance(info.value, TransportAuthError)
        assert info.value.__cause__ is sdk_exc


def test_azure_iothub_refused_credentials_become_transport_auth_error():
    transport = IotHubTransport(FakeModuleClient(fail=sdk.CredentialError("bad sas")))
    with pytest.raises(TransportAuthError):
        transport.send(_batch())
    with pytest.raises(TransportAuthError):
        transport.get_twin()


def test_azure_iothub_size_rejection_is_a_contract_error_not_a_retry():
    transport = IotHubTransport(FakeModuleClient(fail=ValueError("Size of message can not exceed 256 KB.")))
    with pytest.raises(ContractError) as info:
        transport.send(_batch())
    assert info.value.reason == "too_large"


def test_azure_iothub_twin_is_returned_as_desired_and_reported_dicts():
    client = FakeModuleClient()
    transport = IotHubTransport(client)
    assert transport.get_twin() == {"desired": {"model_version": "m1", "$version": 3}, "reported": {"$version": 2}}
    transport.patch_reported({"model_status": "active", "previous": None})
    assert client.reported == [{"model_status": "active", "previous": None}]


def test_azure_iothub_desired_patches_reach_every_callback_as_whole_desired_even_if_one_raises():
    client = FakeModuleClient()
    transport = IotHubTransport(client)
    seen: list[dict] = []

    def broken(desired):
        raise RuntimeError("handler bug")

    transport.on_desired(broken)
    transport.on_desired(seen.append)
    handler = client.on_twin_desired_properties_patch_received
    assert handler is not None
    # No twin read yet: the first patch makes the transport read it (model_version m1, $version 3).
    handler({"model": {"url": "https://models.example.invalid/m2.tflite"}, "$version": 4})
    handler({"model": {"sha256": "ab" * 32}, "model_version": None, "$version": 5})
    handler({"model": {"sha256": "ab" * 32}, "model_version": None, "$version": 5})  # redelivered
    handler({"model": {"url": "stale"}, "$version": 4})  # late, older than what was seen
    assert seen == [
        {"model_version": "m1", "model": {"url": "https://models.example.invalid/m2.tflite"}, "$version": 4},
        {"model": {"url": "https://models.example.invalid/m2.tflite", "sha256": "ab" * 32}, "$version": 5},
    ]


def test_azure_iothub_poll_desired_fires_only_when_the_version_moved():
    client = FakeModuleClient()
    transport = IotHubTransport(client)
    seen: list[dict] = []
    transport.on_desired(seen.append)
    assert transport.poll_desired() is True
    assert transport.poll_desired() is False
    assert [d["$version"] for d in seen] == [3]


def test_azure_iothub_close_shuts_the_client_down():
    client = FakeModuleClient()
    with IotHubTransport(client):
        pass
    assert client.shut_down


def test_azure_iothub_settings_without_connection_string_or_edge_runtime_are_a_config_error():
    with pytest.raises(ConfigError):
        IotHubTransport.from_env({})


def test_azure_iothub_malformed_connection_string_is_a_config_error_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        IotHubTransport.from_connection_string("HostName=h;SharedAccessKey=c2VjcmV0")
    assert "c2VjcmV0" not in str(info.value)


def test_azure_iothub_settings_pick_connection_string_and_output():
    conn = "HostName=fake-hub.example.invalid;DeviceId=gw;ModuleId=gateway;SharedAccessKey=ZmFrZS1rZXk="
    transport = IotHubTransport.from_env({"GONDOLA_IOTHUB_CONNECTION_STRING": conn, "GONDOLA_IOTHUB_OUTPUT": ""})
    try:
        assert transport._output is None
    finally:
        transport.close()


def test_azure_iothub_transport_fills_the_gateway_hub_transport_role():
    from edge.transport import HubTransport

    assert isinstance(IotHubTransport(FakeModuleClient()), HubTransport)


def test_azure_iothub_real_sdk_size_check_becomes_too_large_before_any_connection():
    from gondola.contracts import BatchMessage, MAX_MESSAGE_BYTES

    conn = "HostName=fake-hub.example.invalid;DeviceId=gw;ModuleId=gateway;SharedAccessKey=ZmFrZS1rZXk="
    oversized = BatchMessage(body=b"x" * MAX_MESSAGE_BYTES, properties={"schema": "gondola.batch.v1", "count": "1"})
    with IotHubTransport.from_connection_string(conn, output_name="uplink") as transport:
        with pytest.raises(ContractError) as info:
            transport.send(oversized)
    assert info.value.reason == "too_large"


def test_azure_iothub_outside_iot_edge_the_edge_environment_is_a_config_error(monkeypatch):
    for var in ("IOTEDGE_MODULEID", "IOTEDGE_DEVICEID", "IOTEDGE_IOTHUBHOSTNAME", "IOTEDGE_WORKLOADURI",
                "EdgeHubConnectionString"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="IoT Edge"):
        IotHubTransport.from_edge_environment()
    with pytest.raises(ConfigError):
        # IOTEDGE_MODULEID claims a module runtime, but the rest of it is missing.
        IotHubTransport.from_env({"IOTEDGE_MODULEID": "gondola-gateway"})

"""``IotHubTransport`` driving the real ``azure-iot-device`` SDK against Mosquitto with TLS.

IoT Hub speaks MQTT 3.1.1 over TLS on port 8883; the SDK hard-codes that port
(``azure/iot/device/common/mqtt_transport.py``: ``connect(host=..., port=8883)``), so each test
gives Mosquitto its own loopback address ``127.a.b.c:8883`` and points the SDK at it with the
connection string's ``GatewayHostName`` (how a module reaches edgeHub). The certificate is made
per test, with that IP in its subjectAltName, and handed to the SDK as
``server_verification_cert``: hostname checking and chain verification stay on.

A paho client plays IoT Hub's side of the protocol: it records device-to-cloud messages and
answers twin requests on the ``$iothub/twin/...`` topics exactly as the hub does.
"""

from __future__ import annotations

import base64
import datetime
import getpass
import ipaddress
import json
import random
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.azure.iothub import IotHubTransport
from gondola.contracts import decode_batch, encode_batch, make_event
from gondola.errors import TransportAuthError, TransportError
from tests.conftest import mosquitto_binary, require, wait_for_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]

DEVICE, MODULE = "gw-s001", "gateway"
# Obviously fake: base64 of a readable string, never a real key.
FAKE_KEY = base64.b64encode(b"gondola-test-key-not-a-secret!!!").decode()


def _free_loopback_8883() -> str:
    """A 127.x.y.z address on which port 8883 is free (Linux routes all of 127/8 to lo)."""
    for _ in range(50):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket() as s:
            try:
                s.bind((host, 8883))
            except OSError:
                continue
            return host
    pytest.skip("no free 127.x.y.z:8883 address")


def _self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for ``host``, valid for one day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gondola-test-hub")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TlsMosquitto:
    """Mosquitto with one TLS listener on ``host:8883``; ``users`` enables password auth."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None):
        self.host = _free_loopback_8883()
        self.cert_pem, key_pem = _self_signed(self.host)
        (workdir / "cert.pem").write_bytes(self.cert_pem)
        (workdir / "key.pem").write_bytes(key_pem)
        lines = [
            f"listener 8883 {self.host}",
            f"certfile {workdir / 'cert.pem'}",
            f"keyfile {workdir / 'key.pem'}",
            "persistence false",
            # Started as root, Mosquitto would switch to user 'mosquitto', who cannot read the
            # test's private temp dir; stay the user who runs the tests.
            f"user {getpass.getuser()}",
        ]
        if users:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.ca_file = workdir / "cert.pem"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port_on(self.host, 8883)

    def connection_string(self) -> str:
        return (
            f"HostName=fake-hub.example.invalid;DeviceId={DEVICE};ModuleId={MODULE};"
            f"SharedAccessKey={FAKE_KEY};GatewayHostName={self.host}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def wait_for_port_on(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class FakeIotHubService:
    """IoT Hub's side of the device MQTT protocol, as a paho client on the same broker.

    Records telemetry; answers ``$iothub/twin/GET`` with the twin it holds and
    ``$iothub/twin/PATCH/properties/reported`` with 204 after merging the patch.
    """

    def __init__(self, broker: TlsMosquitto, username: str | None = None, password: str | None = None):
        self.twin = {"desired": {"$version": 1}, "reported": {"$version": 1}}
        self.telemetry: list[tuple[str, bytes]] = []
        self.reported_patches: list[dict] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(client_id="fake-iothub-service", protocol=mqtt.MQTTv311)
        if username:
            self._client.username_pw_set(username, password)
        self._client.tls_set(ca_certs=str(broker.ca_file))
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect(broker.host, 8883)
        self._client.subscribe(
            [
                (f"devices/{DEVICE}/modules/{MODULE}/messages/events/#", 1),
                ("$iothub/twin/GET/#", 1),
                ("$iothub/twin/PATCH/properties/reported/#", 1),
            ]
        )
        self._client.loop_start()
        assert subscribed.wait(10), "fake service did not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        topic = msg.topic
        if topic.startswith("$iothub/twin/GET/"):
            rid = _query(topic)["$rid"]
            client.publish(f"$iothub/twin/res/200/?$rid={rid}", json.dumps(self.twin), qos=1)
            return
        if topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            rid = _query(topic)["$rid"]
            patch = json.loads(msg.payload)
            with self._cond:
                self.reported_patches.append(patch)
                self.twin["reported"].update(patch)
                self.twin["reported"]["$version"] += 1
                self._cond.notify_all()
            client.publish(
                f"$iothub/twin/res/204/?$rid={rid}&$version={self.twin['reported']['$version']}", b"", qos=1
            )
            return
        with self._cond:
            self.telemetry.append((topic, bytes(msg.payload)))
            self._cond.notify_all()

    def push_desired(self, patch: dict) -> None:
        """Send a desired-properties patch the way IoT Hub does after a twin update."""
        self.twin["desired"].update(patch)
        self.twin["desired"]["$version"] += 1
        version = self.twin["desired"]["$version"]
        body = dict(patch, **{"$version": version})
        self._client.publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", json.dumps(body), qos=1)

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _query(topic: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(topic.split("?", 1)[1]))


def _topic_properties(topic: str) -> dict[str, str]:
    """Properties the SDK encoded after ``.../messages/events/`` (system ones start with ``$.``)."""
    encoded = topic.split("/messages/events/", 1)[1]
    return dict(urllib.parse.parse_qsl(encoded, keep_blank_values=True))


def _events(n: int) -> list[dict]:
    return [
        make_event(
            "pos.line",
            store_id="s001",
            device_id="pos-s001-r01",
            seq=40 + i,
            ts=1_764_410_400_000 + i,
            data={"txn_id": "t9", "register": "r01", "line": i + 1, "sku": "sku-7", "qty": 1, "price_cents": 249},
        )
        for i in range(n)
    ]


@pytest.fixture
def broker(tmp_path):
    require(mosquitto_binary() is not None, "Mosquitto (Debian package 'mosquitto')")
    server = TlsMosquitto(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def service(broker):
    svc = FakeIotHubService(broker)
    yield svc
    svc.stop()


@pytest.fixture
def transport(broker):
    t = IotHubTransport.from_connection_string(
        broker.connection_string(), output_name="uplink", server_verification_cert=broker.cert_pem.decode()
    )
    yield t
    t.close()


def test_azure_iothub_send_delivers_the_batch_on_the_module_events_topic_with_its_properties(service, transport):
    events = _events(5)
    message = encode_batch(events, store_id="s001", encoding="gzip")

    transport.send(message)

    with service._cond:
        assert service._cond.wait_for(lambda: service.telemetry, timeout=10)
    [(topic, body)] = service.telemetry
    assert topic.startswith(f"devices/{DEVICE}/modules/{MODULE}/messages/events/")
    props = _topic_properties(topic)
    assert props["$.on"] == "uplink"
    assert props["$.ct"] == "application/x-ndjson"
    assert props["$.ce"] == "gzip"
    assert props["$.mid"] == "pos-s001-r01:40"
    custom = {k: v for k, v in props.items() if not k.startswith("$.")}
    assert custom == message.properties
    assert body == message.body
    assert decode_batch(body, custom) == events


def test_azure_iothub_twin_get_patch_and_desired_changes_round_trip_through_the_sdk(service, transport):
    service.twin["desired"].update({"model_version": "m-2026-11-01", "model_sha256": "ab" * 32})
    received: list[dict] = []
    got_patch = threading.Event()

    def on_change(desired: dict) -> None:
        received.append(desired)
        if desired.get("model_version") == "m-2026-11-29":
            got_patch.set()

    twin = transport.get_twin()
    assert twin["desired"]["model_version"] == "m-2026-11-01"
    assert twin["desired"]["$version"] == 1

    transport.patch_reported({"model_version": "m-2026-11-01", "model_status": "active"})
    assert service.reported_patches == [{"model_version": "m-2026-11-01", "model_status": "active"}]

    transport.on_desired(on_change)
    # The SDK subscribes to desired patches in the background; wait for the SUBSCRIBE to land.
    deadline = time.monotonic() + 10
    while not got_patch.is_set() and time.monotonic() < deadline:
        service.push_desired({"model_version": "m-2026-11-29"})
        got_patch.wait(0.5)
    assert received, "desired patch never reached the callback"
    assert received[-1]["model_version"] == "m-2026-11-29"
    # The callback sees the whole desired state (the patch merged into the twin it had read).
    assert received[-1]["model_sha256"] == "ab" * 32
    assert transport.get_twin()["desired"]["model_version"] == "m-2026-11-29"


def test_azure_iothub_refused_credentials_raise_transport_auth_error(tmp_path):
    require(mosquitto_binary() is not None, "Mosquitto (Debian package 'mosquitto')")
    broker = TlsMosquitto(tmp_path, users={"only-this-user": "pw"})
    try:
        with IotHubTransport.from_connection_string(
            broker.connection_string(), server_verification_cert=broker.cert_pem.decode()
        ) as transport:
            with pytest.raises(TransportAuthError):
                transport.send(encode_batch(_events(1), store_id="s001"))
    finally:
        broker.stop()


def test_azure_iothub_untrusted_server_certificate_is_a_retryable_transport_error(broker):
    other_ca, _ = _self_signed(broker.host)  # a different key and certificate for the same IP
    with IotHubTransport.from_connection_string(
        broker.connection_string(), server_verification_cert=other_ca.decode()
    ) as transport:
        with pytest.raises(TransportError) as info:
            transport.send(encode_batch(_events(1), store_id="s001"))
    assert not isinstance(info.value, TransportAuthError)


def test_azure_iothub_send_with_no_hub_listening_is_a_retryable_transport_error(tmp_path):
    host = _free_loopback_8883()
    cert, _ = _self_signed(host)
    conn = (
        f"HostName=fake-hub.example.invalid;DeviceId={DEVICE};ModuleId={MODULE};"
        f"SharedAccessKey={FAKE_KEY};GatewayHostName={host}"
    )
    with IotHubTransport.from_connection_string(conn, server_verification_cert=cert.decode()) as transport:
        with pytest.raises(TransportError) as info:
            transport.send(encode_batch(_events(1), store_id="s001"))
    assert not isinstance(info.value, TransportAuthError)


def test_azure_iothub_outage_fails_fast_and_the_next_send_reconnects(broker, transport):
    service = FakeIotHubService(broker)
    transport.send(encode_batch(_events(1), store_id="s001"))
    service.stop()

    broker.stop()  # the store loses its link
    with pytest.raises(TransportError) as info:
        transport.send(encode_batch(_events(2), store_id="s001"))
    assert not isinstance(info.value, TransportAuthError)

    broker.start()  # link back: no SDK retry loop ran; the uplink's next attempt reconnects
    service = FakeIotHubService(broker)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                transport.send(encode_batch(_events(3), store_id="s001"))
                break
            except TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the uplink's backoff, shortened
        with service._cond:
            assert service._cond.wait_for(lambda: service.telemetry, timeout=10)
        [(topic, body)] = service.telemetry
        assert _topic_properties(topic)["count"] == "3"
    finally:
        service.stop()

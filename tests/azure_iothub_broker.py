"""IoT Hub's MQTT side on a real Mosquitto with TLS, for the ``test_azure_iothub*`` tests.

``azure-iot-device`` hard-codes port 8883 (``azure/iot/device/common/mqtt_transport.py``:
``connect(host=..., port=8883)``), so each ``TlsMosquitto`` gets its own loopback address
``127.a.b.c:8883`` and a certificate made for that IP; the SDK reaches it through the
connection string's ``GatewayHostName`` (how a module reaches edgeHub), with hostname checking
and chain verification on. ``FakeIotHubService`` is a paho client on the same broker playing
IoT Hub: it records device-to-cloud messages and answers twin requests on ``$iothub/twin/...``.
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
import urllib.parse
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import mosquitto_binary, wait_for_port

DEVICE, MODULE = "gw-s001", "gateway"
# Obviously fake: base64 of a readable string, never a real key.
FAKE_KEY = base64.b64encode(b"gondola-test-key-not-a-secret!!!").decode()


def free_loopback_8883() -> str:
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


def self_signed(host: str) -> tuple[bytes, bytes]:
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
        self.host = free_loopback_8883()
        self.cert_pem, key_pem = self_signed(self.host)
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
        wait_for_port(8883, host=self.host)

    def connection_string(self, device: str = DEVICE, module: str = MODULE) -> str:
        return (
            f"HostName=fake-hub.example.invalid;DeviceId={device};ModuleId={module};"
            f"SharedAccessKey={FAKE_KEY};GatewayHostName={self.host}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


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
                ("devices/+/modules/+/messages/events/#", 1),
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


def topic_properties(topic: str) -> dict[str, str]:
    """Properties the SDK encoded after ``.../messages/events/`` (system ones start with ``$.``)."""
    encoded = topic.split("/messages/events/", 1)[1]
    return dict(urllib.parse.parse_qsl(encoded, keep_blank_values=True))

"""The rendered deployment's gateway environment, on a host prepared as docs/deploy.md says,
starts a production gateway: identity from IOTEDGE_DEVICEID, TLS and a password on the
provisioned Mosquitto, the mounted keys and page token; the image's HEALTHCHECK command says
healthy; SIGTERM stops it cleanly.

Two things differ from a store box, both named: paths under ``/run/secrets/gondola`` and
``/var/lib/gondola`` are mapped into a temp folder, and the hub is the embedded one (IoT Hub is
not reachable here; ``GONDOLA_HUB=iothub`` is tested at the SDK boundary elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.access import provision_store
from edge.manifest import GATEWAY_MODULE, Layout, render
from edge.testing import planogram_csv
from tests.conftest import free_port, mosquitto_binary, require, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def _gateway_env(base: Path, broker_port: int, http_port: int) -> dict[str, str]:
    content = render(Layout.load(), fleet="prod", version="1.4.0",
                     env={"CONTAINER_REGISTRY_USERNAME": "u", "CONTAINER_REGISTRY_PASSWORD": "p"}).content
    module = content["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][GATEWAY_MODULE]
    env = {}
    for name, spec in module["env"].items():
        value = str(spec["value"]).replace("/run/secrets/gondola", str(base / "secrets"))
        env[name] = value.replace("/var/lib/gondola", str(base / "var"))
    assert env["GONDOLA_MODE"] == "production" and "GONDOLA_STORE_ID" not in env
    env.update(GONDOLA_BROKER_HOST="localhost", GONDOLA_BROKER_PORT=str(broker_port),
               GONDOLA_HTTP_PORT=str(http_port), GONDOLA_HUB="local",
               GONDOLA_HUB_PATH=str(base / "hub.sqlite"), GONDOLA_CYCLE_S="1")
    return env


def _host(base: Path, broker_port: int) -> None:
    """docs/deploy.md steps 3-6: folders, provisioned broker, the gateway's secrets, planogram."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    access = provision_store("s001", {"pos-s001-r01": "pos"}, base / "mosquitto", port=broker_port)
    secrets = base / "secrets"
    secrets.mkdir()
    shutil.copy(access.password_file(access.gateway_user), secrets / "mqtt.password")
    shutil.copy(base / "mosquitto" / "ca.crt", secrets / "store-ca.crt")
    (secrets / "pseudonym.key").write_text(os.urandom(32).hex())
    public = Ed25519PrivateKey.generate().public_key()
    (secrets / "model-signing.pub").write_bytes(public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (secrets / "http.token").write_text("t0ken-" + os.urandom(12).hex())
    for folder in ("gateway", "backups", "master"):
        (base / "var" / folder).mkdir(parents=True)
    (base / "var" / "master" / "planogram.csv").write_text(planogram_csv("s001"))


def test_the_manifests_gateway_environment_runs_a_healthy_production_gateway(tmp_path):
    require(mosquitto_binary() is not None, "Mosquitto")
    base = Path(tempfile.mkdtemp(prefix="gondola-host-"))  # Mosquitto (dropping root) reads here
    base.chmod(0o755)
    broker = gateway = None
    try:
        broker_port, http_port = free_port(), free_port()
        _host(base, broker_port)
        broker = subprocess.Popen([mosquitto_binary(), "-c", str(base / "mosquitto" / "mosquitto.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(broker_port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GONDOLA_")}
        env.update(_gateway_env(base, broker_port, http_port), IOTEDGE_DEVICEID="gw-s001",
                   IOTEDGE_MODULEID=GATEWAY_MODULE, PYTHONPATH=str(ROOT))
        log = (tmp_path / "gateway.log").open("w")
        gateway = subprocess.Popen([sys.executable, "-m", "edge", "run"], env=env, cwd=tmp_path,
                                   stdout=log, stderr=subprocess.STDOUT)
        token = (base / "secrets" / "http.token").read_text()
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/health",
                                         headers={"Authorization": f"Bearer {token}"})
        health, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and gateway.poll() is None:
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    health = json.load(resp)
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert health is not None, (tmp_path / "gateway.log").read_text()[-3000:]
        assert health["healthy"] is True and health["store_id"] == "s001" and health["facings"] == 10
        # The image's HEALTHCHECK: `python -m edge health` in the module's environment.
        check = subprocess.run([sys.executable, "-m", "edge", "health"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and check.stdout.strip() == "healthy"
        with pytest.raises(urllib.error.HTTPError) as denied:  # bound beyond loopback: token needed
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5)
        assert denied.value.code == 401
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0
        text = (tmp_path / "gateway.log").read_text()
        assert "[INF] - gateway s001 started: subscribed on localhost" in text  # the iotedge format
        assert "[INF] - gateway s001 stopped" in text and "Traceback" not in text
    finally:
        for proc in (gateway, broker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)

"""The store broker module as its image configures it: the baked durability config includes the
store's provisioned files (``gondola edge provision``), the gateway connects with the password
and CA the deployment mounts (user name from its device), and the image's HEALTHCHECK command
tells a running broker from a stopped one. Real Mosquitto, real TLS."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.access import provision_store
from edge.wiring import EdgeSettings, mqtt_auth
from tests.conftest import free_port, mosquitto_binary, require, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deployment" / "iot-edge" / "modules" / "mosquitto"
PROVISIONED = "/etc/gondola/mosquitto"

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def _healthcheck_command(folder: Path, port: int) -> str:
    text = re.sub(r"\\\n\s*", " ", (MODULE / "Dockerfile").read_text())
    cmd = eval(re.search(r"HEALTHCHECK .*?CMD (\[.*\])", text).group(1))
    assert cmd[:2] == ["sh", "-c"]
    return cmd[2].replace(PROVISIONED, str(folder)).replace("-p 8883", f"-p {port}")


@pytest.fixture
def broker(tmp_path, broker_home):
    require(mosquitto_binary() is not None and shutil.which("mosquitto_sub") is not None,
            "Mosquitto and mosquitto_sub")
    port = free_port()
    # In the image uid 1883 owns the provisioned files and the queue; here the broker's own user
    # must reach them, hence broker_home rather than pytest's private temp folder.
    base = broker_home
    folder = base / "provisioned"
    access = provision_store("s001", {"pos-s001-r01": "pos"}, folder, port=port, broker_group="auto")
    data = base / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)
    conf = (MODULE / "mosquitto.conf").read_text()
    assert f"include_dir {PROVISIONED}" in conf
    conf = conf.replace(f"include_dir {PROVISIONED}", f"include_dir {folder}")
    conf = conf.replace("persistence_location /mosquitto/data/", f"persistence_location {data}/")
    # include_dir reads every *.conf there: the provisioned listener, passwords and ACLs.
    (tmp_path / "image.conf").write_text(conf)
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(tmp_path / "image.conf")],
                            stdout=open(tmp_path / "mq.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield access, folder, port, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_image_health_check_passes_on_a_running_broker_and_fails_on_a_stopped_one(broker):
    access, folder, port, proc = broker
    check = _healthcheck_command(folder, port)
    assert subprocess.run(["sh", "-c", check], timeout=30).returncode == 0
    proc.terminate()
    proc.wait(10)
    assert subprocess.run(["sh", "-c", check], timeout=30).returncode != 0


def test_the_gateway_connects_with_the_mounted_password_and_ca_and_its_device_named_user(broker, tmp_path):
    from edge.mqtt import AckAfterCommitSubscriber

    access, folder, port, _ = broker
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # What docs/deploy.md has the operator copy into /etc/gondola/secrets.
    shutil.copy(access.password_file(access.gateway_user), secrets / "mqtt.password")
    shutil.copy(folder / "ca.crt", secrets / "store-ca.crt")
    settings = EdgeSettings.from_env({"IOTEDGE_DEVICEID": "gw-s001", "GONDOLA_MODE": "production",
                                      "GONDOLA_BROKER_HOST": "localhost", "GONDOLA_BROKER_PORT": str(port),
                                      "GONDOLA_MQTT_PASSWORD_FILE": str(secrets / "mqtt.password"),
                                      "GONDOLA_MQTT_CA_FILE": str(secrets / "store-ca.crt"),
                                      "GONDOLA_PSEUDONYM_KEY": "k" * 32})
    auth = mqtt_auth(settings)
    assert auth.username == access.gateway_user == "gw-s001"
    sub = AckAfterCommitSubscriber("localhost", port, client_id="gw-s001", topics=["gondola/s001/pos/+"],
                                   on_message=lambda r: None, auth=auth)
    sub.start(timeout=15)
    try:
        assert sub.connected
    finally:
        sub.stop()

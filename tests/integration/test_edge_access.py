"""Access on the store broker, against a real Mosquitto configured by ``gondola edge provision``:
TLS with the store CA, per-device passwords, topic ACLs. Devices are played by ``mosquitto_pub``
(a client the project did not write); the gateway is the real one."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request

import pytest

from edge.access import check_password, provision_store
from edge.page import serve_page
from edge.testing import T0, planogram_csv, pos_line
from edge.wiring import EdgeSettings, build_gateway, http_token, mqtt_auth
from gondola.errors import ConfigError, TransportError
from tests.conftest import free_port, mosquitto_binary, require, wait_for_port

DEVICES = {"pos-s001-r01": "pos", "shelf-s001-f0": "shelf", "hh-s001-1": "handheld"}


@pytest.fixture
def store_broker(broker_home):
    require(mosquitto_binary() is not None and shutil.which("mosquitto_pub") is not None,
            "Mosquitto and mosquitto-clients (Debian packages)")
    port = free_port()
    access = provision_store("s001", DEVICES, broker_home / "broker", port=port, bind="127.0.0.1")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(access.conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield access, port
    proc.terminate()
    proc.wait(5)


def _pub(access, port, user, topic, payload, *, password=None, tls=True):
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", payload, "-q", "1",
           "-V", "mqttv5", "-i", f"dev-{user or 'anon'}"]
    if tls:
        cmd += ["--cafile", str(access.ca_file)]
    if user:
        cmd += ["-u", user, "-P", password if password is not None else access.password(user)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout + r.stderr


def _gateway(tmp_path, access, port, **extra):
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    values = dict(store_id="s001", broker_port=port, broker_host="127.0.0.1", data_dir=tmp_path / "gw",
                  hub_path=tmp_path / "hub.sqlite", planogram_path=tmp_path / "planogram.csv",
                  mqtt_username=access.gateway_user, mqtt_password_file=access.password_file(access.gateway_user),
                  mqtt_ca_file=access.ca_file, gap_grace_s=10**9, backup_every_s=0)
    settings = EdgeSettings(**(values | extra))
    return build_gateway(settings)


@pytest.mark.mosquitto
def test_only_enrolled_devices_publish_and_only_under_their_own_topic(tmp_path, store_broker):
    access, port = store_broker
    gw = _gateway(tmp_path, access, port)
    gw.start()
    try:
        own = json.dumps(pos_line(1, T0))
        rc, out = _pub(access, port, "pos-s001-r01", "gondola/s001/pos/pos-s001-r01", own)
        assert rc == 0 and "Not authorized" not in out
        assert gw.collector.wait_committed(1, 20)

        # A till publishing as a shelf sensor: the broker refuses it (MQTT 5 reason code 135).
        fake = json.dumps({**json.loads(own), "type": "shelf.reading"})
        rc, out = _pub(access, port, "pos-s001-r01", "gondola/s001/shelf/shelf-s001-f0", fake)
        assert "Not authorized" in out
        # Wrong password, no client certificate check but no TLS, anonymous: refused at connect.
        rc_pw, out_pw = _pub(access, port, "pos-s001-r01", "gondola/s001/pos/pos-s001-r01", own, password="guess")
        rc_plain, _ = _pub(access, port, "pos-s001-r01", "gondola/s001/pos/pos-s001-r01", own, tls=False)
        rc_anon, out_anon = _pub(access, port, None, "gondola/s001/pos/pos-s001-r01", own)
        assert rc_pw != 0 and "not authori" in out_pw.lower()
        assert rc_plain != 0
        assert rc_anon != 0 and "not authori" in out_anon.lower()
        # A device that claims another device's id in the payload, on its own topic: quarantined and counted.
        claims = json.dumps(pos_line(2, T0 + 1000, device_id="pos-s001-r02"))
        rc, out = _pub(access, port, "pos-s001-r01", "gondola/s001/pos/pos-s001-r01", claims)
        assert rc == 0
        assert gw.collector.wait_committed(2, 20)
        # A shelf sensor on its own topic gets through.
        rc, _ = _pub(access, port, "shelf-s001-f0", "gondola/s001/shelf/shelf-s001-f0",
                     json.dumps(pos_line(1, T0, device_id="shelf-s001-f0") | {"type": "shelf.reading", "data": {
                         "facing_id": "f0", "sku": "k0", "weight_g": 1000.0, "units_est": 4, "battery_pct": 90.0,
                         "rssi_dbm": -50}}))
        assert rc == 0 and gw.collector.wait_committed(3, 20)
        health = gw.health()
    finally:
        gw.stop()
    assert health["received"] == 2  # the till's own line and the sensor's reading, nothing else
    assert health["quarantined"] == 1  # the impersonating payload
    con = sqlite3.connect(tmp_path / "gw" / "buffer.sqlite")
    reasons = [r for (r,) in con.execute("SELECT reason FROM quarantine")]
    con.close()
    assert reasons == ["topic_mismatch"]


@pytest.mark.mosquitto
def test_the_gateway_refuses_to_run_with_a_wrong_password_or_without_credentials_in_production(tmp_path, store_broker):
    access, port = store_broker
    bad = tmp_path / "bad.password"
    bad.write_text("not-the-password\n")
    gw = _gateway(tmp_path, access, port, mqtt_password_file=bad)
    with pytest.raises(TransportError, match="not authori"):
        gw.start()
    gw.collector.stop()
    with pytest.raises(ConfigError, match="MQTT_USERNAME"):
        mqtt_auth(EdgeSettings(store_id="s001", mode="production"))
    with pytest.raises(ConfigError, match="no password"):
        mqtt_auth(EdgeSettings(store_id="s001", mqtt_username="gw-s001"), env={})


def test_provisioning_keeps_passwords_hashed_and_private_and_is_idempotent(tmp_path):
    a = provision_store("s001", {"pos-s001-r01": "pos"}, tmp_path / "b", broker_group=None)
    passwd = (tmp_path / "b" / "passwd").read_text()
    pw = a.password("pos-s001-r01")
    assert pw not in passwd and check_password(pw, passwd.splitlines()[-1].split(":", 1)[1])
    assert (a.password_file("pos-s001-r01").stat().st_mode & 0o077) == 0
    assert (tmp_path / "b" / "ca.key").stat().st_mode & 0o077 == 0
    ca = (tmp_path / "b" / "ca.crt").read_bytes()
    b = provision_store("s001", {"pos-s001-r01": "pos", "shelf-s001-f1": "shelf"}, tmp_path / "b", broker_group=None)
    assert b.password("pos-s001-r01") == pw and (tmp_path / "b" / "ca.crt").read_bytes() == ca
    assert "topic write gondola/s001/shelf/shelf-s001-f1" in (tmp_path / "b" / "acl").read_text()
    c = provision_store("s001", {"pos-s001-r01": "pos"}, tmp_path / "b", broker_group=None, rotate=True)
    assert c.password("pos-s001-r01") != pw
    with pytest.raises(ConfigError):
        provision_store("s001", {"pos/+": "pos"}, tmp_path / "c")
    with pytest.raises(ConfigError):
        provision_store("s001", {"pos-1": "printer"}, tmp_path / "c")


def test_the_page_needs_its_token_when_it_leaves_loopback(tmp_path):
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    gw = build_gateway(EdgeSettings(store_id="s001", data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / "planogram.csv", backup_every_s=0))
    with pytest.raises(ConfigError, match="token"):
        serve_page(gw, "0.0.0.0", 0)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    token = http_token(EdgeSettings(store_id="s001", http_token_file=token_file))
    server = serve_page(gw, "0.0.0.0", 0, token=token)
    port = server.server_address[1]
    try:
        url = f"http://127.0.0.1:{port}/health"
        with pytest.raises(urllib.error.HTTPError) as no:
            urllib.request.urlopen(url, timeout=5)
        assert no.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer nope"}), timeout=5)
        assert wrong.value.code == 401
        url = f"http://127.0.0.1:{port}/restock"
        ok = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}), timeout=5)
        assert len(json.loads(ok.read())) == 10  # the planogram's facings
        first = urllib.request.urlopen(f"{url}?token={token}", timeout=5)  # a tablet's bookmark
        cookie = first.headers["Set-Cookie"].split(";")[0]
        assert cookie == f"gondola_token={token}" and "HttpOnly" in first.headers["Set-Cookie"]
        again = urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=5)
        assert again.status == 200
    finally:
        server.shutdown()
        gw.stop()
    with pytest.raises(ConfigError, match="16"):
        short = tmp_path / "short"
        short.write_text("abc")
        http_token(EdgeSettings(store_id="s001", http_token_file=short))

"""A gateway as an operator meets it: started before its broker, broker lost and back, /health
status codes, /metrics through prometheus_client, the lines it logs, SIGTERM."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.cli import run
from edge.logs import configure_logging
from edge.testing import planogram_csv
from edge.wiring import EdgeSettings, build_gateway
from tests.conftest import MosquittoServer, free_port, mosquitto_binary, require, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str, method: str = "GET"):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.mosquitto
def test_a_gateway_waits_for_its_broker_reports_health_and_logs_what_happens(tmp_path, restore_logging):
    require(mosquitto_binary() is not None, "Mosquitto")
    broker = MosquittoServer(tmp_path)  # port chosen, not listening yet
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    http_port = free_port()
    settings = EdgeSettings(store_id="s001", broker_port=broker.port, data_dir=tmp_path / "gw",
                            hub_path=tmp_path / "hub.sqlite", planogram_path=tmp_path / "planogram.csv",
                            http_port=http_port, cycle_s=1.0)
    out = io.StringIO()
    configure_logging("info", "iotedge", stream=out)
    stop = threading.Event()
    built = []

    def build(s):
        built.append(build_gateway(s))
        return built[0]

    runner = threading.Thread(target=run, args=(settings, build, stop), daemon=True)
    runner.start()
    base = f"http://127.0.0.1:{http_port}"
    try:
        assert _until(lambda: "not reachable" in out.getvalue(), 10)  # waiting, not exiting
        assert runner.is_alive()
        broker.start()
        assert _until(lambda: "started: subscribed" in out.getvalue())
        assert _until(lambda: _get(base + "/health")[0] == 200)
        status, headers, body = _get(base + "/health")
        assert json.loads(body)["healthy"] is True and json.loads(body)["problems"] == []

        status, headers, body = _get(base + "/metrics?name[]=x")  # query strings are ignored
        assert status == 200 and "charset=utf-8" in headers["Content-Type"]
        text = body.decode()
        assert 'gondola_edge_broker_connected{store_id="s001"} 1.0' in text
        assert 'gondola_edge_healthy{store_id="s001"} 1.0' in text
        assert "process_resident_memory_bytes" in text and "gondola_edge_build_info{" in text
        status, headers, body = _get(base + "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000

        gw = built[0]
        gw_watcher_lines = out.getvalue()
        broker.stop()
        assert _until(lambda: _get(base + "/health")[0] == 503)
        problems = json.loads(_get(base + "/health")[2])["problems"]
        assert problems == [f"store broker 127.0.0.1:{broker.port} not connected"]
        assert 'gondola_edge_healthy{store_id="s001"} 0.0' in _get(base + "/metrics")[2].decode()
        broker.start()  # same port: the client's own reconnect finds it
        assert _until(lambda: gw.broker_connected, 30)
        assert _until(lambda: _get(base + "/health")[0] == 200)
        assert _until(lambda: "reconnected" in out.getvalue(), 15)
        assert "connection lost" in out.getvalue()[len(gw_watcher_lines):]
    finally:
        stop.set()
        runner.join(30)
        broker.stop()
    log = out.getvalue()
    assert not runner.is_alive()
    for phrase in ("starting: version", "started: subscribed", "shutting down", "stopped"):
        assert f"[INF] - gateway s001 {phrase}" in log
    assert "<4> " in log and "[WRN] - store broker" in log


@pytest.mark.slow
def test_the_module_entrypoint_waits_for_a_missing_broker_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("GONDOLA_")}
    env.update(PYTHONPATH=str(ROOT), GONDOLA_STORE_ID="s001", GONDOLA_BROKER_PORT=str(port),
               GONDOLA_DATA_DIR=str(tmp_path / "gw"), GONDOLA_HUB_PATH=str(tmp_path / "hub.sqlite"),
               GONDOLA_LOG_LEVEL="debug", GONDOLA_LOG_FORMAT="json")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while not seen or "not reachable" not in seen[-1]:
        line = proc.stderr.readline()
        assert line, "the gateway exited instead of waiting for its broker"
        seen.append(line)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0
    text = "".join(seen) + rest
    assert "Traceback" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"ts", "level", "severity", "logger", "msg"} <= set(r) for r in lines)
    waiting = [r for r in lines if "not reachable" in r["msg"]]
    assert waiting[0]["level"] == "warning" and f"127.0.0.1:{port}" in waiting[0]["msg"]
    assert any(r["msg"].startswith("gateway s001 starting") for r in lines)
    assert lines[-1]["msg"] == "gateway s001: stopped before the store broker came up"


def test_the_module_entrypoint_reports_a_bad_setting_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GONDOLA_")}
    env.update(PYTHONPATH=str(ROOT), GONDOLA_STORE_ID="s001", GONDOLA_MODE="production",
               GONDOLA_DATA_DIR=str(tmp_path / "gw"))
    done = subprocess.run([sys.executable, "-m", "edge", "run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("gondola edge: ") and "GONDOLA_" in done.stderr
    assert not (tmp_path / "gw").exists()  # refused before anything was created


@pytest.mark.slow
@pytest.mark.mosquitto
def test_a_refused_broker_session_is_retried_with_backoff_not_fatal(tmp_path, restore_logging):
    import shutil
    import tempfile

    from edge.access import provision_store

    require(mosquitto_binary() is not None, "Mosquitto")
    base = Path(tempfile.mkdtemp(prefix="gondola-refused-"))  # Mosquitto (dropping root) reads here
    base.chmod(0o755)
    port = free_port()
    access = provision_store("s001", {"pos-s001-r01": "pos"}, base / "broker", port=port)
    (tmp_path / "wrong.password").write_text("not-the-password")
    broker = subprocess.Popen([mosquitto_binary(), "-c", str(access.conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    stop = threading.Event()
    result = []
    try:
        wait_for_port(port)
        settings = EdgeSettings(store_id="s001", broker_host="localhost", broker_port=port,
                                data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                mqtt_password_file=tmp_path / "wrong.password", mqtt_ca_file=access.ca_file)
        runner = threading.Thread(target=lambda: result.append(run(settings, build_gateway, stop)), daemon=True)
        runner.start()
        assert _until(lambda: out.getvalue().count("session not established") >= 2, 60), out.getvalue()
        assert "not authori" in out.getvalue() and runner.is_alive()
        stop.set()
        runner.join(30)
        assert result == [0] and "Traceback" not in out.getvalue()
    finally:
        stop.set()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(base, ignore_errors=True)

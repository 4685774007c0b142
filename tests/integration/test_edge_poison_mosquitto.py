"""Issue 10 from outside: `gondola edge run` (a separate process) behind a real Mosquitto, fed by
`mosquitto_pub` (mosquitto-clients), a client the project did not write. Poison input never
stops the store; memory stays bounded while the gateway is stalled."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.buffer import BufferPolicy, SqliteBuffer
from edge.testing import pos_line
from gondola.errors import BufferFullError
from tests.conftest import free_port, require

ROOT = Path(__file__).resolve().parents[2]
STORE = "s001"


def _pub(port: int, topic: str, payload: bytes, tmp: Path, repeat: int = 1) -> None:
    """One QoS 1 publish with mosquitto_pub (the payload from a file: any bytes go through)."""
    f = tmp / "payload.bin"
    f.write_bytes(payload)
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-f", str(f)]
    if repeat > 1:
        args += ["--repeat", str(repeat)]
    subprocess.run(args, check=True, timeout=120)


def _topic(device: str) -> str:
    return f"gondola/{STORE}/pos/{device}"


def _now() -> int:
    return int(time.time() * 1000)


def _event(device: str, seq: int, **kw) -> dict:
    return pos_line(seq, _now(), device_id=device, **kw)


class Gateway:
    """`python -m edge run` with its page on a free port; logs to a file."""

    def __init__(self, tmp: Path, broker_port: int, **env):
        self.tmp, self.http = tmp, free_port()
        self.log = tmp / "gateway.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GONDOLA_")}
        self.env.update(PYTHONPATH=str(ROOT), GONDOLA_STORE_ID=STORE, GONDOLA_BROKER_PORT=str(broker_port),
                        GONDOLA_DATA_DIR=str(tmp / "gw"), GONDOLA_HUB_PATH=str(tmp / "hub.sqlite"),
                        GONDOLA_HTTP_PORT=str(self.http), GONDOLA_CYCLE_S="5", **env)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Gateway":
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run"], env=self.env, cwd=self.tmp,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))
        assert _until(lambda: self.health() is not None, 60), self.log.read_text()[-2000:]
        return self

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503: unhealthy, same body
            return json.loads(e.read())
        except OSError:
            return None

    def committed(self) -> int:
        h = self.health()
        return h["committed_messages"] if h else -1

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def _until(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def mosquitto_pub():
    require(shutil.which("mosquitto_pub") is not None, "mosquitto_pub (Debian package 'mosquitto-clients')")


@pytest.mark.slow
def test_poison_input_from_mosquitto_pub_never_stops_the_gateway_nor_again_after_a_restart(
        mosquitto, mosquitto_pub, tmp_path):
    gw = Gateway(tmp_path, mosquitto.port).start()
    port = mosquitto.port
    good = json.dumps(_event("pos-a", 0)).encode()
    poison = good.replace(b'"qty"', b'"\\ud800": 1, "qty"')                      # issue point 1
    lone = json.dumps(_event("pos-a", 1)).encode().replace(b'"k0"', b'"\\udc80"')  # point 2, escaped
    raw = json.dumps(_event("pos-a", 2)).encode().replace(b'"k0"', b'"\xed\xa0\x80"')  # point 2, raw bytes
    typed_loyalty = json.dumps(_event("pos-a", 3) | {"data": _event("pos-a", 3)["data"] | {"loyalty_id": 3333}}).encode()
    device_pid = json.dumps(_event("pos-a", 4) | {"data": _event("pos-a", 4)["data"] | {"loyalty_pid": "4929-77"}}).encode()
    far_future = json.dumps(pos_line(5, 4_102_444_700_000, device_id="pos-a")).encode()  # 2099-12-31: point 10
    sent = [poison, lone, raw, typed_loyalty, device_pid, far_future]
    # Points 7-9: a huge seq after normal ones, a counter restart with a new epoch, 1-0-2 order,
    # a repeat with other content.
    sent += [json.dumps(_event("pos-b", s)).encode() for s in (0, 1, 2)]
    sent += [json.dumps(_event("pos-b", 2**63 - 1)).encode(), json.dumps(_event("pos-b", 3)).encode()]
    sent += [json.dumps(_event("pos-b", s, epoch=1)).encode() for s in (0, 1)]
    sent += [json.dumps(_event("pos-c", s)).encode() for s in (1, 0, 2)]
    sent += [json.dumps(_event("pos-c", 1, qty=9)).encode(), good]
    try:
        for payload in sent:
            device = json.loads(payload.decode("utf-8", "surrogatepass"))["device_id"] if payload[:1] == b"{" else "x"
            _pub(port, _topic(device), payload, tmp_path)
        assert _until(lambda: gw.committed() >= len(sent)), gw.health()
        h = gw.health()
        assert h["seq_gaps"] == 0 and h["duplicates"] == 0
        assert h["quarantined"] == 8 and h["conflicting_repeats"] == 1 and h["implausible_seqs"] == 1
        assert h["collector_stalled"] is False and h["writer_errors"] == 0
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw.http}/metrics", timeout=5).read().decode()
        assert 'gondola_edge_conflicting_repeats_total{store_id="s001"} 1.0' in metrics
        assert 'gondola_edge_collector_writer_errors_total{store_id="s001"} 0.0' in metrics
        # After a restart (the broker may redeliver what was in flight) the gateway goes on.
        gw.stop()
        gw = Gateway(tmp_path, port).start()
        _pub(port, _topic("pos-c"), json.dumps(_event("pos-c", 3)).encode(), tmp_path)
        assert _until(lambda: gw.committed() >= 1), gw.health()
        assert gw.health()["writer_errors"] == 0
    finally:
        gw.stop()
    buf = SqliteBuffer(tmp_path / "gw" / "buffer.sqlite")
    q = buf.quarantined(100)
    import sqlite3
    with sqlite3.connect(buf.path) as db:
        stored = {(d, e): n for d, e, n in db.execute("SELECT device_id, epoch, received FROM devices")
                  if d.startswith("pos-")}
    buf.close()
    # Stored: pos-a 0; pos-b 0-3 and, after its counter restarted, epoch 1 0-1; pos-c 1,0,2 and 3.
    assert stored == {("pos-a", 0): 1, ("pos-b", 0): 4, ("pos-b", 1): 2, ("pos-c", 0): 4}
    reasons = sorted(r["reason"] for r in q)
    assert reasons == sorted(["unknown_field", "bad_text", "bad_json", "wrong_type", "device_pseudonym",
                              "implausible_ts", "implausible_seq", "conflicting_repeat"])
    for r in q:  # redacted, escaped, bounded
        blob = r["payload"] + r["detail"].encode() + r["topic"].encode()
        assert b"3333" not in blob and b"4929" not in blob and len(r["payload"]) <= 2048
        r["detail"].encode("utf-8")
    log = gw.log.read_text()
    assert "quarantined a message from device pos-a: unknown_field" in log
    assert "4929" not in log and "3333" not in log and "Traceback" not in log


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


@pytest.mark.slow
def test_a_stalled_gateway_stays_under_its_memory_bound_whatever_devices_send(mosquitto, mosquitto_pub, tmp_path):
    """The issue's case: buffer full of POS lines, uplink stalled, 300 payloads of 1.5 MB and then
    2,000 near-limit (15 KB) valid-looking payloads: RSS grows by less than LIMIT_MB."""
    LIMIT_MB = 64  # intake bound 16 MB + one group in the writer + paho's current message
    cap = 2 * 1024**2
    (tmp_path / "gw").mkdir()
    pre = SqliteBuffer(tmp_path / "gw" / "buffer.sqlite", BufferPolicy(max_bytes=cap))
    seq, now = 0, _now()
    for chunk in (500, 1):  # fill until not one more POS line fits
        while True:
            try:
                pre.append([pos_line(s, now, device_id="pos-z") | {"received_at": now}
                            for s in range(seq, seq + chunk)], now_ms=now)
            except BufferFullError:
                break
            seq += chunk
    pre.close()
    # 1 byte/s: the uplink's first batch waits for hours; nothing leaves, the buffer stays full.
    gw = Gateway(tmp_path, mosquitto.port, GONDOLA_BUFFER_MAX_BYTES=str(cap), GONDOLA_BANDWIDTH_BYTES_S="1").start()
    try:
        if not [p for p in (tmp_path / "gw").glob("*.sqlite")]:
            pytest.fail("gateway did not open the prefilled buffer")
        base = _rss_mb(gw.proc.pid)
        peak = base
        # A valid POS line that cannot be stored: the writer holds it (acks held) from now on.
        _pub(mosquitto.port, _topic("pos-z"), json.dumps(_event("pos-z", seq)).encode(), tmp_path)
        _pub(mosquitto.port, _topic("pos-z"), b"{" + b"x" * 1_500_000 + b"}", tmp_path, repeat=300)
        for _ in range(20):
            peak = max(peak, _rss_mb(gw.proc.pid))
            time.sleep(0.25)
        line = json.dumps(_event("pos-z", seq + 1)).encode()
        filler = line[:-1] + b', "pad": "' + b"p" * (15_000 - len(line)) + b'"}'
        _pub(mosquitto.port, _topic("pos-z"), filler, tmp_path, repeat=2000)
        for _ in range(40):
            peak = max(peak, _rss_mb(gw.proc.pid))
            time.sleep(0.25)
        h = gw.health()
        assert h["collector_stalled"] is True  # really stalled: the POS line is held, not dropped
        assert gw.proc.poll() is None
    finally:
        # kill -9: the stalled uplink sleeps in its 1 B/s token bucket and would not see SIGTERM.
        gw.stop(kill=True)
    print(f"RSS base {base:.1f} MB, peak {peak:.1f} MB, growth {peak - base:.1f} MB (limit {LIMIT_MB})")
    assert peak - base < LIMIT_MB


@pytest.mark.slow
def test_junk_from_mosquitto_pub_never_grows_the_gateways_files_past_its_cap(mosquitto, mosquitto_pub, tmp_path):
    """Issue point 4: with a 2 MB cap, 1,500 junk payloads of 60 KB grew the files to 141 MB."""
    cap = 2 * 1024**2
    gw = Gateway(tmp_path, mosquitto.port, GONDOLA_BUFFER_MAX_BYTES=str(cap)).start()
    try:
        _pub(mosquitto.port, _topic("pos-j"), b"{" + b"j" * 60_000, tmp_path, repeat=1500)
        _pub(mosquitto.port, _topic("pos-j"), b'{"junk": "' + b"k" * 15_000 + b'"}', tmp_path, repeat=1500)
        assert _until(lambda: gw.committed() >= 3000, 120), gw.health()
        h = gw.health()
    finally:
        gw.stop()
    assert h["quarantined"] == 3000 and h["quarantine_bytes"] <= cap * 0.05
    assert h["file_bytes"] <= cap, h["file_bytes"]

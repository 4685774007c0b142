"""Crash safety: kill -9 the gateway process 50 times during ingest and uplink.

Devices publish QoS 1 to a real Mosquitto (the gateway has a persistent session, so what it did
not acknowledge is redelivered). The gateway runs as ``python -m edge run`` and is killed at
random instants, 50 times, then restarted once more to finish. The embedded hub must then hold
every emitted event (deduplicated on ``(device_id, seq)``: exactly the emitted set, none lost,
none invented) and the buffer's open gaps must be exactly the messages the traffic generator
dropped before the broker.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.buffer import SqliteBuffer
from edge.mqtt import Publisher
from edge.testing import T0, device_traffic, planogram_csv
from gondola.contracts import decode_batch
from gondola.hub import LocalHub

ROOT = Path(__file__).resolve().parents[2]
KILLS = 50


def _hub_events(path: Path) -> list[dict]:
    hub = LocalHub(path)
    try:
        return [e for p in range(hub.partitions) for m in hub.read(p, limit=10**6)
                for e in decode_batch(m.body, m.properties)]
    finally:
        hub.close()


def _start(cmd, env, log):
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.mosquitto
def test_fifty_kill_9s_during_ingest_and_uplink_lose_nothing_and_count_gaps_exactly(mosquitto, tmp_path):
    traffic = device_traffic(8_000, drop=0.01, seed=7)
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    hub_path = tmp_path / "hub.sqlite"
    data_dir = tmp_path / "gw"
    cmd = [sys.executable, "-m", "edge", "run", "--store-id", "s001", "--broker", f"127.0.0.1:{mosquitto.port}",
           "--data-dir", str(data_dir), "--hub", "local", "--hub-path", str(hub_path),
           "--planogram", str(tmp_path / "planogram.csv"), "--cycle-s", "0.3"]
    env = dict(os.environ, GONDOLA_ROUND_ROWS="300", GONDOLA_GROUP_MAX="200", PYTHONUNBUFFERED="1",
               GONDOLA_UPLINK_DELAY_S="0")  # uplink all the time: kills land mid-send too
    log = (tmp_path / "gateway.log").open("ab")

    # First start creates the persistent session, so the broker queues for it from now on.
    proc = _start(cmd, env, log)
    time.sleep(2.0)

    pub = Publisher("127.0.0.1", mosquitto.port, client_id="devices").start()
    done = threading.Event()

    def play():
        for i, (topic, payload) in enumerate(traffic.messages):
            pub.publish(topic, payload)
            if i % 200 == 199:
                time.sleep(0.02)  # spread publishing over most of the kills
        pub.flush()
        done.set()

    player = threading.Thread(target=play, daemon=True)
    player.start()
    rng = random.Random(42)
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.4, 1.2))  # lands in start-up, ingest, scoring or uplink
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = _start(cmd, env, log)

    assert done.wait(60), "devices could not publish everything"
    expected = {k for k in traffic.emitted}
    deadline = time.monotonic() + 60
    got: set = set()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        events = _hub_events(hub_path)
        got = {(e["device_id"], e["seq"]) for e in events if not e["device_id"].startswith("gw-")}
        if got >= expected:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    pub.stop()

    events = _hub_events(hub_path)
    device_events = [e for e in events if not e["device_id"].startswith("gw-")]
    keys = [(e["device_id"], e["seq"]) for e in device_events]
    assert set(keys) == expected  # nothing lost, nothing invented
    assert len(keys) >= len(expected)  # duplicates allowed; the lake removes them on (device_id, seq)
    print(f"hub: {len(keys)} device events, {len(keys) - len(expected)} duplicates; {len(expected)} emitted")
    # The gateway's own events (alerts, health) have contiguous seqs: none lost across 50 crashes.
    own = sorted({e["seq"] for e in events if e["device_id"] == "gw-s001"})
    assert own == list(range(len(own)))
    buf = SqliteBuffer(data_dir / "buffer.sqlite")
    missing = {(d, s) for d, ranges in buf.gaps().items() for lo, hi in ranges for s in range(lo, hi + 1)}
    buf.close()
    assert missing == traffic.dropped
    assert len(traffic.dropped) > 30

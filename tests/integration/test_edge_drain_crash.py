"""Crash safety of a drain through segment tables: kill -9 a process that appends and drains a
buffer whose rows lie in many segments (a sent prefix is recorded, not deleted, and segments
are dropped whole), 15 times at random instants, then let it finish. The hub must hold every
appended event (de-duplicated on ``(device_id, seq)``: none lost, none invented), the buffer
must be empty with every row counted sent once, and no segment but the current ones left."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.buffer import BufferPolicy, SqliteBuffer
from edge.testing import T0
from gondola.contracts import decode_batch
from gondola.hub import LocalHub

ROOT = Path(__file__).resolve().parents[2]
CHUNKS, CHUNK = 12, 1000
POLICY = "BufferPolicy(max_bytes=16 * 1024**2)"  # 256 KB segments: ~6 per class

_CHILD = f"""
import sys
from pathlib import Path
from edge.buffer import BufferPolicy, SqliteBuffer
from edge.testing import T0, pos_line, reading, restock, received
from edge.transport import LocalHubTransport
from edge.uplink import Uplink
from gondola.clock import SystemClock
from gondola.hub import LocalHub

d = Path(sys.argv[1])
buf = SqliteBuffer(d / "buffer.sqlite", {POLICY})
# Drain rounds of 400 rows (4 x round_rows) while 1,000 arrive between them: a backlog that grows,
# drained by the backlog lane from its front and by the live lane from its newest end.
up = Uplink(buf, LocalHubTransport(LocalHub(d / "hub.sqlite"), "gw-s001"), SystemClock(), store_id="s001",
            round_rows=100)
makers = (pos_line, restock, reading)
for k in range({CHUNKS}):  # appends are idempotent: a restarted process appends duplicates
    buf.append([received(makers[i % 3](i, T0 + i)) for i in range(k * {CHUNK}, (k + 1) * {CHUNK})], now_ms=T0)
    up.drain(max_rounds=1)
    print("round", flush=True)
while up.drain(max_rounds=1):
    print("round", flush=True)
print("done", flush=True)
"""


def _hub_keys(path: Path) -> list[tuple[str, int]]:
    hub = LocalHub(path)
    try:
        return [(e["device_id"], e["seq"]) for p in range(hub.partitions) for m in hub.read(p, limit=10**6)
                for e in decode_batch(m.body, m.properties)]
    finally:
        hub.close()


@pytest.mark.slow
def test_kill_9_during_a_drain_through_segments_loses_nothing_and_leaves_no_segment_behind(tmp_path):
    rng = random.Random(18)
    cmd = [sys.executable, "-c", _CHILD, str(tmp_path)]
    kills = 0
    for _ in range(15):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(rng.randint(1, 2 * CHUNKS)):  # a few rounds in, then at a random instant
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "done" in out.stdout, out.stdout + out.stderr

    keys = _hub_keys(tmp_path / "hub.sqlite")
    devices = {0: "pos-s001-r01", 1: "hh-s001-1", 2: "shelf-s001-f0"}
    expected = {(devices[i % 3], i) for i in range(CHUNKS * CHUNK)}
    assert set(keys) == expected  # none lost, none invented (re-sends are duplicates only)
    buf = SqliteBuffer(tmp_path / "buffer.sqlite", BufferPolicy(max_bytes=16 * 1024**2))
    st = buf.stats(T0)
    buf.close()
    assert (st["buffer_rows"], st["event_bytes"], st["unsent_by_priority"]) == (0, 0, {})
    assert st["sent"] == len(expected) and st["evictions"] == 0  # a re-sent batch is counted sent once
    with sqlite3.connect(tmp_path / "buffer.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'events%'")}
        listed = {r[0] for r in db.execute("SELECT name FROM segments")}
    assert tables == listed and len(listed) <= 3  # each class's current segment at most
    assert kills >= 5  # the first runs at least were cut short mid-drain (later ones have less to do)

"""Crash safety of a drain through segment tables: kill -9 a process that appends and drains a
buffer whose rows lie in many segments (a sent prefix is recorded, not deleted, and segments
are dropped whole) while its backlog grows from run to run, 15 times at random instants, then
let it finish. The hub must hold exactly the events the buffer stored (de-duplicated on
``(device_id, seq)``: none lost, none invented), the buffer must be empty with every row
counted sent once and none evicted, and no segment but the current ones left."""

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
from tests.integration.test_edge_crash import _hub_events

ROOT = Path(__file__).resolve().parents[2]
RUNS, CHUNKS, CHUNK = 16, 4, 500
POLICY = "BufferPolicy(max_bytes=16 * 1024**2)"  # 256 KB segments

_CHILD = f"""
import sys
from pathlib import Path
from edge.buffer import BufferPolicy, SqliteBuffer
from edge.testing import T0, pos_line, reading, restock, received
from edge.transport import LocalHubTransport
from edge.uplink import Uplink
from gondola.clock import SystemClock
from gondola.hub import LocalHub

d, run = Path(sys.argv[1]), int(sys.argv[2])
buf = SqliteBuffer(d / "buffer.sqlite", {POLICY})
# Drain rounds of 400 rows (4 x round_rows) while 500 new events arrive between them: a backlog
# that grows from run to run, drained by the backlog lane from its front and by the live lane
# from its newest end.
up = Uplink(buf, LocalHubTransport(LocalHub(d / "hub.sqlite"), "gw-s001"), SystemClock(), store_id="s001",
            round_rows=100)
makers = (pos_line, restock, reading)
first = run * {CHUNKS * CHUNK}
for k in range({CHUNKS}):
    lo = first + k * {CHUNK}
    buf.append([received(makers[i % 3](i, T0 + i)) for i in range(lo, lo + {CHUNK})], now_ms=T0)
    up.drain(max_rounds=1)
    print("round", flush=True)
while up.drain(max_rounds=1):
    print("round", flush=True)
print("done", flush=True)
"""


def _hub_keys(path: Path) -> list[tuple[str, int]]:
    return [(e["device_id"], e["seq"]) for e in _hub_events(path)]


@pytest.mark.slow
def test_kill_9_during_a_drain_through_segments_loses_nothing_and_leaves_no_segment_behind(tmp_path):
    rng = random.Random(18)
    kills = 0
    for run in range(RUNS - 1):
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), str(run)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(rng.randint(1, CHUNKS)):  # a few rounds in, then at a random instant
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), str(RUNS - 1)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "done" in out.stdout, out.stdout + out.stderr

    buf = SqliteBuffer(tmp_path / "buffer.sqlite", BufferPolicy(max_bytes=16 * 1024**2))
    st = buf.stats(T0)
    buf.close()
    keys = _hub_keys(tmp_path / "hub.sqlite")
    devices = {0: "pos-s001-r01", 1: "hh-s001-1", 2: "shelf-s001-f0"}
    offered = {(devices[i % 3], i) for i in range(RUNS * CHUNKS * CHUNK)}
    # A killed run stored some of its events; the hub must hold exactly those the buffer stored
    # (``received`` counts each once): none lost, none invented, re-sends only duplicates.
    assert set(keys) <= offered and len(set(keys)) == st["received"]
    assert {(devices[i % 3], i) for i in range((RUNS - 1) * CHUNKS * CHUNK, RUNS * CHUNKS * CHUNK)} <= set(keys)
    assert (st["buffer_rows"], st["event_bytes"], st["unsent_by_priority"]) == (0, 0, {})
    assert st["sent"] == st["received"] and st["evictions"] == 0  # a re-sent batch is counted sent once
    with sqlite3.connect(tmp_path / "buffer.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'events%'")}
        listed = {r[0] for r in db.execute("SELECT name FROM segments")}
    assert tables == listed and len(listed) <= 3  # each class's current segment at most
    assert kills >= 10  # the runs were cut short mid-drain

"""The stream job end to end on the embedded hub: restart after kill -9, late events, --once.

Input comes from simulated stores through simulated gateways (``tests/stream_sim.py``); the job
writes ``stream.*`` Delta tables on a local folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cloud.ingest.source import LocalHubSource
from cloud.lake.storage import open_storage
from cloud.stream.job import StreamJob
from cloud.stream.tables import STREAM_TABLES
from firmware_sim.history import write_master_data
from gondola.clock import MINUTE_MS, SimClock
from gondola.contracts import encode_batch, make_event
from gondola.hub import LocalHub
from tests.stream_sim import run_sim_stores

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)

_NO_FAULTS = dict(duplicates=0.02, late=0.01)


def _rows(lake: Path, name: str) -> list[dict]:
    rows = open_storage(str(lake)).read(name)
    return rows.to_pylist() if rows is not None else []


def _keys(lake: Path) -> dict[str, Counter]:
    """Each output table's rows by key (without when they were written)."""
    out = {}
    for name, tdef in STREAM_TABLES.items():
        out[name] = Counter(tuple(r[k] for k in tdef.key) for r in _rows(lake, name))
    return out


def _cli(run, lake: Path, planogram: Path, *extra: str, once: bool = True) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "gondola", "cloud", "--lake", str(lake), "--hub", str(run.hub_path),
                             "stream", *(["--once"] if once else []), "--planogram", str(planogram),
                             "--stock-records", str(run.stock_dir), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_stream_job_killed_with_sigkill_and_restarted_writes_every_window_and_alert_once(tmp_path):
    run = run_sim_stores(tmp_path / "sim", stores=2, skus=200, days=1.5, seed=5, faults=_NO_FAULTS)
    planogram = write_master_data(tmp_path / "master", run.sims)[-1]
    assert planogram.name == "planogram.csv"

    # The reference: one uninterrupted run (its own consumer group: checkpoints live in the hub).
    clean = _cli(run, tmp_path / "clean", planogram, "--batch", "25", "--consumer-group", "reference")
    out, _ = clean.communicate(timeout=240)
    assert clean.returncode == 0, out
    want = _keys(tmp_path / "clean")
    assert sum(want["stream.sales_5m"].values()) > 100 and sum(want["stream.alerts"].values()) > 0

    # The same input, killed with SIGKILL once some tables have commits, then restarted.
    lake = tmp_path / "crashed"
    proc = _cli(run, lake, planogram, "--batch", "25", "--snapshot-s", "0.5")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # A table's folder appears when its first data file is written; its rows count only once
        # a commit file is in its log. Wait for both tables to have one.
        if all(any((lake / "stream" / t / "_delta_log").glob("*.json")) for t in ("state", "sales_5m")):
            break
        time.sleep(0.05)
    killed_midway = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed_midway, "the job finished before it could be killed: give it more input"
    partial = _keys(lake)
    assert 0 < sum(partial["stream.sales_5m"].values()) < sum(want["stream.sales_5m"].values())

    again = _cli(run, lake, planogram, "--batch", "25")
    out, _ = again.communicate(timeout=240)
    assert again.returncode == 0, out
    got = _keys(lake)
    for name in STREAM_TABLES:
        dupes = {k: n for k, n in got[name].items() if n > 1}
        assert not dupes, f"{name}: duplicated rows {list(dupes)[:3]}"
        assert got[name] == want[name], f"{name}: the restarted run differs from the uninterrupted one"


def test_stream_job_stops_cleanly_on_sigterm_with_its_state_and_checkpoint_written(tmp_path):
    run = run_sim_stores(tmp_path / "sim", stores=1, skus=120, days=1.0, seed=9, faults={})
    planogram = write_master_data(tmp_path / "master", run.sims)[-1]
    lake = tmp_path / "lake"
    # No --once: the job would run for ever; it has read everything when SIGTERM comes.
    proc = _cli(run, lake, planogram, "--model", "none", "--snapshot-s", "3600", once=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lake / "stream" / "store_health").exists():
        time.sleep(0.1)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "SIGTERM: finishing the batch in hand" in out and "stream: stopped" in out
    # The snapshot (never due in an hour) was written on the way out, then the checkpoint moved:
    # a restart finds nothing new to read and adds no row.
    state = _rows(lake, "stream.state")
    assert len(state) >= 1 and all(r["position"] >= 0 for r in state)
    before = _keys(lake)
    again = _cli(run, lake, planogram, "--model", "none")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and " 0 messages" in out, out
    assert _keys(lake) == before


def test_stream_job_routes_late_events_to_their_table_and_keeps_them_out_of_closed_windows(tmp_path):
    t0 = 1_767_600_000_000 - 1_767_600_000_000 % (5 * MINUTE_MS)
    clock = SimClock(t0)
    hub = LocalHub(tmp_path / "hub.sqlite", partitions=1, clock=clock)
    seq = iter(range(1_000))

    def line(ts: int, qty: int) -> dict:
        return make_event("pos.line", store_id="s001", device_id="pos-s001-r01", seq=next(seq), ts=ts,
                          data={"txn_id": f"t{ts}", "register": "r01", "line": 1, "sku": "k1", "qty": qty,
                                "price_cents": 100}) | {"received_at": ts}

    def send(events: list[dict], at: int) -> None:
        clock.advance_to(at)
        msg = encode_batch(events, store_id="s001")
        hub.send("gw-s001", msg.body, msg.properties)

    # Minutes 0..39 arrive on time, one line a minute of 1 unit.
    send([line(t0 + m * MINUTE_MS, 1) for m in range(40)], t0 + 40 * MINUTE_MS)
    # A line of minute 2 arrives now: 38 minutes late, past the 10-minute allowed lateness.
    send([line(t0 + 2 * MINUTE_MS + 1_000, 7)], t0 + 41 * MINUTE_MS)
    # A line of minute 33 is 7 minutes late: within the lateness, it still counts.
    send([line(t0 + 33 * MINUTE_MS + 1_000, 5)], t0 + 41 * MINUTE_MS)
    # Time moves on, closing the windows up to minute 40.
    send([line(t0 + 55 * MINUTE_MS, 1)], t0 + 56 * MINUTE_MS)
    hub.close()

    lake = tmp_path / "lake"
    with LocalHubSource(str(tmp_path / "hub.sqlite"), consumer_group="cloud-stream") as source:
        job = StreamJob(open_storage(str(lake)), source)
        job.run(once=True)

    late = _rows(lake, "stream.late_events")
    assert [(r["device_id"], r["ts"], r["late_by_ms"]) for r in late] == [
        ("pos-s001-r01", t0 + 2 * MINUTE_MS + 1_000, (t0 + 39 * MINUTE_MS - 10 * MINUTE_MS) - (t0 + 2 * MINUTE_MS + 1_000))]
    assert job.counters()["late_events"] == 1
    sales = {r["window_start"] - t0: r["units"] for r in _rows(lake, "stream.sales_5m")}
    # Window [0, 5) keeps its 5 on-time units (the late 7 are not added); [30, 35) gets the 5.
    assert sales[0] == 5
    assert sales[30 * MINUTE_MS] == 5 + 5
    assert sales[35 * MINUTE_MS] == 5
    # Windows close up to the watermark (minute 45); [40, 45) had no line, [55, 60) is still open.
    assert sorted(sales) == [m * MINUTE_MS for m in range(0, 40, 5)]


def test_the_dashboard_lists_the_anomalies_the_stream_found(tmp_path):
    import pyarrow as pa

    from cloud.dashboard import build_dashboard
    from cloud.lake.tables import schema_of
    from cloud.stream.tables import ANOMALIES, stream_schema
    from cloud.warehouse import build_warehouse

    storage = open_storage(str(tmp_path / "lake"))
    t0 = 1_767_600_000_000
    rows = [{"store_id": s, "subject": subj, "kind": kind, "score": 12.0, "evidence": '{"silent_min": 25.0}',
             "first_seen": t0 + i * 60_000, "since_ms": t0, "source": "localhub", "hub_partition": "0",
             "hub_seq": i, "emitted_at": t0, "origin_enqueued_ms": t0}
            for i, (s, subj, kind) in enumerate([("s001", "s001", "gateway_silent"), ("s002", "s002", "gateway_silent"),
                                                 ("s002", "s002-f00007", "phantom_inventory")])]
    storage.write(ANOMALIES.name, pa.Table.from_pylist(rows, schema=stream_schema(ANOMALIES)))
    # Times show in the store's time zone, as everywhere on the page (t0 is 08:00 UTC).
    stores = [{"store_id": "s001", "name": "Berlin", "timezone": "Europe/Berlin"},
              {"store_id": "s002", "name": "Boston", "timezone": "America/New_York"}]
    storage.write("silver.stores", pa.Table.from_pylist(stores, schema=schema_of("silver.stores")))
    html = build_dashboard(build_warehouse(storage, tmp_path / "wh.duckdb"), tmp_path / "d.html").read_text()
    section = html[html.index("Anomalies the stream found"):html.index("Fleet health: gateways")]
    # Counts per kind (2 gateway_silent episodes in 2 stores, the later one in Boston at 03:01), then the latest first.
    assert "<tr><td>gateway silent</td><td>gateway_silent</td><td>2</td><td>2</td><td>2026-01-05 03:01</td>" in section
    assert "<tr><td>phantom stock (count it)</td><td>phantom_inventory</td><td>1</td><td>1</td>" in section
    assert section.index("s002-f00007") < section.index("<td>s001</td>")
    # Berlin is UTC+1 in January: the 08:00 UTC detection shows at 09:00; no UTC time is shown.
    assert "<tr><td>2026-01-05 09:00</td><td>s001</td><td>gateway silent</td>" in section
    assert "<tr><td>2026-01-05 03:02</td><td>s002</td><td>phantom stock (count it)</td>" in section
    assert "UTC" not in section


def _one_till_hub(tmp_path: Path):
    """An embedded hub of one partition, and ``send(seq)``: one till line of that seq, a minute apart."""
    t0 = 1_767_600_000_000
    clock = SimClock(t0)
    hub = LocalHub(tmp_path / "hub.sqlite", partitions=1, clock=clock)

    def send(seq: int) -> None:
        ts = t0 + seq * MINUTE_MS
        clock.advance_to(ts)
        event = make_event("pos.line", store_id="s001", device_id="pos-s001-r01", seq=seq, ts=ts,
                           data={"txn_id": f"t{seq}", "register": "r01", "line": 1, "sku": "k1", "qty": 1,
                                 "price_cents": 100}) | {"received_at": ts}
        msg = encode_batch([event], store_id="s001")
        hub.send("gw-s001", msg.body, msg.properties)

    return hub, send


def test_a_lake_whose_state_is_behind_the_consumer_groups_checkpoint_says_what_it_never_read(tmp_path, caplog):
    """The checkpoint lives with the hub, the state in the lake: a new (or restored) lake read with
    a consumer group another lake already moved starts at the checkpoint. Found from outside (the
    demo's hub read into a second lake: 0 rows, no word); the job now counts and logs the hole."""
    hub, send = _one_till_hub(tmp_path)

    def run(lake: Path) -> StreamJob:
        with LocalHubSource(str(tmp_path / "hub.sqlite"), consumer_group="cloud-stream") as source:
            job = StreamJob(open_storage(str(lake)), source)
            job.run(once=True)
        return job

    for seq in range(3):
        send(seq)
    first = run(tmp_path / "lake-a")
    assert first.stats["messages"] == 3 and "skipped_messages" not in first.counters()
    for seq in range(3, 5):
        send(seq)
    with caplog.at_level("WARNING", logger="cloud.stream.job"):
        other = run(tmp_path / "lake-b")
    assert other.stats["messages"] == 2
    assert other.counters()["skipped_messages"] == 3
    assert "3 never read" in other.summary()
    assert "3 hub messages before sequence number 3 were never read" in caplog.text
    # Read on where its state is, the second lake finds no new hole.
    send(5)
    caplog.clear()
    with caplog.at_level("WARNING", logger="cloud.stream.job"):
        resumed = run(tmp_path / "lake-b")
    assert resumed.stats["messages"] == 1 and resumed.counters()["skipped_messages"] == 3
    assert "never read" not in caplog.text
    # The first lake's state is at 2: the second lake's runs moved the checkpoint past 3-5.
    send(6)
    hub.close()
    behind = run(tmp_path / "lake-a")
    assert behind.stats["messages"] == 1 and behind.counters()["skipped_messages"] == 3
    # A new lake on a hub with nothing new: the hole is told at start, and kept in the state.
    fresh = run(tmp_path / "lake-c")
    assert fresh.stats["messages"] == 0 and fresh.counters()["skipped_messages"] == 7
    assert run(tmp_path / "lake-c").counters()["skipped_messages"] == 7


def test_a_partition_back_from_another_instance_resumes_from_that_instances_snapshot(tmp_path, caplog):
    """Two instances share a lake and a consumer group (Event Hubs balances the partitions): one
    read a partition, lost it to the other, which moved it on and snapshotted, and got it back.
    The source starts it again at the group's checkpoint; the instance's own state of the partition
    is then stale. It was used as it was: the messages the other instance read were counted as
    never read, and the partition's windows and counters went on without them."""
    hub, send = _one_till_hub(tmp_path)
    lake = open_storage(str(tmp_path / "lake"))

    with LocalHubSource(str(tmp_path / "hub.sqlite"), consumer_group="cloud-stream") as mine, \
            LocalHubSource(str(tmp_path / "hub.sqlite"), consumer_group="cloud-stream") as other:
        a = StreamJob(lake, mine)
        for seq in range(3):
            send(seq)
        a.run(once=True)
        for seq in range(3, 5):  # the partition moved to the other instance, which read 3-4
            send(seq)
        b = StreamJob(lake, other)
        b.run(once=True)
        assert b.counters()["messages"] == 5 and "skipped_messages" not in b.counters()
        send(5)
        mine.rewind()  # back to this instance: its source starts at the group's checkpoint
        with caplog.at_level("WARNING", logger="cloud.stream.job"):
            a.process_batch(mine.receive())
        a.snapshot()
    hub.close()
    assert "never read" not in caplog.text
    assert "skipped_messages" not in a.counters()
    assert a.counters()["messages"] == 6 and a.counters()["events"] == 6  # the other instance's work kept


def test_a_snapshot_of_a_partition_another_instance_moved_on_does_not_take_the_lakes_state_back(tmp_path, caplog):
    """One instance held unsnapshotted state of a partition when Event Hubs moved it to another,
    which read on and snapshotted. The first instance's next snapshot wrote its stale state over
    the other's: the lake's state went back behind the group's checkpoint, and whoever next
    started the partition from the lake missed the messages in between."""
    hub, send = _one_till_hub(tmp_path)
    lake = open_storage(str(tmp_path / "lake"))

    def source() -> LocalHubSource:
        return LocalHubSource(str(tmp_path / "hub.sqlite"), consumer_group="cloud-stream")

    with source() as mine, source() as other:
        a = StreamJob(lake, mine)
        for seq in range(3):
            send(seq)
        a.run(once=True)  # snapshot at 2
        send(3)
        a.process_batch(mine.receive())  # read, not yet snapshotted: then the partition moves
        for seq in range(4, 6):
            send(seq)
        StreamJob(lake, other).run(once=True)  # the other instance: 3-5, snapshot at 5
        a.snapshot()
    with source() as again:
        with caplog.at_level("WARNING", logger="cloud.stream.job"):
            restarted = StreamJob(lake, again)
            restarted.run(once=True)
    hub.close()
    assert "never read" not in caplog.text
    assert "skipped_messages" not in restarted.counters()
    assert restarted.counters()["messages"] == 6

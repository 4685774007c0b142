"""Drain rate of a 10-million-event backlog (a store offline for days), beside its floor.

The backlog is written straight into a gateway buffer file with SQL (realistic one-line JSON
events of every type, 40 % shelf readings, 45 % POS lines), laid out as the gateway stores it
(each priority class in segment tables of ``segment_bytes``: migration ``0010_event_segments``),
then:

* ``ours``: ``Uplink.drain()`` to the embedded hub on disk: select by priority with a live lane,
  pack <= 256 KB gzip messages, ``LocalHub.send`` (fsync per message), then in one transaction
  record the sent prefix of each class (or delete the rows: the live lane's, the current
  segment's) and drop the segments every row of which was sent.
* ``floor``: the same rows read in id order (from one plain table in another file), joined and
  gzip-compressed, nothing sent, nothing deleted: what any uplink must at least spend on this
  machine. The two alternate slice by slice (a tenth of the backlog each), so both see the
  same load on a shared machine.
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

_FILL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :n - 1)
INSERT INTO events (id, device_id, seq, etype, priority, ts, received_at, facing_id, size, body)
SELECT prio * 1099511627776 + i + 1, dev, i, etype, prio, ts, ts + 200, facing, length(body) + 96, body FROM (
  SELECT i, ts, dev, etype, prio, facing,
    CASE etype
      WHEN 'pos.line' THEN printf('{"received_at":%d,"event_id":"%s:%d","type":"pos.line","schema":1,"store_id":"s001","device_id":"%s","seq":%d,"ts":%d,"data":{"txn_id":"t%d","register":"r%02d","line":%d,"sku":"k%05d","qty":%d,"price_cents":%d}}',
        ts + 200, dev, i, dev, i, ts, i / 4, i % 8, 1 + i % 4, (i * 7919) % 20000, 1 + i % 3, 99 + (i * 31) % 2000)
      WHEN 'shelf.reading' THEN printf('{"received_at":%d,"event_id":"%s:%d","type":"shelf.reading","schema":1,"store_id":"s001","device_id":"%s","seq":%d,"ts":%d,"data":{"facing_id":"%s","sku":"k%05d","weight_g":%.1f,"units_est":%d,"battery_pct":%.1f,"rssi_dbm":%d}}',
        ts + 200, dev, i, dev, i, ts, facing, (i * 13) % 20000, ((i * 37) % 5000) / 3.0, (i * 11) % 24, 100 - (i % 700) / 10.0, -40 - i % 50)
      ELSE printf('{"received_at":%d,"event_id":"%s:%d","type":"shelf.restock","schema":1,"store_id":"s001","device_id":"%s","seq":%d,"ts":%d,"data":{"facing_id":"f%05d","sku":"k%05d","units_added":%d}}',
        ts + 200, dev, i, dev, i, ts, i % 10000, i % 20000, 1 + i % 24)
    END AS body
  FROM (
    SELECT i, 1764410400000 + i * 26 AS ts,
      CASE WHEN i % 20 < 9 THEN 'pos.line' WHEN i % 20 < 17 THEN 'shelf.reading' ELSE 'shelf.restock' END AS etype,
      CASE WHEN i % 20 < 9 THEN 1 WHEN i % 20 < 17 THEN 3 ELSE 2 END AS prio,
      CASE WHEN i % 20 < 9 THEN printf('pos-s001-r%02d', i % 8) WHEN i % 20 < 17 THEN printf('shelf-s001-%d', i % 3000)
           ELSE 'hh-s001-1' END AS dev,
      CASE WHEN i % 20 BETWEEN 9 AND 16 THEN printf('f%05d', i % 3000) END AS facing
    FROM n))
"""


def _fill(path: Path, n: int) -> None:
    """The backlog as one ``events`` table, in id order (the layout before migration 0010)."""
    from edge.buffer import SqliteBuffer

    SqliteBuffer(path).close()  # schema via the migrations
    db = sqlite3.connect(path, isolation_level=None)
    # A bulk load, not the gateway's write path: no journal, indexes built once at the end.
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-200000")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='events' "
                         "AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    step = 1_000_000
    for lo in range(0, n, step):
        db.execute("BEGIN")
        db.execute(_FILL.replace("SELECT 0 UNION", f"SELECT {lo} UNION").replace("i < :n - 1", f"i < {min(n, lo + step) - 1}"))
        db.execute("COMMIT")
    for _, sql in indexes:
        db.execute(sql)
    db.close()


def _build(path: Path, staged: Path, n: int) -> float:
    """The backlog in ``staged`` (one ``events`` table: what the floor reads), and in the
    gateway's buffer ``path`` as the gateway stores it: each class's rows in segment tables
    cut every ``segment_bytes`` stored bytes (migration 0010), the counters set."""
    from edge.buffer import CLASSES, SqliteBuffer, segment_bytes, segment_table

    t = time.perf_counter()
    _fill(staged, n)
    buf = SqliteBuffer(path)
    seg = segment_bytes(buf.policy)
    buf.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("ATTACH ? AS staged", (str(staged),))
    # Where the gateway would have started each class's next segment: its stored bytes so far
    # passing a multiple of the segment size.
    starts = db.execute("SELECT priority, MIN(id) FROM (SELECT priority, id, SUM(size) OVER (PARTITION BY priority "
                        "ORDER BY id) / ? AS k FROM staged.events) GROUP BY priority, k ORDER BY priority, 2",
                        (seg,)).fetchall()
    db.execute("BEGIN")
    db.execute("DELETE FROM segments")  # the empty legacy table is no class's segment here
    for k, (p, start) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) and starts[k + 1][0] == p else (p + 1) << 40
        name, ddl = segment_table(p, start)
        db.execute(ddl)
        db.execute(f"INSERT INTO {name} SELECT * FROM staged.events WHERE id >= ? AND id < ?", (start, end))
        db.execute("INSERT INTO segments VALUES (?, ?, ?)", (p, start, name))
    db.execute("DROP TABLE events")
    db.execute("COMMIT")
    per_class = db.execute("SELECT priority, COUNT(*), SUM(size) FROM staged.events GROUP BY priority").fetchall()
    counts = {p: c for p, c, _ in per_class}
    rows, size = sum(c for _, c, _ in per_class), sum(z for _, _, z in per_class)
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                   [("rows", rows), ("bytes", size), ("arrival", n)]
                   + [(f"rows_p{p}", counts.get(p, 0)) for p in CLASSES])
    db.execute("DETACH staged")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return time.perf_counter() - t


def _segments(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    finally:
        db.close()


def run(quick: bool = False, n: int | None = None, slices: int = 10) -> dict:
    """Ours and the floor interleaved: the backlog in ``slices`` slices, each slice's floor
    (read + gzip of the next n / slices rows of a copy of the file, in id order) timed right
    before ours drains as many events, so both see the same load on a shared machine; the
    ratio of the totals and the per-slice ratios (median, range)."""
    from edge.buffer import SqliteBuffer
    from edge.transport import LocalHubTransport
    from edge.uplink import Uplink
    from gondola.clock import SystemClock
    from gondola.hub import LocalHub

    n = n or (500_000 if quick else 10_000_000)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "buffer.sqlite"
        copy = Path(d) / "floor.sqlite"
        build_s = _build(path, copy, n)
        print(f"drain: built a {n:,}-event backlog in {build_s:.0f} s "
              f"({path.stat().st_size / 2**30:.2f} GiB, {_segments(path)} segment tables)", flush=True)
        fdb = sqlite3.connect(copy)
        floor_last = -1

        def floor_slice(rows: int) -> tuple[int, float]:
            """Read and compress the next ``rows`` rows in the order the uplink sends (by
            priority class, then arrival: the primary key's order), nothing sent or deleted."""
            nonlocal floor_last
            t, c = time.perf_counter(), time.process_time()
            batch: list[str] = []
            got = 0
            for rid, body in fdb.execute("SELECT id, body FROM events WHERE id > ? ORDER BY id LIMIT ?",
                                         (floor_last, rows)):
                batch.append(body)
                floor_last = rid
                got += 1
                if len(batch) == 4000:
                    gzip.compress("\n".join(batch).encode(), 6, mtime=0)
                    batch = []
            if batch:
                gzip.compress("\n".join(batch).encode(), 6, mtime=0)
            return got, time.perf_counter() - t, time.process_time() - c

        buf = SqliteBuffer(path)
        hub = LocalHub(Path(d) / "hub.sqlite")
        up = Uplink(buf, LocalHubTransport(hub, "gw-s001"), SystemClock(), store_id="s001")
        step = -(-n // slices)
        sent = 0
        f_rows = f_secs = o_secs = f_cpu = o_cpu = 0.0
        per_slice = []
        for k in range(slices):
            fr, fs, fc = floor_slice(step)
            t, c = time.perf_counter(), time.process_time()
            before = sent
            while sent < min(n, (k + 1) * step):
                got = up.drain(max_rounds=1)  # one drain round
                if not got:
                    break
                sent += got
            os_, oc = time.perf_counter() - t, time.process_time() - c
            f_rows, f_secs, o_secs, f_cpu, o_cpu = f_rows + fr, f_secs + fs, o_secs + os_, f_cpu + fc, o_cpu + oc
            per_slice.append({"floor_events_per_s": fr / fs, "ours_events_per_s": (sent - before) / os_,
                              "ratio": ((sent - before) / os_) / (fr / fs),
                              "cpu_ratio": ((sent - before) / oc) / (fr / fc)})
        left = buf.stats(0)["buffer_rows"]
        ratios = sorted(s["ratio"] for s in per_slice)
        cpu_ratios = sorted(s["cpu_ratio"] for s in per_slice)
        out = {
            "backlog_events": n, "build_s": build_s, "sent": sent, "left": left, "drain_s": o_secs,
            "ours_events_per_s": sent / o_secs, "floor_events_per_s": f_rows / f_secs,
            "ratio_vs_floor": (sent / o_secs) / (f_rows / f_secs),
            "slices": per_slice, "ratio_median": statistics.median(ratios), "ratio_min": ratios[0],
            "ratio_max": ratios[-1],
            # CPU seconds (the process's, user + system) per event, the floor's over ours: what
            # each costs whatever else runs on the machine; wall time adds ours' waits for
            # fsyncs (the hub's per message, the WAL checkpoints') and the machine's load.
            "floor_cpu_s": f_cpu, "ours_cpu_s": o_cpu, "cpu_ratio_vs_floor": (sent / o_cpu) / (f_rows / f_cpu),
            "cpu_ratio_median": statistics.median(cpu_ratios), "cpu_ratio_min": cpu_ratios[0],
            "cpu_ratio_max": cpu_ratios[-1], "messages": up.messages_sent,
            "bytes_per_event": up.bytes_sent / max(sent, 1), "hub_messages": hub.count(),
            "load_average": os.getloadavg()[0],
        }
        buf.close()
        hub.close()
        fdb.close()
    print(f"drain: ours {out['ours_events_per_s']:,.0f} events/s ({n:,} in {o_secs:.0f} s, {out['messages']:,} "
          f"messages, {out['bytes_per_event']:.1f} B/event) | floor (read + gzip only, interleaved) "
          f"{out['floor_events_per_s']:,.0f} events/s: {out['ratio_vs_floor']:.0%} (per slice: median "
          f"{out['ratio_median']:.0%}, {ratios[0]:.0%}-{ratios[-1]:.0%}) | CPU time: ours {o_cpu:.0f} s, floor "
          f"{f_cpu:.0f} s: {out['cpu_ratio_vs_floor']:.0%} (per slice: median {out['cpu_ratio_median']:.0%}, "
          f"{cpu_ratios[0]:.0%}-{cpu_ratios[-1]:.0%})", flush=True)
    return out


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)

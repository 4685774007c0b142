"""Drain rate of a 10-million-event backlog (a store offline for days), beside its floor.

The backlog is written straight into a gateway buffer file with SQL (realistic one-line JSON
events of every type, 40 % shelf readings, 45 % POS lines), then:

* ``ours``: ``Uplink.drain()`` to the embedded hub on disk: select by priority with a live lane,
  pack <= 256 KB gzip messages, ``LocalHub.send`` (fsync per message), delete the sent rows
  (each priority class is one id range of the table: migration ``0008_events_by_priority``).
* ``floor``: the same rows read in id order, joined and gzip-compressed, nothing sent, nothing
  deleted: what any uplink must at least spend on this machine.
"""

from __future__ import annotations

import gzip
import sqlite3
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


def _build(path: Path, n: int) -> float:
    from edge.buffer import SqliteBuffer

    SqliteBuffer(path).close()  # schema via the migrations
    db = sqlite3.connect(path, isolation_level=None)
    # A bulk load, not the gateway's write path: no journal, indexes built once at the end.
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-200000")
    t = time.perf_counter()
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
    rows, size = db.execute("SELECT COUNT(*), SUM(size) FROM events").fetchone()
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("rows", rows), ("bytes", size), ("arrival", n)])
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    return time.perf_counter() - t


def run(quick: bool = False, n: int | None = None) -> dict:
    from edge.buffer import SqliteBuffer
    from edge.transport import LocalHubTransport
    from edge.uplink import Uplink
    from gondola.clock import SystemClock
    from gondola.hub import LocalHub

    n = n or (500_000 if quick else 10_000_000)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "buffer.sqlite"
        build_s = _build(path, n)
        print(f"drain: built a {n:,}-event backlog in {build_s:.0f} s "
              f"({path.stat().st_size / 2**30:.2f} GiB)", flush=True)

        def floor_rate(limit: int) -> float:
            db = sqlite3.connect(path)
            t = time.perf_counter()
            batch: list[str] = []
            # The order the uplink sends in: by priority class, then arrival (the primary key's order).
            for (body,) in db.execute("SELECT body FROM events ORDER BY id LIMIT ?", (limit,)):
                batch.append(body)
                if len(batch) == 4000:
                    gzip.compress("\n".join(batch).encode(), 6, mtime=0)
                    batch = []
            db.close()
            return limit / (time.perf_counter() - t)

        # The floor reads and compresses every row the drain sends (earlier runs read the first
        # 2 M only, which stay in the page cache after the build: a faster, unfair peer).
        floor_first_2m = floor_rate(min(n, 2_000_000))
        floor = floor_rate(n)
        buf = SqliteBuffer(path)
        hub = LocalHub(Path(d) / "hub.sqlite")
        up = Uplink(buf, LocalHubTransport(hub, "gw-s001"), SystemClock(), store_id="s001")
        t = time.perf_counter()
        sent = up.drain()
        secs = time.perf_counter() - t
        left = buf.stats(0)["buffer_rows"]
        out = {
            "backlog_events": n, "build_s": build_s, "sent": sent, "left": left, "drain_s": secs,
            "ours_events_per_s": sent / secs, "floor_events_per_s": floor,
            "floor_first_2m_events_per_s": floor_first_2m, "ratio_vs_floor_first_2m": (sent / secs) / floor_first_2m,
            "ratio_vs_floor": (sent / secs) / floor, "messages": up.messages_sent,
            "bytes_per_event": up.bytes_sent / max(sent, 1), "hub_messages": hub.count(),
        }
        buf.close()
        hub.close()
    print(f"drain: ours {out['ours_events_per_s']:,.0f} events/s ({n:,} in {secs:.0f} s, {out['messages']:,} "
          f"messages, {out['bytes_per_event']:.1f} B/event) | floor (read + gzip only) "
          f"{floor:,.0f} events/s ({out['ratio_vs_floor']:.0%}; vs the first 2 M rows only: "
          f"{floor_first_2m:,.0f} events/s, {out['ratio_vs_floor_first_2m']:.0%})", flush=True)
    return out


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)

"""The SQLite buffer: idempotence, gap accounting, cap policy, TTL, migrations, backup."""

from __future__ import annotations

import sqlite3

import pytest

from edge.buffer import MIGRATIONS, BufferPolicy, SqliteBuffer
from edge.testing import T0, pos_line, reading, restock
from edge.testing import received as _rx
from gondola.errors import BufferFullError


@pytest.fixture
def buf(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite")
    yield b
    b.close()


def test_redelivered_events_are_counted_as_duplicates_and_stored_once(buf):
    evs = [_rx(pos_line(i, T0 + i)) for i in range(10)]
    assert buf.append(evs, now_ms=T0).stored == 10
    again = buf.append(evs[3:7], now_ms=T0)
    assert (again.stored, again.duplicates, again.kept) == (0, 4, [])
    assert buf.stats(T0)["buffer_rows"] == 10


def test_duplicates_are_recognised_even_after_the_originals_were_sent_and_deleted(buf):
    evs = [_rx(pos_line(i, T0 + i)) for i in range(5)]
    buf.append(evs, now_ms=T0)
    buf.mark_sent([e.id for e in buf.select_backlog(100)], now_ms=T0)
    assert buf.stats(T0)["buffer_rows"] == 0
    assert buf.append(evs, now_ms=T0).duplicates == 5


def test_a_jump_in_seq_opens_a_gap_and_a_late_arrival_fills_it(buf):
    buf.append([_rx(pos_line(s, T0)) for s in (0, 1, 5, 6)], now_ms=T0)
    assert buf.gaps() == {"pos-s001-r01": [(2, 4)]}
    assert buf.stats(T0)["seq_gaps"] == 3
    res = buf.append([_rx(pos_line(3, T0))], now_ms=T0)
    assert res.stored == 1
    assert buf.gaps() == {"pos-s001-r01": [(2, 2), (4, 4)]}
    assert buf.append([_rx(pos_line(3, T0))], now_ms=T0).duplicates == 1
    assert buf.stats(T0)["seq_gaps"] == 2


def test_gaps_and_seq_marks_survive_a_reopen(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite")
    b.append([_rx(pos_line(s, T0)) for s in (0, 4)], now_ms=T0)
    b.close()
    b = SqliteBuffer(tmp_path / "b.sqlite")
    assert b.gaps() == {"pos-s001-r01": [(1, 3)]}
    assert b.append([_rx(pos_line(4, T0)), _rx(pos_line(2, T0))], now_ms=T0).kept == [1]
    b.close()


def test_a_failed_append_changes_neither_the_table_nor_the_seq_marks(buf, monkeypatch):
    buf.append([_rx(pos_line(0, T0))], now_ms=T0)
    real = buf._save_counters
    monkeypatch.setattr(buf, "_save_counters", lambda: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")))
    from gondola.errors import StorageError
    with pytest.raises(StorageError):
        buf.append([_rx(pos_line(5, T0))], now_ms=T0)
    monkeypatch.setattr(buf, "_save_counters", real)
    assert buf.gaps() == {}
    assert buf.append([_rx(pos_line(5, T0))], now_ms=T0).stored == 1
    assert buf.stats(T0)["buffer_rows"] == 2


def test_health_counts_only_open_gaps_and_devices_a_committed_group_added(buf, monkeypatch):
    """Health reads the device epochs that have gaps, not every device: gaps that close, a
    rolled-back group's new device and its gap, and new devices are all counted exactly."""
    buf.append([_rx(pos_line(s, T0)) for s in (0, 3)], now_ms=T0)
    assert (buf.stats(T0)["seq_gaps"], buf.stats(T0)["devices"]) == (2, 1)
    real = buf._save_counters
    monkeypatch.setattr(buf, "_save_counters", lambda: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")))
    from gondola.errors import StorageError
    with pytest.raises(StorageError):  # a new device with a gap, rolled back
        buf.append([_rx(pos_line(s, T0, device_id="pos-s001-r02")) for s in (0, 9)], now_ms=T0)
    monkeypatch.setattr(buf, "_save_counters", real)
    st = buf.stats(T0)
    assert (st["seq_gaps"], st["devices"]) == (2, 1) and buf.gaps() == {"pos-s001-r01": [(1, 2)]}
    buf.append([_rx(pos_line(s, T0)) for s in (1, 2)] + [_rx(reading(s, T0)) for s in (0, 4)], now_ms=T0)
    st = buf.stats(T0)
    assert (st["seq_gaps"], st["devices"]) == (3, 2) and buf.gaps() == {"shelf-s001-f0": [(1, 3)]}
    buf.append([_rx(reading(s, T0)) for s in (1, 2, 3)], now_ms=T0)
    assert (buf.stats(T0)["seq_gaps"], buf.gaps()) == (0, {})


def test_migrations_are_applied_once_in_order_and_recorded(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite")
    b.close()
    b = SqliteBuffer(tmp_path / "b.sqlite")
    assert b.applied_migrations() == sorted(name for name, _ in MIGRATIONS)
    b.close()


def _old_buffer(path, n_migrations: int) -> None:
    """A buffer file as a gateway that knew only the first ``n_migrations`` left it (raw SQL, so
    the file does not depend on today's code): ten POS lines of one device, seq 0-9 but 5, and
    the gap (5, 5) they leave."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, sql in MIGRATIONS[:n_migrations]:
            db.executescript(sql)
            db.execute("INSERT INTO migrations VALUES (?, datetime('now'))", (name,))
        seqs = [s for s in range(11) if s != 5]
        db.executemany("INSERT INTO events (device_id, seq, etype, priority, ts, received_at, facing_id, size, body) "
                       "VALUES ('pos-1', ?, 'pos.line', 1, ?, ?, NULL, 100, '{}')", [(s, T0 + s, T0) for s in seqs])
        db.execute("INSERT INTO devices VALUES ('pos-1', 10, 10, 0, ?, ?)", (T0, T0))
        db.execute("INSERT INTO gaps VALUES ('pos-1', 5, 5, ?, 0)", (T0,))


@pytest.mark.parametrize("n_migrations", [4, 5])
def test_a_buffer_made_by_an_older_gateway_is_migrated_in_place_and_keeps_its_rows(tmp_path, n_migrations):
    path = tmp_path / "old.sqlite"
    _old_buffer(path, n_migrations)

    def indexes():
        with sqlite3.connect(path) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}

    b = SqliteBuffer(path)
    assert b.applied_migrations() == sorted(name for name, _ in MIGRATIONS)
    assert "events_readings" not in indexes() and "events_by_priority" not in indexes()  # 0008: the key orders
    assert [e.seq for e in b.select_backlog(100)] == [s for s in range(11) if s != 5]
    # The old rows are epoch 0: their seq marks and gap carry over, a redelivery is a duplicate,
    # the late seq 5 fills the gap, and an event without epoch continues the same sequence.
    assert b.gaps() == {"pos-1": [(5, 5)]}
    out = b.append([_rx(pos_line(s, T0 + s, device_id="pos-1")) for s in (3, 5, 11)], now_ms=T0)
    assert (out.stored, out.duplicates) == (2, 1) and b.gaps() == {}
    b.close()


def test_migration_0008_gives_each_priority_class_its_own_id_range_and_keeps_arrival_order(tmp_path):
    from edge.buffer import CLASS_BITS, arrival

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path, isolation_level=None) as db:  # a buffer as migrations 0001-0007 left it
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, sql in MIGRATIONS[:7]:
            db.executescript(sql)
            db.execute("INSERT INTO migrations VALUES (?, datetime('now'))", (name,))
        kinds = [("shelf.reading", 3), ("pos.line", 1), ("edge.alert", 0), ("shelf.reading", 3), ("pos.line", 1)]
        db.executemany("INSERT INTO events (device_id, seq, etype, priority, ts, received_at, facing_id, size, body) "
                       "VALUES (?, ?, ?, ?, ?, ?, NULL, 100, '{}')",
                       [(f"d-{t}", i, t, p, T0 + i, T0 + i) for i, (t, p) in enumerate(kinds)])
        db.execute("DELETE FROM events WHERE id = 5")  # the highest id was sent: arrival numbers go on after it
        db.execute("INSERT OR REPLACE INTO meta VALUES ('live_hwm', 2)")
    b = SqliteBuffer(path)
    got = b.select_backlog(10)
    assert [(e.etype, e.seq) for e in got] == [("edge.alert", 2), ("pos.line", 1), ("shelf.reading", 0),
                                               ("shelf.reading", 3)]  # by class, then arrival
    assert [(e.id >> CLASS_BITS, arrival(e.id)) for e in got] == [(0, 3), (1, 2), (3, 1), (3, 4)]
    b.append([_rx(reading(9, T0, device_id="d-new"))], now_ms=T0)
    assert [(e.seq, arrival(e.id)) for e in b.select_live(10)] == [(2, 3), (3, 4), (9, 6)]  # above the mark 2
    assert b.stats(T0 + 100)["oldest_unsent_age_s"] == 0.1  # the oldest across classes: received at T0
    assert b.stats(T0)["unsent_by_priority"] == {"0": 1, "1": 1, "3": 3}  # counted by the migration, then kept
    b.close()


def test_sent_rows_are_deleted_by_range_where_nothing_else_lies_between_and_by_id_where_it_does(buf):
    buf.append([_rx(pos_line(i, T0, device_id=f"pos-{i % 3}")) for i in range(3000)], now_ms=T0)
    rows = buf.select_backlog(3000)
    keep = {rows[10].id, rows[2000].id}  # e.g. the other lane's rows, not in this batch
    buf.mark_sent([e.id for e in rows if e.id not in keep], now_ms=T0)
    left = buf.select_backlog(10)
    assert sorted(e.id for e in left) == sorted(keep) and buf.stats(T0)["buffer_rows"] == 2
    assert buf.stats(T0)["unsent_by_priority"] == {"1": 2}
    assert buf.stats(T0)["buffer_bytes"] == sum(len(e.body) + 96 for e in left)


def test_a_batch_spanning_classes_deletes_only_its_rows_and_leaves_the_class_between(buf):
    buf.append([_rx(pos_line(i, T0)) for i in range(50)] + [_rx(restock(i, T0)) for i in range(50)]
               + [_rx(reading(i, T0)) for i in range(50)], now_ms=T0)
    rows = buf.select_backlog(1000)
    sent = [e.id for e in rows if e.etype != "shelf.restock"]  # POS and readings, not the restocks between
    buf.mark_sent(sent, now_ms=T0)
    assert {e.etype for e in buf.select_backlog(1000)} == {"shelf.restock"} and buf.stats(T0)["buffer_rows"] == 50
    assert buf.stats(T0)["unsent_by_priority"] == {"2": 50}


def test_online_backup_is_a_consistent_copy(buf, tmp_path):
    from edge.backup import backup_buffer

    buf.append([_rx(pos_line(i, T0)) for i in range(100)], now_ms=T0)
    dest = backup_buffer(buf.path, tmp_path / "backup")  # while the buffer is open and in use
    buf.append([_rx(pos_line(i, T0)) for i in range(100, 110)], now_ms=T0)
    copy = SqliteBuffer(dest)
    assert copy.stats(T0)["buffer_rows"] == 100
    assert copy.append([_rx(pos_line(50, T0))], now_ms=T0).duplicates == 1
    copy.close()


def _fill(buf, n_pos, n_read, facings=4, step_ms=10_000):
    evs = []
    for i in range(n_read):
        f = i % facings
        evs.append(_rx(reading(i // facings, T0 + i * step_ms, device_id=f"shelf-f{f}", facing_id=f"f{f}")))
    evs += [_rx(pos_line(i, T0 + i)) for i in range(n_pos)]
    for i in range(0, len(evs), 500):
        buf.append(evs[i:i + 500], now_ms=T0)


def test_the_cap_thins_readings_first_and_never_evicts_pos_lines(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite", BufferPolicy(max_bytes=800_000))
    _fill(b, n_pos=600, n_read=2400)
    stats = b.stats(T0)
    assert stats["buffer_bytes"] <= 800_000
    assert stats["evictions"] > 0
    assert all(k.split("/")[1] == "shelf.reading" for k in stats["evictions_by"])
    assert any(k.startswith("thin_") for k in stats["evictions_by"])
    assert sum(stats["evictions_by"].values()) == stats["evictions"]
    rows = b.select_backlog(10_000)
    assert sum(1 for e in rows if e.etype == "pos.line") == 600
    assert len(rows) + stats["evictions"] == 3000
    assert stats["unsent_by_priority"] == {"1": 600, "3": len(rows) - 600}  # kept right through evictions
    b.close()


def test_thinning_keeps_one_reading_per_facing_per_five_minutes_before_going_coarser(tmp_path):
    # 2400 readings every 10 s on 4 facings (40 s apart per facing): after 5-minute thinning,
    # each facing keeps about one reading per 5 minutes.
    b = SqliteBuffer(tmp_path / "b.sqlite", BufferPolicy(max_bytes=10**9))
    _fill(b, n_pos=0, n_read=2400)
    full = b.stats(T0)["buffer_bytes"]
    b.policy.max_bytes = int(full * 0.5)
    b.enforce_cap(T0)
    rows = b.select_backlog(10_000)
    buckets = {}
    for e in rows:
        ev = __import__("json").loads(e.body)
        buckets.setdefault((ev["data"]["facing_id"], ev["ts"] // 300_000), 0)
        buckets[(ev["data"]["facing_id"], ev["ts"] // 300_000)] += 1
    span_buckets = 2400 * 10_000 // 300_000 + 1
    assert len(buckets) >= 4 * (span_buckets - 1)  # every 5-minute bucket of every facing still has a reading
    assert set(b.stats(T0)["evictions_by"]) == {"thin_5min/shelf.reading"}
    b.close()


def test_a_full_buffer_of_pos_lines_refuses_new_pos_lines_instead_of_dropping_any(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite", BufferPolicy(max_bytes=60_000))
    with pytest.raises(BufferFullError):
        for i in range(0, 1000, 50):
            b.append([_rx(pos_line(s, T0)) for s in range(i, i + 50)], now_ms=T0)
    n = b.stats(T0)["buffer_rows"]
    assert n > 0 and b.stats(T0)["evictions"] == 0
    assert len(b.select_backlog(10_000)) == n
    b.close()


def test_ttl_expires_readings_but_not_pos_lines_and_counts_it(buf):
    old = T0 - 8 * 24 * 3600_000
    buf.append([_rx(reading(0, old), at=old), _rx(pos_line(0, old), at=old), _rx(restock(0, old), at=old)], now_ms=old)
    assert buf.expire(T0) == 1
    assert {e.etype for e in buf.select_backlog(10)} == {"pos.line", "shelf.restock"}
    assert buf.stats(T0)["unsent_by_priority"] == {"1": 1, "2": 1}
    assert buf.stats(T0)["evictions_by"] == {"ttl/shelf.reading": 1}


def test_backlog_selection_follows_priority_then_arrival(buf):
    buf.append([_rx(reading(0, T0)), _rx(restock(0, T0)), _rx(pos_line(0, T0)), _rx(pos_line(1, T0))], now_ms=T0)
    assert [e.etype for e in buf.select_backlog(10)] == ["pos.line", "pos.line", "shelf.restock", "shelf.reading"]


def test_quarantine_is_committed_with_the_group_and_counted(buf):
    buf.append([_rx(pos_line(0, T0))], now_ms=T0, quarantine=[("t", "bad_json", "nope", b"{")])
    assert buf.stats(T0)["quarantined"] == 1
    assert buf.quarantined()[0]["reason"] == "bad_json"


def test_gateway_seqs_advance_only_with_the_events_that_use_them(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite")
    assert b.next_gateway_seq() == 0
    b.append([_rx(pos_line(i, T0, device_id="gw-s001")) for i in range(3)], now_ms=T0, gateway_seqs=3)
    b.close()
    b = SqliteBuffer(tmp_path / "b.sqlite")
    assert b.next_gateway_seq() == 3
    b.close()


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'events%'")}


def _mixed(n: int, start: int = 0) -> list[dict]:
    """POS lines, restocks and readings interleaved, ``n`` events from seq ``start`` on."""
    makers = (pos_line, restock, reading)
    return [_rx(makers[i % 3](i, T0 + i)) for i in range(start, start + n)]


def test_a_drained_backlog_leaves_its_segments_dropped_whole_and_sends_each_row_once_in_order(tmp_path):
    from edge.buffer import segment_bytes

    policy = BufferPolicy(max_bytes=4 * 1024**2)  # 64 KB segments
    b = SqliteBuffer(tmp_path / "b.sqlite", policy)
    assert segment_bytes(policy) == 64 * 1024
    for k in range(0, 6000, 500):
        b.append(_mixed(500, k), now_ms=T0)
    full = _tables(b.path)
    assert len(full) > 20  # each class's rows in segments of 64 KB
    sent: list[tuple[str, int]] = []
    while rows := b.select_backlog(700):
        if len(sent) == 2100:  # new events arrive while the backlog drains
            b.append(_mixed(600, 6000), now_ms=T0)
        b.mark_sent([e.id for e in rows], now_ms=T0)
        sent += [(e.etype, e.seq) for e in rows]
    assert sorted(sent) == sorted((e["type"], e["seq"]) for e in _mixed(6600))  # each once
    # by class (POS, then restocks, then readings), each in arrival order
    order = {"pos.line": 0, "shelf.restock": 1, "shelf.reading": 2}
    first = [x for x in sent if x[1] < 6000]
    assert first == sorted(first, key=lambda x: (order[x[0]], x[1]))
    st = b.stats(T0)
    assert (st["buffer_rows"], st["event_bytes"], st["sent"], st["unsent_by_priority"]) == (0, 0, 6600, {})
    left = _tables(b.path)
    assert len(left) <= 3 and "events" not in left  # at most each class's current segment
    with sqlite3.connect(b.path) as db:
        assert db.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == len(left)
    # what arrives next is stored, found and sent as before; duplicates are still known
    assert b.append(_mixed(3, 6600) + _mixed(3, 0), now_ms=T0).stored == 3
    assert [e.seq for e in b.select_backlog(10)] == [6600, 6601, 6602]
    b.close()


def test_a_sent_prefix_is_not_read_again_after_a_reopen_and_a_gap_in_a_batch_keeps_the_rows_between(tmp_path):
    policy = BufferPolicy(max_bytes=4 * 1024**2)
    b = SqliteBuffer(tmp_path / "b.sqlite", policy)
    b.append([_rx(pos_line(i, T0 + i)) for i in range(2000)], now_ms=T0)
    rows = b.select_backlog(1500)
    b.mark_sent([e.id for e in rows[:1000]], now_ms=T0)  # a prefix: marked, segments dropped
    b.mark_sent([e.id for e in rows[1100:1500]], now_ms=T0)  # after unsent rows: deleted, not marked
    b.close()
    b = SqliteBuffer(tmp_path / "b.sqlite", policy)
    left = [e.seq for e in b.select_backlog(5000)]
    assert left == list(range(1000, 1100)) + list(range(1500, 2000))
    assert b.stats(T0)["buffer_rows"] == 600 and b.stats(T0)["unsent_by_priority"] == {"1": 600}
    b.close()


def _buffer_before_0010(path, rows, meta):
    """A buffer file as migrations 0001-0009 left it (one ``events`` table) holding ``rows``."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, sql in MIGRATIONS[:9]:
            db.executescript(sql)
            db.execute("INSERT INTO migrations VALUES (?, datetime('now'))", (name,))
        db.executemany("INSERT INTO events (id, device_id, seq, etype, priority, ts, received_at, size, body) "
                       "VALUES (?,?,?,?,?,?,?,?,?)", rows)
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)


def test_an_old_buffer_with_rows_in_one_events_table_drains_completely_after_migration_0010(tmp_path):
    path = tmp_path / "old.sqlite"
    rows = [(p << 40 | a, f"d{p}", a, t, p, T0 + a, T0, 100, "{}")
            for a, (t, p) in enumerate([("pos.line", 1), ("shelf.reading", 3)] * 200 + [("edge.alert", 0)], 1)]
    _buffer_before_0010(path, rows, [("arrival", 401), ("rows", 401), ("bytes", 40100),
                                     ("rows_p0", 1), ("rows_p1", 200), ("rows_p3", 200)])
    b = SqliteBuffer(path, BufferPolicy(max_bytes=4 * 1024**2))
    assert "0010_event_segments" in b.applied_migrations()
    b.append([_rx(pos_line(i, T0)) for i in range(50)], now_ms=T0)  # new rows go to a new segment
    assert "events" in _tables(path) and len(_tables(path)) == 2
    got = []
    while rows := b.select_backlog(90):
        b.mark_sent([e.id for e in rows], now_ms=T0)
        got += [(e.etype, e.device_id, e.seq) for e in rows]
    assert got == ([("edge.alert", "d0", 401)] + [("pos.line", "d1", a) for a in range(1, 400, 2)]
                   + [("pos.line", "pos-s001-r01", i) for i in range(50)]
                   + [("shelf.reading", "d3", a) for a in range(2, 401, 2)])
    assert b.stats(T0)["buffer_rows"] == 0 and b.stats(T0)["event_bytes"] == 0
    assert "events" not in _tables(path)  # the old table, all of it sent, is dropped
    b.close()


def test_rows_marked_sent_a_second_time_count_once_and_leave_the_buffer_writable(tmp_path):
    # A repeated mark (both lanes, or a retried call) of rows that lie below their class's sent
    # prefix, still stored in a segment not yet dropped, or of a legacy table's rows once it was
    # dropped, changes nothing: no second count, no error, no transaction left open.
    path = tmp_path / "old.sqlite"
    _buffer_before_0010(path, [(1 << 40 | a, "d1", a, "pos.line", 1, T0 + a, T0, 100, "{}") for a in range(1, 11)],
                        [("arrival", 10), ("rows", 10), ("bytes", 1000), ("rows_p1", 10)])
    b = SqliteBuffer(path, BufferPolicy(max_bytes=4 * 1024**2))  # 64 KB segments
    legacy = [e.id for e in b.select_backlog(10)]
    b.mark_sent(legacy, now_ms=T0)  # the old table, all sent, is dropped
    b.mark_sent(legacy[:3], now_ms=T0)
    b.append([_rx(pos_line(i, T0 + i)) for i in range(3000)], now_ms=T0)
    front = [e.id for e in b.select_backlog(1500)]
    b.mark_sent(front, now_ms=T0)  # a prefix: rows in older segments stay, below the sent prefix
    assert len(_tables(b.path)) >= 2
    b.mark_sent(front, now_ms=T0)
    st = b.stats(T0)
    assert (st["sent"], st["buffer_rows"], st["unsent_by_priority"]) == (1510, 1500, {"1": 1500})
    assert [e.seq for e in b.select_backlog(5000)] == list(range(1500, 3000))
    assert b.append([_rx(pos_line(3000, T0))], now_ms=T0).stored == 1
    b.close()

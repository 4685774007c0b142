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

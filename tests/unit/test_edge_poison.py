"""Issue 10 at the unit level: poison input, sequence epochs and plausibility, bounded and
redacted quarantine, eviction accounting. (tests/integration/test_edge_poison_mosquitto.py
replays the issue's cases through a real Mosquitto with mosquitto_pub.)"""

from __future__ import annotations

import json
import logging

import pytest

from edge.buffer import BufferPolicy, SqliteBuffer, redact_payload
from edge.collector import Collector, QuarantineLog
from edge.testing import T0, pos_line, reading
from edge.testing import received as _rx
from gondola.clock import SimClock
from gondola.topics import device_topic

KEY = b"k" * 32
POS = device_topic("s001", "pos", "pos-s001-r01")


@pytest.fixture
def buf(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite")
    yield b
    b.close()


def _collector(buf, acked=None):
    acked = [] if acked is None else acked
    return Collector(buf, SimClock(T0), store_id="s001", pseudonym_key=KEY, ack=acked.extend), acked


def test_a_restarted_counter_with_a_new_epoch_is_a_new_sequence_not_duplicates_nor_a_gap(buf):
    buf.append([_rx(pos_line(s, T0 + s)) for s in range(100)], now_ms=T0)
    again = buf.append([_rx(pos_line(s, T0 + 1000 + s, epoch=1)) for s in range(5)], now_ms=T0)
    assert (again.stored, again.duplicates) == (5, 0)
    st = buf.stats(T0)
    assert st["seq_gaps"] == 0 and st["buffer_rows"] == 105 and st["devices"] == 1
    # A redelivery of the old epoch is still a duplicate; one of the new epoch too.
    assert buf.append([_rx(pos_line(50, T0 + 50)), _rx(pos_line(2, T0 + 1002, epoch=1))], now_ms=T0).duplicates == 2


@pytest.mark.parametrize("order, stored, gaps", [
    ((1, 0, 2), 3, {}),
    ((2, 0, 3), 3, {"pos-s001-r01": [(1, 1)]}),
    ((5, 1, 2, 3, 4, 0), 6, {}),
])
def test_a_first_event_arriving_after_later_ones_is_kept_and_gaps_are_exact(buf, order, stored, gaps):
    out = buf.append([_rx(pos_line(s, T0 + s)) for s in order], now_ms=T0)
    assert (out.stored, out.duplicates) == (stored, 0)
    assert buf.gaps() == gaps
    buf.close()
    reopened = SqliteBuffer(buf.path)  # the low mark survives a restart
    assert reopened.append([_rx(pos_line(s, T0 + s)) for s in order], now_ms=T0).duplicates == len(order)
    reopened.close()


def test_one_event_with_seq_2_63_minus_1_is_quarantined_not_a_gap_of_nine_quintillion(buf):
    buf.append([_rx(pos_line(s, T0 + s)) for s in range(3)], now_ms=T0)
    out = buf.append([_rx(pos_line(2**63 - 1, T0 + 3)), _rx(pos_line(3, T0 + 4))], now_ms=T0)
    assert out.rejected == [(0, "implausible_seq")] and out.stored == 1
    st = buf.stats(T0)
    assert st["seq_gaps"] == 0 and st["implausible_seqs"] == 1 and st["quarantined"] == 1
    assert buf.quarantined(1)[0]["reason"] == "implausible_seq"


def test_a_device_that_really_jumped_is_followed_after_three_consecutive_events(buf):
    buf.append([_rx(pos_line(s, T0 + s)) for s in range(3)], now_ms=T0)
    far = 50_000_000
    out = buf.append([_rx(pos_line(far + i, T0 + 10 + i)) for i in range(5)], now_ms=T0)
    assert [r for _, r in out.rejected] == ["implausible_seq"] * 2 and out.stored == 3
    # The two quarantined ones are a counted gap: a redelivery of them is taken, and fills it.
    assert buf.stats(T0)["seq_reanchored"] == 1 and buf.gaps() == {"pos-s001-r01": [(far, far + 1)]}
    assert buf.append([_rx(pos_line(far + i, T0 + 10 + i)) for i in (0, 1, 5)], now_ms=T0).stored == 3
    assert buf.stats(T0)["seq_gaps"] == 0


def test_a_repeat_with_other_content_is_quarantined_as_conflicting_and_counted(buf):
    buf.append([_rx(pos_line(s, T0 + s)) for s in range(3)], now_ms=T0)
    out = buf.append([_rx(pos_line(1, T0 + 1)), _rx(pos_line(1, T0 + 1, qty=7))], now_ms=T0)
    assert out.duplicates == 1 and out.rejected == [(1, "conflicting_repeat")]
    assert buf.stats(T0)["conflicting_repeats"] == 1
    assert buf.quarantined(1)[0]["reason"] == "conflicting_repeat"


def test_the_issues_poison_message_is_quarantined_with_an_escaped_reason_and_the_writer_goes_on(buf):
    c, acked = _collector(buf)
    poison = json.dumps(pos_line(0, T0)).replace('"qty"', '"\\ud800": 1, "qty"').encode()
    good = json.dumps(pos_line(1, T0)).encode()
    c.commit_group([(POS, poison, (1, 1)), (POS, good, (1, 2))])
    assert acked == [(1, 1), (1, 2)]
    (q,) = buf.quarantined()
    assert q["reason"] == "unknown_field" and "\\ud800" in q["detail"] and q["detail"].isascii()
    assert buf.stats(T0)["buffer_rows"] == 1


def test_any_failure_to_store_a_message_quarantines_it_once_acks_it_and_keeps_the_rest(buf, monkeypatch, caplog):
    c, acked = _collector(buf)
    real = buf.append

    def flaky(events, **kw):  # a bug that trips on one device's events, whatever the group
        if any(e["device_id"] == "pos-s001-r09" for e in events):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
        return real(events, **kw)

    monkeypatch.setattr(buf, "append", flaky)
    bad_topic = device_topic("s001", "pos", "pos-s001-r09")
    group = [(POS, json.dumps(pos_line(0, T0)).encode(), (1, 1)),
             (bad_topic, json.dumps(pos_line(0, T0, device_id="pos-s001-r09")).encode(), (1, 2)),
             (POS, json.dumps(pos_line(1, T0)).encode(), (1, 3))]
    with caplog.at_level(logging.ERROR, logger="edge.collector"):
        fresh = c.commit_group(group)
    assert [e["seq"] for e in fresh] == [0, 1] and acked == [(1, 1), (1, 2), (1, 3)]
    assert [q["reason"] for q in buf.quarantined()] == ["internal"]
    assert c.poisoned == 1 and c.writer_errors == 1
    assert sum("could not be stored" in r.message for r in caplog.records) == 1


def test_the_writer_thread_survives_an_exception_outside_commit(buf, monkeypatch):
    c, acked = _collector(buf)
    calls = {"n": 0}
    real = c.commit_group

    def boom(group):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("unexpected")
        return real(group)

    monkeypatch.setattr(c, "commit_group", boom)
    c.start()
    c.handle(POS, json.dumps(pos_line(0, T0)).encode(), (1, 1))
    c.handle(POS, json.dumps(pos_line(1, T0)).encode(), (1, 2))
    import time
    deadline = time.monotonic() + 10
    while not acked and time.monotonic() < deadline:
        time.sleep(0.01)
        if calls["n"] == 1:
            c.handle(POS, json.dumps(pos_line(2, T0)).encode(), (1, 3))
    c.stop()
    assert c.alive is False and c.writer_errors == 1 and acked


def test_quarantine_is_redacted_and_never_repeats_a_loyalty_id(buf):
    c, _ = _collector(buf)
    typed = json.dumps(pos_line(0, T0) | {"data": pos_line(0, T0)["data"] | {"loyalty_id": 3333}}).encode()
    device_pid = json.dumps(pos_line(1, T0) | {"data": pos_line(1, T0)["data"] | {"loyalty_pid": "4929-1111"}}).encode()
    broken = b'{"data": {"loyalty_id": "4929-2222", "qty": ' + b"x" * 5000
    c.commit_group([(POS, typed, (1, 1)), (POS, device_pid, (1, 2)), (POS, broken, (1, 3))])
    rows = buf.quarantined()
    assert sorted(r["reason"] for r in rows) == ["bad_json", "device_pseudonym", "wrong_type"]
    for r in rows:
        text = r["payload"] + r["detail"].encode()
        assert b"3333" not in text and b"4929" not in text and b"loyalty" not in r["payload"].replace(b"<personal", b"")
        assert len(r["payload"]) <= 2048
    assert redact_payload(b'{"a": {"loyalty_pid": "x"}, "b": 1}') == b'{"a":{},"b":1}'


def test_junk_never_grows_the_files_past_the_byte_cap(tmp_path):
    cap = 2 * 1024**2
    buf = SqliteBuffer(tmp_path / "b.sqlite", BufferPolicy(max_bytes=cap))
    c, _ = _collector(buf)
    junk = b"{" + b"j" * 60_000
    for g in range(15):
        c.commit_group([(POS, junk, (1, i)) for i in range(100)])
        c.commit_group([(POS, b'{"bad": "' + b"k" * 15_000 + b'"}', (1, i)) for i in range(100)])
    buf.enforce_cap(T0)
    st = buf.stats(T0)
    assert st["quarantined"] == 3000 and st["quarantine_bytes"] <= cap * 0.05
    assert st["file_bytes"] <= cap, st["file_bytes"]
    buf.close()


def test_rows_evicted_while_their_batch_was_sent_count_as_sent_not_both(tmp_path):
    buf = SqliteBuffer(tmp_path / "b.sqlite", BufferPolicy(max_bytes=200_000))
    buf.append([_rx(reading(i, T0 + i * 1000)) for i in range(400)], now_ms=T0)
    batch = buf.select_backlog(400)
    buf.append([_rx(reading(i, T0 + i * 1000)) for i in range(400, 800)], now_ms=T0)  # evicts old readings
    evicted = buf.stats(T0)["evictions"]
    assert evicted > 0
    buf.mark_sent([e.id for e in batch], now_ms=T0)  # the hub took the whole batch
    st = buf.stats(T0)
    assert st["sent"] + st["evictions"] + st["buffer_rows"] == st["received"] == 800
    assert st["sent"] == 400 and sum(st["evictions_by"].values()) == st["evictions"]
    buf.close()


def test_quarantine_is_logged_once_per_device_and_reason_per_interval_with_counts(caplog):
    clock = SimClock(T0)
    qlog = QuarantineLog(clock, interval_s=60)
    with caplog.at_level(logging.WARNING, logger="edge.collector"):
        said = [qlog.note(POS, "bad_json") for _ in range(50)]
        clock.advance_to(T0 + 61_000)
        said.append(qlog.note(POS, "bad_json"))
        said.append(qlog.note(POS, "wrong_type"))
    assert said.count(True) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert "quarantined 50 more message(s) from device pos-s001-r01" in lines[1]
    assert all("{" not in line for line in lines)


def test_the_deployed_broker_bounds_what_it_holds_for_each_client_in_messages_and_bytes():
    from pathlib import Path

    from edge.broker import MOSQUITTO_CONF

    conf = (Path(__file__).resolve().parents[2] / "deployment/iot-edge/modules/mosquitto/mosquitto.conf").read_text()
    for text in (conf, MOSQUITTO_CONF):
        settings = dict(line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")
                        and len(line.split(None, 1)) == 2)
        for key in ("max_inflight_messages", "max_inflight_bytes", "max_queued_messages", "max_queued_bytes",
                    "max_packet_size"):
            assert int(settings[key]) > 0, key  # 0 would mean unlimited


def test_a_first_event_with_an_absurd_seq_does_not_make_the_devices_real_events_duplicates(buf):
    out = buf.append([_rx(pos_line(2**63 - 1, T0))] + [_rx(pos_line(s, T0 + s)) for s in range(6)], now_ms=T0)
    # 0 and 1 are refused while the outlier holds the marks; at 2 the real range takes over.
    assert [r for _, r in out.rejected] == ["implausible_seq"] * 2
    assert [k for k in out.kept] == [0, 3, 4, 5, 6] and out.duplicates == 0
    assert buf.gaps() == {"pos-s001-r01": [(0, 1)]}
    again = buf.append([_rx(pos_line(s, T0 + s)) for s in (0, 1, 6)], now_ms=T0)  # redelivered, then on
    assert (again.stored, again.duplicates) == (3, 0) and buf.gaps() == {}

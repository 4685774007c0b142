"""The collector: contract checks, quarantine with reasons, pseudonymization, never crashing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.buffer import SqliteBuffer
from edge.collector import Collector, check_payload
from edge.testing import T0, pos_line, reading
from gondola.clock import SimClock
from gondola.errors import ContractError
from gondola.privacy import pseudonymize
from gondola.topics import device_topic

KEY = b"k" * 32
POS_TOPIC = device_topic("s001", "pos", "pos-s001-r01")


@pytest.fixture
def collector(tmp_path):
    buf = SqliteBuffer(tmp_path / "b.sqlite")
    acked = []
    c = Collector(buf, SimClock(T0), store_id="s001", pseudonym_key=KEY, ack=acked.extend)
    c.acked = acked
    yield c
    buf.close()


def test_loyalty_ids_are_replaced_by_their_keyed_pseudonym_before_storage(collector):
    ev = pos_line(0, T0, loyalty_id="card-123")
    collector.commit_group([(POS_TOPIC, json.dumps(ev).encode(), (1, 1))])
    (row,) = collector.buffer.select_backlog(10)
    stored = json.loads(row.body)
    assert "loyalty_id" not in stored["data"] and "card-123" not in row.body
    assert stored["data"]["loyalty_pid"] == pseudonymize("card-123", KEY)
    assert stored["received_at"] == T0


def test_the_stored_body_is_the_devices_event_plus_received_at(collector):
    ev = pos_line(0, T0)
    collector.commit_group([(POS_TOPIC, json.dumps(ev).encode(), (1, 1))])
    assert json.loads(collector.buffer.select_backlog(1)[0].body) == ev | {"received_at": T0}


@pytest.mark.parametrize("topic,payload,reason", [
    (POS_TOPIC, b"{not json", "bad_json"),
    (POS_TOPIC, b"[1,2]", "not_object"),
    ("some/other/topic", json.dumps(pos_line(0, T0)).encode(), "bad_topic"),
    (device_topic("s002", "pos", "pos-s001-r01"), json.dumps(pos_line(0, T0)).encode(), "wrong_store"),
    (device_topic("s001", "pos", "pos-x"), json.dumps(pos_line(0, T0)).encode(), "topic_mismatch"),
    (POS_TOPIC, json.dumps(pos_line(0, T0) | {"type": "pos.lime"}).encode(), "unknown_type"),
])
def test_bad_messages_are_quarantined_with_their_reason(collector, topic, payload, reason):
    with pytest.raises(ContractError) as exc:
        check_payload(topic, payload, store_id="s001", now_ms=T0, pseudonym_key=KEY)
    assert exc.value.reason == reason
    collector.commit_group([(topic, payload, (1, 7))])
    assert collector.buffer.quarantined()[0]["reason"] == reason
    assert collector.acked == [(1, 7)]  # quarantined messages are acknowledged too: retrying cannot fix them


@pytest.mark.parametrize("payload", [
    json.dumps(pos_line(0, T0), indent=2).encode(),           # multi-line
    b"{" + b" " * 8000 + json.dumps(pos_line(0, T0)).encode()[1:],  # padded
    json.dumps(pos_line(0, T0, sku="k\u00e9")).encode(),      # non-ASCII escapes
])
def test_odd_but_valid_payloads_are_stored_as_compact_one_line_json(payload):
    event, body = check_payload(POS_TOPIC, payload, store_id="s001", now_ms=T0, pseudonym_key=KEY)
    assert "\n" not in body and len(body) < 1000 and json.loads(body) == event
    body.encode("utf-8")


def test_oversized_payloads_are_quarantined_unread():
    with pytest.raises(ContractError) as exc:
        check_payload(POS_TOPIC, b"{" + b" " * 20_000 + b"}", store_id="s001", now_ms=T0, pseudonym_key=KEY)
    assert exc.value.reason == "too_large"


def test_a_loyalty_id_without_a_key_is_quarantined_not_stored_in_clear(tmp_path):
    buf = SqliteBuffer(tmp_path / "b.sqlite")
    c = Collector(buf, SimClock(T0), store_id="s001", pseudonym_key=None)
    c.commit_group([(POS_TOPIC, json.dumps(pos_line(0, T0, loyalty_id="card")).encode(), (1, 1))])
    assert buf.stats(T0)["buffer_rows"] == 0 and buf.quarantined()[0]["reason"] == "no_pseudonym_key"
    buf.close()


def test_acks_are_released_only_after_the_group_is_committed(collector, monkeypatch):
    order = []
    real_append = collector.buffer.append
    monkeypatch.setattr(collector.buffer, "append", lambda *a, **k: (order.append("commit"), real_append(*a, **k))[1])
    collector.ack = lambda toks: order.append(("ack", list(toks)))
    msgs = [(POS_TOPIC, json.dumps(pos_line(i, T0)).encode(), (1, i + 1)) for i in range(3)]
    collector.commit_group(msgs)
    assert order == ["commit", ("ack", [(1, 1), (1, 2), (1, 3)])]


# ---- property-based fuzz ------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def _mutations():
    good = pos_line(0, T0)
    keys = list(good) + [f"data.{k}" for k in good["data"]]
    mutate = st.tuples(st.sampled_from(keys), _json_values | st.just("__delete__")).map(
        lambda kv: _mutate(good, *kv))
    return st.one_of(
        st.binary(max_size=300),
        _json_values.map(lambda v: json.dumps(v).encode()),
        mutate,
        st.text(max_size=200).map(str.encode),
    )


def _mutate(good, key, value):
    ev = json.loads(json.dumps(good))
    target, name = (ev["data"], key[5:]) if key.startswith("data.") else (ev, key)
    if value == "__delete__":
        target.pop(name, None)
    else:
        target[name] = value
    return json.dumps(ev).encode()


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(_mutations(), min_size=1, max_size=60))
def test_fuzz_malformed_payloads_never_crash_and_never_disturb_good_events(tmp_path_factory, bad):
    buf = SqliteBuffer(tmp_path_factory.mktemp("fuzz") / "b.sqlite")
    c = Collector(buf, SimClock(T0), store_id="s001", pseudonym_key=KEY)
    goods = [(device_topic("s001", "shelf", "shelf-s001-f0"), json.dumps(reading(i, T0)).encode(), (1, i))
             for i in range(len(bad))]
    group = [m for pair in zip(goods, [(POS_TOPIC, p, (1, 0)) for p in bad]) for m in pair]
    c.commit_group(group)
    stored = [json.loads(e.body) for e in buf.select_backlog(10_000)]
    shelf = [e for e in stored if e["device_id"] == "shelf-s001-f0"]
    assert [e["seq"] for e in shelf] == list(range(len(bad)))
    others = len(stored) - len(shelf)  # mutations that happen to be valid pos lines (at most seq 0 once)
    quarantined = buf.stats(T0)["quarantined"]
    dups = buf.stats(T0)["duplicates"]
    assert quarantined + others + dups == len(bad)
    assert all(q["reason"] for q in buf.quarantined(10_000))
    assert c.committed == len(group)
    buf.close()


def test_a_handhelds_gap_scan_is_stored_and_drains_before_sensor_readings(collector):
    from gondola.contracts import make_event

    scan = make_event("shelf.gap_scan", store_id="s001", device_id="hh-s001-1", seq=7, ts=T0 + 5,
                      data={"facing_id": "f3", "sku": "k3", "round_id": "s001-gap-1", "staff_id": "staff-020"})
    collector.commit_group([(device_topic("s001", "shelf", "shelf-s001-f0"), json.dumps(reading(0, T0)).encode(), (1, 1)),
                            (device_topic("s001", "handheld", "hh-s001-1"), json.dumps(scan).encode(), (1, 2))])
    rows = collector.buffer.select_backlog(10)
    assert [(r.etype, r.priority) for r in rows] == [("shelf.gap_scan", 2), ("shelf.reading", 3)]
    assert json.loads(rows[0].body)["data"]["facing_id"] == "f3"


def test_a_group_counts_as_committed_only_after_inference_has_seen_it(tmp_path):
    # wait_committed is how callers (the cycle's tests, the demo) know the facing state includes
    # what was stored: it was notified before the inference update, a race seen under load.
    import threading

    buf = SqliteBuffer(tmp_path / "b.sqlite")
    gate, seen, acked = threading.Event(), [], []

    def observe(events):
        gate.wait(10)
        seen.extend(events)

    c = Collector(buf, SimClock(T0), store_id="s001", pseudonym_key=KEY, ack=acked.extend, on_committed=observe)
    writer = threading.Thread(target=c.commit_group, args=([(POS_TOPIC, json.dumps(pos_line(0, T0)).encode(), (1, 1))],))
    writer.start()
    try:
        assert not c.wait_committed(1, 0.3) and seen == []
        assert acked == [(1, 1)]  # durable and acknowledged while inference is still busy
    finally:
        gate.set()
        writer.join(10)
    assert c.wait_committed(1, 5) and len(seen) == 1
    buf.close()

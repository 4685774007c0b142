"""The uplink: priorities, the live lane, 256 KB batches, send-then-mark, backoff, bandwidth."""

from __future__ import annotations

import json
import random

import pytest

from edge.buffer import SqliteBuffer
from edge.testing import T0, pos_line, reading
from edge.testing import received as _rx
from edge.transport import FlakyTransport, LocalHubTransport
from edge.uplink import Backoff, TokenBucket, Uplink
from gondola.clock import SimClock
from gondola.contracts import MAX_MESSAGE_BYTES, decode_batch, make_event
from gondola.errors import TransportError
from gondola.hub import LocalHub


class Recorder:
    """A transport that keeps what it accepted (decoded) and can refuse."""

    def __init__(self):
        self.messages = []
        self.refuse = False

    def send(self, message):
        if self.refuse:
            raise TransportError("down")
        self.messages.append((message, decode_batch(message.body, message.properties)))

    def events(self):
        return [e for _, evs in self.messages for e in evs]

    def close(self):
        pass


@pytest.fixture
def buf(tmp_path):
    b = SqliteBuffer(tmp_path / "b.sqlite")
    yield b
    b.close()


def alert(seq, ts=T0):
    return make_event("edge.alert", store_id="s001", device_id="gw-s001", seq=seq, ts=ts, data={
        "facing_id": "f1", "sku": "k1", "state": "raised", "probability": 0.9, "horizon_min": 120, "scorer": "x"})


def test_alerts_go_first_then_pos_then_readings(buf):
    buf.append([_rx(reading(0, T0)), _rx(pos_line(0, T0)), _rx(alert(0))], now_ms=T0)
    hub = Recorder()
    Uplink(buf, hub, SimClock(T0), store_id="s001", live_share=0.0).drain()
    assert [e["type"] for e in hub.events()] == ["edge.alert", "pos.line", "shelf.reading"]


def test_fresh_events_get_a_share_of_every_round_behind_an_old_backlog(buf):
    buf.append([_rx(pos_line(i, T0 + i)) for i in range(5000)], now_ms=T0)
    buf.append([_rx(reading(i, T0 + 10**6 + i)) for i in range(10)], now_ms=T0)
    hub = Recorder()
    up = Uplink(buf, hub, SimClock(T0), store_id="s001", round_rows=1000, live_share=0.2)
    assert up.uplink_once() == 1000
    sent = hub.events()
    assert sum(e["type"] == "shelf.reading" for e in sent) == 10  # the newest made it in round one
    assert sum(e["type"] == "pos.line" for e in sent) == 990


def test_each_lane_ships_a_device_in_seq_order_and_everything_arrives_once(buf):
    rng = random.Random(1)
    seqs = {}
    hub = Recorder()
    up = Uplink(buf, hub, SimClock(T0), store_id="s001", round_rows=300, live_share=0.25)
    for _ in range(30):
        batch = []
        for _ in range(rng.randrange(50, 200)):
            dev = f"pos-{rng.randrange(4)}"
            seqs[dev] = seqs.get(dev, -1) + 1
            batch.append(_rx(pos_line(seqs[dev], T0, device_id=dev)))
        buf.append(batch, now_ms=T0)
        up.uplink_once()
    up.drain()
    lanes = {}
    for msg, evs in hub.messages:
        for e in evs:
            lanes.setdefault((msg.properties["lane"], e["device_id"]), []).append(e["seq"])
    for key, got in lanes.items():
        assert got == sorted(got), key
    keys = [(e["device_id"], e["seq"]) for e in hub.events()]
    assert len(keys) == len(set(keys)) == sum(n + 1 for n in seqs.values())
    assert {lane for lane, _ in lanes} == {"live", "backlog"}


@pytest.mark.slow
def test_batches_stay_under_256_kb_encoded_and_decode_with_the_contract(buf):
    rnd = random.Random(0)
    # Random SKUs barely compress: 10,000 events need several 256 KB messages.
    evs = [_rx(pos_line(i, T0 + i, sku="".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=120))))
           for i in range(10_000)]
    buf.append(evs, now_ms=T0)
    hub = Recorder()
    Uplink(buf, hub, SimClock(T0), store_id="s001", round_rows=10_000, live_share=0.0).drain()
    assert len(hub.messages) > 1
    assert all(m.size <= MAX_MESSAGE_BYTES for m, _ in hub.messages)
    assert [e["seq"] for e in hub.events()] == list(range(10_000))
    assert hub.events()[0] == json.loads(json.dumps(evs[0]))


def test_nothing_is_marked_sent_when_the_hub_refuses(buf):
    buf.append([_rx(pos_line(i, T0)) for i in range(100)], now_ms=T0)
    hub = Recorder()
    hub.refuse = True
    clock = SimClock(T0)
    up = Uplink(buf, hub, clock, store_id="s001")
    assert up.uplink_once() == 0
    assert buf.stats(T0)["buffer_rows"] == 100
    assert up.failures == 1 and up.next_attempt_ms > T0
    hub.refuse = False
    assert up.uplink_once() == 0  # still backing off
    clock.advance_to(up.next_attempt_ms)
    assert up.uplink_once() == 100
    assert buf.stats(T0)["buffer_rows"] == 0


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    b = Backoff(base_ms=1000, cap_ms=60_000, rng=random.Random(3))
    for n in range(1, 12):
        d = min(60_000, 1000 * 2 ** (n - 1))
        delays = {b.delay_ms(n) for _ in range(50)}
        assert all(d / 2 <= x <= d for x in delays)
        assert len(delays) > 1


def test_the_bandwidth_cap_paces_sends():
    slept = []
    now = [0.0]
    bucket = TokenBucket(1000, sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)),
                         monotonic=lambda: now[0])
    for _ in range(5):
        bucket.take(1000)
    assert sum(slept) == pytest.approx(4.0)


def test_a_restarted_uplink_resumes_at_the_first_unsent_event(tmp_path):
    path = tmp_path / "b.sqlite"
    b = SqliteBuffer(path)
    b.append([_rx(pos_line(i, T0)) for i in range(3000)], now_ms=T0)
    hub = Recorder()
    Uplink(b, hub, SimClock(T0), store_id="s001", round_rows=1000, live_share=0.0).uplink_once()
    b.close()
    b = SqliteBuffer(path)
    Uplink(b, hub, SimClock(T0), store_id="s001", round_rows=1000, live_share=0.0).drain()
    assert [e["seq"] for e in hub.events()] == list(range(3000))
    b.close()


def test_local_hub_transport_maps_storage_errors_and_serves_the_twin(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    t = LocalHubTransport(hub, "gw-s001")
    seen = []
    t.on_desired(seen.append)
    hub.set_desired("gw-s001", t.module_id, {"model_version": "v2"})
    assert t.poll_desired() and seen[0]["model_version"] == "v2"
    assert not t.poll_desired()
    t.patch_reported({"model_version": "v2"})
    assert t.get_twin()["reported"] == {"model_version": "v2"}
    hub.close()
    from gondola.contracts import encode_batch
    with pytest.raises(TransportError):
        t.send(encode_batch([pos_line(0, T0)], store_id="s001"))


def test_flaky_transport_refuses_while_offline(tmp_path):
    inner = Recorder()
    t = FlakyTransport(inner)
    t.online = False
    from gondola.contracts import encode_batch
    with pytest.raises(TransportError):
        t.send(encode_batch([pos_line(0, T0)], store_id="s001"))
    t.online = True
    t.send(encode_batch([pos_line(0, T0)], store_id="s001"))
    assert t.refused == 1 and len(inner.messages) == 1


def test_the_freshness_budget_holds_data_back_sends_alerts_at_once_and_fills_their_billing_units(buf):
    from edge.uplink import billed_units

    hub = Recorder()
    clock = SimClock(T0)
    up = Uplink(buf, hub, clock, store_id="s001", delay_ms=15 * 60_000)
    # 10 minutes of readings, one a second: nothing is due yet.
    buf.append([_rx(reading(i, T0 + i * 1000), at=T0 + i * 1000) for i in range(600)], now_ms=T0)
    clock.advance_to(T0 + 600_000)
    assert up.uplink_once() == 0 and hub.messages == []
    # An alert goes at once, with the oldest readings that fit in the 4 KB it pays for anyway.
    buf.append([_rx(alert(0, T0 + 600_000), at=T0 + 600_000)], now_ms=T0 + 600_000)
    sent = up.uplink_once()
    msg, evs = hub.messages[0]
    assert 1 < sent < 601 and evs[0]["type"] == "edge.alert" and billed_units(msg) == 1
    assert [e["seq"] for e in evs[1:]] == list(range(sent - 1))  # oldest first, in order
    # The budget's small messages carry the dictionary encoding (a drain's big ones gzip, below).
    assert msg.properties["content-encoding"] == "deflate-dict1"
    assert billed_units(encode_lines_of(evs, sent)) == 2  # the unit was full: one more reading needs another
    # The rest waits until its oldest event is 15 minutes old, then goes.
    clock.advance_to(T0 + (sent - 1) * 1000 + 15 * 60_000 - 1)
    assert up.uplink_once() == 0
    clock.advance_to(T0 + (sent - 1) * 1000 + 15 * 60_000)
    assert up.uplink_once() > 0
    waits = [(clock.now_ms() - e["received_at"]) for _, evs in hub.messages[1:] for e in evs]
    assert max(waits) <= 15 * 60_000
    now = clock.now_ms()
    buf.append([_rx(reading(i, now), at=now) for i in range(600, 700)], now_ms=now)
    before = len(hub.messages)
    up.drain()  # whatever the budget
    assert buf.stats(T0)["buffer_rows"] == 0
    assert {m.properties["content-encoding"] for m, _ in hub.messages[before:]} == {"gzip"}
    assert sorted(e["seq"] for e in hub.events() if e["type"] == "shelf.reading") == list(range(700))


def encode_lines_of(evs, sent):
    """The first message of the test above with the next waiting reading added."""
    from edge.buffer import StoredEvent, encode
    from edge.uplink import encode_lines

    nxt = reading(sent - 1, T0 + (sent - 1) * 1000)
    stored = [StoredEvent(i, e["device_id"], e["seq"], e["type"], 0, encode(e)) for i, e in enumerate(evs)]
    extra = StoredEvent(len(evs), nxt["device_id"], nxt["seq"], nxt["type"], 3,
                        encode(_rx(nxt, at=T0 + (sent - 1) * 1000)))
    return encode_lines(sorted(stored + [extra], key=lambda e: e.device_id), store_id="s001",
                        encoding="deflate-dict1", level=9)


def test_a_full_round_waiting_goes_at_once_whatever_the_budget(buf):
    hub = Recorder()
    up = Uplink(buf, hub, SimClock(T0), store_id="s001", round_rows=500, delay_ms=15 * 60_000)
    buf.append([_rx(pos_line(i, T0)) for i in range(499)], now_ms=T0)
    assert up.uplink_once() == 0
    buf.append([_rx(pos_line(499, T0))], now_ms=T0)
    assert up.uplink_once() == 500

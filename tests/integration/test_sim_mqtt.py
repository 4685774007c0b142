"""Live mode against a real Mosquitto broker: what devices send is what a subscriber gets."""

from __future__ import annotations

import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from firmware_sim import Scenario, StoreSim
from firmware_sim.cli import main
from firmware_sim.live import run_live
from firmware_sim.mqtt import MqttPublisher, bare_publish
from gondola.clock import DAY_MS, SimClock
from gondola.contracts import parse_event
from gondola.errors import TransportError
from gondola.topics import store_subscription

pytestmark = pytest.mark.mosquitto

START = 1_767_571_200_000


class Subscriber:
    """A QoS 1 subscriber that keeps every (topic, payload) it receives."""

    def __init__(self, port: int, stores: list[str]):
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(client_id=f"test-sub-{time.monotonic_ns()}", clean_session=True)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(f, 1) for s in stores for f in store_subscription(s)])
        self.client.loop_start()
        assert self._ready.wait(5)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.received.append((msg.topic, msg.payload))

    def wait_for(self, n: int, timeout: float = 30.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.02)
        return list(self.received)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_publish_many_delivers_every_message_with_duplicates_and_malformed_ones(mosquitto):
    sub = Subscriber(mosquitto.port, ["s001", "s002"])
    sc = Scenario.with_faults(duplicates=0.03, malformed=0.01, drops=0.01)
    stores = [StoreSim(s, 60, 3, START, sc) for s in ("s001", "s002")]
    msgs = [m for s in stores for m in s.run_until(START + DAY_MS - 1)]
    with MqttPublisher("127.0.0.1", mosquitto.port, window=50) as pub:
        assert pub.publish_many(msgs) == len(msgs)
        assert pub.acked == len(msgs)
    got = sub.wait_for(len(msgs))
    sub.close()
    assert Counter(got) == Counter((m.topic, m.payload) for m in msgs)
    valid = set()
    for _, payload in got:
        try:
            event = parse_event(payload)
        except Exception:
            continue
        if not event["data"]["sku"].startswith("sku-unknown"):
            valid.add((event["device_id"], event["seq"]))
    emitted = set()
    for s in stores:
        emitted |= set().union(*s.truth.emitted.values())
    assert valid == emitted


def test_run_live_in_lock_step_moves_a_sim_clock_and_delivers_everything(mosquitto):
    sub = Subscriber(mosquitto.port, ["s001"])
    store = StoreSim("s001", 40, 1, START)
    clock = SimClock(START)
    ticks = []
    with MqttPublisher("127.0.0.1", mosquitto.port) as pub:
        stats = run_live([store], pub, until_ms=START + DAY_MS, step_ms=60 * 60_000, clock=clock,
                         lock_step=True, on_tick=lambda now, n: ticks.append((now, n, len(sub.received))))
    assert clock.now_ms() == START + DAY_MS
    assert stats.ticks == 24 and stats.messages == sum(n for _, n, _ in ticks)
    assert sub.wait_for(stats.messages) and len(sub.received) == stats.messages
    sub.close()


def test_paced_live_run_reaches_the_end_time(mosquitto):
    store = StoreSim("s001", 30, 1, START)
    with MqttPublisher("127.0.0.1", mosquitto.port) as pub:
        stats = run_live([store], pub, until_ms=START + 6 * 3600_000, speed=6 * 3600 / 0.5, tick_s=0.05)
    assert stats.sim_end_ms == START + 6 * 3600_000 and stats.ticks > 1


def test_bare_publisher_reference_gets_every_puback(mosquitto):
    items = [("gondola/s001/pos/pos-s001-r01", b"x" * 200)] * 500
    assert bare_publish("127.0.0.1", mosquitto.port, items, window=100) > 0


def test_publisher_raises_transport_error_when_no_broker_listens():
    from tests.conftest import free_port

    with pytest.raises(TransportError):
        MqttPublisher("127.0.0.1", free_port()).connect(timeout=1.0)


def test_cli_live_publishes_a_day_of_one_store(mosquitto, capsys):
    sub = Subscriber(mosquitto.port, ["s001"])
    code = main(["live", "--broker", f"127.0.0.1:{mosquitto.port}", "--stores", "1", "--skus", "30", "--days", "1"])
    assert code == 0
    out = capsys.readouterr().out
    published = int(out.split()[1].replace(",", ""))
    assert published > 0
    assert len(sub.wait_for(published)) == published
    sub.close()

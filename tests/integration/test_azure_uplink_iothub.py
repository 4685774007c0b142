"""The gateway's real uplink over ``IotHubTransport`` and ``azure-iot-device``, across an outage.

Buffer (SQLite) -> ``edge.uplink.Uplink`` -> ``IotHubTransport`` -> MQTT/TLS -> Mosquitto, where
a paho client plays IoT Hub (``tests/azure_iothub_broker.py``). Every buffered event must
arrive, decodable, with the hub going away in the middle; duplicates are allowed, losses not.
"""

from __future__ import annotations

import time

import pytest

from edge.azure.iothub import IotHubTransport
from edge.buffer import SqliteBuffer
from edge.uplink import Uplink
from gondola.clock import SimClock
from gondola.contracts import decode_batch, make_event
from tests.azure_iothub_broker import FakeIotHubService, TlsMosquitto, topic_properties
from tests.conftest import mosquitto_binary, require

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(90)]

T0 = 1_764_410_400_000


def _readings(n: int, start_seq: int = 1) -> list[dict]:
    events = []
    for i in range(n):
        e = make_event(
            "shelf.reading",
            store_id="s001",
            device_id=f"shelf-s001-{i % 7:02d}",
            seq=start_seq + i // 7,
            ts=T0 + i,
            data={"facing_id": f"f{i % 7:02d}", "sku": f"sku-{i % 7}", "weight_g": 812.5, "units_est": 6,
                  "battery_pct": 88, "rssi_dbm": -61},
        )
        e["received_at"] = T0 + i + 5
        events.append(e)
    return events


def _delivered(service: FakeIotHubService) -> list[tuple[str, int]]:
    keys = []
    with service._cond:
        messages = list(service.telemetry)
    for topic, body in messages:
        props = {k: v for k, v in topic_properties(topic).items() if not k.startswith("$.")}
        keys += [(e["device_id"], e["seq"]) for e in decode_batch(body, props)]
    return keys


def test_azure_uplink_over_iothub_delivers_every_buffered_event_across_a_hub_outage(tmp_path):
    require(mosquitto_binary() is not None, "Mosquitto (Debian package 'mosquitto')")
    broker = TlsMosquitto(tmp_path)
    clock = SimClock(T0 + 60_000)
    buffer = SqliteBuffer(tmp_path / "buffer.sqlite")
    transport = IotHubTransport.from_connection_string(
        broker.connection_string(), output_name="uplink", server_verification_cert=broker.cert_pem.decode()
    )
    uplink = Uplink(buffer, transport, clock, store_id="s001", round_rows=500)
    service = FakeIotHubService(broker)
    try:
        first = _readings(700)
        buffer.append(first, now_ms=clock.now_ms())
        assert uplink.drain() == 700
        before_outage = uplink.messages_sent
        with service._cond:
            assert service._cond.wait_for(lambda: len(service.telemetry) == before_outage, timeout=10)
        assert set(_delivered(service)) == {(e["device_id"], e["seq"]) for e in first}

        service.stop()
        broker.stop()  # the store's link goes down
        second = _readings(1_400, start_seq=101)
        buffer.append(second, now_ms=clock.now_ms())
        assert uplink.uplink_once() == 0
        assert uplink.failures == 1 and not uplink.auth_failed  # backing off, not giving up

        broker.start()
        service = FakeIotHubService(broker)
        sent, deadline = 0, time.monotonic() + 30
        while sent < 1_400 and time.monotonic() < deadline:
            uplink.reset_backoff()  # the SimClock stands still; skip the wait the backoff asks for
            sent += uplink.drain()
            if sent < 1_400:
                time.sleep(0.2)
        assert sent == 1_400
        with service._cond:
            assert service._cond.wait_for(
                lambda: len(service.telemetry) == uplink.messages_sent - before_outage, timeout=10
            )
        delivered = set(_delivered(service))
        assert delivered == {(e["device_id"], e["seq"]) for e in second}
        assert buffer.stats(clock.now_ms())["unsent_rows"] == 0
    finally:
        service.stop()
        transport.close()
        broker.stop()

"""Gateway uplink -> IoT Hub (MQTT) -> built-in Event Hubs endpoint (AMQP) -> bronze, with Azure's SDKs.

Two gateways' real uplinks send through ``IotHubTransport`` (``azure-iot-device``) to Mosquitto
with TLS, where a paho client plays IoT Hub (``tests/azure_iothub_broker.py``). What it
receives is turned into the AMQP messages IoT Hub's built-in endpoint would deliver (device
properties -> application properties, ``$.ct``/``$.ce`` -> content type / encoding, the sender
-> ``iothub-connection-device-id``, a device's messages on one partition, a sequence number
per partition), decoded by the Event Hubs SDK's own codec and read by ``EventHubSource`` into
bronze with the lake's ``ingest_stream``. The two Azure halves of the property mapping must fit: every event
lands in bronze, decoded, exactly once.
"""

from __future__ import annotations

import re
import zlib

import pytest

from cloud.azure.eventhubs import EventHubSource
from cloud.ingest.stream import ingest_stream
from cloud.lake.storage import open_storage
from cloud.lake.tables import BRONZE_EVENTS
from edge.azure.iothub import IotHubTransport
from edge.buffer import SqliteBuffer
from edge.uplink import Uplink
from gondola.clock import SimClock
from gondola.contracts import make_event
from tests.azure_fakes import FakeConsumerClient, RecordingStore, hub_event
from tests.azure_iothub_broker import FakeIotHubService, TlsMosquitto, topic_properties
from tests.conftest import mosquitto_binary, require

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(90)]

T0 = 1_764_410_400_000
GATEWAYS = ("gw-s001", "gw-s002")
PARTITIONS = 4  # IoT Hub's default partition count


def _pos_lines(store: str, n: int) -> list[dict]:
    events = []
    for i in range(n):
        e = make_event(
            "pos.line",
            store_id=store,
            device_id=f"pos-{store}-r{i % 3:02d}",
            seq=1 + i // 3,
            ts=T0 + i * 1000,
            data={"txn_id": f"t{i // 4}", "register": f"r{i % 3:02d}", "line": 1 + i % 4, "sku": f"sku-{i % 11}",
                  "qty": 1, "price_cents": 100 + i % 50},
        )
        e["received_at"] = T0 + i * 1000 + 40
        events.append(e)
    return events


def _as_built_in_endpoint(telemetry: list[tuple[str, bytes]]) -> dict[str, list]:
    """IoT Hub's routing of device-to-cloud messages onto its built-in endpoint's partitions."""
    partitions: dict[str, list] = {str(p): [] for p in range(PARTITIONS)}
    for topic, body in telemetry:
        device, module = re.match(r"devices/([^/]+)/modules/([^/]+)/messages/events/", topic).groups()
        props = topic_properties(topic)
        part = str(zlib.crc32(device.encode()) % PARTITIONS)
        seq = len(partitions[part])
        partitions[part].append(
            hub_event(
                seq,
                body,
                {k: v for k, v in props.items() if not k.startswith("$.")},
                device=device,
                module=module,
                message_id=props.get("$.mid"),
                content_type=props.get("$.ct"),
                content_encoding=props.get("$.ce"),
                enqueued_ms=T0 + 3_600_000 + seq,
            )
        )
    return partitions


def test_azure_chain_two_gateways_through_iothub_and_eventhubs_land_every_event_in_bronze_once(tmp_path):
    require(mosquitto_binary() is not None, "Mosquitto (Debian package 'mosquitto')")
    assert len({zlib.crc32(g.encode()) % PARTITIONS for g in GATEWAYS}) == len(GATEWAYS)  # two partitions used
    broker = TlsMosquitto(tmp_path)
    service = FakeIotHubService(broker)
    sent: list[dict] = []
    try:
        for gateway, store in zip(GATEWAYS, ("s001", "s002")):
            buffer = SqliteBuffer(tmp_path / f"{gateway}.sqlite")
            events = _pos_lines(store, 900)
            buffer.append(events, now_ms=T0 + 60_000)
            with IotHubTransport.from_connection_string(
                broker.connection_string(device=gateway, module="gondola-gateway"),
                output_name="uplink",
                server_verification_cert=broker.cert_pem.decode(),
            ) as transport:
                uplink = Uplink(buffer, transport, SimClock(T0 + 60_000), store_id=store, round_rows=400)
                assert uplink.drain() == 900
                messages = uplink.messages_sent
            sent += events
            with service._cond:
                assert service._cond.wait_for(
                    lambda: sum(f"devices/{gateway}/" in t for t, _ in service.telemetry) == messages, timeout=10
                )
    finally:
        service.stop()
        broker.stop()

    partitions = _as_built_in_endpoint(service.telemetry)
    store = RecordingStore()
    script = [("batch", part, events) for part, events in partitions.items() if events]
    lake = open_storage(tmp_path / "lake")
    with EventHubSource(lambda: FakeConsumerClient(script, store), name="eventhubs:gondola-hub/lake-bronze",
                        idle_s=0.2) as source:
        assert ingest_stream(lake, source, max_messages=3) == len(sent)

    bronze = lake.open(BRONZE_EVENTS).to_pyarrow_table()
    assert bronze["decode_error"].null_count == bronze.num_rows
    keys = list(zip(bronze["device_id"].to_pylist(), bronze["seq"].to_pylist()))
    assert sorted(keys) == sorted((e["device_id"], e["seq"]) for e in sent)
    assert set(bronze["store_id"].to_pylist()) == {"s001", "s002"}
    # Checkpoints moved to the last message of each partition, after bronze committed.
    last = {c["partition_id"]: c["sequence_number"] for c in store.checkpoints}
    assert last == {part: len(events) - 1 for part, events in partitions.items() if events}

"""``EventHubSource`` at the SDK boundary.

Events are built the way the SDK builds them when it receives (``tests/azure_fakes.py``): an
AMQP message is encoded to wire bytes and decoded with the SDK's own AMQP codec, then wrapped by ``EventData._from_message``
(what ``azure.eventhub._consumer`` does). The consumer client is a fake with the SDK's
``receive_batch`` signature that hands real ``PartitionContext`` objects to the callbacks; the
checkpoint store behind them records calls (the real blob store on Azurite is in
``tests/integration/test_azure_eventhubs_azurite.py``).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from azure.core.exceptions import HttpResponseError
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError

from cloud.azure.eventhubs import EventHubSource, to_received_message
from cloud.ingest.source import EventSource
from gondola.contracts import decode_batch, encode_batch, make_event
from gondola.errors import ConfigError, StorageError, TransportAuthError, TransportError
from tests.azure_fakes import GROUP, HUB, T0, RecordingStore, drain, source_for, wire_event

pytestmark = pytest.mark.timeout(60)

def test_azure_eventhubs_event_maps_partition_offset_sequence_time_properties_and_body():
    event = wire_event(7)
    message = to_received_message("3", event)
    assert message.partition == "3"
    assert message.offset == "3584"
    assert message.sequence_number == 7
    assert message.enqueued_time == T0 + 7
    assert message.device_id == "gw-s001"
    assert message.properties["schema"] == "gondola.batch.v1"
    assert message.properties["first_seq"] == "7"
    assert message.system_properties["iothub-connection-module-id"] == "gateway"
    [decoded] = decode_batch(message.body, message.properties)
    assert decoded["seq"] == 7 and decoded["data"]["price_cents"] == 199


def test_azure_eventhubs_content_encoding_from_system_properties_fills_a_missing_application_one():
    batch = encode_batch(
        [make_event("edge.alert", store_id="s1", device_id="gw", seq=1, ts=T0, data={
            "facing_id": "f1", "sku": "k", "state": "raised", "probability": 0.9, "horizon_min": 60, "scorer": "poisson"})],
        store_id="s1",
    )
    props = {k: v for k, v in batch.properties.items() if k not in ("content-type", "content-encoding")}
    message = to_received_message("0", wire_event(1, body=batch.body, props=props))
    assert message.properties["content-encoding"] == "gzip"
    assert decode_batch(message.body, message.properties)[0]["type"] == "edge.alert"


def test_azure_eventhubs_source_implements_the_lake_event_source_protocol():
    source, _ = source_for([])
    assert isinstance(source, EventSource)
    assert source.name == f"eventhubs:{HUB}/{GROUP}"


def test_azure_eventhubs_checkpoints_only_when_asked_and_only_the_last_event_per_partition():
    store = RecordingStore()
    script = [
        ("batch", "0", [wire_event(s) for s in (10, 11, 12)]),
        ("batch", "1", [wire_event(s, device="gw-s002") for s in (3, 4)]),
    ]
    with source_for(script, store)[0] as source:
        got = drain(source, 5)
        assert [(m.partition, m.sequence_number) for m in got] == [("0", 10), ("0", 11), ("0", 12), ("1", 3), ("1", 4)]
        assert store.checkpoints == []  # nothing moves before bronze committed

        source.checkpoint(got[:2] + got[3:])  # bronze committed 0:10-11 and 1:3-4
        assert [(c["partition_id"], c["offset"], c["sequence_number"]) for c in store.checkpoints] == [
            ("0", "5632", 11),
            ("1", "2048", 4),
        ]
        assert all(c["consumer_group"] == GROUP and c["eventhub_name"] == HUB for c in store.checkpoints)

        source.checkpoint(got[:1])  # older than the checkpoint: no write, never backwards
        assert len(store.checkpoints) == 2
        source.checkpoint(got)
        assert [(c["partition_id"], c["sequence_number"]) for c in store.checkpoints[2:]] == [("0", 12)]


def test_azure_eventhubs_partition_taken_by_another_reader_is_not_checkpointed_by_us():
    store = RecordingStore()
    script = [("batch", "0", [wire_event(1)]), ("batch", "1", [wire_event(2)]), ("lose", "1")]
    with source_for(script, store)[0] as source:
        got = drain(source, 2)
        source.checkpoint(got)
    assert [c["partition_id"] for c in store.checkpoints] == ["0"]


def test_azure_eventhubs_checkpoint_store_failure_is_a_storage_error():
    store = RecordingStore(fail=HttpResponseError(message="503 Server Busy"))
    with source_for([("batch", "0", [wire_event(1)])], store)[0] as source:
        got = drain(source, 1)
        with pytest.raises(StorageError):
            source.checkpoint(got)


def test_azure_eventhubs_refused_credentials_surface_as_transport_auth_error():
    with source_for([("error", None, AuthenticationError("unauthorized"))])[0] as source:
        with pytest.raises(TransportAuthError):
            drain(source, 1, deadline_s=3)


def test_azure_eventhubs_lost_link_is_retryable_and_messages_come_first():
    script = [("batch", "0", [wire_event(1)]), ("error", "0", ConnectionLostError("link detached"))]
    with source_for(script)[0] as source:
        assert [m.sequence_number for m in source.receive(max_wait_s=5)] == [1]
        with pytest.raises(TransportError) as info:
            source.receive(max_wait_s=0.5)
        assert not isinstance(info.value, TransportAuthError)
        assert source.receive(max_wait_s=0.1) == []  # reported once; the SDK keeps going


def test_azure_eventhubs_bounded_buffer_holds_the_sdk_until_bronze_catches_up():
    script = [("batch", "0", [wire_event(s) for s in range(20)])]
    source, _ = source_for(script, max_buffered=5)
    with source:
        first = source.receive(max_messages=100, max_wait_s=5)
        deadline = time.monotonic() + 5
        while source._queue.qsize() < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(first) <= 5
        assert source._queue.qsize() <= 5
        rest = drain(source, 20 - len(first))
    assert [m.sequence_number for m in first + rest] == list(range(20))


def test_azure_eventhubs_passes_starting_position_and_batch_size_to_the_sdk():
    source, client = source_for([("batch", "0", [wire_event(1)])], max_batch_size=64, starting_position="@latest")
    with source:
        drain(source, 1)
    assert client.kwargs["max_batch_size"] == 64
    assert client.kwargs["starting_position"] == "@latest"
    assert client.closed


def test_azure_eventhubs_settings_are_required():
    with pytest.raises(ConfigError):
        EventHubSource.from_env({"GONDOLA_EVENTHUB_CONNECTION_STRING": "Endpoint=sb://x/"})


def test_azure_eventhubs_connection_strings_build_the_sdk_consumer_with_a_blob_checkpoint_store():
    from azure.eventhub.aio import EventHubConsumerClient
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    source = EventHubSource.from_env(
        {
            # Obviously fake credentials; nothing is contacted while building the client.
            "GONDOLA_EVENTHUB_CONNECTION_STRING": "Endpoint=sb://fake-ns.servicebus.example.invalid/;"
            "SharedAccessKeyName=service;SharedAccessKey=ZmFrZQ==;EntityPath=gondola-hub",
            "GONDOLA_CHECKPOINT_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=fake;"
            "AccountKey=ZmFrZQ==;EndpointSuffix=example.invalid",
            "GONDOLA_CHECKPOINT_CONTAINER": "checkpoints",
        }
    )
    assert source.name == "eventhubs:gondola-hub/lake-bronze"

    async def build():
        client = source._factory()
        try:
            return client, client._checkpoint_store, client._consumer_group
        finally:
            await client.close()

    client, store, group = asyncio.run(build())
    assert isinstance(client, EventHubConsumerClient)
    assert isinstance(store, BlobCheckpointStore)
    assert group == "lake-bronze"


def test_azure_eventhubs_empty_receive_means_every_owned_partition_caught_up():
    script = [("batch", "0", [wire_event(1)]), ("batch", "1", [wire_event(2)])]
    source, client = source_for(script, idle_s=0.1)
    with source:
        got = source.receive(max_messages=10, max_wait_s=0.0)
        got += drain(source, 2 - len(got))
        assert sorted(m.sequence_number for m in got) == [1, 2]
        assert source.receive(max_wait_s=0.0) == []  # returns once both partitions report idle
        assert source._idle == {"0", "1"}
    assert client.kwargs["max_wait_time"] == 0.1


def test_azure_eventhubs_empty_receive_waits_for_the_load_balancer_at_start():
    # No partition is ever claimed: receive waits startup_wait_s, then reports nothing new.
    source, _ = source_for([], startup_wait_s=0.3)
    with source:
        assert source.receive(max_wait_s=0.0) == []
        assert time.monotonic() - source._started_at >= 0.3


def test_azure_eventhubs_build_source_reads_wiring_settings_then_environment(monkeypatch):
    monkeypatch.setenv("GONDOLA_CHECKPOINT_CONNECTION_STRING", "DefaultEndpointsProtocol=https;AccountName=fake;"
                       "AccountKey=ZmFrZQ==;EndpointSuffix=example.invalid")
    from cloud.azure.eventhubs import build_source

    source = build_source(
        {"connection_string": "Endpoint=sb://fake-ns.servicebus.example.invalid/;SharedAccessKeyName=s;"
                              "SharedAccessKey=ZmFrZQ==", "eventhub_name": "gondola-hub"},
        consumer_group="lake-bronze",
    )
    assert source.name == "eventhubs:gondola-hub/lake-bronze"


def test_azure_eventhubs_bad_settings_surface_from_receive_and_a_closed_source_refuses():
    def factory():
        raise ConfigError("bad Event Hubs connection string")

    source = EventHubSource(factory, name="eventhubs:x/y", startup_wait_s=0.2)
    with pytest.raises(ConfigError):
        source.receive(max_wait_s=0.1)
    source.close()
    with pytest.raises(TransportError, match="closed"):
        source.receive(max_wait_s=0.1)

"""Stream ingest on the production path: ``EventHubSource`` -> ``ingest_stream`` -> bronze on Azurite.

Everything is real but the AMQP link to Event Hubs: the SDK's blob checkpoint store writes its
blobs to Azurite, the SDK's ``PartitionContext.update_checkpoint`` moves them, bronze is a Delta
table in an Azurite container. The consumer client is the scripted fake of
``tests/azure_fakes.py`` (events decoded by the SDK's own AMQP codec).
"""

from __future__ import annotations

import asyncio

import pytest
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from cloud.azure.eventhubs import EventHubSource
from cloud.ingest.stream import ingest_stream
from cloud.lake.storage import open_storage
from cloud.lake.tables import BRONZE_EVENTS
from gondola.errors import TransportAuthError, TransportError
from tests.azure_fakes import GROUP, HUB, NS, T0, FakeConsumerClient, wire_event

pytestmark = [pytest.mark.azurite, pytest.mark.slow, pytest.mark.timeout(120)]


def _script():
    return [
        ("batch", "0", [wire_event(s) for s in range(1, 6)]),
        ("batch", "1", [wire_event(s, device="gw-s002") for s in range(1, 4)]),
    ]


def _source(azurite, container: str, script) -> EventHubSource:
    def factory():
        store = BlobCheckpointStore.from_connection_string(azurite.connection_string, container)
        return FakeConsumerClient(script, store)

    return EventHubSource(factory, name=f"eventhubs:{HUB}/{GROUP}")


async def _checkpoints(azurite, container: str) -> dict[str, tuple[str, int]]:
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        return {
            c["partition_id"]: (c["offset"], c["sequence_number"])
            for c in await store.list_checkpoints(NS, HUB, GROUP)
        }


def test_azure_eventhubs_ingest_to_bronze_on_azurite_checkpoints_in_blobs_and_reruns_add_nothing(azurite):
    checkpoints = azurite.new_container("checkpoints")
    lake = open_storage(f"az://{azurite.new_container('lake')}/lake", azurite.storage_options())

    with _source(azurite, checkpoints, _script()) as source:
        added = ingest_stream(lake, source, max_messages=4)

    assert added == 8  # one event per message
    bronze = lake.open(BRONZE_EVENTS).to_pyarrow_table()
    assert bronze.num_rows == 8
    rows = sorted(zip(bronze["hub_partition"].to_pylist(), bronze["sequence_number"].to_pylist(),
                      bronze["hub_offset"].to_pylist(), bronze["decode_error"].to_pylist()))
    assert rows == [("0", s, str(s * 512), None) for s in range(1, 6)] + [("1", s, str(s * 512), None) for s in range(1, 4)]
    assert set(bronze["enqueued_time"].to_pylist()) == {T0 + s for s in range(1, 6)}
    assert asyncio.run(_checkpoints(azurite, checkpoints)) == {"0": ("2560", 5), "1": ("1536", 3)}

    # The SDK re-delivers after a crash between commit and checkpoint: bronze recognizes it.
    with _source(azurite, checkpoints, _script()) as source:
        assert ingest_stream(lake, source) == 0
    assert lake.open(BRONZE_EVENTS).to_pyarrow_table().num_rows == 8


def test_azure_eventhubs_real_sdk_with_no_event_hub_reachable_raises_transport_error_and_closes_promptly(azurite):
    # The real EventHubConsumerClient and blob checkpoint store (on Azurite); nothing listens
    # on the AMQP port of the (obviously fake) namespace, so load balancing cannot start.
    source = EventHubSource.from_connection_strings(
        "Endpoint=sb://127.0.0.1/;SharedAccessKeyName=service;SharedAccessKey=ZmFrZQ==;EntityPath=gondola-hub",
        checkpoint_connection_string=azurite.connection_string,
        checkpoint_container=azurite.new_container("checkpoints"),
        client_kwargs={"retry_total": 0},
        startup_wait_s=30,
    )
    try:
        with pytest.raises(TransportError) as info:
            source.receive(max_wait_s=0.5)
        assert not isinstance(info.value, TransportAuthError)
        assert "ConnectError" in str(info.value)
    finally:
        source.close()
    assert not source._thread.is_alive()  # the SDK's 30 s balancing sleep did not hold close()

"""The stream job on the production path: Event Hubs source (SDK boundary) -> stream.* on Azurite.

Everything is real but the AMQP link: events are decoded by the SDK's own AMQP codec
(``tests/azure_fakes.py``), the SDK's blob checkpoint store keeps checkpoints in Azurite, and the
stream tables and the job's state snapshots are Delta tables in an Azurite container. The
gateway messages are those simulated stores sent through simulated gateways.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from cloud.azure.eventhubs import EventHubSource
from cloud.lake.storage import open_storage
from cloud.stream.job import StreamJob
from cloud.stream.tables import STREAM_TABLES
from gondola.hub import LocalHub
from tests.azure_fakes import GROUP, HUB, NS, FakeConsumerClient, hub_event
from tests.stream_sim import run_sim_stores

pytestmark = [pytest.mark.azurite, pytest.mark.slow, pytest.mark.timeout(240)]


def _script(hub_path) -> tuple[list, dict[str, int]]:
    """The embedded hub's messages as Event Hubs would deliver them, 40 per batch."""
    by_part: dict[str, list] = {}
    with LocalHub(hub_path) as hub:
        for part in range(hub.partitions):
            for m in hub.read(part, limit=1_000_000):
                by_part.setdefault(str(part), []).append(
                    hub_event(m.sequence_number, m.body, m.properties, device=m.device_id, enqueued_ms=m.enqueued_time))
    script = [("batch", p, evs[i:i + 40]) for p, evs in sorted(by_part.items()) for i in range(0, len(evs), 40)]
    return script, {p: evs[-1].sequence_number for p, evs in by_part.items()}


def _source(azurite, container: str, script) -> EventHubSource:
    def factory():
        return FakeConsumerClient(script, BlobCheckpointStore.from_connection_string(azurite.connection_string,
                                                                                     container))

    return EventHubSource(factory, name=f"eventhubs:{HUB}/{GROUP}")


async def _checkpoints(azurite, container: str) -> dict[str, int]:
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        return {c["partition_id"]: c["sequence_number"] for c in await store.list_checkpoints(NS, HUB, GROUP)}


def test_stream_job_on_event_hubs_checkpoints_in_azurite_blobs_and_a_redelivery_adds_no_row(azurite, tmp_path):
    run = run_sim_stores(tmp_path / "sim", stores=2, skus=120, days=0.75, seed=3, faults=dict(duplicates=0.02))
    script, last_seq = _script(run.hub_path)
    checkpoints = azurite.new_container("checkpoints")
    lake = open_storage(f"az://{azurite.new_container('lake')}/lake", azurite.storage_options())

    def run_once() -> StreamJob:
        with _source(azurite, checkpoints, script) as source:
            job = StreamJob(lake, source, planograms=run.planograms(), max_messages=60, wall_clock=lambda: 0)
            job.run(once=True)
        return job

    first = run_once()
    assert first.counters()["events"] > 1_000
    rows = {name: lake.read(name) for name in STREAM_TABLES}
    assert rows["stream.sales_5m"].num_rows > 50 and rows["stream.store_health"].num_rows > 100
    # The checkpoint blobs hold the last message of each partition, written by the SDK's store.
    assert asyncio.run(_checkpoints(azurite, checkpoints)) == last_seq
    keys = {name: Counter(tuple(r[k] for k in STREAM_TABLES[name].key) for r in t.to_pylist())
            for name, t in rows.items() if t is not None}
    assert all(n == 1 for c in keys.values() for n in c.values())

    # The scripted SDK delivers everything again (as after a crash before the checkpoint):
    # the job resumes from its state in Azurite and writes nothing twice.
    again = run_once()
    assert again.stats["messages"] > 0  # the SDK did deliver them again ...
    assert again.counters() == first.counters()  # ... and none was folded into the state twice
    for name in STREAM_TABLES:
        before = rows[name].num_rows if rows[name] is not None else 0
        after = lake.read(name)
        assert (after.num_rows if after is not None else 0) == before, name

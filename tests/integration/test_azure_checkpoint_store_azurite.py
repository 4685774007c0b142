"""The Event Hubs blob checkpoint store (``BlobCheckpointStore``, aio) against Azurite, for real.

Checkpoints and partition ownership are what make ingest resumable and let several readers
share partitions; both live in blobs, which Azurite serves.
"""

from __future__ import annotations

import pytest
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

pytestmark = [pytest.mark.azurite, pytest.mark.timeout(120)]

NS, HUB, GROUP = "fake-ns.servicebus.example.invalid", "gondola-hub", "lake-bronze"


def _key() -> dict:
    return {"fully_qualified_namespace": NS, "eventhub_name": HUB, "consumer_group": GROUP}


async def test_azure_checkpoint_store_round_trips_checkpoints_per_partition(azurite):
    container = azurite.new_container("checkpoints")
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        assert await store.list_checkpoints(NS, HUB, GROUP) == []
        await store.update_checkpoint(dict(_key(), partition_id="0", offset="4096", sequence_number=17))
        await store.update_checkpoint(dict(_key(), partition_id="1", offset="128", sequence_number=2))
        await store.update_checkpoint(dict(_key(), partition_id="0", offset="8192", sequence_number=33))

        got = {c["partition_id"]: c for c in await store.list_checkpoints(NS, HUB, GROUP)}
        other_group = await store.list_checkpoints(NS, HUB, "$Default")

    assert {p: (c["offset"], c["sequence_number"]) for p, c in got.items()} == {"0": ("8192", 33), "1": ("128", 2)}
    assert other_group == []


async def test_azure_checkpoint_store_ownership_claims_use_etags(azurite):
    container = azurite.new_container("ownership")
    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as store:
        claimed = await store.claim_ownership(
            [dict(_key(), partition_id=p, owner_id="reader-a") for p in ("0", "1")]
        )
        assert sorted(o["partition_id"] for o in claimed) == ["0", "1"]
        assert all(o["etag"] for o in claimed)

        listed = {o["partition_id"]: o for o in await store.list_ownership(NS, HUB, GROUP)}
        assert {p: o["owner_id"] for p, o in listed.items()} == {"0": "reader-a", "1": "reader-a"}

        # reader-b takes partition 1 with the current etag: the claim succeeds.
        stolen = await store.claim_ownership([dict(listed["1"], owner_id="reader-b")])
        assert [o["owner_id"] for o in stolen] == ["reader-b"]
        # reader-a retries with its stale etag: the store refuses (nothing claimed).
        stale_claim = next(o for o in claimed if o["partition_id"] == "1")
        stale = await store.claim_ownership([dict(stale_claim)])
        assert stale == []

        owners = {o["partition_id"]: o["owner_id"] for o in await store.list_ownership(NS, HUB, GROUP)}
    assert owners == {"0": "reader-a", "1": "reader-b"}

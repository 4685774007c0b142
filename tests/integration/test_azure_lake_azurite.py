"""Delta tables on Azurite's blob endpoint, through ``cloud.azure.storage.azurite_storage_options``.

This is what the lake does on ADLS Gen2 in production (``abfss://``), minus the hierarchical
namespace: ``deltalake`` only needs the blob API, which Azurite serves for real.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from azure.storage.blob import ContainerClient
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

pytestmark = [pytest.mark.azurite, pytest.mark.timeout(120)]


def _rows(start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "device_id": pa.array(["pos-s001-r01"] * n),
            "seq": pa.array(range(start, start + n), pa.int64()),
            "qty": pa.array([1 + i % 3 for i in range(n)], pa.int32()),
        }
    )


def test_azure_delta_table_on_azurite_writes_appends_and_reads_back_every_row(azurite):
    container = azurite.new_container("lake")
    uri = f"az://{container}/bronze/pos_line"
    options = azurite.storage_options()

    write_deltalake(uri, _rows(0, 100), storage_options=options)
    write_deltalake(uri, _rows(100, 50), storage_options=options, mode="append")

    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1
    got = table.to_pyarrow_table().sort_by("seq")
    assert got.num_rows == 150
    assert got["seq"].to_pylist() == list(range(150))
    assert sum(got["qty"].to_pylist()) == sum(1 + i % 3 for i in range(100)) + sum(1 + i % 3 for i in range(50))
    # Time travel reads the first commit only.
    assert DeltaTable(uri, storage_options=options, version=0).to_pyarrow_table().num_rows == 100

    # The table really lives in Azurite's blob container, log and data files alike.
    with ContainerClient.from_connection_string(azurite.connection_string, container) as cc:
        names = [b.name for b in cc.list_blobs(name_starts_with="bronze/pos_line/")]
    assert "bronze/pos_line/_delta_log/00000000000000000000.json" in names
    assert "bronze/pos_line/_delta_log/00000000000000000001.json" in names
    assert sum(n.endswith(".parquet") for n in names) == 2


def test_azure_delta_table_on_azurite_takes_many_commits(azurite):
    # deltalake lists the log with `startFrom` from the third commit on; Azurite < 3.37 ignored
    # it and the third commit failed with "Invalid table version" (docs/decisions/0502).
    container = azurite.new_container("lake")
    uri = f"az://{container}/silver/pos_line"
    options = azurite.storage_options()
    for i in range(5):
        write_deltalake(uri, _rows(i * 10, 10), storage_options=options, mode="append")
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 4
    assert sorted(table.to_pyarrow_table()["seq"].to_pylist()) == list(range(50))


def test_azure_delta_app_transaction_on_azurite_is_recorded_for_idempotent_retries(azurite):
    container = azurite.new_container("lake")
    uri = f"az://{container}/bronze/shelf_reading"
    options = azurite.storage_options()
    commit = CommitProperties(app_transactions=[Transaction(app_id="ingest:partition-0", version=41)])

    write_deltalake(uri, _rows(0, 10), storage_options=options, commit_properties=commit)

    table = DeltaTable(uri, storage_options=options)
    assert table.transaction_version("ingest:partition-0") == 41
    assert table.transaction_version("ingest:partition-1") is None


@pytest.mark.slow
def test_azure_whole_lake_on_azurite_builds_the_same_tables_as_on_a_local_folder(azurite, tmp_path):
    from cloud.synth import day_events, fill_hub, write_master_csvs
    from cloud.wiring import CloudSettings, build_cloud
    from gondola.hub import LocalHub

    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=2, facings=3, hours=6))
    write_master_csvs(tmp_path / "master", stores=2, facings=3)

    def run(lake_uri: str, storage_options, name: str) -> dict[str, int]:
        cloud = build_cloud(CloudSettings(lake_uri=lake_uri, storage_options=storage_options,
                                          hub_path=str(tmp_path / "hub.sqlite"), consumer_group=name))
        cloud.ingest_batch(tmp_path / "master")
        assert cloud.ingest_stream() > 0
        cloud.transform()
        assert cloud.ingest_stream() == 0  # a second pass finds nothing new
        return cloud.table_counts()

    local = run(str(tmp_path / "lake"), None, "local-run")
    remote = run(f"az://{azurite.new_container('lake')}/lake", azurite.storage_options(), "azurite-run")

    assert remote == local
    assert remote["gold.stockouts"] > 0 and remote["silver.pos_line"] > 0

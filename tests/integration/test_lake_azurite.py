"""The lake on Azurite's blob endpoint (``az://`` URIs): same steps, same guarantees."""

from __future__ import annotations

import pytest

from cloud.lake.tables import TABLES
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub

pytestmark = [pytest.mark.azurite, pytest.mark.slow]


def test_the_lake_runs_on_azurite_and_reruns_change_nothing(tmp_path, azurite):
    container = azurite.new_container("lake")
    events = list(day_events(stores=1, facings=2, hours=6))
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, events)
    write_master_csvs(tmp_path / "master", stores=1, facings=2)
    cloud = build_cloud(CloudSettings(lake_uri=f"az://{container}/lake", hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb"),
                                      storage_options=azurite.storage_options()))
    assert cloud.ingest_batch(tmp_path / "master")["rows"] == 5
    assert cloud.ingest_stream() == len(events)
    cloud.transform()
    assert cloud.silver_keys("shelf.reading") == {(e["device_id"], e["seq"]) for e in events if e["type"] == "shelf.reading"}
    assert cloud.table_counts()["gold.stockouts"] > 0
    # meta.lineage logs every run, a no-op one too; the data tables must not move
    before = {n: cloud.storage.version(n) for n, t in TABLES.items() if t.layer != "meta"}
    assert cloud.ingest_stream() == 0 and cloud.transform()["rows"] == {}
    assert {n: cloud.storage.version(n) for n, t in TABLES.items() if t.layer != "meta"} == before
    assert cloud.build_warehouse().exists()


def test_changes_on_azurite_read_appended_files_with_the_key_and_the_change_feed_with_other_credentials(azurite):
    """``changes`` reads appended Parquet files through ``pyarrow.fs`` only with the credentials it
    hands pyarrow (``account_key`` / ``sas_token``); with a credential only deltalake knows (here
    its ``azure_storage_account_key`` alias) the change feed reads the same rows (pyarrow's
    default credential chain aborted the process on Azurite's http endpoint)."""
    import pyarrow as pa

    from cloud.lake.storage import open_storage

    container = azurite.new_container("chg")
    rows = pa.table({"device_id": ["a", "b"], "seq": pa.array([1, 2], pa.int64()),
                     "ts": pa.array([1_767_225_600_000, 1_767_312_000_000], pa.int64())})
    keyed = open_storage(f"az://{container}/lake", azurite.storage_options())
    keyed.write("silver.pos_line", rows)
    aliased = dict(azurite.storage_options())
    aliased["azure_storage_account_key"] = aliased.pop("account_key")
    other = open_storage(f"az://{container}/lake", aliased)
    got = {}
    for name, storage in (("keyed", keyed), ("aliased", other)):
        table, version = storage.changes("silver.pos_line", -1)
        assert version == 0
        got[name] = sorted(zip(table["device_id"].to_pylist(), table["date"].to_pylist()))
    assert got["keyed"] == got["aliased"] == [("a", "2026-01-01"), ("b", "2026-01-02")]

"""The restore drill: a gateway loses its data folder and the lake loses a table; both come back
from their backups with the same rows and checksums, and the chain resumes with every device
event in silver exactly once."""

from __future__ import annotations

import json
import shutil

import pytest

from cloud.ingest.source import LocalHubSource
from cloud.meta.backup import backup_lake, content_checksum, restore_lake
from cloud.wiring import CloudSettings, build_cloud
from edge.backup import BufferBackups, restore_buffer, table_counts
from edge.mqtt import Publisher
from edge.testing import T0, device_traffic, planogram_csv
from edge.transport import FlakyTransport, LocalHubTransport
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import HOUR_MS, SimClock
from gondola.errors import ConfigError, StorageError
from gondola.hub import LocalHub

SILVER_EVENTS = ("silver.pos_line", "silver.shelf_reading", "silver.shelf_restock")


def _publish(gw, pub, messages, total):
    for topic, payload in messages:
        pub.publish(topic, payload)
    assert gw.collector.wait_committed(total, 30)


def _silver_keys(storage) -> list[tuple[str, int]]:
    keys = []
    for table in SILVER_EVENTS:
        rows = storage.read(table, columns=["device_id", "seq"])
        if rows is not None:
            keys += list(zip(rows["device_id"].to_pylist(), rows["seq"].to_pylist()))
    return keys


@pytest.mark.mosquitto
def test_gateway_and_lake_restore_from_backups_and_the_chain_resumes_without_loss_or_duplicates(mosquitto, tmp_path):
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    clock = SimClock(T0)
    hub_path = tmp_path / "hub.sqlite"
    hub = LocalHub(hub_path, clock=clock)
    net = FlakyTransport(LocalHubTransport(hub, "gw-s001"))
    settings = EdgeSettings(store_id="s001", broker_port=mosquitto.port, data_dir=tmp_path / "gw",
                            planogram_path=tmp_path / "planogram.csv", gap_grace_s=10**9, backup_every_s=0)
    traffic = device_traffic(3_000, step_ms=20_000, seed=5)
    third = len(traffic.messages) // 3

    gw = build_gateway(settings, clock=clock, transport=net)
    gw.start()
    pub = Publisher("127.0.0.1", mosquitto.port, client_id="devices").start()
    # Day 1: the first half reaches the hub and the lake; the lake is backed up.
    _publish(gw, pub, traffic.messages[:third], third)
    clock.advance_to(T0 + HOUR_MS)
    gw.run_cycle(clock.now_ms())
    gw.drain()
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(hub_path),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    cloud.ingest_stream()
    cloud.transform()
    checkpoints = {"hub.checkpoints.sqlite": tmp_path / "hub.sqlite.checkpoints.sqlite"}
    lake_backup = backup_lake(cloud.storage, tmp_path / "lake-backups", checkpoints=checkpoints)
    manifest = json.loads((lake_backup / "manifest.json").read_text())
    pos_rows = cloud.storage.read("silver.pos_line")
    assert manifest["tables"]["silver.pos_line"]["rows"] == pos_rows.num_rows > 0
    assert manifest["tables"]["silver.pos_line"]["checksum"] == content_checksum(pos_rows)

    # The lake moves on after its backup: a second third is ingested (the restore must not lose it).
    _publish(gw, pub, traffic.messages[third:2 * third], 2 * third)
    clock.advance_to(T0 + 2 * HOUR_MS)
    gw.run_cycle(clock.now_ms())
    gw.drain()
    cloud.ingest_stream()
    cloud.transform()
    assert cloud.storage.version("silver.pos_line") > manifest["tables"]["silver.pos_line"]["version"]

    # The store goes offline: the last third waits in the buffer, which is backed up online.
    net.online = False
    _publish(gw, pub, traffic.messages[2 * third:], len(traffic.messages))
    clock.advance_to(T0 + 3 * HOUR_MS)
    gw.run_cycle(clock.now_ms())
    backups = BufferBackups(gw.buffer.path, tmp_path / "gw-backups", every_s=3600, keep=2)
    backup_file = backups.backup_now()
    side = json.loads(backup_file.with_suffix(".json").read_text())
    assert sum(side["tables"].values()) > len(traffic.messages) - 2 * third  # the waiting events are in it
    gw.stop()
    pub.stop()
    counts_before = table_counts(tmp_path / "gw" / "buffer.sqlite")

    # Disaster: the gateway's data folder and a lake table are gone.
    shutil.rmtree(tmp_path / "gw")
    shutil.rmtree(tmp_path / "lake" / "silver" / "pos_line")
    assert cloud.storage.read("silver.pos_line") is None

    # Restore both, verified.
    meta = restore_buffer(tmp_path / "gw-backups", tmp_path / "gw")
    assert table_counts(tmp_path / "gw" / "buffer.sqlite") == meta["tables"] == counts_before
    with pytest.raises(ConfigError):  # a second restore over a live buffer needs --force
        restore_buffer(backup_file, tmp_path / "gw")
    restored = restore_lake(lake_backup, cloud.storage, checkpoints=checkpoints)
    assert restored["silver.pos_line"]["rows"] == pos_rows.num_rows
    assert content_checksum(cloud.storage.read("silver.pos_line")) == manifest["tables"]["silver.pos_line"]["checksum"]
    assert set(restored) == set(manifest["tables"])

    # Resume: the gateway comes back online and drains; the lake ingests and transforms.
    net.online = True
    gw = build_gateway(settings, clock=clock, transport=net)
    gw.start()
    clock.advance_to(T0 + 4 * HOUR_MS)
    gw.run_cycle(clock.now_ms())
    gw.drain()
    assert gw.health()["buffer_rows"] == 0
    gw.stop()
    cloud.ingest_stream()
    cloud.transform()

    keys = _silver_keys(cloud.storage)
    assert len(keys) == len(set(keys))  # no duplicates
    assert set(keys) == traffic.emitted  # nothing lost
    with LocalHubSource(hub_path) as source:  # the restored checkpoints moved on to the hub's end
        assert source.checkpoints() == {str(p): max((m.sequence_number for m in hub.read(p, limit=10**6)), default=-1)
                                        for p in range(hub.partitions) if hub.read(p, limit=1)}
    hub.close()


def test_a_damaged_lake_backup_is_refused_before_the_lake_is_touched(tmp_path):
    from cloud.synth import day_events, fill_hub

    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=1, facings=2, hours=3))
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    cloud.ingest_stream()
    cloud.transform()
    backup = backup_lake(cloud.storage, tmp_path / "b")
    victim = next((backup / "silver" / "pos_line").rglob("*.parquet"))  # in its date partition
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    version = cloud.storage.version("silver.pos_line")
    with pytest.raises(StorageError, match="damaged"):
        restore_lake(backup, cloud.storage)
    assert cloud.storage.version("silver.pos_line") == version  # untouched


def test_the_backup_commands_report_one_line_errors_and_restore_refuses_a_live_buffer(tmp_path, capsys):
    from gondola.cli import main

    assert main(["backup", "gateway", "--data", str(tmp_path / "nope"), "--to", str(tmp_path / "b")]) == 1
    assert "no buffer" in capsys.readouterr().err
    assert main(["restore", "lake", "--from", str(tmp_path / "nothing"), "--lake", str(tmp_path / "lake")]) == 1
    assert "no complete lake backup" in capsys.readouterr().err
    assert main(["backup", "moon"]) == 2


@pytest.mark.azurite
@pytest.mark.slow
def test_a_lake_on_blob_storage_is_backed_up_and_a_lost_table_restored(tmp_path, azurite):
    from cloud.meta.backup import _filesystem
    from cloud.synth import day_events, fill_hub

    container = azurite.new_container("lake")
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=1, facings=2, hours=4))
    cloud = build_cloud(CloudSettings(lake_uri=f"az://{container}/lake", hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb"),
                                      storage_options=azurite.storage_options()))
    cloud.ingest_stream()
    cloud.transform()
    from gondola.cli import main

    options = [a for k, v in azurite.storage_options().items() for a in ("--storage-option", f"{k}={v}")]
    assert main(["backup", "lake", "--lake", f"az://{container}/lake", *options, "--to", str(tmp_path / "b")]) == 0
    (backup,) = [p.parent for p in (tmp_path / "b").glob("*/manifest.json")]
    manifest = json.loads((backup / "manifest.json").read_text())
    assert {"bronze.events", "silver.pos_line", "gold.stockouts"} <= set(manifest["tables"])
    before = content_checksum(cloud.storage.read("silver.pos_line"))
    fs, root = _filesystem(cloud.storage)
    fs.delete_dir(f"{root}/silver/pos_line")  # the table is gone from the container
    assert cloud.storage.read("silver.pos_line") is None
    restored = restore_lake(backup, cloud.storage, tables=["silver.pos_line"])
    assert restored["silver.pos_line"]["rows"] == manifest["tables"]["silver.pos_line"]["rows"] > 0
    assert content_checksum(cloud.storage.read("silver.pos_line")) == before
    assert cloud.transform()["rows"] == {}  # the restored table is where the runner left it

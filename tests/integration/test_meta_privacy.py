"""Key rotation and erasure on a real Delta lake, recorded in lineage."""

from __future__ import annotations

import io
import json

import pytest

from cloud.meta.cli import privacy_main
from cloud.meta.privacy import ERASED, personal_columns
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.errors import ConfigError
from gondola.hub import LocalHub
from gondola.privacy import KeyRing, pseudonymize

K1, K2 = b"first-key-0001" * 2, b"second-key-002" * 2
CARDS = [f"40001{n:03d}" for n in range(12)]


@pytest.fixture
def lake(tmp_path):
    events = list(day_events(stores=2, facings=3, hours=8))
    n = 0
    for e in events:
        if e["type"] == "pos.line":
            e["data"]["loyalty_pid"] = pseudonymize(CARDS[n % len(CARDS)], K1)
            n += 1
    hub = LocalHub(tmp_path / "hub.sqlite")
    write_master_csvs(tmp_path / "master", stores=2, facings=3)
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    cloud.ingest_batch(tmp_path / "master")
    fill_hub(hub, events)
    hub.close()
    cloud.ingest_stream()
    cloud.transform()
    return cloud, tmp_path


def pids(cloud) -> list:
    return cloud.storage.read("silver.pos_line", columns=["loyalty_pid"])["loyalty_pid"].to_pylist()


def test_rekey_carries_every_pseudonym_forward_so_history_joins_new_events(lake, monkeypatch, capsys):
    cloud, tmp = lake
    before = pids(cloud)
    assert len(before) > 20 and all(p and not p.startswith("v2:") for p in before)
    monkeypatch.setenv("GONDOLA_PSEUDONYM_KEY", (K1 + b"\n" + K2).decode())
    assert privacy_main(["--lake", str(tmp / "lake"), "rekey"]) == 0
    ring = KeyRing((K1, K2))
    after = pids(cloud)
    assert sorted(after) == sorted(pseudonymize(CARDS[CARDS.index(c)], ring) for c in
                                   [next(c for c in CARDS if pseudonymize(c, K1) == p) for p in before])
    assert "re-keyed" in capsys.readouterr().out
    version = cloud.storage.version("silver.pos_line")
    assert privacy_main(["--lake", str(tmp / "lake"), "rekey"]) == 0  # idempotent: nothing left to re-key
    assert cloud.storage.version("silver.pos_line") == version
    runs = [r for r in cloud.storage.read("meta.lineage").to_pylist() if r["job"] == "gondola.privacy_rekey"]
    assert sorted(r["state"] for r in runs) == ["COMPLETE", "COMPLETE", "START", "START"]


def test_erase_removes_one_customer_from_silver_and_bronze_and_keeps_the_sales(lake, monkeypatch):
    cloud, tmp = lake
    monkeypatch.setenv("GONDOLA_PSEUDONYM_KEY", K1.decode())
    target = pseudonymize(CARDS[3], K1)
    rows_before = pids(cloud)
    assert rows_before.count(target) > 0
    versions = {t: cloud.storage.version(t) for t in ("silver.pos_line", "bronze.events")}
    monkeypatch.setattr("sys.stdin", io.StringIO(CARDS[3] + "\n"))
    assert privacy_main(["--lake", str(tmp / "lake"), "erase", "--loyalty-id-stdin", "--vacuum-now"]) == 0
    rows_after = pids(cloud)
    assert target not in rows_after and len(rows_after) == len(rows_before)
    assert rows_after.count(None) == rows_before.count(None) + rows_before.count(target)
    others = {p for p in rows_before if p not in (None, target)}
    assert others and others <= set(rows_after)
    bronze = cloud.storage.read("bronze.events", columns=["event_json"])["event_json"].to_pylist()
    assert not any(target in (e or "") for e in bronze)
    assert sum(f'"loyalty_pid":"{ERASED}"' in (e or "") for e in bronze) == rows_before.count(target)
    # vacuumed: no data file of either table holds the pseudonym any more, and the erasing
    # commits wrote it nowhere in the log (the change feed's pre-image keeps it: docs/governance.md)
    for table in ("silver.pos_line", "bronze.events"):
        folder = tmp / "lake" / table.replace(".", "/")
        data = [f for f in folder.rglob("*.parquet") if "_change_data" not in f.parts]  # date partitions too
        assert data and not any(target.encode() in f.read_bytes() for f in data), table
        written = [f.read_bytes() for f in (folder / "_delta_log").glob("*.json") if int(f.stem) > versions[table]]
        assert any(b'"MERGE"' in c for c in written) and not any(target.encode() in c for c in written)
        log = b"".join(f.read_bytes() for f in (folder / "_delta_log").glob("*.json"))
        assert target.encode() not in log, f"{table}: personal columns must not be in file statistics"
    erased = [json.loads(r["event_json"]) for r in cloud.storage.read("meta.lineage").to_pylist()
              if r["job"] == "gondola.privacy_erase" and r["state"] == "COMPLETE"]
    assert len(erased) == 1 and target not in json.dumps(erased)
    with pytest.raises(ConfigError, match="not a pseudonym"):
        privacy_main(["--lake", str(tmp / "lake"), "erase", "--pid", "someone"])


def test_no_table_outside_bronze_holds_personal_data_the_erasure_does_not_reach():
    # A tripwire: a new personal column must be placed here deliberately. Customers (loyalty_pid)
    # are erased by `gondola privacy erase`; staff ids are employees' handheld ids, kept under the
    # employment record's retention, not a customer's erasure request.
    assert personal_columns() == {"silver.pos_line": ["loyalty_pid"], "silver.shelf_restock": ["staff_id"],
                                  "silver.shelf_check": ["staff_id"], "silver.gap_scan": ["staff_id"]}

"""The lake end to end on real Delta tables: exactly-once bronze, idempotent and incremental steps."""

from __future__ import annotations

import shutil

import pytest

from cloud.ingest.source import LocalHubSource
from cloud.lake.tables import TABLES
from cloud.synth import DAY0, day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.contracts import encode_batch, make_event
from gondola.errors import StorageError
from gondola.hub import LocalHub

HOUR = 3_600_000


@pytest.fixture
def env(tmp_path):
    events = list(day_events(stores=2, facings=3, hours=12))
    hub = LocalHub(tmp_path / "hub.sqlite")
    write_master_csvs(tmp_path / "master", stores=2, facings=3)
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    yield {"events": events, "hub": hub, "cloud": cloud, "tmp": tmp_path}
    hub.close()


def load(env, events) -> dict:
    """Send events to the hub, ingest them and transform; return the transform report."""
    fill_hub(env["hub"], events)
    env["cloud"].ingest_stream()
    return env["cloud"].transform()


def versions(cloud) -> dict[str, int]:
    # meta.lineage records every run, a no-op rerun included: it is a log, not data a rerun may change
    return {name: cloud.storage.version(name) for name, t in TABLES.items() if t.layer != "meta"}


def sorted_rows(cloud, table: str) -> list[dict]:
    rows = cloud.storage.read(table)
    key = list(TABLES[table].key)
    return rows.sort_by([(k, "ascending") for k in key]).to_pylist() if rows is not None else []


class LosesCheckpoint(LocalHubSource):
    """A reader that crashes between the bronze commit and its checkpoint."""

    def checkpoint(self, messages):
        raise StorageError("checkpoint store unreachable")


def test_bronze_is_exactly_once_when_a_crash_loses_the_checkpoint(env):
    fill_hub(env["hub"], env["events"])
    from cloud.ingest.stream import ingest_stream

    with LosesCheckpoint(env["tmp"] / "hub.sqlite") as crashing, pytest.raises(StorageError):
        ingest_stream(env["cloud"].storage, crashing, max_messages=100000)
    assert env["cloud"].table_counts()["bronze.events"] == len(env["events"])
    version = env["cloud"].storage.version("bronze.events")
    assert env["cloud"].ingest_stream() == 0  # re-delivered from the old checkpoint, recognized
    assert env["cloud"].storage.version("bronze.events") == version
    assert env["cloud"].table_counts()["bronze.events"] == len(env["events"])


def test_every_event_reaches_silver_once(env):
    fill_hub(env["hub"], env["events"])
    cloud = env["cloud"]
    assert cloud.ingest_stream() == len(env["events"])
    report = cloud.transform()
    assert report["versions"]["bronze.events"] == [0, 0] and report["versions"]["gold.stockouts"] == [-1, 0]
    for etype in ("pos.line", "shelf.reading", "edge.alert", "edge.health", "shelf.restock"):
        sent = {(e["device_id"], e["seq"]) for e in env["events"] if e["type"] == etype}
        assert cloud.silver_keys(etype) == sent


@pytest.mark.slow
def test_rerunning_every_step_changes_no_table_version(env):
    fill_hub(env["hub"], env["events"])
    cloud = env["cloud"]
    cloud.ingest_batch(env["tmp"] / "master")
    cloud.ingest_stream()
    cloud.transform()
    before = versions(cloud)
    assert all(v >= 0 for k, v in before.items() if k not in ("silver.sales_daily", "silver.stock_record"))  # no export
    assert cloud.ingest_batch(env["tmp"] / "master")["loaded"] == []
    assert cloud.ingest_stream() == 0
    again = cloud.transform()
    assert again["rows"] == {} and again["bronze_rows_read"] == 0 and again["silver_rows_read"] == 0
    assert versions(cloud) == before


@pytest.mark.slow
def test_incremental_runs_give_the_same_gold_as_one_full_run(env, tmp_path):
    events = env["events"]
    half = DAY0 + 6 * HOUR
    first = [e for e in events if e["ts"] < half]
    rest = [e for e in events if e["ts"] >= half]
    cloud = env["cloud"]
    cloud.ingest_batch(env["tmp"] / "master")
    fill_hub(env["hub"], first)
    cloud.ingest_stream()
    cloud.transform()
    fill_hub(env["hub"], rest)
    assert cloud.ingest_stream() == len(rest)
    second = cloud.transform()
    assert second["bronze_rows_read"] == len(rest)  # silver read only the new bronze rows

    full_dir = tmp_path / "full"
    full_dir.mkdir()
    hub = LocalHub(full_dir / "hub.sqlite")
    fill_hub(hub, events)
    full = build_cloud(CloudSettings(lake_uri=str(full_dir / "lake"), hub_path=str(full_dir / "hub.sqlite")))
    full.ingest_batch(env["tmp"] / "master")
    full.ingest_stream()
    full.transform()
    for table in [t for t in TABLES if t.startswith("gold.")]:
        assert sorted_rows(cloud, table) == sorted_rows(full, table), table


def test_a_gold_features_table_with_json_vectors_is_rewritten_with_the_list_column_by_the_next_run(env):
    # (and one without the label evidence columns gets them)
    import json

    import pyarrow as pa
    from deltalake import write_deltalake

    cloud, half = env["cloud"], DAY0 + 6 * HOUR
    cloud.ingest_batch(env["tmp"] / "master")
    load(env, [e for e in env["events"] if e["ts"] < half])
    before = sorted_rows(cloud, "gold.features")
    assert before and all(len(r["features"]) == len(before[0]["features"]) > 0 for r in before)
    old = cloud.storage.read("gold.features")  # as the previous build wrote it: JSON text
    old = old.drop_columns(["features", "label_source", "label_without_sensor"]).append_column(
        "features_json", pa.array([json.dumps(r["features"]) for r in old.to_pylist()]))
    write_deltalake(cloud.storage.uri("gold.features"), old, mode="overwrite", schema_mode="overwrite")

    load(env, [e for e in env["events"] if e["ts"] >= half])
    after = cloud.storage.read("gold.features")
    assert "features_json" not in after.column_names and pa.types.is_list(after.schema.field("features").type)
    # and the label evidence columns (issue 11) arrive with the rewrite
    assert {"label_source", "label_without_sensor"} <= set(after.column_names)
    assert "sensor" in set(after["label_source"].to_pylist())
    kept = {(r["store_id"], r["facing_id"], r["hour_ms"]): r["features"] for r in after.to_pylist()}
    assert all(kept[(r["store_id"], r["facing_id"], r["hour_ms"])] == r["features"] for r in before)
    assert max(kept)[2] > max(r["hour_ms"] for r in before)


@pytest.mark.slow
def test_gold_rewrites_only_stores_with_new_data(env):
    events = env["events"]
    cloud = env["cloud"]
    load(env, [e for e in events if e["ts"] < DAY0 + 6 * HOUR])
    s001_before = [r for r in sorted_rows(cloud, "gold.hourly_sales") if r["store_id"] == "s001"]
    result = load(env, [e for e in events if e["ts"] >= DAY0 + 6 * HOUR and e["store_id"] == "s002"])
    assert result["gold_stores"] == 1
    after = sorted_rows(cloud, "gold.hourly_sales")
    assert [r for r in after if r["store_id"] == "s001"] == s001_before
    assert max(r["hour_ms"] for r in after if r["store_id"] == "s002") >= DAY0 + 6 * HOUR


@pytest.mark.slow
def test_a_late_reading_lands_in_its_own_hour_and_episode(env):
    cloud = env["cloud"]
    load(env, env["events"])
    state = {(r["facing_id"], r["hour_ms"]): r for r in sorted_rows(cloud, "gold.shelf_state")}
    facing, hour = next(k for k, r in sorted(state.items()) if r["min_units"] > 0 and r["readings"] == 6)
    n_stockouts = len(sorted_rows(cloud, "gold.stockouts"))
    late = make_event("shelf.reading", store_id=facing[:4], device_id=f"shelf-{facing}", seq=10_000,
                      ts=hour + 31 * 60_000, data={"facing_id": facing, "sku": state[(facing, hour)]["sku"],
                                                   "weight_g": 0.0, "units_est": 0, "battery_pct": 50.0, "rssi_dbm": -70})
    msg = encode_batch([late], store_id=facing[:4])
    env["hub"].send(f"gw-{facing[:4]}", msg.body, msg.properties)
    cloud.ingest_stream()
    result = cloud.transform()
    assert result["late"] == 1
    row = {(r["facing_id"], r["hour_ms"]): r for r in sorted_rows(cloud, "gold.shelf_state")}[(facing, hour)]
    assert row["readings"] == state[(facing, hour)]["readings"] + 1 and row["min_units"] == 0
    assert row["minutes_empty"] > 0 and row["battery_min"] == 50.0
    assert len(sorted_rows(cloud, "gold.stockouts")) == n_stockouts + 1


@pytest.mark.slow
def test_messages_resent_by_a_gateway_are_deduplicated_in_silver(env):
    cloud = env["cloud"]
    load(env, env["events"])
    counts = cloud.table_counts()
    resent = env["events"][:300]
    fill_hub(env["hub"], resent)  # new hub messages, old (device_id, seq)
    assert cloud.ingest_stream() == 300
    result = cloud.transform()
    assert result["duplicates"] == 300
    after = cloud.table_counts()
    assert {k: v for k, v in after.items() if k.startswith("silver.") and k != "silver.expectation_results"} == \
        {k: v for k, v in counts.items() if k.startswith("silver.") and k != "silver.expectation_results"}


def test_batch_files_load_once_by_content_and_the_newest_master_data_wins(env):
    cloud, master = env["cloud"], env["tmp"] / "master"
    first = cloud.ingest_batch(master)
    assert sorted(first["loaded"]) == ["planogram.csv", "products.csv", "stores.csv"]
    shutil.copy(master / "stores.csv", master / "stores_copy.csv")
    (master / "products_v2.csv").write_text(
        "sku,name,category,price_cents,unit_weight_g,pack_size,extra\nsku-0000,Renamed,grocery,999,250,6,x\n")
    (master / "planogram_bad.csv").write_text("store_id,sku\ns001,sku-0000\n")
    (master / "notes.csv").write_text("not,a,batch,file\n")
    (master / "readme.txt").write_text("not a CSV: not even listed")
    second = cloud.ingest_batch(master)
    assert second["skipped_same_content"] == ["planogram.csv", "products.csv", "stores.csv", "stores_copy.csv"]
    assert second["loaded"] == ["products_v2.csv"] and second["ignored"] == ["notes.csv"]
    assert "facing_id" in second["errors"]["planogram_bad.csv"]
    cloud.transform()
    assert cloud.storage.read("silver.products").to_pylist()[0] | {} == {
        "sku": "sku-0000", "name": "Renamed", "category": "grocery", "price_cents": 999, "unit_weight_g": 250.0,
        "pack_size": 6, "source_file": "products_v2.csv"}


def test_sales_exports_are_history_and_a_corrected_day_replaces_its_rows(env):
    cloud, folder = env["cloud"], env["tmp"] / "exports"
    folder.mkdir()
    (folder / "sales_2026-11-28.csv").write_text("date,store_id,sku,units,revenue_cents\n2026-11-28,s001,sku-1,5,500\n"
                                                 "2026-11-28,s001,sku-2,oops,1\n")
    cloud.ingest_batch(folder)
    cloud.transform()
    (folder / "sales_2026-11-28_fix.csv").write_text("date,store_id,sku,units,revenue_cents\n2026-11-28,s001,sku-1,7,700\n")
    (folder / "sales_2026-11-29.csv").write_text("date,store_id,sku,units,revenue_cents\n2026-11-29,s001,sku-1,3,300\n")
    (folder / "store2").mkdir()  # the simulator writes one export per store, in a subfolder
    (folder / "store2" / "daily_sales_s002.csv").write_text("date,store_id,sku,units,revenue_cents\n"
                                                            "2026-11-28,s002,sku-1,4,400\n")
    report = cloud.ingest_batch(folder)
    assert report["loaded"] == ["sales_2026-11-28_fix.csv", "sales_2026-11-29.csv", "store2/daily_sales_s002.csv"]
    cloud.transform()
    rows = sorted_rows(cloud, "silver.sales_daily")
    assert [(r["date"], r["store_id"], r["units"]) for r in rows] == [
        ("2026-11-28", "s001", 7), ("2026-11-28", "s002", 4), ("2026-11-29", "s001", 3)]
    (folder / "store2" / "daily_sales_s002_v2.csv").write_text("date,store_id,sku,units,revenue_cents\n"
                                                               "2026-11-28,s002,sku-1,5,500\n")
    cloud.ingest_batch(folder)
    cloud.transform()  # store 2's corrected day must not touch store 1's rows of that day
    rows = sorted_rows(cloud, "silver.sales_daily")
    assert [(r["date"], r["store_id"], r["units"]) for r in rows] == [
        ("2026-11-28", "s001", 7), ("2026-11-28", "s002", 5), ("2026-11-29", "s001", 3)]
    q = cloud.storage.read("silver.quarantine").to_pylist()
    assert [(r["target_table"], r["reasons"]) for r in q] == [("silver.sales_daily", "bad_number")]
    results = [(r["expectation"], r["failed"]) for r in cloud.storage.read("silver.expectation_results").to_pylist()
               if r["table_name"] == "silver.sales_daily"]
    from cloud.lake.master import MASTER_CHECKS

    assert len(results) == 3 * len(MASTER_CHECKS) == 18  # six checks x three runs that brought sales files
    assert sum(f for e, f in results if e == "bad_number") == 1 and sum(f for e, f in results if e == "missing_key") == 0


def test_a_fail_expectation_stops_the_run_and_writes_nothing_until_the_data_is_fixed(env):
    from cloud.lake.silver import ExpectationFailed

    cloud = env["cloud"]
    future = dict(env["events"][0], schema=2)  # a schema version the cloud does not know yet
    fill_hub(env["hub"], [future])
    cloud.ingest_stream()
    with pytest.raises(ExpectationFailed):
        cloud.transform()
    # Nothing of the step is written, but the failure is on record (expectations and lineage).
    assert all(cloud.storage.version(t) == -1 for t in TABLES
               if not t.startswith(("bronze.", "meta.")) and t != "silver.expectation_results")
    failed = [(r["expectation"], r["action"], r["failed"]) for r in cloud.storage.read("silver.expectation_results").to_pylist()
              if r["action"] == "fail" and r["failed"]]
    assert failed == [("schema_supported", "fail", 1)]
    with pytest.raises(ExpectationFailed):  # still failing: the bad row is still new
        cloud.transform()
    assert len([r for r in cloud.storage.read("silver.expectation_results").to_pylist() if r["failed"]]) == 2
    # each failed run is on record in the lineage log, with its error
    runs = [r for r in cloud.storage.read("meta.lineage").to_pylist() if r["job"] == "gondola.transform"]
    assert sorted(r["state"] for r in runs) == ["FAIL", "FAIL", "START", "START"]
    assert all("ExpectationFailed" in r["error"] for r in runs if r["state"] == "FAIL")


def test_the_cli_reports_a_bad_batch_file_with_exit_code_1(env, capsys):
    from cloud.cli import main

    folder = env["tmp"] / "bad"
    folder.mkdir()
    (folder / "products.csv").write_text("name\nx\n")
    code = main(["--lake", str(env["tmp"] / "lake"), "ingest-batch", str(folder)])
    out = capsys.readouterr().out
    assert code == 1 and "products.csv" in out and "sku" in out


@pytest.mark.slow
def test_a_stock_out_open_for_weeks_does_not_widen_every_window_to_its_start(tmp_path):
    from cloud.lake.runner import LABEL_CONTEXT_DAYS, REOPEN_DAYS

    empty = [make_event("shelf.reading", store_id="s001", device_id="shelf-1", seq=i + 1, ts=DAY0 + i * 6 * HOUR,
                        data={"facing_id": "s001-f00", "sku": "sku-0000", "weight_g": 0.0, "units_est": 0,
                              "battery_pct": 80.0, "rssi_dbm": -60}) for i in range(4 * 21)]  # 21 days, all empty
    hub = LocalHub(tmp_path / "hub.sqlite")
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite")))
    fill_hub(hub, empty[:-4])
    cloud.ingest_stream()
    cloud.transform()
    fill_hub(hub, empty[-4:])  # day 20: still empty
    cloud.ingest_stream()
    report = cloud.transform()
    # the window reaches REOPEN_DAYS (+ the days of context feature labels need) back, not to day 0
    assert report["silver_rows_read"] == 4 * (REOPEN_DAYS + 1 + LABEL_CONTEXT_DAYS)
    [so] = cloud.storage.read("gold.stockouts").to_pylist()
    assert so["start_ms"] == DAY0 and so["ongoing"]
    hub.close()


@pytest.mark.slow
def test_compaction_and_vacuum_keep_every_row_and_move_no_watermark(env):
    import time
    from functools import partial

    from cloud.lake.maintenance import RETENTION_HOURS, maintain
    from cloud.lake.runner import readers_caught_up

    cloud, events = env["cloud"], env["events"]
    for h in range(0, 12, 3):  # four runs: several small files per table
        load(env, [e for e in events if DAY0 + h * HOUR <= e["ts"] < DAY0 + (h + 3) * HOUR])
    names = [t for t in TABLES if t.startswith(("silver.", "gold.")) and cloud.storage.exists(t)]

    def contents():
        return {t: sorted(map(repr, cloud.storage.read(t).to_pylist())) for t in names}

    before = contents()
    caught_up = partial(readers_caught_up, cloud.storage)
    report = maintain(cloud.storage, names + ["bronze.events"], small_files=2, retention_hours=0, vacuum_ok=caught_up)
    assert report["bronze.events"]["files_after"] == 1 < report["bronze.events"]["files_before"]
    # silver.inventory_delivery had nothing new, so its watermark on bronze trails: no VACUUM there
    assert not caught_up("bronze.events") and report["bronze.events"]["vacuumed"] is None
    # with the runner's 7-day window its few unread commits are too young to lose a file to VACUUM;
    # with a 10 ms window, once they are older than that, they hold VACUUM back again
    assert caught_up("bronze.events", RETENTION_HOURS)
    time.sleep(0.05)
    assert not caught_up("bronze.events", 0.01 / 3600)
    assert report["silver.pos_line"]["vacuumed"] >= report["silver.pos_line"]["files_before"] == 4
    assert contents() == before
    again = cloud.transform()  # compaction is no new data: nothing new is written, no row twice
    assert again["rows"] == {} and again["silver_rows_read"] == 0
    assert contents() == before

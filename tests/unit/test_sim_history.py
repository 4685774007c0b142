"""History mode and the CLI: files, formats, determinism, faults in the files."""

from __future__ import annotations

import csv
import json
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from firmware_sim import Scenario, StoreSim, write_master_data
from firmware_sim.cli import main
from firmware_sim.history import generate, read_events, write_stock_records
from gondola.clock import ms_to_iso
from gondola.contracts import validate_event
from gondola.errors import ConfigError

START = 1_767_571_200_000
ROOT = Path(__file__).resolve().parents[2]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    out = tmp_path_factory.mktemp("hist")
    sc = Scenario.with_faults(duplicates=0.02, drops=0.01, malformed=0.01, late=0.01)
    result = generate(out, stores=2, skus=120, days=2, seed=4, scenario=sc, workers=1)
    return out, result


def test_history_writes_master_data_sales_events_and_truth(faulty):
    out, result = faulty
    with (out / "master" / "products.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 120 and set(rows[0]) == {"sku", "name", "category", "price_cents", "unit_weight_g", "pack_size"}
    with (out / "master" / "planogram.csv").open() as fh:
        plan = list(csv.DictReader(fh))
    assert {r["store_id"] for r in plan} == {"s001", "s002"}
    with (out / "master" / "stores.csv").open() as fh:
        assert [r["store_id"] for r in csv.DictReader(fh)] == ["s001", "s002"]
    with (out / "sales" / "daily_sales_s001.csv").open() as fh:
        sales = list(csv.DictReader(fh))
    assert {r["date"] for r in sales} == {"2026-01-05", "2026-01-06"}
    for etype in ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery"):
        assert (out / "events" / etype / "s001.parquet").exists()
    for table in ("shelf_units", "stockouts", "lost_sales", "faults", "windows"):
        assert pq.read_table(out / "truth" / table / "s002.parquet").num_columns >= 3
    assert result.events == sum(v for k, v in result.events_by_type.items() if k != "malformed")


def test_history_events_rebuild_into_valid_contract_events(faulty):
    out, _ = faulty
    count = 0
    for etype in ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery"):
        for event in read_events(out, etype, "s001"):
            validate_event(event)
            count += 1
    assert count > 1000


def test_erp_daily_sales_equal_the_pos_lines_in_the_event_files(tmp_path):
    generate(tmp_path, stores=1, skus=80, days=2, seed=2, workers=1)
    with (tmp_path / "sales" / "daily_sales_s001.csv").open() as fh:
        erp = sum(int(r["units"]) for r in csv.DictReader(fh))
    pos = pq.read_table(tmp_path / "events" / "pos.line" / "s001.parquet", columns=["qty"])
    assert erp == sum(pos.column("qty").to_pylist())


def test_the_stock_record_follows_receipts_and_sales_and_counts_reset_it(tmp_path):
    # the nightly export: next book = last night's count (or book) + received - sold (net of returns)
    generate(tmp_path, stores=1, skus=80, days=4, seed=2, workers=1)
    with (tmp_path / "stock" / "stock_record_s001.csv").open() as fh:
        stock = {(r["date"], r["sku"]): r for r in csv.DictReader(fh)}
    with (tmp_path / "sales" / "daily_sales_s001.csv").open() as fh:
        sold = {(r["date"], r["sku"]): int(r["units"]) for r in csv.DictReader(fh)}
    received: dict[tuple[str, str], int] = {}
    events = {(e["device_id"], e["seq"]): e for e in read_events(tmp_path, "inventory.delivery", "s001")}
    for e in events.values():
        key = (ms_to_iso(e["ts"])[:10], e["data"]["sku"])
        received[key] = received.get(key, 0) + e["data"]["units"]
    dates = sorted({d for d, _ in stock})
    assert len(dates) == 4 and len(stock) == 4 * 80
    counted = [r for r in stock.values() if r["counted_units"]]
    for d in dates:  # a rotating slice of the 80 SKUs each night (every 21 days each)
        assert sum(r["date"] == d for r in counted) in (80 // 21, 80 // 21 + 1)
    # shrink is unrecorded: a count finds no more than the book (no returns after the close)
    assert sum(int(r["counted_units"]) < int(r["book_units"]) for r in counted) >= 1
    checked = 0
    for d0, d1 in zip(dates, dates[1:]):
        for sku in {s for _, s in stock}:
            before = stock[(d0, sku)]
            start = int(before["counted_units"] or before["book_units"])
            assert int(stock[(d1, sku)]["book_units"]) == start + received.get((d1, sku), 0) - sold.get((d1, sku), 0)
            checked += 1
    assert checked == 3 * 80


def test_fault_counts_in_the_files_equal_the_truth_table(faulty):
    out, _ = faulty
    faults = {r["kind"]: r["count"] for r in pq.read_table(out / "truth" / "faults" / "s001.parquet").to_pylist()}
    seen: dict[tuple[str, int], int] = {}
    late = 0
    for etype in ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery"):
        for r in pq.read_table(out / "events" / etype / "s001.parquet", columns=["device_id", "seq", "ts", "sent_at"]).to_pylist():
            key = (r["device_id"], r["seq"])
            seen[key] = seen.get(key, 0) + 1
            late += r["sent_at"] - r["ts"] >= Scenario.default().faults.late_min_s * 1000
    malformed = pq.read_table(out / "events" / "malformed" / "s001.parquet")
    bad_keys = set(zip(malformed.column("device_id").to_pylist(), malformed.column("seq").to_pylist()))
    late_bad = {(r["device_id"], r["seq"]) for r in malformed.to_pylist()
                if r["sent_at"] - r["ts"] >= Scenario.default().faults.late_min_s * 1000}
    late += len(late_bad)
    assert len(bad_keys) == faults["malformed"]
    # Messages whose send time falls after the last day are still held by their device.
    pending = faults["pending"]
    duplicates = sum(n - 1 for n in seen.values()) + malformed.num_rows - len(bad_keys)
    assert faults["duplicate"] - pending <= duplicates <= faults["duplicate"]
    assert faults["late"] - pending <= late <= faults["late"] and late > 0
    assert set(malformed.column("kind").to_pylist()) <= {"truncated", "wrong_type", "unknown_sku", "absurd_value"}
    # Dropped events leave seq gaps: every device's seqs are received, malformed or dropped.
    per_device: dict[str, set[int]] = {}
    for device, seq in set(seen) | bad_keys:
        per_device.setdefault(device, set()).add(seq)
    gaps = sum(max(v) + 1 - len(v) for v in per_device.values())
    assert 0 < gaps <= faults["drop"]


def test_same_scenario_and_seed_give_the_same_bytes_whatever_the_worker_count(tmp_path):
    sc = Scenario.with_faults(duplicates=0.02, reorders=0.02)
    generate(tmp_path / "a", stores=2, skus=60, days=2, seed=9, scenario=sc, workers=1)
    generate(tmp_path / "b", stores=2, skus=60, days=2, seed=9, scenario=sc, workers=2)
    generate(tmp_path / "c", stores=2, skus=60, days=2, seed=10, scenario=sc, workers=1)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a["events/pos.line/s001.parquet"] != c["events/pos.line/s001.parquet"]


def test_write_master_data_from_live_stores(tmp_path):
    sims = [StoreSim(s, 50, 1, START) for s in ("s001", "s002")]
    files = write_master_data(tmp_path, sims)
    assert [f.name for f in files] == ["stores.csv", "products.csv", "planogram.csv"]
    with files[2].open() as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == sum(len(s.planogram) for s in sims)
    with pytest.raises(ConfigError):
        write_master_data(tmp_path, [StoreSim("s003", 60, 1, START), sims[0]])


def test_live_stores_export_the_stock_record_of_the_days_that_closed_as_history_mode_does(tmp_path):
    generate(tmp_path / "h", stores=1, skus=80, days=2, seed=6, workers=1)
    sim = StoreSim("s001", 80, 6, START)
    end = START + 5 * 86_400_000 // 2  # two days and a half: the third has not closed
    sim.run_until(end)
    files = write_stock_records(tmp_path / "live", [sim], end)
    assert files == [tmp_path / "live" / "stock" / "stock_record_s001.csv"]
    assert files[0].read_bytes() == (tmp_path / "h" / "stock" / "stock_record_s001.csv").read_bytes()
    assert write_stock_records(tmp_path / "none", [StoreSim("s002", 80, 6, START)], START) == []


def test_cli_generate_writes_the_files_and_reports(tmp_path, capsys):
    code = main(["generate", "--stores", "1", "--skus", "40", "--days", "1", "--seed", "3",
                 "--scenario", str(ROOT / "scenarios" / "faults.toml"), "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert "events" in capsys.readouterr().out
    assert (tmp_path / "scenario.json").exists() and (tmp_path / "master" / "products.csv").exists()


def test_cli_scenario_prints_every_parameter(capsys):
    assert main(["scenario", str(ROOT / "scenarios" / "default.toml")]) == 0
    text = capsys.readouterr().out
    assert '"restock_skip_prob"' in text and '"seed": 42' in text


def test_cli_refuses_a_bad_broker_address_and_start_date():
    with pytest.raises(ConfigError, match="HOST:PORT"):
        main(["live", "--broker", "localhost"])
    with pytest.raises(ConfigError, match="--start"):
        main(["generate", "--out", "x", "--start", "Jan 5"])


def test_history_files_hold_the_same_events_live_mode_sends(tmp_path):
    sc = Scenario.with_faults(duplicates=0.02, late=0.01)
    generate(tmp_path, stores=1, skus=80, days=2, seed=6, scenario=sc, workers=1)
    sim = StoreSim("s001", 80, 6, START, sc)
    live = [json.loads(m.payload) for m in sim.run_until(START + 2 * 86_400_000 - 1)]
    files = [e for etype in ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery")
             for e in read_events(tmp_path, etype, "s001")]
    key = lambda e: (e["device_id"], e["seq"], json.dumps(e, sort_keys=True))  # noqa: E731
    assert sorted(files, key=key) == sorted(live, key=key)


def test_cli_generate_refuses_a_bad_sensor_share_before_creating_anything(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="sensor_share"):
        main(["generate", "--stores", "1", "--skus", "10", "--days", "1", "--sensor-share", "1.5",
              "--out", str(out), "--quiet"])
    assert not out.exists()

"""gold.stockout_causes through the lake runner: a simulated history's events, master data, sales
and nightly stock record loaded as a store would send them give the causes the benchmark computes
straight from the files, and the stock record is what decides them."""

from __future__ import annotations

import pytest

from bench.bench_causes import classify_history
from cloud.synth import fill_hub
from cloud.wiring import CloudSettings, build_cloud
from firmware_sim.history import generate, read_events
from gondola.hub import LocalHub

ETYPES = ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery")


@pytest.mark.slow
def test_the_runner_classifies_stockouts_with_the_stock_record_as_the_benchmark_does(tmp_path):
    hist = tmp_path / "hist"
    generate(hist, stores=1, skus=40, days=5, seed=5, sensor_share=1.0, workers=1, progress=False)
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, [e for t in ETYPES for e in read_events(hist, t, "s001")])
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite")))
    report = cloud.ingest_batch(hist)
    assert "stock/stock_record_s001.csv" in report["loaded"]
    cloud.ingest_stream()
    cloud.transform()
    assert cloud.storage.read("silver.stock_record").num_rows == 5 * 40
    lake = {(r["facing_id"], r["start_ms"]): (r["cause"], r["evidence"])
            for r in cloud.storage.read("gold.stockout_causes").to_pylist()}
    direct = classify_history(hist)
    assert len(lake) == len(direct) > 20
    assert sorted(v for v in lake.values()) == sorted((c, e) for c, _, e, _ in direct)
    assert sum("book" in e for _, e in lake.values()) > 0.8 * len(lake)

"""An alert on a facing without a sensor late in the evening, judged by a gap scan after
midnight that reaches the lake in the next run: the incremental lake judges it as one run does."""

from __future__ import annotations

import pytest

from cloud.synth import DAY0, day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.contracts import make_event
from gondola.hub import LocalHub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOUR, MIN = 3_600_000, 60_000
BLIND = "s001-f01"  # the planogram lists it without a sensor


def _event(etype: str, device: str, ts: int, data: dict) -> dict:
    e = make_event(etype, store_id="s001", device_id=device, seq=1, ts=ts, data=data)
    e["received_at"] = ts + 200
    return e


EVENTS = sorted(list(day_events(stores=1, facings=1, hours=30, reading_every_min=60)) + [
    _event("edge.alert", "gw2-s001", DAY0 + 23 * HOUR, {
        "facing_id": BLIND, "sku": "sku-0001", "state": "raised", "probability": 0.9, "horizon_min": 120,
        "scorer": "m1", "kind": "empty_now"}),
    _event("shelf.gap_scan", "hh2-s001", DAY0 + 24 * HOUR + 30 * MIN, {"facing_id": BLIND, "sku": "sku-0001"}),
], key=lambda e: e["ts"])


def _build(folder, batches):
    write_master_csvs(folder / "master", stores=1, facings=2)
    plan = folder / "master" / "planogram.csv"
    plan.write_text("\n".join(line.replace(",true,", ",false,") if line.startswith(f"s001,{BLIND},") else line
                              for line in plan.read_text().splitlines()) + "\n")
    cloud = build_cloud(CloudSettings(lake_uri=str(folder / "lake"), hub_path=str(folder / "hub.sqlite")))
    cloud.ingest_batch(folder / "master")
    with LocalHub(folder / "hub.sqlite") as hub:
        for batch in batches:
            fill_hub(hub, batch)
            cloud.ingest_stream()
            cloud.transform()
    outcomes = {(r["facing_id"], r["alert_ms"]): r["outcome"] for r in cloud.storage.read("gold.alert_outcomes").to_pylist()}
    perf = sorted((r["day_ms"], r["scorer"], r["alerts"], r["true_alerts"], r["unobserved"])
                  for r in cloud.storage.read("gold.model_performance").to_pylist())
    return outcomes, perf


def test_evidence_after_midnight_in_a_later_run_judges_the_alert_as_one_run_does(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "inc").mkdir()
    full = _build(tmp_path / "full", [EVENTS])
    assert full[0][(BLIND, DAY0 + 23 * HOUR)] == "empty_seen"
    assert (DAY0, "m1", 1, 1, 0) in full[1]
    midnight = DAY0 + 24 * HOUR
    inc = _build(tmp_path / "inc", [[e for e in EVENTS if e["ts"] < midnight], [e for e in EVENTS if e["ts"] >= midnight]])
    # before ALERT_REACH_DAYS: the second run did not rewrite the alert of the evening before
    # (unobserved), as no alert before a run's cutoff day took in a check after it
    assert inc == full

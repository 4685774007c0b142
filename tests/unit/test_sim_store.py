"""The store model and its devices: contracts, determinism, consistency with ground truth."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from firmware_sim import DeviceMessage, GroundTruth, Scenario, StoreSim
from gondola.clock import DAY_MS, HOUR_MS
from gondola.contracts import parse_event
from gondola.errors import ConfigError
from gondola.topics import parse_device_topic

START = 1_767_571_200_000  # Monday 2026-01-05


@pytest.fixture(scope="module")
def two_days():
    sim = StoreSim(store_id="s001", skus=200, seed=7, start_ms=START, scenario=Scenario.default(), sensor_share=0.5)
    msgs = sim.run_until(START + 2 * DAY_MS - 1)
    return sim, msgs


def test_every_message_is_a_valid_contract_event_on_its_device_topic(two_days):
    sim, msgs = two_days
    assert msgs and all(isinstance(m, DeviceMessage) and m.valid for m in msgs)
    kinds = {"pos.line": "pos", "shelf.reading": "shelf", "shelf.restock": "handheld", "inventory.delivery": "handheld"}
    for m in msgs:
        event = parse_event(m.payload)
        assert (event["device_id"], event["seq"], event["type"], event["ts"]) == (m.device_id, m.seq, m.etype, m.ts)
        assert parse_device_topic(m.topic) == ("s001", kinds[m.etype], m.device_id)
    assert set(Counter(m.etype for m in msgs)) == set(kinds)


def test_payload_bytes_equal_the_json_of_the_make_event_dict(two_days):
    sim = StoreSim("s001", 200, 7, START)
    batch = sim.advance(START + DAY_MS - 1)
    msgs = sim._messages(batch)
    for i, m in enumerate(msgs):
        assert m.payload == json.dumps(sim.event(batch, i), separators=(",", ":")).encode()


def test_messages_come_in_send_order_and_each_device_counts_seq_from_zero_without_gaps(two_days):
    _, msgs = two_days
    sent = [m.sent_at for m in msgs]
    assert sent == sorted(sent)
    seqs = defaultdict(list)
    for m in msgs:
        seqs[m.device_id].append(m.seq)
    for device, values in seqs.items():
        assert values == list(range(len(values))), device


def test_same_seed_gives_the_same_bytes_however_often_run_until_is_called():
    one = StoreSim("s002", 150, 11, START).run_until(START + DAY_MS + 6 * HOUR_MS)
    sim = StoreSim("s002", 150, 11, START)
    chunks = []
    for t in range(START + 7 * 60_000, START + DAY_MS + 6 * HOUR_MS + 1, 37 * 60_000):
        chunks += sim.run_until(t)
    chunks += sim.run_until(START + DAY_MS + 6 * HOUR_MS)
    assert [m.payload for m in chunks] == [m.payload for m in one]
    assert [m.payload for m in StoreSim("s002", 150, 12, START).run_until(START + DAY_MS)] != \
        [m.payload for m in one][: len(one)]


def test_run_until_refuses_to_go_back_in_time(two_days):
    sim, _ = two_days
    with pytest.raises(ValueError):
        sim.run_until(START)


def test_start_must_be_a_midnight_utc():
    with pytest.raises(ConfigError, match="midnight"):
        StoreSim("s001", 50, 1, START + HOUR_MS)


def test_no_sales_outside_opening_hours(two_days):
    sim, msgs = two_days
    hours = {((m.ts % DAY_MS) // HOUR_MS) for m in msgs if m.etype == "pos.line"}
    assert hours and min(hours) >= 7 and max(hours) < 22


def test_pos_net_sales_per_sku_equal_the_true_units_sold(two_days):
    sim, msgs = two_days
    pos = Counter()
    for m in msgs:
        if m.etype == "pos.line":
            data = json.loads(m.payload)["data"]
            if data["kind"] != "return":
                pos[data["sku"]] += data["qty"]
    daily = sim.truth.daily()
    first_two = daily["day_ms"] < START + 2 * DAY_MS
    truth = Counter()
    for f, sold in zip(daily["facing"][first_two], daily["sold"][first_two]):
        truth[str(sim.truth.facing_sku[f])] += int(sold)
    assert +pos == +truth


def test_demand_is_conserved_as_sales_plus_lost_sales(two_days):
    sim, _ = two_days
    d = sim.truth.daily()
    assert d["demand"].sum() == d["sold"].sum() + d["lost"].sum()
    assert d["lost"].sum() > 0


def test_shelf_readings_estimate_the_true_units_within_sensor_noise(two_days):
    sim, msgs = two_days
    timelines = {}
    close, total = 0, 0
    stuck = {w.target for w in sim.truth.windows if w.kind == "sensor_stuck"}
    for m in msgs:
        if m.etype != "shelf.reading" or m.device_id in stuck:
            continue
        data = json.loads(m.payload)["data"]
        line = timelines.setdefault(data["facing_id"], sim.truth.shelf_units(data["facing_id"]))
        times = [t for t, _ in line]
        idx = np.searchsorted(times, m.ts, side="right") - 1
        true_units = line[idx][1]
        total += 1
        close += abs(data["units_est"] - true_units) <= 1
    assert total > 1000
    assert close / total > 0.97


def test_stockout_intervals_match_zero_units_in_the_shelf_timeline(two_days):
    sim, _ = two_days
    stockouts = sim.truth.stockouts
    assert stockouts
    for store_id, facing_id, sku, start, end in stockouts[:50]:
        line = sim.truth.shelf_units(facing_id)
        at_start = [u for t, u in line if t <= start][-1]
        assert at_start == 0 and store_id == "s001"
        if end is not None:
            assert end > start
            assert [u for t, u in line if t <= end + sim.step_ms][-1] > 0


def test_stockouts_are_exactly_the_zero_stretches_of_the_shelf_timeline(two_days):
    sim, _ = two_days
    derived = []
    for facing in sim.plan.facing_id.tolist():
        start = None
        for ts, units in sim.truth.shelf_units(facing):
            if units == 0 and start is None:
                start = ts
            elif units > 0 and start is not None:
                derived.append((facing, start, ts))
                start = None
        if start is not None:
            derived.append((facing, start, None))
    truth = [(f, start, end) for _, f, _, start, end in sim.truth.stockouts]
    assert sorted(truth, key=str) == sorted(derived, key=str)
    per_facing_day = Counter((f, start // DAY_MS) for f, start, _ in truth)
    assert max(per_facing_day.values()) >= 2, "a facing can run empty twice in one day"


def test_truth_counts_every_valid_event_sent_and_nothing_else_without_faults(two_days):
    sim, msgs = two_days
    truth: GroundTruth = sim.truth
    by_type = defaultdict(set)
    for m in msgs:
        by_type[m.etype].add((m.device_id, m.seq))
    assert {k: v for k, v in truth.emitted.items() if v} == dict(by_type)
    assert not truth.dropped and not truth.malformed
    assert not {k: v for k, v in truth.faults.items() if k in ("drop", "duplicate", "malformed", "reorder", "late")}


def test_planogram_and_products_describe_the_store(two_days):
    sim, _ = two_days
    plan, products = sim.planogram, sim.products
    assert len(products) == 200
    assert set(products[0]) == {"sku", "name", "category", "price_cents", "unit_weight_g", "pack_size"}
    assert set(plan[0]) >= {"facing_id", "sku", "capacity", "has_sensor"}
    per_sku = Counter(f["sku"] for f in plan)
    assert set(per_sku) == {p["sku"] for p in products}
    assert max(per_sku.values()) >= 2, "fast movers sit on several facings"
    share = sum(f["has_sensor"] for f in plan) / len(plan)
    assert 0.35 < share < 0.65
    assert all(f["capacity"] >= 4 for f in plan)


def test_restock_scans_add_exactly_the_units_that_appear_on_the_shelf(two_days):
    sim, msgs = two_days
    restocks = [json.loads(m.payload)["data"] for m in msgs if m.etype == "shelf.restock"]
    assert restocks and all(r["units_added"] > 0 for r in restocks)
    facing = restocks[0]["facing_id"]
    cap = next(f["capacity"] for f in sim.planogram if f["facing_id"] == facing)
    assert max(u for _, u in sim.truth.shelf_units(facing)) <= cap


def test_a_device_with_an_epoch_sends_it_and_its_bytes_still_equal_the_make_event_json():
    sim = StoreSim("s001", 200, 7, START)
    sim.epochs = {d: 3 for d in sim._names["device"][:2]}
    batch = sim.advance(START + DAY_MS - 1)
    msgs = sim._messages(batch)
    with_epoch = [m for m in msgs if m.device_id in sim.epochs and m.valid]
    assert with_epoch
    for i, m in enumerate(msgs):
        if m.valid:
            assert m.payload == json.dumps(sim.event(batch, i), separators=(",", ":")).encode()
    event = parse_event(with_epoch[0].payload)
    assert event["epoch"] == 3 and event["event_id"] == f"{event['device_id']}:3:{event['seq']}"


def test_gap_scans_name_only_truly_empty_facings_and_miss_about_the_configured_share():
    sc = Scenario.demo()
    sim = StoreSim("s001", 200, 7, START, scenario=sc)
    msgs = sim.run_until(START + 4 * DAY_MS - 1)
    scans = [parse_event(m.payload) for m in msgs if m.etype == "shelf.gap_scan"]
    assert scans and all(parse_device_topic(m.topic)[1] == "handheld" for m in msgs if m.etype == "shelf.gap_scan")
    empty = defaultdict(list)
    for _store, facing, _sku, start, end in sim.truth.stockouts:
        empty[facing].append((start, end if end is not None else 1 << 62))
    assert all(any(a <= e["ts"] < b for a, b in empty[e["data"]["facing_id"]]) for e in scans)
    # Each round's scans against every facing empty at its first scan: about 1 - miss_prob of them.
    rounds = defaultdict(list)
    for e in scans:
        rounds[e["data"]["round_id"]].append(e)
    found = were_empty = 0
    for evs in rounds.values():
        t = min(e["ts"] for e in evs)
        were_empty += sum(any(a <= t < b for a, b in iv) for iv in empty.values())
        found += len(evs)
    assert 0.6 <= found / were_empty <= 0.95  # miss_prob 0.2
    # 2 rounds a day, 4 days, some skipped (skip prob 0.1): the round ids say which
    assert 5 <= len(rounds) <= 8 and all(k.startswith("s001-gap-") for k in rounds)


def test_the_default_scenario_emits_no_gap_scans(two_days):
    _sim, msgs = two_days
    assert not any(m.etype == "shelf.gap_scan" for m in msgs)

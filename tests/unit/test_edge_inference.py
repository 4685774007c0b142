"""Inference on the gateway: planogram, POS attribution, one batched score, hysteresis; settings."""

from __future__ import annotations

import numpy as np
import pytest

from edge.inference import _UNITS, Inference, PlanogramRow, load_planogram
from edge.metrics import exposition
from edge.testing import T0, planogram_csv, pos_line, reading, restock
from edge.wiring import EdgeSettings, resolve_pseudonym_key
from gondola.errors import ConfigError


class ScriptedScorer:
    """Returns the probabilities it is told to; counts calls and rows."""

    name = "scripted"
    horizon_h = 2.0

    def __init__(self):
        self.next = None
        self.calls = []

    def score(self, features):
        self.calls.append(features.shape)
        return np.asarray(self.next, dtype=float)


def _inf(scorer, n=3, **kw):
    plan = [PlanogramRow(f"f{i}", f"k{i}", 10, True) for i in range(n)]
    return Inference(plan, scorer, **kw)


def _sold(inf, at=T0 - 60_000):
    """The till sold one unit of each facing's SKU at ``at``: a forecast may be raised there
    (``models.scoring.forecast_ready``)."""
    inf.observe([pos_line(900 + i, at, sku=s.sku) for i, s in enumerate(inf.states)])


def test_all_facings_are_scored_in_one_batched_call_per_cycle():
    s = ScriptedScorer()
    inf = _inf(s, n=5)
    s.next = [0.1] * 5
    inf.cycle(T0)
    assert len(s.calls) == 1 and s.calls[0][0] == 5


def test_alerts_raise_above_the_high_mark_clear_below_the_low_one_and_respect_dwell():
    s = ScriptedScorer()
    inf = _inf(s, n=1, raise_at=0.6, clear_at=0.3, min_dwell_ms=10 * 60_000)
    _sold(inf)
    seq = [(0, 0.7, "raised"), (1, 0.5, None), (2, 0.1, None),  # cleared too soon: dwell holds it
           (11, 0.1, "cleared"), (12, 0.65, None), (22, 0.65, "raised"), (33, 0.4, None)]
    for minute, p, expect in seq:
        s.next = [p]
        changes = inf.cycle(T0 + minute * 60_000)
        assert [c.state for c in changes] == ([expect] if expect else []), minute


def test_two_alert_kinds_raise_separately_and_a_forecast_carries_its_expected_empty_time():
    from gondola.contracts import validate_event
    from edge.gateway import _alert_data

    s = ScriptedScorer()
    plan = [PlanogramRow("f0", "k0", 10, True), PlanogramRow("f1", "k1", 10, True), PlanogramRow("f2", "k2", 10, False)]
    inf = Inference(plan, s, raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
    day = 24 * 3600_000
    # f0 reads empty; f1 reads 4 units and sells about 2 an hour; f2 (no sensor) sold 2 an hour
    # for a week, was refilled to its 10 units 12 hours ago, sold them, then nothing for 6 hours.
    events = [reading(0, T0, facing_id="f0", units=0), reading(1, T0, facing_id="f1", device_id="shelf-s001-f1", units=4),
              restock(1, T0 - 12 * 3600_000 + 1, facing_id="f2", sku="k2", units=10)]
    events += [pos_line(2 + i, T0 - 7 * day + i * 1800_000, sku=sku) for i in range(7 * 48) for sku in ("k1", "k2")
               if T0 - 7 * day + i * 1800_000 < T0 - (0 if sku == "k1" else 6 * 3600_000)]
    inf.observe(sorted(events, key=lambda e: e["ts"]))
    s.next = [0.9, 0.8, 0.1]
    changes = inf.cycle(T0)
    kinds = {(c.facing_id, c.kind) for c in changes if c.state == "raised"}
    # f0 is empty now: no forecast on top of it; f1 is forecast; f2's silence says empty now.
    assert kinds == {("f0", "empty_now"), ("f1", "empty_within_h"), ("f2", "empty_now")}
    forecast = next(c for c in changes if c.kind == "empty_within_h")
    assert T0 + 3600_000 <= forecast.expected_empty_ts <= T0 + 2 * 3600_000 + 1  # 4 units at ~2/h
    for c in changes:
        data = _alert_data(c, 120, "model:v1")
        validate_event({"event_id": "gw:1", "type": "edge.alert", "schema": 1, "store_id": "s001",
                        "device_id": "gw", "seq": 1, "ts": T0, "data": data})
        assert ("expected_empty_ts" in data) == (c.kind == "empty_within_h")
    listing = inf.restock_list()
    assert [(r["facing_id"], r["kind"]) for r in listing][:1] == [("f1", "empty_within_h")]
    assert {r["kind"] for r in listing[1:3]} == {"empty_now"}
    # The shelf refilled: the detection clears, and both alert kinds survive a restart.
    rows = inf.snapshot(everything=True)
    other = Inference(plan, ScriptedScorer())
    other.restore(rows)
    assert other.raised.tolist() == [False, True, False] and other.raised_now.tolist() == [True, False, True]
    inf.observe([reading(99, T0 + 60_000, facing_id="f0", units=8)])
    s.next = [0.1, 0.8, 0.1]
    assert [(c.facing_id, c.kind, c.state) for c in inf.cycle(T0 + 60_000)] == [("f0", "empty_now", "cleared")]


def test_a_model_that_says_so_also_scores_empty_now_where_no_sensor_is_believed():
    s = ScriptedScorer()
    s.thresholds = {"empty_within_h": 0.5, "empty_now": 0.9}
    plan = [PlanogramRow("f0", "k0", 10, False), PlanogramRow("f1", "k1", 10, False)]
    inf = Inference(plan, s, raise_at=0.5, clear_at=0.25, min_dwell_ms=0)
    _sold(inf)
    assert inf.now_at == 0.9
    s.next = [0.95, 0.6]
    s.empty_now_from_model = False  # the till's silence decides: one sale, a minute ago: not empty
    assert {(c.facing_id, c.kind) for c in inf.cycle(T0)} == {("f0", "empty_within_h"), ("f1", "empty_within_h")}
    inf = Inference(plan, s, raise_at=0.5, clear_at=0.25, min_dwell_ms=0)
    _sold(inf)
    s.empty_now_from_model = True
    assert {(c.facing_id, c.kind) for c in inf.cycle(T0)} == {("f0", "empty_now"), ("f1", "empty_within_h")}


def test_no_forecast_before_the_till_sold_from_a_facing_but_empty_now_is_not_delayed():
    # A cold start (make demo's first night): facings the gateway has barely heard of score high
    # on no evidence. The forecast waits for the facing's first sale; the detection does not wait.
    s = ScriptedScorer()
    s.thresholds = {"empty_within_h": 0.6, "empty_now": 0.9}
    s.empty_now_from_model = True
    plan = [PlanogramRow("f0", "k0", 10, True), PlanogramRow("f1", "k1", 10, True), PlanogramRow("f2", "k2", 10, False)]
    inf = Inference(plan, s, raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
    # f0 reads 3 units, f1 reads 0 (empty from the start); f2 (no sensor) is unheard of.
    inf.observe([reading(1, T0, facing_id="f0", units=3),
                 reading(2, T0, facing_id="f1", device_id="shelf-s001-f1", sku="k1", units=0)])
    s.next = [0.97, 0.97, 0.95]
    changes = inf.cycle(T0 + 15 * 60_000)
    assert {(c.facing_id, c.kind) for c in changes} == {("f1", "empty_now"), ("f2", "empty_now")}
    assert not inf.raised.any()
    # The till sells one unit of k0: f0's forecast is raised at the next cycle, same score.
    inf.observe([pos_line(3, T0 + 20 * 60_000, sku="k0")])
    changes = inf.cycle(T0 + 30 * 60_000)
    assert [(c.facing_id, c.kind, c.state) for c in changes] == [("f0", "empty_within_h", "raised")]
    # The shadow scorer follows the same rule.
    inf.set_shadow(ScriptedScorer(), raise_at=0.6)
    inf.shadow.next = [0.97, 0.97, 0.97]
    inf.cycle(T0 + 45 * 60_000)
    assert [c.facing_id for c in inf.take_shadow_changes()] == ["f0"]


def test_empty_now_is_not_raised_on_a_zero_the_shelf_sensor_never_read():
    # The till's count brings a sensored facing to 0 (two units read, two sold since), but a
    # shelf sensor reports when its value changes and has not: the shelf was not seen empty
    # (models.scoring.empty_now_ready; on the busier held-out stores most false empty_now alerts
    # on believed sensors were such zeros). The sensor's own 0 raises it; a later sale does not
    # clear one already raised.
    s = ScriptedScorer()
    plan = [PlanogramRow("f0", "k0", 10, True), PlanogramRow("f1", "k1", 10, True)]
    inf = Inference(plan, s, raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
    inf.observe([reading(1, T0, facing_id="f0", units=2),
                 reading(2, T0, facing_id="f1", device_id="shelf-s001-f1", sku="k1", units=2),
                 pos_line(3, T0 + 10 * 60_000, sku="k0", qty=2), pos_line(4, T0 + 10 * 60_000, sku="k1", qty=2)])
    s.next = [0.1, 0.1]
    assert inf.cycle(T0 + 15 * 60_000) == []
    assert inf.cache.matrix(T0 + 15 * 60_000)[:, _UNITS].tolist() == [0.0, 0.0]
    assert not inf.raised_now.any() and inf.last_now_probs.tolist() == [1.0, 1.0]
    inf.observe([reading(5, T0 + 20 * 60_000, facing_id="f0", units=0)])
    changes = inf.cycle(T0 + 25 * 60_000)
    assert [(c.facing_id, c.kind, c.state) for c in changes] == [("f0", "empty_now", "raised")]
    inf.observe([pos_line(6, T0 + 30 * 60_000, sku="k0")])
    assert inf.cycle(T0 + 35 * 60_000) == [] and inf.raised_now.tolist() == [True, False]


def test_no_forecast_is_raised_on_a_facing_its_shelf_sensor_reads_empty():
    # A forecast promises stock now that runs out within H: on a sensor's 0 it would read "empty
    # in 0 min" (models.scoring.forecast_ready; in make demo 8 of 13 forecasts were such). f0's
    # sensor drops from 3 to 0 with no sale to explain it: a doubted 0, which the model's score
    # (0.95, under empty_now's 0.97) does not alert as empty now either. f1 reads 3 and gets its
    # forecast; f0 gets one once the till sells from it (evidence of stock the reading missed).
    s = ScriptedScorer()
    s.empty_now_from_model = True
    plan = [PlanogramRow("f0", "k0", 10, True), PlanogramRow("f1", "k1", 10, True)]
    inf = Inference(plan, s, raise_at=0.6, clear_at=0.3, min_dwell_ms=0, now_at=0.97)
    _sold(inf)
    inf.observe([reading(1, T0, facing_id="f0", units=3),
                 reading(2, T0, facing_id="f1", device_id="shelf-s001-f1", sku="k1", units=3),
                 reading(3, T0 + 10 * 60_000, facing_id="f0", units=0)])
    s.next = [0.95, 0.95]
    changes = inf.cycle(T0 + 15 * 60_000)
    assert inf.cache.matrix(T0 + 15 * 60_000)[:, _UNITS].tolist() == [0.0, 3.0]
    assert [(c.facing_id, c.kind, c.state) for c in changes] == [("f1", "empty_within_h", "raised")]
    assert not inf.raised_now.any() and inf.last_now_probs.tolist() == [0.95, 0.0]
    inf.observe([pos_line(4, T0 + 20 * 60_000, sku="k0")])
    changes = inf.cycle(T0 + 25 * 60_000)
    assert [(c.facing_id, c.kind, c.state) for c in changes] == [("f0", "empty_within_h", "raised")]


def test_a_sensor_zero_of_a_sku_sold_out_on_every_facing_raises_empty_now_not_a_forecast():
    # SKU k0 on "a" (load cell) and "b" (none). b's units are sold; an hour later the last unit
    # is picked from "a" (its cell reads 0) and paid 3 minutes later. With every facing estimated
    # empty the till's line is split evenly (sale_shares), so "a" was credited half a unit sold
    # since its reading: that sale is the SKU's, not evidence of stock on "a", whose estimate the
    # till never lowers (sku_sale). It used to block empty_now on the sensor's own 0 (as "a 0 the
    # sensor never read") and let a forecast through ("empty in 0 min" of an empty shelf).
    s = ScriptedScorer()
    plan = [PlanogramRow("a", "k0", 6, True), PlanogramRow("b", "k0", 6, False)]
    inf = Inference(plan, s, raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
    inf.observe([restock(1, T0, facing_id="b", units=6), reading(2, T0 + 60_000, facing_id="a", units=1)])
    inf.observe([pos_line(10 + i, T0 + (10 + i) * 60_000) for i in range(6)])
    t = T0 + 2 * 3_600_000
    inf.observe([reading(3, t, facing_id="a", units=0), pos_line(20, t + 3 * 60_000)])
    s.next = [0.95, 0.1]
    changes = inf.cycle(t + 5 * 60_000)
    assert inf.cache.matrix(t + 5 * 60_000)[:, _UNITS].tolist() == [0.0, 0.0]
    assert [(c.facing_id, c.kind, c.state) for c in changes if c.facing_id == "a"] == [("a", "empty_now", "raised")]
    assert not inf.raised[0]


def test_pos_lines_are_split_across_the_facings_of_their_sku():
    plan = [PlanogramRow("a", "k1", 10, False), PlanogramRow("b", "k1", 10, False), PlanogramRow("c", "k2", 10, False)]
    inf = Inference(plan, ScriptedScorer())
    inf.observe([pos_line(0, T0, sku="k1", qty=4)])
    rates = [st.rates_at(T0)[0] for st in inf.states]
    assert rates[0] == pytest.approx(rates[1]) and rates[0] > 0 and rates[2] == 0
    from models.features import FacingState
    ref = FacingState("r", "k1", 10)
    ref.on_sale(T0, 2)  # half of the line's 4 units
    assert rates[0] == pytest.approx(ref.rates_at(T0)[0])


def test_readings_set_units_and_unknown_facings_are_counted():
    inf = _inf(ScriptedScorer())
    inf.observe([reading(0, T0, facing_id="f1", units=3), reading(1, T0, facing_id="zz")])
    assert inf.states[1].units == 3.0 and inf.unknown_facings == 1


def test_facing_state_and_alert_state_survive_a_snapshot_and_restore():
    s = ScriptedScorer()
    inf = _inf(s)
    inf.observe([pos_line(0, T0, sku="k0", qty=5), reading(0, T0, facing_id="f2", units=1)])
    s.next = [0.9, 0.0, 0.0]
    inf.cycle(T0)
    rows = inf.snapshot()
    other = _inf(ScriptedScorer())
    assert other.restore(rows) == 3
    assert other.raised.tolist() == [True, False, False]
    assert other.states[2].units == 1.0
    assert other.states[0].features(T0 + 3600_000) == inf.states[0].features(T0 + 3600_000)


def _same_state(a, b) -> bool:
    va, vb = vars(a), vars(b)
    return va.keys() == vb.keys() and all(
        np.array_equal(x, vb[k]) if isinstance(x, np.ndarray) else x == vb[k] for k, x in va.items())


def test_packed_snapshots_restore_every_field_exactly_through_the_buffer(tmp_path):
    import json

    from edge.buffer import SqliteBuffer

    inf = _inf(ScriptedScorer(), n=4)
    # a new gateway saves every facing once, with the layout row and the alert budget's row
    assert len(inf.snapshot()) == 4 + 2
    inf.observe([pos_line(0, T0, sku="k0", qty=3), reading(0, T0 + 1, facing_id="f1", units=7),
                 pos_line(1, T0 + 3_600_123, sku="k1", qty=1), reading(1, T0 + 7_200_000, facing_id="f1", units=5)])
    buf = SqliteBuffer(tmp_path / "b.sqlite")
    rows = inf.snapshot()
    # only the facings that changed, the layout and the alert budget
    assert sorted(r[0] for r in rows) == ["", "::alert_budget", "f0", "f1"]
    buf.save_facing_states(rows)
    assert inf.snapshot() == []  # nothing changed since
    # An older build's JSON row for f3 (lists, not packed values) is still read.
    old = dict(vars(inf.states[3]), units=2.0)
    old = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in old.items()}
    buf.save_facing_states([("f3", json.dumps(old), "clear", 0)])
    other = _inf(ScriptedScorer(), n=4)
    assert other.restore(buf.load_facing_states()) == 3
    buf.close()
    for i in (0, 1):
        assert _same_state(other.states[i], inf.states[i]), i
    assert other.states[3].units == 2.0 and other.states[2].units is None
    assert other.states[0].features(T0 + 9_000_000) == inf.states[0].features(T0 + 9_000_000)


def test_packed_snapshots_written_by_a_build_with_other_fields_restore_the_fields_both_know():
    from edge.buffer import LAYOUT_ROW
    from edge.inference import SNAPSHOT_LAYOUT

    inf = _inf(ScriptedScorer())
    inf.observe([reading(0, T0, facing_id="f0", units=4)])
    rows = inf.snapshot()
    blob = next(r for r in rows if r[0] == "f0")
    # That build had one more scalar field at the front, and no battery_pct.
    values = np.frombuffer(blob[1], "<f8")
    names = [n for n, _ in SNAPSHOT_LAYOUT]
    at = sum(w or 1 for n, w in SNAPSHOT_LAYOUT[: names.index("battery_pct")])
    packed = np.concatenate([[42.0], values[:at], values[at + 1:]]).astype("<f8").tobytes()
    layout = "f8:gone_field:0," + ",".join(f"{n}:{w}" for n, w in SNAPSHOT_LAYOUT if n != "battery_pct")
    other = _inf(ScriptedScorer())
    assert other.restore([(LAYOUT_ROW, layout, "layout", 0), ("f0", packed, blob[2], blob[3])]) == 1
    assert other.states[0].units == 4.0 and other.states[0].battery_pct == 0.0  # the default


def test_planogram_loads_one_stores_facings_and_rejects_missing_columns(tmp_path):
    p = tmp_path / "planogram.csv"
    p.write_text(planogram_csv("s001", 4) + "s002,f9,k9,5,0\n")
    rows = load_planogram(p, "s001")
    assert [r.facing_id for r in rows] == ["f0", "f1", "f2", "f3"] and rows[0].has_sensor
    p.write_text("store_id,facing_id\ns001,f1\n")
    with pytest.raises(ConfigError):
        load_planogram(p, "s001")


def test_settings_come_from_the_environment_and_options_override_them(tmp_path):
    env = {"GONDOLA_STORE_ID": "s007", "GONDOLA_BROKER_PORT": "1999", "GONDOLA_DATA_DIR": str(tmp_path),
           "GONDOLA_HUB": "iothub", "GONDOLA_LIVE_SHARE": "0.3"}
    s = EdgeSettings.from_env(env, broker_host="mosquitto")
    assert (s.store_id, s.broker_port, s.data_dir, s.hub, s.live_share, s.broker_host) == (
        "s007", 1999, tmp_path, "iothub", 0.3, "mosquitto")
    with pytest.raises(ConfigError):
        EdgeSettings.from_env({"GONDOLA_STORE_ID": "s1", "GONDOLA_BROKER_PORT": "x"})
    with pytest.raises(ConfigError):
        EdgeSettings.from_env({})


def test_production_refuses_to_start_without_a_pseudonym_key_and_dev_makes_a_private_key_file(tmp_path):
    with pytest.raises(ConfigError):
        resolve_pseudonym_key(EdgeSettings(store_id="s1", data_dir=tmp_path, mode="production"))
    key = resolve_pseudonym_key(EdgeSettings(store_id="s1", data_dir=tmp_path))
    assert len(key) == 32 and (tmp_path / "pseudonym.key").stat().st_mode & 0o077 == 0
    assert resolve_pseudonym_key(EdgeSettings(store_id="s1", data_dir=tmp_path)) == key
    with pytest.raises(ConfigError):
        EdgeSettings(store_id="s1", pseudonym_key=b"short").validate()


def _samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


def test_metrics_are_prometheus_text_with_per_device_gaps_and_eviction_reasons():
    text = exposition({"store_id": "s001", "buffer_rows": 5, "seq_gaps": 3, "evictions": 2,
                       "evictions_by": {"thin_5min/shelf.reading": 2}, "gaps": {"pos-1": [[2, 4]]},
                       "model_version": "baseline-poisson", "last_uplink_ts": 1000,
                       "oldest_unsent_age_s": 12.5}).decode()
    got = _samples(text)
    store = (("store_id", "s001"),)
    assert got[("gondola_edge_buffer_events", store)] == 5
    assert got[("gondola_edge_oldest_unsent_age_seconds", store)] == 12.5
    assert got[("gondola_edge_device_seq_gaps", (("device_id", "pos-1"), *store))] == 3
    assert got[("gondola_edge_evictions_total", (("reason", "thin_5min"), *store, ("type", "shelf.reading")))] == 2
    assert got[("gondola_edge_last_uplink_timestamp_seconds", store)] == 1.0
    assert got[("gondola_edge_model_info", (("model_version", "baseline-poisson"), *store))] == 1
    assert "# TYPE gondola_edge_evictions_total counter" in text
    # One name per quantity: no unit-less ages, no second eviction total.
    names = {name for name, _ in got}
    assert not {"gondola_edge_oldest_unsent_age_s", "gondola_edge_evictions_by_total"} & names
    assert all(n.startswith("gondola_edge_") for n in names)


def test_a_failing_model_falls_back_to_the_baseline_for_that_cycle():
    class Broken:
        name = "model-v7"
        horizon_h = 2.0

        def score(self, features):
            raise RuntimeError("tensor shape mismatch")

    inf = _inf(Broken())
    assert inf.cycle(T0) == [] and inf.scorer_errors == 1 and inf.scored_by == "baseline-poisson"


def test_gateway_routes_pos_lines_of_a_multi_facing_sku_as_the_cloud_replay_does():
    from models.replay import Facing, StoreFeatures

    plan = [PlanogramRow("a", "k1", 6, False), PlanogramRow("b", "k1", 6, False), PlanogramRow("c", "k2", 6, False)]
    inf = Inference(plan, ScriptedScorer())
    cloud = StoreFeatures("s001", [Facing(r.facing_id, r.sku, r.capacity) for r in plan])
    events = [restock(0, T0, facing_id="a", sku="k1", units=2), restock(1, T0, facing_id="b", sku="k1", units=2),
              pos_line(2, T0 + 60_000, sku="k1", qty=9), pos_line(3, T0 + 120_000, sku="k1", qty=2),
              pos_line(4, T0 + 180_000, sku="k2", qty=1)]
    events.append({**pos_line(5, T0 + 240_000, sku="k1", qty=1), "data": {**pos_line(5, 0, sku="k1")["data"],
                                                                        "kind": "return"}})
    inf.observe(events)
    for ev in events:
        cloud.apply(ev)
    np.testing.assert_allclose(inf.cache.matrix(T0 + 3600_000), cloud.matrix(T0 + 3600_000))
    # Both facings taken as full at their first restock (2 x 6); 11 sold; the return is not
    # put back on the shelf; "c" was never restocked: unknown.
    assert [st.units for st in inf.states] == [0.5, 0.5, None]


def test_the_sensor_noise_estimate_survives_a_snapshot_and_an_older_layout_without_it_still_restores():
    from edge.buffer import LAYOUT_ROW
    from edge.inference import SNAPSHOT_LAYOUT

    inf = _inf(ScriptedScorer())
    # Heartbeats of an unchanged shelf that read 4, 3, 4, 4: two of three still pairs moved.
    inf.observe([reading(i, T0 + i * 3_600_000, facing_id="f0", units=u) for i, u in enumerate([4, 3, 4, 4])])
    assert inf.states[0].reading_noise == pytest.approx(2 / 3)
    rows = inf.snapshot()
    other = _inf(ScriptedScorer())
    assert other.restore(rows) == 3
    assert other.states[0].reading_noise == inf.states[0].reading_noise and other.states[0]._noise_pairs == 3
    # The build before the estimate wrote the same layout without its two fields.
    blob = next(r for r in rows if r[0] == "f0")
    values, keep, at = np.frombuffer(blob[1], "<f8"), [], 0
    for name, width in SNAPSHOT_LAYOUT:
        if name not in ("reading_noise", "_noise_pairs"):
            keep += list(range(at, at + (width or 1)))
        at += width or 1
    layout = "f8:" + ",".join(f"{n}:{w}" for n, w in SNAPSHOT_LAYOUT if n not in ("reading_noise", "_noise_pairs"))
    old = _inf(ScriptedScorer())
    assert old.restore([(LAYOUT_ROW, layout, "layout", 0), ("f0", values[keep].astype("<f8").tobytes(), blob[2], blob[3])]) == 1
    assert old.states[0].units == 4.0 and old.states[0].reading_noise == 0.0 and old.states[0]._noise_pairs == 0
    assert old.states[0].features(T0 + 4 * 3_600_000)[:-1] == inf.states[0].features(T0 + 4 * 3_600_000)[:-1]


def test_forecasts_restored_after_a_restart_get_their_expected_empty_time_at_the_next_cycle():
    # QA: after a gateway restart every restored forecast listed expected_empty_ts 0 (1970) on
    # the store page, soonest-first order lost, until some other facing raised a new forecast.
    s = ScriptedScorer()
    inf = _inf(s, n=2, raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
    inf.observe([reading(0, T0 - 3600_000, facing_id="f0", units=8),
                 reading(1, T0 - 3600_000, facing_id="f1", sku="k1", device_id="shelf-s001-f1", units=4)])
    inf.observe([pos_line(10 + 2 * i + j, T0 - 3000_000 + i * 600_000, sku=sku)
                 for i in range(2) for j, sku in enumerate(("k0", "k1"))])
    s.next = [0.9, 0.9]
    inf.cycle(T0)
    before = {r["facing_id"]: r["expected_empty_ts"] for r in inf.restock_list() if r["kind"] == "empty_within_h"}
    assert set(before) == {"f0", "f1"} and all(ts > T0 for ts in before.values())
    other = _inf(s, n=2, raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
    other.restore(inf.snapshot(everything=True))
    assert other.raised.tolist() == [True, True]
    assert other.cycle(T0 + 60_000) == []  # nothing raised or cleared: both forecasts stay on
    listing = [r for r in other.restock_list() if r["kind"] == "empty_within_h"]
    assert [r["facing_id"] for r in listing] == ["f1", "f0"]  # 2 units left empty sooner than 6
    assert all(T0 + 60_000 < r["expected_empty_ts"] <= T0 + 60_000 + 2 * 3600_000 for r in listing)

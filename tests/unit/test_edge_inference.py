"""Inference on the gateway: planogram, POS attribution, one batched score, hysteresis; settings."""

from __future__ import annotations

import numpy as np
import pytest

from edge.inference import Inference, PlanogramRow, load_planogram
from edge.page import prometheus_text
from edge.testing import T0, planogram_csv, pos_line, reading
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


def test_all_facings_are_scored_in_one_batched_call_per_cycle():
    s = ScriptedScorer()
    inf = _inf(s, n=5)
    s.next = [0.1] * 5
    inf.cycle(T0)
    assert len(s.calls) == 1 and s.calls[0][0] == 5


def test_alerts_raise_above_the_high_mark_clear_below_the_low_one_and_respect_dwell():
    s = ScriptedScorer()
    inf = _inf(s, n=1, raise_at=0.6, clear_at=0.3, min_dwell_ms=10 * 60_000)
    seq = [(0, 0.7, "raised"), (1, 0.5, None), (2, 0.1, None),  # cleared too soon: dwell holds it
           (11, 0.1, "cleared"), (12, 0.65, None), (22, 0.65, "raised"), (33, 0.4, None)]
    for minute, p, expect in seq:
        s.next = [p]
        changes = inf.cycle(T0 + minute * 60_000)
        assert [c.state for c in changes] == ([expect] if expect else []), minute


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


def test_metrics_are_prometheus_text_with_per_device_gaps_and_eviction_reasons():
    text = prometheus_text({"store_id": "s001", "buffer_rows": 5, "seq_gaps": 3, "evictions": 2,
                            "evictions_by": {"thin_5min/shelf.reading": 2}, "gaps": {"pos-1": [[2, 4]]},
                            "model_version": "baseline-poisson", "last_uplink_ts": 1000})
    assert 'gondola_edge_buffer_rows{store_id="s001"} 5.0' in text
    assert 'gondola_edge_device_seq_gaps{store_id="s001",device_id="pos-1"} 3.0' in text
    assert 'reason="thin_5min",type="shelf.reading"} 2.0' in text
    assert "# TYPE gondola_edge_evictions_total counter" in text
    assert all(line.startswith("#") or line.startswith("gondola_edge_") for line in text.strip().splitlines())


def test_a_failing_model_falls_back_to_the_baseline_for_that_cycle():
    class Broken:
        name = "model-v7"
        horizon_h = 2.0

        def score(self, features):
            raise RuntimeError("tensor shape mismatch")

    inf = _inf(Broken())
    assert inf.cycle(T0) == [] and inf.scorer_errors == 1 and inf.scored_by == "baseline-poisson"

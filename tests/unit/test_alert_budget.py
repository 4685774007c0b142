"""The alert budget per store-day (models.alert_budget): the rule, the gateway under it, and the
evaluation's replay and the cloud's scoring raising exactly what the gateway raises."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.stream.scoring import StoreScorer
from edge.inference import FORECAST, Inference, PlanogramRow
from edge.testing import T0, pos_line
from gondola.clock import DAY_MS, HOUR_MS
from models.alert_budget import AlertBudget, ForecastBudget
from models.evaluation import budget_thresholds, clear_level, evaluate_alert_kinds, hysteresis_alerts
from models.replay import Facing

# A hand-made day of one store, 4 facings, package threshold 0.6, budget 1 forecast a day.
# Each row: hour, the 4 scores. f0 peaks at 0.95 (hour 0), f1 at 0.8 (hour 1), f2 at 0.7
# (hour 2) then 0.85 (hour 3), f3 at 0.65 (hour 4).
SEQ = [
    (0, [0.95, 0.1, 0.1, 0.1]),
    (1, [0.1, 0.8, 0.1, 0.1]),
    (2, [0.1, 0.1, 0.7, 0.1]),
    (3, [0.1, 0.1, 0.85, 0.1]),
    (4, [0.1, 0.1, 0.1, 0.65]),
    (5, [0.1, 0.1, 0.1, 0.1]),
]
# Hour 0: nothing seen yet, the package's threshold: f0 raised. Hour 1: one would-be forecast
# in the log, the budget (1 a day, a day watched at least) allows it: f1 raised. Hour 2: two
# seen, so the threshold is just above the second surest (0.8): f2's 0.7 is held. Hour 3: f2's
# episode reached 0.85, above the threshold read before the cycle (just above 0.8): raised.
# Hour 4: the log now holds 0.95, 0.85, 0.8; threshold just above 0.85: f3's 0.65 is held.
EXPECTED = [(0, "f0"), (1, "f1"), (3, "f2")]


class ScriptedScorer:
    name = "scripted"
    horizon_h = 2.0

    def __init__(self, budget: AlertBudget | None = None):
        self.next = None
        if budget is not None:
            self.alert_budget = budget

    def score(self, features):
        return np.asarray(self.next, dtype=float)


def _gateway(scorer, n, **kw) -> Inference:
    plan = [PlanogramRow(f"f{i}", f"k{i}", 10, True) for i in range(n)]
    inf = Inference(plan, scorer, raise_at=0.6, clear_at=0.3, min_dwell_ms=0, **kw)
    # the till sold from every facing: a forecast may be raised (models.scoring.forecast_ready)
    inf.observe([pos_line(900 + i, T0 - 60_000, sku=f"k{i}") for i in range(n)])
    return inf


def test_the_budget_holds_the_less_sure_forecasts_of_a_store_that_raises_more_than_it_allows():
    fb = ForecastBudget(4, 0.6, 0.3, AlertBudget(1.0))
    raised = np.zeros(4, dtype=bool)
    got, thresholds = [], []
    for hour, scores in SEQ:
        t = T0 + hour * HOUR_MS
        p = np.array(scores)
        th = fb.threshold(t)
        thresholds.append(th)
        up = ~raised & (p >= th)
        raised = (raised | up) & ~(p <= 0.3)
        got += [(hour, f"f{i}") for i in np.flatnonzero(up)]
        fb.observe(t, p)
    assert got == EXPECTED
    assert thresholds[:2] == [0.6, 0.6]
    assert 0.8 < thresholds[2] < 0.8001 and 0.85 < thresholds[4] < 0.8501
    # every would-be forecast at the package's threshold is logged with its peak, held or not
    assert sorted(fb.peaks.tolist()) == [0.65, 0.8, 0.85, 0.95]
    # off: the package's threshold, whatever the store raised
    off = ForecastBudget(4, 0.6, 0.3, AlertBudget(None))
    for hour, scores in SEQ:
        off.observe(T0 + hour * HOUR_MS, np.array(scores))
    assert off.threshold(T0 + 6 * HOUR_MS) == 0.6


def test_the_budget_reads_a_week_and_forgets_what_is_older():
    fb = ForecastBudget(1, 0.6, 0.3, AlertBudget(1.0, window_days=7.0))
    # 14 would-be forecasts on one facing, two a day for 7 days, peaks 0.61 .. 0.74
    for k in range(14):
        t = T0 + k * DAY_MS // 2
        fb.observe(t, np.array([0.61 + k * 0.01]))
        fb.observe(t + HOUR_MS, np.array([0.1]))
    # 6.96 days watched: K = int(1 x 6.96) = 6, so just above the 7th surest of the 14, 0.68
    th = fb.threshold(T0 + 7 * DAY_MS - HOUR_MS)
    assert th == pytest.approx(0.68, abs=1e-9)
    peaks = sorted(fb.peaks.tolist())
    assert peaks[-7] < th <= peaks[-6]  # the 6 surest pass, the 7th does not
    # at day 10.5 those begun up to day 3.5 fell out of the window: 6 left (days 4 .. 6.5)
    fb.observe(T0 + 10 * DAY_MS + DAY_MS // 2, np.array([0.1]))
    assert fb.peaks.tolist() == pytest.approx([0.69, 0.70, 0.71, 0.72, 0.73, 0.74])
    assert fb.threshold(T0 + 10 * DAY_MS + DAY_MS // 2) == 0.6


def test_the_gateway_raises_forecasts_under_its_budget_and_the_setting_overrides_the_manifest():
    inf = _gateway(ScriptedScorer(AlertBudget(1.0)), 4)
    got = []
    for hour, scores in SEQ:
        inf.scorer.next = scores
        got += [(hour, c.facing_id) for c in inf.cycle(T0 + hour * HOUR_MS) if c.state == "raised" and c.kind == FORECAST]
    assert got == EXPECTED
    assert inf.forecast_at > 0.85  # the last cycle's store threshold
    # the gateway's setting wins over the manifest's budget: 100 a day never bites here
    inf = _gateway(ScriptedScorer(AlertBudget(1.0)), 4, budget=AlertBudget(100.0))
    got = []
    for hour, scores in SEQ:
        inf.scorer.next = scores
        got += [c.facing_id for c in inf.cycle(T0 + hour * HOUR_MS) if c.state == "raised" and c.kind == FORECAST]
    assert got == ["f0", "f1", "f2", "f3"] and inf.forecast_at == 0.6


def _random_scores(n_facings: int, days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ticks = T0 + np.arange(days * 48) * 30 * 60_000
    # a wander in [0, 1] per facing (AR(1)): episodes of an hour or a few, some held by the budget
    x = np.zeros((len(ticks), n_facings))
    noise = rng.normal(0, 0.8, size=x.shape)
    for i in range(1, len(ticks)):
        x[i] = 0.85 * x[i - 1] + noise[i]
    return ticks, 1 / (1 + np.exp(-(x - 1.5)))


def test_the_evaluation_replay_and_the_cloud_raise_the_forecasts_the_gateway_raises_on_the_same_scores():
    n, budget = 8, AlertBudget(2.0)
    ticks, scores = _random_scores(n, 6, seed=3)  # within a week of the sale: forecast_ready
    inf = _gateway(ScriptedScorer(budget), n)
    cloud = StoreScorer("s001", [Facing(f"f{i}", f"k{i}", 10, True) for i in range(n)])
    gw, cl = [], []
    for t, p in zip(ticks, scores):
        inf.scorer.next = p
        X = inf.features(int(t))
        gw += [(int(t), c.facing_id) for c in inf.cycle(int(t)) if c.state == "raised" and c.kind == FORECAST]
        cl += [(int(t), r["facing_id"]) for r in cloud.decide(int(t), X, p, inf.scorer)
               if r["state"] == "raised" and r["kind"] == FORECAST]
    store = np.array(["s001"] * len(ticks) * n)
    facing = np.tile(np.array([f"f{i}" for i in range(n)]), len(ticks))
    t = np.repeat(ticks, n)
    group = np.tile(np.arange(n), len(ticks))
    fc = scores.reshape(-1)
    th = budget_thresholds(store, group, t, fc, 0.6, clear_level(0.6), budget)
    replay = sorted((a[2], a[1]) for a in hysteresis_alerts(store, facing, t, fc, th, clear_level(0.6), group=group))
    plain = hysteresis_alerts(store, facing, t, fc, 0.6, clear_level(0.6), group=group)
    assert sorted(gw) == replay == sorted(cl)
    # not vacuous: the budget held some of the package's forecasts, and kept about 2 a day
    assert len(plain) > len(replay) >= 2 * 5
    m = evaluate_alert_kinds(store=store, facing=facing, t=t, group=group, forecast=fc, now=np.zeros(len(t)),
                             forecast_at=0.6, now_at=0.9, stockouts=[], no_sensor=set(), horizon_ms=2 * HOUR_MS,
                             store_days=6.0, budget=budget)
    assert m["forecast_alerts"] == len(gw) and m["forecast_threshold_raised_share"] > 0


def test_after_a_model_swap_at_the_same_threshold_the_cloud_starts_its_budget_afresh_as_the_gateway_does():
    n, budget = 8, AlertBudget(2.0)
    ticks, scores = _random_scores(n, 6, seed=3)
    old, new = ScriptedScorer(budget), ScriptedScorer(budget)
    new.name = "scripted-v2"  # another model (models.runtime: "model:<version>"), same threshold and budget
    inf = _gateway(old, n)
    cloud = StoreScorer("s001", [Facing(f"f{i}", f"k{i}", 10, True) for i in range(n)])
    swap = ticks[0] + 3 * DAY_MS
    gw, cl, after = [], [], []
    for t, p in zip(ticks, scores):
        if t == swap:
            inf.set_scorer(new, raise_at=0.6)  # the gateway's model manager: the log starts afresh
        scorer = new if t >= swap else old
        scorer.next = p
        X = inf.features(int(t))
        gw += [(int(t), c.facing_id) for c in inf.cycle(int(t)) if c.state == "raised" and c.kind == FORECAST]
        cl += [(int(t), r["facing_id"]) for r in cloud.decide(int(t), X, p, scorer)
               if r["state"] == "raised" and r["kind"] == FORECAST]
        after.append((inf.forecast_at, cloud.budget.threshold(int(t) + 1)))
    assert sorted(gw) == sorted(cl)
    assert cloud.budget_model == "scripted-v2" and cloud.budget.first_ms == swap
    # not vacuous: the budget bit before the swap, and both thresholds fell back to the package's at it
    k = int(np.searchsorted(ticks, swap))
    assert max(a for a, _ in after[:k]) > 0.6 and after[k][0] == 0.6
    assert len([r for r in gw if r[0] >= swap]) >= 2


def test_scores_of_exactly_1_raise_no_more_than_the_budget_allows():
    # int8 or clipped scores reach 1.0 exactly: the (K+1)-th surest peak is 1.0, so nothing may raise
    n = 4
    inf = _gateway(ScriptedScorer(AlertBudget(1.0)), n)
    raised = []
    for h in range(8):  # each hour a new facing's episode peaks at 1.0; the others clear
        p = np.full(n, 0.1)
        p[h % n] = 1.0
        inf.scorer.next = p
        raised += [c.facing_id for c in inf.cycle(T0 + h * HOUR_MS) if c.state == "raised" and c.kind == FORECAST]
    # a day watched, 1 a day: the first (empty log) and the second (one in the log, allowed) only
    assert raised == ["f0", "f1"]
    assert inf.forecast_at > 1.0
    fb = ForecastBudget(1, 0.6, 0.3, AlertBudget(1.0))
    for h, p in enumerate([1.0, 0.1, 1.0, 0.1]):
        fb.observe(T0 + h * HOUR_MS, np.array([p]))
    assert fb.threshold(T0 + 4 * HOUR_MS) > 1.0


def test_a_facing_scored_between_the_gateway_s_and_the_cloud_s_budget_thresholds_is_not_compared():
    # The two budgets' logs differ by history (the cloud's starts later, not grown while the store
    # is silent): when the gateway's store threshold (its health's forecast_threshold) is above the
    # cloud's, a facing scored between them is raised by the cloud and not by a healthy gateway.
    from cloud.stream.detectors import DetectorConfig, StoreWatch

    n, cfg = 8, DetectorConfig()
    inf = _gateway(ScriptedScorer(AlertBudget(12.0)), n)  # the cloud's budget does not bite here
    cloud = StoreScorer("s001", [Facing(f"f{i}", f"k{i}", 10, True) for i in range(n)])
    watch = StoreWatch("s001")
    watch.observe("edge.health", "gw-s001", T0, {"forecast_threshold": 0.85, "buffer_rows": 0}, cfg, T0)
    assert watch.gateway_forecast_at == 0.85
    p = np.array([0.7, 0.75, 0.8, 0.95, 0.1, 0.1, 0.1, 0.1])  # f0-f2 between 0.6 and 0.85; f3 above both
    inf.scorer.next = p
    X = inf.features(T0)

    def flags(gateway_at):
        w = StoreWatch("s001")
        w.gateway_raised = {"f3"}  # a healthy gateway at 0.85 raises f3 only
        out = []
        for k in range(6):
            t = T0 + k * 15 * 60_000
            cloud.decide(t, X, p, inf.scorer)
            out += w.compare_alerts(t, cloud.raised_facings(FORECAST), cfg, cloud.undecided_facings(gateway_at))
        return out

    assert cloud.raised_facings(FORECAST) == set()
    rows = flags(None)  # the cloud's fresh budget: its threshold is the package's 0.6
    assert cloud.forecast_at == 0.6 and cloud.raised_facings(FORECAST) == {"f0", "f1", "f2", "f3"}
    assert len(rows) == 1  # compared on f0-f2, the healthy gateway was flagged
    assert flags(watch.gateway_forecast_at) == []
    assert cloud.undecided_facings(0.85) == {"f0", "f1", "f2"}  # f3 stays compared
    # a gateway raising where the cloud's score is plainly low is still flagged
    w = StoreWatch("s001")
    w.gateway_raised = {"f3", "f4", "f5", "f6"}
    got = []
    for k in range(6):
        got += w.compare_alerts(T0 + k * 15 * 60_000, cloud.raised_facings(FORECAST), cfg, cloud.undecided_facings(0.85))
    assert len(got) == 1


def test_a_manifest_without_a_budget_gets_the_defaults_and_a_bad_one_is_refused():
    assert AlertBudget.from_manifest({}) == AlertBudget()
    assert AlertBudget.from_manifest({"alert_budget": {"forecasts_per_store_day": 0}}).on is False
    assert AlertBudget.from_manifest({"alert_budget": {"forecasts_per_store_day": 6, "window_days": 3}}) == AlertBudget(6.0, 3.0)
    with pytest.raises(ValueError):
        AlertBudget.from_manifest({"alert_budget": {"forecasts_per_store_day": -1}})


def test_the_gateway_setting_sets_or_turns_off_the_budget_and_a_negative_one_is_refused(tmp_path):
    from edge.testing import planogram_csv
    from edge.wiring import EdgeSettings, build_gateway
    from gondola.contracts import validate_event
    from gondola.errors import ConfigError

    plan = tmp_path / "planogram.csv"
    plan.write_text(planogram_csv())
    base = dict(store_id="s001", hub_path=tmp_path / "hub.sqlite", planogram_path=plan)
    env = EdgeSettings.from_env({"GONDOLA_STORE_ID": "s001", "GONDOLA_FORECASTS_PER_STORE_DAY": "5"})
    assert env.forecasts_per_store_day == 5.0
    for per_day, want in ((None, AlertBudget()), (5.0, AlertBudget(5.0)), (0.0, AlertBudget(None))):
        gw = build_gateway(EdgeSettings(data_dir=tmp_path / f"gw{per_day}", forecasts_per_store_day=per_day, **base))
        try:
            assert gw.inference.budget.budget == want
            assert gw.health()["forecast_threshold"] == gw.inference.raise_at
            # ... and its edge.health event carries it to the cloud (alert_divergence), a valid event
            event = gw.emit_health(T0)
            assert validate_event(event)["data"]["forecast_threshold"] == round(gw.inference.raise_at, 4)
        finally:
            gw.stop()
    with pytest.raises(ConfigError, match="forecasts_per_store_day"):
        EdgeSettings(forecasts_per_store_day=-1.0, **base).validate()


def test_the_budget_s_week_survives_a_gateway_restart_through_the_buffer(tmp_path):
    from edge.buffer import SqliteBuffer

    inf = _gateway(ScriptedScorer(AlertBudget(1.0)), 4)
    for hour, scores in SEQ[:3]:
        inf.scorer.next = scores
        inf.cycle(T0 + hour * HOUR_MS)
    buf = SqliteBuffer(tmp_path / "b.sqlite")
    buf.save_facing_states(inf.snapshot(everything=True), replace=True)
    back = _gateway(ScriptedScorer(AlertBudget(1.0)), 4)
    back.restore(buf.load_facing_states())
    buf.close()
    assert back.budget.peaks.tolist() == [0.95, 0.8, 0.7] and back.budget.on.tolist() == [False, False, True, False]
    # the restarted gateway goes on as the one that never stopped
    got = []
    for hour, scores in SEQ[3:]:
        for g in (inf, back):
            g.scorer.next = scores
        want = [c.facing_id for c in inf.cycle(T0 + hour * HOUR_MS) if c.state == "raised"]
        got.append(want == [c.facing_id for c in back.cycle(T0 + hour * HOUR_MS) if c.state == "raised"])
    assert all(got)
    # a snapshot taken at another model threshold is not restored: its would-be forecasts were another's
    other = Inference([PlanogramRow(f"f{i}", f"k{i}", 10, True) for i in range(4)], ScriptedScorer(AlertBudget(1.0)),
                      raise_at=0.7, clear_at=0.3)
    other.restore(inf.snapshot(everything=True))
    assert len(other.budget.peaks) == 0


def test_a_restart_with_a_changed_planogram_keeps_each_open_would_be_forecast_on_its_own_facing(tmp_path):
    # Review (session 8): the budget's snapshot named its open would-be forecasts by position in
    # the planogram, while facing states are restored by facing id; a facing inserted before f2
    # put f2's open episode on f1, and a shorter planogram dropped the store's whole week.
    from edge.buffer import SqliteBuffer

    inf = _gateway(ScriptedScorer(AlertBudget(1.0)), 4)
    for hour, scores in SEQ[:3]:  # f2's would-be forecast is on after hour 2
        inf.scorer.next = scores
        inf.cycle(T0 + hour * HOUR_MS)
    buf = SqliteBuffer(tmp_path / "b.sqlite")
    buf.save_facing_states(inf.snapshot(everything=True), replace=True)
    rows = buf.load_facing_states()
    buf.close()
    for ids, on in ((["f-new", "f0", "f1", "f2", "f3"], [False, False, False, True, False]),
                    (["f3", "f2"], [False, True])):
        plan = [PlanogramRow(f, f"k-{f}", 10, True) for f in ids]
        back = Inference(plan, ScriptedScorer(AlertBudget(1.0)), raise_at=0.6, clear_at=0.3, min_dwell_ms=0)
        back.restore(rows)
        assert back.budget.peaks.tolist() == [0.95, 0.8, 0.7], ids  # gone facings' episodes still count
        assert back.budget.on.tolist() == on, ids
        assert back.budget.open.tolist() == [2 if o else -1 for o in on], ids


def test_a_snapshot_with_no_facing_changed_still_saves_the_budget_s_log(tmp_path):
    # Review (session 8): the budget's row went out only beside changed facings, so a would-be
    # forecast the budget held (no alert changed, no event: a quiet store) was not saved, and a
    # restart forgot it.
    from edge.buffer import SqliteBuffer

    inf = _gateway(ScriptedScorer(AlertBudget(1.0)), 4)
    buf = SqliteBuffer(tmp_path / "b.sqlite")
    for hour, scores in SEQ[:2]:
        inf.scorer.next = scores
        inf.cycle(T0 + hour * HOUR_MS)
    buf.save_facing_states(inf.snapshot(), replace=inf.snapshot_full)
    inf.scorer.next = [0.1, 0.8, 0.7, 0.1]  # f1 stays on; f2's 0.7 is held by the budget (just above 0.8)
    assert inf.cycle(T0 + 2 * HOUR_MS) == []  # no alert changed
    buf.save_facing_states(inf.snapshot(), replace=inf.snapshot_full)
    back = _gateway(ScriptedScorer(AlertBudget(1.0)), 4)
    back.restore(buf.load_facing_states())
    buf.close()
    assert back.budget.peaks.tolist() == [0.95, 0.8, 0.7]
    assert back.budget.on.tolist() == [False, True, True, False]

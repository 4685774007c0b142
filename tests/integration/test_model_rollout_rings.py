"""Rollout in rings with automatic promotion and rollback: the registry (Delta on disk), the
embedded hub's twins and tags, real gateways following their twins, and live figures from a
``gold.model_performance`` Delta table."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from cloud.rollout import (FolderModelStore, LakeLiveFigures, Rollout, RolloutPolicy, publish_model, ring_devices,
                           rollout_status, tag_ring)
from edge.testing import T0, planogram_csv, pos_line, reading
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import DAY_MS, HOUR_MS, SimClock
from gondola.errors import ModelError
from gondola.hub import LocalHub
from models.registry import DeltaModelRegistry, register_package
from tests.model_packages import KEY, package_dir

MODULE = "gondola-gateway"
RINGS = {"s001": "canary", "s002": "early", "s003": None, "s004": None}


def _gateway(tmp_path: Path, store_id: str):
    (tmp_path / f"planogram-{store_id}.csv").write_text(planogram_csv(store_id, facings=6))
    (tmp_path / "model.key").write_bytes(KEY)
    gw = build_gateway(EdgeSettings(store_id=store_id, data_dir=tmp_path / f"gw-{store_id}",
                                    hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / f"planogram-{store_id}.csv",
                                    model_key_file=tmp_path / "model.key"), clock=SimClock(T0))
    gw.collector.commit_group([(f"gondola/{store_id}/shelf/shelf-{store_id}-f{i}", json.dumps(
        reading(0, T0, store_id=store_id, device_id=f"shelf-{store_id}-f{i}", facing_id=f"f{i}", sku=f"k{i}")).encode(),
        (0, 0)) for i in range(6)])
    gw.models.start()
    gw.transport.on_desired(gw.models.on_desired)
    gw.report_twin()  # the gateway's twin exists once it has reported
    return gw


class Fleet:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.hub = LocalHub(tmp_path / "hub.sqlite")
        self.gateways = {s: _gateway(tmp_path, s) for s in RINGS}
        for s, ring in RINGS.items():
            if ring:
                tag_ring(self.hub, [f"gw-{s}"], ring)
        self.clock = SimClock(T0)
        self.lake = tmp_path / "lake"
        self.registry = DeltaModelRegistry(self.lake, clock=self.clock)
        self.store = FolderModelStore(tmp_path / "store")
        self.rollout = self.make_rollout()
        # v1 is production and every gateway runs it.
        self.register("v1")
        self.registry.set_status("v1", "production", "bootstrap")
        publish_model(self.registry.get("v1").artifacts["int8"]["path"], store=self.store, twins=self.hub,
                      device_ids=[f"gw-{s}" for s in RINGS], key=KEY)
        self.poll()

    def make_rollout(self, **policy):
        return Rollout(DeltaModelRegistry(self.lake, clock=self.clock), self.hub, self.store,
                       figures=LakeLiveFigures(self.lake), clock=self.clock, key=KEY,
                       policy=RolloutPolicy(window_h=24, min_alerts=10, **policy))

    def register(self, version: str):
        return register_package(self.registry, package_dir(self.tmp / "pkg" / version, version),
                                self.lake / "models" / "artifacts", metrics={"gate": "test"})

    def poll(self, stores=None):
        for s in stores or RINGS:
            self.gateways[s].poll_desired()
            assert self.gateways[s].models.wait_idle(30)

    def running(self) -> dict[str, str | None]:
        st = rollout_status(self.hub, [f"gw-{s}" for s in RINGS])["devices"]
        return {d[3:]: st[d]["version"] for d in st}

    def desired(self) -> dict[str, str | None]:
        return {s: (self.hub.get_twin(f"gw-{s}", MODULE)["desired"].get("model") or {}).get("version") for s in RINGS}

    def live(self, day: int, rows: list[tuple[str, str, int, int]]):
        """gold.model_performance rows (store, scorer, alerts, true alerts) for one day."""
        write_deltalake(str(self.lake / "gold" / "model_performance"), pa.Table.from_pylist([
            {"store_id": s, "day_ms": T0 - T0 % DAY_MS + day * DAY_MS, "scorer": f"model:{v}", "alerts": a,
             "true_alerts": t} for s, v, a, t in rows]), mode="append")

    def close(self):
        for gw in self.gateways.values():
            gw.stop()


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_rings_are_twin_tags_and_each_stage_includes_the_rings_before_it(fleet):
    assert ring_devices(fleet.hub, "canary") == ["gw-s001"]
    assert ring_devices(fleet.hub, "early") == ["gw-s001", "gw-s002"]
    assert ring_devices(fleet.hub, "all") == ["gw-s001", "gw-s002", "gw-s003", "gw-s004"]
    # The device twin carries the same ring: what the layered IoT Edge deployments target.
    assert {s: fleet.hub.get_device_tags(f"gw-{s}").get("ring") for s in RINGS} == RINGS
    assert fleet.running() == {s: "v1" for s in RINGS}


def test_a_good_model_reaches_every_ring_in_order_and_an_offline_gateway_catches_up(fleet):
    fleet.register("v2")
    start = fleet.rollout.start("v2")
    assert start["decision"] == "canary" and start["devices"] == ["gw-s001"]
    assert fleet.desired() == {"s001": "v2", "s002": "v1", "s003": "v1", "s004": "v1"}
    online = ["s001", "s002", "s003"]  # s004 is offline for the whole rollout
    fleet.poll(online)
    assert fleet.rollout.step()["decision"] == "waiting"  # the canary window has not passed

    fleet.live(0, [("s001", "v2", 20, 17), ("s002", "v1", 20, 16), ("s003", "v1", 18, 14), ("s004", "v1", 20, 15)])
    fleet.clock.advance_to(T0 + 25 * HOUR_MS)
    early = fleet.rollout.step()
    assert early["decision"] == "early", early
    assert early["candidate"]["alerts"] == 20 and early["candidate"]["precision"] == pytest.approx(0.85)
    assert early["production"]["alerts"] == 58  # the other three stores, same window
    assert fleet.desired() == {"s001": "v2", "s002": "v2", "s003": "v1", "s004": "v1"}
    fleet.poll(online)
    assert fleet.registry.get("v2").status == "canary" and fleet.registry.get("v2").ring == "early"

    fleet.live(1, [("s001", "v2", 15, 13), ("s002", "v2", 15, 12), ("s003", "v1", 16, 12), ("s004", "v1", 1, 1)])
    fleet.clock.advance_to(T0 + 50 * HOUR_MS)
    done = fleet.rollout.step()
    assert done["decision"] == "production", done
    assert fleet.desired() == {s: "v2" for s in RINGS}
    fleet.poll(online)
    assert fleet.running() == {"s001": "v2", "s002": "v2", "s003": "v2", "s004": "v1"}
    fleet.poll(["s004"])  # back online: it reads its twin and catches up
    assert fleet.running() == {s: "v2" for s in RINGS}
    assert fleet.registry.get("v2").status == "production"
    assert fleet.registry.get("v1").status == "retired"
    assert [r["details"]["decision"] for r in fleet.registry.records("rollout")] == ["canary", "early", "production"]
    assert fleet.rollout.step()["decision"] == "idle"


def test_a_model_that_fails_live_is_rolled_back_from_canary_and_never_reaches_the_rest(fleet):
    fleet.register("v2")
    fleet.rollout.start("v2")
    fleet.poll()
    assert fleet.running()["s001"] == "v2"
    # The canary raises twice the alerts at half the precision of production's stores.
    fleet.live(0, [("s001", "v2", 40, 12), ("s002", "v1", 20, 16), ("s003", "v1", 20, 15), ("s004", "v1", 20, 17)])
    fleet.clock.advance_to(T0 + 25 * HOUR_MS)
    decision = fleet.rollout.step()
    assert decision["decision"] == "rolled_back" and "precision 0.30 < production 0.80" in decision["reason"]
    assert decision["to"] == "v1" and decision["devices"] == ["gw-s001"]
    fleet.poll()
    assert fleet.running() == {s: "v1" for s in RINGS}
    v2 = fleet.registry.get("v2")
    assert v2.status == "retired" and "precision" in v2.history[-1]["reason"]
    assert all(d != "v2" for s, d in fleet.desired().items() if s != "s001")
    assert fleet.rollout.step()["decision"] == "idle"


def test_a_canary_that_refuses_the_model_rolls_the_rollout_back_at_once(fleet, tmp_path):
    unsigned = register_package(fleet.registry, package_dir(tmp_path / "pkg" / "v5", "v5", key=None),
                                fleet.lake / "models" / "artifacts", metrics={})
    rollout = Rollout(fleet.registry, fleet.hub, fleet.store, figures=LakeLiveFigures(fleet.lake), clock=fleet.clock)
    rollout.start(unsigned.version)  # no key on the cloud side: the gateways' key refuses it
    fleet.poll(["s001"])
    decision = rollout.step()
    assert decision["decision"] == "rolled_back" and "not signed" in decision["reason"]
    assert fleet.registry.get("v5").status == "retired"


def test_a_tampered_artifact_is_refused_before_any_twin_changes(fleet):
    v3 = fleet.register("v3")
    path = Path(v3.artifacts["int8"]["path"])
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    before = fleet.desired()
    with pytest.raises(ModelError, match="not the file that was registered"):
        fleet.rollout.start("v3")
    assert fleet.desired() == before
    assert fleet.registry.records("rollout")[-1]["details"]["decision"] == "refused"
    assert fleet.rollout.active() is None


def test_two_rollouts_started_at_once_resolve_to_one(fleet):
    fleet.register("v2")
    fleet.register("v3")
    results, barrier = {}, threading.Barrier(2)

    def go(version):
        rollout = fleet.make_rollout()
        barrier.wait()
        results[version] = rollout.start(version)

    threads = [threading.Thread(target=go, args=(v,)) for v in ("v2", "v3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    decisions = sorted(r["decision"] for r in results.values())
    assert decisions == ["canary", "not-started"], results
    winner = next(v for v, r in results.items() if r["decision"] == "canary")
    loser = next(v for v, r in results.items() if r["decision"] == "not-started")
    assert fleet.desired()["s001"] == winner
    assert fleet.registry.get(loser).status == "candidate"
    assert fleet.rollout.active()["details"]["version"] == winner


def test_an_artifact_tampered_with_after_publishing_is_refused_by_the_canary_and_rolled_back(fleet):
    fleet.register("v2")
    fleet.rollout.start("v2")
    served = fleet.tmp / "store" / "v2" / "stockout-int8.tflite"
    served.write_bytes(served.read_bytes()[:-1] + b"\x02")  # changed in the model store, after the checks
    fleet.poll(["s001"])
    assert rollout_status(fleet.hub, ["gw-s001"])["devices"]["gw-s001"]["status"] in ("failed", "rolled_back")
    assert fleet.running()["s001"] == "v1"  # the gateway kept its model
    decision = fleet.rollout.step()
    assert decision["decision"] == "rolled_back" and "refused or rolled back" in decision["reason"]
    assert fleet.registry.get("v2").status == "retired"
    assert all(v == "v1" for v in fleet.desired().values())


def test_gateways_report_their_scoring_time_and_a_canary_far_slower_than_production_is_rolled_back(fleet):
    fleet.register("v2")
    fleet.rollout.start("v2")
    fleet.poll()
    for s, gw in fleet.gateways.items():
        gw.run_cycle(T0 + 60_000)  # a real scoring cycle: each gateway measures its scorer's call
        assert gw.report_twin()
        g = fleet.hub.get_twin(f"gw-{s}", MODULE)["reported"]["gondola"]
        assert g["score_ms"] > 0 and g["facings"] == 6
    # Same alert quality, but the canary's gateway says its scorer takes 50 ms a cycle for 6 facings.
    fleet.gateways["s001"].transport.patch_reported({"gondola": {"score_ms": 50.0, "facings": 6}})
    fleet.live(0, [("s001", "v2", 20, 17), ("s002", "v1", 20, 17), ("s003", "v1", 20, 17), ("s004", "v1", 20, 17)])
    fleet.clock.advance_to(T0 + 25 * HOUR_MS)
    decision = fleet.rollout.step()
    assert decision["decision"] == "rolled_back", decision
    assert "ms per 1,000 facings" in decision["reason"] and decision["candidate"]["latency_ms_per_1k"] > 8000
    assert decision["production"]["latency_ms_per_1k"] < decision["candidate"]["latency_ms_per_1k"] / 2


def _shadow_rows(fleet, day: int, rows: list[tuple[str, str, int, int]]):
    """gold.model_performance rows (store, scorer, alerts, true alerts) for one day."""
    write_deltalake(str(fleet.lake / "gold" / "model_performance"), pa.Table.from_pylist([
        {"store_id": s, "day_ms": T0 - T0 % DAY_MS + day * DAY_MS, "scorer": sc, "alerts": a, "true_alerts": t}
        for s, sc, a, t in rows]), mode="append")


def test_a_shadow_scores_beside_production_raises_nothing_and_uplinks_its_would_be_alerts(fleet, tmp_path):
    from models.registry import register_package as reg

    # v2's operating threshold is tiny: in shadow it would alert on every facing with stock.
    reg(fleet.registry, package_dir(tmp_path / "pkg" / "v2", "v2", threshold=0.0001),
        fleet.lake / "models" / "artifacts", metrics={})
    started = fleet.rollout.shadow("v2")
    assert started["decision"] == "shadow" and started["devices"] == ["gw-s001"]
    fleet.poll()
    gw = fleet.gateways["s001"]
    assert gw.models.shadow_status["status"] == "active" and fleet.running()["s001"] == "v1"
    assert fleet.hub.get_twin("gw-s001", MODULE)["reported"]["shadow"]["version"] == "v2"
    assert fleet.gateways["s002"].inference.shadow is None  # not in the canary ring
    gw.collector.commit_group([(f"gondola/s001/shelf/shelf-s001-f{i}", json.dumps(reading(
        1, T0 + 30_000, store_id="s001", device_id=f"shelf-s001-f{i}", facing_id=f"f{i}", sku=f"k{i}",
        units=3)).encode(), (0, 0)) for i in range(6)]
        # the till sold from each (no forecast is raised on a facing before its first sale)
        + [("gondola/s001/pos/pos-s001-r01", json.dumps(pos_line(10 + i, T0 + 40_000, store_id="s001", sku=f"k{i}"))
            .encode(), (0, 0)) for i in range(6)])
    real = gw.run_cycle(T0 + 60_000)
    assert all(not a["data"]["scorer"].startswith("shadow:") for a in real)
    stored = [json.loads(e.body) for e in gw.buffer.select_backlog(1000) if e.etype == "edge.alert"]
    shadow = [e for e in stored if e["data"]["scorer"] == "shadow:model:v2"]
    assert len(shadow) == 6 and all(e["data"]["state"] == "raised" for e in shadow) and gw.shadow_alerts == 6
    assert int(gw.inference.raised.sum()) == sum(1 for a in real if a["data"]["kind"] == "empty_within_h")
    assert gw.report_twin()
    assert fleet.hub.get_twin("gw-s001", MODULE)["reported"]["gondola"]["shadow"]["score_ms"] > 0

    # The same store's real alerts (v1) against the shadow's would-be ones, over the same hours.
    _shadow_rows(fleet, 0, [("s001", "model:v1", 20, 16), ("s001", "shadow:model:v2", 60, 12)])
    fleet.clock.advance_to(T0 + 25 * HOUR_MS)
    verdict = fleet.rollout.compare_shadow("v2")
    assert verdict["verdict"] == "fail" and verdict["devices"] == ["gw-s001"]
    assert verdict["candidate"]["precision"] == pytest.approx(0.2) and verdict["production"]["precision"] == 0.8
    assert fleet.registry.records("shadow")[-1]["details"]["verdict"] == "fail"
    assert fleet.registry.get("v2").status == "candidate"  # shadow mode changes no status

    assert fleet.rollout.stop_shadow() == ["gw-s001"]
    fleet.poll(["s001"])
    assert gw.inference.shadow is None and gw.models.shadow_status["status"] == "none"


def test_a_controller_without_the_registered_files_publishes_from_the_registry_row(fleet):
    import shutil

    v2 = fleet.register("v2")
    shutil.rmtree(Path(v2.artifacts["int8"]["path"]).parent)  # another machine: only the lake's table
    assert fleet.rollout.start("v2")["decision"] == "canary"
    fleet.poll(["s001"])
    assert fleet.running()["s001"] == "v2"  # verified by the gateway's key and sha256, and running


@pytest.mark.parametrize("shadow_precision, outcome", [(17, "canary"), (6, "rolled_back")])
def test_a_shadow_first_rollout_goes_live_on_canary_only_when_its_would_be_alerts_hold(fleet, shadow_precision,
                                                                                      outcome):
    fleet.register("v2")
    assert fleet.rollout.start("v2", shadow_first=True)["decision"] == "shadow"
    fleet.poll()
    assert fleet.gateways["s001"].inference.shadow is not None and fleet.running()["s001"] == "v1"
    assert fleet.rollout.step()["decision"] == "waiting"
    _shadow_rows(fleet, 0, [("s001", "model:v1", 20, 16), ("s001", "shadow:model:v2", 20, shadow_precision)])
    fleet.clock.advance_to(T0 + 25 * HOUR_MS)
    decision = fleet.rollout.step()
    assert decision["decision"] == outcome, decision
    fleet.poll()
    assert fleet.gateways["s001"].inference.shadow is None  # the shadow stops either way
    if outcome == "canary":
        assert fleet.running() == {"s001": "v2", "s002": "v1", "s003": "v1", "s004": "v1"}
        assert fleet.registry.get("v2").ring == "canary"
    else:
        assert fleet.running() == {s: "v1" for s in RINGS} and "shadow: precision" in decision["reason"]
        assert fleet.registry.get("v2").status == "retired" and fleet.rollout.active() is None

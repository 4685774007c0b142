"""The gateway end to end on both brokers: MQTT in, committed, scored, alerted, uplinked; the page."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from edge.broker import start_broker
from edge.mqtt import Publisher
from edge.page import serve_page
from edge.testing import T0, device_traffic, planogram_csv
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import HOUR_MS, SimClock
from gondola.contracts import decode_batch
from gondola.hub import LocalHub


class HotScorer:
    name = "hot"
    horizon_h = 2.0

    def score(self, features):
        import numpy as np
        p = np.zeros(len(features))
        p[0] = 0.99
        return p


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_gateway_commits_scores_alerts_and_uplinks_every_event(kind, tmp_path):
    if kind == "mosquitto":
        from tests.conftest import mosquitto_binary, require
        require(mosquitto_binary() is not None, "Mosquitto")
    broker = start_broker(kind, data_dir=tmp_path / "broker")
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    clock = SimClock(T0)
    gw = build_gateway(EdgeSettings(store_id="s001", broker_host=broker.host, broker_port=broker.port,
                                    data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / "planogram.csv"), clock=clock, scorer=HotScorer())
    try:
        gw.start()
        pub = Publisher(broker.host, broker.port, client_id="devices").start()
        staff = Publisher(broker.host, broker.port, client_id="staff-screen").start()
        seen_alerts = []
        got_alert = threading.Event()
        staff._client.on_message = lambda c, u, m: (seen_alerts.append(json.loads(m.payload)), got_alert.set())
        staff._client.subscribe("gondola/s001/alerts/+", qos=1)
        traffic = device_traffic(2_000, drop=0.05, seed=1)
        for topic, payload in traffic.messages:
            pub.publish(topic, payload)
        pub.publish("gondola/s001/pos/pos-s001-r00", b"\xff\xfe not json")
        assert pub.flush()
        assert gw.collector.wait_committed(len(traffic.messages) + 1, 30)
        assert gw.committed_count() == len(traffic.messages) + 1
        clock.advance_to(T0 + HOUR_MS)
        alerts = gw.run_cycle(T0 + HOUR_MS)
        # The scripted model forecasts f0 only; shelves whose last reading says 0 are alerted empty now.
        forecasts = [a["data"] for a in alerts if a["data"]["kind"] == "empty_within_h"]
        assert [(a["facing_id"], a["state"]) for a in forecasts] == [("f0", "raised")]
        assert T0 + HOUR_MS <= forecasts[0]["expected_empty_ts"] <= T0 + 3 * HOUR_MS
        assert got_alert.wait(10) and seen_alerts[0]["data"]["facing_id"] in {a["data"]["facing_id"] for a in alerts}
        # Device events (the malformed one stays in quarantine) and the gateway's own events:
        # the alert and edge.health (periodic, and the one reporting the confirmed seq gaps).
        own = gw.buffer.next_gateway_seq()
        assert own >= 3
        assert gw.drain() == len(traffic.messages) + own
        health = gw.health()
        assert health["quarantined"] == 1 and health["buffer_rows"] == 0
        assert health["seq_gaps"] == len(traffic.dropped)
        assert health["model_version"] == "hot" and health["last_uplink_ts"] == T0 + HOUR_MS
        server = serve_page(gw, port=0)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        metrics = urllib.request.urlopen(base + "/metrics").read().decode()
        assert f'gondola_edge_seq_gaps{{store_id="s001"}} {float(len(traffic.dropped))}' in metrics
        restock = json.loads(urllib.request.urlopen(base + "/restock").read())
        assert restock[0] == restock[0] | {"facing_id": "f0", "alert": True}
        assert "shelves to restock" in urllib.request.urlopen(base + "/").read().decode()
        server.shutdown()
        staff.stop()
        pub.stop()
        assert gw.report_twin()
    finally:
        gw.stop()
        broker.stop()
    hub = LocalHub(tmp_path / "hub.sqlite")
    events = [e for p in range(hub.partitions) for m in hub.read(p) for e in decode_batch(m.body, m.properties)]
    assert {(e["device_id"], e["seq"]) for e in events if e["device_id"] != "gw-s001"} == traffic.emitted
    assert hub.get_twin("gw-s001", "gondola-gateway")["reported"]["gondola"]["seq_gaps"] == len(traffic.dropped)
    hub.close()


def test_a_cycle_computes_health_once_per_report_and_patches_the_twin_only_when_it_changed(tmp_path):
    from edge.testing import reading

    (tmp_path / "planogram.csv").write_text(planogram_csv(facings=4))
    clock = SimClock(T0)
    gw = build_gateway(EdgeSettings(store_id="s001", data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / "planogram.csv"), clock=clock)
    patches, healths = [], [0]
    patch = gw.transport.patch_reported
    gw.transport.patch_reported = lambda p: (patches.append(p), patch(p))[1]
    health = gw.health
    gw.health = lambda: (healths.__setitem__(0, healths[0] + 1), health())[1]
    seq = [0]

    def minute(m: int, *, skip: int = 0) -> None:
        seq[0] += 1 + skip  # skip > 0: the sensor's messages were lost (a gap)
        ev = reading(seq[0], T0 + m * 60_000, facing_id="f1", device_id="shelf-s001-f1", units=5)
        gw.collector.commit_group([("gondola/s001/shelf/shelf-s001-f1", json.dumps(ev).encode(), (0, 0))])
        clock.advance_to(T0 + m * 60_000 + 1)
        gw.run_cycle(T0 + m * 60_000 + 1)

    minute(0)
    assert len(patches) == 1 and healths[0] == 1  # the first report: health once, for event and twin
    for m in range(1, 30):
        minute(m)  # only the moving counters change (rows, bytes, ages)
    assert len(patches) == 1 and healths[0] == 6 and gw.buffer.next_gateway_seq() == 6  # 6 health events
    minute(30, skip=3)  # 3 readings lost: a gap, in the next report (the last patch is 30 min old)
    assert len(patches) == 2 and patches[1]["gondola"]["seq_gaps"] == 3
    minute(31, skip=2)  # another gap: batched, the twin hears of it 15 minutes after the last patch
    for m in range(32, 45):
        minute(m)
    assert len(patches) == 2
    minute(45)
    assert len(patches) == 3 and patches[2]["gondola"]["seq_gaps"] == 5
    gw.inference.scorer_errors += 1  # the rollout watches this one: reported with the next health report
    for m in range(46, 51):
        minute(m)
    assert len(patches) == 4 and patches[3]["gondola"]["scorer_errors"] == 1
    for m in range(51, 111):
        minute(m)
    assert len(patches) == 5  # an hour without news: one heartbeat patch
    assert gw.report_twin() and len(patches) == 6  # on demand it always patches
    gw.buffer.close()


def test_a_shelf_reading_far_above_its_facing_capacity_is_quarantined_and_never_believed_nor_uplinked(tmp_path):
    # QA: a reading of 100000 units on a facing of capacity 6 was accepted and believed, so the
    # facing could not alert until the next reading. 1.3 M simulated readings never go above
    # 5.25 x capacity (drifting load cells; healthy ones 1.33 x): over 10 x is not a shelf state.
    import sqlite3

    from edge.testing import reading
    from gondola.contracts import MAX_FILL_RATIO

    (tmp_path / "planogram.csv").write_text(planogram_csv(facings=3, capacity=6))
    clock = SimClock(T0)
    gw = build_gateway(EdgeSettings(store_id="s001", data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / "planogram.csv"), clock=clock)

    def send(seq: int, facing: str, units: int) -> None:
        ev = reading(seq, T0 + seq * 60_000, facing_id=facing, device_id=f"shelf-s001-{facing}", units=units)
        ev["data"]["weight_g"] = 1_500.0  # a plausible weight: only the units are wild (as QA sent them)
        gw.collector.commit_group([(f"gondola/s001/shelf/shelf-s001-{facing}", json.dumps(ev).encode(), (0, 0))])

    send(1, "f1", 5)
    send(2, "f1", 100_000)  # after a believed reading
    send(3, "f2", 100_000)  # the facing's first reading
    send(4, "f0", 6 * MAX_FILL_RATIO)  # at the bound: a drifting cell's evidence for sensor trust, kept
    send(5, "f2", 61)  # just over it
    states = {s.facing_id: s for s in gw.inference.states}
    assert states["f1"].units == 5.0 and states["f2"].units is None and states["f0"].units == 60.0
    assert gw.health()["quarantined"] == 3
    with sqlite3.connect(tmp_path / "gw" / "buffer.sqlite") as con:
        quarantined = con.execute("SELECT reason, detail FROM quarantine ORDER BY id").fetchall()
    assert [r for r, _ in quarantined] == ["out_of_range"] * 3
    assert "capacity of 6" in quarantined[0][1]
    # The cloud hears only what the gateway believed: gateway and lake agree.
    gw.drain()
    gw.buffer.close()
    hub = LocalHub(tmp_path / "hub.sqlite")
    events = [e for p in range(hub.partitions) for m in hub.read(p) for e in decode_batch(m.body, m.properties)]
    hub.close()
    assert sorted((e["data"]["facing_id"], e["data"]["units_est"]) for e in events if e["type"] == "shelf.reading") \
        == [("f0", 60), ("f1", 5)]


@pytest.mark.slow
def test_a_retained_message_is_handled_once_and_ignored_when_the_broker_replays_it_at_each_restart(tmp_path):
    # QA: a message published with the retain flag was quarantined (and counted) again at every
    # gateway restart: the broker replays its retained copy to each new subscription. No device
    # publishes one; the gateway takes the live publish and counts each replay, acknowledged only.
    import shutil
    import sqlite3
    import subprocess

    from edge.broker import start_mosquitto
    from tests.conftest import mosquitto_binary, require

    require(mosquitto_binary() is not None and shutil.which("mosquitto_pub") is not None, "Mosquitto and mosquitto_pub")
    broker = start_mosquitto(tmp_path / "broker", persistence=True)
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    settings = EdgeSettings(store_id="s001", broker_host=broker.host, broker_port=broker.port,
                            data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                            planogram_path=tmp_path / "planogram.csv")
    topic, good = device_traffic(1).messages[0]

    def publish_retained(topic: str, payload: bytes) -> None:
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-r",
                        "-t", topic, "-s"], input=payload, check=True, timeout=10)

    runs = []
    try:
        for run in range(3):  # the first run gets both messages live, then two restarts
            gw = build_gateway(settings, clock=SimClock(T0))
            try:
                gw.start()
                if run == 0:
                    publish_retained("gondola/s001/pos/pos-s001-r00", b"not json")
                    publish_retained(topic, good)
                assert gw.collector.wait_committed(2, 20)
                h = gw.health()
                runs.append((h["quarantined"], h["retained_ignored"], h["received"]))
            finally:
                gw.stop()
    finally:
        broker.stop()
    # Run 0: the poison one quarantined, the event stored; each restart: both replays ignored.
    assert runs == [(1, 0, 1), (1, 2, 1), (1, 2, 1)]
    with sqlite3.connect(tmp_path / "gw" / "buffer.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 1

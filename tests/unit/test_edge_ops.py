"""Operating a gateway: log formats and levels, live settings from the twin, health verdict,
waiting for the broker."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading

import pytest

from edge.logs import configure_logging, parse_level, set_level
from edge.ops import HealthCheck, broker_delays, wait_for_broker
from edge.testing import T0, planogram_csv
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import SimClock
from gondola.errors import ConfigError
from gondola.hub import LocalHub


def _lines(fmt: str, level: str = "info") -> list[str]:
    out = io.StringIO()
    configure_logging(level, fmt, stream=out)
    log = logging.getLogger("edge.gateway")
    log.debug("a debug line")
    log.info("gateway s001 started")
    log.warning("store broker lost")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("cycle failed")
    return out.getvalue().splitlines()


def test_iotedge_format_carries_the_syslog_severity_and_utc_time(restore_logging):
    lines = _lines("iotedge")
    pattern = r"<(\d)> \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+00:00 \[([A-Z]{3})\] - (.*)"
    parsed = [re.fullmatch(pattern, line).groups() for line in lines if line.startswith("<")]
    assert parsed[:3] == [("6", "INF", "gateway s001 started"), ("4", "WRN", "store broker lost"),
                          ("3", "ERR", "cycle failed")]
    assert "a debug line" not in "\n".join(lines)  # info level
    assert any("RuntimeError: boom" in line for line in lines)  # the traceback follows its line


def test_json_format_is_one_object_per_record_traceback_included(restore_logging):
    records = [json.loads(line) for line in _lines("json", level="debug")]
    assert [(r["level"], r["severity"], r["msg"]) for r in records] == [
        ("debug", 7, "a debug line"), ("info", 6, "gateway s001 started"),
        ("warning", 4, "store broker lost"), ("error", 3, "cycle failed")]
    assert records[0]["logger"] == "edge.gateway" and records[0]["ts"].endswith("Z")
    assert "RuntimeError: boom" in records[3]["exc"]


def test_levels_parse_from_names_and_numbers_and_change_live(restore_logging):
    assert parse_level("warn") == logging.WARNING and parse_level("DEBUG") == logging.DEBUG
    assert parse_level("20") == logging.INFO
    with pytest.raises(ConfigError, match="log level"):
        parse_level("loud")
    with pytest.raises(ConfigError, match="log format"):
        configure_logging("info", "xml")
    configure_logging("warning", "text", stream=io.StringIO())
    assert set_level("debug") == logging.DEBUG == logging.getLogger().level
    assert logging.getLogger("paho").level == logging.DEBUG
    set_level("info")
    assert logging.getLogger("paho").level == logging.WARNING


def test_settings_refuse_an_unknown_log_format_or_level():
    with pytest.raises(ConfigError, match="log_format"):
        EdgeSettings(store_id="s1", log_format="xml").validate()
    with pytest.raises(ConfigError, match="log level"):
        EdgeSettings.from_env({"GONDOLA_STORE_ID": "s1", "GONDOLA_LOG_LEVEL": "chatty"})
    s = EdgeSettings.from_env({"GONDOLA_STORE_ID": "s1", "GONDOLA_LOG_LEVEL": "debug",
                               "GONDOLA_LOG_FORMAT": "iotedge"})
    assert (s.log_level, s.log_format) == ("debug", "iotedge")


@pytest.fixture
def gateway(tmp_path, restore_logging):
    (tmp_path / "planogram.csv").write_text(planogram_csv())
    clock = SimClock(T0)
    gw = build_gateway(EdgeSettings(store_id="s001", data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / "planogram.csv", cycle_s=60.0), clock=clock)
    yield gw, LocalHub(tmp_path / "hub.sqlite"), clock
    gw.stop()


def test_twin_settings_apply_live_are_reported_and_fall_back_when_removed(gateway):
    gw, hub, _ = gateway
    assert gw.uplink.bucket is None and gw.inference.raise_at == pytest.approx(0.6)
    hub.set_desired("gw-s001", "gondola-gateway", {"settings": {
        "log_level": "debug", "raise_at": 0.8, "clear_at": 0.2, "cycle_s": 15, "bandwidth_bytes_s": 5000,
        "min_dwell_min": 5, "buffer_max_bytes": 10, "live_share": 2.0}})
    assert gw.poll_desired()
    assert logging.getLogger().level == logging.DEBUG
    assert (gw.inference.raise_at, gw.inference.clear_at) == (0.8, 0.2)
    assert gw.inference.min_dwell_ms == 5 * 60_000 and gw.settings.cycle_s == 15.0
    assert gw.uplink.bucket.rate == 5000 and gw.uplink.live_share == 0.2  # bad value: deployed one
    assert gw.models.follow_threshold is False  # an explicit threshold wins over the model's
    reported = hub.get_twin("gw-s001", "gondola-gateway")["reported"]["settings"]
    assert reported["applied"]["raise_at"] == 0.8 and reported["applied"]["bandwidth_bytes_s"] == 5000
    assert set(reported["rejected"]) == {"buffer_max_bytes", "live_share"}
    assert "redeploy" in reported["rejected"]["buffer_max_bytes"]
    assert reported["desired_version"] == 1

    hub.set_desired("gw-s001", "gondola-gateway", {"settings": {"cycle_s": 30, "raise_at": None}})
    assert gw.poll_desired()
    assert gw.settings.cycle_s == 30.0 and gw.uplink.bucket is None
    assert gw.inference.raise_at == pytest.approx(0.6) and gw.models.follow_threshold is True
    assert logging.getLogger().level == logging.INFO
    reported = hub.get_twin("gw-s001", "gondola-gateway")["reported"]["settings"]
    assert reported["rejected"] == {} and reported["desired_version"] == 2


def test_clear_at_must_stay_below_raise_at(gateway):
    gw, _, _ = gateway
    status = gw.live.apply({"raise_at": 0.5, "clear_at": 0.7})
    assert "clear_at" in status["rejected"]
    assert gw.inference.clear_at < gw.inference.raise_at == 0.5


def test_health_names_each_problem(gateway):
    gw, _, clock = gateway
    check = HealthCheck(gw)
    assert check.problems() == ["store broker 127.0.0.1:1883 not connected"]  # never started
    clock.advance_to(T0 + 10 * 60_000)
    assert "no scoring cycle since start" in check.problems()
    gw.run_cycle(clock.now_ms())
    assert "no scoring cycle since start" not in check.problems()
    clock.advance_to(T0 + 20 * 60_000)  # three 60 s cycles missed
    assert "last scoring cycle 600 s ago" in check.problems()
    gw.uplink.auth_failed = True
    assert "the hub refused the gateway's credentials" in check.problems()


def test_broker_delays_double_with_jitter_up_to_the_cap():
    import random

    delays = broker_delays(1.0, 8.0, rng=random.Random(3))
    got = [next(delays) for _ in range(8)]
    caps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(got, caps))


def test_waiting_for_the_broker_ends_when_it_listens_or_when_stopped():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    result = []
    t = threading.Thread(target=lambda: result.append(
        wait_for_broker("127.0.0.1", port, stop, delays=iter(lambda: 0.05, None))))
    t.start()
    listener.listen()  # the broker comes up while the gateway waits
    t.join(10)
    listener.close()
    assert result == [True]
    stop.set()
    assert wait_for_broker("127.0.0.1", port, stop, delays=iter(lambda: 0.05, None)) is False


def test_after_an_outage_the_gateway_logs_hub_back_and_backlog_drained(tmp_path, caplog):
    from edge.ops import Watcher
    from edge.testing import device_traffic
    from edge.transport import FlakyTransport, LocalHubTransport

    clock = SimClock(T0)
    hub = LocalHub(tmp_path / "hub.sqlite")
    flaky = FlakyTransport(LocalHubTransport(hub, "gw-s001"))
    gw = build_gateway(EdgeSettings(store_id="s001", data_dir=tmp_path / "gw", round_rows=100), clock=clock,
                       transport=flaky)
    try:
        traffic = device_traffic(500, drop=0.0, seed=2)
        gw.collector.commit_group([(t, p, (0, 0)) for t, p in traffic.messages])
        watch = Watcher(gw)
        flaky.online = False
        assert gw.uplink_once() == 0 and gw.uplink.failures == 1
        watch.tick()
        flaky.online = True
        with caplog.at_level(logging.INFO, logger="edge.gateway"):
            gw.uplink.reset_backoff()
            gw.uplink_once()  # one round: 100 of 500 sent, 400 still waiting
            watch.tick()
            assert "the hub accepts batches again" in caplog.text and "backlog drained" not in caplog.text
            gw.drain()
            watch.tick()
        drained = [r.getMessage() for r in caplog.records if "backlog drained" in r.getMessage()]
        assert len(drained) == 1 and drained[0].startswith("backlog drained: 500 events waiting at the peak")
    finally:
        gw.stop()


def test_a_twin_without_a_log_level_leaves_the_processs_level_alone(gateway):
    gw, hub, _ = gateway
    logging.getLogger().setLevel(logging.WARNING)  # e.g. the demo running gateways in-process
    hub.set_desired("gw-s001", "gondola-gateway", {"settings": {"cycle_s": 20}})
    assert gw.poll_desired() and gw.settings.cycle_s == 20.0
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.parametrize("env,name", [
    ({"GONDOLA_CYCLE_S": "-5"}, "cycle_s"),
    ({"GONDOLA_CYCLE_S": "0"}, "cycle_s"),
    ({"GONDOLA_HEALTH_EVERY_S": "-1"}, "health_every_s"),
    ({"GONDOLA_UPLINK_DELAY_S": "-900"}, "uplink_delay_s"),
    ({"GONDOLA_BUFFER_MAX_BYTES": "0"}, "buffer_max_bytes"),
    ({"GONDOLA_BROKER_PORT": "70000"}, "broker_port"),
    ({"GONDOLA_HTTP_PORT": "-1"}, "http_port"),
])
def test_settings_refuse_negative_intervals_sizes_and_ports(env, name):
    # `gondola edge run --cycle-s -5` used to start and spin its loop without pause.
    with pytest.raises(ConfigError, match=name):
        EdgeSettings.from_env({"GONDOLA_STORE_ID": "s1", **env})
    assert EdgeSettings.from_env({"GONDOLA_STORE_ID": "s1", "GONDOLA_UPLINK_DELAY_S": "0",
                                  "GONDOLA_HTTP_PORT": "0", "GONDOLA_CYCLE_S": "0.5"}).cycle_s == 0.5

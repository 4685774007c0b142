"""The gateway's model manager with real files, the real LiteRT interpreter, real HTTP and the
embedded hub's module twin: rollout, refusal, rollback, restart."""

from __future__ import annotations

import http.server
import json
import logging
import threading

import pytest

from edge.model_manager import ModelManager, fetch_url
from edge.metrics import exposition
from edge.testing import T0, planogram_csv, reading
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import SimClock
from gondola.hub import LocalHub
from tests.model_packages import KEY, package


@pytest.fixture
def gateway(tmp_path):
    (tmp_path / "planogram.csv").write_text(planogram_csv(facings=8))
    key_file = tmp_path / "model.key"
    key_file.write_bytes(KEY)
    clock = SimClock(T0)

    def build(**overrides):
        settings = EdgeSettings(store_id="s001", data_dir=tmp_path / "gw", hub_path=tmp_path / "hub.sqlite",
                                planogram_path=tmp_path / "planogram.csv", model_key_file=key_file,
                                **overrides)
        gw = build_gateway(settings, clock=clock)
        gw.collector.commit_group([(f"gondola/s001/shelf/shelf-s001-f{i}",
                                    json.dumps(reading(0, T0, device_id=f"shelf-s001-f{i}", facing_id=f"f{i}",
                                                       sku=f"k{i}")).encode(), (0, 0)) for i in range(8)])
        return gw

    return build


class CountingFetch:
    def __init__(self):
        self.urls: list[str] = []

    def __call__(self, url, dest, **kw):
        self.urls.append(url)
        return fetch_url(url, dest, **kw)


def test_a_signed_model_is_downloaded_verified_swapped_in_and_reported(gateway, tmp_path):
    gw = gateway()
    before = gw.inference.scorer.name
    spec = package(tmp_path / "cloud", "v2", threshold=0.42)
    status = gw.models.apply({"model": spec})  # an extra key ("path") is ignored
    assert status["status"] == "active" and status["version"] == "v2" and status["error"] is None
    assert gw.inference.scorer.name == "model:v2" != before
    assert gw.inference.raise_at == pytest.approx(0.42)  # the model's operating threshold
    assert gw.inference.clear_at <= 0.21
    twin = LocalHub(tmp_path / "hub.sqlite").get_twin("gw-s001", "gondola-gateway")
    assert twin["reported"]["model"]["version"] == "v2"
    assert twin["reported"]["model"]["status"] == "active"
    state = json.loads((tmp_path / "gw" / "models" / "current.json").read_text())
    assert state["active"]["version"] == "v2"
    assert gw.run_cycle(T0 + 60_000) is not None and gw.inference.scored_by == "model:v2"
    assert gw.health()["model_version"] == "model:v2" and gw.health()["model"]["status"] == "active"
    assert 'gondola_edge_model_rollout_info{desired="v2",status="active",store_id="s001"} 1.0' in exposition(gw.health()).decode()


@pytest.mark.parametrize("break_it, reason", [
    ("wrong_sha", "sha256"),
    ("other_key", "signature does not verify"),
    ("unsigned", "not signed"),
    ("not_a_model", "not a valid Flatbuffer"),
    ("version_mismatch", "desired is"),
])
def test_a_model_that_fails_any_check_is_refused_and_the_running_scorer_stays(gateway, tmp_path, break_it, reason):
    gw = gateway()
    before = gw.inference.scorer.name
    if break_it == "wrong_sha":
        spec = package(tmp_path / "cloud", "v2") | {"sha256": "0" * 64}
    elif break_it == "other_key":
        spec = package(tmp_path / "cloud", "v2", key=b"somebody-elses-key-0123456789abcd")
    elif break_it == "unsigned":
        spec = package(tmp_path / "cloud", "v2", key=None)
    elif break_it == "not_a_model":
        spec = package(tmp_path / "cloud", "v2", body=b"TFL3 but not really a flatbuffer" * 50)
    else:
        spec = package(tmp_path / "cloud", "v2") | {"version": "v9"}
    status = gw.models.apply({"model": spec})
    assert status["status"] == "failed" and reason in status["error"]
    assert gw.inference.scorer.name == before
    assert status["version"] is None and status["desired"] in ("v2", "v9")
    assert not (tmp_path / "gw" / "models" / "current.json").exists()


def test_production_refuses_unsigned_models_when_no_key_is_configured(tmp_path):
    from edge.inference import Inference, load_planogram
    from models.scoring import PoissonScorer

    (tmp_path / "p.csv").write_text(planogram_csv(facings=4))
    inf = Inference(load_planogram(tmp_path / "p.csv", "s001"), PoissonScorer(2.0))
    mm = ModelManager(tmp_path / "models", inf, clock=SimClock(T0), horizon_h=2.0, key=None, require_signature=True)
    status = mm.apply({"model": package(tmp_path / "cloud", "v2", key=None)})
    assert status["status"] == "failed" and "signed models are required" in status["error"]
    assert inf.scorer.name == "baseline-poisson"


def test_the_same_desired_model_is_not_fetched_twice_and_the_previous_comes_back_from_disk(gateway, tmp_path):
    gw = gateway()
    fetch = CountingFetch()
    gw.models.fetch = fetch
    v2, v3, v4 = (package(tmp_path / "cloud", v) for v in ("v2", "v3", "v4"))
    gw.models.apply({"model": v2})
    gw.models.apply({"model": v2})
    assert len(fetch.urls) == 2  # manifest + model, once
    gw.models.apply({"model": v3})
    assert gw.models.status["previous"] == "v2"
    gw.models.apply({"model": v2})  # the cloud rolls back: no download, straight from disk
    assert len(fetch.urls) == 4
    assert gw.inference.scorer.name == "model:v2" and gw.models.status["previous"] == "v3"
    gw.models.apply({"model": v4})
    kept = sorted(p.name for p in (tmp_path / "gw" / "models").iterdir() if p.is_dir())
    assert kept == ["v2", "v4"]  # the active and the previous; v3 was pruned


def test_a_restarted_gateway_resumes_with_the_model_rolled_out_before(gateway, tmp_path):
    gw = gateway()
    gw.models.apply({"model": package(tmp_path / "cloud", "v2")})
    gw.models.apply({"model": package(tmp_path / "cloud", "v3")})
    gw.stop()
    again = gateway()
    assert again.inference.scorer.name == "model:v3"
    assert again.models.status["status"] == "active" and again.models.status["previous"] == "v2"


def test_a_model_that_keeps_failing_is_rolled_back_to_the_previous_and_not_retried(gateway, tmp_path):
    gw = gateway()
    fetch = CountingFetch()
    gw.models.fetch = fetch
    gw.models.apply({"model": package(tmp_path / "cloud", "v2")})
    v3 = package(tmp_path / "cloud", "v3")
    gw.models.apply({"model": v3})
    assert gw.inference.scorer.name == "model:v3"

    def broken(features):  # the interpreter faults at run time, after the smoke test passed
        raise RuntimeError("tensor arena corrupted")

    gw.inference.scorer.score = broken
    for i in range(3):
        gw.run_cycle(T0 + (i + 1) * 60_000)
        assert gw.inference.scored_by == "baseline-poisson"  # each failed cycle still scores, on the baseline
    assert gw.models.status["status"] == "rolled_back" and "v3 failed 3" in gw.models.status["error"]
    assert gw.inference.scorer.name == "model:v2"
    gw.run_cycle(T0 + 10 * 60_000)
    assert gw.inference.scored_by == "model:v2"
    n = len(fetch.urls)
    gw.models.apply({"model": v3})  # the same bad package again: refused without a download
    assert len(fetch.urls) == n and gw.inference.scorer.name == "model:v2"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_models_come_over_http_and_no_sas_token_reaches_logs_or_the_twin(gateway, tmp_path, caplog):
    spec = package(tmp_path / "cloud", "v2")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(tmp_path / "cloud")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/stockout-v2"
        sas = "?sv=2025-01-05&sig=SECRETSIGNATURE"
        gw = gateway()
        caplog.set_level(logging.DEBUG)
        ok = gw.models.apply({"model": spec | {"url": base + ".tflite" + sas,
                                               "manifest_url": base + ".manifest.json" + sas}})
        assert ok["status"] == "active"
        missing = package(tmp_path / "cloud", "v3") | {"url": base.replace("v2", "v404") + ".tflite" + sas}
        bad = gw.models.apply({"model": missing})
        assert bad["status"] == "failed" and "download of" in bad["error"] and "not found" in bad["error"].lower()
    finally:
        server.shutdown()
    twin = LocalHub(tmp_path / "hub.sqlite").get_twin("gw-s001", "gondola-gateway")
    assert "SECRETSIGNATURE" not in json.dumps(twin) and "SECRETSIGNATURE" not in caplog.text


def test_the_gateway_follows_the_twin_on_its_own_through_the_embedded_hub(gateway, tmp_path, mosquitto):
    gw = gateway(broker_port=mosquitto.port)
    hub = LocalHub(tmp_path / "hub.sqlite")
    gw.start()
    try:
        hub.set_desired("gw-s001", "gondola-gateway", {"model": package(tmp_path / "cloud", "v2")})
        gw.run_cycle(T0 + 60_000)  # the cycle polls the twin and hands the change to the manager
        assert gw.models.wait_idle(30)
        assert gw.inference.scorer.name == "model:v2"
        assert hub.get_twin("gw-s001", "gondola-gateway")["reported"]["model"]["status"] == "active"
    finally:
        gw.stop()


class _PushOnlyOffline:
    """A push transport (as IoT Hub) that could not enable pushes at start: it keeps the
    callback, as ``IotHubTransport`` does, but raises; nothing is ever pushed."""

    polls_desired = False

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def on_desired(self, callback):
        from gondola.errors import TransportError

        self.inner.on_desired(callback)
        raise TransportError("no connection to enable twin patches")


def test_a_gateway_that_started_offline_picks_up_the_desired_model_with_its_next_health_report(
        tmp_path, mosquitto):
    from edge.transport import LocalHubTransport

    (tmp_path / "planogram.csv").write_text(planogram_csv(facings=4))
    (tmp_path / "model.key").write_bytes(KEY)
    hub = LocalHub(tmp_path / "hub.sqlite")
    gw = build_gateway(EdgeSettings(store_id="s001", broker_port=mosquitto.port, data_dir=tmp_path / "gw",
                                    planogram_path=tmp_path / "planogram.csv", model_key_file=tmp_path / "model.key",
                                    health_every_s=300),
                       clock=SimClock(T0), transport=_PushOnlyOffline(LocalHubTransport(hub, "gw-s001")))
    gw.start()  # does not fail although pushes could not be enabled
    try:
        gw.run_cycle(T0)  # first health report
        hub.set_desired("gw-s001", "gondola-gateway", {"model": package(tmp_path / "cloud", "v5")})
        gw.run_cycle(T0 + 60_000)  # not a health-report cycle: nothing read
        assert gw.models.wait_idle(5) and gw.inference.scorer.name != "model:v5"
        gw.run_cycle(T0 + 300_000)  # the next health report reads the twin
        assert gw.models.wait_idle(30)
        assert gw.inference.scorer.name == "model:v5"
    finally:
        gw.stop()


def test_scoring_cycles_go_on_while_a_model_is_downloading(gateway, tmp_path):
    gw = gateway()
    release, entered = threading.Event(), threading.Event()

    def slow_fetch(url, dest, **kw):  # a slow store uplink: the model file takes its time
        if url.endswith(".tflite"):
            entered.set()
            release.wait(30)
        return fetch_url(url, dest, **kw)

    gw.models.fetch = slow_fetch
    gw.models.start()
    try:
        gw.models.on_desired({"model": package(tmp_path / "cloud", "v2")})
        assert entered.wait(10)
        done = threading.Event()
        cycles = threading.Thread(target=lambda: [gw.run_cycle(T0 + i * 60_000) for i in range(1, 4)] and done.set())
        cycles.start()
        assert done.wait(10), "a scoring cycle waited for the download"
        assert gw.models.status["status"] == "downloading" and gw.inference.scorer.name != "model:v2"
        gw.models.on_desired({"model": package(tmp_path / "cloud", "v2")})  # the poll's callback: no wait either
        release.set()
        assert gw.models.wait_idle(30) and gw.inference.scorer.name == "model:v2"
    finally:
        release.set()
        gw.models.stop()


def test_a_failed_download_is_retried_with_backoff_but_a_refused_model_is_not(gateway, tmp_path):
    import time

    from edge.model_manager import DownloadError

    gw = gateway()
    attempts = []

    def flaky_fetch(url, dest, **kw):  # the store's link drops the first two transfers
        attempts.append(url)
        if len(attempts) <= 2:
            raise DownloadError(f"download of {url} failed: connection reset")
        return fetch_url(url, dest, **kw)

    gw.models.fetch = flaky_fetch
    gw.models.retry_min_s = gw.models._retry_delay_s = 0.05
    gw.models.start()
    try:
        gw.models.on_desired({"model": package(tmp_path / "cloud", "v2")})
        deadline = time.monotonic() + 15
        while gw.models.status["status"] != "active" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.models.status["status"] == "active" and gw.inference.scorer.name == "model:v2"
        assert len(attempts) == 4  # two failed manifest fetches, then manifest + model
    finally:
        gw.models.stop()
    refused = gw.models.apply({"model": package(tmp_path / "cloud", "v3", threshold=1.5)})
    assert refused["status"] == "failed" and "outside (0, 1]" in refused["error"]
    assert gw.inference.scorer.name == "model:v2" and gw.models._retry is None

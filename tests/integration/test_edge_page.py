"""The store page a member of staff sees on a tablet: what to refill, where, by when; and "done"."""

from __future__ import annotations

import urllib.parse
import urllib.request

import numpy as np
import pytest

from edge.page import serve_page
from edge.testing import T0, pos_line, reading
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import HOUR_MS, SimClock
from gondola.contracts import decode_batch, validate_event
from gondola.hub import LocalHub


class ForecastScorer:
    """Forecasts f0 and f2 empty soon (f2 sooner), nothing else."""

    name = "scripted-v1"
    horizon_h = 2.0

    def score(self, features):
        p = np.zeros(len(features))
        p[0] = p[2] = 0.99
        return p


def _store(tmp_path):
    (tmp_path / "planogram.csv").write_text(
        "store_id,facing_id,sku,capacity,has_sensor,aisle,bay,shelf\n"
        + "".join(f"s001,f{i},k{i},20,1,A0{i % 3 + 1},{i + 1},{i % 4 + 1}\n" for i in range(6)))
    (tmp_path / "products.csv").write_text(
        "sku,name,category,price_cents\n" + "".join(f"k{i},Product {chr(65 + i)} 500g,dairy,199\n" for i in range(6)))
    (tmp_path / "stores.csv").write_text("store_id,name,timezone,currency\ns001,Centrum,Europe/Amsterdam,EUR\n")
    clock = SimClock(T0)
    gw = build_gateway(EdgeSettings(store_id="s001", broker_host="127.0.0.1", broker_port=1, data_dir=tmp_path / "gw",
                                    hub_path=tmp_path / "hub.sqlite", planogram_path=tmp_path / "planogram.csv"),
                       clock=clock, scorer=ForecastScorer())
    # f0 slowly emptying, f2 with 1 unit left, f4 empty now, f1 full.
    events = [reading(1, T0 + 60_000, facing_id="f0", sku="k0", device_id="shelf-s001-f0", units=9),
              reading(1, T0 + 60_000, facing_id="f2", sku="k2", device_id="shelf-s001-f2", units=2),
              reading(1, T0 + 60_000, facing_id="f4", sku="k4", device_id="shelf-s001-f4", units=0),
              reading(2, T0 + 120_000, facing_id="f4", sku="k4", device_id="shelf-s001-f4", units=0),
              reading(1, T0 + 60_000, facing_id="f1", sku="k1", device_id="shelf-s001-f1", units=20),
              # the till sold from f0 and f2 (no forecast is raised on a facing before its first sale)
              pos_line(3, T0 + 90_000, sku="k0"), pos_line(4, T0 + 90_000, sku="k2")]
    gw.inference.observe(events)
    clock.advance_to(T0 + HOUR_MS)
    gw.run_cycle(T0 + HOUR_MS)
    return gw, clock


def _get(url: str) -> str:
    return urllib.request.urlopen(url).read().decode()


@pytest.mark.slow
def test_the_store_page_lists_forecasts_by_empty_time_then_empty_shelves_with_names_and_places(tmp_path):
    gw, _ = _store(tmp_path)
    server = serve_page(gw, port=0)
    try:
        page = _get(f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        gw.stop()
    rows = gw.inference.restock_list(10)
    forecasts = [r for r in rows if r["kind"] == "empty_within_h"]
    assert {r["facing_id"] for r in forecasts} == {"f0", "f2"}
    assert [r["facing_id"] for r in rows if r["kind"] == "empty_now"] == ["f4"]
    # Soonest expected empty first; then the empty shelf; names and places, not codes only.
    first = sorted(forecasts, key=lambda r: r["expected_empty_ts"])[0]
    names = {"f0": "Product A 500g", "f2": "Product C 500g", "f4": "Product E 500g"}
    order = [page.index(names[f]) for f in (first["facing_id"], ({"f0", "f2"} - {first["facing_id"]}).pop(), "f4")]
    assert order == sorted(order)
    assert page.index("Will run empty soon") < page.index(names["f0"]) < page.index("Empty now") < page.index(names["f4"])
    assert "A01 · bay 1 · shelf 1" in page and "aisle A02 · bay 5 · shelf 1" in page
    assert "Product B 500g" not in page  # a full shelf is not on the list
    # Local time (Amsterdam is UTC+1 in winter) and no raw codes or reprs.
    from datetime import datetime
    from zoneinfo import ZoneInfo
    local = datetime.fromtimestamp(first["expected_empty_ts"] / 1000, ZoneInfo("Europe/Amsterdam")).strftime("%H:%M")
    assert f"about {local})" in page
    assert "None" not in page and "{'" not in page and str(T0)[:6] not in page
    assert "<meta http-equiv=refresh content='30; url=/'>" in page


@pytest.mark.slow
def test_done_records_a_shelf_check_event_that_goes_up_with_the_alert_it_answered(tmp_path):
    gw, clock = _store(tmp_path)
    server = serve_page(gw, port=0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        clock.advance_to(T0 + HOUR_MS + 10 * 60_000)
        body = urllib.parse.urlencode({"facing_id": "f4", "outcome": "restocked"}).encode()
        answer = urllib.request.urlopen(urllib.request.Request(base + "/done", data=body))
        page = answer.read().decode()
        # Post/redirect/get: the browser lands on the page again, which thanks and lists the shelves.
        assert answer.url.endswith("/?checked=f4&outcome=restocked") and "Recorded: Product E 500g refilled" in page
        bad = urllib.parse.urlencode({"facing_id": "f4", "outcome": "lost"}).encode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(base + "/done", data=bad))
        assert err.value.code == 400
        # An unknown facing (or an empty form) is the sender's mistake too: 400, not a 500.
        for junk in (urllib.parse.urlencode({"facing_id": "nope", "outcome": "restocked"}).encode(), b"garbage"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(base + "/done", data=junk))
            assert err.value.code == 400
        gw.drain()
    finally:
        server.shutdown()
        gw.stop()
    hub = LocalHub(tmp_path / "hub.sqlite")
    events = [e for p in range(hub.partitions) for m in hub.read(p) for e in decode_batch(m.body, m.properties)]
    hub.close()
    checks = [e for e in events if e["type"] == "shelf.check"]
    assert len(checks) == 1
    validate_event(checks[0])
    assert checks[0]["data"]["facing_id"] == "f4" and checks[0]["data"]["sku"] == "k4"
    assert checks[0]["data"]["outcome"] == "restocked" and checks[0]["data"]["alert_kind"] == "empty_now"
    assert checks[0]["data"]["alert_ts"] == T0 + HOUR_MS and checks[0]["ts"] == T0 + HOUR_MS + 10 * 60_000


@pytest.mark.slow
def test_a_client_that_announces_a_body_and_sends_none_is_let_go_quietly_and_the_page_still_answers(
        tmp_path, monkeypatch, capfd):
    # Outside check (session 8): a POST /done announcing a body it never sent held its thread
    # for as long as the client stayed, and a client that left printed a traceback on the
    # gateway's stderr (BrokenPipeError) among the operator's log lines.
    import socket

    import edge.page

    monkeypatch.setattr(edge.page, "REQUEST_TIMEOUT_S", 0.5, raising=False)
    gw, _ = _store(tmp_path)
    server = serve_page(gw, port=0)
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"POST /done HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            assert sock.recv(1024) == b""  # the server closed it (before: recv waited until our timeout)
        assert '"facing_id": "f4"' in _get(f"http://127.0.0.1:{port}/restock")  # still answering
    finally:
        server.shutdown()
        gw.stop()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.chromium
def test_the_store_page_renders_on_a_tablet_sized_headless_chromium(tmp_path):
    from tests.conftest import require
    from tests.pages import chromium_binary, screenshot

    require(chromium_binary() is not None, "Chromium (Debian package 'chromium')")
    gw, _ = _store(tmp_path)
    server = serve_page(gw, port=0)
    try:
        shot = screenshot(f"http://127.0.0.1:{server.server_address[1]}/", tmp_path / "store_page.png",
                          width=1024, height=768)
    finally:
        server.shutdown()
        gw.stop()
    print("store page screenshot:", tmp_path / "store_page.png")
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    # The green "Done: refilled" buttons (3 shelves) and the dark header are drawn.
    assert ((g - r > 60) & (g - b > 40)).sum() > 3 * 500
    assert ((r < 50) & (g < 60) & (b < 70)).sum() > 1024 * 30

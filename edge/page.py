"""The gateway's local page and API (stdlib ``http.server``; works with no internet).

* ``/``          for staff on a tablet: shelves expected to run empty soon (soonest first), then
  shelves empty now, with product name, aisle / bay / shelf, units left and the expected empty
  time in the store's time zone; a "done" action per shelf; refreshes every 30 s
* ``/done``      POST ``facing_id``, ``outcome`` (restocked | was_fine | no_stock): records a
  ``shelf.check`` event (``Gateway.record_check``) and shows the page again
* ``/restock``   the restock list as JSON
* ``/health``    ``Gateway.health()`` as JSON with ``healthy`` and ``problems``; 200 when
  healthy, 503 when not (``edge.ops.HealthCheck``; the container's HEALTHCHECK reads it)
* ``/metrics``   Prometheus exposition through ``prometheus_client`` (``edge.metrics``)

GET and HEAD (POST for ``/done``); a query string is ignored (``/metrics?x=1`` is ``/metrics``).

Bound to loopback by default. Bound to any other address (a store tablet on the LAN, a metrics
scraper) every request must carry the page token: ``Authorization: Bearer <token>``, a
``gondola_token`` cookie, or ``?token=`` once (the answer then sets the cookie, for a tablet's
bookmark). Without a token configured the page refuses to start on a non-loopback address.
"""

from __future__ import annotations

import csv
import hmac
import html
import json
import logging
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from gondola.errors import ConfigError, ContractError

__all__ = ["serve_page", "ShelfLabels", "LOOPBACK"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

log = logging.getLogger(__name__)

#: Seconds a connection may sit idle (a request line, headers or a body it announced and does not
#: send) before its thread lets it go; the page had none, so such a client held a thread for good.
REQUEST_TIMEOUT_S = 30.0


class _PageServer(ThreadingHTTPServer):
    """The page's server: a client that hangs up or times out is no error of the gateway's. The
    standard server printed a traceback to stderr for each (BrokenPipeError after a tablet left
    mid-answer: QA, session 8); anything else is logged once, as a warning with its traceback."""

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("store page: client %s went away (%s)", client_address[0], type(exc).__name__)
            return
        log.warning("store page: a request from %s failed", client_address[0], exc_info=True)


class _TokenAuth:
    """Mixin for a ``BaseHTTPRequestHandler``: every method needs the token (checked in
    ``parse_request``, which runs before any ``do_*``)."""

    token: str = ""

    def _presented(self) -> tuple[str, bool]:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:].strip(), False
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if "gondola_token" in cookie:
            return cookie["gondola_token"].value, False
        query = parse_qs(urlsplit(self.path).query)
        return (query.get("token") or [""])[0], True

    def parse_request(self):
        if not super().parse_request():
            return False
        given, from_query = self._presented()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="gondola-gateway"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        if from_query:  # strip the token from the path; the answer sets the cookie
            parts = urlsplit(self.path)
            rest = "&".join(f"{k}={v}" for k, vs in parse_qs(parts.query).items() if k != "token" for v in vs)
            self.path = parts.path + (f"?{rest}" if rest else "")
            self._set_cookie = True
        return True

    def end_headers(self):
        if getattr(self, "_set_cookie", False):
            self.send_header("Set-Cookie", f"gondola_token={self.token}; HttpOnly; SameSite=Strict; Path=/")
            self._set_cookie = False
        super().end_headers()



@dataclass
class ShelfLabels:
    """What staff read on the page instead of codes: product names, where the facing is, the
    store's time zone. From the master data files beside the planogram (``planogram.csv`` with
    ``aisle``, ``bay``, ``shelf``; ``products.csv`` with ``name``; ``stores.csv`` with
    ``timezone``); whatever is missing falls back to the codes and UTC."""

    names: dict[str, str] = field(default_factory=dict)  # sku -> product name
    places: dict[str, str] = field(default_factory=dict)  # facing -> "aisle A01 · bay 2 · shelf 3"
    timezone: str = "UTC"
    store_name: str = ""

    @classmethod
    def from_master(cls, planogram_path: str | Path | None, store_id: str) -> "ShelfLabels":
        labels = cls()
        if not planogram_path:
            return labels
        folder = Path(planogram_path).parent
        for row in _csv(Path(planogram_path)):
            if row.get("store_id") == store_id and row.get("facing_id"):
                parts = [f"{k} {row[k]}" for k in ("aisle", "bay", "shelf") if row.get(k)]
                if parts:
                    labels.places[row["facing_id"]] = " · ".join(parts)
        labels.names = {r["sku"]: r["name"] for r in _csv(folder / "products.csv") if r.get("sku") and r.get("name")}
        for r in _csv(folder / "stores.csv"):
            if r.get("store_id") == store_id:
                labels.store_name = r.get("name") or ""
                tz = r.get("timezone") or "UTC"
                try:
                    ZoneInfo(tz)
                    labels.timezone = tz
                except (KeyError, ValueError):
                    pass
        return labels

    def local(self, ms: int, fmt: str = "%H:%M") -> str:
        return datetime.fromtimestamp(ms / 1000, ZoneInfo(self.timezone)).strftime(fmt)


def _csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


_DONE_TEXT = {"restocked": "refilled", "was_fine": "was fine", "no_stock": "no stock"}

_STYLE = """
body{font:18px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2733}
header{background:#1d2733;color:#fff;padding:12px 20px}header h1{margin:0;font-size:24px}
header .sub{color:#c9d1dc;font-size:15px}main{padding:12px 20px}
h2{font-size:20px;margin:20px 0 8px}.card{background:#fff;border:1px solid #d5dae1;border-left:8px solid #f9a825;
border-radius:8px;padding:10px 14px;margin:8px 0;display:flex;flex-wrap:wrap;align-items:center;gap:8px 20px}
.card.empty{border-left-color:#b42318}.what{flex:2 1 260px}.what b{font-size:20px}.what small{color:#5b6675}
.when{flex:1 1 160px;font-weight:600}.units{flex:1 1 110px}.done{flex:2 1 330px;display:flex;gap:8px}
.done button{font-size:17px;padding:10px 14px;border-radius:6px;border:1px solid #8a96a3;background:#fff;min-width:96px}
.done button.main{background:#2e7d32;color:#fff;border-color:#2e7d32}.ok{background:#e6f4ea;padding:8px 12px;border-radius:6px}
.none{color:#5b6675}footer{padding:12px 20px;color:#5b6675;font-size:15px}.bad{color:#b42318;font-weight:600}
"""


def _page(gw, labels: "ShelfLabels", notice: str = "") -> str:
    """The store page: forecast alerts first (soonest empty first), then shelves empty now."""
    now = gw.clock.now_ms()
    rows = [r for r in gw.inference.restock_list(200) if r["alert"]]
    soon = [r for r in rows if r["kind"] != "empty_now"]
    empty = [r for r in rows if r["kind"] == "empty_now"]
    e = html.escape

    def card(r: dict) -> str:
        name = labels.names.get(r["sku"], r["sku"])
        place = labels.places.get(r["facing_id"], r["facing_id"])
        units = "–" if r["units_est"] is None else f"{r['units_est']:.0f}"
        if r["kind"] == "empty_now":
            when, cls = "empty now", "card empty"
        elif r.get("expected_empty_ts"):
            mins = max(0, round((r["expected_empty_ts"] - now) / 60000))
            when, cls = f"empty in {mins} min (about {labels.local(r['expected_empty_ts'])})", "card"
        else:
            when, cls = "runs empty soon", "card"
        fid = e(r["facing_id"], quote=True)
        return (f"<div class='{cls}' data-facing='{fid}'><div class='what'><b>{e(name)}</b><br>"
                f"<small>{e(place)} · {e(r['sku'])}</small></div><div class='when'>{e(when)}</div>"
                f"<div class='units'>{units} of {r['capacity']} left</div>"
                f"<form class='done' method='post' action='/done'><input type='hidden' name='facing_id' value='{fid}'>"
                f"<button class='main' name='outcome' value='restocked'>Done: refilled</button>"
                f"<button name='outcome' value='was_fine'>Was fine</button>"
                f"<button name='outcome' value='no_stock'>No stock</button></form></div>")

    h = gw.health()
    last = h.get("last_uplink_ts")
    sync = (f"last sync with head office {labels.local(last)} ({max(0, round((now - last) / 60000))} min ago)"
            if last else "not synced with head office yet")
    unsent = h.get("unsent_rows", 0)
    backlog = f"<span class='bad'>{unsent:,} events waiting to be sent</span>" if unsent else "nothing waiting to be sent"
    title = labels.store_name or f"Store {h['store_id']}"
    soon_html = "".join(card(r) for r in soon) or "<p class='none'>No shelf is expected to run empty soon.</p>"
    empty_html = "".join(card(r) for r in empty) or "<p class='none'>No empty shelves.</p>"
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><meta http-equiv=refresh content='30; url=/'>"
            f"<title>{e(title)}: restock</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{e(title)}: shelves to restock</h1><div class=sub>updated {labels.local(now)} "
            f"({e(labels.timezone)}) · refreshes every 30 s · works without internet</div></header><main>"
            + (f"<p class=ok>{e(notice)}</p>" if notice else "")
            + f"<h2>Will run empty soon ({len(soon)})</h2>{soon_html}"
            f"<h2>Empty now ({len(empty)})</h2>{empty_html}</main>"
            f"<footer>Gateway: {e(sync)}; {backlog}; model {e(str(h.get('model_version') or '-'))}; "
            f"{h.get('seq_gaps', 0):,} events missing from devices.</footer></body></html>")


def serve_page(gw, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None):
    """Serve the page in a background thread; return the server (``shutdown()`` to stop).

    Raises:
        ConfigError: a non-loopback ``host`` without a ``token``.
    """
    if host not in LOOPBACK and not token:
        raise ConfigError(f"the gateway page on {host} needs a token (GONDOLA_HTTP_TOKEN_FILE or the secret "
                          "http-token); bind it to 127.0.0.1 otherwise")
    from edge.metrics import MetricsEndpoint
    from edge.ops import HealthCheck

    check = HealthCheck(gw)
    labels = ShelfLabels.from_master(getattr(gw.settings, "planogram_path", None), gw.settings.store_id)
    metrics = MetricsEndpoint(gw.health, healthy=check.problems, broker_connected=lambda: gw.broker_connected)

    def _notice(query: dict) -> str:
        """The thank-you line after a "done" (``/?checked=<facing>&outcome=<outcome>``)."""
        facing, outcome = (query.get("checked") or [""])[0], (query.get("outcome") or [""])[0]
        i = gw.inference.index.get(facing)
        if i is None or outcome not in _DONE_TEXT:
            return ""
        name = labels.names.get(gw.inference.states[i].sku, facing)
        return f"Recorded: {name} {_DONE_TEXT[outcome]}. Thank you."

    def respond(path: str, notice: str = "") -> tuple[int, bytes, str]:
        if path == "/metrics":
            body, ctype = metrics.render()
            return 200, body, ctype
        if path == "/health":
            h = gw.health()
            problems = check.problems(h)
            h.update(healthy=not problems, problems=problems)
            return (503 if problems else 200), json.dumps(h).encode(), "application/json"
        if path == "/restock":
            return 200, json.dumps(gw.inference.restock_list(100)).encode(), "application/json"
        if path in ("/", "/index.html"):
            return 200, _page(gw, labels, notice).encode(), "text/html; charset=utf-8"
        return 404, b"not found\n", "text/plain; charset=utf-8"

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S

        def _answer(self, with_body: bool) -> None:
            try:
                parts = urllib.parse.urlsplit(self.path)
                status, body, ctype = respond(parts.path, _notice(parse_qs(parts.query)))
            except Exception as exc:  # the page must never take the gateway down
                self.send_error(500, str(exc)[:100])
                return
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._answer(True)

        def do_POST(self):  # noqa: N802
            """``/done``: staff checked a facing (form fields ``facing_id``, ``outcome``)."""
            if urllib.parse.urlsplit(self.path).path != "/done":
                self.send_error(404)
                return
            try:
                size = min(max(int(self.headers.get("Content-Length") or 0), 0), 4096)
            except ValueError:
                size = 0
            form = parse_qs(self.rfile.read(size).decode("utf-8", "replace"))
            facing, outcome = (form.get("facing_id") or [""])[0], (form.get("outcome") or [""])[0]
            try:
                gw.record_check(facing, outcome)
            except ContractError as exc:
                self.send_error(400, str(exc)[:100])
                return
            except Exception as exc:  # the page must never take the gateway down
                self.send_error(500, str(exc)[:100])
                return
            # Post/redirect/get: the page's own refresh must not send the form again.
            self.send_response(303)
            self.send_header("Location", "/?" + urllib.parse.urlencode({"checked": facing, "outcome": outcome}))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self):  # noqa: N802
            self._answer(False)

        def log_message(self, *args):  # quiet: the gateway's log is for the gateway
            pass

    if token:
        Handler = type("TokenHandler", (_TokenAuth, Handler), {"token": token})  # noqa: N806
    server = _PageServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="edge-page", daemon=True).start()
    return server

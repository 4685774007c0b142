"""The gateway's local page and API (stdlib ``http.server``; works with no internet).

* ``/``          what to restock now, buffer and uplink health (HTML, refreshes every 30 s)
* ``/restock``   the restock list as JSON
* ``/health``    ``Gateway.health()`` as JSON with ``healthy`` and ``problems``; 200 when
  healthy, 503 when not (``edge.ops.HealthCheck``; the container's HEALTHCHECK reads it)
* ``/metrics``   Prometheus exposition through ``prometheus_client`` (``edge.metrics``)

GET and HEAD; a query string is ignored (``/metrics?x=1`` is ``/metrics``).

Bound to loopback by default. Bound to any other address (a store tablet on the LAN, a metrics
scraper) every request must carry the page token: ``Authorization: Bearer <token>``, a
``gondola_token`` cookie, or ``?token=`` once (the answer then sets the cookie, for a tablet's
bookmark). Without a token configured the page refuses to start on a non-loopback address.
"""

from __future__ import annotations

import hmac
import html
import json
import threading
import urllib.parse
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from gondola.errors import ConfigError

__all__ = ["serve_page", "LOOPBACK"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


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



def _page(gw) -> str:
    h = gw.health()
    rows = "".join(
        f"<tr class='{'alert' if r['alert'] else ''}'><td>{html.escape(r['facing_id'])}</td>"
        f"<td>{html.escape(r['sku'])}</td><td>{r['probability']:.0%}</td><td>{r['units_est']}</td>"
        f"<td>{r['capacity']}</td></tr>" for r in gw.inference.restock_list(30))
    health = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(h.get(k)))}</td></tr>" for k in (
        "buffer_rows", "buffer_bytes", "oldest_unsent_age_s", "evictions", "seq_gaps", "quarantined",
        "last_uplink_ts", "uplink_failures", "uplink_last_error", "model_version", "model"))
    return (f"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=30>"
            f"<title>Gondola {html.escape(h['store_id'])}</title><style>body{{font-family:sans-serif}}"
            f".alert{{background:#fdd}}td{{padding:2px 8px}}</style>"
            f"<h1>Store {html.escape(h['store_id'])}: restock now</h1>"
            f"<table><tr><th>facing</th><th>sku</th><th>stock-out risk</th><th>units</th><th>capacity</th></tr>{rows}</table>"
            f"<h2>Buffer and uplink</h2><table>{health}</table>")


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
    metrics = MetricsEndpoint(gw.health, healthy=check.problems, broker_connected=lambda: gw.broker_connected)

    def respond(path: str) -> tuple[int, bytes, str]:
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
            return 200, _page(gw).encode(), "text/html; charset=utf-8"
        return 404, b"not found\n", "text/plain; charset=utf-8"

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            try:
                status, body, ctype = respond(urllib.parse.urlsplit(self.path).path)
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

        def do_HEAD(self):  # noqa: N802
            self._answer(False)

        def log_message(self, *args):  # quiet: the gateway's log is for the gateway
            pass

    if token:
        Handler = type("TokenHandler", (_TokenAuth, Handler), {"token": token})  # noqa: N806
    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="edge-page", daemon=True).start()
    return server

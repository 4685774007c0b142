"""The gateway's local page and API (stdlib ``http.server``; works with no internet).

* ``/``          what to restock now, buffer and uplink health (HTML, refreshes every 30 s)
* ``/restock``   the restock list as JSON
* ``/health``    ``Gateway.health()`` as JSON with ``healthy`` and ``problems``; 200 when
  healthy, 503 when not (``edge.ops.HealthCheck``; the container's HEALTHCHECK reads it)
* ``/metrics``   Prometheus exposition through ``prometheus_client`` (``edge.metrics``)

GET and HEAD; a query string is ignored (``/metrics?x=1`` is ``/metrics``).
"""

from __future__ import annotations

import html
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["serve_page"]


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


def serve_page(gw, host: str = "127.0.0.1", port: int = 8080):
    """Serve the page in a background thread; return the server (``shutdown()`` to stop)."""
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

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="edge-page", daemon=True).start()
    return server

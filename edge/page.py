"""The gateway's local page and API (stdlib ``http.server``; works with no internet).

* ``/``          what to restock now, buffer and uplink health (HTML, refreshes every 30 s)
* ``/restock``   the restock list as JSON
* ``/health``    ``Gateway.health()`` as JSON
* ``/metrics``   Prometheus text format (``gondola_edge_*``)
"""

from __future__ import annotations

import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["prometheus_text", "serve_page"]

_GAUGES = (
    ("buffer_rows", "Events held in the buffer (all unsent)."),
    ("buffer_bytes", "Logical bytes held by the buffer (what the cap applies to)."),
    ("file_bytes", "Bytes of the buffer's SQLite file and WAL."),
    ("oldest_unsent_age_s", "Age in seconds of the oldest unsent event."),
    ("seq_gaps", "Device seq values missing right now (losses between devices and gateway)."),
    ("alerts_raised", "Facings with a raised stock-out alert."),
    ("facings", "Facings in the planogram."),
    ("uplink_failures", "Consecutive refused uplink sends."),
)
_COUNTERS = (
    ("evictions", "Events evicted by the cap or TTL policy."),
    ("quarantined", "Payloads rejected by the collector."),
    ("duplicates", "Redelivered events recognised and not stored again."),
    ("received", "New events stored."),
    ("sent", "Events the hub accepted."),
    ("committed_messages", "MQTT messages committed (and then acknowledged) since start."),
    ("uplink_bytes", "Encoded bytes sent to the hub since start."),
    ("uplink_messages", "Batch messages sent to the hub since start."),
)


def _esc(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(health: dict) -> str:
    """Health as Prometheus exposition text (version 0.0.4)."""
    store = _esc(health.get("store_id", ""))
    lines = []
    for name, help_ in _GAUGES:
        lines += [f"# HELP gondola_edge_{name} {help_}", f"# TYPE gondola_edge_{name} gauge",
                  f'gondola_edge_{name}{{store_id="{store}"}} {float(health.get(name) or 0)}']
    for name, help_ in _COUNTERS:
        lines += [f"# HELP gondola_edge_{name}_total {help_}", f"# TYPE gondola_edge_{name}_total counter",
                  f'gondola_edge_{name}_total{{store_id="{store}"}} {float(health.get(name) or 0)}']
    lines += ["# HELP gondola_edge_evictions_by_total Evictions per policy step and event type.",
              "# TYPE gondola_edge_evictions_by_total counter"]
    for key, n in sorted(health.get("evictions_by", {}).items()):
        reason, etype = key.split("/", 1)
        lines.append(f'gondola_edge_evictions_by_total{{store_id="{store}",reason="{_esc(reason)}",'
                     f'type="{_esc(etype)}"}} {float(n)}')
    lines += ["# HELP gondola_edge_device_seq_gaps Missing seq values per device.",
              "# TYPE gondola_edge_device_seq_gaps gauge"]
    for dev, gaps in sorted(health.get("gaps", {}).items()):
        lines.append(f'gondola_edge_device_seq_gaps{{store_id="{store}",device_id="{_esc(dev)}"}} '
                     f'{float(sum(hi - lo + 1 for lo, hi in gaps))}')
    last = health.get("last_uplink_ts")
    lines += ["# HELP gondola_edge_last_uplink_timestamp_seconds When the hub last accepted a batch.",
              "# TYPE gondola_edge_last_uplink_timestamp_seconds gauge",
              f'gondola_edge_last_uplink_timestamp_seconds{{store_id="{store}"}} {(last or 0) / 1000}',
              "# HELP gondola_edge_model_info Model or baseline in use.",
              "# TYPE gondola_edge_model_info gauge",
              f'gondola_edge_model_info{{store_id="{store}",model_version="{_esc(health.get("model_version", ""))}"}} 1']
    rollout = health.get("model") or {}
    if rollout.get("status") not in (None, "none"):
        lines += ["# HELP gondola_edge_model_rollout_info Last model rollout asked of this gateway and its outcome.",
                  "# TYPE gondola_edge_model_rollout_info gauge",
                  f'gondola_edge_model_rollout_info{{store_id="{store}",desired="{_esc(rollout.get("desired") or "")}",'
                  f'status="{_esc(rollout["status"])}"}} 1']
    return "\n".join(lines) + "\n"


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

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            try:
                if self.path == "/metrics":
                    body, ctype = prometheus_text(gw.health()).encode(), "text/plain; version=0.0.4"
                elif self.path == "/health":
                    body, ctype = json.dumps(gw.health()).encode(), "application/json"
                elif self.path == "/restock":
                    body, ctype = json.dumps(gw.inference.restock_list(100)).encode(), "application/json"
                elif self.path in ("/", "/index.html"):
                    body, ctype = _page(gw).encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
            except Exception as exc:  # the page must never take the gateway down
                self.send_error(500, str(exc)[:100])
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the gateway's log is for the gateway
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="edge-page", daemon=True).start()
    return server

"""The whole dashboard page in headless Chromium at a laptop and a phone width: nothing sticks out.

An outside QA pass (issue: dashboard QA, session 7) saw the page 1,391 px wide in a 1,285 px viewport
(a 1,300 px window): the "Alerts by kind" legend was cut off.
"""

from __future__ import annotations

import html
import json
import re

import pytest

from cloud.dashboard import CHARTS, page_html

pytestmark = [pytest.mark.slow, pytest.mark.chromium]

SCORER = "model:20261207T200752Z-f6c77009"  # a real model version: the longest label the page shows
OUTCOMES = ("empty_after", "already_empty", "empty_seen", "false_alarm", "unobserved")
CAUSES = ("shelf_handling", "misplaced", "phantom_inventory", "backroom_empty")


def _data() -> dict:
    """A page's data shaped like the default demo's (two stores, two days), every legend full."""
    stores = [("s001", "Store s001"), ("s002", "Store s002")]
    stockouts, alerts, days = [], [], []
    for si, (sid, name) in enumerate(stores):
        for d, date in enumerate(("2026-03-09", "2026-03-10")):
            days.append(dict(store_id=sid, store=name, date=date, stockouts=8, open_min=900.0, facing_min=40_000.0))
            for i in range(8):
                stockouts.append(dict(store_id=sid, store=name, category=f"category {i % 5}",
                                      product=f"Lumen household {i}{si}{d} 421.5g", date=date, weekday=d + 1,
                                      hour=9 + i, open_min=60.0 + i, lost_sales=3.5 * i, currency="EUR",
                                      alerted=bool(i % 2), start_censored=False, cause=CAUSES[i % 4]))
            for i, outcome in enumerate(OUTCOMES):
                # detections judged by what was seen on the shelf, forecasts by what followed
                kind = "empty_now" if outcome in ("already_empty", "empty_seen") else "empty_within_h"
                alerts.append(dict(store_id=sid, store=name, category=f"category {i}", date=date, scorer=SCORER,
                                   kind=kind, outcome=outcome, lead_min=25.0 + i if outcome == "empty_after" else None,
                                   staff_check=("restocked", "no_stock", "was_fine", "not checked", "not checked")[i]))
    kpis = dict(stockouts=32, stockouts_ongoing=5, stockout_minutes=24_951.6, lost_sales_cents=25_868.3,
                recall_ahead=0.25, mean_lead_min=26.0, forecast_alerts=8, forecast_true_alerts=4,
                forecast_warned_ahead=4, forecast_warned_ahead_share=0.5, forecast_unobserved=0, forecast_precision=0.5,
                empty_now_alerts=12, empty_now_true_alerts=12, empty_now_precision=1.0, empty_now_unobserved=0)
    by_store = [(sid, name, 16, 11_402.0, 183.32, "EUR", 25.0, 26.0, 4, 50.0, 50.0, 6, 100.0) for sid, name in stores]
    actions = [("s002", "count_inventory", "Coral frozen 340.4g", "s002-f00165", 1, 1_550.0, 6.16, "EUR", 202.0, 0.83)] * 6
    gateways = [(sid, f"gw-{sid}", "2026-03-10 21:58", 0, 0.0, 0, 0, 0, SCORER) for sid, _ in stores]
    devices = [(sid, f"shelf-{sid}-{i:02d}", 1_234, 0, "2026-03-10 21:58", 87.5) for sid, _ in stores for i in range(5)]
    evidence = "rate 0.0/h over 180 min in opening hours against a band of 4.2-9.8/h " * 2
    anomalies = {"counts": [("till lane stopped", "till_silent", 2, 1, "2026-03-10 14:05")],
                 "latest": [("2026-03-10 14:05", "s001", "till lane stopped", "pos-s001-r09", 12.3, evidence[:160])],
                 "alerts": [("s001", 3, 40, 2, "2026-03-10 21:40")]}
    return {"kpis": kpis, "currencies": ["EUR"], "by_store": by_store, "stockouts": stockouts, "days": days,
            "alerts": alerts, "actions": actions, "gateways": gateways, "devices": devices, "anomalies": anomalies}


#: Once the page has drawn (``#render-status`` filled), its widths every 200 ms: the document's and
#: the charts' box, sent to the page holding it in a frame.
_MEASURE = """<script>
setInterval(() => {
  const status = document.getElementById('render-status').textContent;
  if (!status) return;
  const doc = document.documentElement, box = document.getElementById('charts');
  parent.postMessage(JSON.stringify({status: JSON.parse(status), layout: {
    doc_scroll: doc.scrollWidth, doc_client: doc.clientWidth, charts_scroll: box.scrollWidth,
    charts_client: box.clientWidth}}), '*');
}, 200);
</script></body>"""

#: The page in a frame ``width`` px wide: its viewport is that wide (a headless window is 500 px at
#: least); once drawn, the frame becomes ``then`` px wide when that is a number.
_FRAME = """<!doctype html><html><body style="margin:0">
<iframe id="page" src="{src}" style="width:{width}px;height:2000px;border:0"></iframe>
<pre id="first"></pre><pre id="measured"></pre>
<script>addEventListener('message', e => {{
  const first = document.getElementById('first');
  if (!first.textContent) {{ first.textContent = e.data; if ({then}) document.getElementById('page').style.width = '{then}px'; }}
  document.getElementById('measured').textContent = e.data;
}});</script>
</body></html>"""


def _layout(tmp_path, width: int, then: int = 0) -> tuple[dict, dict, dict]:
    """The page's render status and widths when it has drawn at ``width`` (the first), and last."""
    from tests.conftest import require
    from tests.pages import chromium_binary, dump_dom

    require(chromium_binary() is not None, "Chromium (Debian package 'chromium')")
    page, frame = tmp_path / "dash.html", tmp_path / "frame.html"
    head, _, tail = page_html(_data()).rpartition("</body>")  # the last one (the Vega bundle holds some)
    page.write_text(head + _MEASURE + tail, encoding="utf-8")
    frame.write_text(_FRAME.format(src=page.name, width=width, then=then), encoding="utf-8")
    dom, _ = dump_dom(frame.as_uri(), width=max(width, then) + 50, budget_ms=30_000)
    first, last = (json.loads(html.unescape(re.search(f'<pre id="{name}">([^<]*)</pre>', dom).group(1)))
                   for name in ("first", "measured"))
    return first, last["status"], last["layout"]


@pytest.mark.parametrize("width,then", [(1300, 0), (390, 0), (1300, 390)],
                         ids=["laptop", "phone", "laptop-narrowed-to-phone"])
def test_the_page_fits_the_window_and_the_charts_fit_their_box(tmp_path, width, then):
    first, status, layout = _layout(tmp_path, width, then)
    if then:  # drawn for the wide window first, then again for the narrow one
        assert first["status"]["layout"]["columns"] == 2
        width = then
    assert status["errors"] == []
    assert layout["doc_client"] <= width  # the page had that viewport (less a scroll bar)
    assert layout["doc_scroll"] <= layout["doc_client"], layout  # no horizontal scroll for the page
    assert layout["charts_scroll"] <= layout["charts_client"], layout  # no legend cut or scrolled away
    # two charts a row on a laptop, one on a phone; every chart still drawn after fitting
    assert status["layout"]["columns"] == (2 if width >= 1000 else 1)
    assert {name: 0 for name in CHARTS if status["charts"].get(name, 0) == 0} == {}
    assert status["charts"].get("alert_lead_times_note", 0) == 0  # the alerts have lead times

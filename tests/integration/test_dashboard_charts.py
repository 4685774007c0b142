"""The dashboard's charts on data shaped like an unseen store's: many ties, one day."""

from __future__ import annotations

import json
import re

import pytest

from cloud.dashboard import _script, _vega_bundle, chart_spec


def _page(data: dict) -> str:
    spec = chart_spec(data)
    bundle = _vega_bundle().replace("</script", "<\\/script")
    return (f"<!doctype html><html><head><meta charset='utf-8'><script>{bundle}</script></head><body>"
            f"<div id='charts'></div><pre id='render-status'></pre><script>{_script(spec)}</script></body></html>")


def _render_status(tmp_path, data: dict) -> dict:
    """Render the charts in headless Chromium; the page's render status (marks per chart), no errors."""
    from tests.conftest import require
    from tests.pages import chromium_binary, dump_dom

    require(chromium_binary() is not None, "Chromium (Debian package 'chromium')")
    html = tmp_path / "charts.html"
    html.write_text(_page(data), encoding="utf-8")
    dom, _ = dump_dom(html.as_uri())
    status = json.loads(re.search(r'<pre id="render-status">([^<]*)</pre>', dom).group(1))
    assert status["errors"] == []
    return status


@pytest.mark.slow
@pytest.mark.chromium
def test_top_products_shows_fifteen_bars_when_many_products_tie(tmp_path):
    # 40 products with 2 stock-outs each and 3 with 3: a rank with ties kept all 43 bars under
    # a "top 15" title (seen on a simulated store with short shelves).
    row = dict(store_id="s001", store="Store s001", category="dairy", date="2026-03-09", weekday=1, hour=12,
               open_min=30.0, lost_sales=1.0, currency="EUR", alerted=False, cause="shelf_handling")
    stockouts = [dict(row, product=f"Product {i:02d}", lost_sales=float(i))
                 for i in range(43) for _ in range(3 if i < 3 else 2)]
    data = {"stockouts": stockouts, "currencies": ["EUR"], "alerts": [],
            "days": [dict(store_id="s001", store="Store s001", date="2026-03-09", stockouts=len(stockouts),
                          open_min=30.0 * len(stockouts), facing_min=100_000.0)]}
    status = _render_status(tmp_path, data)
    assert status["charts"]["top_products"] == 15
    assert status["charts"]["stockouts_by_category"] == 1


@pytest.mark.slow
@pytest.mark.chromium
def test_the_heat_map_leaves_out_stock_outs_whose_start_is_unknown(tmp_path):
    # Issue 14 (QA): shelves already empty at the first reading "started" at 00:00-02:59 of day
    # one and made the darkest cells. They still count in the other charts.
    row = dict(store_id="s001", store="Store s001", category="dairy", product="Milk", date="2026-03-09",
               open_min=30.0, lost_sales=1.0, currency="EUR", alerted=False, cause="shelf_handling")
    known = [dict(row, weekday=1, hour=12, start_censored=False), dict(row, weekday=2, hour=13, start_censored=False),
             dict(row, weekday=2, hour=13, start_censored=False)]
    censored = [dict(row, weekday=1, hour=h, start_censored=True, alerted=None) for h in (0, 1, 2)]
    data = {"stockouts": known + censored, "currencies": ["EUR"], "alerts": [],
            "days": [dict(store_id="s001", store="Store s001", date="2026-03-09", stockouts=6,
                          open_min=180.0, facing_min=100_000.0)]}
    status = _render_status(tmp_path, data)
    assert status["charts"]["weekday_hour_heatmap"] == 2  # (Mon, 12h) and (Tue, 13h)
    assert status["charts"]["stockouts_by_store"] == 1 and status["charts"]["causes_by_store"] == 1


@pytest.mark.slow
@pytest.mark.chromium
def test_alert_outcomes_keep_the_two_alert_kinds_apart(tmp_path):
    # QA (issue 11): the model raises both kinds; grouped by scorer alone, its forecasts and its
    # "empty now" alerts made one bar, so a forecast raised on an already-empty shelf looked
    # like a good detection.
    alert = dict(store_id="s001", store="Store s001", category="dairy", date="2026-03-09", scorer="model:v1",
                 outcome="already_empty", lead_min=None, staff_check="not checked")
    alerts = [dict(alert, kind="empty_now"), dict(alert, kind="empty_now"), dict(alert, kind="empty_within_h"),
              dict(alert, kind="empty_within_h", outcome="false_alarm")]
    data = {"stockouts": [], "currencies": ["EUR"], "alerts": alerts,
            "days": [dict(store_id="s001", store="Store s001", date="2026-03-09", stockouts=0,
                          open_min=0.0, facing_min=100_000.0)]}
    status = _render_status(tmp_path, data)
    # empty_now: already_empty; empty_within_h: already_empty and false_alarm -> three bar segments
    assert status["charts"]["alert_outcomes"] == 3
    spec = json.dumps(chart_spec(data))
    assert "empty_within_h" in spec and "empty_now" in spec

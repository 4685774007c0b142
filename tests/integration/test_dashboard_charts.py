"""The dashboard's charts on data shaped like an unseen store's: many ties, one day."""

from __future__ import annotations

import html
import json
import re

import pytest

from cloud.dashboard import TREND_MIN_DAYS, _script, _vega_bundle, chart_spec


def _page(data: dict) -> str:
    spec = chart_spec(data)
    bundle = _vega_bundle().replace("</script", "<\\/script")
    return (f"<!doctype html><html><head><meta charset='utf-8'><script>{bundle}</script></head><body>"
            f"<div id='charts'></div><pre id='render-status'></pre><script>{_script(spec)}</script></body></html>")


def _render_status(tmp_path, data: dict, texts: list | None = None) -> dict:
    """Render the charts in headless Chromium; the page's render status (marks per chart), no errors.
    ``texts``, when given, receives the text the charts drew (titles, labels, notes)."""
    from tests.conftest import require
    from tests.pages import chromium_binary, dump_dom

    require(chromium_binary() is not None, "Chromium (Debian package 'chromium')")
    page = tmp_path / "charts.html"
    page.write_text(_page(data), encoding="utf-8")
    dom, _ = dump_dom(page.as_uri())
    status = json.loads(re.search(r'<pre id="render-status">([^<]*)</pre>', dom).group(1))
    assert status["errors"] == []
    if texts is not None:
        for text in re.findall(r"<text[^>]*>(.*?)</text>", dom):  # a line of several lines is a <tspan>
            texts.extend(html.unescape(line) for line in re.split(r"<[^>]+>", text) if line)
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


def _days(n: int) -> list[dict]:
    return [dict(store_id="s001", store="Store s001", date=f"2026-03-{9 + d:02d}", stockouts=d % 3,
                 open_min=30.0 * (d % 3), facing_min=10_000.0) for d in range(n)]


@pytest.mark.slow
@pytest.mark.chromium
@pytest.mark.parametrize("n_days", [2, TREND_MIN_DAYS])
def test_the_daily_trend_line_is_drawn_from_a_week_of_days_else_a_note_says_why_not(tmp_path, n_days):
    # QA (session 7): the 2-day demo drew its "trend" through its two points.
    data = {"stockouts": [], "currencies": ["EUR"], "alerts": [], "days": _days(n_days)}
    texts: list[str] = []
    status = _render_status(tmp_path, data, texts)
    assert status["charts"]["stockout_rate_by_day"] == n_days
    if n_days < TREND_MIN_DAYS:
        assert status["charts"].get("stockout_rate_trend", 0) == 0
        assert "no trend line" in texts and f"({n_days} days here, it takes {TREND_MIN_DAYS})" in texts
    else:
        assert status["charts"]["stockout_rate_trend"] == 2  # the fitted line's two ends
        assert status["charts"].get("stockout_rate_trend_note", 0) == 0
        assert not [t for t in texts if t.startswith("no trend line")]


@pytest.mark.slow
@pytest.mark.chromium
def test_alert_lead_times_say_why_they_are_blank(tmp_path):
    # QA (session 7): the default demo's 3 forecasts all went unobserved and its 63 "empty now"
    # alerts have no lead time: the chart was blank, with no word why.
    alert = dict(store_id="s001", store="Store s001", category="dairy", date="2026-03-09", scorer="model:v1",
                 lead_min=None, staff_check="not checked")
    alerts = ([dict(alert, kind="empty_within_h", outcome="unobserved")] * 3
              + [dict(alert, kind="empty_now", outcome="already_empty")] * 63)
    data = {"stockouts": [], "currencies": ["EUR"], "alerts": alerts, "days": _days(2)}
    texts: list[str] = []
    status = _render_status(tmp_path, data, texts)
    assert status["charts"].get("alert_lead_times", 0) == 0 and status["charts"]["alert_lead_times_note"] == 1
    assert "the 3 forecasts here" in texts
    assert status["charts"]["alert_outcomes"] == 2  # the sentinel row is no alert
    # no alert at all: the note still speaks (an aggregate over no rows gives no row)
    texts.clear()
    status = _render_status(tmp_path, dict(data, alerts=[]), texts)
    assert status["charts"]["alert_lead_times_note"] == 1 and "no lead times: no alerts here" in texts


@pytest.mark.slow
@pytest.mark.chromium
def test_alert_lead_times_are_the_forecasts_a_detection_raised_before_its_shelf_emptied_is_none(tmp_path):
    # An empty_now raised 15 min before its shelf emptied said "empty" of a shelf that was not
    # (outcome empty_after, wrong for its kind): its minutes are no warning. They were drawn as a
    # lead time beside the forecasts', which the lake's lead figures (gold.stockouts,
    # bi_alert_quality.mean_lead_min, bi_kpis) leave out, and the note said empty-now alerts have none.
    alert = dict(store_id="s001", store="Store s001", category="dairy", date="2026-03-09", scorer="model:v1",
                 staff_check="not checked")
    wrong_detection = dict(alert, kind="empty_now", outcome="empty_after", lead_min=15.0)
    data = {"stockouts": [], "currencies": ["EUR"], "days": _days(2),
            "alerts": [wrong_detection, dict(alert, kind="empty_now", outcome="already_empty", lead_min=None)]}
    texts: list[str] = []
    status = _render_status(tmp_path, data, texts)
    assert status["charts"].get("alert_lead_times", 0) == 0 and status["charts"]["alert_lead_times_note"] == 1
    assert "no lead times: no forecasts here" in texts
    # beside a forecast warned 40 min ahead: one bar, the forecast's
    forecast = dict(alert, kind="empty_within_h", outcome="empty_after", lead_min=40.0)
    status = _render_status(tmp_path, dict(data, alerts=data["alerts"] + [forecast]))
    assert status["charts"]["alert_lead_times"] == 1 and status["charts"].get("alert_lead_times_note", 0) == 0


@pytest.mark.slow
@pytest.mark.chromium
def test_a_product_name_holding_a_script_end_tag_is_drawn_as_text_and_ends_nothing(tmp_path):
    # Outside check (session 8): names come from the ERP's master-data files; a product named
    # '</script><b id=x>...' ended the charts' script element: no chart was drawn, the render
    # status stayed empty, and what followed the tag ran as the page's own markup and script.
    name = "</script><b id=x>X</b>&"
    row = dict(store_id="s001", store="Store s001", category="dairy", date="2026-03-09", weekday=1, hour=12,
               open_min=30.0, lost_sales=1.0, currency="EUR", alerted=False, cause="shelf_handling")
    data = {"stockouts": [dict(row, product=name)], "currencies": ["EUR"], "alerts": [], "days": _days(1)}
    texts: list[str] = []
    status = _render_status(tmp_path, data, texts)
    assert status["charts"]["top_products"] == 1
    assert name in texts

"""The head-office dashboard: one HTML file that opens offline, built from the DuckDB warehouse.

Charts are Vega-Lite specs made with Altair; the Vega, Vega-Lite and vega-embed scripts are
inlined from the ``vl-convert-python`` package (no network, at build time or when opened). All
charts are one Vega-Lite view, so the store and category menus and the date brush on the daily
chart filter every chart. Every figure comes from the warehouse views (``cloud.warehouse``) and
the report figures from ``bi_kpis`` (one definition each, ``cloud.lake.tables.MEASURES``).
Times are the store's local time; money is shown with the store's currency.

When the page has drawn, ``#render-status`` holds JSON ``{"charts": {name: items drawn in a colour},
"errors": [...]}``
for tests and monitoring.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

__all__ = ["build_dashboard", "chart_spec", "screenshot", "CHARTS"]

#: The dashboard's charts (names as in ``#render-status``).
CHARTS = ("stockout_rate_by_day", "stockouts_by_store", "stockouts_by_category", "top_products",
          "weekday_hour_heatmap", "lost_sales_by_store", "causes_by_store", "alert_outcomes", "alert_lead_times", "staff_checks")

#: The daily chart's trend line needs this many days (a line through 2-3 points is those points).
TREND_MIN_DAYS = 7

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2733;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5dae1;padding-bottom:4px}
.sub{color:#5b6675}.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.kpi{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:22px}.kpi span{color:#5b6675;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:right}th{background:#eef1f5}
td:first-child,th:first-child,td.l{text-align:left}.bad{color:#b42318;font-weight:600}
#charts{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:8px}
.wide{overflow-x:auto;max-width:100%}
@media (max-width:600px){body{margin:10px}}
#render-status{display:none}
"""

_CAUSE_TEXT = {
    "shelf_handling": "backroom had stock (round late / facing small)", "misplaced": "delivery misplaced",
    "phantom_inventory": "phantom stock (record wrong)", "backroom_empty": "backroom empty (ordered too little)",
}
_ACTION_TEXT = {
    "enlarge_facing": "enlarge the facing (empties within hours of a full refill)",
    "restock_earlier": "restock round earlier / extra round",
    "count_inventory": "count the product (store record shows stock that is not there)",
}


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(headers: list[str], rows: list[tuple], *, empty: str = "nothing to show", bad: int | None = None,
           digits: dict[int, int] | None = None) -> str:
    if not rows:
        return f"<p class='sub'>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = " class='bad'" if bad is not None and i == bad and v not in (None, 0, 0.0) else ""
            cells.append(f"<td{cls}>{_fmt(v, (digits or {}).get(i, 1))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # A table wider than a phone scrolls in its own box; the page itself never scrolls sideways.
    return f"<div class='wide'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _money(cents: float | None, currencies: list[str]) -> str:
    if cents is None:
        return "–"
    cur = currencies[0] if len(currencies) == 1 else "mixed currencies"
    return f"{cents / 100.0:,.2f} {cur}"


def _rows(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _query(con) -> dict:
    """Everything the page shows, from the warehouse views."""
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    data: dict = {}
    data["kpis"] = _rows(con, "SELECT * FROM bi_kpis")[0]
    data["by_store"] = q("""
        SELECT k.store_id, COALESCE(st.store_name, k.store_id), k.stockouts, ROUND(k.stockout_minutes, 0),
               ROUND(k.lost_sales_cents / 100.0, 2), k.currency, ROUND(100 * k.recall_ahead, 0),
               ROUND(k.mean_lead_min, 0), k.forecast_alerts, ROUND(100 * k.forecast_precision, 0),
               ROUND(100 * k.forecast_warned_ahead_share, 0), k.empty_now_alerts,
               ROUND(100 * k.empty_now_precision, 0)
        FROM bi_kpis_by_store k LEFT JOIN bi_dim_store st ON st.store_id = k.store_id
        ORDER BY k.lost_sales_cents DESC NULLS LAST, k.store_id""")
    data["currencies"] = [r[0] for r in q("SELECT DISTINCT currency FROM silver_stores WHERE currency IS NOT NULL ORDER BY 1")]
    # One row per stock-out (local time, product, category, cause): the charts' main data.
    data["stockouts"] = _rows(con, """
        SELECT s.store_id, COALESCE(s.store_name, s.store_id) AS store, COALESCE(s.category, '(unknown)') AS category,
               COALESCE(s.product_name, s.sku) AS product, strftime(s.started_local, '%Y-%m-%d') AS date,
               isodow(s.started_local) AS weekday, hour(s.started_local) AS hour, COALESCE(s.open_min, 0) AS open_min,
               COALESCE(s.lost_sales, 0) AS lost_sales, COALESCE(s.currency, '') AS currency, s.alerted,
               s.start_censored,
               COALESCE(c.cause, 'unknown') AS cause
        FROM bi_stockouts s LEFT JOIN bi_stockout_causes c
          ON c.store_id = s.store_id AND c.facing_id = s.facing_id AND c.started_local = s.started_local
        WHERE s.started_local IS NOT NULL""")
    # Per store and local day: facing-minutes open (sensor facings x opening minutes), for the rate.
    data["days"] = _rows(con, """
        WITH d AS (SELECT DISTINCT store_id, strftime(hour_local, '%Y-%m-%d') AS date FROM bi_hourly_sales),
        f AS (SELECT store_id, COUNT(*) AS facings FROM silver_planogram WHERE has_sensor GROUP BY store_id),
        o AS (SELECT s.store_id, strftime(s.started_local, '%Y-%m-%d') AS date, SUM(s.open_min) AS open_min,
                     COUNT(*) AS stockouts FROM bi_stockouts s GROUP BY 1, 2)
        SELECT d.store_id, COALESCE(st.store_name, d.store_id) AS store, d.date, COALESCE(o.stockouts, 0) AS stockouts,
               COALESCE(o.open_min, 0) AS open_min,
               COALESCE(f.facings, 0) * 60 * COALESCE(st.close_hour - st.open_hour, 24) AS facing_min
        FROM d LEFT JOIN f ON f.store_id = d.store_id LEFT JOIN o ON o.store_id = d.store_id AND o.date = d.date
        LEFT JOIN bi_dim_store st ON st.store_id = d.store_id""")
    data["alerts"] = _rows(con, """
        SELECT a.store_id, COALESCE(a.store_name, a.store_id) AS store, COALESCE(a.category, '(unknown)') AS category,
               strftime(a.alerted_local, '%Y-%m-%d') AS date, a.scorer, a.kind, a.outcome, a.lead_min,
               COALESCE(a.check_outcome, 'not checked') AS staff_check
        FROM bi_alert_outcomes a WHERE a.alerted_local IS NOT NULL""")
    data["actions"] = q("""
        SELECT store_id, action, COALESCE(product_name, sku, CASE WHEN hour_local IS NULL THEN NULL
               ELSE lpad(CAST(hour_local AS VARCHAR), 2, '0') || ':00' END), facing_id, stockouts,
               ROUND(open_min, 0), ROUND(lost_sales, 2), currency, ROUND(mean_refill_wait_min, 0), ROUND(mean_confidence, 2)
        FROM bi_category_actions ORDER BY lost_sales DESC NULLS LAST LIMIT 25""")
    # Gateways first: their last health report per store.
    data["gateways"] = q("""
        WITH h AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY store_id, device_id ORDER BY ts DESC, seq DESC) AS rn
                   FROM silver_edge_health)
        SELECT h.store_id, h.device_id,
               strftime(timezone(COALESCE(st.timezone, 'UTC'), to_timestamp(h.last_uplink_ts / 1000.0)), '%Y-%m-%d %H:%M'),
               h.unsent_rows, ROUND(h.oldest_unsent_age_s / 60.0, 1), h.evictions, h.seq_gaps, h.quarantined, h.model_version
        FROM h LEFT JOIN silver_stores st ON st.store_id = h.store_id WHERE h.rn = 1
        ORDER BY h.store_id, h.device_id""")
    gateways = {r[1] for r in data["gateways"]}
    devices = q("""
        SELECT store_id, device_id, SUM(events), SUM(missing), strftime(MAX(last_seen_local), '%Y-%m-%d %H:%M'),
               MIN(battery_min)
        FROM bi_fleet_health GROUP BY 1, 2
        ORDER BY SUM(missing) DESC, MIN(battery_min) ASC NULLS LAST, 1, 2""")
    data["devices"] = [r for r in devices if r[1] not in gateways]
    data["anomalies"] = _anomalies(con)
    return data


#: What each stream anomaly kind means, for the operations centre (rules: docs/stream.md).
_ANOMALY_TEXT = {
    "gateway_silent": "gateway silent", "gateway_backlog": "gateway backlog growing",
    "sensor_fleet_silent": "all shelf sensors silent", "sensor_stuck": "sensor stuck", "sensor_drift": "sensor drifting",
    "till_silent": "till lane stopped", "sales_zero": "no sales in opening hours",
    "phantom_inventory": "phantom stock (count it)", "demand_band": "demand far outside its band",
    "alert_divergence": "gateway alerts disagree with the cloud (stale model?)",
}


def _anomalies(con) -> dict:
    """The stream job's anomalies (counts per kind, the latest ones) and its alerts per store (empty
    lists when the warehouse predates ``bi_stream_anomalies``)."""
    import duckdb

    try:
        # The latest per kind is the latest detection (first_seen), shown in that store's time.
        counts = con.execute("""
            SELECT kind, COUNT(*) AS n, COUNT(DISTINCT store_id) AS stores,
                   strftime(arg_max(first_seen_local, first_seen), '%Y-%m-%d %H:%M') AS last_local
            FROM bi_stream_anomalies GROUP BY kind ORDER BY n DESC, kind""").fetchall()
        latest = con.execute("""
            SELECT strftime(first_seen_local, '%Y-%m-%d %H:%M') AS seen_local, store_id, kind, subject,
                   ROUND(score, 1), evidence
            FROM bi_stream_anomalies ORDER BY first_seen DESC, store_id, subject LIMIT 30""").fetchall()
        # The cloud's own alerts per store, and how many it raised while the store's gateway was
        # silent (those only the cloud could raise).
        alerts = con.execute("""
            SELECT store_id, COUNT(*) FILTER (kind = 'empty_within_h') AS forecasts,
                   COUNT(*) FILTER (kind = 'empty_now') AS empty_now,
                   COUNT(*) FILTER (NOT gateway_alive) AS gateway_silent,
                   strftime(arg_max(ts_local, ts), '%Y-%m-%d %H:%M') AS last_local
            FROM bi_stream_alerts WHERE state = 'raised' GROUP BY store_id ORDER BY store_id""").fetchall()
    except duckdb.Error:
        return {"counts": [], "latest": [], "alerts": []}
    return {"counts": [(_ANOMALY_TEXT.get(k, k), k, n, st, last) for k, n, st, last in counts],
            "latest": [(t, st, _ANOMALY_TEXT.get(k, k), subj, sc, ev[:160]) for t, st, k, subj, sc, ev in latest],
            "alerts": alerts}


def _anomaly_section(found: dict) -> str:
    """The page's section on what the stream job found (one row per episode, latest first)."""
    return f"""<h2>Anomalies the stream found (operations centre)</h2>
<p class="sub">From <code>stream.anomalies</code>: one row per episode, at first detection (event time, in the
store's local time). Rules and their measured precision and recall: docs/stream.md.</p>
{_table(['anomaly', 'kind', 'episodes', 'stores', 'last seen (local)'], found['counts'],
        empty='no anomalies (or the stream job has not run)')}
{_table(['seen (local)', 'store', 'anomaly', 'device / facing / product', 'score', 'evidence'], found['latest'],
        empty='nothing yet')}
<p class="sub">The cloud's own stock-out alerts (<code>stream.alerts</code>, the production model on every facing):
raised per store, and how many while the store's gateway was silent (alerts only the cloud could give).</p>
{_table(['store', 'forecasts raised', 'empty now raised', 'raised while gateway silent', 'last raised (local)'],
        found['alerts'], empty='no cloud alerts (or the stream job has not run)', bad=3)}"""


def _charts(data: dict):
    """The Altair chart: every chart in one view, sharing the store / category / date filters."""
    import altair as alt

    from cloud.lake.tables import FORECAST

    alt.data_transformers.disable_max_rows()
    stores = sorted({r["store"] for r in data["days"]} | {r["store"] for r in data["stockouts"]})
    categories = sorted({r["category"] for r in data["stockouts"]})
    store = alt.param(name="store", value="(all)",
                      bind=alt.binding_select(options=["(all)"] + stores, name="Store "))
    category = alt.param(name="category", value="(all)",
                         bind=alt.binding_select(options=["(all)"] + categories, name="Category "))
    dates = alt.selection_interval(name="dates", encodings=["x"])
    by_store = "store == '(all)' || datum.store == store"
    by_cat = "category == '(all)' || datum.category == category"
    in_dates = {"param": "dates", "empty": True}
    so = alt.NamedData(name="stockouts")  # the rows go once into the spec's datasets (build_dashboard)
    base = alt.Chart(so).transform_filter(by_store).transform_filter(by_cat).transform_filter(in_dates)
    w = 380

    rate = (alt.Chart(alt.NamedData(name="days")).transform_filter(by_store)
            .transform_aggregate(open_min="sum(open_min)", facing_min="sum(facing_min)", stockouts="sum(stockouts)",
                                 groupby=["date"])
            .transform_calculate(rate="datum.facing_min > 0 ? datum.open_min / datum.facing_min : 0"))
    rate_line = rate.mark_line(point=True).encode(
        x=alt.X("date:T", title="day (store local)"), y=alt.Y("rate:Q", title="share of facing-minutes empty",
                                                            axis=alt.Axis(format="%")),
        tooltip=["date:T", alt.Tooltip("rate:Q", format=".2%"), "stockouts:Q"])
    # A straight line through two or three days is those days, not a trend: drawn from TREND_MIN_DAYS
    # days on, else a note says why there is none (QA, session 7: a 2-day demo drew one).
    trend = (rate.transform_joinaggregate(days="count()").transform_filter(f"datum.days >= {TREND_MIN_DAYS}")
             .transform_regression("date", "rate").mark_line(strokeDash=[6, 4], color="#b42318")
             .encode(x="date:T", y="rate:Q"))
    trend_note = (rate.transform_aggregate(days="count()").transform_filter(f"datum.days < {TREND_MIN_DAYS}")
                  .transform_calculate(note=f"['no trend line', '(' + datum.days + (datum.days == 1 ? ' day' : ' days')"
                                            f" + ' here, it takes {TREND_MIN_DAYS})']")
                  .mark_text(x="width", y=2, align="right", baseline="top", fontSize=11, color="#5b6675")
                  .encode(text="note:N"))
    rate_chart = alt.layer(rate_line.properties(name="stockout_rate_by_day").add_params(dates),
                           trend.properties(name="stockout_rate_trend"), trend_note.properties(name="stockout_rate_trend_note")
                           ).properties(width=w, height=180, title=alt.TitleParams(
                               "Stock-out rate per day (drag to pick dates)",
                               subtitle=f"dashed: linear trend, drawn from {TREND_MIN_DAYS} days on"))

    def bars(name: str, field: str, title: str, value: str = "count()", vtitle: str = "stock-outs", top: int = 0):
        c = base
        enc_value = alt.X(f"{value}:Q" if value != "count()" else "count():Q", title=vtitle)
        if top:
            c = (c.transform_aggregate(n="count()", lost="sum(lost_sales)", groupby=[field])
                 # row_number, not rank: with ties a rank keeps every tied row (43 bars under "top 15")
                 .transform_window(rank="row_number()", sort=[alt.SortField("n", order="descending"),
                                                            alt.SortField("lost", order="descending"),
                                                            alt.SortField(field, order="ascending")])
                 .transform_filter(f"datum.rank <= {top}"))
            enc_value = alt.X("n:Q", title=vtitle)
        return c.mark_bar().encode(y=alt.Y(f"{field}:N", sort="-x", title=None), x=enc_value,
                                   tooltip=[f"{field}:N", enc_value]).properties(width=w, title=title, name=name)

    by_store_c = bars("stockouts_by_store", "store", "Stock-outs by store")
    by_cat_c = bars("stockouts_by_category", "category", "Stock-outs by category")
    top_c = bars("top_products", "product", "Products with most stock-outs (top 15)", top=15)
    # Only stock-outs whose start the lake saw: one already empty at its facing's first reading
    # (start_censored) "started" at midnight of the first day and made the darkest cells.
    heat = base.transform_filter("!datum.start_censored").mark_rect().encode(
        x=alt.X("hour:O", title="hour (store local)"),
        y=alt.Y("weekday:O", title="weekday (1 = Monday)"),
        color=alt.Color("count():Q", title="stock-outs", scale=alt.Scale(scheme="blues")),
        tooltip=["weekday:O", "hour:O", "count():Q"]).properties(width=w, height=170, name="weekday_hour_heatmap",
                                                                 title="When shelves empty: weekday x hour (local)")
    cur = data["currencies"][0] if len(data["currencies"]) == 1 else "store currency"
    lost = base.mark_bar().encode(
        y=alt.Y("store:N", sort="-x", title=None), x=alt.X("sum(lost_sales):Q", title=f"lost sales ({cur})"),
        tooltip=["store:N", alt.Tooltip("sum(lost_sales):Q", format=",.2f", title=f"lost sales ({cur})"),
                 "currency:N"]).properties(width=w, title=f"Lost sales while open, by store ({cur})", name="lost_sales_by_store")
    causes = base.mark_bar().encode(
        y=alt.Y("store:N", title=None), x=alt.X("count():Q", title="stock-outs"),
        color=alt.Color("cause:N", title="cause"), tooltip=["store:N", "cause:N", "count():Q"]
    ).properties(width=w, title="Why shelves ran empty (gold.stockout_causes)", name="causes_by_store")
    al = (alt.Chart(alt.NamedData(name="alerts")).transform_filter("!datum.sentinel").transform_filter(by_store)
          .transform_filter(by_cat).transform_filter(in_dates))
    # One bar per alert kind and scorer: a model raises both kinds (forecasts and, on facings
    # without a believed sensor, empty now), and the two promises are judged apart (issue 11).
    outcomes = al.transform_calculate(
        alert="(datum.kind || 'alert') + ' · ' + datum.scorer").mark_bar().encode(
        y=alt.Y("alert:N", title=None), x=alt.X("count():Q", title="alerts"),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=["empty_after", "already_empty", "empty_seen", "false_alarm",
                                                             "unobserved"],
                                                     range=["#2e7d32", "#f9a825", "#8d6e00", "#b42318", "#9e9e9e"])),
        tooltip=["kind:N", "scorer:N", "outcome:N", "count():Q"]).properties(
            width=w, title="Alerts by kind and what became of them", name="alert_outcomes")
    # A forecast's lead time: an empty_now raised before its shelf emptied was wrong ("empty" of a
    # shelf that was not), its minutes are no warning (the lake's lead figures are forecasts' too).
    lead = f"datum.kind == '{FORECAST}' && datum.lead_min != null"
    lead_bars = al.transform_filter(lead).mark_bar().encode(
        x=alt.X("lead_min:Q", bin=alt.Bin(maxbins=24), title="lead time: forecast -> shelf empty (min)"),
        y=alt.Y("count():Q", title="forecasts")).properties(name="alert_lead_times")
    # Only a forecast the shelf's emptying followed (outcome empty_after) has a lead time; when the
    # selection has none, say so instead of a blank chart (QA, session 7: the default demo's forecasts
    # all went unobserved). The alerts' sentinel row (chart_spec) passes every filter, so the
    # count below has a row even when no alert does.
    lead_note = (alt.Chart(alt.NamedData(name="alerts"))
                 .transform_filter(f"datum.sentinel || ({by_store})").transform_filter(f"datum.sentinel || ({by_cat})")
                 .transform_filter({"or": ["datum.sentinel", in_dates]})
                 .transform_calculate(real="datum.sentinel ? 0 : 1",
                                      forecast=f"datum.kind == '{FORECAST}' ? 1 : 0", lead=f"{lead} ? 1 : 0")
                 .transform_aggregate(alerts="sum(real)", forecasts="sum(forecast)", leads="sum(lead)")
                 .transform_filter("datum.leads == 0")
                 .transform_calculate(note="datum.alerts == 0 ? ['no lead times: no alerts here']"
                                           " : datum.forecasts == 0 ? ['no lead times: no forecasts here',"
                                           " '(an empty-now alert has none)']"
                                           " : ['no lead times: none of', 'the ' + datum.forecasts + ' forecasts here',"
                                           " 'was followed by its', 'shelf emptying']")
                 .mark_text(x=6, y=6, align="left", baseline="top", fontSize=11, color="#5b6675")
                 .encode(text="note:N").properties(name="alert_lead_times_note"))
    leads = alt.layer(lead_bars, lead_note).properties(
        width=w, height=160, title=alt.TitleParams("Alert lead times", subtitle="forecasts the shelf's emptying followed"))

    checks = al.mark_bar().encode(
        y=alt.Y("staff_check:N", title=None, sort=["restocked", "no_stock", "was_fine", "not checked"]),
        x=alt.X("count():Q", title="alerts"), color=alt.Color("outcome:N", legend=None),
        tooltip=["staff_check:N", "outcome:N", "count():Q"]).properties(
            width=w, height=120, title="What staff found (store page 'done')", name="staff_checks")
    rows = [
        alt.hconcat(rate_chart, heat),
        alt.hconcat(by_store_c, lost),
        alt.hconcat(by_cat_c, top_c),
        alt.hconcat(causes, outcomes).resolve_scale(color="independent"),
        alt.hconcat(leads, checks),
    ]
    # Causes and alert outcomes each have their own colours.
    return alt.vconcat(*rows).add_params(store, category).resolve_scale(color="independent").configure_view(stroke=None)


def chart_spec(data: dict) -> dict:
    """The Vega-Lite spec of the charts with their rows (``data``: ``stockouts``, ``days``, ``alerts``,
    ``currencies``, as the warehouse query returns them)."""
    spec = _charts(data).to_dict()
    spec["datasets"] = {name: data[name] for name in ("stockouts", "days", "alerts")}
    # One row no filter drops, so the lead-time note counts zero alerts too (Vega aggregates
    # nothing to no row); every alert chart leaves it out.
    spec["datasets"]["alerts"] = [*data["alerts"], {"sentinel": True}]
    # Altair binds a selection made in a layer to every layer; the brush belongs to the daily line
    # only (two brushes of one name are an error in Vega).
    for p in spec.get("params", []):
        if "views" in p:
            p["views"] = [v for v in p["views"] if v.startswith("stockout_rate_by_day")]
    return spec


def _script(spec: dict) -> str:
    """vega-embed call that fits the charts to the page and records how many items each named chart
    drew (``#render-status``).

    The spec carries master-data text (product, store, category names from the ERP's files): ``<``,
    ``>`` and ``&`` go in as JSON escapes, so a name holding ``</script>`` cannot end the script
    element (it did: the page lost its charts and ran what followed; QA, session 8)."""
    text = json.dumps(spec).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _SCRIPT.replace("__SPEC__", text)


#: The charts are drawn two to a row, 380 px each; when that is wider than the page (a laptop at
#: 1,300 px with long labels and legends, a phone) each plot is narrowed, and below 300 px the
#: charts go one to a row with their legends underneath, narrowed until they fit. Drawn again
#: when the window's width changes. ``status.layout`` says what was chosen.
_SCRIPT = """
const status = {charts: {}, errors: [], layout: null};
window.addEventListener('error', e => status.errors.push(String(e.message)));
const report = () => { document.getElementById('render-status').textContent = JSON.stringify(status); };
const spec = __SPEC__;
const box = document.getElementById('charts');
const vis = box.appendChild(document.createElement('div'));
const room = () => {
  const css = getComputedStyle(box);
  return box.clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight);
};
// A title in lines of at most 30 characters (a phone's plot is narrower than a long title).
function wrap(text) {
  const lines = [];
  for (const word of String(text).split(' ')) {
    if (lines.length && (lines[lines.length - 1] + ' ' + word).length <= 30) lines[lines.length - 1] += ' ' + word;
    else lines.push(word);
  }
  return lines;
}
function laidOut(columns, width) {
  const s = JSON.parse(JSON.stringify(spec));
  for (const row of s.vconcat) for (const chart of row.hconcat) chart.width = width;
  if (columns === 1) {
    for (const row of s.vconcat) for (const chart of row.hconcat) {
      const t = chart.title;
      if (typeof t === 'string') chart.title = wrap(t);
      else if (t && t.text) chart.title = Object.assign({}, t, {text: wrap(t.text), subtitle: t.subtitle && wrap(t.subtitle)});
    }
    // a row's data (Altair moves data its charts share up to the row) goes down to its charts
    s.vconcat = s.vconcat.flatMap(row => row.hconcat.map(c => (row.data && !c.data) ? Object.assign({data: row.data}, c) : c));
    const config = s.config || {};
    s.config = Object.assign({}, config, {
      legend: Object.assign({}, config.legend, {orient: 'bottom', direction: 'vertical', labelLimit: 110}),
      axis: Object.assign({}, config.axis, {labelLimit: 110}),
      // a title centred on a narrow plot sticks out on both sides; from the labels' left edge it fits
      title: Object.assign({}, config.title, {anchor: 'start', frame: 'bounds', fontSize: 12})});
  }
  return s;
}
let current = null;
async function draw(columns, width) {
  if (current) current.finalize();
  vis.textContent = '';
  current = await vegaEmbed(vis, laidOut(columns, width), {mode: 'vega-lite', actions: false, renderer: 'svg'});
  return vis.getBoundingClientRect().width;  // vega-embed's box is as wide as what it drew
}
async function fit() {
  let columns = 2, width = 380, drawn = await draw(columns, width);
  for (let tries = 0; tries < 6 && drawn > room(); tries++) {
    const narrower = Math.floor(width - (drawn - room()) / columns) - 1;
    if (columns === 2 && narrower < 300) { columns = 1; width = 380; }
    else if (narrower < 80) break;
    else width = narrower;
    const before = drawn;
    drawn = await draw(columns, width);
    if (columns === 1 && drawn >= before) break;  // what sticks out is no plot: narrower will not help
  }
  status.layout = {columns, width, room: room(), drawn};
}
function count() {
  status.charts = {};
  (function walk(item) {
    for (const it of (item && item.items) || []) {
      if (it.role === 'mark' && it.name && it.name.endsWith('_marks')) {
        const name = it.name.slice(0, -'_marks'.length).replace(/_0$/, '');
        // Items drawn with a colour (an item whose value falls outside its colour scale is invisible).
        const drawn = (it.items || []).filter(d => d.fill || d.stroke).length;
        status.charts[name] = (status.charts[name] || 0) + drawn;
      }
      walk(it);
    }
  })(current.view.scenegraph().root);
}
const render = () => fit().then(count).catch(err => { status.errors.push(String(err)); }).then(report);
render();
let resizing = null;
window.addEventListener('resize', () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => { if (status.layout && Math.abs(room() - status.layout.room) > 10) render(); }, 300);
});
"""


def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script, from the ``vl-convert-python`` package (no
    network). Bundling takes seconds, so the result is cached per version in the user's cache."""
    import os

    import vl_convert
    from altair.utils.html import vl_version_for_vl_convert

    version = vl_version_for_vl_convert()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gondola"
    path = cache / f"vega-embed-{vl_convert.__version__}-vl{version}.js"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vl_convert.javascript_bundle(vl_version=version)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(bundle, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: bundle again next time
    return bundle


def build_dashboard(warehouse: str | Path, out_html: str | Path) -> Path:
    """Write the dashboard for the warehouse's current data; return its path.

    Raises:
        StorageError: the warehouse cannot be opened or lacks the views.
    """
    import duckdb

    from gondola.errors import StorageError

    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error as exc:
        raise StorageError(f"cannot open warehouse {warehouse}: {exc}") from exc
    try:
        data = _query(con)
    except duckdb.Error as exc:
        raise StorageError(f"warehouse {warehouse} lacks the dashboard's views: {exc}") from exc
    finally:
        con.close()
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page_html(data), encoding="utf-8")
    return out


def page_html(data: dict) -> str:
    """The page for ``data`` (as ``_query`` returns it): one HTML document that opens offline."""
    spec = chart_spec(data)
    bundle = _vega_bundle().replace("</script", "<\\/script")
    k, cur = data["kpis"], data["currencies"]
    pct = lambda v: "–" if v is None else f"{100.0 * v:.0f}%"  # noqa: E731
    kpis = [
        ("stock-outs", _fmt(k.get("stockouts")), f"{_fmt(k.get('stockouts_ongoing'))} still empty"),
        ("stock-out minutes", _fmt(float(k.get("stockout_minutes") or 0), 0), "while the stores were open"),
        ("lost sales (est.)", _money(k.get("lost_sales_cents"), cur), "opening hours only"),
        ("alerted before", pct(k.get("recall_ahead")), "stock-outs a forecast preceded"),
        ("mean lead", _fmt(k.get("mean_lead_min"), 0) + " min", "forecast -> shelf empty"),
        # The two alert kinds apart, each judged by its own promise (issue 11): a forecast is worth
        # its warning before the shelf emptied, an "empty now" is right when the shelf was empty.
        ("forecasts", _fmt(k.get("forecast_alerts") or 0),
         f"{_fmt(k.get('forecast_true_alerts') or 0)} right ({pct(k.get('forecast_precision'))}), "
         f"{_fmt(k.get('forecast_warned_ahead') or 0)} warned ahead ({pct(k.get('forecast_warned_ahead_share'))}), "
         f"{_fmt(k.get('forecast_unobserved') or 0)} unobserved"),
        # Precision is over judged alerts: one on a facing without a sensor that no gap scan, staff
        # check, refill or till sale judged is counted apart (unobserved), neither right nor wrong.
        ("empty now", _fmt(k.get("empty_now_alerts") or 0),
         f"{_fmt(k.get('empty_now_true_alerts') or 0)} right ({pct(k.get('empty_now_precision'))} of judged), "
         f"{_fmt(k.get('empty_now_unobserved') or 0)} unobserved"),
    ]
    kpi_html = "".join(f"<div class='kpi'><span>{_e(a)}</span><b>{_e(b)}</b><span>{_e(c)}</span></div>" for a, b, c in kpis)
    actions = [(s, _ACTION_TEXT.get(a, a), t, f, n, m, ls, c, wt, conf) for s, a, t, f, n, m, ls, c, wt, conf in data["actions"]]
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>Gondola — head office</title>
<style>{_CSS}</style><script>{bundle}</script></head><body>
<h1>Gondola — shelves and stock-outs</h1>
<div class="sub">Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the warehouse. Times are each store's
local time; money is in the store's currency. Use the menus under the charts to pick a store or category and drag
on the daily chart to pick dates.</div>
<div class="kpis">{kpi_html}</div>
<div id="charts"></div>
<h2>By store</h2>
{_table(['store', 'name', 'stock-outs', 'minutes empty (open)', 'lost sales', 'currency', 'alerted before %',
         'mean lead (min)', 'forecasts', 'forecasts right %', 'warned ahead %', 'empty now', 'empty now right %'],
        data['by_store'], empty='no stores yet', digits={3: 0, 4: 2, 6: 0, 7: 0, 9: 0, 10: 0, 12: 0})}
<p class="sub">Forecasts (<code>empty_within_h</code>) are right when the shelf was empty within their horizon and
warned ahead when raised before it emptied; <code>empty now</code> alerts are right when the shelf was empty when raised.</p>
<h2>What to do (category manager)</h2>
{_table(['store', 'action', 'product / hour', 'facing', 'stock-outs', 'minutes empty', 'lost sales', 'currency',
         'mean wait for refill (min)', 'confidence'], actions, empty='no actions: no stock-outs with a cause yet',
        digits={5: 0, 6: 2, 8: 0, 9: 2})}
<p class="sub">Causes: {'; '.join(f'<b>{_e(c)}</b>: {_e(t)}' for c, t in _CAUSE_TEXT.items())}.</p>
{_anomaly_section(data['anomalies'])}
<h2>Fleet health: gateways</h2>
{_table(['store', 'gateway', 'last sync (local)', 'backlog (unsent)', 'oldest unsent (min)', 'evictions', 'sequence gaps',
         'quarantined', 'model'], data['gateways'], empty='no gateway health reports yet', bad=6)}
<h2>Fleet health: devices</h2>
<p class="sub">{len(data['devices'])} devices; those with missing events (sequence gaps) or low batteries first.</p>
{_table(['store', 'device', 'events', 'missing', 'last seen (local)', 'battery min %'], data['devices'][:40],
        bad=3, empty='no devices')}
<p class="sub">Stock-outs are detected from shelf sensors (units = 0); facings without sensors are not included.
Lost sales = the product's sales rate that day × minutes empty while open × list price.</p>
<pre id="render-status"></pre>
<script>{_script(spec)}</script>
</body></html>
"""
    return doc


def screenshot(html_path: str | Path, png: str | Path, *, width: int = 1300, height: int = 2600,
               timeout: float = 120) -> Path | None:
    """A PNG of the page as headless Chromium draws it offline; ``None`` when Chromium is not
    installed or fails (the dashboard itself does not need it)."""
    import shutil
    import subprocess
    import tempfile

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        return None
    png = Path(png)
    with tempfile.TemporaryDirectory() as profile:
        try:
            subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
                            "--virtual-time-budget=20000", f"--window-size={width},{height}",
                            f"--screenshot={png}", Path(html_path).resolve().as_uri()],
                           check=True, capture_output=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError):
            return None
    return png if png.exists() else None

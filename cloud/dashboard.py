"""A static dashboard for store managers and analysts: one self-contained HTML file.

Built from the DuckDB warehouse (``cloud.warehouse``): stock-outs and lost sales, alert
quality (did the edge warn before shelves went empty?), hourly sales, and fleet health.
Inline CSS and SVG only: no scripts, no fonts or libraries fetched, so it opens offline and
can be mailed or served by anything.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

__all__ = ["build_dashboard"]

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2733;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5dae1;padding-bottom:4px}
.sub{color:#5b6675}.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.kpi{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:22px}.kpi span{color:#5b6675;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:right}th{background:#eef1f5}
td:first-child,th:first-child,td.l{text-align:left}.bad{color:#b42318;font-weight:600}
svg{background:#fff;border:1px solid #d5dae1;border-radius:6px}.grid{display:flex;flex-wrap:wrap;gap:24px}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _table(headers: list[str], rows: list[tuple], *, empty: str = "nothing to show") -> str:
    if not rows:
        return f"<p class='sub'>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(title: str, items: list[tuple[str, float]], *, width: int = 460, unit: str = "") -> str:
    """Horizontal bar chart as inline SVG."""
    if not items:
        return f"<p class='sub'>{_e(title)}: no data</p>"
    row_h, label_w = 20, 120
    height = 30 + row_h * len(items)
    top = max(v for _, v in items) or 1.0
    parts = [f"<svg width='{width}' height='{height}' role='img' aria-label='{_e(title)}'>",
             f"<text x='8' y='18' font-size='13' font-weight='600'>{_e(title)}</text>"]
    for i, (label, value) in enumerate(items):
        y = 28 + i * row_h
        w = (width - label_w - 70) * (value / top)
        parts.append(f"<text x='8' y='{y + 13}' font-size='12'>{_e(label)}</text>")
        parts.append(f"<rect x='{label_w}' y='{y + 2}' width='{w:.1f}' height='{row_h - 6}' fill='#3867d6'/>")
        parts.append(f"<text x='{label_w + w + 4:.1f}' y='{y + 13}' font-size='11'>{_fmt(value)}{_e(unit)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _line(title: str, points: list[tuple[float, float]], *, width: int = 460, height: int = 180) -> str:
    """A line chart (x: hour of day, y: value) as inline SVG."""
    if len(points) < 2:
        return f"<p class='sub'>{_e(title)}: not enough data</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y1 = min(xs), max(xs), max(ys) or 1.0
    pad = 30

    def sx(x):
        return pad + (width - 2 * pad) * ((x - x0) / ((x1 - x0) or 1))

    def sy(y):
        return height - pad - (height - 2 * pad) * (y / y1)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    return (f"<svg width='{width}' height='{height}' role='img' aria-label='{_e(title)}'>"
            f"<text x='8' y='18' font-size='13' font-weight='600'>{_e(title)}</text>"
            f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#999'/>"
            f"<polyline fill='none' stroke='#3867d6' stroke-width='2' points='{path}'/>"
            f"<text x='{pad}' y='{height - 10}' font-size='11'>{_e(int(x0))}h</text>"
            f"<text x='{width - pad - 20}' y='{height - 10}' font-size='11'>{_e(int(x1))}h</text>"
            f"<text x='{pad}' y='{pad - 2}' font-size='11'>{_fmt(y1)}</text></svg>")


def build_dashboard(warehouse: str | Path, out_html: str | Path) -> Path:
    """Write the dashboard for the warehouse's current data; return its path.

    Raises:
        StorageError: the warehouse cannot be opened.
    """
    import duckdb

    from gondola.errors import StorageError

    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error as exc:
        raise StorageError(f"cannot open warehouse {warehouse}: {exc}") from exc
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    try:
        n_so, minutes, lost, alerted, ongoing = q("""SELECT COUNT(*), COALESCE(SUM(duration_min), 0),
            COALESCE(SUM(lost_sales), 0), COALESCE(SUM(CASE WHEN alerted THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN ongoing THEN 1 ELSE 0 END), 0) FROM bi_stockouts""")[0]
        alerts, true_alerts = q("SELECT COALESCE(SUM(alerts), 0), COALESCE(SUM(true_alerts), 0) FROM bi_alert_quality")[0]
        revenue = q("SELECT COALESCE(SUM(net_revenue), 0) FROM bi_hourly_sales")[0][0]
        gaps = q("SELECT COUNT(DISTINCT device_id) FROM bi_fleet_health WHERE missing > 0")[0][0]
        devices = q("SELECT COUNT(DISTINCT device_id) FROM bi_fleet_health")[0][0]
        by_store = q("""SELECT COALESCE(store_name, store_id), SUM(COALESCE(lost_sales, 0)) FROM bi_stockouts
                        GROUP BY 1 ORDER BY 2 DESC LIMIT 15""")
        top = q("""SELECT store_id, facing_id, COALESCE(product_name, sku), COUNT(*), ROUND(SUM(COALESCE(duration_min, 0)), 1),
                   ROUND(SUM(COALESCE(lost_sales, 0)), 2), SUM(CASE WHEN alerted THEN 1 ELSE 0 END), MAX(CASE WHEN ongoing THEN 'yes' ELSE '' END)
                   FROM bi_stockouts GROUP BY 1, 2, 3 ORDER BY 6 DESC LIMIT 20""")
        by_hour = q("""SELECT hour(started_at) AS h, COUNT(*) FROM bi_stockouts GROUP BY 1 ORDER BY 1""")
        sales_hour = q("""SELECT hour(hour) AS h, SUM(units_sold) FROM bi_hourly_sales GROUP BY 1 ORDER BY 1""")
        quality = q("""SELECT scorer, SUM(alerts), SUM(true_alerts),
                       ROUND(100.0 * SUM(true_alerts) / NULLIF(SUM(alerts), 0), 1),
                       ROUND(100.0 * SUM(caught) / NULLIF(SUM(stockouts), 0), 1), ROUND(AVG(mean_lead_min), 1)
                       FROM bi_alert_quality GROUP BY scorer ORDER BY scorer""")
        # The two promises apart: a forecast is judged by warnings before the shelf empties,
        # a detection by being right that it is empty.
        by_kind = q("""SELECT kind, COUNT(*), SUM(CASE WHEN outcome = 'empty_after' THEN 1 ELSE 0 END),
                       SUM(CASE WHEN outcome = 'already_empty' THEN 1 ELSE 0 END),
                       SUM(CASE WHEN outcome = 'false_alarm' THEN 1 ELSE 0 END),
                       ROUND(MEDIAN(lead_min), 1) FROM bi_alert_outcomes GROUP BY kind ORDER BY kind DESC""")
        fleet = q("""SELECT store_id, device_id, SUM(events), SUM(missing), MAX(last_seen)::VARCHAR,
                     MIN(battery_min), MAX(unsent_rows), MAX(evictions), MAX(model_version)
                     FROM bi_fleet_health GROUP BY 1, 2
                     ORDER BY SUM(missing) DESC, MIN(battery_min) ASC NULLS LAST LIMIT 25""")
    except duckdb.Error as exc:
        raise StorageError(f"warehouse {warehouse} lacks the dashboard's views: {exc}") from exc
    finally:
        con.close()

    pct = lambda a, b: f"{100.0 * a / b:.0f}%" if b else "–"  # noqa: E731
    kpis = [
        ("stock-outs", _fmt(n_so), f"{ongoing} still empty"),
        ("minutes empty", _fmt(float(minutes), 0), "closed stock-outs"),
        ("lost sales (est.)", _fmt(float(lost), 2), "rate × duration × price"),
        ("alerted before", pct(alerted, n_so), "stock-outs the edge warned about"),
        ("alert precision", pct(true_alerts, alerts), f"{alerts} alerts raised"),
        ("net sales", _fmt(float(revenue), 2), "all stores"),
        ("devices with gaps", f"{gaps} / {devices}", "missing sequence numbers"),
    ]
    kpi_html = "".join(f"<div class='kpi'><span>{_e(a)}</span><b>{b}</b><span>{_e(c)}</span></div>" for a, b, c in kpis)
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>Gondola — shelves and stock-outs</title>
<style>{_CSS}</style></head><body>
<h1>Gondola — shelves and stock-outs</h1>
<div class="sub">Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the warehouse (gold tables).</div>
<div class="kpis">{kpi_html}</div>
<h2>For store managers: where shelves ran empty</h2>
<div class="grid">{_bars('Lost sales by store (est.)', [(str(a), float(b or 0)) for a, b in by_store])}
{_bars('Stock-outs by hour of day (UTC)', [(f'{int(h):02d}:00', float(n)) for h, n in by_hour])}</div>
{_table(['store', 'facing', 'product', 'stock-outs', 'minutes empty', 'lost sales', 'alerted', 'empty now'], top)}
<h2>For analysts: did the edge warn in time?</h2>
{_table(['scorer', 'alerts', 'true alerts', 'precision %', 'recall %', 'mean lead (min)'], quality)}
{_table(['alert kind', 'alerts', 'shelf emptied after', 'already empty', 'false alarms', 'median lead (min)'], by_kind)}
<div class="grid">{_line('Units sold by hour of day', [(float(h), float(u or 0)) for h, u in sales_hour])}</div>
<h2>Fleet health</h2>
{_table(['store', 'device', 'events', 'missing', 'last seen', 'battery min', 'unsent', 'evictions', 'model'], fleet)}
<p class="sub">Stock-outs are detected from shelf sensors (units = 0); facings without sensors are not included.
Lost sales = the product's sales rate that day in that store × minutes empty × price.</p>
</body></html>
"""
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out

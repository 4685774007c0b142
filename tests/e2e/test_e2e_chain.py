"""The whole chain, simulated stores to dashboard, conserves every event.

Every valid event a simulated device emitted is in silver exactly once, per type: with no
fault injected, and still when the devices send duplicates. The test runs the same code as
``gondola demo``, with Mosquitto when installed and the embedded broker otherwise.
"""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pytest

from gondola.clock import DAY_MS
from gondola.demo import DemoConfig, run_demo
from tests.conftest import require
from tests.pages import chromium_binary, screenshot

DEVICE_TYPES = ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery", "shelf.gap_scan")


def _emitted(sims, etype):
    return set().union(*(sim.truth.emitted.get(etype, set()) for sim in sims))


def _assert_conservation(run):
    for etype in DEVICE_TYPES:
        emitted = _emitted(run.sims, etype)
        in_silver = run.cloud.silver_keys(etype)
        assert len(in_silver) == len(emitted), f"{etype}: {len(in_silver)} in silver, {len(emitted)} emitted"
        assert in_silver == emitted, f"{etype}: silver and ground truth differ"
    from cloud.lake.tables import SILVER_EVENT_TABLES

    counts = run.summary["tables"]
    for etype in DEVICE_TYPES:
        # Exactly once: the table holds as many rows as distinct keys.
        assert counts.get(SILVER_EVENT_TABLES[etype], 0) == len(_emitted(run.sims, etype))


@pytest.mark.slow
def test_every_emitted_event_reaches_silver_exactly_once_without_faults(tmp_path):
    from firmware_sim import Scenario

    run = run_demo(DemoConfig(stores=2, skus=80, days=1, seed=3, out=tmp_path / "demo",
                              scenario=Scenario.no_faults(), quiet=True))
    assert sum(len(_emitted(run.sims, t)) for t in DEVICE_TYPES) > 800
    _assert_conservation(run)
    s = run.summary
    assert s["gateways"]["seq_gaps"] == 0
    assert s["gateways"]["quarantined"] == 0
    assert s["cloud"]["duplicates_removed"] == 0
    assert s["alerts"]["ground_truth_stockouts"] > 0
    assert s["alerts"]["raised"] > 0
    assert 0.0 <= s["alerts"]["recall"] <= 1.0
    # every forecast is told apart: warned ahead, on a shelf already empty, or false
    assert sum(s["alerts"]["forecast_outcomes"].values()) == s["alerts"]["alerts"]
    # and precision's right ones are those warned ahead or raised on a shelf already empty
    fo = s["alerts"]["forecast_outcomes"]
    assert s["alerts"]["true_alerts"] == fo["warned_ahead"] + fo["on_empty_shelf"]
    # the stores' ERP sent the night's stock record, and the root causes use it
    assert s["tables"]["silver.stock_record"] == 2 * 80
    evidence = run.cloud.storage.read("gold.stockout_causes")["evidence"].to_pylist()
    assert evidence and sum("book" in e for e in evidence) > 0.5 * len(evidence)
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert on_disk["tables"] == s["tables"]
    html = (tmp_path / "demo" / "dashboard.html").read_text()
    # One definition per figure: the summary's report figures are the dashboard's.
    rep = s["reports"]
    assert rep["stockouts"] == s["tables"]["gold.stockouts"] and rep["currencies"] == ["EUR"]
    assert f"<span>stock-outs</span><b>{rep['stockouts']:,}</b>" in html
    assert f"{rep['lost_sales_cents'] / 100:,.2f} EUR" in html
    assert "<html" in html.lower() and "s001" in html and "s002" in html
    # What a store manager sees: the page renders offline, with content and charts.
    require(chromium_binary() is not None, "Chromium (Debian package 'chromium')")
    assert (tmp_path / "demo" / "dashboard.png").stat().st_size > 10_000  # the demo leaves a picture beside it
    shot = screenshot((tmp_path / "demo" / "dashboard.html").as_uri(), tmp_path / "dashboard.png", height=1200)
    background = np.median(shot.reshape(-1, 3), axis=0)
    drawn = np.abs(shot.astype(int) - background).sum(axis=2) > 60
    assert drawn.mean() > 0.02, "the dashboard renders almost nothing"
    # Bars and lines are drawn in a saturated colour: blue clearly above red and green.
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    assert ((b - r > 80) & (b - g > 40)).sum() > 500, "no chart drawn"


class _Tables(HTMLParser):
    """The rows of each ``<table>`` in a piece of HTML, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None


def _assert_the_page_lists_what_the_stream_found(run, out):
    """The dashboard's anomaly section shows exactly the rows of stream.anomalies (read here with
    deltalake + DuckDB, not the project's code), and they are faults the simulator injected."""
    import duckdb
    from deltalake import DeltaTable

    rows = DeltaTable(str(out / "lake" / "stream" / "anomalies")).to_pyarrow_table()
    found = duckdb.sql("SELECT kind, COUNT(*), COUNT(DISTINCT store_id) FROM rows GROUP BY kind ORDER BY kind").fetchall()
    assert found, "the stream job found nothing on the injected faults"
    assert run.summary["stream"]["anomalies"] == {k: n for k, n, _ in found}
    html = (out / "dashboard.html").read_text()
    page = _Tables()
    page.feed(html[html.index("Anomalies the stream found"):html.index("Fleet health: gateways")])
    counts, latest, alerts = page.tables
    n = lambda text: int(text.replace(",", ""))  # noqa: E731
    assert counts[0][:4] == ["anomaly", "kind", "episodes", "stores"] and latest[0][0] == "seen (local)"
    assert sorted((r[1], n(r[2]), n(r[3])) for r in counts[1:]) == found
    newest = duckdb.sql("SELECT store_id, subject FROM rows ORDER BY first_seen DESC, store_id, subject LIMIT 30").fetchall()
    assert [(r[1], r[3]) for r in latest[1:]] == newest
    # The cloud's own alerts per store: raised forecasts, empty-now detections, and those raised
    # while the gateway was silent.
    con = duckdb.connect()
    con.register("cloud_alerts", DeltaTable(str(out / "lake" / "stream" / "alerts")).to_pyarrow_dataset())
    per_store = con.execute("""SELECT store_id, SUM((kind = 'empty_within_h')::INT), SUM((kind = 'empty_now')::INT),
                                      SUM((NOT gateway_alive)::INT)
                               FROM cloud_alerts WHERE state = 'raised' GROUP BY store_id ORDER BY store_id""").fetchall()
    assert alerts[0][0] == "store" and [(r[0], n(r[1]), n(r[2]), n(r[3])) for r in alerts[1:]] == per_store
    assert sum(r[1] + r[2] for r in per_store) == sum(run.summary["stream"]["alerts"]["raised"].values()) > 0
    # From the detectors on simulated truth: most rows name a device inside one of its fault windows.
    truth = {"sensor_drift": "sensor_drift", "till_silent": "till_down", "sensor_stuck": "sensor_stuck"}
    windows = [w for sim in run.sims for w in sim.truth.windows]
    right = sum(any(w.kind == truth.get(r["kind"]) and w.target == r["subject"]
                    and w.start_ms <= r["first_seen"] <= w.end_ms + 2 * 3_600_000 for w in windows)
                for r in rows.to_pylist())
    assert right >= 0.75 * rows.num_rows


@pytest.mark.slow
def test_duplicates_sent_by_devices_are_removed_and_nothing_is_lost(tmp_path):
    from firmware_sim import Scenario

    # the demo's own scenario: staff gap scans travel the chain too; and more drifting load cells
    # than its default, so that one store-day gives the stream job's detectors something to find
    run = run_demo(DemoConfig(stores=1, skus=80, days=1, seed=5, out=tmp_path / "demo", quiet=True,
                              scenario=Scenario.with_faults(Scenario.demo(), duplicates=0.05, sensor_drifts=0.1)))
    s = run.summary
    assert len(_emitted(run.sims, "shelf.gap_scan")) > 0
    # Copies actually published so far: messages sent minus distinct events (no drops here).
    duplicates_sent = sum(s["devices"]["sent_messages"].values()) - sum(s["devices"]["emitted"].values())
    assert duplicates_sent > 20
    assert duplicates_sent == run.sims[0].truth.faults["duplicate"]
    # The summary's faults are the run's own: the run ends at midnight, which plans the next day's
    # faults too (it counted 12 sensor drifts where 6 happened, QA). The windows are timed.
    end = run.sims[0].start_ms + DAY_MS
    in_run = Counter(w.kind for w in run.sims[0].truth.windows if w.start_ms < end)
    assert in_run["sensor_drift"] > 0
    assert {k: s["devices"]["faults"].get(k, 0) for k in in_run} == dict(in_run)
    _assert_conservation(run)
    # Duplicates are caught at the gateway (idempotent buffer) or in silver; together, all of them.
    assert s["gateways"]["duplicates_ignored"] + s["cloud"]["duplicates_removed"] == duplicates_sent
    assert s["gateways"]["seq_gaps"] == 0
    # The stream job read the same hub once, copies dropped: every device event and the gateway's own.
    own = s["tables"]["silver.edge_alert"] + s["tables"]["silver.edge_health"]
    assert s["stream"]["events"] == sum(s["devices"]["emitted"].values()) + own
    assert s["stream"]["late_events"] == 0  # the gateways send each tick's events at its end
    _assert_the_page_lists_what_the_stream_found(run, tmp_path / "demo")

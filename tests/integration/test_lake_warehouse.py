"""Warehouse, dashboard, Synapse DDL and the ``gondola cloud`` CLI over a real lake."""

from __future__ import annotations

import re

import duckdb
import pytest

from cloud.cli import main as cloud_main
from cloud.lake.tables import MEASURES, TABLES
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.warehouse import BI_VIEWS, WAREHOUSE_TABLES, synapse_ddl, warehouse_name
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub

pytestmark = pytest.mark.slow  # builds a 3-store lake once for the module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wh")
    with LocalHub(tmp / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=3, facings=3, hours=24))
    write_master_csvs(tmp / "master", stores=3, facings=3)
    args = ["--lake", str(tmp / "lake"), "--hub", str(tmp / "hub.sqlite"), "--warehouse", str(tmp / "wh.duckdb")]
    assert cloud_main(args + ["all", "--batch", str(tmp / "master"), "--html", str(tmp / "dash.html")]) == 0
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp / "lake"), hub_path=str(tmp / "hub.sqlite"),
                                      warehouse_path=str(tmp / "wh.duckdb")))
    return {"tmp": tmp, "args": args, "cloud": cloud}


def test_the_warehouse_holds_every_gold_and_silver_table_with_the_lake_row_counts(built):
    counts = built["cloud"].table_counts()
    with duckdb.connect(str(built["tmp"] / "wh.duckdb"), read_only=True) as con:
        for name, tdef in TABLES.items():
            if tdef not in WAREHOUSE_TABLES:
                continue
            n = con.execute(f"SELECT COUNT(*) FROM {warehouse_name(name)}").fetchone()[0]
            assert n == counts.get(name, 0), name
        assert counts["gold.stockouts"] > 0
        so = con.execute("SELECT COUNT(*), COUNT(store_name), COUNT(product_name) FROM bi_stockouts").fetchone()
        assert so[0] == counts["gold.stockouts"] and so[1] == so[0] and so[2] == so[0]
        assert con.execute("SELECT typeof(started_at) FROM bi_stockouts LIMIT 1").fetchone()[0].startswith("TIMESTAMP")
        for view in BI_VIEWS:
            con.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()


def test_stockout_recall_is_one_definition_the_warehouse_view_and_gold_model_performance_agree(built):
    # bi_stockout_recall (warehouse) and gold.model_performance's store-day rows (scorer "(none)",
    # the lake's transform) come from cloud.lake.tables.stockout_days_sql: the same values, row
    # for row; and a sum over gold.model_performance's rows counts each stock-out once.
    with duckdb.connect(str(built["tmp"] / "wh.duckdb"), read_only=True) as con:
        view = con.execute('SELECT store_id, "date", stockouts, known_start, caught, recall '
                           "FROM bi_stockout_recall ORDER BY 1, 2").fetchall()
        lake = con.execute("SELECT store_id, CAST(epoch_ms(day_ms) AS DATE), stockouts, known_start, caught, recall "
                           "FROM gold_model_performance WHERE scorer = '(none)' AND stockouts > 0 "
                           "ORDER BY 1, 2").fetchall()
        total, rows, scorers = con.execute("SELECT SUM(stockouts), COUNT(*), COUNT(DISTINCT scorer) "
                                           "FROM gold_model_performance").fetchone()
        stockouts, known, caught = con.execute("SELECT COUNT(*), COUNT(alerted), "
                                               "SUM(CAST(alerted AS INT)) FROM gold_stockouts").fetchone()
    assert view == lake and len(view) >= 3  # every store's day(s) with stock-outs
    assert sum(v[2] for v in view) == stockouts and sum(v[3] for v in view) == known
    assert sum(v[4] for v in view) == caught and caught > 0 and known > caught
    assert total == stockouts and rows > len(view) and scorers >= 2


def test_the_dashboard_is_one_self_contained_html_file(built):
    page = (built["tmp"] / "dash.html").read_text()
    assert page.startswith("<!doctype html>")
    # Scripts inlined: nothing loaded from elsewhere.
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=[\"']?https?:", page)
    with duckdb.connect(str(built["tmp"] / "wh.duckdb"), read_only=True) as con:
        n = con.execute("SELECT COUNT(*) FROM gold_stockouts").fetchone()[0]
        lost = con.execute("SELECT lost_sales_cents FROM bi_kpis").fetchone()[0]
    # The figures are bi_kpis' (one definition), money with its currency.
    assert f"<span>stock-outs</span><b>{n:,}</b>" in page
    assert f"{lost / 100:,.2f} EUR" in page
    for section in ("By store", "What to do", "Fleet health: gateways", "Fleet health: devices"):
        assert section in page
    # Gateways come before devices.
    assert page.index("gw-s001") < page.index("shelf-s001")


@pytest.mark.chromium
def test_the_dashboard_renders_offline_in_chromium_every_chart_with_data_and_no_errors(built, tmp_path):
    import json

    from cloud.dashboard import CHARTS
    from tests.conftest import require
    from tests.pages import chromium_binary, dump_dom, screenshot_after_scripts

    require(chromium_binary() is not None, "Chromium (Debian package 'chromium')")
    url = (built["tmp"] / "dash.html").as_uri()
    dom, console = dump_dom(url)
    status = json.loads(re.search(r'<pre id="render-status">([^<]*)</pre>', dom).group(1))
    assert status["errors"] == []
    assert [c for c in console if "error" in c.lower()] == []
    drawn = status["charts"]
    assert {name: drawn.get(name, 0) for name in CHARTS if drawn.get(name, 0) == 0} == {}
    shot = screenshot_after_scripts(url, tmp_path / "dashboard.png")
    print("dashboard screenshot:", tmp_path / "dashboard.png")
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    assert ((b - r > 60) & (b - g > 30)).sum() > 2000, "no bars drawn"


def test_synapse_ddl_has_one_typed_view_per_table_and_bi_views_that_parse_as_tsql(built):
    sqlglot = pytest.importorskip("sqlglot")
    ddl = synapse_ddl("lake")
    statements = [s for s in ddl.split("\nGO\n") if s.strip() and not s.lstrip().startswith("--")]
    views = {}
    for stmt in statements:
        m = re.match(r"CREATE OR ALTER VIEW \[(\w+)\] AS", stmt)
        assert m, stmt[:80]
        views[m.group(1)] = stmt
        assert stmt.count("(") == stmt.count(")")
    for name, tdef in TABLES.items():
        if tdef not in WAREHOUSE_TABLES:
            continue
        stmt = views[warehouse_name(name)]
        assert f"BULK 'lake/{tdef.layer}/{tdef.short}/'" in stmt and "FORMAT = 'DELTA'" in stmt
        declared = re.findall(r"\[(\w+)\] (VARCHAR\((?:\d+|MAX)\) COLLATE Latin1_General_100_BIN2_UTF8|BIGINT|INT|FLOAT|BIT)",
                              stmt)
        assert [c for c, _ in declared] == [c.name for c in tdef.columns]
        for col, typ in declared:
            size = TABLES[name].columns[[c.name for c in tdef.columns].index(col)].max_bytes
            if typ.startswith("VARCHAR"):
                assert typ.startswith(f"VARCHAR({'MAX' if size is None else size})"), (name, col)
    for view in BI_VIEWS:
        tree = sqlglot.parse_one(views[view], read="tsql")
        ctes = {c.alias for c in tree.find_all(sqlglot.exp.CTE)}
        used = {t.name for t in tree.find_all(sqlglot.exp.Table)} - {view} - ctes
        assert used <= set(views) and (used or view == "bi_dim_alert_kind"), view  # the kinds: a constant list
        # Every identifier is delimited ([precision] is a reserved word in T-SQL).
        idents = list(tree.find_all(sqlglot.exp.Identifier))
        assert idents and all(i.args.get("quoted") for i in idents), view
    assert "AS [precision]" in views["bi_alert_quality"] and "[kind]" in views["bi_alert_quality"]
    # sqlglot cannot parse OPENROWSET(BULK ...); its WITH column list must parse as T-SQL columns.
    for name, tdef in TABLES.items():
        if tdef in WAREHOUSE_TABLES:
            cols = re.search(r"\) WITH \((.*)\) AS \[rows\];$", views[warehouse_name(name)], re.S).group(1)
            table = sqlglot.parse_one(f"CREATE TABLE [t] ({cols})", read="tsql",
                                      error_level=sqlglot.ErrorLevel.RAISE)
            defs = list(table.find_all(sqlglot.exp.ColumnDef))
            assert [d.name for d in defs] == [c.name for c in tdef.columns], name
            assert all(d.this.args.get("quoted") for d in defs), name
    # Milliseconds are added to days, never seconds to 1970: no int overflow after 2038, ms kept.
    flat = re.sub(r"\s+", " ", ddl).replace("( ", "(").replace(" )", ")")
    assert "DATEADD(SECOND" not in flat and "DATEADD(MILLISECOND, CAST([s].[start_ms] % 86400000 AS INTEGER)" in flat


def test_every_string_in_the_lake_fits_the_size_the_dictionary_declares(built):
    with duckdb.connect(str(built["tmp"] / "wh.duckdb"), read_only=True) as con:
        checked = 0
        for name, tdef in TABLES.items():
            if tdef not in WAREHOUSE_TABLES:
                continue
            for col in tdef.columns:
                if col.type == "string" and col.max_bytes is not None:
                    longest = con.execute(f"SELECT MAX(octet_length(encode({col.name}))) FROM {warehouse_name(name)}").fetchone()[0]
                    assert (longest or 0) <= col.max_bytes, (name, col.name, longest)
                    checked += longest is not None
    assert checked > 40


def test_the_ddl_creates_its_data_source_and_credential_when_asked():
    sqlglot = pytest.importorskip("sqlglot")
    ddl = synapse_ddl("lake", data_source="lake_src", lake_url="https://acct.dfs.core.windows.net/fs",
                      credential="gondola_mi")
    head = ddl.split("\nGO\n")[:4]
    assert "CREATE DATABASE SCOPED CREDENTIAL [gondola_mi] WITH IDENTITY = 'Managed Identity'" in head[2]
    assert ("CREATE EXTERNAL DATA SOURCE [lake_src] WITH (LOCATION = 'https://acct.dfs.core.windows.net/fs', "
            "CREDENTIAL = [gondola_mi])") in head[3]
    assert "DATA_SOURCE = 'lake_src'" in ddl and "gondola_lake" not in ddl
    for stmt in head[1:]:
        sqlglot.parse_one(stmt, read="tsql")  # parses as T-SQL


def test_kpis_are_the_measures_of_the_data_dictionary(built):
    with duckdb.connect(str(built["tmp"] / "wh.duckdb"), read_only=True) as con:
        kpis = dict(zip([d[0] for d in con.execute("SELECT * FROM bi_kpis").description],
                        con.execute("SELECT * FROM bi_kpis").fetchone()))
        assert set(kpis) == {m.name for m in MEASURES}
        n, alerted, lost = con.execute("SELECT COUNT(*), SUM(CASE WHEN alerted THEN 1 ELSE 0 END), "
                                       "SUM(lost_sales_cents_est) FROM gold_stockouts").fetchone()
        assert kpis["stockouts"] == n > 0 and kpis["recall_ahead"] == pytest.approx(alerted / n)
        assert kpis["lost_sales_cents"] == pytest.approx(lost)
        by_store = con.execute("SELECT SUM(stockouts), COUNT(*), COUNT(currency) FROM bi_kpis_by_store").fetchone()
        assert by_store == (n, 3, 3)
        # Local time: store s001 is in Europe/Amsterdam (UTC+1 in winter), s002 in UTC.
        rows = con.execute("SELECT store_id, started_at, started_local FROM bi_stockouts").fetchall()
        offsets = {s: (loc - utc).total_seconds() / 3600 for s, utc, loc in rows}
        assert offsets.get("s001") in (1.0, 2.0) and offsets.get("s002") == 0.0


def test_the_cli_reports_counts_and_writes_the_ddl(built, capsys):
    assert cloud_main(built["args"] + ["counts"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"gold\.stockouts\s+\d", out)
    target = built["tmp"] / "synapse.sql"
    assert cloud_main(["synapse-ddl", "--out", str(target)]) == 0
    assert target.read_text() == synapse_ddl("lake")


def test_a_second_all_run_finds_nothing_new(built, capsys):
    # meta.lineage logs every run, a no-op one too; the data tables must not move
    before = {n: built["cloud"].storage.version(n) for n, t in TABLES.items() if t.layer != "meta"}
    assert cloud_main(built["args"] + ["all", "--batch", str(built["tmp"] / "master"), "--html", str(built["tmp"] / "d2.html")]) == 0
    out = capsys.readouterr().out
    assert "0 new bronze rows" in out and "transform: {}" in out
    assert {n: built["cloud"].storage.version(n) for n, t in TABLES.items() if t.layer != "meta"} == before

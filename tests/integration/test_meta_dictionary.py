"""The data dictionary, the Delta schemas and the warehouse agree: same tables, columns and descriptions."""

from __future__ import annotations

import duckdb

from cloud.lake.tables import TABLES
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.warehouse import warehouse_name
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub


def test_delta_field_metadata_and_warehouse_comments_carry_the_dictionary(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    write_master_csvs(tmp_path / "master", stores=2, facings=3)
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    fill_hub(hub, list(day_events(stores=2, facings=3, hours=6)))
    hub.close()
    cloud.ingest_batch(tmp_path / "master")
    cloud.ingest_stream()
    cloud.transform()
    wh = cloud.build_warehouse()

    checked = 0
    for name, tdef in TABLES.items():
        dt = cloud.storage.open(name)
        if dt is None:
            continue
        assert dt.metadata().description == tdef.doc, name
        fields = {f.name: f for f in dt.schema().fields}
        for col in tdef.columns:
            assert col.name in fields, f"{name}.{col.name} missing from the Delta schema"
            assert fields[col.name].metadata.get("comment") == tdef.field_description(col), f"{name}.{col.name}"
            assert fields[col.name].metadata.get("classification") == tdef.classification(col)
            checked += 1
    assert checked > 150

    con = duckdb.connect(str(wh), read_only=True)
    try:
        rows = con.execute("SELECT table_name, column_name, comment FROM duckdb_columns()").fetchall()
        tables = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
    finally:
        con.close()
    comments = {(t, c): text for t, c, text in rows}
    for tdef in TABLES.values():
        if tdef.layer not in ("silver", "gold"):
            continue
        wname = warehouse_name(tdef.name)
        assert tables[wname] == tdef.doc
        for col in tdef.columns:
            assert comments[(wname, col.name)] == tdef.field_description(col), f"{wname}.{col.name}"

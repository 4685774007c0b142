"""The Power BI connection file for the Synapse serverless endpoint."""

from __future__ import annotations

import json

import pytest

from cloud.cli import main as cloud_main
from cloud.powerbi import STAR_SCHEMA, pbids
from cloud.warehouse import BI_VIEWS
from gondola.errors import ConfigError


def test_the_pbids_file_points_power_bi_at_the_synapse_database(tmp_path):
    out = tmp_path / "g.pbids"
    assert cloud_main(["powerbi", "--server", "myws-ondemand.sql.azuresynapse.net", "--database", "gondola",
                       "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    [conn] = doc["connections"]
    assert doc["version"] == "0.1" and conn["details"]["protocol"] == "tds" and conn["mode"] == "DirectQuery"
    assert conn["details"]["address"] == {"server": "myws-ondemand.sql.azuresynapse.net", "database": "gondola"}


@pytest.mark.parametrize("server,database,mode", [("https://x/", "db", "Import"), ("ws.sql", " ", "Import"),
                                                  ("ws.sql", "db", "Live")])
def test_a_bad_server_database_or_mode_is_refused_with_one_line(server, database, mode):
    with pytest.raises(ConfigError) as err:
        pbids(server, database, mode=mode)
    assert "\n" not in str(err.value)


def test_the_star_schema_names_only_views_the_warehouse_has():
    assert set(STAR_SCHEMA["facts"]) | set(STAR_SCHEMA["dimensions"]) <= set(BI_VIEWS)

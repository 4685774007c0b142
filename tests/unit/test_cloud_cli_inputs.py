"""`gondola cloud`'s refusal of missing inputs (outside check, session 8)."""

from __future__ import annotations

from argparse import Namespace

import pytest

from cloud.cli import check_inputs
from gondola.errors import ConfigError


def _args(tmp_path, command: str, warehouse) -> Namespace:
    return Namespace(command=command, lake=str(tmp_path / "no-lake"), hub=str(tmp_path / "hub.sqlite"),
                     warehouse=str(warehouse), local_hub=True)


def test_the_dashboard_of_an_existing_warehouse_needs_no_lake_but_one_to_build_needs_it(tmp_path):
    # `gondola cloud dashboard --warehouse W --html H` said "no lake at out/lake" although it
    # reads only W; a lake is needed only when the warehouse must be built first.
    warehouse = tmp_path / "wh.duckdb"
    warehouse.write_bytes(b"")
    check_inputs(_args(tmp_path, "dashboard", warehouse))
    with pytest.raises(ConfigError, match="no lake at"):
        check_inputs(_args(tmp_path, "dashboard", tmp_path / "missing.duckdb"))
    with pytest.raises(ConfigError, match="no lake at"):  # the warehouse step still reads the lake
        check_inputs(_args(tmp_path, "warehouse", warehouse))

"""Scenario files and constructors."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim import Scenario
from firmware_sim.scenario import FaultParams
from gondola.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_scenario_has_every_fault_switched_off():
    faults = Scenario.default().faults
    assert all(getattr(faults, name) == 0 for name in
               ("drops", "duplicates", "reorders", "late", "malformed", "clock_skew", "reboots", "outages", "power_losses"))
    assert Scenario.no_faults().faults == FaultParams()


def test_with_faults_switches_on_only_the_named_ones():
    sc = Scenario.with_faults(duplicates=0.05, drops=0.01)
    assert sc.faults.duplicates == 0.05 and sc.faults.drops == 0.01
    assert sc.faults.reorders == 0.0
    assert sc.demand == Scenario.default().demand


def test_with_faults_rejects_an_unknown_fault_name():
    with pytest.raises(ConfigError, match="unknown fault"):
        Scenario.with_faults(gremlins=0.5)


def test_shipped_scenario_files_load_with_their_seed():
    default = Scenario.load(ROOT / "scenarios" / "default.toml")
    faults = Scenario.load(ROOT / "scenarios" / "faults.toml")
    assert default.seed == 42 and default.name == "default"
    assert "2026-12-25" in default.demand.holidays
    assert faults.faults.duplicates > 0 and faults.faults.outages > 0


def test_scenario_file_with_an_unknown_parameter_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[demand]\nmean_units_per_sku_day = 2.0\nshoppers_per_hour = 9\n")
    with pytest.raises(ConfigError, match="shoppers_per_hour"):
        Scenario.load(path)


def test_scenario_file_that_is_not_toml_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[demand\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Scenario.load(path)


def test_missing_scenario_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Scenario.load(tmp_path / "nope.toml")


def test_scenario_round_trips_through_its_dict():
    sc = Scenario.with_faults(late=0.1)
    assert Scenario.from_dict(sc.to_dict()) == sc


@pytest.mark.parametrize("section,body", [
    ("faults", "drops = 1.5"),
    ("demand", "response_no_buy = 0.5"),
    ("demand", "close_hour = 5.0"),
    ("replenishment", 'restock_times = ["25:00"]'),
    ("devices", "step_min = 7"),
])
def test_scenario_values_out_of_range_are_refused(tmp_path, section, body):
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{body}\n")
    with pytest.raises(ConfigError):
        Scenario.load(path)


@pytest.mark.parametrize("section,body,message", [
    ("demand", 'mean_units_per_sku_day = "lots"', r"\[demand\] mean_units_per_sku_day: expected a number, got str"),
    ("demand", "weekday_factors = [1, 1, 1, 1, 1, 1, \"x\"]", r"weekday_factors: expected a list of numbers"),
    ("replenishment", "restock_times = [630]", r"restock_times: expected a list of text"),
    ("replenishment", "capacity_bounds = 4", r"capacity_bounds: expected a list of integers, got int"),
    ("devices", "heartbeat_min = true", r"heartbeat_min: expected an integer, got bool"),
    ("devices", "step_min = 5.5", r"step_min: expected an integer, got float"),
    ("demand", "registers = \"two\"", r"registers: expected an integer, got str"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_parameter(tmp_path, section, body, message):
    # A user's scenario file with a typo'd value gets a sentence naming the parameter, not
    # Python's "'<=' not supported between instances of 'str' and 'int'".
    path = tmp_path / "typo.toml"
    path.write_text(f"[{section}]\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        Scenario.load(path)


def test_integers_are_accepted_where_numbers_are_expected(tmp_path):
    path = tmp_path / "ints.toml"
    path.write_text("[demand]\nmean_units_per_sku_day = 3\nopen_hour = 8\n"
                    "weekday_factors = [1, 1, 1, 1, 1, 1, 1]\n[faults]\ndrops = 0\n")
    sc = Scenario.load(path)
    assert sc.demand.mean_units_per_sku_day == 3 and sc.demand.weekday_factors == (1, 1, 1, 1, 1, 1, 1)

"""The demo refuses bad options and never deletes a folder it did not make."""

from __future__ import annotations

import pytest

from gondola.demo import DemoConfig, _prepare_out, main
from gondola.errors import ConfigError


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(stores=0), "--stores"),
        (dict(skus=5), "--skus"),
        (dict(days=0), "--days"),
        (dict(broker="rabbit"), "--broker"),
        (dict(tick_min=0), "--tick-min"),
    ],
)
def test_bad_options_are_refused_naming_the_option(change, words):
    with pytest.raises(ConfigError, match=words):
        DemoConfig(**change).validate()


def test_an_output_folder_not_made_by_the_demo_is_left_untouched(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not made by 'gondola demo'"):
        _prepare_out(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_previous_demo_output_is_replaced(tmp_path):
    out = tmp_path / "demo"
    _prepare_out(out)
    (out / "old-summary.json").write_text("{}")
    _prepare_out(out)
    assert not (out / "old-summary.json").exists()
    assert (out / ".gondola-demo").exists()


def test_an_unknown_model_file_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        main(["--model", str(tmp_path / "missing.tflite"), "--out", str(tmp_path / "demo"), "--quiet"])
    assert not (tmp_path / "demo").exists()


def test_the_demo_takes_the_scenario_files_seed_unless_told_otherwise(tmp_path):
    # `gondola demo --scenario FILE` used to run seed 7 whatever the file said (`gondola sim` uses it).
    from gondola.demo import parse_config

    path = tmp_path / "store.toml"
    path.write_text('name = "unseen"\nseed = 913\n')
    assert parse_config(["--scenario", str(path)]).seed == 913
    assert parse_config(["--scenario", str(path), "--seed", "5"]).seed == 5
    assert parse_config([]).seed == 7

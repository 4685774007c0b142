"""The demo refuses bad options and never deletes a folder it did not make."""

from __future__ import annotations

from pathlib import Path

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


def test_component_warnings_go_to_a_log_file_not_the_demos_terminal(tmp_path):
    # `gondola demo --scenario scenarios/faults.toml` printed one "quarantined a message ..." line
    # per device and reason among its progress lines (135 on a 3-store run). A fresh interpreter,
    # as `gondola demo` runs: no logging configured, so Python's last-resort handler prints warnings.
    import os
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from gondola.demo import warnings_to_file\n"
        "with warnings_to_file() as kept:\n"
        "    logging.getLogger('edge.collector').warning('quarantined a message from device %s: %s', 'd1', 'bad_json')\n"
        "    logging.getLogger('edge.collector').info('not kept')\n"
        "print(kept.count, file=sys.stdout)\n"
        "kept.write(Path(sys.argv[1]))\n"
        "logging.getLogger('edge.collector').warning('after the demo')\n"
    )
    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "warnings.log"
    proc = subprocess.run([sys.executable, "-c", script, str(log)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert proc.stderr == "after the demo\n"  # only the line logged after the block reached the terminal
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING edge.collector: quarantined a message from device d1: bad_json")


def test_the_warnings_line_names_the_components_that_logged_them():
    # Outside check (session 8): `make demo` on a fresh clone said "6 warning(s) from the gateways
    # and the cloud (quarantined messages, ...)" while all 6 were the retraining round's threshold
    # notes (models.pipeline) and the gateways had quarantined nothing.
    import logging

    from gondola.demo import _KeptWarnings

    kept = _KeptWarnings()
    loggers = [logging.getLogger(f"qa_test.{name}") for name in ("models.pipeline", "edge.collector")]
    for lg in loggers:
        lg.addHandler(kept)
    try:
        for lg, n in zip(loggers, (3, 2)):
            for _ in range(n):
                lg.warning("w")
        loggers[1].info("not kept")
    finally:
        for lg in loggers:
            lg.removeHandler(kept)
    assert kept.count == 5
    assert kept.describe() == "5 warning(s) (qa_test.models.pipeline 3, qa_test.edge.collector 2)"


def test_the_printed_table_says_how_many_stock_outs_the_detections_found_and_where_figures_are_defined():
    """Read as a store manager would (outside check): the table gave the detections' precision
    and delay but not how many of the empty shelves they found, and named no page defining its
    figures."""
    from gondola.demo import format_summary

    summary = {
        "devices": {"emitted": {"pos.line": 10}, "sent_messages": {"pos.line": 10}},
        "gateways": {"committed": 10, "quarantined": 0, "uplinked": 12, "seq_gaps": 0, "scorer": ["m1"]},
        "tables": {"bronze.events": 12}, "cloud": {"duplicates_removed": 0},
        "alerts": {"ground_truth_stockouts": 8, "stockouts_starting_with_stock": 5, "raised": 4, "alerts": 1,
                   "precision": 1.0, "recall": 0.2, "median_lead_min": 30.0,
                   "forecast_outcomes": {"warned_ahead": 1, "on_empty_shelf": 0, "false": 0},
                   "empty_now": {"raised": 3, "precision": 1.0, "detected": 0.375, "median_delay_min": 11.0}},
        "paths": {"dashboard": "d.html", "warehouse": "w.duckdb"}, "seconds": {"total": 1.0},
    }
    text = format_summary(summary)
    [found] = [line for line in text.splitlines() if line.startswith("  stock-outs found (share of all)")]
    assert found.split()[-1] == "0.38"
    assert text.endswith("docs/summary.md (the keys of summary.json)")


def test_a_forecast_on_a_shelf_empty_from_before_the_first_cycle_is_right_and_left_out_of_recall():
    """Precision was judged on the stock-outs starting after the first cycle only (recall's
    denominator): a forecast raised on a shelf empty since the run began counted as a false alarm,
    while docs/summary.md, forecast_outcomes (on_empty_shelf) and the lake (already_empty) call it right."""
    from gondola.demo import judge_alerts

    t0, minute = 1_767_600_000_000, 60_000
    stockouts = [("s001", "f1", t0, t0 + 300 * minute),  # empty from the start
                 ("s001", "f2", t0 + 100 * minute, None)]  # empties later, with stock at the first cycle
    forecasts = [("s001", "f1", t0 + 30 * minute),  # on the shelf empty from the start
                 ("s001", "f2", t0 + 40 * minute),  # 60 min ahead of f2's stock-out
                 ("s001", "f3", t0 + 50 * minute)]  # no stock-out: false
    detections = [("s001", "f1", t0 + 20 * minute)]
    got = judge_alerts(forecasts, detections, stockouts, first_cycle_ms=t0 + 15 * minute, horizon_ms=120 * minute)
    assert (got["alerts"], got["true_alerts"], got["precision"]) == (3, 2, 2 / 3)
    assert (got["stockouts"], got["stockouts_starting_with_stock"], got["caught"], got["recall"]) == (1, 1, 1, 1.0)
    assert got["forecast_outcomes"] == {"warned_ahead": 1, "on_empty_shelf": 1, "false": 1}
    assert (got["raised"], got["ground_truth_stockouts"]) == (4, 2)
    assert got["empty_now"] == {"raised": 1, "precision": 1.0, "detected": 0.5, "median_delay_min": 20.0}

"""`gondola eval`'s checks of its input folders."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_eval_refuses_a_folder_that_is_no_history_before_building_any_feature_rows(tmp_path, monkeypatch, capsys):
    # Outside check (session 8): a mistyped --test-data folder was reported only after the
    # training stores' rows and every scorer's thresholds had been computed (minutes).
    import models.cli as cli
    from gondola.cli import main as gondola

    train = tmp_path / "train"
    train.mkdir()
    (train / "scenario.json").write_text("{}")

    def no_rows(*_a, **_k):
        raise AssertionError("feature rows were built before the folders were checked")

    monkeypatch.setattr(cli, "_load_rows", no_rows)
    artifacts = Path(__file__).resolve().parents[2] / "models" / "artifacts"
    rc = gondola(["eval", "--model", str(artifacts), "--train-data", str(train),
                  "--test-data", str(tmp_path / "typo"), "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{tmp_path / 'typo'} is not a simulator history folder" in err and "AssertionError" not in err


@pytest.mark.parametrize("bad", ["-1", "inf", "nan"])
def test_eval_refuses_a_bad_alert_budget_before_building_any_feature_rows(tmp_path, monkeypatch, capsys, bad):
    # Review (session 8): --forecasts-per-store-day was checked only after the training rows were
    # built (minutes; without --model, after a whole training run), and 'inf' passed that check
    # and then failed in AlertBudget with a ValueError saying it must be >= 0.
    import models.cli as cli
    from gondola.cli import main as gondola

    folders = []
    for name in ("train", "test"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scenario.json").write_text("{}")
        folders.append(str(tmp_path / name))

    def no_rows(*_a, **_k):
        raise AssertionError("feature rows were built before the option was checked")

    monkeypatch.setattr(cli, "_load_rows", no_rows)
    artifacts = Path(__file__).resolve().parents[2] / "models" / "artifacts"
    rc = gondola(["eval", "--model", str(artifacts), "--train-data", folders[0], "--test-data", folders[1],
                  "--work", str(tmp_path / "w"), "--forecasts-per-store-day", bad])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"--forecasts-per-store-day must be a number >= 0 (0: no budget), got {float(bad)}" in err
    assert "AssertionError" not in err and "ValueError" not in err

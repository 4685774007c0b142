"""`gondola eval`'s checks of its input folders."""

from __future__ import annotations

from pathlib import Path


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

"""The command line follows the usual conventions (issue 16): --version, options after the
subcommand, one-line errors that create nothing, tracebacks only with --debug, quiet progress
off a terminal."""

from __future__ import annotations

import io

import pytest

import gondola
from gondola import cli
from gondola.progress import Progress


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def files_under(path) -> list:
    return sorted(p.relative_to(path) for p in path.rglob("*"))


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_version_prints_the_package_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"gondola {gondola.__version__}"


def test_common_options_are_accepted_after_the_subcommand(capsys, tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    rc, out, err = run(capsys, "cloud", "counts", "--lake", str(lake))
    assert rc == 0, err
    # ... and the one after the subcommand wins over the one before it
    rc, _, err = run(capsys, "cloud", "--lake", str(lake), "counts", "--lake", str(tmp_path / "typo"))
    assert rc == 1 and "typo" in one_line_error(err)


@pytest.mark.parametrize("argv, names", [
    (["cloud", "--hub", "{tmp}/missing/hub.sqlite", "ingest-stream"], "missing/hub.sqlite"),
    (["cloud", "ingest-batch", "{tmp}/no-such-folder"], "no-such-folder"),
    (["cloud", "counts", "--lake", "{tmp}/no-lake"], "no-lake"),
    (["cloud", "transform", "--lake", "{tmp}/no-lake"], "no-lake"),
    (["cloud", "model-status", "--devices", "gw-s001"], "out/hub.sqlite"),
    (["cloud", "publish-model", "{tmp}/nope.tflite", "--devices", "gw-s001", "--hub", "{tmp}/h.sqlite"],
     "h.sqlite"),
    (["edge", "run", "--store-id", "s001", "--broker", "localhost:notaport", "--data-dir", "{tmp}/gw"],
     "HOST:PORT"),
    (["edge", "run", "--store-id", "s001", "--planogram", "{tmp}/planogram.csv", "--data-dir", "{tmp}/gw"],
     "planogram.csv"),
])
def test_a_missing_input_is_one_line_a_nonzero_exit_and_creates_nothing(capsys, tmp_path, monkeypatch,
                                                                         argv, names):
    monkeypatch.chdir(tmp_path)  # model-status's default hub would be ./out/hub.sqlite
    rc, out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 1
    assert names in one_line_error(err)
    assert files_under(tmp_path) == []


def test_broker_option_takes_host_or_host_and_port():
    from edge.cli import parse_broker

    assert parse_broker("mosquitto") == ("mosquitto", 1883)
    assert parse_broker("10.0.0.5:1884") == ("10.0.0.5", 1884)
    assert parse_broker(":1885") == ("127.0.0.1", 1885)


def _boom(argv):
    raise ValueError("deep inside")


def test_tracebacks_only_with_debug(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "boom", (f"{__name__}:_boom", "raises"))
    monkeypatch.delenv("GONDOLA_DEBUG", raising=False)
    rc, _, err = run(capsys, "boom")
    line = one_line_error(err)
    assert rc == 1 and "ValueError: deep inside" in line and "--debug" in line
    with pytest.raises(ValueError, match="deep inside"):
        cli.main(["boom", "--debug"])
    monkeypatch.setenv("GONDOLA_DEBUG", "1")
    with pytest.raises(ValueError):
        cli.main(["boom"])


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_quiet_off_a_terminal_and_redraws_on_one():
    log = io.StringIO()
    bar = Progress(50, "simulating", stream=log)
    for _ in range(50):
        bar.advance()
    assert "\r" not in log.getvalue()
    assert log.getvalue().count("\n") == 1 and log.getvalue().startswith("simulating: done (50)")
    tty = _Tty()
    bar = Progress(3, "simulating", stream=tty)
    for _ in range(3):
        bar.advance()
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("\n")

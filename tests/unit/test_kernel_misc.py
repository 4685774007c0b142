"""Clock, privacy and the CLI dispatcher."""

from __future__ import annotations

import threading

import pytest

from gondola import cli
from gondola.clock import SimClock, iso_to_ms, ms_to_iso
from gondola.errors import ConfigError
from gondola.privacy import check_key, pseudonymize
from gondola.topics import device_topic, parse_device_topic, store_subscription


def test_iso_round_trip():
    assert ms_to_iso(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert iso_to_ms("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert iso_to_ms("2023-11-14T23:13:20.123+01:00") == 1_700_000_000_123


def test_sim_clock_only_moves_forward_and_wakes_waiters():
    clock = SimClock(100)
    clock.advance_to(50)
    assert clock.now_ms() == 100
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(clock.wait_until(500, timeout=10)))
    waiter.start()
    clock.advance_to(500)
    waiter.join(10)
    assert woke == [True]
    assert clock.wait_until(10_000, timeout=0.01) is False


def test_pseudonyms_are_stable_keyed_and_do_not_contain_the_id():
    key = b"k" * 32
    p = pseudonymize("LOYAL-123456", key)
    assert p == pseudonymize("LOYAL-123456", key)
    assert p != pseudonymize("LOYAL-123456", b"j" * 32)
    assert len(p) == 32 and "123456" not in p


def test_short_pseudonym_keys_are_refused():
    with pytest.raises(ConfigError):
        check_key(b"short")


def test_topics_round_trip_and_reject_foreign_topics():
    topic = device_topic("s001", "pos", "pos-1")
    assert parse_device_topic(topic) == ("s001", "pos", "pos-1")
    assert parse_device_topic("gondola/s001/fridge/x") is None
    assert parse_device_topic("other/s001/pos/x") is None
    assert store_subscription("s001") == ["gondola/s001/pos/+", "gondola/s001/shelf/+", "gondola/s001/handheld/+"]
    with pytest.raises(ValueError):
        device_topic("s001", "fridge", "x")


def test_cli_lists_every_command_and_rejects_unknown_ones(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    # `gondola sim scenario FILE | head` used to print "gondola sim: Broken pipe" on stderr.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "gondola.cli", "sim", "scenario"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(root)})
    proc.stdout.close()  # the reader is gone before the command writes (imports come first)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""

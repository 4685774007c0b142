"""The stream benchmark's environment variables are checked: a typo stops it with the variable named."""

from __future__ import annotations

import pytest

from bench.bench_stream import PARTS, PHANTOM_SETS, env_names, env_workers


def test_a_set_name_the_benchmark_does_not_know_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv("BENCH_STREAM_PHANTOM_SETS", "held_out,heldout")
    with pytest.raises(ValueError, match="BENCH_STREAM_PHANTOM_SETS.*heldout"):
        env_names("BENCH_STREAM_PHANTOM_SETS", tuple(PHANTOM_SETS))
    monkeypatch.setenv("BENCH_STREAM_PHANTOM_SETS", " fresh ,training")
    assert env_names("BENCH_STREAM_PHANTOM_SETS", tuple(PHANTOM_SETS)) == ["fresh", "training"]
    monkeypatch.delenv("BENCH_STREAM_PARTS", raising=False)
    assert env_names("BENCH_STREAM_PARTS", PARTS) == list(PARTS)


@pytest.mark.parametrize("text", ["0", "four", "-2", ""])
def test_a_worker_count_that_is_not_a_whole_number_of_at_least_one_is_refused(monkeypatch, text):
    monkeypatch.setenv("BENCH_STREAM_WORKERS", text)
    with pytest.raises(ValueError, match="BENCH_STREAM_WORKERS"):
        env_workers()
    monkeypatch.setenv("BENCH_STREAM_WORKERS", "2")
    assert env_workers() == 2

"""Benchmarks: ``make bench`` runs every ``bench/bench_*.py``.

Each module has ``run(quick: bool = False) -> dict``: it measures a figure beside its peer in
the same run, prints both with their ratio, and returns them; ``python -m bench`` writes the
result to ``bench/results/<name>.json`` with the machine it ran on.
"""

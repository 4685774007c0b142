"""Deterministic random generators, one per (seed, store, component[, day]).

Each component draws from its own stream, so adding a draw to one component never shifts
another's numbers, and a day's outcome does not depend on how often ``run_until`` is called.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["component_rng"]


def _key(part: int | str) -> int:
    # Negative numbers (day -1: the order placed before the first day) map to their own keys.
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part) % (1 << 64)


def component_rng(seed: int, *parts: int | str) -> np.random.Generator:
    """A PCG64 generator seeded from the seed and the names/numbers that identify its use."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(_key(p) for p in parts)]))

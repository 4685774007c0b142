"""Scorers: turn a feature matrix into stock-out probabilities, in one batched call.

``Scorer`` is the role; ``PoissonScorer`` is the statistical baseline every gateway has; model
runtimes (LiteRT int8, ONNX) implement the same interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.baseline import poisson_stockout_prob
from models.features import FEATURES

__all__ = ["Scorer", "PoissonScorer", "DEFAULT_HORIZON_H"]

DEFAULT_HORIZON_H = 2.0
_UNITS = FEATURES.index("units_est")
_RATE = FEATURES.index("rate_24h")


class Scorer(Protocol):
    """Scores all facings at once."""

    name: str
    horizon_h: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, len(FEATURES)) float32 -> (n,) probabilities of a stock-out within the horizon."""
        ...


class PoissonScorer:
    """Poisson depletion on the 24-hour decayed sales rate: the baseline and the fallback."""

    name = "baseline-poisson"

    def __init__(self, horizon_h: float = DEFAULT_HORIZON_H):
        if horizon_h <= 0:
            raise ValueError(f"horizon must be positive, got {horizon_h}")
        self.horizon_h = horizon_h

    def score(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(FEATURES):
            raise ValueError(f"expected (n, {len(FEATURES)}) features, got {features.shape}")
        return poisson_stockout_prob(features[:, _RATE], features[:, _UNITS], self.horizon_h)

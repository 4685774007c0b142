"""Scorers: turn a feature matrix into stock-out probabilities, in one batched call.

``Scorer`` is the role; ``PoissonScorer`` is the statistical baseline every gateway has; model
runtimes (LiteRT int8, ONNX) implement the same interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.baseline import poisson_stockout_prob
from models.features import FEATURES

__all__ = ["Scorer", "PoissonScorer", "ZeroSalesScorer", "BaselineScorer", "DEFAULT_HORIZON_H"]

DEFAULT_HORIZON_H = 2.0
_UNITS = FEATURES.index("units_est")
_RATE = FEATURES.index("rate_24h")
_SENSOR = FEATURES.index("has_sensor")
_EXPECTED_SINCE_SALE = FEATURES.index("demand_since_sale")


def _check(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != len(FEATURES):
        raise ValueError(f"expected (n, {len(FEATURES)}) features, got {features.shape}")
    return features


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
    #: Suggested alert threshold (a model's comes from its manifest); None: the caller decides.
    threshold: float | None = None

    def __init__(self, horizon_h: float = DEFAULT_HORIZON_H):
        if horizon_h <= 0:
            raise ValueError(f"horizon must be positive, got {horizon_h}")
        self.horizon_h = horizon_h

    def score(self, features: np.ndarray) -> np.ndarray:
        features = _check(features)
        return poisson_stockout_prob(features[:, _RATE], features[:, _UNITS], self.horizon_h)


class ZeroSalesScorer:
    """Zero-sales run detector: 1 - P(no sale for this long | the facing's usual demand).

    Uses ``demand_since_sale`` (units the hour-of-day profile expected since the last sale), so
    a silence over the closed night is not evidence. Meant for facings without a sensor; it
    ignores the horizon (it says "empty now").
    """

    name = "baseline-zero-sales"
    threshold: float | None = None

    def __init__(self, horizon_h: float = DEFAULT_HORIZON_H):
        self.horizon_h = horizon_h

    def score(self, features: np.ndarray) -> np.ndarray:
        features = _check(features)
        return 1.0 - np.exp(-np.maximum(features[:, _EXPECTED_SINCE_SALE].astype(np.float64), 0.0))


class BaselineScorer:
    """The best statistical baseline per facing: Poisson depletion where a sensor reports, the
    larger of Poisson and the zero-sales detector where only the till speaks."""

    name = "baseline-combined"
    threshold: float | None = None

    def __init__(self, horizon_h: float = DEFAULT_HORIZON_H):
        self._poisson = PoissonScorer(horizon_h)
        self._zero = ZeroSalesScorer(horizon_h)
        self.horizon_h = horizon_h

    def score(self, features: np.ndarray) -> np.ndarray:
        features = _check(features)
        p = self._poisson.score(features)
        z = self._zero.score(features)
        return np.where(features[:, _SENSOR] > 0.5, p, np.maximum(p, z))

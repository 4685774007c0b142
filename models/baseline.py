"""Statistical stock-out baselines (no training needed; the gateway's fallback).

* Poisson depletion: demand over the horizon H is Poisson(rate * H); the shelf empties when it
  reaches the units on shelf, so P(stock-out within H) = P(N >= units).
* Zero-sales run: for a facing without a sensor, a run of g hours without a sale at expected
  rate r has probability exp(-r g); the longer and less likely the silence, the more likely the
  shelf is empty now.

Vectorised numpy, no scipy: the Poisson tail is summed term by term, which is exact enough for
shelf sizes (the sum stops at the largest units count in the batch).
"""

from __future__ import annotations

import numpy as np

__all__ = ["poisson_tail", "poisson_stockout_prob", "zero_sales_prob"]


def poisson_tail(lam: np.ndarray, k: np.ndarray) -> np.ndarray:
    """P(N >= k) for N ~ Poisson(lam), elementwise; k <= 0 gives 1."""
    lam = np.asarray(lam, dtype=np.float64)
    k = np.ceil(np.asarray(k, dtype=np.float64)).astype(np.int64)
    lam, k = np.broadcast_arrays(lam, k)
    kmax = int(k.max(initial=0))
    pmf = np.exp(-lam)
    cdf_below = np.zeros_like(lam)  # P(N < k), accumulated
    for j in range(kmax):
        cdf_below += np.where(j < k, pmf, 0.0)
        pmf = pmf * lam / (j + 1)
    return np.clip(1.0 - cdf_below, 0.0, 1.0)


def poisson_stockout_prob(rate_per_h: np.ndarray, units: np.ndarray, horizon_h: float) -> np.ndarray:
    """Probability that demand over ``horizon_h`` hours empties ``units`` (Poisson depletion)."""
    return poisson_tail(np.maximum(np.asarray(rate_per_h, dtype=np.float64), 0.0) * horizon_h, units)


def zero_sales_prob(rate_per_h: np.ndarray, hours_without_sale: np.ndarray) -> np.ndarray:
    """Evidence that a facing is empty now: 1 - P(a silence this long | the usual rate)."""
    rate = np.maximum(np.asarray(rate_per_h, dtype=np.float64), 0.0)
    return 1.0 - np.exp(-rate * np.asarray(hours_without_sale, dtype=np.float64))

"""An alert budget per store-day: at most about N forecasts a day, the surest first.

A fixed forecast threshold raises more alerts, right and wrong, on a store with more shelves
near empty: a count per store-day grows with how busy the store is, so a threshold picked on
the validation stores cannot hold a false-alert goal per store-day on a busier one (QA's
``busy-promo`` store: 34 forecasts and 8.7 false ones a store-day at the package's threshold).
The budget is a cap on forecasts raised per store-day that a store's threshold rises to keep:

* Every cycle, the store's **would-be forecasts** are tracked: the episodes the package's own
  threshold would raise (the gateway's hysteresis at ``raise_at`` / ``clear_at``, with its
  blocks: no forecast on a facing alerted empty now, nor before a sale), each with the highest
  score it has reached so far (its *peak*). They do not depend on the budget, so the rule has no
  feedback: a day the budget bites does not lower the next day's threshold.
* The store's threshold for a cycle is the package's, unless more than ``K = forecasts_per_day
  x days`` would-be forecasts began in the last ``days`` (``window_days``, 7; less while the
  store has been watched less, at least 1): then it sits just above the peak of the (K+1)-th
  surest of them, so about K of them would have been raised. Read: "at most about N warnings a
  day, the surest first", on the store's own last week.
* Since the clear level is the same (the package's), an episode at the store's threshold lies
  inside one at the package's: the budget drops whole forecasts and never adds one, but a forecast
  it keeps may be raised later in its episode (when its score reaches the store's threshold: less
  lead; f2 in tests/unit/test_alert_budget.py is raised an hour after the package would).

Deterministic, computed from the store's own scores (no truth), the same in the gateway
(``edge.inference``), the cloud stream (``cloud.stream.scoring``) and the evaluation's replay
(``models.evaluation.evaluate_alert_kinds``): all three call :class:`ForecastBudget`. A cycle's
threshold is read from the state before that cycle's scores are folded in.

``empty_now`` is not budgeted: a shelf empty now is a fact to act on, and its threshold holds
its own precision goal (docs/model.md, *An alert budget per store-day*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from gondola.clock import DAY_MS

__all__ = ["AlertBudget", "ForecastBudget", "FORECASTS_PER_STORE_DAY", "BUDGET_WINDOW_DAYS",
           "FORECAST_FALSE_BUDGET", "VALIDATION_FORECAST_PRECISION", "CLEAR_AT", "clear_level"]

#: False forecasts per store-day the budget is sized for: ``models.pipeline.FALSE_ALERT_BUDGET``
#: (4 false alerts of both kinds a store-day: the goal's 5 less 1 for stores unlike the
#: validation ones) less the worst validation source's false ``empty_now`` alerts (0.49 a
#: store-day, train-varied-a-s11, shipped int8 package; docs/model.md).
FORECAST_FALSE_BUDGET = 3.5
#: Precision of the shipped int8 package's forecasts at its threshold on the worst validation
#: source (train-varied-a-s11: 0.718; pooled 0.799), replayed as the gateway raises them.
VALIDATION_FORECAST_PRECISION = 0.718
#: Forecasts raised per store-day at most (about): FORECAST_FALSE_BUDGET / (1 - precision) =
#: 12.4, rounded down. Validation sources raise 1.9-10.3 a store-day at the package's threshold.
FORECASTS_PER_STORE_DAY = 12.0
#: Days of the store's own would-be forecasts the threshold is read from.
BUDGET_WINDOW_DAYS = 7.0
#: The gateway's default clear level (``GONDOLA_CLEAR_AT``): a raised alert clears at or below it.
CLEAR_AT = 0.3


def clear_level(raise_at: float, setting: float = CLEAR_AT) -> float:
    """The clear level for a raise threshold: ``setting`` (the gateway's ``clear_at``), at most half
    of ``raise_at``. One rule for the gateway (``edge.inference``), the cloud (``cloud.stream.scoring``)
    and the evaluation, so their budgets' would-be forecasts end alike."""
    return min(setting, raise_at / 2)


@dataclass(frozen=True)
class AlertBudget:
    """The budget's parameters (a package manifest's ``alert_budget``; the gateway's settings
    may override them). ``forecasts_per_day`` None or 0: no budget."""

    forecasts_per_day: float | None = FORECASTS_PER_STORE_DAY
    window_days: float = BUDGET_WINDOW_DAYS

    def __post_init__(self) -> None:
        if self.forecasts_per_day is not None and not (self.forecasts_per_day >= 0 and math.isfinite(self.forecasts_per_day)):
            raise ValueError(f"forecasts_per_day must be >= 0, got {self.forecasts_per_day}")
        if not (self.window_days >= 1 and math.isfinite(self.window_days)):
            raise ValueError(f"window_days must be >= 1, got {self.window_days}")

    @property
    def on(self) -> bool:
        return bool(self.forecasts_per_day)

    def to_manifest(self) -> dict:
        return {"forecasts_per_store_day": self.forecasts_per_day, "window_days": self.window_days}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | None) -> "AlertBudget":
        """The manifest's ``alert_budget`` (``{"forecasts_per_store_day": N, "window_days": D}``),
        else the defaults (a manifest from before the budget: the same package, budgeted).

        Raises:
            ValueError: a value that is not a number >= 0 (window: >= 1).
        """
        raw = (manifest or {}).get("alert_budget")
        if not isinstance(raw, Mapping):
            return cls()
        n = raw.get("forecasts_per_store_day", FORECASTS_PER_STORE_DAY)
        return cls(None if n is None else float(n), float(raw.get("window_days", BUDGET_WINDOW_DAYS)))


def budget_of(scorer: Any) -> AlertBudget:
    """A scorer's budget (``alert_budget`` set from its manifest by ``models.runtime``); the
    baselines and scorers without one: the defaults."""
    budget = getattr(scorer, "alert_budget", None)
    return budget if isinstance(budget, AlertBudget) else AlertBudget()


class ForecastBudget:
    """One store's budget state: its would-be forecasts of the last days and its threshold.

    ``n`` facings, the package's ``raise_at`` and ``clear_at`` (the gateway's clear level).
    Call :meth:`threshold` before a cycle's alerts are stepped, then :meth:`observe` with the
    cycle's forecast scores and the facings that may not raise (``block``)."""

    def __init__(self, n: int, raise_at: float, clear_at: float, budget: AlertBudget = AlertBudget()):
        self.n, self.raise_at, self.clear_at, self.budget = n, float(raise_at), float(clear_at), budget
        self.on = np.zeros(n, dtype=bool)  # a would-be forecast is on (hysteresis at raise_at)
        self.open = np.full(n, -1, dtype=np.int64)  # its index in starts/peaks
        self.starts = np.zeros(0, dtype=np.int64)
        self.peaks = np.zeros(0, dtype=np.float64)
        self.first_ms: int | None = None

    def threshold(self, now_ms: int) -> float:
        """The store's forecast threshold for the cycle at ``now_ms`` (>= ``raise_at``; above 1.0,
        so that no score raises, when more than the budget's would-be forecasts peaked at 1.0)."""
        if not self.budget.on or self.first_ms is None or not len(self.peaks):
            return self.raise_at
        window = self.budget.window_days
        days = min(max((now_ms - self.first_ms) / DAY_MS, 1.0), window)
        k = int(self.budget.forecasts_per_day * days)
        recent = self.peaks[self.starts > now_ms - window * DAY_MS]
        if len(recent) <= k:
            return self.raise_at
        kth = np.partition(recent, len(recent) - k - 1)[len(recent) - k - 1]  # the (k+1)-th surest
        # Just above it, also above 1.0 when it is 1.0 (clipped or int8 scores reach 1.0 exactly):
        # capped at 1.0, every score of 1.0 would still raise, over the budget.
        return float(max(self.raise_at, np.nextafter(kth, np.inf)))

    def observe(self, now_ms: int, probs: np.ndarray, block: np.ndarray | None = None,
                idx: np.ndarray | None = None) -> None:
        """Fold one cycle's forecast scores in: ``probs`` of every facing, or of the facings
        ``idx``; ``block``: those that may not raise (as the alert step's)."""
        if self.first_ms is None:
            self.first_ms = int(now_ms)
        idx = np.arange(self.n) if idx is None else np.asarray(idx, dtype=np.int64)
        p = np.asarray(probs, dtype=np.float64)
        free = np.ones(len(idx), dtype=bool) if block is None else ~np.asarray(block, dtype=bool)
        on = self.on[idx]
        down = on & (p <= self.clear_at)
        grow = on & ~down & free
        if grow.any():
            ep = self.open[idx[grow]]
            np.maximum.at(self.peaks, ep, p[grow])
        up = ~on & (p >= self.raise_at) & free
        if down.any():
            self.on[idx[down]] = False
            self.open[idx[down]] = -1
        if up.any():
            new = idx[up]
            self.open[new] = len(self.peaks) + np.arange(len(new))
            self.on[new] = True
            self.starts = np.concatenate([self.starts, np.full(len(new), int(now_ms), dtype=np.int64)])
            self.peaks = np.concatenate([self.peaks, p[up]])
        self._forget(now_ms)

    def _forget(self, now_ms: int) -> None:
        """Drop would-be forecasts older than the window that are no longer on."""
        if not len(self.starts) or self.starts[0] > now_ms - self.budget.window_days * DAY_MS:
            return
        keep = self.starts > now_ms - self.budget.window_days * DAY_MS
        keep[self.open[self.open >= 0]] = True
        new_index = np.cumsum(keep) - 1
        self.open = np.where(self.open >= 0, new_index[np.maximum(self.open, 0)], -1)
        self.starts, self.peaks = self.starts[keep], self.peaks[keep]

    def rebase(self, raise_at: float, clear_at: float) -> None:
        """A new package threshold (a model swapped in): its would-be forecasts start afresh."""
        self.__init__(self.n, raise_at, clear_at, self.budget)

    def to_state(self, ids: Sequence[str] | None = None) -> dict:
        """A JSON-able snapshot (the gateway keeps it across restarts). ``ids``: the facings'
        ids by index; the open would-be forecasts are then named by id, not by position (the
        gateway's planogram may change across a restart)."""
        on = np.flatnonzero(self.on).tolist()
        return {"raise_at": self.raise_at, "clear_at": self.clear_at, "first_ms": self.first_ms,
                "on": on if ids is None else [ids[i] for i in on], "open": self.open[self.on].tolist(),
                "starts": self.starts.tolist(), "peaks": self.peaks.tolist()}

    def load_state(self, state: Mapping[str, Any], index: Mapping[str, int] | None = None) -> bool:
        """Restore :meth:`to_state`'s snapshot; False (nothing restored) when it was taken at
        another package threshold, or (facings by position) for more facings than this store has.
        ``index``: facing id -> index, for a snapshot that names its facings by id; an open
        would-be forecast of a facing no longer there is closed (it still counts in the log)."""
        if (float(state.get("raise_at", -1)) != self.raise_at or float(state.get("clear_at", -1)) != self.clear_at):
            return False
        on_raw, open_raw = list(state.get("on", [])), list(state.get("open", []))
        if index is not None and any(isinstance(f, str) for f in on_raw):
            kept = [(index[f], o) for f, o in zip(on_raw, open_raw) if f in index]
            on_raw, open_raw = [i for i, _ in kept], [o for _, o in kept]
        on = np.asarray(on_raw, dtype=np.int64)
        if len(on) and (on.max() >= self.n or on.min() < 0):
            return False
        self.starts = np.asarray(state.get("starts", []), dtype=np.int64)
        self.peaks = np.asarray(state.get("peaks", []), dtype=np.float64)
        self.on[:] = False
        self.open[:] = -1
        self.on[on] = True
        self.open[on] = np.asarray(open_raw, dtype=np.int64)
        self.first_ms = state.get("first_ms")
        return True

"""The oracle: P(empty within H) from the simulator's truth, the ceiling every figure is shown against.

It reads what no gateway can know: the true units on the shelf at each instant (``truth/
shelf_units``) and the true expected demand (``truth/lost_sales.expected_units``, the day's
Poisson mean per facing, spread over the day by the scenario's intraday profile, which
``scenario.json`` records as ``demand_profile``). With those, demand over (t, t + H] is
Poisson(lambda) and the shelf is empty within H with probability P(N >= units); a shelf
already empty scores 1.

It is never shipped and never trained on: ``gondola eval`` reports each scorer's figures with
``fraction_of_oracle`` beside them, so 0.27 PR-AUC can be told apart from "good" or from "as good
as anyone can be". What it does not know either (so it is a ceiling of the demand-and-stock
question, not of everything): restocks within the horizon (which can only postpone a
stock-out) and shoppers switching from an empty sibling facing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gondola.clock import DAY_MS
from models.baseline import poisson_tail

__all__ = ["OracleTruth", "oracle_probs", "ORACLE_NAME"]

ORACLE_NAME = "oracle-truth"


@dataclass
class OracleTruth:
    """One store's truth: shelf units change points and expected demand per facing and day."""

    facing_ids: list[str]
    #: Change points of true units, sorted by (facing index, ts).
    units_facing: np.ndarray
    units_ts: np.ndarray
    units: np.ndarray
    #: Expected demand, (facings, days), units per day from ``start_ms``.
    expected: np.ndarray
    start_ms: int
    #: Cumulative share of a day's demand at each step boundary, (steps + 1,), 0 .. 1.
    profile_cum: np.ndarray
    step_ms: int

    @staticmethod
    def build(facing_ids: list[str], units_rows: dict, expected_rows: dict, start_ms: int, days: int,
              shares: list[float], step_ms: int) -> "OracleTruth":
        """From column dicts: ``units_rows`` (facing_id, ts, units), ``expected_rows`` (facing_id,
        day_ms, expected_units); ``shares`` per simulation step of a day."""
        index = {f: i for i, f in enumerate(facing_ids)}
        uf = np.array([index.get(f, -1) for f in units_rows["facing_id"]], dtype=np.int64)
        ut = np.asarray(units_rows["ts"], dtype=np.int64)
        uu = np.asarray(units_rows["units"], dtype=np.int64)
        keep = uf >= 0
        uf, ut, uu = uf[keep], ut[keep], uu[keep]
        order = np.lexsort((ut, uf))
        expected = np.zeros((len(facing_ids), days + 1))
        ef = np.array([index.get(f, -1) for f in expected_rows["facing_id"]], dtype=np.int64)
        ed = (np.asarray(expected_rows["day_ms"], dtype=np.int64) - start_ms) // DAY_MS
        ev = np.asarray(expected_rows["expected_units"], dtype=np.float64)
        ok = (ef >= 0) & (ed >= 0) & (ed <= days)
        expected[ef[ok], ed[ok]] = ev[ok]
        cum = np.r_[0.0, np.cumsum(np.asarray(shares, dtype=np.float64))]
        cum /= cum[-1] if cum[-1] > 0 else 1.0
        return OracleTruth(list(facing_ids), uf[order], ut[order], uu[order], expected, int(start_ms), cum, int(step_ms))

    def units_at(self, facing_idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """True units of each (facing, instant): the last change point at or before it."""
        span = np.int64(1) << np.int64(42)
        keys = self.units_facing * span + (self.units_ts - self.start_ms + DAY_MS)
        q = facing_idx * span + (t - self.start_ms + DAY_MS)
        pos = np.searchsorted(keys, q, side="right") - 1
        ok = (pos >= 0) & (self.units_facing[np.maximum(pos, 0)] == facing_idx)
        # Before the first stamp of a facing (the first minutes of the history): unknown, taken
        # as stocked (capacity-like), which scores 0 at most instants and costs the oracle little.
        return np.where(ok, self.units[np.maximum(pos, 0)], np.iinfo(np.int32).max // 2)

    def demand(self, facing_idx: np.ndarray, t: np.ndarray, horizon_ms: int) -> np.ndarray:
        """Expected demand over (t, t + H] per row (H up to several days)."""
        def cum_at(x_ms: np.ndarray) -> np.ndarray:
            # Expected demand from start_ms to x_ms, per row's facing.
            rel = np.maximum(x_ms - self.start_ms, 0)
            day = rel // DAY_MS
            frac_ms = rel - day * DAY_MS
            steps = len(self.profile_cum) - 1
            pos = frac_ms / self.step_ms
            k = np.minimum(pos.astype(np.int64), steps - 1)
            within = self.profile_cum[k] + (self.profile_cum[k + 1] - self.profile_cum[k]) * (pos - k)
            day_c = np.minimum(day, self.expected.shape[1] - 1)
            full = np.cumsum(np.c_[np.zeros(len(self.expected)), self.expected], axis=1)  # (f, days + 2)
            return full[facing_idx, day_c] + self.expected[facing_idx, day_c] * within

        return np.maximum(cum_at(t + horizon_ms) - cum_at(t), 0.0)


def oracle_probs(store: np.ndarray, facing: np.ndarray, t: np.ndarray, truths: dict[str, OracleTruth],
                 horizon_ms: int) -> np.ndarray:
    """P(empty now or within H) for feature rows (store, facing, t) from each store's truth.

    Rows of a store without truth score NaN (the caller says which sets have an oracle).
    """
    out = np.full(len(t), np.nan)
    store = np.asarray(store).astype(str)
    for sid in np.unique(store):
        truth = truths.get(sid)
        if truth is None:
            continue
        rows = np.flatnonzero(store == sid)
        index = {f: i for i, f in enumerate(truth.facing_ids)}
        fi = np.array([index.get(str(f), -1) for f in np.asarray(facing)[rows]], dtype=np.int64)
        known = fi >= 0
        rows, fi = rows[known], fi[known]
        tt = np.asarray(t, dtype=np.int64)[rows]
        units = truth.units_at(fi, tt)
        lam = truth.demand(fi, tt, horizon_ms)
        p = np.ones(len(rows))
        stocked = units > 0
        if stocked.any():
            # Units beyond any plausible demand cannot run out: cap them for the tail sum's loop.
            cap = np.minimum(units[stocked], 1_000)
            p[stocked] = poisson_tail(lam[stocked], cap)
        out[rows] = p
    return out

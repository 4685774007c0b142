"""Cloud-side scoring of one store: the gateway's feature code, the production model, two kinds.

Each store's facings are fed through ``models.replay.StoreFeatures`` (the class the gateway's
features come from), and at each tick all facings of the store are scored in one batched call
of the production model (``models.runtime``: ONNX on onnxruntime, or the int8 LiteRT file).

Alert kinds (``stream.alerts.kind``):

* ``empty_within_h``: the model's probability of the shelf being empty within its horizon.
  Raised at the model's operating threshold (``threshold`` in its manifest; a manifest with
  ``thresholds: {kind: value}`` sets one per kind), cleared at ``min(0.3, threshold / 2)``,
  at most one change per facing per 15 minutes: the gateway's hysteresis. Not raised on a
  facing alerted ``empty_now`` (the gateway's rule: comparing the two sides would otherwise flag
  every empty shelf as a divergence).
* ``empty_now``: the gateway's detector, ``models.scoring.empty_now_prob``, at the gateway's
  threshold (the manifest's ``thresholds["empty_now"]``, else ``EMPTY_NOW_THRESHOLD``): a believed
  sensor's 0; for a facing without one (or a doubted 0) the till's evidence, or the model's score
  where the manifest says ``empty_now_from_model``. Cloud and gateway alerts are comparable, so
  their divergence means a stale or broken model, not two rules.

A store whose gateway is silent (no event for ``silent_since``) is still scored, on imputed
features: the cloud assumes the store keeps selling at its expected rate. From the features at the
start of the silence it takes the sales rates and the till's and sensors' state as they were, and
lowers the shelf by the demand the store's own profile expected since (``demand_next_2h`` summed
over the ticks; the last day's sales rate before a profile is learnt), so a shelf that was running low is forecast empty on time. Without that, a silent
till would read as no demand and the model would clear every forecast. ``empty_now`` stays a
reading's statement: imputed units never raise it.

On imputed features the forecasts standing when the store went quiet are judged again (kept or
cleared) but no new one is raised: forecasts raised from imputed sales alone were right 1 time in
14, 7 in 29 and 4 in 21 (seeds 61-63, docs/stream.md), against 0.86 for the live model's raises
(``StreamConfig.raise_on_imputed`` turns them back on).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from gondola.clock import MINUTE_MS
from models.features import FEATURES, FeatureCache
from models.scoring import EMPTY_NOW_THRESHOLD, empty_now_prob
from models.replay import Facing, StoreFeatures

__all__ = ["StoreScorer", "kind_thresholds", "KINDS"]

KINDS = ("empty_now", "empty_within_h")
_UNITS = FEATURES.index("units_est")
_SKU_UNITS = FEATURES.index("sku_units_est")
_SENSOR = FEATURES.index("has_sensor")
_SINCE_READING = FEATURES.index("hours_since_reading")
_FILL = FEATURES.index("fill_ratio")
_RATE_24H = FEATURES.index("rate_24h")
_CAPACITY = FEATURES.index("capacity")
_DEMAND_2H = FEATURES.index("demand_next_2h")
_SALES_SINCE_READING = FEATURES.index("sales_since_reading")
#: Kept as they were when the store went silent (no evidence that they changed).
_FROZEN = [i for i, f in enumerate(FEATURES) if f.startswith("rate_")] + [
    FEATURES.index(f) for f in ("hours_since_sale", "demand_since_sale", "hours_since_reading", "battery_pct",
                                "hours_since_restock")]
MIN_DWELL_MS = 15 * MINUTE_MS


def kind_thresholds(scorer: Any) -> dict[str, float]:
    """Model kinds -> raise threshold, from the scorer's manifest (default: one kind)."""
    per_kind = getattr(scorer, "thresholds", None)
    if isinstance(per_kind, Mapping) and per_kind:
        return {str(k): float(v) for k, v in per_kind.items()}
    threshold = getattr(scorer, "threshold", None)
    return {"empty_within_h": float(threshold) if threshold else 0.6}


class StoreScorer:
    """Facing states, the last scores and the per-kind alert state of one store."""

    def __init__(self, store_id: str, planogram: Sequence[Facing]):
        self.store_id = store_id
        self.features = StoreFeatures(store_id, planogram)
        n = len(self.features.facing_ids)
        self.raised: dict[str, np.ndarray] = {k: np.zeros(n, dtype=bool) for k in KINDS}
        self.changed_at: dict[str, np.ndarray] = {k: np.full(n, -(2**62), dtype=np.int64) for k in KINDS}
        self.last_probs = np.zeros(n, dtype=np.float64)
        self.silent_from: int | None = None  # start of the silence being imputed
        self.silent_X: np.ndarray | None = None
        self.imputed = np.zeros(n, dtype=np.float64)  # units the profile expected since then
        self.last_t: int | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["features"] = dict(vars(self.features))
        state["features"].pop("_cache", None)
        return state

    def __setstate__(self, state: dict) -> None:
        feats = state.pop("features")
        self.__dict__.update(state)
        self.features = StoreFeatures.__new__(StoreFeatures)
        vars(self.features).update(feats)
        # The cache indexes facing states by object id: rebuild it for the unpickled objects.
        self.features._cache = FeatureCache(self.features._ordered)

    def raised_facings(self, kind: str) -> set[str]:
        ids = self.features.facing_ids
        return {ids[i] for i in np.flatnonzero(self.raised.get(kind, ()))}

    def _impute(self, t: int, X: np.ndarray, silent_since: int | None) -> np.ndarray:
        """The features of a silent store (see the module docstring); ``X`` when it is not silent."""
        if silent_since is None:
            self.silent_from, self.silent_X = None, None
            return X
        if self.silent_from != silent_since or self.silent_X is None:
            self.silent_from = silent_since
            self.silent_X = self.features.matrix(silent_since)
            self.imputed[:] = 0.0
            self.last_t = silent_since
        span_h = max(t - (self.last_t or t), 0) / 3_600_000
        # Units per hour: the hour-of-day profile once learnt (a week of sales), else the last
        # day's average rate from before the silence.
        per_h = np.where(X[:, _DEMAND_2H] > 0, X[:, _DEMAND_2H] / 2.0, self.silent_X[:, _RATE_24H])
        per_h = np.maximum(per_h, 0.0)  # a SKU with more returns than sales: no negative demand
        self.imputed += per_h * span_h
        Xi = X.copy()
        S = self.silent_X
        Xi[:, _FROZEN] = S[:, _FROZEN]
        Xi[:, _UNITS] = np.maximum(S[:, _UNITS] - self.imputed, 0.0)
        # The SKU's total falls by what its facings' imputed sales took.
        group = self.features.cache.sku_group
        taken = np.bincount(group, weights=S[:, _UNITS] - Xi[:, _UNITS], minlength=len(Xi))[group]
        Xi[:, _SKU_UNITS] = np.maximum(S[:, _SKU_UNITS] - taken, 0.0)
        Xi[:, _FILL] = np.minimum(Xi[:, _UNITS] / np.maximum(Xi[:, _CAPACITY], 1.0), 2.0)
        Xi[:, _SALES_SINCE_READING] = S[:, _SALES_SINCE_READING] + self.imputed
        return Xi

    def score(self, t: int, scorer: Any, silent_since: int | None = None, *, raise_on_imputed: bool = False
              ) -> list[dict]:
        """Score every facing at ``t`` (imputing a silence that began at ``silent_since``); return
        ``stream.alerts`` rows for the state changes."""
        X, Xs = self.prepare(t, silent_since)
        return self.decide(t, X, scorer.score(Xs), scorer, silent=silent_since is not None,
                           raise_on_imputed=raise_on_imputed)

    def prepare(self, t: int, silent_since: int | None = None, X: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The features at ``t`` (``X``, computed unless given) and what the model is fed
        (imputed while silent)."""
        if X is None:
            X = self.features.matrix(t)
        Xs = self._impute(t, X, silent_since)
        self.last_t = t
        return X, Xs

    def decide(self, t: int, X: np.ndarray, model_probs: Any, scorer: Any, *, silent: bool = False,
               raise_on_imputed: bool = False) -> list[dict]:
        """Apply the model's probabilities for ``X`` (from :meth:`prepare` at ``t``) to the alert
        state; return ``stream.alerts`` rows for the changes. ``silent`` (the model was fed
        features imputed for a silent store): model kinds may clear, not raise, unless
        ``raise_on_imputed`` (see the module docstring)."""
        may_raise = not silent or raise_on_imputed
        probs = np.nan_to_num(np.asarray(model_probs, dtype=np.float64).reshape(-1), nan=0.0).clip(0.0, 1.0)
        self.last_probs = probs
        units = X[:, _UNITS]
        sensor_empty = (X[:, _SENSOR] > 0) & (units <= 0)
        thresholds = kind_thresholds(scorer)
        horizon_min = int(round(float(getattr(scorer, "horizon_h", 2.0)) * 60))
        name = str(getattr(scorer, "name", type(scorer).__name__))
        rows: list[dict] = []
        for kind in KINDS:
            if kind == "empty_now":
                # The gateway's detector (models.scoring.empty_now_prob) at the gateway's threshold:
                # a believed sensor's 0, else the till's evidence or the model where its manifest says so.
                raise_at = thresholds.get(kind, EMPTY_NOW_THRESHOLD)
                from_model = bool(getattr(scorer, "empty_now_from_model", False))
                p = empty_now_prob(X, model=probs if from_model else None)
                # while silent, the till's silence is the gateway's, not the shelf's: only readings raise
                want_raise = (p >= raise_at) & (may_raise | sensor_empty)
            elif kind in thresholds:
                raise_at = thresholds[kind]
                p = probs
                # As on the gateway (edge.inference): detection first, and no forecast raised on
                # a facing alerted empty now (a forecast about an empty shelf warns of nothing).
                want_raise = (p >= raise_at) & may_raise & ~self.raised["empty_now"]
            else:
                continue
            want_clear = p <= min(0.3, raise_at / 2)
            raised, changed = self.raised[kind], self.changed_at[kind]
            dwell = (t - changed) >= MIN_DWELL_MS
            up = ~raised & want_raise & dwell
            down = raised & want_clear & dwell
            flip = up | down
            if not flip.any():
                continue
            for i in np.flatnonzero(flip):
                rows.append({"store_id": self.store_id, "facing_id": self.features.facing_ids[i],
                             "sku": self.features._ordered[i].sku, "kind": kind,
                             "state": "raised" if up[i] else "cleared", "ts": t, "probability": float(p[i]),
                             "units_est": float(units[i]), "horizon_min": horizon_min, "scorer": name})
            raised[up] = True
            raised[down] = False
            changed[flip] = t
        return rows

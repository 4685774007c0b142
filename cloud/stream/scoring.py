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
  every empty shelf as a divergence), nor on one with no sale seen (``models.scoring.forecast_ready``).
  Under the gateway's alert budget per store-day (``models.alert_budget``, the manifest's
  ``alert_budget``): the store's threshold rises above the model's when the store's last 7 days
  would have raised more forecasts than the budget allows, the same ``ForecastBudget`` the
  gateway steps.
* ``empty_now``: the gateway's detector, ``models.scoring.empty_now_prob``, at the gateway's
  threshold (the manifest's ``thresholds["empty_now"]``, else ``EMPTY_NOW_THRESHOLD``): a believed
  sensor's 0; for a facing without one (or a doubted 0) the till's evidence, or the model's score
  where the manifest says ``empty_now_from_model``; not raised on a 0 the sensor never read
  (``models.scoring.empty_now_ready``, as on the gateway). Cloud and gateway alerts are comparable, so
  their divergence means a stale or broken model, not two rules.

A store whose gateway is silent (no event for ``silent_since``) is still scored, on imputed
features: the cloud assumes the store keeps selling at its expected rate. From the features at the
start of the silence it takes the sales rates and the till's and sensors' state as they were, and
lowers the shelf by the demand the store's own profile expected since (``demand_next_2h`` summed
over the ticks; the last day's sales rate before a profile is learnt), so a shelf that was running
low is forecast empty on time. Without that, a silent till would read as no demand and the model
would clear every forecast. ``empty_now`` stays a reading's statement: imputed units never raise it.

Time passing also brings the store's restock round. The cloud learns each store's rounds from its
``shelf.restock`` events (restocks less than ``ROUND_GAP_MS`` apart, at least
``ROUND_MIN_FACINGS`` facings) and their usual times of day (``usual_rounds``: the median of the
rounds within ``ROUND_SPREAD_MS`` of each other, over the last week); until a store has been
watched a whole day, the usual times of the rounds of every store the job watches stand in (a
chain's stores restock on one schedule; the job knows no time zones, so this assumes one); after
that, they fill the times of day the store's own rounds leave empty (``store_rounds``: a round
the store skipped on its watched days is missing from its own).
When a usual round's time passes in the silence, the facings imputed below ``REFILL_BELOW`` of
their capacity are refilled (units to capacity, restock and, on a sensored shelf, the reading
then), except those the store's last round before the silence found low and left, with no
delivery of their SKU since (the backroom had none; the next round has none either). Without
it the cloud held, through a five-hour silence, forecasts on ten shelves the evening round had
refilled (seed 62 of the cloud-vs-gateway bench, docs/stream.md).

On imputed features the forecasts standing when the store went quiet are judged again (kept or
cleared) but no new one is raised: forecasts raised from imputed sales alone were right 1 time in
14, 7 in 29 and 4 in 21 (seeds 61-63, docs/stream.md), against 0.86 for the live model's raises
(``StreamConfig.raise_on_imputed`` turns them back on).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from models.features import FEATURES, FeatureCache
from models.alert_budget import ForecastBudget, budget_of, clear_level
from models.scoring import EMPTY_NOW_THRESHOLD, empty_now_prob, empty_now_ready, forecast_ready
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
_SINCE_RESTOCK = FEATURES.index("hours_since_restock")
_UNEXPLAINED = FEATURES.index("units_unexplained")
#: Kept as they were when the store went silent (no evidence that they changed).
_FROZEN = [i for i, f in enumerate(FEATURES) if f.startswith("rate_")] + [
    FEATURES.index(f) for f in ("hours_since_sale", "demand_since_sale", "hours_since_reading", "battery_pct",
                                "hours_since_restock")]
MIN_DWELL_MS = 15 * MINUTE_MS
#: Restock rounds (``StoreScorer.rounds``): restocks less than ``ROUND_GAP_MS`` apart are one
#: round, and one of at least ``ROUND_MIN_FACINGS`` facings is a staff round (not one facing put
#: back). Rounds of the last ``ROUND_MEMORY_MS`` make the usual times of day: rounds whose times
#: of day lie within ``ROUND_SPREAD_MS`` of each other are one usual round, at their median time.
ROUND_GAP_MS = 45 * MINUTE_MS
ROUND_MIN_FACINGS = 3
ROUND_MEMORY_MS = 7 * DAY_MS
ROUND_SPREAD_MS = 2 * HOUR_MS
#: At an imputed round, a facing imputed below this share of its capacity is refilled.
REFILL_BELOW = 0.5


def usual_rounds(starts: Sequence[int]) -> list[int]:
    """Times of day (ms after 00:00 UTC) of the usual restock rounds, from rounds' start times."""
    tod = sorted(int(t) % DAY_MS for t in starts)
    out: list[int] = []
    group: list[int] = []
    for q in tod:
        if group and q - group[-1] > ROUND_SPREAD_MS:
            out.append(group[len(group) // 2])
            group = []
        group.append(q)
    if group:
        out.append(group[len(group) // 2])
    return out


def store_rounds(own: Sequence[int], pool: Sequence[int]) -> list[int]:
    """Times of day of a store's usual rounds: its own (``usual_rounds``), and the other stores'
    usual rounds at a time of day none of its own lies within ``ROUND_SPREAD_MS`` of. A round the
    store skipped on the days it was watched is missing from its own; the chain's schedule has it
    (seed 67 of the cloud-vs-gateway bench: a store watched one day without an evening round,
    silent over the next evening's, docs/stream.md)."""
    mine = usual_rounds(own)
    # apart on the 24-hour clock (23:30 and 00:30 are an hour apart)
    return sorted(mine + [q for q in usual_rounds(pool)
                          if all(min(abs(q - o), DAY_MS - abs(q - o)) > ROUND_SPREAD_MS for o in mine)])


def last_round(since: int, t: int, usual: Sequence[int]) -> int | None:
    """The latest instant in ``(since, t]`` at a usual round's time of day, or None."""
    best = None
    for q in usual:
        o = t - (t - q) % DAY_MS  # the latest instant <= t at that time of day
        if o > since and (best is None or o > best):
            best = o
    return best


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
        self.imputed = np.zeros(n, dtype=np.float64)  # units the profile expected since then (or a refill)
        self.last_t: int | None = None
        self.watched_from: int | None = None  # the store's first event
        self.rounds: list[int] = []  # start times of the store's restock rounds (ROUND_MEMORY_MS)
        self._round: list[int] | None = None  # the round being seen: [start, last restock, facings]
        self.base = np.zeros(n, dtype=np.float64)  # units a silent facing's imputed demand is taken from
        self.refilled_at = np.full(n, np.nan)  # a round imputed in the silence refilled it then
        self.round_imputed_at: int | None = None
        self.low_since = np.full(n, np.inf)  # scored below REFILL_BELOW of capacity since then
        self.delivered: dict[str, int] = {}  # sku -> its last inventory.delivery since the last round
        self.passed_by = np.zeros(n, dtype=bool)  # a round found it low and left it (in a silence)
        self.undecided = np.zeros(n, dtype=bool)  # see undecided_facings
        self.budget: ForecastBudget | None = None  # the forecast's alert budget (see decide)
        self.budget_model: str | None = None  # the model whose scores the budget's log holds
        self.forecast_at: float | None = None  # the store's forecast threshold at the last scoring

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["features"] = dict(vars(self.features))
        state["features"].pop("_cache", None)
        return state

    def __setstate__(self, state: dict) -> None:
        feats = state.pop("features")
        n = len(state["last_probs"])
        if "base" not in state and state.get("silent_X") is not None:
            # taken in a silence: its imputed demand is taken from the shelves as they were then
            state["base"] = np.asarray(state["silent_X"][:, _UNITS], dtype=np.float64)
        # a snapshot from before restock rounds were imputed
        for k, v in (("watched_from", None), ("rounds", []), ("_round", None), ("round_imputed_at", None),
                     ("base", np.zeros(n)), ("refilled_at", np.full(n, np.nan)), ("low_since", np.full(n, np.inf)),
                     ("delivered", {}), ("passed_by", np.zeros(n, dtype=bool)), ("undecided", np.zeros(n, dtype=bool)),
                     ("budget", None), ("budget_model", None), ("forecast_at", None)):
            state.setdefault(k, v)
        self.__dict__.update(state)
        self.features = StoreFeatures.__new__(StoreFeatures)
        vars(self.features).update(feats)
        # The cache indexes facing states by object id: rebuild it for the unpickled objects.
        self.features._cache = FeatureCache(self.features._ordered)

    def raised_facings(self, kind: str) -> set[str]:
        ids = self.features.facing_ids
        return {ids[i] for i in np.flatnonzero(self.raised.get(kind, ()))}

    def undecided_facings(self, gateway_at: float | None = None) -> set[str]:
        """Facings whose forecast state the last scoring left to history: a probability between
        the clear and raise thresholds (the hysteresis keeps whichever state the facing had), or
        a facing alerted ``empty_now`` (no forecast is raised there, one raised before stands).
        A healthy gateway scoring the same shelves may hold the other state on these, so
        ``alert_divergence`` does not compare them. ``gateway_at``: the gateway's own forecast
        threshold (its health's ``forecast_threshold``, its alert budget's): a probability between
        it and this store's threshold here is undecided too (the budgets' logs differ by history)."""
        undecided = self.undecided
        if gateway_at is not None and self.forecast_at is not None and gateway_at != self.forecast_at:
            lo, hi = sorted((float(gateway_at), self.forecast_at))
            undecided = undecided | ((self.last_probs >= lo) & (self.last_probs < hi))
        ids = self.features.facing_ids
        return {ids[i] for i in np.flatnonzero(undecided)}

    def observe(self, etype: Any, ts: int, data: dict) -> None:
        """Fold one event into the facing states (``StoreFeatures.apply_data``) and the store's
        restock rounds."""
        self.features.apply_data(etype, ts, data)
        if self.watched_from is None or ts < self.watched_from:
            self.watched_from = ts
        if etype == "inventory.delivery":
            sku = data.get("sku")
            self.delivered[sku] = max(self.delivered.get(sku, ts), ts)
        if etype != "shelf.restock":
            return
        r = self._round
        if r is not None and 0 <= ts - r[1] <= ROUND_GAP_MS:
            r[1] = ts
            r[2] += 1
            if r[2] == ROUND_MIN_FACINGS:
                self.rounds = [x for x in self.rounds if x > ts - ROUND_MEMORY_MS] + [r[0]]
                # only deliveries after the last round matter (see _impute): the state stays small
                self.delivered = {k: v for k, v in self.delivered.items() if v >= r[0]}
        elif r is None or ts > r[1]:
            self._round = [ts, ts, 1]

    def _impute(self, t: int, X: np.ndarray, silent_since: int | None,
                pool: Sequence[int] | None = None) -> np.ndarray:
        """The features of a silent store (see the module docstring); ``X`` when it is not silent.
        ``pool``: the rounds of the other stores the job watches, whose usual times stand in for
        the store's own until it has been watched a whole day."""
        if silent_since is None:
            self.silent_from, self.silent_X = None, None
            low = X[:, _UNITS] < REFILL_BELOW * np.maximum(X[:, _CAPACITY], 1.0)
            self.low_since = np.where(low, np.minimum(self.low_since, t), np.inf)
            return X
        if self.silent_from != silent_since or self.silent_X is None:
            self.silent_from = silent_since
            self.silent_X = self.features.matrix(silent_since)
            self.imputed[:] = 0.0
            self.base = self.silent_X[:, _UNITS].astype(np.float64)
            self.refilled_at[:] = np.nan
            self.round_imputed_at = None
            self.last_t = silent_since
            # The store's last round before the silence found these low and left them: its
            # backroom had none, and no delivery of theirs came since, so the next round will not
            # have any either.
            last = max((r for r in self.rounds if r <= silent_since), default=None)
            self.passed_by[:] = False
            if last is not None:
                restocked = silent_since - self.silent_X[:, _SINCE_RESTOCK].astype(np.float64) * HOUR_MS
                skus = [f.sku for f in self.features._ordered]
                came = np.array([self.delivered.get(k, -1) >= last for k in skus], dtype=bool)
                self.passed_by[:] = (self.low_since < last) & (restocked < last) & ~came
        span_h = max(t - (self.last_t or t), 0) / HOUR_MS
        # Units per hour: the hour-of-day profile once learnt (a week of sales), else the last
        # day's average rate from before the silence.
        per_h = np.where(X[:, _DEMAND_2H] > 0, X[:, _DEMAND_2H] / 2.0, self.silent_X[:, _RATE_24H])
        per_h = np.maximum(per_h, 0.0)  # a SKU with more returns than sales: no negative demand
        self.imputed += per_h * span_h
        S = self.silent_X
        cap = np.maximum(X[:, _CAPACITY], 1.0)
        # The store's usual restock round came in the silence: the facings it would find low are
        # refilled then (the round's time of day from the store's own rounds, or the other
        # stores' while the store has not been watched a day, and where its own leave a gap).
        own = self.watched_from is not None and silent_since - self.watched_from >= DAY_MS
        mine = [r for r in self.rounds if r <= t]
        others = [r for r in pool or () if r <= t]
        at = last_round(silent_since, t, store_rounds(mine, others) if own else usual_rounds(others or mine))
        if at is not None and (self.round_imputed_at is None or at - self.round_imputed_at > ROUND_SPREAD_MS):
            self.round_imputed_at = at
            low = (self.base - (self.imputed - per_h * max(t - at, 0) / HOUR_MS) < REFILL_BELOW * cap) & ~self.passed_by
            self.base[low] = X[low, _CAPACITY]
            self.imputed[low] = per_h[low] * max(t - at, 0) / HOUR_MS
            self.refilled_at[low] = at
        Xi = X.copy()
        Xi[:, _FROZEN] = S[:, _FROZEN]
        Xi[:, _UNITS] = np.maximum(self.base - self.imputed, 0.0)
        group = self.features.cache.sku_group
        Xi[:, _SKU_UNITS] = np.bincount(group, weights=Xi[:, _UNITS], minlength=len(Xi))[group]
        Xi[:, _FILL] = np.minimum(Xi[:, _UNITS] / cap, 2.0)
        sensor = X[:, _SENSOR] > 0
        refilled = ~np.isnan(self.refilled_at)
        # sales since the last reading: facings with a sensor only (as the live feature); a
        # refill is read by the shelf's sensor, so it counts from there
        Xi[:, _SALES_SINCE_READING] = np.where(sensor, np.where(refilled, 0.0, S[:, _SALES_SINCE_READING])
                                               + self.imputed, 0.0)
        if refilled.any():
            since = (t - np.nan_to_num(self.refilled_at)) / HOUR_MS
            Xi[refilled, _SINCE_RESTOCK] = since[refilled]
            read = refilled & sensor
            Xi[read, _SINCE_READING] = since[read]
            Xi[read, _UNEXPLAINED] = 0.0
        return Xi

    def score(self, t: int, scorer: Any, silent_since: int | None = None, *, raise_on_imputed: bool = False
              ) -> list[dict]:
        """Score every facing at ``t`` (imputing a silence that began at ``silent_since``); return
        ``stream.alerts`` rows for the state changes."""
        X, Xs = self.prepare(t, silent_since)
        return self.decide(t, X, scorer.score(Xs), scorer, silent=silent_since is not None,
                           raise_on_imputed=raise_on_imputed)

    def prepare(self, t: int, silent_since: int | None = None, X: np.ndarray | None = None,
                pool: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The features at ``t`` (``X``, computed unless given) and what the model is fed
        (imputed while silent; ``pool`` as for :meth:`_impute`)."""
        if X is None:
            X = self.features.matrix(t)
        Xs = self._impute(t, X, silent_since, pool)
        self.last_t = t
        return X, Xs

    def _budget(self, scorer: Any, raise_at: float) -> ForecastBudget:
        """The store's forecast budget for this model's threshold: a new one when the threshold,
        the budget or the model (its ``name``, ``model:<version>``) changed. As on the gateway
        (``edge.inference.set_scorer``), another model's scores start the would-be forecasts afresh,
        also at the same threshold (a job restarted on a new model restores the old log)."""
        clear_at = clear_level(raise_at)
        model = str(getattr(scorer, "name", type(scorer).__name__))
        b = self.budget
        if b is not None and self.budget_model is None:
            self.budget_model = model  # a snapshot from before the model was kept: taken as this one
        if (b is None or b.raise_at != raise_at or b.clear_at != clear_at or b.budget != budget_of(scorer)
                or self.budget_model != model):
            self.budget = b = ForecastBudget(len(self.last_probs), raise_at, clear_at, budget_of(scorer))
            self.budget_model = model
        return b

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
                # while silent, the till's silence is the gateway's, not the shelf's: only readings
                # raise; and as on the gateway, not a 0 the sensor never read (empty_now_ready)
                want_raise = (p >= raise_at) & (may_raise | sensor_empty) & empty_now_ready(X)
                base = raise_at
            elif kind in thresholds:
                p = probs
                # As on the gateway (edge.inference): detection first, and no forecast raised on
                # a facing alerted empty now (a forecast about an empty shelf warns of nothing),
                # nor on one the till has not sold from (models.scoring.forecast_ready).
                may = may_raise & ~self.raised["empty_now"] & forecast_ready(X)
                # The store's threshold under the alert budget, read before this tick is folded in.
                base = thresholds[kind]
                budget = self._budget(scorer, base)
                raise_at = self.forecast_at = budget.threshold(t)
                budget.observe(t, p, block=~may)
                want_raise = (p >= raise_at) & may
            else:
                continue
            want_clear = p <= clear_level(base)
            if kind == "empty_within_h":
                # Where two healthy scorers may differ by history alone (see undecided_facings).
                self.undecided = ~((p >= raise_at) | want_clear) | self.raised["empty_now"]
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

"""On-gateway inference: per-facing state, one batched score per cycle, alerts with hysteresis.

* The planogram (``planogram.csv``: ``store_id,facing_id,sku,capacity,has_sensor``) says which
  facings exist. POS lines are per SKU: a line's quantity is split evenly across the facings of
  that SKU. Shelf readings and restocks name their facing.
* Each cycle builds the feature matrix of ALL facings (``models.features.FeatureCache``: only
  facings that saw events since the last cycle are re-read) and calls the scorer ONCE (``models.scoring.Scorer``: the Poisson baseline or a LiteRT int8 model).
* Two alert kinds (``gondola.contracts.ALERT_KINDS``), each with its own threshold and its
  own hysteresis state per facing:

  - ``empty_within_h`` (forecast): the scorer's probability of the shelf being empty within
    the horizon reaches ``raise_at``; the alert carries the expected empty time
    (``models.scoring.hours_to_empty``). Not raised on a facing already alerted empty now:
    a forecast about an empty shelf warns of nothing. Nor on a facing the till has not sold
    from yet (``models.scoring.forecast_ready``: a cold start's facings have no demand seen).
  - ``empty_now`` (detection): ``models.scoring.empty_now_prob`` reaches ``now_at`` (a
    believed sensor reading 0 units; for a facing without one, the model's score when its
    manifest says ``empty_now_from_model``, else the till's silence weighed with the POS
    estimate). Not raised on a facing whose believed sensor reads empty only by the till's
    count (``models.scoring.empty_now_ready``: a shelf sensor reports when its value changes,
    so its silence says the shelf was not seen empty).

* Alert budget (``models.alert_budget``): the store's forecast threshold rises above
  ``raise_at`` when, over the store's last 7 days, more forecasts would have been raised at
  ``raise_at`` than the budget allows a store-day (the manifest's ``alert_budget``, or the
  gateway's setting); then only the surest are raised. ``forecast_at`` is this cycle's.
* Hysteresis: an alert is *raised* when its probability reaches the raise threshold and
  *cleared* when it falls to the clear level (half the raise threshold at most) or below, and
  never changes state twice within ``min_dwell_ms``; so a probability wobbling around one
  threshold does not flap.
* A scorer that raises (a broken model) does not stop alerts: that cycle is scored by the Poisson
  baseline, and ``scorer_errors`` counts it.

The state survives restarts: :meth:`Inference.snapshot` rows go to the buffer (one
``facing_state_blocks`` row per snapshot) and are loaded back at start.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import operator
import threading
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from edge.buffer import LAYOUT_ROW
from gondola.clock import HOUR_MS, MINUTE_MS
from gondola.errors import ConfigError
from models.features import FEATURES, FacingState, FeatureCache, pos_line_qty, set_sku_facings, sku_reading, sku_sale
from models.alert_budget import AlertBudget, ForecastBudget, budget_of, clear_level
from models.scoring import (EMPTY_NOW_THRESHOLD, PoissonScorer, Scorer, empty_now_prob, empty_now_ready, forecast_ready,
                            hours_to_empty)

__all__ = ["PlanogramRow", "load_planogram", "AlertChange", "Inference"]

_UNITS = FEATURES.index("units_est")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanogramRow:
    facing_id: str
    sku: str
    capacity: int
    has_sensor: bool


def load_planogram(path: str | Path, store_id: str) -> list[PlanogramRow]:
    """This store's facings from a planogram CSV.

    Raises:
        ConfigError: the file is missing, lacks a column, or has no facing for the store.
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            need = {"store_id", "facing_id", "sku", "capacity", "has_sensor"}
            if not need <= set(reader.fieldnames or ()):
                raise ConfigError(f"{path}: planogram needs columns {', '.join(sorted(need))}")
            rows = [
                PlanogramRow(r["facing_id"], r["sku"], int(r["capacity"]),
                             str(r["has_sensor"]).strip().lower() in ("1", "true", "yes"))
                for r in reader if r["store_id"] == store_id
            ]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read planogram {path}: {exc}") from exc
    if not rows:
        raise ConfigError(f"{path}: no facings for store {store_id!r}")
    return rows


FORECAST, EMPTY_NOW = "empty_within_h", "empty_now"
#: The snapshot row holding the alert budget's state (no planogram facing is named so).
BUDGET_ROW = "::alert_budget"


@dataclass(frozen=True)
class AlertChange:
    facing_id: str
    sku: str
    state: str  # raised | cleared
    probability: float
    units_est: float
    kind: str = FORECAST
    #: Forecasts: when the shelf is expected to run empty (epoch ms); None for empty_now.
    expected_empty_ts: int | None = None


class Inference:
    """Facing states, the scorer and the alert hysteresis of one store. Thread-safe."""

    def __init__(self, planogram: list[PlanogramRow], scorer: Scorer, *, raise_at: float = 0.6,
                 clear_at: float = 0.3, min_dwell_ms: int = 15 * MINUTE_MS, now_at: float | None = None,
                 budget: AlertBudget | None = None):
        if not 0.0 <= clear_at < raise_at <= 1.0:
            raise ConfigError(f"need 0 <= clear_at < raise_at <= 1, got {clear_at}, {raise_at}")
        if now_at is None:
            now_at = _kind_threshold(scorer, EMPTY_NOW) or EMPTY_NOW_THRESHOLD
        if not 0.0 < now_at <= 1.0:
            raise ConfigError(f"now_at must be in (0, 1], got {now_at}")
        self.now_at = now_at
        self.scorer = scorer
        self.fallback = PoissonScorer(horizon_h=getattr(scorer, "horizon_h", 2.0))
        self.scored_by = scorer.name
        self.scorer_errors = 0
        #: Wall time of the scorer's call, summed over cycles since the scorer was set (the
        #: cloud's rollout compares a canary's latency with production's).
        self.score_ms_total = 0.0
        self.score_cycles = 0
        self.raise_at, self.clear_at, self.min_dwell_ms = raise_at, clear_at, min_dwell_ms
        self._clear_setting = clear_at
        self.states = [FacingState(r.facing_id, r.sku, r.capacity, r.has_sensor) for r in planogram]
        self.index = {s.facing_id: i for i, s in enumerate(self.states)}
        self.by_sku: dict[str, list[int]] = {}
        for i, s in enumerate(self.states):
            self.by_sku.setdefault(s.sku, []).append(i)
        set_sku_facings(self.states)
        self.cache = FeatureCache(self.states)
        self._unsaved: set[int] = set(range(len(self.states)))  # changed since the last snapshot
        #: Whether the last :meth:`snapshot` held every facing; facings saved since the last such.
        self.snapshot_full = False
        self._saved_since_full = 0
        #: Forecast (empty_within_h) alert state per facing, and when it last changed.
        self.raised = np.zeros(len(self.states), dtype=bool)
        self.changed_at = np.full(len(self.states), -(2**62), dtype=np.int64)
        #: Detection (empty_now) alert state per facing, and when it last changed.
        self.raised_now = np.zeros(len(self.states), dtype=bool)
        self.now_changed_at = np.full(len(self.states), -(2**62), dtype=np.int64)
        self.last_now_probs = np.zeros(len(self.states), dtype=np.float64)
        self.last_empty_ms = np.zeros(len(self.states), dtype=np.int64)
        self.last_probs = np.zeros(len(self.states), dtype=np.float64)
        self.last_cycle_ms: int | None = None
        self.cycles = 0
        self.unknown_facings = 0
        #: The alert budget per store-day: the setting's (``budget``), else the scorer's manifest's.
        self._budget_setting = budget
        self.budget = ForecastBudget(len(self.states), raise_at, clear_at, budget or budget_of(scorer))
        self._budget_saved: str | None = None  # the budget's row as the last snapshot gave it
        #: The store's forecast threshold of the last cycle (``raise_at``, or above it under the budget).
        self.forecast_at = raise_at
        self._lock = threading.Lock()
        # Shadow mode: a candidate scores beside the scorer on the same features, with its own
        # forecast hysteresis; its alert changes are kept for the uplink only (never returned
        # by ``cycle``, so never shown on the page or published to staff).
        self.shadow: Scorer | None = None
        self.shadow_errors = 0
        self._shadow_reset(0.6)

    # ---- updates -------------------------------------------------------------------------

    def capacity_of(self, facing_id: str) -> int | None:
        """The facing's planogram capacity; None for a facing the planogram does not know."""
        i = self.index.get(facing_id)
        return None if i is None else self.states[i].capacity

    def observe(self, events: list[dict]) -> None:
        """Update facing states with committed events (in arrival order)."""
        with self._lock:
            for ev in events:
                etype, data, ts = ev["type"], ev["data"], ev["ts"]
                if etype == "pos.line":
                    idx = self.by_sku.get(data["sku"])
                    if not idx:
                        continue
                    qty, returned = pos_line_qty(data["qty"], data.get("kind", "sale"))
                    sku_sale([self.states[i] for i in idx], ts, qty, data.get("price_cents"), returned=returned)
                    for i in idx:
                        self.cache.mark(self.states[i])
                        self._unsaved.add(i)
                elif etype in ("shelf.reading", "shelf.restock"):
                    i = self.index.get(data["facing_id"])
                    if i is None:
                        self.unknown_facings += 1
                    elif etype == "shelf.reading":
                        idx = self.by_sku[self.states[i].sku]
                        sku_reading([self.states[j] for j in idx], idx.index(i), ts, data["units_est"],
                                    data["battery_pct"], data.get("weight_g"))
                        for j in idx:
                            self.cache.mark(self.states[j])
                            self._unsaved.add(j)
                    else:
                        self.states[i].on_restock(ts, data["units_added"])
                        self.cache.mark(self.states[i])
                        self._unsaved.add(i)

    def set_scorer(self, scorer: Scorer, *, raise_at: float | None = None) -> None:
        """Swap the scorer (model manager rollout or rollback); the next cycle uses it.

        With ``raise_at`` (the new model's operating threshold) the alert threshold follows it,
        and the clear level stays at most half of it; the ``empty_now`` threshold follows the
        scorer's ``thresholds["empty_now"]`` when it has one. Raised alerts stay raised.

        Raises:
            ConfigError: ``raise_at`` outside (0, 1].
        """
        if raise_at is not None and not 0.0 < raise_at <= 1.0:
            raise ConfigError(f"raise_at must be in (0, 1], got {raise_at}")
        with self._lock:
            self.scorer = scorer
            self.score_ms_total, self.score_cycles = 0.0, 0
            if raise_at is not None:
                self.raise_at = raise_at
                self.clear_at = clear_level(raise_at, self._clear_setting)
                self.now_at = _kind_threshold(scorer, EMPTY_NOW) or self.now_at
            # Another model's scores: its would-be forecasts (the budget's log) start afresh.
            self.budget = ForecastBudget(len(self.states), self.raise_at, self.clear_at,
                                         self._budget_setting or budget_of(scorer))

    def _shadow_reset(self, raise_at: float) -> None:
        self.shadow_raise_at = raise_at
        self.shadow_clear_at = clear_level(raise_at, self._clear_setting)
        self.shadow_raised = np.zeros(len(self.states), dtype=bool)
        self.shadow_changed_at = np.full(len(self.states), -(2**62), dtype=np.int64)
        self.shadow_ms_total, self.shadow_cycles = 0.0, 0
        self._shadow_changes: list[AlertChange] = []

    def set_shadow(self, scorer: Scorer | None, *, raise_at: float = 0.6) -> None:
        """Score ``scorer`` in shadow from the next cycle on (None: stop), with its own forecast
        threshold. Its would-be alerts are collected by :meth:`take_shadow_changes`.

        Raises:
            ConfigError: ``raise_at`` outside (0, 1].
        """
        if not 0.0 < raise_at <= 1.0:
            raise ConfigError(f"raise_at must be in (0, 1], got {raise_at}")
        with self._lock:
            self.shadow = scorer
            self._shadow_reset(raise_at)

    def take_shadow_changes(self) -> list[AlertChange]:
        """The shadow scorer's forecast alert changes since the last call (and forget them)."""
        with self._lock:
            out, self._shadow_changes = self._shadow_changes, []
            return out

    @property
    def shadow_ms(self) -> float | None:
        """Mean milliseconds per call of the shadow scorer (None before its first)."""
        return round(self.shadow_ms_total / self.shadow_cycles, 3) if self.shadow_cycles else None

    def _score_shadow(self, feats: np.ndarray, units: np.ndarray, now_ms: int, block: np.ndarray) -> None:
        """One shadow cycle (the caller holds the lock): forecasts only, blocked where the
        scorer's are (``block``: alerted empty now, or not ``forecast_ready``). A failing shadow
        is counted, never raised."""
        try:
            started = time.perf_counter()
            probs = np.asarray(self.shadow.score(feats), dtype=np.float64).reshape(-1)
            self.shadow_ms_total += (time.perf_counter() - started) * 1000.0
            self.shadow_cycles += 1
            if probs.shape[0] != len(self.states):
                raise ValueError(f"shadow returned {probs.shape[0]} scores for {len(self.states)} facings")
        except Exception as exc:  # noqa: BLE001 - the shadow must never disturb the real alerts
            self.shadow_errors += 1
            log.warning("shadow scorer %s failed (%s)", getattr(self.shadow, "name", "?"), exc)
            return
        probs = np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)
        up, down = self._step(self.shadow_raised, self.shadow_changed_at, probs, self.shadow_raise_at,
                              self.shadow_clear_at, now_ms, block=block, track=False)
        empty_at = None
        if up.any():
            horizon_h = float(getattr(self.shadow, "horizon_h", 2.0))
            empty_at = now_ms + (hours_to_empty(feats, horizon_h) * HOUR_MS).astype(np.int64)
        for i in np.flatnonzero(up | down):
            s = self.states[i]
            self._shadow_changes.append(AlertChange(
                s.facing_id, s.sku, "raised" if up[i] else "cleared", float(probs[i]), float(units[i]), FORECAST,
                int(empty_at[i]) if up[i] else None))

    def features(self, now_ms: int) -> np.ndarray:
        """The feature matrix every facing would be scored on at ``now_ms`` (a copy), e.g. for
        smoke-testing a new model on this store's own state before it is swapped in."""
        with self._lock:
            return self.cache.matrix(now_ms).copy()

    # ---- scoring -------------------------------------------------------------------------

    def cycle(self, now_ms: int) -> list[AlertChange]:
        """Score every facing in one batched call; return the alert state changes of both kinds
        (detections first)."""
        with self._lock:
            feats = self.cache.matrix(now_ms)
            try:
                started = time.perf_counter()
                probs = np.asarray(self.scorer.score(feats), dtype=np.float64).reshape(-1)
                self.score_ms_total += (time.perf_counter() - started) * 1000.0
                self.score_cycles += 1
                if probs.shape[0] != len(self.states):
                    raise ValueError(f"scorer returned {probs.shape[0]} scores for {len(self.states)} facings")
                self.scored_by = self.scorer.name
            except Exception as exc:  # a broken model must not stop alerts: use the baseline
                self.scorer_errors += 1
                log.error("scorer %s failed (%s); this cycle uses %s", self.scorer.name, exc, self.fallback.name)
                probs = np.asarray(self.fallback.score(feats), dtype=np.float64).reshape(-1)
                self.scored_by = self.fallback.name
            probs = np.nan_to_num(probs, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0)
            # A model whose manifest says so also scores "empty now" where no sensor is believed.
            from_model = self.scored_by == self.scorer.name and getattr(self.scorer, "empty_now_from_model", False)
            now_probs = empty_now_prob(feats, model=probs if from_model else None)
            units = feats[:, _UNITS]
            changes = []
            # Detection first: a forecast is not raised on a facing alerted empty now. Nor is a
            # detection on a 0 the shelf sensor never read (models.scoring.empty_now_ready).
            up, down = self._step(self.raised_now, self.now_changed_at, now_probs, self.now_at,
                                  min(self.clear_at, self.now_at / 2), now_ms, block=~empty_now_ready(feats))
            for i in np.flatnonzero(up | down):
                s = self.states[i]
                changes.append(AlertChange(s.facing_id, s.sku, "raised" if up[i] else "cleared",
                                           float(now_probs[i]), float(units[i]), EMPTY_NOW))
            # Nor on a facing with no sale seen (models.scoring.forecast_ready): no demand, no forecast.
            no_forecast = self.raised_now | ~forecast_ready(feats)
            # The store's threshold under its alert budget, read before this cycle is folded in
            # (a raise_at changed live, edge.live: the would-be forecasts start afresh at it).
            if (self.budget.raise_at, self.budget.clear_at) != (self.raise_at, self.clear_at):
                self.budget.rebase(self.raise_at, self.clear_at)
            self.forecast_at = self.budget.threshold(now_ms)
            up, down = self._step(self.raised, self.changed_at, probs, self.forecast_at, self.clear_at, now_ms,
                                  block=no_forecast)
            self.budget.observe(now_ms, probs, block=no_forecast)
            # Expected empty times of every forecast on, from this cycle's features: the store page
            # lists them soonest first, so they must not keep a restart's 0 or a stale estimate
            # (they were refreshed only in cycles that raised a new forecast somewhere).
            if self.raised.any():
                horizon_h = float(getattr(self.scorer, "horizon_h", 2.0))
                self.last_empty_ms = now_ms + (hours_to_empty(feats, horizon_h) * HOUR_MS).astype(np.int64)
            for i in np.flatnonzero(up | down):
                s = self.states[i]
                changes.append(AlertChange(s.facing_id, s.sku, "raised" if up[i] else "cleared",
                                           float(probs[i]), float(units[i]), FORECAST,
                                           int(self.last_empty_ms[i]) if up[i] else None))
            if self.shadow is not None:
                self._score_shadow(feats, units, now_ms, no_forecast)
            self.last_probs = probs
            self.last_now_probs = now_probs
            self.last_cycle_ms = now_ms
            self.cycles += 1
            return changes

    @property
    def score_ms(self) -> float | None:
        """Mean milliseconds per scoring call of the current scorer (None before its first)."""
        return round(self.score_ms_total / self.score_cycles, 3) if self.score_cycles else None

    def _step(self, raised: np.ndarray, changed_at: np.ndarray, probs: np.ndarray, raise_at: float,
              clear_at: float, now_ms: int, block: np.ndarray | None = None,
              track: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One hysteresis step of one kind, in place; returns the (raised, cleared) masks.
        ``track``: mark changed facings for the next state snapshot (not for the shadow's)."""
        dwell_ok = (now_ms - changed_at) >= self.min_dwell_ms
        up = ~raised & (probs >= raise_at) & dwell_ok
        if block is not None:
            up &= ~block
        down = raised & (probs <= clear_at) & dwell_ok
        if track:
            for i in np.flatnonzero(up | down):
                self._unsaved.add(int(i))
        raised[up] = True
        raised[down] = False
        changed_at[up | down] = now_ms
        return up, down

    def restock_list(self, limit: int = 50) -> list[dict]:
        """Facings to act on: forecasts first, soonest expected empty time first, then shelves
        empty now (highest evidence first), then the rest by forecast probability (last cycle).

        Each row says its ``kind`` (``empty_within_h``, ``empty_now`` or None when no alert is
        on) and, for a forecast, ``expected_empty_ts``."""
        with self._lock:
            fc = self.raised & ~self.raised_now
            rank = np.where(fc, 0, np.where(self.raised_now, 1, 2))
            when = np.where(fc, self.last_empty_ms, 0)
            order = np.lexsort((-self.last_probs, -self.last_now_probs * (rank == 1), when, rank))[:limit]
            out = []
            for i in order:
                s = self.states[i]
                kind = FORECAST if fc[i] else EMPTY_NOW if self.raised_now[i] else None
                out.append({"facing_id": s.facing_id, "sku": s.sku, "alert": kind is not None, "kind": kind,
                            "probability": round(float(self.last_now_probs[i] if kind == EMPTY_NOW
                                                       else self.last_probs[i]), 3),
                            "expected_empty_ts": int(self.last_empty_ms[i]) if kind == FORECAST else None,
                            "units_est": None if s.units is None else round(s.units, 1),
                            "capacity": s.capacity})
            return out

    # ---- persistence ---------------------------------------------------------------------

    def snapshot(self, everything: bool = False) -> list[tuple[str, object, str, int]]:
        """Rows for ``SqliteBuffer.save_facing_states``: the facings changed since the last
        snapshot (or all of them), each state as packed float64 (:data:`SNAPSHOT_LAYOUT`,
        built column by column for all of them at once), plus the layout row.

        Once the facings saved since the last full snapshot plus the changed ones exceed twice
        the planogram, this one holds every facing and :attr:`snapshot_full` says so (the
        buffer then drops the older rows: what is stored stays under three states a facing)."""
        with self._lock:
            n = len(self.states)
            everything = (everything or len(self._unsaved) == n
                          or self._saved_since_full + len(self._unsaved) > 2 * n)
            idx = list(range(n)) if everything else sorted(self._unsaved)
            self._unsaved = set()
            self.snapshot_full = everything
            self._saved_since_full = 0 if everything else self._saved_since_full + len(idx)
            # The alert budget's log of would-be forecasts (one small JSON row; the buffer keeps
            # the latest): without it a restart would forget the store's last week. Its open ones
            # are named by facing id, as the facing rows are (a planogram may change). It moves
            # with the scores, also in cycles that change no facing (a quiet store, a forecast
            # the budget held): then it goes out alone.
            budget = json.dumps(self.budget.to_state([s.facing_id for s in self.states]))
            budget_row = (BUDGET_ROW, budget, "budget", 0)
            budget_moved, self._budget_saved = budget != self._budget_saved, budget
            if not idx:
                return [budget_row] if budget_moved else []
            blobs = _pack_states([self.states[i] for i in idx])
            # The alert words and times of all of them at once (per facing from numpy scalars
            # they cost more than the packing at 10,000 facings).
            words = _alert_words(self.raised[idx], self.raised_now[idx])
            since = self.changed_at[idx].tolist()
            rows: list[tuple[str, object, str, int]] = [(LAYOUT_ROW, _LAYOUT_TEXT, "layout", 0)]
            rows += zip([self.states[i].facing_id for i in idx], blobs, words, since)
            rows.append(budget_row)
            return rows

    def restore(self, rows: list[tuple[str, str, str, int]]) -> int:
        """Load snapshot rows (facings no longer in the planogram are ignored; a facing's
        later row wins); return how many facings. A layout row applies to the packed rows after
        it (the first one also to those before it: per-facing rows come in no order)."""
        done: set[int] = set()
        layout = next((_parse_layout(state) for facing_id, state, _, _ in rows if facing_id == LAYOUT_ROW), None)
        with self._lock:
            for facing_id, state, alert, since in rows:
                if facing_id == LAYOUT_ROW:
                    layout = _parse_layout(state)
                    continue
                if facing_id == BUDGET_ROW:  # taken at another model threshold: not restored
                    self.budget.load_state(json.loads(state), self.index)
                    continue
                i = self.index.get(facing_id)
                if i is None:
                    continue
                if isinstance(state, (bytes, memoryview)):
                    if layout is None:
                        log.warning("facing state of %s has no layout row; not restored", facing_id)
                        continue
                    fields = _unpack_state(bytes(state), layout)
                else:  # JSON text: snapshots of older builds
                    fields = json.loads(state)
                plan = self.states[i]
                known = {f.name: getattr(plan, f.name) for f in dataclasses.fields(FacingState) if f.init}
                fields = {k: (_array(v) if isinstance(known[k], np.ndarray)
                              else [float(x) for x in v] if isinstance(known[k], list) else v)
                          for k, v in fields.items() if k in known}  # fields added or dropped by models
                fields.update(facing_id=plan.facing_id, sku=plan.sku, capacity=plan.capacity,
                              sku_facings=plan.sku_facings)
                self.states[i] = FacingState(**fields)
                words = set(alert.split("+"))
                self.raised[i] = "raised" in words
                self.raised_now[i] = EMPTY_NOW in words
                self.changed_at[i] = since
                self.now_changed_at[i] = since
                done.add(i)
            self.cache = FeatureCache(self.states)
        return len(done)


# ---- snapshot encoding ----------------------------------------------------------------------
#
# A facing's state is packed as little-endian float64 values in the order of SNAPSHOT_LAYOUT
# (None as NaN; ms timestamps are exact below 2**53). The whole snapshot is built column by
# column with numpy for all changed facings at once: JSON per facing cost ~100 us and 1.4 KB
# each, which at 10,000 facings made the snapshot cost about half of a cycle's scoring. The
# layout travels with the rows (the row ``LAYOUT_ROW``), so a build whose FacingState gained
# or lost fields still restores by name.

_SKIP = ("facing_id", "sku")


def _width(f) -> int:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return len(default) if isinstance(default, (list, np.ndarray)) else 0


#: (field, width): width 0 is a scalar, else a vector of that length.
SNAPSHOT_LAYOUT: tuple[tuple[str, int], ...] = tuple(
    (f.name, _width(f)) for f in dataclasses.fields(FacingState) if f.init and f.name not in _SKIP)
_LAYOUT_TEXT = "f8:" + ",".join(f"{n}:{w}" for n, w in SNAPSHOT_LAYOUT)
_COLS = np.cumsum([0] + [w or 1 for _, w in SNAPSHOT_LAYOUT])
_ROW_WIDTH = int(_COLS[-1])
_SCALAR_COLS = np.array([c for (_, w), c in zip(SNAPSHOT_LAYOUT, _COLS) if not w], dtype=np.intp)
_SCALARS = operator.attrgetter(*(n for n, w in SNAPSHOT_LAYOUT if not w))
_VECTORS = tuple((n, int(c), w) for (n, w), c in zip(SNAPSHOT_LAYOUT, _COLS) if w)
_KINDS = {f.name: ("int" if "int" in str(f.type) else "bool" if "bool" in str(f.type) else "float")
          for f in dataclasses.fields(FacingState)}


def _pack_states(states: list) -> list[bytes]:
    """Each state as packed float64 values (one numpy matrix for all of them).

    The scalar fields of all states are read as one stream (an ``attrgetter`` per state, None
    made NaN) into one array, each vector field likewise: at 10,000 facings a ``getattr`` per
    field and facing into a list per field (~290,000 calls, then numpy converting each list)
    cost twice as much."""
    n = len(states)
    matrix = np.empty((n, _ROW_WIDTH), dtype="<f8")
    if n:
        nan = float("nan")
        values = chain.from_iterable(map(_SCALARS, states))
        matrix[:, _SCALAR_COLS] = np.fromiter((nan if v is None else v for v in values), dtype=np.float64,
                                              count=n * len(_SCALAR_COLS)).reshape(n, -1)
        for name, col, width in _VECTORS:
            values = list(map(operator.attrgetter(name), states))
            if isinstance(values[0], np.ndarray):  # stacked as arrays (iterated, each value is a numpy scalar)
                matrix[:, col:col + width] = np.array(values, dtype=np.float64)
            else:
                flat = chain.from_iterable(values)
                matrix[:, col:col + width] = np.fromiter(flat, dtype=np.float64, count=n * width).reshape(n, width)
    raw, size = matrix.tobytes(), _ROW_WIDTH * 8
    return [raw[k:k + size] for k in range(0, n * size, size)]


def _parse_layout(text) -> tuple[tuple[str, int], ...] | None:
    text = text.decode() if isinstance(text, (bytes, memoryview)) else str(text)
    if not text.startswith("f8:"):
        return None
    return tuple((n, int(w)) for n, w in (item.rsplit(":", 1) for item in text[3:].split(",") if item))


def _unpack_state(blob: bytes, layout: tuple[tuple[str, int], ...]) -> dict:
    """Fields of one packed state (names as the layout that wrote it says)."""
    values = np.frombuffer(blob, dtype="<f8")
    out, j = {}, 0
    for name, width in layout:
        if width:
            out[name] = values[j:j + width].copy()
            j += width
            continue
        v = float(values[j])
        j += 1
        kind = _KINDS.get(name, "float")
        out[name] = None if v != v else int(v) if kind == "int" else bool(v) if kind == "bool" else v
    return out


def _array(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _alert_words(forecast: np.ndarray, now: np.ndarray) -> list[str]:
    """``_alert_word`` of each facing (boolean arrays)."""
    table = [_alert_word(f, n) for f in (False, True) for n in (False, True)]
    return [table[k] for k in (forecast.astype(np.int8) * 2 + now.astype(np.int8)).tolist()]


def _alert_word(forecast: bool, now: bool) -> str:
    """The facing_state ``alert`` column: ``raised`` (forecast), ``empty_now``, both, or ``clear``."""
    words = (["raised"] if forecast else []) + ([EMPTY_NOW] if now else [])
    return "+".join(words) or "clear"


def _kind_threshold(scorer, kind: str) -> float | None:
    """A scorer's operating threshold for one alert kind (manifest ``thresholds``), or None."""
    per_kind = getattr(scorer, "thresholds", None)
    if isinstance(per_kind, dict) and kind in per_kind:
        return float(per_kind[kind])
    return None

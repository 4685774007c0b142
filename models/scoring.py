"""Scorers: turn a feature matrix into stock-out probabilities, in one batched call.

``Scorer`` is the role; ``PoissonScorer`` is the statistical baseline every gateway has; model
runtimes (LiteRT int8, ONNX) implement the same interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.baseline import poisson_stockout_prob
from models.features import _CAP_H, FEATURES, NOISE_TOL

__all__ = ["Scorer", "PoissonScorer", "ZeroSalesScorer", "BaselineScorer", "DEFAULT_HORIZON_H",
           "EMPTY_NOW_THRESHOLD", "FORECAST_SALE_WINDOW_H", "empty_now_prob", "empty_now_ready", "forecast_ready",
           "hours_to_empty"]

DEFAULT_HORIZON_H = 2.0
_UNITS = FEATURES.index("units_est")
_RATE = FEATURES.index("rate_24h")
_SENSOR = FEATURES.index("has_sensor")
_EXPECTED_SINCE_SALE = FEATURES.index("demand_since_sale")
_DEMAND_2H = FEATURES.index("demand_next_2h")
_UNEXPLAINED = FEATURES.index("units_unexplained")
_NOISE = FEATURES.index("reading_noise")
_SINCE_SALE = FEATURES.index("hours_since_sale")
_SALES_SINCE_READING = FEATURES.index("sales_since_reading")
_SINCE_READING = FEATURES.index("hours_since_reading")
_SKU_FACINGS = FEATURES.index("sku_facings")
_SINCE_RESTOCK = FEATURES.index("hours_since_restock")

#: Operating threshold of ``empty_now`` when no manifest gives one (a gateway on the Poisson
#: baseline: the statistical detector): ``gondola eval`` picked 0.903 for it on the validation
#: stores when the goal was alerts on facings without a sensor 85 % right on the pooled stores,
#: rounded to 0.9. Under ``models.pipeline.EMPTY_NOW_PRECISION`` (90 % on every validation
#: source), with ``_till_counts_empty``, it picks 0.947 (session 7's run of record: precision on
#: facings without a sensor 0.87-0.98, median delay 16-21 min on the seven held-out sets,
#: ``bench/results/model_eval.json``); this fallback was left at 0.9, not measured there.
EMPTY_NOW_THRESHOLD = 0.9
#: An ``empty_within_h`` forecast is raised only on a facing the till has sold from within this
#: many hours (``hours_since_sale`` below its cap): a forecast of running out needs the
#: facing's own demand seen. In a cold start this is "no sale seen yet": the model, trained on
#: rows where a facing nobody bought from by the morning was often an empty shelf, scores such
#: facings 0.9+ on no evidence (the first night of ``make demo`` raised 20 forecasts on facings
#: the gateway had not heard of). Chosen on the validation stores (docs/model.md, *Cold start*).
FORECAST_SALE_WINDOW_H = 168.0


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


def empty_now_prob(features: np.ndarray, trusted: np.ndarray | None = None,
                   model: np.ndarray | None = None) -> np.ndarray:
    """Evidence that each facing is empty now, (n,) in [0, 1]: the detector behind ``empty_now``.

    A facing whose (trusted) shelf sensor reports scores 1 when the reading says 0 units and 0
    otherwise. A facing without a sensor, or whose sensor is not trusted (``trusted`` False:
    stuck, drifting or silent), has only the till: the zero-sales evidence ``z = 1 -
    exp(-expected units since the last sale)`` weighed with the POS estimate of units left
    ``u`` (last restock fill minus sales since) as ``z ** 0.25 * exp(-u)``. Silence alone is
    weak evidence (validation PR-AUC 0.15 for "empty now" on facings without a sensor); with
    the estimate it is 0.67 (the weighting was chosen on training stores, docs/model.md).
    With ``model`` (the stock-out model's scores of the same rows), those facings score the
    model's probability instead: it ranks "empty now" there better still (held-out PR-AUC
    0.88 against 0.83 on the default stores, docs/model.md); the statistical detector is what
    a gateway running the Poisson baseline has. Either way a facing without a believed sensor
    whose SKU is on no other facing scores 1 when the till's count leaves it 0 units
    (:func:`_till_counts_empty`): the evidence a slow mover gets, as its silence says little
    for a day.
    """
    features = _check(features)
    z = 1.0 - np.exp(-np.maximum(features[:, _EXPECTED_SINCE_SALE].astype(np.float64), 0.0))
    zero = z ** 0.25 * np.exp(-np.maximum(features[:, _UNITS].astype(np.float64), 0.0))
    if model is not None:
        zero = np.asarray(model, dtype=np.float64).reshape(-1)
    sensor = features[:, _SENSOR] > 0.5
    if trusted is not None:
        sensor &= np.asarray(trusted, dtype=bool)
    zero = np.where(_till_counts_empty(features) & ~sensor, 1.0, zero)
    # A reading of 0 that fell further than the till's sales explain (noise, a load cell drifting
    # down), or from a sensor whose readings move while the shelf does not (``NOISE_TOL``), is
    # weighed like a facing without a sensor: the till's silence, or the model, decides.
    doubted = _doubted(features)
    read_empty = features[:, _UNITS] <= 0.0
    return np.where(sensor & read_empty & doubted, zero,
                    np.where(sensor, read_empty.astype(np.float64), zero))


def _till_counts_empty(features: np.ndarray) -> np.ndarray:
    """(n,) bool: the till's count (restock fill minus sales: ``units_est`` of a facing no
    believed sensor watches) leaves 0 units on the only facing of its SKU (``sku_facings`` 1:
    the till's lines are this facing's), and a sale was the last thing it counted (the till
    sold from it since its last restock scan; not a distrusted sensor's 0 the till never
    lowered: a shelf refilled without a scan reads more, is taken for drift up, and its
    facing had no sale to show). On the training stores' validation rows such a facing
    was truly empty in 84-100 % of rows per source, and ``empty_now`` alerts raised there at
    once were as right as the model's (95-98 % per source); the model, trained on faster
    movers, scored them 0.92 on a slow assortment, under its threshold for hours (docs/model.md,
    *Slow movers' empty_now*). Not on a SKU with several facings: there the till names the SKU
    (``sale_shares``), and a facing counted 0 while the SKU's total is also 0 was empty in
    82-93 % of the alerts on two sources, under the threshold rule's 90 %."""
    return ((features[:, _UNITS] <= 0.0) & (features[:, _SKU_FACINGS] <= 1)
            & (features[:, _SINCE_SALE] < features[:, _SINCE_RESTOCK]))


def _doubted(features: np.ndarray) -> np.ndarray:
    """(n,) bool: the sensor's reading is not believed as "empty now" on its own (see
    :func:`empty_now_prob`)."""
    return (features[:, _UNEXPLAINED] >= 0.5) | (features[:, _NOISE] > NOISE_TOL)


def empty_now_ready(features: np.ndarray) -> np.ndarray:
    """(n,) bool: facings on which an ``empty_now`` alert may be raised (one already raised
    stays and clears as usual).

    False on a facing whose believed sensor reads empty only by the till's count: its estimate
    is 0 with units sold since the last reading (``sales_since_reading`` > 0), so the reading
    itself said more than 0 (or said 0 and the till sold from the shelf since). A shelf sensor
    reports when its value changes (``firmware_sim.devices``), so a shelf that went empty is
    read empty within minutes; a 0 the sensor never read is contradicted by its silence. It is
    the SKU with several facings: the till names the SKU, and a sale credited to this facing
    (``models.features.sale_shares``) was taken from a sibling. On the training stores'
    validation rows (three packages pooled) such raises were 126 of the 196 false ``empty_now``
    alerts on believed sensors, against 36 of 6,640 right ones, which the sensor's own 0 then
    raises (right alerts of both kinds did not fall; docs/model.md, *A zero the sensor never
    read*). Since ``models.features.sku_sale`` the till no longer lowers a believed sensor's
    facing of such a SKU: there a sale since the reading is not this facing's
    (:func:`_sold_since_reading`). A doubted reading (:func:`empty_now_prob`) is weighed as before. The one rule the
    gateway (``edge.inference``), the cloud stream and the evaluation's alert replay
    (``models.evaluation.evaluate_alert_kinds``) apply."""
    features = _check(features)
    read_by_till = _sensor_reads_empty(features) & _sold_since_reading(features) & ~_doubted(features)
    return ~read_by_till


def _sensor_reads_empty(features: np.ndarray) -> np.ndarray:
    """(n,) bool: the facing has a shelf sensor and its units estimate is 0 (what each gate then
    asks is whether the till sold from it since the reading, :func:`_sold_since_reading`)."""
    return (features[:, _SENSOR] > 0.5) & (features[:, _UNITS] <= 0.0)


def _sold_since_reading(features: np.ndarray) -> np.ndarray:
    """(n,) bool: the till sold from the facing since its sensor's last reading (``sales_since_reading``
    > 0), as evidence about this facing's shelf. Not on a facing of a SKU with several facings whose
    sensor has reported (``hours_since_reading`` under its cap): ``models.features.sku_sale`` never
    lowers such a facing's estimate, so its 0 is the sensor's own reading, and credits it a sale
    after that 0 only when every facing of the SKU is estimated empty (``sale_shares``' even split):
    a sale of the SKU, not of this shelf. On the held-out sets such rows were shelves truly empty
    in 120 of 120 (busier, default, faults, assortment, degraded; gondola eval's rows, version 12)."""
    shared_read = (features[:, _SKU_FACINGS] > 1) & (features[:, _SINCE_READING] < _CAP_H)
    return (features[:, _SALES_SINCE_READING] > 0.0) & ~shared_read


def forecast_ready(features: np.ndarray) -> np.ndarray:
    """(n,) bool: facings on which an ``empty_within_h`` forecast may be raised (one already
    raised may stay and clears as usual). Two conditions:

    * the till sold from the facing within :data:`FORECAST_SALE_WINDOW_H` (no demand seen, no
      forecast: docs/model.md, *Cold start*);
    * the facing is not one its shelf sensor reads empty (``has_sensor``, ``units_est`` <= 0)
      with no sale since the reading (``sales_since_reading`` 0). A forecast promises stock now
      that runs out within H; there it would read "empty in 0 min" of a shelf most often
      already empty. Such a 0 is one ``empty_now`` does not believe on its own (a doubted
      reading, :func:`empty_now_prob`), else ``empty_now`` is on and holds the forecast anyway;
      ``empty_now`` keeps its own rule there (the model's empty-now score at its threshold). A
      sale since the reading is the till's evidence of stock: the forecast may be raised (a
      sale of a SKU with several facings is not this facing's: :func:`_sold_since_reading`). On
      the training stores' validation rows (three packages pooled) 722 forecasts were raised
      on a sensor's 0: 589 on shelves already empty, 37 that warned ahead, 96 wrong; with no
      sale since the reading 565 / 8 / 62 of 635 (docs/model.md, *No forecast on a sensor's
      zero*).

    ``empty_now`` is not gated by the sale (a shelf empty from the start sells nothing; its own
    gate is :func:`empty_now_ready`). The one rule the
    gateway (``edge.inference``), the cloud stream and the evaluation's alert replay
    (``models.evaluation.evaluate_alert_kinds``) apply."""
    features = _check(features)
    sold = features[:, _SINCE_SALE] < FORECAST_SALE_WINDOW_H
    read_empty = _sensor_reads_empty(features) & ~_sold_since_reading(features)
    return sold & ~read_empty


def hours_to_empty(features: np.ndarray, horizon_h: float) -> np.ndarray:
    """Expected hours until each facing's estimated units are sold, capped at ``horizon_h``.

    Demand per hour is the larger of the hour-of-day expectation for the next two hours and the
    day's average rate (a shelf forecast to empty is warned about at the earlier of the two).
    """
    features = _check(features).astype(np.float64)
    rate = np.maximum(np.maximum(features[:, _DEMAND_2H] / 2.0, features[:, _RATE]), 1e-6)
    return np.clip(np.maximum(features[:, _UNITS], 0.0) / rate, 0.0, horizon_h)

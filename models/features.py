"""Stock-out features: one definition for the gateway (online) and the cloud (offline).

A :class:`FacingState` is updated event by event, in event-time order, with the sales, shelf
readings and restocks of one shelf facing; ``features(now_ms)`` returns the feature vector at
an instant. The gateway keeps one state per facing and updates it as events arrive; the cloud
replays silver events through the very same class (``models.replay``), so both compute the
same values by construction (the parity test checks the plumbing around it).

Every update is O(1) and keeps no history:

* sales rates are exponentially decayed counts (units per hour) over several time constants,
  corrected for warm-up (a state that has seen 3 hours of a steady 2 units/h reports 2, not
  the 0.04 a raw week-long decay would give);
* an hour-of-day sales profile (24 decayed bins) gives the expected demand over the next two
  hours and until the next restock round;
* an hour-of-day restock profile (24 decayed bins) says when the next restock round usually is;
* a decayed mean of the unit price exposes promotions from POS alone (price below usual).

Feature values are in natural units (units, units/h, hours): the baselines read them directly.
Models see them through :func:`encode_for_model` (log scale), which keeps every column in a
small common range so a per-tensor int8 input scale loses no precision that matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS

__all__ = [
    "FEATURES",
    "FEATURE_DOMAIN",
    "encoded_domain",
    "RATE_TAUS_H",
    "FacingState",
    "feature_matrix",
    "encode_for_model",
    "MODEL_ENCODING",
    "MODEL_ENCODINGS",
    "FeatureCache",
    "FeatureCacheGroup",
    "sensor_untrusted",
    "pos_line_qty",
    "sale_shares",
    "sku_sale",
    "sku_reading",
    "set_sku_facings",
    "sku_groups",
    "STATE_RULES_VERSION",
]

#: Version of the rules by which events update a ``FacingState``: bump it with any change that
#: makes the same events give other feature values. A saved state (the lake's
#: ``gold.feature_state`` snapshots) kept under other rules is not resumed; the history is
#: replayed instead. 12: ``sku_sale`` / ``sku_reading`` (sale attribution by sensor evidence).
#: 13: a load cell's crept zero re-zeroed at refills (``FacingState.zero_creep``).
#: 14: a load cell's zero tracked from its grams (``FacingState.zero_offset``).
STATE_RULES_VERSION = 14

#: Time constants of the decayed sales rates, hours.
RATE_TAUS_H = (1.0, 4.0, 24.0, 168.0)
#: Time constant of the hour-of-day profiles (sales and restocks), hours: two weeks.
PROFILE_TAU_H = 336.0
#: Horizon of the ``demand_next_2h`` feature, hours (fixed: features do not depend on H).
DEMAND_WINDOW_H = 2.0
#: A sensor reports every change: one silent this long while the till sold at least
#: ``SILENT_SENSOR_UNITS`` of its facing's units since its last (non-empty) reading is not
#: believed either (its facing is scored on POS evidence).
SILENT_SENSOR_H = 2.0
SILENT_SENSOR_UNITS = 3.0
#: The cloud stream's sensor rules (``cloud/stream/detectors.py``), ported (issue 11):
#: stuck (a SKU's only facing: with several, which facing a POS line took from is unknown): its
#: value reported again unchanged after the till sold at least ``STUCK_UNITS`` more units than
#: the drop of the reading that set the value left unexplained (picked, not yet paid),
#: ``STUCK_MIN_MS`` or more after the value, until the value changes; or no reading at all
#: ``STUCK_MIN_MS`` after such sales (a load cell reports every change);
#: fleet: no sensor of the store (``FLEET_MIN_SENSORS`` or more heard) has reported for
#: ``FLEET_SILENT_MS`` while the till sold since.
STUCK_UNITS = 3.0
#: Drift up: each reading's rise above the last reading minus POS sales plus restocks, summed
#: with a ``TRUST_TAU_H`` decay and floored at 0 (noise cancels in the sum, a rise nothing
#: explains adds up); over max(TRUST_TOL_UNITS, TRUST_TOL_SHARE x capacity) units, a SKU's only
#: facing is not believed. Units vanishing without a sale (shrink) are real: not counted.
#: (4 units picked on the training stores: 2 flagged ten times the rows on a clean training set.)
TRUST_TAU_H = 6.0
TRUST_TOL_UNITS = 4.0
TRUST_TOL_SHARE = 0.1
STUCK_MIN_MS = 30 * 60_000
#: Below empty (issue 11): a reading carries the load cell's weight (``weight_g``) beside the
#: units the device rounded from it (at 0 and below: 0). A weight more than ``BELOW_EMPTY_UNITS``
#: unit weights under an empty shelf is a load cell drifting or biased low, not a shelf: not
#: believed until a reading is back above. The unit weight is learnt from the readings
#: themselves (``weight_g`` summed over ``units_est`` summed, readings of 1 unit or more).
BELOW_EMPTY_UNITS = 1.0
#: A load cell's zero creeps (issue 11): its weight runs off by a few grams a day, and a cell
#: that crept down by more than half a unit reads 0 over the shelf's last unit, a false "empty
#: now". A refill fills the facing to its planogram capacity (a partial one is the exception),
#: so the first reading after a refill scan (no sale between them) short of capacity is
#: evidence of the offset. A partial refill falls further short, so the least shortfall of
#: each ``CREEP_REFILLS`` refills, when two of them fell that short, sets
#: ``FacingState.zero_creep`` (at 0 or more units: a cell reading above capacity is not
#: corrected). Every later
#: reading is corrected by it (the auto-zero shelf-sensor vendors do
#: at a known state): ``units_est + zero_creep``, and a reading of 0 from its weight
#: (``weight_g`` over the learnt unit weight, plus the creep, rounded, at least 0), since the
#: device's 0 hides how far under it the weight fell.
CREEP_REFILLS = 4
#: The load cell's zero tracked from its grams (issue 11): a reading carries the grams the
#: device rounded its units from, so how far the grams sit off a whole count of units is seen
#: at every reading. ``FacingState.zero_offset`` (units) follows it: each weighed reading is
#: read as ``round(weight_g / unit weight - zero_offset)`` units, and the offset moves by
#: ``OFFSET_GAIN`` of what is left over (between -0.5 and 0.5 unit: a unit sold is a whole step
#: and moves nothing), at most ``OFFSET_RATE`` units a day since the last reading. A zero
#: creeping a few grams a day is followed as it creeps, through the half unit where the device's
#: own rounding turns a shelf's last unit into a 0 (the false "empty now" of a cell whose creep
#: no refill has shown yet, ``CREEP_REFILLS``) or an empty shelf into a 1; a load cell running
#: off by units an hour (a fault: ``sensor_untrusted``'s business) is not followed, and the
#: offset is right again when it is recalibrated. The offset starts at 0 (a cell is tared when
#: installed) and the unit weight at the grams over the units of its first ``OFFSET_READINGS``
#: readings of 1 unit or more; once those readings spread over more than ``OFFSET_SPREAD``
#: (variance, units squared), the slope of grams over units, which does not take the offset in
#: (a slope over little spread does: a creeping zero steps the units with no grams moving).
#: Chosen on the training stores and on development stores with drifting cells (docs/model.md).
OFFSET_GAIN = 0.2
#: A tracked count further from the device's own units than 3 x the larger of them and the
#: facing's capacity, plus ``OFFSET_IMPLAUSIBLE`` units, is not a creep: the grams no longer match
#: the units the tracker learnt them against (a load cell replaced or recalibrated, a firmware
#: reporting another scale, a corrupt value). The device's units stand for that reading and the
#: tracker starts over (offset 0, unit weight learnt again from the next readings). Without it,
#: 20 readings of 5 units at 0.5 g and then one of 1,250 g read 12,500 units (review, session 8).
#: On the simulator's stores the two differ by 9 units at most (training and held-out sets with
#: drifting cells), so the bound never holds there and no row changes; it catches gross
#: mismatches only (grams in another scale by 4 x or more).
OFFSET_IMPLAUSIBLE = 10.0
OFFSET_RATE = 0.5
OFFSET_READINGS = 20
OFFSET_SPREAD = 4.0

#: The POS estimate of an untrusted sensor's facing (``FacingState.pos_units``) starts from the
#: last believed reading. A reading more than ``POS_ANCHOR_TOL`` units below the till's account
#: (that estimate: the last anchor minus POS sales since, plus restocks) fell further than the
#: till explains (noise, a load cell drifting or biased low, shrink) and does not anchor it: a
#: cell drifting down anchored it on its own low readings, so a sensor distrusted later was
#: scored on a POS zero the model trusts (issue 11; chosen on the training stores, docs/model.md).
POS_ANCHOR_TOL = 0.5
FLEET_SILENT_MS = 30 * 60_000
FLEET_MIN_SENSORS = 5  # the cloud's: with fewer, one quiet shelf is not a silent fleet
#: Reading noise (issue 11): a load cell's reading scatters around the shelf's weight, and on a
#: noisy one a shelf still holding a unit reads 0 now and then. Each sensor's noise is estimated
#: online (``FacingState.reading_noise``, the feature of that name) as the share of consecutive
#: readings that differ while the shelf could not have changed (the till sold nothing and no
#: restock was scanned between them; a difference counts at most 1, so one late restock scan
#: weighs one flicker), a mean over its last ``NOISE_READINGS`` such pairs. A reading of 0 from a
#: sensor noisier than ``NOISE_TOL`` is not believed as "empty now" on its own
#: (``models.scoring.empty_now_prob``): the model, which sees the noise, or the till decides.
NOISE_READINGS = 30
NOISE_TOL = 0.05

#: Names of the columns of a feature vector, in order. Add at the end; never reorder.
FEATURES: tuple[str, ...] = (
    "units_est",            # units on shelf: sensor reading minus POS sales since, or restock fill minus sales
    "has_sensor",           # 1 when a shelf sensor reports on this facing
    "capacity",             # planogram capacity of the facing
    "fill_ratio",           # units_est / capacity, capped at 2
    *(f"rate_{int(t)}h" for t in RATE_TAUS_H),  # decayed sales rate, units per hour
    "hours_since_restock",  # capped at 168
    "hours_since_reading",  # sensor silence (sensor health), capped at 168 (168 when no sensor)
    "battery_pct",          # last reported battery (sensor health), 0 when no sensor
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "sales_since_reading",  # POS units sold since the last sensor reading (0 when no sensor)
    "hours_since_sale",     # silence of the till for this facing, capped at 168 (zero-sales run)
    "demand_next_2h",       # expected units sold in the next 2 h (weekly rate x hour-of-day profile)
    "hours_to_restock",     # hours until the usual next restock round (24 when none learnt yet)
    "demand_to_restock",    # expected units sold until that round
    "price_ratio",          # last unit price / usual unit price (< 1: promotion), 1 when unknown
    "demand_since_sale",    # units the profile expected since the last sale (zero-sales evidence)
    "sku_facings",          # facings the SKU's POS lines are split over (1: the till tells this facing's sales)
    "sku_units_est",        # units_est summed over the SKU's facings (this one included)
    "units_unexplained",    # units the last sensor reading fell below what the till explains (0 when no sensor)
    "reading_noise",        # share of the sensor's still readings that moved (0 when no sensor; NOISE_READINGS)
)

_CAP_H = 168.0
_PRICE_RATIO_CAP = 4.0  # price_ratio's ceiling
_N = len(FEATURES)
_IDX = {name: i for i, name in enumerate(FEATURES)}

_INF = float("inf")
#: Every value each feature can take in natural units, (lowest, highest) (inf: no bound), by
#: its definition above, not by what a store happened to show (a count or rate below 0, from a
#: customer return, is taken as 0 by :func:`encode_for_model`, so its 0 bounds what the model
#: sees; a planogram capacity of 0 is possible, ``fill_ratio`` then divides by 1; ``price_ratio``
#: is capped at 4 as computed). The int8 export covers the
#: training range widened towards these bounds (``models.export.int8_input_range``), so a
#: store unlike the training stores (a facing of 2 units, where every training facing held 4
#: or more) is not clipped to the training stores' end while the float model extrapolates.
FEATURE_DOMAIN: dict[str, tuple[float, float]] = {
    "units_est": (0.0, _INF), "has_sensor": (0.0, 1.0), "capacity": (0.0, _INF), "fill_ratio": (0.0, 2.0),
    **{f"rate_{int(t)}h": (0.0, _INF) for t in RATE_TAUS_H},
    "hours_since_restock": (0.0, _CAP_H), "hours_since_reading": (0.0, _CAP_H), "battery_pct": (0.0, 100.0),
    "hour_sin": (-1.0, 1.0), "hour_cos": (-1.0, 1.0), "dow_sin": (-1.0, 1.0), "dow_cos": (-1.0, 1.0),
    "sales_since_reading": (0.0, _INF), "hours_since_sale": (0.0, _CAP_H), "demand_next_2h": (0.0, _INF),
    "hours_to_restock": (0.0, _INF), "demand_to_restock": (0.0, _INF), "price_ratio": (0.0, _PRICE_RATIO_CAP),
    "demand_since_sale": (0.0, _INF), "sku_facings": (1.0, _INF), "sku_units_est": (0.0, _INF),
    "units_unexplained": (0.0, _INF), "reading_noise": (0.0, 1.0),
}


@dataclass
class FacingState:
    """Online state of one facing. Feed events in event-time order.

    ``started_ms`` is when observation began (the first event fed, or the gateway's start): the
    decayed rates are corrected for the time seen so far.
    """

    facing_id: str
    sku: str
    capacity: int
    has_sensor: bool = False
    units: float | None = None
    last_reading_ms: int | None = None
    last_restock_ms: int | None = None
    last_sale_ms: int | None = None
    battery_pct: float = 0.0
    sales_since_reading: float = 0.0
    started_ms: int | None = None
    last_price: float | None = None
    #: Sensor trust (issue 11): a shelf sensor whose readings the till contradicts (stuck,
    #: drifting, jumping) is not believed; the facing is then scored as one without a sensor,
    #: on ``pos_units``: the last trusted reading minus POS sales since, plus restocks (a reading
    #: below that account by more than ``POS_ANCHOR_TOL`` does not reset it).
    #: Facings of the same SKU in the planogram: the till names the SKU, so with several the
    #: split of its sales (``sale_shares``) and this facing's estimate are a guess.
    sku_facings: int = 1
    sensor_untrusted: bool = False
    pos_units: float | None = None
    last_reading_units: float | None = None
    _value_ms: int | None = None      # when the reading last changed value
    _sold_since_value: float = 0.0    # net units the till took since then, confirmed by a reading
    _drop_at_value: float = 0.0       # units that reading fell below what the till explained (picked, not yet paid)
    _stuck: bool = False
    _residual: float = 0.0
    _weight_sum: float = 0.0          # weight_g of the readings of 1 unit or more ...
    _weight_units: float = 0.0        # ... and their units_est: the unit weight is the ratio
    _below: bool = False              # the last reading with a weight was BELOW_EMPTY_UNITS under empty
    #: Units the load cell reads under the shelf (its zero crept down; ``BELOW_EMPTY_UNITS``'s
    #: neighbour above): readings are corrected by it. ``_refill_short``: the last clean refill's
    #: reading short of capacity, the least of this block (None: none yet); ``_refills``: how many,
    #: ``_refills_at``: how many of them read that least shortfall.
    zero_creep: float = 0.0
    _refill_short: float | None = None
    _refills: int = 0
    _refills_at: float = 0.0
    #: The load cell's zero offset in units, tracked from its grams (``OFFSET_GAIN``), and the
    #: sums of the readings of 1 unit or more that give the unit weight as a slope: count,
    #: units, units squared, grams, units x grams.
    zero_offset: float = 0.0
    _g_tare: float | None = None
    _g_n: float = 0.0
    _g_u: float = 0.0
    _g_uu: float = 0.0
    _g_w: float = 0.0
    _g_uw: float = 0.0
    #: The sensor's reading noise (``NOISE_READINGS``): share of still readings that moved.
    reading_noise: float = 0.0
    _noise_pairs: int = 0
    #: Units the last reading fell below the last reading minus POS sales (plus restocks): a
    #: shelf loses units to sales; a drop the till does not explain is noise, a load cell
    #: drifting down, or shrink. Kept through repeated equal readings (heartbeats) until sales
    #: explain it; a reading of 0 with such a drop is not believed as "empty now" on its own.
    units_unexplained: float = 0.0
    #: Units of this SKU's recent POS lines (``sku_sale``) this facing holds on a guess: debited
    #: from it (a facing no believed sensor watches) or, with no such facing in stock, waiting
    #: for a believed sensor's reading to fall. A believed reading of a sibling falling within
    #: ``GUESS_MS`` explains them: what was debited goes back (``sku_reading``).
    _guessed: float = 0.0
    _guess_ms: int | None = None
    _rates: list[float] = field(default_factory=lambda: [0.0] * len(RATE_TAUS_H))
    _rates_at_ms: int | None = None
    # Hour-of-day profiles hold weights relative to ``_profile_ref_ms`` (an event at t adds
    # qty * exp((t - ref) / PROFILE_TAU_H)): only their shape is read, so no decay pass over
    # all 48 bins is needed on each event; the reference moves before the numbers grow large.
    _sales_profile: np.ndarray = field(default_factory=lambda: np.zeros(24))
    _restock_profile: np.ndarray = field(default_factory=lambda: np.zeros(24))
    _profile_ref_ms: int | None = None
    _price_mean: float | None = None

    # ---- updates -------------------------------------------------------------------------

    def _touch(self, t_ms: int) -> None:
        if self.started_ms is None:
            self.started_ms = t_ms

    def _decay_to(self, t_ms: int) -> None:
        self._touch(t_ms)
        if self._rates_at_ms is None:
            self._rates_at_ms = t_ms
        else:
            dt_h = (t_ms - self._rates_at_ms) / HOUR_MS
            if dt_h > 0:
                for i, tau in enumerate(RATE_TAUS_H):
                    self._rates[i] *= math.exp(-dt_h / tau)
                self._rates_at_ms = t_ms

    def _profile_weight(self, t_ms: int) -> float:
        if self._profile_ref_ms is None:
            self._profile_ref_ms = t_ms
        x = (t_ms - self._profile_ref_ms) / HOUR_MS / PROFILE_TAU_H
        if x > 30.0:  # rebase: keep weights far from float overflow
            k = math.exp(-x)
            self._sales_profile = self._sales_profile * k
            self._restock_profile = self._restock_profile * k
            self._profile_ref_ms = t_ms
            x = 0.0
        return math.exp(x)

    def on_sale(self, ts_ms: int, qty: float, price_cents: int | None = None, *, returned: bool = False,
                units_qty: float | None = None, pos_qty: float | None = None) -> None:
        """A POS line of this facing's SKU (negative qty: a return or void).

        ``returned``: a customer return. It counts against the sales rates but does not put a
        unit back on the shelf (returns go to the service desk or the backroom); a void
        cancels a scan whose unit never left, so it does add back. ``units_qty`` / ``pos_qty``:
        the units taken off ``units`` / ``pos_units`` when they differ from ``qty`` (a SKU with
        several facings: ``sku_sale`` decides which facing the line took from).
        """
        self._decay_to(ts_ms)
        for i, tau in enumerate(RATE_TAUS_H):
            # Each unit adds 1/tau to a decayed rate: a steady r units/h converges to r.
            self._rates[i] += qty / tau
        self._sales_profile[_hour_bin(ts_ms)] += qty * self._profile_weight(ts_ms)
        self.sales_since_reading += qty
        if qty > 0:
            self.last_sale_ms = ts_ms
            if price_cents is not None and price_cents > 0:
                self.last_price = float(price_cents)
                # Decayed mean over about 50 sale lines: promotions last days, the usual price longer.
                self._price_mean = (
                    float(price_cents) if self._price_mean is None
                    else self._price_mean + (price_cents - self._price_mean) / 50.0
                )
        if returned and qty < 0:
            return
        if self.units is not None:
            self.units = max(0.0, self.units - (qty if units_qty is None else units_qty))
        if self.pos_units is not None:
            self.pos_units = max(0.0, self.pos_units - (qty if pos_qty is None else pos_qty))

    def on_reading(self, ts_ms: int, units_est: float, battery_pct: float, weight_g: float | None = None) -> None:
        """A shelf sensor reading: it replaces the POS-based estimate (a weighed one read against
        the load cell's tracked zero, ``OFFSET_GAIN``), and is checked against the till: the cloud
        stream's stuck rule (``STUCK_UNITS``), an upward drift (``TRUST_TAU_H``) and a weight
        under an empty shelf (``BELOW_EMPTY_UNITS``, ``weight_g``): an untrusted sensor's
        facing is scored on ``pos_units``, the last believed reading that did not fall below the
        till's account (``POS_ANCHOR_TOL``) minus sales since, plus restocks.
        """
        self._touch(ts_ms)
        self.has_sensor = True
        units_est = float(units_est)
        frozen = False
        weighed = weight_g is not None and weight_g == weight_g  # known (not None, not NaN)
        raw = units_est
        tracked = self._track_zero(ts_ms, units_est, float(weight_g)) if weighed else None
        if tracked is not None:
            units_est = max(0.0, tracked[0])
        if (self.capacity > 0 and self.last_restock_ms is not None and self.last_reading_ms is not None
                and self.last_restock_ms > self.last_reading_ms and self.sales_since_reading == 0):
            self._creep_evidence(float(self.capacity) - units_est)  # a clean refill's reading short of capacity
        creep = self.zero_creep
        if weighed:
            if raw >= 1:
                self._weight_sum += float(weight_g)
                self._weight_units += raw
            if tracked is not None:  # under the tracked zero
                self._below = float(weight_g) / tracked[1] - self.zero_offset + creep < -BELOW_EMPTY_UNITS
            else:
                self._below = (self._weight_sum > 0
                               and float(weight_g) * self._weight_units + creep * self._weight_sum
                               < -BELOW_EMPTY_UNITS * self._weight_sum)
        if creep > 0:  # re-zeroed: a 0 from its weight (the device clips it at 0)
            if tracked is not None:
                units_est = max(0.0, tracked[0] + creep)
            elif units_est >= 1 or not (weighed and self._weight_sum > 0):
                units_est = units_est + creep
            else:
                units_est = max(0.0, float(round(float(weight_g) * self._weight_units / self._weight_sum)) + creep)
        if self.units is not None and self.last_reading_ms is not None:
            frozen = self.last_reading_units == units_est
            if frozen:
                self._sold_since_value += self.sales_since_reading
                if (self._value_ms is not None and ts_ms - self._value_ms >= STUCK_MIN_MS
                        and self._sold_since_value - self._drop_at_value >= STUCK_UNITS and units_est >= 1):
                    self._stuck = True
                if self.sku_facings <= 1:  # with several, sku_sale explains it when the line comes
                    self.units_unexplained = max(0.0, self.units_unexplained - max(self.sales_since_reading, 0.0))
            else:
                self._value_ms, self._sold_since_value, self._stuck = ts_ms, 0.0, False
                self._drop_at_value = self.units_unexplained = max(0.0, self.units - units_est)
            dt_h = max(0.0, (ts_ms - self.last_reading_ms) / HOUR_MS)
            self._residual = max(0.0, self._residual * math.exp(-dt_h / TRUST_TAU_H) + (units_est - self.units))
            drift = self._residual > max(TRUST_TOL_UNITS, TRUST_TOL_SHARE * self.capacity)
            self.sensor_untrusted = (self.sku_facings <= 1 and (self._stuck or drift)) or self._below
        else:
            self._value_ms = ts_ms
        self._learn_noise(units_est)
        # a believed reading anchors the POS estimate, unless it fell below the till's account
        below_till = self.pos_units is not None and units_est < self.pos_units - POS_ANCHOR_TOL
        if not self.sensor_untrusted and not (frozen and self.sales_since_reading > 0) and not below_till:
            self.pos_units = units_est
        self.units = units_est
        self.last_reading_units = units_est
        self.last_reading_ms = ts_ms
        self.battery_pct = float(battery_pct)
        self.sales_since_reading = 0.0

    def _track_zero(self, ts_ms: int, units_est: float, weight_g: float) -> tuple[float, float] | None:
        """A weighed reading read against the tracked zero (``OFFSET_GAIN``): ``(units, unit
        weight)``, the units not clipped at 0 (a zero creep may lift them), or None while the
        unit weight is not known yet (the device's units stand)."""
        n = self._g_n
        grams = self._g_tare
        if n >= OFFSET_READINGS:
            mu = self._g_u / n
            var = self._g_uu / n - mu * mu
            if var > OFFSET_SPREAD:
                grams = (self._g_uw / n - mu * (self._g_w / n)) / var
        k = None
        if grams is not None and grams > 0:
            x = weight_g / grams - self.zero_offset
            if not abs(x - units_est) <= 3.0 * max(units_est, self.capacity, 0) + OFFSET_IMPLAUSIBLE:  # also inf, NaN
                self.zero_offset, self._g_tare = 0.0, None
                self._g_n = self._g_u = self._g_uu = self._g_w = self._g_uw = n = 0.0
            else:
                k = float(round(x))
            if k is not None and self.last_reading_ms is not None:
                lim = OFFSET_RATE * max(0.0, (ts_ms - self.last_reading_ms) / DAY_MS)
                self.zero_offset += max(-lim, min(lim, OFFSET_GAIN * (x - k)))
        if units_est >= 1:  # the device's units: its grams over the true unit weight, rounded
            self._g_n = n + 1.0
            self._g_u += units_est
            self._g_uu += units_est * units_est
            self._g_w += weight_g
            self._g_uw += units_est * weight_g
            if n < OFFSET_READINGS:  # the tared cell's first readings: grams over units
                self._g_tare = self._g_w / self._g_u
        if k is None:
            return None
        return k, grams

    def _creep_evidence(self, short: float) -> None:
        """A refill's shortfall (``CREEP_REFILLS``): the least of a block, seen twice, sets the creep."""
        if self._refill_short is None or short < self._refill_short:
            self._refill_short, self._refills_at = short, 1.0
        elif short == self._refill_short:
            self._refills_at += 1.0
        self._refills += 1
        if self._refills >= CREEP_REFILLS:
            if self._refills_at >= 2:
                self.zero_creep = max(0.0, self._refill_short)
            self._refill_short, self._refills, self._refills_at = None, 0, 0.0

    def _learn_noise(self, units_est: float) -> None:
        """Update ``reading_noise`` with a new reading (``NOISE_READINGS``): only a pair of
        readings between which the shelf could not change (no sale, no restock) says anything."""
        if (self.last_reading_units is None or self.sales_since_reading != 0
                or (self.last_restock_ms is not None and self.last_restock_ms > (self.last_reading_ms or 0))):
            return
        self._noise_pairs = min(self._noise_pairs + 1, NOISE_READINGS)
        moved = min((units_est - self.last_reading_units) ** 2, 1.0)
        self.reading_noise += (moved - self.reading_noise) / self._noise_pairs

    def on_restock(self, ts_ms: int, units_added: float) -> None:
        """Staff refilled the facing (handheld scan).

        Units before the first restock or reading are unknown: the facing is then taken as
        refilled to capacity, as a round does with a low facing. An estimate too high heals at
        the next full refill (capped at capacity), one too low only when the shelf truly empties
        (the floor at 0 absorbs it), and meanwhile it reads empty while the till still sells: the
        false "empty now" alerts of facings without a sensor (issue 11; started from 0, half the
        single-facing estimates were still off three days in).
        """
        self._decay_to(ts_ms)
        self._restock_profile[_hour_bin(ts_ms)] += self._profile_weight(ts_ms)
        self.last_restock_ms = ts_ms
        self._sold_since_value -= units_added
        self.units = self._refilled(self.units, units_added)
        if self.pos_units is not None or not self.has_sensor:
            self.pos_units = self._refilled(self.pos_units, units_added)

    def _refilled(self, units: float | None, added: float) -> float:
        if not self.capacity:
            return (units or 0.0) + added
        base = float(self.capacity) if units is None else units
        return min(float(self.capacity), base + added)

    # ---- features ------------------------------------------------------------------------

    def rates_at(self, now_ms: int) -> list[float]:
        """Decayed sales rates (units/h) as of ``now_ms``, without changing the state.

        Corrected for warm-up: divided by ``1 - exp(-seen/tau)`` where ``seen`` is the time
        observed so far (at least one hour), so a young state is not biased towards zero.
        """
        return _rates_matrix([self], now_ms)[0].tolist()

    def features(self, now_ms: int) -> list[float]:
        """The feature vector (ordered as FEATURES) at ``now_ms``; see :func:`feature_matrix`."""
        return _features64([self], now_ms)[0].tolist()


def pos_line_qty(qty: float, kind: object = "sale") -> tuple[float, bool]:
    """A POS line's (signed units, is a return) as :meth:`FacingState.on_sale` takes them: voids
    and returns take units back (negative), whichever sign the register wrote. The gateway's
    and the cloud's routing of POS lines both call this."""
    qty = float(qty)
    if kind in ("void", "return") and qty > 0:
        qty = -qty
    return qty, kind == "return"


def sale_shares(states: list["FacingState"], qty: float) -> list[float]:
    """How a POS line of a SKU with several facings is split over them: the till names the
    SKU, not the facing. Shoppers take from facings that have stock (one meeting an empty
    facing goes to its sibling), so a sale goes evenly to the facings whose estimate is above 0
    and evenly to all when none is (and for voids and returns): the SKU's total estimate stays
    its restocks minus its sales, where an even split over an empty facing lost that share.
    The gateway's and the cloud's routing of POS lines both call this."""
    n = len(states)
    if n == 1:
        return [qty]
    stocked = [s.units is None or s.units > 0 for s in states] if qty > 0 else [True] * n
    k = sum(stocked)
    if k == 0:
        return [qty / n] * n
    return [qty / k if on else 0.0 for on in stocked]


#: How long a SKU's POS line held on a guess (``FacingState._guessed``) waits for a believed
#: reading to explain it: a load cell reports a change within its step (5 min) plus uplink lag.
GUESS_MS = 15 * 60_000


def _sensed(state: "FacingState") -> bool:
    """A believed shelf sensor watches the facing: its readings say what left it."""
    return state.has_sensor and not state.sensor_untrusted and state.last_reading_ms is not None


def _live_guess(state: "FacingState", ts_ms: int) -> float:
    return state._guessed if state._guess_ms is not None and ts_ms - state._guess_ms <= GUESS_MS else 0.0


def sku_sale(states: list["FacingState"], ts_ms: int, qty: float, price_cents: int | None = None, *,
             returned: bool = False) -> None:
    """A POS line of a SKU (``qty`` and ``returned`` from ``pos_line_qty``) applied to its facings:
    the gateway, the cloud stream and the lake's replay all route POS lines through this.

    The sales rates of each facing take its ``sale_shares`` share. Which facing's *units* the
    line took is decided from the evidence a gateway has (issue 11): a facing a believed sensor
    watches (``_sensed``) is never lowered by the till, its readings say what left it; a
    reading that already fell by units the till had not explained (``units_unexplained``:
    picked, then paid) absorbs the line; the rest goes, evenly, to the facings no believed
    sensor watches that have stock, on a guess (``_guessed``) that a believed sibling's reading
    falling within ``GUESS_MS`` takes back (``sku_reading``); with none in stock it waits for a
    sensed facing's reading. A void puts its units back on the unwatched facings. A SKU none of
    whose facings is watched splits as before (``sale_shares``).
    """
    n = len(states)
    shares = sale_shares(states, qty)
    sensed = [_sensed(s) for s in states]
    if n == 1 or not any(sensed):
        for s, share in zip(states, shares):
            s.on_sale(ts_ms, share, price_cents, returned=returned)
        return
    debit = [0.0] * n
    if qty > 0:
        pool = 0.0
        for s, on in zip(states, sensed):
            if on:
                pool += s.units_unexplained
        absorbed = min(qty, pool)
        if absorbed > 0:
            for s, on in zip(states, sensed):
                if on:
                    s.units_unexplained = max(0.0, s.units_unexplained - s.units_unexplained * absorbed / pool)
        rest = qty - absorbed
        if rest > 0:
            est = [s.pos_units if s.has_sensor and s.sensor_untrusted else s.units for s in states]
            takers = [not on and (e is None or e > 0) for on, e in zip(sensed, est)]
            if not any(takers):
                takers = sensed  # no unwatched facing has stock: a watched one's reading will say
            part = rest / sum(takers)
            for i, s in enumerate(states):
                if takers[i]:
                    if not sensed[i]:
                        debit[i] = part
                    s._guessed = _live_guess(s, ts_ms) + part
                    s._guess_ms = ts_ms
    elif qty < 0 and not returned:
        back = [not on for on in sensed]
        k = sum(back)
        for i, s in enumerate(states):
            if back[i]:
                debit[i] = qty / k
                s._guessed = max(0.0, s._guessed + qty / k)
    for s, share, on, d in zip(states, shares, sensed, debit):
        s.on_sale(ts_ms, share, price_cents, returned=returned, units_qty=d, pos_qty=share if on else d)


def sku_reading(states: list["FacingState"], i: int, ts_ms: int, units_est: float, battery_pct: float,
                weight_g: float | None = None) -> None:
    """A shelf reading of ``states[i]``, one of its SKU's facings (see ``sku_sale``): a believed
    reading that fell explains the SKU's POS lines held on a guess within ``GUESS_MS``, and the
    units debited from unwatched siblings on that guess go back to them."""
    s = states[i]
    before, last = s.units, s.last_reading_units
    s.on_reading(ts_ms, units_est, battery_pct, weight_g)
    u = s.last_reading_units  # as corrected (``zero_creep``)
    if len(states) == 1 or before is None or last is None or last == u or not _sensed(s):
        return
    drop = max(0.0, before - u)
    live = [_live_guess(x, ts_ms) for x in states]
    pool = 0.0
    for g in live:
        pool += g
    matched = min(drop, pool)
    if not matched > 0:
        return
    for j, x in enumerate(states):
        if live[j] > 0:
            take = live[j] * matched / pool
            x._guessed = max(0.0, live[j] - take)
            if j != i and not _sensed(x):
                if x.units is not None:
                    x.units = x._refilled(x.units, take)
                if x.pos_units is not None:
                    x.pos_units = x._refilled(x.pos_units, take)
    s.units_unexplained = max(0.0, drop - matched)


def _hour_bin(ts_ms: int) -> int:
    return int((ts_ms % DAY_MS) // HOUR_MS)


_TAUS = np.array(RATE_TAUS_H)


def _profile_share(cum: np.ndarray, total: np.ndarray, start_h: np.ndarray, length_h: np.ndarray) -> np.ndarray:
    """Days' worth of sales in [start_h, start_h + length_h) hours of day, per row.

    ``cum`` (n, 49) is the cumulative sales profile over two days (cum[:, k] = sales in hours
    [0, k)); an empty profile counts every hour alike.
    """
    length_h = np.maximum(length_h, 0.0)
    days = np.floor(length_h / 24.0)
    rem = length_h - 24.0 * days
    s = np.mod(start_h, 24.0)

    def c(x: np.ndarray) -> np.ndarray:  # cumulative profile at fractional hour x in [0, 48]
        k = np.minimum(np.floor(x).astype(np.int64), 47)
        rows = np.arange(len(x))
        return cum[rows, k] + (cum[rows, k + 1] - cum[rows, k]) * (x - k)

    part = c(s + rem) - c(s)
    safe = np.where(total > 0, total, 1.0)
    share = np.where(total > 0, days + part / safe, length_h / 24.0)
    return share


_SCALARS = ("units", "cap", "sensor", "t_read", "t_restock", "t_sale", "battery", "since_read",
            "started", "price", "price_mean", "rates_at", "untrusted", "pos_units", "read_units", "sku_facings", "unexplained",
            "noise")


def _gather(states: list[FacingState]) -> dict[str, np.ndarray]:
    """The state of many facings as arrays (None -> NaN); the only per-facing Python loop."""
    n = len(states)
    nan = math.nan
    g = np.array(
        [(
            nan if s.units is None else s.units, s.capacity, 1.0 if s.has_sensor else 0.0,
            nan if s.last_reading_ms is None else s.last_reading_ms,
            nan if s.last_restock_ms is None else s.last_restock_ms,
            nan if s.last_sale_ms is None else s.last_sale_ms,
            s.battery_pct, s.sales_since_reading,
            nan if s.started_ms is None else s.started_ms,
            nan if s.last_price is None else s.last_price,
            nan if s._price_mean is None else s._price_mean,
            nan if s._rates_at_ms is None else s._rates_at_ms,
            1.0 if s.sensor_untrusted else 0.0,
            nan if s.pos_units is None else s.pos_units,
            nan if s.last_reading_units is None else s.last_reading_units,
            s.sku_facings, s.units_unexplained, s.reading_noise,
        ) for s in states],
        dtype=np.float64,
    ).reshape(n, len(_SCALARS))
    out = {name: g[:, i] for i, name in enumerate(_SCALARS)}
    out["rates"] = np.array([s._rates for s in states], dtype=np.float64).reshape(n, len(RATE_TAUS_H))
    sales_p = np.stack([s._sales_profile for s in states]) if n else np.zeros((0, 24))
    restock_p = np.stack([s._restock_profile for s in states]) if n else np.zeros((0, 24))
    out["sku"] = np.array([s.sku for s in states], dtype=object)
    return _derive(out, sales_p, restock_p)


def _derive(out: dict[str, np.ndarray], sales_p: np.ndarray, restock_p: np.ndarray) -> dict[str, np.ndarray]:
    """``out`` (the gathered scalars and rates) with the profiles' state-only derivatives, computed
    here so FeatureCache keeps them for unchanged facings: the cumulative sales profile over two
    days (cum[:, k] = sales in hours [0, k)), its total, and the busiest restock bin."""
    n = len(sales_p)
    out["restock_p"] = restock_p
    out["sales_total"] = sales_p.sum(axis=1)
    out["sales_cum"] = np.zeros((n, 49))
    np.cumsum(np.concatenate([sales_p, sales_p], axis=1), axis=1, out=out["sales_cum"][:, 1:])
    out["restock_peak"] = restock_p.max(axis=1) if n else np.zeros(0)
    return out


def _sku_groups(a: dict[str, np.ndarray]) -> np.ndarray:
    return sku_groups(a["sku"])


def set_sku_facings(states) -> None:
    """Give every facing state ``sku_facings``: how many facings of the list hold its SKU."""
    group = sku_groups([st.sku for st in states])
    counts = np.bincount(group)[group] if len(group) else group
    for st, n in zip(states, counts):
        st.sku_facings = int(n)


def sku_groups(skus) -> np.ndarray:
    """Per facing, an index of its SKU among ``skus`` (facings of one SKU share it); with
    ``np.bincount(groups, weights=units)[groups]`` a facing's ``sku_units_est``."""
    if len(skus) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.asarray(skus).astype(str), return_inverse=True)[1].reshape(-1)


def _rates_from(a: dict[str, np.ndarray], now_ms: int) -> np.ndarray:
    at, started = a["rates_at"], a["started"]
    dt_h = np.maximum(0.0, (now_ms - np.where(np.isnan(at), now_ms, at)) / HOUR_MS)
    seen_h = np.maximum(1.0, (now_ms - np.where(np.isnan(started), now_ms, started)) / HOUR_MS)
    out = a["rates"] * np.exp(-dt_h[:, None] / _TAUS) / (1.0 - np.exp(-seen_h[:, None] / _TAUS))
    out[np.isnan(at)] = 0.0
    return out


def _rates_matrix(states: list[FacingState], now_ms: int) -> np.ndarray:
    return _rates_from(_gather(states), now_ms)


def _compute(a: dict[str, np.ndarray], now_ms: int, sku_group: np.ndarray | None = None,
             store: np.ndarray | None = None, untrusted: np.ndarray | None = None) -> np.ndarray:
    """Feature rows from gathered state arrays at ``now_ms``, float64. ``sku_group``: the
    facings' SKU index (:func:`_sku_groups`; computed when not given); ``untrusted``: the
    facings' :func:`sensor_untrusted_from` at ``now_ms`` (computed when not given)."""
    n = len(a["cap"])
    if n == 0:
        return np.zeros((0, _N), dtype=np.float64)
    cap, started = a["cap"], a["started"]
    if untrusted is None:
        untrusted = sensor_untrusted_from(a, now_ms, store)
    sensor = np.where(untrusted, 0.0, a["sensor"])
    # An untrusted sensor's facing is scored as one without a sensor, on POS evidence.
    units = np.where(untrusted & ~np.isnan(a["pos_units"]), a["pos_units"], a["units"])
    units = np.where(np.isnan(units), cap, units)
    cap1 = np.where(cap > 0, cap, 1.0)

    def hours_since(t: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(t), _CAP_H, np.clip((now_ms - np.nan_to_num(t)) / HOUR_MS, 0.0, _CAP_H))

    hour = (now_ms % DAY_MS) / HOUR_MS
    # 1970-01-01 was a Thursday: day 0 -> weekday 3 (Monday = 0).
    dow = ((now_ms // DAY_MS) + 3) % 7
    rates = _rates_from(a, now_ms)
    daily = np.maximum(rates[:, -1], 0.0) * 24.0  # units per day at the weekly rate

    restock_p, total, cum, peak = a["restock_p"], a["sales_total"], a["sales_cum"], a["restock_peak"]
    hours = np.full(n, hour)

    # Next restock round: the first hour-of-day bin after this one with at least half the
    # busiest bin's restocks (24 h when none learnt yet).
    ahead = (int(hour) + np.arange(1, 25)) % 24
    usual = restock_p[:, ahead] >= 0.5 * peak[:, None]
    first = np.argmax(usual, axis=1)
    to_restock = np.where(peak > 0, (int(hour) + first + 1) - hour, 24.0)

    t_sale = a["t_sale"]
    since_sale = hours_since(np.where(np.isnan(t_sale), started, t_sale))
    price, price_mean = a["price"], a["price_mean"]
    price_ratio = np.where(np.isnan(price) | np.isnan(price_mean) | (price_mean <= 0), 1.0,
                           price / np.where(price_mean > 0, price_mean, 1.0))
    out = np.empty((n, _N), dtype=np.float64)
    out[:, _IDX["units_est"]] = units
    out[:, _IDX["has_sensor"]] = sensor
    out[:, _IDX["capacity"]] = cap
    out[:, _IDX["fill_ratio"]] = np.minimum(units / cap1, 2.0)
    out[:, _IDX["rate_1h"]: _IDX["rate_1h"] + len(RATE_TAUS_H)] = rates
    out[:, _IDX["hours_since_restock"]] = hours_since(a["t_restock"])
    out[:, _IDX["hours_since_reading"]] = np.where(sensor > 0, hours_since(a["t_read"]), _CAP_H)
    out[:, _IDX["battery_pct"]] = np.where(sensor > 0, a["battery"], 0.0)
    out[:, _IDX["hour_sin"]] = math.sin(2 * math.pi * hour / 24)
    out[:, _IDX["hour_cos"]] = math.cos(2 * math.pi * hour / 24)
    out[:, _IDX["dow_sin"]] = math.sin(2 * math.pi * dow / 7)
    out[:, _IDX["dow_cos"]] = math.cos(2 * math.pi * dow / 7)
    out[:, _IDX["sales_since_reading"]] = np.where(sensor > 0, a["since_read"], 0.0)
    out[:, _IDX["hours_since_sale"]] = hours_since(t_sale)
    out[:, _IDX["demand_next_2h"]] = daily * _profile_share(cum, total, hours, np.full(n, DEMAND_WINDOW_H))
    out[:, _IDX["hours_to_restock"]] = to_restock
    out[:, _IDX["demand_to_restock"]] = daily * _profile_share(cum, total, hours, to_restock)
    out[:, _IDX["price_ratio"]] = np.minimum(price_ratio, _PRICE_RATIO_CAP)
    out[:, _IDX["demand_since_sale"]] = daily * _profile_share(cum, total, hours - since_sale, since_sale)
    out[:, _IDX["sku_facings"]] = a["sku_facings"]
    out[:, _IDX["units_unexplained"]] = np.where(sensor > 0, a["unexplained"], 0.0)
    out[:, _IDX["reading_noise"]] = np.where(sensor > 0, a["noise"], 0.0)
    group = _sku_groups(a) if sku_group is None else sku_group
    out[:, _IDX["sku_units_est"]] = np.bincount(group, weights=units, minlength=n)[group]
    return out


def sensor_untrusted_from(a: dict[str, np.ndarray], now_ms: int, store: np.ndarray | None = None) -> np.ndarray:
    """Per facing: a sensor that reports but is not believed (of one store's facings).

    The stuck and drift rules decided at its readings (``FacingState.sensor_untrusted``); no
    reading ``STUCK_MIN_MS`` after the till sold ``STUCK_UNITS`` of a SKU's only facing beyond
    the last reading's own unexplained drop (a load cell reports every change); silent for
    ``SILENT_SENSOR_H`` while the till sold ``SILENT_SENSOR_UNITS`` since a reading above 0 (a
    shelf read empty that "sells" is a SKU sold from its other facings); or the store's whole
    sensor fleet silent for ``FLEET_SILENT_MS`` while the till sold since (``store``: each
    facing's store index when the arrays hold several stores; None: one store).
    """
    t_read = a["t_read"]
    sensor = a["sensor"] > 0
    heard = ~np.isnan(t_read)
    age = now_ms - np.nan_to_num(t_read)
    read_units = np.nan_to_num(a["read_units"])
    silent = heard & (age > SILENT_SENSOR_H * HOUR_MS) & (a["since_read"] >= SILENT_SENSOR_UNITS) & (read_units > 0)
    unread = (heard & (a["sku_facings"] <= 1) & (age >= STUCK_MIN_MS) & (read_units >= 1)
              & (a["since_read"] - a["unexplained"] >= STUCK_UNITS))
    store = np.zeros(len(sensor), dtype=np.int64) if store is None else store
    k = int(store.max()) + 1 if len(store) else 0
    last_read, last_sale = np.full(k, -np.inf), np.full(k, -np.inf)
    np.maximum.at(last_read, store[sensor & heard], t_read[sensor & heard])
    sold = ~np.isnan(a["t_sale"])
    np.maximum.at(last_sale, store[sold], a["t_sale"][sold])
    fleet = ((now_ms - last_read >= FLEET_SILENT_MS) & (last_sale > last_read)
             & (np.bincount(store[sensor & heard], minlength=k) >= FLEET_MIN_SENSORS))[store]
    return sensor & ((a["untrusted"] > 0) | silent | unread | fleet)


def sensor_untrusted(states: list[FacingState], now_ms: int) -> np.ndarray:
    """Which facings' sensors are not believed at ``now_ms`` (see :func:`sensor_untrusted_from`)."""
    return sensor_untrusted_from(_gather(states), now_ms)


def _features64(states: list[FacingState], now_ms: int) -> np.ndarray:
    return _compute(_gather(states), now_ms)


class FeatureCache:
    """Gathered state of a fixed list of facings, refreshed only where events arrived.

    A gateway scores every facing each cycle but only a few changed since the last one: it
    marks those (``mark``) and ``matrix`` re-reads just them before the vectorized pass.
    """

    def __init__(self, states: list[FacingState]):
        self.states = list(states)
        self._index = {id(s): i for i, s in enumerate(self.states)}
        self._arrays = _gather(self.states)
        self._sku_group = _sku_groups(self._arrays)  # a facing's SKU never changes
        self._dirty: set[int] = set()
        self._trust: tuple[int, np.ndarray] | None = None  # (now_ms, untrusted) of the last matrix

    @property
    def sku_group(self) -> np.ndarray:
        """Per facing, the index of its SKU (:func:`sku_groups`), computed once."""
        return self._sku_group

    def mark(self, state: FacingState) -> None:
        """Note that ``state`` changed since the last ``matrix``."""
        self._dirty.add(self._index[id(state)])

    def refresh(self) -> dict[str, np.ndarray]:
        """Re-read the facings marked since the last refresh; return the gathered arrays."""
        if self._dirty:
            idx = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
            fresh = _gather([self.states[i] for i in idx])
            for name, arr in fresh.items():
                self._arrays[name][idx] = arr
            self._dirty.clear()
            self._trust = None
        return self._arrays

    def matrix(self, now_ms: int) -> np.ndarray:
        """Features of every facing at ``now_ms``, (n, F) float32; same values as feature_matrix."""
        arrays = self.refresh()
        untrusted = sensor_untrusted_from(arrays, now_ms)
        self._trust = (now_ms, untrusted)
        return _compute(arrays, now_ms, self._sku_group, untrusted=untrusted).astype(np.float32)

    def untrusted(self, now_ms: int) -> np.ndarray:
        """Sensor trust of every facing at ``now_ms`` from the facings' current state (see
        ``sensor_untrusted``): the mask the last ``matrix`` used when it was computed at
        ``now_ms`` and no facing changed since."""
        arrays = self.refresh()  # a facing marked since drops the cached mask
        if self._trust is not None and self._trust[0] == now_ms:
            return self._trust[1]
        return sensor_untrusted_from(arrays, now_ms)


class FeatureCacheGroup:
    """Several caches scored at the same instants (the cloud scores every store of a partition
    at each tick): their gathered arrays live in one block, each cache keeps views of its rows,
    so one vectorized pass computes every store's features with no copy per tick.

    Each cache still works on its own (``matrix``, ``mark``): it writes through its views.
    """

    def __init__(self, caches: Sequence[FeatureCache]):
        self.caches = list(caches)
        parts = [c.refresh() for c in self.caches]
        names = list(parts[0]) if parts else []
        self._arrays = {name: np.concatenate([p[name] for p in parts]) for name in names}
        sizes = [len(c.states) for c in self.caches]
        self._bounds = np.cumsum(sizes)[:-1]
        # SKUs are a store's: one SKU in two stores is two groups.
        offsets = np.cumsum([0] + [len(c._sku_group) for c in self.caches])[:-1]
        self._sku_group = (np.concatenate([c._sku_group + o for c, o in zip(self.caches, offsets)])
                           if self.caches else np.zeros(0, dtype=np.int64))
        self._store = np.repeat(np.arange(len(sizes)), sizes)  # the fleet rule is per store
        at = 0
        for c, n in zip(self.caches, sizes):
            c._arrays = {name: arr[at:at + n] for name, arr in self._arrays.items()}
            c._trust = None
            at += n

    def matrices(self, now_ms: int) -> list[np.ndarray]:
        """``[c.matrix(now_ms) for c in caches]``, computed in one pass."""
        if not self.caches:
            return []
        for c in self.caches:
            c.refresh()
        return np.split(_compute(self._arrays, now_ms, self._sku_group, self._store).astype(np.float32), self._bounds)


def feature_matrix(states: list[FacingState], now_ms: int) -> np.ndarray:
    """Features of many facings at one instant, shape (n, len(FEATURES)), float32.

    The one implementation of the features (``FacingState.features`` is this for one row),
    vectorized over facings so a gateway computes 10,000 facings in one numpy pass.
    """
    return _features64(states, now_ms).astype(np.float32)


#: Version of :func:`encode_for_model` new models are trained with; manifests record it and the
#: runtimes encode with the version a model's manifest names (any of :data:`MODEL_ENCODINGS`).
MODEL_ENCODING = "log1p-v2"
MODEL_ENCODINGS = ("log1p-v1", "log1p-v2")

# Columns that are counts, rates or durations: log1p keeps small values (0, 1, 2 units left)
# apart and squeezes the long tail, so all model inputs fit in about [-1, 7].
_LOG_COLUMNS = np.array(
    [_IDX[n] for n in FEATURES if n.startswith(("units_", "capacity", "rate_", "hours_", "sales_", "demand_", "sku_units"))]
)
_PCT = _IDX["battery_pct"]
# v2 scales rates to units per day and expected demands to quarter units before log1p: in
# v1 a rate of 1 unit a day (0.04 units/h) was log1p(0.04) = 0.04, about one int8 step of a
# [-1, 6] input range, so an int8 model could not tell a slow mover from a dead one (issue 11).
_V2_SCALE = np.ones(len(FEATURES), dtype=np.float32)
for _name in FEATURES:
    if _name.startswith("rate_"):
        _V2_SCALE[_IDX[_name]] = 24.0
    elif _name.startswith("demand_"):
        _V2_SCALE[_IDX[_name]] = 4.0


def encode_for_model(features: np.ndarray, encoding: str = MODEL_ENCODING) -> np.ndarray:
    """Raw features (n, F) -> model inputs (n, F), float32: log1p of counts, rates and hours.

    Parameter-free and versioned (``encoding``, one of :data:`MODEL_ENCODINGS`), shared by
    training and every runtime so the edge still feeds only raw features. Standardization
    lives inside the model.

    Raises:
        ValueError: wrong shape or unknown encoding.
    """
    if encoding not in MODEL_ENCODINGS:
        raise ValueError(f"unknown feature encoding {encoding!r}; known: {', '.join(MODEL_ENCODINGS)}")
    x = np.array(features, dtype=np.float32, copy=True)
    if x.ndim != 2 or x.shape[1] != _N:
        raise ValueError(f"expected (n, {_N}) features, got {x.shape}")
    cols = np.maximum(x[:, _LOG_COLUMNS], 0.0)
    if encoding == "log1p-v2":
        cols = cols * _V2_SCALE[_LOG_COLUMNS]
    x[:, _LOG_COLUMNS] = np.log1p(cols)
    x[:, _PCT] = x[:, _PCT] / 100.0
    return x


def encoded_domain(encoding: str = MODEL_ENCODING) -> np.ndarray:
    """(2, F): :data:`FEATURE_DOMAIN` as model inputs (:func:`encode_for_model`); unbounded ends
    stay infinite."""
    bounds = np.array([[FEATURE_DOMAIN[n][k] for n in FEATURES] for k in (0, 1)], dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return encode_for_model(bounds, encoding).astype(np.float64)

"""Anomaly detectors of one store, run in event time at every tick (rules in docs/stream.md).

Each detector is a stated rule over what the store's events say, and each fires once per
episode (a ``stream.anomalies`` row at first detection); an episode ends when the evidence goes
away (the store speaks again, the sensor's value moves, ...), and a new one may then fire.

* ``gateway_silent``: nothing from the store for ``silent_min_ms`` while the partition's clock
  moves on, and the store's own hour-of-day event rate says at least ``silent_expected`` events
  should have come in that time (so a quiet night is not an anomaly). Score: expected events.
* ``sensor_fleet_silent``: the store's POS lines keep coming but none of its shelf sensors has
  reported for ``fleet_silent_ms`` (heartbeats alone would have come), and the gateway reports no
  backlog (readings drain last: behind a backlog they are late, not missing). Score: sensors usually
  reporting per hour.
* ``sensor_stuck``: a sensor (of a SKU with one facing) that reported its unchanged value again
  (a heartbeat) after the till sold at least ``stuck_units`` more units than the handhelds put
  back since that value, ``stuck_min_ms`` or more after it, while the store's other sensors
  report. A sensor that was merely not heard from (its radio hub down) is not stuck.
  Score: units sold.
* ``till_silent``: a register silent for ``till_silent_ms`` while the store's other registers
  sell, and its silence surprising enough: each basket the others took since its last one
  (however long ago: counted as they come) is one a healthy lane would have taken with
  probability share, its share of the store's baskets at that hour of day (live traffic: a quiet
  day is quiet for every lane; a lane closed at an hour has no share there; a silence counts in
  its share once it ended). The evidence is the Shiryaev-Roberts statistic of "down since some
  moment of the silence" (``_Lane.miss``), in hours; flagged when its log reaches
  ``till_evidence`` (about one chance alarm per exp(``till_evidence``) lane-hours, whatever the
  lane's share or the store's traffic: a quiet store's failure is flagged on fewer missed baskets
  than a busy one's). Its own hour-of-day profile must expect ``till_usual_min``
  baskets in the silence (a lane usually closed then is not a failure); the profile learns a
  long silence only when the lane speaks again (a failure must not teach the lane that it is
  closed while it lasts), and an hour it never saw counts at its all-day rate (a lane on its
  first day). A lane's share counts from the store's ``till_share_from``-th basket, with
  ``till_share_prior`` baskets at 1 / lanes in it (a lane silent since the store's first baskets
  has a lane's share, not the near 0 its silence would teach it); the store's baskets in its
  silence count in its share only once it speaks, before that 30th basket too
  (``till_share_after_silence``). Judged at each tick and, for
  the baskets a tick has passed already (a drained backlog), at each basket another lane took,
  in the events' time (``till_event_time``). Score: the log evidence; the evidence names the
  baskets it missed.
* ``gateway_backlog``: the gateway's own ``edge.health`` reports, delivered fresh (enqueued within
  ``backlog_fresh_ms`` of their time: reports drained after an outage describe the past), show
  ``unsent_rows`` rising over ``backlog_reports`` reports by at least ``backlog_min_rows`` while
  the oldest unsent event is older than ``backlog_age_ms``. Score: unsent rows.
* ``sales_zero``: no POS line from any register for ``sales_zero_ms`` in opening hours while the
  store's other devices report, and its hour-of-day POS profile expected at least
  ``sales_zero_expected`` lines meanwhile. Score: lines expected.
* ``sensor_drift``: a sensor (of a SKU with one facing) whose reading departs from what the till
  and the handhelds say: expected = reading at the anchor - units sold since + units restocked
  since (each counted up to the reading's time); ``drift_readings`` readings in a row off by at
  least ``drift_units`` (one unit: the cells read whole units and their noise is a tenth of one)
  while the value keeps changing (an unchanged value is ``sensor_stuck``).
  Judged only when the POS record is current (a line within 15 minutes, or a closed hour).
  Sales and restocks count by event time, also those that reached the job before the sensor's
  first reading (a gateway drains POS lines and restocks ahead of readings: at the job's start, or
  for a new store or sensor): the last ``drift_pending_ms`` of them are kept for sensors not heard
  from yet (``_pend``), and a first reading older than those anchors nothing. Score: units off.
* ``phantom_inventory``: a sensored facing (its SKU's only one) reads empty for
  ``phantom_min_ms`` with no sale of its SKU since, while ``phantom_deliveries`` deliveries came
  in after it emptied without that SKU and a restock round after the last did not refill it: the
  store system still believes it has stock, so it orders none (unrecorded shrink). One missed
  delivery is often a forgotten order or a short shipment; two in a row rarely are, but an
  empty backroom that missed two shows the hub exactly the same. The store system's nightly stock
  record (a side input, ``cloud.stream.stock``) tells them apart: with a current record of the
  store (its close after the shelf emptied, at most ``stock_stale_ms`` old), the facing is flagged
  only when the book, less that day's returns, holds at least ``phantom_book_min`` units beyond the
  empty shelf (the record says there is stock the shelf and the till do not see); a book with
  nothing beyond the shelf means the store knows it is out (not flagged). A store without a
  record keeps the rule without it (evidence ``stock_record``: ``none``). Score: hours empty.
* ``demand_band`` (``band_rule="shelf_switch"``, in force since session 8): the "shelf" rule
  below, net of the shoppers one product of the SKU's category that sold today and then fell
  silent could have sent it (at most ``band_switch_share`` of what that product's rate expected
  since; none when the SKU had already sold ``band_switch_before_min`` units and ``band_ratio``
  times its rate before): at least ``band_ratio`` times the expected units and
  ``band_min_units``, at a chance of at most ``band_shelf_alpha``. Score: net / expected. The
  rule in force before (``band_rule="share"``): a SKU's units sold today at the regular price against its usual share of the
  store's units (learned per day, after ``band_warmup_days`` days): at least ``band_ratio`` times
  the expected units plus ``band_sigmas`` Poisson sigmas, and at least ``band_min_units``, judged
  only in the early part of the day, while the store has sold less than ``band_early_share`` of
  its usual day's units (later, shelves emptied by the day's sales and shoppers switching from
  them to other products move shares as much as a spike does). A lower price than the SKU's
  regular one marks an announced promotion (not an anomaly). Score: observed / expected.
  ``band_rule="exposure"`` (measured, not in force: better on training seeds, worse on held-out
  ones) judges instead the SKU's units against its rate: its units over the last
  ``band_history_days`` days per store unit sold while it was on sale (a silence in which its rate
  expected ``band_gap_units`` or more is time off the shelf; a day without a sale counts only
  where its rate expected fewer), all day, net of the shoppers a product of the same category
  silent since its last sale could have sent it (at most ``band_switch_share`` of what that
  product lost; the categories are master data, ``Categories``): at least ``band_ratio`` times the
  expected units and ``band_min_units``, with a chance of at most ``band_alpha`` at the SKU's rate
  (the binomial split of today's and the last days' units by store units). Score: net / expected.
  ``band_rule="shelf"`` (measured, not in force: better than the rule in force on the seeds it was
  not chosen on, by a few rows, at more CPU) is the exposure rule's rate with the times the SKU was
  known off its shelf left out - from its last sale to a refill adding ``band_refill_share`` of its
  planogram capacity (a refill seen days later corrects the history), after its last sale of a day
  whose close its load cell read 0 - without the categories, at a chance of at most
  ``band_shelf_alpha``.
* ``alert_divergence``: (run only while the gateway is alive) the gateway's raised alerts and
  the cloud's ``empty_within_h`` alerts disagree on at least ``divergence_min`` facings and on
  more than ``divergence_share`` of the facings either raises, for ``divergence_ticks`` ticks in
  a row, or on the same ``divergence_lasting_min`` facings (or more) for
  ``divergence_lasting_ticks`` ticks in a row (a broken model whose few forecasts the cold-start
  rule lets through keeps them wrong for hours; two healthy scorers differ on a decided facing
  for a tick or two), and not within ``divergence_grace_ms`` after the cloud last scored the store as silent
  (after a silence the cloud's state catches up with the gateway's backlog while the gateway
  scores the shelves it saw all along: the two differ without a broken model). Compared only on
  facings where the cloud's own score decides the state: not those it alerts ``empty_now`` (no
  forecast is raised on an empty shelf, but one raised before the shelf emptied stands) nor
  those whose probability lies between the clear and raise thresholds (the hysteresis keeps
  either state), nor those between the cloud's store threshold and the gateway's (alert budgets
  whose logs differ by history; the gateway's from its ``edge.health`` ``forecast_threshold``,
  ``gateway_forecast_at``). There the state is history - which side saw the last sale or reading first, a
  silence, a broken model's hour long ago - and two healthy scorers disagree for as long as the
  shelf stays empty or the score in the band. Score: the share.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS, ms_to_iso

__all__ = ["DetectorConfig", "StoreWatch", "Categories", "ANOMALY_KINDS", "BAND_RULES", "CATEGORY_RULES"]

#: ``demand_band``'s rules (``DetectorConfig.band_rule``): the one in force first.
BAND_RULES = ("shelf_switch", "share", "exposure", "shelf")
#: the rules on the SKU's rate while on its shelf (refills and load cells)
SHELF_RULES = ("shelf", "shelf_switch")
#: the rules that read the products' categories (master data, ``Categories``)
CATEGORY_RULES = ("exposure", "shelf_switch")

ANOMALY_KINDS = ("gateway_silent", "gateway_backlog", "sensor_fleet_silent", "sensor_stuck", "sensor_drift",
                 "till_silent", "sales_zero", "phantom_inventory", "demand_band", "alert_divergence")


@dataclass(frozen=True)
class DetectorConfig:
    silent_min_ms: int = 20 * MINUTE_MS
    silent_expected: float = 10.0
    warmup_ms: int = 6 * HOUR_MS
    fleet_silent_ms: int = 30 * MINUTE_MS
    fleet_min_sensors: int = 5
    stuck_min_ms: int = 30 * MINUTE_MS
    stuck_units: float = 3.0
    till_silent_ms: int = 30 * MINUTE_MS
    till_evidence: float = 7.5
    #: the previous rule, kept for comparison (bench part ``till``): flagged once the lane missed
    #: this many baskets (10.5), held back while the gateway reports a backlog; None: the evidence
    till_expected: float | None = None
    till_usual_min: float = 2.0
    #: judge a silent lane also at a basket another lane took before the last tick (in the
    #: events' time): the lines of a silence that arrive in one drain after a gateway's backlog,
    #: with the lane's own first line after it, are seen by no tick
    till_event_time: bool = True
    #: the store's baskets a lane must have seen before its share counts ...
    till_share_from: int = 30
    #: ... and baskets of prior weight at 1 / lanes known in its overall share (a lane that took
    #: one of the store's first baskets and fell silent has a share of about a lane's, not ~0)
    till_share_prior: float = 30.0
    #: the store's baskets in a lane's silence count in its share only once it speaks, also
    #: before the store's ``till_share_from``-th basket (False, the previous rule: those counted
    #: at once, so a lane down from the store's first baskets learned a share of about 0.1 - 0.2
    #: from its own silence and gathered evidence at half the pace or less)
    till_share_after_silence: bool = True
    divergence_min: int = 3
    divergence_share: float = 0.5
    divergence_ticks: int = 3
    divergence_grace_ms: int = 60 * MINUTE_MS
    #: ... or the same ``divergence_lasting_min`` facings (at least) in the disagreement for
    #: ``divergence_lasting_ticks`` ticks in a row: a broken model that raises few forecasts (the
    #: cold-start rule holds most back) keeps them wrong for hours, healthy scorers do not (0: off,
    #: the previous rule)
    divergence_lasting_ticks: int = 4
    divergence_lasting_min: int = 2
    backlog_fresh_ms: int = 10 * MINUTE_MS
    backlog_reports: int = 4
    backlog_min_rows: int = 50
    backlog_age_ms: int = 10 * MINUTE_MS
    sales_zero_ms: int = 30 * MINUTE_MS
    sales_zero_expected: float = 15.0
    drift_units: float = 1.0
    drift_readings: int = 3
    #: the sales and restocks of a single-facing SKU without a sensor (yet) kept this long behind the
    #: store's newest event, counted against its sensor's first reading in event time (a gateway
    #: drains POS lines and restocks before readings); an older first reading is not an anchor
    drift_pending_ms: int = 6 * HOUR_MS
    phantom_min_ms: int = 12 * HOUR_MS
    phantom_deliveries: int = 2
    #: the stock record of a date is looked up once, this long after its close (UTC midnight):
    #: the nightly export is in by then (and a store up to 6 h west of UTC has closed its day)
    stock_lag_ms: int = 6 * HOUR_MS
    #: units the record must hold beyond the (empty) shelf for phantom stock
    phantom_book_min: float = 1.0
    #: a store's newest record older than this (its close) counts as none: the old rule judges
    stock_stale_ms: int = 3 * DAY_MS
    band_warmup_days: int = 1
    band_ratio: float = 3.0
    band_min_units: float = 10.0
    band_history_days: int = 3
    #: ("exposure") chance of today's units (net of switching) at the SKU's rate: at most this
    band_alpha: float = 1e-3
    #: a silence of a SKU in which its rate expected this many units: off the shelf (not on sale)
    band_gap_units: float = 3.0
    #: share of an empty product's shoppers who take another of its category (GMA 2002: 26 % another
    #: brand + 19 % another size, rounded up): what a sibling's silence can add to a SKU's units
    band_switch_share: float = 0.5
    #: "shelf_switch" (the rule in force since session 8): "shelf", net of the shoppers a product of
    #: its category that sold today and then fell silent could have sent it (docs/stream.md).
    #: "share" (in force before): a SKU against its best share of the last days, 3 x + 3 sigma,
    #: only before half the usual day was sold. "exposure": its rate while on sale, a binomial
    #: test, all day, net of switching inside its category (``band_alpha`` and below): better on
    #: the training seeds, worse on the held-out ones (docs/stream.md), so not in force. "shelf": its
    #: rate while on its shelf (refills and load cells, ``band_shelf_alpha`` and below), no categories
    band_rule: str = "shelf_switch"
    band_sigmas: float = 3.0  # "share"
    band_early_share: float = 0.5  # "share"
    #: ("shelf") the chance of today's units at the SKU's rate while on its shelf: at most this
    band_shelf_alpha: float = 1e-4
    #: ("shelf") a refill (restock scans of the SKU within ``band_refill_ms``) that adds at least
    #: this share of the SKU's planogram capacity: its shelf had run (about) empty, and it was off
    #: the shelf from its last sale until then
    band_refill_share: float = 0.8
    band_refill_ms: int = 30 * MINUTE_MS
    #: ("shelf_switch") a sibling explains none of a SKU's units when the SKU had sold at least
    #: this many, and ``band_ratio`` times its rate, before the sibling fell silent (a spike from
    #: the opening; shoppers switching come only after the sibling emptied)
    band_switch_before_min: float = 3.0


def _hour(ts: int) -> int:
    return int((ts % DAY_MS) // HOUR_MS)


@dataclass
class _Profile:
    """Events per hour of day, learned online: a rate per ms for each UTC hour."""

    events: list[float] = field(default_factory=lambda: [0.0] * 24)
    observed_ms: list[float] = field(default_factory=lambda: [0.0] * 24)

    def rate(self, hour: int, strict: bool = False) -> float:
        """Events per ms in this hour of day; an hour not yet observed for 30 minutes counts as
        the all-day average, or (``strict``) as none: unknown hours raise no alarm."""
        if self.observed_ms[hour] >= 30 * MINUTE_MS:
            return self.events[hour] / self.observed_ms[hour]
        if strict:
            return 0.0
        total = sum(self.observed_ms)
        return sum(self.events) / total if total else 0.0

    def observe(self, start: int, end: int) -> None:
        """Count [start, end) as observed time, hour by hour (at most a week)."""
        t, end = start, min(end, start + 7 * DAY_MS)
        while t < end:
            nxt = min(end, t - t % HOUR_MS + HOUR_MS)
            self.observed_ms[_hour(t)] += nxt - t
            t = nxt

    def expected(self, start: int, end: int, strict: bool = False) -> float:
        """Events expected in [start, end) (summed hour by hour, at most one day)."""
        out, t, end = 0.0, start, min(end, start + DAY_MS)
        while t < end:
            nxt = min(end, t - t % HOUR_MS + HOUR_MS)
            out += self.rate(_hour(t), strict) * (nxt - t)
            t = nxt
        return out


@dataclass
class _Lane:
    """A till lane (register) as ``till_silent`` sees it."""

    last_ts: int
    profile: _Profile = field(default_factory=_Profile)  # its baskets per hour of day
    flagged: bool = False
    txns: list = field(default_factory=list)  # its last transaction ids (lines come in bursts)
    baskets: int = 0  # its baskets ...
    store_up: int = 0  # ... and the store's baskets: its share = baskets / store_up
    store_hour: list = field(default_factory=lambda: [0.0] * 24)  # store_up per hour of day
    others: int = 0  # baskets the other lanes took since its last one ...
    missed: float = 0.0  # ... and how many of them it would have had (its share at their hour)
    others_hour: list = field(default_factory=lambda: [0.0] * 24)  # ``others`` per hour, learned when it speaks
    unseen_from: int | None = None  # start of a long silence, counted in its profile when it ends
    evidence: float = 0.0  # the silence's Shiryaev-Roberts statistic, in hours (``miss``) ...
    evidence_ts: int = 0  # ... as of this time

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # A lane from a snapshot before the evidence: a silence in progress is judged from now on.
        self.__dict__.setdefault("evidence", 0.0)
        self.__dict__.setdefault("evidence_ts", self.last_ts)

    def share(self, hour: int, prior: float = 0.0, lanes: int = 1) -> float:
        """Its share of the store's baskets: over all hours, or lower at an hour of day where it
        took fewer (a lane closed at that hour has a share near 0 there). The hour's share is
        shrunk towards the overall one by ``_SHARE_PRIOR`` baskets (an hour seen little says
        little) and never exceeds it (the noise of 24 estimates must not inflate a silence).
        ``prior`` baskets at 1 / ``lanes`` weigh in the overall share (a store's first baskets
        say little about how they split)."""
        up = self.store_up + prior
        overall = (self.baskets + prior / max(lanes, 1)) / up if up else 0.0
        return min(overall, (self.profile.events[hour] + _SHARE_PRIOR * overall) / (self.store_hour[hour] + _SHARE_PRIOR))

    def miss(self, hour: int, ts: int, prior: float = 0.0, lanes: int = 1) -> None:
        """Another lane took a basket at ``ts`` while this one was silent: count it, the baskets
        this lane would have had for it (share / (1 - share), the share capped at 0.99), and the
        evidence that it is down.

        The evidence is the Shiryaev-Roberts statistic of a change at an unknown time: the sum,
        over every moment the lane could have failed since its last basket, of the likelihood
        ratio of "down since then" against "up", weighted by the time (hours) at that moment. A
        healthy lane's next basket goes elsewhere with probability 1 - share, a down lane's with
        1, so each basket the others take multiplies every ratio by 1 / (1 - share), and the time
        since the last one adds candidate moments at ratio 1 (a gap counts at most
        ``_EVIDENCE_GAP_MS``: a closed store's night is not hours of chances to fail). For a
        healthy lane the statistic grows like the hours that passed, so flagging at
        exp(``till_evidence``) hours means about one chance alarm per that many lane-hours,
        whatever the lane's share or the store's traffic; a failure needs fewer missed baskets
        in quiet hours (fewer chance gaps per hour) than in busy ones."""
        share = min(self.share(hour, prior, lanes), 0.99)
        self.others += 1
        self.missed += share / (1.0 - share)
        gap = min(ts - max(self.evidence_ts, self.last_ts), _EVIDENCE_GAP_MS)
        self.evidence = (self.evidence + max(gap, 0) / HOUR_MS) / (1.0 - share)
        self.evidence_ts = max(ts, self.evidence_ts)

    def surprise(self, t: int) -> float:
        """log of the evidence at ``t`` (the time since the last basket counted at ratio 1)."""
        gap = min(t - max(self.evidence_ts, self.last_ts), _EVIDENCE_GAP_MS)
        return math.log(max(self.evidence + max(gap, 0) / HOUR_MS, 1e-9))


#: Baskets of prior weight for a lane's share at one hour of day (``_Lane.share``).
_SHARE_PRIOR = 5.0
#: The longest gap between the others' baskets that counts as time the lane could have failed in.
_EVIDENCE_GAP_MS = 30 * MINUTE_MS


@dataclass
class _Sensor:
    device: str
    sku: str
    units: float
    changed_ts: int
    last_ts: int
    sold: float = 0.0  # net units the till took since the value, confirmed by a later report of it
    since_change: list = field(default_factory=list)  # (ts, -sold / +restocked) since the value
    flagged: bool = False
    # sensor_drift: the reading the till agreed with last, and sales / restocks since (ts, units)
    anchor_units: float = 0.0
    anchor_ts: int = 0
    moves: list = field(default_factory=list)
    anchor_from: int = 0  # no anchor before this time (its first reading came before the sales kept for it)
    off_count: int = 0
    drift_flagged: bool = False
    # phantom_inventory: since when the sensor reads 0 (None: it does not)
    zero_since: int | None = None
    restocked_ts: int = 0


class Categories:
    """The products' categories (master data: ``silver.products`` or the products file), the side
    input ``demand_band`` reads: a shopper who finds a product missing takes another of its
    category, not of another."""

    def __init__(self, sku_category: Mapping[str, str]):
        self._of = {str(k): str(v) for k, v in sku_category.items() if v}
        members: dict[str, list[str]] = {}
        for sku, cat in sorted(self._of.items()):
            members.setdefault(cat, []).append(sku)
        self._members = {cat: tuple(skus) for cat, skus in members.items()}

    def __len__(self) -> int:
        return len(self._of)

    def category(self, sku: str) -> str | None:
        return self._of.get(sku)

    def siblings(self, sku: str) -> tuple[str, ...]:
        """The other products of ``sku``'s category (none when its category is unknown)."""
        cat = self._of.get(sku)
        return tuple(s for s in self._members.get(cat, ()) if s != sku) if cat is not None else ()


def _on_sale(pos: list, units: float, total: float, gap_units: float) -> float:
    """Store units sold while a SKU was on sale on a day: the day's less its silences (between its
    sales, before the first and after the last) in which its rate expected at least ``gap_units``
    (it was off the shelf: the day's units say nothing about its demand then). The rate is the
    day's units over the time on sale, refined twice from the whole day's. ``pos``: (store units
    before each sale, qty)."""
    edges = [0.0] + [p[0] for p in pos] + [total]
    gaps = [b - a for a, b in zip(edges, edges[1:])]
    on_sale, rate = total, units / total
    for _ in range(2):
        on_sale = total - sum(g for g in gaps if g * rate >= gap_units)
        rate = units / max(on_sale, 1.0)
    return max(on_sale, 1.0)


def _on_shelf(pos: list, units: float, total: float, gap_units: float, off: Sequence) -> tuple[float, float]:
    """("shelf") Store units a SKU was on its shelf on a day: the day's less its silences in which
    its rate (``_on_sale``) expected at least ``gap_units`` and the stretches ``off`` (store units
    from, to) known off the shelf. Also returns the part of the day after its last sale still
    counted on the shelf (a refill on a later day shows it was off: ``StoreWatch._band_refill``)."""
    rate = units / _on_sale(pos, units, total, gap_units)
    edges = [0.0] + [p[0] for p in pos] + [total]
    spans = sorted([(a, b) for a, b in zip(edges, edges[1:]) if (b - a) * rate >= gap_units] + list(off))
    covered, tail, end = 0.0, total - edges[-2], -1.0
    for a, b in spans:
        a = max(a, end)
        if b > a:
            covered += b - a
            end = b
            if b >= edges[-2]:
                tail -= min(b, total) - max(a, edges[-2])
    return max(total - covered, 1.0), max(tail, 0.0)


def _binom_tail(units: float, units_before: float, total: float, exposure: float) -> float:
    """The chance of at least ``units`` today if the SKU sold at its usual rate: of the
    ``units + units_before`` it sold today and in the last days, each fell on today with
    probability total / (total + exposure) (its share of the store units it was on sale for).
    Conditioning on the sum makes the test exact for a rate estimated from few sales."""
    x, n = int(round(units)), int(round(units + units_before))
    p = total / (total + exposure)
    if x <= 0:
        return 1.0
    if x > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq, top = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    terms = [top - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq for k in range(x, n + 1)]
    peak = max(terms)
    return min(1.0, math.exp(peak) * sum(math.exp(v - peak) for v in terms))


@dataclass
class StoreWatch:
    """What the detectors keep about one store (part of the partition's state)."""

    store_id: str
    first_ts: int = 0
    last_ts: int = 0
    last_gateway_ts: int | None = None
    last_reading_ts: int | None = None
    last_pos_ts: int | None = None
    next_health_start: int | None = None
    profile: _Profile = field(default_factory=_Profile)
    sensors: dict[str, _Sensor] = field(default_factory=dict)  # facing -> sensor
    sensor_hours: float = 0.0  # readings per hour, decayed
    facings_per_sku: dict[str, int] = field(default_factory=dict)
    registers: dict[str, _Lane] = field(default_factory=dict)  # POS device -> its lane
    _by_sku: dict = field(default_factory=dict)  # sku -> its sensor (single-facing SKUs matter)
    gateway_raised: set[str] = field(default_factory=set)
    gateway_forecast_at: float | None = None  # the gateway's forecast threshold (its last edge.health)
    open: set[str] = field(default_factory=set)  # kinds (or kind:subject) with an open episode
    divergent_ticks: int = 0
    divergent_since: int | None = None
    divergent_run: dict = field(default_factory=dict)  # facing -> [since, ticks in a row] in the disagreement
    silent_scored_at: int | None = None  # the last tick the cloud scored this store as silent
    last_tick: int | None = None
    pos_profile: _Profile = field(default_factory=_Profile)
    backlog: list = field(default_factory=list)  # fresh (ts, unsent_rows, oldest_age_ms) reports
    last_restock_ts: int | None = None
    deliveries: dict = field(default_factory=dict)  # delivery_id -> [first_ts, {skus}]
    sku_sold_ts: dict = field(default_factory=dict)  # sku -> last sale ts
    # demand_band: today's regular-price units per SKU, the store's units, learned shares
    band_day: int | None = None
    band_units: dict = field(default_factory=dict)
    band_total: float = 0.0
    band_promo: set = field(default_factory=set)
    band_share: dict = field(default_factory=dict)  # sku -> shares of the last band_history_days days
    band_days: int = 0
    band_totals: list = field(default_factory=list)  # the store's units of the last band_history_days days
    band_pos: dict = field(default_factory=dict)  # sku -> today's sales [(store units before it, qty)]
    band_hist: dict = field(default_factory=dict)  # sku -> [(day number, units, store units while on sale)]
    band_rate: dict = field(default_factory=dict)  # sku -> (units, store units on sale) of the last days
    # demand_band "shelf": planogram capacity per SKU, today's refills and times known off the shelf
    capacity_per_sku: dict = field(default_factory=dict)
    band_refill: dict = field(default_factory=dict)  # sku -> [first scan ts, units added, counted]
    band_off: dict = field(default_factory=dict)  # sku -> today's [(store units from, to)] off the shelf
    band_off_days: dict = field(default_factory=dict)  # sku -> {day number}: known off the shelf all day
    regular_price: dict = field(default_factory=dict)
    # Indexes over ``sensors`` so a tick looks only at candidates, not at every sensor:
    zeros: dict = field(default_factory=dict)  # facing -> sensor reading 0 (phantom_inventory)
    selling: dict = field(default_factory=dict)  # facing -> sensor the till sold from since its value (stuck)
    # phantom_inventory: the store system's stock record (a side input, looked up once per record date)
    book: dict = field(default_factory=dict)  # sku -> book units in the newest record (sensored single-facing SKUs)
    book_day: int | None = None  # UTC day (index) of that record: its close is the next midnight
    book_asked: int | None = None  # the last record day looked up
    returned: dict = field(default_factory=dict)  # (UTC day, sku) -> units returned at the till
    # sensor_drift: sales (sku ->) and restocks (facing ->) [(ts, units)] that came before any
    # reading of their sensor, kept from ``pending_cut`` on (``drift_pending_ms``)
    pending_sales: dict = field(default_factory=dict)
    pending_restocks: dict = field(default_factory=dict)
    pending_cut: int = 0

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("divergent_run", {})  # a snapshot from before the lasting disagreement
        self.__dict__.setdefault("gateway_forecast_at", None)  # ... before the gateway's threshold was read
        self.__dict__.setdefault("band_totals", [])  # a snapshot from before demand_band's early part of the day
        for name in ("band_pos", "band_hist", "band_rate"):
            self.__dict__.setdefault(name, {})  # a snapshot from before demand_band's exposure
        for name in ("capacity_per_sku", "band_refill", "band_off", "band_off_days"):
            self.__dict__.setdefault(name, {})  # a snapshot from before demand_band's "shelf"
        for name, value in (("book", {}), ("book_day", None), ("book_asked", None), ("returned", {})):
            self.__dict__.setdefault(name, value)  # a snapshot from before the stock record
        for name, value in (("pending_sales", {}), ("pending_restocks", {}), ("pending_cut", 0)):
            self.__dict__.setdefault(name, value)  # a snapshot from before the sales kept for new sensors
        if "zeros" not in state:  # a snapshot from before the indexes
            self.zeros = {f: s for f, s in self.sensors.items() if s.zero_since is not None}
            self.selling = {f: s for f, s in self.sensors.items() if s.sold > 0}
        baskets = self.__dict__.pop("baskets", [])  # a snapshot from before _Lane: lanes were lists
        everyone = sum(sum(r[1].events) for r in self.registers.values() if isinstance(r, list))
        for device, r in list(self.registers.items()):
            if isinstance(r, list):
                own = sum(r[1].events)
                lane = self.registers[device] = _Lane(r[0], r[1], r[2], r[3] or [], int(own), int(everyone))
                lane.store_hour = [e * everyone / own if own else 0.0 for e in r[1].events]
                lane.evidence_ts = r[0]
                for ts, d in baskets:
                    if ts > r[0] and d != device:
                        lane.miss(_hour(ts), ts)

    def start(self, ts: int, planogram: Sequence[Any] | None) -> None:
        self.first_ts = self.last_ts = ts
        for f in planogram or ():
            self.facings_per_sku[f.sku] = self.facings_per_sku.get(f.sku, 0) + 1
            self.capacity_per_sku[f.sku] = self.capacity_per_sku.get(f.sku, 0) + int(getattr(f, "capacity", 0) or 0)

    # ---- events --------------------------------------------------------------------------

    def observe(self, etype: str, device: str, ts: int, data: dict, cfg: DetectorConfig,
                enqueued_ms: int | None = None) -> list[dict]:
        """Fold one event in; return anomaly rows an event itself decides (sensor_drift)."""
        self.profile.events[_hour(ts)] += 1
        if ts > self.last_ts:
            self.last_ts = ts
            self.open.discard("gateway_silent")
        if etype.startswith("edge."):
            self.last_gateway_ts = max(self.last_gateway_ts or ts, ts)
            if etype == "edge.alert":
                facing = data.get("facing_id")
                if data.get("kind", "empty_within_h") != "empty_within_h":
                    return []  # compared with the cloud's forecasts only
                if str(data.get("scorer", "")).startswith("shadow:"):
                    return []  # a shadow model's would-be alert: not the store's alert
                if data.get("state") == "raised":
                    self.gateway_raised.add(facing)
                else:
                    self.gateway_raised.discard(facing)
            elif etype == "edge.health":
                at = data.get("forecast_threshold")  # under its alert budget (edge.gateway)
                if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
                    self.gateway_forecast_at = float(at)
                self._health(ts, data, cfg, enqueued_ms)
        elif etype == "shelf.reading":
            if cfg.band_rule in SHELF_RULES:
                # Learn the day before this reading can end a zero its close is judged by
                # (_band_shelf_close): a shelf refilled before the next day's first sale or scan.
                self._band_today(ts, cfg)
            return self._reading(device, ts, data, cfg)
        elif etype == "pos.line":
            return self._sale(device, ts, data, cfg)
        elif etype == "shelf.restock":
            self._restock(ts, data, cfg)
            if cfg.band_rule in SHELF_RULES:
                self._band_refill(ts, data, cfg)
        elif etype == "inventory.delivery":
            d = self.deliveries.setdefault(str(data.get("delivery_id")), [ts, set()])
            d[0] = min(d[0], ts)
            d[1].add(data.get("sku"))
        return []

    def _health(self, ts: int, data: dict, cfg: DetectorConfig, enqueued_ms: int | None) -> None:
        if enqueued_ms is not None and enqueued_ms - ts > cfg.backlog_fresh_ms:
            return  # drained after an outage: about the past, not the link now
        if self.backlog and ts <= self.backlog[-1][0]:
            return
        self.backlog.append((ts, int(data.get("unsent_rows", 0)), float(data.get("oldest_unsent_age_s", 0.0)) * 1000,
                             enqueued_ms if enqueued_ms is not None else ts))
        del self.backlog[:-cfg.backlog_reports]

    def _restock(self, ts: int, data: dict, cfg: DetectorConfig) -> None:
        self.last_restock_ts = max(self.last_restock_ts or ts, ts)
        s = self.sensors.get(data.get("facing_id"))
        if s is None and self.facings_per_sku.get(data.get("sku"), 1) <= 1:
            self._pend(self.pending_restocks, data.get("facing_id"), ts, float(data.get("units_added", 0)), cfg)
        if s is not None:
            s.restocked_ts = max(s.restocked_ts, ts)
            if ts > s.changed_ts:
                s.since_change.append((ts, float(data.get("units_added", 0))))
            if ts > s.anchor_ts:
                s.moves.append((ts, float(data.get("units_added", 0))))

    def _pos_current(self, ts: int) -> bool:
        """Whether the POS record is complete up to ``ts`` (a recent line, or a closed hour)."""
        if self.last_pos_ts is not None and self.last_pos_ts >= ts - 15 * MINUTE_MS:
            return True
        return self.pos_profile.expected(ts - 15 * MINUTE_MS, ts) < 1.0 and self.band_days > 0

    def _reading(self, device: str, ts: int, data: dict, cfg: DetectorConfig) -> list[dict]:
        self.last_reading_ts = max(self.last_reading_ts or ts, ts)
        self.open.discard("sensor_fleet_silent")
        facing, units = data.get("facing_id"), float(data.get("units_est", 0))
        s = self.sensors.get(facing)
        if s is None:
            s = self.sensors[facing] = _Sensor(device, str(data.get("sku")), units, ts, ts,
                                               anchor_units=units, anchor_ts=ts, zero_since=ts if units <= 0 else None)
            self._by_sku[s.sku] = s
            if s.zero_since is not None:
                self.zeros[facing] = s
            # sensor_drift, in event time: the sales and restocks that reached the job before this
            # first reading but happened after it count against it (a gateway sends POS lines and
            # restocks ahead of readings); a reading older than those kept anchors nothing.
            moves = self.pending_sales.pop(s.sku, []) + self.pending_restocks.pop(facing, [])
            s.moves = [m for m in moves if m[0] > ts]
            if ts < self.pending_cut:
                s.anchor_from = self.pending_cut
            return []
        if ts < s.last_ts:
            return []  # an older reading arriving late says nothing about now
        s.last_ts = ts
        if units <= 0 and s.zero_since is None:
            s.zero_since = ts
            self.zeros[facing] = s
        elif units > 0 and s.zero_since is not None:
            s.zero_since = None
            self.zeros.pop(facing, None)
            self.open.discard(f"phantom_inventory:{facing}")
        if units != s.units:
            s.units, s.changed_ts, s.sold = units, ts, 0.0
            s.since_change = [m for m in s.since_change if m[0] > ts]
            if s.flagged:
                s.flagged = False
                self.open.discard(f"sensor_stuck:{facing}")
        else:  # the same value reported again: what the till took up to now is confirmed
            s.sold = -sum(q for t, q in s.since_change if t <= ts)
        if s.sold > 0:
            self.selling[facing] = s
        else:
            self.selling.pop(facing, None)
        return self._drift(s, facing, ts, units, cfg)

    def _drift(self, s: _Sensor, facing: str, ts: int, units: float, cfg: DetectorConfig) -> list[dict]:
        if self.facings_per_sku.get(s.sku, 1) > 1 or not self._pos_current(ts):
            return []
        if s.anchor_ts < s.anchor_from:  # its first reading came before the sales kept for it
            if ts >= s.anchor_from:  # the sales since this reading are all known: the anchor
                s.anchor_units, s.anchor_ts, s.off_count = units, ts, 0
                s.moves = [m for m in s.moves if m[0] > ts]
            return []
        moved = sum(q for t, q in s.moves if t <= ts)
        expected = max(s.anchor_units + moved, 0.0)
        off = units - expected
        if abs(off) < 0.5:  # the till agrees exactly: re-anchor here (a slow drift must not creep)
            s.anchor_units, s.anchor_ts, s.off_count = units, ts, 0
            s.moves = [m for m in s.moves if m[0] > ts]
            if s.drift_flagged:
                s.drift_flagged = False
                self.open.discard(f"sensor_drift:{facing}")
            return []
        if abs(off) < cfg.drift_units or units == s.anchor_units:
            s.off_count = 0
            return []
        s.off_count += 1
        if s.off_count < cfg.drift_readings or s.drift_flagged:
            return []
        s.drift_flagged = True
        self.open.add(f"sensor_drift:{facing}")
        return [self._row(ts, "sensor_drift", s.device, abs(off), s.anchor_ts, {
            "facing_id": facing, "sku": s.sku, "reading_units": units, "expected_units": round(expected, 2),
            "anchor_units": s.anchor_units, "anchor_ms": s.anchor_ts})]

    def _sale(self, device: str, ts: int, data: dict, cfg: DetectorConfig) -> list[dict]:
        self.last_pos_ts = max(self.last_pos_ts or ts, ts)
        if self.last_tick is None or ts >= self.last_tick - cfg.sales_zero_ms:
            self.open.discard("sales_zero")  # the tills are back (an old line drained late is not)
        self.pos_profile.events[_hour(ts)] += 1
        self._band(ts, data, cfg)
        lane = self.registers.get(device)
        if lane is None:
            lane = self.registers[device] = _Lane(ts)
        txn = data.get("txn_id")
        rows: list[dict] = []
        if txn not in lane.txns:  # a lane counts baskets: lines come in bursts
            lane.txns = lane.txns[-15:] + [txn]
            rows = self._basket(lane, ts, cfg)
        if ts > lane.last_ts:
            # What the others took during the silence counts in its share only now: a failure
            # must not lower the share it is judged by while it lasts.
            lane.store_up += int(sum(lane.others_hour))
            lane.store_hour = [a + b for a, b in zip(lane.store_hour, lane.others_hour)]
            lane.last_ts, lane.others, lane.missed, lane.others_hour = ts, 0, 0.0, [0.0] * 24
            lane.evidence, lane.evidence_ts = 0.0, ts
            if lane.unseen_from is not None:  # counted now: a failure is not its own usual
                lane.profile.observe(lane.unseen_from, ts)
                lane.unseen_from = None
            if lane.flagged:
                lane.flagged = False
                self.open.discard(f"till_silent:{device}")
        qty, kind = float(data.get("qty", 0)), data.get("kind", "sale")
        if kind == "return" and data.get("sku") in self._by_sku:  # the book test takes the day's returns off
            key = (ts // DAY_MS, data.get("sku"))
            self.returned[key] = self.returned.get(key, 0.0) + abs(qty)
        if kind not in ("sale", "void") or (kind == "sale" and qty <= 0):
            return rows  # a return goes to the backroom, not the shelf
        if kind == "void" and qty > 0:
            qty = -qty  # a voided scan gives back what its scan took
        sku = data.get("sku")
        if qty > 0:
            self.sku_sold_ts[sku] = max(self.sku_sold_ts.get(sku, ts), ts)
        if self.facings_per_sku.get(sku, 1) > 1:
            return rows  # which facing a line took from is unknown: per-sensor rules skip such SKUs
        s = self._by_sku.get(sku)
        if s is None:
            self._pend(self.pending_sales, sku, ts, -qty, cfg)
            return rows
        if ts > s.changed_ts:
            s.since_change.append((ts, -qty))
        if ts > s.anchor_ts:
            s.moves.append((ts, -qty))
        return rows

    def _pend(self, pending: dict, key: Any, ts: int, units: float, cfg: DetectorConfig) -> None:
        """Keep a sale or restock of a sensor not heard from yet (``_reading`` takes them), the
        last ``drift_pending_ms`` of them: dropped an hour at a time, so the state stays bounded."""
        cut = self.last_ts - cfg.drift_pending_ms
        if cut - self.pending_cut >= HOUR_MS:
            self.pending_cut = cut
            for kept in (self.pending_sales, self.pending_restocks):
                for k, moves in list(kept.items()):
                    moves = [m for m in moves if m[0] >= cut]
                    if moves:
                        kept[k] = moves
                    else:
                        del kept[k]
        if ts >= self.pending_cut:
            pending.setdefault(key, []).append((ts, units))

    def _basket(self, lane: _Lane, ts: int, cfg: DetectorConfig) -> list[dict]:
        """Count a new basket of ``lane`` in every lane's share and missed baskets, and (with
        ``till_event_time``) judge each silent lane at it. While a lane is flagged down (for less
        than a day) no share learns: its shoppers pay at the others, whose shares would rise for good."""
        hour = _hour(ts)
        lane.profile.events[hour] += 1
        learn = not any(o.flagged and ts - o.last_ts < DAY_MS for o in self.registers.values())
        if learn:
            lane.baskets += 1
            lane.store_up += 1
            lane.store_hour[hour] += 1
        rows: list[dict] = []
        # A basket after the last tick is judged by the next tick (as a live one is); one the
        # ticks have passed already (a drained backlog) is judged now, in the events' time.
        judge = (cfg.till_event_time and cfg.till_expected is None and self.last_tick is not None
                 and ts <= self.last_tick and sum(self.profile.observed_ms) >= cfg.warmup_ms)
        for device, other in sorted(self.registers.items()):
            if other is not lane:
                silent = ts > other.last_ts
                if silent and (cfg.till_share_after_silence or other.store_up >= cfg.till_share_from):
                    # Counted in its share only when it speaks (``_sale``), and missed once the
                    # store has had its till_share_from-th basket: a lane silent since the store's
                    # first baskets must not learn a small share from its silence meanwhile.
                    if learn:
                        other.others_hour[hour] += 1
                    if other.store_up + sum(other.others_hour) >= cfg.till_share_from:  # it missed its share of it
                        other.miss(hour, ts, cfg.till_share_prior, len(self.registers))
                        if judge:
                            rows += self._till_judge(device, other, ts, cfg)
                elif learn:
                    other.store_up += 1
                    other.store_hour[hour] += 1
        return rows

    def _band_today(self, ts: int, cfg: DetectorConfig) -> bool:
        """Move ``demand_band``'s day on to ``ts``'s (``_band_roll``); False for a day already learned."""
        day = ts // DAY_MS
        if self.band_day is None or day > self.band_day:
            self._band_roll(day, cfg)
        return day == self.band_day

    def _band(self, ts: int, data: dict, cfg: DetectorConfig) -> None:
        if not self._band_today(ts, cfg):
            return  # a line of a day already learned
        sku, qty, price = data.get("sku"), float(data.get("qty", 0)), int(data.get("price_cents", 0))
        if data.get("kind", "sale") != "sale" or qty <= 0:
            return
        regular = self.regular_price.get(sku, 0)
        if price > regular:
            self.regular_price[sku] = price
        elif price < regular:
            self.band_promo.add(sku)  # a promotion price: announced, not an anomaly
        self.band_units[sku] = self.band_units.get(sku, 0.0) + qty
        if cfg.band_rule != "share":
            self.band_pos.setdefault(sku, []).append((self.band_total, qty))
        self.band_total += qty

    def _band_roll(self, day: int, cfg: DetectorConfig) -> None:
        """Learn yesterday (when it had sales): each SKU's share (the previous rule) and its units
        with the store units it was on sale for; the rates today is judged by; start a new day."""
        if self.band_day is not None and self.band_total > 0:
            for sku in set(self.band_share) | set(self.band_units):
                hist = self.band_share.setdefault(sku, [])
                hist.append(self.band_units.get(sku, 0.0) / self.band_total)
                del hist[:-cfg.band_history_days]
            first = self.band_days - cfg.band_history_days + 1  # the oldest day number kept
            if cfg.band_rule in SHELF_RULES:
                self._band_shelf_close()
            for sku, pos in self.band_pos.items():
                units = self.band_units[sku]
                hist = self.band_hist.setdefault(sku, [])
                if cfg.band_rule in SHELF_RULES:
                    hist.append((self.band_days, units, *_on_shelf(pos, units, self.band_total, cfg.band_gap_units,
                                                                   self.band_off.get(sku, ()))))
                else:
                    hist.append((self.band_days, units, _on_sale(pos, units, self.band_total, cfg.band_gap_units)))
            for sku in list(self.band_hist):
                self.band_hist[sku] = [h for h in self.band_hist[sku] if h[0] >= first]
                if not self.band_hist[sku]:
                    del self.band_hist[sku]
            for sku in list(self.band_off_days):
                self.band_off_days[sku] = {d for d in self.band_off_days[sku] if d >= first}
                if not self.band_off_days[sku]:
                    del self.band_off_days[sku]
            self.band_days += 1
            self.band_totals = (self.band_totals + [self.band_total])[-cfg.band_history_days:]
            self.band_rate = self._band_rates(cfg)
        self.band_day, self.band_units, self.band_total, self.band_promo = day, {}, 0.0, set()
        self.band_pos, self.band_refill, self.band_off = {}, {}, {}

    def _band_refill(self, ts: int, data: dict, cfg: DetectorConfig) -> None:
        """("shelf") Fold in a restock scan: once the scans of a SKU within ``band_refill_ms`` added
        ``band_refill_share`` of its planogram capacity, its shelf had run empty (a refill tops a
        shelf up to capacity): it was off the shelf from its last sale until the first scan."""
        sku, cap = data.get("sku"), self.capacity_per_sku.get(data.get("sku"), 0)
        if not cap or not self._band_today(ts, cfg):
            return  # no capacity known, or a scan of a day already learned
        g = self.band_refill.get(sku)
        if g is None or ts - g[0] > cfg.band_refill_ms:
            g = self.band_refill[sku] = [ts, 0.0, False]
        g[1] += float(data.get("units_added", 0))
        if g[2] or g[1] < cfg.band_refill_share * cap:
            return
        g[2] = True
        pos = self.band_pos.get(sku)
        if pos:  # sold today: off from its last sale (the store units before it) until now
            self.band_off.setdefault(sku, []).append((pos[-1][0], self.band_total))
            return
        # Not sold today: off since the opening of the day, and since its last sale before.
        self.band_off.setdefault(sku, []).append((0.0, self.band_total))
        hist = self.band_hist.get(sku, [])
        last = hist[-1][0] if hist else self.band_days - cfg.band_history_days
        if hist and len(hist[-1]) == 4:
            d, units, on_sale, tail = hist[-1]
            hist[-1] = (d, units, on_sale - tail, 0.0)  # the rest of that day after its last sale
        off = self.band_off_days.setdefault(sku, set())
        off.update(range(last + 1, self.band_days))  # the days between, without a sale
        if hist:
            self.band_rate[sku] = self._band_rates(cfg, {sku: hist}).get(sku)
            if self.band_rate[sku] is None:
                del self.band_rate[sku]

    def _band_shelf_close(self) -> None:
        """("shelf") At the end of a day: a single-facing SKU whose sensor reads 0 (since before
        the day ended) was off the shelf from its last sale of the day (all day without one)."""
        for s in self.zeros.values():
            if s.zero_since is None or self.facings_per_sku.get(s.sku, 1) != 1 or s.zero_since // DAY_MS > self.band_day:
                continue
            pos = self.band_pos.get(s.sku)
            if pos:
                self.band_off.setdefault(s.sku, []).append((pos[-1][0], self.band_total))
            elif s.zero_since // DAY_MS < self.band_day:
                self.band_off_days.setdefault(s.sku, set()).add(self.band_days)

    def _band_rates(self, cfg: DetectorConfig, hists: dict | None = None) -> dict:
        """Per SKU: (units, store units it was on sale for) over the last days. A day without a
        sale counts as on sale only where the SKU's rate on its other days expected fewer than
        ``band_gap_units`` that day (a product that sold 100 a day and none today was not on the
        shelf, not unwanted); a SKU that sold nothing in those days has no rate."""
        totals = self.band_totals
        days = range(self.band_days - len(totals), self.band_days)
        out = {}
        for sku, hist in (self.band_hist if hists is None else hists).items():
            units = sum(h[1] for h in hist)
            exposure = sum(h[2] for h in hist)
            if units <= 0 or exposure <= 0:
                continue
            sold_on = {h[0] for h in hist} | self.band_off_days.get(sku, set())
            rate = units / exposure
            exposure += sum(total for d, total in zip(days, totals)
                            if d not in sold_on and rate * total < cfg.band_gap_units)
            out[sku] = (units, exposure)
        return out

    def _band_check(self, t: int, cfg: DetectorConfig, categories: "Categories | None" = None) -> list[dict]:
        if self.band_days < cfg.band_warmup_days or self.band_total <= 0 or self.band_day != t // DAY_MS:
            return []
        if cfg.band_rule == "share":
            return self._band_check_share(t, cfg)
        rows = []
        total = self.band_total
        alpha = cfg.band_shelf_alpha if cfg.band_rule in SHELF_RULES else cfg.band_alpha
        for sku, units in sorted(self.band_units.items()):
            key = f"demand_band:{sku}:{self.band_day}"
            if units < cfg.band_min_units or sku in self.band_promo or key in self.open:
                continue
            usual = self.band_rate.get(sku)
            if usual is None:
                continue  # no sale in the last days (out of stock, or new): no rate to compare with
            h, exposure = usual
            expected = h / exposure * total
            if units < cfg.band_ratio * expected or _binom_tail(units, h, total, exposure) > alpha:
                continue
            switched, sibling = self._band_switched(sku, h / exposure, categories, cfg,
                                                    emptied_today=cfg.band_rule == "shelf_switch")
            net = units - switched
            if net < cfg.band_min_units or net < cfg.band_ratio * expected:
                continue
            chance = _binom_tail(net, h, total, exposure)
            if chance > alpha:
                continue
            self.open.add(key)
            rows.append(self._row(t, "demand_band", sku, net / max(expected, 1e-9), t - t % DAY_MS, {
                "sku": sku, "units_today": units, "switched_in": round(switched, 2), "from_sibling": sibling,
                "expected_units": round(expected, 2), "store_units_today": total, "units_last_days": h,
                "store_units_on_sale_last_days": round(exposure, 1), "chance": float(f"{chance:.3g}")}))
        return rows

    def _band_switched(self, sku: str, rate: float, categories: "Categories | None",
                       cfg: DetectorConfig, emptied_today: bool = False) -> tuple[float, str | None]:
        """The most of ``sku``'s units today that one product of its category, silent since its
        last sale (its rate expected >= ``band_gap_units`` since: off the shelf), can explain:
        ``sku``'s excess over its rate since that moment, at most ``band_switch_share`` of what the
        silent product would have sold meanwhile. A spike raises a SKU's units from the opening
        and its siblings keep selling; shoppers switching come only once a sibling is empty, and
        no more of them than it lost. ``emptied_today`` ("shelf_switch"): only a sibling that
        sold today and then fell silent, and only when ``sku`` was not already far above its rate
        before that (``band_switch_before_min``): a sibling silent since the opening is, in a
        category of 60 - 160 products, most often a coincidence beside a spike from the opening.
        Returns (units, the sibling) or (0, None)."""
        siblings = categories.siblings(sku) if categories is not None else ()
        if not siblings:
            return 0.0, None
        total, mine = self.band_total, self.band_pos.get(sku, [])
        best, who = 0.0, None
        for other in siblings:
            usual = self.band_rate.get(other)
            if usual is None:
                continue
            pos = self.band_pos.get(other)
            if emptied_today and not pos:
                continue  # not sold today: no shelf that emptied today
            since = pos[-1][0] if pos else 0.0  # its last sale today (store units then)
            lost = usual[0] / usual[1] * (total - since)
            if lost < cfg.band_gap_units:
                continue
            if emptied_today:
                before = sum(q for at, q in mine if at < since)
                if before >= cfg.band_switch_before_min and before >= cfg.band_ratio * rate * since:
                    continue  # already far above its rate before the sibling fell silent
            excess = sum(q for at, q in mine if at >= since) - rate * (total - since)
            explained = min(excess, cfg.band_switch_share * lost)
            if explained > best:
                best, who = explained, other
        return best, who

    def _band_check_share(self, t: int, cfg: DetectorConfig) -> list[dict]:
        """The rule in force before session 8 (``band_rule="share"``, docs/stream.md)."""
        if self.band_totals and self.band_total >= cfg.band_early_share * sum(self.band_totals) / len(self.band_totals):
            return []  # late in the day: stock-outs and switching shoppers shape shares as much as spikes do
        rows = []
        floor = 0.5 / max(self.band_total, 1.0)
        for sku, units in sorted(self.band_units.items()):
            key = f"demand_band:{sku}:{self.band_day}"
            if units < cfg.band_min_units or sku in self.band_promo or key in self.open:
                continue
            # The best of the last days: a day the shelf stood empty says little about demand.
            usual = max(self.band_share.get(sku) or [0.0])
            if usual <= 0:
                continue  # no sale in the last days (out of stock, or new): no usual to compare with
            expected = max(usual, floor) * self.band_total
            if units >= cfg.band_ratio * expected + cfg.band_sigmas * expected ** 0.5:
                self.open.add(key)
                rows.append(self._row(t, "demand_band", sku, units / max(expected, 1e-9), t - t % DAY_MS, {
                    "sku": sku, "units_today": units, "expected_units": round(expected, 2),
                    "store_units_today": self.band_total, "usual_share": round(usual, 5)}))
        return rows

    def _stock_lookup(self, t: int, cfg: DetectorConfig, stock: Any) -> None:
        """Look up the stock record of the newest UTC day closed ``stock_lag_ms`` before ``t``, once
        per day, at the first tick past that moment: the answer (a record or none) is kept in the
        state, so a replay from a snapshot asks the same question at the same event time."""
        due = (t - cfg.stock_lag_ms) // DAY_MS - 1
        if self.book_asked is not None and due <= self.book_asked:
            return
        self.book_asked = due
        record = stock.book(self.store_id, ms_to_iso(due * DAY_MS)[:10])
        if record is not None:
            self.book = {sku: record[sku] for sku in self._by_sku
                         if sku in record and self.facings_per_sku.get(sku, 1) == 1}
            self.book_day = due
        keep = self.book_day if self.book_day is not None else due
        self.returned = {k: v for k, v in self.returned.items() if k[0] >= keep}

    def _book_test(self, sku: str, since: int, t: int, cfg: DetectorConfig) -> tuple[str, dict]:
        """What the store system's stock record says about an empty single-facing SKU: ``flag``
        (the book holds units beyond the empty shelf: phantom stock), ``out`` (it holds none: the
        store knows it is out), ``wait`` (the newest record closed before the shelf emptied) or
        ``none`` (no current record of the store or SKU: the rule without the record judges)."""
        if self.book_day is None or (self.book_day + 1) * DAY_MS < t - cfg.stock_stale_ms:
            return "none", {"stock_record": "none" if self.book_day is None else "stale"}
        if sku not in self.book:
            return "none", {"stock_record": "sku_not_in_record"}
        close = (self.book_day + 1) * DAY_MS
        if close <= since:
            return "wait", {}
        units, back = self.book[sku], self.returned.get((self.book_day, sku), 0.0)
        beyond = units - back  # the shelf read 0 at the close: everything else is backroom, by the book
        return ("flag" if beyond >= cfg.phantom_book_min else "out"), {"stock_record": {
            "date": ms_to_iso(self.book_day * DAY_MS)[:10],
            "book_units": units, "returned_that_day": back, "beyond_shelf": beyond}}

    def _phantom_check(self, t: int, cfg: DetectorConfig) -> list[dict]:
        rows = []
        old_zeros = sorted((f, s) for f, s in self.zeros.items() if t - s.zero_since >= cfg.phantom_min_ms)
        for facing, s in old_zeros:
            since = s.zero_since
            if (f"phantom_inventory:{facing}" in self.open
                    or self.facings_per_sku.get(s.sku, 1) > 1 or self.sku_sold_ts.get(s.sku, -1) > since):
                continue
            missed = [(ts0, d) for d, (ts0, skus) in self.deliveries.items() if ts0 > since and s.sku not in skus]
            if len(missed) < cfg.phantom_deliveries or self.last_restock_ts is None:
                continue
            last = max(ts0 for ts0, _ in missed)
            if self.last_restock_ts <= last or s.restocked_ts > since:
                continue
            verdict, book = self._book_test(s.sku, since, t, cfg)
            if verdict in ("out", "wait"):
                continue  # the record agrees the store is out (or has not seen the empty shelf yet)
            self.open.add(f"phantom_inventory:{facing}")
            rows.append(self._row(t, "phantom_inventory", facing, (t - since) / HOUR_MS, since, {
                "facing_id": facing, "sku": s.sku, "empty_since_ms": since, **book,
                "deliveries_without_it": sorted(d for _, d in missed)[:5], "last_restock_ms": self.last_restock_ts}))
        # Forget deliveries older than a week.
        for d in [d for d, (ts0, _) in self.deliveries.items() if t - ts0 > 7 * DAY_MS]:
            del self.deliveries[d]
        return rows

    def _backlog_check(self, t: int, cfg: DetectorConfig) -> list[dict]:
        b = self.backlog
        if len(b) < cfg.backlog_reports or t - b[-1][0] > cfg.backlog_fresh_ms:
            return []
        # Seen growing live: the reports came in separate deliveries over time (one drain after
        # an outage delivers many at once, and that is gateway_silent's story).
        live = all(b[i + 1][3] - b[i][3] >= cfg.backlog_fresh_ms // 4 for i in range(len(b) - 1))
        rising = (all(b[i + 1][1] >= b[i][1] for i in range(len(b) - 1))
                  and b[-1][1] - b[0][1] >= cfg.backlog_min_rows and live)
        if "gateway_backlog" in self.open:
            if b[-1][2] < cfg.backlog_age_ms / 2:
                self.open.discard("gateway_backlog")
            return []
        if not rising or b[-1][2] < cfg.backlog_age_ms:
            return []
        self.open.add("gateway_backlog")
        return [self._row(t, "gateway_backlog", self.store_id, float(b[-1][1]), b[0][0], {
            "unsent_rows": [r[1] for r in b], "oldest_unsent_min": round(b[-1][2] / MINUTE_MS, 1)})]

    # ---- ticks ---------------------------------------------------------------------------

    def _row(self, t: int, kind: str, subject: str, score: float, since: int, evidence: dict) -> dict:
        return {"store_id": self.store_id, "subject": subject, "kind": kind, "score": float(score),
                "evidence": json.dumps(evidence, sort_keys=True), "first_seen": t, "since_ms": int(since)}

    def tick(self, t: int, cfg: DetectorConfig, stock: Any = None, categories: "Categories | None" = None) -> list[dict]:
        """Run the detectors at event time ``t``; return new ``stream.anomalies`` rows. ``stock``:
        the stock record side input (``cloud.stream.stock.StockRecords``) or None; ``categories``:
        the products' categories (master data, ``Categories``) or None."""
        span = t - self.last_tick if self.last_tick is not None else 0
        self.last_tick = t
        if stock is not None:
            self._stock_lookup(t, cfg, stock)
        rows: list[dict] = []
        warm = sum(self.profile.observed_ms) >= cfg.warmup_ms
        silent_for = t - self.last_ts
        # Learn the hour profile only from time the store was not silent.
        if span > 0 and silent_for < cfg.silent_min_ms:
            self.profile.observed_ms[_hour(t - span)] += span
            for lane in self.registers.values():
                if t - lane.last_ts < cfg.till_silent_ms:
                    lane.profile.observed_ms[_hour(t - span)] += span
                elif lane.unseen_from is None:
                    lane.unseen_from = t - span  # counted when it speaks again (or never: a failure)
            if "sales_zero" not in self.open:
                self.pos_profile.observed_ms[_hour(t - span)] += span
            if self.last_reading_ts is not None and t - self.last_reading_ts < cfg.fleet_silent_ms:
                self.sensor_hours += span / HOUR_MS
        if not warm:
            return rows
        # gateway_silent
        if silent_for >= cfg.silent_min_ms and "gateway_silent" not in self.open:
            expected = self.profile.expected(self.last_ts, t)
            if expected >= cfg.silent_expected:
                self.open.add("gateway_silent")
                rows.append(self._row(t, "gateway_silent", self.store_id, expected, self.last_ts, {
                    "last_event_ms": self.last_ts, "silent_min": round(silent_for / MINUTE_MS, 1),
                    "expected_events": round(expected, 1)}))
        if silent_for >= cfg.silent_min_ms:
            return rows  # a silent store says nothing about its sensors or tills
        rows += self._backlog_check(t, cfg)
        # Events queued at a gateway with a backlog are late, not missing.
        queued = bool(self.backlog) and (self.backlog[-1][1] >= cfg.backlog_min_rows
                                         or self.backlog[-1][2] >= cfg.backlog_age_ms)
        # sales_zero: no register sells while the store's other devices report
        if (self.last_pos_ts is not None and t - self.last_pos_ts >= cfg.sales_zero_ms and "sales_zero" not in self.open
                and not queued):
            expected = self.pos_profile.expected(max(self.last_pos_ts, t - HOUR_MS), t, strict=True)
            if expected >= cfg.sales_zero_expected:
                self.open.add("sales_zero")
                rows.append(self._row(t, "sales_zero", self.store_id, expected, self.last_pos_ts, {
                    "last_line_ms": self.last_pos_ts, "expected_lines": round(expected, 1),
                    "registers_known": len(self.registers)}))
        rows += self._band_check(t, cfg, categories)
        rows += self._phantom_check(t, cfg)
        # sensor_fleet_silent
        pos_recent = self.last_pos_ts is not None and t - self.last_pos_ts < cfg.fleet_silent_ms
        if (len(self.sensors) >= cfg.fleet_min_sensors and self.last_reading_ts is not None and pos_recent
                and not queued
                and t - self.last_reading_ts >= cfg.fleet_silent_ms and "sensor_fleet_silent" not in self.open):
            self.open.add("sensor_fleet_silent")
            rows.append(self._row(t, "sensor_fleet_silent", self.store_id, float(len(self.sensors)),
                                  self.last_reading_ts, {"last_reading_ms": self.last_reading_ts,
                                                         "sensors_known": len(self.sensors),
                                                         "last_pos_ms": self.last_pos_ts}))
        fleet_alive = self.last_reading_ts is not None and t - self.last_reading_ts < cfg.fleet_silent_ms
        # sensor_stuck
        if fleet_alive:
            selling = sorted((f, s) for f, s in self.selling.items()
                             if not s.flagged and s.sold >= cfg.stuck_units and s.units >= 1)
            for facing, s in selling:
                if self.facings_per_sku.get(s.sku, 1) == 1 and t - s.changed_ts >= cfg.stuck_min_ms:
                    s.flagged = True
                    self.open.add(f"sensor_stuck:{facing}")
                    rows.append(self._row(t, "sensor_stuck", s.device, s.sold, s.changed_ts, {
                        "facing_id": facing, "sku": s.sku, "reading_units": s.units, "units_sold_since": round(s.sold, 2),
                        "unchanged_min": round((t - s.changed_ts) / MINUTE_MS, 1)}))
        # Not held back by a backlog: a gateway drains a class of events (POS lines) in the order
        # they came, so the other lanes' lines that did arrive stand for this lane's of that time.
        rows += self._till_check(t, cfg, pos_recent and (cfg.till_expected is None or not queued))
        return rows

    def _till_check(self, t: int, cfg: DetectorConfig, others_selling: bool) -> list[dict]:
        """till_silent: a register silent while the others sell. The evidence that it is down
        comes from what the others took meanwhile (live traffic, not a profile), each basket at the
        lane's share of the store's baskets at that hour (``_Lane.miss``); its own hour profile
        must say the lane is usually open then (a lane closed at quiet hours is not a failure)."""
        rows: list[dict] = []
        if not others_selling:
            return rows
        for device, lane in sorted(self.registers.items()):
            rows += self._till_judge(device, lane, t, cfg)
        return rows

    def _till_judge(self, device: str, lane: _Lane, t: int, cfg: DetectorConfig) -> list[dict]:
        """Flag ``lane`` at event time ``t`` if its silence is surprising enough (a tick, or a
        basket another lane took: ``till_event_time``)."""
        if lane.flagged or t - lane.last_ts < cfg.till_silent_ms:
            return []
        surprise = lane.surprise(t)
        if surprise < cfg.till_evidence if cfg.till_expected is None else lane.missed < cfg.till_expected:
            return []
        if not any(o is not lane and t - o.last_ts < cfg.till_silent_ms for o in self.registers.values()):
            return []
        expected, share = lane.missed, lane.share(_hour(t), cfg.till_share_prior, len(self.registers))
        usual = lane.profile.expected(lane.last_ts, t)
        if usual < cfg.till_usual_min:
            return []
        lane.flagged = True
        self.open.add(f"till_silent:{device}")
        score = surprise if cfg.till_expected is None else expected
        return [self._row(t, "till_silent", device, score, lane.last_ts, {
            "last_line_ms": lane.last_ts, "expected_baskets": round(expected, 1), "others_baskets": lane.others,
            "evidence_log_hours": round(surprise, 2),
            "usual_share": round(share, 3), "profile_expected": round(usual, 1)})]

    def compare_alerts(self, t: int, cloud_raised: set[str], cfg: DetectorConfig,
                       undecided: set[str] | frozenset[str] = frozenset()) -> list[dict]:
        """Flag a gateway whose alerts disagree with the cloud's (stale or broken model): on
        ``divergence_min`` facings or more (and most of them) ``divergence_ticks`` ticks in a row,
        or on the same ``divergence_lasting_min`` facings ``divergence_lasting_ticks`` ticks in a
        row; the ``undecided`` facings are not compared (see the module docstring)."""
        if self.silent_scored_at is not None and t - self.silent_scored_at < cfg.divergence_grace_ms:
            self.divergent_ticks = 0  # the cloud is still catching up after a silence
            self.divergent_run = {}
            return []
        cloud_raised = cloud_raised - undecided
        gateway_raised = self.gateway_raised - undecided
        union = cloud_raised | gateway_raised
        diff = cloud_raised ^ gateway_raised
        share = len(diff) / len(union) if union else 0.0
        runs = self.divergent_run
        self.divergent_run = runs = {f: [runs[f][0], runs[f][1] + 1] if f in runs else [t, 1] for f in diff}
        lasting = sorted(f for f, (_, n) in runs.items() if n >= cfg.divergence_lasting_ticks)
        lasts = cfg.divergence_lasting_ticks > 0 and len(lasting) >= cfg.divergence_lasting_min
        if len(diff) >= cfg.divergence_min and share > cfg.divergence_share:
            if self.divergent_ticks == 0:
                self.divergent_since = t
            self.divergent_ticks += 1
        else:
            self.divergent_ticks = 0
        if self.divergent_ticks == 0 and not lasts:
            self.open.discard("alert_divergence")
        if (self.divergent_ticks >= cfg.divergence_ticks or lasts) and "alert_divergence" not in self.open:
            self.open.add("alert_divergence")
            wide = self.divergent_ticks >= cfg.divergence_ticks
            since = (self.divergent_since or t) if wide else min(runs[f][0] for f in lasting)
            return [self._row(t, "alert_divergence", self.store_id, share, since, {
                "cloud_only": sorted(cloud_raised - gateway_raised)[:20],
                "gateway_only": sorted(gateway_raised - cloud_raised)[:20],
                "lasting": lasting[:20], "rule": "facings" if wide else "lasting",
                "cloud_raised": len(cloud_raised), "gateway_raised": len(gateway_raised)})]
        return []

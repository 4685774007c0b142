"""Scenarios: every knob of the store model in one frozen dataclass, loadable from TOML.

A scenario file holds a seed and any subset of the parameters below, grouped in the TOML
tables ``[demand]``, ``[replenishment]``, ``[devices]`` and ``[faults]``; anything left out
keeps its default. Same scenario and seed, same bytes out. Faults are all off unless a file
or ``Scenario.with_faults`` switches them on.

Defaults and their sources are listed in ``docs/simulator.md``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gondola.errors import ConfigError

__all__ = ["Scenario", "DemandParams", "ReplenishmentParams", "DeviceParams", "FaultParams", "FAULT_KINDS"]


@dataclass(frozen=True)
class DemandParams:
    """Shoppers and what they want."""

    #: Mean units demanded per SKU per open day across the catalog (before seasonality).
    mean_units_per_sku_day: float = 2.0
    #: Lognormal sigma of the per-SKU rate: 1.2 puts ~60% of units on the top 20% of SKUs.
    rate_sigma: float = 1.2
    #: Opening hours, local = UTC in the simulator.
    open_hour: float = 7.0
    close_hour: float = 22.0
    #: Monday..Sunday demand factors (mean 1).
    weekday_factors: tuple[float, ...] = (0.92, 0.88, 0.93, 0.98, 1.12, 1.37, 0.80)
    #: Day-to-day demand noise (coefficient of variation of a gamma day factor).
    day_noise_cv: float = 0.08
    #: Share of SKUs on promotion at any time, the promotion's demand lift and length.
    promo_share: float = 0.03
    promo_lift: float = 2.5
    promo_days: int = 7
    promo_discount: float = 0.2
    #: Holidays as ISO dates (store closed) and the lift on the day before each.
    holidays: tuple[str, ...] = ()
    pre_holiday_factor: float = 1.4
    #: Basket size (mean distinct lines per shopper) and registers (None: from catalog size).
    basket_mean_lines: float = 6.0
    registers: int | None = None
    void_rate: float = 0.01
    returns_per_day: float = 2.0
    loyalty_share: float = 0.4
    loyalty_members: int = 5000
    #: Shopper response to an empty shelf (GMA 2002): buy elsewhere, switch brand, switch size,
    #: delay, do not buy. Switching (brand or size) moves the demand to a substitute facing.
    response_elsewhere: float = 0.31
    response_switch_brand: float = 0.26
    response_switch_size: float = 0.19
    response_delay: float = 0.15
    response_no_buy: float = 0.09

    def __post_init__(self) -> None:
        _check_probabilities(self, ("promo_share", "promo_discount", "void_rate", "loyalty_share", "response_elsewhere",
                                    "response_switch_brand", "response_switch_size", "response_delay", "response_no_buy"))
        shares = (self.response_elsewhere + self.response_switch_brand + self.response_switch_size
                  + self.response_delay + self.response_no_buy)
        if abs(shares - 1.0) > 0.011:
            raise ConfigError(f"[demand] shopper responses must add up to 1, got {shares:.3f}")
        if not 0 <= self.open_hour < self.close_hour <= 24:
            raise ConfigError(f"[demand] opening hours {self.open_hour}-{self.close_hour} are not within a day")
        if len(self.weekday_factors) != 7 or min(self.weekday_factors) < 0:
            raise ConfigError("[demand] weekday_factors needs 7 non-negative factors, Monday first")
        if self.mean_units_per_sku_day <= 0 or self.rate_sigma < 0:
            raise ConfigError("[demand] mean_units_per_sku_day must be > 0 and rate_sigma >= 0")


@dataclass(frozen=True)
class ReplenishmentParams:
    """Backroom, deliveries, staff restock rounds and inventory-record errors."""

    #: Scheduled restock rounds (HH:MM, UTC) and how they go wrong.
    restock_times: tuple[str, ...] = ("06:30", "13:00", "18:30")
    restock_delay_mean_min: float = 60.0
    restock_skip_prob: float = 0.15
    #: Facings below this fill level are refilled in a round.
    restock_threshold: float = 0.5
    #: Probability that a facing is only partly refilled, and the filled share then.
    partial_prob: float = 0.25
    partial_fill: tuple[float, float] = (0.3, 0.8)
    #: Shelf capacity sized to this many days of mean demand (clipped to the bounds).
    shelf_cover_days: float = 1.0
    capacity_bounds: tuple[int, int] = (4, 60)
    #: Deliveries: weekdays (0 = Monday), arrival time, lead time in days.
    delivery_weekdays: tuple[int, ...] = (0, 2, 4)
    delivery_time: str = "05:30"
    lead_time_days: int = 1
    #: Order-up-to level in days of forecast demand, and how often store ordering fails.
    order_cover_days: float = 2.8
    order_miss_prob: float = 0.08
    #: Store forecast error: a per-SKU bias (lognormal sigma); promotions are not forecast.
    forecast_error_sigma: float = 0.4
    #: Supplier short-shipments: probability per order line, and the share then delivered.
    supplier_short_prob: float = 0.06
    supplier_short_fill: tuple[float, float] = (0.0, 0.5)
    #: Unrecorded shrink (theft, damage) per SKU per day: makes phantom inventory.
    shrink_prob: float = 0.04
    shrink_units_max: int = 6
    #: Days between inventory counts of one SKU (records corrected, phantom stock removed).
    count_interval_days: int = 21
    #: Share of delivered lines put in the wrong place, and mean days until found.
    misplaced_prob: float = 0.03
    misplaced_days_mean: float = 3.0
    #: Days simulated silently before the start so day 0 looks like a running store.
    warmup_days: int = 7
    #: Staff gap-scan rounds (HH:MM, UTC; none by default): a worker walks the store with a
    #: handheld and scans each facing found empty (``shelf.gap_scan``). Only stores whose id
    #: hashes into the first ``gap_scan_store_share`` do rounds; a round starts late like a
    #: restock round, is skipped with ``gap_scan_skip_prob`` and misses each empty facing with
    #: ``gap_scan_miss_prob`` (staff overlook gaps behind a pushed-forward facing, or hurry).
    gap_scan_times: tuple[str, ...] = ()
    gap_scan_store_share: float = 1.0
    gap_scan_skip_prob: float = 0.1
    gap_scan_miss_prob: float = 0.2

    def __post_init__(self) -> None:
        _check_probabilities(self, ("restock_skip_prob", "restock_threshold", "partial_prob", "order_miss_prob",
                                    "supplier_short_prob", "shrink_prob", "misplaced_prob", "gap_scan_store_share",
                                    "gap_scan_skip_prob", "gap_scan_miss_prob"))
        if not set(self.delivery_weekdays) <= set(range(7)) or not self.delivery_weekdays:
            raise ConfigError("[replenishment] delivery_weekdays must name days 0 (Monday) .. 6")
        for text in (*self.restock_times, self.delivery_time, *self.gap_scan_times):
            hours, sep, minutes = str(text).partition(":")
            if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
                raise ConfigError(f"[replenishment] time {text!r} is not HH:MM")
        lo, hi = self.capacity_bounds
        if not 1 <= lo <= hi:
            raise ConfigError(f"[replenishment] capacity_bounds {self.capacity_bounds} must be 1 <= low <= high")


@dataclass(frozen=True)
class DeviceParams:
    """Simulation step and device behaviour (not faults: these are always there)."""

    step_min: int = 5
    heartbeat_min: int = 180
    #: Load-cell noise as a share of one unit's weight, and drift in grams per day.
    noise_unit_frac: float = 0.08
    drift_g_per_day: float = 1.5
    #: Probability per sensor-day of a stuck value, and how long it stays stuck.
    stuck_prob: float = 0.005
    stuck_hours: tuple[float, float] = (1.0, 12.0)
    battery_drain_pct_per_day: float = 0.25
    handhelds: int = 2

    def __post_init__(self) -> None:
        _check_probabilities(self, ("stuck_prob",))
        if self.step_min < 1 or (24 * 60) % self.step_min:
            raise ConfigError(f"[devices] step_min {self.step_min} must divide a day")
        if self.heartbeat_min < self.step_min:
            raise ConfigError("[devices] heartbeat_min must be at least step_min")


#: Fault kinds counted in ground truth, in a fixed order.
FAULT_KINDS = (
    "drop",
    "duplicate",
    "reorder",
    "late",
    "clock_skew",
    "malformed",
    "reboot",
    "outage",
    "power_loss",
    "sensor_drift",
    "sensor_fleet",
    "till_down",
    "pos_outage",
    "demand_spike",
)


@dataclass(frozen=True)
class FaultParams:
    """Fault injection; every rate 0 (off) by default."""

    #: Per-message probabilities.
    drops: float = 0.0
    duplicates: float = 0.0
    reorders: float = 0.0
    late: float = 0.0
    malformed: float = 0.0
    #: Per device-day probabilities.
    clock_skew: float = 0.0
    reboots: float = 0.0
    #: Per store-day probabilities of a network outage / gateway power loss starting.
    outages: float = 0.0
    power_losses: float = 0.0
    late_min_s: float = 120.0
    late_max_s: float = 3600.0
    skew_max_s: float = 600.0
    reboot_min_s: float = 30.0
    reboot_max_s: float = 600.0
    #: Outage length is log-uniform between these (minutes to days).
    outage_min_min: float = 5.0
    outage_max_min: float = 2 * 24 * 60.0
    power_loss_min_min: float = 2.0
    power_loss_max_min: float = 120.0
    #: Anomalies for the cloud's stream detectors (docs/stream.md), each with a truth window.
    #: Per sensor-day: a load cell starts drifting (``drift_units_per_hour``, either sign).
    sensor_drifts: float = 0.0
    drift_units_per_hour: tuple[float, float] = (0.75, 2.0)
    drift_min_min: float = 120.0
    drift_max_min: float = 600.0
    #: Per store-day: every shelf sensor of the store goes silent (their radio hub fails).
    sensor_fleet_failures: float = 0.0
    fleet_failure_min_min: float = 60.0
    fleet_failure_max_min: float = 360.0
    #: Per register-day: a till lane stops (terminal broken); shoppers queue at the next lane that is up.
    till_failures: float = 0.0
    till_failure_min_min: float = 60.0
    till_failure_max_min: float = 300.0
    #: Per store-day: the store's POS system stops sending (store-and-forward: lines come later).
    pos_outages: float = 0.0
    pos_outage_min_min: float = 60.0
    pos_outage_max_min: float = 240.0
    #: Per store-day: one SKU's demand jumps by ``spike_lift`` for the day (an unannounced
    #: local promotion), at the regular price.
    demand_spikes: float = 0.0
    spike_lift: tuple[float, float] = (4.0, 8.0)

    def __post_init__(self) -> None:
        _check_probabilities(self, ("drops", "duplicates", "reorders", "late", "malformed", "clock_skew", "reboots",
                                    "outages", "power_losses", "sensor_drifts", "sensor_fleet_failures",
                                    "till_failures", "pos_outages", "demand_spikes"))
        if not 0 < self.drift_units_per_hour[0] <= self.drift_units_per_hour[1]:
            raise ConfigError("[faults] need 0 < drift_units_per_hour[0] <= drift_units_per_hour[1]")
        if not 1 <= self.spike_lift[0] <= self.spike_lift[1]:
            raise ConfigError("[faults] need 1 <= spike_lift[0] <= spike_lift[1]")
        for lo, hi in (("late_min_s", "late_max_s"), ("reboot_min_s", "reboot_max_s"),
                       ("outage_min_min", "outage_max_min"), ("power_loss_min_min", "power_loss_max_min"),
                       ("drift_min_min", "drift_max_min"), ("fleet_failure_min_min", "fleet_failure_max_min"),
                       ("till_failure_min_min", "till_failure_max_min"), ("pos_outage_min_min", "pos_outage_max_min")):
            if not 0 < getattr(self, lo) <= getattr(self, hi):
                raise ConfigError(f"[faults] need 0 < {lo} <= {hi}")


def _check_probabilities(params: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{type(params).__name__}.{name} must be a probability in [0, 1], got {value!r}")


_KIND = {"float": "a number", "int": "an integer", "str": "text"}


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    return {"float": isinstance(value, (int, float)), "int": isinstance(value, int),
            "str": isinstance(value, str)}[kind]


def _check_type(section: str, name: str, value: Any, annotation: str) -> None:
    """Raises ConfigError naming the parameter when a file gives it a value of the wrong type
    (``annotation`` is the field's type as written: ``float``, ``int | None``, ``tuple[str, ...]``)."""
    kind = annotation.removesuffix(" | None")
    if value is None and kind != annotation:
        return
    if kind.startswith("tuple["):
        item = kind[len("tuple["):].split(",")[0].rstrip("]")
        if isinstance(value, (list, tuple)) and all(_is(v, item) for v in value):
            return
        plural = {"float": "numbers", "int": "integers", "str": "text"}[item]
        raise ConfigError(f"[{section}] {name}: expected a list of {plural}, got {type(value).__name__}"
                          + (" with an item of another type" if isinstance(value, (list, tuple)) else ""))
    if not _is(value, kind):
        raise ConfigError(f"[{section}] {name}: expected {_KIND[kind]}, got {type(value).__name__}")


_SECTIONS = {"demand": DemandParams, "replenishment": ReplenishmentParams, "devices": DeviceParams, "faults": FaultParams}


@dataclass(frozen=True)
class Scenario:
    """Everything that shapes a simulated store except its id, size and seed.

    ``seed`` is the scenario file's seed; the CLI's ``--seed`` overrides it.
    """

    name: str = "default"
    seed: int = 0
    demand: DemandParams = field(default_factory=DemandParams)
    replenishment: ReplenishmentParams = field(default_factory=ReplenishmentParams)
    devices: DeviceParams = field(default_factory=DeviceParams)
    faults: FaultParams = field(default_factory=FaultParams)

    @classmethod
    def default(cls) -> "Scenario":
        """Realistic store, no faults."""
        return cls()

    @classmethod
    def demo(cls) -> "Scenario":
        """The default store where staff also walk two gap-scan rounds a day (10:30 and 16:30),
        and a few of the device failures the cloud's stream detectors look for happen (a load
        cell drifting, 0.015 per sensor-day: about ten a week per hundred sensors; a till lane stopping for 1-5 h,
        about once a week per lane; a store's shelf sensors all silent for 1-6 h, about once in
        ten store-days): what ``gondola demo`` runs unless given a scenario file."""
        return cls(name="demo", replenishment=ReplenishmentParams(gap_scan_times=("10:30", "16:30")),
                   faults=FaultParams(sensor_drifts=0.015, till_failures=0.15, sensor_fleet_failures=0.1))

    @classmethod
    def no_faults(cls) -> "Scenario":
        """Same as ``default()``; says what the caller relies on."""
        return cls(name="no_faults")

    @classmethod
    def with_faults(cls, base: "Scenario | None" = None, **rates: float) -> "Scenario":
        """A scenario with the named fault rates switched on (``duplicates=0.05, drops=0.01``).

        Raises:
            ConfigError: an unknown fault name.
        """
        base = base or cls()
        known = {f.name for f in fields(FaultParams)}
        unknown = set(rates) - known
        if unknown:
            raise ConfigError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(known)}")
        return replace(base, name=base.name if base.name != "default" else "faults",
                       faults=replace(base.faults, **rates))

    @classmethod
    def load(cls, path: str | Path) -> "Scenario":
        """Read a TOML scenario file.

        Raises:
            ConfigError: the file is missing, not TOML, or names an unknown parameter.
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"scenario file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"scenario file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(raw, default_name=path.stem)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, default_name: str = "scenario") -> "Scenario":
        """Build from a parsed TOML/dict document.

        Raises:
            ConfigError: unknown section or parameter, or a value of the wrong shape.
        """
        top = {k: v for k, v in raw.items() if k not in _SECTIONS}
        unknown = set(top) - {"name", "seed"}
        if unknown:
            raise ConfigError(f"unknown scenario key(s) {sorted(unknown)}")
        parts: dict[str, Any] = {}
        for section, klass in _SECTIONS.items():
            values = raw.get(section, {})
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table")
            known = {f.name: f for f in fields(klass)}
            bad = set(values) - set(known)
            if bad:
                raise ConfigError(f"[{section}] unknown parameter(s) {sorted(bad)}")
            for name, value in values.items():
                _check_type(section, name, value, known[name].type)
            clean = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            try:
                parts[section] = klass(**clean)
            except TypeError as exc:
                raise ConfigError(f"[{section}] {exc}") from None
        seed = top.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        return cls(name=str(top.get("name", default_name)), seed=seed, **parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists), e.g. to record which scenario produced a data set."""

        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, tuple) else v

        out: dict[str, Any] = {"name": self.name, "seed": self.seed}
        for section in _SECTIONS:
            out[section] = {k: plain(v) for k, v in dataclasses.asdict(getattr(self, section)).items()}
        return out

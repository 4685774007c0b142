"""Runtime settings changed live from the module twin, and reported back.

The cloud sets the gateway module twin's desired property ``settings``::

    "settings": {"log_level": "debug", "raise_at": 0.7, "bandwidth_bytes_s": 20000}

Each key is one of :data:`LIVE` (the settings that are safe to change while the gateway runs;
everything else - broker, data folder, buffer cap, durability, hub - needs a redeploy). A key
that is absent or ``null`` goes back to the deployed value (``GONDOLA_*`` / options). The
gateway reports what it runs with in the reported property ``settings``::

    "settings": {"applied": {...every live setting's effective value...},
                 "rejected": {"buffer_max_bytes": "not a live setting (redeploy)"},
                 "desired_version": 7}

so the cloud sees both the effect and the refusals. A bad value is rejected alone; the other
keys still apply.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from gondola.errors import ConfigError, GondolaError

__all__ = ["LiveSettings", "LIVE", "DESIRED_KEY"]

log = logging.getLogger("edge.gateway")

DESIRED_KEY = "settings"


def _float_in(lo: float, hi: float):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"must be a number in [{lo}, {hi}]")
        return float(v)
    return check


def _int_in(lo: int, hi: int):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or not lo <= v <= hi:
            raise ValueError(f"must be an integer in [{lo}, {hi}]")
        return int(v)
    return check


def _level(v):
    from edge.logs import parse_level

    try:
        parse_level(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return str(v).lower()


#: setting -> validator (value -> normalised value, ValueError when bad)
LIVE: dict[str, Callable] = {
    "log_level": _level,
    "raise_at": _float_in(0.0, 1.0),
    "clear_at": _float_in(0.0, 1.0),
    "min_dwell_min": _int_in(0, 24 * 60),
    "cycle_s": _float_in(1.0, 3600.0),
    "health_every_s": _float_in(10.0, 86_400.0),
    "gap_grace_s": _float_in(0.0, 86_400.0),
    "bandwidth_bytes_s": _int_in(0, 10**9),
    "live_share": _float_in(0.0, 0.95),
    "round_rows": _int_in(1, 100_000),
}


class LiveSettings:
    """Applies the twin's desired ``settings`` to a running gateway (``on_desired`` is the
    transport callback) and reports the result."""

    def __init__(self, gw, report: Callable[[dict], object] | None = None):
        self.gw = gw
        self.report = report
        s = gw.settings
        #: the deployed values: what an absent or null key means
        self.deployed = {name: getattr(s, name) for name in LIVE}
        self.deployed["log_level"] = str(getattr(s, "log_level", "info")).lower()
        self.applied = dict(self.deployed)
        self.rejected: dict[str, str] = {}
        self._twin_level = False
        self._lock = threading.Lock()

    def on_desired(self, desired: dict) -> None:
        """Transport callback with the whole desired properties."""
        wanted = desired.get(DESIRED_KEY) or {}
        if not isinstance(wanted, dict):
            log.warning("twin desired %r ignored: not an object", DESIRED_KEY)
            wanted = {}
        with self._lock:
            self.apply(wanted, version=desired.get("$version"))

    def apply(self, wanted: dict, *, version=None) -> dict:
        """Validate ``wanted`` over the deployed values, apply the result, report it; return the
        reported ``settings`` object."""
        effective, rejected = dict(self.deployed), {}
        for key, value in wanted.items():
            if key.startswith("$"):
                continue
            if key not in LIVE:
                rejected[key] = "not a live setting (redeploy)"
                continue
            if value is None:
                continue
            try:
                effective[key] = LIVE[key](value)
            except ValueError as exc:
                rejected[key] = str(exc)
        raise_at = effective["raise_at"]
        if raise_at is not None and not effective["clear_at"] < raise_at:
            rejected["clear_at"] = f"must be below raise_at ({raise_at})"
            effective["clear_at"] = self.deployed["clear_at"] if self.deployed["clear_at"] < raise_at else raise_at / 2
        changed = {k: v for k, v in effective.items() if v != self.applied.get(k)}
        self._set(effective)
        self.applied, self.rejected = effective, rejected
        if changed:
            log.info("live settings changed from the twin: %s",
                     ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
        for key, why in sorted(rejected.items()):
            log.warning("twin setting %s refused: %s", key, why)
        status = {"applied": dict(effective), "rejected": dict(rejected), "desired_version": version}
        if self.report is not None:
            try:
                self.report({DESIRED_KEY: status})
            except GondolaError as exc:
                log.info("settings report deferred: %s", exc)
        return status

    def _set(self, v: dict) -> None:
        from edge.logs import set_level
        from edge.uplink import TokenBucket

        gw = self.gw
        s = gw.settings
        # The process's log level is touched only when the twin asks for one (or stops asking):
        # a gateway embedded in another process (the demo, tests) keeps that process's level.
        if v["log_level"] != self.applied.get("log_level") or self._twin_level:
            set_level(v["log_level"])
        self._twin_level = v["log_level"] != self.deployed["log_level"]
        for name in ("cycle_s", "health_every_s", "gap_grace_s", "min_dwell_min", "bandwidth_bytes_s",
                     "live_share", "round_rows", "raise_at", "clear_at"):
            setattr(s, name, v[name])
        inf = gw.inference
        inf.min_dwell_ms = v["min_dwell_min"] * 60_000
        inf._clear_setting = v["clear_at"]
        if v["raise_at"] is not None:
            inf.raise_at, inf.clear_at = v["raise_at"], v["clear_at"]
        else:
            # Follow the model's operating threshold again (the model manager keeps it current).
            threshold = getattr(inf.scorer, "threshold", None) or getattr(gw.models, "default_raise_at", 0.6)
            inf.raise_at, inf.clear_at = threshold, min(v["clear_at"], threshold / 2)
        if gw.models is not None:
            gw.models.follow_threshold = v["raise_at"] is None
        up = gw.uplink
        up.live_share, up.round_rows = v["live_share"], v["round_rows"]
        rate = v["bandwidth_bytes_s"]
        if not rate:
            up.bucket = None
        elif up.bucket is None or up.bucket.rate != rate:
            up.bucket = TokenBucket(rate)

"""Fault injection on the devices' message stream; every fault is counted for ground truth.

Message-level faults act on a day's message table (numpy columns, one row per message a
device produced): ``drop`` (lost before the broker: a seq gap), ``duplicate`` (a second copy,
same bytes), ``reorder`` (sent just after the device's next message), ``late`` (held back
minutes to an hour), ``malformed`` (payload corrupted: truncated JSON, wrong type, unknown
SKU, absurd value; the event's seq is used up). ``clock_skew`` shifts a device's ``ts`` for a
day. Window faults: ``reboot`` (a device produces nothing for a while; its seq continues),
``outage`` (store network down, minutes to days) and ``power_loss`` (gateway off): during both,
shelf sensors lose their readings and POS terminals and handhelds buffer theirs and send them
when the window ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from firmware_sim.scenario import FaultParams

__all__ = ["MALFORMED_KINDS", "MESSAGE_FAULTS", "Window", "Anomalies", "plan_device_faults", "plan_store_windows",
           "plan_anomalies", "apply_faults"]

#: Message-level fault kinds -> bit in a message's ``fault`` mask. ``apply_faults`` marks the
#: messages; the store counts a fault into ground truth when its message is released, so
#: ``truth.faults`` always matches what devices have sent so far (a day is planned whole, but
#: its messages go out over the day).
MESSAGE_FAULTS: dict[str, int] = {
    "drop": 1, "late": 2, "reorder": 4, "malformed": 8, "duplicate": 16,
    "outage_dropped": 32, "outage_delayed": 64, "power_loss_dropped": 128, "power_loss_delayed": 256,
    "clock_skew": 512, "pos_outage_delayed": 1024,
}

MALFORMED_KINDS = ("truncated", "wrong_type", "unknown_sku", "absurd_value")


@dataclass(frozen=True)
class Window:
    """A time window of a window fault: ``target`` is a device index, or -1 for the store."""

    kind: str
    target: int
    start_ms: int
    end_ms: int


def plan_device_faults(
    rng: np.random.Generator, day_start_ms: int, n_devices: int, reboot_ok: np.ndarray, params: FaultParams
) -> tuple[list[Window], np.ndarray]:
    """Reboot windows and clock-skew offsets (ms, 0 = none) of each device for one day."""
    reboots = []
    if params.reboots > 0:
        hit = (rng.random(n_devices) < params.reboots) & reboot_ok
        for dev in np.flatnonzero(hit):
            start = day_start_ms + int(rng.integers(0, DAY_MS))
            length = int(rng.uniform(params.reboot_min_s, params.reboot_max_s) * 1000)
            reboots.append(Window("reboot", int(dev), start, min(start + length, day_start_ms + DAY_MS)))
    skew = np.zeros(n_devices, dtype=np.int64)
    if params.clock_skew > 0:
        hit = rng.random(n_devices) < params.clock_skew
        size = rng.uniform(5.0, params.skew_max_s, n_devices) * 1000 * rng.choice([-1, 1], n_devices)
        skew[hit] = size[hit].astype(np.int64)
    return reboots, skew


def plan_store_windows(rng: np.random.Generator, day_start_ms: int, params: FaultParams) -> list[Window]:
    """Network outages and gateway power losses starting this day (log-uniform lengths)."""
    out = []
    for kind, p, lo, hi in (
        ("outage", params.outages, params.outage_min_min, params.outage_max_min),
        ("power_loss", params.power_losses, params.power_loss_min_min, params.power_loss_max_min),
    ):
        if p > 0 and rng.random() < p:
            start = day_start_ms + int(rng.integers(0, DAY_MS))
            minutes = math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo))))
            out.append(Window(kind, -1, start, start + int(minutes * MINUTE_MS)))
    return out


@dataclass
class Anomalies:
    """One day's anomaly faults (``FaultParams.sensor_drifts`` and after; docs/stream.md).

    ``windows`` are ``till_down`` (target: register index), ``sensor_fleet`` and ``pos_outage``
    (store-wide, target -1) and ``sensor_drift`` (target: sensor index, its rate in ``drift``);
    ``spike`` is ``(sku index, lift)`` or None.
    """

    windows: list[Window]
    drift: dict[int, float]
    spike: tuple[int, float] | None


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo)))) * MINUTE_MS)


def plan_anomalies(rng: np.random.Generator, day_start_ms: int, open_ms: tuple[int, int], registers: int,
                   sensors: int, sku_rates: np.ndarray, params: FaultParams) -> Anomalies:
    """Draw one day's anomaly faults. Store-level ones start within opening hours ``open_ms``
    (offsets from midnight), where they matter; a drift starts at any time of the day."""
    p = params
    out = Anomalies([], {}, None)

    def in_hours(length: int) -> tuple[int, int]:
        start = day_start_ms + int(rng.uniform(open_ms[0], max(open_ms[0] + 1, open_ms[1] - HOUR_MS)))
        return start, min(start + length, day_start_ms + DAY_MS)

    if p.till_failures > 0 and registers > 1:
        for reg in np.flatnonzero(rng.random(registers) < p.till_failures):
            start, end = in_hours(_log_uniform(rng, p.till_failure_min_min, p.till_failure_max_min))
            out.windows.append(Window("till_down", int(reg), start, end))
    if p.sensor_fleet_failures > 0 and sensors and rng.random() < p.sensor_fleet_failures:
        start, end = in_hours(_log_uniform(rng, p.fleet_failure_min_min, p.fleet_failure_max_min))
        out.windows.append(Window("sensor_fleet", -1, start, end))
    if p.pos_outages > 0 and rng.random() < p.pos_outages:
        start, end = in_hours(_log_uniform(rng, p.pos_outage_min_min, p.pos_outage_max_min))
        out.windows.append(Window("pos_outage", -1, start, end))
    if p.sensor_drifts > 0 and sensors:
        for j in np.flatnonzero(rng.random(sensors) < p.sensor_drifts):
            start = day_start_ms + int(rng.integers(0, DAY_MS))
            end = min(start + _log_uniform(rng, p.drift_min_min, p.drift_max_min), day_start_ms + DAY_MS)
            out.windows.append(Window("sensor_drift", int(j), start, end))
            out.drift[int(j)] = float(rng.uniform(*p.drift_units_per_hour) * rng.choice([-1.0, 1.0]))
    if p.demand_spikes > 0 and rng.random() < p.demand_spikes:
        # A product that sells at least a unit a day, so the jump is in what the till sees.
        pool = np.flatnonzero(sku_rates >= 1.0)
        if len(pool):
            out.spike = (int(rng.choice(pool)), float(rng.uniform(*p.spike_lift)))
    return out


def apply_faults(
    rng: np.random.Generator,
    msgs: dict[str, np.ndarray],
    buffering: np.ndarray,
    windows: list[Window],
    params: FaultParams,
    pos_devices: int = 0,
) -> dict[str, np.ndarray]:
    """Apply message-level and store-window faults to one day's messages; mark them.

    ``msgs`` has ``dev``, ``seq``, ``ts`` (true), sorted by (dev, seq); ``buffering[dev]`` says
    whether a device keeps unsent messages (POS, handheld) or loses them (sensors); devices
    ``0..pos_devices-1`` are the POS terminals (a ``pos_outage`` window holds theirs). Returns the
    table with ``sent_at``, ``dropped``, ``malformed`` and ``fault`` (a ``MESSAGE_FAULTS`` mask) set
    and duplicate copies appended (``copy`` = 1).
    """
    n = len(msgs["dev"])
    sent = msgs["ts"].copy()
    dropped = np.zeros(n, dtype=bool)
    held = np.zeros(n, dtype=bool)  # moved by a fault already; not also reordered
    fault = np.zeros(n, dtype=np.int64)
    # Store windows first: they are what the network did, the rest is per message.
    for w in windows:
        if w.kind == "pos_outage":
            # The POS system stores and forwards: its lines go out when it is back.
            idx = np.flatnonzero((sent >= w.start_ms) & (sent < w.end_ms) & ~dropped & ~held
                                 & (msgs["dev"] < pos_devices))
            sent[idx] = w.end_ms + np.argsort(np.argsort(sent[idx], kind="stable"), kind="stable") * 5
            held[idx] = True
            fault[idx] |= MESSAGE_FAULTS["pos_outage_delayed"]
            continue
        if w.kind not in ("outage", "power_loss"):
            continue
        inside = (sent >= w.start_ms) & (sent < w.end_ms) & ~dropped
        lose = inside & ~buffering[msgs["dev"]]
        keep = inside & buffering[msgs["dev"]]
        dropped |= lose
        idx = np.flatnonzero(keep)
        sent[idx] = w.end_ms + np.argsort(np.argsort(sent[idx], kind="stable"), kind="stable") * 5
        held |= keep
        fault[lose] |= MESSAGE_FAULTS[f"{w.kind}_dropped"]
        fault[idx] |= MESSAGE_FAULTS[f"{w.kind}_delayed"]
    alive = ~dropped
    if params.drops > 0:
        hit = alive & (rng.random(n) < params.drops)
        dropped |= hit
        fault[hit] |= MESSAGE_FAULTS["drop"]
    alive = ~dropped
    if params.late > 0:
        hit = alive & ~held & (rng.random(n) < params.late)
        sent[hit] += (rng.uniform(params.late_min_s, params.late_max_s, int(hit.sum())) * 1000).astype(np.int64)
        held |= hit
        fault[hit] |= MESSAGE_FAULTS["late"]
    if params.reorders > 0 and n > 1:
        dev = msgs["dev"]
        same_next = np.r_[dev[1:] == dev[:-1], False]
        ok = alive & ~held & same_next & np.r_[alive[1:] & ~held[1:], False]
        pick = ok & (rng.random(n) < params.reorders)
        # No chains: a picked message's neighbours are not picked, so each pick is one swap.
        pick &= ~np.r_[False, pick[:-1]]
        pick &= ~np.r_[pick[1:], False]
        idx = np.flatnonzero(pick)
        sent[idx] = sent[idx + 1] + 1
        fault[idx] |= MESSAGE_FAULTS["reorder"]
    malformed = np.zeros(n, dtype=np.int64)
    if params.malformed > 0:
        hit = alive & (rng.random(n) < params.malformed)
        malformed[hit] = 1 + rng.integers(0, len(MALFORMED_KINDS), int(hit.sum()))
        fault[hit] |= MESSAGE_FAULTS["malformed"]
    out = dict(msgs)
    out.update(sent_at=sent, dropped=dropped, malformed=malformed, copy=np.zeros(n, dtype=np.int64), fault=fault)
    if params.duplicates > 0:
        dup = np.flatnonzero(alive & (rng.random(n) < params.duplicates))
        if len(dup):
            extra = {k: v[dup] for k, v in out.items()}
            extra["fault"] = extra["fault"] | MESSAGE_FAULTS["duplicate"]
            extra["sent_at"] = extra["sent_at"] + rng.integers(100, 5_000, len(dup))
            extra["copy"] = np.ones(len(dup), dtype=np.int64)
            out = {k: np.r_[out[k], extra[k]] for k in out}
    return out

"""Devices turn the store's true state into the events they would send, as numpy columns.

- **POS terminals**: shoppers' baskets across registers; lines with quantity and price, some
  voided scans, a few returns, loyalty ids on a share of baskets.
- **Shelf sensors** (load cells on a share of facings): report on change, plus a heartbeat;
  readings carry noise, slow drift, occasional stuck values, battery drain and radio signal.
- **Handhelds**: staff restock scans, delivery receipts and gap scans (empty facings found on a
  gap-scan round).

Each builder returns a table as ``dict[column -> array]`` with at least ``dev`` (device index
in the store's device list) and ``ts`` (true epoch ms). The store turns them into events.
"""

from __future__ import annotations

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from firmware_sim.catalog import Planogram
from firmware_sim.scenario import DemandParams, DeviceParams

__all__ = ["ETYPES", "POS", "SHELF", "RESTOCK", "DELIVERY", "GAP_SCAN", "KIND_NAMES", "pos_lines", "shelf_readings",
           "restock_scans", "delivery_scans", "gap_scans", "SensorState"]

ETYPES = ("pos.line", "shelf.reading", "shelf.restock", "inventory.delivery", "shelf.gap_scan")
POS, SHELF, RESTOCK, DELIVERY, GAP_SCAN = range(5)
#: pos.line ``kind`` codes.
KIND_NAMES = ("sale", "void", "return")

Table = dict[str, np.ndarray]


def _empty(*names: str) -> Table:
    return {n: np.zeros(0, dtype=np.int64) for n in names}


def _lanes_up(register: np.ndarray, ts: np.ndarray, register_down: list[tuple[int, int, int]],
              registers: int) -> tuple[np.ndarray, np.ndarray]:
    """Each shopper's lane and whether no lane could take them. Shoppers queue at the next lane
    that is up while a terminal reboots or is broken (a lane down at the same time is passed
    over); with every lane down the store still sells and no till reports it (a POS outage:
    the units are in the truth, not in any lane's events)."""
    down = np.zeros((registers, len(ts)), dtype=bool)
    for reg, start, end in register_down:
        down[reg] |= (ts >= start) & (ts < end)
    at = np.arange(len(ts))
    for _ in range(registers - 1):
        at_down = down[register, at]
        if not at_down.any():
            break
        register = np.where(at_down, (register + 1) % registers, register)
    return register, down[register, at]


def pos_lines(
    rng: np.random.Generator,
    sold: np.ndarray,
    day_start_ms: int,
    step_ms: int,
    price_cents: np.ndarray,
    plan: Planogram,
    registers: int,
    register_down: list[tuple[int, int, int]],
    params: DemandParams,
    open_steps: np.ndarray,
) -> Table:
    """POS lines for one day from units sold per (step, facing).

    Each sold cell becomes one line; lines of a step are spread over that step's shoppers
    (``basket_mean_lines`` lines each on average); each shopper pays at one register that is
    up. A share of lines carries a scanned-then-voided extra pair; a few returns are added.
    ``register_down`` holds (register index, start ms, end ms) of rebooting terminals.
    """
    steps, facings = np.nonzero(sold)
    qty = sold[steps, facings].astype(np.int64)
    n = len(steps)
    cols = ("dev", "ts", "txn", "line", "sku", "qty", "price_cents", "kind", "loyalty")
    if n == 0 and params.returns_per_day <= 0:
        return _empty(*cols)
    # Shoppers per step, and each line's shopper.
    per_step = np.bincount(steps, minlength=sold.shape[0])
    baskets = np.maximum(np.ceil(per_step / params.basket_mean_lines), 1).astype(np.int64) * (per_step > 0)
    first_basket = np.r_[0, np.cumsum(baskets)[:-1]]
    basket = first_basket[steps] + (rng.random(n) * baskets[steps]).astype(np.int64)
    nb = int(baskets.sum())
    basket_step = np.repeat(np.arange(len(baskets)), baskets)
    basket_ts = day_start_ms + basket_step * step_ms + (rng.random(nb) * (step_ms - 90_000)).astype(np.int64)
    register = rng.integers(0, registers, nb)
    if register_down:
        register, unreported = _lanes_up(register, basket_ts, register_down, registers)
        if unreported.any():
            keep = ~unreported[basket]
            steps, facings, qty, basket = steps[keep], facings[keep], qty[keep], basket[keep]
            n = len(steps)
    loyalty = np.where(rng.random(nb) < params.loyalty_share, rng.integers(0, params.loyalty_members, nb), -1)
    order = np.lexsort((rng.random(n), basket))
    steps, facings, qty, basket = steps[order], facings[order], qty[order], basket[order]
    basket_first_line = np.searchsorted(basket, basket)
    line = np.arange(n) - basket_first_line + 1
    lines_in_basket = np.bincount(basket, minlength=nb)
    sku = plan.sku_index[facings]
    kind = np.zeros(n, dtype=np.int64)
    # Voided scans: the cashier scans an extra unit and voids it; the net sale is unchanged.
    v = np.flatnonzero(rng.random(n) < params.void_rate)
    v_basket = basket[v]
    v_rank = np.arange(len(v)) - np.searchsorted(v_basket, v_basket)
    v_line = lines_in_basket[v_basket] + 2 * v_rank + 1
    extra_basket = np.r_[v_basket, v_basket]
    extra_line = np.r_[v_line, v_line + 1]
    extra_sku = np.r_[sku[v], sku[v]]
    extra_qty = np.r_[qty[v], -qty[v]]
    extra_kind = np.r_[np.zeros(len(v), np.int64), np.ones(len(v), np.int64)]
    basket = np.r_[basket, extra_basket]
    line = np.r_[line, extra_line]
    sku = np.r_[sku, extra_sku]
    qty = np.r_[qty, extra_qty]
    kind = np.r_[kind, extra_kind]
    ts = basket_ts[basket] + line * 2_500
    reg = register[basket]
    loy = loyalty[basket]
    txn = basket.copy()  # numbered per register by the store
    # Returns: a separate one-line transaction, refunding one unit of a product.
    n_ret = int(rng.poisson(params.returns_per_day)) if len(open_steps) else 0
    if n_ret:
        r_step = rng.choice(open_steps, n_ret)
        r_ts = day_start_ms + r_step * step_ms + (rng.random(n_ret) * (step_ms - 90_000)).astype(np.int64)
        r_reg = rng.integers(0, registers, n_ret)
        r_sku = rng.integers(0, len(plan.rate), n_ret)
        if register_down:  # a refund too goes to a lane that is up, or no till records it
            r_reg, gone = _lanes_up(r_reg, r_ts, register_down, registers)
            r_ts, r_reg, r_sku, n_ret = r_ts[~gone], r_reg[~gone], r_sku[~gone], int((~gone).sum())
        ts = np.r_[ts, r_ts]
        reg = np.r_[reg, r_reg]
        txn = np.r_[txn, nb + np.arange(n_ret)]
        line = np.r_[line, np.ones(n_ret, np.int64)]
        sku = np.r_[sku, r_sku]
        qty = np.r_[qty, -np.ones(n_ret, np.int64)]
        kind = np.r_[kind, np.full(n_ret, 2, np.int64)]
        loy = np.r_[loy, np.full(n_ret, -1, np.int64)]
    return {
        "dev": reg.astype(np.int64),
        "ts": ts.astype(np.int64),
        "txn": txn.astype(np.int64),
        "line": line.astype(np.int64),
        "sku": sku.astype(np.int64),
        "qty": qty.astype(np.int64),
        "price_cents": price_cents[sku].astype(np.int64),
        "kind": kind,
        "loyalty": loy.astype(np.int64),
    }


class SensorState:
    """Per-sensor constants and slow state: battery, drift, radio, last reported units."""

    def __init__(self, rng: np.random.Generator, n: int, start_ms: int):
        self.start_ms = start_ms
        self.battery0 = rng.uniform(55.0, 100.0, n)
        self.drift = rng.normal(0.0, 1.0, n)  # multiplied by drift_g_per_day
        self.rssi = np.clip(rng.normal(-68.0, 8.0, n), -105, -35)
        self.phase = rng.integers(0, 1_000_000, n)
        self.readings = np.zeros(n, dtype=np.int64)
        self._heartbeat: tuple[int, int, np.ndarray] | None = None

    def heartbeat(self, steps: int, every: int) -> np.ndarray:
        """(steps, sensors) mask of heartbeat steps; the same every day, so built once."""
        if self._heartbeat is None or self._heartbeat[:2] != (steps, every):
            mask = (np.arange(steps)[:, None] + self.phase[None, :]) % every == 0
            self._heartbeat = (steps, every, mask)
        return self._heartbeat[2]


def shelf_readings(
    rng: np.random.Generator,
    units: np.ndarray,
    prev_units: np.ndarray,
    day_start_ms: int,
    step_ms: int,
    sensor_facings: np.ndarray,
    first_sensor_dev: int,
    unit_weight: np.ndarray,  # per facing
    state: SensorState,
    params: DeviceParams,
    down: list[tuple[int, int, int]],
    drifting: list[tuple[int, int, int, float]] = (),
) -> tuple[Table, list[tuple[int, int, int]]]:
    """Readings of all sensors for one day from true units per (step, facing) at step ends.

    A sensor reports when its value changed since the previous step, and on a heartbeat every
    ``heartbeat_min``. Returns the table and the stuck windows (sensor, start ms, end ms).
    ``down`` holds (sensor index, start ms, end ms) of rebooting sensors: no readings then.
    ``drifting`` holds (sensor index, start ms, end ms, units per hour) of drifting load cells:
    their weight runs away from the truth at that rate, and they report every step while it
    does (the value changes); after the window the cell is recalibrated.
    """
    cols = ("dev", "ts", "facing", "weight_g", "units_est", "battery_pct", "rssi_dbm")
    if len(sensor_facings) == 0:
        return _empty(*cols), []
    u = units[:, sensor_facings]
    prev = np.vstack([prev_units[sensor_facings][None, :], u[:-1]])
    steps = u.shape[0]
    heartbeat = state.heartbeat(steps, max(params.heartbeat_min * MINUTE_MS // step_ms, 1))
    # Stuck windows: the load cell repeats one value; only heartbeats carry it.
    n_s = len(sensor_facings)
    stuck = rng.random(n_s) < params.stuck_prob
    stuck_windows = []
    stuck_mask = np.zeros_like(heartbeat)
    stuck_units = np.zeros(n_s, dtype=np.int64)
    for j in np.flatnonzero(stuck):
        s0 = int(rng.integers(0, steps))
        length = int(rng.uniform(*params.stuck_hours) * HOUR_MS // step_ms)
        s1 = min(s0 + max(length, 1), steps)
        stuck_mask[s0:s1, j] = True
        stuck_units[j] = u[s0, j]
        stuck_windows.append((int(j), day_start_ms + s0 * step_ms, day_start_ms + s1 * step_ms))
    report = ((u != prev) & ~stuck_mask) | heartbeat
    for j, start, end, _rate in drifting:
        s0, s1 = max((start - day_start_ms) // step_ms, 0), min(-(-(end - day_start_ms) // step_ms), steps)
        report[s0:s1, j] = True
    for j, start, end in down:
        s0 = max((start - day_start_ms) // step_ms, 0)
        s1 = min(-(-(end - day_start_ms) // step_ms), steps)
        report[s0:s1, j] = False
    rs, rj = np.nonzero(report)
    n = len(rs)
    ts = day_start_ms + (rs + 1) * step_ms - 1_000 - (rng.random(n) * 20_000).astype(np.int64)
    facing = sensor_facings[rj]
    uw = unit_weight[facing]
    shown = np.where(stuck_mask[rs, rj], stuck_units[rj], u[rs, rj])
    days = (ts - state.start_ms) / DAY_MS
    weight = shown * uw + state.drift[rj] * params.drift_g_per_day * days
    weight = weight + rng.normal(0.0, 1.0, n) * params.noise_unit_frac * uw
    for j, start, end, rate in drifting:
        hit = (rj == j) & (ts >= start) & (ts < end)
        weight = np.where(hit, weight + rate * (ts - start) / HOUR_MS * uw, weight)
    weight = np.round(np.maximum(weight, -999.0), 1)
    units_est = np.rint(np.maximum(weight, 0.0) / uw).astype(np.int64)
    state.readings += np.bincount(rj, minlength=n_s)
    battery = state.battery0[rj] - params.battery_drain_pct_per_day * days
    battery = np.round(np.clip(battery, 0.0, 100.0), 1)
    rssi = np.clip(np.rint(state.rssi[rj] + rng.normal(0, 3.0, n)), -120, -20).astype(np.int64)
    return {
        "dev": first_sensor_dev + rj.astype(np.int64),
        "ts": ts.astype(np.int64),
        "facing": facing.astype(np.int64),
        "weight_g": weight,
        "units_est": units_est,
        "battery_pct": battery,
        "rssi_dbm": rssi,
    }, stuck_windows


def restock_scans(
    round_step: int, added: np.ndarray, day_start_ms: int, step_ms: int, handheld_dev: int, staff: int
) -> Table:
    """One staff round's scans: one event per refilled facing, walking the aisles in order."""
    facings = np.flatnonzero(added > 0)
    n = len(facings)
    spacing = max((step_ms - 60_000) // max(n, 1), 1)
    ts = day_start_ms + round_step * step_ms + 1_000 + np.arange(n) * spacing
    return {
        "dev": np.full(n, handheld_dev, np.int64),
        "ts": ts.astype(np.int64),
        "facing": facings.astype(np.int64),
        "units_added": added[facings].astype(np.int64),
        "staff": np.full(n, staff, np.int64),
    }


def gap_scans(rng: np.random.Generator, empty: np.ndarray, round_ms: int, step_ms: int, handheld_dev: int,
              staff: int, round_no: int, miss_prob: float) -> Table:
    """One gap-scan round: a scan per facing found empty (``empty``: bool per facing, empty for the
    whole step the round walks in), each missed with ``miss_prob``, in aisle order."""
    facings = np.flatnonzero(empty & (rng.random(len(empty)) >= miss_prob))
    n = len(facings)
    spacing = max((step_ms - 60_000) // max(n, 1), 1)
    return {
        "dev": np.full(n, handheld_dev, np.int64),
        "ts": (round_ms + 1_000 + np.arange(n) * spacing).astype(np.int64),
        "facing": facings.astype(np.int64),
        "staff": np.full(n, staff, np.int64),
        "round": np.full(n, round_no, np.int64),
    }


def delivery_scans(delivered: np.ndarray, arrival_ms: int, day_number: int, handheld_dev: int) -> Table:
    """Receiving scans of one delivery: one event per SKU line on the delivery note."""
    skus = np.flatnonzero(delivered > 0)
    n = len(skus)
    return {
        "dev": np.full(n, handheld_dev, np.int64),
        "ts": (arrival_ms + np.arange(n) * 4_000).astype(np.int64),
        "delivery": np.full(n, day_number, np.int64),
        "sku": skus.astype(np.int64),
        "units": delivered[skus].astype(np.int64),
    }

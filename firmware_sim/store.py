"""One simulated store: shelves, shoppers, staff, devices and faults, a day at a time.

``StoreSim`` simulates whole days with numpy (demand matrix per step and facing, sales
censored by shelf stock, restock rounds between segments) and keeps what devices produce in
a queue ordered by the time each message is sent. ``run_until(t)`` hands out the messages
sent up to ``t`` (live mode, the demo); ``history`` reads the same queue as columns and writes
files. A day's outcome depends only on (seed, store, scenario, day), never on how often
``run_until`` is called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from gondola.clock import DAY_MS, MINUTE_MS, ms_to_iso
from gondola.contracts import SCHEMA_VERSION, make_event
from gondola.errors import ConfigError
from gondola.topics import device_topic
from firmware_sim import devices as dv
from firmware_sim._rng import component_rng
from firmware_sim.catalog import Catalog, Planogram, build_catalog, build_planogram
from firmware_sim.demand import day_factor, draw_demand, intraday_profile, promo_mask
from firmware_sim.faults import (MALFORMED_KINDS, MESSAGE_FAULTS, Window, apply_faults, plan_anomalies,
                                  plan_device_faults, plan_store_windows)
from firmware_sim.replenishment import Backroom, hhmm_ms, plan_rounds, restock
from firmware_sim.scenario import Scenario
from firmware_sim.truth import GroundTruth, WindowRecord

__all__ = ["StoreSim", "DeviceMessage", "DEFAULT_START_MS"]

#: Monday 2026-01-05 00:00 UTC.
DEFAULT_START_MS = 1_767_571_200_000


@dataclass(frozen=True)
class DeviceMessage:
    """One MQTT message a device sends.

    ``ts`` is the event's device timestamp (skewed when the device clock is), ``sent_at`` the
    true instant the device hands it to the network. Malformed payloads have ``valid=False``;
    ``seq``/``etype`` are then the event they were meant to carry.
    """

    topic: str
    payload: bytes
    device_id: str
    seq: int | None
    etype: str | None
    ts: int
    valid: bool
    sent_at: int = 0


#: Compact JSON, the same bytes as ``json.dumps(event, separators=(",", ":"))``.
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode

#: Staff codes of gap-scan rounds start here (restock rounds use 1, 2, 3, ...).
_GAP_STAFF = 20
_MSG_COLS = ("day", "code", "row", "dev", "seq", "ts", "sent_at", "dropped", "malformed", "copy", "fault")


class StoreSim:
    """A simulated store with its devices; see the module docstring and ``docs/simulator.md``.

    Args:
        store_id: e.g. ``"s001"``.
        skus: catalog size (the chain's first ``skus`` products).
        seed: base seed; every random stream is derived from (seed, store, component, day).
        start_ms: epoch ms of a midnight UTC; the first simulated day starts there.
        scenario: model parameters and faults (default: realistic, no faults).
        sensor_share: share of facings with a load-cell sensor.
        track_keys: keep per-message identity sets in ``truth`` (off for big history runs).

    Raises:
        ConfigError: ``start_ms`` is not a midnight UTC, or sizes/shares are out of range.
    """

    #: days of the store system's stock record kept for ``stock_record`` (a month: the demo's longest run)
    STOCK_DAYS = 31

    def __init__(
        self,
        store_id: str = "s001",
        skus: int = 200,
        seed: int = 0,
        start_ms: int = DEFAULT_START_MS,
        scenario: Scenario | None = None,
        sensor_share: float = 0.5,
        *,
        catalog: Catalog | None = None,
        track_keys: bool = True,
    ):
        if start_ms % DAY_MS:
            raise ConfigError(f"start_ms {start_ms} ({ms_to_iso(start_ms)}) is not a midnight UTC")
        if not 0.0 <= sensor_share <= 1.0:
            raise ConfigError(f"sensor_share must be in [0, 1], got {sensor_share}")
        if skus < 2:
            raise ConfigError(f"a store needs at least 2 SKUs, got {skus}")
        self.store_id = store_id
        self.seed = int(seed)
        self.start_ms = int(start_ms)
        self.scenario = scenario or Scenario.default()
        sc = self.scenario
        self.catalog = catalog if catalog is not None and len(catalog) == skus else build_catalog(seed, skus, sc.demand)
        self.plan: Planogram = build_planogram(seed, store_id, self.catalog, sc.replenishment, sensor_share)
        self.step_ms = sc.devices.step_min * MINUTE_MS
        if DAY_MS % self.step_ms:
            raise ConfigError(f"step_min {sc.devices.step_min} does not divide a day")
        self._profile = intraday_profile(sc.demand, self.step_ms)
        self._open_steps = np.flatnonzero(self._profile > 0)
        # Devices: registers, one sensor per sensored facing, handhelds.
        n_reg = sc.demand.registers or max(2, min(12, 2 + skus // 400))
        self.sensor_facings = np.flatnonzero(self.plan.has_sensor)
        ids = [f"pos-{store_id}-r{j + 1:02d}" for j in range(n_reg)]
        ids += [f"shelf-{f}" for f in self.plan.facing_id[self.sensor_facings]]
        ids += [f"hh-{store_id}-{k + 1}" for k in range(max(sc.devices.handhelds, 1))]
        kinds = ["pos"] * n_reg + ["shelf"] * len(self.sensor_facings) + ["handheld"] * max(sc.devices.handhelds, 1)
        self.registers = n_reg
        self.device_ids = np.array(ids)
        self.device_kinds = np.array(kinds)
        self._first_sensor = n_reg
        self._first_handheld = n_reg + len(self.sensor_facings)
        self._topics = [device_topic(store_id, k, d) for k, d in zip(kinds, ids)]
        self._buffering = self.device_kinds != "shelf"
        self._reboot_ok = self.device_kinds != "handheld"
        # Per-facing helpers.
        n_fac = np.bincount(self.plan.sku_index, minlength=len(self.catalog))
        self._n_fac = n_fac
        first_facing = np.searchsorted(self.plan.sku_index, np.arange(len(self.catalog)))
        self._sub_facing = first_facing[self.catalog.substitute[self.plan.sku_index]]
        self._sku_ids = self.catalog.sku
        # Initial state.
        rng = component_rng(seed, store_id, "initial")
        self.shelf = np.floor(self.plan.capacity * rng.uniform(0.6, 1.0, len(self.plan))).astype(np.int64)
        self.backroom = Backroom.initial(rng, self.catalog, self.plan, self.shelf)
        self._sensors = dv.SensorState(rng, len(self.sensor_facings), start_ms)
        self._seq = np.zeros(len(ids), dtype=np.int64)
        #: device id -> epoch (run of its seq counter) for devices whose counter restarted before
        #: this store's run (a replaced sensor, a re-imaged till); the rest send none (epoch 0)
        self.epochs: dict[str, int] = {}
        self._txn = np.zeros(n_reg, dtype=np.int64)
        self._day = 0
        self._windows: list[Window] = []
        self._tables: dict[int, list[dict[str, np.ndarray]]] = {}
        #: day -> the store system's stock record of that day (``stock_record``), ``STOCK_DAYS`` kept
        self._stock: dict[int, dict[str, np.ndarray]] = {}
        self._rows_cache: dict[tuple[int, int], dict[str, list]] = {}
        self._names_cache: dict[str, list[str]] | None = None
        self._pending: dict[str, np.ndarray] = {c: np.zeros(0, bool if c == "dropped" else np.int64) for c in _MSG_COLS}
        self.now_ms = self.start_ms
        self.truth = GroundTruth(store_id, self.plan.facing_id, self._sku_ids[self.plan.sku_index], track_keys)
        self.truth.now_ms = self.start_ms
        for etype in dv.ETYPES:
            self.truth.emitted[etype] = set()
        # Whether this store's staff do gap-scan rounds (a store-level habit, fixed per seed).
        self._does_gap_scans = bool(sc.replenishment.gap_scan_times) and \
            component_rng(seed, store_id, "gapscan.store").random() < sc.replenishment.gap_scan_store_share
        # The store's forecast: true rate with a per-SKU bias.
        self._forecast = self.plan.rate * rng.lognormal(0.0, sc.replenishment.forecast_error_sigma, len(self.catalog))
        # Warm up: run the stock dynamics for some days before the start, silently, so day 0
        # already has the empty shelves, empty backrooms and phantom stock of a running store.
        warm = max(sc.replenishment.warmup_days, 0)
        self.backroom.order(component_rng(seed, store_id, "order", -warm - 1), -warm - 1, self._weekday(-warm - 1),
                            sc.replenishment, self.catalog, self.plan, self._forecast)
        for day in range(-warm, 0):
            self._simulate_day(day, emit=False)

    # ---- public ------------------------------------------------------------------------

    @property
    def planogram(self) -> list[dict]:
        """Facings: ``facing_id, sku, capacity, has_sensor`` (plus ``store_id``)."""
        p = self.plan
        return [
            {"store_id": self.store_id, "facing_id": str(p.facing_id[i]), "sku": str(self._sku_ids[p.sku_index[i]]),
             "capacity": int(p.capacity[i]), "has_sensor": bool(p.has_sensor[i])}
            for i in range(len(p))
        ]

    @property
    def products(self) -> list[dict]:
        """Products: ``sku, name, category, price_cents, unit_weight_g, pack_size``."""
        return self.catalog.rows()

    def sensor_device(self, facing_id: str) -> str | None:
        """Device id of the sensor on a facing, or None when the facing has none."""
        return f"shelf-{facing_id}" if facing_id in set(self.plan.facing_id[self.sensor_facings]) else None

    def run_until(self, t_ms: int) -> list["DeviceMessage"]:
        """Advance the store to ``t_ms``; return the messages devices sent since, in send order.

        Raises:
            ValueError: ``t_ms`` is before the last call's.
        """
        return self._messages(self.advance(t_ms))

    def advance(self, t_ms: int) -> dict[str, np.ndarray]:
        """Like ``run_until`` but returns the sent messages as columns (history mode's path).

        Raises:
            ValueError: ``t_ms`` is before the last call's.
        """
        if t_ms < self.now_ms:
            raise ValueError(f"run_until({t_ms}) is before the store's clock {self.now_ms}")
        while self.start_ms + self._day * DAY_MS <= t_ms:
            self._simulate_day(self._day)
            self._day += 1
        self.now_ms = int(t_ms)
        self.truth.now_ms = self.now_ms
        p = self._pending
        due = p["sent_at"] <= t_ms
        batch = {k: v[due] for k, v in p.items()}
        self._pending = {k: v[~due] for k, v in p.items()}
        order = np.lexsort((batch["copy"], batch["seq"], batch["dev"], batch["sent_at"]))
        batch = {k: v[order] for k, v in batch.items()}
        self._account(batch)
        sent = ~batch["dropped"]
        out = {k: v[sent] for k, v in batch.items()}
        self.truth.pending = int((~self._pending["dropped"]).sum())
        # Forget day tables no message refers to any more.
        live_days = set(np.unique(self._pending["day"]).tolist()) | set(np.unique(out["day"]).tolist())
        for d in [d for d in self._stock if d < self._day - self.STOCK_DAYS]:
            del self._stock[d]
        for d in [d for d in self._tables if d not in live_days and d < self._day - 1]:
            del self._tables[d]
            for code in range(len(dv.ETYPES)):
                self._rows_cache.pop((d, code), None)
        return out

    # ---- messages ------------------------------------------------------------------------

    def _account(self, batch: dict[str, np.ndarray]) -> None:
        t = self.truth
        # Message faults count when their message goes out: a copy counts as a duplicate, the
        # other kinds count once, on the original.
        fault, original = batch["fault"], batch["copy"] == 0
        for kind, bit in MESSAGE_FAULTS.items():
            hit = (fault & bit) != 0
            n = int((hit & ~original).sum()) if kind == "duplicate" else int((hit & original).sum())
            if n:
                t.count(kind, n)
        if not t.track_keys:
            return
        ids = self.device_ids
        for i in np.flatnonzero(batch["dropped"] & (batch["copy"] == 0)):
            t.dropped.add((str(ids[batch["dev"][i]]), int(batch["seq"][i])))
        live = ~batch["dropped"]
        for i in np.flatnonzero(live & (batch["malformed"] > 0) & (batch["copy"] == 0)):
            t.malformed.add((str(ids[batch["dev"][i]]), int(batch["seq"][i])))
        for code, etype in enumerate(dv.ETYPES):
            sel = np.flatnonzero(live & (batch["malformed"] == 0) & (batch["code"] == code))
            t.emitted[etype].update(zip(ids[batch["dev"][sel]].tolist(), batch["seq"][sel].tolist()))

    def event(self, batch: dict[str, np.ndarray], i: int) -> dict:
        """The contract event (``make_event``) of message ``i`` of a column batch."""
        day, code, row, dev = (int(batch[k][i]) for k in ("day", "code", "row", "dev"))
        device_id = self._names["device"][dev]
        return make_event(
            dv.ETYPES[code], store_id=self.store_id, device_id=device_id,
            seq=int(batch["seq"][i]), ts=int(batch["ts"][i]), data=self._data(code, day, row),
            epoch=self.epochs.get(device_id, 0),
        )

    @property
    def _names(self) -> dict[str, list[str]]:
        """Python lists of the id strings (indexing them is much faster than numpy scalars)."""
        names = self._names_cache
        if names is None:
            names = self._names_cache = {
                "device": self.device_ids.tolist(),
                "facing": self.plan.facing_id.tolist(),
                "sku": self._sku_ids.tolist(),
                "facing_sku": self._sku_ids[self.plan.sku_index].tolist(),
                "register": [f"r{j + 1:02d}" for j in range(self.registers)],
            }
        return names

    def _rows(self, day: int, code: int) -> dict[str, list]:
        """A day's event table of one type as Python lists, converted once."""
        key = (day, code)
        if key not in self._rows_cache:
            self._rows_cache[key] = {k: v.tolist() for k, v in self._tables[day][code].items()}
        return self._rows_cache[key]

    def _data(self, code: int, day: int, row: int) -> dict:
        tab = self._rows(day, code)
        names = self._names
        if code == dv.POS:
            reg = tab["dev"][row]
            abs_day = (self.start_ms + day * DAY_MS) // DAY_MS
            data = {
                "txn_id": f"{names['device'][reg]}-{abs_day}-{tab['txn'][row]}",
                "register": names["register"][reg],
                "line": tab["line"][row],
                "sku": names["sku"][tab["sku"][row]],
                "qty": tab["qty"][row],
                "price_cents": tab["price_cents"][row],
                "kind": dv.KIND_NAMES[tab["kind"][row]],
            }
            if tab["loyalty"][row] >= 0:
                data["loyalty_id"] = f"L{tab['loyalty'][row]:08d}"
            return data
        if code == dv.SHELF:
            f = tab["facing"][row]
            return {
                "facing_id": names["facing"][f],
                "sku": names["facing_sku"][f],
                "weight_g": tab["weight_g"][row],
                "units_est": tab["units_est"][row],
                "battery_pct": tab["battery_pct"][row],
                "rssi_dbm": tab["rssi_dbm"][row],
            }
        if code == dv.RESTOCK:
            f = tab["facing"][row]
            return {
                "facing_id": names["facing"][f],
                "sku": names["facing_sku"][f],
                "units_added": tab["units_added"][row],
                "staff_id": f"staff-{tab['staff'][row]:03d}",
            }
        abs_day = (self.start_ms + day * DAY_MS) // DAY_MS
        if code == dv.GAP_SCAN:
            f = tab["facing"][row]
            return {
                "facing_id": names["facing"][f],
                "sku": names["facing_sku"][f],
                "round_id": f"{self.store_id}-gap-{abs_day}-{tab['round'][row]}",
                "staff_id": f"staff-{tab['staff'][row]:03d}",
            }
        return {
            "delivery_id": f"{self.store_id}-dlv-{abs_day}",
            "sku": names["sku"][tab["sku"][row]],
            "units": tab["units"][row],
        }

    def payload(self, batch: dict[str, np.ndarray], i: int) -> bytes:
        """JSON bytes of message ``i``: the event, or its corrupted form when malformed."""
        event = self.event(batch, i)
        kind = int(batch["malformed"][i])
        if kind:
            return _corrupt(event, MALFORMED_KINDS[kind - 1], int(batch["seq"][i]))
        return json.dumps(event, separators=(",", ":")).encode()

    def _messages(self, batch: dict[str, np.ndarray]) -> list[DeviceMessage]:
        """DeviceMessages of a sent batch, in its order."""
        cols = {k: batch[k].tolist() for k in ("day", "code", "row", "dev", "seq", "ts", "sent_at", "malformed")}
        devices, topics, etypes = self._names["device"], self._topics, dv.ETYPES
        store_id = self.store_id
        out = []
        for day, code, row, dev, seq, ts, sent_at, bad in zip(*cols.values()):
            device_id = devices[dev]
            if bad:
                event = {"event_id": f"{device_id}:{seq}", "type": etypes[code], "schema": SCHEMA_VERSION,
                         "store_id": store_id, "device_id": device_id, "seq": seq, "ts": ts,
                         "data": self._data(code, day, row)}
                if self.epochs.get(device_id):
                    event["epoch"] = self.epochs[device_id]
                payload = _corrupt(event, MALFORMED_KINDS[bad - 1], seq)
            else:
                payload = self._encode(code, day, row, device_id, seq, ts)
            out.append(DeviceMessage(topics[dev], payload, device_id, seq, etypes[code], ts, not bad, sent_at))
        return out

    def _encode(self, code: int, day: int, row: int, device_id: str, seq: int, ts: int) -> bytes:
        """The event's JSON bytes (``_encode_epoch0``), with the device's ``epoch`` when it has one."""
        epoch = self.epochs.get(device_id, 0) if self.epochs else 0
        if not epoch:
            return self._encode_epoch0(code, day, row, device_id, seq, ts)
        raw = self._encode_epoch0(code, day, row, device_id, seq, ts)
        raw = raw.replace(f'"event_id":"{device_id}:{seq}"'.encode(), f'"event_id":"{device_id}:{epoch}:{seq}"'.encode(), 1)
        return raw[:-1] + b',"epoch":%d}' % epoch

    def _encode_epoch0(self, code: int, day: int, row: int, device_id: str, seq: int, ts: int) -> bytes:
        """The event's JSON bytes, written directly.

        Byte-for-byte what ``json.dumps(event, separators=(",", ":"))`` gives for the
        ``make_event`` dict (a test checks it on every message of a store-day): every string
        here is an id we generate (ASCII, no quotes or backslashes) and JSON writes ints and
        floats with Python's ``repr``. Three times faster than the encoder, which matters for
        live-mode throughput.
        """
        head = (f'{{"event_id":"{device_id}:{seq}","type":"{dv.ETYPES[code]}","schema":{SCHEMA_VERSION},'
                f'"store_id":"{self.store_id}","device_id":"{device_id}","seq":{seq},"ts":{ts},"data":')
        tab = self._rows(day, code)
        names = self._names
        if code == dv.SHELF:
            f = tab["facing"][row]
            body = (f'{{"facing_id":"{names["facing"][f]}","sku":"{names["facing_sku"][f]}",'
                    f'"weight_g":{tab["weight_g"][row]!r},"units_est":{tab["units_est"][row]},'
                    f'"battery_pct":{tab["battery_pct"][row]!r},"rssi_dbm":{tab["rssi_dbm"][row]}}}}}')
            return (head + body).encode()
        if code == dv.POS:
            reg = tab["dev"][row]
            abs_day = (self.start_ms + day * DAY_MS) // DAY_MS
            loyalty = tab["loyalty"][row]
            body = (f'{{"txn_id":"{names["device"][reg]}-{abs_day}-{tab["txn"][row]}",'
                    f'"register":"{names["register"][reg]}","line":{tab["line"][row]},'
                    f'"sku":"{names["sku"][tab["sku"][row]]}","qty":{tab["qty"][row]},'
                    f'"price_cents":{tab["price_cents"][row]},"kind":"{dv.KIND_NAMES[tab["kind"][row]]}"'
                    + (f',"loyalty_id":"L{loyalty:08d}"}}}}' if loyalty >= 0 else "}}"))
            return (head + body).encode()
        return (head + _DUMPS(self._data(code, day, row)) + "}").encode()

    # ---- the day -------------------------------------------------------------------------

    def _weekday(self, day: int) -> int:
        return datetime.fromtimestamp((self.start_ms + day * DAY_MS) / 1000, tz=timezone.utc).weekday()

    def _simulate_day(self, day: int, emit: bool = True) -> None:
        """Simulate one day; ``emit=False`` (warm-up days) moves stock but records nothing."""
        sc = self.scenario
        seed, sid = self.seed, self.store_id
        day_start = self.start_ms + day * DAY_MS
        abs_day = day_start // DAY_MS
        r = lambda name: component_rng(seed, sid, name, abs_day)  # noqa: E731
        plan, cat, step = self.plan, self.catalog, self.step_ms
        steps = DAY_MS // step
        truth = self.truth

        # Faults planned for the day (their own streams, so switching them never moves demand).
        reboots, skew = plan_device_faults(r("faults.device"), day_start, len(self.device_ids),
                                           self._reboot_ok, sc.faults)
        new_windows = plan_store_windows(r("faults.store"), day_start, sc.faults)
        n_sensors = len(self.sensor_facings)
        hours = (int(sc.demand.open_hour * 3_600_000), int(sc.demand.close_hour * 3_600_000))
        anomalies = plan_anomalies(r("faults.anomalies"), day_start, hours, self.registers, n_sensors, plan.rate,
                                   sc.faults)
        if not emit:
            reboots, new_windows = [], []
            anomalies.windows, anomalies.drift, anomalies.spike = [], {}, None
        # Anomaly windows name their device: a register, a sensor (after the registers) or the store.
        offset = {"till_down": 0, "sensor_drift": self._first_sensor}
        for w in reboots + new_windows + anomalies.windows:
            truth.count(w.kind, start_ms=w.start_ms)
            target = self.store_id if w.target < 0 else str(self.device_ids[w.target + offset.get(w.kind, 0)])
            truth.windows.append(WindowRecord(w.kind, target, w.start_ms, w.end_ms))
        pos_outages = [w for w in anomalies.windows if w.kind == "pos_outage"]
        self._windows = [w for w in self._windows if w.end_ms > day_start] + new_windows + pos_outages

        # Morning delivery.
        factor = day_factor(sc.demand, seed, sid, day_start)
        open_day = factor > 0
        rng_repl = r("replenishment")
        delivered, _misplaced = self.backroom.receive(rng_repl, day, sc.replenishment)
        tables: list[dict[str, np.ndarray]] = []

        # Demand and sales, segment by segment between restock rounds.
        promo = promo_mask(sc.demand, seed, len(cat), day_start)
        lift = np.where(promo, sc.demand.promo_lift, 1.0)
        price = np.where(promo, np.round(cat.price_cents * (1 - sc.demand.promo_discount)), cat.price_cents)
        rate_f = (plan.rate * lift)[plan.sku_index] / self._n_fac[plan.sku_index]
        demand = draw_demand(r("demand"), rate_f, self._profile, factor)
        if anomalies.spike is not None and emit and factor > 0:
            # Extra demand drawn on its own stream: the other facings' demand stays the same.
            sku, spike_lift = anomalies.spike
            cols = np.flatnonzero(plan.sku_index == sku)
            demand[:, cols] += draw_demand(r("faults.spike"), rate_f[cols] * (spike_lift - 1.0), self._profile, factor)
            truth.count("demand_spike", start_ms=day_start + hours[0])
            truth.windows.append(WindowRecord("demand_spike", str(self._sku_ids[sku]), day_start + hours[0],
                                              day_start + hours[1]))
        rounds = plan_rounds(r("rounds"), day_start, sc.replenishment, open_day)
        rng_round = r("restock")
        restock_at = {}
        for k, rd in enumerate(rounds):
            if rd.skipped:
                truth.count("restock_round_skipped", int(emit and open_day), start_ms=rd.start_ms)
                continue
            restock_at.setdefault(int((rd.start_ms - day_start) // step), k)
        bounds = sorted(set([0, steps]) | set(restock_at))
        units = self.shelf.copy()
        prev_units = self.shelf.copy()
        u_mat = np.empty((steps, len(plan)), dtype=np.int32)
        sold = np.empty_like(demand)
        lost = np.zeros_like(demand)
        switched = np.zeros_like(demand)
        p_switch = sc.demand.response_switch_brand + sc.demand.response_switch_size
        rng_shop = r("shoppers")
        restock_tables = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if a in restock_at:
                added = restock(rng_round, units, self.backroom, plan, sc.replenishment)
                k = restock_at[a]
                hh = self._first_handheld + k % max(sc.devices.handhelds, 1)
                restock_tables.append(dv.restock_scans(a, added, day_start, step, hh, k + 1))
            _serve(demand[a:b], units, plan.sibling, self._sub_facing, p_switch, rng_shop,
                   sold[a:b], lost[a:b], switched[a:b])
            np.cumsum(sold[a:b], axis=0, out=u_mat[a:b])
            np.subtract(units, u_mat[a:b], out=u_mat[a:b])
            units = u_mat[b - 1].copy()
        self.shelf = units
        sold_sku = np.bincount(plan.sku_index, weights=sold.sum(axis=0), minlength=len(cat)).astype(np.int64)
        self.backroom.record -= sold_sku
        if not emit:
            self._end_of_day(day, rng_repl, np.zeros(0, np.int64))
            return
        truth.record_day(day_start, step, u_mat, prev_units, lost, demand, sold, switched,
                         self._open_steps if open_day else np.zeros(0, np.int64), first=day == 0,
                         causes=self._stockout_causes(), expected=rate_f * factor)

        # Devices.
        pos_down = [(w.target, w.start_ms, w.end_ms) for w in reboots if w.target < self.registers]
        pos_down += [(w.target, w.start_ms, w.end_ms) for w in anomalies.windows if w.kind == "till_down"]
        sensor_down = [(w.target - self._first_sensor, w.start_ms, w.end_ms) for w in reboots
                       if self._first_sensor <= w.target < self._first_handheld]
        sensor_down += [(j, w.start_ms, w.end_ms) for w in anomalies.windows if w.kind == "sensor_fleet"
                        for j in range(n_sensors)]
        drifting = [(w.target, w.start_ms, w.end_ms, anomalies.drift[w.target]) for w in anomalies.windows
                    if w.kind == "sensor_drift"]
        pos = dv.pos_lines(r("pos"), sold, day_start, step, price.astype(np.int64), plan, self.registers,
                           pos_down, sc.demand, self._open_steps if open_day else np.zeros(0, np.int64))
        shelf, stuck = dv.shelf_readings(r("sensors"), u_mat, prev_units, day_start, step, self.sensor_facings,
                                         self._first_sensor, cat.unit_weight_g[plan.sku_index], self._sensors, sc.devices, sensor_down,
                                         drifting)
        for j, start, end in stuck:
            truth.count("sensor_stuck", start_ms=start)
            truth.windows.append(WindowRecord("sensor_stuck", str(self.device_ids[self._first_sensor + j]), start, end))
        restocks = _concat(restock_tables, ("dev", "ts", "facing", "units_added", "staff"))
        gaps = self._gap_rounds(r("gapscan"), day_start, u_mat, open_day)
        deliveries = dv.delivery_scans(delivered, day_start + hhmm_ms(sc.replenishment.delivery_time), int(abs_day),
                                       self._first_handheld + (1 % max(sc.devices.handhelds, 1)))
        # Transaction numbers run on per register across days.
        pos["txn"] = self._number_txns(pos)
        tables = [pos, shelf, restocks, deliveries, gaps]
        self._tables[day] = tables

        # The day's shrink counts from its start (in a run that ends at midnight the next day's is not the run's).
        truth.count("shrink_units", self._end_of_day(day, rng_repl, pos["sku"][pos["kind"] == 2], emit=True),
                    start_ms=day_start)
        self._queue(day, tables, skew, r("faults.messages"))

    def _gap_rounds(self, rng: np.random.Generator, day_start: int, u_mat: np.ndarray, open_day: bool) -> dict:
        """The day's gap-scan rounds (``gap_scan_times``; only in stores that do them): scans of
        the facings empty for the whole step the round walks in, some missed."""
        rp, step = self.scenario.replenishment, self.step_ms
        parts = []
        if self._does_gap_scans and open_day:
            for k, text in enumerate(rp.gap_scan_times):
                start = day_start + hhmm_ms(text) + int(rng.exponential(rp.restock_delay_mean_min) * MINUTE_MS)
                skipped = rng.random() < rp.gap_scan_skip_prob
                s = int((start - day_start) // step)
                if skipped or not 1 <= s < len(u_mat):
                    continue
                empty = (u_mat[s] == 0) & (u_mat[s - 1] == 0)
                hh = self._first_handheld + k % max(self.scenario.devices.handhelds, 1)
                parts.append(dv.gap_scans(rng, empty, day_start + s * step, step, hh, _GAP_STAFF + k, k + 1,
                                          rp.gap_scan_miss_prob))
        return _concat(parts, ("dev", "ts", "facing", "staff", "round"))

    def stock_record(self, day: int) -> dict[str, np.ndarray] | None:
        """The store system's stock record of ``day`` (what its ERP exports each night), per SKU
        index: ``book`` (units the record holds at the close, shelf and backroom together: the
        previous night's book or count + receipts - sales + returns; unrecorded shrink and misplaced
        cases are still in it) and ``counted`` (units the night's cycle count found after the close,
        -1 for SKUs not counted; the next day's book starts from it). ``None`` for a day not
        simulated or forgotten (``STOCK_DAYS`` are kept)."""
        return self._stock.get(day)

    def _end_of_day(self, day: int, rng: np.random.Generator, returned: np.ndarray, emit: bool = False) -> int:
        """Returns go to the backroom, shrink, the rotating count, the evening order.

        Returns the units lost to shrink.
        """
        sc, plan, cat = self.scenario, self.plan, self.catalog
        np.add.at(self.backroom.units, returned, 1)
        np.add.at(self.backroom.record, returned, 1)
        book = self.backroom.record.copy()
        shrunk = int(self.backroom.shrink(rng, sc.replenishment).sum())
        on_shelf = np.bincount(plan.sku_index, weights=self.shelf, minlength=len(cat)).astype(np.int64)
        counted = self.backroom.count(day, sc.replenishment, on_shelf)
        if emit:
            self._stock[day] = {"book": book, "counted": np.where(counted, self.backroom.record, -1)}
        self.backroom.order(rng, day, self._weekday(day), sc.replenishment, cat, plan, self._forecast)
        return shrunk

    def _stockout_causes(self) -> np.ndarray:
        """Cause code per facing (``truth.STOCKOUT_CAUSES``) of a stock-out starting today."""
        plan, br = self.plan, self.backroom
        on_shelf = np.bincount(plan.sku_index, weights=self.shelf, minlength=len(self.catalog))
        misplaced = sum((u for _, u in br.misplaced), np.zeros_like(br.units))
        phantom = br.record > on_shelf + br.units
        per_sku = np.where(br.units > 0, 0, np.where(misplaced > 0, 1, np.where(phantom, 2, 3)))
        return per_sku[plan.sku_index]

    def _number_txns(self, pos: dict[str, np.ndarray]) -> np.ndarray:
        """Renumber baskets as consecutive transaction numbers per register."""
        if len(pos["txn"]) == 0:
            return pos["txn"]
        keys = pos["dev"] * (int(pos["txn"].max()) + 1) + pos["txn"]
        uniq, inv = np.unique(keys, return_inverse=True)
        reg = uniq // (int(pos["txn"].max()) + 1)
        first = np.searchsorted(reg, reg)
        number = self._txn[reg] + (np.arange(len(uniq)) - first) + 1
        self._txn += np.bincount(reg, minlength=self.registers)
        return number[inv]

    def _queue(self, day: int, tables: list[dict[str, np.ndarray]], skew: np.ndarray, rng: np.random.Generator) -> None:
        codes = np.concatenate([np.full(len(t["ts"]), c, np.int64) for c, t in enumerate(tables)])
        rows = np.concatenate([np.arange(len(t["ts"]), dtype=np.int64) for t in tables])
        devs = np.concatenate([t["dev"] for t in tables])
        ts = np.concatenate([t["ts"] for t in tables])
        order = np.lexsort((rows, codes, ts, devs))
        codes, rows, devs, ts = codes[order], rows[order], devs[order], ts[order]
        first = np.searchsorted(devs, devs)
        seq = self._seq[devs] + (np.arange(len(devs)) - first)
        self._seq += np.bincount(devs, minlength=len(self._seq))
        msgs = {"dev": devs, "seq": seq, "ts": ts, "code": codes, "row": rows}
        msgs = apply_faults(rng, msgs, self._buffering, self._windows, self.scenario.faults, self.registers)
        # The device clock: ``ts`` as reported; ``sent_at`` stays on true time.
        skewed = skew[msgs["dev"]]
        if skewed.any():
            msgs["fault"][skewed != 0] |= MESSAGE_FAULTS["clock_skew"]
            msgs["ts"] = msgs["ts"] + skewed
        msgs["day"] = np.full(len(msgs["ts"]), day, np.int64)
        self._pending = {k: np.concatenate([self._pending[k], msgs[k].astype(self._pending[k].dtype)])
                         for k in _MSG_COLS}


def _concat(tables: list[dict[str, np.ndarray]], cols: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not tables:
        return {c: np.zeros(0, np.int64) for c in cols}
    return {c: np.concatenate([t[c] for t in tables]) for c in cols}


def _serve(demand: np.ndarray, units: np.ndarray, sibling: np.ndarray, sub_facing: np.ndarray,
           p_switch: float, rng: np.random.Generator,
           sold: np.ndarray, lost: np.ndarray, out: np.ndarray) -> None:
    """Sales censored by shelf stock over a run of steps without restocking.

    A shopper meeting an empty facing goes to another facing of the same SKU when it has
    stock; otherwise switches to the substitute product with probability ``p_switch`` (GMA
    2002: 26% another brand + 19% another size) when the substitute's facing has stock, and
    else leaves without it (buys elsewhere, delays, or does not buy). Fills, per (step,
    facing), ``sold`` (units sold), ``lost`` (demand lost to the store) and ``out`` (demand
    switched to another facing); ``lost`` and ``out`` must come in zeroed.
    Conservation: sum(demand) == sum(sold) + sum(lost).

    Only facings that run out in the segment (and the facings their shoppers switch to) need
    the step-by-step censoring; the rest sell exactly their demand.
    """
    sold[:] = demand
    short = np.flatnonzero(demand.sum(axis=0) > units)
    if len(short) == 0:
        return
    cum = np.cumsum(demand[:, short], axis=0)
    sold_cum = np.minimum(cum, units[short])
    unmet = np.diff(cum - sold_cum, axis=0, prepend=0)
    remaining_at = lambda s, f: units[f] - _sold_before(demand, units, s, f)  # noqa: E731
    ss, j = np.nonzero(unmet)
    f = short[j]
    u = unmet[ss, j]
    sib = sibling[f]
    sub = sub_facing[f]
    to_sib = (sib >= 0) & (remaining_at(ss, np.maximum(sib, 0)) > 0)
    switch = rng.binomial(u, p_switch)
    to_sub = ~to_sib & (sub != f) & (switch > 0) & (remaining_at(ss, sub) > 0)
    moved = np.where(to_sib, u, np.where(to_sub, switch, 0))
    target = np.where(to_sib, sib, sub)
    out[ss, f] = moved
    m = moved > 0
    cols = np.union1d(short, target[m])
    d2 = demand[:, cols].copy()
    np.add.at(d2, (ss[m], np.searchsorted(cols, target[m])), moved[m])
    sold2 = np.diff(np.minimum(np.cumsum(d2, axis=0), units[cols]), axis=0, prepend=0)
    sold[:, cols] = sold2
    lost[:, cols] = d2 - sold2 - out[:, cols]


def _sold_before(demand: np.ndarray, units: np.ndarray, s: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Units sold from facing ``f`` up to and including step ``s`` (first pass, no switching)."""
    if len(s) == 0:
        return np.zeros(0, dtype=demand.dtype)
    cols, inv = np.unique(f, return_inverse=True)
    cum = np.cumsum(demand[:, cols], axis=0)
    return np.minimum(cum[s, inv], units[f])


def _corrupt(event: dict, kind: str, seq: int) -> bytes:
    """A broken payload of one of the malformed kinds (deterministic in the event)."""
    if kind == "truncated":
        raw = json.dumps(event, separators=(",", ":")).encode()
        return raw[: max(1, (len(raw) * (1 + seq % 7)) // 9)]
    event = json.loads(json.dumps(event))
    data = event["data"]
    if kind == "wrong_type":
        event["seq"] = str(event["seq"])
    elif kind == "unknown_sku":
        data["sku"] = "sku-unknown-" + str(seq % 997)
    else:  # absurd_value
        for name, value in (("qty", 900_000), ("weight_g", 9.9e8), ("units_added", 10**7), ("units", 10**9)):
            if name in data:
                data[name] = value
                break
        else:  # no number to make absurd (a gap scan): an absurd time instead, so it is still invalid
            event["ts"] = -1
    return json.dumps(event, separators=(",", ":")).encode()

"""Simulated stores -> simulated gateways -> embedded hub -> the stream job, and the detectors
scored against the simulator's ground truth (used by tests/integration/test_stream_*.py and
bench/bench_stream.py; numbers in docs/stream.md).

Matching rule (``score_detectors``): an anomaly row is right when a truth window of its kind
(``TRUTH_OF``) about the same subject (device, facing, SKU or store) covers its ``first_seen``
(from the window's start to ``GRACE_MS`` after its end: a detector needs time to be sure).
Precision = right rows / rows of the kind; recall = truth windows with a right row / truth
windows that the job could see (``_detectable``: e.g. a stuck sensor on a shelf that sold
nothing in its window shows no symptom).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from cloud.ingest.source import LocalHubSource
from cloud.lake.storage import open_storage
from cloud.stream.job import StreamJob
from cloud.stream.pipeline import StreamConfig
from firmware_sim import Scenario, StoreSim
from firmware_sim.store import DEFAULT_START_MS
from firmware_sim.truth import WindowRecord
from firmware_sim.uplink import GatewayFaults, SimGateway
from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS, SimClock
from gondola.hub import LocalHub
from models.replay import planograms_from_rows

__all__ = ["SimRun", "run_sim_stores", "score_detectors", "FAULTS", "GATEWAY_FAULTS", "TRUTH_OF"]

GRACE_MS = 2 * HOUR_MS

#: Anomaly kind -> the simulator's truth kind it should find.
TRUTH_OF = {
    "gateway_silent": "uplink_down",
    "gateway_backlog": "uplink_slow",
    "sensor_fleet_silent": "sensor_fleet",
    "sensor_stuck": "sensor_stuck",
    "sensor_drift": "sensor_drift",
    "till_silent": "till_down",
    "sales_zero": "pos_outage",
    "demand_band": "demand_spike",
    "phantom_inventory": "phantom_inventory",
    "alert_divergence": "model_broken",
}

#: Every anomaly on at once, at rates that give each kind a few cases per store-week.
FAULTS = dict(sensor_drifts=0.01, sensor_fleet_failures=0.15, till_failures=0.08, pos_outages=0.12,
              demand_spikes=0.4, duplicates=0.01, late=0.005)
#: Stuck load cells per sensor-day when every anomaly is on (the scenario's 0.005 gives about one
#: visible case per 4-store week: too few to judge a detector on; a stuck cell shows only on a
#: single-facing SKU that sold >= 3 units while stuck).
STUCK_PROB = 0.05
GATEWAY_FAULTS = GatewayFaults(uplink_down=0.15, uplink_slow=0.12, model_broken=0.0)


@dataclass
class SimRun:
    sims: list[StoreSim]
    gateways: list[SimGateway]
    hub_path: Path
    lake: Path
    start_ms: int
    end_ms: int
    job: StreamJob | None = None
    stats: dict = field(default_factory=dict)
    stock_dir: Path | None = None  # the stores' nightly stock record CSVs (the ERP's exports)

    def truth_windows(self) -> list[WindowRecord]:
        out = [w for sim in self.sims for w in sim.truth.windows]
        out += [w for gw in self.gateways for w in gw.windows]
        for sim in self.sims:
            for store, facing, _sku, start, end, cause in sim.truth.stockouts_with_cause:
                # Cases misplaced in the backroom are the same story: the record has them, the
                # shelf does not (DeHoratius and Raman count both as record inaccuracy).
                if cause in ("phantom_inventory", "misplaced"):
                    out.append(WindowRecord("phantom_inventory", facing, start, end or self.end_ms))
        return out

    def planograms(self) -> dict:
        return planograms_from_rows([r for sim in self.sims for r in sim.planogram])

    def products(self) -> dict[str, str]:
        """sku -> category, from the chain's products master (what ``products.csv`` holds)."""
        return {r["sku"]: r["category"] for sim in self.sims for r in sim.products}

    def table(self, name: str, lake: Path | None = None) -> list[dict]:
        rows = open_storage(str(lake or self.lake)).read(name)
        return rows.to_pylist() if rows is not None else []


def run_sim_stores(root: Path, *, stores: int = 4, skus: int = 400, days: float = 3.0, seed: int = 1,
                   faults: dict | None = None, gateway_faults: GatewayFaults | None = None,
                   alerters: dict | None = None, step_min: int = 5, partitions: int = 2,
                   start_ms: int = DEFAULT_START_MS, stuck_prob: float | None = None) -> SimRun:
    """Simulate ``stores`` stores for ``days`` days into a fresh hub (no job run yet); stuck load
    cells at ``stuck_prob`` per sensor-day (default: ``STUCK_PROB`` with every anomaly on, i.e.
    ``faults`` None, else the scenario's)."""
    root.mkdir(parents=True, exist_ok=True)
    clock = SimClock(start_ms)
    hub = LocalHub(root / "hub.sqlite", partitions=partitions, clock=clock)
    scenario = Scenario.with_faults(**(FAULTS if faults is None else faults))
    if stuck_prob is None and faults is None:
        stuck_prob = STUCK_PROB
    if stuck_prob is not None:
        scenario = replace(scenario, devices=replace(scenario.devices, stuck_prob=stuck_prob))
    sims = [StoreSim(f"s{seed:02d}{i:02d}", skus=skus, seed=seed, start_ms=start_ms, scenario=scenario)
            for i in range(stores)]
    gws = [SimGateway(sim, hub, clock, faults=gateway_faults or GATEWAY_FAULTS, seed=seed,
                      alerter=(alerters or {}).get(sim.store_id)) for sim in sims]
    end = start_ms + int(days * DAY_MS)
    for t in range(start_ms + step_min * MINUTE_MS, end + 1, step_min * MINUTE_MS):
        for gw in gws:
            gw.run_until(t)
    hub.close()
    from firmware_sim.history import write_stock_records

    write_stock_records(root / "erp", sims, end)
    return SimRun(sims, gws, root / "hub.sqlite", root / "lake", start_ms, end, stock_dir=root / "erp")


def run_offline_first_morning(root: Path, *, stores: int = 2, skus: int = 200, days: float = 1.0, seed: int = 5,
                              offline_h: float = 11.0) -> SimRun:
    """Stores with no fault injected whose gateways are offline for the first ``offline_h`` hours,
    so their first delivery holds the morning's sales and readings (every ``sensor_drift`` row
    such a run raises is false; tests.integration.test_stream_detectors, bench first_batch_drift).
    The hub is filled, the job not run."""
    start, end = DEFAULT_START_MS, DEFAULT_START_MS + int(days * DAY_MS)
    clock = SimClock(start)
    root.mkdir(parents=True, exist_ok=True)
    hub = LocalHub(root / "hub.sqlite", partitions=2, clock=clock)
    sims = [StoreSim(f"s{i:02d}", skus=skus, seed=seed, start_ms=start, scenario=Scenario.no_faults())
            for i in range(stores)]
    gws = [SimGateway(sim, hub, clock, faults=GatewayFaults(), seed=1) for sim in sims]
    for gw in gws:
        gw.windows.append(WindowRecord("uplink_down", gw.store_id, start, start + int(offline_h * HOUR_MS)))
    for t in range(start + 5 * MINUTE_MS, end + 1, 5 * MINUTE_MS):
        for gw in gws:
            gw.run_until(t)
    hub.close()
    return SimRun(sims, gws, root / "hub.sqlite", root / "lake", start, end)


def run_job(run: SimRun, *, scorer=None, config: StreamConfig | None = None, max_messages: int = 500,
            group: str = "cloud-stream", stock: bool = True, lake: Path | None = None,
            categories: bool = True) -> StreamJob:
    """Run the stream job over the hub until caught up (``--once``), with the stores' stock
    record as side input unless ``stock`` is False and the products' categories (master data)
    unless ``categories`` is False; a second run over the same hub needs its own consumer
    ``group`` and ``lake`` (read it with ``table(name, lake)``)."""
    from cloud.stream.detectors import Categories
    from cloud.stream.stock import StockRecordFiles

    source = LocalHubSource(str(run.hub_path), consumer_group=group)
    records = StockRecordFiles(run.stock_dir) if stock and run.stock_dir is not None else None
    job = StreamJob(open_storage(str(lake or run.lake)), source, config=config, scorer=scorer,
                    planograms=run.planograms(), max_messages=max_messages, wall_clock=lambda: 0,
                    stock_records=records,
                    categories=Categories(run.products()) if categories else None)
    job.run(once=True)
    source.close()
    run.job = job
    return job


def _detectable(w: WindowRecord, run: SimRun) -> bool:
    """Whether the stream could see a truth window at all (see the module docstring)."""
    if w.end_ms <= w.start_ms or w.start_ms >= run.end_ms - HOUR_MS:
        return False
    if w.kind in ("sensor_stuck", "sensor_drift"):
        # Per-sensor rules need to know which facing a sale took from: single-facing SKUs.
        sim = next(s for s in run.sims if w.target.startswith(f"shelf-{s.store_id}"))
        facing = w.target[len("shelf-"):]
        skus = [r["sku"] for r in sim.planogram]
        sku = next(r["sku"] for r in sim.planogram if r["facing_id"] == facing)
        if skus.count(sku) > 1:
            return False
        pts = sim.truth.shelf_units(facing)
        times = [ts for ts, _ in pts]

        def units_at(t: int) -> int:
            k = bisect.bisect_right(times, t)
            return pts[k - 1][1] if k else 0

        if w.kind == "sensor_drift":
            # A drift shows once readings differ from the shelf: at least three readings inside
            # the window off the true units by one unit or more (a reading rounded to the true
            # units, or a shelf at 0 read as 0 by a cell drifting down, shows nothing).
            off = [t for t, u in _scan(run)["readings"].get(w.target, ()) if w.start_ms <= t < w.end_ms and abs(u - units_at(t)) >= 1]
            return len(off) >= 3
        # A stuck value shows only when the shelf really moved while it was stuck and a
        # heartbeat then repeated the stuck value: a reading inside the window, at least 30
        # minutes in, when the shelf held >= 3 units fewer than at the start (a stuck cell sends
        # only heartbeats, like a cell whose radio is down but for the value: nothing else tells them apart).
        before = [u for ts, u in pts if ts < w.start_ms][-1:]
        if not before:
            return False
        return any(before[0] - units_at(t) >= 3 for t, _ in _scan(run)["readings"].get(w.target, ())
                   if w.start_ms + 30 * MINUTE_MS <= t < w.end_ms)
    if w.kind == "demand_spike":
        # Only a spike that reached the till shows: at least 10 units sold that day, 3 x the
        # SKU's expected demand without the spike (not on the run's first day).
        return _spike_sold(w, run) >= 10
    if w.kind == "phantom_inventory":
        # Only sensored facings of single-facing SKUs show it, and only once it lasted half a day.
        sim = next(s for s in run.sims if w.target.startswith(s.store_id))
        plan = {r["facing_id"]: r for r in sim.planogram}
        f = plan.get(w.target)
        skus = [r["sku"] for r in sim.planogram]
        # Phantom stock stops the store ordering: the shelf stays empty through deliveries that
        # do not bring the SKU (one that brings it shows the store did order: the record was not
        # in the way, and the shelf is refilled at the next round).
        if not (f and f["has_sensor"] and skus.count(f["sku"]) == 1):
            return False
        without = [t for t, got in _scan(run)["deliveries"].get(sim.store_id, {}).values()
                   if w.start_ms <= t < w.end_ms - 2 * HOUR_MS and f["sku"] not in got]
        return len(without) >= 2
    return True


def _scan(run: SimRun) -> dict:
    """What the hub carried that the visibility rules look at, read once per run: readings per
    sensor ``(ts, units_est)``, basket start times per store, deliveries per store."""
    if "hub" not in run.stats:
        from gondola.contracts import batch_lines, parse_lines

        readings: dict[str, list[tuple[int, float]]] = {}
        first: dict[tuple[str, str, object], int] = {}
        deliveries: dict[str, dict[str, tuple[int, set]]] = {}
        with LocalHub(run.hub_path) as hub:
            for p in range(hub.partitions):
                for m in hub.read(p, limit=100_000_000):
                    for ev in parse_lines(batch_lines(m.body, m.properties)):
                        etype, ts, data = (ev or {}).get("type"), int((ev or {}).get("ts", 0)), (ev or {}).get("data")
                        if etype == "shelf.reading":
                            readings.setdefault(ev["device_id"], []).append((ts, float(data["units_est"])))
                        elif etype == "pos.line":
                            key = (ev["store_id"], ev["device_id"], data.get("txn_id"))
                            first[key] = min(first.get(key, ts), ts)
                        elif etype == "inventory.delivery":
                            d = deliveries.setdefault(ev["store_id"], {})
                            t, got = d.get(str(data.get("delivery_id")), (ts, set()))
                            got.add(data.get("sku"))
                            d[str(data.get("delivery_id"))] = (min(t, ts), got)
        baskets: dict[str, list[int]] = {}
        for (store, _, _), ts in first.items():
            baskets.setdefault(store, []).append(ts)
        run.stats["hub"] = {"readings": readings, "baskets": {k: sorted(v) for k, v in baskets.items()},
                            "deliveries": deliveries}
    return run.stats["hub"]


def till_missed_baskets(w: WindowRecord, run: SimRun) -> float:
    """Baskets a failed lane missed: the store's baskets in the window (paid elsewhere meanwhile)
    over its number of registers (the simulator spreads baskets evenly over lanes)."""
    sim = next(s for s in run.sims if w.target.startswith(f"pos-{s.store_id}"))
    times = _scan(run)["baskets"].get(sim.store_id, [])
    n = bisect.bisect_left(times, w.end_ms) - bisect.bisect_left(times, w.start_ms)
    return n / sim.registers


def _spike_sold(w: WindowRecord, run: SimRun) -> float:
    """Units the till sold of a spiked SKU on its day, when the spike reached the till: at least
    3 x the SKU's expected demand that day without the spike (the simulator's own ``expected``;
    the units sold on earlier days are no baseline: stock-outs censor them, and against them 307
    ordinary SKU-days of six training seeds looked like spikes). 0 on the run's first day (the
    stream has no earlier day of the store to compare with)."""
    sim = run.sims[[s.store_id for s in run.sims].index(w._store)] if hasattr(w, "_store") else None
    if sim is None:
        return 0.0
    day = w.start_ms - w.start_ms % DAY_MS
    if day < run.start_ms - run.start_ms % DAY_MS + DAY_MS:
        return 0.0
    d = sim.truth.daily()
    cols = {i for i, r in enumerate(sim.planogram) if r["sku"] == w.target}
    at = [j for j in range(len(d["day_ms"])) if d["day_ms"][j] == day and d["facing"][j] in cols]
    today = sum(int(d["sold"][j]) for j in at)
    expected = sum(float(d["expected"][j]) for j in at)
    return today if today >= 3 * expected else 0.0


def score_detectors(run: SimRun, rows: list[dict] | None = None) -> dict[str, dict]:
    """Precision and recall per anomaly kind (see the module docstring)."""
    rows = run.table("stream.anomalies") if rows is None else rows
    truth = run.truth_windows()
    # Demand spikes are per store: key their truth by (store, sku).
    spikes = {(sim.store_id, w.target, w.start_ms) for sim in run.sims for w in sim.truth.windows
              if w.kind == "demand_spike"}
    out = {}
    for kind, tkind in TRUTH_OF.items():
        mine = [r for r in rows if r["kind"] == kind]
        wins = [w for w in truth if w.kind == tkind]
        if tkind == "demand_spike":
            keyed = []
            for store, sku, s in spikes:
                w = _SpikeWindow(tkind, sku, s, s - s % DAY_MS + DAY_MS)
                object.__setattr__(w, "_store", store)
                keyed.append((store, w))
        else:
            keyed = [(None, w) for w in wins]

        def hit(r: dict, store, w: WindowRecord) -> bool:
            if store is not None and r["store_id"] != store:
                return False
            same = r["subject"] == w.target or r["store_id"] == w.target
            return same and w.start_ms <= r["first_seen"] <= w.end_ms + GRACE_MS

        right = sum(1 for r in mine if any(hit(r, st, w) for st, w in keyed))
        seen = [(st, w) for st, w in keyed if _detectable(w, run)]
        found = sum(1 for st, w in seen if any(hit(r, st, w) for r in mine))
        # Also over every window injected before the run's last hour, visible or not.
        every = [(st, w) for st, w in keyed if w.end_ms > w.start_ms and w.start_ms < run.end_ms - HOUR_MS]
        found_all = sum(1 for st, w in every if any(hit(r, st, w) for r in mine))
        if tkind == "till_down":  # how much evidence each lane failure gave (docs/stream.md)
            extra = {"missed_baskets_found": sorted(round(till_missed_baskets(w, run), 1) for st, w in seen
                                                    if any(hit(r, st, w) for r in mine)),
                     "missed_baskets_missed": sorted(round(till_missed_baskets(w, run), 1) for st, w in seen
                                                     if not any(hit(r, st, w) for r in mine))}
        else:
            extra = {}
        out[kind] = {**extra, "detections": len(mine), "right": right, "truth": len(seen), "found": found,
                     "precision": round(right / len(mine), 3) if mine else None,
                     "recall": round(found / len(seen), 3) if seen else None,
                     "truth_all": len(every), "found_all": found_all}
    return out


@dataclass(frozen=True)
class _SpikeWindow(WindowRecord):
    """A demand spike's window, with the store it happened in (``_store``)."""


def dump(result: dict) -> str:
    return json.dumps(result, indent=1, sort_keys=True)


class ModelAlerter:
    """The gateway's model for ``SimGateway``: the cloud's own scoring code on the same model, so a
    healthy gateway agrees with the cloud. ``broken`` (a ``model_broken`` window) scores with a
    stale model: each facing gets another facing's probability (a model fed the wrong features).
    Keeps every forecast it raised (``raised``: (ts, facing)) while healthy, and every change of
    its forecasts (``changes``: rows shaped like ``stream.alerts``), whether its uplink was up or not."""

    def __init__(self, store_id: str, planogram, scorer, seed: int = 0):
        import numpy as np

        from cloud.stream.scoring import StoreScorer

        self.sc = StoreScorer(store_id, planogram)
        self.scorer = scorer
        self.perm = np.random.default_rng(seed).permutation(len(self.sc.features.facing_ids))
        self.raised: list[tuple[int, str]] = []
        self.changes: list[dict] = []

    @property
    def forecast_threshold(self) -> float | None:
        """The store's forecast threshold at the last scoring (health's ``forecast_threshold``)."""
        return self.sc.forecast_at

    def observe(self, event: dict) -> None:
        self.sc.features.apply(event)

    def alerts(self, t: int, broken: bool) -> list[dict]:
        scorer = _Shuffled(self.scorer, self.perm) if broken else self.scorer
        out = []
        for r in self.sc.score(t, scorer):
            if r["kind"] != "empty_within_h":
                continue
            if r["state"] == "raised" and not broken:
                self.raised.append((t, r["facing_id"]))
            self.changes.append({"store_id": self.sc.store_id, "facing_id": r["facing_id"], "ts": t,
                                 "state": r["state"], "kind": "empty_within_h"})
            out.append({"facing_id": r["facing_id"], "sku": r["sku"], "state": r["state"],
                        "probability": round(r["probability"], 4), "horizon_min": r["horizon_min"],
                        "scorer": "sim-gateway", "units_est": r["units_est"], "kind": "empty_within_h"})
        return out


class _Shuffled:
    def __init__(self, scorer, perm):
        self.inner, self.perm = scorer, perm
        self.threshold = getattr(scorer, "threshold", None)
        self.horizon_h = getattr(scorer, "horizon_h", 2.0)
        self.alert_budget = getattr(scorer, "alert_budget", None)  # the model's budget (models.alert_budget)
        self.name = "stale"

    def score(self, X):
        import numpy as np

        return np.asarray(self.inner.score(X)).reshape(-1)[self.perm]


def alert_precision(run: SimRun, alerts: list[tuple[int, str]], horizon_ms: int) -> dict:
    """Share of raised forecasts ``(ts, facing)`` whose shelf was empty within the horizon."""
    empty: dict[str, list[tuple[int, int]]] = {}
    for sim in run.sims:
        for _store, facing, _sku, start, end in sim.truth.stockouts:
            empty.setdefault(facing, []).append((start, end or run.end_ms))
    right = sum(1 for ts, f in alerts if any(s <= ts + horizon_ms and e >= ts for s, e in empty.get(f, ())))
    return {"alerts": len(alerts), "right": right, "precision": round(right / len(alerts), 3) if alerts else None}


def held_precision(run: SimRun, rows: list[dict], instants: dict[str, list[int]], horizon_ms: int) -> dict:
    """Precision of the forecasts held raised at given instants per store: at each instant, every
    facing whose last ``empty_within_h`` change was ``raised`` counts once, right when its shelf is
    empty within the horizon."""
    empty: dict[str, list[tuple[int, int]]] = {}
    for sim in run.sims:
        for _store, facing, _sku, start, end in sim.truth.stockouts:
            empty.setdefault(facing, []).append((start, end or run.end_ms))
    changes: dict[str, list[tuple[int, str, str]]] = {}
    for r in rows:
        if r["kind"] == "empty_within_h":
            changes.setdefault(r["store_id"], []).append((r["ts"], r["facing_id"], r["state"]))
    held = right = 0
    for store, times in instants.items():
        ch = sorted(changes.get(store, []))
        for t in times:
            state: dict[str, str] = {}
            for ts, facing, st in ch:
                if ts > t:
                    break
                state[facing] = st
            for facing, st in state.items():
                if st == "raised":
                    held += 1
                    right += any(s <= t + horizon_ms and e >= t for s, e in empty.get(facing, ()))
    return {"held": held, "right": right, "precision": round(right / held, 3) if held else None}

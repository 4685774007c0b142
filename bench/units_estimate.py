"""The units estimate (feature ``units_est``) against the simulator's true shelf units, per slice
(issue 11): sensored / sensorless x single / shared SKU x sensor believed or not, on history
folders replayed in arrival order as a gateway sees events (rows every 30 min of opening hours
after the 3-day warm-up, as ``gondola eval``).

    python -m bench.units_estimate DIR [DIR ...] [--stores s001 s002] [--json FILE]

Prints, per slice: rows, share of rows whose estimate equals the truth, share over / under
(and by more than 2), mean absolute error in units.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from firmware_sim.scenario import DeviceParams
from gondola.clock import DAY_MS, HOUR_MS
from models.features import FEATURES
from models.history import history_info, load_history
from models.replay import replay_features, sample_instants

_U, _S, _K = FEATURES.index("units_est"), FEATURES.index("has_sensor"), FEATURES.index("sku_facings")


def _heartbeat_h(root: Path) -> float:
    """The scenario's sensor heartbeat, hours (the simulator's default where it names none)."""
    devices = (history_info(root).get("scenario") or {}).get("devices") or {}
    return float(devices.get("heartbeat_min", DeviceParams.heartbeat_min)) / 60.0


def estimate_rows(root: Path, stores: list[str] | None, *, warmup_days: float = 3.0, every_min: int = 30,
                  horizon_h: float = 2.0, arrival: bool = True) -> dict[str, np.ndarray]:
    """Per row: the estimate, the true units and the slice columns, for every store of ``root``."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("est", "true", "sensor", "shared", "watched", "untrusted", "store",
                                                         "facing", "t", "age_h", "sib_age_h", "heartbeat_h")}
    heartbeat_h = _heartbeat_h(root)
    for h in load_history(root, stores=stores, prefix=root.name):
        first = h.start_ms + int(warmup_days * DAY_MS)
        instants = sample_instants(first, h.end_ms - int(horizon_h * HOUR_MS), every_min=every_min)
        rows = replay_features(h.events, {h.store_id: h.facings}, instants, arrival=arrival)
        truth = h.meta["oracle"]
        index = {f: i for i, f in enumerate(truth.facing_ids)}
        fidx = np.array([index[f] for f in rows.facing], dtype=np.int64)
        planned = {f.facing_id: f.has_sensor for f in h.facings}
        sku_of = {f.facing_id: f.sku for f in h.facings}
        watched_skus = {f.sku for f in h.facings if f.has_sensor}
        out["est"].append(rows.X[:, _U].astype(np.float64))
        out["true"].append(truth.units_at(fidx, rows.t).astype(np.float64))
        out["sensor"].append(np.array([planned[f] for f in rows.facing], dtype=bool))
        out["shared"].append(rows.X[:, _K] > 1)
        out["untrusted"].append(rows.untrusted.astype(bool))
        out["watched"].append(np.array([sku_of[f] in watched_skus for f in rows.facing], dtype=bool))
        out["store"].append(rows.store.astype(str))
        out["facing"].append(rows.facing.astype(str))
        out["t"].append(rows.t)
        # Sensor silence (issue 11): hours since the facing's last reading event (event time; inf
        # when none yet) and the longest such silence among its SKU's other sensored facings.
        reads: dict[str, list[int]] = {}
        for e in h.events:
            if e["type"] == "shelf.reading":
                f = e.get("facing_id") or (e.get("data") or {}).get("facing_id")
                reads.setdefault(f, []).append(int(e["ts"]))
        age = np.full(len(rows.t), np.inf)
        for f, ts in reads.items():
            m = rows.facing == f
            ts_sorted = np.sort(np.array(ts, dtype=np.int64))
            k = np.searchsorted(ts_sorted, rows.t[m], side="right")
            age[m] = np.where(k > 0, (rows.t[m] - ts_sorted[np.maximum(k - 1, 0)]) / HOUR_MS, np.inf)
        sib = np.full(len(rows.t), -np.inf)
        for f in np.unique(rows.facing):
            sibs = [g.facing_id for g in h.facings if g.sku == sku_of[f] and g.facing_id != f and g.has_sensor]
            for g in sibs:
                mf, mg = rows.facing == f, rows.facing == g
                if mf.sum() == mg.sum() and np.array_equal(rows.t[mf], rows.t[mg]):
                    sib[mf] = np.maximum(sib[mf], age[mg])
        out["age_h"].append(age)
        out["sib_age_h"].append(sib)
        out["heartbeat_h"].append(np.full(len(rows.t), heartbeat_h))
    return {k: np.concatenate(v) for k, v in out.items()}


def _stats(e: np.ndarray) -> dict:
    n = len(e)
    return {
        "rows": n,
        "exact": round(float(np.mean(np.abs(e) < 0.5)), 4) if n else None,
        "over": round(float(np.mean(e >= 0.5)), 4) if n else None,
        "over_gt2": round(float(np.mean(e > 2.5)), 4) if n else None,
        "under": round(float(np.mean(e <= -0.5)), 4) if n else None,
        "under_gt2": round(float(np.mean(e < -2.5)), 4) if n else None,
        "mae": round(float(np.mean(np.abs(e))), 3) if n else None,
    }


def slices(r: dict[str, np.ndarray]) -> dict[str, dict]:
    """The error figures per slice (``sensor`` is the planogram's; ``untrusted`` its sensor not believed)."""
    err = r["est"] - r["true"]
    res = {}
    cases = [(True, False, False, None), (True, False, True, None), (True, True, False, None), (True, True, True, None),
             (False, False, False, None), (False, True, False, True), (False, True, False, False)]
    for sensor, shared, untrusted, watched in cases:
        m = (r["sensor"] == sensor) & (r["shared"] == shared) & (r["untrusted"] == untrusted)
        if watched is not None:
            m &= r["watched"] == watched
        name = (f"{'sensor' if sensor else 'no sensor'}, {'shared' if shared else 'single'} SKU"
                + (", untrusted" if untrusted else ", believed" if sensor else "")
                + ("" if watched is None else ", a sibling sensored" if watched else ", no sibling sensored"))
        res[name] = _stats(err[m])
    # Silent sensors (issue 11): shared SKUs, a sensored facing not heard for over one heartbeat
    # (it reports every change and a heartbeat), and the sensorless siblings of such a facing.
    silent = r["sensor"] & r["shared"] & (r["age_h"] > r["heartbeat_h"])
    sib = ~r["sensor"] & r["shared"] & (r["sib_age_h"] > r["heartbeat_h"])
    for name, m in (("sensor, shared SKU, silent > 1 heartbeat", silent),
                    ("no sensor, shared SKU, a sensored sibling silent > 1 heartbeat", sib)):
        res[name] = _stats(err[m])
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.units_estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+")
    p.add_argument("--stores", nargs="*", default=None)
    p.add_argument("--event-time", action="store_true", help="replay in event-time order (default: arrival)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    report = {}
    for d in a.dirs:
        r = estimate_rows(Path(d), a.stores, arrival=not a.event_time)
        report[Path(d).name] = res = slices(r)
        print(Path(d).name)
        print(f"  {'slice':<58} {'rows':>8} {'exact':>6} {'over':>6} {'>2':>6} {'under':>6} {'>2':>6} {'MAE':>6}")
        for name, v in res.items():
            if v["rows"]:
                print(f"  {name:<58} {v['rows']:>8,} {v['exact']:>6.3f} {v['over']:>6.3f} {v['over_gt2']:>6.3f} "
                      f"{v['under']:>6.3f} {v['under_gt2']:>6.3f} {v['mae']:>6.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

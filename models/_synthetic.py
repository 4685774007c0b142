"""A tiny synthetic store for the model's own tests and benchmark (not the simulator).

Facings with Poisson demand shaped by an hour-of-day profile, restock rounds at fixed times
(sometimes skipped or partial), shelf sensors on a share of facings reading every 30 minutes.
It emits contract events (``gondola.contracts.make_event``) and the exact stock-out intervals,
so feature replay, labels, training and evaluation can be tested end to end in seconds
without ``firmware_sim`` (which ``models`` may not import).
"""

from __future__ import annotations

import math
import numpy as np

from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from gondola.contracts import make_event
from models.dataset import StoreHistory
from models.replay import Facing

__all__ = ["synthetic_store"]

_OPEN, _CLOSE = 7, 22
_ROUNDS_MIN = (6 * 60 + 30, 13 * 60, 18 * 60 + 30)
# Busier at lunch and after work.
_PROFILE = np.array([0, 0, 0, 0, 0, 0, 0, .5, .7, .8, .9, 1.1, 1.4, 1.2, .9, .8, 1.0, 1.4, 1.6, 1.3, .9, .6, 0, 0])


def synthetic_store(store_id: str = "s001", *, facings: int = 20, days: int = 7, seed: int = 0,
                    start_ms: int = 1_764_547_200_000, sensor_share: float = 0.5) -> StoreHistory:
    """Simulate one store; ``start_ms`` must be a UTC midnight (default 2025-12-01)."""
    rng = np.random.default_rng(seed)
    step = 5 * MINUTE_MS
    daily = rng.lognormal(mean=math.log(6.0), sigma=0.8, size=facings)
    caps = np.clip(np.round(daily * 1.2), 4, 60).astype(int)
    has_sensor = rng.random(facings) < sensor_share
    shelf = caps.astype(float).copy()
    profile = _PROFILE / _PROFILE.sum()
    fac = [Facing(f"{store_id}-f{i:03d}", f"sku{i:04d}", int(caps[i])) for i in range(facings)]
    events: list[dict] = []
    seqs: dict[str, int] = {}
    empty_since: list[int | None] = [None] * facings
    stockouts: list[tuple[str, str, int, int | None]] = []

    def emit(etype: str, device: str, ts: int, data: dict) -> None:
        seqs[device] = seqs.get(device, -1) + 1
        events.append(make_event(etype, store_id=store_id, device_id=device, seq=seqs[device], ts=ts, data=data))

    end_ms = start_ms + days * DAY_MS
    txn = 0
    promo = rng.random(facings) < 0.1
    for t in range(start_ms, end_ms, step):
        minute = (t % DAY_MS) // MINUTE_MS
        hour = minute // 60
        day = (t - start_ms) // DAY_MS
        if minute in _ROUNDS_MIN and rng.random() > 0.1:
            for i in range(facings):
                if shelf[i] < 0.6 * caps[i]:
                    add = int(caps[i] - shelf[i]) if rng.random() > 0.2 else int((caps[i] - shelf[i]) // 2)
                    if add > 0:
                        shelf[i] += add
                        emit("shelf.restock", f"hh-{store_id}-1", t + 60_000,
                             {"facing_id": fac[i].facing_id, "sku": fac[i].sku, "units_added": add})
        if _OPEN <= hour < _CLOSE:
            lift = np.where(promo & (day % 7 >= 4), 2.0, 1.0)
            lam = daily * lift * profile[hour] * (step / HOUR_MS)
            demand = rng.poisson(lam)
            for i in np.flatnonzero(demand):
                qty = int(min(demand[i], shelf[i]))
                if qty <= 0:
                    continue
                shelf[i] -= qty
                txn += 1
                price = 199 if not (promo[i] and day % 7 >= 4) else 159
                emit("pos.line", f"pos-{store_id}-r1", t + int(rng.integers(0, step)),
                     {"txn_id": f"t{txn}", "register": "r1", "line": 1, "sku": fac[i].sku,
                      "qty": qty, "price_cents": price})
        for i in range(facings):
            if shelf[i] <= 0 and empty_since[i] is None:
                empty_since[i] = t + step - 1
            elif shelf[i] > 0 and empty_since[i] is not None:
                stockouts.append((store_id, fac[i].facing_id, empty_since[i], t + 60_000))
                empty_since[i] = None
            if has_sensor[i] and minute % 30 == 0:
                emit("shelf.reading", f"ss-{fac[i].facing_id}", t + step - 1,
                     {"facing_id": fac[i].facing_id, "sku": fac[i].sku, "weight_g": float(shelf[i] * 250.0),
                      "units_est": int(shelf[i]), "battery_pct": 90.0, "rssi_dbm": -60})
    for i in range(facings):
        if empty_since[i] is not None:
            stockouts.append((store_id, fac[i].facing_id, empty_since[i], None))
    events.sort(key=lambda e: (e["ts"], e["device_id"], e["seq"]))
    return StoreHistory(store_id, fac, events, stockouts, start_ms, end_ms)

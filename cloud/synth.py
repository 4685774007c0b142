"""Synthetic lake input for tests and benchmarks: events, hub messages, master-data CSVs.

Not the store simulator (``firmware_sim``): a small, deterministic generator whose output the
lake's tests can reason about. Each store has ``facings`` sensor facings; each facing's shelf
drains with sales (POS lines), reads empty for a while, then gets restocked; the gateway raises
an alert ``alert_lead_min`` before some stock-outs. Readings every ``reading_every_min``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Iterator

from gondola.clock import DAY_MS, MINUTE_MS
from gondola.contracts import encode_batch, make_event

__all__ = ["DAY0", "day_events", "fill_hub", "write_master_csvs"]

#: 2025-11-30 00:00 UTC, a Sunday.
DAY0 = 1_764_460_800_000


def _sku(i: int) -> str:
    return f"sku-{i:04d}"


def day_events(
    *,
    stores: int = 2,
    facings: int = 4,
    start_ms: int = DAY0,
    hours: int = 24,
    reading_every_min: int = 10,
    seed: int = 7,
    alert_lead_min: int = 40,
    first_store: int = 1,
) -> Iterator[dict]:
    """Events of ``stores`` stores (``s<first_store>`` on) over ``hours`` hours, in time order per device."""
    rng = random.Random(seed)
    for s in range(stores):
        store = f"s{s + first_store:03d}"
        seqs: dict[str, int] = {}

        def ev(etype: str, device: str, ts: int, data: dict) -> dict:
            seqs[device] = seqs.get(device, 0) + 1
            e = make_event(etype, store_id=store, device_id=device, seq=seqs[device], ts=ts, data=data)
            e["received_at"] = ts + 200
            return e

        gateway = f"gw-{store}"
        register = f"pos-{store}-r01"
        out: list[dict] = []
        txn = 0
        for f in range(facings):
            facing = f"{store}-f{f:02d}"
            sku = _sku(f)
            sensor = f"shelf-{facing}"
            capacity = 20
            units = capacity
            empty_since: int | None = None
            alerted = False
            t = start_ms
            end = start_ms + hours * 60 * MINUTE_MS
            while t < end:
                # sales during the interval
                if units > 0 and rng.random() < 0.6:
                    qty = min(units, rng.randint(1, 3))
                    units -= qty
                    txn += 1
                    out.append(ev("pos.line", register, t + MINUTE_MS, {
                        "txn_id": f"t{txn}", "register": "r01", "line": 1, "sku": sku, "qty": qty,
                        "price_cents": 100 + f * 10, "kind": "sale", "loyalty_pid": f"p{rng.randint(1, 50):02d}",
                    }))
                if units <= 4 and not alerted and rng.random() < 0.7:
                    out.append(ev("edge.alert", gateway, t + 2 * MINUTE_MS, {
                        "facing_id": facing, "sku": sku, "state": "raised", "probability": 0.8,
                        "horizon_min": 120, "scorer": "poisson-v1", "units_est": float(units),
                    }))
                    alerted = True
                out.append(ev("shelf.reading", sensor, t + 3 * MINUTE_MS, {
                    "facing_id": facing, "sku": sku, "weight_g": units * 250.0, "units_est": units,
                    "battery_pct": 90.0 - (t - start_ms) / DAY_MS, "rssi_dbm": -60,
                }))
                if units == 0:
                    empty_since = empty_since or t
                    if t - empty_since >= 50 * MINUTE_MS:
                        units = capacity
                        out.append(ev("shelf.restock", f"hh-{store}", t + 4 * MINUTE_MS, {
                            "facing_id": facing, "sku": sku, "units_added": capacity,
                        }))
                        empty_since, alerted = None, False
                t += reading_every_min * MINUTE_MS
        for h in range(hours):
            out.append(ev("edge.health", gateway, start_ms + h * 60 * MINUTE_MS + 30 * MINUTE_MS, {
                "buffer_rows": 10, "buffer_bytes": 4096, "unsent_rows": 0, "oldest_unsent_age_s": 0.0,
                "evictions": 0, "seq_gaps": 0, "quarantined": 0, "model_version": "poisson-v1",
            }))
        # per-device seq must follow time: re-number in time order per device
        out.sort(key=lambda e: (e["device_id"], e["ts"]))
        counters: dict[str, int] = {}
        for e in out:
            counters[e["device_id"]] = counters.get(e["device_id"], 0) + 1
            e["seq"] = counters[e["device_id"]]
            e["event_id"] = f"{e['device_id']}:{e['seq']}"
        out.sort(key=lambda e: e["ts"])
        yield from out


def fill_hub(hub, events, *, per_message: int = 200) -> int:
    """Send events to a ``LocalHub`` as gateway batches (grouped per store); return messages sent."""
    by_store: dict[str, list[dict]] = {}
    sent = 0
    for e in events:
        batch = by_store.setdefault(e["store_id"], [])
        batch.append(e)
        if len(batch) >= per_message:
            msg = encode_batch(batch, store_id=e["store_id"])
            hub.send(f"gw-{e['store_id']}", msg.body, msg.properties)
            by_store[e["store_id"]] = []
            sent += 1
    for store, batch in by_store.items():
        if batch:
            msg = encode_batch(batch, store_id=store)
            hub.send(f"gw-{store}", msg.body, msg.properties)
            sent += 1
    return sent


def write_master_csvs(folder: Path, *, stores: int = 2, facings: int = 4) -> list[Path]:
    """stores.csv, products.csv, planogram.csv matching ``day_events``' ids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "stores.csv": (["store_id", "name", "region", "timezone", "currency"],
                       [[f"s{s + 1:03d}", f"Store {s + 1}", "north" if s % 2 else "south",
                         "Europe/Amsterdam" if s % 2 == 0 else "UTC", "EUR"] for s in range(stores)]),
        "products.csv": (["sku", "name", "category", "price_cents", "unit_weight_g", "pack_size"],
                         [[_sku(f), f"Product {f}", "grocery", 100 + f * 10, 250, 6] for f in range(facings)]),
        "planogram.csv": (["store_id", "facing_id", "sku", "capacity", "has_sensor", "aisle", "bay", "shelf"],
                          [[f"s{s + 1:03d}", f"s{s + 1:03d}-f{f:02d}", _sku(f), 20, "true", "A01", str(f // 4 + 1), f % 4 + 1]
                           for s in range(stores) for f in range(facings)]),
    }
    paths = []
    for name, (header, rows) in files.items():
        path = folder / name
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        paths.append(path)
    return paths

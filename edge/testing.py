"""Event makers for the gateway's tests and benchmarks (no simulator needed).

``device_traffic`` plays a store's devices: POS lanes, shelf sensors and a handheld, each with
its own ``seq`` counter, and drops a chosen share of messages before they reach the broker, so a
test knows exactly which ``(device_id, seq)`` were emitted and which were lost.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from gondola.contracts import make_event
from gondola.topics import device_topic

__all__ = ["T0", "received", "pos_line", "reading", "restock", "Traffic", "device_traffic", "planogram_csv"]

#: 2025-11-29T10:00:00Z, a Saturday morning.
T0 = 1_764_410_400_000


def received(event: dict, at: int = T0) -> dict:
    """The event as the gateway stores it: with ``received_at``."""
    return event | {"received_at": at}


def pos_line(seq: int, ts: int, *, store_id: str = "s001", device_id: str = "pos-s001-r01", sku: str = "k0",
             qty: int = 1, loyalty_id: str | None = None, epoch: int = 0) -> dict:
    data = {"txn_id": f"t{seq}", "register": device_id[-3:], "line": 1, "sku": sku, "qty": qty, "price_cents": 199}
    if loyalty_id:
        data["loyalty_id"] = loyalty_id
    return make_event("pos.line", store_id=store_id, device_id=device_id, seq=seq, ts=ts, data=data, epoch=epoch)


def reading(seq: int, ts: int, *, store_id: str = "s001", device_id: str = "shelf-s001-f0", facing_id: str = "f0",
            sku: str = "k0", units: int = 5) -> dict:
    return make_event("shelf.reading", store_id=store_id, device_id=device_id, seq=seq, ts=ts, data={
        "facing_id": facing_id, "sku": sku, "weight_g": units * 250.0, "units_est": units,
        "battery_pct": 80.0, "rssi_dbm": -60})


def restock(seq: int, ts: int, *, store_id: str = "s001", device_id: str = "hh-s001-1", facing_id: str = "f0",
            sku: str = "k0", units: int = 10) -> dict:
    return make_event("shelf.restock", store_id=store_id, device_id=device_id, seq=seq, ts=ts,
                      data={"facing_id": facing_id, "sku": sku, "units_added": units})


@dataclass
class Traffic:
    """Messages to publish, in order, and the ground truth."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    emitted: set[tuple[str, int]] = field(default_factory=set)
    dropped: set[tuple[str, int]] = field(default_factory=set)
    by_type: dict[str, int] = field(default_factory=dict)


def device_traffic(n: int, *, store_id: str = "s001", pos_lanes: int = 3, facings: int = 10, drop: float = 0.0,
                   start_ms: int = T0, step_ms: int = 1_000, seed: int = 0) -> Traffic:
    """``n`` events round-robin over POS lanes, shelf sensors and one handheld; each message is lost
    with probability ``drop`` (never a device's first or last one, so every loss is a detectable gap: the gateway takes
    a device's first message as its start).

    The shelves are consistent with the till: a sensor's first reading draws its facing's level,
    every later one reports that level less the units sold since and plus the units restocked
    (capacity 20), so the gateway's sensor-trust rules believe the sensors as they would a real shelf.
    """
    rng = random.Random(seed)
    level: dict[int, int] = {}
    devices = ([("pos", f"pos-{store_id}-r{i:02d}") for i in range(pos_lanes)]
               + [("shelf", f"shelf-{store_id}-f{i}") for i in range(facings)] + [("handheld", f"hh-{store_id}-1")])
    seqs = {d: 0 for _, d in devices}
    out = Traffic()
    planned = []
    for i in range(n):
        kind, dev = devices[rng.randrange(len(devices))]
        seq = seqs[dev]
        seqs[dev] += 1
        ts = start_ms + i * step_ms
        if kind == "pos":
            f = rng.randrange(facings)
            ev = pos_line(seq, ts, store_id=store_id, device_id=dev, sku=f"k{f}",
                          loyalty_id=f"card{rng.randrange(100)}" if rng.random() < 0.3 else None)
            if f in level:
                level[f] = max(0, level[f] - 1)
        elif kind == "shelf":
            f = int(dev.rsplit("f", 1)[1])
            first_level = rng.randrange(0, 20)
            level.setdefault(f, first_level)
            ev = reading(seq, ts, store_id=store_id, device_id=dev, facing_id=f"f{f}", sku=f"k{f}", units=level[f])
        else:
            f = rng.randrange(facings)
            ev = restock(seq, ts, store_id=store_id, device_id=dev, facing_id=f"f{f}", sku=f"k{f}")
            if f in level:
                level[f] = min(20, level[f] + ev["data"]["units_added"])
        planned.append((device_topic(store_id, kind, dev), ev))
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for idx, (_, ev) in enumerate(planned):
        first.setdefault(ev["device_id"], idx)
        last[ev["device_id"]] = idx
    keep = set(first.values()) | set(last.values())
    for idx, (topic, ev) in enumerate(planned):
        key = (ev["device_id"], ev["seq"])
        if idx not in keep and rng.random() < drop:
            out.dropped.add(key)
            continue
        out.emitted.add(key)
        out.by_type[ev["type"]] = out.by_type.get(ev["type"], 0) + 1
        out.messages.append((topic, json.dumps(ev).encode()))
    return out


def planogram_csv(store_id: str = "s001", facings: int = 10, capacity: int = 20) -> str:
    """A planogram: facing f<i> holds sku k<i>, every facing has a sensor."""
    return "store_id,facing_id,sku,capacity,has_sensor\n" + "".join(
        f"{store_id},f{i},k{i},{capacity},1\n" for i in range(facings))

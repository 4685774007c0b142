"""Read a simulator history folder (``gondola sim generate --out DIR``) into store histories.

The layout is the simulator's (``firmware_sim.history``; read here as plain files, since
``models`` may not import the simulator): ``master/planogram.csv``, ``events/<type>/<store>.parquet``
(envelope + flattened data fields, in send order, duplicates included), ``truth/shelf_units/
<store>.parquet`` and ``scenario.json``. Duplicated sends are removed on ``(device_id, seq)``,
as the gateway's buffer and silver both do.

Stock-out intervals are derived from the true shelf units (``shelf_units`` change points: empty
from the point units reach 0 until the next point with units > 0), the most primitive truth
the simulator writes. Its ``truth/stockouts`` table is used only when ``shelf_units`` is absent
(an early version of it missed a facing's second empty spell within a day; docs/model.md).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from gondola.clock import DAY_MS
from gondola.errors import StorageError
from models.dataset import StoreHistory
from models.replay import Facing

__all__ = ["load_history", "history_info", "stockouts_from_shelf_units"]

_TYPES = ("pos.line", "shelf.reading", "shelf.restock")


def history_info(root: str | Path) -> dict:
    """``scenario.json`` of a history folder (seed, sizes, start, scenario).

    Raises:
        StorageError: not a history folder.
    """
    path = Path(root) / "scenario.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StorageError(f"{root} is not a simulator history folder ({exc})") from None


def load_history(root: str | Path, stores: list[str] | None = None, *, prefix: str | None = None
                 ) -> list[StoreHistory]:
    """Every store (or the listed ones) of a history folder, events deduplicated and with
    ``has_sensor`` per facing in ``meta``.

    Histories of different folders reuse store ids (``s001`` ...): pass ``prefix`` (say the
    folder name) to make them ``prefix/s001`` when several folders are used together.

    Raises:
        StorageError: a file is missing or unreadable.
    """
    import pyarrow.parquet as pq

    root = Path(root)
    info = history_info(root)
    start = int(info["start_ms"])
    end = start + int(info["days"]) * DAY_MS
    planograms: dict[str, list[Facing]] = {}
    sensors: dict[str, dict[str, bool]] = {}
    try:
        with (root / "master" / "planogram.csv").open(newline="") as fh:
            for r in csv.DictReader(fh):
                sensor = str(r.get("has_sensor", "")).strip().lower() in ("1", "true", "yes")
                planograms.setdefault(r["store_id"], []).append(
                    Facing(r["facing_id"], r["sku"], int(r["capacity"]), sensor))
                sensors.setdefault(r["store_id"], {})[r["facing_id"]] = sensor
    except (OSError, KeyError, ValueError) as exc:
        raise StorageError(f"cannot read the planogram of {root}: {exc}") from None
    out = []
    for store_id in sorted(planograms):
        if stores is not None and store_id not in stores:
            continue
        events: list[dict] = []
        seen: set[tuple[str, int]] = set()
        for etype in _TYPES:
            path = root / "events" / etype / f"{store_id}.parquet"
            if not path.exists():
                continue
            try:
                rows = pq.read_table(path).to_pylist()
            except (OSError, ValueError) as exc:
                raise StorageError(f"cannot read {path}: {exc}") from None
            for row in rows:
                key = (row["device_id"], row["seq"])
                if key in seen:
                    continue
                seen.add(key)
                row["type"] = etype
                if prefix:
                    row["store_id"] = f"{prefix}/{store_id}"
                events.append(row)
        stockouts = _stockouts(root, store_id)
        sid = f"{prefix}/{store_id}" if prefix else store_id
        stockouts = [(sid, f, a, b) for _s, f, a, b in stockouts]
        out.append(StoreHistory(sid, planograms[store_id], events, stockouts, start, end,
                                meta={"has_sensor": sensors[store_id], "seed": info.get("seed"),
                                      "scenario": (info.get("scenario") or {}).get("name"), "source": str(root),
                                      "oracle": _oracle_truth(root, store_id, info, planograms[store_id]),
                                      "sensor_faults": _sensor_faults(root, store_id, events, planograms[store_id])}))
    return out


def stockouts_from_shelf_units(store_id: str, facing: list[str], ts: list[int], units: list[int]
                               ) -> list[tuple[str, str, int, int | None]]:
    """Empty intervals from true-units change points (any order): ``(store, facing, start, end)``."""
    import numpy as np

    f = np.asarray(facing, dtype=str)
    t = np.asarray(ts, dtype=np.int64)
    u = np.asarray(units, dtype=np.int64)
    order = np.lexsort((t, f))
    f, t, u = f[order], t[order], u[order]
    out: list[tuple[str, str, int, int | None]] = []
    bounds = np.flatnonzero(np.r_[True, f[1:] != f[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        empty = u[a:b] == 0
        # Transitions into and out of "empty", in time order.
        change = np.flatnonzero(np.diff(np.r_[False, empty].astype(np.int8)))
        starts = change[0::2]
        ends = change[1::2]
        for k, s in enumerate(starts):
            end = int(t[a + ends[k]]) if k < len(ends) else None
            out.append((store_id, str(f[a]), int(t[a + s]), end))
    return out


def _stockouts(root: Path, store_id: str) -> list[tuple[str, str, int, int | None]]:
    import pyarrow.parquet as pq

    path = root / "truth" / "shelf_units" / f"{store_id}.parquet"
    try:
        if path.exists():
            d = pq.read_table(path, columns=["facing_id", "ts", "units"]).to_pydict()
            return stockouts_from_shelf_units(store_id, d["facing_id"], d["ts"], d["units"])
        path = root / "truth" / "stockouts" / f"{store_id}.parquet"
        so = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    return [(r["store_id"], r["facing_id"], int(r["start_ms"]), None if r["end_ms"] is None else int(r["end_ms"]))
            for r in so]


def _oracle_truth(root: Path, store_id: str, info: dict, facings: list[Facing]):
    """The store's ``models.oracle.OracleTruth``, or None for histories written before the
    simulator recorded expected demand."""
    import pyarrow.parquet as pq

    from models.oracle import OracleTruth

    profile = info.get("demand_profile")
    units_path = root / "truth" / "shelf_units" / f"{store_id}.parquet"
    demand_path = root / "truth" / "lost_sales" / f"{store_id}.parquet"
    if not profile or not units_path.exists() or not demand_path.exists():
        return None
    try:
        demand = pq.read_table(demand_path)
        if "expected_units" not in demand.column_names:
            return None
        units = pq.read_table(units_path, columns=["facing_id", "ts", "units"]).to_pydict()
        expected = demand.select(["facing_id", "day_ms", "expected_units"]).to_pydict()
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read the truth of {store_id} in {root}: {exc}") from None
    return OracleTruth.build([f.facing_id for f in facings], units, expected, int(info["start_ms"]),
                             int(info["days"]), profile["shares"], int(profile["step_ms"]))


#: Truth windows that make a shelf sensor wrong: stuck and drifting load cells (target: the
#: sensor's device) and a store's sensor fleet going silent (target: the store).
SENSOR_FAULT_KINDS = ("sensor_stuck", "sensor_drift", "sensor_fleet")


def _sensor_faults(root: Path, store_id: str, events: list[dict], facings: list[Facing]) -> list | None:
    """``(facing_id, start_ms, end_ms, kind)`` of the simulator's injected sensor faults, or
    None when the history has no windows table."""
    import pyarrow.parquet as pq

    path = root / "truth" / "windows" / f"{store_id}.parquet"
    if not path.exists():
        return None
    try:
        windows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    facing_of = {e["device_id"]: e["facing_id"] for e in events if e["type"] == "shelf.reading"}
    sensored = [f.facing_id for f in facings if f.has_sensor]
    out = []
    for w in windows:
        if w["kind"] not in SENSOR_FAULT_KINDS:
            continue
        targets = sensored if w["kind"] == "sensor_fleet" else [facing_of.get(w["target"])]
        out += [(f, int(w["start_ms"]), int(w["end_ms"]), w["kind"]) for f in targets if f is not None]
    return out

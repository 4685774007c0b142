"""History mode: many stores x days of the same store model, straight to files.

Layout under the output folder::

    scenario.json                         the scenario, seed and sizes that made the data
    master/stores.csv, products.csv, planogram.csv     ERP-style master data (header row)
    sales/daily_sales_<store>.csv         ERP daily sales export: date, store_id, sku, units, revenue_cents
    stock/stock_record_<store>.csv        ERP nightly stock record: date, store_id, sku, book_units
                                          (the store system's units at the close), counted_units
                                          (a cycle count's result that night; empty when not counted)
    events/<event type>/<store>.parquet   what reached the store broker, in send order
                                          (duplicates included, dropped ones missing)
    events/malformed/<store>.parquet      corrupted payloads as raw bytes, with their kind
    truth/<table>/<store>.parquet         shelf_units, stockouts, lost_sales, faults, windows

Event files hold the envelope (``store_id, device_id, seq, ts``), ``sent_at`` (when the
device sent it) and the type's data fields as columns; ``event_id`` is ``device_id:seq`` and
``read_events`` rebuilds contract events from them. Stores run in parallel processes; each
store's files depend only on (seed, store, scenario, sizes), so the bytes do not depend on
the number of workers.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from gondola.clock import DAY_MS
from gondola.contracts import make_event
from gondola.errors import ConfigError, StorageError
from firmware_sim import devices as dv
from firmware_sim.catalog import Catalog, Planogram, build_catalog, build_planogram
from firmware_sim.demand import intraday_profile
from firmware_sim.faults import MALFORMED_KINDS
from firmware_sim.scenario import Scenario
from firmware_sim.store import DEFAULT_START_MS, StoreSim

__all__ = ["generate", "write_master_data", "read_events", "store_ids", "HistoryResult"]

#: Parquet options: snappy, dictionaries for the id columns only, statistics only on time
#: columns (what readers filter on). Half the encoding time of the defaults with zstd.
_PARQUET = dict(
    compression="snappy",
    use_dictionary=["store_id", "device_id", "facing_id", "sku", "register", "kind", "staff_id", "delivery_id", "target",
                    "round_id"],
    write_statistics=["ts", "sent_at", "start_ms", "day_ms"],
)

#: Staff codes on handheld scans (one per restock round of the day).
_STAFF = [f"staff-{k:03d}" for k in range(64)]


def store_ids(n: int) -> list[str]:
    """``s001``, ``s002``, ... (wider when needed)."""
    width = max(3, len(str(n)))
    return [f"s{i + 1:0{width}d}" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Master data
# ---------------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _master(out_dir: Path, catalog: Catalog, layouts: list[tuple[str, Planogram, int]], scenario: Scenario) -> None:
    master = Path(out_dir) / "master"
    d = scenario.demand
    # The simulated clock is UTC and its opening hours are in it: the stores' zone is UTC.
    _write_csv(master / "stores.csv", ["store_id", "name", "registers", "facings", "sensors", "open_hour", "close_hour",
                                       "timezone", "currency"],
               ([sid, f"Store {sid}", regs, len(p), int(p.has_sensor.sum()), d.open_hour, d.close_hour, "UTC", "EUR"]
                for sid, p, regs in layouts))
    _write_csv(master / "products.csv", ["sku", "name", "category", "price_cents", "unit_weight_g", "pack_size"],
               ([r["sku"], r["name"], r["category"], r["price_cents"], r["unit_weight_g"], r["pack_size"]]
                for r in catalog.rows()))
    _write_csv(master / "planogram.csv", ["store_id", "facing_id", "sku", "capacity", "has_sensor", "aisle", "bay", "shelf"],
               ([sid, p.facing_id[i], catalog.sku[p.sku_index[i]], int(p.capacity[i]), int(p.has_sensor[i]), *loc[i]]
                for sid, p, _ in layouts for loc in [_locations(catalog, p)] for i in range(len(p))))


def _locations(catalog: Catalog, plan: Planogram) -> list[tuple[str, int, int]]:
    """Where each facing is: aisle (one per category, in planogram order), bay (10 facings
    each, along the aisle) and shelf (1 = bottom .. 5, two facings per shelf in a bay)."""
    out, aisle_of, seen = [], {}, {}
    for i in range(len(plan)):
        cat = int(catalog.category[plan.sku_index[i]])
        aisle = aisle_of.setdefault(cat, len(aisle_of) + 1)
        k = seen.get(cat, 0)
        seen[cat] = k + 1
        out.append((f"A{aisle:02d}", k // 10 + 1, (k % 10) // 2 + 1))
    return out


def write_master_data(out_dir: str | Path, sims: Iterable[StoreSim]) -> list[Path]:
    """Write ``master/stores.csv``, ``products.csv`` and ``planogram.csv`` for these stores.

    All stores must share one catalog (same seed and SKU count). Returns the files written.

    Raises:
        ConfigError: no stores, or stores with different catalogs.
        StorageError: the folder cannot be written.
    """
    sims = list(sims)
    if not sims:
        raise ConfigError("write_master_data needs at least one store")
    catalog = sims[0].catalog
    if any(not np.array_equal(s.catalog.sku, catalog.sku) or not np.array_equal(s.catalog.price_cents, catalog.price_cents)
           for s in sims):
        raise ConfigError("stores have different catalogs; use one seed and SKU count per chain")
    try:
        _master(Path(out_dir), catalog, [(s.store_id, s.plan, s.registers) for s in sims], sims[0].scenario)
    except OSError as exc:
        raise StorageError(f"cannot write master data to {out_dir}: {exc}") from exc
    return [Path(out_dir) / "master" / f for f in ("stores.csv", "products.csv", "planogram.csv")]


def write_stock_records(out_dir: str | Path, sims: Iterable[StoreSim], end_ms: int) -> list[Path]:
    """Write ``stock/stock_record_<store>.csv``, the ERP's nightly stock record of every day of
    these live stores that closed by ``end_ms`` (the last ``StoreSim.STOCK_DAYS`` days at most).
    Returns the files written (none for a store with no closed day).

    Raises:
        StorageError: the folder cannot be written.
    """
    written = []
    for sim in sims:
        days = [d for d in range(int((end_ms - sim.start_ms) // DAY_MS) + 1)
                if sim.start_ms + (d + 1) * DAY_MS <= end_ms and sim.stock_record(d) is not None]
        if not days:
            continue
        path = Path(out_dir) / "stock" / f"stock_record_{sim.store_id}.csv"
        try:
            _write_stock(path, sim, [_stock_record(sim, d) for d in days])
        except OSError as exc:
            raise StorageError(f"cannot write the stock record to {path}: {exc}") from exc
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Events as Arrow tables
# ---------------------------------------------------------------------------------------------


_DICTS: dict[int, dict[str, Any]] = {}


def _dict(pa: Any, idx: np.ndarray, values: np.ndarray | list[str]) -> Any:
    """A dictionary-encoded string column; the dictionary arrays are built once per value list."""
    key = id(values)
    cached = _DICTS.get(key)
    if cached is None or cached["values"] is not values:
        cached = _DICTS[key] = {"values": values, "array": pa.array(list(map(str, values)), pa.string())}
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(idx, dtype=np.int32)), cached["array"])


_NAMES: dict[int, tuple[StoreSim, dict[str, Any]]] = {}


def _names(sim: StoreSim) -> dict[str, Any]:
    """Per-store value lists for dictionary columns, built once per store."""
    import pyarrow as pa

    hit = _NAMES.get(id(sim))
    if hit is None or hit[0] is not sim:
        _NAMES.clear()  # one store at a time per process: drop the previous store's lists
        _DICTS.clear()
        hit = _NAMES[id(sim)] = (sim, {
            "store": [sim.store_id],
            "register": [f"r{j + 1:02d}" for j in range(sim.registers)],
            "device": pa.array(list(map(str, sim.device_ids))),
        })
    return hit[1]


def _event_table(sim: StoreSim, batch: dict[str, np.ndarray], code: int) -> Any:
    """One event type's rows of a sent batch as an Arrow table (send order kept), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sel = np.flatnonzero((batch["code"] == code) & (batch["malformed"] == 0))
    if len(sel) == 0:
        return None
    days = batch["day"][sel]
    rows = batch["row"][sel]
    cols: dict[str, np.ndarray] = {}
    names = list(sim._tables[int(days[0])][code])
    for name in names:
        parts = np.empty(len(sel), dtype=sim._tables[int(days[0])][code][name].dtype)
        for day in np.unique(days):
            m = days == day
            parts[m] = sim._tables[int(day)][code][name][rows[m]]
        cols[name] = parts
    dev = batch["dev"][sel]
    n = len(sel)
    names = _names(sim)
    table: dict[str, Any] = {
        "store_id": _dict(pa, np.zeros(n, np.int32), names["store"]),
        "device_id": _dict(pa, dev, sim.device_ids),
        "seq": pa.array(batch["seq"][sel], pa.int64()),
        "ts": pa.array(batch["ts"][sel], pa.int64()),
        "sent_at": pa.array(batch["sent_at"][sel], pa.int64()),
    }
    facing_sku = sim.truth.facing_sku
    abs_day = (sim.start_ms + days * DAY_MS) // DAY_MS
    if code == dv.POS:
        dev_names = pc.take(names["device"], pa.array(cols["dev"]))
        txn = pc.binary_join_element_wise(dev_names, pa.array(abs_day.astype(str)), pa.array(cols["txn"].astype(str)), "-")
        digits = pc.utf8_lpad(pc.cast(pa.array(cols["loyalty"], mask=cols["loyalty"] < 0), pa.string()), 8, "0")
        loyalty = pc.binary_join_element_wise(pa.scalar("L"), digits, "")
        table.update({
            "txn_id": txn,
            "register": _dict(pa, cols["dev"], names["register"]),
            "line": pa.array(cols["line"], pa.int32()),
            "sku": _dict(pa, cols["sku"], sim.catalog.sku),
            "qty": pa.array(cols["qty"], pa.int32()),
            "price_cents": pa.array(cols["price_cents"], pa.int64()),
            "kind": _dict(pa, cols["kind"], dv.KIND_NAMES),
            "loyalty_id": loyalty,
        })
    elif code == dv.SHELF:
        table.update({
            "facing_id": _dict(pa, cols["facing"], sim.plan.facing_id),
            "sku": _dict(pa, cols["facing"], facing_sku),
            "weight_g": pa.array(cols["weight_g"].astype(np.float64)),
            "units_est": pa.array(cols["units_est"], pa.int32()),
            "battery_pct": pa.array(cols["battery_pct"].astype(np.float64)),
            "rssi_dbm": pa.array(cols["rssi_dbm"], pa.int32()),
        })
    elif code == dv.RESTOCK:
        table.update({
            "facing_id": _dict(pa, cols["facing"], sim.plan.facing_id),
            "sku": _dict(pa, cols["facing"], facing_sku),
            "units_added": pa.array(cols["units_added"], pa.int32()),
            "staff_id": _dict(pa, cols["staff"], _STAFF),
        })
    elif code == dv.GAP_SCAN:
        rounds = np.char.add(np.char.add(f"{sim.store_id}-gap-", abs_day.astype(str)),
                             np.char.add("-", cols["round"].astype(str)))
        table.update({
            "facing_id": _dict(pa, cols["facing"], sim.plan.facing_id),
            "sku": _dict(pa, cols["facing"], facing_sku),
            "round_id": pa.array(rounds, pa.string()),
            "staff_id": _dict(pa, cols["staff"], _STAFF),
        })
    else:
        table.update({
            "delivery_id": pa.array(np.char.add(f"{sim.store_id}-dlv-", abs_day.astype(str)), pa.string()),
            "sku": _dict(pa, cols["sku"], sim.catalog.sku),
            "units": pa.array(cols["units"], pa.int32()),
        })
    return pa.table(table)


def _plain(table: Any) -> Any:
    """Dictionary columns as plain strings before writing.

    Parquet dictionary-encodes them again on its own; handing it Arrow dictionary arrays
    made the bytes depend on whether two batches shared one dictionary object, which
    differs between a worker process and the parent, and the files must not.
    """
    import pyarrow as pa

    schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
                        for f in table.schema])
    return table.cast(schema)


def _malformed_table(sim: StoreSim, batch: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa

    sel = np.flatnonzero(batch["malformed"] > 0)
    return pa.table({
        "store_id": pa.array([sim.store_id] * len(sel), pa.string()),
        "device_id": pa.array([str(sim.device_ids[batch["dev"][i]]) for i in sel], pa.string()),
        "topic": pa.array([sim._topics[batch["dev"][i]] for i in sel], pa.string()),
        "seq": pa.array(batch["seq"][sel], pa.int64()),
        "ts": pa.array(batch["ts"][sel], pa.int64()),
        "sent_at": pa.array(batch["sent_at"][sel], pa.int64()),
        "kind": pa.array([MALFORMED_KINDS[batch["malformed"][i] - 1] for i in sel], pa.string()),
        "payload": pa.array([sim.payload(batch, int(i)) for i in sel], pa.binary()),
    })


def _daily_sales(sim: StoreSim, day: int) -> dict[str, np.ndarray]:
    """ERP daily sales for one store-day from the POS system's own lines (net of voids and returns)."""
    pos = sim._tables[day][dv.POS]
    units = np.bincount(pos["sku"], weights=pos["qty"], minlength=len(sim.catalog)).astype(np.int64)
    revenue = np.bincount(pos["sku"], weights=pos["qty"] * pos["price_cents"], minlength=len(sim.catalog)).astype(np.int64)
    date = datetime.fromtimestamp((sim.start_ms + day * DAY_MS) / 1000, tz=timezone.utc).date().isoformat()
    rows = np.flatnonzero(units != 0)
    return {"date": np.full(len(rows), date), "sku": rows, "units": units[rows], "revenue_cents": revenue[rows]}


def _stock_record(sim: StoreSim, day: int) -> dict[str, np.ndarray]:
    """The ERP's nightly stock record for one store-day: every SKU's book units at the close and
    the night's cycle count (``-1``: not counted, written as an empty cell)."""
    rec = sim.stock_record(day)
    date = datetime.fromtimestamp((sim.start_ms + day * DAY_MS) / 1000, tz=timezone.utc).date().isoformat()
    n = len(rec["book"])
    return {"date": np.full(n, date), "sku": np.arange(n), "book_units": rec["book"], "counted_units": rec["counted"]}


def _write_stock(path: Path, sim: StoreSim, days: list[dict[str, np.ndarray]]) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    counted = pa.array(np.concatenate([d["counted_units"] for d in days]), pa.int64())
    _write_export(path, sim, days, ("date", "sku", "book_units"),
                  {"counted_units": pc.if_else(pc.less(counted, 0), pa.scalar(None, pa.int64()), counted)})


def _write_sales(path: Path, sim: StoreSim, days: list[dict[str, np.ndarray]]) -> None:
    _write_export(path, sim, days, ("date", "sku", "units", "revenue_cents"))


def _write_export(path: Path, sim: StoreSim, days: list[dict[str, np.ndarray]], names: tuple[str, ...],
                  extra: dict[str, Any] | None = None) -> None:
    """An ERP CSV export of ``days`` (columns ``names`` from them, ``store_id`` after ``date``)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    cols = {k: np.concatenate([d[k] for d in days]) for k in names}
    data = {"date": pa.array(cols["date"].astype(str)),
            "store_id": pa.array(np.full(len(cols["sku"]), sim.store_id).astype(str)),
            "sku": pa.array(sim.catalog.sku[cols["sku"]].astype(str))}
    data.update({k: pa.array(cols[k], pa.int64()) for k in names if k not in data})
    table = pa.table({**data, **(extra or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        # The header unquoted, like the master-data files and most ERP exports.
        fh.write((",".join(table.column_names) + "\n").encode())
        pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, quoting_style="none"))


# ---------------------------------------------------------------------------------------------
# One store, many stores
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    out: str
    store_id: str
    skus: int
    days: int
    seed: int
    start_ms: int
    scenario: Scenario
    sensor_share: float


def _run_store(job: _Job) -> dict[str, Any]:
    import pyarrow.parquet as pq

    out = Path(job.out)
    sim = StoreSim(job.store_id, job.skus, job.seed, job.start_ms, job.scenario, job.sensor_share, track_keys=False)
    writers: dict[str, Any] = {}
    counts = {etype: 0 for etype in dv.ETYPES}
    counts["malformed"] = 0
    sales_days: list[dict[str, np.ndarray]] = []
    stock_days: list[dict[str, np.ndarray]] = []

    def write(kind: str, table: Any) -> None:
        if table is None or table.num_rows == 0:
            return
        table = _plain(table)
        w = writers.get(kind)
        if w is None:
            path = out / "events" / kind / f"{job.store_id}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            w = writers[kind] = pq.ParquetWriter(path, table.schema, **_PARQUET)
        w.write_table(table)
        counts[kind] += table.num_rows

    for day in range(job.days):
        batch = sim.advance(job.start_ms + (day + 1) * DAY_MS - 1)
        sales_days.append(_daily_sales(sim, day))
        stock_days.append(_stock_record(sim, day))
        for code, etype in enumerate(dv.ETYPES):
            write(etype, _event_table(sim, batch, code))
        if (batch["malformed"] > 0).any():
            write("malformed", _malformed_table(sim, batch))
    for w in writers.values():
        w.close()
    _write_sales(out / "sales" / f"daily_sales_{job.store_id}.csv", sim, sales_days)
    _write_stock(out / "stock" / f"stock_record_{job.store_id}.csv", sim, stock_days)
    for name, table in sim.truth.to_tables().items():
        path = out / "truth" / name / f"{job.store_id}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_plain(table), path, **_PARQUET)
    return {"store_id": job.store_id, "events": counts, "faults": dict(sim.truth.faults),
            "oos_rate": sim.truth.oos_rate(), "pending": sim.truth.pending}


@dataclass(frozen=True)
class HistoryResult:
    """What ``generate`` wrote."""

    out_dir: Path
    stores: int
    days: int
    events: int
    events_by_type: dict[str, int]
    faults: dict[str, int]
    oos_rate: float
    seconds: float


def generate(
    out_dir: str | Path,
    *,
    stores: int,
    skus: int,
    days: int,
    seed: int,
    scenario: Scenario | None = None,
    start_ms: int = DEFAULT_START_MS,
    sensor_share: float = 0.5,
    workers: int | None = None,
    progress: bool = False,
) -> HistoryResult:
    """Simulate ``stores`` x ``days`` and write the files described in the module docstring.

    Raises:
        ConfigError: sizes out of range or ``start_ms`` not a midnight UTC.
        StorageError: the output folder cannot be written.
    """
    if stores < 1 or days < 1 or skus < 2:
        raise ConfigError(f"need stores >= 1, days >= 1, skus >= 2; got {stores}, {days}, {skus}")
    if start_ms % DAY_MS:
        raise ConfigError("start_ms must be a midnight UTC")
    if not 0.0 <= sensor_share <= 1.0:
        raise ConfigError(f"sensor_share must be in [0, 1], got {sensor_share}")
    scenario = scenario or Scenario.default()
    out = Path(out_dir)
    started = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        step_ms = scenario.devices.step_min * 60_000
        profile = intraday_profile(scenario.demand, step_ms)
        (out / "scenario.json").write_text(json.dumps(
            {"scenario": scenario.to_dict(), "seed": seed, "stores": stores, "skus": skus, "days": days,
             "start_ms": start_ms, "sensor_share": sensor_share,
             # Share of a day's expected demand in each simulation step (truth for an oracle).
             "demand_profile": {"step_ms": step_ms, "shares": [round(float(x), 9) for x in profile]}},
            indent=2, sort_keys=True) + "\n")
        catalog = build_catalog(seed, skus, scenario.demand)
        ids = store_ids(stores)
        regs = scenario.demand.registers or max(2, min(12, 2 + skus // 400))
        layouts = [(sid, build_planogram(seed, sid, catalog, scenario.replenishment, sensor_share), regs) for sid in ids]
        _master(out, catalog, layouts, scenario)
    except OSError as exc:
        raise StorageError(f"cannot write to {out}: {exc}") from exc
    jobs = [_Job(str(out), sid, skus, days, seed, start_ms, scenario, sensor_share) for sid in ids]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: list[dict[str, Any]] = []
    try:
        if workers == 1:
            for job in jobs:
                results.append(_run_store(job))
                _progress(progress, len(results), len(jobs), started)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for res in pool.map(_run_store, jobs):
                    results.append(res)
                    _progress(progress, len(results), len(jobs), started)
    except OSError as exc:
        raise StorageError(f"cannot write to {out}: {exc}") from exc
    by_type: dict[str, int] = {}
    faults: dict[str, int] = {}
    for res in results:
        for k, v in res["events"].items():
            by_type[k] = by_type.get(k, 0) + v
        for k, v in res["faults"].items():
            faults[k] = faults.get(k, 0) + v
    return HistoryResult(out, stores, days, sum(v for k, v in by_type.items() if k != "malformed"), by_type, faults,
                         float(np.mean([r["oos_rate"] for r in results])), time.perf_counter() - started)


def _progress(enabled: bool, done: int, total: int, started: float) -> None:
    from gondola.progress import on_terminal

    if not enabled or not on_terminal():  # the caller prints the summary line in logs
        return
    width = 30
    filled = width * done // total
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (total - done)
    end = "\n" if done == total else ""
    print(f"\r  stores [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {elapsed:5.1f}s  eta {eta:5.1f}s",
          end=end, file=sys.stderr, flush=True)


def read_events(out_dir: str | Path, etype: str, store_id: str) -> Iterator[dict]:
    """Contract events (``make_event``) of one store and type from a history folder, in file order.

    Raises:
        StorageError: the file is missing or unreadable.
    """
    import pyarrow.parquet as pq

    path = Path(out_dir) / "events" / etype / f"{store_id}.parquet"
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    envelope = {"store_id", "device_id", "seq", "ts", "sent_at"}
    for row in table.to_pylist():
        data = {k: v for k, v in row.items() if k not in envelope and v is not None}
        yield make_event(etype, store_id=row["store_id"], device_id=row["device_id"], seq=row["seq"], ts=row["ts"],
                         data=data)

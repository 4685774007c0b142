"""The lake runner: reads what is new, calls the pure transformations, writes in Delta commits.

Incremental and idempotent by construction:

* **Watermarks are application transactions on the target.** Every silver / gold commit
  carries ``(step<-input, input_version)``; the next run reads the input's change feed only
  after that version. Data and watermark commit together, so a crash cannot move one without
  the other, and a re-run with nothing new reads nothing and commits nothing.
* **Silver** appends the new, deduplicated rows of each event type (``cloud.lake.silver``).
* **Gold** recomputes, per store with new silver rows, a window starting at the UTC day of the
  earliest new event (or of an ongoing stock-out, whichever is earlier), with one day of
  context before it, and replaces exactly that window of each gold table (one overwrite commit
  with a predicate per table). So late and out-of-order events land in the right hours,
  episodes and days, and stores without new data are neither read nor rewritten.

Errors: ``StorageError`` from the lake, ``ExpectationFailed`` (a ``ContractError``) when a
``fail`` expectation does not hold; in both cases nothing of that step was committed.
"""

from __future__ import annotations

import functools
import operator
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from cloud.lake.engine import Engine
from cloud.lake.causes import EVIDENCE_DAYS, stockout_causes
from cloud.lake.features import (
    FEATURE_INPUTS, STATE_TABLE, feature_vectors, features, planogram_hash, planogram_of, split_by_store,
)
from cloud.lake.gold import CENSOR_MS, GOLD_SQL, gold_tables, key_columns
from cloud.lake.maintenance import RETENTION_HOURS, maintain
from cloud.lake.master import DAILY, MASTER_CHECKS, MASTER_SQL, silver_master
from cloud.lake.silver import ExpectationFailed, silver_events
from cloud.lake.storage import LakeStorage
from cloud.lake.tables import (
    BRONZE_BATCH, BRONZE_EVENTS, EXPECTATION_RESULTS, GOLD_TABLES, PARTITION_COL, QUARANTINE, SILVER_EVENT_TABLES,
    TABLES, conform, partition_columns, utc_date,
    in_window,  # re-exported: it lived here
)

__all__ = ["transform", "transform_silver", "transform_gold", "GOLD_INPUTS", "in_window", "readers_caught_up"]

_DAY = 86_400_000
#: silver tables gold reads, and the input name each has in the gold SQL
GOLD_INPUTS = {
    "silver.pos_line": "pos", "silver.shelf_reading": "readings", "silver.edge_alert": "alerts",
    "silver.edge_health": "health", "silver.shelf_restock": "restocks", "silver.inventory_delivery": "deliveries",
    "silver.shelf_check": "checks", "silver.gap_scan": "gaps",
}
_EVENTS_STEP = "silver.events"
_MASTER_STEP = "silver.master"


def _app(step: str, source: str) -> str:
    return f"{step}<-{source}"


def transform_silver(storage: LakeStorage, engine: Engine, *, run_id: str, now_ms: int) -> dict:
    """Bronze -> silver for events and master data; returns new rows per table and stats."""
    report: dict = {"rows": defaultdict(int), "stats": {"bronze_rows_read": 0, "duplicates": 0, "quarantined": 0, "late": 0}}
    # ---- master data first (silver checks event SKUs against it) ---------------------------------------------------------------------
    _transform_master(storage, engine, report, run_id=run_id, now_ms=now_ms)
    # ---- events --------------------------------------------------------------------------
    app = _app(_EVENTS_STEP, BRONZE_EVENTS)
    targets = list(SILVER_EVENT_TABLES.values()) + [QUARANTINE, EXPECTATION_RESULTS]
    marks = {t: storage.txn_version(t, app) for t in targets}
    known = _known_skus(storage)
    # An engine whose workers write files (Spark: ``stage``) reads bronze and silver keys itself
    # and hands back relations whose rows never come to this process.
    spread = hasattr(engine, "stage")
    for mark in sorted(set(marks.values())):
        bronze, version = engine.read_changes(storage, BRONZE_EVENTS, mark) if spread else \
            storage.changes(BRONZE_EVENTS, mark)
        if bronze is None or version <= mark:
            continue
        mine = [t for t in targets if marks[t] == mark]
        if spread:
            existing = {t: _keys_frame(engine, storage, t, bronze) for t in SILVER_EVENT_TABLES.values() if t in mine}
            if QUARANTINE in mine and storage.exists(QUARANTINE):
                existing[QUARANTINE] = _keys_frame(engine, storage, QUARANTINE, bronze)
        else:
            existing = {t: _keys(storage, t, bronze) for t in SILVER_EVENT_TABLES.values() if t in mine}
            if QUARANTINE in mine:
                existing[QUARANTINE] = _quarantine_keys(storage, bronze)
        try:
            result = silver_events(engine, bronze, existing, run_id=run_id, run_at=now_ms, known_skus=known)
        except ExpectationFailed as exc:
            # Nothing of the step is written, but the failure is on record (no watermark moves).
            if exc.results is not None and exc.results.num_rows:
                storage.write(EXPECTATION_RESULTS, exc.results, description=TABLES[EXPECTATION_RESULTS].doc)
            raise
        report["stats"]["bronze_rows_read"] += result["stats"]["bronze_rows"]
        outputs = dict(result["tables"])
        outputs[QUARANTINE] = result["quarantine"]
        outputs[EXPECTATION_RESULTS] = result["expectations"]
        staged = engine.stage_all(storage, {t: outputs[t] for t in mine}) if spread else outputs  # one job
        for t in mine:
            rows = staged[t]
            if rows.num_rows == 0 and storage.exists(t):
                _move_watermark(storage, t, app, mark, version)  # no empty commit on every run
                continue
            if isinstance(rows, pa.Table):
                storage.write(t, rows, txns=[(app, version)], description=TABLES[t].doc)
            else:  # files the engine's workers wrote: appended in one commit
                rows.commit(storage, window={}, time_col=TABLES[t].time_col, txns=[(app, version)])
            report["rows"][t] += rows.num_rows
        for rel in result.get("cached", ()):
            engine.release(rel)
        # Counts of this group's tables only (a lagging target re-reads rows others counted).
        res = result["expectations"]
        for name, key in (("unique_device_seq", "duplicates"), ("in_device_order", "late")):
            report["stats"][key] += sum(r["failed"] for r in res.to_pylist()
                                        if r["expectation"] == name and r["table_name"] in mine)
        if QUARANTINE in mine:
            report["stats"]["quarantined"] += result["stats"]["quarantined"]
    return report


def _keys_frame(engine, storage: LakeStorage, table: str, bronze):
    """``_keys`` / ``_quarantine_keys`` as an engine relation read by the engine's workers."""
    rows = engine.read_delta(storage, table)
    have = engine.columns(rows)
    if table == QUARANTINE:
        if "row_key" not in have:
            return None
        cols, also = "row_key", "device_id IS NULL OR "
    else:
        cols, also = ", ".join(c for c in ("device_id", "epoch", "seq", "ts") if c in have), ""
    return engine.frame(f"SELECT {cols} FROM t WHERE {also}device_id IN (SELECT device_id FROM bronze)",
                        {"t": rows, "bronze": bronze})


def _transform_master(storage: LakeStorage, engine: Engine, report: dict, *, run_id: str, now_ms: int) -> None:
    """Bronze batch rows -> silver master tables and daily sales (see ``cloud.lake.master``)."""
    app = _app(_MASTER_STEP, BRONZE_BATCH)
    for table, (kind, _key, _proj) in MASTER_SQL.items():
        mark = storage.txn_version(table, app)
        batch, version = storage.changes(BRONZE_BATCH, mark)
        if batch is None or version <= mark:
            continue
        kinds = set(batch["kind"].to_pylist())
        if kind not in kinds:
            _move_watermark(storage, table, app, mark, version)
            continue
        rows, rejected, accepted, checked = silver_master(engine, batch, table)
        if not accepted and storage.exists(table):
            # a broken snapshot: the previous one stays; the watermark moves past the file
            storage.write(table, _empty(table), txns=[(app, version)])
        elif table in DAILY:
            predicate = _days_predicate(rows) if storage.exists(table) else None
            mode = "overwrite" if predicate else "append"
            storage.write(table, rows, mode=mode, predicate=predicate, txns=[(app, version)], description=TABLES[table].doc)
        else:
            storage.write(table, rows, mode="overwrite", txns=[(app, version)], description=TABLES[table].doc)
        report["rows"][table] += rows.num_rows
        sub_app = _app(_MASTER_STEP + ":" + table, BRONZE_BATCH)
        if rejected.num_rows:
            q = _with_run(conform(QUARANTINE, rejected), run_id)
            storage.write(QUARANTINE, q, txns=[(sub_app, version)])
            report["rows"][QUARANTINE] += q.num_rows
            report["stats"]["quarantined"] += q.num_rows
        reasons = [set(r.split(",")) for r in rejected["reasons"].to_pylist()]
        results = [{"run_id": run_id, "run_at": now_ms, "table_name": table, "expectation": name, "action": "drop",
                    "checked": checked, "failed": sum(name in r for r in reasons)} for name in MASTER_CHECKS]
        if table not in DAILY:
            results.append({"run_id": run_id, "run_at": now_ms, "table_name": table, "expectation": "snapshot_accepted",
                            "action": "drop", "checked": 1, "failed": 0 if accepted else 1})
        storage.write(EXPECTATION_RESULTS, conform(EXPECTATION_RESULTS, pa.Table.from_pylist(results)),
                      txns=[(sub_app, version)])
        report["rows"][EXPECTATION_RESULTS] += len(results)


def _with_run(q: pa.Table, run_id: str) -> pa.Table:
    return q.set_column(q.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * q.num_rows, pa.string()))


#: a target with no new rows gets an empty commit (to move its watermark) only when it trails
#: its input by this many versions: no empty commit per run, and bounded re-reading
WATERMARK_LAG = 50


def _move_watermark(storage: LakeStorage, table: str, app: str, mark: int, version: int) -> bool:
    """Record that ``table`` has consumed its input up to ``version`` although nothing was new for it."""
    if not storage.exists(table) or version - mark < WATERMARK_LAG:
        return False
    storage.write(table, _empty(table), txns=[(app, version)])
    return True


def _empty(table: str) -> pa.Table:
    return conform(table, pa.table({"_": pa.array([], pa.int8())}).drop(["_"]))


def _quote(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _days_predicate(rows: pa.Table) -> str | None:
    """Rows to replace for re-exported days (sales, stock record): per store, the dates the new rows cover."""
    days: dict[str, set[str]] = defaultdict(set)
    for store, date in zip(rows["store_id"].to_pylist(), rows["date"].to_pylist()):
        days[store].add(date)
    if not days:
        return None
    return " OR ".join(f"(store_id = {_quote(s)} AND date IN ({', '.join(_quote(d) for d in sorted(ds))}))"
                       for s, ds in sorted(days.items()))


def _known_skus(storage: LakeStorage) -> pa.Table | None:
    """SKUs of silver.products and silver.planogram; ``None`` while no master data is loaded."""
    parts = [t for t in (storage.read(name, columns=["sku"]) for name in ("silver.products", "silver.planogram"))
             if t is not None and t.num_rows]
    return pa.concat_tables(parts) if parts else None


def _quarantine_keys(storage: LakeStorage, bronze: pa.Table) -> pa.Table | None:
    """``row_key`` of quarantined rows of the devices in ``bronze`` (and of rows without a device)."""
    if not storage.exists(QUARANTINE):
        return None
    devices = pc.unique(bronze["device_id"].drop_null())
    flt = ds.field("device_id").is_null() | ds.field("device_id").isin(devices)
    rows = storage.read(QUARANTINE, filter=flt)
    return rows.select(["row_key"]) if rows is not None and "row_key" in rows.column_names else None


def _keys(storage: LakeStorage, table: str, bronze: pa.Table) -> pa.Table | None:
    """Existing (device_id, epoch, seq, ts) of the devices present in ``bronze`` (for dedup;
    a table written before epochs has no ``epoch`` column: silver reads that as epoch 0)."""
    devices = pc.unique(bronze["device_id"].drop_null())
    if len(devices) == 0:
        return None
    dt = storage.open(table)
    names = {f.name for f in dt.schema().fields} if dt is not None else set()
    cols = ["device_id", "epoch", "seq", "ts"] if "epoch" in names else ["device_id", "seq", "ts"]
    return storage.read(table, columns=cols, filter=ds.field("device_id").isin(devices))


def _windows(storage: LakeStorage, marks: dict[str, dict[str, int]],
             engine=None) -> tuple[dict[str, int], dict[str, int]]:
    """Per store: the cutoff (first day to rebuild) from new silver rows; and input versions.
    With an ``engine`` whose workers read the lake (``read_changes``) only the per-store first
    instants come to this process."""
    versions: dict[str, int] = {}
    earliest: dict[str, int] = {}
    groups, changed = [], {}
    for table in GOLD_INPUTS:
        since = min(m[table] for m in marks.values())
        if engine is not None:
            rows, version = engine.read_changes(storage, table, since)
            if rows is not None:
                changed[f"c{len(changed)}"] = rows
        else:
            rows, version = storage.changes(table, since, columns=["store_id", "ts"])
            if rows is not None and rows.num_rows:
                groups.append(rows.group_by("store_id").aggregate([("ts", "min")]))
        versions[table] = version
    if changed:  # one job for every input's new rows (a job per input costs more than the rows)
        union = " UNION ALL ".join(f"SELECT store_id, ts FROM {name}" for name in changed)
        groups.append(engine.run(f"SELECT store_id, MIN(ts) AS ts_min FROM ({union}) u GROUP BY store_id", changed))
    for grouped in groups:
        for store, ts in zip(grouped["store_id"].to_pylist(), grouped["ts_min"].to_pylist()):
            if store is not None and ts is not None:
                earliest[store] = min(earliest.get(store, ts), ts)
    cutoff = {s: ts - ts % _DAY for s, ts in earliest.items()}
    # An ongoing stock-out must be re-examined when its facing reports again, but no further back
    # than REOPEN_DAYS: one facing empty for months must not make every run rewrite its store.
    if cutoff:
        bound = {s: c - REOPEN_DAYS * _DAY for s, c in cutoff.items()}
        open_ = storage.read("gold.stockouts", columns=["store_id", "start_ms"],
                             filter=ds.field("ongoing") & ds.field("store_id").isin(list(cutoff)))
        if open_ is not None and open_.num_rows:
            g = open_.group_by("store_id").aggregate([("start_ms", "min")])
            for store, start in zip(g["store_id"].to_pylist(), g["start_ms_min"].to_pylist()):
                cutoff[store] = min(cutoff[store], max(start - start % _DAY, bound[store]))
    return cutoff, versions


def _by_cut(cutoff: dict[str, Any]) -> list[tuple[Any, list[str]]]:
    """Stores grouped by their cutoff (a thousand stores usually share one or two; a cutoff is
    epoch ms, or a date for the stock record)."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for store, cut in sorted(cutoff.items()):
        groups[cut].append(store)
    return sorted(groups.items())


def _window_filter(cutoff: dict[str, int], context_ms: int, col: str = "ts") -> ds.Expression:
    """Rows of each store from its cutoff less ``context_ms``: one term per distinct cutoff
    (a term per store made a thousand-store filter the slowest part of a run)."""
    expr = None
    for cut, stores in _by_cut(cutoff):
        e = ds.field("store_id").isin(stores) & (ds.field(col) >= cut - context_ms)
        expr = e if expr is None else expr | e
    return expr


def _window_predicate(cutoff: dict[str, int], col: str, *, partitioned: bool = False) -> str:
    """The same window as a Delta delete predicate (SQL); ``partitioned``: with the date
    partition's bound too (implied by ``col >= cut``), so the delete reads only those partitions."""
    def day(cut: int) -> str:
        return f" AND {PARTITION_COL} >= '{utc_date(cut)}'" if partitioned else ""

    return " OR ".join(f"(store_id IN ({', '.join(_quote(s) for s in stores)}) AND {col} >= {cut}{day(cut)})"
                       for cut, stores in _by_cut(cutoff))


def _keep_window(rows: pa.Table, cutoff: dict[str, int], col: str) -> pa.Table:
    return rows.filter(in_window(rows, cutoff, col)) if rows.num_rows else rows


def transform_gold(storage: LakeStorage, engine: Engine, *, context_days: int = 1,
                   with_features: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    """Silver -> gold for stores with new silver rows; returns rows written per table."""
    report: dict = {"rows": {}, "stores": 0, "silver_rows_read": 0}
    targets = [t for t in GOLD_TABLES if with_features or t not in _FEATURE_TABLES]
    marks = {t: {i: storage.txn_version(t, _app("gold", i)) for i in GOLD_INPUTS} for t in targets}
    cutoff, versions = _windows(storage, marks, engine if hasattr(engine, "stage") else None)
    behind = [t for t in targets if any(marks[t][i] < versions[i] for i in GOLD_INPUTS)]
    if any(t in behind for t in _FEATURE_TABLES):  # computed together: written together
        behind = [t for t in targets if t in behind or t in _FEATURE_TABLES]
    if not behind or not cutoff:
        return report
    # Labels use evidence from up to a day after a row (cloud.lake.labels.EVIDENCE_MS): feature
    # rows are recomputed from LABEL_REACH_DAYS before the cutoff, with the evidence before them.
    feature_cut = {s: c - LABEL_REACH_DAYS * _DAY for s, c in cutoff.items()}
    context_ms = (max(context_days, LABEL_CONTEXT_DAYS) if "gold.features" in behind else context_days) * _DAY
    # Alert outcomes read evidence up to an hour past an alert's horizon (a gap scan after midnight
    # judges an alert of the evening before): they, and the day figures made of them, are
    # recomputed from ALERT_REACH_DAYS before the cutoff, with a day of context before that.
    alert_cut = {s: c - ALERT_REACH_DAYS * _DAY for s, c in cutoff.items()}
    if any(t in behind for t in _ALERT_TABLES):
        context_ms = max(context_ms, (ALERT_REACH_DAYS + context_days) * _DAY)
    # An engine whose workers write files (Spark: ``stage``) reads the silver windows itself: the
    # gold SQL's rows stay on its workers. The feature replay's inputs are read here (Arrow).
    spread = hasattr(engine, "stage")
    inputs: dict[str, pa.Table] = {}
    if not spread:
        for table, name in GOLD_INPUTS.items():
            rows = storage.read(table, filter=_window_filter(cutoff, context_ms))
            inputs[name] = rows if rows is not None else _empty(table)
        for table in ("silver.products", "silver.planogram"):
            rows = storage.read(table)
            inputs[table.split(".")[1]] = rows if rows is not None else _empty(table)
    if spread:
        since = _window_predicate({s: c - context_ms for s, c in cutoff.items()}, "ts")
        frames = {name: engine.cache(engine.frame(f"SELECT * FROM t WHERE {since}", {"t": engine.read_delta(storage, t)}))
                  for t, name in GOLD_INPUTS.items()}
        frames |= {t.split(".")[1]: engine.read_delta(storage, t) for t in ("silver.products", "silver.planogram")}
        # one job counts them all (and fills the caches the gold SQL reads next)
        union = " UNION ALL ".join(f"SELECT COUNT(*) AS n FROM {name}" for name in frames)
        report["silver_rows_read"] = int(sum(engine.run(f"SELECT * FROM ({union}) u", frames)["n"].to_pylist()))
        planogram = storage.read("silver.planogram")  # master data: small, the driver decides with it
        inputs["planogram"] = planogram if planogram is not None else _empty("silver.planogram")
    else:
        frames = inputs
        report["silver_rows_read"] = sum(t.num_rows for t in inputs.values())
    frames["keys"] = key_columns(engine, *(frames[n] for n in GOLD_INPUTS.values()))
    outputs = gold_tables(engine, frames)
    if "gold.features" in behind:
        if progress:
            progress("gold features")
        feature_inputs, snapshots = _feature_inputs(storage, inputs, feature_cut, context_ms - LABEL_REACH_DAYS * _DAY,
                                                    engine=engine, frames=frames if spread else None)
        # An engine may run the Python replay itself (Spark: one task per store, which also
        # writes the rows as Parquet files where the task runs: the runner then commits them).
        replay = getattr(engine, "features", None)
        outputs["gold.features"], outputs[STATE_TABLE] = (replay or features)(
            feature_inputs, outputs["gold.stockouts"], cutoff=feature_cut, snapshots=snapshots,
            **({"storage": storage} if replay else {}))
    if progress:
        progress("gold writes")
    txns = [(_app("gold", i), v) for i, v in versions.items()]
    if "gold.features" in behind:
        _upgrade_features(storage)
    if "gold.stockouts" in behind:
        _upgrade_stockouts(storage, engine)
    if "gold.model_performance" in behind:
        _upgrade_model_performance(storage, engine)
    # Causes look EVIDENCE_DAYS after a stock-out: recompute that far back (they come last).
    cause_cut = {s: c - EVIDENCE_DAYS * _DAY for s, c in cutoff.items()}
    cached = [outputs["gold.stockouts"], outputs["gold.alert_outcomes"]]
    if spread:  # the workers write every table's window in one job (the commits follow, table by table)
        windows = {}
        for t in behind:
            if t in outputs and not isinstance(outputs[t], pa.Table) and not hasattr(outputs[t], "commit"):
                cut = _window_predicate(_window_of(t, cutoff, feature_cut, alert_cut), TABLES[t].time_col)
                windows[t] = engine.frame(f"SELECT * FROM t WHERE {cut}", {"t": outputs[t]})
        outputs.update(engine.stage_all(storage, windows))
    for table in sorted(behind, key=lambda t: t == "gold.stockout_causes"):
        tcol = TABLES[table].time_col
        window = cause_cut if table == "gold.stockout_causes" else _window_of(table, cutoff, feature_cut, alert_cut)
        if table == "gold.stockout_causes":
            outputs[table] = _causes(storage, cause_cut)
        predicate = _window_predicate(window, tcol)
        out = outputs[table]
        if spread and not isinstance(out, pa.Table) and not hasattr(out, "commit"):  # the workers write the window
            out = engine.stage(storage, table, engine.frame(f"SELECT * FROM t WHERE {predicate}", {"t": out}))
        if hasattr(out, "commit"):  # files an engine's workers wrote (StagedFiles)
            report["rows"][table] = out.commit(storage, window=window, time_col=tcol, txns=txns)
            continue
        rows = _keep_window(out, window, tcol)
        exists = storage.exists(table)
        if partition_columns(table):  # the delete touches only the partitions of the window
            predicate = _window_predicate(window, tcol, partitioned=True)
        storage.write(table, rows, mode="overwrite" if exists else "append", predicate=predicate if exists else None,
                      txns=txns, description=TABLES[table].doc)
        report["rows"][table] = rows.num_rows
    if spread:
        for rel in list(frames.values()) + cached:
            engine.release(rel)
    report["stores"] = len(cutoff)
    return report


_FEATURE_TABLES = ("gold.features", STATE_TABLE)
#: gold.alert_outcomes (and gold.model_performance, per day of its rows) are recomputed from this
#: many days before a store's cutoff: an alert's evidence reaches an hour past its horizon.
_ALERT_TABLES = ("gold.alert_outcomes", "gold.model_performance")
ALERT_REACH_DAYS = 1


def _window_of(table: str, cutoff: dict[str, int], feature_cut: dict[str, int],
               alert_cut: dict[str, int]) -> dict[str, int]:
    """The first instant per store whose rows of ``table`` a run rewrites."""
    return feature_cut if table in _FEATURE_TABLES else alert_cut if table in _ALERT_TABLES else cutoff
#: Feature rows (and their labels) are recomputed from this many days before a store's cutoff: new
#: evidence changes labels up to EVIDENCE_MS + H (22 h) before it (cloud.lake.labels).
LABEL_REACH_DAYS = 1
#: ... and those rows' labels read evidence from up to 2 x EVIDENCE_MS (40 h) before them: the
#: silver window of a run that computes features starts this many days before the cutoff.
LABEL_CONTEXT_DAYS = 3
#: how many days before its new data a store's window may reach to re-examine an ongoing stock-out.
#: A stock-out open longer than this keeps its row (start, "ongoing") as last computed; the
#: episode's later part is not re-examined (documented in docs/lake.md).
REOPEN_DAYS = 7
#: how far back before a store's cutoff a feature-state snapshot is looked for (older: replay history)
SNAPSHOT_LOOKBACK_DAYS = 31


def _feature_inputs(storage: LakeStorage, inputs: dict[str, pa.Table], cutoff: dict[str, int],
                    context_ms: int, *, engine=None, frames: dict | None = None) -> tuple[dict, dict[str, dict]]:
    """The feature replay's inputs: each store's newest usable state snapshot at or before its
    cutoff, and for stores that have none, their silver history before the window.

    With ``frames`` (an engine whose workers read the lake: relations of the silver windows) the
    event inputs are relations too (the history read by the engine), and ``inputs`` holds only
    the planogram."""
    if frames is not None:
        readings = frames["readings"]
        planogram = inputs["planogram"]
        if planogram.num_rows == 0:  # no master data: the facings the sensors report on (small)
            planogram = engine.run("SELECT store_id, facing_id, MAX(sku) AS sku, MAX(units_est) AS capacity "
                                   "FROM readings GROUP BY store_id, facing_id", {"readings": readings})
        inputs = {k: frames[k] for k in FEATURE_INPUTS} | {"planogram": planogram}
    plans = inputs["planogram"] if frames is not None else planogram_of(inputs)
    by_store = split_by_store(plans)
    digests = {s: planogram_hash(by_store.get(s, plans.slice(0, 0))) for s in cutoff}
    snapshots: dict[str, dict] = {}
    if storage.exists(STATE_TABLE):
        flt = None
        for cut, stores in _by_cut(cutoff):
            e = (ds.field("store_id").isin(stores) & (ds.field("day_ms") <= cut)
                 & (ds.field("day_ms") >= cut - SNAPSHOT_LOOKBACK_DAYS * _DAY))
            flt = e if flt is None else flt | e
        rows = storage.read(STATE_TABLE, filter=flt)
        for r in (rows.to_pylist() if rows is not None else []):
            if r["planogram_hash"] == digests.get(r["store_id"]) and \
                    r["day_ms"] > snapshots.get(r["store_id"], {}).get("day_ms", -1):
                snapshots[r["store_id"]] = r
    # From where each store's events are needed: its snapshot's midnight, else its first event.
    since = {s: (snapshots[s]["day_ms"] if s in snapshots else -1) for s in cutoff}
    extra = {s: v for s, v in since.items() if v < cutoff[s] - context_ms}
    out = dict(inputs)
    if extra:
        # grouped by (since, cutoff): a first run asks the same of every store
        groups: dict[tuple[int, int], list[str]] = defaultdict(list)
        for store, start in sorted(extra.items()):
            groups[(start, cutoff[store])].append(store)
        flt, sql = None, []
        for (start, cut), stores in sorted(groups.items()):
            e = ds.field("store_id").isin(stores) & (ds.field("ts") >= start) & (ds.field("ts") < cut - context_ms)
            flt = e if flt is None else flt | e
            sql.append(f"(store_id IN ({', '.join(_quote(s) for s in stores)}) AND ts >= {start} "
                       f"AND ts < {cut - context_ms})")
        for table in ("silver.shelf_reading", "silver.pos_line", "silver.shelf_restock"):
            name = GOLD_INPUTS[table]
            if frames is not None:  # read by the engine's workers
                out[name] = engine.frame(f"SELECT * FROM w UNION ALL SELECT * FROM (SELECT * FROM h WHERE {' OR '.join(sql)}) o",
                                         {"w": engine.conform(table, inputs[name]),
                                          "h": engine.conform(table, engine.read_delta(storage, table))})
                continue
            older = storage.read(table, filter=flt)
            if older is not None and older.num_rows:
                out[name] = pa.concat_tables([conform(table, older), conform(table, inputs[name])])
    return out, snapshots


def readers_caught_up(storage: LakeStorage, table: str, retention_hours: float = 0) -> bool:
    """Whether VACUUM with ``retention_hours`` leaves every file that a step reading ``table``'s
    change data feed still needs.

    A reader needs the files added after its watermark. VACUUM takes only files removed more than
    ``retention_hours`` ago, and a file is removed after it was added, so a reader whose first
    unread commit is younger than that cannot lose one. This matters for readers that had nothing
    new: they move their watermark only every ``WATERMARK_LAG`` versions (no empty commit per run),
    and with ``retention_hours=0`` (caught up exactly) they would hold VACUUM back indefinitely.
    """
    if table == BRONZE_EVENTS:
        readers = [(t, _app(_EVENTS_STEP, BRONZE_EVENTS)) for t in
                   list(SILVER_EVENT_TABLES.values()) + [QUARANTINE, EXPECTATION_RESULTS]]
    elif table == BRONZE_BATCH:
        readers = [(t, _app(_MASTER_STEP, BRONZE_BATCH)) for t in MASTER_SQL]
    elif table in GOLD_INPUTS:
        readers = [(t, _app("gold", table)) for t in GOLD_TABLES]
    else:
        return True
    current = storage.version(table)
    behind = min(storage.txn_version(t, app) for t, app in readers)
    if behind >= current:
        return True
    if retention_hours <= 0:
        return False
    # Delta stamps removals with wall-clock time, so the cut-off is wall-clock time too.
    cutoff_ms = time.time() * 1000 - retention_hours * 3_600_000
    history = storage.open(table).history(limit=current - behind)
    unread = [h for h in history if h.get("version", -1) > behind]
    if not unread or min(h["version"] for h in unread) != behind + 1:
        return False  # the first unread commit's log entry is gone (log retention): older than any window
    return min(unread, key=lambda h: h["version"])["timestamp"] > cutoff_ms


def _upgrade_features(storage: LakeStorage) -> None:
    """A ``gold.features`` table written with JSON text vectors (``features_json``) or without
    the label evidence columns is rewritten once in the current schema, so windows can be replaced in it again."""
    import json

    import numpy as np

    dt = storage.open("gold.features")
    names = dt.schema().to_arrow().names if dt is not None else []
    if dt is None or ("features_json" not in names and "label_without_sensor" in names):
        return
    new = storage.read("gold.features")
    if "features_json" in names:
        vectors = np.array([json.loads(v) for v in new["features_json"].to_pylist()], dtype=np.float32)
        new = new.drop_columns(["features_json"]).append_column(
            "features", feature_vectors(vectors.reshape(new.num_rows, -1)))
    # Rows from before label_source keep their label with a NULL source (training falls back to
    # models.retrain.observed_labels for them); new windows carry the column.
    storage.write("gold.features", conform("gold.features", new), mode="overwrite", replace_schema=True)


#: start_censored of a gold.stockouts table from before the column: the gold SQL's rule (no
#: reading of the facing within CENSOR_MS before the start), and no alert for a censored row
_CENSORED_SQL = f"""
WITH seen AS (
  SELECT so.store_id, so.facing_id, so.start_ms, COUNT(r.ts) AS readings_before
  FROM stockouts so LEFT JOIN readings r
    ON r.store_id = so.store_id AND r.facing_id = so.facing_id AND r.ts < so.start_ms
   AND r.ts >= so.start_ms - {CENSOR_MS}
  GROUP BY so.store_id, so.facing_id, so.start_ms)
SELECT so.*, seen.readings_before = 0 AS start_censored
FROM stockouts so JOIN seen ON seen.store_id = so.store_id AND seen.facing_id = so.facing_id
 AND seen.start_ms = so.start_ms"""


def _upgrade_stockouts(storage: LakeStorage, engine: Engine) -> None:
    """A ``gold.stockouts`` table written before ``start_censored`` is rewritten once with it
    (from the silver readings before each start), so its windows can be replaced again."""
    dt = storage.open("gold.stockouts")
    if dt is None or "start_censored" in dt.schema().to_arrow().names:
        return
    old = storage.read("gold.stockouts")
    readings = storage.read("silver.shelf_reading", columns=["store_id", "facing_id", "ts"],
                            filter=ds.field("store_id").isin(pc.unique(old["store_id"])))
    new = engine.run(_CENSORED_SQL, {"stockouts": old, "readings": readings if readings is not None else
                                     _empty("silver.shelf_reading").select(["store_id", "facing_id", "ts"])})
    censored = new["start_censored"]
    for col in ("alerted", "alert_ms", "alert_lead_min"):  # unknown when the start is unknown
        new = new.set_column(new.schema.get_field_index(col), col,
                             pc.if_else(censored, pa.nulls(new.num_rows, new[col].type), new[col]))
    storage.write("gold.stockouts", conform("gold.stockouts", new), mode="overwrite", replace_schema=True)


def _upgrade_model_performance(storage: LakeStorage, engine: Engine) -> None:
    """A ``gold.model_performance`` table written before ``known_start`` carries the day's
    stock-outs on every scorer's row (a sum over scorers counted each once per scorer): it is
    rewritten once, whole, in the current grain (stock-outs on the store-day's own row) from
    ``gold.alert_outcomes`` and ``gold.stockouts``, the two tables its query reads (so it equals
    a full rebuild); the run's window is then replaced in it as usual."""
    dt = storage.open("gold.model_performance")
    if dt is None or "known_start" in dt.schema().to_arrow().names:
        return
    inputs = {}
    for name, table in (("alert_outcomes", "gold.alert_outcomes"), ("stockouts", "gold.stockouts")):
        rows = storage.read(table)
        inputs[name] = conform(table, rows if rows is not None else pa.table({}))
    new = engine.run(GOLD_SQL["gold.model_performance"], inputs)
    storage.write("gold.model_performance", conform("gold.model_performance", new), mode="overwrite",
                  replace_schema=True)


def _causes(storage: LakeStorage, cut: dict[str, int]) -> pa.Table:
    """``gold.stockout_causes`` for stock-outs from ``cut`` on, with evidence from EVIDENCE_DAYS before."""
    evidence = _window_filter(cut, EVIDENCE_DAYS * _DAY)
    stockouts = storage.read("gold.stockouts", filter=_window_filter(cut, 0, "start_ms"))
    # the book test needs the stock record, the shelves and the returns of the stock-outs' days
    # (a day before the cut: a store's local day may start before UTC midnight)
    days = _window_filter(cut, _DAY)
    stock = None
    if storage.exists("silver.stock_record"):
        since = {s: datetime.fromtimestamp((c - _DAY) / 1000, timezone.utc).date().isoformat() for s, c in cut.items()}
        terms = [ds.field("store_id").isin(stores) & (ds.field("date") >= day) for day, stores in _by_cut(since)]
        stock = storage.read("silver.stock_record", filter=functools.reduce(operator.or_, terms)) if terms else None
    return stockout_causes(stockouts if stockouts is not None else _empty("gold.stockouts"),
                           storage.read("silver.shelf_restock", filter=evidence),
                           storage.read("silver.inventory_delivery", filter=evidence),
                           storage.read("silver.planogram"), storage.read("silver.stores"),
                           stock=stock,
                           shelf_state=storage.read("gold.shelf_state", filter=_window_filter(cut, _DAY, "hour_ms"))
                           if stock is not None else None,
                           returns=storage.read("silver.pos_line", columns=["store_id", "sku", "ts", "qty"],
                                                filter=days & (ds.field("kind") == "return")) if stock is not None else None)



def transform(storage: LakeStorage, engine: Engine, *, run_id: str | None = None,
              clock: Callable[[], int] | None = None, context_days: int = 1, with_features: bool = True,
              progress: Callable[[str], None] | None = None, maintenance: bool = True) -> dict:
    """Bronze -> silver -> gold, incrementally, then compaction and VACUUM of the tables it
    touched (``cloud.lake.maintenance``; ``maintenance=False`` skips them). Returns new rows per
    table, silver stats and what upkeep did.

    ``versions`` maps each table the run wrote (and both bronze tables, its inputs) to
    ``[version before, version after]``.

    Raises:
        StorageError: a lake read or write failed.
        ExpectationFailed: a ``fail`` expectation did not hold (nothing of that step written).
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    now = (clock or (lambda: time.time_ns() // 1_000_000))()
    # Tables an older version wrote unpartitioned are rewritten in their partitions first (once;
    # a commit readers of the change feed skip: no row changed).
    repartitioned = [t for t in TABLES if partition_columns(t) and storage.repartition(t)]
    before = {t: storage.version(t) for t in TABLES}
    if progress:
        progress("silver")
    silver = transform_silver(storage, engine, run_id=run_id, now_ms=now)
    if progress:
        progress("gold")
    gold = transform_gold(storage, engine, context_days=context_days, with_features=with_features, progress=progress)
    rows = {k: v for k, v in silver["rows"].items()} | gold["rows"]
    written = [t for t in TABLES if storage.version(t) != before[t]]
    # Compaction and VACUUM of what this run touched (dataChange = false: no watermark moves).
    upkeep = (maintain(storage, written, vacuum_ok=lambda t: readers_caught_up(storage, t, RETENTION_HOURS))
              if maintenance else {})
    after = {t: storage.version(t) for t in TABLES}
    # Table versions read and written: what lineage (catalog, model registry) pins a run to.
    versions = {t: [before[t], after[t]] for t in TABLES if after[t] != before[t] or t.startswith("bronze.")}
    return {"run_id": run_id, "rows": rows, **silver["stats"], "gold_stores": gold["stores"], "maintenance": upkeep,
            "repartitioned": repartitioned,
            "silver_rows_read": gold["silver_rows_read"], "versions": versions}

"""Bronze -> silver: typed tables per event type, deduplicated, masked, with expectations.

Pure functions over Arrow tables run by an ``Engine``; ``cloud.lake.runner`` reads and writes.

Expectations follow Delta Live Tables' three actions: ``warn`` keeps the row and counts it,
``drop`` moves it to ``silver.quarantine`` with the names of the failed expectations, ``fail``
stops the run before anything is written (``ExpectationFailed``). Every expectation's counts
are recorded per run in ``silver.expectation_results``; so are duplicates (action ``dedup``,
removed, not quarantined: a duplicate is a retry, not bad data) and late rows (``warn``:
accepted, gold recomputes the windows they touch).

One contract on both sides: every line is also judged by ``gondola.contracts.parse_event``, the
validator the gateway applies, as the ``contract`` expectation (drop; its quarantine reason names
the contract's reason, e.g. ``contract:wrong_type``; vectorized in ``cloud.lake.verdict``). So the cloud accepts exactly the events a
gateway accepts; the SQL expectations before it name the common problems field by field.

Identity is ``(device_id, epoch, seq)``: a device whose counter restarted sends a new epoch
(missing epoch = 0), and silver keeps both sequences.

Personal data: a clear ``loyalty_id`` must never reach the cloud (the gateway pseudonymizes it).
Silver never extracts it; the ``no_clear_loyalty_id`` expectation counts offenders, and the
clear value is masked in anything that keeps the raw text (the quarantine).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from cloud.lake.casts import sql_double, sql_int
from cloud.lake.engine import Engine
from cloud.lake.tables import EXPECTATION_RESULTS, PARTITION_COL, QUARANTINE, SILVER_EVENT_TABLES, TABLES, conform
from cloud.lake.verdict import contract_verdicts
from gondola.contracts import EVENT_TYPES
from gondola.errors import ContractError

__all__ = ["Expectation", "EXPECTATIONS", "ExpectationFailed", "silver_events"]


class ExpectationFailed(ContractError):
    """An expectation with action ``fail`` did not hold; nothing of the run was written."""

    def __init__(self, table: str, name: str, failed: int, results: pa.Table | None = None):
        super().__init__("expectation_failed", f"{table}: {failed} row(s) fail expectation {name!r}")
        self.table, self.name, self.failed = table, name, failed
        #: the expectation rows evaluated up to the failure (the runner records them)
        self.results = results


@dataclass(frozen=True)
class Expectation:
    name: str
    condition: str  # SQL over the typed columns; NULL counts as failed
    action: str  # warn | drop | fail


_COMMON = (
    Expectation("schema_supported", "schema_version IS NULL OR schema_version <= 1", "fail"),
    Expectation("valid_identity", "device_id IS NOT NULL AND seq IS NOT NULL AND seq >= 0", "drop"),
    Expectation("valid_ts", "ts BETWEEN 1577836800000 AND 4102444800000", "drop"),
    Expectation("store_present", "store_id IS NOT NULL", "drop"),
    Expectation("clock_skew_under_1d", "received_at IS NULL OR ABS(received_at - ts) <= 86400000", "warn"),
    # A device clock a day ahead of the gateway that received the event is not a time: the
    # gateway quarantines it (implausible_ts); one that still arrives (an older gateway) is
    # dropped here, not allowed to stretch every hourly table to its date.
    Expectation("ts_not_after_receipt", "received_at IS NULL OR ts <= received_at + 86400000", "drop"),
)
#: The gateway's validator (see the module docstring); checked after each table's own
#: expectations, so those name the usual problems first.
CONTRACT = Expectation("contract", "contract_reason IS NULL", "drop")

#: Checked when master data is loaded: the SKU is in silver.products or silver.planogram
#: (events of SKUs the business does not know would otherwise reach gold and relabel facings).
KNOWN_SKU = Expectation("known_sku", "sku_known = 1", "drop")
_SKU_TABLES = ("silver.pos_line", "silver.shelf_reading", "silver.shelf_restock", "silver.inventory_delivery",
               "silver.edge_alert", "silver.gap_scan", "silver.shelf_check")

#: silver table -> its expectations (common ones first).
EXPECTATIONS: dict[str, tuple[Expectation, ...]] = {
    "silver.pos_line": _COMMON + (
        Expectation("sku_and_txn_present", "sku IS NOT NULL AND txn_id IS NOT NULL", "drop"),
        Expectation("qty_plausible", "qty BETWEEN -1000 AND 1000", "drop"),
        Expectation("price_non_negative", "price_cents >= 0", "drop"),
        Expectation("no_clear_loyalty_id", "has_clear_loyalty_id = 0", "warn"),
    ),
    "silver.shelf_reading": _COMMON + (
        Expectation("facing_present", "facing_id IS NOT NULL AND sku IS NOT NULL", "drop"),
        Expectation("units_non_negative", "units_est >= 0", "drop"),
        Expectation("battery_in_range", "battery_pct BETWEEN 0 AND 100", "warn"),
    ),
    "silver.shelf_restock": _COMMON + (
        Expectation("facing_present", "facing_id IS NOT NULL AND sku IS NOT NULL", "drop"),
        Expectation("units_non_negative", "units_added >= 0", "drop"),
    ),
    "silver.inventory_delivery": _COMMON + (
        Expectation("sku_present", "sku IS NOT NULL", "drop"),
        Expectation("units_non_negative", "units >= 0", "drop"),
    ),
    "silver.edge_alert": _COMMON + (
        Expectation("state_valid", "state IN ('raised', 'cleared')", "drop"),
        Expectation("probability_in_range", "probability BETWEEN 0 AND 1", "drop"),
        Expectation("facing_present", "facing_id IS NOT NULL", "drop"),
        Expectation("kind_valid", "kind IN ('empty_now', 'empty_within_h')", "drop"),
    ),
    "silver.shelf_check": _COMMON + (
        Expectation("facing_present", "facing_id IS NOT NULL AND sku IS NOT NULL", "drop"),
        Expectation("outcome_valid", "outcome IN ('restocked', 'was_fine', 'no_stock')", "drop"),
    ),
    "silver.gap_scan": _COMMON + (
        Expectation("facing_present", "facing_id IS NOT NULL AND sku IS NOT NULL", "drop"),
    ),
    "silver.edge_health": _COMMON + (
        Expectation("counters_non_negative", "buffer_rows >= 0 AND unsent_rows >= 0", "warn"),
    ),
}
EXPECTATIONS = {table: exps + (CONTRACT,) for table, exps in EXPECTATIONS.items()}

_SQL_TYPE = {"string": None, "int64": "BIGINT", "int32": "INTEGER", "double": "DOUBLE", "bool": "BOOLEAN"}
_ENVELOPE_COLS = ("event_id", "store_id", "device_id", "epoch", "seq", "ts", "received_at")
_MASK = "regexp_replace(event_json, '\"loyalty_id\":\"[^\"]*\"', '\"loyalty_id\":\"<masked>\"')"


def _typed_select(table: str) -> tuple[list[tuple[str, str]], str, str]:
    """SQL projecting typed columns of one event type out of bronze's JSON, parsed once per line:
    a line the contract refused (or one the judge has not seen) as text fields (``j``, typed by
    the cast rules), a line it accepted as typed fields (``jt``, typed by the parser: its text is
    a JSON number of the field's kind, which the parser reads as the cast rule would). Returns
    the projection as ``(column name, SQL expression)`` pairs, in order, and the two
    ``JSON_STRUCT`` specs."""
    tdef = TABLES[table]
    data_fields = next(v for k, v in EVENT_TYPES.items() if SILVER_EVENT_TABLES[k] == table)
    exprs = [("event_id", _field('event_id', 'string', (str,))), ("store_id", "store_id"), ("device_id", "device_id"),
             ("epoch", f"COALESCE({_field('epoch', 'int64', (int,))}, 0)"), ("seq", "seq"), ("ts", "ts"),
             ("received_at", "received_at"),
             # (schema: a plain TRY_CAST on every line, as before the cast rules: 2.7 reads 3, newer)
             ("schema_version", _field('`schema`', 'int64', (int,), other='TRY_CAST(j.`schema` AS BIGINT)'))]
    paths = [("event_id", "string", (str,)), ("schema", "int64", (int,)), ("epoch", "int64", (int,))]
    for col in tdef.columns:
        if col.name in _ENVELOPE_COLS or col.name in ("enqueued_time", "ingest_run", PARTITION_COL):
            continue
        if col.name not in data_fields:
            raise AssertionError(f"{table}.{col.name} is not a field of its event type")
        kind = data_fields[col.name].kind
        kinds = kind if isinstance(kind, tuple) else (kind,)
        paths.append((f"data.{col.name}", col.type, kinds))
        value = _field(f"data.{col.name}", col.type, kinds)
        if table == "silver.pos_line" and col.name == "kind":
            exprs.append(("kind", f"COALESCE({value}, 'sale')"))
        elif table == "silver.edge_alert" and col.name == "kind":
            # Gateways older than the field raised forecasts only.
            exprs.append(("kind", f"COALESCE({value}, 'empty_within_h')"))
        else:
            exprs.append((col.name, value))
    if table == "silver.pos_line":
        paths.append(("data.loyalty_id", "string", (str,)))
        exprs.append(("has_clear_loyalty_id",
                      f"CASE WHEN {_field('data.loyalty_id', 'string', (str,))} IS NULL THEN 0 ELSE 1 END"))
    exprs += [(c, c) for c in ("enqueued_time", "ingest_run", "hub_partition", "hub_offset", "sequence_number",
                               "message_index", "event_json", "contract_reason")]
    text = ",".join(path for path, _, _ in paths)
    typed = ",".join(f"{path}:{_parsed_type(type_, kinds)}" for path, type_, kinds in paths)
    return exprs, text, typed


def _select_list(projection: list[tuple[str, str]]) -> str:
    """A ``_typed_select`` projection as SQL (a bare column stays bare)."""
    return ",\n  ".join(expr if expr == name else f"{expr} AS {name}" for name, expr in projection)


def _parsed_type(type_: str, kinds: tuple[type, ...]) -> str:
    """The type the parser gives a field of a line the contract accepted: the column's, where
    the field's JSON kind is read the same way by the parser and by the cast rule."""
    if type_ in ("int64", "int32") and kinds == (int,):
        return "BIGINT"
    if type_ == "double":
        return "DOUBLE"
    return "VARCHAR"  # text, and a float in an integer column (only the rule says what 2.5 becomes)


def _field(path: str, type_: str, kinds: tuple[type, ...], *, other: str | None = None) -> str:
    """One field of the line, typed: from ``jt`` (the parser's types) on a line the contract
    accepted, by one cast rule for every engine (``cloud.lake.casts``) from ``j`` (text) on the
    others (or ``other``). (On Spark ``jt`` holds text too: the ``TRY_CAST`` types it, as the
    parser would.)"""
    parsed = _parsed_type(type_, kinds)
    if type_ in ("int64", "int32"):
        rule = sql_int
    elif type_ == "double":
        rule = sql_double
    else:
        rule = None
    if parsed != "VARCHAR":
        accepted = f"TRY_CAST(jt.{path} AS {parsed})"
    else:
        accepted = rule(f"jt.{path}") if rule else f"jt.{path}"
    other = other or (rule(f"j.{path}") if rule else f"j.{path}")
    return f"CASE WHEN contract_reason IS NULL THEN {accepted} ELSE {other} END"


def _expectations(table: str, known_skus: pa.Table | None) -> tuple[Expectation, ...]:
    exps = EXPECTATIONS[table]
    return exps + (KNOWN_SKU,) if known_skus is not None and table in _SKU_TABLES else exps


#: identity of a quarantined row, so a re-sent bad event is quarantined once: the event's
#: (target, device, seq) when it has one, else a hash of its raw text
_QKEY = ("CASE WHEN device_id IS NOT NULL AND seq IS NOT NULL "
         "THEN concat(COALESCE(target_table, ''), '|', device_id, '|', CAST(seq AS STRING)) "
         "ELSE concat(COALESCE(target_table, ''), '|', md5(COALESCE(raw, ''))) END")


_QCOLS = "source_table, target_table, device_id, seq, reasons, raw, run_id"


def silver_events(engine: Engine, bronze: pa.Table, existing: dict[str, pa.Table], *, run_id: str, run_at: int,
                  types: tuple[str, ...] | None = None, known_skus: pa.Table | None = None) -> dict:
    """Type, check, deduplicate and quarantine new bronze events; return rows per silver table.

    ``types`` limits the run to some event types (default all). ``known_skus`` (a ``sku``
    column: products and planogram) turns on the ``known_sku`` expectation; ``existing`` may
    also map ``silver.quarantine`` to its ``row_key`` column (a bad event re-sent is
    quarantined once).
    ``existing`` maps each silver table to its current ``(device_id, seq, ts)`` rows (for
    deduplication across runs and for counting late rows). Returns ``{"tables": {name: rows},
    "quarantine": rows, "expectations": rows, "stats": {...}, "cached": [...]}``: rows are the
    engine's relations (Arrow tables on DuckDB, DataFrames on Spark, computed where they are
    written); ``expectations`` is Arrow; ``cached`` lists what the caller ``release``s after writing.

    Raises:
        ExpectationFailed: a ``fail`` expectation did not hold.
    """
    out: dict[str, pa.Table] = {}
    quarantine: list = []
    # Table data stays an engine relation (an Arrow table here, a DataFrame on the executors on
    # Spark); only counts and the expectation results come back as Python values.
    bronze = engine.cache(_with_contract_verdict(engine, bronze))
    cached = [bronze]
    results: list[dict] = []
    # Rows per type, in one query: a type this batch has no row of is skipped (on Spark its typing,
    # counts and write were three jobs that found nothing).
    per_type = engine.run("SELECT type, COUNT(*) AS n FROM bronze GROUP BY type", {"bronze": bronze})
    present = {t for t, n in zip(per_type["type"].to_pylist(), per_type["n"].to_pylist()) if n}
    stats = {"bronze_rows": int(sum(per_type["n"].to_pylist())), "duplicates": 0, "quarantined": 0, "late": 0}

    # Rows that are not events of a known type go straight to quarantine.
    known = "', '".join(EVENT_TYPES)
    bad = engine.frame(
        f"""SELECT 'bronze.events' AS source_table, CAST(NULL AS STRING) AS target_table, device_id, seq,
                CASE WHEN decode_error IS NOT NULL THEN 'undecodable: ' || decode_error
                     WHEN type IS NULL THEN 'no_type' ELSE 'unknown_type: ' || type END AS reasons,
                COALESCE({_MASK}, concat('dead letter: bronze.events raw_body_b64 md5 ',
                                         md5(COALESCE(raw_body_b64, '')))) AS raw
            FROM bronze WHERE event_json IS NULL OR type IS NULL OR type NOT IN ('{known}')""",
        {"bronze": bronze},
    )
    quarantine.append(bad)

    for etype, table in SILVER_EVENT_TABLES.items():
        if types is not None and etype not in types:
            continue
        if etype not in present:
            out[table] = engine.conform(table, pa.table({}))  # no rows: nothing to type, count or write
            continue
        exps = _expectations(table, known_skus)
        flags = ",\n  ".join(f"COALESCE({e.condition}, FALSE) AS e{i}" for i, e in enumerate(exps))
        projection, text, typed = _typed_select(table)
        env = {"bronze": bronze}
        if KNOWN_SKU in exps:
            env["known_skus"] = known_skus.select(["sku"])
        # each line parsed once: as text where the contract refused it, typed where it accepted it
        inner = (f"SELECT\n  {_select_list(projection)}\nFROM (SELECT *,\n"
                 f"  CASE WHEN contract_reason IS NOT NULL THEN JSON_STRUCT(event_json, '{text}') END AS j,\n"
                 f"  CASE WHEN contract_reason IS NULL THEN JSON_STRUCT(event_json, '{typed}') END AS jt\n"
                 f"FROM bronze WHERE type = '{etype}' AND event_json IS NOT NULL) b")
        if KNOWN_SKU in exps:
            inner = (f"SELECT t0.*, CASE WHEN k.sku IS NULL THEN 0 ELSE 1 END AS sku_known FROM ({inner}) t0 "
                     f"LEFT JOIN (SELECT DISTINCT sku FROM known_skus) k ON k.sku = t0.sku")
        drops = [i for i, e in enumerate(exps) if e.action == "drop"]
        all_ok = " AND ".join(f"e{i}" for i in drops) or "TRUE"  # flags are never NULL (COALESCE)
        # The raw text only where the quarantine needs it (a row an expectation drops): carried on
        # every row it was copied into each type's rows and out again (a quarter of the typing's CPU).
        cols = [c for c, _ in projection if c != "event_json"] + (["sku_known"] if KNOWN_SKU in exps else [])
        typed = engine.frame(
            f"SELECT {', '.join(cols)}, {', '.join(f'e{i}' for i in range(len(exps)))}, ok, "
            f"CASE WHEN ok THEN NULL ELSE event_json END AS event_json "
            f"FROM (SELECT *, {all_ok} AS ok FROM (SELECT *, {flags} FROM ({inner}) t) f) g", env)
        typed = engine.cache(engine.numbered(typed))
        cached.append(typed)
        # (ok_keys: the identities among the rows kept; fewer than ok_rows means repeats in the batch)
        counts = engine.run(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN ok THEN 1 ELSE 0 END) AS ok_rows, "
            "COUNT_DISTINCT(CASE WHEN ok THEN device_id END, epoch, seq) AS ok_keys, "
            + ", ".join(f"SUM(CASE WHEN e{i} THEN 0 ELSE 1 END) AS f{i}" for i in range(len(exps)))
            + " FROM typed",
            {"typed": typed},
        ).to_pylist()[0]
        if not counts["n"]:
            out[table] = engine.conform(table, typed)
            continue
        for i, e in enumerate(exps):
            failed = int(counts[f"f{i}"] or 0)
            results.append({"table_name": table, "expectation": e.name, "action": e.action,
                            "checked": int(counts["n"]), "failed": failed})
            if e.action == "fail" and failed:
                for rel in cached:
                    engine.release(rel)
                raise ExpectationFailed(table, e.name, failed, _results(results, run_id, run_at))
        reasons = " || ".join(f"CASE WHEN e{i} THEN '' ELSE {_label(exps[i])} END" for i in drops) or "''"
        quarantine.append(engine.frame(
            f"""SELECT 'bronze.events' AS source_table, '{table}' AS target_table, device_id, seq,
                       TRIM(TRAILING ',' FROM {reasons}) AS reasons, {_MASK} AS raw FROM typed WHERE NOT ok""",
            {"typed": typed},
        ))
        ok_rows = int(counts["ok_rows"] or 0)
        prior = _prior(engine, existing.get(table))
        # Dedup and lateness on the key columns only (a row number into `typed`): carrying every
        # column, the raw text among them, through the window sorts cost more than the rest of
        # silver; the rows are then taken from `typed` by number, in arrival order.
        keys = engine.frame("SELECT row_nr, device_id, epoch, seq, ts, enqueued_time, hub_partition, sequence_number, "
                            "message_index, ok FROM typed", {"typed": typed})
        # The first arrival of each identity; a batch without a repeated one (the usual batch: the
        # count above says so) skips that window's sort, 40 % of this query's CPU.
        first = ("SELECT *, ROW_NUMBER() OVER (PARTITION BY device_id, epoch, seq ORDER BY enqueued_time, hub_partition, "
                 "sequence_number, message_index) AS rn FROM ok" if int(counts["ok_keys"] or 0) < ok_rows
                 else "SELECT *, 1 AS rn FROM ok")
        picked = engine.frame(
            """WITH ok AS (SELECT * FROM keys WHERE ok),
                ranked AS (""" + first + """),
                last_ts AS (SELECT device_id, MAX(ts) AS max_ts FROM prior GROUP BY device_id),
                new AS (SELECT r.* FROM ranked r WHERE r.rn = 1
                        AND NOT EXISTS (SELECT 1 FROM prior p WHERE p.device_id = r.device_id
                                        AND p.epoch = r.epoch AND p.seq = r.seq)),
                -- late: older than an event of the same device that arrived before it, in an
                -- earlier run (prior) or earlier in this one (arrival order)
                seen AS (SELECT *, MAX(ts) OVER (PARTITION BY device_id
                           ORDER BY enqueued_time, hub_partition, sequence_number, message_index
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_ts FROM new)
            SELECT s.row_nr, CASE WHEN (l.max_ts IS NOT NULL AND s.ts < l.max_ts) OR s.ts < s.before_ts
                                  THEN 1 ELSE 0 END AS is_late
            FROM seen s
            LEFT JOIN last_ts l ON l.device_id = s.device_id""",
            {"keys": keys, "prior": prior},
        )
        fresh = engine.cache(engine.take(typed, picked))
        cached.append(fresh)
        [got] = engine.run("SELECT COUNT(*) AS n, SUM(is_late) AS late FROM fresh", {"fresh": fresh}).to_pylist()
        dups = ok_rows - int(got["n"])
        late = int(got["late"] or 0)
        results.append({"table_name": table, "expectation": "unique_device_seq", "action": "dedup",
                        "checked": ok_rows, "failed": dups})
        results.append({"table_name": table, "expectation": "in_device_order", "action": "warn",
                        "checked": int(got["n"]), "failed": late})
        stats["duplicates"] += dups
        stats["late"] += late
        out[table] = engine.conform(table, fresh)

    q = engine.cache(_dedup_quarantine(engine, quarantine, existing.get(QUARANTINE), run_id))
    stats["quarantined"] = engine.count(q)
    return {"tables": out, "quarantine": q, "expectations": _results(results, run_id, run_at), "stats": stats,
            "cached": cached + [q]}


def _prior(engine: Engine, prior):
    """A silver table's existing keys as ``(device_id, epoch, seq, ts)`` (epoch 0 where a table
    from before epochs has none); an empty relation when there are none."""
    if prior is None:
        prior = pa.table({"device_id": pa.array([], pa.string()), "seq": pa.array([], pa.int64()),
                          "ts": pa.array([], pa.int64())})
    epoch = "COALESCE(CAST(epoch AS BIGINT), 0)" if "epoch" in engine.columns(prior) else "CAST(0 AS BIGINT)"
    return engine.frame(f"SELECT device_id, {epoch} AS epoch, seq, ts FROM prior", {"prior": prior})


def _label(e: Expectation) -> str:
    """SQL for an expectation's part of a quarantine reason (the contract names its reason)."""
    if e.name == "contract":
        return "'contract:' || COALESCE(contract_reason, '') || ','"
    return f"'{e.name},'"


def _with_contract_verdict(engine: Engine, bronze):
    """``bronze`` plus ``contract_reason``: the gateway's validator's reason to refuse each line
    (null when it accepts it, or when the line is not there to judge); vectorized, with
    ``parse_event`` for the lines the compiled rules cannot decide (``cloud.lake.verdict``).
    Python over batches of rows: on Spark it runs on the executors."""
    return engine.with_column(bronze, "contract_reason", pa.string(), lambda t: contract_verdicts(t["event_json"]))


def _results(results: list[dict], run_id: str, run_at: int) -> pa.Table:
    res = pa.Table.from_pylist([r | {"run_id": run_id, "run_at": run_at} for r in results]) if results else pa.table({})
    return conform(EXPECTATION_RESULTS, res)


def _dedup_quarantine(engine: Engine, parts: list, prior, run_id: str):
    """Quarantine rows keyed by ``row_key``, once within the batch and once against ``prior``,
    stamped with ``run_id``."""
    rows = {f"q{i}": engine.conform(QUARANTINE, p) for i, p in enumerate(parts)}
    if prior is None:
        prior = pa.table({"row_key": pa.array([], pa.string())})
    union = " UNION ALL ".join(f"SELECT * FROM {name}" for name in rows)
    run = "'" + run_id.replace("'", "''") + "'"
    keyed = engine.frame(
        f"""SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY row_key ORDER BY reasons) AS rn
                           FROM (SELECT {_QCOLS.replace("run_id", run + " AS run_id")}, {_QKEY} AS row_key
                                 FROM ({union}) u) k) r
            WHERE rn = 1 AND row_key NOT IN (SELECT row_key FROM prior WHERE row_key IS NOT NULL)""",
        {**rows, "prior": engine.frame("SELECT row_key FROM prior", {"prior": prior})},
    )
    return engine.conform(QUARANTINE, keyed)

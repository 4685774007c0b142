"""Personal data in the lake: re-keying pseudonyms after a key rotation, and erasure on request.

Both are lake runs like any other: one Delta commit per table touched, each recorded in run
lineage (``meta.lineage``) with the table versions before and after. Neither needs a clear
loyalty id in the lake: ``rekey`` carries pseudonyms forward with the new key alone
(``gondola.privacy``), and ``erase`` takes the customer's pseudonym (the loyalty system computes
it from the card number and the current key ring, ``pseudonymize``).

Where a pseudonym lives: ``silver.pos_line.loyalty_pid`` and, inside the raw event text,
``bronze.events.event_json`` (bronze is append-only for everything except erasure: a request to
erase must reach the raw copy too, or a rebuild of silver would bring the pseudonym back).
Gold tables hold no pseudonyms (``cloud.lake.tables``: no gold column is classified personal);
``personal_columns`` checks that, so a new personal column cannot be forgotten here.
Delta keeps superseded files for time travel until ``VACUUM`` removes them: the superseded data
files go once the retention (``RETENTION_HOURS``) has passed and a vacuum has run, or at once with
``erase(..., vacuum_now=True)`` (which ends time travel before that point). Two copies outlive
that, by Delta's design, until the table's log and change feed are cleaned up (log retention,
30 days by default, or a table rewrite): the change feed's pre-image of the erasing commit
(``_change_data``; the lake reads changes incrementally, so the feed cannot be switched off for
one commit), and file statistics (min / max) of files written before the table excluded personal
columns from statistics (``cloud.lake.storage`` does for new tables). The erasure itself never
writes the pseudonym into the log.
"""

from __future__ import annotations

import pyarrow as pa

from cloud.lake.storage import LakeStorage
from cloud.lake.tables import BRONZE_EVENTS, TABLES
from gondola.errors import ConfigError
from gondola.privacy import KeyRing, pid_version, rekey

__all__ = ["personal_columns", "rekey_lake", "erase", "ERASED", "RETENTION_HOURS"]

#: what replaces an erased pseudonym inside raw event text
ERASED = "erased"
#: Delta VACUUM retention of the lake, hours (time travel window; erasure completes after it)
RETENTION_HOURS = 168


def personal_columns() -> dict[str, list[str]]:
    """table -> columns classified personal, outside bronze (bronze's raw text is handled apart)."""
    out: dict[str, list[str]] = {}
    for name, tdef in TABLES.items():
        if tdef.layer == "bronze":
            continue
        cols = [c.name for c in tdef.columns if c.personal]
        if cols:
            out[name] = cols
    return out


_PID_TABLES = {"silver.pos_line": "loyalty_pid"}


def _check_pid(pid: str) -> None:
    try:
        pid_version(pid)
    except ValueError:
        raise ConfigError("not a pseudonym (32 hex characters, or v<N>:<32 hex>)") from None


def rekey_lake(storage: LakeStorage, ring: KeyRing, *, lineage=None) -> dict:
    """Carry every stored pseudonym forward to the ring's current version; idempotent.

    Returns ``{"version": n, "rekeyed": {table: rows}}``.
    """
    import contextlib

    from cloud.meta.lineage import table_dataset

    done: dict[str, int] = {}
    with (lineage.run("gondola.privacy_rekey") if lineage else contextlib.nullcontext()) as run:
        for table, col in _PID_TABLES.items():
            dt = storage.open(table)
            if dt is None:
                continue
            before = storage.version(table)
            if run is not None:
                run.inputs.append(table_dataset(storage, table, before))
            pids = storage.read(table, columns=[col])
            old = sorted({p for p in pids[col].to_pylist() if p is not None and pid_version(p) < ring.version})
            if not old:
                done[table] = 0
                continue
            mapping = pa.table({"old_pid": old, "new_pid": [rekey(p, ring) for p in old]})
            metrics = (dt.merge(source=mapping, predicate=f"t.{col} = s.old_pid", source_alias="s", target_alias="t")
                       .when_matched_update({col: "s.new_pid"}).execute())
            done[table] = int(metrics.get("num_target_rows_updated", 0))
            if run is not None:
                run.outputs.append(table_dataset(storage, table, storage.version(table)))
                run.facts[f"{table}_rekeyed"] = done[table]
        if run is not None:
            run.facts["key_version"] = ring.version
    return {"version": ring.version, "rekeyed": done}


def erase(storage: LakeStorage, pid: str, *, lineage=None, vacuum_now: bool = False) -> dict:
    """Remove one customer's pseudonym from silver and from bronze's raw text.

    Sales stay (they are the chain's business records); only the link to the person goes.
    Returns ``{table: rows changed}``.

    Raises:
        ConfigError: ``pid`` is not a pseudonym.
    """
    import contextlib

    from cloud.meta.lineage import table_dataset

    _check_pid(pid)
    # The pseudonym travels as merge source data, never as a literal in a predicate: Delta keeps
    # each commit's predicate text in its log, so a literal would outlive the erasure.
    source = pa.table({"pid": [pid]})
    changed: dict[str, int] = {}
    with (lineage.run("gondola.privacy_erase") if lineage else contextlib.nullcontext()) as run:
        targets = [(t, f"t.{c} = s.pid", {c: "NULL"}) for t, c in _PID_TABLES.items()]
        targets.append((BRONZE_EVENTS, "strpos(t.event_json, s.pid) > 0",
                        {"event_json": f"replace(t.event_json, s.pid, '{ERASED}')"}))
        for table, predicate, updates in targets:
            dt = storage.open(table)
            if dt is None:
                continue
            if run is not None:
                run.inputs.append(table_dataset(storage, table, storage.version(table)))
            metrics = (dt.merge(source=source, predicate=predicate, source_alias="s", target_alias="t")
                       .when_matched_update(updates).execute())
            changed[table] = int(metrics.get("num_target_rows_updated", 0))
            if vacuum_now:
                storage.open(table).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
            if run is not None:
                run.outputs.append(table_dataset(storage, table, storage.version(table)))
                run.facts[f"{table}_rows"] = changed[table]
        if run is not None:
            run.facts["vacuumed"] = vacuum_now  # the pseudonym itself is never recorded
    return changed

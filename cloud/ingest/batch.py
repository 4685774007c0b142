"""Batch ingest (the Data Factory role): ERP CSV exports -> ``bronze.batch_records``.

A scheduler calls ``gondola cloud ingest-batch FOLDER``. Each CSV file is recognized by its
name (``stores*.csv``, ``products*.csv``, ``planogram*.csv``, ``*sales*.csv``, ``*stock*.csv``), checked for its
required columns, and loaded whole, as raw rows (a JSON object of strings per row), in one
commit carrying the application transaction ``file:<sha256>``: a file with the same content
is never loaded twice, whatever it is called and however often the scheduler retries.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Callable

import pyarrow as pa

from cloud.lake.storage import LakeStorage
from cloud.lake.tables import BRONZE_BATCH, schema_of
from gondola.errors import ConfigError, ContractError

__all__ = ["KINDS", "kind_of", "ingest_batch"]

#: file kind -> required columns (others are kept in bronze, ignored by silver)
KINDS: dict[str, tuple[str, ...]] = {
    "stores": ("store_id",),
    "products": ("sku", "price_cents"),
    "planogram": ("store_id", "facing_id", "sku", "capacity"),
    "sales_daily": ("date", "store_id", "sku", "units"),
    "stock_daily": ("date", "store_id", "sku", "book_units"),
}


def kind_of(path: Path) -> str | None:
    """The kind of a batch file from its name; ``None`` for files that are not ours.

    ``stores*.csv``, ``products*.csv``, ``planogram*.csv``; any CSV with ``sales`` in its name
    is a daily sales export (``daily_sales_s001.csv``, ``sales_2026-11-29.csv``); any with ``stock``
    is the nightly stock record (``stock_record_s001.csv``: book units and cycle counts).
    """
    name = path.name.lower()
    if path.suffix.lower() != ".csv":
        return None
    for prefix, kind in (("stores", "stores"), ("products", "products"), ("planogram", "planogram")):
        if name.startswith(prefix):
            return kind
    if "sales" in name:
        return "sales_daily"
    return "stock_daily" if "stock" in name else None


def _read(path: Path, kind: str) -> list[dict[str, str]]:
    text = path.read_bytes().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in KINDS[kind] if c not in header]
    if missing:
        raise ContractError("missing_column", f"{path.name}: {kind} file lacks column(s) {', '.join(missing)}; has {', '.join(header) or 'none'}")
    rows = []
    for row in reader:
        rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None})
    return rows


def ingest_batch(
    storage: LakeStorage,
    folder: str | Path,
    *,
    run_id: str | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> dict:
    """Load every recognized CSV in ``folder`` and its subfolders not loaded before.

    Files are taken in path order (so ``master/`` before ``sales/``); names in the report are
    relative to ``folder``. Returns ``{"loaded": [names], "skipped_same_content": [names], "ignored": [names],
    "rows": n, "errors": {name: reason}}``. A file with bad columns is reported in ``errors``
    and does not stop the others.

    Raises:
        ConfigError: ``folder`` does not exist.
        StorageError: bronze could not be written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"batch folder {folder} does not exist")
    run_id = run_id or uuid.uuid4().hex[:12]
    report: dict = {"loaded": [], "skipped_same_content": [], "ignored": [], "rows": 0, "errors": {}}
    for path in sorted(p for p in folder.rglob("*.csv") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        kind = kind_of(path)
        if kind is None:
            report["ignored"].append(name)
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        app_id = f"file:{digest}"
        if storage.txn_version(BRONZE_BATCH, app_id) >= 1:
            report["skipped_same_content"].append(name)
            if progress:
                progress(name, "already loaded")
            continue
        try:
            rows = _read(path, kind)
        except (ContractError, UnicodeDecodeError, csv.Error) as exc:
            report["errors"][name] = str(exc)
            if progress:
                progress(name, f"error: {exc}")
            continue
        now = time.time_ns() // 1_000_000
        table = pa.table({
            "kind": [kind] * len(rows),
            "source_file": [name] * len(rows),
            "content_hash": [digest] * len(rows),
            "row_number": list(range(1, len(rows) + 1)),
            "record_json": [json.dumps(r, sort_keys=True) for r in rows],
            "ingest_run": [run_id] * len(rows),
            "ingested_at": [now] * len(rows),
        }, schema=schema_of(BRONZE_BATCH))
        storage.write(BRONZE_BATCH, table, txns=[(app_id, 1)])
        report["loaded"].append(name)
        report["rows"] += len(rows)
        if progress:
            progress(name, f"{len(rows)} rows")
    return report

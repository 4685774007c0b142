"""The store system's stock record as a side input of the stream job (``phantom_inventory``).

Stores' ERPs export their stock record each night (``stock_record_<store>.csv``: ``date``,
``store_id``, ``sku``, ``book_units``, what the store system believes it holds at the close,
shelf and backroom together). The lake loads the same files into ``silver.stock_record``
(``cloud/ingest/batch.py``, ``cloud/lake/master.py``); the stream job reads them as a side
input, as it reads the planogram, from either place:

* ``StockRecordFiles``: the landing folder the lake's batch ingest reads (every ``*stock*.csv``
  below it, ``cloud.ingest.batch.kind_of``); a file written later wins for a key (a re-export);
* ``StockRecordTable``: ``silver.stock_record`` in the lake (validated, re-exports resolved).

Both answer one question, ``book(store_id, date)``: the book units per SKU of that store's
record of that date, or ``None`` when there is none. The detectors ask it once per store and
record date, at a fixed event time after the date's close (``DetectorConfig.stock_lag_ms``), and
keep the answer in the partition's state: a replay from a snapshot asks the same question at the
same event time (docs/stream.md, "phantom_inventory and the stock record").
"""

from __future__ import annotations

import logging
from datetime import date as _date
from pathlib import Path
from typing import Protocol

__all__ = ["StockRecords", "StockRecordFiles", "StockRecordTable"]

log = logging.getLogger(__name__)


class StockRecords(Protocol):
    def book(self, store_id: str, date: str) -> dict[str, int] | None:
        """Book units per SKU of ``store_id``'s stock record of ``date`` (ISO), ``None`` if none."""
        ...


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


class StockRecordFiles:
    """Stock records from the ERP's CSV exports in a landing folder (and its subfolders).

    The folder is scanned again the first time a date is asked for (one scan per record date,
    not per store): a file is read again when its size or time changed, or when it holds rows of
    that date (one reader serves every partition, and partitions stand at different event times:
    a date older than one asked before must get the files' answer, not none). Rows without a
    store, SKU, ISO date or whole ``book_units`` are skipped (the lake quarantines them). Only the
    last ``keep_days`` record dates asked for (in the order asked) are kept in memory.
    """

    def __init__(self, folder: str | Path, keep_days: int = 3):
        self.folder = Path(folder)
        self.keep_days = max(1, keep_days)
        self._files: dict[Path, tuple[int, int]] = {}  # path -> (mtime_ns, size) read
        self._file_days: dict[Path, set[str]] = {}  # path -> the record dates it holds
        self._rows: dict[tuple[str, str], dict[str, tuple[tuple[int, str], int]]] = {}  # (store, date) -> sku -> (order, book)
        self._asked: list[str] = []  # the kept dates, oldest question first

    def book(self, store_id: str, date: str) -> dict[str, int] | None:
        if date not in self._asked:
            self._asked = [*self._asked, date][-self.keep_days:]
            keep = set(self._asked)
            self._rows = {k: v for k, v in self._rows.items() if k[1] in keep}
            self._scan(keep, date)
        rows = self._rows.get((store_id, date))
        return {sku: units for sku, (_, units) in rows.items()} if rows else None

    def _scan(self, keep: set[str], new: str) -> None:
        """Read the files changed since their last read (rows of the kept dates) and the
        unchanged ones holding rows of ``new`` (those rows only)."""
        from cloud.ingest.batch import _read, kind_of
        from gondola.errors import ContractError

        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.rglob("*")):
            if kind_of(path) != "stock_daily":
                continue
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if self._files.get(path) == stamp:
                if new not in self._file_days.get(path, ()):
                    continue
                wanted = {new}
            else:
                wanted = keep
            self._files[path] = stamp
            try:  # the batch ingest's reader of the same files (a file lacking a column has no usable row)
                records = _read(path, "stock_daily")
            except (OSError, UnicodeDecodeError, ContractError) as exc:
                log.warning("stock record %s unreadable, skipped: %s", path.name, exc)
                self._file_days[path] = set()
                continue
            order = (st.st_mtime_ns, str(path))  # a file written later replaces a day's rows
            days: set[str] = set()
            for row in records:
                store, sku, day = (row.get(k, "") for k in ("store_id", "sku", "date"))
                units = _int(row.get("book_units"))
                if not store or not sku or units is None:
                    continue
                try:
                    _date.fromisoformat(day)
                except ValueError:
                    continue
                days.add(day)
                if day not in wanted:
                    continue
                rows = self._rows.setdefault((store, day), {})
                if sku not in rows or rows[sku][0] <= order:
                    rows[sku] = (order, units)
            self._file_days[path] = days


class StockRecordTable:
    """Stock records from ``silver.stock_record`` in the lake: one filtered read per store and date."""

    def __init__(self, storage):
        self.storage = storage

    def book(self, store_id: str, date: str) -> dict[str, int] | None:
        import pyarrow.compute as pc

        if not self.storage.exists("silver.stock_record"):
            return None
        rows = self.storage.read("silver.stock_record", columns=["sku", "book_units"],
                                 filter=(pc.field("store_id") == store_id) & (pc.field("date") == date))
        if rows is None or rows.num_rows == 0:
            return None
        return {s: int(b) for s, b in zip(rows["sku"].to_pylist(), rows["book_units"].to_pylist()) if b is not None}

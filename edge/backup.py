"""Online backups of a gateway's buffer, and their restore.

A backup is one self-contained SQLite file (``buffer-<UTC stamp>.sqlite``, rollback journal, no
WAL beside it) plus a ``.json`` sidecar with its sha256 and the row count of every table. It is
taken from a separate read connection: the buffer runs in WAL mode, so one read transaction gives
a consistent snapshot while the collector keeps committing (``sqlite3.Connection.backup`` with
all pages in one step; a stepped backup would restart whenever the writer commits).

What a restore gives back: every event the buffer held at the backup that had not been uplinked.
Events committed after the last backup and lost with the data folder are gone (the devices had
their acknowledgement), so the backup interval is the recovery point for a gateway that is
offline when its disk dies; events already uplinked are at the hub, and rows the restored buffer
sends a second time are removed by the lake's deduplication on ``(device_id, epoch, seq)``.

``BufferBackups`` runs on its own thread beside ``Gateway.run_forever`` (``gondola edge run``),
every ``backup_every_s`` seconds, keeping the newest ``backup_keep`` files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from gondola.errors import ConfigError, StorageError
from models.package import file_sha256 as _sha256

__all__ = ["BufferBackups", "backup_buffer", "restore_buffer", "verify_backup", "table_counts",
           "backup_main", "restore_main"]

log = logging.getLogger(__name__)

BUFFER_FILE = "buffer.sqlite"


def table_counts(db_path: str | Path) -> dict[str, int]:
    """Rows per table of a SQLite file (read-only)."""
    con = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


def backup_buffer(buffer_path: str | Path, folder: str | Path, *, now: datetime | None = None) -> Path:
    """Copy the live buffer at ``buffer_path`` into ``folder``; return the backup file.

    The file is written as ``.part``, checked (``PRAGMA integrity_check``), then renamed, so a
    backup that exists is complete.

    Raises:
        StorageError: the buffer cannot be read or the backup cannot be written.
    """
    src_path = Path(buffer_path)
    if not src_path.exists():
        raise StorageError(f"no buffer at {src_path}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    dest = folder / f"buffer-{stamp}.sqlite"
    part = dest.with_name(dest.name + ".part")
    try:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(part)
        try:
            src.backup(target)  # all pages in one step: one consistent read snapshot
            target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            ok = target.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            target.close()
            src.close()
        if ok != "ok":
            raise StorageError(f"backup of {src_path} failed its integrity check: {ok}")
        meta = {"source": str(src_path), "taken_at": stamp, "sha256": _sha256(part),
                "bytes": part.stat().st_size, "tables": table_counts(part)}
        os.replace(part, dest)
        dest.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    except sqlite3.Error as exc:
        part.unlink(missing_ok=True)
        raise StorageError(f"cannot back up {src_path}: {exc}") from exc
    return dest


def verify_backup(backup: str | Path) -> dict:
    """The sidecar of ``backup`` after checking the file's sha256 and integrity against it.

    Raises:
        StorageError: missing sidecar, checksum mismatch or a damaged file.
    """
    backup = Path(backup)
    side = backup.with_suffix(".json")
    if not backup.exists() or not side.exists():
        raise StorageError(f"{backup} is not a complete buffer backup (file and .json sidecar needed)")
    meta = json.loads(side.read_text())
    if _sha256(backup) != meta["sha256"]:
        raise StorageError(f"{backup}: sha256 differs from its sidecar; the backup is damaged")
    con = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    if ok != "ok":
        raise StorageError(f"{backup}: integrity check failed: {ok}")
    return meta


def latest_backup(folder: str | Path) -> Path | None:
    files = sorted(Path(folder).glob("buffer-*.sqlite"))
    return files[-1] if files else None


def restore_buffer(backup: str | Path, data_dir: str | Path, *, force: bool = False) -> dict:
    """Put ``backup`` (a file, or a folder of backups: the newest) in place as the buffer of the
    gateway data folder ``data_dir``. Returns the verified sidecar, with ``restored_to``.

    Refuses to overwrite a buffer that exists unless ``force`` (the gateway must be stopped).

    Raises:
        StorageError: no usable backup; ConfigError: a buffer is there and ``force`` is not set.
    """
    backup = Path(backup)
    if backup.is_dir():
        newest = latest_backup(backup)
        if newest is None:
            raise StorageError(f"no buffer backups in {backup}")
        backup = newest
    meta = verify_backup(backup)
    data_dir = Path(data_dir)
    target = data_dir / BUFFER_FILE
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; stop the gateway and pass --force to replace it")
    data_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # a stale WAL would be replayed over the restored file
        Path(str(target) + suffix).unlink(missing_ok=True)
    part = target.with_name(target.name + ".restore")
    part.write_bytes(backup.read_bytes())
    if _sha256(part) != meta["sha256"]:
        part.unlink()
        raise StorageError(f"copy of {backup} to {target} does not match its checksum")
    os.replace(part, target)
    if table_counts(target) != meta["tables"]:
        raise StorageError(f"{target}: row counts after restore differ from the backup's")
    meta["restored_to"] = str(target)
    return meta


class BufferBackups:
    """Takes a buffer backup every ``every_s`` seconds into ``folder`` and keeps the newest
    ``keep``. ``maybe()`` is for lock-step callers; ``start()`` runs it on its own thread."""

    def __init__(self, buffer_path: str | Path, folder: str | Path, *, every_s: float = 6 * 3600,
                 keep: int = 4, clock=time.monotonic):
        if every_s <= 0 or keep < 1:
            raise ConfigError("backup_every_s must be > 0 and backup_keep >= 1")
        self.buffer_path = Path(buffer_path)
        self.folder = Path(folder)
        self.every_s = float(every_s)
        self.keep = int(keep)
        self._clock = clock
        self._next = clock() + self.every_s
        self.taken = 0
        self.failed = 0
        self.last: Path | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def backup_now(self) -> Path:
        path = backup_buffer(self.buffer_path, self.folder)
        self.taken += 1
        self.last = path
        for old in sorted(self.folder.glob("buffer-*.sqlite"))[:-self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        log.info("buffer backup %s (%d kept)", path.name, self.keep)
        return path

    def maybe(self) -> Path | None:
        """Back up when one is due; a failure is logged and counted, never raised."""
        if self._clock() < self._next:
            return None
        self._next = self._clock() + self.every_s
        try:
            return self.backup_now()
        except (StorageError, OSError) as exc:
            self.failed += 1
            log.error("buffer backup failed: %s", exc)
            return None

    def start(self) -> "BufferBackups":
        def run() -> None:
            while not self._stop.wait(min(self.every_s, 30.0)):
                self.maybe()

        self._thread = threading.Thread(target=run, name="buffer-backups", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# ---- command line: gondola backup gateway / gondola restore gateway ------------------------------


def backup_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gondola backup gateway",
                                description="online backup of a gateway's buffer (safe while it runs)")
    p.add_argument("--data", required=True, help="the gateway's data folder (holds buffer.sqlite)")
    p.add_argument("--to", required=True, help="folder for the backup file and its .json sidecar")
    args = p.parse_args(argv)
    path = backup_buffer(Path(args.data) / BUFFER_FILE, args.to)
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"backup {path} ({meta['bytes']} bytes, sha256 {meta['sha256'][:12]}..., "
          f"{sum(meta['tables'].values())} rows)", file=sys.stderr)
    return 0


def restore_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gondola restore gateway",
                                description="restore a gateway's buffer from a backup (gateway stopped)")
    p.add_argument("--from", dest="source", required=True,
                   help="a backup file, or a folder of backups (the newest is taken)")
    p.add_argument("--data", required=True, help="the gateway's data folder to restore into")
    p.add_argument("--force", action="store_true", help="replace a buffer that is there")
    args = p.parse_args(argv)
    meta = restore_buffer(args.source, args.data, force=args.force)
    print(f"restored {meta['restored_to']} from the backup taken {meta['taken_at']} "
          f"({sum(meta['tables'].values())} rows, checksum verified)", file=sys.stderr)
    return 0

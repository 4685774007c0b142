"""Lake backup and restore: every Delta table at its current version, the ingest and stream
checkpoints beside them, and a manifest that lets a restore prove it gave back the same bytes.

A backup is a folder ``<dest>/<UTC stamp>/``:

* ``<layer>/<table>/``: the table's files. Data files are copied as they are; the log only up to
  the version the backup was taken at, so the copy reads as exactly that version even if a
  writer committed meanwhile (its new data files are copied as unreferenced orphans, which the
  next ``VACUUM`` removes). Application transactions travel with the log, so the exactly-once
  ingest of a restored bronze table still knows which hub offsets it holds.
* ``checkpoints/<name>``: the consumers' SQLite checkpoint stores (online SQLite backups).
* ``manifest.json``: per table its version, row count, a content checksum (sha256 over the rows
  in a canonical order) and every file with size and sha256.

Take backups between pipeline runs (the scheduled job does). A restore puts back the tables (all,
or the ones named) and the checkpoints, verifies every file's checksum and each table's version,
row count and content checksum, and the next ingest re-reads from the hub what arrived after the
backup: nothing is lost while the hub still holds it (Event Hubs keeps 1-7 days; back up daily),
and nothing is doubled (bronze's transactions and silver's deduplication).

Storage is reached through ``pyarrow.fs``: a local folder, or Azure Blob / ADLS Gen2 for an
``abfss://`` / ``az://`` lake with the same storage options the lake uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from cloud.lake.storage import LakeStorage, LocalStorage, open_storage
from gondola.errors import ConfigError, StorageError

__all__ = ["backup_lake", "restore_lake", "list_tables", "content_checksum", "backup_main", "restore_main",
           "lake_filesystem"]

_LOG = "_delta_log"


def _filesystem(storage: LakeStorage) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the root path inside it for ``storage``."""
    if isinstance(storage, LocalStorage):
        return pafs.LocalFileSystem(), storage.root
    opts = dict(storage.storage_options or {})
    scheme, _, rest = storage.root.partition("://")
    if scheme not in ("abfss", "abfs", "az"):
        raise ConfigError(f"backups of a {scheme}:// lake are not supported (local, abfss:// or az://)")
    container, _, prefix = rest.partition("/")
    account = opts.get("account_name")
    if "@" in container:
        container, host = container.split("@", 1)
        account = account or host.split(".")[0]
    if not account:
        raise ConfigError("an Azure lake backup needs account_name in the storage options")
    kwargs: dict = {"account_key": opts.get("account_key"), "sas_token": opts.get("sas_token")}
    endpoint = opts.get("azure_storage_endpoint") or opts.get("endpoint")
    if endpoint:  # Azurite: http://127.0.0.1:10000/devstoreaccount1
        ep_scheme, _, ep_rest = endpoint.partition("://")
        kwargs.update(blob_storage_authority=ep_rest.split("/")[0], blob_storage_scheme=ep_scheme,
                      dfs_storage_authority=ep_rest.split("/")[0], dfs_storage_scheme=ep_scheme)
    fs = pafs.AzureFileSystem(account, **{k: v for k, v in kwargs.items() if v})
    return fs, f"{container}/{prefix}".rstrip("/")


#: the lake's files through ``pyarrow.fs`` (also how Spark executors write a table's Parquet files)
lake_filesystem = _filesystem


def list_tables(storage: LakeStorage) -> list[str]:
    """Every Delta table of the lake as ``layer.name`` (folders holding a ``_delta_log``)."""
    fs, root = _filesystem(storage)
    out = []
    for layer in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if layer.type != pafs.FileType.Directory:
            continue
        for table in fs.get_file_info(pafs.FileSelector(layer.path, allow_not_found=True)):
            if table.type == pafs.FileType.Directory and \
                    fs.get_file_info(f"{table.path}/{_LOG}").type == pafs.FileType.Directory:
                out.append(f"{layer.base_name}.{table.base_name}")
    return sorted(out)


def content_checksum(rows: pa.Table) -> str:
    """sha256 over a table's rows in a canonical order (columns by name, rows sorted by every
    column): equal for equal contents, whatever the file layout."""
    cols = sorted(rows.column_names)
    rows = rows.select(cols)
    sortable = [c for c in cols if not (pa.types.is_nested(rows.schema.field(c).type)
                                        or pa.types.is_binary(rows.schema.field(c).type))]
    if sortable and rows.num_rows:
        rows = rows.sort_by([(c, "ascending") for c in sortable])
    h = hashlib.sha256()
    for c in cols:
        h.update(c.encode())
        h.update(json.dumps(rows.column(c).to_pylist(), default=str, sort_keys=True).encode())
    return h.hexdigest()


def _log_version(name: str) -> int | None:
    """The version a ``_delta_log`` entry belongs to (``00..05.json``, ``00..05.checkpoint.parquet``)."""
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _copy(src_fs, src: str, dst_fs, dst: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    dst_fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(dst) as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
            fout.write(chunk)
    return size, h.hexdigest()


def _sha_of(fs, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _table_files(fs, table_root: str, version: int) -> list[str]:
    """The files of a table that a copy at ``version`` needs, relative to its root."""
    out = []
    for info in fs.get_file_info(pafs.FileSelector(table_root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(table_root):].lstrip("/")
        if rel.startswith(_LOG + "/"):
            name = rel[len(_LOG) + 1:]
            v = _log_version(name)
            if "/" in name or v is None or v > version:
                continue  # _last_checkpoint (a hint), temp files, commits after the backup's version
        out.append(rel)
    return sorted(out)


def backup_lake(storage: LakeStorage, dest: str | Path, *, tables: list[str] | None = None,
                checkpoints: dict[str, str | Path] | None = None, progress=None) -> Path:
    """Back up ``tables`` (default: all) and the SQLite ``checkpoints`` ({name: path}) to a new
    folder under ``dest``; return it.

    Raises:
        StorageError: a table or file could not be read or written (the partial folder stays,
        without a manifest, so it is never taken for a backup).
    """
    fs, root = _filesystem(storage)
    names = tables or list_tables(storage)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    out = Path(dest) / stamp
    out.mkdir(parents=True, exist_ok=False)
    local = pafs.LocalFileSystem()
    manifest: dict = {"taken_at": stamp, "lake": storage.root, "tables": {}, "checkpoints": {}}
    for i, table in enumerate(names):
        dt = storage.open(table)
        if dt is None:
            raise StorageError(f"no table {table} in {storage.root}")
        version = dt.version()
        rows = dt.to_pyarrow_dataset().to_table()
        layer, name = table.split(".", 1)
        src_root = f"{root}/{layer}/{name}"
        files = []
        for rel in _table_files(fs, src_root, version):
            size, sha = _copy(fs, f"{src_root}/{rel}", local, str(out / layer / name / rel))
            files.append({"path": rel, "bytes": size, "sha256": sha})
        manifest["tables"][table] = {"version": version, "rows": rows.num_rows,
                                     "checksum": content_checksum(rows), "files": files}
        if progress is not None:
            progress(i + 1, len(names), table)
    for cname, path in (checkpoints or {}).items():
        path = Path(path)
        if not path.exists():
            continue
        target = out / "checkpoints" / cname
        target.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            src.close()
        manifest["checkpoints"][cname] = {"source": str(path), "sha256": _sha_of(local, str(target))}
    # the manifest is written last: a folder with one is a complete backup
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _resolve(backup: str | Path) -> Path:
    backup = Path(backup)
    if (backup / "manifest.json").exists():
        return backup
    done = sorted(p.parent for p in backup.glob("*/manifest.json"))
    if not done:
        raise StorageError(f"no complete lake backup in {backup}")
    return done[-1]


def restore_lake(backup: str | Path, storage: LakeStorage, *, tables: list[str] | None = None,
                 checkpoints: dict[str, str | Path] | None = None) -> dict:
    """Restore ``tables`` (default: every table of the backup) into ``storage`` and the named
    ``checkpoints`` ({name: target path}); verify files, versions, row counts and content
    checksums. Returns ``{table: {version, rows, checksum}}`` as restored.

    Raises:
        StorageError: the backup is incomplete or damaged, or the restored table differs.
    """
    src = _resolve(backup)
    manifest = json.loads((src / "manifest.json").read_text())
    fs, root = _filesystem(storage)
    local = pafs.LocalFileSystem()
    names = tables or sorted(manifest["tables"])
    unknown = [t for t in names if t not in manifest["tables"]]
    if unknown:
        raise StorageError(f"the backup {src.name} holds no table {', '.join(unknown)}")
    # every file is checked before anything in the lake is touched
    for table in names:
        layer, name = table.split(".", 1)
        for f in manifest["tables"][table]["files"]:
            p = src / layer / name / f["path"]
            if not p.exists() or _sha_of(local, str(p)) != f["sha256"]:
                raise StorageError(f"backup {src.name}: {table}/{f['path']} is missing or damaged")
    restored = {}
    for table in names:
        entry = manifest["tables"][table]
        layer, name = table.split(".", 1)
        dst_root = f"{root}/{layer}/{name}"
        if fs.get_file_info(dst_root).type == pafs.FileType.Directory:
            fs.delete_dir_contents(dst_root)
        for f in entry["files"]:
            _copy(local, str(src / layer / name / f["path"]), fs, f"{dst_root}/{f['path']}")
        dt = storage.open(table)
        rows = dt.to_pyarrow_dataset().to_table() if dt is not None else None
        got = {"version": -1 if dt is None else dt.version(), "rows": -1 if rows is None else rows.num_rows,
               "checksum": "" if rows is None else content_checksum(rows)}
        if got != {k: entry[k] for k in ("version", "rows", "checksum")}:
            raise StorageError(f"{table} after restore is {got}, the backup says "
                               f"version {entry['version']}, {entry['rows']} rows")
        restored[table] = got
    for cname, target in (checkpoints or {}).items():
        if cname not in manifest["checkpoints"]:
            raise StorageError(f"the backup {src.name} holds no checkpoint store {cname}")
        path = src / "checkpoints" / cname
        if _sha_of(local, str(path)) != manifest["checkpoints"][cname]["sha256"]:
            raise StorageError(f"backup {src.name}: checkpoint store {cname} is damaged")
        target = Path(target)
        for suffix in ("-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        target.write_bytes(path.read_bytes())
    return restored


# ---- command line: gondola backup lake / gondola restore lake ---------------------------------------


def _hub_checkpoints(hub: str | None) -> dict[str, Path]:
    if not hub:
        return {}
    hub_path = Path(hub)
    return {"hub.checkpoints.sqlite": hub_path.with_name(hub_path.name + ".checkpoints.sqlite")}


def _storage(args) -> LakeStorage:
    options = {}
    for item in args.storage_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--storage-option {item!r} is not KEY=VALUE")
        options[key] = value
    return open_storage(args.lake, options or None)


def _lake_options(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--lake", default="out/lake", help=f"the lake to {verb} (default out/lake; abfss:// or az:// too)")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="storage option of a remote lake (account_name, account_key, sas_token, endpoint)")
    p.add_argument("--hub", default=None, help="embedded hub whose ingest and stream checkpoints go with the lake")
    p.add_argument("--table", action="append", default=None, help="only this table (repeatable)")


def backup_main(argv: list[str]) -> int:
    from gondola.progress import Progress

    p = argparse.ArgumentParser(prog="gondola backup lake",
                                description="back up every Delta table of the lake and the consumers' checkpoints")
    p.add_argument("--to", required=True, help="backup folder; each backup is a new sub-folder")
    _lake_options(p, "back up")
    args = p.parse_args(argv)
    storage = _storage(args)
    if isinstance(storage, LocalStorage) and not Path(storage.root).is_dir():
        raise ConfigError(f"no lake at {args.lake}")
    names = args.table or list_tables(storage)
    bar = Progress(len(names), "backup")
    out = backup_lake(storage, args.to, tables=names, checkpoints=_hub_checkpoints(args.hub),
                      progress=lambda i, n, t: bar.advance(1, t))
    manifest = json.loads((out / "manifest.json").read_text())
    n_files = sum(len(t["files"]) for t in manifest["tables"].values())
    print(f"backup {out}: {len(manifest['tables'])} tables, {n_files} files, "
          f"{len(manifest['checkpoints'])} checkpoint stores", file=sys.stderr)
    return 0


def restore_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gondola restore lake",
                                description="restore lake tables and checkpoints from a backup, verified")
    p.add_argument("--from", dest="source", required=True, help="a backup folder, or the folder of backups (newest)")
    _lake_options(p, "restore into")
    args = p.parse_args(argv)
    restored = restore_lake(args.source, _storage(args), tables=args.table,
                            checkpoints=_hub_checkpoints(args.hub))
    rows = sum(t["rows"] for t in restored.values())
    print(f"restored {len(restored)} tables ({rows} rows), versions, row counts and checksums verified",
          file=sys.stderr)
    return 0

"""No clear loyalty id anywhere a demo writes: SQLite files (buffers, hub, checkpoints), every
Delta table's rows, the warehouse, logs, HTML, JSON and CSV. The simulator's clear ids have the
form ``L`` + 8 digits; pseudonyms are keyed hashes (hex, ``v<N>:`` first after a key rotation)."""

from __future__ import annotations

import gzip
import logging
import re
import sqlite3
import zlib
from pathlib import Path

import pytest

from gondola.demo import DemoConfig, run_demo

#: A simulator loyalty id: "L" and exactly eight digits. The digit boundaries keep a run of digits
#: in compressed bytes from matching (a snappy tag byte 'L' before a JSON float's digits did).
CLEAR_ID = re.compile(rb"(?<![0-9])L\d{8}(?![0-9])")


def _expand(blob: bytes) -> list[bytes]:
    """A value and, if it is one, its decompressed form (hub bodies are gzip / deflate batches,
    the freshness budget's small ones deflate with the contract's preset dictionary)."""
    from gondola.contracts import BATCH_DICT1

    def with_dict(b: bytes) -> bytes:
        d = zlib.decompressobj(zdict=BATCH_DICT1)
        return d.decompress(b) + d.flush()

    out = [blob]
    for open_ in (gzip.decompress, zlib.decompress, lambda b: zlib.decompress(b, -15), with_dict):
        try:
            out.append(open_(blob))
            break
        except (OSError, zlib.error, EOFError):
            continue
    return out


def _sqlite_values(path: Path) -> list[bytes]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        vals = []
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                for v in row:
                    if isinstance(v, str):
                        vals.append(v.encode())
                    elif isinstance(v, bytes):
                        vals += _expand(v)
        return vals
    finally:
        con.close()


def _parquet_values(path: Path) -> list[bytes]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [repr(table.column(c).to_pylist()).encode() for c in table.column_names]


def _duckdb_values(path: Path) -> list[bytes]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        vals = []
        for schema, name in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
            vals.append(repr(con.execute(f'SELECT * FROM "{schema}"."{name}"').fetchall()).encode())
        return vals
    finally:
        con.close()


def scan(root: Path) -> dict[str, list[str]]:
    """{file: clear ids found} over every file below ``root``, each read the way its format needs."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        values = _expand(raw)
        if raw.startswith(b"SQLite format 3"):
            values += _sqlite_values(path)
        elif path.suffix == ".parquet":
            values += _parquet_values(path)
        elif path.suffix == ".duckdb":
            values += _duckdb_values(path)
        hits = sorted({m.decode() for v in values for m in CLEAR_ID.findall(v)})
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


@pytest.mark.slow
def test_no_file_a_demo_writes_holds_a_clear_loyalty_id(tmp_path, mosquitto):
    out = tmp_path / "demo"
    log_file = tmp_path / "demo" / "demo.log"
    handler = None
    root = logging.getLogger()
    level = root.level
    try:
        handler = logging.FileHandler(tmp_path / "debug.log")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)  # every log line of every component, kept for the scan
        run = run_demo(DemoConfig(stores=1, skus=60, days=1, seed=11, out=out, broker="mosquitto", quiet=True))
    finally:
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    (tmp_path / "debug.log").rename(log_file)
    # The simulation did hand clear ids to the gateways: a scan that finds nothing proves something.
    pos = run.cloud.storage.read("silver.pos_line", columns=["loyalty_pid"])
    pids = [p for p in pos["loyalty_pid"].to_pylist() if p]
    assert len(pids) > 20 and all(re.fullmatch(r"(v\d+:)?[0-9a-f]{32,64}", p) for p in pids[:50])
    assert log_file.stat().st_size > 0
    kinds = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert {".parquet", ".json", ".html"} <= kinds and any(
        p.read_bytes().startswith(b"SQLite format 3") for p in out.rglob("*") if p.is_file())
    assert scan(out) == {}


def test_the_scanner_finds_a_clear_id_in_each_format(tmp_path):
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    # an id in text is found; digits of a float after a compression tag byte 'L' are not an id
    assert CLEAR_ID.findall(b'{"loyalty_id":"L80873260"}') == [b"L80873260"]
    assert CLEAR_ID.findall(b"\xb7L8087326027916380Z") == []

    pq.write_table(pa.table({"x": ["L00001234"]}), tmp_path / "t.parquet", compression="zstd")
    con = sqlite3.connect(tmp_path / "b.sqlite")
    con.execute("CREATE TABLE e (body BLOB)")
    con.execute("INSERT INTO e VALUES (?)", (gzip.compress(b'{"loyalty_id":"L00005678"}'),))
    from gondola.contracts import compress_dict  # the uplink's small messages
    con.execute("INSERT INTO e VALUES (?)", (compress_dict(b'{"loyalty_id":"L00005679"}'),))
    con.commit()
    con.close()
    db = duckdb.connect(str(tmp_path / "w.duckdb"))
    db.execute("CREATE TABLE c AS SELECT 'L00009999' AS id")
    db.close()
    (tmp_path / "x.log").write_text("customer L00004321 bought\n")
    found = scan(tmp_path)
    assert found == {"t.parquet": ["L00001234"], "b.sqlite": ["L00005678", "L00005679"], "w.duckdb": ["L00009999"],
                     "x.log": ["L00004321"]}

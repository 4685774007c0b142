"""Bronze bytes per event on disk, the lake-storage input of ``cloud.sizing``.

Device events (the gateway tests' traffic mix: shelf readings, POS lines, restocks) as bronze
rows (the raw event JSON plus the typed envelope and hub columns of ``bronze.events``), written
by ``deltalake`` in one commit. Peer: the same events as raw JSON text (what a plain JSON-lines
landing zone would keep).
"""

from __future__ import annotations

import glob
import json
import os
import tempfile

import pyarrow as pa
from deltalake import write_deltalake

from edge.testing import device_traffic


def run(quick: bool = False) -> dict:
    n = 20_000 if quick else 200_000
    rows = [json.loads(p) for _, p in device_traffic(n, drop=0.0, seed=5).messages]
    k = len(rows)
    raw = [json.dumps(r, separators=(",", ":")) for r in rows]
    tbl = pa.table({
        "event_json": raw,
        "type": [r["type"] for r in rows], "store_id": [r["store_id"] for r in rows],
        "device_id": [r["device_id"] for r in rows], "seq": [r["seq"] for r in rows],
        "ts": [r["ts"] for r in rows], "received_at": [r["ts"] + 50 for r in rows],
        "source": ["iothub"] * k, "hub_partition": [str(i % 4) for i in range(k)],
        "hub_offset": [str(i) for i in range(k)], "sequence_number": list(range(k)),
        "enqueued_time": [r["ts"] + 900 for r in rows], "message_index": [i % 3000 for i in range(k)],
        "decode_error": pa.nulls(k, pa.string()), "raw_body_b64": pa.nulls(k, pa.string()),
        "ingest_run": ["run-1"] * k, "ingested_at": [r["ts"] + 2000 for r in rows]})
    with tempfile.TemporaryDirectory() as tmp:
        write_deltalake(tmp, tbl)
        on_disk = sum(os.path.getsize(f) for f in glob.glob(os.path.join(tmp, "*.parquet")))
    raw_bytes = sum(len(x) + 1 for x in raw)
    types: dict[str, int] = {}
    for r in rows:
        types[r["type"]] = types.get(r["type"], 0) + 1
    result = {"events": k, "types": types, "bronze_bytes_per_event": round(on_disk / k, 1),
              "json_lines_bytes_per_event": round(raw_bytes / k, 1),
              "ratio_bronze_to_json_lines": round(on_disk / raw_bytes, 3)}
    print(json.dumps(result))
    return result

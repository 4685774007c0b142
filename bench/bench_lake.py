"""Lake throughput: bronze -> gold events/s beside a pandas implementation and a DuckDB floor.

One run, same machine, same bronze rows:

* ``day``: one simulated day of N stores (``cloud.synth``) end to end: hub -> bronze
  (``ingest_stream``) -> silver -> gold (``transform``, Delta on a local folder), wall time
  against the 5-minute budget.
* ``pandas``: a straightforward pandas implementation of the core work (parse the JSON,
  deduplicate on (device_id, seq), hourly sales, shelf state per facing-hour, stock-out episodes).
* ``duckdb_floor``: one hand-written DuckDB script doing that same core work.

Ours does more than the peers (expectations, quarantine, masking, late-row accounting, fleet,
alert quality, features, and Delta commits), and reads and writes Delta while the peers work in
memory on the bronze Arrow table, so the ratios overstate our overhead for the same work.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

N_STORES, N_FACINGS = 100, 30


def _pandas(bronze) -> dict:
    import pandas as pd

    rows = [json.loads(s) for s in bronze["event_json"].to_pylist() if s]
    df = pd.DataFrame([{k: v for k, v in e.items() if k != "data"} | e["data"] for e in rows])
    df = df.drop_duplicates(["device_id", "seq"])
    pos = df[df["type"] == "pos.line"].copy()
    pos["hour_ms"] = pos["ts"] - pos["ts"] % 3_600_000
    pos["rev"] = pos["qty"] * pos["price_cents"]
    hourly = pos.groupby(["store_id", "sku", "hour_ms"]).agg(units=("qty", "sum"), revenue=("rev", "sum"), lines=("qty", "size"))
    r = df[df["type"] == "shelf.reading"].sort_values(["store_id", "facing_id", "ts"]).copy()
    r["next_ts"] = r.groupby(["store_id", "facing_id"])["ts"].shift(-1)
    r["hour_ms"] = r["ts"] - r["ts"] % 3_600_000
    r["empty_ms"] = ((r["units_est"] == 0) & r["next_ts"].notna()) * (r["next_ts"] - r["ts"]).clip(upper=1_800_000).fillna(0)
    state = r.groupby(["store_id", "facing_id", "hour_ms"]).agg(readings=("ts", "size"), min_units=("units_est", "min"),
                                                                 minutes_empty=("empty_ms", "sum"))
    r["empty"] = (r["units_est"] == 0).astype(int)
    r["island"] = (r["empty"] != r.groupby(["store_id", "facing_id"])["empty"].shift()).cumsum()
    islands = r.groupby(["store_id", "facing_id", "island"]).agg(empty=("empty", "max"), start=("ts", "min")).reset_index()
    islands["end"] = islands.groupby(["store_id", "facing_id"])["start"].shift(-1)
    stockouts = islands[islands["empty"] == 1]
    return {"hourly_sales": len(hourly), "shelf_state": len(state), "stockouts": len(stockouts)}


_FLOOR = """
CREATE TEMP TABLE ev AS
SELECT * FROM (
  SELECT type, store_id, device_id, seq, ts, event_json,
         ROW_NUMBER() OVER (PARTITION BY device_id, seq ORDER BY enqueued_time) AS rn
  FROM bronze WHERE event_json IS NOT NULL) WHERE rn = 1;
CREATE TEMP TABLE hourly AS
SELECT store_id, json_extract_string(event_json, '$.data.sku') AS sku, ts - ts % 3600000 AS hour_ms,
       SUM(CAST(json_extract_string(event_json, '$.data.qty') AS BIGINT)) AS units,
       SUM(CAST(json_extract_string(event_json, '$.data.qty') AS BIGINT)
           * CAST(json_extract_string(event_json, '$.data.price_cents') AS BIGINT)) AS revenue, COUNT(*) AS lines
FROM ev WHERE type = 'pos.line' GROUP BY ALL;
CREATE TEMP TABLE r AS
SELECT store_id, json_extract_string(event_json, '$.data.facing_id') AS facing_id, ts,
       CAST(json_extract_string(event_json, '$.data.units_est') AS BIGINT) AS units
FROM ev WHERE type = 'shelf.reading';
CREATE TEMP TABLE state AS
SELECT store_id, facing_id, ts - ts % 3600000 AS hour_ms, COUNT(*) AS readings, MIN(units) AS min_units,
       SUM(CASE WHEN units = 0 AND nxt IS NOT NULL THEN LEAST(nxt - ts, 1800000) ELSE 0 END) AS empty_ms
FROM (SELECT *, LEAD(ts) OVER (PARTITION BY store_id, facing_id ORDER BY ts) AS nxt FROM r) GROUP BY ALL;
CREATE TEMP TABLE stockouts AS
WITH g AS (SELECT *, SUM(chg) OVER (PARTITION BY store_id, facing_id ORDER BY ts) AS island
           FROM (SELECT *, CASE WHEN (units = 0) IS DISTINCT FROM (LAG(units) OVER w = 0) THEN 1 ELSE 0 END AS chg
                 FROM r WINDOW w AS (PARTITION BY store_id, facing_id ORDER BY ts))),
     i AS (SELECT store_id, facing_id, island, MAX(CASE WHEN units = 0 THEN 1 ELSE 0 END) AS empty, MIN(ts) AS start
           FROM g GROUP BY ALL)
SELECT * FROM (SELECT *, LEAD(start) OVER (PARTITION BY store_id, facing_id ORDER BY island) AS stop FROM i) WHERE empty = 1;
"""


def _floor(bronze) -> dict:
    import duckdb

    con = duckdb.connect()
    con.register("bronze", bronze)
    con.execute(_FLOOR)
    out = {t: con.execute(f"SELECT COUNT(*) FROM {n}").fetchone()[0]
           for t, n in (("hourly_sales", "hourly"), ("shelf_state", "state"), ("stockouts", "stockouts"))}
    con.close()
    return out


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def run(quick: bool = False) -> dict:
    from cloud.ingest.source import LocalHubSource
    from cloud.ingest.stream import ingest_stream
    from cloud.lake.engine import DuckDBEngine
    from cloud.lake.runner import transform
    from cloud.lake.storage import open_storage
    from cloud.synth import day_events, fill_hub
    from gondola.hub import LocalHub

    stores = 10 if quick else N_STORES
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        events = list(day_events(stores=stores, facings=N_FACINGS, hours=24))
        with LocalHub(tmp / "hub.sqlite") as hub:
            fill_hub(hub, events, per_message=500)
        gen_s = time.perf_counter() - t
        n = len(events)
        del events
        print(f"day of {stores} stores x {N_FACINGS} facings: {n:,} events (generated + sent to hub in {gen_s:.1f}s)")

        storage = open_storage(tmp / "lake")
        engine = DuckDBEngine()
        with LocalHubSource(tmp / "hub.sqlite") as source:
            _, ingest_s = _timed(lambda: ingest_stream(storage, source, max_messages=500))
        phases: list[tuple[str, float]] = []
        report, transform_s = _timed(lambda: transform(
            storage, engine, progress=lambda name: phases.append((name, time.perf_counter()))))
        phases.append(("end", time.perf_counter()))
        phase_s = {a[0]: round(b[1] - a[1], 2) for a, b in zip(phases, phases[1:])}
        print(f"  transform phases (s): {phase_s}  (gold features = models.replay, Python)")
        day_s = ingest_s + transform_s
        print(f"  ours, end to end: ingest {ingest_s:.1f}s + transform {transform_s:.1f}s = {day_s:.1f}s "
              f"(budget 300s) -> {n / transform_s:,.0f} events/s bronze->gold")

        bronze = storage.read("bronze.events")

        pandas_out, pandas_s = _timed(_pandas, bronze)
        floor_out, floor_s = _timed(_floor, bronze)
        ours_counts = {t: storage.read(f"gold.{t}").num_rows for t in ("hourly_sales", "shelf_state", "stockouts")}
        same = ours_counts == pandas_out == floor_out
        rate = lambda s: n / s  # noqa: E731
        print(f"  ours (transform, Delta in and out): {rate(transform_s):>10,.0f} events/s")
        print(f"  pandas (in memory):                 {rate(pandas_s):>10,.0f} events/s")
        print(f"  DuckDB floor (in memory):           {rate(floor_s):>10,.0f} events/s")
        core_s = transform_s - phase_s.get("gold features", 0.0)
        print(f"  ours without features (the peers' scope): {rate(core_s):>10,.0f} events/s")
        print(f"  ratios: ours is {transform_s / floor_s:.1f}x the floor's time ({core_s / floor_s:.1f}x without features); "
              f"pandas takes {pandas_s / transform_s:.2f}x ours ({pandas_s / core_s:.2f}x without features; >1: ours faster); "
              f"same gold row counts: {same}")
        return {
            "stores": stores, "facings_per_store": N_FACINGS, "events": n,
            "ingest_s": round(ingest_s, 2), "transform_s": round(transform_s, 2), "day_end_to_end_s": round(day_s, 2),
            "day_within_5_min": day_s < 300,
            "generate_and_send_s": round(gen_s, 2), "pandas_s": round(pandas_s, 2), "duckdb_floor_s": round(floor_s, 2),
            "transform_phases_s": phase_s,
            "events_per_s": {"ours_transform_delta": round(rate(transform_s)), "ours_without_features": round(rate(core_s)),
                             "pandas": round(rate(pandas_s)), "duckdb_floor": round(rate(floor_s))},
            "ratio_ours_time_vs_floor": round(transform_s / floor_s, 2),
            "ratio_ours_without_features_time_vs_floor": round(core_s / floor_s, 2),
            "ratio_pandas_time_vs_ours": round(pandas_s / transform_s, 2),
            "ratio_pandas_time_vs_ours_without_features": round(pandas_s / core_s, 2),
            "gold_rows": ours_counts, "peer_rows_equal": same, "silver_stats": {k: report[k] for k in ("duplicates", "quarantined", "late")},
        }

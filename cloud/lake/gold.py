"""Silver -> gold: facts for stores, analysts and training, as SQL over named Arrow inputs.

Each gold table is one query (``GOLD_SQL``) over these inputs, all windows of silver rows:
``pos`` (silver.pos_line), ``readings`` (silver.shelf_reading), ``alerts`` (silver.edge_alert),
``health`` (silver.edge_health), ``keys`` (store_id, device_id, seq, ts of every silver event),
``products`` (silver.products), ``stockouts`` (this run's gold.stockouts, for alert quality) and,
for alerts on facings without a sensor, ``planogram`` (silver.planogram), ``gaps``
(silver.gap_scan), ``restocks`` (silver.shelf_restock) and ``checks`` (silver.shelf_check).
Times are epoch ms; hours and days are ``ts - ts % 3600000`` / ``% 86400000`` (UTC), which
every engine computes the same way. ``gold.features`` replays events through
``models.replay`` (Python), the same code the gateways run: ``cloud.lake.features``.
"""

from __future__ import annotations

import pyarrow as pa

from cloud.lake.engine import Engine
from cloud.lake.tables import NOT_RIGHT, STOCKOUT_ROW, conform, stockout_days_sql

__all__ = ["CENSOR_MS", "EVIDENCE_SQL", "GOLD_SQL", "GOLD_ORDER", "gold_tables", "key_columns"]

#: A stock-out is left-censored (``start_censored``) when no reading of its facing precedes its
#: first empty reading within this span: the shelf was already empty at the first evidence the
#: lake has (a sensor reports on change and on a heartbeat of hours, so a day without readings
#: means the facing was not observed). At most the runner's one day of context (see above).
CENSOR_MS = 86_400_000


def _minutes(ms: str) -> str:
    """Integer milliseconds -> minutes to 4 decimals, rounded half up on the integers: a minute
    is 60,000 ms, 0.0001 min is 6 ms, so it is floor((ms + 3) / 6) / 10,000. Rounding the double
    ms / 60,000 instead let engines disagree at ties (40.15575: DuckDB 40.1557, Spark 40.1558).
    The floor is exact in doubles for any |ms| < 2^52 (a quotient's fraction is k/6)."""
    return f"(FLOOR(({ms} + 3) / CAST(6 AS DOUBLE)) / CAST(10000 AS DOUBLE))"


def _reach(alert: str) -> str:
    """The last instant at which evidence judges the alert ``alert`` (a relation with ``ts`` and
    ``horizon_min``): an hour past its horizon, the staff check's reach (store page 'done')."""
    return f"{alert}.ts + ({alert}.horizon_min + 60) * 60000"


#: How ``gold.alert_outcomes`` judges an alert on a facing without a sensor (CTE ``b``: the alert,
#: its facing's SKU and capacity, ``own_sales`` when the SKU has no other facing in the store), from
#: the evidence ``cloud.lake.labels`` trusts, seen from the alert to an hour past its horizon (the
#: staff check's reach): ``empty = 1`` proves the shelf empty then (a gap scan; a restock of a whole
#: facing's capacity, just before it), ``empty = 0`` proves a unit on it (a "was fine" check; a till
#: sale of a SKU with one facing), ``bound = 1`` is a restock (a scan, or a check that restocked):
#: units enter a shelf only there, so a sighting after one says nothing about the shelf before it.
#: A forecast (empty within H) is right on a gap in ``[alert, alert + H]``, a false alarm on stock
#: seen at or after ``alert + H`` with no restock since the alert; an ``empty_now`` (empty when
#: raised) is decided by the first sighting before any restock (a unit: there was stock at the
#: alert; a gap with nothing sold since: there was none). No such evidence: ``unobserved``.
EVIDENCE_SQL = f"""
ev AS (
  SELECT b.device_id, b.seq, g.ts, 1 AS empty, 0 AS bound, 'gap_scan' AS src
  FROM b JOIN gaps g ON g.store_id = b.store_id AND g.facing_id = b.facing_id
   AND g.ts >= b.ts AND g.ts <= {_reach('b')}
  UNION ALL
  SELECT b.device_id, b.seq, r.ts - 1 AS ts, CASE WHEN b.capacity > 0 AND r.units_added >= b.capacity THEN 1 END AS empty,
         1 AS bound, 'restock' AS src
  FROM b JOIN restocks r ON r.store_id = b.store_id AND r.facing_id = b.facing_id
   AND r.ts > b.ts AND r.ts <= {_reach('b')}
  UNION ALL
  SELECT b.device_id, b.seq, ch.ts, CASE WHEN ch.outcome = 'was_fine' THEN 0 END AS empty,
         CASE WHEN ch.outcome = 'restocked' THEN 1 ELSE 0 END AS bound, 'shelf_check' AS src
  FROM b JOIN checks ch ON ch.store_id = b.store_id AND ch.facing_id = b.facing_id AND ch.outcome IN ('was_fine', 'restocked')
   AND ch.ts >= b.ts AND ch.ts <= {_reach('b')}
  UNION ALL
  SELECT b.device_id, b.seq, p.ts, 0 AS empty, 0 AS bound, 'till' AS src
  FROM b JOIN pos p ON b.own_sales AND p.store_id = b.store_id AND p.sku = b.sku
   AND COALESCE(p.kind, 'sale') = 'sale' AND p.qty > 0
   AND p.ts >= b.ts AND p.ts <= {_reach('b')}),
fb AS (SELECT device_id, seq, MIN(CASE WHEN bound = 1 THEN ts END) AS bound_ms FROM ev GROUP BY device_id, seq),
x AS (
  SELECT ev.device_id, ev.seq, ev.ts, ev.empty, ev.src, fb.bound_ms, b.ts AS alert_ms,
         b.ts + b.horizon_min * 60000 AS end_ms, b.kind
  FROM ev JOIN fb ON fb.device_id = ev.device_id AND fb.seq = ev.seq
  JOIN b ON b.device_id = ev.device_id AND b.seq = ev.seq
  WHERE ev.empty IS NOT NULL),
fv AS (
  SELECT device_id, seq,
         MAX(CASE WHEN empty = 1 AND ts <= end_ms THEN 1 ELSE 0 END) AS gap,
         MAX(CASE WHEN empty = 0 AND ts >= end_ms AND (bound_ms IS NULL OR ts < bound_ms) THEN 1 ELSE 0 END) AS stock
  FROM x WHERE kind <> 'empty_now' GROUP BY device_id, seq),
nv AS (
  SELECT device_id, seq, empty,
         ROW_NUMBER() OVER (PARTITION BY device_id, seq ORDER BY ts, empty, src) AS rn
  FROM x WHERE kind = 'empty_now' AND (bound_ms IS NULL OR ts <= bound_ms)),
verdict AS (
  SELECT device_id, seq, CASE WHEN gap = 1 THEN 1 ELSE 0 END AS empty
  FROM fv WHERE gap = 1 OR stock = 1
  UNION ALL
  SELECT device_id, seq, empty FROM nv WHERE rn = 1)"""

GOLD_SQL: dict[str, str] = {
    "gold.hourly_sales": """
SELECT store_id, sku, ts - (ts % 3600000) AS hour_ms,
       SUM(CASE WHEN kind = 'sale' THEN qty ELSE 0 END) AS units_sold,
       SUM(qty) AS net_units,
       SUM(qty * price_cents) AS net_revenue_cents,
       COUNT(*) AS lines,
       COUNT(DISTINCT concat(register, ':', txn_id)) AS txns
FROM pos
GROUP BY store_id, sku, ts - (ts % 3600000)""",
    "gold.shelf_state": """
WITH r AS (
  SELECT store_id, facing_id, sku, ts, units_est, battery_pct,
         LEAD(ts) OVER (PARTITION BY store_id, facing_id ORDER BY ts, device_id, seq) AS next_ts
  FROM readings)
SELECT store_id, facing_id, ts - (ts % 3600000) AS hour_ms, MAX(sku) AS sku, COUNT(*) AS readings,
       MIN(units_est) AS min_units, ROUND(AVG(units_est), 4) AS avg_units,
       """ + _minutes("SUM(CASE WHEN units_est = 0 AND next_ts IS NOT NULL THEN LEAST(next_ts - ts, 1800000) ELSE 0 END)")
    + """ AS minutes_empty,
       MIN(battery_pct) AS battery_min
FROM r
GROUP BY store_id, facing_id, ts - (ts % 3600000)""",
    "gold.stockouts": """
WITH l AS (
  -- One sort of the readings (every window here has the same partition and order): the reading
  -- before each, and the runs of equal emptiness (islands) numbered gaps-and-islands style: along
  -- a run of empty readings rn - empties stays the same, along a run of stocked ones empties does.
  -- (Numbering the islands by a running count of changes sorted them twice.)
  SELECT store_id, facing_id, sku, ts, CASE WHEN units_est = 0 THEN 1 ELSE 0 END AS empty,
         LAG(CASE WHEN units_est = 0 THEN 1 ELSE 0 END) OVER (PARTITION BY store_id, facing_id ORDER BY ts, device_id, seq) AS prev_empty,
         LAG(ts) OVER (PARTITION BY store_id, facing_id ORDER BY ts, device_id, seq) AS prev_ts,
         ROW_NUMBER() OVER (PARTITION BY store_id, facing_id ORDER BY ts, device_id, seq) AS rn,
         SUM(CASE WHEN units_est = 0 THEN 1 ELSE 0 END) OVER (PARTITION BY store_id, facing_id ORDER BY ts, device_id, seq
                                                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS empties
  FROM readings),
i AS (
  -- an island's first reading (rn) orders the islands; the reading before it (null for the
  -- facing's first island)
  SELECT store_id, facing_id, MIN(rn) AS island, MAX(empty) AS empty, MIN(ts) AS start_ms, MAX(sku) AS sku,
         MAX(CASE WHEN prev_empty IS NULL OR prev_empty <> empty THEN prev_ts END) AS prev_ts
  FROM l GROUP BY store_id, facing_id, empty, CASE WHEN empty = 1 THEN rn - empties ELSE empties END),
e AS (
  SELECT store_id, facing_id, sku, start_ms, empty, prev_ts,
         LEAD(start_ms) OVER (PARTITION BY store_id, facing_id ORDER BY island) AS end_ms
  FROM i),
-- Left-censored: already empty at the first evidence of the facing (no reading within CENSOR_MS
-- before: the facing's first reading, or its sensor was silent that long). The true start is
-- unknown: no hour of day, no alert lead. CENSOR_MS <= the runner's day of context, so an
-- incremental window decides it as a full rebuild does.
so AS (SELECT store_id, facing_id, sku, start_ms, end_ms,
              prev_ts IS NULL OR start_ms - prev_ts > """ + str(CENSOR_MS) + """ AS start_censored
       FROM e WHERE empty = 1),
last_seen AS (SELECT store_id, facing_id, MAX(ts) AS last_ms FROM readings GROUP BY store_id, facing_id),
sale_hours AS (SELECT DISTINCT store_id, ts - (ts % 3600000) AS hour_ms FROM pos WHERE kind = 'sale'),
open_empty AS (
  SELECT so.store_id, so.facing_id, so.start_ms,
         SUM(LEAST(COALESCE(so.end_ms, ls.last_ms), oh.hour_ms + 3600000) - GREATEST(so.start_ms, oh.hour_ms)) AS open_ms
  FROM so JOIN last_seen ls ON ls.store_id = so.store_id AND ls.facing_id = so.facing_id
  JOIN sale_hours oh ON oh.store_id = so.store_id AND oh.hour_ms < COALESCE(so.end_ms, ls.last_ms)
   AND oh.hour_ms + 3600000 > so.start_ms
  GROUP BY so.store_id, so.facing_id, so.start_ms),
open_hours AS (
  SELECT store_id, ts - (ts % 86400000) AS day_ms, COUNT(DISTINCT ts - (ts % 3600000)) AS hours
  FROM pos GROUP BY store_id, ts - (ts % 86400000)),
rate AS (
  SELECT p.store_id, p.sku, p.ts - (p.ts % 86400000) AS day_ms,
         CAST(SUM(CASE WHEN p.kind = 'sale' THEN p.qty ELSE 0 END) AS DOUBLE) / MAX(o.hours) AS rate_per_h,
         AVG(p.price_cents) AS pos_price
  FROM pos p JOIN open_hours o ON o.store_id = p.store_id AND o.day_ms = p.ts - (p.ts % 86400000)
  GROUP BY p.store_id, p.sku, p.ts - (p.ts % 86400000)),
price AS (SELECT sku, MAX(price_cents) AS price_cents FROM products GROUP BY sku),
al AS (
  SELECT so.store_id, so.facing_id, so.start_ms, MIN(a.ts) AS alert_ms
  FROM so JOIN alerts a
    ON NOT so.start_censored AND a.store_id = so.store_id AND a.facing_id = so.facing_id AND a.state = 'raised'
   AND COALESCE(a.kind, 'empty_within_h') = 'empty_within_h' AND a.scorer NOT LIKE 'shadow:%'
   AND a.ts <= so.start_ms AND a.ts >= so.start_ms - a.horizon_min * 60000
  GROUP BY so.store_id, so.facing_id, so.start_ms)
SELECT so.store_id, so.facing_id, so.sku, so.start_ms, so.end_ms,
       CASE WHEN so.end_ms IS NULL THEN NULL ELSE """ + _minutes("so.end_ms - so.start_ms") + """ END AS duration_min,
       """ + _minutes("COALESCE(oe.open_ms, 0)") + """ AS open_min,
       so.end_ms IS NULL AS ongoing,
       so.start_censored,
       'sensor' AS detected_by,
       ROUND(COALESCE(rt.rate_per_h, 0), 6) AS rate_per_h,
       ROUND(COALESCE(rt.rate_per_h, 0) * COALESCE(oe.open_ms, 0) / CAST(3600000 AS DOUBLE), 4) AS lost_units_est,
       ROUND(COALESCE(rt.rate_per_h, 0) * COALESCE(oe.open_ms, 0) / CAST(3600000 AS DOUBLE)
             * COALESCE(pr.price_cents, rt.pos_price, 0), 2) AS lost_sales_cents_est,
       CASE WHEN so.start_censored THEN NULL ELSE al.alert_ms IS NOT NULL END AS alerted,
       al.alert_ms,
       CASE WHEN al.alert_ms IS NULL THEN NULL ELSE """ + _minutes("so.start_ms - al.alert_ms") + """ END AS alert_lead_min
FROM so
LEFT JOIN open_empty oe ON oe.store_id = so.store_id AND oe.facing_id = so.facing_id AND oe.start_ms = so.start_ms
LEFT JOIN rate rt ON rt.store_id = so.store_id AND rt.sku = so.sku AND rt.day_ms = so.start_ms - (so.start_ms % 86400000)
LEFT JOIN price pr ON pr.sku = so.sku
LEFT JOIN al ON al.store_id = so.store_id AND al.facing_id = so.facing_id AND al.start_ms = so.start_ms""",
    "gold.alert_outcomes": """
WITH a AS (
  SELECT store_id, facing_id, sku, device_id, seq, ts, horizon_min, scorer, probability,
         COALESCE(kind, 'empty_within_h') AS kind
  FROM alerts WHERE state = 'raised'),
m AS (
  SELECT a.store_id, a.facing_id, a.sku, a.device_id, a.seq, a.ts, a.horizon_min, a.scorer, a.probability, a.kind,
         MIN(so.start_ms) AS stockout_start_ms,
         MIN(CASE WHEN so.start_censored THEN so.start_ms END) AS censored_start_ms
  FROM a LEFT JOIN stockouts so
    ON so.store_id = a.store_id AND so.facing_id = a.facing_id
   AND so.start_ms <= a.ts + a.horizon_min * 60000 AND (so.end_ms IS NULL OR so.end_ms > a.ts)
  GROUP BY a.store_id, a.facing_id, a.sku, a.device_id, a.seq, a.ts, a.horizon_min, a.scorer, a.probability, a.kind),
c AS (
  -- The first staff check of the facing from the alert to one hour past its horizon.
  SELECT a.device_id, a.seq, MIN(ch.ts) AS checked_ms
  FROM a JOIN checks ch ON ch.store_id = a.store_id AND ch.facing_id = a.facing_id
   AND ch.ts >= a.ts AND ch.ts <= """ + _reach("a") + """
  GROUP BY a.device_id, a.seq),
co AS (
  SELECT c.device_id, c.seq, c.checked_ms, MIN(ch.outcome) AS check_outcome
  FROM c JOIN a ON a.device_id = c.device_id AND a.seq = c.seq
  JOIN checks ch ON ch.store_id = a.store_id AND ch.facing_id = a.facing_id AND ch.ts = c.checked_ms
  GROUP BY c.device_id, c.seq, c.checked_ms),
-- Facings without a shelf sensor (the planogram's has_sensor; a facing it does not list, or lists
-- with has_sensor null, counts as sensed: the old rule) have no stock-out rows: no match proves
-- nothing there. Their alerts are judged by what staff and the till saw instead (EVIDENCE_SQL).
pg AS (
  SELECT store_id, facing_id, MAX(sku) AS sku, MAX(capacity) AS capacity,
         MAX(CASE WHEN has_sensor = FALSE THEN 0 ELSE 1 END) AS sensed
  FROM planogram GROUP BY store_id, facing_id),
own AS (SELECT store_id, sku FROM pg GROUP BY store_id, sku HAVING COUNT(*) = 1),
b AS (
  SELECT m.device_id, m.seq, m.store_id, m.facing_id, m.ts, m.horizon_min, m.kind, pg.sku, pg.capacity,
         own.sku IS NOT NULL AS own_sales
  FROM m JOIN pg ON pg.store_id = m.store_id AND pg.facing_id = m.facing_id
  LEFT JOIN own ON own.store_id = pg.store_id AND own.sku = pg.sku
  WHERE pg.sensed = 0 AND m.stockout_start_ms IS NULL),
""" + EVIDENCE_SQL + """
SELECT m.store_id, m.facing_id, m.sku, m.device_id, m.seq, m.ts AS alert_ms, m.scorer, m.probability, m.horizon_min, m.kind,
       CASE WHEN stockout_start_ms IS NOT NULL THEN CASE WHEN stockout_start_ms >= m.ts THEN 'empty_after' ELSE 'already_empty' END
            WHEN b.device_id IS NULL THEN 'false_alarm'
            WHEN v.empty = 1 THEN 'empty_seen' WHEN v.empty = 0 THEN 'false_alarm' ELSE 'unobserved' END AS outcome,
       stockout_start_ms,
       -- no lead time to a stock-out whose start is unknown (left-censored)
       CASE WHEN stockout_start_ms >= m.ts AND (censored_start_ms IS NULL OR censored_start_ms > stockout_start_ms)
            THEN """ + _minutes("stockout_start_ms - m.ts") + """ END AS lead_min,
       co.checked_ms, co.check_outcome
FROM m LEFT JOIN co ON co.device_id = m.device_id AND co.seq = m.seq
LEFT JOIN b ON b.device_id = m.device_id AND b.seq = m.seq
LEFT JOIN verdict v ON v.device_id = m.device_id AND v.seq = m.seq""",
    "gold.shelf_checks": """
SELECT store_id, facing_id, sku, device_id, seq, ts AS check_ms, outcome, alert_kind, alert_ts,
       CASE WHEN alert_ts IS NULL THEN NULL ELSE """ + _minutes("ts - alert_ts") + """ END AS response_min,
       units_est, CASE WHEN outcome = 'was_fine' THEN 0 ELSE 1 END AS label
FROM checks""",
    "gold.fleet_status": """
WITH de AS (
  -- per device epoch first: a counter that restarted (new epoch) is not a gap of billions
  SELECT store_id, device_id, epoch, ts - (ts % 86400000) AS day_ms, COUNT(*) AS events,
         MIN(seq) AS seq_min, MAX(seq) AS seq_max, MAX(seq) - MIN(seq) + 1 - COUNT(*) AS missing,
         MAX(ts) AS last_seen_ms
  FROM keys GROUP BY store_id, device_id, epoch, ts - (ts % 86400000)),
d AS (
  SELECT store_id, device_id, day_ms, SUM(events) AS events, MIN(seq_min) AS seq_min, MAX(seq_max) AS seq_max,
         SUM(missing) AS missing, MAX(last_seen_ms) AS last_seen_ms
  FROM de GROUP BY store_id, device_id, day_ms),
bat AS (
  SELECT store_id, device_id, ts - (ts % 86400000) AS day_ms, MIN(battery_pct) AS battery_min
  FROM readings GROUP BY store_id, device_id, ts - (ts % 86400000)),
h AS (
  SELECT store_id, device_id, ts - (ts % 86400000) AS day_ms, buffer_rows, unsent_rows, evictions, model_version,
         ROW_NUMBER() OVER (PARTITION BY store_id, device_id, ts - (ts % 86400000) ORDER BY ts DESC, seq DESC) AS rn
  FROM health)
SELECT d.store_id, d.device_id, d.day_ms, d.events, d.seq_min, d.seq_max,
       d.missing, d.last_seen_ms, bat.battery_min,
       h.buffer_rows, h.unsent_rows, h.evictions, h.model_version
FROM d
LEFT JOIN bat ON bat.store_id = d.store_id AND bat.device_id = d.device_id AND bat.day_ms = d.day_ms
LEFT JOIN h ON h.store_id = d.store_id AND h.device_id = d.device_id AND h.day_ms = d.day_ms AND h.rn = 1""",
    # Per scorer: its judged alerts. Per store-day, on one row (scorer STOCKOUT_ROW, every store-day
    # with alerts or stock-outs): the day's stock-outs, in the one definition the warehouse's
    # bi_stockout_recall also reads (stockout_days_sql). On every scorer's row they made a sum over
    # scorers count a stock-out once per scorer.
    "gold.model_performance": """
WITH ad AS (
  -- precision over judged alerts: one nobody could judge (no sensor, no evidence) is counted apart
  SELECT store_id, alert_ms - (alert_ms % 86400000) AS day_ms, scorer,
         SUM(CASE WHEN outcome = 'unobserved' THEN 0 ELSE 1 END) AS alerts,
         SUM(CASE WHEN outcome IN (""" + NOT_RIGHT + """) THEN 0 ELSE 1 END) AS true_alerts,
         SUM(CASE WHEN outcome = 'unobserved' THEN 1 ELSE 0 END) AS unobserved
  FROM alert_outcomes GROUP BY store_id, alert_ms - (alert_ms % 86400000), scorer),
sd AS (""" + stockout_days_sql("stockouts") + """),
days AS (SELECT DISTINCT store_id, day_ms FROM ad)
SELECT store_id, day_ms, scorer, alerts, true_alerts, unobserved, CAST(NULL AS BIGINT) AS stockouts,
       CAST(NULL AS BIGINT) AS caught,
       CASE WHEN alerts = 0 THEN NULL ELSE ROUND(CAST(true_alerts AS DOUBLE) / alerts, 6) END AS precision,
       CAST(NULL AS DOUBLE) AS recall, CAST(NULL AS DOUBLE) AS mean_lead_min, CAST(NULL AS BIGINT) AS known_start
FROM ad
UNION ALL
SELECT COALESCE(sd.store_id, days.store_id) AS store_id, COALESCE(sd.day_ms, days.day_ms) AS day_ms,
       '""" + STOCKOUT_ROW + """' AS scorer, CAST(0 AS BIGINT) AS alerts, CAST(0 AS BIGINT) AS true_alerts,
       CAST(0 AS BIGINT) AS unobserved, COALESCE(sd.stockouts, 0) AS stockouts, COALESCE(sd.caught, 0) AS caught,
       CAST(NULL AS DOUBLE) AS precision, sd.recall, sd.mean_lead_min, COALESCE(sd.known_start, 0) AS known_start
FROM sd FULL OUTER JOIN days ON days.store_id = sd.store_id AND days.day_ms = sd.day_ms""",
}

#: Computation order (alert outcomes read this run's stock-outs, model performance both).
GOLD_ORDER = ["gold.hourly_sales", "gold.shelf_state", "gold.stockouts", "gold.alert_outcomes", "gold.fleet_status",
              "gold.model_performance", "gold.shelf_checks"]


def gold_tables(engine: Engine, inputs: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Every SQL gold table from one set of silver windows (see module docstring for inputs)."""
    out: dict[str, pa.Table] = {}
    env = dict(inputs)
    keys = env.get("keys")
    if keys is not None and engine.columns(keys) != list(_KEY_COLUMNS):  # (the runner's are: not copied again)
        env["keys"] = key_columns(engine, keys)
    for name, table in (("checks", "silver.shelf_check"), ("gaps", "silver.gap_scan"),
                        ("restocks", "silver.shelf_restock"), ("planogram", "silver.planogram")):
        if name not in env:  # lakes and callers from before these inputs existed
            env[name] = conform(table, pa.table({"store_id": pa.array([], pa.string())}))
    for name in GOLD_ORDER:
        # Relations of the engine (on Spark DataFrames: the rows stay on the executors).
        out[name] = engine.conform(name, engine.frame(GOLD_SQL[name], env))
        if name in ("gold.stockouts", "gold.alert_outcomes"):  # read again by the next queries
            env[name.split(".")[1]] = out[name] = engine.cache(out[name])
    return out


_KEY_COLUMNS = ("store_id", "device_id", "epoch", "seq", "ts")


def key_columns(engine: Engine, *rels) -> pa.Table:
    """``store_id, device_id, epoch, seq, ts`` of silver event relations, one under the other
    (epoch 0 for rows, or tables from before epochs, without one)."""
    parts = {f"k{i}": r for i, r in enumerate(rels)}
    sql = " UNION ALL ".join(
        f"SELECT store_id, device_id, "
        f"{'COALESCE(CAST(epoch AS BIGINT), 0)' if 'epoch' in engine.columns(r) else 'CAST(0 AS BIGINT)'} AS epoch, "
        f"seq, ts FROM {name}" for name, r in parts.items())
    return engine.frame(sql, parts)

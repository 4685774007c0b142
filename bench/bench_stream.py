"""The stream job: throughput against a bare consumer, event-to-alert latency, detector quality.

Input: simulated stores (``firmware_sim``) through simulated gateways into the embedded hub
(``tests/stream_sim.py``), on a RAM folder when there is one (the hub fsyncs every message).

* ``throughput``: the same hub read by (a) a bare consumer that only receives and checkpoints
  (the floor) and (b) the job (dedup, windows, scoring every facing with the shipped model every
  5 event-minutes, detectors, Delta commits). Rounds alternate; median and spread of events/s,
  ratio job / bare. Against the rate 1,000 stores send at their busiest hour (measured on the
  simulated stores: events per store per second in the busiest UTC hour).
* ``latency``: a producer thread sends the hub's messages at the 1,000-store busiest-hour rate
  (in wall time) while the job runs live; latency of each alert / anomaly / window row =
  ``emitted_at`` (wall clock when the job committed it) - the enqueue time of the message whose
  processing emitted it. p50 / p99 over all rows.
* ``detectors``: precision and recall per anomaly kind on held-out seeds (the rules were built
  on seeds 1 and 23), every anomaly injected at once.
* ``phantom``: ``phantom_inventory`` with the stores' nightly stock record as side input beside
  the rule without it (the same hub read twice, two consumer groups and lakes) on the training
  seeds (1-7, 23), the held-out seeds (41-43) and the fresh ones (51-52); every kind's totals of
  the run with the record are kept too.
* ``till``: ``till_silent`` as it is beside the previous rule (``PREVIOUS_TILL``: the store's
  baskets in a lane's silence counted in its share at once before the store's 30th basket) on the
  same hubs, per seed set (training, held-out, fresh, fresh after the held-out look, fresh of
  session 7).
* ``band``: ``demand_band`` with the rule in force, ``shelf_switch`` (the SKU's rate while on its
  shelf, net of shoppers from a same-category product that emptied today), beside "shelf" (the
  same without the categories) and the rule in force before ("previous": best share of the last
  days, early part of the day), on the same hubs per seed set (``BAND_SETS``); each precision and
  recall with its 90 % Wilson interval; the job runs without cloud scoring (the detectors do not
  read it). (The exposure rule's figures are in docs/stream.md: its code path is unchanged.)
* ``cloud_vs_gateway``: gateways scoring with the same model, some silent or with a broken model:
  the divergence flag against the truth (beside the previous rule, ``PREVIOUS_DIVERGENCE``: no
  lasting disagreement, a second job on the same hub), and the precision of the forecasts the
  cloud raises for a silent store beside the gateways' own (a forecast is right when its shelf is
  empty within the horizon).

Environment (each checked, a bad value stops the run with the variable named):
``BENCH_STREAM_PARTS`` (comma-separated parts above, default all; the others are carried over from
the results file), ``BENCH_STREAM_PHANTOM_SETS`` (sets of ``phantom``: training, held_out, fresh;
default all), ``BENCH_STREAM_TILL_SETS`` (sets of ``till``, default all; the others are carried
over), ``BENCH_STREAM_WORKERS`` (seeds run at once by ``phantom``, ``till`` and
``cloud_vs_gateway``, default 4),
``BENCH_STREAM_BAND_SETS`` (sets of ``band``, default all; the others are carried over),
``BENCH_STREAM_CVG_SEEDS`` (more seeds for ``cloud_vs_gateway``, e.g. ``62,63``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

SKUS = 600


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-stream-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def _busiest_rate(run) -> float:
    """Events per store per second in the busiest UTC hour of the run (from the hub's messages)."""
    from gondola.contracts import batch_lines
    from gondola.hub import LocalHub

    per_hour: dict[int, int] = {}
    with LocalHub(run.hub_path) as hub:
        for p in range(hub.partitions):
            for m in hub.read(p, limit=10_000_000):
                for line in batch_lines(m.body, m.properties):
                    ts = json.loads(line)["ts"]
                    per_hour[ts // 3_600_000] = per_hour.get(ts // 3_600_000, 0) + 1
    return max(per_hour.values()) / len(run.sims) / 3600.0


def _bare(hub_path: Path, group: str, decode: bool = False) -> tuple[int, float]:
    """Read every message and checkpoint each batch (``decode``: also decompress and parse each
    event, what any consumer that looks at events must do, with the job's own parser call);
    return (messages, seconds)."""
    from cloud.ingest.source import LocalHubSource
    from gondola.contracts import batch_lines, parse_lines

    t = time.perf_counter()
    n = 0
    with LocalHubSource(str(hub_path), consumer_group=group) as source:
        while True:
            batch = source.receive(max_messages=2000, max_wait_s=0.0)
            if not batch:
                break
            n += len(batch)
            if decode:
                for m in batch:
                    parse_lines(batch_lines(m.body, m.properties))
            source.checkpoint(batch)
    return n, time.perf_counter() - t


def _make_job(run, hub_path: Path, lake: Path, group: str, scorer):
    from cloud.ingest.source import LocalHubSource
    from cloud.lake.storage import open_storage
    from cloud.stream.job import StreamJob

    source = LocalHubSource(str(hub_path), consumer_group=group)
    return StreamJob(open_storage(str(lake)), source, scorer=scorer, planograms=run.planograms(),
                     max_messages=2000, snapshot_every_s=30.0)


def _job(run, hub_path: Path, lake: Path, group: str, scorer):
    job = _make_job(run, hub_path, lake, group, scorer)
    t = time.perf_counter()
    job.run(once=True)
    job.source.close()
    return job, time.perf_counter() - t


def _events(run) -> int:
    return sum(gw.sent_events for gw in run.gateways)


def _timed(fn):
    """Run ``fn``; return (its result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _throughput(run, scorer, rounds: int) -> dict:
    """Events/s of the three readers, wall clock and CPU time (the machine is shared: CPU time
    is what another agent's load disturbs least); rounds alternate readers."""
    import cloud.stream.job  # noqa: F401  (imports paid once, as by a long-running job)
    import deltalake  # noqa: F401

    events = _events(run)
    wall = {"bare": [], "decode": [], "job": []}
    cpu = {"bare": [], "decode": [], "job": []}
    for r in range(rounds):
        (n, _), w, c = _timed(lambda: _bare(run.hub_path, f"bare-{r}"))
        wall["bare"].append(events / w)
        cpu["bare"].append(events / c)
        _, w, c = _timed(lambda: _bare(run.hub_path, f"decode-{r}", decode=True))
        wall["decode"].append(events / w)
        cpu["decode"].append(events / c)
        lake = _tmp()
        _, w, c = _timed(lambda: _job(run, run.hub_path, lake, f"job-{r}", scorer))
        wall["job"].append(events / w)
        cpu["job"].append(events / c)
        shutil.rmtree(lake, ignore_errors=True)
        print(f"  round {r} ({n} messages), events/s wall | CPU: bare {wall['bare'][-1]:,.0f} | {cpu['bare'][-1]:,.0f}, "
              f"bare+decode {wall['decode'][-1]:,.0f} | {cpu['decode'][-1]:,.0f}, "
              f"job {wall['job'][-1]:,.0f} | {cpu['job'][-1]:,.0f}")

    def spread(xs):
        return [round(min(xs)), round(max(xs))]

    def ratios(per_round: dict[str, list[float]]) -> dict:
        """Per-round ratios (each reader against its peer of the same round), median and spread."""
        out = {}
        for name, (a, b) in {"job_to_bare": ("job", "bare"), "job_to_bare_decode": ("job", "decode"),
                             "bare_decode_to_bare": ("decode", "bare")}.items():
            xs = [x / y for x, y in zip(per_round[a], per_round[b])]
            out[name] = round(statistics.median(xs), 4)
            out[name + "_spread"] = [round(min(xs), 4), round(max(xs), 4)]
        return out

    med = {k: statistics.median(v) for k, v in wall.items()}
    return {"events": events, "rounds": rounds,
            "bare_events_per_s": round(med["bare"]), "bare_decode_events_per_s": round(med["decode"]),
            "job_events_per_s": round(med["job"]), "bare_spread": spread(wall["bare"]),
            "bare_decode_spread": spread(wall["decode"]), "job_spread": spread(wall["job"]),
            "ratio_job_to_bare": round(med["job"] / med["bare"], 4),
            "ratio_job_to_bare_decode": round(med["job"] / med["decode"], 4),
            "wall_ratios": ratios(wall),
            "cpu_events_per_s": {k: round(statistics.median(v)) for k, v in cpu.items()},
            "cpu_spread": {k: spread(v) for k, v in cpu.items()},
            "cpu_ratios": ratios(cpu)}


def _latency(run, scorer, rate_events_s: float, seconds: float) -> dict:
    """Replay ``seconds`` of the hub's busiest stretch into a fresh hub at ``rate_events_s`` (wall
    time) while the job runs live."""
    from cloud.lake.storage import open_storage
    from gondola.hub import LocalHub

    root = _tmp()
    live = root / "live.sqlite"
    with LocalHub(run.hub_path) as src:
        msgs = [m for p in range(src.partitions) for m in src.read(p, limit=10_000_000)]
        parts = src.partitions
    msgs.sort(key=lambda m: m.enqueued_time)  # simulated send order across stores
    sizes = [int(m.properties.get("count", 0)) or 1 for m in msgs]
    # The busiest stretch: from 07:00 on, as many messages as ``seconds`` of wall time carry.
    first = next((i for i, m in enumerate(msgs) if (m.enqueued_time % 86_400_000) >= 7 * 3_600_000), 0)
    budget, end = rate_events_s * seconds, first
    while end < len(msgs) and budget > 0:
        budget -= sizes[end]
        end += 1
    msgs, sizes = msgs[first:end], sizes[first:end]
    LocalHub(live, partitions=parts).close()
    stop = threading.Event()
    sent = {"n": 0}

    def produce():
        with LocalHub(live) as hub:
            start, done = time.perf_counter(), 0
            for m, k in zip(msgs, sizes):
                hub.send(m.device_id, m.body, m.properties)
                done += k
                ahead = done / rate_events_s - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
            sent["n"] = done
            sent["s"] = time.perf_counter() - start

    job = _make_job(run, live, root / "lake", "live", scorer)
    consumer = threading.Thread(target=lambda: job.run(stop=stop))
    producer = threading.Thread(target=produce)
    consumer.start()
    producer.start()
    producer.join()
    deadline = time.monotonic() + 120  # let the job catch up with what was sent, then stop it
    while time.monotonic() < deadline and job.stats["messages"] < len(msgs):
        time.sleep(0.2)
    stop.set()
    consumer.join()
    job.source.close()
    storage = open_storage(str(root / "lake"))
    lat: dict[str, list[float]] = {}
    for name in ("stream.alerts", "stream.anomalies", "stream.sales_5m"):
        t = storage.read(name)
        if t is not None and t.num_rows:
            lat[name] = [(e - q) / 1000.0 for e, q in zip(t["emitted_at"].to_pylist(), t["origin_enqueued_ms"].to_pylist())]
    shutil.rmtree(root, ignore_errors=True)

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)

    every = [x for xs in lat.values() for x in xs]
    return {"rate_events_per_s": round(rate_events_s), "sent_events": sent["n"], "send_s": round(sent.get("s", 0), 1),
            "rows": {k: len(v) for k, v in lat.items()},
            "p50_s": pct(every, 0.5), "p99_s": pct(every, 0.99),
            "alerts_p50_s": pct(lat.get("stream.alerts", [0]), 0.5), "alerts_p99_s": pct(lat.get("stream.alerts", [0]), 0.99)}


def _detectors(seeds: list[int], stores: int, days: float, without_stock: bool = False) -> dict:
    """Every detector on these seeds; with ``without_stock`` also ``phantom_inventory`` of a second
    job over the same hub without the stock record (the previous rule), as ``phantom_without_stock``."""
    from firmware_sim.uplink import GatewayFaults
    from tests.stream_sim import TRUTH_OF, run_job, run_sim_stores, score_detectors

    fields = ("detections", "right", "truth", "found", "truth_all", "found_all")
    total = {k: {f: 0 for f in fields} for k in TRUTH_OF}
    old = {f: 0 for f in fields}
    per_seed = {}
    for seed in seeds:
        root = _tmp()
        run = run_sim_stores(root, stores=stores, skus=1000, days=days, seed=seed,
                             gateway_faults=GatewayFaults(uplink_down=0.15, uplink_slow=0.15))
        run_job(run)
        s = score_detectors(run)
        per_seed[seed] = {k: (v["precision"], v["recall"]) for k, v in s.items()}
        if without_stock:
            run_job(run, stock=False, group="cloud-stream-no-stock", lake=root / "lake-no-stock")
            p = score_detectors(run, run.table("stream.anomalies", root / "lake-no-stock"))["phantom_inventory"]
            per_seed[seed]["phantom_inventory_without_stock"] = (p["precision"], p["recall"])
            for f in fields:
                old[f] += p[f]
            print(f"  seed {seed} without the stock record: phantom_inventory {p['right']}/{p['detections']} "
                  f"{p['found']}/{p['truth']}")
        for k, v in s.items():
            for f in fields:
                total[k][f] += v[f]
            for f in ("missed_baskets_found", "missed_baskets_missed"):
                if f in v:
                    total[k][f] = sorted(total[k].get(f, []) + v[f])
        shutil.rmtree(root, ignore_errors=True)
        print(f"  seed {seed}: " + ", ".join(f"{k} {v['right']}/{v['detections']} {v['found']}/{v['truth']}"
                                              for k, v in s.items()))
    for v in list(total.values()) + [old]:
        v["precision"] = round(v["right"] / v["detections"], 3) if v["detections"] else None
        v["recall"] = round(v["found"] / v["truth"], 3) if v["truth"] else None
        v["recall_all_windows"] = round(v["found_all"] / v["truth_all"], 3) if v["truth_all"] else None
    out = {"seeds": seeds, "stores": stores, "days": days, "skus": 1000, "total": total, "per_seed": per_seed}
    if without_stock:
        out["phantom_without_stock"] = old
    return out


#: ``phantom``: the seed sets of docs/stream.md (thresholds chosen on ``training`` only).
PHANTOM_SETS = {"training": [1, 2, 3, 4, 5, 6, 7, 23], "held_out": [41, 42, 43], "fresh": [51, 52]}


def _sum_runs(dets: list[dict]) -> dict:
    """One ``_detectors`` result from several (each on its own seeds)."""
    fields = ("detections", "right", "truth", "found", "truth_all", "found_all")
    out = {"seeds": [s for d in dets for s in d["seeds"]], "per_seed": {k: v for d in dets for k, v in d["per_seed"].items()},
           "total": {k: {f: sum(d["total"][k][f] for d in dets) for f in fields} for k in dets[0]["total"]},
           "phantom_without_stock": {f: sum(d["phantom_without_stock"][f] for d in dets) for f in fields}}
    for v in list(out["total"].values()) + [out["phantom_without_stock"]]:
        v["precision"] = round(v["right"] / v["detections"], 3) if v["detections"] else None
        v["recall"] = round(v["found"] / v["truth"], 3) if v["truth"] else None
        v["recall_all_windows"] = round(v["found_all"] / v["truth_all"], 3) if v["truth_all"] else None
    return out


def _phantom(quick: bool) -> dict:
    """The sets named in ``BENCH_STREAM_PHANTOM_SETS`` (default all), each seed in its own process
    (``BENCH_STREAM_WORKERS`` at once, default 4); the other sets are carried over from the
    results file."""
    from concurrent.futures import ProcessPoolExecutor

    names = env_names("BENCH_STREAM_PHANTOM_SETS", tuple(PHANTOM_SETS))
    if quick:
        names = ["held_out"]
    stores, days = (2, 3.0) if quick else (4, 6.0)
    with ProcessPoolExecutor(max_workers=env_workers()) as pool:
        futures = {n: [pool.submit(_detectors, [seed], stores, days, True)
                       for seed in (PHANTOM_SETS[n][:2] if quick else PHANTOM_SETS[n])] for n in names}
        out = {}
        for n, fs in futures.items():
            det = _sum_runs([f.result() for f in fs])
            new, old = det["total"]["phantom_inventory"], det["phantom_without_stock"]
            print(f" {n}: phantom_inventory with the stock record P {new['precision']} ({new['right']}/{new['detections']}) "
                  f"R {new['recall']} ({new['found']}/{new['truth']}); without: P {old['precision']} "
                  f"({old['right']}/{old['detections']}) R {old['recall']} ({old['found']}/{old['truth']})", flush=True)
            out[n] = {"seeds": det["seeds"], "with_stock_record": new, "without_stock_record": old,
                      "every_kind_with_stock_record": det["total"], "per_seed": det["per_seed"]}
    path = Path(__file__).parent / "results" / f"stream{'-quick' if quick else ''}.json"
    before = json.loads(path.read_text()).get("result", {}).get("phantom", {}) if path.exists() else {}
    for n in PHANTOM_SETS:
        if n not in out and n in before:
            out[n] = {**before[n], "carried_over": True}
    return out


#: ``till``: the seed sets of docs/stream.md; ``fresh_after_held_out`` was drawn after the rule's
#: backlog change had been made from a held-out miss, and is the figure of record.
TILL_SETS = {"training": [1, 2, 3, 4, 5, 6, 7, 23], "held_out": [41, 42, 43], "fresh": [51, 52],
             "fresh_after_held_out": [71, 72, 73, 74], "fresh_session7": [91, 92, 93, 94]}


#: part ``till``'s previous rule: before the store's baskets in a lane's silence waited for it to
#: speak before its share counted them, also before the store's 30th basket (docs/stream.md)
PREVIOUS_TILL = dict(till_share_after_silence=False)
#: part ``cloud_vs_gateway``'s previous ``alert_divergence`` rule: without the lasting disagreement
PREVIOUS_DIVERGENCE = dict(divergence_lasting_ticks=0)


def _till_seed(seed: int, quick: bool) -> dict:
    """One seed of part ``till``: the job with each rule over the same hub; scores per rule."""
    from cloud.stream.detectors import DetectorConfig
    from cloud.stream.pipeline import StreamConfig
    from firmware_sim.uplink import GatewayFaults
    from tests.stream_sim import run_job, run_sim_stores, score_detectors

    root = _tmp()
    run = run_sim_stores(root, stores=2 if quick else 4, skus=1000, days=3.0 if quick else 6.0, seed=seed,
                         gateway_faults=GatewayFaults(uplink_down=0.15, uplink_slow=0.15))
    run_job(run)
    run_job(run, config=StreamConfig(detectors=DetectorConfig(**PREVIOUS_TILL)), group="cloud-stream-previous",
            lake=root / "lake-previous")
    out = {}
    for rule, lake in (("evidence", None), ("previous", root / "lake-previous")):
        v = score_detectors(run, run.table("stream.anomalies", lake))["till_silent"]
        out[rule] = {f: v[f] for f in ("detections", "right", "truth", "found", "missed_baskets_missed")}
    shutil.rmtree(root, ignore_errors=True)
    return out


def _till(quick: bool) -> dict:
    """``till_silent`` with the evidence rule and with the previous one (10.5 missed baskets) on
    the same hubs, per seed set (4 stores x 1,000 SKUs x 6 days, every anomaly injected); seeds run
    in ``BENCH_STREAM_WORKERS`` processes at once (default 4)."""
    from concurrent.futures import ProcessPoolExecutor

    names = ["held_out"] if quick else env_names("BENCH_STREAM_TILL_SETS", tuple(TILL_SETS))
    sets = {name: (seeds[:2] if quick else seeds) for name, seeds in TILL_SETS.items() if name in names}
    seeds = sorted({s for ss in sets.values() for s in ss})
    with ProcessPoolExecutor(env_workers()) as pool:
        per_seed = dict(zip(seeds, pool.map(_till_seed, seeds, [quick] * len(seeds))))
    out = {}
    for name, ss in sets.items():
        total = {rule: {f: sum(per_seed[s][rule][f] for s in ss) for f in ("detections", "right", "truth", "found")}
                 for rule in ("evidence", "previous")}
        for v in total.values():
            v["precision"] = round(v["right"] / v["detections"], 3) if v["detections"] else None
            v["recall"] = round(v["found"] / v["truth"], 3) if v["truth"] else None
        out[name] = {"seeds": ss, **total, "per_seed": {s: per_seed[s] for s in ss}}
        print(f" till {name}: evidence P {total['evidence']['precision']} ({total['evidence']['right']}/"
              f"{total['evidence']['detections']}) R {total['evidence']['recall']} ({total['evidence']['found']}/"
              f"{total['evidence']['truth']}); previous P {total['previous']['precision']} ({total['previous']['right']}/"
              f"{total['previous']['detections']}) R {total['previous']['recall']} ({total['previous']['found']}/"
              f"{total['previous']['truth']})", flush=True)
    path = Path(__file__).parent / "results" / f"stream{'-quick' if quick else ''}.json"
    before = json.loads(path.read_text()).get("result", {}).get("till", {}) if path.exists() else {}
    for n in TILL_SETS:
        if n not in out and n in before:
            out[n] = {**before[n], "carried_over": True}
    return out


def _cloud_vs_gateway(scorer, seed: int, stores: int, days: float) -> dict:
    """Gateways scoring with the same model (``ModelAlerter``), some going silent or running a
    broken model: divergence flags against the truth, and the precision of the forecasts the cloud
    raised for silent stores (>= 1 h into the silence) beside the gateways' own."""
    from firmware_sim import StoreSim
    from firmware_sim.uplink import GatewayFaults
    from models.replay import planograms_from_rows
    from tests.stream_sim import (ModelAlerter, alert_precision, held_precision, run_job, run_sim_stores,
                                  score_detectors)

    skus = 300
    plans = planograms_from_rows([r for i in range(stores)
                                  for r in StoreSim(f"s{seed:02d}{i:02d}", skus=skus, seed=seed).planogram])
    alerters = {sid: ModelAlerter(sid, p, scorer, seed) for sid, p in plans.items()}
    root = _tmp()
    run = run_sim_stores(root, stores=stores, skus=skus, days=days, seed=seed, faults={}, partitions=2,
                         gateway_faults=GatewayFaults(uplink_down=0.5, model_broken=0.2), alerters=alerters)
    run_job(run, scorer=scorer)
    from cloud.stream.detectors import DetectorConfig
    from cloud.stream.pipeline import StreamConfig

    run_job(run, scorer=scorer, config=StreamConfig(detectors=DetectorConfig(**PREVIOUS_DIVERGENCE)),
            group="cloud-stream-previous", lake=root / "lake-previous")
    previous = score_detectors(run, run.table("stream.anomalies", root / "lake-previous"))["alert_divergence"]
    horizon = int(scorer.horizon_h * 3_600_000)
    raised = [r for r in run.table("stream.alerts") if r["kind"] == "empty_within_h" and r["state"] == "raised"]
    # Instants and silences inside the run, with the truth known for a whole horizon after the
    # instant (the gateways plan a day's faults at its start, so the last day's silences may lie
    # after the run's end, where neither side scored and every held forecast read as wrong).
    last = run.end_ms - horizon
    down = [w for g in run.gateways for w in g.windows if w.kind == "uplink_down"
            and min(w.end_ms, last) - w.start_ms >= 3_600_000]
    silent = [(r["ts"], r["facing_id"]) for r in raised
              if any(w.target == r["store_id"] and w.start_ms + 3_600_000 <= r["ts"] < w.end_ms for w in down)]
    alive = [(r["ts"], r["facing_id"]) for r in raised if r["gateway_alive"]]
    # Forecasts held raised, sampled every hour: in silences from their first hour on, and
    # while the gateways were alive (the cloud's alive-time forecasts equal the gateway's model's).
    all_rows = run.table("stream.alerts")
    # (Instants while the gateway's model was broken are left out: the peer is a healthy gateway.)
    silent_at = {g.store_id: [t for w in g.windows if w.kind == "uplink_down"
                              for t in range(w.start_ms + 3_600_000, min(w.end_ms, last), 3_600_000)
                              if not any(b.kind == "model_broken" and b.start_ms <= t < b.end_ms + 3_600_000
                                         for b in g.windows)] for g in run.gateways}
    busy = {g.store_id: [(w.start_ms, w.end_ms + 3_600_000) for w in g.windows] for g in run.gateways}
    alive_at = {sid: [t for t in range(run.start_ms + 86_400_000, last, 3_600_000)
                      if not any(a <= t < b for a, b in spans)] for sid, spans in busy.items()}
    out = {"seed": seed, "stores": stores, "days": days, "skus": skus,
           "held_gateway_silent_1h": held_precision(run, all_rows, silent_at, horizon),
           "held_gateway_alive": held_precision(run, all_rows, alive_at, horizon),
           # The peer: the gateway's own forecasts at the same instants (it keeps scoring on live
           # data while its uplink is down; what the store's staff see on site).
           "held_gateway_own_silent_1h": held_precision(run, [c for x in alerters.values() for c in x.changes],
                                                        silent_at, horizon),
           "divergence": score_detectors(run)["alert_divergence"], "divergence_previous_rule": previous,
           "gateway_alerts": alert_precision(run, [a for x in alerters.values() for a in x.raised], horizon),
           "cloud_alerts_gateway_alive": alert_precision(run, alive, horizon),
           "cloud_alerts_gateway_silent_1h": alert_precision(run, silent, horizon),
           "silent_windows_1h": len(down),
           "silent_hours": round(sum(min(w.end_ms, last) - w.start_ms for w in down) / 3.6e6, 1)}
    shutil.rmtree(root, ignore_errors=True)
    return out


def _cvg_seed(seed: int, size: tuple[int, float]) -> dict:
    """One seed of part ``cloud_vs_gateway`` in its own process (the scorer opened there)."""
    from models.runtime import DEFAULT_MODEL, open_scorer

    return _cloud_vs_gateway(open_scorer(DEFAULT_MODEL, None), seed, *size)


def env_names(var: str, known: tuple[str, ...]) -> list[str]:
    """The comma-separated names in ``var`` (default all of ``known``).

    Raises:
        ValueError: a name is not one of ``known``.
    """
    names = [n.strip() for n in os.environ.get(var, ",".join(known)).split(",") if n.strip()]
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"{var}: unknown names {sorted(unknown)}; known: {known}")
    return names


def env_workers() -> int:
    """``BENCH_STREAM_WORKERS``: processes running seeds at once (default 4).

    Raises:
        ValueError: not a whole number >= 1.
    """
    text = os.environ.get("BENCH_STREAM_WORKERS", "4")
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"BENCH_STREAM_WORKERS: {text!r} is not a whole number >= 1")
    return n


#: ``BENCH_STREAM_PARTS=throughput,latency`` (any of PARTS) re-measures only those parts; the
#: others are carried over from the run of record, named in ``carried_over``.
PARTS = ("throughput", "latency", "detectors", "phantom", "till", "band", "cloud_vs_gateway")


def run(quick: bool = False) -> dict:
    parts = env_names("BENCH_STREAM_PARTS", PARTS)
    out = _run(quick, parts)
    if set(parts) != set(PARTS):
        path = Path(__file__).parent / "results" / f"stream{'-quick' if quick else ''}.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        before = record.get("result", {})
        out["carried_over"] = {p: before.get("measured", {}).get(p, record.get("started", "the previous run"))
                               for p in PARTS if p not in parts and p in before}
        out["measured"].update(out["carried_over"])
        for p in out["carried_over"]:
            out[p] = before[p]
        out.setdefault("busiest_events_per_store_s", before.get("busiest_events_per_store_s"))
    return out


#: ``band``: the seed sets of docs/stream.md. Since session 8 the rule is chosen on ``training``
#: (1-7, 23 and 201-210: 44 visible spikes) and judged on ``held_out_s8`` (301-320, drawn for that
#: and run once), each set large enough that every precision and recall rests on >= 40 cases; the
#: earlier sets (41-43, 51-52, 81-84 drawn for the exposure rule, 91-94 for "shelf": 28 visible
#: spikes in all, each looked at once) are kept as they were run.
BAND_SETS = {"training": [1, 2, 3, 4, 5, 6, 7, 23, *range(201, 211)], "held_out_s8": list(range(301, 321)),
             "held_out": [41, 42, 43], "fresh": [51, 52], "fresh_band": [81, 82, 83, 84],
             "fresh_shelf": [91, 92, 93, 94]}
#: the rules of part ``band``: (name, detector config overrides, categories read); the first is
#: the one in force, the last the one in force before it (the CPU ratio is theirs)
BAND_RULES = (("shelf_switch", {"band_rule": "shelf_switch"}, True), ("shelf", {"band_rule": "shelf"}, False),
              ("previous", {"band_rule": "share"}, False))
#: the confidence of the intervals given with each precision and recall
BAND_CONFIDENCE = 0.9


def wilson(k: int, n: int, confidence: float = BAND_CONFIDENCE) -> list[float] | None:
    """The Wilson score interval of a proportion ``k`` / ``n`` (None for ``n`` = 0). scipy and
    statsmodels are not in the environment; this is their ``proportion_confint(method="wilson")``."""
    if n <= 0:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p, zz = k / n, z * z
    centre = (p + zz / (2 * n)) / (1 + zz / n)
    half = z * (p * (1 - p) / n + zz / (4 * n * n)) ** 0.5 / (1 + zz / n)
    return [round(max(centre - half, 0.0), 3), round(min(centre + half, 1.0), 3)]


def _rates(v: dict) -> dict:
    """Precision and recall of summed counts, each with its interval (``BAND_CONFIDENCE``)."""
    return {**v, "precision": round(v["right"] / v["detections"], 3) if v["detections"] else None,
            "precision_interval": wilson(v["right"], v["detections"]),
            "recall": round(v["found"] / v["truth"], 3) if v["truth"] else None,
            "recall_interval": wilson(v["found"], v["truth"])}


def _band_seed(seed: int, quick: bool) -> dict:
    """One seed of part ``band``: the job with each rule over the same hub (no cloud scoring)."""
    from cloud.stream.detectors import DetectorConfig
    from cloud.stream.pipeline import StreamConfig
    from firmware_sim.uplink import GatewayFaults
    from tests.stream_sim import run_job, run_sim_stores, score_detectors

    root = _tmp()
    run = run_sim_stores(root, stores=2 if quick else 4, skus=1000, days=3.0 if quick else 6.0, seed=seed,
                         gateway_faults=GatewayFaults(uplink_down=0.15, uplink_slow=0.15))
    out = {}
    # Alternate the order by seed: the first job of a process pays its imports and warm-up.
    for name, overrides, categories in (BAND_RULES if seed % 2 else BAND_RULES[::-1]):
        lake = root / f"lake-{name}"
        cpu = time.process_time()
        run_job(run, config=StreamConfig(detectors=DetectorConfig(**overrides)), group=f"cloud-stream-{name}",
                lake=lake, categories=categories)
        cpu = time.process_time() - cpu
        v = score_detectors(run, run.table("stream.anomalies", lake))["demand_band"]
        out[name] = {**{f: v[f] for f in ("detections", "right", "truth", "found", "truth_all", "found_all")},
                     "job_cpu_s": round(cpu, 2)}
    shutil.rmtree(root, ignore_errors=True)
    return out


def _band(quick: bool) -> dict:
    """``demand_band`` under each rule of ``BAND_RULES`` on the same hubs, per seed set named in
    ``BENCH_STREAM_BAND_SETS`` (default all; the others are carried over from the results file),
    4 stores x 1,000 SKUs x 6 days, every anomaly injected; seeds in ``BENCH_STREAM_WORKERS``
    processes. Each precision and recall comes with its 90 % Wilson interval."""
    from concurrent.futures import ProcessPoolExecutor

    names = ["held_out"] if quick else env_names("BENCH_STREAM_BAND_SETS", tuple(BAND_SETS))
    sets = {name: (BAND_SETS[name][:2] if quick else BAND_SETS[name]) for name in names}
    seeds = list(dict.fromkeys(s for ss in sets.values() for s in ss))  # in the order the sets are named
    with ProcessPoolExecutor(env_workers()) as pool:
        per_seed = dict(zip(seeds, pool.map(_band_seed, seeds, [quick] * len(seeds))))
    out = {}
    fields = ("detections", "right", "truth", "found", "truth_all", "found_all")
    for name, ss in sets.items():
        total = {rule: _rates({f: sum(per_seed[s][rule][f] for s in ss) for f in fields}) for rule, _, _ in BAND_RULES}
        # The job's CPU seconds per seed (no cloud scoring), each rule against the previous one
        # on the same hub in the same process: median and spread of the ratios.
        ratios = sorted(per_seed[s][BAND_RULES[0][0]]["job_cpu_s"] / max(per_seed[s][BAND_RULES[-1][0]]["job_cpu_s"], 1e-9)
                        for s in ss)
        total["cpu_ratio_to_previous"] = {"median": round(statistics.median(ratios), 3),
                                          "min": round(ratios[0], 3), "max": round(ratios[-1], 3)}
        out[name] = {"seeds": ss, **total, "per_seed": {s: per_seed[s] for s in ss}}
        print(f" band {name}: " + "; ".join(f"{rule} P {v['precision']} ({v['right']}/{v['detections']}, "
                                              f"{v['precision_interval']}) R {v['recall']} ({v['found']}/{v['truth']}, "
                                              f"{v['recall_interval']})" for rule, v in total.items()
                                              if rule != "cpu_ratio_to_previous")
              + f"; job CPU first / last rule {total['cpu_ratio_to_previous']}", flush=True)
    path = Path(__file__).parent / "results" / f"stream{'-quick' if quick else ''}.json"
    before = json.loads(path.read_text()).get("result", {}).get("band", {}) if path.exists() else {}
    for n in BAND_SETS:
        if n not in out and n in before:
            out[n] = {**before[n], "carried_over": True}
    return out


def _run(quick: bool, parts: list[str]) -> dict:
    from models.runtime import DEFAULT_MODEL, open_scorer
    from tests.stream_sim import run_sim_stores

    now = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    result: dict = {"machine_note": "2 cores shared with other agents' jobs; figures are medians of alternating "
                                    "rounds, each beside its peer of the same run",
                    "measured": {p: now for p in parts}}
    scorer = open_scorer(DEFAULT_MODEL, None)
    stores, days, rounds = (4, 1.0, 2) if quick else (8, 1.0, 5)
    if "throughput" in parts or "latency" in parts:
        root = _tmp()
        t = time.perf_counter()
        run_ = run_sim_stores(root, stores=stores, skus=SKUS, days=days, seed=101, faults={})
        busiest = _busiest_rate(run_)
        need = busiest * 1000
        result["busiest_events_per_store_s"] = round(busiest, 4)
        print(f"input: {stores} stores x {SKUS} SKUs x {days} days, {_events(run_):,} events "
              f"(simulated in {time.perf_counter() - t:.0f}s); busiest hour {busiest:.3f} events/store/s "
              f"-> 1,000 stores need {need:,.0f} events/s")
        if "throughput" in parts:
            thr = result["throughput"] = _throughput(run_, scorer, rounds)
            thr["needed_for_1000_stores"] = round(need)
            thr["headroom_vs_1000_stores"] = round(thr["job_events_per_s"] / need, 2)
            print(f"throughput: job {thr['job_events_per_s']:,} vs bare {thr['bare_events_per_s']:,} events/s "
                  f"(ratio {thr['ratio_job_to_bare']}); CPU ratios {thr['cpu_ratios']}; "
                  f"1,000 stores need {need:,.0f} -> x{thr['headroom_vs_1000_stores']}")
        if "latency" in parts:
            lat = result["latency"] = _latency(run_, scorer, need, 30 if quick else 90)
            print(f"latency at {need:,.0f} events/s: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s "
                  f"(alerts p50 {lat['alerts_p50_s']} s, p99 {lat['alerts_p99_s']} s)")
        shutil.rmtree(root, ignore_errors=True)
    if "detectors" in parts:
        det = result["detectors"] = _detectors([41, 42] if quick else [41, 42, 43], 2 if quick else 4,
                                               3.0 if quick else 6.0)
        for k, v in det["total"].items():
            print(f"  {k}: precision {v['precision']} ({v['right']}/{v['detections']}), "
                  f"recall {v['recall']} ({v['found']}/{v['truth']})")
    if "phantom" in parts:
        result["phantom"] = _phantom(quick)
    if "till" in parts:
        result["till"] = _till(quick)
    if "band" in parts:
        result["band"] = _band(quick)
    if "cloud_vs_gateway" in parts:
        # Seed 61 is the run of record; BENCH_STREAM_CVG_SEEDS adds others (each its own run,
        # the cloud beside its own gateways), e.g. "62,63" and seeds never looked at.
        more = [int(x) for x in os.environ.get("BENCH_STREAM_CVG_SEEDS", "").split(",") if x.strip()]
        size = (3, 2.0) if quick else (6, 3.0)
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(env_workers()) as pool:  # each seed in its own process
            seeds = [61] + [s for s in more if s != 61]
            per_seed = dict(zip(seeds, pool.map(_cvg_seed, seeds, [size] * len(seeds))))
        cvg = result["cloud_vs_gateway"] = per_seed[61]
        print(f"cloud vs gateway: {json.dumps(cvg)}")
        if more:
            cvg["other_seeds"] = {str(seed): per_seed[seed] for seed in seeds[1:]}
            runs = [cvg] + list(cvg["other_seeds"].values())
            for r in runs:
                c, g = r["held_gateway_silent_1h"], r["held_gateway_own_silent_1h"]
                print(f"  seed {r['seed']}: cloud in silences {c['right']}/{c['held']}, its gateways "
                      f"{g['right']}/{g['held']}, divergence {r['divergence']['right']}/{r['divergence']['detections']} "
                      f"found {r['divergence']['found']}/{r['divergence']['truth']} (previous rule "
                      f"{r['divergence_previous_rule']['right']}/{r['divergence_previous_rule']['detections']} found "
                      f"{r['divergence_previous_rule']['found']}/{r['divergence_previous_rule']['truth']})")
            cvg["all_seeds"] = {k: {f: sum(r[k][f] for r in runs) for f in ("held", "right")}
                                for k in ("held_gateway_silent_1h", "held_gateway_own_silent_1h")}
            for k in ("divergence", "divergence_previous_rule"):
                cvg["all_seeds"][k] = {f: sum(r[k][f] for r in runs) for f in ("detections", "right", "truth", "found")}
    return result

"""``gondola demo``: simulated stores -> store gateways -> hub -> lake -> warehouse -> dashboard.

The whole chain on one machine with real parts: each simulated store's devices publish over
MQTT (Mosquitto when installed, else the embedded amqtt broker) to its own gateway, which
commits to SQLite, scores every facing, raises alerts and uplinks compressed batches to the
embedded hub on disk; the cloud side then ingests the hub into bronze, builds silver and gold
Delta tables, runs the stream job once over the same hub (windows, cloud-side scoring, anomaly
detectors into ``stream.*``), builds a DuckDB warehouse and a static HTML dashboard, and the run is
scored against the simulator's ground truth.

Time is simulated and runs in lock-step: for each tick the stores publish what their devices
sent, the demo waits until every gateway has committed it (acknowledged = committed), then
moves the shared clock and lets the gateways score and uplink. That makes the run as fast as
the machine allows and its numbers reproducible for a seed.

This module is demo wiring: it is the one place besides tests and benchmarks allowed to import
``firmware_sim``. ``docs/summary.md`` documents the keys of ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from gondola.clock import DAY_MS, MINUTE_MS, SimClock, ms_to_iso
from gondola.errors import ConfigError, GondolaError
from gondola.progress import Progress

__all__ = ["DemoConfig", "DemoRun", "run_demo", "main"]

# Midnight UTC, Monday 2026-11-02: a fixed start keeps runs reproducible.
DEFAULT_START_MS = 1_793_577_600_000
_MARKER = ".gondola-demo"


@dataclass
class DemoConfig:
    stores: int = 2
    skus: int = 200
    days: float = 2.0
    seed: int = 7
    out: Path = Path("out/demo")
    tick_min: int = 15
    #: Gateways send what they hold every this many simulated minutes (at most once a tick).
    #: Every tick by default: a gateway on IoT Hub sends continuously, and an hourly sync made
    #: the cloud's stream job see each hour's events late, score shelves on events an hour old
    #: and read the hour's queue as a gateway backlog.
    uplink_every_min: int = 15
    horizon_min: int = 120
    broker: str = "auto"  # auto | mosquitto | embedded
    #: a scenario file, or a ``firmware_sim.Scenario`` object (tests), or None for ``Scenario.demo()``
    scenario: object = None
    sensor_share: float = 0.5
    #: "default": the int8 model shipped with ``models``; "baseline": Poisson; or a model file
    model: str = "default"
    start_ms: int = DEFAULT_START_MS
    quiet: bool = False
    dashboard: bool = True
    #: End with one retraining round on the lake just built (``gondola demo`` does; the
    #: programmatic default is off so chain tests stay fast).
    retrain: bool = False
    retrain_epochs: int = 2

    def validate(self) -> None:
        if not 1 <= self.stores <= 50:
            raise ConfigError(f"--stores must be 1-50 for the demo, got {self.stores}")
        if not 10 <= self.skus <= 5000:
            raise ConfigError(f"--skus must be 10-5000, got {self.skus}")
        if not 0 < self.days <= 30:
            raise ConfigError(f"--days must be in (0, 30], got {self.days}")
        if self.broker not in ("auto", "mosquitto", "embedded"):
            raise ConfigError(f"--broker must be auto, mosquitto or embedded, got {self.broker!r}")
        if not 1 <= self.tick_min <= 60:
            raise ConfigError(f"--tick-min must be 1-60, got {self.tick_min}")


def _prepare_out(out: Path) -> None:
    """Start from an empty output folder; only ever delete a folder a previous demo made."""
    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise ConfigError(f"{out} is not empty and was not made by 'gondola demo'; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("made by gondola demo; deleted and rebuilt by the next run\n")


def _log(cfg: DemoConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, file=sys.stderr, flush=True)


@dataclass
class DemoRun:
    """What a demo run leaves behind: the summary and, for tests, the simulators and the cloud."""

    summary: dict
    sims: list
    cloud: object


def run_demo(cfg: DemoConfig) -> DemoRun:
    """Run the chain; return the run (its summary is also written to ``<out>/summary.json``).

    Raises:
        ConfigError: bad options or an output folder that is not the demo's.
        GondolaError: a component failed (the message says which).
    """
    # Imported here: the kernel must not need every side's dependencies to load.
    from cloud.wiring import CloudSettings, build_cloud
    from edge.broker import start_broker
    from edge.wiring import EdgeSettings, build_gateway
    from firmware_sim import Scenario, StoreSim, write_master_data
    from firmware_sim.history import write_stock_records
    from firmware_sim.mqtt import MqttPublisher

    cfg.validate()
    model_path = _model_path(cfg.model)
    out = cfg.out
    _prepare_out(out)
    started = time.monotonic()
    if cfg.scenario is None:
        scenario = Scenario.demo()
    elif isinstance(cfg.scenario, (str, Path)):
        scenario = Scenario.load(cfg.scenario)
    else:
        scenario = cfg.scenario
    end_ms = cfg.start_ms + int(cfg.days * DAY_MS)

    sims = [
        StoreSim(
            store_id=f"s{i + 1:03d}",
            skus=cfg.skus,
            # One chain seed: stores share the catalog; each store's streams derive from its id.
            seed=cfg.seed,
            start_ms=cfg.start_ms,
            scenario=scenario,
            sensor_share=cfg.sensor_share,
        )
        for i in range(cfg.stores)
    ]
    write_master_data(out, sims)
    master_dir = out / "master"

    broker = start_broker(prefer=cfg.broker, data_dir=out / "broker")
    _log(cfg, f"broker: {broker.kind} on {broker.host}:{broker.port}")
    clock = SimClock(cfg.start_ms)
    hub_path = out / "hub.sqlite"
    gateways = {}
    publisher = None
    sent = Counter()
    published = Counter()
    # the gateways' raised alerts per kind: forecasts (the warnings judged by lead time), detections
    kinds: dict[str, list[tuple[str, str, int]]] = {"empty_within_h": [], "empty_now": []}
    try:
        for sim in sims:
            settings = EdgeSettings(
                store_id=sim.store_id,
                broker_host=broker.host,
                broker_port=broker.port,
                data_dir=out / "gateways" / sim.store_id,
                hub="local",
                hub_path=hub_path,
                planogram_path=master_dir / "planogram.csv",
                horizon_min=cfg.horizon_min,
                model_path=model_path,
            )
            gw = build_gateway(settings, clock=clock)
            gw.start()
            gateways[sim.store_id] = gw
        publisher = MqttPublisher(broker.host, broker.port, client_id="gondola-demo-devices").connect()

        tick_ms = cfg.tick_min * MINUTE_MS
        ticks = list(range(cfg.start_ms + tick_ms, end_ms + 1, tick_ms))
        progress = Progress(len(ticks), "simulating", every=10) if not cfg.quiet else None
        next_uplink = cfg.start_ms + cfg.uplink_every_min * MINUTE_MS
        for t in ticks:
            for sim in sims:
                msgs = sim.run_until(t)
                published[sim.store_id] += publisher.publish_many(msgs)
                for m in msgs:
                    sent[m.etype or "malformed"] += 1
            for sim in sims:
                _wait_committed(gateways[sim.store_id], published[sim.store_id])
            clock.advance_to(t)
            if t >= next_uplink:
                # Before the cycle at t: the hub gets what the devices sent up to t, then (next
                # time) the cycle's alerts and health, the order a gateway sending continuously
                # gives them; the stream job scores at t on the events up to t, as the gateway did.
                for gw in gateways.values():
                    gw.drain()
                next_uplink += cfg.uplink_every_min * MINUTE_MS
            for sid, gw in gateways.items():
                for alert in gw.run_cycle(t):
                    if alert["data"]["state"] == "raised":
                        kinds[alert["data"].get("kind", "empty_within_h")].append(
                            (sid, alert["data"]["facing_id"], alert["ts"]))
            if progress:
                progress.advance(note=ms_to_iso(t)[:16])
        for gw in gateways.values():
            gw.drain()
        health = {sid: gw.health() for sid, gw in gateways.items()}
    finally:
        if publisher is not None:
            publisher.close()
        for gw in gateways.values():
            gw.stop()
        broker.stop()
    edge_seconds = time.monotonic() - started

    _log(cfg, "cloud: ingest, bronze -> silver -> gold, warehouse, dashboard")
    cloud = build_cloud(
        CloudSettings(lake_uri=str(out / "lake"), hub_path=hub_path, warehouse_path=out / "warehouse.duckdb")
    )
    batch = cloud.ingest_batch(master_dir)
    # the stores' ERP exports its nightly stock record (root causes need it): every day that closed
    if write_stock_records(out / "erp", sims, end_ms):
        erp = cloud.ingest_batch(out / "erp")
        batch = {k: batch[k] + erp[k] if k != "errors" else {**batch[k], **erp[k]} for k in batch}
    bronze_new = cloud.ingest_stream()
    transform = cloud.transform()
    # The cloud's stream job over the same hub (its own consumer group: the lake's ingest above
    # keeps its checkpoints), before the warehouse, which reads its stream.anomalies.
    stream = _stream_round(cfg, out / "lake", hub_path, master_dir / "planogram.csv", model_path, out / "erp")
    warehouse = cloud.build_warehouse()
    dashboard = cloud.build_dashboard(out / "dashboard.html") if cfg.dashboard else None
    if dashboard is not None:
        from cloud.dashboard import screenshot

        screenshot(dashboard, out / "dashboard.png")  # beside it, when Chromium is installed
    counts = cloud.table_counts()
    retrain = _retrain_round(cfg, out / "lake") if cfg.retrain else None

    truth_emitted = Counter()
    stockouts = []
    dropped = 0
    faults = Counter()
    for sim in sims:
        for etype, keys in sim.truth.emitted.items():
            truth_emitted[etype] += len(keys)
        stockouts.extend(
            (s[0], s[1], s[3], s[4]) for s in sim.truth.stockouts if s[3] < end_ms
        )
        dropped += len(sim.truth.dropped)
        faults.update(sim.truth.faults_before(end_ms))  # not the next day's, planned when the run ends at midnight
    judged = judge_alerts(kinds["empty_within_h"], kinds["empty_now"], stockouts,
                          first_cycle_ms=cfg.start_ms + cfg.tick_min * MINUTE_MS, horizon_ms=cfg.horizon_min * MINUTE_MS)

    silver_rows = {k: v for k, v in counts.items() if k.startswith("silver.")}
    summary = {
        "config": _config_summary(cfg),
        "broker": broker.kind,
        "devices": {
            "emitted": dict(sorted(truth_emitted.items())),
            "sent_messages": dict(sorted(sent.items())),
            "dropped_by_faults": dropped,
            "faults": dict(sorted(faults.items())),
        },
        "gateways": {
            "received": sum(h["received"] for h in health.values()),
            "committed": sum(h["committed_messages"] for h in health.values()),
            "quarantined": sum(h["quarantined"] for h in health.values()),
            "duplicates_ignored": sum(h["duplicates"] for h in health.values()),
            "uplinked": sum(h["uplink_events"] for h in health.values()),
            "seq_gaps": sum(h["seq_gaps"] for h in health.values()),
            "scorer": sorted({h["model_version"] for h in health.values()}),
            "evictions": sum(h["evictions"] for h in health.values()),
            "per_store": health,
        },
        "cloud": {
            "batch_ingest": batch,
            "bronze_new_rows": bronze_new,
            "transform": transform,
            "duplicates_removed": transform["duplicates"],
            "late": transform["late"],
            "quarantined": transform["quarantined"],
        },
        "tables": counts,
        "silver_rows": silver_rows,
        "stream": stream,
        "alerts": {"horizon_min": cfg.horizon_min, **judged},
        # The lake's report figures (cloud.lake.tables.MEASURES via bi_kpis): exactly what the
        # dashboard and Power BI show. "alerts" above is judged against the simulator's truth.
        "reports": _report_figures(warehouse),
        "retrain": retrain,
        "paths": {
            "out": str(out),
            "dashboard": str(dashboard) if dashboard else None,
            "warehouse": str(warehouse),
            "lake": str(out / "lake"),
            "hub": str(hub_path),
        },
        "seconds": {"edge": round(edge_seconds, 1), "total": round(time.monotonic() - started, 1)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return DemoRun(summary=summary, sims=sims, cloud=cloud)


def _stream_round(cfg: DemoConfig, lake: Path, hub_path: Path, planogram: Path, model_path: Path | None,
                  erp: Path) -> dict:
    """``gondola cloud stream --once`` on the demo's hub: windows, cloud-side scoring with the
    model the gateways ran and the anomaly detectors, into ``stream.*`` of the demo's lake; what
    it wrote, per table and kind. Gateways on the Poisson baseline (``--model baseline``) get no
    cloud scoring: the cloud scores with a trained model only, and comparing its alerts with a
    different scorer's would flag every healthy gateway as diverging."""
    import pyarrow.compute as pc

    from cloud.stream.wiring import DEFAULT_CONSUMER_GROUP, StreamSettings, build_stream_job

    started = time.monotonic()
    job = build_stream_job(StreamSettings(
        lake_uri=str(lake), hub_path=str(hub_path), consumer_group=DEFAULT_CONSUMER_GROUP,
        model=str(model_path) if model_path else "none", planogram=str(planogram),
        # the ERP's nightly stock record, from the folder the lake's batch ingest read
        stock_records=str(erp) if erp.is_dir() else "none",
        # the gateways send every uplink_every_min: events that old are on time, not late
        allowed_lateness_min=max(10.0, float(cfg.uplink_every_min))))
    try:
        stats = job.run(once=True)
    finally:
        job.source.close()

    def kinds(table: str, where=None) -> dict[str, int]:
        rows = job.storage.read(table, columns=["kind"], filter=where)
        counts = pc.value_counts(rows["kind"]).to_pylist() if rows is not None else []
        return dict(sorted((c["values"], c["counts"]) for c in counts))

    counters = job.counters()
    out = {
        "messages": stats["messages"],
        "events": counters.get("events", 0),
        "late_events": counters.get("late_events", 0),
        "windows": {"sales_5m": stats["rows"]["stream.sales_5m"], "store_health": stats["rows"]["stream.store_health"]},
        "scorer": getattr(job.scorer, "name", None),
        "alerts": {"rows": stats["rows"]["stream.alerts"],
                   "raised": kinds("stream.alerts", pc.field("state") == "raised")},
        "anomalies": kinds("stream.anomalies"),
        "seconds": round(time.monotonic() - started, 1),
    }
    found = ", ".join(f"{k} {n}" for k, n in out["anomalies"].items()) or "none"
    _log(cfg, f"stream: {out['messages']} messages, {out['events']} events ({out['late_events']} late), "
              f"{sum(out['windows'].values())} windows, {out['alerts']['rows']} cloud alerts, "
              f"anomalies: {found} ({out['seconds']} s)")
    return out


def _report_figures(warehouse: Path) -> dict:
    """``bi_kpis`` of the warehouse (one definition per figure) and the stores' currencies."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        cur = con.execute("SELECT * FROM bi_kpis")
        row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
        row["currencies"] = [r[0] for r in con.execute(
            "SELECT DISTINCT currency FROM silver_stores WHERE currency IS NOT NULL ORDER BY 1").fetchall()]
    return row


def _retrain_round(cfg: DemoConfig, lake: Path) -> dict:
    """One ``gondola retrain`` round on the demo's lake: the gate's decision and the held-out
    figures before (the model the gateways ran) and after (the candidate, three seeds)."""
    from models.registry import DeltaModelRegistry
    from models.retrain import RetrainConfig, format_decision, retrain

    _log(cfg, "retrain: one round on gold.features (three seeds, gate vs baseline and production)")
    started = time.monotonic()
    try:
        rec = retrain(lake, DeltaModelRegistry(lake), RetrainConfig(epochs=cfg.retrain_epochs, trigger="demo"),
                      say=lambda text: _log(cfg, "  " + text))
    except GondolaError as exc:  # too little data to judge is an outcome of a short demo, not a failure
        _log(cfg, f"retrain: skipped ({exc})")
        return {"decision": "skipped", "reason": str(exc), "seconds": round(time.monotonic() - started, 1)}
    _log(cfg, format_decision(rec))
    seeds = [s["pr_auc"] for s in rec["candidate"]["seeds"].values()] if rec["candidate"] else []
    return {
        "decision": rec["decision"],
        "reasons": rec["reasons"],
        "gold_features_version": rec["training"]["tables"]["gold.features"],
        "rows": rec["training"]["rows"],
        "holdout_stores": rec["training"]["holdout_stores"],
        "before": {"model": rec["production"]["version"], "pr_auc": rec["production"]["pr_auc"]},
        "after": {"pr_auc_mean": rec["candidate"]["mean_pr_auc"] if rec["candidate"] else None, "pr_auc_seeds": seeds,
                  "registered": rec.get("registered")},
        "baseline": {"scorer": rec["baseline"]["best"], "pr_auc": rec["baseline"]["pr_auc"]},
        "margin": rec["gate"]["margin"],
        "seconds": rec["seconds"],
    }


def _model_path(choice: str) -> Path | None:
    if choice == "baseline":
        return None
    if choice == "default":
        from models.runtime import DEFAULT_MODEL

        return DEFAULT_MODEL
    path = Path(choice)
    if not path.exists():
        raise ConfigError(f"--model {choice}: no such file (use default, baseline or a .tflite/.onnx path)")
    return path


def _config_summary(cfg: DemoConfig) -> dict:
    """The run's options as JSON values; a scenario object is named by its class, not dumped."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "scenario" and value is not None and not isinstance(value, (str, Path)):
            value = f"<{type(value).__name__} object>"
        out[f.name] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
    return out


def _wait_committed(gw, target: int, timeout_s: float = 60.0) -> None:
    """Block until a gateway has committed ``target`` messages (its acks say so)."""
    # The collector signals each group commit; waiting on it avoids polling.
    if not gw.collector.wait_committed(target, timeout_s):
        raise GondolaError(
            f"gateway committed {gw.committed_count()} of {target} published messages after {timeout_s}s"
        )


def judge_alerts(forecasts: list[tuple[str, str, int]], detections: list[tuple[str, str, int]],
                 stockouts: list[tuple[str, str, int, int | None]], *, first_cycle_ms: int, horizon_ms: int) -> dict:
    """The gateways' alerts against the simulator's stock-outs (``summary.json``'s ``alerts``, see
    docs/summary.md). Recall is over the stock-outs that start with stock on the shelf after the
    first cycle (a shelf already empty then could only be detected); precision over every
    stock-out: a forecast raised on a shelf already empty is right (it warned of nothing:
    ``forecast_outcomes.on_empty_shelf``), also when the shelf was empty from before the first
    cycle. Detections are judged on every stock-out."""
    from models.evaluation import forecast_outcomes, match_alerts

    with_stock = [s for s in stockouts if s[2] > first_cycle_ms]
    quality = match_alerts(forecasts, with_stock, horizon_ms)
    right = match_alerts(forecasts, stockouts, horizon_ms)
    quality.update(true_alerts=right["true_alerts"], precision=right["precision"])
    detection = match_alerts(detections, stockouts, 0)
    return {
        "raised": len(forecasts) + len(detections),
        "ground_truth_stockouts": len(stockouts),
        "stockouts_starting_with_stock": len(with_stock),
        **quality,
        "forecast_outcomes": forecast_outcomes(forecasts, stockouts, horizon_ms),
        "empty_now": {"raised": len(detections), "precision": detection["precision"],
                      "detected": detection["detected_recall"], "median_delay_min": detection["median_delay_min"]},
    }


def format_summary(summary: dict) -> str:
    """The human table ``gondola demo`` prints."""
    dev = summary["devices"]
    gw = summary["gateways"]
    al = summary["alerts"]
    rows = [("devices emitted (valid events)", sum(dev["emitted"].values()))]
    rows += [(f"  {k}", v) for k, v in dev["emitted"].items()]
    rows += [
        ("messages sent (incl. faults)", sum(dev["sent_messages"].values())),
        ("gateways committed", gw["committed"]),
        ("gateways quarantined", gw["quarantined"]),
        ("gateways uplinked", gw["uplinked"]),
        ("sequence gaps", gw["seq_gaps"]),
        ("bronze rows", summary["tables"].get("bronze.events", "-")),
    ]
    rows += [(f"{k} rows", v) for k, v in summary["tables"].items() if k.startswith(("silver.", "gold."))]
    rows += [
        ("duplicates removed in silver", summary["cloud"].get("duplicates_removed")),
        ("stock-outs in ground truth", al["ground_truth_stockouts"]),
        ("gateway scorer", ", ".join(gw["scorer"])),
        ("alerts raised (both kinds)", al["raised"]),
        ("stock-outs starting with stock", al["stockouts_starting_with_stock"]),
        ("forecasts (empty_within_h) raised", al["alerts"]),
        ("  precision (vs simulator truth)", _fmt(al.get("precision"))),
        ("  recall (raised within H before empty)", _fmt(al.get("recall"))),
        ("  median lead time (min, strict)", _fmt(al.get("median_lead_min"))),
        ("  warned ahead (stock when raised)", al["forecast_outcomes"]["warned_ahead"]),
        ("  on shelves already empty", al["forecast_outcomes"]["on_empty_shelf"]),
        ("  false (no stock-out within H)", al["forecast_outcomes"]["false"]),
        ("detections (empty_now) raised", al["empty_now"]["raised"]),
        ("  stock-outs found (share of all)", _fmt(al["empty_now"].get("detected"))),
        ("  precision (shelf empty when raised)", _fmt(al["empty_now"].get("precision"))),
        ("  median delay after empty (min)", _fmt(al["empty_now"].get("median_delay_min"))),
    ]
    sm = summary.get("stream")
    if sm:
        rows += [
            ("stream job: messages read", sm["messages"]),
            ("  windows written (sales, health)", f"{sm['windows']['sales_5m']}, {sm['windows']['store_health']}"),
            ("  cloud alerts raised", ", ".join(f"{k} {n}" for k, n in sm["alerts"]["raised"].items()) or "0"),
            ("  anomalies found", sum(sm["anomalies"].values())),
        ]
        rows += [(f"    {k}", n) for k, n in sm["anomalies"].items()]
    kp = summary.get("reports") or {}
    if kp:
        rows += [
            ("lake: stock-outs (sensor)", kp.get("stockouts")),
            ("lake: alert precision (dashboard)", _fmt(kp.get("alert_precision"))),
            ("lake: alerted before (dashboard)", _fmt(kp.get("recall_ahead"))),
            ("lake: lost sales while open", f"{(kp.get('lost_sales_cents') or 0) / 100:,.2f} "
                                            f"{'/'.join(kp.get('currencies') or [])}"),
        ]
    rt = summary.get("retrain")
    if rt:
        rows.append(("retrain decision", rt["decision"] + (f" ({rt['reason']})" if rt.get("reason") else "")))
        if rt["decision"] != "skipped":
            rows += [
                ("  held-out PR-AUC before", f"{_fmt(rt['before']['pr_auc'])} (model {rt['before']['model']})"),
                ("  held-out PR-AUC after", f"{_fmt(rt['after']['pr_auc_mean'])} (candidate, mean of "
                                            f"{len(rt['after']['pr_auc_seeds'])} seeds)"),
                ("  baseline PR-AUC", f"{_fmt(rt['baseline']['pr_auc'])} ({rt['baseline']['scorer']})"),
                ("  registered", rt["after"]["registered"] or "nothing (the gate refused it)"),
            ]
    rows += [
        ("dashboard", summary["paths"]["dashboard"]),
        ("warehouse", summary["paths"]["warehouse"]),
        ("seconds", summary["seconds"]["total"]),
    ]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    return f"{table}\n\nwhat each figure means: docs/summary.md (the keys of summary.json)"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


class _KeptWarnings(logging.Handler):
    """Warnings of the components (gateways, cloud) held for a file instead of the terminal."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.sources: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.sources[record.name] += 1

    def describe(self) -> str:
        """How many warnings and which components logged them, most first: "6 warning(s) (models.pipeline 6)"."""
        return f"{self.count} warning(s) ({', '.join(f'{name} {n}' for name, n in self.sources.most_common())})"

    @property
    def count(self) -> int:
        return len(self.lines)

    def write(self, path: Path) -> Path:
        path.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")
        return path


@contextmanager
def warnings_to_file():
    """While the demo runs, keep the components' log warnings (a faulty scenario makes the
    gateways quarantine hundreds of messages) off the terminal; ``write`` puts them in a file.
    Only when nothing configured logging: otherwise the caller's handlers decide."""
    root = logging.getLogger()
    kept = _KeptWarnings()
    if root.handlers:
        yield kept
        return
    root.addHandler(kept)
    try:
        yield kept
    finally:
        root.removeHandler(kept)


def parse_config(argv: list[str] | None = None) -> DemoConfig:
    """``gondola demo``'s options as a :class:`DemoConfig` (``--seed`` defaults to the scenario
    file's ``seed``, as in ``gondola sim``, else 7)."""
    parser = argparse.ArgumentParser(prog="gondola demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=2, help="simulated stores (default 2)")
    parser.add_argument("--skus", type=int, default=200, help="SKUs per store (default 200)")
    parser.add_argument("--days", type=float, default=2.0, help="simulated days (default 2)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: the scenario file's seed, else 7)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    parser.add_argument("--scenario", type=Path, default=None,
                        help="scenario file (default: built-in, staff gap-scan rounds at 10:30 and 16:30, a few "
                             "drifting load cells, stopped till lanes and silent sensor fleets; no message faults)")
    parser.add_argument("--broker", default="auto", choices=["auto", "mosquitto", "embedded"],
                        help="store broker: Mosquitto when installed (auto), or the embedded one")
    parser.add_argument("--model", default="default",
                        help="gateway model: default (shipped int8 TFLite), baseline (Poisson) or a model file")
    parser.add_argument("--tick-min", type=int, default=15, help="simulated minutes per lock-step tick")
    parser.add_argument("--no-dashboard", action="store_true", help="skip the HTML dashboard")
    parser.add_argument("--no-retrain", action="store_true",
                        help="skip the closing retraining round (gondola retrain on the demo's lake)")
    parser.add_argument("--retrain-epochs", type=int, default=2, help="epochs per seed of that round (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        from firmware_sim import Scenario

        seed = Scenario.load(args.scenario).seed if args.scenario is not None else 7
    return DemoConfig(
        stores=args.stores, skus=args.skus, days=args.days, seed=seed, out=args.out,
        scenario=args.scenario, broker=args.broker, tick_min=args.tick_min, model=args.model,
        dashboard=not args.no_dashboard, quiet=args.quiet, retrain=not args.no_retrain,
        retrain_epochs=args.retrain_epochs,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    with warnings_to_file() as kept:
        try:
            summary = run_demo(cfg).summary
        except BaseException:
            if kept.lines:  # the failure's context
                print("\n".join(kept.lines[-20:]), file=sys.stderr)
            raise
    if kept.count:
        path = kept.write(cfg.out / "warnings.log")
        # Name where they came from: a default demo's warnings are the closing retraining round's
        # threshold notes, not quarantined messages as the old fixed text said (QA, session 8).
        print(f"{kept.describe()}: {path}", file=sys.stderr)
    print(format_summary(summary))
    print(f"\nsummary: {cfg.out / 'summary.json'}")
    return 0

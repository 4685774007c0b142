"""Simulator throughput: history mode to files, live mode to a local MQTT broker.

History: ``generate`` 100 stores x 2,000 SKUs x 30 days with one worker per core, next to the
target (under 180 s on a 2-core machine). Wall time depends on what else the machine runs, so
the CPU seconds of all processes are reported too, with the wall time an idle machine would
need (CPU seconds / cores).

Live: the same messages published to one Mosquitto in the same run, three rounds each,
alternating: (a) a bare paho publisher with prebuilt payloads, (b) ``run_live`` (simulation +
JSON + ``MqttPublisher``). Medians and the ratio b/a (target: at least 0.7).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gondola.clock import DAY_MS

TARGET_S = 180.0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_history(stores: int, skus: int, days: int) -> dict:
    from firmware_sim.history import generate

    out = Path(tempfile.mkdtemp(prefix="gondola-bench-sim-"))
    try:
        cpu0 = _cpu_seconds()
        result = generate(out, stores=stores, skus=skus, days=days, seed=1, progress=True)
        cpu = _cpu_seconds() - cpu0
        # Other processes on the machine stretch the wall time; the load says how much.
        load = os.getloadavg()[1]
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    cores = os.cpu_count() or 1
    store_days = stores * days
    figures = {
        "stores": stores, "skus": skus, "days": days,
        "seconds": round(result.seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "idle_machine_seconds": round(cpu / min(cores, stores), 1),
        "events": result.events,
        "events_per_s": round(result.events / result.seconds),
        "store_days_per_min": round(store_days / result.seconds * 60, 1),
        "bytes_written": size,
        "oos_rate": round(result.oos_rate, 4),
        "load_avg_5min_at_end": round(load, 2),
        "target_seconds": TARGET_S * (store_days * skus) / (100 * 30 * 2000),
    }
    figures["ratio_to_target"] = round(figures["seconds"] / figures["target_seconds"], 2)
    figures["idle_ratio_to_target"] = round(figures["idle_machine_seconds"] / figures["target_seconds"], 2)
    print(f"history: {store_days} store-days x {skus} SKUs in {result.seconds:.1f}s wall "
          f"({figures['store_days_per_min']} store-days/min, {figures['events_per_s']:,} events/s); "
          f"target {figures['target_seconds']:.0f}s -> ratio {figures['ratio_to_target']}")
    print(f"history: {cpu:.1f} CPU s over {cores} cores -> {figures['idle_machine_seconds']}s on an idle machine "
          f"(ratio {figures['idle_ratio_to_target']})")
    return figures


def _mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    from tests.conftest import free_port, mosquitto_binary, wait_for_port

    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("Mosquitto is not installed")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 0\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, port


def bench_live(stores: int, skus: int, hours: int, rounds: int = 3) -> dict:
    from firmware_sim.history import store_ids
    from firmware_sim.live import run_live
    from firmware_sim.mqtt import MqttPublisher, bare_publish
    from firmware_sim.store import DEFAULT_START_MS, StoreSim

    until = DEFAULT_START_MS + hours * 3_600_000 - 1
    workdir = Path(tempfile.mkdtemp(prefix="gondola-bench-mqtt-"))
    proc, port = _mosquitto(workdir)
    try:
        sims = [StoreSim(s, skus, 1, DEFAULT_START_MS) for s in store_ids(stores)]
        items = [(m.topic, m.payload) for s in sims for m in s.run_until(until)]
        bare, live = [], []
        for _ in range(rounds):
            bare.append(len(items) / bare_publish("127.0.0.1", port, items))
            sims = [StoreSim(s, skus, 1, DEFAULT_START_MS) for s in store_ids(stores)]
            with MqttPublisher("127.0.0.1", port) as pub:
                stats = run_live(sims, pub, until_ms=until)
            assert stats.messages == len(items), (stats.messages, len(items))
            live.append(stats.messages_per_s)
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
    figures = {
        "stores": stores, "skus": skus, "hours": hours, "messages": len(items), "rounds": rounds,
        "bare_msgs_per_s": round(statistics.median(bare)),
        "live_msgs_per_s": round(statistics.median(live)),
        "bare_rounds": [round(x) for x in bare],
        "live_rounds": [round(x) for x in live],
    }
    figures["ratio"] = round(figures["live_msgs_per_s"] / figures["bare_msgs_per_s"], 2)
    print(f"live: {figures['live_msgs_per_s']:,} msgs/s (simulate + encode + publish, QoS 1) vs bare paho "
          f"{figures['bare_msgs_per_s']:,} msgs/s -> ratio {figures['ratio']} (target >= 0.7)")
    return figures


def run(quick: bool = False) -> dict:
    if quick:
        history = bench_history(stores=4, skus=500, days=3)
        live = bench_live(stores=1, skus=300, hours=24, rounds=1)
    else:
        history = bench_history(stores=100, skus=2000, days=30)
        live = bench_live(stores=2, skus=1000, hours=24)
    demo_cpu = time.process_time()
    from firmware_sim.store import DEFAULT_START_MS, StoreSim

    for sid in ("s001", "s002"):
        StoreSim(sid, 200, 7, DEFAULT_START_MS).run_until(DEFAULT_START_MS + 2 * DAY_MS - 1)
    demo_cpu = round(time.process_time() - demo_cpu, 2)
    print(f"demo size (2 stores x 200 SKUs x 2 days, with payloads): {demo_cpu} CPU s (budget well under 30 s)")
    return {"history": history, "live": live, "demo_cpu_seconds": demo_cpu}

"""Cost of a Prometheus scrape of the gateway (``edge.metrics`` through ``prometheus_client``,
process metrics included) beside its peer, the ``Gateway.health()`` snapshot it is made from.

A gateway with 20,000 buffered events from 51 devices (10 tills, 40 shelf sensors, a handheld)
with seq gaps (the per-device gap
metrics are the largest part of the exposition). Rounds interleave the two; the median of the
rounds' per-call times is reported with each round's ratio.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from edge.metrics import MetricsEndpoint
from edge.testing import T0, device_traffic, planogram_csv
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import SimClock


def _per_call(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def run(quick: bool = False) -> dict:
    n_events, calls, rounds = (2_000, 20, 3) if quick else (20_000, 200, 5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "planogram.csv").write_text(planogram_csv(facings=200))
        gw = build_gateway(EdgeSettings(store_id="s001", data_dir=tmp / "gw", hub_path=tmp / "hub.sqlite",
                                        planogram_path=tmp / "planogram.csv"), clock=SimClock(T0))
        try:
            traffic = device_traffic(n_events, drop=0.02, seed=3, pos_lanes=10, facings=40)
            gw.collector.commit_group([(t, p, (0, 0)) for t, p in traffic.messages])
            gw.run_cycle(T0 + 60_000)
            devices_with_gaps = len(gw.health()["gaps"])
            endpoint = MetricsEndpoint(gw.health, broker_connected=lambda: False)
            body, _ = endpoint.render()
            health_s, scrape_s, ratios = [], [], []
            for _ in range(rounds):
                h = _per_call(gw.health, calls)
                m = _per_call(endpoint.render, calls)
                health_s.append(h)
                scrape_s.append(m)
                ratios.append(round(m / h, 2))
        finally:
            gw.stop()
    result = {
        "events": n_events, "devices_with_gaps": devices_with_gaps,
        "exposition_bytes": len(body), "exposition_lines": body.count(b"\n"),
        "health_ms": round(statistics.median(health_s) * 1000, 3),
        "scrape_ms": round(statistics.median(scrape_s) * 1000, 3),
        "ratio_scrape_to_health": round(statistics.median(scrape_s) / statistics.median(health_s), 2),
        "round_ratios": ratios, "rounds": rounds, "calls_per_round": calls,
    }
    print(result)
    return result

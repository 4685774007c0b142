"""Operating a gateway unattended: what "healthy" means, waiting for the store broker at boot,
and the log lines an operator looks for after an outage (hub back, backlog drained).

::

    check = HealthCheck(gw)
    check.problems()            # [] when healthy; else one short reason each (for /health, 503)
    wait_for_broker(host, port, stop)   # True once a TCP connection succeeds; backs off meanwhile
    watch = Watcher(gw); watch.start(); ...; watch.stop()

Healthy means what the container's HEALTHCHECK promises: the store broker session is up, the
buffer takes writes (its folder is writable, has room, the collector is not stalled on it, its
writer thread runs and has not failed in the last 5 minutes), the last scoring cycle is recent (three cycles, at least a minute), and the hub has not
refused the gateway's credentials.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import threading
import time
from pathlib import Path

__all__ = ["HealthCheck", "wait_for_broker", "broker_delays", "Watcher"]

log = logging.getLogger("edge.gateway")


class HealthCheck:
    """The gateway's health verdict (``problems() == []`` means healthy)."""

    def __init__(self, gw, *, min_free_bytes: int = 16 << 20, writer_error_window_s: float = 300.0):
        self.gw = gw
        #: a writer failure (caught, counted) keeps the gateway unhealthy this long
        self.writer_error_window_ms = int(writer_error_window_s * 1000)
        self.min_free_bytes = min_free_bytes
        self.started_ms = gw.clock.now_ms()

    def problems(self, health: dict | None = None) -> list[str]:
        gw, s = self.gw, self.gw.settings
        h = health if health is not None else gw.health()
        out = []
        if not gw.broker_connected:
            out.append(f"store broker {s.broker_host}:{s.broker_port} not connected")
        data_dir = Path(s.data_dir)
        if not os.access(data_dir, os.W_OK):
            out.append(f"buffer folder {data_dir} not writable")
        else:
            free = shutil.disk_usage(data_dir).free
            if free < self.min_free_bytes:
                out.append(f"buffer disk nearly full ({free // (1 << 20)} MiB free)")
        if h.get("collector_stalled"):
            out.append("buffer refuses writes (collector stalled, acks held)")
        last_error = h.get("last_writer_error_ms")
        if last_error is not None and h.get("now_ms", gw.clock.now_ms()) - last_error < self.writer_error_window_ms:
            out.append(f"collector writer failed recently ({h.get('writer_errors')} failure(s) since start)")
        recent_ms = max(3 * float(s.cycle_s), 60.0) * 1000
        now, last = h.get("now_ms", gw.clock.now_ms()), h.get("last_cycle_ms")
        if last is None:
            if now - self.started_ms > recent_ms:
                out.append("no scoring cycle since start")
        elif now - last > recent_ms:
            out.append(f"last scoring cycle {(now - last) / 1000:.0f} s ago")
        if h.get("uplink_auth_failed"):
            out.append("the hub refused the gateway's credentials")
        return out


def broker_delays(base_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None):
    """Endless waits between broker attempts: doubling from ``base_s`` to ``cap_s``, each with
    "equal jitter" (in [d/2, d]) so a store's modules restarting together do not retry in step."""
    rng = rng or random.Random()
    d = base_s
    while True:
        yield d / 2 + rng.random() * d / 2
        d = min(cap_s, d * 2)


def wait_for_broker(host: str, port: int, stop: threading.Event, *, delays=None,
                    connect_timeout_s: float = 5.0) -> bool:
    """Block until a TCP connection to the broker succeeds (True) or ``stop`` is set (False).

    At boot the gateway container often starts before the Mosquitto module listens; instead of
    exiting (and being restarted by edgeAgent with its own, growing delay) it waits here, logging
    the first failure and then every tenth.
    """
    delays = delays if delays is not None else broker_delays()
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            with socket.create_connection((host, port), timeout=connect_timeout_s):
                if attempt > 1:
                    log.info("store broker %s:%d reachable after %d attempts", host, port, attempt)
                return True
        except OSError as exc:
            delay = next(delays)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("store broker %s:%d not reachable (%s); attempt %d, retrying in %.1f s",
                            host, port, exc.strerror or exc, attempt, delay)
            stop.wait(delay)
    return False


class Watcher:
    """A background thread that turns uplink state changes into log lines: the hub accepting
    again and the backlog drained after an outage (the MQTT adapter logs broker loss and
    reconnects itself, the uplink each refusal)."""

    def __init__(self, gw, *, every_s: float = 5.0):
        self.gw = gw
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage_started: float | None = None
        self._backlog_peak = 0
        self._failing = False

    def start(self) -> "Watcher":
        self._thread = threading.Thread(target=self._run, name="edge-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.tick()
            except Exception:  # a log line must never take the gateway down
                log.debug("watcher tick failed", exc_info=True)

    def tick(self) -> None:
        """Look once (the thread calls this every ``every_s``; tests call it directly)."""
        gw = self.gw
        failures = gw.uplink.failures
        if self._outage_started is not None and not failures and self._failing:
            log.info("uplink: the hub accepts batches again")
        self._failing = bool(failures)
        pending = gw.buffer.stats(gw.clock.now_ms())["unsent_rows"] if failures or self._outage_started else 0
        if failures and self._outage_started is None:
            self._outage_started = time.monotonic()
            self._backlog_peak = pending
        elif self._outage_started is not None:
            self._backlog_peak = max(self._backlog_peak, pending)
            if not failures and pending <= gw.uplink.round_rows:
                log.info("backlog drained: %d events waiting at the peak, %.0f s after the hub first refused",
                         self._backlog_peak, time.monotonic() - self._outage_started)
                self._outage_started = None
                self._backlog_peak = 0

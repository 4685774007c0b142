"""The gateway's ``/metrics`` through ``prometheus_client``: conventional names and units, one
name per quantity, ``process_*``/``python_*`` metrics and build info.

::

    from edge.metrics import MetricsEndpoint, exposition
    endpoint = MetricsEndpoint(gw.health, healthy=check)   # one registry per gateway
    body, content_type = endpoint.render()                 # what /metrics answers
    text = exposition(gw.health()).decode()                # the same from one health dict (tests)

The values are read from ``Gateway.health()`` at scrape time (a custom collector), so nothing is
double-counted and no background thread keeps metric objects in sync. Names:

==============================================  =======  ============================================
name                                            type     meaning
==============================================  =======  ============================================
``gondola_edge_buffer_events``                  gauge    events held (all unsent)
``gondola_edge_buffer_bytes``                   gauge    logical bytes held (what the cap applies to)
``gondola_edge_buffer_file_bytes``              gauge    SQLite file + WAL on disk
``gondola_edge_oldest_unsent_age_seconds``      gauge    age of the oldest unsent event
``gondola_edge_seq_gaps``                       gauge    device seq values missing right now
``gondola_edge_device_seq_gaps{device_id}``     gauge    the same per device (50 worst)
``gondola_edge_alerts_raised``                  gauge    facings with a raised stock-out alert
``gondola_edge_facings``                        gauge    facings in the planogram
``gondola_edge_uplink_consecutive_failures``    gauge    hub refusals in a row (0 when sending)
``gondola_edge_broker_connected``               gauge    1 while the store broker session is up
``gondola_edge_healthy``                        gauge    1 when ``/health`` answers 200
``gondola_edge_evictions_total{reason,type}``   counter  events evicted by cap or TTL, per step/type
``gondola_edge_quarantined_messages_total``     counter  payloads the collector rejected
``gondola_edge_duplicate_events_total``         counter  redeliveries recognised, not stored again
``gondola_edge_received_events_total``          counter  new events stored
``gondola_edge_sent_events_total``              counter  events the hub accepted
``gondola_edge_committed_messages_total``       counter  MQTT messages committed since start
``gondola_edge_uplink_messages_total``          counter  batch messages sent since start
``gondola_edge_uplink_bytes_total``             counter  encoded bytes sent since start
``gondola_edge_uplink_throttled_seconds_total`` counter  time the bandwidth cap held sends back
``gondola_edge_scorer_errors_total``            counter  scoring cycles the model failed
``gondola_edge_quarantine_bytes``               gauge    bytes quarantine holds (within the cap)
``gondola_edge_collector_writer_errors_total``  counter  failures the collector's writer caught
``gondola_edge_poison_messages_total``          counter  messages that could not be stored (internal)
``gondola_edge_retained_ignored_total``         counter  retained messages the broker replayed, ignored
``gondola_edge_conflicting_repeats_total``      counter  same identity, other content (quarantined)
``gondola_edge_implausible_seqs_total``         counter  implausible seq jumps (quarantined)
``gondola_edge_last_uplink_timestamp_seconds``  gauge    when the hub last accepted a batch (epoch)
``gondola_edge_last_cycle_timestamp_seconds``   gauge    when the last scoring cycle ran (epoch)
``gondola_edge_model_info{model_version}``      info     model or baseline in use
``gondola_edge_model_rollout_info{...}``        info     last rollout asked of this gateway, outcome
``gondola_edge_build_info{version,python}``     info     the gateway's version
==============================================  =======  ============================================

Every gondola metric carries ``store_id``. Buffer counters (evictions, received, sent, ...) are
kept in the buffer, so they survive restarts; the ``committed`` and ``uplink_*`` ones restart at 0
with the process (Prometheus' ``rate()`` handles that reset).
"""

from __future__ import annotations

import os
import platform
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

__all__ = ["MetricsEndpoint", "GatewayCollector", "exposition", "CONTENT_TYPE"]

#: ``text/plain; version=0.0.4; charset=utf-8``
CONTENT_TYPE = CONTENT_TYPE_LATEST

_GAUGES = (
    ("buffer_events", "buffer_rows", "Events held in the buffer (all unsent)."),
    ("buffer_bytes", "buffer_bytes", "Logical bytes held by the buffer (what the cap applies to)."),
    ("buffer_file_bytes", "file_bytes", "Bytes of the buffer's SQLite file and WAL."),
    ("oldest_unsent_age_seconds", "oldest_unsent_age_s", "Age of the oldest unsent event."),
    ("seq_gaps", "seq_gaps", "Device seq values missing right now (losses between devices and gateway)."),
    ("alerts_raised", "alerts_raised", "Facings with a raised stock-out alert."),
    ("facings", "facings", "Facings in the planogram."),
    ("uplink_consecutive_failures", "uplink_failures", "Hub refusals in a row (0 while sending)."),
    ("quarantine_bytes", "quarantine_bytes", "Bytes quarantine holds (within the buffer's cap, at most 5 % of it)."),
)
_COUNTERS = (
    ("quarantined_messages", "quarantined", "Payloads rejected by the collector."),
    ("duplicate_events", "duplicates", "Redelivered events recognised and not stored again."),
    ("received_events", "received", "New events stored."),
    ("sent_events", "sent", "Events the hub accepted."),
    ("committed_messages", "committed_messages", "MQTT messages committed (then acknowledged) since start."),
    ("uplink_messages", "uplink_messages", "Batch messages sent to the hub since start."),
    ("uplink_bytes", "uplink_bytes", "Encoded bytes sent to the hub since start."),
    ("uplink_throttled_seconds", "uplink_throttled_s", "Seconds the bandwidth cap held sends back."),
    ("scorer_errors", "scorer_errors", "Scoring cycles in which the model failed (baseline used)."),
    ("collector_writer_errors", "writer_errors", "Failures the collector's writer caught (it goes on)."),
    ("poison_messages", "poison_messages", "Messages that could not be stored: quarantined as internal, acked."),
    ("retained_ignored", "retained_ignored", "Retained messages the broker replayed at a (re)subscription: acked, not stored."),
    ("conflicting_repeats", "conflicting_repeats", "Repeats of an event identity with other content (quarantined)."),
    ("implausible_seqs", "implausible_seqs", "Events whose seq jumped implausibly far (quarantined)."),
)


def _num(value) -> float:
    return float(value or 0)


class GatewayCollector:
    """A ``prometheus_client`` collector reading one health snapshot per scrape."""

    def __init__(self, health: Callable[[], dict], *, healthy: Callable[[dict], list[str]] | None = None,
                 broker_connected: Callable[[], bool] | None = None):
        self._health = health
        self._healthy = healthy
        self._broker = broker_connected

    def collect(self):
        h = self._health()
        store = str(h.get("store_id", ""))
        for name, key, help_ in _GAUGES:
            g = GaugeMetricFamily(f"gondola_edge_{name}", help_, labels=["store_id"])
            g.add_metric([store], _num(h.get(key)))
            yield g
        if self._broker is not None:
            g = GaugeMetricFamily("gondola_edge_broker_connected", "1 while the store broker session is up.",
                                  labels=["store_id"])
            g.add_metric([store], 1.0 if self._broker() else 0.0)
            yield g
        if self._healthy is not None:
            g = GaugeMetricFamily("gondola_edge_healthy", "1 when /health answers 200.", labels=["store_id"])
            g.add_metric([store], 0.0 if self._healthy(h) else 1.0)
            yield g
        for name, key, help_ in _COUNTERS:
            c = CounterMetricFamily(f"gondola_edge_{name}", help_, labels=["store_id"])
            c.add_metric([store], _num(h.get(key)))
            yield c
        ev = CounterMetricFamily("gondola_edge_evictions", "Events evicted by the cap or TTL policy, per step and type.",
                                 labels=["store_id", "reason", "type"])
        for key, n in sorted((h.get("evictions_by") or {}).items()):
            reason, _, etype = key.partition("/")
            ev.add_metric([store, reason, etype], _num(n))
        yield ev
        gaps = GaugeMetricFamily("gondola_edge_device_seq_gaps", "Missing seq values per device (50 worst).",
                                 labels=["store_id", "device_id"])
        for dev, ranges in sorted((h.get("gaps") or {}).items()):
            gaps.add_metric([store, dev], float(sum(hi - lo + 1 for lo, hi in ranges)))
        yield gaps
        for name, key, help_ in (("last_uplink_timestamp_seconds", "last_uplink_ts", "When the hub last accepted a batch."),
                                 ("last_cycle_timestamp_seconds", "last_cycle_ms", "When the last scoring cycle ran.")):
            g = GaugeMetricFamily(f"gondola_edge_{name}", help_, labels=["store_id"])
            g.add_metric([store], _num(h.get(key)) / 1000)
            yield g
        model = InfoMetricFamily("gondola_edge_model", "Model or baseline in use.", labels=["store_id"])
        model.add_metric([store], {"model_version": str(h.get("model_version") or "")})
        yield model
        rollout = h.get("model") or {}
        if rollout.get("status") not in (None, "none"):
            info = InfoMetricFamily("gondola_edge_model_rollout",
                                    "Last model rollout asked of this gateway and its outcome.", labels=["store_id"])
            info.add_metric([store], {"desired": str(rollout.get("desired") or ""), "status": str(rollout["status"])})
            yield info


class _BuildInfo:
    def collect(self):
        from gondola import __version__

        info = InfoMetricFamily("gondola_edge_build", "The gateway's version and Python.")
        info.add_metric([], {"version": os.environ.get("GONDOLA_VERSION") or __version__,
                             "python": platform.python_version()})
        yield info


class MetricsEndpoint:
    """One registry for one gateway: its collector, build info, ``process_*`` and ``python_*``.

    A registry of its own (not ``prometheus_client.REGISTRY``), so several gateways in one
    process (tests, the demo) do not collide on metric names.
    """

    def __init__(self, health: Callable[[], dict], *, healthy: Callable[[dict], list[str]] | None = None,
                 broker_connected: Callable[[], bool] | None = None, process: bool = True):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(health, healthy=healthy, broker_connected=broker_connected))
        self.registry.register(_BuildInfo())
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE


def exposition(health: dict) -> bytes:
    """Prometheus text for one health snapshot (no process metrics): tests and one-off dumps."""
    return MetricsEndpoint(lambda: health, process=False).render()[0]

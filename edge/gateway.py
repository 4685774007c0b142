"""One store gateway: collector, buffer, inference, uplink and health, as ``build_gateway`` wires
them (see ``edge.wiring`` for the public calls and their contract).

The gateway's own events (``edge.alert``, ``edge.health``) are made with
``gondola.contracts.make_event`` under device id ``gw-<store_id>`` with a ``seq`` counter kept in
the buffer, so they are deduplicated and gap-checked downstream like any device's.

Gap reports: a ``seq`` gap still open ``gap_grace_s`` after it was detected (late messages had
their chance) triggers an immediate ``edge.health`` event carrying the new ``seq_gaps`` total;
per-device gaps are in ``health()["gaps"]``, the twin's reported properties and ``/metrics``.
(A dedicated ``edge.gap`` event type would need a contract version and a silver table.)
"""

from __future__ import annotations

import logging
import threading
import time

from gondola.clock import Clock
from gondola.contracts import SHADOW_PREFIX, make_event, validate_event
from gondola.errors import ContractError, GondolaError, TransportError
from gondola.topics import alert_topic, store_subscription

from edge.buffer import SqliteBuffer
from edge.collector import Collector
from edge.inference import Inference
from edge.model_manager import ModelManager
from edge.uplink import Uplink

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

#: Figures that move with every event or cycle: on their own they do not make a twin report
#: (they ride along with every one, at least hourly; ``score_ms`` also goes at once with the
#: report that carries a new model_version, which is what the cloud's rollout compares).
_TWIN_MOVING = ("buffer_rows", "buffer_bytes", "unsent_rows", "oldest_unsent_age_s", "last_uplink_ts", "score_ms",
               "forecast_threshold")
_HEALTH_FIELDS = ("buffer_rows", "buffer_bytes", "unsent_rows", "oldest_unsent_age_s", "evictions",
                  "seq_gaps", "quarantined", "last_uplink_ts", "model_version",
                  # the cloud's alert_divergence leaves facings between it and its own threshold out
                  "forecast_threshold")


class Gateway:
    """A running store gateway. Build it with ``edge.wiring.build_gateway``."""

    #: credentials and TLS for the store broker (``edge.mqtt.MqttAuth``); None: an open broker
    mqtt_auth = None

    def __init__(self, settings, *, clock: Clock, buffer: SqliteBuffer, inference: Inference, uplink: Uplink,
                 transport, pseudonym_key: bytes, models: ModelManager | None = None):
        self.settings = settings
        self.clock = clock
        self.buffer = buffer
        self.inference = inference
        self.uplink = uplink
        self.transport = transport
        self.models = models
        self.live = None  # edge.live.LiveSettings, set by the wiring
        self.device_id = settings.gateway_device_id
        restored = inference.restore(buffer.load_facing_states())
        if restored:
            log.info("restored the state of %d facings", restored)
        self.collector = Collector(
            buffer, clock, store_id=settings.store_id, pseudonym_key=pseudonym_key,
            ack=self._ack, on_committed=inference.observe, capacity_of=inference.capacity_of,
            group_max=settings.group_max, group_wait_s=settings.group_wait_ms / 1000)
        self._subscriber = None
        self._publisher = None
        self._emit_lock = threading.Lock()
        self._last_snapshot_ms = 0
        self._last_health_ms = 0
        self._twin_sent: dict | None = None  # the last reported patch the hub accepted
        self._twin_sent_ms = 0
        self._last_expire_ms = 0
        self._reported_gaps = 0
        self.alerts_published = 0
        self.shadow_alerts = 0  # shadow-mode alert changes stored for the uplink

    # ---- lifecycle -----------------------------------------------------------------------

    def _ack(self, tokens) -> None:
        if self._subscriber is not None:
            self._subscriber.ack(tokens)

    def start(self) -> None:
        """Start the writer, connect, subscribe; return once the broker confirmed the subscription.

        Raises:
            TransportError: the store broker is unreachable.
        """
        from edge.mqtt import AckAfterCommitSubscriber, Publisher

        s = self.settings
        self.collector.start()
        if self.models is not None:
            self.models.start()
            if not getattr(self, "_models_subscribed", False):  # start() may be retried
                try:
                    self.transport.on_desired(self.models.on_desired)
                    self._models_subscribed = True
                except TransportError as exc:  # offline at start: the health-time poll catches up
                    log.warning("desired-property pushes not enabled (%s); polling with health reports", exc)
            self.poll_desired()  # what the cloud asked for while the gateway was down
        self._subscriber = AckAfterCommitSubscriber(
            s.broker_host, s.broker_port, client_id=s.client_id or f"gondola-gw-{s.store_id}",
            topics=store_subscription(s.store_id),
            on_message=lambda r: self.collector.handle(r.topic, r.payload, r.token, r.retained), auth=self.mqtt_auth)
        try:
            self._subscriber.start()
        except TransportError:
            self.collector.stop()
            if self.models is not None:
                self.models.stop()  # start() may be called again (the CLI retries with backoff)
            raise
        try:
            self._publisher = Publisher(s.broker_host, s.broker_port, client_id=f"gondola-gw-{s.store_id}-alerts",
                                        auth=self.mqtt_auth).start()
        except TransportError as exc:  # alerts still go to the buffer and the local page
            log.warning("cannot publish alerts on the store broker: %s", exc)

    def stop(self) -> None:
        """Stop taking messages, commit what was received, save inference state, close."""
        if self._subscriber is not None:
            self._subscriber.stop()
        self.collector.stop()
        if self.models is not None:
            self.models.stop()
        if self._publisher is not None:
            self._publisher.stop()
        try:
            self.buffer.save_facing_states(self.inference.snapshot(everything=True), replace=True)
        except GondolaError as exc:
            log.warning("could not save facing states: %s", exc)
        self.buffer.close()
        try:
            self.transport.close()
        except Exception:  # closing is best effort
            pass

    @property
    def broker_connected(self) -> bool:
        """Whether the store broker session is up right now (health, metrics)."""
        return self._subscriber is not None and self._subscriber.connected

    def committed_count(self) -> int:
        """Messages committed to the buffer or quarantine since start (duplicates included)."""
        return self.collector.committed

    # ---- own events ----------------------------------------------------------------------

    def _emit(self, etype: str, datas: list[dict], ts: int) -> list[dict]:
        """Make, validate and store the gateway's own events in one transaction."""
        if not datas:
            return []
        with self._emit_lock:
            first = self.buffer.next_gateway_seq()
            events = [
                validate_event(make_event(etype, store_id=self.settings.store_id, device_id=self.device_id,
                                          seq=first + i, ts=ts, data=d) | {"received_at": ts})
                for i, d in enumerate(datas)
            ]
            self.buffer.append(events, now_ms=ts, gateway_seqs=len(events))
        return events

    def record_check(self, facing_id: str, outcome: str, *, staff_id: str | None = None) -> dict:
        """Store what staff found at a facing (the store page's "done"): a ``shelf.check`` event
        that names the alert it answered. It goes up like any event and becomes a label
        (``gold.shelf_checks``) and the alert's outcome on the dashboard.

        Raises:
            ContractError: unknown facing or outcome.
        """
        inf = self.inference
        i = inf.index.get(facing_id)
        if i is None:
            raise ContractError("unknown_facing", f"no facing {ascii(facing_id)[:80]} in the planogram")
        with inf._lock:
            st = inf.states[i]
            data: dict = {"facing_id": facing_id, "sku": st.sku, "outcome": outcome}
            if inf.raised_now[i]:
                data.update(alert_kind="empty_now", alert_ts=int(inf.now_changed_at[i]))
            elif inf.raised[i]:
                data.update(alert_kind="empty_within_h", alert_ts=int(inf.changed_at[i]))
            if st.units is not None:
                data["units_est"] = round(float(st.units), 1)
        if staff_id:
            data["staff_id"] = staff_id
        return self._emit("shelf.check", [data], self.clock.now_ms())[0]

    # ---- cycle ---------------------------------------------------------------------------

    def run_cycle(self, now_ms: int) -> list[dict]:
        """Score all facings at ``now_ms`` in one call, raise / clear alerts with hysteresis, store
        them (priority 0) and publish them on the store broker; return the ``edge.alert`` events
        of this cycle (both ``raised`` and ``cleared``). Also expires by TTL (every 15 minutes),
        enforces the cap,
        reports confirmed gaps, emits ``edge.health`` (and patches the twin) every
        ``health_every_s`` of gateway-clock time (health computed once for both; the twin only
        when it changed, see :meth:`report_twin`), and snapshots the facings changed since the
        last snapshot every ``snapshot_every_s``. Desired properties are read every cycle from
        the embedded hub, and with each health report from IoT Hub (which also pushes them
        while connected)."""
        changes = self.inference.cycle(now_ms)
        if self.models is not None:
            self.models.after_cycle()  # rolls back a model that keeps failing
            if self.transport.polls_desired:
                self.poll_desired()
        horizon = int(self.settings.horizon_min)
        alerts = self._emit("edge.alert", [_alert_data(c, horizon, self.inference.scored_by) for c in changes], now_ms)
        if self._publisher is not None:
            for ev in alerts:
                try:
                    self._publisher.publish(alert_topic(self.settings.store_id, ev["data"]["facing_id"]),
                                            _json(ev), timeout=1.0)
                    self.alerts_published += 1
                except TransportError as exc:
                    log.warning("alert not published on the store broker: %s", exc)
        shadow = self.inference.take_shadow_changes()
        if shadow and self.inference.shadow is not None:
            # Shadow mode: the candidate's would-be alerts go to the uplink only (scorer
            # "shadow:<name>"), for the cloud to compare with the real ones on this store.
            name = SHADOW_PREFIX + self.inference.shadow.name
            self.shadow_alerts += len(self._emit("edge.alert", [_alert_data(c, horizon, name) for c in shadow], now_ms))
        if now_ms - self._last_expire_ms >= 15 * 60_000:
            # TTLs are days long: a sweep every 15 minutes is precise enough and keeps the
            # per-cycle cost independent of the backlog's size.
            self.buffer.expire(now_ms)
            self._last_expire_ms = now_ms
        self.buffer.enforce_cap(now_ms)
        self._report_gaps(now_ms)
        if now_ms - self._last_health_ms >= self.settings.health_every_s * 1000:
            h = self.health()
            self.emit_health(now_ms, h)
            self.report_twin(h, now_ms=now_ms)
            if self.models is not None and not self.transport.polls_desired:
                # Pushes only arrive while connected: a read with each health report catches
                # a desired change made during an outage (it fires only when $version moved).
                self.poll_desired()
            self._last_health_ms = now_ms
        if now_ms - self._last_snapshot_ms >= self.settings.snapshot_every_s * 1000:
            rows = self.inference.snapshot()
            self.buffer.save_facing_states(rows, replace=self.inference.snapshot_full)
            self._last_snapshot_ms = now_ms
        return alerts

    def poll_desired(self) -> bool:
        """Read the twin's desired properties; hand them to the model manager if they changed.
        Return whether they did (False too when the hub is away: it is asked again later)."""
        try:
            return self.transport.poll_desired()
        except TransportError as exc:
            log.info("desired properties not read: %s", exc)
            return False

    def _report_gaps(self, now_ms: int) -> None:
        gaps = self.buffer.unreported_gaps(now_ms - int(self.settings.gap_grace_s * 1000))
        if gaps:
            missing = sum(hi - lo + 1 for _, _, lo, hi in gaps)
            log.warning("%d seq values missing from %d device(s); reported in edge.health",
                        missing, len({d for d, _, _, _ in gaps}))
            self.emit_health(now_ms)
            self.buffer.mark_gaps_reported(gaps)

    # ---- uplink --------------------------------------------------------------------------

    def uplink_once(self, force: bool = False) -> int:
        """Send one round of batches if the freshness budget says so (``force``: now); return
        events the hub accepted (0 while backing off or while nothing is due)."""
        return self.uplink.uplink_once(force=force)

    def drain(self) -> int:
        """Send until the buffer is empty or the hub refuses; return events sent.

        In lock-step runs the caller decides when to try, so the backoff gate is lifted first.
        """
        self.uplink.reset_backoff()
        return self.uplink.drain()

    # ---- health --------------------------------------------------------------------------

    def health(self) -> dict:
        """The ``edge.health`` data fields plus per-device gaps, eviction reasons, uplink and
        collector counters."""
        now = self.clock.now_ms()
        stats = self.buffer.stats(now)
        h = {k: stats[k] for k in _HEALTH_FIELDS if k in stats}
        h["model_version"] = self.inference.scorer.name
        if h.get("last_uplink_ts") is None:
            h.pop("last_uplink_ts", None)
        h["oldest_unsent_age_s"] = round(h["oldest_unsent_age_s"], 3)
        h.update({
            "store_id": self.settings.store_id,
            "now_ms": now,
            "evictions_by": stats["evictions_by"],
            # The 50 devices missing most, first 20 ranges each: bounded for the twin and page.
            "gaps": {d: [list(g) for g in gs] for d, gs in self.buffer.gaps(50, 20).items()},
            "devices": stats["devices"],
            "duplicates": stats["duplicates"],
            "received": stats["received"],
            "sent": stats["sent"],
            "unsent_by_priority": stats["unsent_by_priority"],
            "file_bytes": stats["file_bytes"],
            "committed_messages": self.collector.committed,
            "collector_groups": self.collector.groups,
            # Stalled: the buffer refuses writes (acks held), or the writer thread is gone.
            "collector_stalled": self.collector.stalled or (self.collector.started and not self.collector.alive),
            "writer_errors": self.collector.writer_errors,
            "last_writer_error_ms": self.collector.last_writer_error_ms,
            "poison_messages": self.collector.poisoned,
            "retained_ignored": self.collector.retained_ignored,
            "conflicting_repeats": stats["conflicting_repeats"],
            "implausible_seqs": stats["implausible_seqs"],
            "seq_reanchored": stats["seq_reanchored"],
            "quarantine_bytes": stats["quarantine_bytes"],
            "alerts_raised": int(self.inference.raised.sum() + self.inference.raised_now.sum()),
            "alerts_raised_by_kind": {"empty_within_h": int(self.inference.raised.sum()),
                                      "empty_now": int(self.inference.raised_now.sum())},
            "facings": len(self.inference.states),
            # The store's forecast threshold under its alert budget, beside the model's.
            "forecast_threshold": round(self.inference.forecast_at, 4),
            "forecast_threshold_model": round(self.inference.raise_at, 4),
            "scorer_errors": self.inference.scorer_errors,
            "score_ms": self.inference.score_ms,
            "shadow": {"scorer": self.inference.shadow.name, "score_ms": self.inference.shadow_ms,
                       "errors": self.inference.shadow_errors, "alerts": self.shadow_alerts}
            if self.inference.shadow is not None else None,
            "last_cycle_ms": self.inference.last_cycle_ms,
            "model": dict(self.models.status) if self.models is not None else None,
            **self.uplink.health(),
        })
        return h

    def emit_health(self, now_ms: int, health: dict | None = None) -> dict:
        """Store an ``edge.health`` event now (priority 0) and return it (``health``: already
        computed :meth:`health`, else computed here)."""
        h = health if health is not None else self.health()
        data = {k: h[k] for k in _HEALTH_FIELDS if k in h}
        return self._emit("edge.health", [data], now_ms)[0]

    def report_twin(self, health: dict | None = None, *, now_ms: int | None = None) -> bool:
        """Patch health into the module twin's reported properties; False when the hub is away.

        Called without ``now_ms`` (on demand) it always patches. From the cycle (``now_ms``
        given) a patch goes out when something other than the moving counters (rows, bytes,
        ages) changed since the last accepted one, at most every ``twin_every_s``, and else as
        a heartbeat every 4 x ``twin_every_s``; a changed ``scorer_errors`` or
        ``model_version`` goes at once (the cloud's rollout watches them). Each patch is a
        message and a durable write at the hub, and the ``edge.health`` events carry every
        figure every ``health_every_s`` anyway."""
        h = health if health is not None else self.health()
        body = {k: h.get(k) for k in _HEALTH_FIELDS} | {
            "gaps_by_device": {d: sum(hi - lo + 1 for lo, hi in gs) for d, gs in h["gaps"].items()},
            "evictions_by": h["evictions_by"],
            # The cloud's rollout compares scoring errors of a canary with production's.
            "scorer_errors": h["scorer_errors"], "score_ms": h["score_ms"], "facings": h["facings"],
            "shadow": h["shadow"]}
        last = self._twin_sent
        if now_ms is not None and last is not None:
            age = now_ms - self._twin_sent_ms
            every = self.settings.twin_every_s * 1000
            changed = any(v != last.get(k) for k, v in body.items() if k not in _TWIN_MOVING)
            urgent = any(body.get(k) != last.get(k) for k in ("scorer_errors", "model_version"))
            if not (urgent or (changed and age >= every) or age >= 4 * every):
                return True  # nothing new, or batched into a later report
        try:
            self.transport.patch_reported({"gondola": body | {"reported_at": h["now_ms"]}})
        except TransportError as exc:
            log.info("twin report deferred: %s", exc)
            return False
        self._twin_sent, self._twin_sent_ms = body, h["now_ms"] if now_ms is None else now_ms
        return True

    # ---- the unattended loop -------------------------------------------------------------

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Cycle (which also reports health) and uplink on the wall clock until ``stop`` is set."""
        stop = stop or threading.Event()
        s = self.settings
        next_cycle = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_cycle:
                try:
                    self.run_cycle(self.clock.now_ms())
                except GondolaError as exc:  # e.g. BufferFullError: keep uplinking to make room
                    log.error("cycle failed: %s", exc)
                next_cycle = now + s.cycle_s
            try:
                sent = self.uplink.uplink_once()
            except GondolaError as exc:
                log.error("uplink round failed: %s", exc)
                sent = 0
            if not sent:
                stop.wait(0.2)


def _json(event: dict) -> bytes:
    from edge.buffer import encode

    return encode(event).encode()


def _alert_data(change, horizon_min: int, scorer: str) -> dict:
    """``edge.alert`` data of one alert state change: its kind, and a forecast's expected empty time."""
    data = {"facing_id": change.facing_id, "sku": change.sku, "state": change.state,
            "probability": round(change.probability, 4), "horizon_min": horizon_min,
            "scorer": "detector-empty-now" if change.kind == "empty_now" else scorer,
            "units_est": round(min(max(change.units_est, 0.0), 100_000.0), 2), "kind": change.kind}
    if change.expected_empty_ts is not None:
        data["expected_empty_ts"] = int(change.expected_empty_ts)
    return data

"""MQTT adapter: the only module of the simulator that imports paho-mqtt (1.6, ``<2``).

``MqttPublisher`` publishes device messages at QoS 1 with a bounded in-flight window:
``publish_many`` returns only once the broker has PUBACKed every message it sent, and never
has more than ``window`` unacknowledged messages (MQTT allows at most 65,535 in flight per
client, and a store broker should not have to queue a whole day at once). paho errors are
translated into ``gondola.errors.TransportError``.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any, Iterable

from gondola.errors import TransportError

__all__ = ["MqttPublisher", "bare_publish"]


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:  # pragma: no cover - the edge extra installs it
        raise TransportError("paho-mqtt is not installed (pip install 'gondola[edge]')") from exc
    return mqtt


class MqttPublisher:
    """A QoS 1 publisher with at most ``window`` messages awaiting PUBACK.

    Single-threaded on purpose: the caller's thread writes each PUBLISH straight to the socket
    and reads PUBACKs whenever the window is full or at the end of a batch. A background
    network thread would wake through a socket pair for every message and fight the
    simulator for the GIL, which costs more than half the throughput here. Between batches
    call ``poll()`` (``run_live`` does, every tick) so keepalive pings go out.

    Use as a context manager, or call ``connect()`` and ``close()``.

    Raises (from ``connect`` / ``publish_many`` / ``flush``):
        TransportError: the broker cannot be reached, refuses the connection, drops it, or
            does not acknowledge within ``ack_timeout`` seconds.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, window: int = 1000,
                 client_id: str | None = None, keepalive: int = 60, ack_timeout: float = 30.0):
        if not 1 <= window <= 65_535:
            raise ValueError("window must be within 1..65535 (MQTT packet ids)")
        mqtt = _paho()
        self.host, self.port, self.window = host, int(port), window
        self.ack_timeout = ack_timeout
        self._keepalive = keepalive
        self._client = _client(mqtt, client_id or f"gondola-sim-{uuid.uuid4().hex[:12]}", window)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._inflight = 0
        self._acked = 0
        self._connect_rc: int | None = None
        self._lost: str | None = None
        self._mqtt = mqtt

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: int) -> None:
        self._connect_rc = rc

    def _on_disconnect(self, client: Any, userdata: Any, rc: int) -> None:
        if rc != 0:
            self._lost = f"connection to {self.host}:{self.port} lost (rc={rc})"

    def _on_publish(self, client: Any, userdata: Any, mid: int) -> None:
        self._inflight -= 1
        self._acked += 1

    def _service(self, timeout: float) -> None:
        rc = self._client.loop(timeout=timeout)
        if self._lost:
            raise TransportError(self._lost)
        if rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_AGAIN):
            raise TransportError(f"MQTT connection to {self.host}:{self.port} failed: {self._mqtt.error_string(rc)}")

    def connect(self, timeout: float = 10.0) -> "MqttPublisher":
        """Connect and wait for the broker's CONNACK.

        Raises:
            TransportError: unreachable, refused or no CONNACK within ``timeout``.
        """
        try:
            self._client.connect(self.host, self.port, keepalive=self._keepalive)
        except OSError as exc:
            raise TransportError(f"cannot connect to MQTT broker {self.host}:{self.port}: {exc}") from exc
        _no_delay(self._client)
        deadline = time.monotonic() + timeout
        while self._connect_rc is None and time.monotonic() < deadline:
            self._service(0.05)
        if self._connect_rc is None:
            self.close()
            raise TransportError(f"no CONNACK from {self.host}:{self.port} within {timeout}s")
        if self._connect_rc != 0:
            self.close()
            raise TransportError(f"broker {self.host}:{self.port} refused the connection (rc={self._connect_rc})")
        return self

    def publish_many(self, msgs: Iterable[Any], *, wait: bool = True) -> int:
        """Publish messages at QoS 1 in order; return how many, once all are acknowledged.

        ``msgs`` holds ``DeviceMessage`` objects or ``(topic, payload)`` pairs. With
        ``wait=False`` it returns as soon as the last one is written, still never more than
        ``window`` in flight (a paced live loop uses this and calls ``flush()`` at the end).

        Raises:
            TransportError: the connection is lost or acknowledgements stop coming.
        """
        client, ok = self._client, self._mqtt.MQTT_ERR_SUCCESS
        count = 0
        for msg in msgs:
            topic, payload = (msg.topic, msg.payload) if hasattr(msg, "topic") else msg
            if self._inflight >= self.window:
                self._wait(lambda: self._inflight < self.window)
            info = client.publish(topic, payload, qos=1)
            if info.rc != ok:
                raise TransportError(f"publish to {topic} failed: {self._mqtt.error_string(info.rc)}")
            self._inflight += 1
            count += 1
        if wait:
            self.flush()
        else:
            self.poll()
        return count

    def _wait(self, done: Any) -> None:
        deadline = time.monotonic() + self.ack_timeout
        while not done():
            if time.monotonic() > deadline:
                raise TransportError(f"no PUBACK from {self.host}:{self.port} for {self.ack_timeout}s "
                                     f"({self._inflight} in flight)")
            _quick_ack(self._client)
            self._service(0.05)

    def flush(self) -> None:
        """Wait until every published message is acknowledged.

        Raises:
            TransportError: the connection is lost or no PUBACK arrives within ``ack_timeout``.
        """
        self._wait(lambda: self._inflight <= 0)

    def poll(self) -> None:
        """Handle pending network traffic (acks, keepalive) without blocking.

        Raises:
            TransportError: the connection is lost.
        """
        self._service(0.0)

    @property
    def acked(self) -> int:
        """Messages the broker has acknowledged since connect."""
        return self._acked

    def close(self) -> None:
        """Disconnect (idempotent)."""
        try:
            self._client.disconnect()
            self._client.loop(timeout=0.05)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "MqttPublisher":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _client(mqtt: Any, client_id: str, window: int) -> Any:
    client = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    # paho 1.6 walks every outgoing message on each PUBACK when it enforces its own in-flight
    # limit (O(window) per ack: 7 of 14 s for 20,000 messages at window 1,000). We bound the
    # window ourselves, so paho's limit is switched off (0 = unlimited).
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    return client


def _no_delay(client: Any) -> None:
    """Disable Nagle: the last PUBLISH of a batch must not wait for a delayed ACK (~40 ms)."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _quick_ack(client: Any) -> None:
    """Acknowledge TCP segments at once while waiting for PUBACKs (Linux; re-armed each time).

    A broker without TCP_NODELAY (Mosquitto's default) holds its next PUBACK until our
    delayed ACK (~40 ms) releases it; at the end of every batch that stall would dominate.
    """
    flag = getattr(socket, "TCP_QUICKACK", None)
    sock = client.socket()
    if flag is not None and sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, flag, 1)
        except OSError:
            pass


def bare_publish(host: str, port: int, items: list[tuple[str, bytes]], window: int = 1000,
                 timeout: float = 60.0) -> float:
    """The reference: plain paho publishing prebuilt payloads at QoS 1 with the same window.

    The same single-threaded technique as ``MqttPublisher`` (the fastest we found for paho
    1.6), with nothing else: no simulation, no JSON. Returns the seconds from the first
    publish to the last PUBACK.

    Raises:
        TransportError: connection refused or acknowledgements missing after ``timeout``.
    """
    mqtt = _paho()
    client = _client(mqtt, f"gondola-bare-{uuid.uuid4().hex[:12]}", window)
    state = {"inflight": 0, "connected": False}

    def on_publish(c: Any, u: Any, mid: int) -> None:
        state["inflight"] -= 1

    def on_connect(c: Any, u: Any, f: Any, rc: int) -> None:
        state["connected"] = rc == 0

    client.on_publish = on_publish
    client.on_connect = on_connect
    try:
        client.connect(host, port)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc}") from exc
    _no_delay(client)
    deadline = time.monotonic() + timeout
    try:
        while not state["connected"]:
            if time.monotonic() > deadline:
                raise TransportError(f"no CONNACK from {host}:{port}")
            client.loop(0.05)
        started = time.perf_counter()
        for topic, payload in items:
            while state["inflight"] >= window:
                if time.monotonic() > deadline:
                    raise TransportError("bare publisher: acknowledgements stopped")
                _quick_ack(client)
                client.loop(0.05)
            client.publish(topic, payload, qos=1)
            state["inflight"] += 1
        while state["inflight"] > 0:
            if time.monotonic() > deadline:
                raise TransportError("bare publisher: acknowledgements missing")
            _quick_ack(client)
            client.loop(0.05)
        return time.perf_counter() - started
    finally:
        client.disconnect()

"""The one module that imports paho-mqtt: a subscriber that acknowledges after commit, and a
publisher with a bounded in-flight window.

**Acknowledge after commit, in groups.** paho-mqtt 1.6 sends the QoS 1 PUBACK right after
``on_message`` returns, and the broker forgets a message once it has the PUBACK. Blocking
``on_message`` until the message is committed would give one SQLite commit per message (paho calls
``on_message`` serially on its network thread), i.e. 10-85 k messages/s at best. Instead
:class:`AckAfterCommitSubscriber` *defers* the PUBACK: it overrides paho's ``_send_puback`` (paho
1.6 queues the PUBACK through it right after ``on_message``) to hold the packet id, hands the
message to the caller, and sends the held PUBACKs only when the caller says the group that holds
them is committed (:meth:`AckAfterCommitSubscriber.ack`), a group's PUBACKs in one write. Many
messages then share one commit and none is acknowledged before it is durable. PUBACKs go out in
arrival order, as MQTT requires.

Held acks belong to one connection: after a disconnect the packet ids mean nothing (the broker
redelivers those messages with the DUP flag on the next session), so acks from an older
connection are dropped, never sent on the new one. This relies on two private paho 1.6 methods
(``_send_puback``, ``_packet_queue``); the project pins ``paho-mqtt<2`` (``azure-iot-device``
requires it) and tests cover it.

Use ``clean_session=False`` and a fixed client id, so the broker queues messages while the
gateway is down (Mosquitto keeps them across its own clean restart, not across its kill -9; the
embedded amqtt broker keeps none across its restarts).

**Access.** Both clients take an optional :class:`MqttAuth`: a username and password (the store
broker's password file, ``edge.access``) and a CA file, which turns on TLS with the store CA
and host-name checking. A broker that refuses the credentials fails ``start()`` at once.

Errors: ``TransportError`` when the broker cannot be reached or refuses the connection or subscription.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as paho

from gondola.errors import TransportError

__all__ = ["Received", "AckAfterCommitSubscriber", "Publisher", "MqttAuth"]

log = logging.getLogger(__name__)

#: A QoS 1 PUBACK: fixed header (type 4, no flags), remaining length 2, packet id.
_PUBACK = struct.Struct("!BBH")


@dataclass(frozen=True)
class MqttAuth:
    """Credentials and TLS for the store broker; the password never appears in a repr or log."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # TLS with this CA (and host-name checks) when set

    def apply(self, client: paho.Client) -> None:
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.ca_file:
            client.tls_set(ca_certs=str(self.ca_file), cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)


@dataclass(frozen=True)
class Received:
    """One message as the subscriber hands it over; ``token`` is what ``ack`` takes."""

    topic: str
    payload: bytes
    token: tuple[int, int]  # (connection generation, packet id); packet id 0 for QoS 0
    #: the broker's stored retained message, sent because we (re)subscribed: a live message
    #: reaches an established subscription with the flag off (MQTT 3.1.1, 3.3.1.3)
    retained: bool = False


class _DeferringClient(paho.Client):
    """paho Client whose QoS 1 PUBACKs wait until the owner releases them."""

    def _send_puback(self, mid):  # paho's private hook, 1.6.x
        # Called on the network thread right after on_message returned: do not send yet; the
        # token handed to the owner carries the mid, and release_pubacks sends it after commit.
        return paho.MQTT_ERR_SUCCESS

    def release_pubacks(self, mids: list[int]) -> None:
        """Send the PUBACKs of ``mids`` (in this order) as one queued write.

        MQTT is a byte stream, so consecutive PUBACK packets in one buffer are valid; one write
        and one wake-up of the network loop per committed group, instead of one of each per
        message, takes that cost off the thread that shares the GIL with paho's reader.
        """
        if mids:
            packet = b"".join([_PUBACK.pack(paho.PUBACK, 2, mid) for mid in mids])
            self._packet_queue(paho.PUBACK, packet, mids[-1], 1)


class AckAfterCommitSubscriber:
    """Subscribe with QoS 1; ``on_message(Received)`` is called on paho's network thread and must
    be quick (hand the message to a writer); call ``ack(tokens)`` once they are committed."""

    def __init__(self, host: str, port: int, *, client_id: str, topics: list[str],
                 on_message: Callable[[Received], None], keepalive: int = 30, auth: MqttAuth | None = None):
        self.host, self.port = host, port
        self.topics = topics
        self._on_message_cb = on_message
        self._client = _DeferringClient(client_id=client_id, clean_session=False)
        if auth is not None:
            auth.apply(self._client)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(0.2, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._keepalive = keepalive
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        self.connected = False
        self.reconnects = 0

    # paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(self, client, userdata, flags, rc):
        with self._gen_lock:
            self._gen += 1
        if rc != 0:
            self._connect_error = paho.connack_string(rc)
            self._subscribed.set()  # start() fails now instead of waiting out its timeout
            return
        self.connected = True
        self.reconnects += 1
        if self.reconnects > 1:
            log.info("store broker %s:%d reconnected", self.host, self.port)
        client.subscribe([(t, 1) for t in self.topics])
        if flags.get("session present"):
            # The broker kept our session and its subscriptions: queued messages flow now, and
            # the SUBACK may come only after all of them, so do not make start() wait for it.
            self._subscribed.set()

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        if any(q == 0x80 for q in granted_qos):
            self._connect_error = "broker refused the subscription"
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, rc):
        if rc != 0 and self.connected:  # rc 0: our own disconnect() at shutdown
            log.warning("store broker %s:%d connection lost (%s); reconnecting", self.host, self.port,
                        paho.error_string(rc))
        self.connected = False
        with self._gen_lock:
            self._gen += 1

    def _on_message(self, client, userdata, msg):
        # paho queues the PUBACK (held by _send_puback) after this returns, so the token
        # names the packet id of this message on this connection.
        token = (self._gen, msg.mid if msg.qos > 0 else 0)
        try:
            # paho's msg.topic decodes strictly and raises on bytes that are not UTF-8 (Mosquitto
            # refuses such topics, other brokers may not): decode leniently so the collector
            # quarantines the message instead of leaving it unacknowledged for ever.
            topic = msg._topic.decode("utf-8", "backslashreplace") if isinstance(msg._topic, bytes) else msg.topic
            self._on_message_cb(Received(topic, bytes(msg.payload), token, bool(msg.retain)))
        except Exception:  # never let a handler bug kill the network thread
            log.exception("message handler failed; the message stays unacknowledged")

    # public ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Connect, subscribe and start the network thread; return once the SUBACK arrived (or
        at once when the broker kept our session, subscriptions included).

        Raises:
            TransportError: the broker is unreachable or refused us within ``timeout``.
        """
        try:
            self._client.connect(self.host, self.port, self._keepalive)
        except OSError as exc:
            raise TransportError(f"cannot reach MQTT broker {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(timeout) or self._connect_error:
            self.stop()
            raise TransportError(f"MQTT subscribe failed: {self._connect_error or 'timeout'}")

    def ack(self, tokens: list[tuple[int, int]]) -> int:
        """Send the PUBACKs of committed messages (tokens from older connections are dropped,
        their messages come again). Return how many were sent."""
        with self._gen_lock:
            gen = self._gen
            mids = [mid for g, mid in tokens if g == gen and mid]
            self._client.release_pubacks(mids)
        return len(mids)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Publisher:
    """QoS 1 publisher with a bounded in-flight window (MQTT caps it at 65,535 per client).

    Used for alerts on the store broker, and by tests and benchmarks to play devices.
    """

    def __init__(self, host: str, port: int, *, client_id: str = "", max_inflight: int = 1000,
                 auth: MqttAuth | None = None):
        self._client = paho.Client(client_id=client_id, clean_session=True)
        if auth is not None:
            auth.apply(self._client)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._window = threading.BoundedSemaphore(max_inflight)
        self._client.on_publish = lambda c, u, mid: self._window.release()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client.on_connect = self._on_connect
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            self._refused = paho.connack_string(rc)
        self._connected.set()

    def start(self, timeout: float = 10.0) -> "Publisher":
        """Raises: TransportError when the broker cannot be reached."""
        try:
            self._client.connect(self.host, self.port, 30)
        except OSError as exc:
            raise TransportError(f"cannot reach MQTT broker {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout) or self._refused:
            self.stop()
            raise TransportError(f"MQTT connect failed: {self._refused or 'timeout'}")
        return self

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, timeout: float = 30.0) -> None:
        """Queue one message; blocks while the in-flight window is full.

        Raises:
            TransportError: the window stayed full for ``timeout`` seconds.
        """
        if not self._window.acquire(timeout=timeout):
            raise TransportError("publisher window stayed full")
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self._window.release()
            raise TransportError(f"publish failed: {paho.error_string(info.rc)}")

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every QoS 1 message was acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._window._value == self._window._initial_value:  # type: ignore[attr-defined]
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

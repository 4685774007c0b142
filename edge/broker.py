"""The store broker for local runs: Mosquitto when installed, else the embedded amqtt broker.

``start_broker(prefer="auto")`` returns a :class:`RunningBroker` (``kind``, ``host``, ``port``,
``stop()``). In production the broker is its own IoT Edge module (Mosquitto); see
``deployment/iot-edge/``.

Differences that matter (measured, see DESIGN.md): Mosquitto keeps queued QoS 1 messages for a
persistent session across its clean restart, not across its kill -9; amqtt keeps none across
restarts. The Mosquitto config written here raises ``max_queued_messages`` (default 1,000 per
offline client) so a gateway can be down for a while without the broker dropping messages.

Errors: ``ConfigError`` when the preferred broker is not available, ``TransportError`` when it
does not start listening.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from gondola.errors import ConfigError, TransportError

__all__ = [
    "MOSQUITTO_CONF",
    "RunningBroker",
    "free_port",
    "mosquitto_path",
    "start_broker",
    "start_embedded",
    "start_mosquitto",
    "wait_port",
]

#: Mosquitto settings for a store broker (listener line added per run).
MOSQUITTO_CONF = """\
allow_anonymous true
persistence {persistence}
{persistence_location}
# A gateway offline for a day at ~50 msg/s: keep up to 5 M messages, 2 GB, per client.
max_queued_messages 5000000
max_queued_bytes 2000000000
# In flight per client, bounded in messages and bytes (the gateway group-commits up to 1,000).
max_inflight_messages 2000
max_inflight_bytes 33554432
# Device messages are small: larger packets get their sender disconnected.
max_packet_size 65536
"""


@dataclass
class RunningBroker:
    kind: str  # mosquitto | embedded
    host: str
    port: int
    _stop: Callable[[], None]

    def stop(self) -> None:
        """Stop the broker; idempotent."""
        stop, self._stop = self._stop, (lambda: None)
        stop()


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float) -> None:
    """Return once something accepts connections on ``host:port``. Raises: TransportError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TransportError(f"broker did not listen on {host}:{port} within {timeout}s")


def start_mosquitto(data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1",
                    persistence: bool = False) -> RunningBroker:
    """Run Mosquitto as a subprocess with a store-gateway config.

    Raises:
        ConfigError: Mosquitto is not installed.
        TransportError: it did not start listening.
    """
    binary = mosquitto_path()
    if binary is None:
        raise ConfigError("Mosquitto is not installed (Debian package 'mosquitto')")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = data_dir / "mosquitto.conf"
    conf.write_text(f"listener {port} {host}\n" + MOSQUITTO_CONF.format(
        persistence="true" if persistence else "false",
        persistence_location=f"persistence_location {data_dir}/" if persistence else ""))
    log = (data_dir / "mosquitto.log").open("ab")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(host, port, 10)
    except TransportError:
        proc.kill()
        raise

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    return RunningBroker("mosquitto", host, port, stop)


def start_embedded(*, port: int | None = None, host: str = "127.0.0.1") -> RunningBroker:
    """Run the amqtt broker on its own event loop in a background thread.

    Raises:
        ConfigError: amqtt is not installed (it is the ``broker`` extra, not in the gateway image).
        TransportError: it did not start listening.
    """
    try:
        from amqtt.broker import Broker  # imported here: only this function needs amqtt
    except ImportError:
        raise ConfigError("no MQTT broker: install Mosquitto, or the embedded one with "
                          "pip install 'gondola[broker]'") from None

    port = port or free_port()
    loop = asyncio.new_event_loop()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    started = threading.Event()
    holder: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            broker = Broker(config, loop=loop)
            loop.run_until_complete(broker.start())
            holder["broker"] = broker
        except Exception as exc:  # reported to the caller below
            holder["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
    thread.start()
    started.wait(15)
    if "broker" not in holder:
        raise TransportError(f"embedded broker failed to start: {holder.get('error', 'timeout')!r}")
    wait_port(host, port, 10)

    def stop() -> None:
        fut = asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop)
        try:
            fut.result(10)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return RunningBroker("embedded", host, port, stop)


def start_broker(prefer: str = "auto", *, data_dir: Path | None = None, port: int | None = None) -> RunningBroker:
    """``auto``: Mosquitto when installed, else embedded; or force ``mosquitto`` / ``embedded``.

    Raises:
        ConfigError: unknown ``prefer`` or Mosquitto forced but missing.
        TransportError: the broker did not start.
    """
    if prefer not in ("auto", "mosquitto", "embedded"):
        raise ConfigError(f"broker must be auto, mosquitto or embedded, got {prefer!r}")
    if prefer == "mosquitto" or (prefer == "auto" and mosquitto_path()):
        return start_mosquitto(Path(data_dir or "out/broker"), port=port)
    return start_embedded(port=port)

"""The gateway -> cloud transport role, and its embedded implementation.

``HubTransport`` is what the uplink and the model manager need from "the hub": send one batch
message (durable at the hub when ``send`` returns) and read / patch the gateway module's twin.

Implementations, named for their technology:

* :class:`LocalHubTransport` - the embedded hub on disk (``gondola.hub.LocalHub``); the default
  on one machine, in tests and in the demo.
* ``edge.azure.iothub.IotHubTransport`` - Azure IoT Hub through ``azure-iot-device`` (owned by
  the Azure adapter, same shape).
* :class:`FlakyTransport` - wraps any transport and refuses sends while "offline" or at random;
  tests and benchmarks use it to simulate a store's network.

Errors (all from ``gondola.errors``):

* ``TransportError``: the hub did not accept the message; the uplink retries with backoff.
* ``TransportAuthError``: credentials refused; retrying will not help (the uplink stops and
  reports it in health).
"""

from __future__ import annotations

import random
import sqlite3
import threading
from typing import Callable, Mapping, Protocol, runtime_checkable

from gondola.contracts import BatchMessage
from gondola.errors import StorageError, TransportError
from gondola.hub import LocalHub

__all__ = ["HubTransport", "LocalHubTransport", "FlakyTransport", "DEFAULT_MODULE_ID"]

#: Module id of the gateway module in the IoT Edge deployment (its twin holds model desired state).
DEFAULT_MODULE_ID = "gondola-gateway"


@runtime_checkable
class HubTransport(Protocol):
    """What the gateway needs from the cloud hub."""

    def send(self, message: BatchMessage) -> None:
        """Deliver one batch message; return only once the hub durably accepted it.

        Raises:
            TransportError: not accepted (retry later).
            TransportAuthError: credentials refused (do not retry).
        """
        ...

    def get_twin(self) -> dict:
        """``{"desired": {..., "$version": n}, "reported": {...}}`` of the gateway module.

        Raises:
            TransportError: the twin could not be read.
        """
        ...

    def patch_reported(self, patch: Mapping) -> None:
        """Merge ``patch`` into the module's reported properties (``None`` deletes a key).

        Raises:
            TransportError: the patch was not accepted.
        """
        ...

    #: True when desired-property changes arrive only through :meth:`poll_desired` (nothing
    #: pushes them), so the gateway polls every cycle; False when the hub pushes them.
    polls_desired: bool

    def on_desired(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(desired)`` whenever desired properties change (may be polled)."""
        ...

    def poll_desired(self) -> bool:
        """Read the twin; fire the ``on_desired`` callbacks if its desired ``$version`` moved.
        Return whether it did.

        Raises:
            TransportError: the twin could not be read.
        """
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


class LocalHubTransport:
    """The embedded hub as a transport: one SQLite file shared with the cloud side.

    Desired-property changes are detected by polling the twin's ``$version`` when
    :meth:`poll_desired` is called (the gateway calls it once per cycle); the real IoT Hub
    pushes them instead.
    """

    #: The gateway polls :meth:`poll_desired` every cycle (nothing pushes changes).
    polls_desired = True

    def __init__(self, hub: LocalHub, device_id: str, module_id: str = DEFAULT_MODULE_ID):
        self.hub = hub
        self.device_id = device_id
        self.module_id = module_id
        self._callbacks: list[Callable[[dict], None]] = []
        self._seen_version = -1
        self._lock = threading.Lock()

    def send(self, message: BatchMessage) -> None:
        try:
            self.hub.send(self.device_id, message.body, message.properties)
        except (StorageError, sqlite3.Error) as exc:
            raise TransportError(f"local hub did not accept the batch: {exc}") from exc

    def get_twin(self) -> dict:
        try:
            return self.hub.get_twin(self.device_id, self.module_id)
        except Exception as exc:  # sqlite3 errors surface as-is from LocalHub.get_twin
            raise TransportError(f"cannot read twin: {exc}") from exc

    def patch_reported(self, patch: Mapping) -> None:
        try:
            self.hub.patch_reported(self.device_id, self.module_id, patch)
        except Exception as exc:
            raise TransportError(f"cannot patch reported properties: {exc}") from exc

    def on_desired(self, callback: Callable[[dict], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def poll_desired(self) -> bool:
        """Fire the desired callbacks if the desired version changed; return whether it did.
        (Called every cycle: the version alone is read first, the twin only when it moved.)"""
        try:
            current = self.hub.desired_version(self.device_id, self.module_id)
        except Exception as exc:
            raise TransportError(f"cannot read twin: {exc}") from exc
        with self._lock:
            if current == self._seen_version:
                return False
        desired = self.get_twin()["desired"]
        version = int(desired.get("$version", 0))
        with self._lock:
            if version == self._seen_version:
                return False
            self._seen_version = version
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(desired)
        return True

    def close(self) -> None:
        pass


class FlakyTransport:
    """Wrap a transport; refuse sends while ``online`` is False or with probability ``fail_rate``.

    A simulated store network for tests and benchmarks; twin calls pass through.
    """

    def __init__(self, inner: HubTransport, *, fail_rate: float = 0.0, seed: int = 0):
        self.inner = inner
        self.online = True
        self.fail_rate = fail_rate
        self.refused = 0
        self._rng = random.Random(seed)

    def send(self, message: BatchMessage) -> None:
        if not self.online or (self.fail_rate and self._rng.random() < self.fail_rate):
            self.refused += 1
            raise TransportError("simulated network outage")
        self.inner.send(message)

    def get_twin(self) -> dict:
        return self.inner.get_twin()

    def patch_reported(self, patch: Mapping) -> None:
        if not self.online:
            raise TransportError("simulated network outage")
        self.inner.patch_reported(patch)

    def on_desired(self, callback: Callable[[dict], None]) -> None:
        self.inner.on_desired(callback)

    @property
    def polls_desired(self) -> bool:
        return self.inner.polls_desired

    def poll_desired(self) -> bool:
        """Twin reads pass through even while sends are refused (as ``get_twin`` does)."""
        return self.inner.poll_desired()

    def close(self) -> None:
        self.inner.close()

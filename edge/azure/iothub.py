"""``IotHubTransport``: the gateway's hub transport and module twin on ``azure-iot-device``.

In a store the gateway runs as an IoT Edge module: it sends each batch to an edgeHub *output*
(``uplink`` by default) and the deployment routes that output to ``$upstream`` (IoT Hub), so
edgeHub stores and forwards while the store is offline. Outside IoT Edge the same class sends
straight to IoT Hub with a module connection string.

A ``BatchMessage`` becomes one ``azure.iot.device.Message``:

* body: the encoded batch bytes, unchanged;
* system properties: ``content_type`` / ``content_encoding`` from the batch's ``content-type`` /
  ``content-encoding`` properties, ``message_id`` = ``<first_device_id>:<first_seq>`` (unique per
  batch content, so the hub's traces name the batch);
* application (custom) properties: *all* batch properties, including content-type/-encoding,
  because the Event Hubs-compatible endpoint hands application properties to the cloud reader
  as they are, and ``gondola.contracts.decode_batch`` reads them from there.

Retry policy: the SDK's own connection retry is switched off (``connection_retry=False``). A
send while the link is down fails at once with ``TransportError`` and the uplink applies its
backoff with jitter; the next send reconnects (``auto_connect``). One retry policy, in one place
(the uplink), and a send never blocks for the length of an outage.

Errors (the only exceptions that leave this module)::

    CredentialError                         -> TransportAuthError (fix the credentials)
    ConnectionFailedError, ConnectionDroppedError, NoConnectionError,
    OperationTimeout, OperationCancelled, ClientError, ServiceError
                                            -> TransportError (retry with backoff)
    ValueError from the SDK's size check    -> ContractError("too_large") (split, do not retry)
    missing IoT Edge environment / bad connection string -> ConfigError
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Mapping

from azure.iot.device import IoTHubModuleClient, Message
from azure.iot.device import exceptions as sdk_errors

from gondola.contracts import BatchMessage
from gondola.errors import ConfigError, ContractError, GondolaError, TransportAuthError, TransportError

__all__ = ["IotHubTransport", "DEFAULT_OUTPUT", "to_sdk_message"]

log = logging.getLogger(__name__)

#: edgeHub output the gateway sends batches to; the deployment routes it to ``$upstream``.
DEFAULT_OUTPUT = "uplink"

# Batch properties that IoT Hub also understands as system properties.
_CONTENT_TYPE = "content-type"
_CONTENT_ENCODING = "content-encoding"

DesiredCallback = Callable[[dict], None]


def to_sdk_message(message: BatchMessage) -> Message:
    """Build the SDK message for a batch (see the module docstring for the mapping)."""
    props = {str(k): str(v) for k, v in message.properties.items()}
    first = props.get("first_device_id"), props.get("first_seq")
    sdk_message = Message(
        bytes(message.body),
        message_id=f"{first[0]}:{first[1]}" if all(first) else None,
        content_encoding=props.get(_CONTENT_ENCODING),
        content_type=props.get(_CONTENT_TYPE),
    )
    sdk_message.custom_properties = props
    return sdk_message


def _merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict:
    """RFC 7386 JSON merge patch, as IoT Hub applies desired-property patches."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge_patch(out[key], value)
        else:
            out[key] = value
    return out


def _translate(exc: BaseException, doing: str) -> Exception:
    """Map an SDK exception to the gondola.errors tree (see the module docstring)."""
    if isinstance(exc, sdk_errors.CredentialError):
        return TransportAuthError(f"IoT Hub refused the credentials while {doing}: {exc}")
    if isinstance(
        exc,
        (sdk_errors.ClientError, sdk_errors.OperationTimeout, sdk_errors.OperationCancelled, sdk_errors.ServiceError),
    ):
        return TransportError(f"IoT Hub did not complete {doing}: {type(exc).__name__}: {exc}")
    return TransportError(f"unexpected {type(exc).__name__} while {doing}: {exc}")


class IotHubTransport:
    """Send batches to IoT Hub (directly or through edgeHub) and use the module twin.

    Construct it with one of the ``from_*`` class methods (the wiring does that) or pass an
    already built SDK client (tests, custom authentication). The client connects lazily on the
    first call; ``close()`` shuts it down.
    """

    #: IoT Hub pushes desired-property patches while connected (``on_desired``).
    polls_desired = False

    def __init__(self, client: Any, *, output_name: str | None = DEFAULT_OUTPUT):
        self._client = client
        self._output = output_name or None
        self._callbacks: list[DesiredCallback] = []
        self._lock = threading.Lock()
        self._desired: dict | None = None  # last known desired properties
        self._fired_version: Any = None  # desired $version the callbacks last saw

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_edge_environment(cls, *, output_name: str | None = DEFAULT_OUTPUT) -> "IotHubTransport":
        """Inside an IoT Edge module: credentials and edgeHub address come from the runtime.

        Raises:
            ConfigError: not running under IoT Edge (the ``IOTEDGE_*`` variables are missing).
        """
        try:
            client = IoTHubModuleClient.create_from_edge_environment(connection_retry=False)
        except (OSError, KeyError, ValueError, sdk_errors.ClientError) as exc:
            raise ConfigError(f"not an IoT Edge module environment: {type(exc).__name__}: {exc}") from exc
        return cls(client, output_name=output_name)

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        output_name: str | None = None,
        server_verification_cert: str | None = None,
        keep_alive: int = 60,
    ) -> "IotHubTransport":
        """With a module connection string (``HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...``).

        A ``GatewayHostName=...`` part sends through that edgeHub instead of IoT Hub;
        ``server_verification_cert`` (PEM) is the CA that edgeHub's certificate chains to.
        Without IoT Edge there is no output routing, so ``output_name`` defaults to none.

        Raises:
            ConfigError: the connection string is malformed or not a module's.
        """
        kwargs: dict[str, Any] = {"connection_retry": False, "keep_alive": keep_alive}
        if server_verification_cert:
            kwargs["server_verification_cert"] = server_verification_cert
        try:
            client = IoTHubModuleClient.create_from_connection_string(connection_string, **kwargs)
        except (ValueError, TypeError, sdk_errors.ClientError) as exc:
            # The SDK's message quotes the connection string only by field names, never the key.
            raise ConfigError(f"bad IoT Hub module connection string: {type(exc).__name__}") from exc
        return cls(client, output_name=output_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "IotHubTransport":
        """Pick the construction from settings (see docs/azure.md).

        ``GONDOLA_IOTHUB_CONNECTION_STRING`` set: connection string (with
        ``GONDOLA_IOTHUB_CA_CERT`` = path of a PEM CA, optional); otherwise the IoT Edge
        environment. ``GONDOLA_IOTHUB_OUTPUT`` names the edgeHub output (``""`` for none).

        Raises:
            ConfigError: neither a connection string nor an IoT Edge environment is present,
                or the CA file cannot be read.
        """
        env = os.environ if env is None else env
        output = env.get("GONDOLA_IOTHUB_OUTPUT", DEFAULT_OUTPUT)
        from gondola.secrets import secret_text

        conn = secret_text("iothub-connection-string", env)
        if conn:
            cert = None
            if env.get("GONDOLA_IOTHUB_CA_CERT"):
                try:
                    with open(env["GONDOLA_IOTHUB_CA_CERT"], encoding="ascii") as fh:
                        cert = fh.read()
                except OSError as exc:
                    raise ConfigError(f"cannot read GONDOLA_IOTHUB_CA_CERT: {exc}") from exc
            return cls.from_connection_string(conn, output_name=output or None, server_verification_cert=cert)
        if "IOTEDGE_MODULEID" not in env:
            raise ConfigError(
                "hub=iothub needs GONDOLA_IOTHUB_CONNECTION_STRING or an IoT Edge module environment"
            )
        return cls.from_edge_environment(output_name=output or None)

    # ---- HubTransport ----------------------------------------------------------------------

    def send(self, message: BatchMessage) -> None:
        """Send one batch; return once the hub (or edgeHub) acknowledged it (MQTT PUBACK).

        Raises:
            TransportAuthError: the hub refused the credentials.
            TransportError: not connected, connection lost, or timed out; retry later.
            ContractError: ``too_large``, the message with its properties exceeds 256 KB.
        """
        sdk_message = to_sdk_message(message)
        try:
            if self._output:
                self._client.send_message_to_output(sdk_message, self._output)
            else:
                self._client.send_message(sdk_message)
        except ValueError as exc:
            # The SDK's only ValueError on send is its 256 KB check (body plus properties).
            raise ContractError("too_large", f"IoT Hub SDK rejected the batch: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - every SDK failure is translated here
            raise _translate(exc, "sending a batch") from exc

    # ---- module twin -----------------------------------------------------------------------

    def get_twin(self) -> dict:
        """The module twin: ``{"desired": {..., "$version": n}, "reported": {...}}``.

        Raises:
            TransportAuthError, TransportError: as ``send``.
        """
        try:
            twin = self._client.get_twin()
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, "reading the module twin") from exc
        desired = dict(twin.get("desired", {}))
        with self._lock:
            self._desired = desired
        return {"desired": desired, "reported": dict(twin.get("reported", {}))}

    def patch_reported(self, patch: Mapping[str, Any]) -> None:
        """Merge ``patch`` into the twin's reported properties (a ``None`` value deletes a key).

        Raises:
            TransportAuthError, TransportError: as ``send`` (a rejected patch is a
                ``TransportError`` naming the service's status).
        """
        try:
            self._client.patch_twin_reported_properties(dict(patch))
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, "patching reported properties") from exc

    def on_desired(self, callback: DesiredCallback) -> None:
        """Call ``callback(desired)`` with the *whole* desired properties after each change.

        IoT Hub pushes a patch (JSON merge patch with the new ``$version``); it is merged into
        the last known desired properties (read with ``get_twin`` when none is known), so
        callbacks see the same shape as ``LocalHubTransport``'s. Each ``$version`` fires once, in
        increasing order (an older one arriving late is dropped).
        Callbacks run on the SDK's handler thread; one that raises is logged and does not stop
        the others. Patches only arrive while connected: call ``poll_desired()`` at start and
        after an outage (it fires when the version moved meanwhile).

        Raises:
            TransportError: the SDK could not enable twin patches.
        """
        with self._lock:
            first = not self._callbacks
            self._callbacks.append(callback)
        if first:
            try:
                self._client.on_twin_desired_properties_patch_received = self._on_patch
            except Exception as exc:  # noqa: BLE001
                raise _translate(exc, "subscribing to desired properties") from exc

    def poll_desired(self) -> bool:
        """Read the twin; fire the callbacks if its desired ``$version`` is new. Return whether it was.

        Raises:
            TransportAuthError, TransportError: as ``get_twin``.
        """
        return self._fire(self.get_twin()["desired"])

    def _on_patch(self, patch: dict) -> None:
        with self._lock:
            known = self._desired
        if known is None:
            try:
                known = self.get_twin()["desired"]
            except GondolaError as exc:
                log.warning("desired patch arrived but the twin could not be read: %s", exc)
                known = {}
        self._fire(_merge_patch(known, patch))

    def _fire(self, desired: dict) -> bool:
        version = desired.get("$version")
        with self._lock:
            seen = self._fired_version
            if isinstance(version, int) and isinstance(seen, int) and version <= seen:
                # Already seen, or older than what the callbacks saw (a patch that raced a read).
                return False
            self._desired = desired
            self._fired_version = version
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(dict(desired))
            except Exception:  # noqa: BLE001 - a bad handler must not kill the SDK thread
                log.exception("desired-properties callback %r failed", callback)
        return True

    def close(self) -> None:
        """Disconnect and stop the SDK's threads. Safe to call twice."""
        try:
            self._client.shutdown()
        except Exception as exc:  # noqa: BLE001 - closing never raises
            log.warning("IoT Hub client shutdown failed: %s", type(exc).__name__)

    def __enter__(self) -> "IotHubTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

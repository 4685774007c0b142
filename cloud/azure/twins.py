"""``IotHubTwinRegistry``: module twins on IoT Hub for model rollout, on ``azure-iot-hub``.

The rollout writes a gateway module's *desired* properties (which model: version, URL, sha256,
signature) and reads back its *reported* properties (what the gateway runs and how it went).
The methods and their shapes are those of the embedded hub (``gondola.hub.LocalHub``:
``set_desired`` / ``get_twin``), so the rollout code runs unchanged on either.

IoT Hub applies a desired *patch* as a JSON merge patch. ``set_desired`` replaces, like the
embedded hub: it reads the twin, patches the new properties and ``null``s the ones that are
gone, with the twin's ETag (``If-Match``) so a concurrent writer is noticed instead of
overwritten; on a conflict it re-reads and tries again, up to three times.

Errors::

    HTTP 401 / 403                          -> TransportAuthError (the service policy lacks rights)
    HTTP 404                                -> ConfigError (no such device or module)
    HTTP 412 three times, 429, 5xx, network -> TransportError (retry later)
    a malformed service connection string   -> ConfigError
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification, Twin, TwinProperties
from msrest.exceptions import ClientRequestError, HttpOperationError

from gondola.errors import ConfigError, GondolaError, TransportAuthError, TransportError

__all__ = ["IotHubTwinRegistry"]

log = logging.getLogger(__name__)

_ATTEMPTS = 3


def _clean(props: Mapping[str, Any] | None) -> dict:
    """Twin properties without ``$metadata`` (timestamps per key); ``$version`` stays."""
    return {k: v for k, v in (props or {}).items() if k != "$metadata"}


def _status(exc: HttpOperationError) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _translate(exc: Exception, doing: str) -> GondolaError:
    if isinstance(exc, HttpOperationError):
        status = _status(exc)
        if status in (401, 403):
            return TransportAuthError(f"IoT Hub refused {doing}: HTTP {status}")
        if status == 404:
            return ConfigError(f"IoT Hub has no such device or module ({doing}): HTTP 404")
        return TransportError(f"IoT Hub failed {doing}: HTTP {status}")
    if isinstance(exc, ClientRequestError):
        return TransportError(f"IoT Hub unreachable while {doing}: {type(exc).__name__}")
    return TransportError(f"unexpected {type(exc).__name__} while {doing}: {exc}")


class IotHubTwinRegistry:
    """Read and write module twins through IoT Hub's service API (HTTPS)."""

    def __init__(self, registry: Any):
        self._registry = registry

    @classmethod
    def from_connection_string(cls, connection_string: str) -> "IotHubTwinRegistry":
        """With an IoT Hub *service* connection string (a shared access policy with
        ``registryRead`` + ``registryWrite``, e.g. ``registryReadWrite``), from Key Vault.

        Raises:
            ConfigError: the connection string is malformed.
        """
        try:
            return cls(IoTHubRegistryManager.from_connection_string(connection_string))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"bad IoT Hub service connection string: {type(exc).__name__}") from exc

    @classmethod
    def from_token_credential(cls, hostname: str, credential: Any) -> "IotHubTwinRegistry":
        """With an Entra ID token credential (a managed identity: no secret at all); the
        identity needs the "IoT Hub Twin Contributor" role on the hub ``hostname``."""
        return cls(IoTHubRegistryManager.from_token_credential(hostname, credential))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "IotHubTwinRegistry":
        """From ``GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING``.

        Raises:
            ConfigError: the setting is missing or malformed.
        """
        env = os.environ if env is None else env
        from gondola.secrets import secret_text

        conn = secret_text("iothub-service-connection-string", env)
        if not conn:
            raise ConfigError("rollout to IoT Hub needs GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING")
        return cls.from_connection_string(conn)

    def get_twin(self, device_id: str, module_id: str) -> dict:
        """``{"desired": {..., "$version": n}, "reported": {..., "$version": m}}``.

        Raises:
            ConfigError: no such device or module.
            TransportAuthError, TransportError: see the module docstring.
        """
        twin = self._get(device_id, module_id)
        return {"desired": _clean(twin.properties.desired), "reported": _clean(twin.properties.reported)}

    def set_desired(self, device_id: str, module_id: str, desired: Mapping[str, Any]) -> int:
        """Replace the module's desired properties; return the new desired ``$version``.

        Raises:
            ConfigError: no such device or module.
            TransportAuthError, TransportError: see the module docstring.
        """
        last: Exception | None = None
        for attempt in range(_ATTEMPTS):
            twin = self._get(device_id, module_id)
            current = _clean(twin.properties.desired)
            patch: dict[str, Any] = {k: None for k in current if not k.startswith("$") and k not in desired}
            patch.update(desired)
            try:
                updated = self._registry.update_module_twin(
                    device_id, module_id, Twin(properties=TwinProperties(desired=patch)), etag=twin.etag
                )
            except HttpOperationError as exc:
                if _status(exc) == 412:  # someone else wrote the twin since we read it
                    log.info("twin %s/%s changed concurrently (attempt %d)", device_id, module_id, attempt + 1)
                    last = exc
                    continue
                raise _translate(exc, f"updating the twin of {device_id}/{module_id}") from exc
            except Exception as exc:  # noqa: BLE001 - translated at the boundary
                raise _translate(exc, f"updating the twin of {device_id}/{module_id}") from exc
            return int(updated.properties.desired["$version"])
        raise TransportError(f"twin {device_id}/{module_id} kept changing; gave up after {_ATTEMPTS} tries") from last

    def modules(self, module_id: str, *, condition: str | None = None, tags: Mapping[str, str] | None = None,
                page_size: int = 100) -> list[str]:
        """Device ids that run ``module_id`` (optionally ``AND <condition>`` on the module twin,
        e.g. ``"tags.ring = 'canary'"``, or ``tags={"ring": "canary"}`` which builds it), for
        rollout in rings.

        Raises:
            ConfigError: ``module_id`` or a tag holds a quote.
            TransportAuthError, TransportError: see the module docstring.
        """
        if any(not str(k).isidentifier() for k in (tags or {})):
            raise ConfigError(f"tag names must be identifiers: {sorted(tags or {})}")
        for text in (module_id, *(tags or {}).values()):
            if "'" in str(text) or "\\" in str(text):
                raise ConfigError(f"{text!r} cannot be quoted in an IoT Hub query")
        query = f"SELECT * FROM devices.modules WHERE moduleId = '{module_id}'"
        for key, value in sorted((tags or {}).items()):
            query += f" AND tags.{key} = '{value}'"
        if condition:
            query += f" AND {condition}"
        devices: list[str] = []
        token = None
        while True:
            try:
                result = self._registry.query_iot_hub(QuerySpecification(query=query), token, page_size)
            except Exception as exc:  # noqa: BLE001
                raise _translate(exc, "querying module twins") from exc
            devices += [item.device_id for item in result.items]
            token = result.continuation_token
            if not token:
                return sorted(devices)

    def get_tags(self, device_id: str, module_id: str) -> dict:
        """The module twin's tags. Raises: as :meth:`get_twin`."""
        return dict(self._get(device_id, module_id).tags or {})

    def set_tags(self, device_id: str, module_id: str, tags: Mapping[str, Any]) -> None:
        """Merge ``tags`` into the module twin (``None`` deletes a tag): a twin patch of tags only,
        with the twin's ETag, retried on a concurrent write as :meth:`set_desired` is.

        Raises:
            ConfigError: no such device or module.
            TransportAuthError, TransportError: see the module docstring.
        """
        self._patch_tags(lambda: self._get(device_id, module_id),
                         lambda tw, etag: self._registry.update_module_twin(device_id, module_id, tw, etag=etag),
                         tags, f"{device_id}/{module_id}")

    def get_device_tags(self, device_id: str) -> dict:
        """The device twin's tags (what IoT Edge deployments' ``targetCondition`` reads).
        Raises: as :meth:`get_twin`."""
        return dict(self._get_device(device_id).tags or {})

    def set_device_tags(self, device_id: str, tags: Mapping[str, Any]) -> None:
        """Merge ``tags`` into the *device* twin (``None`` deletes a tag), with its ETag, retried
        on a concurrent write. Layered IoT Edge deployments select gateways by device-twin tags
        (``tags.ring='canary'``), model rollouts by module-twin tags: :func:`cloud.rollout.tag_ring`
        writes both so the two rings never disagree.

        Raises:
            ConfigError: no such device.
            TransportAuthError, TransportError: see the module docstring.
        """
        self._patch_tags(lambda: self._get_device(device_id),
                         lambda tw, etag: self._registry.update_twin(device_id, tw, etag=etag), tags, device_id)

    def _patch_tags(self, read, update, tags: Mapping[str, Any], what: str) -> None:
        """A tags-only twin patch with the twin's ETag, retried when another writer got there first."""
        last: Exception | None = None
        for _ in range(_ATTEMPTS):
            twin = read()
            try:
                update(Twin(tags=dict(tags)), twin.etag)
                return
            except HttpOperationError as exc:
                if _status(exc) == 412:
                    last = exc
                    continue
                raise _translate(exc, f"tagging {what}") from exc
            except Exception as exc:  # noqa: BLE001 - translated at the boundary
                raise _translate(exc, f"tagging {what}") from exc
        raise TransportError(f"twin {what} kept changing; gave up after {_ATTEMPTS} tries") from last

    def _get_device(self, device_id: str) -> Any:
        try:
            return self._registry.get_twin(device_id)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"reading the twin of {device_id}") from exc

    def _get(self, device_id: str, module_id: str) -> Any:
        try:
            return self._registry.get_module_twin(device_id, module_id)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"reading the twin of {device_id}/{module_id}") from exc

    def close(self) -> None:
        """Close the SDK's AMQP client (it would otherwise be closed at interpreter exit)."""
        amqp = getattr(self._registry, "amqp_svc_client", None)
        if amqp is not None:
            try:
                amqp.disconnect_sync()
            except Exception as exc:  # noqa: BLE001 - closing never raises
                log.warning("IoT Hub AMQP client close failed: %s", type(exc).__name__)
            self._registry.amqp_svc_client = None

    def __enter__(self) -> "IotHubTwinRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

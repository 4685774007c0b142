"""Gondola's one exception tree.

Every vendor exception (paho, azure-*, sqlite3, deltalake) is translated at the adapter
boundary into one of these, so callers handle a handful of cases:

    GondolaError
    ├── ConfigError        a setting is missing or invalid (fix the config, do not retry)
    ├── ContractError      a payload breaks the event contract (quarantine it, do not retry)
    ├── TransportError     the hub / broker did not accept a message (retry with backoff)
    │   └── TransportAuthError  credentials were refused (retrying will not help)
    ├── StorageError       the buffer or lake could not read or write
    │   └── BufferFullError     the buffer's byte cap is reached and nothing may be evicted
    └── ModelError         a model file failed to download, verify, load or smoke-test
"""

from __future__ import annotations

__all__ = [
    "GondolaError",
    "ConfigError",
    "ContractError",
    "TransportError",
    "TransportAuthError",
    "StorageError",
    "BufferFullError",
    "ModelError",
]


class GondolaError(Exception):
    """Base of every error Gondola raises on purpose."""


class ConfigError(GondolaError):
    """A setting is missing or invalid."""


class ContractError(GondolaError):
    """A payload does not follow the event contract.

    ``reason`` is a short machine-friendly code (``bad_json``, ``missing_field``, ...),
    ``detail`` the human sentence; quarantine tables store both.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransportError(GondolaError):
    """The hub or broker did not accept a message; the caller may retry."""


class TransportAuthError(TransportError):
    """The hub refused our credentials; retrying with the same ones will not help."""


class StorageError(GondolaError):
    """A buffer or lake read or write failed."""


class BufferFullError(StorageError):
    """The buffer reached its byte cap and the event is of a kind that is never evicted."""


class ModelError(GondolaError):
    """A model could not be downloaded, verified, loaded or smoke-tested."""

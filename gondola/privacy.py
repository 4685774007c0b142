"""Personal data handling shared by the gateway and the cloud.

Loyalty ids are personal data. The gateway replaces them with a keyed hash (HMAC-SHA256,
truncated to 128 bits, hex) before an event is stored, so the clear id never reaches the
buffer, the uplink or the lake. The key is a secret per retail chain, read from the
environment (``GONDOLA_PSEUDONYM_KEY``) or a secret store, never from the repository.
Same key, same id -> same pseudonym, so analysts can still count repeat shoppers.
"""

from __future__ import annotations

import hashlib
import hmac

from gondola.errors import ConfigError

__all__ = ["pseudonymize", "check_key"]

_MIN_KEY_BYTES = 16


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is long enough to be a real secret.

    Raises:
        ConfigError: the key is shorter than 16 bytes.
    """
    if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY_BYTES:
        raise ConfigError(f"pseudonymization key must be at least {_MIN_KEY_BYTES} bytes")
    return bytes(key)


def pseudonymize(value: str, key: bytes) -> str:
    """Keyed, irreversible pseudonym of ``value``: 32 hex characters."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]

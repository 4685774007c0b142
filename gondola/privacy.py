"""Personal data handling shared by the gateway and the cloud.

Loyalty ids are personal data. The gateway replaces them with a keyed hash (HMAC-SHA256,
truncated to 128 bits, hex) before an event is stored, so the clear id never reaches the
buffer, the uplink or the lake. The key is a secret per retail chain, read from the secret
store (``gondola.secrets``: environment, a secrets folder or Azure Key Vault), never from the
repository. Same key, same id -> same pseudonym, so analysts can still count repeat shoppers.

**Versioned keys (rotation).** A key ring holds key versions 1..n, oldest first. The pseudonym
under version 1 is ``HMAC(k1, id)``, 32 hex characters (the original form, unprefixed); under
version n > 1 it is ``"v<n>:" + HMAC(kn, pseudonym under n-1)``. Rotating to a new key therefore
never needs the clear id: the cloud, holding the new key, re-keys every stored pseudonym forward
(``rekey``; ``gondola privacy rekey``), so a customer's history still joins with the events the
gateways pseudonymize under the new version. A leaked old key alone no longer links a clear id
to a current pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from gondola.errors import ConfigError

__all__ = ["pseudonymize", "check_key", "KeyRing", "rekey", "pid_version"]

_MIN_KEY_BYTES = 16
_VERSIONED = re.compile(r"^v([0-9]{1,6}):([0-9a-f]{32})$")


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is long enough to be a real secret.

    Raises:
        ConfigError: the key is shorter than 16 bytes.
    """
    if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY_BYTES:
        raise ConfigError(f"pseudonymization key must be at least {_MIN_KEY_BYTES} bytes")
    return bytes(key)


def _h(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class KeyRing:
    """Pseudonymization keys by version (index 0 is version 1); the last is current."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("a pseudonymization key ring needs at least one key")
        for k in self.keys:
            check_key(k)

    @property
    def version(self) -> int:
        return len(self.keys)

    @classmethod
    def parse(cls, material: bytes) -> "KeyRing":
        """Keys from secret material: one key per line, oldest first (one line: one key).

        Raises:
            ConfigError: no key, or a key shorter than 16 bytes.
        """
        lines = [line.strip() for line in bytes(material).splitlines()]
        return cls(tuple(line for line in lines if line))


def pseudonymize(value: str, key: bytes | KeyRing) -> str:
    """Keyed, irreversible pseudonym of ``value`` under ``key`` (one key = version 1) or a ring."""
    ring = key if isinstance(key, KeyRing) else None
    pid = _h(ring.keys[0] if ring else key, value)
    return rekey(pid, ring) if ring and ring.version > 1 else pid


def pid_version(pid: str) -> int:
    """The key version a pseudonym was made under (1 for the unprefixed form).

    Raises:
        ValueError: ``pid`` is not a pseudonym.
    """
    m = _VERSIONED.match(pid)
    if m:
        return int(m.group(1))
    if re.fullmatch(r"[0-9a-f]{32}", pid):
        return 1
    raise ValueError("not a pseudonym")


def rekey(pid: str, ring: KeyRing) -> str:
    """``pid`` carried forward to the ring's current version (unchanged when already there).

    Raises:
        ValueError: ``pid`` is not a pseudonym, or was made under a version the ring lacks.
    """
    version = pid_version(pid)
    if version > ring.version:
        raise ValueError(f"pseudonym of key version {version}, ring has {ring.version}")
    value = pid if version == 1 else _VERSIONED.match(pid).group(2)
    for v in range(version + 1, ring.version + 1):
        value = _h(ring.keys[v - 1], value)
    return value if ring.version == 1 else f"v{ring.version}:{value}"

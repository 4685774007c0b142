"""Secrets from one provider interface: environment, a secrets folder, or Azure Key Vault.

A secret has a name like ``pseudonym-key``, ``model-key`` or ``iothub-connection-string``.
``SecretStore.get(name)`` returns its bytes or ``None``. Implementations:

* ``EnvSecrets``: ``GONDOLA_<NAME>`` with dashes as underscores (``GONDOLA_PSEUDONYM_KEY``);
* ``DirSecrets``: a file per secret in a folder (``/run/secrets/pseudonym-key``: an IoT Edge
  bind mount, a Kubernetes secret volume);
* ``KeyVaultSecrets`` (``gondola.azure.keyvault``): Azure Key Vault through ``azure-keyvault-secrets``
  with ``DefaultAzureCredential`` (managed identity in Azure, developer login locally).

``secret_store_from_env`` picks by ``GONDOLA_SECRETS`` = ``env`` (default), ``dir:PATH`` or
``keyvault:https://<vault>.vault.azure.net``; the environment is consulted first in every case,
so a developer can override one secret. Values are never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Protocol

from gondola.errors import ConfigError

__all__ = ["SecretStore", "EnvSecrets", "DirSecrets", "ChainSecrets", "secret_store_from_env", "env_name", "secret_text"]


class SecretStore(Protocol):
    def get(self, name: str) -> bytes | None:
        """The secret's value, or None when the store does not hold it.

        Raises:
            ConfigError: the store cannot be reached or refuses access.
        """


def env_name(name: str) -> str:
    """``pseudonym-key`` -> ``GONDOLA_PSEUDONYM_KEY``."""
    return "GONDOLA_" + name.upper().replace("-", "_")


class EnvSecrets:
    def __init__(self, env: Mapping[str, str] | None = None):
        self._env = os.environ if env is None else env

    def get(self, name: str) -> bytes | None:
        value = self._env.get(env_name(name))
        return value.encode() if value else None


class DirSecrets:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(f"secrets folder {self.folder} does not exist")

    def get(self, name: str) -> bytes | None:
        if "/" in name or name.startswith("."):
            raise ConfigError(f"bad secret name {name!r}")
        path = self.folder / name
        try:
            return path.read_bytes().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read secret {name}: {exc.strerror}") from None


class ChainSecrets:
    """The first store that holds the secret wins."""

    def __init__(self, *stores: SecretStore):
        self.stores = stores

    def get(self, name: str) -> bytes | None:
        for store in self.stores:
            value = store.get(name)
            if value is not None:
                return value
        return None


def secret_store_from_env(env: Mapping[str, str] | None = None) -> SecretStore:
    """The store ``GONDOLA_SECRETS`` names, behind the environment (module docstring).

    Raises:
        ConfigError: an unknown ``GONDOLA_SECRETS`` value, or a missing secrets folder.
    """
    env = os.environ if env is None else env
    spec = (env.get("GONDOLA_SECRETS") or "env").strip()
    if spec == "env":
        return EnvSecrets(env)
    if spec.startswith("dir:"):
        return ChainSecrets(EnvSecrets(env), DirSecrets(spec[4:]))
    if spec.startswith("keyvault:"):
        from gondola.azure.keyvault import KeyVaultSecrets

        return ChainSecrets(EnvSecrets(env), KeyVaultSecrets(spec[len("keyvault:"):]))
    raise ConfigError(f"GONDOLA_SECRETS={spec!r}: use env, dir:PATH or keyvault:https://<vault>.vault.azure.net")


def secret_text(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A text secret (a connection string): ``GONDOLA_<NAME>`` if set, else the configured store.

    Raises:
        ConfigError: from the store.
    """
    env = os.environ if env is None else env
    value = env.get(env_name(name))
    if value:
        return value
    raw = secret_store_from_env(env).get(name)
    return raw.decode() if raw is not None else None

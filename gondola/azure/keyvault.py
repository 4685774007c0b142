"""Azure Key Vault adapter for ``gondola.secrets`` (the only module importing the Key Vault SDK).

Secret names are Gondola's (``pseudonym-key``): Key Vault allows letters, digits and dashes,
so they map one to one. The credential is ``DefaultAzureCredential`` (a managed identity on
Azure, the developer's login locally) unless one is passed. SDK errors become ``ConfigError``.
"""

from __future__ import annotations

__all__ = ["KeyVaultSecrets"]


class KeyVaultSecrets:
    def __init__(self, vault_url: str, credential=None, client=None):
        from gondola.errors import ConfigError

        if client is None:
            if not vault_url.startswith("https://"):
                raise ConfigError(f"Key Vault URL must be https://<vault>.vault.azure.net, got {vault_url!r}")
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient

            client = SecretClient(vault_url=vault_url, credential=credential or DefaultAzureCredential())
        self._client = client
        self.vault_url = vault_url

    def get(self, name: str) -> bytes | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        from gondola.errors import ConfigError

        try:
            secret = self._client.get_secret(name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            # the message names the vault and the secret, never its value
            raise ConfigError(f"Key Vault {self.vault_url}: cannot read secret {name}: {type(exc).__name__}") from None
        return secret.value.encode() if secret.value else None

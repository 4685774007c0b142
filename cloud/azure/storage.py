"""``deltalake`` storage options for ADLS Gen2 and for Azurite (the local blob emulator).

``deltalake`` reaches Azure through its own Rust object store, configured by a dict of
``storage_options``; nothing here imports an Azure SDK. Table URIs are
``abfss://<filesystem>@<account>.dfs.core.windows.net/<path>`` in production and
``az://<container>/<path>`` on Azurite.

Azurite's account name and key below are the public, documented development credentials that
every Azurite install uses; they are not a secret and open nothing outside a local emulator.
"""

from __future__ import annotations

import os
from typing import Mapping

from gondola.errors import ConfigError

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "azurite_storage_options",
    "azurite_connection_string",
    "adls_storage_options",
    "adls_table_uri",
]

#: Azurite's built-in development account (public, the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
#: Azurite's built-in development key (public, documented with Azurite; not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_storage_options(blob_endpoint: str) -> dict[str, str]:
    """Options for ``az://<container>/<path>`` tables on an Azurite blob endpoint.

    ``blob_endpoint`` is the account URL, e.g. ``http://127.0.0.1:10000/devstoreaccount1``.
    The object store's own ``use_emulator`` switch ignores a custom port (it reads only
    ``AZURITE_BLOB_STORAGE_URL``), so the endpoint is given explicitly, with plain HTTP allowed.
    """
    return {
        "account_name": AZURITE_ACCOUNT,
        "account_key": AZURITE_KEY,
        "endpoint": blob_endpoint.rstrip("/"),
        "allow_http": "true",
    }


def azurite_connection_string(blob_endpoint: str) -> str:
    """A storage connection string for the Azure SDKs (blob, checkpoint store) on Azurite."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={blob_endpoint.rstrip('/')};"
    )


def adls_storage_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Options for ``abfss://`` tables on ADLS Gen2, from settings (see docs/azure.md).

    ``GONDOLA_ADLS_ACCOUNT`` names the storage account. Credentials are never in settings
    files: with ``AZURE_CLIENT_ID`` + ``AZURE_TENANT_ID`` + ``AZURE_CLIENT_SECRET`` in the
    environment (a service principal, the secret injected from Key Vault) they are passed on;
    otherwise the object store uses the managed identity of the VM / container / Databricks
    cluster it runs on.

    Raises:
        ConfigError: ``GONDOLA_ADLS_ACCOUNT`` is missing.
    """
    env = os.environ if env is None else env
    account = env.get("GONDOLA_ADLS_ACCOUNT")
    if not account:
        raise ConfigError("storage=adls needs GONDOLA_ADLS_ACCOUNT (the storage account name)")
    options = {"account_name": account}
    principal = [env.get(k) for k in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")]
    if all(principal):
        options |= {"client_id": principal[0], "tenant_id": principal[1], "client_secret": principal[2]}
    elif env.get("AZURE_CLIENT_ID"):
        # A user-assigned managed identity is picked by its client id.
        options |= {"client_id": env["AZURE_CLIENT_ID"]}
    return options


def adls_table_uri(account: str, filesystem: str, path: str) -> str:
    """``abfss://<filesystem>@<account>.dfs.core.windows.net/<path>``."""
    return f"abfss://{filesystem}@{account}.dfs.core.windows.net/{path.strip('/')}"

"""``BlobModelStore``: model packages in an Azure Blob container, handed to gateways as
read-only SAS URLs (``cloud.rollout.ModelStore``).

Each version goes to ``<prefix>/<version>/<file name>``. The URLs carry a SAS token that can only
read that one blob and expires after ``sas_hours`` (default 7 days: long enough for a store that
is offline over a weekend to fetch it when it comes back; a later rollout writes fresh URLs).
The gateway logs and reports these URLs without their query string.

Signing SAS tokens needs the account key (``from_connection_string`` takes it from there);
with Entra ID credentials a user-delegation key would be used instead, not done here.

Errors: ``TransportError`` when the upload fails, ``ConfigError`` when no account key is known.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobSasPermissions, ContainerClient, ContentSettings, generate_blob_sas

from gondola.errors import ConfigError, TransportError

__all__ = ["BlobModelStore"]


class BlobModelStore:
    def __init__(self, container: ContainerClient, *, prefix: str = "models", sas_hours: float = 24 * 7):
        self.container = container
        self.prefix = prefix.strip("/")
        self.sas_hours = sas_hours
        cred = container.credential
        self._account_key = getattr(cred, "account_key", None)
        if not self._account_key:
            raise ConfigError("BlobModelStore needs an account key to sign read-only SAS URLs")

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str, **kw) -> "BlobModelStore":
        """Raises: ConfigError for a malformed connection string."""
        try:
            client = ContainerClient.from_connection_string(connection_string, container)
        except ValueError as exc:
            raise ConfigError(f"bad storage connection string: {exc}") from None
        return cls(client, **kw)

    def put(self, version: str, model_path: Path, manifest_path: Path) -> tuple[str, str]:
        urls = []
        expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=self.sas_hours)
        for src, ctype in ((model_path, "application/octet-stream"), (manifest_path, "application/json")):
            name = f"{self.prefix}/{version}/{Path(src).name}"
            try:
                with open(src, "rb") as f:
                    self.container.upload_blob(name, f, overwrite=True,
                                               content_settings=ContentSettings(content_type=ctype))
            except AzureError as exc:
                raise TransportError(f"upload of {name} failed: {type(exc).__name__}") from exc
            sas = generate_blob_sas(self.container.account_name, self.container.container_name, name,
                                    account_key=self._account_key, permission=BlobSasPermissions(read=True),
                                    expiry=expiry)
            urls.append(f"{self.container.url}/{name}?{sas}")
        return urls[0], urls[1]

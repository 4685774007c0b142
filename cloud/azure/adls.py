"""``AdlsAdmin``: set up the lake's ADLS Gen2 file system, layer folders and POSIX ACLs.

Run once per environment by an operator (or the deployment pipeline) with an identity that is
"Storage Blob Data Owner" on the account. Lake jobs never call it; they only read and write
tables through ``deltalake`` (``cloud.azure.storage.adls_storage_options``).

Layout (one file system, ``lake`` by default)::

    /            owner rwx; engineers r-x; analysts --x (traverse only, to reach gold)
    /bronze      engineers rwx; writers rwx; analysts none      (raw, personal data pseudonymized)
    /silver      engineers rwx; writers rwx; analysts none      (typed, masked, quarantine)
    /gold        engineers rwx; writers rwx; analysts r-x       (facts, dimensions, features)

Each layer also gets the same entries as *default* ACLs, so every table folder and Parquet file
created later inherits them. ``mask::rwx`` keeps named entries effective. Groups and writers
are Microsoft Entra ID object ids (GUIDs): the data engineers' group, the analysts' group, and
the managed identities of the ingest / transform jobs ("writers").

Errors::

    azure.core ClientAuthenticationError, HttpResponseError, ServiceRequestError -> StorageError
    a group or writer that is not an object id                                   -> ConfigError
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.filedatalake import DataLakeServiceClient

from gondola.errors import ConfigError, StorageError

__all__ = ["AdlsAdmin", "LakeAccess", "LAYERS", "layer_acls"]

#: The lake's layers, each a top-level folder of the file system.
LAYERS = ("bronze", "silver", "gold")
# Layers analysts may read; everything else holds raw or unreviewed data.
_ANALYST_LAYERS = frozenset({"gold"})


@dataclass(frozen=True)
class LakeAccess:
    """Who may do what in the lake (Entra ID object ids)."""

    engineers_group: str
    analysts_group: str
    writers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for role, oid in [("engineers_group", self.engineers_group), ("analysts_group", self.analysts_group)] + [
            ("writers", w) for w in self.writers
        ]:
            try:
                uuid.UUID(oid)
            except (ValueError, TypeError, AttributeError):
                raise ConfigError(f"LakeAccess.{role}: {oid!r} is not an Entra ID object id (GUID)") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "LakeAccess":
        """``GONDOLA_ADLS_ENGINEERS_GROUP``, ``GONDOLA_ADLS_ANALYSTS_GROUP``, ``GONDOLA_ADLS_WRITERS``
        (comma-separated object ids).

        Raises:
            ConfigError: a group is missing or not an object id.
        """
        missing = [k for k in ("GONDOLA_ADLS_ENGINEERS_GROUP", "GONDOLA_ADLS_ANALYSTS_GROUP") if not env.get(k)]
        if missing:
            raise ConfigError(f"ADLS setup needs {', '.join(missing)}")
        writers = tuple(w.strip() for w in env.get("GONDOLA_ADLS_WRITERS", "").split(",") if w.strip())
        return cls(env["GONDOLA_ADLS_ENGINEERS_GROUP"], env["GONDOLA_ADLS_ANALYSTS_GROUP"], writers)


def _with_defaults(entries: list[str]) -> str:
    return ",".join(entries + [f"default:{e}" for e in entries])


def layer_acls(access: LakeAccess) -> dict[str, str]:
    """The ``x-ms-acl`` value for the root (``"/"``) and each layer folder."""
    acls = {
        "/": ",".join(
            [
                "user::rwx",
                "group::r-x",
                "other::---",
                f"group:{access.engineers_group}:r-x",
                f"group:{access.analysts_group}:--x",
                *[f"user:{w}:--x" for w in access.writers],
                "mask::r-x",
            ]
        )
    }
    for layer in LAYERS:
        entries = [
            "user::rwx",
            "group::r-x",
            "other::---",
            f"group:{access.engineers_group}:rwx",
            *[f"user:{w}:rwx" for w in access.writers],
        ]
        if layer in _ANALYST_LAYERS:
            entries.append(f"group:{access.analysts_group}:r-x")
        entries.append("mask::rwx")
        acls[layer] = _with_defaults(entries)
    return acls


def _storage_error(exc: AzureError, doing: str) -> StorageError:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    return StorageError(f"ADLS refused {doing}: {type(exc).__name__} status={status} code={code}")


class AdlsAdmin:
    """Create and secure the lake's file system on an ADLS Gen2 account."""

    def __init__(self, service: Any):
        self._service = service

    @classmethod
    def from_account(cls, account: str, credential: Any, **client_kwargs: Any) -> "AdlsAdmin":
        """For ``https://<account>.dfs.core.windows.net``; ``credential`` is any credential the
        SDK accepts (an Entra ID token credential in production; ``client_kwargs`` such as
        ``transport`` go to ``DataLakeServiceClient``)."""
        url = f"https://{account}.dfs.core.windows.net"
        return cls(DataLakeServiceClient(url, credential=credential, **client_kwargs))

    def ensure_lake(
        self, access: LakeAccess, *, filesystem: str = "lake", apply_to_existing: bool = False
    ) -> dict[str, str]:
        """Create the file system and layer folders if missing and set their ACLs.

        Idempotent: safe to re-run after changing ``access``. With ``apply_to_existing`` the
        layer ACLs are also merged into everything already below each layer (recursive update).
        Returns the ACL set per path.

        Raises:
            StorageError: the account refused a call (permissions, network, throttling).
        """
        acls = layer_acls(access)
        fs = self._service.get_file_system_client(filesystem)
        try:
            try:
                fs.create_file_system()
            except ResourceExistsError:
                pass
            fs.get_directory_client("/").set_access_control(acl=acls["/"])
            for layer in LAYERS:
                directory = fs.create_directory(layer)
                directory.set_access_control(acl=acls[layer])
                if apply_to_existing:
                    result = directory.update_access_control_recursive(acl=acls[layer])
                    if result.counters.failure_count:
                        raise StorageError(
                            f"ACL update failed on {result.counters.failure_count} paths under /{layer}"
                        )
        except AzureError as exc:
            raise _storage_error(exc, f"setting up file system {filesystem!r}") from exc
        return acls

    def get_acl(self, filesystem: str, path: str) -> str:
        """The ACL of one path (``"/"`` for the root).

        Raises:
            StorageError: the account refused the call.
        """
        try:
            props = self._service.get_file_system_client(filesystem).get_directory_client(path).get_access_control()
        except AzureError as exc:
            raise _storage_error(exc, f"reading the ACL of {filesystem}/{path}") from exc
        return props["acl"]

    def close(self) -> None:
        self._service.close()

    def __enter__(self) -> "AdlsAdmin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


"""``AdlsAdmin``: set up the lake's ADLS Gen2 file system, layer folders and POSIX ACLs.

Run once per environment by an operator (or the deployment pipeline) with an identity that is
"Storage Blob Data Owner" on the account. Lake jobs never call it; they only read and write
tables through ``deltalake`` (``cloud.azure.storage.adls_storage_options``).

Zones (one file system, ``lake`` by default), the same table ``ZONES`` that
``cloud.meta.access`` applies as file permissions to a local lake::

    /            owner rwx; every role --x (traverse only); engineers r-x (list layers)
    /bronze      ingest rwx; engineers and writers r-x; analysts none   (raw; pseudonymized)
    /silver      engineers and writers rwx; ingest and analysts none    (typed, quarantine)
    /gold        engineers and writers rwx; analysts r-x                (facts, dimensions, features)
    /stream      engineers and writers rwx; analysts r-x                (windows, alerts, anomalies)
    /meta        engineers, writers and ingest rwx; analysts r-x        (run lineage)
    /models      engineers and writers rwx; analysts r-x                (model registry)

"ingest" are the managed identities of the ingest jobs (the only writers of bronze; a bronze
erasure runs with that identity), "writers" those of the transform, stream and training jobs.
Each layer also gets the same entries as *default* ACLs, so every table folder and Parquet file
created later inherits them. ``mask::rwx`` keeps named entries effective. Groups and identities
are Microsoft Entra ID object ids (GUIDs).

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

__all__ = ["AdlsAdmin", "LakeAccess", "LAYERS", "ZONES", "layer_acls", "default_credential"]

#: Per layer, what each role may do (absent: nothing). The one statement of the lake's zones.
ZONES: dict[str, dict[str, str]] = {
    "bronze": {"ingest": "rwx", "writers": "r-x", "engineers": "r-x"},
    "silver": {"writers": "rwx", "engineers": "rwx"},
    "gold": {"writers": "rwx", "engineers": "rwx", "analysts": "r-x"},
    "stream": {"writers": "rwx", "engineers": "rwx", "analysts": "r-x"},
    "meta": {"ingest": "rwx", "writers": "rwx", "engineers": "rwx", "analysts": "r-x"},
    "models": {"writers": "rwx", "engineers": "rwx", "analysts": "r-x"},
}
#: The lake's layers, each a top-level folder of the file system.
LAYERS = tuple(ZONES)


@dataclass(frozen=True)
class LakeAccess:
    """Who may do what in the lake (Entra ID object ids)."""

    engineers_group: str
    analysts_group: str
    writers: tuple[str, ...] = field(default=())
    ingest: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for role, oid in [("engineers_group", self.engineers_group), ("analysts_group", self.analysts_group)] + [
            ("writers", w) for w in self.writers
        ] + [("ingest", i) for i in self.ingest]:
            try:
                uuid.UUID(oid)
            except (ValueError, TypeError, AttributeError):
                raise ConfigError(f"LakeAccess.{role}: {oid!r} is not an Entra ID object id (GUID)") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "LakeAccess":
        """``GONDOLA_ADLS_ENGINEERS_GROUP``, ``GONDOLA_ADLS_ANALYSTS_GROUP``, ``GONDOLA_ADLS_WRITERS``
        and ``GONDOLA_ADLS_INGEST`` (comma-separated object ids).

        Raises:
            ConfigError: a group is missing or not an object id.
        """
        missing = [k for k in ("GONDOLA_ADLS_ENGINEERS_GROUP", "GONDOLA_ADLS_ANALYSTS_GROUP") if not env.get(k)]
        if missing:
            raise ConfigError(f"ADLS setup needs {', '.join(missing)}")
        def ids(name: str) -> tuple[str, ...]:
            return tuple(w.strip() for w in env.get(name, "").split(",") if w.strip())

        return cls(env["GONDOLA_ADLS_ENGINEERS_GROUP"], env["GONDOLA_ADLS_ANALYSTS_GROUP"],
                   ids("GONDOLA_ADLS_WRITERS"), ids("GONDOLA_ADLS_INGEST"))


def _with_defaults(entries: list[str]) -> str:
    return ",".join(entries + [f"default:{e}" for e in entries])


def layer_acls(access: LakeAccess) -> dict[str, str]:
    """The ``x-ms-acl`` value for the root (``"/"``) and each layer folder, from ``ZONES``."""
    principals = {
        "engineers": [f"group:{access.engineers_group}"],
        "analysts": [f"group:{access.analysts_group}"],
        "writers": [f"user:{w}" for w in access.writers],
        "ingest": [f"user:{i}" for i in access.ingest],
    }
    root = ["user::rwx", "group::r-x", "other::---", f"group:{access.engineers_group}:r-x",
            f"group:{access.analysts_group}:--x", *[f"{p}:--x" for role in ("writers", "ingest")
                                                    for p in principals[role]], "mask::r-x"]
    acls = {"/": ",".join(root)}
    for layer, roles in ZONES.items():
        entries = ["user::rwx", "group::r-x", "other::---"]
        for role, perm in roles.items():
            entries += [f"{p}:{perm}" for p in principals[role]]
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


def default_credential() -> Any:
    """``DefaultAzureCredential`` (managed identity, workload identity, environment, az login),
    built here so that only the Azure adapters import the SDK."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()

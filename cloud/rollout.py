"""Push a retrained model to store gateways: upload the package, then write each gateway's twin.

The gateway side is ``edge.model_manager`` (decision 0205): it follows the module twin's
desired property ``model`` = ``{"version", "url", "manifest_url", "sha256"}``. This module is
the cloud side of that contract::

    from cloud.rollout import FolderModelStore, publish_model, rollout_status
    store = FolderModelStore("out/models")            # or cloud.azure.models.BlobModelStore
    publish_model("out/model/stockout-int8.tflite", store=store, twins=LocalHub("out/hub.sqlite"),
                  device_ids=["gw-s001", "gw-s002"], key=signing_key_or_None)
    rollout_status(twins, ["gw-s001", "gw-s002"])     # what each gateway reports back

``twins`` is anything with ``get_twin(device_id, module_id)`` and
``set_desired(device_id, module_id, desired)``: the embedded hub (``gondola.hub.LocalHub``) or
``cloud.azure.twins.IotHubTwinRegistry``. Other desired properties of a twin are kept; only
``model`` is replaced. Which gateways get a model (a canary ring first) is the caller's choice:
``IotHubTwinRegistry.modules(module_id, condition="tags.ring = 'canary'")`` lists them.

Errors: ``ModelError`` when the package is inconsistent (sha256, size) or, with a key, its
signature does not verify: nothing is uploaded and no twin is written. Twin errors as the twin
store raises them (``TransportError``, ``ConfigError``), after the twins before were written.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterable, Protocol

from gondola.errors import ModelError

__all__ = ["ModelStore", "FolderModelStore", "publish_model", "rollout_status", "DEFAULT_MODULE_ID"]

log = logging.getLogger(__name__)

#: The gateway's IoT Edge module (as ``edge.transport.DEFAULT_MODULE_ID``; cloud does not import edge).
DEFAULT_MODULE_ID = "gondola-gateway"


class ModelStore(Protocol):
    def put(self, version: str, model_path: Path, manifest_path: Path) -> tuple[str, str]:
        """Store both files under ``version``; return ``(model_url, manifest_url)`` a gateway
        can download (with whatever credentials the URLs must carry)."""
        ...


class FolderModelStore:
    """Models in a folder, fetched as ``file://`` URLs: the embedded hub's store (one machine,
    or a share every gateway mounts)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put(self, version: str, model_path: Path, manifest_path: Path) -> tuple[str, str]:
        dest = self.root / version
        dest.mkdir(parents=True, exist_ok=True)
        urls = []
        for src in (model_path, manifest_path):
            target = dest / src.name
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(target)
            urls.append(target.resolve().as_uri())
        return urls[0], urls[1]


def _check_package(model_path: Path, key: bytes | None) -> tuple[dict[str, Any], Path]:
    from models.package import file_sha256, manifest_path_for, read_manifest, verify_model

    if not model_path.is_file():
        raise ModelError(f"model file {model_path} does not exist")
    manifest_path = manifest_path_for(model_path)
    manifest = read_manifest(manifest_path)
    if key is not None:
        verify_model(model_path, manifest, key)  # size, sha256 and signature
    elif file_sha256(model_path) != manifest.get("sha256"):
        raise ModelError(f"{model_path.name}: sha256 differs from its manifest")
    if not isinstance(manifest.get("version"), str) or not manifest["version"]:
        raise ModelError(f"{manifest_path.name} has no version")
    if manifest.get("file") not in (None, model_path.name):
        raise ModelError(f"{manifest_path.name} describes {manifest.get('file')!r}, not {model_path.name!r}")
    return manifest, manifest_path


def publish_model(model_path: str | Path, *, store: ModelStore, twins, device_ids: Iterable[str],
                  module_id: str = DEFAULT_MODULE_ID, key: bytes | None = None) -> dict[str, Any]:
    """Upload a model package and point each gateway's twin at it; return what was done.

    With ``key`` the package must verify before anything leaves (the gateways verify again).

    Raises:
        ModelError: the package is inconsistent or does not verify (nothing was written).
        TransportError, ConfigError: from the twin store, for the first twin that failed.
    """
    model_path = Path(model_path)
    manifest, manifest_path = _check_package(model_path, key)
    version = manifest["version"]
    url, manifest_url = store.put(version, model_path, manifest_path)
    spec = {"version": version, "url": url, "manifest_url": manifest_url, "sha256": manifest["sha256"]}
    written = []
    for device_id in device_ids:
        desired = {k: v for k, v in twins.get_twin(device_id, module_id)["desired"].items() if not k.startswith("$")}
        desired["model"] = spec
        twins.set_desired(device_id, module_id, desired)
        written.append(device_id)
        log.info("rollout: %s asked to run model %s", device_id, version)
    return {"version": version, "sha256": manifest["sha256"], "signed": "signature" in manifest,
            "devices": written}


def rollout_status(twins, device_ids: Iterable[str], module_id: str = DEFAULT_MODULE_ID) -> dict[str, Any]:
    """What each gateway reports about the model it was asked to run.

    Returns ``{"devices": {device_id: {"desired", "version", "status", "error"}}, "by_status":
    {status: count}}``; ``status`` is the gateway's (``active``, ``failed``, ``rolled_back``,
    ``downloading``) or ``pending`` while its report does not name the desired version yet.
    """
    devices: dict[str, dict] = {}
    for device_id in device_ids:
        twin = twins.get_twin(device_id, module_id)
        desired = (twin["desired"].get("model") or {}).get("version")
        reported = twin["reported"].get("model") or {}
        status = reported.get("status", "pending")
        if desired and desired not in (reported.get("version"), reported.get("desired")):
            status = "pending"
        devices[device_id] = {"desired": desired, "version": reported.get("version"), "status": status,
                              "error": reported.get("error")}
    by_status: dict[str, int] = {}
    for d in devices.values():
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    return {"devices": devices, "by_status": by_status}

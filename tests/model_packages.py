"""Model packages as the cloud publishes them, for the model manager and rollout tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from models.package import file_sha256, manifest_path_for, read_manifest, write_manifest
from models.runtime import DEFAULT_MODEL

#: The signing key the tests' gateways are configured with.
KEY = b"test-model-signing-key-0123456789"


def package(out: Path, version: str, *, key: bytes | None = KEY, threshold: float | None = None,
            body: bytes | None = None) -> dict:
    """The shipped int8 model (or ``body``) as ``out/stockout-<version>.tflite`` with a manifest
    naming ``version``, signed with ``key``; returns the twin's desired ``model`` for it (file
    URLs) plus ``path``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"stockout-{version}.tflite"
    if body is None:
        shutil.copyfile(DEFAULT_MODEL, path)
    else:
        path.write_bytes(body)
    fields = {k: v for k, v in read_manifest(manifest_path_for(DEFAULT_MODEL)).items()
              if k not in ("signature", "file", "sha256", "bytes")}
    fields["version"] = version
    if threshold is not None:
        fields["threshold"] = threshold
    write_manifest(path, fields, key=key)
    return {"version": version, "url": path.as_uri(), "sha256": file_sha256(path), "path": str(path)}


def package_dir(out: Path, version: str, *, key: bytes | None = KEY, threshold: float | None = None) -> Path:
    """A package folder as ``gondola train`` writes it (``stockout-int8.tflite`` + manifest; the
    shipped model's bytes) naming ``version`` (and ``threshold`` when given), for the registry."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "stockout-int8.tflite"
    shutil.copyfile(DEFAULT_MODEL, path)
    fields = {k: v for k, v in read_manifest(manifest_path_for(DEFAULT_MODEL)).items()
              if k not in ("signature", "file", "sha256", "bytes")}
    if threshold is not None:
        fields["threshold"] = threshold
    write_manifest(path, fields | {"version": version}, key=key)
    return out

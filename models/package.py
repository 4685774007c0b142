"""Model packages for rollout: model file + manifest (+ signature), and their verification.

A package is a model file ``NAME.tflite`` (or ``.onnx``) and ``NAME.manifest.json`` beside it::

    {"name": "stockout", "version": "2026-11-29T10-40-00Z-3f2a9c1b", "format": "tflite-int8",
     "file": "stockout-int8.tflite", "sha256": "...", "bytes": 12345,
     "features": [...FEATURES...], "encoding": "log1p-v1", "horizon_h": 2.0,
     "threshold": 0.41, "training": {"tables": {...table versions...}, "rows": ..., ...},
     "metrics": {...}, "signature": {"alg": "hmac-sha256" | "ed25519", "key_id": "...", "value": "hex"}}

The signature covers the canonical JSON of the manifest without its ``signature`` member (which
holds the file's sha256), so it covers the model bytes too. Two algorithms:

* ``hmac-sha256`` with a shared secret (standard library only);
* ``ed25519`` with the ``cryptography`` package, when installed: the gateway holds only the
  public key, so a stolen gateway cannot sign models.

Keys come from the caller (the CLI reads ``GONDOLA_MODEL_KEY``: an HMAC secret, or an Ed25519
private key in PEM; verification takes the secret or the public key). They are never written
to the repository or the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from gondola.errors import ModelError

__all__ = [
    "file_sha256",
    "manifest_path_for",
    "write_manifest",
    "read_manifest",
    "sign_manifest",
    "verify_model",
    "canonical_bytes",
]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path_for(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".manifest.json")


def canonical_bytes(manifest: dict[str, Any]) -> bytes:
    """What a signature covers: the manifest minus ``signature``, sorted keys, compact JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _is_pem(key: bytes) -> bool:
    return key.lstrip().startswith(b"-----BEGIN")


def sign_manifest(manifest: dict[str, Any], key: bytes, key_id: str = "default") -> dict[str, Any]:
    """Return the manifest with a ``signature``: Ed25519 when ``key`` is a PEM private key,
    else HMAC-SHA256 with ``key`` as the secret.

    Raises:
        ModelError: a PEM key that is not an Ed25519 private key, or PEM without ``cryptography``.
    """
    payload = canonical_bytes(manifest)
    if _is_pem(key):
        private = _load_pem_private(key)
        value, alg = private.sign(payload).hex(), "ed25519"
    else:
        if not key:
            raise ModelError("empty signing key")
        value, alg = hmac.new(key, payload, hashlib.sha256).hexdigest(), "hmac-sha256"
    return {**manifest, "signature": {"alg": alg, "key_id": key_id, "value": value}}


def _load_pem_private(key: bytes):
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:
        raise ModelError("Ed25519 keys need the 'cryptography' package") from None
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"cannot read the signing key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ModelError("signing key is not an Ed25519 private key")
    return private


def _verify_ed25519(public_pem: bytes, payload: bytes, signature_hex: str) -> bool:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise ModelError("Ed25519 signatures need the 'cryptography' package") from None
    try:
        public = load_pem_public_key(public_pem)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"cannot read the verification key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ModelError("verification key is not an Ed25519 public key")
    try:
        public.verify(bytes.fromhex(signature_hex), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_model(path: str | Path, manifest: dict[str, Any] | str | Path, key: bytes) -> dict[str, Any]:
    """Check a downloaded model against its manifest: size, sha256 and signature.

    ``key`` is the HMAC secret, or the Ed25519 public key in PEM. Returns the manifest.

    Raises:
        ModelError: the file is missing, its size or sha256 differs, the manifest is unsigned,
            the signature algorithm is unknown or does not match the key, or it does not verify.
    """
    if not isinstance(manifest, dict):
        manifest = read_manifest(manifest)
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if "bytes" in manifest and path.stat().st_size != int(manifest["bytes"]):
        raise ModelError(f"{path.name}: {path.stat().st_size} bytes, manifest says {manifest['bytes']}")
    digest = file_sha256(path)
    if not hmac.compare_digest(digest, str(manifest.get("sha256", ""))):
        raise ModelError(f"{path.name}: sha256 {digest[:12]}... does not match the manifest")
    sig = manifest.get("signature")
    if not isinstance(sig, dict) or "value" not in sig:
        raise ModelError(f"{path.name}: manifest is not signed")
    payload = canonical_bytes(manifest)
    alg = sig.get("alg")
    if alg == "hmac-sha256":
        if _is_pem(key):
            raise ModelError("manifest is HMAC-signed but an Ed25519 key was given")
        ok = hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).hexdigest(), str(sig["value"]))
    elif alg == "ed25519":
        if not _is_pem(key):
            raise ModelError("manifest is Ed25519-signed but no PEM public key was given")
        ok = _verify_ed25519(key, payload, str(sig["value"]))
    else:
        raise ModelError(f"unknown signature algorithm {alg!r}")
    if not ok:
        raise ModelError(f"{path.name}: manifest signature does not verify")
    return manifest


def write_manifest(model_path: str | Path, fields: dict[str, Any], key: bytes | None = None,
                   key_id: str = "default") -> dict[str, Any]:
    """Write ``NAME.manifest.json`` for a model file (sha256 and size filled in); sign it when a
    key is given. Returns the manifest."""
    model_path = Path(model_path)
    manifest = {
        **fields,
        "file": model_path.name,
        "sha256": file_sha256(model_path),
        "bytes": model_path.stat().st_size,
    }
    if key:
        manifest = sign_manifest(manifest, key, key_id)
    manifest_path_for(model_path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Raises: ModelError when the manifest is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"manifest {path} is not a JSON object")
    return data

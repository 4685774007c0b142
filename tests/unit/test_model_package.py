"""Model packages: manifest with sha256, HMAC and Ed25519 signatures, tamper detection."""

from __future__ import annotations

import json

import pytest

from gondola.errors import ModelError
from models.package import manifest_path_for, sign_manifest, verify_model, write_manifest


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "stockout-int8.tflite"
    p.write_bytes(b"TFL3" + bytes(range(200)))
    return p


def test_hmac_signed_manifest_verifies_and_detects_a_changed_model(model_file):
    m = write_manifest(model_file, {"version": "v1", "horizon_h": 2.0}, key=b"secret")
    assert json.loads(manifest_path_for(model_file).read_text()) == m
    assert verify_model(model_file, manifest_path_for(model_file), b"secret")["version"] == "v1"
    with pytest.raises(ModelError, match="signature"):
        verify_model(model_file, m, b"other secret")
    model_file.write_bytes(model_file.read_bytes()[:-1] + b"\xff")
    with pytest.raises(ModelError, match="sha256"):
        verify_model(model_file, m, b"secret")


def test_a_changed_manifest_field_breaks_the_signature(model_file):
    m = write_manifest(model_file, {"version": "v1", "threshold": 0.4}, key=b"secret")
    with pytest.raises(ModelError, match="signature"):
        verify_model(model_file, {**m, "threshold": 0.01}, b"secret")


def test_unsigned_manifest_is_refused(model_file):
    m = write_manifest(model_file, {"version": "v1"})
    with pytest.raises(ModelError, match="not signed"):
        verify_model(model_file, m, b"secret")
    with pytest.raises(ModelError, match="does not exist"):
        verify_model(model_file.with_name("missing.tflite"), m, b"secret")


def test_ed25519_signature_verifies_with_the_public_key_only(model_file):
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    m = write_manifest(model_file, {"version": "v2"}, key=private_pem, key_id="ring-1")
    assert m["signature"]["alg"] == "ed25519" and m["signature"]["key_id"] == "ring-1"
    assert verify_model(model_file, m, public_pem)["version"] == "v2"
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ModelError, match="does not verify"):
        verify_model(model_file, m, other)
    with pytest.raises(ModelError, match="Ed25519-signed"):
        verify_model(model_file, m, b"an hmac secret")
    hm = sign_manifest({k: v for k, v in m.items() if k != "signature"}, b"secret")
    with pytest.raises(ModelError, match="HMAC-signed"):
        verify_model(model_file, hm, public_pem)

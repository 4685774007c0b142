"""Versioned pseudonymization keys and the secret stores they come from."""

from __future__ import annotations

import pytest

from gondola.errors import ConfigError
from gondola.azure.keyvault import KeyVaultSecrets
from gondola.privacy import KeyRing, pid_version, pseudonymize, rekey
from gondola.secrets import ChainSecrets, DirSecrets, EnvSecrets, secret_store_from_env, secret_text

K1, K2, K3 = b"k1" * 10, b"second-key-2" * 2, b"third-key-333" * 2


def test_one_key_keeps_the_original_pseudonym_form():
    pid = pseudonymize("4000123", K1)
    assert len(pid) == 32 and int(pid, 16) >= 0 and pid_version(pid) == 1
    assert pseudonymize("4000123", KeyRing((K1,))) == pid
    assert pseudonymize("4000124", K1) != pid


def test_rotation_rekeys_old_pseudonyms_to_what_the_new_ring_gives_without_the_clear_id():
    ring2, ring3 = KeyRing((K1, K2)), KeyRing((K1, K2, K3))
    v1 = pseudonymize("4000123", K1)
    v2 = pseudonymize("4000123", ring2)
    assert v2.startswith("v2:") and pid_version(v2) == 2
    assert rekey(v1, ring2) == v2  # history joins with new events
    assert rekey(v2, ring2) == v2  # idempotent
    v3 = pseudonymize("4000123", ring3)
    assert rekey(v1, ring3) == rekey(v2, ring3) == v3
    assert v3 != v2 and v3[3:] != v1
    with pytest.raises(ValueError):
        rekey(v3, ring2)  # a newer pseudonym than the ring knows
    with pytest.raises(ValueError):
        pid_version("p07")


def test_key_ring_material_is_one_key_per_line_each_long_enough():
    ring = KeyRing.parse(K1 + b"\n" + K2 + b"\n\n")
    assert ring.keys == (K1, K2) and ring.version == 2
    with pytest.raises(ConfigError):
        KeyRing.parse(K1 + b"\nshort\n")
    with pytest.raises(ConfigError):
        KeyRing.parse(b"\n")


def test_secret_stores_env_folder_and_chain(tmp_path):
    env = {"GONDOLA_PSEUDONYM_KEY": "from-env-key-123456"}
    assert EnvSecrets(env).get("pseudonym-key") == b"from-env-key-123456"
    assert EnvSecrets(env).get("model-key") is None
    (tmp_path / "model-key").write_bytes(b"folder-secret\n")
    folder = DirSecrets(tmp_path)
    assert folder.get("model-key") == b"folder-secret" and folder.get("pseudonym-key") is None
    with pytest.raises(ConfigError):
        folder.get("../etc/passwd")
    chain = ChainSecrets(EnvSecrets(env), folder)
    assert chain.get("pseudonym-key") == b"from-env-key-123456" and chain.get("model-key") == b"folder-secret"
    store = secret_store_from_env({"GONDOLA_SECRETS": f"dir:{tmp_path}"})
    assert store.get("model-key") == b"folder-secret"
    assert secret_text("model-key", {"GONDOLA_SECRETS": f"dir:{tmp_path}"}) == "folder-secret"
    assert secret_text("model-key", {"GONDOLA_MODEL_KEY": "env-wins", "GONDOLA_SECRETS": f"dir:{tmp_path}"}) == "env-wins"
    with pytest.raises(ConfigError, match="does not exist"):
        secret_store_from_env({"GONDOLA_SECRETS": f"dir:{tmp_path / 'missing'}"})
    with pytest.raises(ConfigError, match="GONDOLA_SECRETS"):
        secret_store_from_env({"GONDOLA_SECRETS": "vault"})


class _FakeSecretClient:
    """The SecretClient surface the adapter uses: get_secret(name) -> object with .value."""

    def __init__(self, secrets, fail=None):
        self.secrets, self.fail, self.asked = secrets, fail, []

    def get_secret(self, name):
        from azure.core.exceptions import ResourceNotFoundError

        self.asked.append(name)
        if self.fail:
            raise self.fail
        if name not in self.secrets:
            raise ResourceNotFoundError(f"secret {name} not found")
        return type("KeyVaultSecret", (), {"value": self.secrets[name]})()


def test_key_vault_adapter_at_the_sdk_boundary():
    from azure.core.exceptions import ClientAuthenticationError
    from azure.keyvault.secrets import SecretClient

    client = _FakeSecretClient({"pseudonym-key": "kv-secret-value-123"})
    kv = KeyVaultSecrets("https://gondola.vault.azure.net", client=client)
    assert kv.get("pseudonym-key") == b"kv-secret-value-123"
    assert kv.get("model-key") is None
    assert client.asked == ["pseudonym-key", "model-key"]
    denied = KeyVaultSecrets("https://gondola.vault.azure.net",
                             client=_FakeSecretClient({}, fail=ClientAuthenticationError("no token")))
    with pytest.raises(ConfigError, match="cannot read secret pseudonym-key: ClientAuthenticationError") as err:
        denied.get("pseudonym-key")
    assert "kv-secret" not in str(err.value)
    # the real client is built lazily with DefaultAzureCredential; building it makes no request
    real = KeyVaultSecrets("https://gondola.vault.azure.net")
    assert isinstance(real._client, SecretClient) and real._client.vault_url == "https://gondola.vault.azure.net"
    with pytest.raises(ConfigError, match="https://"):
        KeyVaultSecrets("gondola.vault.azure.net")


def test_the_gateway_takes_a_key_ring_from_a_secrets_folder(tmp_path):
    from edge.wiring import EdgeSettings, resolve_pseudonym_key

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pseudonym-key").write_bytes(K1 + b"\n" + K2 + b"\n")
    settings = EdgeSettings(store_id="s001", data_dir=tmp_path / "data", mode="production")
    ring = resolve_pseudonym_key(settings, env={"GONDOLA_SECRETS": f"dir:{secrets}"})
    assert isinstance(ring, KeyRing) and ring.version == 2
    assert pseudonymize("4000123", ring) == rekey(pseudonymize("4000123", K1), ring)
    with pytest.raises(ConfigError, match="required in production"):
        resolve_pseudonym_key(settings, env={})

"""``cloud.azure.storage``: the settings that point ``deltalake`` at ADLS Gen2 or Azurite."""

from __future__ import annotations

import pytest

from cloud.azure.storage import (
    AZURITE_ACCOUNT,
    adls_storage_options,
    adls_table_uri,
    azurite_connection_string,
    azurite_storage_options,
)
from gondola.errors import ConfigError


def test_azure_azurite_options_name_the_endpoint_and_allow_plain_http():
    opts = azurite_storage_options("http://127.0.0.1:10123/devstoreaccount1/")
    assert opts["endpoint"] == "http://127.0.0.1:10123/devstoreaccount1"
    assert opts["account_name"] == AZURITE_ACCOUNT
    assert opts["allow_http"] == "true"
    assert "use_emulator" not in opts  # it would ignore the port


def test_azure_azurite_connection_string_points_blob_endpoint_at_the_emulator():
    cs = azurite_connection_string("http://127.0.0.1:10123/devstoreaccount1")
    assert "BlobEndpoint=http://127.0.0.1:10123/devstoreaccount1;" in cs
    assert "AccountName=devstoreaccount1;" in cs


def test_azure_adls_options_use_managed_identity_when_no_principal_is_set():
    assert adls_storage_options({"GONDOLA_ADLS_ACCOUNT": "gondolalake"}) == {"account_name": "gondolalake"}
    assert adls_storage_options({"GONDOLA_ADLS_ACCOUNT": "gondolalake", "AZURE_CLIENT_ID": "uami-id"}) == {
        "account_name": "gondolalake",
        "client_id": "uami-id",
    }


def test_azure_adls_options_pass_a_service_principal_from_the_environment():
    env = {
        "GONDOLA_ADLS_ACCOUNT": "gondolalake",
        "AZURE_CLIENT_ID": "app-id",
        "AZURE_TENANT_ID": "tenant-id",
        "AZURE_CLIENT_SECRET": "fake-secret-for-test",
    }
    assert adls_storage_options(env) == {
        "account_name": "gondolalake",
        "client_id": "app-id",
        "tenant_id": "tenant-id",
        "client_secret": "fake-secret-for-test",
    }


def test_azure_adls_options_without_account_are_a_config_error():
    with pytest.raises(ConfigError):
        adls_storage_options({})


def test_azure_adls_table_uri_is_abfss_on_the_dfs_endpoint():
    assert adls_table_uri("gondolalake", "lake", "/gold/hourly_sales/") == (
        "abfss://lake@gondolalake.dfs.core.windows.net/gold/hourly_sales"
    )

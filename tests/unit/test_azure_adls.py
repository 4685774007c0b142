"""``AdlsAdmin`` at the HTTP boundary: the real ``azure-storage-file-datalake`` client signs and
sends every request through a recording azure-core transport (``tests/azure_fakes.py``).

Azurite has no ADLS Gen2 directory or ACL API, so the requests themselves are the assertion:
method, host, path, query (``resource=directory``, ``action=setAccessControl``...) and the
``x-ms-acl`` header the service would apply.
"""

from __future__ import annotations

import urllib.parse

import pytest

from cloud.azure.adls import LAYERS, AdlsAdmin, LakeAccess, layer_acls
from gondola.errors import ConfigError, StorageError
from tests.azure_fakes import RecordingTransport

ENGINEERS = "11111111-1111-4111-8111-111111111111"
ANALYSTS = "22222222-2222-4222-8222-222222222222"
INGEST_MI = "33333333-3333-4333-8333-333333333333"
TRANSFORM_MI = "44444444-4444-4444-8444-444444444444"
# Obviously fake account key (base64 of a readable string).
FAKE_KEY = "ZmFrZS1hY2NvdW50LWtleS1mb3ItdGVzdHM="


def admin(transport: RecordingTransport) -> AdlsAdmin:
    credential = {"account_name": "gondolalake", "account_key": FAKE_KEY}
    return AdlsAdmin.from_account("gondolalake", credential, transport=transport, retry_total=0)


def _entries(acl: str) -> dict[str, str]:
    """``"group:oid:r-x,..."`` -> ``{"group:oid": "r-x", ...}``."""
    return {entry.rsplit(":", 1)[0]: entry.rsplit(":", 1)[1] for entry in acl.split(",")}


def _call(request) -> tuple[str, str, str, dict]:
    url = urllib.parse.urlsplit(request.url)
    return request.method, url.netloc, url.path, dict(urllib.parse.parse_qsl(url.query))


def test_azure_adls_ensure_lake_creates_filesystem_layers_and_sets_acls_in_order():
    transport = RecordingTransport()
    access = LakeAccess(ENGINEERS, ANALYSTS, writers=(INGEST_MI,))

    with admin(transport) as a:
        acls = a.ensure_lake(access)

    calls = [_call(r) for r in transport.requests]
    # The SDK creates the file system through the blob endpoint (a container); paths go to dfs.
    assert calls[0] == ("PUT", "gondolalake.blob.core.windows.net", "/lake", {"restype": "container"})
    assert calls[1] == ("PATCH", "gondolalake.dfs.core.windows.net", "/lake//", {"action": "setAccessControl"})
    expected = []
    for layer in LAYERS:
        expected += [
            ("PUT", "gondolalake.dfs.core.windows.net", f"/lake/{layer}", {"resource": "directory"}),
            ("PATCH", "gondolalake.dfs.core.windows.net", f"/lake/{layer}", {"action": "setAccessControl"}),
        ]
    assert calls[2:] == expected
    sent = {_call(r)[2]: r.headers["x-ms-acl"] for r in transport.requests if "x-ms-acl" in r.headers}
    assert sent == {"/lake//": acls["/"], **{f"/lake/{layer}": acls[layer] for layer in LAYERS}}
    assert all(r.headers["Authorization"].startswith("SharedKey gondolalake:") for r in transport.requests)


def test_azure_adls_zones_ingest_writes_bronze_engineering_reads_it_and_writes_silver_gold_analysts_read_gold():
    access = LakeAccess(ENGINEERS, ANALYSTS, writers=(TRANSFORM_MI,), ingest=(INGEST_MI,))
    acls = {path: _entries(acl) for path, acl in layer_acls(access).items()}

    assert acls["/"][f"group:{ANALYSTS}"] == "--x"  # traverse to gold, list nothing
    assert acls["/"]["other:"] == "---"
    assert acls["bronze"][f"user:{INGEST_MI}"] == "rwx"
    assert acls["bronze"][f"group:{ENGINEERS}"] == "r-x" and acls["bronze"][f"user:{TRANSFORM_MI}"] == "r-x"
    for layer in ("silver", "gold"):
        assert acls[layer][f"group:{ENGINEERS}"] == "rwx" and acls[layer][f"user:{TRANSFORM_MI}"] == "rwx"
        assert f"user:{INGEST_MI}" not in acls[layer]
    assert acls["gold"][f"group:{ANALYSTS}"] == "r-x"
    assert acls["gold"][f"default:group:{ANALYSTS}"] == "r-x"  # new tables inherit it
    for layer in ("bronze", "silver"):
        assert f"group:{ANALYSTS}" not in acls[layer]
        assert f"default:group:{ANALYSTS}" not in acls[layer]
    for layer in LAYERS:
        assert acls[layer]["mask:"] == "rwx"
        assert acls[layer]["other:"] == "---"
        assert all(f"default:{k}" in acls[layer] for k in acls[layer] if not k.startswith("default:"))


def test_azure_adls_rerun_on_an_existing_filesystem_is_fine():
    def responder(request):
        if "restype=container" in request.url:
            return 409, {"x-ms-error-code": "ContainerAlreadyExists"}, b""
        return (201 if request.method == "PUT" else 200), {}, b""

    transport = RecordingTransport(responder)
    with admin(transport) as a:
        a.ensure_lake(LakeAccess(ENGINEERS, ANALYSTS))
    assert sum("action=setAccessControl" in r.url for r in transport.requests) == 1 + len(LAYERS)


def test_azure_adls_apply_to_existing_updates_acls_recursively_and_fails_on_partial_failure():
    def responder(request):
        if "setAccessControlRecursive" in request.url:
            failures = 1 if "/lake/silver" in request.url else 0
            return 200, {}, {"directoriesSuccessful": 3, "filesSuccessful": 12, "failureCount": failures,
                             "failedEntries": [{"name": "silver/x", "type": "FILE", "errorMessage": "denied"}] if failures else []}
        return (201 if request.method == "PUT" else 200), {}, b""

    transport = RecordingTransport(responder)
    with admin(transport) as a, pytest.raises(StorageError, match="silver"):
        a.ensure_lake(LakeAccess(ENGINEERS, ANALYSTS), apply_to_existing=True)
    recursive = [_call(r) for r in transport.requests if "Recursive" in r.url]
    assert [(m, p, q["mode"]) for m, _, p, q in recursive] == [
        ("PATCH", "/lake/bronze", "modify"),
        ("PATCH", "/lake/silver", "modify"),
    ]


def test_azure_adls_refused_request_is_a_storage_error_naming_the_status():
    transport = RecordingTransport(lambda r: (403, {"x-ms-error-code": "AuthorizationPermissionMismatch"}, b""))
    with admin(transport) as a, pytest.raises(StorageError, match="403"):
        a.ensure_lake(LakeAccess(ENGINEERS, ANALYSTS))
    assert len(transport.requests) == 1


def test_azure_adls_get_acl_reads_the_acl_header():
    acl = f"user::rwx,group::r-x,other::---,group:{ANALYSTS}:r-x,mask::r-x"
    transport = RecordingTransport(
        lambda r: (200, {"x-ms-acl": acl, "x-ms-owner": "$superuser", "x-ms-group": "$superuser",
                         "x-ms-permissions": "rwxr-x---+"}, b"")
    )
    with admin(transport) as a:
        assert a.get_acl("lake", "gold") == acl
    method, _, path, query = _call(transport.requests[0])
    assert (method, path, query["action"]) == ("HEAD", "/lake/gold", "getAccessControl")


def test_azure_adls_access_rejects_names_that_are_not_object_ids():
    with pytest.raises(ConfigError):
        LakeAccess("data-engineers", ANALYSTS)
    with pytest.raises(ConfigError):
        LakeAccess.from_env({"GONDOLA_ADLS_ENGINEERS_GROUP": ENGINEERS})
    access = LakeAccess.from_env(
        {"GONDOLA_ADLS_ENGINEERS_GROUP": ENGINEERS, "GONDOLA_ADLS_ANALYSTS_GROUP": ANALYSTS,
         "GONDOLA_ADLS_WRITERS": f" {TRANSFORM_MI} ,", "GONDOLA_ADLS_INGEST": INGEST_MI}
    )
    assert access.writers == (TRANSFORM_MI,) and access.ingest == (INGEST_MI,)


def test_azure_adls_unreachable_account_is_a_storage_error():
    from azure.core.exceptions import ServiceRequestError

    transport = RecordingTransport(lambda r: ServiceRequestError("connection refused"))
    with admin(transport) as a, pytest.raises(StorageError, match="ServiceRequestError"):
        a.ensure_lake(LakeAccess(ENGINEERS, ANALYSTS))

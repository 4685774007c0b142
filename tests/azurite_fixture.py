"""The ``azurite`` fixture: a real Azurite blob service for the tests that need Azure Storage.

Registered from ``tests/conftest.py``. Uses the Azurite named by
``GONDOLA_AZURITE_BLOB_ENDPOINT`` when set (``deployment/ci/start-azurite.sh`` prints it), else
starts a private ``azurite-blob`` on a free loopback port for the session (installed by
``deployment/ci/install-azurite.sh``). Missing Azurite or Node: the test is skipped with the
reason, or fails under ``GONDOLA_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from cloud.azure.storage import azurite_connection_string, azurite_storage_options

#: Keep in step with deployment/ci/install-azurite.sh.
AZURITE_VERSION = "3.37.0"


def azurite_binary() -> str | None:
    """``azurite-blob`` of the pinned install (``$AZURITE_PREFIX`` or the install script's
    prefix), else one on PATH (which may be too old for Delta tables with many commits)."""
    prefix = os.environ.get("AZURITE_PREFIX", f"/opt/azurite-{AZURITE_VERSION}")
    candidate = Path(prefix) / "bin" / "azurite-blob"
    found = str(candidate) if candidate.exists() else shutil.which("azurite-blob")
    return found if found and shutil.which("node") else None


class Azurite:
    """A reachable Azurite blob endpoint and helpers to use it."""

    def __init__(self, blob_endpoint: str):
        self.blob_endpoint = blob_endpoint.rstrip("/")
        self.connection_string = azurite_connection_string(self.blob_endpoint)

    def storage_options(self) -> dict[str, str]:
        """``deltalake`` storage options for ``az://<container>/<path>`` URIs on this Azurite."""
        return azurite_storage_options(self.blob_endpoint)

    def new_container(self, prefix: str = "t") -> str:
        """Create a container with a unique name (tests share one Azurite) and return its name."""
        from azure.storage.blob import BlobServiceClient

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(name)
        return name


@pytest.fixture(scope="session")
def azurite():
    """A running Azurite blob service (session-wide; give each test its own container)."""
    from tests.conftest import free_port, require, wait_for_port

    endpoint = os.environ.get("GONDOLA_AZURITE_BLOB_ENDPOINT")
    if endpoint:
        yield Azurite(endpoint)
        return
    binary = azurite_binary()
    require(binary is not None, "Azurite (npm 'azurite' with Node; deployment/ci/install-azurite.sh)")
    port = free_port()
    location = tempfile.mkdtemp(prefix="gondola-azurite-")
    log = open(Path(location) / "azurite.log", "wb")
    proc = subprocess.Popen(
        [
            binary,
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            location,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        yield Azurite(f"http://127.0.0.1:{port}/devstoreaccount1")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(location, ignore_errors=True)

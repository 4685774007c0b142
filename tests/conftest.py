"""Shared test fixtures.

Components that pip cannot install (Mosquitto, Azurite, Java for Spark, Chromium) are found on
the machine. A developer without one sees the tests that need it skipped, with the reason;
under ``GONDOLA_REQUIRE_ALL=1`` (set by ``.ci/run``) a missing component fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edge.broker import free_port, wait_port

REQUIRE_ALL = os.environ.get("GONDOLA_REQUIRE_ALL") == "1"


def require(available: bool, what: str) -> None:
    """Skip (or, in CI, fail) the calling test when a component is missing."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is missing and GONDOLA_REQUIRE_ALL=1", pytrace=False)
    pytest.skip(f"{what} is missing (CI installs it; see .ci/run)")


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Return once something listens on ``host:port`` (the gateway's own wait, ``edge.broker``)."""
    wait_port(host, port, timeout)


def mosquitto_binary() -> str | None:
    """Where Mosquitto is installed, found the way the gateway finds it."""
    from edge.broker import mosquitto_path

    return mosquitto_path()


class MosquittoServer:
    """A real Mosquitto broker on a free loopback port, configured like a store gateway's."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> MosquittoServer:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
        )
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def restore_logging():
    """Undo a test's logging configuration (handlers it added, the root level)."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.fixture
def broker_home():
    """A folder for a provisioned Mosquitto that the broker's own user can enter.

    Started as root, Mosquitto drops to its own user before it reads its password file and
    writes its queue; pytest's private temp folders are closed to that user. The folder is
    traverse-only (0711): nobody else can list it, and the provisioned files inside keep their
    own private modes (keys 0600, passwords readable by the broker's group only).
    """
    home = Path(tempfile.mkdtemp(prefix="gondola-broker-"))
    home.chmod(0o711)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def mosquitto(tmp_path):
    """A running Mosquitto broker; skips (or fails in CI) when Mosquitto is not installed."""
    require(mosquitto_binary() is not None, "Mosquitto (Debian package 'mosquitto')")
    server = MosquittoServer(tmp_path).start()
    yield server
    server.stop()


# Azurite (the Azure Storage emulator) for the Azure adapter and lake tests.
from tests.azurite_fixture import azurite  # noqa: E402,F401 - a fixture, found by name

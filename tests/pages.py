"""Look at pages the way a person would: headless Chromium screenshots, decoded for checks."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(url: str, png: Path, *, width: int = 1280, height: int = 2000, timeout: float = 60) -> np.ndarray:
    """Render ``url`` in headless Chromium; save and return the screenshot as (h, w, 3) uint8."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--window-size={width},{height}", f"--screenshot={png}", url],
            check=True, capture_output=True, timeout=timeout,
        )
    return decode_png(png.read_bytes())


def decode_png(data: bytes) -> np.ndarray:
    """Decode a PNG to (h, w, 3) uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


#: No network for the page: every host name fails to resolve (the page must work offline).
OFFLINE_FLAGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost"]


def dump_dom(url: str, *, budget_ms: int = 20_000, timeout: float = 120, width: int = 1400,
             height: int = 2400) -> tuple[str, list[str]]:
    """Load ``url`` offline in headless Chromium, let its scripts run for ``budget_ms`` of virtual
    time, and return (the DOM as HTML, the console messages Chromium logged)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium_binary(), *CHROMIUM_FLAGS, *OFFLINE_FLAGS, f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}",
             f"--window-size={width},{height}", "--dump-dom", url],
            check=True, capture_output=True, timeout=timeout, text=True,
        )
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    return proc.stdout, console


def screenshot_after_scripts(url: str, png: Path, *, budget_ms: int = 20_000, width: int = 1300,
                             height: int = 2600, timeout: float = 120) -> np.ndarray:
    """Like ``screenshot``, offline, after ``budget_ms`` of virtual time for the page's scripts."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium_binary(), *CHROMIUM_FLAGS, *OFFLINE_FLAGS, f"--user-data-dir={profile}",
             f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}", f"--screenshot={png}", url],
            check=True, capture_output=True, timeout=timeout,
        )
    return decode_png(png.read_bytes())

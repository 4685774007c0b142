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

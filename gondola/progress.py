"""A small progress reporter for long CLI work (no dependency).

On a terminal it redraws one line; in a log (CI, a pipe) it prints a line every ``every``
percent, so logs stay short and still show that work is moving.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, every: int = 10):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.every = every
        self.done = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_pct = -1
        self._started = time.monotonic()

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n)
        pct = 100 * self.done // self.total
        elapsed = time.monotonic() - self._started
        text = f"{self.label}: {pct:3d}% ({self.done}/{self.total}) {elapsed:5.1f}s {note}"
        if self._tty:
            self.stream.write("\r" + text[:120].ljust(120))
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif pct // self.every != self._last_pct // self.every or self.done == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last_pct = pct

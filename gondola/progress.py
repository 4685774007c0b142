"""A small progress reporter for long CLI work (no dependency).

On a terminal it redraws one line. Anywhere else (a pipe, a log file, CI, an IoT Edge
container's log) it is quiet: no carriage returns, no intermediate lines, only one closing line
when the work is done, so logs stay short and grep-able.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "on_terminal"]


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr, where progress goes) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, every: int = 10):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.every = every  # kept for callers; a terminal redraws on every advance
        self.done = 0
        self._tty = on_terminal(self.stream)
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
        elif self.done == self.total:
            self.stream.write(f"{self.label}: done ({self.total}) in {elapsed:.1f}s\n")
            self.stream.flush()

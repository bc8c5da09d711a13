"""Live progress of a long copy (Meter) and the file wrappers that count and hash what passes
through them.
"""

from __future__ import annotations

import sys
import time

from posthog_compose.operations.backup.contents import MIB


# ----------------------------------------------------------------------------- progress
class Meter:
    """Live progress of a long copy: one rewritten line on a terminal, a line every 5 s otherwise."""

    def __init__(self, label: str, stream=None, enabled: bool = True):
        self.label, self.stream, self.enabled = label, stream or sys.stdout, enabled
        self.tty = self.stream.isatty()
        self.started = self.last = time.monotonic()
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        self._print("\r\033[K" if self.tty else "", "" if self.tty else "\n")

    def _print(self, prefix: str, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.stream.write(f"{prefix}  {self.label}: {self.done / MIB:,.1f} MiB ({self.done / MIB / elapsed:,.0f} "
                          f"MiB/s, {elapsed:.0f} s){end}")
        self.stream.flush()

    def finish(self) -> float:
        elapsed = time.monotonic() - self.started
        if self.enabled:
            self._print("\r\033[K" if self.tty else "", "\n")
        return elapsed


class _CountingFile:
    """The archive file: counts what is written."""

    def __init__(self, handle):
        self.handle, self.size = handle, 0

    def write(self, data) -> int:
        self.handle.write(data)
        self.size += len(data)
        return len(data)


class _Counting:
    """A read-only file that reports progress."""

    def __init__(self, handle, meter: Meter):
        self.handle, self.meter, self.done = handle, meter, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.done += len(data)
        self.meter(self.done)
        return data

    def seek(self, *args):
        self.done = 0
        return self.handle.seek(*args)

    def readable(self) -> bool:
        return True

"""The real `age` binary, driven through a pseudo-terminal: age reads a passphrase only from a
terminal (never from stdin or a file), so a test that checks the kit against it gives it one.

``require_age()`` is how a test gets the binary: under CI=true a missing `age` FAILS the test
(`.ci/run` installs it); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import time

import pytest


def require_age() -> str:
    path = shutil.which("age", path=os.environ.get("PATH", "") + ":/usr/bin:/bin")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("the `age` tool is missing: .ci/run installs Debian's package `age`; install it (apt-get install age)")
    pytest.skip("the `age` tool is not installed (Debian: apt-get install age); CI installs it")


def run_age(args: list[str], passphrase: bytes, timeout: float = 60, cwd=None) -> tuple[int, bytes]:
    """Run ``age ARGS`` with a terminal that answers every passphrase prompt; (exit status, what it
    printed on the terminal). Files are given with -o and as the input path, never through stdin."""
    binary = require_age()
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, which age opens as /dev/tty
        try:
            if cwd is not None:
                os.chdir(cwd)
            os.execv(binary, [binary, *args])
        finally:
            os._exit(127)
    shown, answered, deadline = b"", 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # the child closed the terminal: it has ended
                    break
                if not data:
                    break
                shown += data
            prompts = shown.count(b"Enter passphrase") + shown.count(b"Confirm passphrase")
            while answered < prompts:
                os.write(master, passphrase + b"\r")
                answered += 1
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                return os.waitstatus_to_exitcode(status), shown
        else:
            os.kill(pid, 9)
            raise AssertionError(f"age {' '.join(args)} did not finish in {timeout} s: {shown[-300:]!r}")
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), shown
    finally:
        os.close(master)

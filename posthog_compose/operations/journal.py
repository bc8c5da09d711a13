"""Operations that survive faults: the deployment lock, the intent journal of multi-step
operations, and Ctrl-C deferred inside critical sections.

- ``deployment_lock``: one changing task at a time per deployment (an flock, so a killed task
  never leaves it held). Every decision ("already at the target", "a journal is pending") is
  taken after the lock is held.
- The journal (``.deploy/journal/<kind>.json``, mode 0600, written atomically) records what an
  upgrade or a secret rotation is about to do BEFORE its first irreversible step; it is removed
  when the operation has finished or been undone. A task killed in between (SIGKILL, power loss)
  leaves it behind, and the next changing task replays it first (see ``pending`` and the
  ``recover`` functions of upgrade.py and rotation.py). A rotation's entry holds the new secrets:
  that is why it is 0600 and lives next to .env, never in backups/.
- ``critical``: SIGINT/SIGTERM received inside the section are remembered and raised as
  KeyboardInterrupt when it ends, so a Ctrl-C can never stop a rollback or a recreate halfway.
  Child processes started inside it should use ``own_session=True`` (``popen_kwargs``): a
  terminal's Ctrl-C goes to the whole foreground process group, and would otherwise kill
  `docker compose` while it replaces a container.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from posthog_compose.errors import OperatorError

LOCK_FILE = ".deploy/upgrade.lock"  # the name predates the other operations that now take it
JOURNAL_DIR = ".deploy/journal"
KINDS = ("upgrade", "rotation", "migration")  # migration: `invoke migrate-datastore` (migrate.py)
#: Test-only fault injection: a step name from this variable (set by the end-to-end fault table)
#: makes the task pause there, or kill itself, so a signal lands at an exact step. It is read only
#: when POSTHOG_COMPOSE_FAULT_TEST=1 is also set, so an operator cannot trigger it by accident.
FAULT_VARIABLE = "POSTHOG_COMPOSE_FAULT_AT"


# ----------------------------------------------------------------------------- lock
class deployment_lock:
    """One changing task at a time for this deployment (flock on .deploy/upgrade.lock)."""

    def __init__(self, root: Path, task: str = "upgrade"):
        self.path = Path(root) / LOCK_FILE
        self.task = task
        self.handle = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            self.handle = None
            raise OperatorError(f"another task (`invoke upgrade`, `up` or `harden`) is changing this deployment; "
                                f"wait for it to finish, then run `invoke {self.task}` again")
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        return False


# ----------------------------------------------------------------------------- journal
def journal_path(root: Path, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(kind)
    return Path(root) / JOURNAL_DIR / f"{kind}.json"


def write(root: Path, kind: str, entry: dict) -> None:
    """Record an intent (atomically, 0600, fsynced) before the step it protects."""
    from posthog_compose.fileops import atomic_write

    path = journal_path(root, kind)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"kind": kind, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": os.getpid(), **entry}
    atomic_write(path, json.dumps(data, indent=1) + "\n", 0o600)


def read(root: Path, kind: str) -> dict | None:
    path = journal_path(root, kind)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise OperatorError(f"{path.relative_to(root)} is not readable JSON (an interrupted operation's journal); "
                            "look at it, then remove it and run the task again")
    return data if isinstance(data, dict) else None


def clear(root: Path, kind: str) -> None:
    journal_path(root, kind).unlink(missing_ok=True)


def pending(root: Path) -> list[str]:
    """The kinds of operation left unfinished by a task that was killed."""
    return [kind for kind in KINDS if journal_path(root, kind).exists()]


# ----------------------------------------------------------------------------- deferred signals
class _Deferral:
    depth = 0
    received: int | None = None
    previous: dict = {}
    reraise = True


@contextmanager
def critical(reason: str = "", reraise: bool = True):
    """Defer SIGINT/SIGTERM until the section ends, then raise KeyboardInterrupt once (or, with
    ``reraise=False``, drop it: for a section after which the task ends anyway, e.g. a rollback).

    Nested sections defer to the outermost. Outside the main thread (where signal handlers
    cannot be installed) it is a plain section.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = _Deferral
    if state.depth == 0:
        state.received = None

        def handler(signum, frame):
            if state.received is None and reason:
                print(f"\n(signal received: {reason}; it takes effect when that step ends)", flush=True)
            state.received = signum

        state.previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    state.depth += 1
    try:
        yield
    finally:
        state.depth -= 1
        if state.depth == 0:
            for sig, previous in state.previous.items():
                signal.signal(sig, previous)
            received, state.received = state.received, None
            if received is not None and reraise and not _exception_in_flight():
                raise KeyboardInterrupt


def _exception_in_flight() -> bool:
    import sys

    return sys.exc_info()[0] is not None


def interrupted_inside() -> bool:
    """Whether a signal arrived in the current critical section (for long waits that may stop early)."""
    return _Deferral.received is not None


def popen_kwargs() -> dict:
    """Keyword arguments for subprocess: a child in its own session does not receive the
    terminal's Ctrl-C, so it cannot be killed halfway through replacing a container."""
    return {"start_new_session": True}


# ----------------------------------------------------------------------------- faults
def fault_point(step: str) -> None:
    """Test-only: act at a named step when the fault table asks for it (see FAULT_VARIABLE)."""
    if os.environ.get("POSTHOG_COMPOSE_FAULT_TEST") != "1":
        return
    wanted = os.environ.get(FAULT_VARIABLE, "")
    action, _, name = wanted.partition(":")
    if name != step:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "int":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # let the handler run inside this step
    elif action == "pause":
        print(f"fault point: {step}", flush=True)
        time.sleep(float(os.environ.get("POSTHOG_COMPOSE_FAULT_PAUSE", "30")))


# ----------------------------------------------------------------------------- disk
def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(exc: OSError, what: str) -> str:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"no space left on the disk while {what}{where}: free space there (`df -h`), then run the task again"


def failure_reason(exc: BaseException, doing: str) -> str:
    """Why an operation stopped, in one clause for its last line: Ctrl-C, a full disk while
    ``doing``, or the error's own words."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if is_disk_full(exc):
        return disk_full_message(exc, doing)
    return str(exc) or type(exc).__name__


def docker_root(env: dict | None = None) -> str | None:
    """Docker's data root (`docker info` DockerRootDir), where images and volumes live; None when the
    engine does not answer."""
    import subprocess

    try:
        result = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True,
                                env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout or "").strip() or None if result.returncode == 0 else None


def disks(root: Path, env: dict | None = None) -> list[tuple[str, str | None, float | None]]:
    """(label, path, free GiB) for the filesystems that matter: Docker's data root (the volumes and
    images) and the deployment's backups/ (dumps, logs, history). Free is None when the path cannot
    be measured from this host (a remote engine, a data root this user cannot read)."""
    import shutil

    found = []
    docker_dir = docker_root(env)
    backups = Path(root) / "backups"
    for label, path in (("Docker's data root", docker_dir), ("backups/", str(backups if backups.exists() else root))):
        free = None
        if path:
            try:
                free = shutil.disk_usage(path).free / 1024 ** 3
            except OSError:
                free = None
        found.append((label, path, free))
    return found

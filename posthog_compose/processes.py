"""Who a process is, and the children that must not outlive the task that starts them.

- Identity: a pid names a process only until it ends; after a reboot or a pid wrap an unrelated
  process can hold it. ``process_identity`` records the pid, the boot and the start time, and
  ``_alive`` says whether the process a record names still runs (the journal's and the backup's
  owner records use it).
- Children: a `compose up` runs in a session of its own (``popen_kwargs``: a terminal's Ctrl-C must
  not kill it while it replaces a container), so nothing stops it when the task is SIGKILLed;
  ``dies_with_task`` makes it, and every process it starts, end with the task.
"""

from __future__ import annotations

import os
from pathlib import Path


def popen_kwargs() -> dict:
    """Keyword arguments for subprocess: a child in its own session does not receive the
    terminal's Ctrl-C, so it cannot be killed halfway through replacing a container."""
    return {"start_new_session": True}


#: The shell between setpriv and the command: it runs the command in the background and waits for it (its
#: exit status is the command's); on SIGTERM (the parent-death signal, or the task's own terminate()) it
#: sends SIGTERM to its whole process group, the command and every process the command started. As the
#: leader of a session of its own (popen_kwargs), that group is exactly the command's tree.
GROUP_GUARD = 'trap "trap - TERM; kill -TERM 0" TERM; "$@" & wait $!'


def dies_with_task(command: list[str]) -> list[str]:
    """``command`` made to end, with every process it starts, when the task that starts it dies,
    SIGKILL included: the kernel's parent-death signal (set by util-linux's setpriv before it executes
    the rest) reaches GROUP_GUARD, which passes it to the command's whole process group. A child in
    its own session outlives a killed task otherwise: a `compose up` left running raced the next
    task's and left a second container beside the real one; and the signal alone reached only the
    process it was set on (`docker compose` runs Compose as a child of the docker CLI). Start such a
    child from the main thread, in a session of its own: the signal follows the thread that started
    it. Where setpriv is missing the command runs as it is (and the next changing task's journal
    replay still applies)."""
    import shutil

    setpriv = shutil.which("setpriv")
    if not setpriv:
        return list(command)
    return [setpriv, "--pdeathsig", "TERM", "--", "/bin/sh", "-c", GROUP_GUARD, "sh", *command]


#: Linux's PID_MAX_LIMIT: no process has a larger pid (and os.kill overflows past a C int).
PID_MAX = 4 * 1024 * 1024


def process_identity(pid: int | None = None) -> dict:
    """What names a process across reboots and pid reuse: its pid, the boot it runs in and its
    start time in that boot (clock ticks since boot, /proc/PID/stat field 22). A pid alone is not
    enough: after a reboot or a pid wrap an unrelated process can hold it."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "boot": _boot_id(), "started": _start_ticks(pid)}


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    try:
        return start_ticks_of(Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def start_ticks_of(stat: str) -> int | None:
    """Field 22 of a /proc/PID/stat line. The command name (field 2) is in parentheses and may hold
    spaces and parentheses itself, so the fields are counted from its last closing parenthesis."""
    try:
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(record) -> bool:
    """Whether the task that wrote ``record`` (a journal's index) still runs: its pid is alive AND,
    where the record names them, in the same boot with the same start time."""
    pid = record.get("pid") if isinstance(record, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    boot, started = record.get("boot"), record.get("started")
    if boot is not None and _boot_id() is not None and boot != _boot_id():
        return False  # written before a reboot: whatever holds that pid now is another process
    if started is not None and _start_ticks(pid) is not None and started != _start_ticks(pid):
        return False  # the pid was reused by a process started later
    return True

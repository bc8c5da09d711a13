"""The journal: how a change survives the death of the task that makes it. One place, one
directory (``.deploy/journal/``), two records:

- File transactions (``Transaction``): several files replaced all-or-nothing. Before the first
  file is replaced, each original's bytes and mode go to ``.deploy/journal/<id>/`` (``index.json``
  written last); every task undoes a transaction a killed task left (``recover_files``, run by
  cli.friendly before the task's body).
- Operations (``write``/``read``/``clear``/``pending``): ``.deploy/journal/<kind>.json`` (mode
  0600, written atomically) records what an upgrade, a secret rotation, a datastore migration or a restore is
  about to do BEFORE its first irreversible step; it is removed when the operation has finished or
  been undone. A task killed in between (SIGKILL, power loss) leaves it behind, and the next
  changing task replays it first (``replay``). Each operation registers its replay with
  ``recovers(kind)``; the entry names the module that registered it, so a task that never
  imported that operation still finds it. A rotation's entry holds the new secrets: that is why
  it is 0600 and lives next to .env, never in backups/.
- ``deployment_lock``: one changing task at a time per deployment (an flock, so a killed task
  never leaves it held): every task that edits the deployment's files or what runs. Every file
  is read and every decision ("already at the target", "a journal is pending") is taken after
  the lock is held.
- ``critical``: SIGINT/SIGTERM received inside the section are acknowledged, remembered and raised as
  KeyboardInterrupt when it ends, so a Ctrl-C can never stop a rollback or a recreate halfway.
  Child processes started inside it should use ``own_session=True`` (``popen_kwargs``): a
  terminal's Ctrl-C goes to the whole foreground process group, and would otherwise kill
  `docker compose` while it replaces a container.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from posthog_compose import fileops, interrupts
# Who a process is, and the children that die with the task, live in processes.py; these names stay here
# for the modules that use them through the journal.
from posthog_compose.processes import (  # noqa: F401
    PID_MAX, _alive, _boot_id, _start_ticks, dies_with_task, popen_kwargs, process_identity, start_ticks_of)
from posthog_compose.errors import OperatorError

LOCK_FILE = ".deploy/upgrade.lock"  # the name predates the other operations that now take it
JOURNAL_DIR = ".deploy/journal"
KINDS = ("surge", "upgrade", "rotation", "migration", "backup", "restore")  # surge: web replaced beside itself
# (first: the upgrade's replay may switch web again); migration: migrate-datastore; backup: its
# paused services; restore: last
#: Test-only fault injection: a step name from this variable (set by the end-to-end fault table)
#: makes the task pause there, or kill itself, so a signal lands at an exact step. It is read only
#: when POSTHOG_COMPOSE_FAULT_TEST=1 is also set, so an operator cannot trigger it by accident.
FAULT_VARIABLE = "POSTHOG_COMPOSE_FAULT_AT"


# ----------------------------------------------------------------------------- lock
class deployment_lock:
    """One changing task at a time for this deployment (flock on .deploy/upgrade.lock).

    Every task that edits a file of the deployment (.env, variables.yml, the generated files, the
    Compose files, .deploy/ state, certificates) or changes what runs holds it for its whole
    read-modify-write, and reads those files only once it holds it: two editors side by side
    would otherwise each write what they read before the other's change, and one change would be
    lost without a word. A second changing task is refused at once with one line naming the
    holder (recorded in the lock file); a task that only reads never takes it. Not re-entrant:
    an operation called by another that holds it (the pre-upgrade backup, `up`'s first .env)
    runs without taking it again."""

    def __init__(self, root: Path, task: str = "upgrade"):
        self.path = Path(root) / LOCK_FILE
        self.task = task
        self.handle = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise OperatorError(f"another task ({holder}) is changing this deployment; wait for it to finish, then "
                                f"run `invoke {self.task}` again (nothing was changed)")
        self.handle = handle
        try:  # who holds it, for the line a refused task prints; the flock is what counts
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"task": self.task, "pid": os.getpid()}) + "\n")
            handle.flush()
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        return False


def _holder(handle) -> str:
    """The task holding the lock, as its holder recorded it: "`invoke up`, process 1234"."""
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
        task, pid = str(record["task"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return "an `invoke` task"  # it has not written its name yet
    if not re.fullmatch(r"[a-z][a-z -]{0,40}", task):
        return f"`invoke`, process {pid}"
    return f"`invoke {task}`, process {pid}"


def editing(root: Path, task: str, dry_run: bool = False):
    """The deployment lock for a task that edits the deployment; nothing for its dry run, which
    writes nothing (a plan may be printed while another task works)."""
    from contextlib import nullcontext

    return nullcontext() if dry_run else deployment_lock(root, task)


# ----------------------------------------------------------------------------- journal
def journal_path(root: Path, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(kind)
    return Path(root) / JOURNAL_DIR / f"{kind}.json"


def write(root: Path, kind: str, entry: dict) -> None:
    """Record an intent (atomically, 0600, fsynced) before the step it protects."""
    path = journal_path(root, kind)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"kind": kind, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **process_identity(), **entry}
    if kind in _REPLAYS:
        data.setdefault(REPLAYED_BY, _REPLAYS[kind].__module__)
    fileops.atomic_write(path, json.dumps(data, indent=1) + "\n", 0o600)


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


# ----------------------------------------------------------------------------- replay
#: kind -> the function that finishes or undoes it, registered by the operation itself (``recovers``).
_REPLAYS: dict[str, Callable] = {}
#: The key of an entry that names the module whose import registers its replay.
REPLAYED_BY = "replayed_by"
#: For an entry written before entries named their module (a kit updated mid-operation).
_EARLIER_ENTRIES = {"surge": "posthog_compose.operations.surge", "upgrade": "posthog_compose.operations.upgrade",
                    "rotation": "posthog_compose.operations.rotation",
                    "migration": "posthog_compose.operations.migrate", "backup": "posthog_compose.operations.backup",
                    "restore": "posthog_compose.operations.restore"}


def recovers(kind: str):
    """Register the decorated ``function(root, runner)`` as the replay of ``kind``'s journal entry."""
    if kind not in KINDS:
        raise ValueError(kind)

    def register(function):
        _REPLAYS[kind] = function
        return function

    return register


def replay(root: Path, runner) -> None:
    """Finish or undo what a killed task left in the journal, in KINDS order (the caller holds the
    deployment lock). The replay of a kind no module of this process registered yet is found
    through the module its entry names."""
    import importlib

    for kind in pending(root):
        if kind not in _REPLAYS:
            entry = read(root, kind) or {}
            module = str(entry.get(REPLAYED_BY) or _EARLIER_ENTRIES[kind])
            if not module.startswith("posthog_compose.operations."):  # an entry names only the kit's own
                module = _EARLIER_ENTRIES[kind]
            importlib.import_module(module)
        _REPLAYS[kind](root, runner)


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
            if state.received is None:  # said at once, in the one wording (interrupts.ACKNOWLEDGEMENT)
                interrupts.acknowledge(reason or None, from_handler=True)
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


# ----------------------------------------------------------------------------- file transactions
class TransactionError(Exception):
    """A transaction failed; ``message`` is the one line for the operator (files restored or not)."""


class Transaction:
    """Replace several files all-or-nothing, surviving its own failure and the process's death.

    Stage every new content first (nothing is written). ``commit()`` reads every original, writes a
    journal (each original's bytes and mode, or "absent") under .deploy/journal/ and makes it
    durable, and only then replaces the files one by one, atomically. If any step fails, every file
    is put back byte for byte from memory (each restore independent of the others), and one
    OperatorError line says what failed. If the process dies in between, the next task finds the
    journal and undoes the change (``recover_files``). The journal is removed when the change is final:
    at the end of ``commit()``, or, with ``keep_journal=True``, at ``finish()``/``rollback()``.
    """

    def __init__(self, root: Path | None = None, what: str = "change") -> None:
        self._staged: list[tuple[Path, str, int | None]] = []
        self._originals: list[tuple[Path, bytes | None, int | None]] = []
        self.root = Path(root) if root is not None else None
        self.what = what
        self._journal: Path | None = None

    def stage(self, path: Path, text: str, mode: int | None = None) -> None:
        self._staged.append((Path(path), text, mode))

    @property
    def paths(self) -> list[Path]:
        return [path for path, _, _ in self._staged]

    def commit(self, keep_journal: bool = False) -> None:
        from posthog_compose.errors import OperatorError

        write = fileops.atomic_write  # looked up at call time, so a test can inject a failing writer
        originals = []
        try:
            for path, _, _ in self._staged:
                if path.is_dir():
                    raise IsADirectoryError(21, "Is a directory", str(path))
                if path.exists() or path.is_symlink():
                    originals.append((path, path.read_bytes(), path.stat().st_mode & 0o7777))
                else:
                    originals.append((path, None, None))
        except OSError as exc:
            raise OperatorError(f"{_name(exc, self.root)}: {_reason(exc)}; nothing was changed")
        self._originals = originals
        root = self.root or _common_root([p for p, _, _ in self._staged])
        try:
            self._journal = write_journal(root, originals, self.what)
        except OSError as exc:
            self._originals = []
            raise OperatorError(f"{_name(exc, root)}: {_reason(exc)} (while writing the undo journal); nothing was changed")
        try:
            for number, (path, text, mode) in enumerate(self._staged):
                write(path, text, mode)
                if number == 0 and len(self._staged) > 1:
                    fault_point("files-half-written")
        except BaseException as exc:
            failed = _name(exc, root) if isinstance(exc, OSError) else type(exc).__name__
            problems = self._restore()
            if isinstance(exc, KeyboardInterrupt) and not problems:
                raise
            if problems:
                raise OperatorError(f"{failed}: {_reason(exc)}; restoring failed for {', '.join(problems)}: the next "
                                    f"`invoke` task retries it from {JOURNAL_DIR}/ (do not delete it)")
            raise OperatorError(f"{failed}: {_reason(exc)}; every file was restored, nothing was changed")
        if not keep_journal:
            self.finish()

    def finish(self) -> None:
        """The change is final: drop the journal (its index first: without it a journal is void)."""
        from posthog_compose.errors import OperatorError

        if self._journal is not None:
            journal, self._journal = self._journal, None
            try:
                os.unlink(journal / "index.json")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise OperatorError(f"the change was made, but its undo journal {journal} could not be voided "
                                    f"({exc.strerror}); delete that directory before running another task")
            shutil.rmtree(journal, ignore_errors=True)

    def rollback(self) -> None:
        """Put every file the last commit replaced back as it was (also after a successful commit,
        when a later check rejects the result)."""
        from posthog_compose.errors import OperatorError

        problems = self._restore()
        if problems:
            raise OperatorError(f"restoring failed for {', '.join(problems)}: the next `invoke` task retries it "
                                f"from {JOURNAL_DIR}/ (do not delete it)")

    def _restore(self) -> list[str]:
        problems = restore(self._originals)
        if not problems:
            self._originals = []
            self.finish()
        return problems


def restore(originals) -> list[str]:
    """Put each file back (independently of the others); the names that could not be restored."""
    problems = []
    for path, content, old_mode in reversed(originals):
        try:
            if content is None:
                if path.is_dir() and not path.is_symlink():
                    continue  # not ours: we never create directories
                if path.exists() or path.is_symlink():
                    path.unlink()
            elif not path.is_dir() and path.exists() and path.read_bytes() == content:
                if old_mode is not None and path.stat().st_mode & 0o7777 != old_mode:
                    os.chmod(path, old_mode)
            else:
                _write_bytes(path, content, old_mode)
        except OSError:
            problems.append(path.name)
    return problems


def _write_bytes(path: Path, data: bytes, mode: int | None) -> None:
    fileops.atomic_write(path, data, mode if mode is not None else 0o644)


def _common_root(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent.resolve()) for p in paths])) if paths else Path.cwd()


def _name(exc: BaseException, root: Path | None) -> str:
    filename = getattr(exc, "filename", None)
    if not filename:
        return "a file"
    path = Path(filename)
    if root is not None:
        try:
            return str(path.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return path.name


def _reason(exc: BaseException) -> str:
    reasons = {errno.EISDIR: "is a directory where a file is expected", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted (immutable file?)", errno.ENOSPC: "the disk is full",
               errno.EROFS: "read-only file system", errno.ENOTDIR: "a file stands where a directory is expected"}
    if isinstance(exc, OSError):
        return reasons.get(exc.errno, exc.strerror or "could not be written")
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


def write_journal(root: Path, originals, what: str) -> Path:
    """Write the undo journal of a transaction and make it durable; return its directory.

    Layout: .deploy/journal/<id>/<n> holds original n's bytes, and `index.json` (written last,
    atomically) lists path, mode and file for each. A journal without index.json is incomplete:
    nothing was written yet, so it is simply dropped."""

    base = Path(root) / JOURNAL_DIR
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base.parent, 0o700) if base.parent.stat().st_mode & 0o077 else None
    # The writer's pid is in the name: until index.json exists, it is how another task's
    # recover_files tells a journal being written from one a killed task left incomplete.
    journal = Path(tempfile.mkdtemp(prefix=f"{fileops.timestamp()}-{os.getpid()}-", dir=base))
    try:
        _fill_journal(journal, originals, what)
    except BaseException:
        shutil.rmtree(journal, ignore_errors=True)
        raise
    return journal


def _fill_journal(journal: Path, originals, what: str) -> None:
    entries = []
    for number, (path, content, mode) in enumerate(originals):
        record = {"path": str(Path(path).resolve()), "mode": mode, "file": None}
        if content is not None:
            record["file"] = str(number)
            descriptor = os.open(journal / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        entries.append(record)
    fileops.atomic_write(journal / "index.json", json.dumps({"what": what, **process_identity(), "files": entries}),
                         0o600)


def recover_files(root: Path) -> list[str]:
    """Undo every transaction an interrupted task left behind (called before each task runs);
    prints one line per journal. Returns the names restored."""
    base = Path(root) / JOURNAL_DIR
    try:
        journals = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return []
    restored = []
    for journal in reversed(journals):
        try:
            index = json.loads((journal / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if not _alive(_writer_of(journal)):
                shutil.rmtree(journal, ignore_errors=True)  # incomplete: nothing had been written
            continue
        if _alive(index):
            continue  # another task is in the middle of it
        originals = []
        try:
            for record in index["files"]:
                content = (journal / record["file"]).read_bytes() if record["file"] is not None else None
                originals.append((Path(record["path"]), content, record["mode"]))
        except (OSError, KeyError, TypeError) as exc:
            print(f"warning: the undo journal {journal.name} of an interrupted change is unreadable ({exc.__class__.__name__}); "
                  f"check the files it names in {journal / 'index.json'} and delete it")
            continue
        problems = restore(originals)
        names = [p.name for p, _, _ in originals]
        if problems:
            print(f"warning: an interrupted change ({index.get('what', 'change')}) could not be undone for "
                  f"{', '.join(problems)}; fix the cause and rerun any task")
            continue
        shutil.rmtree(journal, ignore_errors=True)
        restored += names
        print(f"An interrupted change ({index.get('what', 'change')}) was undone: {', '.join(names)} restored.")
    return restored


def _writer_of(journal: Path) -> dict | None:
    """The writer's pid from a journal's name (write_journal), as a record for ``_alive``; None
    for a name without one. (Only the pid: the name is made before index.json records more.)"""
    match = re.match(r"\d{8}-\d{6}-(\d+)-", journal.name)
    return {"pid": int(match.group(1))} if match else None

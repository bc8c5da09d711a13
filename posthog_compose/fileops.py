"""Writing files safely: atomic replacement, kept permissions, timestamped backups,
and all-or-nothing transactions over several files."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def atomic_write(path: Path, text: str | bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` (or bytes, written as they are) in one step: readers see the
    old or the new file, never half.

    ``mode`` defaults to the existing file's mode (or 0644 for a new file); the temporary file is
    created with that mode from the start so a secret is never readable by others, even briefly.
    """
    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text if isinstance(text, bytes) else text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def timestamp() -> str:
    """A sortable UTC timestamp for file names: 20261124-031500."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def backup(path: Path, directory: Path | None = None) -> Path:
    """Copy ``path`` to a timestamped sibling (or into ``directory``), keeping its mode."""
    path = Path(path)
    target_dir = Path(directory) if directory else path.parent
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{path.name}.backup-{timestamp()}"
    counter = 1
    while target.exists():
        target = target_dir / f"{path.name}.backup-{timestamp()}-{counter}"
        counter += 1
    shutil.copy2(path, target)
    return target


#: How many old copies of secrets (`.env.backup-*`, `backups/harden-*/`) are kept: each holds every
#: secret of its day, so they do not pile up forever; the newest ones cover a rollback.
KEEP_SECRET_COPIES = 5


def retain(directory: Path, prefix: str, keep: int = KEEP_SECRET_COPIES) -> list[str]:
    """Delete all but the newest ``keep`` entries of ``directory`` named ``prefix`` + a timestamp()
    (optionally -N, as ``backup`` names them); files or directories. Returns the names removed."""
    import re

    pattern = re.compile(re.escape(prefix) + r"(\d{8}-\d{6})(?:-(\d+))?")
    found = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and not entry.is_symlink():
            found.append(((match.group(1), int(match.group(2) or 0)), entry))
    found.sort(key=lambda item: item[0])
    removed = []
    for _, entry in found[:max(len(found) - keep, 0)]:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


JOURNAL_DIR = ".deploy/journal"


class TransactionError(Exception):
    """A transaction failed; ``message`` is the one line for the operator (files restored or not)."""


class Transaction:
    """Replace several files all-or-nothing, surviving its own failure and the process's death.

    Stage every new content first (nothing is written). ``commit()`` reads every original, writes a
    journal (each original's bytes and mode, or "absent") under .deploy/journal/ and makes it
    durable, and only then replaces the files one by one, atomically. If any step fails, every file
    is put back byte for byte from memory (each restore independent of the others), and one
    OperatorError line says what failed. If the process dies in between, the next task finds the
    journal and undoes the change (``recover``). The journal is removed when the change is final:
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

        write = atomic_write  # looked up at call time, so a test can inject a failing writer
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
            for path, text, mode in self._staged:
                write(path, text, mode)
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
    atomic_write(path, data, mode if mode is not None else 0o644)


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
    import errno

    reasons = {errno.EISDIR: "is a directory where a file is expected", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted (immutable file?)", errno.ENOSPC: "the disk is full",
               errno.EROFS: "read-only file system", errno.ENOTDIR: "a file stands where a directory is expected"}
    if isinstance(exc, OSError):
        return reasons.get(exc.errno, exc.strerror or "could not be written")
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


# ----------------------------------------------------------------------------- the journal
def write_journal(root: Path, originals, what: str) -> Path:
    """Write the undo journal of a transaction and make it durable; return its directory.

    Layout: .deploy/journal/<id>/<n> holds original n's bytes, and `index.json` (written last,
    atomically) lists path, mode and file for each. A journal without index.json is incomplete:
    nothing was written yet, so it is simply dropped."""

    base = Path(root) / JOURNAL_DIR
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base.parent, 0o700) if base.parent.stat().st_mode & 0o077 else None
    journal = Path(tempfile.mkdtemp(prefix=f"{timestamp()}-", dir=base))
    try:
        _fill_journal(journal, originals, what)
    except BaseException:
        shutil.rmtree(journal, ignore_errors=True)
        raise
    return journal


def _fill_journal(journal: Path, originals, what: str) -> None:
    import json

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
    atomic_write(journal / "index.json", json.dumps({"what": what, "pid": os.getpid(), "files": entries}), 0o600)


def recover(root: Path) -> list[str]:
    """Undo every transaction an interrupted task left behind (called before each task runs);
    prints one line per journal. Returns the names restored."""
    import json

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
            shutil.rmtree(journal, ignore_errors=True)  # incomplete: nothing had been written
            continue
        if _alive(index.get("pid")):
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


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Writing files safely: atomic replacement, kept permissions, timestamped backups and their
retention. All-or-nothing transactions over several files are the journal's (journal.py)."""

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

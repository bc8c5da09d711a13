"""Writing files safely: atomic replacement, kept permissions, timestamped backups,
and all-or-nothing transactions over several files."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old or the new file, never half.

    ``mode`` defaults to the existing file's mode (or 0644 for a new file); the temporary file is
    created with that mode from the start so a secret is never readable by others, even briefly.
    """
    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
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


class Transaction:
    """Replace several files all-or-nothing.

    Stage every new content first (nothing is written), then ``commit()`` replaces each file
    atomically; if any replacement fails, the files already replaced are restored to their
    previous bytes (or removed, if they did not exist) and the error is raised again.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, str, int | None]] = []
        self._originals: list[tuple[Path, bytes | None, int | None]] = []

    def stage(self, path: Path, text: str, mode: int | None = None) -> None:
        self._staged.append((Path(path), text, mode))

    @property
    def paths(self) -> list[Path]:
        return [path for path, _, _ in self._staged]

    def commit(self) -> None:
        write = atomic_write  # looked up at call time, so a test can inject a failing writer
        originals = self._originals = []
        try:
            for path, text, mode in self._staged:
                if path.exists():
                    originals.append((path, path.read_bytes(), path.stat().st_mode & 0o7777))
                else:
                    originals.append((path, None, None))
                write(path, text, mode)
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """Put every file the last commit replaced back as it was (also after a successful commit,
        when a later check rejects the result)."""
        for path, content, old_mode in reversed(self._originals):
            if content is None:
                if path.exists():
                    path.unlink()
            else:
                atomic_write(path, content.decode("utf-8"), old_mode)
        self._originals = []

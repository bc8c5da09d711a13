"""What a killed backup leaves behind, and how the next task takes it back.

- The services a backup stops for its copy (ClickHouse, ZooKeeper): before stopping them, backup
  records them in the operations' journal (``.deploy/journal/backup.json``: "paused clickhouse,
  zookeeper for backup") and clears the entry once they run again. A backup killed in between leaves
  the entry; its replay (registered with ``journal.recovers("backup")``) starts them again, run by
  the next `invoke up`, `invoke backup` or any task that replays the journal.
- Its files being written (``.NAME.backup.partial``, ``.NAME.backup.pgdump.partial``): a small
  owner file beside them (``.NAME.backup.owner``) names the writing process as the journal does
  (``journal.process_identity``). The next backup removes every such file whose writer is dead
  (``journal._alive``) or unnamed, and says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from posthog_compose import journal
from posthog_compose.fileops import atomic_write
from posthog_compose.operations.archive_checks import shown
from posthog_compose.operations.engine import Runner

KIND = "backup"
PARTIAL = ".partial"
OWNER = ".owner"


# ----------------------------------------------------------------------------- paused services
def record_pause(root: Path, services: list[str]) -> None:
    """Written BEFORE the first service stops: a kill after it leaves them for the replay."""
    journal.write(root, KIND, {"paused": list(services),
                               "what": f"paused {', '.join(services)} for backup"})


def pause_over(root: Path) -> None:
    journal.clear(root, KIND)


@journal.recovers(KIND)
def recover(root: Path, runner: Runner, out=None) -> list[str]:
    """Start again what a killed backup stopped for its copy; the services started."""
    from posthog_compose.errors import OperatorError
    from posthog_compose.operations.backup.capture import _start

    out = out or sys.stdout
    entry = journal.read(root, KIND) or {}
    paused = entry.get("paused")
    services = [s for s in paused if s in ("clickhouse", "zookeeper")] if isinstance(paused, list) else []
    if services:
        print(f"A backup was interrupted while {', '.join(services)} were stopped for its copy: "
              "starting them again.", file=out)
        try:
            _start(root, runner, services)
        except OperatorError as exc:
            raise OperatorError(f"could not start {', '.join(services)} again after the interrupted backup ({exc}); "
                                "run `invoke up`") from exc
        from posthog_compose.operations import stack

        stack.wait_until_healthy(root, runner, services, timeout=600, progress=False)
    journal.clear(root, KIND)
    return services


def recover_if_pending(root: Path, runner: Runner, out=None) -> list[str]:
    return recover(root, runner, out) if journal.journal_path(root, KIND).exists() else []


# ----------------------------------------------------------------------------- partial files
def owner_path(directory: Path, final_name: str) -> Path:
    return directory / f".{final_name}{OWNER}"


def claim(directory: Path, final_name: str) -> Path:
    """Name this process as the writer of ``final_name``'s partial files."""
    path = owner_path(directory, final_name)
    atomic_write(path, json.dumps(journal.process_identity()) + "\n", 0o600)
    return path


def _base(name: str) -> str | None:
    """``.NAME.backup`` for a partial or owner file of this kit, else None."""
    for suffix in (".pgdump" + PARTIAL, PARTIAL, OWNER):
        if name.startswith(".posthog-") and name.endswith(suffix):
            return name[:-len(suffix)]
    return None


def _writer_alive(directory: Path, base: str) -> bool:
    try:
        record = json.loads((directory / f"{base}{OWNER}").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, UnicodeDecodeError):
        return False
    return journal._alive(record)


def remove_stale(directory: Path, out=None) -> list[str]:
    """Remove the partial files (and owner files) of backups whose writer no longer runs; their names."""
    out = out or sys.stdout
    if not directory.is_dir():
        return []
    groups: dict[str, list[Path]] = {}
    for path in directory.iterdir():
        base = _base(path.name)
        if base is not None and path.is_file() and not path.is_symlink():
            groups.setdefault(base, []).append(path)
    removed = []
    for base, paths in sorted(groups.items()):
        if _writer_alive(directory, base):
            continue
        for path in sorted(paths):
            path.unlink(missing_ok=True)
            if not path.name.endswith(OWNER):
                removed.append(path.name)
    if removed:
        print(f"Removed {len(removed)} file(s) left by a backup that was interrupted: "
              f"{shown(', '.join(removed), 400)}.", file=out)
    return removed

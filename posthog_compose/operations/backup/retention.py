"""The archives on disk: their sidecar files, the backup sequence, the archives of a subset in order,
and --keep.

The order of archives never comes from a clock: the time in an archive's name and its manifest's
"created" are the host's clock when it was written, and a clock set a day behind once made --keep
delete the archive it had just written. Each backup takes the next number of the deployment's
sequence (``.deploy/backup-sequence``, recorded before the archive is written, and never lower than
any sidecar's: a lost counter cannot go back) and its sidecar records it. Retention orders by that
number; an archive from before sequences existed is older than every numbered one, and such
archives are ordered among themselves by their manifest's creation time (the best they have). An
archive whose sidecar is missing or unreadable has no readable order: --keep never deletes it,
and says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from posthog_compose.fileops import atomic_write
from posthog_compose.operations.backup.contents import NAME_RE

SEQUENCE_FILE = ".deploy/backup-sequence"
#: Far above any real count, and small enough for JSON readers that hold numbers as doubles.
MAX_SEQUENCE = 2 ** 53
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def sidecar_path(archive_path: Path) -> Path:
    return archive_path.with_name(archive_path.name + ".json")


def archives(directory: Path, subset: str | None = None) -> list[Path]:
    """The archives in ``directory`` (by name; ``ordered`` gives the order retention uses)."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = NAME_RE.match(path.name)
            if match and path.is_file() and (subset is None or (match.group(2) or "all") == subset):
                found.append(path)
    return sorted(found, key=lambda p: p.name)


def _sequence(value: object) -> int | None:
    return value if type(value) is int and 0 < value <= MAX_SEQUENCE else None


def read_sidecar(path: Path) -> dict:
    """The sidecar's fields, or {} when it is missing, unreadable or not a JSON object."""
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def order_of(path: Path) -> tuple[int, int, str] | None:
    """The sort key of an archive, from its sidecar: (1, sequence, created) for a numbered archive,
    (0, 0, created) for one written before sequences, None when neither can be read."""
    meta = read_sidecar(path)
    created = meta.get("created")
    created = created if isinstance(created, str) and _CREATED.fullmatch(created) else ""
    sequence = _sequence(meta.get("sequence"))
    if sequence is not None:
        return (1, sequence, created)
    return (0, 0, created) if created else None


def next_sequence(root: Path, directory: Path) -> int:
    """The next number of the deployment's backup sequence, recorded at once (the caller holds the
    deployment lock): one more than both the counter and every sidecar in ``directory``."""
    path = Path(root) / SEQUENCE_FILE
    try:
        recorded = _sequence(int(path.read_text(encoding="ascii").strip())) or 0
    except (OSError, ValueError, UnicodeDecodeError):
        recorded = 0
    seen = [_sequence(read_sidecar(p).get("sequence")) or 0 for p in archives(directory)]
    number = max([recorded, *seen]) + 1
    if number > MAX_SEQUENCE:
        from posthog_compose.errors import OperatorError

        raise OperatorError(f"{SEQUENCE_FILE} or a sidecar in backups/ holds a sequence beyond {MAX_SEQUENCE}; "
                            "correct it (the highest real archive's number) and back up again")
    path.parent.mkdir(mode=0o700, exist_ok=True)
    atomic_write(path, f"{number}\n", 0o600)
    return number


def apply_retention(directory: Path, keep: int, subset: str = "all", written: Path | None = None,
                    out=None) -> list[Path]:
    """Delete the oldest archives of ``subset`` (and their sidecars) beyond the newest ``keep``, in
    sequence order. ``written``, the archive just written, counts as one of the ``keep`` and is never
    deleted; an archive whose order cannot be read is never deleted either (one line says so)."""
    candidates, unreadable = [], []
    for path in archives(directory, subset):
        if written is not None and path == written:
            continue
        key = order_of(path)
        (unreadable if key is None else candidates).append((key, path))
    candidates.sort(key=lambda item: item[0])
    room = max(keep - (1 if written is not None else 0), 0)
    doomed = [path for _key, path in candidates[:len(candidates) - room]] if len(candidates) > room else []
    for path in doomed:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
    if unreadable and out is not None:
        names = ", ".join(path.name for _key, path in unreadable)
        print(f"  --keep kept {names}: no readable sidecar says when it was written (its .json is missing or "
              "damaged), so it is never deleted automatically; remove it by hand if it is not needed.", file=out)
    return doomed

"""The archives on disk: their sidecar files, the archives of a subset in order, and --keep.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.operations.backup.contents import NAME_RE


def sidecar_path(archive_path: Path) -> Path:
    return archive_path.with_name(archive_path.name + ".json")


def archives(directory: Path, subset: str | None = None) -> list[Path]:
    """The archives in ``directory``, oldest first (by the time in their name)."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = NAME_RE.match(path.name)
            if match and path.is_file() and (subset is None or (match.group(2) or "all") == subset):
                found.append(path)
    return sorted(found, key=lambda p: p.name)


def apply_retention(directory: Path, keep: int, subset: str = "all") -> list[Path]:
    """Delete the oldest archives of ``subset`` (and their sidecars) beyond the newest ``keep``."""
    doomed = archives(directory, subset)[:-keep]
    for path in doomed:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
    return doomed

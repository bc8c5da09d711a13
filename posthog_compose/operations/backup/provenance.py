"""Which kit made an archive, and what a restore says when this kit is another: the kit's own version
(the git commit of the checkout the tasks run from, else the package's version when the kit is not a
git checkout) recorded in the manifest as "kit", and the one warning line a restore prints when the
archive's kit and this one differ. Reading the version never fails: no git, a checkout git refuses
(another owner) or a slow git all give the package version alone.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from posthog_compose.operations.archive_checks import shown

PACKAGE = "posthog-compose"
_COMMIT = re.compile(r"[0-9a-f]{40}")


def package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this host, or it hung: the package version still says which kit
    return result.stdout.strip() if result.returncode == 0 else None


def kit_version(root: Path) -> dict:
    """{"version": the package's version, "commit": the checkout's commit or None, "modified": whether
    tracked files differ from that commit (None when not a git checkout)}."""
    commit = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if commit is None or not _COMMIT.fullmatch(commit):
        return {"version": package_version(), "commit": None, "modified": None}
    # Tracked files only: .env, backups/ and certificates are ignored by the kit's .gitignore.
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"version": package_version(), "commit": commit, "modified": None if changes is None else bool(changes)}


def described(kit: object) -> str:
    """A kit version as one phrase: "commit 1a2b3c4d5e6f (0.1.0)", "0.1.0" or "an unrecorded version"."""
    if not isinstance(kit, dict):
        return "a kit that did not record its version"
    version = shown(kit.get("version") or "?", 40)
    if kit.get("commit"):
        extra = ", with local changes" if kit.get("modified") else ""
        return f"commit {shown(kit['commit'], 40)[:12]} ({version}{extra})"
    return f"version {version}"


def mismatch_line(archive_name: str, made_by: object, here: dict) -> str | None:
    """The one warning a restore prints when the archive was made by another kit than this one (None
    when they are the same, as far as both recorded). Never a refusal: the archive's format decides
    whether it can be read, and that is checked before."""
    if not isinstance(made_by, dict):
        return (f"warning: {shown(archive_name)} does not record which kit made it (an archive older than this "
                f"record); this kit is {described(here)}.")
    if made_by.get("commit") and here.get("commit"):
        same = made_by["commit"] == here["commit"]
    else:
        same = made_by.get("version") == here.get("version") and not made_by.get("commit") and not here.get("commit")
    if same:
        return None
    line = (f"warning: {shown(archive_name)} was made by kit {described(made_by)} and this kit is {described(here)}; "
            "if the restore or the data misbehaves, restore with the kit that made it")
    if made_by.get("commit"):
        line += f": `git checkout {shown(made_by['commit'], 40)}` in a clone of the kit"
    return line + "."

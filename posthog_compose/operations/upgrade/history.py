"""The upgrade history (backups/upgrade-history.jsonl, one JSON line per attempt, 0600 and
fsynced), `invoke upgrade --history`, and the deployment lock under its old name.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from posthog_compose.configuration import images
from posthog_compose.errors import OperatorError
from posthog_compose.operations.upgrade.plan import BACKUP_DIR, Plan


HISTORY_FILE = "upgrade-history.jsonl"  # in backups/, next to the dumps it names


@dataclass
class HistoryEntry:
    time: str
    service: str
    variable: str
    from_: str
    to: str
    result: str  # upgraded | rolled back | rollback failed | aborted
    seconds: float
    backup: str | None = None
    reason: str = ""
    logs: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["from"] = data.pop("from_")
        return data


# ----------------------------------------------------------------------------- history and lock
def history_path(root: Path) -> Path:
    return Path(root) / BACKUP_DIR / HISTORY_FILE


def _record(root: Path, plan: Plan, target: str, result: str, started: float, backup: Path | None,
            reason: str = "", logs: Path | None = None) -> None:
    entry = HistoryEntry(
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), service=plan.service, variable=plan.variable,
        from_=plan.current, to=target, result=result, seconds=round(time.monotonic() - started, 1),
        backup=str(backup.relative_to(root)) if backup else None, reason=reason.splitlines()[0][:300] if reason else "",
        logs=str(logs.relative_to(root)) if logs else None)
    path = history_path(root)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry.to_dict()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_history(root: Path) -> list[dict]:
    path = history_path(root)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise OperatorError(f"{path.relative_to(root)} line {number} is not JSON; fix or remove that line")
    return entries


def print_history(root: Path, as_json: bool = False) -> None:
    entries = read_history(Path(root))
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        print("No upgrades yet (the history is kept in backups/upgrade-history.jsonl).")
        return
    rows = [("TIME", "IMAGE", "FROM", "TO", "RESULT", "SECONDS", "BACKUP")]
    for entry in entries:
        rows.append((entry.get("time", ""), entry.get("variable", ""), _short(entry.get("from", "")),
                     _short(entry.get("to", "")), entry.get("result", ""), str(entry.get("seconds", "")),
                     entry.get("backup") or "-"))
    from posthog_compose.cli import table

    print(table(rows))
    failed = [e for e in entries if e.get("result") != "upgraded"]
    print(f"{len(entries)} upgrade(s), {len(failed)} not completed; reasons with --json.")
    if any("@" in str(e.get("from", "")) + str(e.get("to", "")) for e in entries):
        print("A digest is shown in full: `invoke upgrade --to DIGEST` goes back to exactly that image.")


def _short(reference: str) -> str:
    """The tag or digest part, which is what differs between rows, in a form that `upgrade --to` takes
    back: the tag, or the whole digest (`sha256:` and its 64 hex digits; a digest names what ran, and a
    shortened one names no image)."""
    try:
        ref = images.parse(reference) if reference else None
    except OperatorError:
        return reference  # a hand-edited line: shown as it is
    if not ref:
        return "-"
    return ref.digest or ref.tag or reference


def _lock(root: Path):
    """One changing task at a time per deployment (kept for callers of the old name)."""
    from posthog_compose.journal import deployment_lock

    return deployment_lock(root, "upgrade")

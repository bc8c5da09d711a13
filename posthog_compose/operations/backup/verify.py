"""`invoke backup --list` and `--verify`: the archives with what each holds, and an archive read
through (decrypted when encrypted, with the passphrase it needs) and checked member by member, and
its manifest field by field. What an archive or its sidecar says is printed through
``archive_checks.shown`` (no terminal escapes); --json leaves the escaping to JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.operations.archive_checks import shown
from posthog_compose.operations.backup.contents import BACKUP_DIR, MIB, PASSPHRASE_ENV, backup_dir, check_manifest
from posthog_compose.operations.backup.passphrase import read_passphrase
from posthog_compose.operations.backup.provenance import described
from posthog_compose.operations.backup.progress import Meter, _Counting
from posthog_compose.operations.backup.retention import archives, sidecar_path


# ----------------------------------------------------------------------------- list and verify
def list_archives(root: Path, as_json: bool = False) -> None:
    directory = backup_dir(root)
    rows, entries = [], []
    for path in archives(directory):
        meta = _sidecar(path)
        entry = {"archive": str(path.relative_to(root)), "size": path.stat().st_size,
                 "created": meta.get("created", "?"), "subset": meta.get("subset", "?"),
                 "encrypted": meta.get("encrypted"), "posthog_version": meta.get("posthog_version", "?"),
                 "clickhouse_pause_seconds": meta.get("clickhouse_pause_seconds"), "kit": meta.get("kit")}
        entries.append(entry)
        encrypted = {True: "yes", False: "NO"}.get(entry["encrypted"], "?") if type(entry["encrypted"]) is bool else "?"
        rows.append((entry["archive"], shown(entry["created"], 40), f"{entry['size'] / MIB:,.1f} MiB",
                     shown(entry["subset"], 20), encrypted, shown(entry["posthog_version"], 60), _kit_column(entry["kit"])))
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        print(f"No archives in {BACKUP_DIR}/ yet; `invoke backup` writes one.")
        return
    from posthog_compose.cli import table

    print(table([("ARCHIVE", "CREATED", "SIZE", "CONTENT", "ENCRYPTED", "POSTHOG", "KIT"), *rows]))
    print(f"{len(entries)} archive(s); check one with `invoke backup --verify ARCHIVE`.")


def _kit_column(kit: object) -> str:
    """The kit that made an archive, short: its commit's first 12 digits, else its version, else "?"."""
    if not isinstance(kit, dict):
        return "?"
    if isinstance(kit.get("commit"), str):
        return shown(kit["commit"], 40)[:12] + ("+" if kit.get("modified") else "")
    return shown(kit.get("version") or "?", 20)


def _sidecar(path: Path) -> dict:
    """The sidecar's fields (a copy of the manifest, written by backup), or {} when it is missing,
    unreadable or not a JSON object: --list shows "?" then, as for any field it lacks."""
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(root) / path, backup_dir(root) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise OperatorError(f"{shown(value)}: no such archive; `invoke backup --list` shows them")


def verify_archive(root: Path, value: str, passphrase_file: str | None = None, as_json: bool = False) -> dict:
    """Read the whole archive: every chunk authenticated, every member's sha256 checked."""
    from posthog_compose.operations import archive

    path = resolve(root, value)
    passphrase = _passphrase_for(path, passphrase_file)
    started = time.monotonic()
    meter = Meter(f"verifying {shown(path.name)}", sys.stderr if as_json else sys.stdout)
    with open(path, "rb") as handle:
        try:
            result = archive.verify(_Counting(handle, meter), passphrase)
            check_manifest(result.manifest)
        except archive.ArchiveError as exc:
            raise OperatorError(describe(path, exc))
    meter.finish()
    manifest = result.manifest
    summary = {"archive": str(path), "ok": True, "seconds": round(time.monotonic() - started, 1),
               "created": manifest.get("created"), "subset": manifest.get("subset"),
               "posthog_version": manifest.get("posthog_version"), "kit": manifest.get("kit"),
               "members": len(result.seen),
               "bytes": sum(m.size for m in result.seen)}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{shown(path.name)}: OK, {len(result.seen)} members ({summary['bytes'] / MIB:,.1f} MiB) match their "
              f"sha256; created {shown(summary['created'])}, PostHog {shown(summary['posthog_version'])}, made by kit "
              f"{described(summary['kit'])}.")
    return summary


def _passphrase_for(path: Path, passphrase_file: str | None) -> bytes | None:
    from posthog_compose.operations import archive

    try:
        encrypted = archive.is_encrypted(path)
    except archive.ArchiveError as exc:
        raise OperatorError(describe(path, exc))
    except OSError as exc:
        raise OperatorError(f"{shown(path)}: cannot read it ({exc.strerror})")
    return read_passphrase(passphrase_file, required=True) if encrypted else None


def describe(path: Path, exc: Exception) -> str:
    from posthog_compose.operations import archive

    if isinstance(exc, archive.WrongPassphrase):
        return (f"{shown(path.name)}: wrong passphrase ({PASSPHRASE_ENV} or --passphrase-file does not open this "
                "archive); nothing was changed")
    return f"{shown(path.name)}: the archive is damaged and cannot be used ({shown(exc, 300)}); nothing was changed"

"""`invoke backup --list` and `--verify`: the archives with what each holds, and an archive read
through (decrypted when encrypted, with the passphrase it needs) and checked member by member.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.operations.backup.contents import BACKUP_DIR, MIB, PASSPHRASE_ENV, backup_dir
from posthog_compose.operations.backup.passphrase import read_passphrase
from posthog_compose.operations.backup.progress import Meter, _Counting
from posthog_compose.operations.backup.retention import archives, sidecar_path


# ----------------------------------------------------------------------------- list and verify
def list_archives(root: Path, as_json: bool = False) -> None:
    directory = backup_dir(root)
    rows, entries = [], []
    for path in archives(directory):
        meta = {}
        try:
            meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        entry = {"archive": str(path.relative_to(root)), "size": path.stat().st_size,
                 "created": meta.get("created", "?"), "subset": meta.get("subset", "?"),
                 "encrypted": meta.get("encrypted"), "posthog_version": meta.get("posthog_version", "?"),
                 "clickhouse_pause_seconds": meta.get("clickhouse_pause_seconds")}
        entries.append(entry)
        rows.append((entry["archive"], entry["created"], f"{entry['size'] / MIB:,.1f} MiB", entry["subset"],
                     {True: "yes", False: "NO"}.get(entry["encrypted"], "?"), str(entry["posthog_version"])))
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        print(f"No archives in {BACKUP_DIR}/ yet; `invoke backup` writes one.")
        return
    from posthog_compose.cli import table

    print(table([("ARCHIVE", "CREATED", "SIZE", "CONTENT", "ENCRYPTED", "POSTHOG"), *rows]))
    print(f"{len(entries)} archive(s); check one with `invoke backup --verify ARCHIVE`.")


def resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(root) / path, backup_dir(root) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise OperatorError(f"{value}: no such archive; `invoke backup --list` shows them")


def verify_archive(root: Path, value: str, passphrase_file: str | None = None, as_json: bool = False) -> dict:
    """Read the whole archive: every chunk authenticated, every member's sha256 checked."""
    from posthog_compose.operations import archive

    path = resolve(root, value)
    passphrase = _passphrase_for(path, passphrase_file)
    started = time.monotonic()
    meter = Meter(f"verifying {path.name}", sys.stderr if as_json else sys.stdout)
    with open(path, "rb") as handle:
        try:
            result = archive.verify(_Counting(handle, meter), passphrase)
        except archive.ArchiveError as exc:
            raise OperatorError(describe(path, exc))
    meter.finish()
    manifest = result.manifest
    summary = {"archive": str(path), "ok": True, "seconds": round(time.monotonic() - started, 1),
               "created": manifest.get("created"), "subset": manifest.get("subset"),
               "posthog_version": manifest.get("posthog_version"), "members": len(result.seen),
               "bytes": sum(m.size for m in result.seen)}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{path.name}: OK, {len(result.seen)} members ({summary['bytes'] / MIB:,.1f} MiB) match their sha256; "
              f"created {summary['created']}, PostHog {summary['posthog_version']}.")
    return summary


def _passphrase_for(path: Path, passphrase_file: str | None) -> bytes | None:
    from posthog_compose.operations import archive

    try:
        encrypted = archive.is_encrypted(path)
    except archive.ArchiveError as exc:
        raise OperatorError(describe(path, exc))
    except OSError as exc:
        raise OperatorError(f"{path}: cannot read it ({exc.strerror})")
    return read_passphrase(passphrase_file, required=True) if encrypted else None


def describe(path: Path, exc: Exception) -> str:
    from posthog_compose.operations import archive

    if isinstance(exc, archive.WrongPassphrase):
        return (f"{path.name}: wrong passphrase ({PASSPHRASE_ENV} or --passphrase-file does not open this archive); "
                "nothing was changed")
    return f"{path.name}: the archive is damaged and cannot be used ({exc}); nothing was changed"

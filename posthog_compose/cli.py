"""Glue between Invoke and the package: operator errors become one line and an exit code, and
plain-text tables for people."""

from __future__ import annotations

import functools
import sys

from invoke import Exit

from posthog_compose.errors import OperatorError


def friendly(body):
    """Run a task body behind the masking layer (no secret reaches the terminal, also from the
    processes it starts), after finishing any file transaction an earlier task left interrupted.

    An OperatorError, a file the task cannot read or write, or Ctrl-C ends the task with one clear
    line; a bug ends it with its traceback, masked like everything else."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        from posthog_compose import ROOT, journal, masking

        with masking.shield(ROOT):
            try:
                journal.recover_files(ROOT)
                return body(c, *args, **kwargs)
            except OperatorError as exc:
                raise Exit(masking.mask(f"error: {exc.message}"), code=exc.code)
            except KeyboardInterrupt:
                raise Exit("interrupted: nothing more was done", code=130)
            except OSError as exc:
                raise Exit(masking.mask(f"error: {os_error_line(exc)}"), code=1)
            except (Exit, SystemExit):
                raise
            except Exception:  # noqa: BLE001 - a bug: show it, masked
                import traceback

                sys.stderr.write(traceback.format_exc())
                raise Exit("error: internal error (the traceback above is masked); please report it", code=2)

    return wrapper


def os_error_line(exc: OSError) -> str:
    """One line for a file the task could not use: which file, what is wrong, how to fix it."""
    import errno

    name = exc.filename or "a file"
    fixes = {
        errno.EISDIR: "is a directory where a file is expected; move it away",
        errno.ENOTDIR: "has a file where a directory is expected; move it away",
        errno.EACCES: "cannot be accessed by this user; check its owner and mode",
        errno.EPERM: "may not be changed (immutable or owned by another user); check `lsattr` and its owner",
        errno.ENOSPC: "could not be written: the disk is full; free some space there (`df -h` shows where)",
        errno.EDQUOT: "could not be written: the disk quota is used up; free some space",
        errno.EROFS: "is on a read-only file system",
        errno.ENOENT: "does not exist",
    }
    return f"{name}: {fixes.get(exc.errno, exc.strerror or str(exc))}; nothing more was done"


def split_list(values) -> list[str]:
    """Options given as repeated flags and/or comma-separated lists, flattened."""
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)

"""Glue between Invoke and the package: operator errors become one line and an exit code, and
plain-text tables for people."""

from __future__ import annotations

import functools

from invoke import Exit

from .errors import OperatorError


def friendly(body):
    """Run a task body; an OperatorError (or Ctrl-C) ends the task with one clear line."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        try:
            return body(c, *args, **kwargs)
        except OperatorError as exc:
            raise Exit(f"error: {exc.message}", code=exc.code)
        except KeyboardInterrupt:
            raise Exit("interrupted: nothing more was done", code=130)
        except OSError as exc:  # a full disk is one line, never a traceback
            import errno

            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise Exit(f"error: no space left on the disk ({exc.filename or 'while writing'}): free space there "
                       "(`df -h`), then run the task again", code=1)

    return wrapper


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

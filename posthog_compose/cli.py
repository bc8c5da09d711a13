"""Glue between Invoke and the package: operator errors become one line and an exit code, and
plain-text tables for people."""

from __future__ import annotations

import functools
import sys

from invoke import Exit

from posthog_compose.errors import OperatorError


def friendly(body=None, *, secret=()):
    """Run a task body behind the masking layer (no secret reaches the terminal, also from the
    processes it starts), after finishing any file transaction an earlier task left interrupted.

    ``secret`` names the options whose value may be a secret (``to``), or is a function of the
    task's arguments naming them (``--value`` only for a secret variable); every ``*_file`` option
    is one as well: a passphrase or a URL typed where a file name belongs. Their values are known
    to the masking layer before the body runs, so no error about them can print them.

    An OperatorError, a file the task cannot read or write, or Ctrl-C ends the task with one clear
    line; a bug ends it with its traceback, masked like everything else."""
    if body is None:
        return functools.partial(friendly, secret=secret)

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        from posthog_compose import ROOT, interrupts, journal, masking

        with masking.shield(ROOT):
            try:
                _mask_secret_options(body, secret, (c, *args), kwargs)  # first: before anything reads them
                with interrupts.acknowledged(body.__name__.replace("_", "-")):  # Ctrl-C said within the second
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


def _mask_secret_options(body, secret, args: tuple, kwargs: dict) -> None:
    """Register what the command line gave the task's secret-bearing options (see ``friendly``)."""
    import inspect

    from posthog_compose import masking

    try:
        bound = inspect.signature(body).bind(*args, **kwargs)
    except TypeError:
        return  # Invoke reports a wrong call itself
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    names = set(secret(arguments) if callable(secret) else secret)
    for name, value in arguments.items():
        if not isinstance(value, str) or not value:
            continue
        if name.endswith("_file"):
            masking.register_file_option(value)
        elif name in names:
            masking.register_option(value)
    masking.register_environment()


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


def whole_number(option: str, value) -> int:
    """An option's value as a whole number, read as every number of the kit is (validators.whole_number:
    ASCII digits only, at most 2^63-1), or one line naming the option. The value itself is not repeated:
    it may be anything."""
    from posthog_compose.configuration.validators import whole_number as read_number

    number = read_number(str(value).strip())
    if number is None:
        raise OperatorError(f"{option} takes a whole number (digits 0-9), e.g. {option} 5")
    return number


def _numbers_as_one_line() -> None:
    """Invoke casts an option to the type of its default (int for --timeout) while it parses the command
    line, before any task runs: a word there ended in a traceback. A ParseError is what Invoke prints as
    one line (and exits 1); the value is checked as whole_number does."""
    from invoke.exceptions import ParseError
    from invoke.parser.argument import Argument

    original = Argument.set_value
    if getattr(original, "numbers_as_one_line", False):
        return

    def set_value(self, value, cast=True):
        if cast and self.kind is int and not isinstance(value, int):
            try:
                value = whole_number(f"--{self.name.replace('_', '-')}", value)
            except OperatorError as exc:
                raise ParseError(f"error: {exc.message}") from None
        return original(self, value, cast)

    set_value.numbers_as_one_line = True
    Argument.set_value = set_value


_numbers_as_one_line()


def value_name(name: str, kind, task: str = "") -> str:
    """What an option's value is, as `invoke --help TASK` shows it: SECONDS, N, FILE, or the option's
    own last word (--domain=DOMAIN), instead of Invoke's STRING and INT."""
    word = name.replace("_", "-").rsplit("-", 1)[-1]
    if kind is int:
        return "SECONDS" if word == "timeout" else "N"
    if word == "to":
        return "URL" if task == "migrate-datastore" else "VERSION"
    return {"file": "FILE", "since": "TIME", "keep": "N", "tail": "N", "verify": "ARCHIVE"}.get(word, word.upper())


def _help_as_operators_read_it() -> None:
    """Invoke shows a positional argument only as an option with a type (`--archive=STRING`): show it
    as typed (`ARCHIVE`, or --archive=ARCHIVE) and name every value by what it is."""
    from invoke.parser.context import ParserContext

    original = ParserContext.help_for
    if getattr(original, "as_operators_read_it", False):
        return

    def help_for(self, flag):
        names, text = original(self, flag)
        arg = self.flags[flag]
        if arg.kind not in (str, int):
            return names, text
        value = value_name(arg.name, arg.kind, self.name or "")
        names = names.replace("=STRING", f"={value}").replace("=INT", f"={value}")
        names = names.replace(" STRING", f" {value}").replace(" INT", f" {value}")
        if arg.positional:
            names = f"{value} (or {names})"
        return names, text

    help_for.as_operators_read_it = True
    ParserContext.help_for = help_for


_help_as_operators_read_it()


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

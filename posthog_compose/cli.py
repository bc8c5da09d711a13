"""Glue between Invoke and the package: operator errors become one line and an exit code, and
output for people that fits the terminal (``wrap``: prose wrapped at spaces with a hanging indent, never
inside a `command` or a path; ``table``: columns that wrap inside their cells). A task decorated with
``friendly(fit=True)`` has every line it prints fitted this way, unless it was asked for --json."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import sys

from invoke import Exit

from posthog_compose.errors import OperatorError


def friendly(body=None, *, secret=(), fit=False):
    """Run a task body behind the masking layer (no secret reaches the terminal, also from the
    processes it starts), after finishing any file transaction an earlier task left interrupted.

    ``secret`` names the options whose value may be a secret (``to``), or is a function of the
    task's arguments naming them (``--value`` only for a secret variable); every ``*_file`` option
    is one as well: a passphrase or a URL typed where a file name belongs. Their values are known
    to the masking layer before the body runs, so no error about them can print them.

    An OperatorError, a file the task cannot read or write, or Ctrl-C ends the task with one clear
    line; a bug ends it with its traceback, masked like everything else.

    ``fit``: every line the task prints on stdout fits the terminal (``wrap``), unless the task was
    asked for --json (a document for machines stays exactly as it is)."""
    if body is None:
        return functools.partial(friendly, secret=secret, fit=fit)

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        from contextlib import nullcontext

        from posthog_compose import ROOT, interrupts, journal, masking

        # Read before the masking layer puts a pipe in front of the terminal.
        fitted = fitting_output(terminal_width()) if fit and not kwargs.get("json") else nullcontext()
        with masking.shield(ROOT), fitted:
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


def confirm_by_name(name: str, to_do: str, unchanged: str, out=None) -> None:
    """Ask the operator to type ``name`` (the deployment's) to ``to_do``; anything else, or no input
    (stdin closed: automation), is an OperatorError that says ``unchanged``. What was typed is echoed
    back escaped and cut short: it may be anything, a pasted secret or a terminal escape."""
    out = out or sys.stdout
    out.write(f"Type the deployment's name ({name}) to {to_do}: ")
    out.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise OperatorError(f"no confirmation (no input): {unchanged}; pass --yes for automation")
    typed = answer.strip()
    if typed != name:
        echoed = "".join(c if c.isprintable() else repr(c)[1:-1] for c in typed)
        echoed = echoed[:40] + ("..." if len(echoed) > 40 else "")
        raise OperatorError(f"confirmation '{echoed}' is not {name!r}: {unchanged}")


def split_list(values) -> list[str]:
    """Options given as repeated flags and/or comma-separated lists, flattened."""
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


# ----------------------------------------------------------------------------- output that fits
#: The width assumed when the output is not a terminal (a pipe, a log file, CI) and COLUMNS is not set.
DEFAULT_WIDTH = 100
#: A word, or a `command in backticks` with its spaces and whatever punctuation clings to it: never broken.
_TOKEN = re.compile(r"(?:`[^`\n]*`|[^\s`])+|`")
#: A label column at the start of a line (`FAIL   `, `ok       memory`): continuation lines align after it.
_LABEL = re.compile(r"^(\S+(?: \S+)?) {2,}")


def terminal_width() -> int:
    """The terminal's columns (COLUMNS when set), or DEFAULT_WIDTH when the output is not a terminal."""
    import shutil

    return max(20, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def wrap(text: str, width: int | None = None) -> str:
    """``text`` with every line that is wider than ``width`` (the terminal's) wrapped at spaces. A
    continuation line is indented under the text it continues: after a list bullet (`- `), after a label
    column (`FAIL   `), else two spaces more than the line. A word, a path or a `command in backticks` is
    never broken: only one longer than the width on its own can stick out. Lines with a carriage return or
    an escape sequence (a redrawn progress line) and a command shown as it runs (`$ ...`, copied as it is)
    are left as they are."""
    width = width or terminal_width()
    return "\n".join(line for original in text.split("\n") for line in _wrap_line(original, width))


def _wrap_line(line: str, width: int) -> list[str]:
    if len(line) <= width or "\r" in line or "\x1b" in line or line.lstrip().startswith("$ "):
        return [line]  # a redrawn progress line, or a command shown as it runs (`$ docker ...`): as it is
    lead = line[:len(line) - len(line.lstrip())]
    body = line[len(lead):]
    tokens = [(match.start(), match.group()) for match in _TOKEN.finditer(body)]
    if not tokens:
        return [line]
    hanging = _hanging(lead, body, width)
    lines: list[str] = []
    current, end = lead + tokens[0][1], tokens[0][0] + len(tokens[0][1])
    for start, token in tokens[1:]:
        gap = body[end:start]
        if len(current) + len(gap) + len(token) <= width:
            current += gap + token
        else:
            lines.append(current)
            current = hanging + token
        end = start + len(token)
    lines.append(current)
    return lines


def _hanging(lead: str, body: str, width: int) -> str:
    """The indentation of a wrapped line's continuation lines (at most a third of the width)."""
    bullet = re.match(r"^[-*!] ", body)
    label = _LABEL.match(body)
    extra = len(bullet.group()) if bullet else len(label.group()) if label else 2
    if len(lead) + extra > width // 3:
        extra = 2 if len(lead) + 2 <= width // 3 else 0
    return lead + " " * extra


class _FittingStream(io.TextIOBase):
    """A text stream that passes each complete line on fitted to ``width`` (``wrap``); a partial line
    (a prompt, a progress line redrawn in place) goes on as it is when the stream is flushed."""

    def __init__(self, target, width: int) -> None:
        self._target = target
        self._width = width
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, self._pending = self._pending.rsplit("\n", 1)
            self._target.write(wrap(done, self._width) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._target.write(self._pending)
            self._pending = ""
        self._target.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self):  # noqa: D401 - what print() and Invoke ask of a stream
        return getattr(self._target, "encoding", "utf-8")


@contextlib.contextmanager
def fitting_output(width: int):
    """While the block runs, every line printed on stdout is fitted to ``width`` (``wrap``)."""
    previous = sys.stdout
    sys.stdout = _FittingStream(previous, width)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        sys.stdout = previous


def table(rows: list[tuple[str, ...]], width: int | None = None) -> str:
    """Rows as left-aligned columns two spaces apart (the first row is the header), fitted to ``width``
    (the terminal's): the widest columns are narrowed and their cells wrapped inside the column, at spaces
    and after commas; when even that cannot fit (a digest is one long word), each row is shown as a block
    of `HEADER: value` lines instead. A cell is never cut."""
    width = width or terminal_width()
    count = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(count)]
    floors = [max(len(rows[0][i]), max((_longest_piece(row[i]) for row in rows[1:]), default=0))
              for i in range(count)]
    while sum(widths) + 2 * (count - 1) > width:
        shrinkable = [i for i in range(count) if widths[i] > floors[i]]
        if not shrinkable:
            return _stacked(rows, width)
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    lines = []
    for row in rows:
        cells = [_cell_lines(cell, column) for cell, column in zip(row, widths)]
        for depth in range(max(len(cell) for cell in cells)):
            parts = [(cell[depth] if depth < len(cell) else "").ljust(column) for cell, column in zip(cells, widths)]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


#: The pieces a cell breaks into: words and comma-separated items (the comma stays with its item), and
#: the spaces between them.
_PIECE = re.compile(r"[^ ,]*,|[^ ,]+| +")


def _longest_piece(cell: str) -> int:
    return max((len(piece) for piece in _PIECE.findall(cell) if piece.strip()), default=0)


def _cell_lines(cell: str, width: int) -> list[str]:
    """A cell's text in lines of at most ``width``, broken at spaces and after commas."""
    if len(cell) <= width:
        return [cell]
    lines, current, space = [], "", ""
    for piece in _PIECE.findall(cell):
        if not piece.strip():
            space = piece
            continue
        if current and len(current + space + piece) > width:
            lines.append(current)
            current = piece
        else:
            current += space + piece
        space = ""
    return lines + [current]


def _stacked(rows: list[tuple[str, ...]], width: int) -> str:
    """Each row as one wrapped line for a terminal too narrow for the columns: its first cell, then
    `header value` for each other cell that says something (`-` and empty cells are left out), apart by
    ` | ` so that no punctuation clings to a value that is copied (a digest, a path)."""
    header, lines = rows[0], []
    for row in rows[1:]:
        parts = [f"{name.lower()} {cell}" for name, cell in zip(header[1:], row[1:]) if cell.strip() not in ("", "-")]
        lines.append(wrap(" | ".join([row[0], *parts]), width))
    return "\n".join(lines)

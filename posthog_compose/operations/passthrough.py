"""`invoke compose -- ARGS`: the kit's own Compose, run on this deployment exactly as typed.

A host set up the README's way has no `docker compose` plugin: the kit brings its Compose inside
`.venv` (compose.compose_binary()). This pass-through runs that binary with the deployment's project
directory (so Compose reads the deployment's `.env`: its COMPOSE_FILE, COMPOSE_PROFILES and
COMPOSE_PROJECT_NAME), hands it every argument unchanged, leaves stdin and the terminal to it (an
interactive `exec db psql` works) and ends with its exit code.

Masking: everything printed to a terminal, everything on stderr, and Compose's own output wherever
it goes passes through the masking layer (`config` prints every secret of `.env`, `exec web env` the
container's). One exception: the stdout of a program run in a container (`exec`, `run`, `cp ... -`,
`export`) redirected to a file or a pipe is passed byte for byte, because that is where binary
streams go (`exec -T db pg_dump --format=custom > file.dump`, a tar) and the masking layer, which
works on decoded lines of text, would corrupt them. On a terminal the masking layer's pty keeps
interactive programs working (`exec db psql`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from posthog_compose.errors import OperatorError

# Compose's global options that take a value, to find the subcommand after them.
_GLOBAL_VALUE_OPTIONS = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory",
                         "--ansi", "--progress", "--parallel"}
# Subcommands whose stdout is a container program's stream, possibly binary.
_STREAMS = {"exec", "run", "cp", "export"}

USAGE = ("`invoke compose` needs Compose's arguments after `--`, e.g. `invoke compose -- ps --all` "
         "or `invoke compose -- exec db psql -U posthog`")


def arguments(argv: list[str], remainder: str) -> list[str]:
    """The words after the first standalone `--` of the command line, exactly as typed.

    Invoke gives a task only that remainder joined into one string, which loses the shell's quoting
    (`sh -c 'clickhouse-client -q "SELECT 1"'` would come apart), so the words are taken from the
    process's own argv when it is the command line Invoke parsed; else (Invoke run from Python with
    another argv) from the remainder, split at spaces."""
    if "--" in argv:
        words = list(argv[argv.index("--") + 1:])
        if " ".join(words) == remainder:
            return words
    return remainder.split()


def subcommand(words: list[str]) -> str | None:
    """Compose's subcommand in ``words`` (after its global options), or None."""
    index = 0
    while index < len(words):
        word = words[index]
        if not word.startswith("-"):
            return word
        index += 2 if word in _GLOBAL_VALUE_OPTIONS else 1
    return None


def raw_stdout(words: list[str]) -> bool:
    """Whether stdout is left byte for byte: a container program's output, not to a terminal."""
    return not _isatty(1) and subcommand(words) in _STREAMS


def main(root: Path, words: list[str]) -> int:
    """Run Compose with ``words`` on the deployment at ``root``; its exit code (one line and 1 or
    more when it cannot be run at all)."""
    from posthog_compose import journal, masking

    terminal = os.dup(1) if _isatty(1) else None  # the terminal itself, before the mask's pty replaces fd 1
    try:
        with masking.shield(root, fds=(2,) if raw_stdout(words) else (1, 2)):
            try:
                if not words:
                    raise OperatorError(USAGE)
                journal.recover_files(root)  # as every task: never run Compose on a half-written .env
                return _call(command(root, words), terminal)
            except OperatorError as exc:
                print(masking.mask(f"error: {exc.message}"), file=sys.stderr, flush=True)
                return exc.code
            except KeyboardInterrupt:
                print("interrupted: nothing more was done", file=sys.stderr, flush=True)
                return 130
    finally:
        if terminal is not None:
            os.close(terminal)


def command(root: Path, words: list[str]) -> list[str]:
    """What runs: compose.command() for the deployment, then the operator's words untouched."""
    from posthog_compose.configuration import compose

    return compose.command(root, *words)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _call(cmd: list[str], terminal: int | None) -> int:
    """Run ``cmd`` in the foreground and return its exit code (128+N when signal N ended it).

    Ctrl-C and a resized window reach Compose directly (it shares the terminal's process group);
    meanwhile this process only waits, so Compose decides how a Ctrl-C ends (`logs -f` stops,
    psql cancels its query) and its code is the one returned."""
    from posthog_compose.operations.engine import not_installed

    handlers = {signal.SIGINT: signal.signal(signal.SIGINT, _wait_for_child)}
    if terminal is not None and hasattr(signal, "SIGWINCH"):
        handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda *_: _copy_size(terminal, 1))
    try:
        try:
            process = subprocess.Popen(cmd)
        except FileNotFoundError:
            raise OperatorError(not_installed(cmd[0], "compose"))
        code = process.wait()
    finally:
        for number, previous in handlers.items():
            signal.signal(number, previous)
    return 128 - code if code < 0 else code


def _wait_for_child(signum, frame) -> None:
    """SIGINT while Compose runs: Compose got it as well and ends itself; a handler rather than
    SIG_IGN, because an ignored signal stays ignored in a child while a handler is reset at exec."""


def _copy_size(source: int, target: int) -> None:
    """The terminal's new size onto the masking pty Compose writes to (it reads its size there)."""
    import fcntl
    import termios

    try:
        fcntl.ioctl(target, termios.TIOCSWINSZ, fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass

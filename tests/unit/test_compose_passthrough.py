"""`invoke compose -- ARGS`: the kit's Compose with the deployment's project directory, every argument
as typed, the exit code kept, the terminal handed over (interactive `exec`), and secrets masked
except in a container program's stream redirected to a file or a pipe (binary dumps stay intact).

A stand-in Compose (POSTHOG_COMPOSE_BINARY, the kit's own override) records what it was given and
prints what a real one would: no engine is needed."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_compose.operations import passthrough
from tests.conftest import run_invoke

# $1 $2 are --project-directory DIR; then the operator's words. Prints them one per line between
# brackets, the terminal state, the deployment's PostgreSQL password (as `config` would), and for
# `exec`, bytes that are not UTF-8; ends with the code in STANDIN_EXIT (or by signal STANDIN_KILL).
STANDIN = r"""#!/bin/sh
echo "first=$1"
printf '[%s]\n' "$@"
[ -t 0 ] && echo "stdin is a terminal"
[ -t 1 ] && echo "stdout is a terminal"
password=$(sed -n 's/^POSTGRES_PASSWORD=//p' "$2/.env")
echo "POSTGRES_PASSWORD: $password"
echo "stderr says $password" >&2
if [ "$3" = "exec" ]; then printf '\000\377\376binary\200\n'; fi
if [ -n "$STANDIN_READ" ]; then read line; echo "read: $line"; fi
if [ -n "$STANDIN_KILL" ]; then kill -"$STANDIN_KILL" $$; fi
exit "${STANDIN_EXIT:-0}"
"""


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    path = tmp_path / "compose-standin"
    path.write_text(STANDIN)
    path.chmod(0o755)
    return path


def password_of(root: Path) -> str:
    return re.search(r"^POSTGRES_PASSWORD=(.*)$", (root / ".env").read_text(), re.M).group(1)


def run(root: Path, standin: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(standin), **extra}
    env.pop("POSTHOG_COMPOSE_NO_FD_MASK", None)
    return run_invoke(root, "compose", "--", *args, env=env)


def run_bytes(root: Path, standin: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(standin), "POSTHOG_COMPOSE_ROOT": str(root),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "invoke", "compose", "--", *args], cwd=root, env=env,
                          capture_output=True, timeout=120)


def test_every_word_reaches_compose_as_typed_after_the_project_directory(deployed, standin):
    words = ["--profile", "local", "exec", "-T", "clickhouse", "sh", "-c", 'clickhouse-client -q "SELECT 1"', "--",
             "-U", "two  spaces", "", "--all"]
    result = run(deployed, standin, "ps", "--all")
    assert result.returncode == 0, result.stderr
    result = run(deployed, standin, *words, STANDIN_EXIT="7")
    assert result.returncode == 7, result.stdout + result.stderr
    given_words = re.findall(r"^\[(.*)\]$", result.stdout, re.M)
    assert given_words == ["--project-directory", str(deployed), *words]


def test_compose_output_and_errors_are_masked(deployed, standin):
    password = password_of(deployed)
    result = run(deployed, standin, "config")
    assert result.returncode == 0
    assert "POSTGRES_PASSWORD: ***" in result.stdout and "stderr says ***" in result.stderr
    assert password not in result.stdout + result.stderr


def test_a_container_programs_stream_into_a_pipe_is_passed_byte_for_byte(deployed, standin):
    """`exec -T db pg_dump --format=custom > file.dump` must not be altered by the text masking."""
    password = password_of(deployed)
    result = run_bytes(deployed, standin, "exec", "-T", "db", "pg_dump")
    assert result.returncode == 0, result.stderr
    assert b"\x00\xff\xfebinary\x80\n" in result.stdout
    assert password.encode() not in result.stderr and b"stderr says ***" in result.stderr


def test_an_exit_by_signal_is_told_as_the_shell_tells_it(deployed, standin):
    assert run(deployed, standin, "logs", "--follow", STANDIN_KILL="TERM").returncode == 128 + 15


def test_without_arguments_one_line_says_the_form(deployed, standin):
    result = run(deployed, standin)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {passthrough.USAGE}"
    assert "first=" not in result.stdout


def test_compose_gets_the_terminal_and_what_the_terminal_shows_is_masked(deployed, standin):
    """`invoke compose -- exec db psql` is interactive: stdin and stdout are the terminal for Compose,
    what is typed reaches it, and the secrets it prints are masked on the screen."""
    password = password_of(deployed)
    main, secondary = os.openpty()
    env = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(standin), "POSTHOG_COMPOSE_ROOT": str(deployed),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "STANDIN_READ": "1"}
    env.pop("POSTHOG_COMPOSE_NO_FD_MASK", None)
    process = subprocess.Popen([sys.executable, "-m", "invoke", "compose", "--", "exec", "db", "psql"], cwd=deployed,
                               env=env, stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True)
    os.close(secondary)
    shown = b""
    deadline = time.monotonic() + 60
    typed = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        if not typed and b"POSTGRES_PASSWORD" in shown:
            os.write(main, b"select 1;\n")
            typed = True
        if process.poll() is not None and not ready:
            break
    process.wait(timeout=30)
    os.close(main)
    text = shown.decode(errors="replace")
    assert process.returncode == 0, text
    assert "stdin is a terminal" in text and "stdout is a terminal" in text
    assert "read: select 1;" in text
    assert "POSTGRES_PASSWORD: ***" in text and password not in text


@settings(max_examples=200, deadline=None)
@given(before=st.lists(st.sampled_from(["invoke", "--echo", "compose", "-e"]), max_size=3),
       words=st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=12),
                      max_size=8))
def test_the_words_after_the_first_double_dash_are_taken_as_typed(before, words):
    """Whatever the words (spaces, quotes, dashes, another `--`), Compose gets them as the shell split them."""
    argv = ["/srv/posthog/.venv/bin/invoke", *before, "--", *words]
    assert passthrough.arguments(argv, " ".join(words)) == words


def test_the_remainder_is_used_when_argv_is_not_the_command_line_parsed():
    assert passthrough.arguments(["pytest", "-q"], "ps --all") == ["ps", "--all"]


@pytest.mark.parametrize("words, expected", [
    (["ps"], "ps"), (["--profile", "local", "exec", "db"], "exec"), (["-f", "x.yml", "run", "web"], "run"),
    (["--dry-run", "up"], "up"), (["--project-name", "other", "config"], "config"), ([], None),
])
def test_the_subcommand_is_found_after_composes_global_options(words, expected):
    assert passthrough.subcommand(words) == expected

"""Output for people fits the terminal: `cli.wrap` wraps prose at spaces with a hanging indent and never
inside a word, a path or a `command`; `cli.table` narrows columns and wraps cells (or shows each row as
one line); the tasks decorated with `friendly(fit=True)` (config-check, harden, restore, backup, status,
up) print nothing wider than COLUMNS (100 when not a terminal), and their --json stays as it was."""

from __future__ import annotations

import io
import json
import os
import re

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose import cli
from posthog_compose.configuration import manifest
from posthog_compose.operations import bootstrap
from tests.conftest import run_invoke, set_env

WORD = st.from_regex(r"[A-Za-z0-9_.:/=(),;'-]{1,24}", fullmatch=True)
LONG_WORD = st.from_regex(r"[a-z0-9/._-]{30,240}", fullmatch=True)  # a path or digest: may be wider than the width
COMMAND = st.lists(st.from_regex(r"[a-z0-9=._-]{1,12}", fullmatch=True), min_size=1, max_size=6).map(
    lambda words: "`" + " ".join(words) + "`")
GAP = st.sampled_from([" ", " ", " ", "  ", "   "])
PREFIX = st.sampled_from(["", "  ", "  - ", "FAIL   secrets: ", "ok       memory          ", "warning .env:12 ",
                          "    ", "! "])


@st.composite
def messages(draw):
    tokens = draw(st.lists(st.one_of(WORD, WORD, WORD, COMMAND, LONG_WORD), min_size=1, max_size=60))
    text = draw(PREFIX) + tokens[0]
    for token in tokens[1:]:
        text += draw(GAP) + token
    return text, tokens


def _tokens(line: str) -> list[str]:
    return cli._TOKEN.findall(line)


@settings(max_examples=200, deadline=None)
@given(message=messages(), width=st.integers(min_value=60, max_value=200))
def test_wrapped_lines_fit_and_keep_every_word_in_order(message, width):
    """Property: no line is wider than the width unless it holds one unbreakable token that is (after the
    hanging indent); joining the lines gives back the words in order; a `command` is never broken."""
    text, tokens = message
    lines = cli.wrap(text, width).split("\n")
    for line in lines:
        assert len(line) <= width or len(_tokens(line)) == 1, (width, line)
    assert " ".join(lines).split() == text.split()
    for token in tokens:
        if token.startswith("`"):
            assert any(token in line for line in lines), token
    if len(text) <= width:
        assert lines == [text]


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(WORD, WORD, st.one_of(WORD, LONG_WORD), st.lists(WORD, max_size=4).map(", ".join),
                                st.lists(WORD, max_size=5).map(" ".join)), min_size=1, max_size=8),
       width=st.integers(min_value=60, max_value=200))
def test_tables_fit_the_width_and_lose_no_cell(rows, width):
    """Property: a table is as wide as the width at most (but for one unbreakable cell), and every word
    of every cell is in it."""
    header = ("SERVICE", "STATE", "IMAGE", "PORTS", "NOTE")
    text = cli.table([header, *rows], width)
    for line in text.split("\n"):
        assert len(line) <= width or len(_tokens(line.strip())) == 1 or max(
            len(token) for token in re.split(r"[ ,]", line)) > width // 3, (width, line)
    shown = " ".join(text.split())
    for row in rows:
        for cell in row:
            for word in cell.replace(",", " ").split():
                assert word in shown, (word, text)


def test_a_table_that_fits_is_unchanged():
    rows = [("SERVICE", "STATE"), ("web", "running"), ("db", "exited (1)")]
    assert cli.table(rows, 100) == "SERVICE  STATE\nweb      running\ndb       exited (1)"


def test_a_narrow_terminal_wraps_cells_and_then_shows_rows_as_lines():
    rows = [("SERVICE", "PORTS", "IMAGE"),
            ("proxy", "0.0.0.0:443->443/tcp,0.0.0.0:80->80/tcp", "caddy:2.8.4-alpine")]
    assert cli.table(rows, 50).split("\n") == ["SERVICE  PORTS                  IMAGE",
                                               "proxy    0.0.0.0:443->443/tcp,  caddy:2.8.4-alpine",
                                               "         0.0.0.0:80->80/tcp"]
    assert cli.table(rows, 30).split("\n") == ["proxy | ports",
                                               "  0.0.0.0:443->443/tcp,0.0.0.0:80->80/tcp",
                                               "  | image caddy:2.8.4-alpine"]


def test_the_fitting_stream_passes_prompts_and_redrawn_lines_as_they_are():
    target = io.StringIO()
    stream = cli._FittingStream(target, 20)
    stream.write("Type the deployment's name (posthog) to delete the data: ")
    stream.flush()
    assert target.getvalue() == "Type the deployment's name (posthog) to delete the data: "
    stream.write("\r[ 12s] 5/8 ready | starting: web, worker | waiting: plugins")
    stream.flush()
    stream.write("\n")
    stream.write("one two three four five six\n")
    assert target.getvalue().endswith("one two three four\n  five six\n")


# ----------------------------------------------------------------------------- the tasks
@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest.load(repo))
    return repo


def _wide_lines(text: str, width: int) -> list[str]:
    return [line for line in text.split("\n") if len(line) > width and len(_tokens(line)) > 1]


def test_config_check_fits_the_terminal_and_its_json_is_unchanged(deployment):
    # Warnings with long messages and fixes (a custom image tag, a moving tag, secure cookies over http).
    set_env(deployment, POSTHOG_IMAGE="registry.example.com/posthog:my-build", REDIS_IMAGE="redis:latest",
            SITE_URL="http://192.168.1.20:8080", SECURE_COOKIES="false", LOG_MAX_FILE="500")
    for columns in ("60", "100"):
        shown = run_invoke(deployment, "config-check", env={**os.environ, "COLUMNS": columns})
        assert shown.stdout.count("\n") > 3, shown.stdout + shown.stderr
        assert _wide_lines(shown.stdout, int(columns)) == [], shown.stdout
    narrow = run_invoke(deployment, "config-check", "--json", env={**os.environ, "COLUMNS": "60"}).stdout
    wide = run_invoke(deployment, "config-check", "--json", env={**os.environ, "COLUMNS": "300"}).stdout
    assert narrow == wide and json.loads(narrow)


def test_without_columns_output_that_is_not_a_terminal_fits_100(deployment):
    set_env(deployment, POSTHOG_IMAGE="registry.example.com/posthog:my-build", REDIS_IMAGE="redis:latest")
    environ = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    shown = run_invoke(deployment, "config-check", env=environ)
    assert any(len(line) > 80 for line in shown.stdout.split("\n")), shown.stdout
    assert _wide_lines(shown.stdout, 100) == [], shown.stdout


def test_harden_check_fits_the_terminal(deployment, tmp_path):
    fake = tmp_path / "fake-compose"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    environ = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(fake), "COLUMNS": "72"}
    shown = run_invoke(deployment, "harden", "--check", env=environ)
    assert "harden --check:" in shown.stdout and _wide_lines(shown.stdout, 72) == [], shown.stdout
    as_json = run_invoke(deployment, "harden", "--check", "--json", env=environ)
    assert any(len(line) > 72 for line in as_json.stdout.split("\n"))  # a document for machines: as it was
    json.loads(as_json.stdout)


def test_status_fits_the_terminal(deployment, tmp_path):
    """A fake Compose reports the services (one with two published ports); the table and every line
    after it fit 70 columns."""
    rows = [{"Service": name, "State": "running", "Health": "healthy", "ExitCode": 0,
             "Status": "Up 5 minutes (healthy)", "Image": f"registry.example.com/team/{name}-image:1.2.3-alpine",
             "Publishers": [{"URL": "0.0.0.0", "TargetPort": 80, "PublishedPort": 80, "Protocol": "tcp"},
                            {"URL": "0.0.0.0", "TargetPort": 443, "PublishedPort": 443, "Protocol": "tcp"}]}
            for name in manifest.SERVICES]
    fake = tmp_path / "fake-compose"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = ps ] && { cat <<'EOF'\n"
                    + "\n".join(json.dumps(row) for row in rows) + "\nEOF\nexit 0; }; done\nexit 0\n")
    fake.chmod(0o755)
    environ = {**os.environ, "POSTHOG_COMPOSE_BINARY": str(fake), "COLUMNS": "70",
               "DOCKER_HOST": "unix:///nonexistent.sock"}
    shown = run_invoke(deployment, "status", env=environ)
    assert "services running" in shown.stdout, shown.stdout + shown.stderr
    assert _wide_lines(shown.stdout, 70) == [], shown.stdout


# --- the typed confirmation ---------------------------------------------------------------------------------

@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_a_typed_confirmation_passes_only_for_the_name_and_echoes_any_other_answer_on_one_short_safe_line(typed):
    import sys

    from posthog_compose.errors import OperatorError

    answer = typed.split("\n")[0].strip()  # the first line is the answer
    out, saved = io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(typed + "\n")
    try:
        cli.confirm_by_name("posthog", "delete the data", "nothing was deleted", out)
        assert answer == "posthog"
    except OperatorError as exc:
        assert answer != "posthog"
        assert exc.message.endswith(": nothing was deleted") and len(exc.message) < 140
        assert exc.message.isprintable(), exc.message  # no line break or terminal escape from what was typed
    finally:
        sys.stdin = saved
    assert out.getvalue() == "Type the deployment's name (posthog) to delete the data: "

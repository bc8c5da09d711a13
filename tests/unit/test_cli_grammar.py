"""One CLI grammar: short flags mean one thing everywhere, destructive options have none, -h is
help on every task, and every `invoke ...` command the package prints parses against the real
collection with Invoke's own parser."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest
from hypothesis import given, settings, strategies as st
from invoke import Collection, ParserContext, Program
from invoke.parser import ParseError, Parser

from tests.conftest import REPO, run_invoke

# Options that destroy data or skip a safety step: never reachable through a one-letter typo.
DESTRUCTIVE = {"volumes", "yes", "force", "rotate", "rotate_secrets", "skip_backup", "allow_latest", "pin_digest"}


def _collection() -> Collection:
    import tasks

    importlib.reload(tasks)
    return Collection.from_module(tasks)


def _arguments(collection: Collection):
    for name in collection.task_names:
        for argument in collection[name].get_arguments(ignore_unknown_help=True):
            yield name, argument


def _parse(collection: Collection, command: str):
    parser = Parser(initial=ParserContext(args=Program().core_args()), contexts=collection.to_contexts())
    return parser.parse_argv(shlex.split(command))


def test_a_short_flag_means_the_same_option_on_every_task():
    meaning: dict[str, tuple[str, str]] = {}
    for task_name, argument in _arguments(_collection()):
        for short in (n for n in argument.names if len(n) == 1):
            first = meaning.setdefault(short, (argument.name, task_name))
            assert first[0] == argument.name, f"-{short} is --{first[0]} on {first[1]} but --{argument.name} on {task_name}"


def test_destructive_options_and_help_have_no_short_flag():
    seen = set()
    for task_name, argument in _arguments(_collection()):
        seen.add(argument.attr_name or argument.name)
        shorts = [n for n in argument.names if len(n) == 1]
        assert "h" not in shorts, f"{task_name}: -h must stay help, not --{argument.name}"
        if (argument.attr_name or argument.name) in DESTRUCTIVE:
            assert not shorts, f"{task_name} --{argument.name} is destructive and has -{shorts[0]}"
    assert {"volumes", "yes", "force"} <= seen  # the test looks at the real options


@pytest.mark.parametrize("task_name", ["upgrade", "down", "harden", "add-env-var", "remove-env-var", "logs"])
def test_dash_h_prints_help_on_every_task(task_name):
    result = run_invoke(REPO, task_name, "-h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: inv[oke] [--core-opts] {task_name}"), result.stdout[:300]
    assert "history" not in result.stdout.split("Options:")[0].lower() or task_name != "upgrade"


def test_every_option_has_help_in_invoke_help():
    for task_name, argument in _arguments(_collection()):
        assert argument.help, f"{task_name} --{argument.name} has no help="


_COMMAND = re.compile(r"`invoke ([^`]+)`")


def _printed_commands() -> list[tuple[str, str]]:
    """Every `invoke ...` command quoted in the package's messages and hints and in tasks.py.
    f-string fields become a sample value (a variable or service name)."""
    commands = []
    for path in sorted((REPO / "posthog_compose").rglob("*.py")) + [REPO / "tasks.py"]:
        for match in _COMMAND.finditer(path.read_text(encoding="utf-8")):
            command = match.group(1)
            if command.startswith("{"):
                continue  # a task name filled in by the generator (docs.py): checked by the reference test
            command = re.sub(r"\{[^}]*\}", "web", command)
            commands.append((path.name, command))
    return commands


def test_the_scan_finds_the_known_hints():
    found = {command for _, command in _printed_commands()}
    assert "logs -s zookeeper" in found and "config-check" in found and len(found) > 15


@pytest.mark.parametrize("where,command", _printed_commands())
def test_every_printed_command_parses(where, command):
    collection = _collection()
    if command in collection.task_names or command in [a for t in collection.task_names for a in collection[t].aliases]:
        return  # the task named in prose (`invoke add-env-var`), not a command line
    try:
        result = _parse(collection, command)
    except ParseError as exc:
        pytest.fail(f"{where}: `invoke {command}` does not parse: {exc}")
    tasks = [context.name for context in result[1:]]
    assert len(tasks) <= 1 or command.startswith("--"), f"{where}: `invoke {command}` runs several tasks: {tasks}"


@pytest.mark.parametrize("command", ["logs web --tail 200", "logs zookeeper", "upgrade -t x", "down -y", "down -v -y"])
def test_the_parser_check_rejects_the_old_forms(command):
    with pytest.raises(ParseError):
        _parse(_collection(), command)


def test_dash_v_on_down_is_verbose_not_volumes():
    result = _parse(_collection(), "down -v")
    assert result[1].args["verbose"].value is True and result[1].args["volumes"].value is False


def test_the_task_reference_shows_every_flag_and_real_defaults():
    from posthog_compose.documents import docs

    page = docs.task_reference(REPO)
    assert "inspect._empty" not in page and "<class" not in page
    for task_name, argument in _arguments(_collection()):
        section = page.split(f"## `invoke {task_name}`", 1)[1].split("\n## ", 1)[0]
        for name in argument.names:
            flag = f"`-{name}`" if len(name) == 1 else f"`--{name}`"
            if argument.positional:
                flag = f"`{argument.name.upper()}`"
            assert flag in section, f"{task_name}: {flag} missing from the task reference"
    assert "| `-s`, `--service` (repeatable) |" in page and "| `--timeout` | `600` |" in page


def _documented_commands() -> list[tuple[str, str]]:
    """Every `invoke ...` command in README.md and the handbook: inline code and lines of code blocks
    (continuation lines joined, pipes and comments cut off). Placeholders in angle brackets become a
    value."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        commands = re.findall(r"`(?:\.venv/bin/)?invoke ([^`]+)`", text)
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                match = re.match(r"\s*(?:\$ )?(?:\.venv/bin/)?invoke (.+)", line)
                if match:
                    commands.append(match.group(1))
        for command in commands:
            command = re.split(r"\s(?:\||&&|;|#|>)", command)[0].strip()
            command = re.sub(r"<[^>]*>", "X", command)
            found.append((str(path.relative_to(REPO)), command))
    return found


@pytest.mark.parametrize("where,command", _documented_commands())
def test_every_documented_command_parses(where, command):
    collection = _collection()
    if command in collection.task_names or command == "TASK":
        return  # a task named in prose, or the placeholder of "invoke TASK"
    argv = shlex.split(command)
    try:
        _parse(collection, command)
    except ParseError as exc:
        # `invoke upgrade --to` in prose names the option; the option must exist.
        if "needed value and was not given one" in str(exc) and argv[-1].startswith("--"):
            arguments = {f"--{name}" for _, argument in _arguments(collection) for name in argument.names}
            assert argv[-1] in arguments, f"{where}: `invoke {command}` names an option that does not exist"
            return
        pytest.fail(f"{where}: `invoke {command}` does not parse: {exc}")


def test_the_documented_scan_finds_the_readme_commands():
    found = {(where, command) for where, command in _documented_commands()}
    assert ("README.md", "up") in found and len(found) > 40


# ----------------------------------------------------------------------------- numbers on the command line
NUMBER_OPTIONS = [("up", "--timeout"), ("upgrade", "--timeout"), ("restore", "--timeout"), ("proxy", "--timeout"),
                  ("migrate-datastore", "--timeout"), ("backup", "--keep")]


@pytest.mark.parametrize("task, option", NUMBER_OPTIONS)
def test_a_number_option_given_a_word_is_one_line_and_nothing_runs(deployed, task, option):
    """Invoke casts --timeout to an int while it parses, before any task runs; --keep is parsed by the
    task. Either way: one line naming the option, exit 1, no traceback, .env untouched."""
    env_before = (deployed / ".env").read_bytes()
    extra = {"restore": ["some.backup"], "migrate-datastore": ["postgres"]}.get(task, [])
    result = run_invoke(deployed, task, *extra, option, "soon")
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert output == f"error: {option} takes a whole number (digits 0-9), e.g. {option} 5", output
    assert (deployed / ".env").read_bytes() == env_before


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=12).filter(lambda text: not (text.isascii() and text.strip().isdigit())))
def test_whole_numbers_are_ascii_digits_and_anything_else_is_refused_without_being_repeated(text):
    from posthog_compose.cli import whole_number
    from posthog_compose.errors import OperatorError

    with pytest.raises(OperatorError) as refused:
        whole_number("--keep", text)
    assert refused.value.message == "--keep takes a whole number (digits 0-9), e.g. --keep 5"


def test_digits_of_other_scripts_are_not_numbers_here():
    """Python's int() reads '٣' as 3 and '³' fails later; the kit reads ASCII digits only, as Compose and
    the servers do."""
    from posthog_compose.cli import whole_number
    from posthog_compose.errors import OperatorError

    assert whole_number("--keep", "12") == 12 and whole_number("--keep", " 7 ") == 7
    for text in ("٣", "３", "1e3", "-1", "0x10", "1_000"):
        with pytest.raises(OperatorError):
            whole_number("--keep", text)


def test_help_shows_positional_arguments_as_typed_and_values_by_what_they_are(repo):
    """`invoke --help restore` showed the archive as `--archive=STRING` (an option with a type)."""
    from tests.conftest import run_invoke

    shown = run_invoke(repo, "--help", "restore").stdout
    assert "ARCHIVE (or --archive=ARCHIVE)" in shown and "--passphrase-file=FILE" in shown
    assert "--timeout=SECONDS" in shown
    every = "".join(run_invoke(repo, "--help", task).stdout for task in ("backup", "logs", "upgrade",
                                                                          "migrate-datastore", "add-env-var"))
    assert "STRING" not in every and "=INT" not in every
    assert "--keep=N" in every and "--tail=N" in every and "--to=VERSION" in every and "--to=URL" in every
    assert "NAME (or --name=NAME)" in every and "DATASTORE (or --datastore=DATASTORE)" in every

"""Every command the README and the handbook show works as written.

Commands are extracted from README.md and docs/*.md (fenced code blocks, cron lines, systemd
units' Exec lines, and inline code that starts with `invoke` or `docker compose`). Each must run on
a host set up the README's way: the Docker engine without any Compose plugin, and the kit in `.venv`.
So `docker compose` and `docker-compose` are refused (`invoke compose -- ...` runs the kit's own),
and so is a bare `invoke` where nothing activated `.venv` (a cron line, a systemd unit, a block that
installs the kit). Each `invoke ...` command is parsed by Invoke's own parser against the real task
collection in tasks.py, as loaded at run time, so the test follows whatever grammar tasks.py
declares: an unknown task, an unknown flag or a missing value fails. What follows
`invoke compose --` is checked against the kit's Compose binary's help (subcommand and flags). The
offline commands (`invoke --list`, `invoke --help TASK`, `invoke config-check` on a fresh
`invoke init`, `invoke generate --check`, `invoke compose -- config`) are run for real against a copy
of the repository, on a README host's PATH and an empty HOME (no Compose plugin anywhere), and their
output is checked against what the pages say.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from posthog_compose.documents import docs
from tests.conftest import REPO, copy_repository, run_invoke, set_env

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```([\w-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
INLINE = re.compile(r"`((?:python -m )?invoke(?: [^`]*)?|docker[ -]compose [^`]+)`")
# `<same major, newest minor>` in a command is a placeholder, not a redirection.
ANGLE_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")
# `2>&1` (a cron line's): not an argument of the command.
FD_DUPLICATION = re.compile(r"(?<!\S)\d*>&\d+(?!\S)")
SEPARATORS = {"&&", "||", "|", ";", "&"}
REDIRECTIONS = {"<", ">", ">>", "2>", "2>&1"}
SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    argv: tuple[str, ...]
    program: str = ""  # as written: `invoke`, `.venv/bin/invoke`, `/srv/posthog/.venv/bin/invoke`, `docker`
    unactivated: bool = False  # run where nothing activated .venv: cron, systemd, a block installing the kit
    systemd: bool = False

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {shlex.join((self.program or self.argv[0], *self.argv[1:]))}"


def kit_invoke(program: str) -> bool:
    """`invoke` itself, or the one the README installs (`.venv/bin/invoke`, relative or absolute)."""
    return program == "invoke" or program == ".venv/bin/invoke" or program.endswith("/.venv/bin/invoke")


def placeholder(token: str) -> bool:
    """TASK, NAME, SERVICE, TAG, … stand for a value the operator chooses."""
    return token == "PLACEHOLDER" or token == "…" or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(…)?", token))


def split_commands(text: str) -> list[list[str]]:
    """Shell text into simple commands: comments dropped, split at && || | ; and without redirections."""
    text = FD_DUPLICATION.sub(" ", ANGLE_PLACEHOLDER.sub("PLACEHOLDER", text))
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    tokens = list(lexer)
    skip = False
    for token in tokens:
        if skip:
            skip = False
            continue
        if token in SEPARATORS:
            commands.append([])
        elif token in REDIRECTIONS:
            skip = True
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def page_commands(path: Path, shown_as: Path | None = None) -> list[Command]:
    text = path.read_text(encoding="utf-8")
    name = (shown_as or path).relative_to(REPO).as_posix()
    found: list[Command] = []

    def add(chunk: str, offset: int, unactivated: bool = False, systemd: bool = False) -> None:
        line = text.count("\n", 0, offset) + 1
        for argv in split_commands(chunk):
            if argv[:2] == ["python", "-m"]:
                argv = argv[2:]
            program = argv[0]
            if os.path.basename(program) == "invoke":
                argv = ["invoke", *argv[1:]]
            if argv[0] in ("invoke", "docker-compose") or argv[:2] == ["docker", "compose"] \
                    or program.endswith("/docker-compose"):
                found.append(Command(name, line, tuple(argv), program, unactivated, systemd))

    for fence in FENCE.finditer(text):
        language, body = fence.group(1), fence.group(2)
        if language not in ("", "bash", "sh", "shell", "console", "text", "cron", "crontab", "ini", "systemd"):
            continue
        body = body.replace("\\\n", " ")
        # A block that installs the kit runs in a shell where nothing activated .venv yet.
        installs = "pip install" in body and not re.search(r"(^|[\s;&])(\.|source) \S*\.venv/bin/activate", body)
        offset = fence.start(2)
        for line in body.splitlines(keepends=True):
            stripped = line.strip()
            if language in ("text", "console"):
                if stripped.startswith("$ "):
                    add(stripped[2:], offset)
            elif language in ("cron", "crontab"):
                fields = stripped.split(None, 1 if stripped.startswith("@") else 5)
                if stripped and not stripped.startswith("#") and "=" not in fields[0] and len(fields) > 1:
                    add(fields[-1], offset, unactivated=True)
            elif language in ("ini", "systemd"):
                exec_line = re.match(r"Exec\w*=[-@:+!]*(.*)", stripped)
                if exec_line:
                    add(exec_line.group(1), offset, unactivated=True, systemd=True)
            elif stripped:
                add(stripped, offset, unactivated=installs)
            offset += len(line)
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for match in INLINE.finditer(prose):
        add(match.group(1), match.start())
    return found


ALL_COMMANDS = [command for page in PAGES for command in page_commands(page)]
INVOKE_COMMANDS = [c for c in ALL_COMMANDS if c.argv[0] == "invoke"]
# `invoke compose -- ARGS`: ARGS go to the kit's Compose as typed.
COMPOSE_COMMANDS = [c for c in INVOKE_COMMANDS if c.argv[1:3] == ("compose", "--")]


def host_problems(command: Command) -> str | None:
    """Why ``command`` would not run as written on a host set up the README's way (None when it would)."""
    argv = command.argv
    if argv[:2] == ("docker", "compose") or os.path.basename(argv[0]) == "docker-compose":
        return ("a host set up the README's way has no Compose plugin (`docker: unknown command: docker compose`) "
                f"and no docker-compose on PATH; the kit's Compose runs as `invoke compose -- {shlex.join(argv[2:] if argv[0] == 'docker' else argv[1:])}`")
    if os.path.basename(command.program) == "invoke" and not kit_invoke(command.program):
        return f"the README installs invoke as .venv/bin/invoke, not `{command.program}`"
    if command.systemd and not command.program.startswith("/"):
        return f"systemd runs `{command.program}` by an absolute path only: name the deployment's .venv/bin/invoke in full"
    if command.unactivated and command.program == "invoke":
        return ("`invoke` is not on PATH where nothing activated .venv (cron, systemd, a fresh shell after "
                "the install): the README installs it as .venv/bin/invoke; write that (in full for systemd)")
    return None


@functools.lru_cache(maxsize=None)
def collection():
    return docs.load_collection(REPO)


def parse(argv: tuple[str, ...]):
    """Parse an `invoke ...` command line exactly as the invoke binary does, without running it."""
    from invoke import Program

    program = Program(namespace=collection(), binary="invoke")
    program.create_config()
    program.parse_core(list(argv))
    program.parse_collection()
    program.parse_tasks()
    return program


def problems(argv: tuple[str, ...]) -> str | None:
    """Why this `invoke ...` command would not run as written (None when it parses)."""
    from invoke import Exit, ParseError

    try:
        program = parse(argv)
    except ParseError as exc:
        # `invoke add-env-var` alone, in prose, names the task; with any option it is a command to run.
        if "positional" in str(exc) and len(argv) == 2:
            return None
        return f"Invoke refuses it: {exc}"
    except Exit:
        return None  # --version and the like
    except ValueError as exc:
        return f"a value of the wrong type: {exc}"
    names = collection().task_names
    helped = program.args.help.value
    if isinstance(helped, str) and helped not in names and not placeholder(helped):
        return f"--help names no task: {helped}"
    if not program.tasks and not helped and not program.args.list.value and not program.args.version.value:
        return "names no task"
    for context in program.tasks:
        missing = [a.name for a in context.missing_positional_args]
        if missing and not helped and len(argv) > 2:
            return f"`invoke {context.name}` needs {', '.join(missing)}"
        if context.name in ("up", "logs") and "service" in context.args:
            for value in context.args["service"].value or []:
                for item in value.split(","):
                    # The edge proxy is a service while it is on (docs/https.md switches it on).
                    if item and item not in (*SERVICES, "proxy") and not placeholder(item):
                        return f"`{item}` is not a service of the deployment"
    return None


def test_pages_show_commands_at_all():
    """The extractor finds the commands an operator reads (a broken regex would make every check vacuous)."""
    assert len(INVOKE_COMMANDS) > 60, len(INVOKE_COMMANDS)
    shown = {" ".join(c.argv) for c in INVOKE_COMMANDS}
    for expected in ("invoke up", "invoke config-check", "invoke --list", "invoke generate --check",
                     "invoke upgrade --to release-1.43.0 --dry-run"):
        assert expected in shown, expected
    assert any(c.argv[3:4] == ("exec",) for c in COMPOSE_COMMANDS)
    # The systemd unit on the backups page is `invoke schedule-backups`'s own output, checked against
    # what the task prints (tests/unit/test_schedule.py): any other unit a page shows is held here.
    assert any(c.unactivated and not c.systemd for c in INVOKE_COMMANDS), "no cron line found"


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_every_command_runs_on_a_host_set_up_the_readme_way(command):
    assert host_problems(command) is None, f"{command}: {host_problems(command)}"


@pytest.mark.parametrize("text, language, reason", [
    ("docker compose exec -T db psql -U posthog", "bash", "no Compose plugin"),
    ("docker-compose ps", "bash", "no Compose plugin"),
    ("`docker compose logs web`", None, "no Compose plugin"),
    ("15 3 * * *  cd /srv/posthog && invoke backup --keep 7", "cron", "not on PATH"),
    ("ExecStart=/usr/local/bin/invoke backup --keep 7", "ini", "installs invoke as .venv/bin/invoke"),
    ("ExecStart=.venv/bin/invoke backup --keep 7", "ini", "absolute path"),
    ("ExecStart=invoke backup --keep 7", "ini", "absolute path"),
    ("git clone KIT /srv/posthog && cd /srv/posthog && pip install -e .\ninvoke doctor", "bash", "not on PATH"),
    ("python3 -m venv .venv && .venv/bin/pip install -q -e . && . .venv/bin/activate\ninvoke doctor", "bash", None),
    ("15 3 * * *  cd /srv/posthog && .venv/bin/invoke backup --keep 7", "cron", None),
    ("ExecStart=/srv/posthog/.venv/bin/invoke backup --keep 7", "ini", None),
])
def test_the_host_checker_refuses_what_a_readme_host_cannot_run(tmp_path, text, language, reason):
    """The check itself can fail: each of these is a command a page could show that a README host refuses."""
    page = REPO / "docs" / "probe-page.md"  # read from tmp_path, named as a page for the message
    source = tmp_path / "probe-page.md"
    source.write_text(f"```{language}\n{text}\n```\n" if language else f"Run {text} now.\n", encoding="utf-8")
    commands = [Command(c.page, c.line, c.argv, c.program, c.unactivated, c.systemd) for c in page_commands(source, page)]
    assert commands, text
    found = [host_problems(c) for c in commands if host_problems(c)]
    if reason is None:
        assert not found, found
    else:
        assert found and reason in found[0], found


@pytest.mark.parametrize("command", INVOKE_COMMANDS, ids=str)
def test_every_invoke_command_parses(command):
    assert problems(command.argv) is None, f"{command}: {problems(command.argv)}"


@pytest.mark.parametrize("argv, reason", [
    (("invoke", "logs", "web", "--tail", "200"), "No idea what 'web'"),
    (("invoke", "no-such-task"), "No idea"),
    (("invoke", "up", "--no-such-flag"), "No idea"),
    (("invoke", "upgrade", "--to"), "needed value"),
    (("invoke", "logs", "-s", "webb"), "not a service"),
    (("invoke", "--help", "no-such-task"), "names no task"),
    (("invoke", "add-env-var", "--value", "x"), "positional"),
    (("invoke", "up", "--timeout", "soon"), "takes a whole number"),
])
def test_the_checker_refuses_broken_commands(argv, reason):
    """The check itself can fail: each of these is a mistake a page could make."""
    found = problems(argv)
    assert found is not None and reason in found, found


# ----------------------------------------------------------------------------- docker compose
@functools.lru_cache(maxsize=None)
def compose_help(*subcommand: str) -> str:
    """Compose's own help, from the Compose the kit finds (the pinned one the README installs)."""
    from posthog_compose.configuration import compose

    result = subprocess.run([*compose.compose_binary(), *subcommand, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def compose_subcommands() -> set[str]:
    """The names under "Commands:" and "Management Commands:" in `docker compose --help`."""
    names: set[str] = set()
    for block in re.findall(r"^(?:Management )?Commands:\n(.*?)(?:\n\n|\Z)", compose_help(), re.S | re.M):
        names.update(re.findall(r"^  ([a-z][\w-]*)\s", block, re.M))
    return names


def compose_flags(subcommand: str) -> dict[str, bool]:
    """Flags of one Compose subcommand: name -> whether it takes a value."""
    flags: dict[str, bool] = {}
    for match in re.finditer(r"^[ \t]{2,10}(?:(-\w), )?(--[\w-]+)(?: (\w+))?[ \t]{2,}", compose_help(subcommand), re.M):
        short, long, value = match.groups()
        takes_value = bool(value)
        flags[long] = takes_value
        if short:
            flags[short] = takes_value
    return flags


def compose_problems(argv: tuple[str, ...]) -> str | None:
    """Why Compose would refuse ``argv`` (`invoke compose -- ARGS`; a `docker compose ARGS` for the checker's own test)."""
    args = list(argv[3:] if argv[:3] == ("invoke", "compose", "--") else argv[2:] if argv[0] == "docker" else argv[1:])
    if not args:
        return "no subcommand"
    subcommand, rest = args[0], args[1:]
    if placeholder(subcommand):
        return None  # `invoke compose -- ARGS`, `invoke compose -- …`: the form, not a command
    if subcommand not in compose_subcommands():
        return f"Compose has no subcommand `{subcommand}`"
    flags = compose_flags(subcommand)
    # Flags come before the service name; what follows the service belongs to the command run inside.
    index = 0
    while index < len(rest) and rest[index].startswith("-"):
        flag = rest[index].split("=", 1)[0]
        if flag not in flags:
            return f"Compose's `{subcommand}` has no flag `{flag}`"
        index += 2 if flags[flag] and "=" not in rest[index] else 1
    return None


@pytest.mark.parametrize("command", COMPOSE_COMMANDS, ids=str)
def test_every_compose_command_exists_in_compose(command):
    assert compose_problems(command.argv) is None, f"{command}: {compose_problems(command.argv)}"


def test_the_compose_checker_refuses_broken_commands():
    assert "no subcommand `teleport`" in compose_problems(("invoke", "compose", "--", "teleport"))
    assert "no flag `--no-such`" in compose_problems(("invoke", "compose", "--", "exec", "--no-such", "db", "psql"))
    assert compose_problems(("invoke", "compose", "--", "exec", "-T", "db", "pg_dump", "-U", "posthog")) is None


# ----------------------------------------------------------------------------- offline commands, run for real
def readme_host(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`invoke ARGS` on the deployment at ``root`` as on a host set up the README's way, as far as a
    test can make one: the system PATH only (no activated .venv, no ~/.local/bin) and an empty HOME and
    DOCKER_CONFIG (no ~/.docker/cli-plugins), so no Compose plugin is found; no engine either."""
    home = root.parent / f"{root.name}-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
           "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1", "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    return run_invoke(root, *args, env=env)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("deployment")
    copy_repository(target)
    return target


def test_the_kit_compose_runs_on_a_readme_host_and_masks_what_compose_prints(tmp_path):
    """Operations: "`invoke compose -- ARGS` ... with the deployment's directory, `.env`, compose files
    and profiles"; `invoke compose -- config` shows `***` for every secret."""
    (tmp_path / "fresh").mkdir()
    fresh = copy_repository(tmp_path / "fresh")
    assert readme_host(fresh, "init").returncode == 0
    result = readme_host(fresh, "compose", "--", "config")
    assert result.returncode == 0, result.stdout + result.stderr
    for service in SERVICES:
        assert f"\n  {service}:\n" in result.stdout, service
    password = re.search(r"^POSTGRES_PASSWORD=(.+)$", (fresh / ".env").read_text(), re.M).group(1).strip("'\"")
    assert password not in result.stdout and "***" in result.stdout
    # Compose's own exit code comes back, and its error is one masked line.
    result = readme_host(fresh, "compose", "--", "config", "--no-such-flag")
    assert result.returncode not in (0, None) and "no-such-flag" in result.stderr


def test_invoke_list_shows_every_task_the_pages_name(deployment):
    result = readme_host(deployment, "--list")
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^\s+([a-z][a-z-]*)", result.stdout, re.M))
    listed |= {alias.strip() for aliases in re.findall(r"^\s+[a-z][a-z-]* \(([a-z, -]+)\)", result.stdout, re.M)
               for alias in aliases.split(",")}
    named = {c.argv[1] for c in INVOKE_COMMANDS if len(c.argv) > 1 and not c.argv[1].startswith("-")}
    assert named, "no task named by the pages"
    assert named <= listed, f"named by the pages but not in `invoke --list`: {sorted(named - listed)}"
    for name in collection().task_names:
        assert name in listed, name


def test_invoke_help_shows_every_flag_the_pages_use(deployment):
    used: dict[str, set[str]] = {}
    from invoke import ParseError

    for command in INVOKE_COMMANDS:
        try:
            program = parse(command.argv)
        except ParseError:
            continue  # a task named in prose (`invoke add-env-var`): test_every_invoke_command_parses covers it
        # What follows `--` is Compose's (`invoke compose -- ps --all`), not the task's.
        own = command.argv[:command.argv.index("--")] if "--" in command.argv else command.argv
        for context in program.tasks:
            flags = {token.split("=", 1)[0] for token in own if token.startswith("-")}
            used.setdefault(context.name, set()).update(flags - {"-h", "--help"})
    assert used
    for task_name, flags in sorted(used.items()):
        result = readme_host(deployment, "--help", task_name)
        assert result.returncode == 0, result.stderr
        assert f"Usage: inv[oke] [--core-opts] {task_name}" in result.stdout
        for flag in flags:
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}([\s,=\]]|$)", result.stdout, re.M), \
                f"`invoke --help {task_name}` does not show {flag}, which a page uses"


def test_config_check_passes_on_a_fresh_init_and_names_a_broken_key(deployment, tmp_path):
    """Configuration: "One line per finding with its fix; exit 1 on errors". Getting started: the first
    run writes .env that passes the check."""
    (tmp_path / "fresh").mkdir()
    fresh = copy_repository(tmp_path / "fresh")
    init = readme_host(fresh, "init")
    assert init.returncode == 0, init.stderr
    assert (fresh / ".env").stat().st_mode & 0o777 == 0o600  # "mode 0600"
    check = readme_host(fresh, "config-check")
    assert check.returncode == 0, check.stdout + check.stderr
    # The 43-character key of older guides is named for what it is, and the fix it prints parses.
    set_env(fresh, ENCRYPTION_SALT_KEYS="A" * 43)
    check = readme_host(fresh, "config-check")
    assert check.returncode == 1, check.stdout
    output = check.stdout + check.stderr
    assert "ENCRYPTION_SALT_KEYS" in output and "43" in output
    for suggested in re.findall(r"`(invoke [^`]+)`", output):
        argv = tuple(a for a in shlex.split(suggested))
        assert problems(argv) is None, f"config-check suggests `{suggested}`: {problems(argv)}"


def test_generate_check_fails_only_when_generated_files_are_stale(deployment, tmp_path):
    """Configuration: "`invoke generate --check` fails when they are out of date"."""
    (tmp_path / "copy").mkdir()
    copy = copy_repository(tmp_path / "copy")
    result = readme_host(copy, "generate", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
    manifest = copy / "variables.yml"
    manifest.write_text(manifest.read_text().replace(
        "Kafka broker id of the single Kafka broker.", "Broker id of the one Kafka broker.").replace(
        "Broker id of the single Kafka broker.", "Broker id of the one Kafka broker."))
    assert manifest.read_text() != (REPO / "variables.yml").read_text(), "the probe edit changed nothing"
    result = readme_host(copy, "generate", "--check")
    assert result.returncode == 1
    assert "out of date" in result.stdout + result.stderr


# ----------------------------------------------------------------------------- quoted output
# Commands whose output a page may quote and that run without an engine, on a fresh `invoke init`.
OFFLINE = {("--list",), ("config-check",), ("generate", "--check"), ("--help",), ("schedule-backups",)}


def quoted_outputs() -> list[tuple[str, tuple[str, ...], list[str]]]:
    """(page, command, quoted output lines) for every `$ invoke ...` in a text block of the pages."""
    found = []
    for path in PAGES:
        for fence in FENCE.finditer(path.read_text(encoding="utf-8")):
            if fence.group(1) not in ("text", "console"):
                continue
            command, output = None, []
            for line in fence.group(2).splitlines() + ["$ "]:
                if line.startswith("$ "):
                    if command and command[0] == "invoke":
                        found.append((path.relative_to(REPO).as_posix(), tuple(command), output))
                    command, output = shlex.split(line[2:]) if line[2:].strip() else None, []
                elif line.strip():
                    output.append(line.rstrip())
    return found


def offline(argv: tuple[str, ...]) -> bool:
    return any(argv[1:1 + len(prefix)] == prefix for prefix in OFFLINE)


QUOTED = quoted_outputs()


def test_pages_quote_offline_output():
    assert any(offline(command) for _, command, _ in QUOTED), QUOTED


@pytest.mark.parametrize("page, command, output", [q for q in QUOTED if offline(q[1])],
                         ids=lambda value: " ".join(value) if isinstance(value, tuple) else None)
def test_quoted_output_is_what_the_command_prints(tmp_path, page, command, output):
    (tmp_path / "deployment").mkdir()
    root = copy_repository(tmp_path / "deployment")
    assert readme_host(root, "init").returncode == 0
    result = readme_host(root, *command[1:])
    printed = (result.stdout + result.stderr).splitlines()
    for line in output:
        pattern = ".*".join(re.escape(part) for part in line.split("…"))
        assert any(re.fullmatch(pattern, real.rstrip()) for real in printed), \
            f"{page}: `{' '.join(command)}` does not print {line!r}; it prints:\n" + "\n".join(printed)

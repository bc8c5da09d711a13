"""The daily tasks, driven as an operator would on a real Docker Engine: up, status,
logs --errors, every read-only command the handbook shows, down, up again, down --volumes --yes;
and a broken encryption key."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

SERVICES = {"db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"}

#: Tasks that only read, run as the pages show them on a live deployment (the offline commands run in
#: tests/unit/test_docs_commands.py; the ones that change a deployment have end-to-end tests of their own).
READ_ONLY_TASKS = {"status", "ps", "logs", "doctor", "probe"}
READ_ONLY_OPTIONS = {"harden": "--check", "backup": "--list", "upgrade": "--history"}
READ_ONLY_COMPOSE = {"ps", "logs", "config", "top", "images"}
#: A judgment that may fail on a default deployment: exit 1 with its reason is an answer, not a defect.
JUDGMENTS = {("harden", "--check"), ("doctor",), ("doctor", "--json"), ("logs", "-s", "proxy"),
             ("compose", "--", "logs", "proxy"),
             # Before the first-run setup there is no project to send to: the probe says so in one line
             # (tests/e2e/test_probe.py makes a project and follows an event all the way).
             ("probe",)}


def documented_read_only_commands() -> dict[tuple[str, ...], str]:
    """Each read-only `invoke ...` of README.md and docs/ without a placeholder: argv -> where it is shown."""
    from tests.unit.test_docs_commands import INVOKE_COMMANDS, placeholder

    found: dict[tuple[str, ...], str] = {}
    for command in INVOKE_COMMANDS:
        argv = tuple(command.argv[1:])
        if not argv or any(placeholder(token) for token in argv) or {"-f", "--follow"} & set(argv):
            continue
        task = argv[0]
        if (task in READ_ONLY_TASKS or READ_ONLY_OPTIONS.get(task) in argv
                or (argv[:2] == ("compose", "--") and argv[2:3] and argv[2] in READ_ONLY_COMPOSE)):
            found.setdefault(argv, str(command))
    return found


def test_up_status_logs_down_keeps_data_and_down_volumes_deletes_it(deployment):
    result = deployment.invoke("up", "--timeout", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "URL check:" in result.stdout and "redirects to /preflight" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("PostHog is up at http://localhost:")
    states = deployment.states()
    assert set(states) == SERVICES
    assert all(s["State"] == "running" and s["Health"] == "healthy" for s in states.values()), states

    status, headers = deployment.http("/")
    assert status == 302 and headers["Location"].endswith("/preflight")
    assert deployment.http("/_health")[0] == 200

    status_output = deployment.invoke("status")
    assert status_output.returncode == 0
    assert "8 of 8 services running and healthy." in status_output.stdout
    assert deployment.values()["POSTHOG_IMAGE"].rsplit("/", 1)[-1] in status_output.stdout  # the image of either lane

    plain = deployment.invoke("logs", "-s", "plugins")
    assert "Skipping async migrations setup" in plain.stdout  # the benign warning is there...
    errors = deployment.invoke("logs", "--errors")
    assert "Skipping async migrations setup" not in errors.stdout  # ...and filtered out
    assert errors.returncode == 0, errors.stdout
    assert errors.stdout.strip().splitlines()[-1].startswith("0 error line(s) (db 0,")

    # Every read-only command the handbook shows runs as written on the live deployment.
    shown = documented_read_only_commands()
    assert len(shown) >= 20 and ("probe",) in shown and ("status", "--json") in shown, sorted(shown)
    for argv, where in shown.items():
        ran = deployment.invoke(*argv)
        said = ran.stdout + ran.stderr
        assert "Traceback" not in said, f"{where}: {said[-2000:]}"
        # A kit task always ends with a line; Compose's own `logs` of a service that is off prints nothing.
        assert said.strip() or argv[0] == "compose", f"{where}: printed nothing"
        allowed = (0, 1) if argv in JUDGMENTS else (0,)
        assert ran.returncode in allowed, f"{where}: exit {ran.returncode}\n{said[-2000:]}"

    deployment.psql("CREATE TABLE e2e_probe (note text); INSERT INTO e2e_probe VALUES ('survives down/up');")
    down = deployment.invoke("down")
    assert down.returncode == 0 and "Data is kept" in down.stdout
    assert deployment.states() == {}
    again = deployment.invoke("up", "--timeout", "300")
    assert again.returncode == 0, again.stdout + again.stderr
    assert deployment.psql("SELECT note FROM e2e_probe;").stdout.strip() == "survives down/up"

    # db stops as the official postgres image does (STOPSIGNAL SIGINT, a fast shutdown), with web, worker
    # and plugins connected: exit 0 well inside Docker's 10 s grace period, not killed (137) after it.
    began = time.monotonic()
    deployment.compose("stop", "db")
    took = time.monotonic() - began
    container = deployment.compose("ps", "--all", "-q", "db").stdout.strip()
    exit_code = deployment.engine.docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip()
    assert exit_code == "0" and took < 8, (exit_code, took)
    deployment.compose("up", "--detach", "--wait", "--wait-timeout", "120", "db")

    refused = deployment.invoke("down", "--volumes", input="wrong\n")
    assert refused.returncode == 1 and "nothing was deleted" in refused.stderr
    assert set(deployment.states()) == SERVICES

    wiped = deployment.invoke("down", "--volumes", "--yes")
    assert wiped.returncode == 0, wiped.stderr
    assert "posthog_postgres-data" in wiped.stdout
    volumes = deployment.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in volumes if v.startswith("posthog_")], volumes


def test_broken_encryption_key_fails_up_with_the_hint(deployment):
    # Caught before anything starts when it is in .env ...
    deployment.set_env(ENCRYPTION_SALT_KEYS="k" * 43)
    refused = deployment.invoke("up", "--timeout", "120")
    assert refused.returncode == 1
    assert "43 characters, the output of `openssl rand -base64 32 | tr`" in refused.stdout
    assert "nothing was started or changed" in refused.stderr
    assert deployment.states() == {}


def test_a_default_secret_key_from_the_shell_crashes_posthog_and_up_names_the_fix(deployment):
    # ... and when a shell variable overrides .env (Compose prefers it), PostHog itself crashes on start:
    # up fails fast, shows the logs and the matching troubleshooting hint. PostHog 1.43 refuses its own
    # default SECRET_KEY (posthog/settings/access.py:56-62); it reads no ENCRYPTION_SALT_KEYS at all.
    deployment.engine.extra_env = {"SECRET_KEY": "<randomly generated secret key>"}
    try:
        result = deployment.invoke("up", "--timeout", "180")
    finally:
        deployment.engine.extra_env = {}
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "shell-override" in output or "is also set in your shell" in output
    assert "You are using the default SECRET_KEY in a production environment" in output
    assert "hint: SECRET_KEY is PostHog's default: run `invoke init --rotate SECRET_KEY`" in output
    assert "error: services failed: web" in result.stderr
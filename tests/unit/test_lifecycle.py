"""Lifecycle tasks without an engine: command construction (a fake Compose binary records its
arguments), ps parsing, error filtering, hints and confirmations. The real proof is tests/e2e."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from posthog_compose import hints
from posthog_compose.operations import stack
from tests.conftest import run_invoke

PS_LINES = "\n".join(json.dumps(row) for row in [
    {"Service": "db", "State": "running", "Health": "healthy", "ExitCode": 0, "Status": "Up 5 minutes (healthy)",
     "Image": "postgres:15.12-alpine", "Publishers": []},
    {"Service": "web", "State": "running", "Health": "starting", "ExitCode": 0, "Status": "Up 3 seconds (health: starting)",
     "Image": "posthog/posthog:release-1.43.0",
     "Publishers": [{"URL": "0.0.0.0", "TargetPort": 8000, "PublishedPort": 8080, "Protocol": "tcp"}]},
    {"Service": "plugins", "State": "restarting", "Health": "", "ExitCode": 1, "Status": "Restarting (1) 2 seconds ago",
     "Image": "posthog/posthog:release-1.43.0", "Publishers": None},
])
LOGS = """plugins-1  | Skipping async migrations setup. This is unsafe in production!
plugins-1  | Error: Key must be 32-byte long base64url encoded string
web-1      | Booting gunicorn
worker-1   | ERROR consumer: Cannot connect to redis
db-1       | LOG:  database system is ready to accept connections
plugins-1  | DeprecationWarning: pkg_resources is deprecated as an API
"""


@pytest.fixture
def fake_compose(tmp_path):
    """A stand-in `docker compose` that records each call and answers ps/logs with canned output."""
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "fake-compose"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
open({str(calls)!r}, "a").write(json.dumps(args) + "\\n")
if "ps" in args:
    print({PS_LINES!r})
elif "logs" in args:
    print({LOGS!r}, end="")
elif "config" in args:
    pass
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, calls


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _env(fake):
    # A docker client whose engine answers, so that `up` gets past its engine preflight.
    docker = fake.parent / "docker"
    docker.write_text("#!/bin/sh\n[ \"$1\" = version ] && echo 28.2.2\n")
    docker.chmod(0o755)
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(fake), "PATH": f"{fake.parent}:{os.environ['PATH']}"}


def test_ps_json_lines_and_arrays_parse_to_states():
    states = {s.service: s for s in stack.parse_ps(PS_LINES)}
    assert states["db"].ready and not states["db"].failed
    assert states["web"].health == "starting" and not states["web"].ready
    assert states["web"].ports == ["0.0.0.0:8080->8000/tcp"]
    assert states["plugins"].failed and states["plugins"].label() == "restarting"
    as_array = json.dumps([json.loads(line) for line in PS_LINES.splitlines()])
    assert [s.service for s in stack.parse_ps(as_array)] == ["db", "web", "plugins"]


def test_error_lines_leave_out_the_seeds_benign_warnings():
    errors = [line for line in LOGS.splitlines() if hints.is_error_line(line)]
    assert errors == ["plugins-1  | Error: Key must be 32-byte long base64url encoded string",
                      "worker-1   | ERROR consumer: Cannot connect to redis"]


def test_hints_match_known_symptoms_and_name_their_section():
    matched = hints.match(LOGS)
    assert any("exactly 32 characters" in hint and "troubleshooting#encryption-key-length" in hint for hint in matched)
    assert hints.match("all good") == []


def test_every_hint_has_a_section_on_the_troubleshooting_page():
    page = (Path(__file__).resolve().parents[2] / hints.HANDBOOK_PAGE).read_text()
    for hint in hints.HINTS:
        assert f"{{#{hint.anchor}}}" in page, hint.anchor


def test_logs_errors_counts_per_service_and_exits_1(repo, fake_compose):
    fake, calls = fake_compose
    result = run_invoke(repo, "logs", "--errors", "-s", "plugins,worker", env=_env(fake))
    assert result.returncode == 1
    assert "2 error line(s) (plugins 1, worker 1)" in result.stdout
    assert "hint: ENCRYPTION_SALT_KEYS entries must be exactly 32 characters" in result.stdout
    assert _calls(calls)[-1][-4:] == ["logs", "--no-color", "plugins", "worker"]


def test_logs_passes_follow_tail_and_since_as_separate_arguments(repo, fake_compose):
    fake, calls = fake_compose
    result = run_invoke(repo, "logs", "-s", "web", "--tail", "50", "--since", "10m; rm -rf /", "--follow",
                        env=_env(fake))
    assert result.returncode == 0, result.stderr
    assert _calls(calls)[-1][-7:] == ["logs", "--follow", "--tail", "50", "--since", "10m; rm -rf /", "web"]


def test_unknown_service_is_one_line(repo, fake_compose):
    fake, _ = fake_compose
    result = run_invoke(repo, "logs", "-s", "webb", env=_env(fake))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: unknown service(s) webb; the services are db, redis")


def test_status_table(repo, fake_compose):
    fake, _ = fake_compose
    result = run_invoke(repo, "status", env=_env(fake))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "HEALTH", "VERDICT", "UPTIME", "PORTS", "IMAGE"]
    assert any(line.startswith("web ") and "0.0.0.0:8080->8000/tcp" in line and "posthog:release-1.43.0" in line
               for line in lines)
    assert any(line.split()[:2] == ["redis", "not"] for line in lines)
    assert lines[-1] == "1 of 8 services running and healthy (see above)."
    as_json = json.loads(run_invoke(repo, "ps", "--json", env=_env(fake)).stdout)
    assert {row["service"]: row["state"] for row in as_json["services"]}["plugins"] == "restarting"


@pytest.mark.parametrize("ps", ["", PS_LINES.replace('"running"', '"exited"')], ids=["none-created", "all-stopped"])
def test_status_with_nothing_running_exits_1_and_ends_with_the_next_step(repo, fake_compose, ps):
    fake, _ = fake_compose
    fake.write_text(fake.read_text().replace(repr(PS_LINES), repr(ps)))
    result = run_invoke(repo, "status", env=_env(fake))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Nothing runs: `invoke up` starts the deployment."
    assert "Traceback" not in result.stdout + result.stderr
    as_json = run_invoke(repo, "status", "--json", env=_env(fake))
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["next_step"] == "invoke up"
    # One service running is not "nothing runs": the table says what is down, and no next step is forced.
    fake.write_text(fake.read_text().replace(repr(ps), repr(PS_LINES)))
    assert json.loads(run_invoke(repo, "status", "--json", env=_env(fake)).stdout)["next_step"] is None


def test_up_dry_run_prints_the_command_and_starts_nothing(repo, fake_compose):
    fake, calls = fake_compose
    assert run_invoke(repo, "init").returncode == 0
    result = run_invoke(repo, "up", "--dry-run", "--timeout", "90", "-s", "db", env=_env(fake))
    assert result.returncode == 0, result.stderr
    assert f"$ {fake} --project-directory {repo} up --detach db" in result.stdout
    assert all("up" not in call for call in _calls(calls))  # only config ran


def test_up_refuses_to_start_on_config_errors(repo, fake_compose):
    fake, calls = fake_compose
    assert run_invoke(repo, "init").returncode == 0
    (repo / ".env").write_text((repo / ".env").read_text().replace("WEB_PORT=8080", "WEB_PORT=eighty"))
    result = run_invoke(repo, "up", env=_env(fake))
    assert result.returncode == 1
    assert "WEB_PORT: must be a port number" in result.stdout
    assert all("up" not in call for call in _calls(calls))


def test_up_creates_env_on_first_run(repo, fake_compose):
    fake, _ = fake_compose
    result = run_invoke(repo, "up", "--dry-run", env=_env(fake))
    assert "Plan: create .env" in result.stdout
    assert "(dry run) would write .env" in result.stdout and not (repo / ".env").exists()


def test_down_volumes_without_confirmation_deletes_nothing(repo, fake_compose):
    fake, calls = fake_compose
    result = run_invoke(repo, "down", "--volumes", env=_env(fake), input="")
    assert result.returncode == 1
    assert "no confirmation (no input): nothing was deleted" in result.stderr
    assert "posthog_postgres-data" in result.stdout
    assert not _calls(calls)
    typed = run_invoke(repo, "down", "--volumes", env=_env(fake), input="posthog\n")
    assert typed.returncode == 0
    assert _calls(calls)[-1][-2:] == ["down", "--volumes"]


def test_doctor_reports_each_check(repo, fake_compose):
    fake, _ = fake_compose
    result = run_invoke(repo, "doctor", "--json", env={**_env(fake), "DOCKER_HOST": "unix:///nonexistent.sock"})
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert set(checks) == {"docker engine", "docker compose", "memory", "cpus", "disk", "web port"}
    assert checks["docker engine"]["status"] == "error" and checks["docker engine"]["fix"]
    assert result.returncode == 1

"""The deployment name (COMPOSE_PROJECT_NAME): Compose and the package agree on it, so several
deployments can share a host; and .ci/run runs exactly the README's test command."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from posthog_compose.configuration import compose
from tests.conftest import REPO, run_invoke, set_env


def _compose_name(root, env=None) -> str:
    """The project name the real Compose binary resolves for ``root``."""
    result = subprocess.run(compose.command(root, "config", "--format", "json"), cwd=root, capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["name"]


def test_the_default_name_is_posthog(deployed, monkeypatch):
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    assert compose.project_name(deployed) == "posthog" == _compose_name(deployed)


def test_a_name_in_env_is_the_name_compose_uses(deployed, monkeypatch):
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    set_env(deployed, COMPOSE_PROJECT_NAME="staging")
    assert compose.project_name(deployed) == "staging" == _compose_name(deployed)
    # As in Compose, the operator's environment wins over .env.
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "other")
    assert compose.project_name(deployed) == "other" == _compose_name(deployed, {"COMPOSE_PROJECT_NAME": "other"})


def test_without_env_file_the_compose_default_applies(repo, monkeypatch):
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    assert compose.project_name(repo) == "posthog"


def test_down_volumes_names_this_deployments_volumes(deployed, tmp_path):
    set_env(deployed, COMPOSE_PROJECT_NAME="staging")
    fake = tmp_path / "fake-compose"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"}
    result = run_invoke(deployed, "down", "--volumes", "--dry-run", env={**env, "POSTHOG_COMPOSE_BINARY": str(fake)})
    assert result.returncode == 0, result.stderr
    assert "staging_postgres-data" in result.stdout and "posthog_postgres-data" not in result.stdout


def test_ci_runs_exactly_the_readme_test_command():
    script = (REPO / ".ci/run").read_text()
    extracted = subprocess.run(["bash", "-c", "sed -n '/^## Test it/,/^## /p' README.md | sed -n '/^```bash$/{n;p;q}'"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
    readme = (REPO / "README.md").read_text().split("## Test it", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert extracted == readme.strip()
    assert f'expected="{readme.strip()}"' in script
    assert 'bash -euo pipefail -c "$readme_command"' in script and "trap cleanup EXIT" in script
    assert "python3 -m venv .venv" in readme and "pip install" in readme and "python -m pytest" in readme


def test_down_dry_run_does_not_claim_it_stopped(deployed, tmp_path):
    fake = tmp_path / "fake-compose"
    fake.write_text("#!/bin/sh\necho ran >> \"$0.calls\"\n")
    fake.chmod(0o755)
    result = run_invoke(deployed, "down", "--dry-run", env={**os.environ, "POSTHOG_COMPOSE_BINARY": str(fake)})
    assert result.returncode == 0, result.stderr
    # Every profile: a local db kept stopped after a datastore migration goes too.
    assert "Stopped" not in result.stdout
    assert f"$ {fake} --project-directory {deployed} --profile '*' down" in result.stdout
    assert not (tmp_path / "fake-compose.calls").exists()

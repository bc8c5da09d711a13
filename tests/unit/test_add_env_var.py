"""add-env-var / remove-env-var: every file updated, compose edited byte-exactly, all or nothing."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from posthog_compose.errors import OperatorError
from posthog_compose.configuration import compose
from posthog_compose.configuration import envvars, manifest as manifest_module, yamledit
from posthog_compose import fileops
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import run_invoke

FIXTURE = (Path(__file__).parent / "fixtures" / "compose-tricky.yml").read_text()


def added_lines(before: str, after: str) -> list[str]:
    """The lines of ``after`` that are not in ``before``, asserting nothing else changed."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    extra = []
    i = 0
    for line in new:
        if i < len(old) and line == old[i]:
            i += 1
        else:
            extra.append(line)
    assert i == len(old), "an existing line changed or disappeared"
    return extra


# ----------------------------------------------------------------------------- yamledit on the tricky fixture
def test_block_mapping_after_a_merge_key_and_a_comment():
    after = yamledit.add_environment_entry(FIXTURE, "web", "NEW_VAR")
    assert added_lines(FIXTURE, after) == ["      NEW_VAR: ${NEW_VAR}\n"]
    assert after.index("NEW_VAR") > after.index('PORT: "${PORT}"')


def test_flow_mapping_gets_the_entry_inside_the_braces():
    after = yamledit.add_environment_entry(FIXTURE, "worker", "NEW_VAR")
    assert "    environment: {SHARED: \"${SHARED}\", MODE: '${MODE}', NEW_VAR: \"${NEW_VAR}\"}\n" in after
    assert after.replace(', NEW_VAR: "${NEW_VAR}"', "") == FIXTURE


def test_list_style_environment():
    after = yamledit.add_environment_entry(FIXTURE, "plugins", "NEW_VAR")
    assert added_lines(FIXTURE, after) == ["      - NEW_VAR=${NEW_VAR}\n"]


def test_service_without_environment_gets_a_block():
    after = yamledit.add_environment_entry(FIXTURE, "db", "NEW_VAR")
    assert added_lines(FIXTURE, after) == ["    environment:\n", "      NEW_VAR: ${NEW_VAR}\n"]


def test_every_style_parses_and_removal_restores_the_bytes():
    import yaml

    text = FIXTURE
    for service in ("web", "worker", "plugins", "db"):
        text = yamledit.add_environment_entry(text, service, "NEW_VAR")
    services = yaml.safe_load(text)["services"]
    assert services["web"]["environment"]["NEW_VAR"] == "${NEW_VAR}"
    assert services["web"]["environment"]["SHARED"] == "${SHARED}"  # the merge still works
    assert services["worker"]["environment"]["NEW_VAR"] == "${NEW_VAR}"
    assert "NEW_VAR=${NEW_VAR}" in services["plugins"]["environment"]
    assert services["db"]["environment"] == {"NEW_VAR": "${NEW_VAR}"}
    assert yamledit.remove_environment_entries(text, "NEW_VAR") == FIXTURE


def test_crlf_line_endings_are_kept():
    crlf = FIXTURE.replace("\n", "\r\n")
    after = yamledit.add_environment_entry(crlf, "web", "NEW_VAR")
    assert "      NEW_VAR: ${NEW_VAR}\r\n" in after and "\n" not in after.replace("\r\n", "")
    assert yamledit.remove_environment_entries(after, "NEW_VAR") == crlf


# ----------------------------------------------------------------------------- the task on a repository copy
@pytest.fixture
def deployment(repo):
    assert run_invoke(repo, "init").returncode == 0
    env = repo / ".env"
    # An operator's own touches that must survive: a comment, an export line, blank lines.
    # (SITE_URL moves to the end as an `export` line: a second assignment would be a duplicate, refused.)
    text = re.sub(r"(?m)^SITE_URL=.*\n", "", env.read_text())
    env.write_text(text + "\n# my own note\nexport SITE_URL=http://localhost:8080\n\n")
    os.chmod(env, 0o600)
    return repo


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


ADD = ["add-env-var", "SENTRY_DSN", "--description", "Where errors are reported.", "--category", "PostHog App",
       "--services", "web,worker", "--value", "https://key@sentry.example.com", "--format", "url"]


def test_add_updates_every_file_and_compose_only_gains_lines(deployment):
    before = snapshot(deployment)
    result = run_invoke(deployment, *ADD)
    assert result.returncode == 0, result.stderr
    compose_after = (deployment / "docker-compose.yml").read_text()
    assert added_lines(before["docker-compose.yml"].decode(), compose_after) == [
        "      SENTRY_DSN: ${SENTRY_DSN}\n", "      SENTRY_DSN: ${SENTRY_DSN}\n"]
    env_text = (deployment / ".env").read_text()
    assert added_lines(before[".env"].decode(), env_text) == ["SENTRY_DSN=https://key@sentry.example.com\n"]
    assert "# my own note\nexport SITE_URL=http://localhost:8080\n" in env_text
    assert stat.S_IMODE((deployment / ".env").stat().st_mode) == 0o600
    loaded = manifest_module.load(deployment)
    assert loaded["SENTRY_DSN"].services == ("web", "worker") and loaded["SENTRY_DSN"].removable
    assert "`SENTRY_DSN`" in (deployment / "README.md").read_text()
    assert "\nSENTRY_DSN=https://key@sentry.example.com\n" in (deployment / ".env.example").read_text()
    assert "Changed: variables.yml +" in result.stdout and "config-check: 0 error(s)" in result.stdout
    config = subprocess.run(compose.command(deployment, "config", "--quiet"), cwd=deployment, capture_output=True)
    assert config.returncode == 0, config.stderr


def test_adding_twice_reports_and_changes_nothing(deployment):
    assert run_invoke(deployment, *ADD).returncode == 0
    before = snapshot(deployment)
    again = run_invoke(deployment, *ADD)
    assert again.returncode == 0
    assert again.stdout.strip() == "SENTRY_DSN already exists in variables.yml; nothing changed."
    assert snapshot(deployment) == before


def test_remove_restores_every_file_byte_for_byte(deployment):
    before = snapshot(deployment)
    assert run_invoke(deployment, *ADD).returncode == 0
    result = run_invoke(deployment, "remove-env-var", "SENTRY_DSN")
    assert result.returncode == 0, result.stderr
    after = snapshot(deployment)
    assert after == before
    config = subprocess.run(compose.command(deployment, "config", "--quiet"), cwd=deployment, capture_output=True)
    assert config.returncode == 0


def test_secret_generated_value_is_never_printed(deployment):
    result = run_invoke(deployment, "add-env-var", "API_TOKEN", "--description", "Token for the export job.",
                        "--category", "Security", "--services", "worker", "--secret", "--generate",
                        "--format", "password")
    assert result.returncode == 0, result.stderr
    value = EnvFile.load(deployment / ".env").values()["API_TOKEN"]
    assert len(value) == 32 and value not in result.stdout + result.stderr
    assert "API_TOKEN=change-me-api-token" in (deployment / ".env.example").read_text()


@pytest.mark.parametrize("args, message", [
    (["add-env-var", "sentry_dsn"], "NAME 'sentry_dsn' must match ^[A-Z][A-Z0-9_]*$"),
    (["add-env-var", "SITE_URL2", "--description", "x", "--category", "Nope", "--services", "web"],
     "--category 'Nope' is unknown"),
    (["add-env-var", "X_ONE", "--description", "x", "--category", "Security", "--services", "webb"],
     "--services: unknown service(s) webb"),
    (["add-env-var", "X_ONE", "--description", "x", "--category", "Security", "--services", "web", "--format", "port",
      "--value", "99999"], "--value for X_ONE must be a port number from 1 to 65535"),
    (["add-env-var", "X_ONE", "--description", "x", "--category", "Security", "--services", "web", "--format",
      "password", "--value", "hunter2hunter2hunter2"], "format password holds a secret: add --secret"),
    (["add-env-var", "X_ONE", "--description", "x", "--category", "Security", "--services", "web", "--generate"],
     "--generate needs a secret format"),
    (["remove-env-var", "SECRET_KEY"], "SECRET_KEY belongs to the deployment's architecture and cannot be removed"),
])
def test_bad_input_is_one_line_and_changes_nothing(deployment, args, message):
    before = snapshot(deployment)
    result = run_invoke(deployment, *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert snapshot(deployment) == before


def test_name_already_in_env_or_compose_is_refused(deployment):
    env = EnvFile.load(deployment / ".env")
    env.set("STRAY_VAR", "1")
    env.write()
    before = snapshot(deployment)
    result = run_invoke(deployment, "add-env-var", "STRAY_VAR", "--description", "x", "--category", "Security",
                        "--services", "web")
    assert result.returncode == 1 and "already set in .env" in result.stderr
    assert snapshot(deployment) == before


def test_a_failure_late_in_the_transaction_leaves_everything_as_it_was(deployment, monkeypatch):
    before = snapshot(deployment)
    real_write = fileops.atomic_write
    calls = []

    def failing_write(path, text, mode=None):
        calls.append(Path(path).name)
        if len(calls) == 4:
            raise OSError("disk full (injected)")
        real_write(path, text, mode)

    monkeypatch.setattr(fileops, "atomic_write", failing_write)
    request = envvars.Request(name="SENTRY_DSN", description="x", category="PostHog App", services=["web"],
                              value="https://key@sentry.example.com", format="url")
    with pytest.raises(OperatorError, match="every file was restored"):
        envvars.add(deployment, request)
    assert len(calls) >= 4
    assert snapshot(deployment) == before
    assert stat.S_IMODE((deployment / ".env").stat().st_mode) == 0o600


def test_handbook_shows_the_new_variable_on_the_next_build(deployment, tmp_path):
    import shutil
    import sys

    from tests.conftest import REPO

    assert run_invoke(deployment, *ADD).returncode == 0
    for name in ("docs", "posthog_compose", "mkdocs.yml"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, deployment / name)
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=deployment, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert 'id="sentry_dsn"' in (tmp_path / "site" / "reference" / "environment" / "index.html").read_text()

"""`invoke harden --check`'s app-private item: it passes only when the app (login, admin, API) answers the
networks of ALLOWED_IP_BLOCKS alone, or when the operator recorded `--accept app-public --reason ...`.
Run through the CLI on a copy of the kit, with a Compose that knows no containers."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from posthog_compose import journal
from posthog_compose.operations.harden import acceptance
from tests.conftest import run_invoke, set_env


@pytest.fixture
def env(tmp_path):
    script = tmp_path / "fake-compose"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}


def app_private(root, env):
    result = run_invoke(root, "harden", "--check", "--json", env=env)
    item = next(i for i in json.loads(result.stdout)["items"] if i["id"] == "app-private")
    return item["status"], item["reason"], item["fix"]


def test_a_public_app_fails_and_says_both_ways_out(deployed, env):
    status, reason, fix = app_private(deployed, env)
    assert status == "fail" and "ALLOWED_IP_BLOCKS is empty" in reason
    assert "set ALLOWED_IP_BLOCKS" in fix and "invoke harden --accept app-public --reason" in fix


@pytest.mark.parametrize("value, status", [("203.0.113.0/24, 198.51.100.7", "pass"), ("0.0.0.0/0", "fail"),
                                           ("0.0.0.0/0,::/0", "fail"), ("10.0.0.0/8", "pass")])
def test_an_allow_list_passes_unless_it_lets_everyone_in(deployed, env, value, status):
    set_env(deployed, ALLOWED_IP_BLOCKS=value)
    assert app_private(deployed, env)[0] == status


def test_an_allow_list_that_locks_the_operator_out_fails_with_config_checks_reason(deployed, env):
    set_env(deployed, ALLOWED_IP_BLOCKS="203.0.113.0/24", IS_BEHIND_PROXY="true")
    status, reason, _ = app_private(deployed, env)
    assert status == "fail" and reason.startswith("config-check refuses the allow-list: is empty while")


def test_an_explicit_acceptance_with_a_reason_passes_and_can_be_withdrawn(deployed, env):
    result = run_invoke(deployed, "harden", "--accept", "app-public", "--reason", "field staff on mobile networks",
                        env=env)
    assert result.returncode == 0 and result.stdout.startswith("Accepted: app-public"), result.stderr
    status, reason, _ = app_private(deployed, env)
    assert status == "pass" and reason.endswith("field staff on mobile networks")
    assert oct((deployed / acceptance.ACCEPT_FILE).stat().st_mode & 0o777) == "0o600"
    assert run_invoke(deployed, "harden", "--accept", "app-public", "--withdraw", env=env).returncode == 0
    assert app_private(deployed, env)[0] == "fail"


@pytest.mark.parametrize("args, message", [
    (["--accept", "app-public"], "--reason is missing"),
    (["--accept", "app-public", "--reason", "  "], "--reason is missing"),
    (["--accept", "app-public", "--reason", "two\nlines"], "--reason must be one line"),
    (["--accept", "firewall", "--reason", "x"], "is not something harden accepts"),
    (["--accept", "app-public", "--reason", "x", "--check"], "is used on its own"),
])
def test_a_bad_acceptance_is_one_line_and_records_nothing(deployed, env, args, message):
    result = run_invoke(deployed, "harden", *args, env=env)
    assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (deployed / acceptance.ACCEPT_FILE).exists()


def test_an_acceptance_waits_for_no_one_it_is_refused_while_another_task_edits(deployed, env):
    with journal.deployment_lock(deployed, "upgrade"):
        result = run_invoke(deployed, "harden", "--accept", "app-public", "--reason", "x", env=env)
    assert result.returncode == 1 and "is changing this deployment" in result.stderr
    assert not (deployed / acceptance.ACCEPT_FILE).exists()


def test_concurrent_acceptances_leave_one_whole_record(deployed):
    """Eight threads record at once: each holds the deployment lock or is refused; the file is whole JSON
    holding one of the reasons, never a mix."""
    outcomes: list[str] = []

    def accept(number):
        try:
            acceptance.record(deployed, "app-public", f"reason number {number}")
            outcomes.append("recorded")
        except Exception as exc:  # the lock's refusal is an OperatorError
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=accept, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "recorded" in outcomes and set(outcomes) <= {"recorded", "OperatorError"}
    record = json.loads((deployed / acceptance.ACCEPT_FILE).read_text())
    assert list(record) == ["app-public"] and record["app-public"]["reason"].startswith("reason number ")


def test_a_damaged_record_accepts_nothing(deployed, env):
    (deployed / acceptance.ACCEPT_FILE).parent.mkdir(exist_ok=True)
    for text in ("{not json", "[]", '{"app-public": {"reason": ""}}', '{"app-public": "yes"}'):
        (deployed / acceptance.ACCEPT_FILE).write_text(text)
        assert acceptance.read(deployed) == {}
    assert app_private(deployed, env)[0] == "fail"

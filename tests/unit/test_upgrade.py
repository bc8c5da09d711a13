"""`invoke upgrade` without an engine: tag validation, the plan and its diff, gates, history, and
the switch/rollback order with the engine steps replaced. The real proof is tests/e2e/test_upgrade.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from posthog_compose.configuration import images

from posthog_compose.operations import upgrade
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from tests.conftest import run_invoke

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32



# ----------------------------------------------------------------------------- tags
@pytest.mark.parametrize("to, expected", [
    (SHA, f"posthog/posthog:{SHA}"),
    ("release-1.43.0", "posthog/posthog:release-1.43.0"),
    (DIGEST, f"posthog/posthog@{DIGEST}"),
])
def test_published_tags_are_accepted(to, expected):
    assert upgrade.target_reference("posthog/posthog:release-1.41.0", to, "posthog", False) == expected


@pytest.mark.parametrize("to, hint", [
    ("1.50.0", "PostHog published no release-1.50.0: its numbered releases end at release-1.43.0"),
    ("v1.44", "no release-1.44.0"),
    ("v1.43", "release-1.43.0"),
    ("1.42.0", "e.g. release-1.42.0"),
    ("0123456", "full 40-character"),
    (SHA.upper(), "full 40-character"),
    ("latest", "--allow-latest"),
    ("release-1.43", "not a tag PostHog publishes"),
    ("sha256:abc", "not a tag PostHog publishes"),
    ("$(reboot)", "not a tag PostHog publishes"),
    ("x; rm -rf /", "not a tag PostHog publishes"),
    ("posthog/posthog:release-1.43.0", "not an image reference"),
    ("", "--to is required"),
])
def test_anything_else_is_refused_with_a_reason(to, hint):
    with pytest.raises(OperatorError) as caught:
        upgrade.target_reference("posthog/posthog:release-1.41.0", to, "posthog", False)
    assert hint in str(caught.value)


def test_latest_needs_allow_latest_and_warns(deployed):
    request = upgrade.Request(to="latest", allow_latest=True)
    plan = upgrade.make_plan(deployed, request)
    assert plan.target == "posthog/posthog:latest"
    assert any("moving tag" in warning and "Not for production" in warning for warning in plan.warnings)


def test_other_services_take_versions_but_not_moving_tags():
    assert upgrade.target_reference("redis:7.2-alpine", "7.2.5-alpine", "redis", False) == "redis:7.2.5-alpine"
    assert upgrade.target_reference("redis:7.2-alpine", DIGEST, "redis", False) == f"redis@{DIGEST}"
    with pytest.raises(OperatorError, match="moving tag"):
        upgrade.target_reference("redis:7.2-alpine", "latest", "redis", False)


def test_a_registry_port_in_the_repository_is_kept():
    assert (upgrade.target_reference("127.0.0.1:5000/posthog/posthog:release-1.41.0", SHA, "posthog", False)
            == f"127.0.0.1:5000/posthog/posthog:{SHA}")


def test_image_references_parse_and_moving_tags_are_known():
    ref = images.parse("registry.example:5000/team/posthog:release-1.43.0")
    assert (ref.repository, ref.tag) == ("registry.example:5000/team/posthog", "release-1.43.0")
    assert images.is_moving("posthog/posthog") and images.is_moving("posthog/posthog:latest")
    assert not images.is_moving(f"posthog/posthog@{DIGEST}") and not images.is_moving("postgres:15.12-alpine")
    with pytest.raises(OperatorError):
        images.parse("Posthog/PostHog:1")


# ----------------------------------------------------------------------------- plan and diff
def test_plan_changes_one_line_of_env_and_the_diff_shows_it(deployed):
    plan = upgrade.make_plan(deployed, upgrade.Request(to=SHA))
    assert (plan.variable, plan.services) == ("POSTHOG_IMAGE", ["web", "worker", "plugins"])
    assert plan.diff().splitlines()[2:] == ["@@ -%s +%s @@" % (_line(plan.env_before), _line(plan.env_before)),
                                            "-POSTHOG_IMAGE=posthog/posthog:release-1.43.0",
                                            f"+POSTHOG_IMAGE=posthog/posthog:{SHA}"]
    secrets = [v for k, v in bootstrap_values(deployed).items() if k in ("SECRET_KEY", "POSTGRES_PASSWORD")]
    assert not any(secret in plan.diff() for secret in secrets)


def _line(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("POSTHOG_IMAGE="))


def bootstrap_values(root):
    from posthog_compose.configuration.envfile import EnvFile

    return EnvFile.load(root / ".env").values()


def test_dry_run_prints_plan_and_diff_and_changes_nothing(deployed):
    before = (deployed / ".env").read_bytes()
    result = run_invoke(deployed, "upgrade", "--to", SHA, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Plan: upgrade POSTHOG_IMAGE posthog/posthog:release-1.43.0 -> posthog/posthog:" + SHA in result.stdout
    assert f"+POSTHOG_IMAGE=posthog/posthog:{SHA}" in result.stdout
    assert "back up PostgreSQL (`invoke backup --only postgres`" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "Dry run: nothing changed."
    assert (deployed / ".env").read_bytes() == before
    assert not (deployed / "backups").exists()


def test_bad_tag_is_one_line_and_changes_nothing(deployed):
    before = (deployed / ".env").read_bytes()
    result = run_invoke(deployed, "upgrade", "--to", "1.50.0")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "published no release-1.50.0" in result.stderr and "commit SHA" in result.stderr
    assert "hub.docker.com/r/posthog/posthog/tags" in result.stderr
    assert (deployed / ".env").read_bytes() == before


def test_same_version_is_nothing_to_do(deployed):
    result = run_invoke(deployed, "upgrade", "--to", "release-1.43.0")
    assert result.returncode == 0 and "nothing to do" in result.stdout


def test_postgres_major_change_is_refused_with_the_handbook_pointer(deployed):
    with pytest.raises(OperatorError) as caught:
        upgrade.make_plan(deployed, upgrade.Request(to="16.4-alpine", service="postgres"))
    assert "13 -> 16" in str(caught.value) and "docs/upgrading.md#postgres-major-upgrade" in str(caught.value)
    plan = upgrade.make_plan(deployed, upgrade.Request(to="13.23-alpine", service="postgres"))
    assert plan.services == ["db"] and plan.target == "postgres:13.23-alpine"


def test_an_upgrade_that_leaves_a_datastore_outside_the_range_is_refused_before_anything(deployed):
    before = (deployed / ".env").read_bytes()
    with pytest.raises(OperatorError) as caught:
        upgrade.make_plan(deployed, upgrade.Request(to="7.2.5-alpine", service="redis"))
    assert "REDIS_IMAGE redis:7.2.5-alpine" in str(caught.value) and ">=5.0.0,<=6.3.0" in str(caught.value)
    assert "redis:6.2.20-alpine" in str(caught.value)  # the fix names an image inside the range
    with pytest.raises(OperatorError, match=r"CLICKHOUSE_IMAGE .* \(after the upgrade to .*release-1.42.0\)"):
        upgrade.make_plan(deployed, upgrade.Request(to="release-1.42.0", service="posthog"))
    assert (deployed / ".env").read_bytes() == before


def test_unknown_service_is_refused(deployed):
    with pytest.raises(OperatorError, match="--service 'mysql' is not one of posthog, postgres"):
        upgrade.make_plan(deployed, upgrade.Request(to="8", service="mysql"))


# ----------------------------------------------------------------------------- gates
def test_the_repository_gates_load_and_match_posthogs_async_migration_versions(repo):
    gates = upgrade.load_gates(repo)
    assert [g.version for g in gates] == [(1, 33, 0), (1, 37, 0), (1, 40, 0), (1, 42, 0)]
    assert all(g.check == ["python", "manage.py", "run_async_migrations", "--check"] for g in gates)


@pytest.mark.parametrize("current, target, expected", [
    ("release-1.41.0", "release-1.43.0", ["async-migrations-0005-0007-before-1.42"]),
    ("release-1.32.0", "release-1.36.1", ["async-migrations-before-1.33"]),
    ("release-1.32.0", SHA, ["async-migrations-before-1.33", "async-migration-0004-before-1.37",
                             "async-migration-0006-before-1.40", "async-migrations-0005-0007-before-1.42"]),
    ("release-1.42.0", "release-1.43.0", []),
    ("release-1.43.0", SHA, []),
    (SHA, "0" * 40, []),
])
def test_a_gate_applies_when_the_upgrade_crosses_its_version(repo, current, target, expected):
    gates = upgrade.load_gates(repo)
    applied = upgrade.applicable_gates(gates, f"posthog/posthog:{current}", f"posthog/posthog:{target}")
    assert [g.id for g in applied] == expected


def test_a_malformed_gates_file_is_one_line(repo):
    (repo / "upgrades.yml").write_text("gates:\n  - id: x\n    version: one\n")
    with pytest.raises(OperatorError, match=r"^upgrades.yml: gates\[0\]\.version: expected a version like 1.43.0, got 'one'; "):
        upgrade.load_gates(repo)


class FakeRunner(Runner):
    """Answers commands from a table of (predicate, CompletedProcess); records every call."""

    def __init__(self, root, answers=()):
        super().__init__(root)
        self.calls: list[list[str]] = []
        self.answers = list(answers)

    def run(self, cmd, **kwargs):
        self.calls.append(cmd)
        for predicate, answer in self.answers:
            if predicate(cmd):
                return subprocess.CompletedProcess(cmd, *answer)
        return subprocess.CompletedProcess(cmd, 0, "", "")


def test_a_gate_that_is_not_passed_stops_with_its_instructions(repo):
    gates = upgrade.applicable_gates(upgrade.load_gates(repo), "posthog/posthog:release-1.41.0",
                                     "posthog/posthog:release-1.43.0")
    runner = FakeRunner(repo, [(lambda cmd: "run_async_migrations" in cmd,
                                (1, "", "ImproperlyConfigured: async migrations are not complete"))])
    with pytest.raises(OperatorError) as caught:
        upgrade.check_gates(repo, runner, gates)
    message = str(caught.value)
    assert "async-migrations-0005-0007-before-1.42 not passed" in message and "release-1.41.4" in message
    assert runner.calls[0][-7:] == ["exec", "-T", "web", "python", "manage.py", "run_async_migrations", "--check"]


# ----------------------------------------------------------------------------- history
def test_history_is_appended_0600_and_printed(deployed, capsys):
    plan = upgrade.make_plan(deployed, upgrade.Request(to=SHA))
    backup = deployed / "backups" / "postgres-posthog-x.dump"
    upgrade._record(deployed, plan, plan.target, "upgraded", 0.0, backup)
    upgrade._record(deployed, plan, plan.target, "rolled back", 0.0, None, "web unhealthy\nmore")
    path = upgrade.history_path(deployed)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    rows = upgrade.read_history(deployed)
    assert [r["result"] for r in rows] == ["upgraded", "rolled back"]
    assert rows[0]["from"] == "posthog/posthog:release-1.43.0" and rows[0]["backup"] == "backups/postgres-posthog-x.dump"
    assert rows[1]["reason"] == "web unhealthy"
    upgrade.print_history(deployed)
    text = capsys.readouterr().out
    assert "release-1.43.0" in text and SHA in text and "rolled back" in text
    assert text.strip().splitlines()[-1] == "2 upgrade(s), 1 not completed; reasons with --json."
    result = run_invoke(deployed, "upgrade", "--history", "--json")
    assert [r["result"] for r in json.loads(result.stdout)] == ["upgraded", "rolled back"]


def test_history_shows_a_digest_as_a_usable_reference(deployed, capsys):
    """A digest-pinned row shows the whole digest, which `upgrade --to` takes back as it is."""
    plan = upgrade.make_plan(deployed, upgrade.Request(to=DIGEST))
    upgrade._record(deployed, plan, plan.target, "upgraded", 0.0, None)
    upgrade.print_history(deployed)
    text = capsys.readouterr().out
    cells = [cell for line in text.splitlines()[1:-2] for cell in line.split() if cell.startswith("sha256:")]
    assert cells == [DIGEST], text
    assert upgrade.target_reference("posthog/posthog:release-1.43.0", cells[0], "posthog", False) == \
        f"posthog/posthog@{DIGEST}"


def test_a_corrupt_history_line_is_one_line(deployed):
    path = upgrade.history_path(deployed)
    path.parent.mkdir()
    path.write_text("{not json\n")
    result = run_invoke(deployed, "upgrade", "--history")
    assert result.returncode == 1 and "line 1 is not JSON" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- switch and rollback order
@pytest.fixture
def engine_steps(monkeypatch):
    """Replace the engine steps; record the order and the image .env holds at each recreate."""
    events = []
    monkeypatch.setattr(upgrade, "check_gates", lambda root, runner, gates: events.append("gates"))
    monkeypatch.setattr("posthog_compose.configuration.checks.require_clean", lambda root: events.append("config-check"))
    monkeypatch.setattr(upgrade, "check_free_disk", lambda root, runner, gib: events.append("disk"))

    def backup(root, runner):
        events.append("backup")
        path = root / "backups" / "postgres-posthog-test.dump"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"PGDMP")
        return path

    monkeypatch.setattr(upgrade, "backup_postgres", backup)
    monkeypatch.setattr(upgrade, "fetch_image", lambda runner, target, pin: events.append("pull") or target)
    monkeypatch.setattr(upgrade, "save_logs", lambda root, runner, services: root / "backups" / "failed.log")
    # The containers' images are inspected on the engine; here every recreate "worked" as asked.
    monkeypatch.setattr(upgrade, "check_running_images", lambda root, runner, services, reference: None)
    monkeypatch.setattr(upgrade, "_new_version_ran", lambda runner, root, plan: True)
    monkeypatch.setattr(upgrade, "_require_running_on", lambda root, runner, plan: None)
    return events


def _image(root):
    return bootstrap_values(root)["POSTHOG_IMAGE"]


def test_success_switches_after_the_backup_and_records_it(deployed, engine_steps, monkeypatch):
    monkeypatch.setattr(upgrade, "_recreate", lambda root, runner, services, timeout:
                        engine_steps.append(f"recreate {_image(root)}"))
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA)) == 0
    assert engine_steps == ["gates", "config-check", "disk", "backup", "pull", f"recreate posthog/posthog:{SHA}"]
    assert _image(deployed) == f"posthog/posthog:{SHA}"
    assert oct((deployed / ".env").stat().st_mode & 0o777) == "0o600"
    assert upgrade.read_history(deployed)[-1]["result"] == "upgraded"


def test_a_failure_after_the_switch_restores_the_old_version(deployed, engine_steps, monkeypatch, capsys):
    def recreate(root, runner, services, timeout):
        engine_steps.append(f"recreate {_image(root)}")
        if _image(root).endswith(SHA):
            raise OperatorError("services failed: web (unhealthy)")

    monkeypatch.setattr(upgrade, "_recreate", recreate)
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA)) == 1
    assert engine_steps[-2:] == [f"recreate posthog/posthog:{SHA}", "recreate posthog/posthog:release-1.43.0"]
    assert _image(deployed) == "posthog/posthog:release-1.43.0"
    last = upgrade.read_history(deployed)[-1]
    assert last["result"] == "rolled back" and "web (unhealthy)" in last["reason"]
    assert "back on posthog/posthog:release-1.43.0 and healthy" in capsys.readouterr().out


def test_a_failed_rollback_exits_2_and_names_the_backup(deployed, engine_steps, monkeypatch):
    monkeypatch.setattr(upgrade, "_recreate", lambda *args: (_ for _ in ()).throw(OperatorError("unhealthy")))
    with pytest.raises(OperatorError) as caught:
        upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA))
    assert caught.value.code == 2 and "backups/postgres-posthog-test.dump" in str(caught.value)
    assert _image(deployed) == "posthog/posthog:release-1.43.0"
    assert upgrade.read_history(deployed)[-1]["result"] == "rollback failed"


def test_a_failure_before_the_switch_changes_nothing(deployed, engine_steps, monkeypatch):
    def pull(runner, target, pin):
        raise OperatorError("cannot pull")

    monkeypatch.setattr(upgrade, "fetch_image", pull)
    before = (deployed / ".env").read_bytes()
    with pytest.raises(OperatorError, match="stopped before the switch, nothing changed: cannot pull"):
        upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA))
    assert (deployed / ".env").read_bytes() == before
    assert upgrade.read_history(deployed)[-1]["result"] == "aborted"


def test_skip_backup_says_what_it_skips(deployed, engine_steps, monkeypatch, capsys):
    monkeypatch.setattr(upgrade, "_recreate", lambda *args: None)
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA, skip_backup=True)) == 0
    assert "backup" not in engine_steps
    assert "there is no dump to restore" in capsys.readouterr().out
    assert upgrade.read_history(deployed)[-1]["backup"] is None


def test_pin_digest_writes_the_repo_digest(deployed):
    runner = FakeRunner(deployed, [
        (lambda cmd: cmd[:2] == ["docker", "pull"], (0, "", "")),
        (lambda cmd: "{{json .RepoDigests}}" in cmd, (0, json.dumps([f"posthog/posthog@{DIGEST}"]), "")),
    ])
    assert upgrade.fetch_image(runner, f"posthog/posthog:{SHA}", True) == f"posthog/posthog@{DIGEST}"
    local_only = FakeRunner(deployed, [
        (lambda cmd: cmd[:2] == ["docker", "pull"], (1, "", "pull access denied")),
        (lambda cmd: "{{.Id}}" in cmd, (0, "sha256:local", "")),
        (lambda cmd: "{{json .RepoDigests}}" in cmd, (0, "[]", "")),
    ])
    assert upgrade.fetch_image(local_only, f"posthog/posthog:{SHA}", False) == f"posthog/posthog:{SHA}"
    with pytest.raises(OperatorError, match="no registry digest"):
        upgrade.fetch_image(local_only, f"posthog/posthog:{SHA}", True)
    missing = FakeRunner(deployed, [(lambda cmd: True, (1, "", "manifest unknown"))])
    with pytest.raises(OperatorError, match="cannot pull .* and the engine does not have it"):
        upgrade.fetch_image(missing, f"posthog/posthog:{SHA}", False)


def test_the_commands_are_argument_lists(deployed):
    runner = FakeRunner(deployed)
    upgrade.fetch_image(runner, f"posthog/posthog:{SHA}", False)
    assert runner.calls[0] == ["docker", "pull", "--quiet", f"posthog/posthog:{SHA}"]


def test_a_second_upgrade_waits_for_the_first(deployed):
    with upgrade._lock(deployed):
        with pytest.raises(OperatorError, match="another task .* is changing this deployment"):
            with upgrade._lock(deployed):
                pass
    assert os.path.exists(deployed / ".deploy" / "upgrade.lock")


# ----------------------------------------------------------------------------- the version behind a digest
def _set_image(root, value):
    from posthog_compose.configuration.envfile import EnvFile

    env = EnvFile.load(root / ".env")
    env.set("POSTHOG_IMAGE", value)
    env.write()


def test_a_move_from_a_recorded_digest_to_a_release_applies_the_gates_it_crosses(deployed):
    """Without the record a digest reads as newer than every release and no gate fires."""
    _set_image(deployed, f"posthog/posthog@{DIGEST}")
    assert upgrade.make_plan(deployed, upgrade.Request(to="release-1.43.0")).gates == []  # unknown: no gate
    images.record_digest_version(deployed, "posthog/posthog:release-1.41.0", f"posthog/posthog@{DIGEST}")
    plan = upgrade.make_plan(deployed, upgrade.Request(to="release-1.43.0"))
    assert [g.id for g in plan.gates] == ["async-migrations-0005-0007-before-1.42"]
    images.record_digest_version(deployed, "posthog/posthog:release-1.43.1", f"docker.io/posthog/posthog@{DIGEST}")
    down = upgrade.make_plan(deployed, upgrade.Request(to="release-1.43.0"))
    assert any("downgrade" in warning for warning in down.warnings) and down.gates == []
    recorded = json.loads((deployed / images.DIGEST_VERSIONS_FILE).read_text())
    assert recorded == {f"posthog/posthog@{DIGEST}": "release-1.43.1"}


def test_pin_digest_records_the_version_the_digest_stands_for(deployed, engine_steps, monkeypatch):
    monkeypatch.setattr(upgrade, "fetch_image", lambda runner, target, pin: f"posthog/posthog@{DIGEST}")
    monkeypatch.setattr(upgrade, "_recreate", lambda *args: None)
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to="release-1.43.1", pin_digest=True)) == 0
    assert _image(deployed) == f"posthog/posthog@{DIGEST}"
    assert images.with_known_tag(deployed, _image(deployed)) == f"posthog/posthog:release-1.43.1@{DIGEST}"
    assert upgrade.version_of(images.with_known_tag(deployed, _image(deployed))) == (1, 43, 1)


def test_a_corrupt_digest_record_is_ignored_not_fatal(deployed):
    path = deployed / images.DIGEST_VERSIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert images.with_known_tag(deployed, f"posthog/posthog@{DIGEST}") == f"posthog/posthog@{DIGEST}"

"""A restore is a journaled operation (issue 27): from its first change until every service is healthy,
.deploy/journal/restore.json names the archive (path and sha256), the deployment and the step reached.
Until it is cleared `status` names it and exits 1, `up` starts the datastores only and ends on the line
that finishes it, every other changing task refuses, and restoring the same archive again finishes it.
The engine is faked (test_backup's ``engine`` fixture); tests/e2e/test_restore_faults.py kills real
restores on a real engine."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations import lifecycle, restore, stack
from tests.unit.test_backup import TARS, DUMP, FakeRunner, engine, made  # noqa: F401 - fixtures

STEPS = ["restore-journal-written", "restore-config-written", "restore-loading-volume", "restore-pg-restore",
         "restore-final-start"]
EVERY_SERVICE = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")


def _interrupt_at(monkeypatch, step: str, signal=KeyboardInterrupt) -> None:
    """A Ctrl-C (KeyboardInterrupt) at a named fault point, as journal.fault_point delivers it."""
    def fault(name):
        if name == step:
            raise signal()

    monkeypatch.setattr(journal, "fault_point", fault)


def _entry(root: Path) -> dict | None:
    return journal.read(root, "restore")


def test_the_journal_names_archive_sha256_deployment_and_each_step_and_is_cleared_when_healthy(
        deployed, engine, made, monkeypatch):
    good = made.read_bytes()
    made.write_bytes(good[:-50])  # a bad archive changes nothing: no journal either
    with pytest.raises(OperatorError, match="nothing was changed"):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert journal.pending(deployed) == []
    made.write_bytes(good)
    steps: list[str] = []
    written = journal.write

    def write(root, kind, entry):
        steps.append(entry["step"])
        written(root, kind, entry)
        assert oct(journal.journal_path(root, kind).stat().st_mode & 0o777) == "0o600"

    monkeypatch.setattr(journal, "write", write)
    seen_at_final_start: list[dict] = []
    monkeypatch.setattr(journal, "fault_point", lambda name: seen_at_final_start.append(_entry(deployed))
                        if name == "restore-final-start" else None)
    restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert steps == ["stopping the deployment", "removing the data volumes", "writing the configuration",
                     "starting db", "loading volumes/zookeeper.tar", "loading volumes/clickhouse.tar",
                     "pg_restore of postgres/posthog.dump", "starting PostHog"]
    entry = seen_at_final_start[0]
    assert entry["archive"] == str(made.resolve())
    assert entry["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert entry["project"] == "posthog" and entry["root"] == str(deployed.resolve())
    assert entry["replayed_by"] == "posthog_compose.operations.restore"
    assert _entry(deployed) is None and journal.pending(deployed) == []


@pytest.mark.parametrize("step", STEPS)
def test_an_interrupted_restore_is_recorded_and_the_same_archive_finishes_it(deployed, engine, made, monkeypatch,
                                                                             step, capsys):
    _interrupt_at(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    line = restore.interrupted_line(deployed)
    assert f"{line}." in capsys.readouterr().out  # Ctrl-C says at once how to finish
    assert line.startswith(f"An interrupted restore of {made.relative_to(deployed)} is recorded (step: ")
    assert line.endswith(f"finish it with `invoke restore {made.relative_to(deployed)} --yes`")
    engine.fed.clear()
    monkeypatch.setattr(journal, "fault_point", lambda name: None)
    restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert "Finishing the interrupted restore of this archive" in capsys.readouterr().out
    assert engine.fed == {"/var/lib/clickhouse": TARS["/var/lib/clickhouse"],
                          "/var/lib/zookeeper": TARS["/var/lib/zookeeper"], "postgres": DUMP}
    assert journal.pending(deployed) == []


@pytest.mark.parametrize("failure", ["load /var/lib/clickhouse", "load postgres"])
def test_a_failed_load_leaves_the_restore_recorded(deployed, engine, made, failure):
    engine.fail = failure
    with pytest.raises(OperatorError, match="half restored"):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert _entry(deployed)["step"].startswith(("loading", "pg_restore"))


def test_an_unhealthy_end_keeps_the_journal(deployed, engine, made, monkeypatch):
    monkeypatch.setattr(restore, "_up", lambda root, runner, services, timeout, out: (_ for _ in ()).throw(
        OperatorError("services failed: web")) if not services else None)
    with pytest.raises(OperatorError):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert _entry(deployed)["step"] == "starting PostHog"


def test_another_archive_takes_the_place_of_the_interrupted_one(deployed, engine, made, monkeypatch, capsys):
    _interrupt_at(monkeypatch, "restore-pg-restore")
    with pytest.raises(KeyboardInterrupt):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    other = made.with_name("other.pcbk")
    other.write_bytes(made.read_bytes())
    journal.write(deployed, "restore", {**_entry(deployed), "sha256": "0" * 64})
    _interrupt_at(monkeypatch, "restore-final-start")
    with pytest.raises(KeyboardInterrupt):
        restore.restore(deployed, FakeRunner(deployed), str(other), yes=True)
    assert "is recorded; this restore of other.pcbk takes its place" in capsys.readouterr().out
    assert _entry(deployed)["archive"] == str(other.resolve())


# ----------------------------------------------------------------------------- status and up
@pytest.fixture
def interrupted(deployed, engine, made, monkeypatch):
    _interrupt_at(monkeypatch, "restore-pg-restore")
    with pytest.raises(KeyboardInterrupt):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    monkeypatch.setattr(journal, "fault_point", lambda name: None)
    return made


@pytest.fixture
def all_healthy(monkeypatch):
    """Every container running and healthy, PostHog ready: what Docker says after an empty-database start."""
    monkeypatch.setattr(stack, "service_states", lambda root, runner: [
        stack.ServiceState(name, "running", "healthy") for name in EVERY_SERVICE])
    monkeypatch.setattr(stack, "survey", lambda root, runner: stack.Survey())
    monkeypatch.setattr(stack, "readiness", lambda values: (True, 200, "ready"))
    monkeypatch.setattr("posthog_compose.operations.diskusage.for_status", lambda root, runner: _NoDisk())


class _NoDisk:
    def lines(self):
        return []

    def add_filesystems(self, spaces):
        list(spaces)

    def to_dict(self):
        return {}


def test_status_names_the_interrupted_restore_and_exits_1_though_every_container_is_healthy(
        deployed, interrupted, all_healthy, capsys):
    with pytest.raises(SystemExit) as exited:
        lifecycle.status(deployed, FakeRunner(deployed))
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert (f"An interrupted restore of {interrupted.relative_to(deployed)} is recorded (step: pg_restore of "
            f"postgres/posthog.dump): finish it with `invoke restore {interrupted.relative_to(deployed)} --yes`") in out
    assert "8 of 8 services running and healthy." not in out
    with pytest.raises(SystemExit):
        lifecycle.status(deployed, FakeRunner(deployed), as_json=True)
    assert json.loads(capsys.readouterr().out)["interrupted_restore"].startswith("An interrupted restore of")
    journal.clear(deployed, "restore")  # finished: the same containers are now the whole truth
    lifecycle.status(deployed, FakeRunner(deployed))
    assert capsys.readouterr().out.rstrip().endswith("8 of 8 services running and healthy.")


def test_up_starts_the_datastores_only_and_ends_on_the_line_that_finishes_the_restore(
        deployed, interrupted, monkeypatch, capsys):
    started: list[list[str]] = []
    monkeypatch.setattr(stack, "start_and_wait", lambda root, runner, command, targets, timeout, **kw:
                        started.append(list(command)))
    monkeypatch.setattr(lifecycle, "check_images_match", lambda root, runner, services: None)
    with pytest.raises(restore.InterruptedRestore) as refused:
        lifecycle.up(deployed, FakeRunner(deployed), [])
    assert str(refused.value) == restore.interrupted_line(deployed)
    assert len(started) == 1 and started[0][-6:] == ["--detach", "db", "redis", "clickhouse", "zookeeper", "kafka"]
    out = capsys.readouterr().out
    assert "PostHog is up" not in out and "web, worker and plugins are not started" in out
    for services in (["web"], ["web", "db"]):  # named on the command line: PostHog still waits
        started.clear()
        with pytest.raises(restore.InterruptedRestore):
            lifecycle.up(deployed, FakeRunner(deployed), services)
        assert not [c for c in started if "web" in c]


def test_up_without_waiting_starts_no_posthog_either(deployed, interrupted, monkeypatch):
    runner = FakeRunner(deployed)
    with pytest.raises(restore.InterruptedRestore):
        lifecycle.up(deployed, runner, ["web"], wait=False)
    assert not [c for c in runner.commands if "up" in c]


def test_every_other_changing_task_refuses_with_the_same_line(deployed, interrupted):
    with pytest.raises(restore.InterruptedRestore, match="finish it with `invoke restore"):
        journal.replay(deployed, FakeRunner(deployed))


# ----------------------------------------------------------------------------- abandon
def test_abandon_needs_the_recorded_archive_and_the_deployment_name_and_says_nothing_is_undone(
        deployed, interrupted, monkeypatch, capsys):
    with pytest.raises(OperatorError, match="is of backups/.*, not other.pcbk.*nothing was changed"):
        restore.abandon(deployed, "other.pcbk")
    for answer in ("", "yes\n"):
        monkeypatch.setattr("sys.stdin", io.StringIO(answer))
        with pytest.raises(OperatorError, match="still recorded"):
            restore.abandon(deployed, str(interrupted))
    assert journal.pending(deployed) == ["restore"]
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("posthog\n"))
    restore.abandon(deployed, interrupted.name)  # the name in backups/, as restore takes it
    out = capsys.readouterr().out
    assert "undoes nothing" in out and "PostgreSQL may be empty" in out and "abandoned" in out
    assert journal.pending(deployed) == []
    with pytest.raises(OperatorError, match="nothing to abandon"):
        restore.abandon(deployed, interrupted.name, yes=True)


def test_abandon_through_the_task(deployed):
    from tests.conftest import run_invoke

    archive = deployed / "backups" / "posthog-20261207-010203.backup"
    journal.write(deployed, "restore", {"archive": str(archive), "step": "pg_restore of postgres/posthog.dump",
                                        "project": "posthog"})
    refused = run_invoke(deployed, "up", "--dry-run")  # a dry run changes nothing: it may still plan
    assert refused.returncode == 0
    result = run_invoke(deployed, "restore", "backups/posthog-20261207-010203.backup", "--abandon", "--yes")
    assert result.returncode == 0, result.stderr
    assert "undoes nothing" in result.stdout and not journal.pending(deployed)


# ----------------------------------------------------------------------------- properties
#: Printable names (an unprintable character is shown escaped, never sent to the terminal as it is).
paths = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"],
                              include_characters=" ", exclude_characters="/"), min_size=1, max_size=40).filter(lambda n: n not in (".", ".."))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=paths, passphrase=st.none() | paths, inside=st.booleans())
def test_the_finishing_command_gives_back_the_archive_whatever_its_name(tmp_path, name, passphrase, inside):
    """Spaces, quotes, `$`, backticks and semicolons in a path: the shell reads the command back into
    the same archive (and passphrase file) and nothing else."""
    archive = (tmp_path / "backups" / name) if inside else Path("/elsewhere") / name
    entry = {"archive": str(archive), "step": "pg_restore", "passphrase_file": passphrase}
    line = restore.interrupted_line(tmp_path, entry)
    assert "\n" not in line and "\x1b" not in line
    command = line[line.rindex("finish it with `") + len("finish it with `"):-1]
    words = shlex.split(command)
    expected = str(archive.relative_to(tmp_path)) if inside else str(archive)
    assert words[:4] == ["invoke", "restore", expected, "--yes"]
    assert words[4:] == (["--passphrase-file", passphrase] if passphrase else [])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.dictionaries(st.sampled_from(["archive", "step", "passphrase_file", "sha256", "project"]),
                             st.none() | st.integers() | st.text(max_size=30) | st.lists(st.integers(), max_size=2)))
def test_any_journal_entry_gives_one_printable_line(tmp_path, entry):
    """A journal edited by hand or written by another version: status still prints one line, no escape."""
    line = restore.interrupted_line(tmp_path, entry)
    assert line.startswith("An interrupted restore of ") and line.isprintable()


def test_a_journal_that_is_not_json_is_one_line(deployed, all_healthy):
    path = journal.journal_path(deployed, "restore")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.raises(OperatorError, match="restore.json is not readable JSON"):
        lifecycle.status(deployed, FakeRunner(deployed))



def test_harden_check_names_the_command_that_finishes_the_restore(deployed, capsys):
    from posthog_compose.operations import harden

    journal.write(deployed, "restore", {"archive": str(deployed / "backups" / "a.backup"), "step": "starting db"})
    harden.check(deployed, FakeRunner(deployed), as_json=True)
    items = json.loads(capsys.readouterr().out)["items"]
    unfinished = [item for item in items if item["id"] == "unfinished"]
    assert unfinished[0]["fix"] == "invoke restore backups/a.backup --yes"

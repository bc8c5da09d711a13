"""Fault handling without an engine: the journal, deferred signals, the lock and the order of
decisions, the wait's reconciliation and readiness rules, and a REAL SIGKILL at every named step
of an upgrade and of a rotation (in a child process whose engine steps are replaced), followed by
the next task's replay."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from posthog_compose import journal
from posthog_compose.operations import engine, lifecycle, rotation, stack, upgrade
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.stack import ContainerDetail, ServiceState
from tests.conftest import REPO
from tests.unit.test_upgrade import SHA, engine_steps  # noqa: F401 - a fixture

OLD = "posthog/posthog:release-1.43.0"
NEW = f"posthog/posthog:{SHA}"


# ----------------------------------------------------------------------------- journal
def test_journal_is_0600_atomic_and_cleared(tmp_path):
    journal.write(tmp_path, "rotation", {"env": {"POSTGRES_PASSWORD": "s3cret"}})
    path = tmp_path / ".deploy" / "journal" / "rotation.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert journal.read(tmp_path, "rotation")["env"] == {"POSTGRES_PASSWORD": "s3cret"}
    assert journal.pending(tmp_path) == ["rotation"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    journal.clear(tmp_path, "rotation")
    assert journal.pending(tmp_path) == []


def test_an_unreadable_journal_is_one_line(tmp_path):
    journal.write(tmp_path, "upgrade", {})
    (tmp_path / ".deploy" / "journal" / "upgrade.json").write_text("{half")
    with pytest.raises(OperatorError, match="is not readable JSON"):
        journal.read(tmp_path, "upgrade")


def test_fault_points_need_both_variables(monkeypatch):
    monkeypatch.setenv(journal.FAULT_VARIABLE, "kill:step")
    journal.fault_point("step")  # without POSTHOG_COMPOSE_FAULT_TEST=1 nothing happens
    monkeypatch.setenv("POSTHOG_COMPOSE_FAULT_TEST", "1")
    journal.fault_point("another-step")


# ----------------------------------------------------------------------------- deferred signals
def test_ctrl_c_inside_a_critical_section_waits_for_its_end():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with journal.critical():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("after the signal")
            with journal.critical():  # nested: still deferred
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("inner")
            steps.append("end")
    assert steps == ["after the signal", "inner", "end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_is_deferred_too_and_a_rollback_section_drops_it():
    with journal.critical(reraise=False):
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with journal.critical():
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_exception_inside_the_section_is_not_replaced_by_the_interrupt():
    with pytest.raises(ValueError):
        with journal.critical():
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError("the real failure")


# ----------------------------------------------------------------------------- lock and decisions
def test_the_lock_is_exclusive_and_released_by_a_killed_holder(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from posthog_compose import journal
        with journal.deployment_lock({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(OperatorError, match="is changing this deployment"):
        with journal.deployment_lock(tmp_path):
            pass
    child.kill()
    child.wait()
    with journal.deployment_lock(tmp_path):
        pass


def test_already_at_the_target_is_decided_under_the_lock(deployed, engine_steps):  # noqa: F811
    from tests.conftest import set_env

    set_env(deployed, POSTHOG_IMAGE=NEW)
    with journal.deployment_lock(deployed):
        with pytest.raises(OperatorError, match="is changing this deployment"):
            upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA))


def test_already_at_the_target_needs_the_containers_on_it(deployed, monkeypatch):
    from tests.conftest import set_env

    set_env(deployed, POSTHOG_IMAGE=NEW)
    monkeypatch.setattr(stack, "inspect_containers", lambda root, runner: {
        "web": ContainerDetail("1", "web", 1.0, 0, OLD, "sha256:1", "running")})
    with pytest.raises(OperatorError, match="web runs posthog/posthog:release-1.43.0: run `invoke up`"):
        upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA))


# ----------------------------------------------------------------------------- rollback survives
def test_the_rollback_survives_a_full_disk_and_a_second_ctrl_c(deployed, engine_steps, monkeypatch,  # noqa: F811
                                                               capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "backups/x")

    monkeypatch.setattr(upgrade, "save_logs", full)
    monkeypatch.setattr(upgrade, "_record", full)
    recreated = []

    def recreate(root, runner, services, timeout):
        image = lifecycle._values(root)["POSTHOG_IMAGE"]
        recreated.append(image)
        if image == NEW:
            raise OperatorError("services failed: web (exited (1))")
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the rollback runs

    monkeypatch.setattr(upgrade, "_recreate", recreate)
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA)) == 1
    assert recreated == [NEW, OLD]
    assert lifecycle._values(deployed)["POSTHOG_IMAGE"] == OLD
    out = capsys.readouterr()
    assert "logs were not saved (no space left on the disk" in out.out
    assert "history line (rolled back) was not written" in out.err
    assert journal.pending(deployed) == []


def test_ctrl_c_during_the_switch_rolls_back_and_records_interrupted(deployed, engine_steps, monkeypatch):  # noqa: F811
    def recreate(root, runner, services, timeout):
        if lifecycle._values(root)["POSTHOG_IMAGE"] == NEW:
            raise KeyboardInterrupt

    monkeypatch.setattr(upgrade, "_recreate", recreate)
    monkeypatch.setattr(upgrade, "_new_version_ran", lambda runner, root, plan: False)
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA)) == 130
    assert upgrade.read_history(deployed)[-1]["result"] == "interrupted"
    assert lifecycle._values(deployed)["POSTHOG_IMAGE"] == OLD


def test_a_failed_rollback_of_a_version_that_never_ran_does_not_send_to_the_dump(deployed, engine_steps,  # noqa: F811
                                                                                  monkeypatch):
    def recreate(root, runner, services, timeout):
        raise OperatorError("services failed: web (exited (1))")

    monkeypatch.setattr(upgrade, "_recreate", recreate)
    monkeypatch.setattr(upgrade, "_new_version_ran", lambda runner, root, plan: False)
    with pytest.raises(OperatorError) as error:
        upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA))
    assert error.value.code == 2
    assert "never started, so the database is unchanged" in str(error.value) and "restore" not in str(error.value)
    assert "run `invoke up`" in str(error.value)


# ----------------------------------------------------------------------------- SIGKILL at every step
UPGRADE_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from posthog_compose import journal
from posthog_compose.operations import upgrade
from posthog_compose.operations.engine import Runner
root = Path({root!r})
upgrade.check_gates = lambda *a: None
upgrade.check_free_disk = lambda *a: None
upgrade.fetch_image = lambda runner, target, pin: target
upgrade.check_running_images = lambda *a: None
upgrade._require_running_on = lambda *a: None
upgrade._new_version_ran = lambda *a: True
upgrade.save_logs = lambda *a: None
import posthog_compose.configuration.checks as checks
checks.require_clean = lambda root: None
def recreate(root, runner, services, timeout):
    journal.fault_point("compose-up-started")
    if "{fail}" == "yes" and upgrade.EnvFile_value(root) == {new!r}:
        raise upgrade.OperatorError("services failed: web (exited (1))")
upgrade._recreate = recreate
def value(root):
    from posthog_compose.configuration.envfile import EnvFile
    return EnvFile.load(root / ".env").values()["POSTHOG_IMAGE"]
upgrade.EnvFile_value = value
sys.exit(upgrade.run(root, Runner(root), upgrade.Request(to={sha!r}, skip_backup=True)))
"""


@pytest.mark.parametrize("step,fail", [
    ("upgrade-backup", "no"), ("upgrade-pull", "no"), ("upgrade-journal-written", "no"),
    ("upgrade-env-switched", "no"), ("compose-up-started", "no"), ("upgrade-rollback", "yes"),
])
def test_sigkill_at_each_upgrade_step_then_the_next_task_undoes_it(deployed, monkeypatch, step, fail):
    env = {**os.environ, "POSTHOG_COMPOSE_FAULT_TEST": "1", journal.FAULT_VARIABLE: f"kill:{step}"}
    child = subprocess.run([sys.executable, "-c", UPGRADE_CHILD.format(repo=str(REPO), root=str(deployed), sha=SHA,
                                                                        new=NEW, fail=fail)],
                           env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    switched = step not in ("upgrade-backup", "upgrade-pull")
    assert journal.pending(deployed) == (["upgrade"] if switched else [])
    # The next task (here the replay `up`, `upgrade` and `harden` run first).
    calls = []
    monkeypatch.setattr(stack, "inspect_containers", lambda root, runner: {
        "web": ContainerDetail("1", "web", 1.0, 0, NEW, "sha256:1", "running")})
    monkeypatch.setattr(upgrade, "_recreate", lambda root, runner, services, timeout: calls.append(
        (lifecycle._values(root)["POSTHOG_IMAGE"], services)))
    with journal.deployment_lock(deployed):
        lifecycle.recover(deployed, Runner(deployed))
    assert lifecycle._values(deployed)["POSTHOG_IMAGE"] == OLD
    assert journal.pending(deployed) == []
    if switched:
        assert calls == [(OLD, ["web"])]
        assert upgrade.read_history(deployed)[-1]["result"] == "interrupted"


ROTATION_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from posthog_compose.operations import rotation
root = Path({root!r})
rotation._ensure_db = lambda root, runner: None
def alter(root, runner, user, database, password):
    (root / "db-password").write_text(password)
rotation.set_postgres_password = alter
rotation.commit(root, object(), {{"POSTGRES_PASSWORD": {new!r}, "DATABASE_URL": "postgres://posthog:{new}@db:5432/posthog"}},
                {new!r})
"""


@pytest.mark.parametrize("step", ["rotation-journal-written", "rotation-altered", "rotation-env-written", None])
def test_sigkill_at_each_rotation_step_never_loses_the_password(deployed, monkeypatch, step):
    new = "n3w-password-0123456789abcdef"
    old = lifecycle._values(deployed)["POSTGRES_PASSWORD"]
    (deployed / "db-password").write_text(old)
    env = {**os.environ, "POSTHOG_COMPOSE_FAULT_TEST": "1", journal.FAULT_VARIABLE: f"kill:{step or 'none'}"}
    child = subprocess.run([sys.executable, "-c", ROTATION_CHILD.format(repo=str(REPO), root=str(deployed), new=new)],
                           env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == (-signal.SIGKILL if step else 0), child.stdout + child.stderr
    db_password = (deployed / "db-password").read_text()
    env_password = lifecycle._values(deployed)["POSTGRES_PASSWORD"]
    if db_password != env_password:
        # The state finding 4 describes: only the journal (0600) still knows the new password.
        entry = journal.read(deployed, "rotation")
        assert entry["env"]["POSTGRES_PASSWORD"] == db_password == new
    monkeypatch.setattr(rotation, "_ensure_db", lambda root, runner: None)
    monkeypatch.setattr(rotation, "set_postgres_password",
                        lambda root, runner, user, database, password: (root / "db-password").write_text(password))
    with journal.deployment_lock(deployed):
        lifecycle.recover(deployed, Runner(deployed))
    assert journal.pending(deployed) == []
    final_db, final_env = (deployed / "db-password").read_text(), lifecycle._values(deployed)["POSTGRES_PASSWORD"]
    assert final_db == final_env
    assert final_env in (old, new)
    if step not in (None, "rotation-journal-written"):
        assert final_env == new
    assert oct((deployed / ".env").stat().st_mode & 0o777) == "0o600"


# ----------------------------------------------------------------------------- the wait's rules
def detail(started: float, restarts: int = 0, status: str = "exited", id: str = "a") -> ContainerDetail:
    return ContainerDetail(id, "plugins", started, restarts, "img", "sha256:1", status)


def test_a_container_down_before_the_operation_is_not_judged_until_compose_acted():
    watch = stack.Watch({"plugins": detail(100.0)}, began=200.0)
    assert not watch.acted("plugins", {"plugins": detail(100.0)}, compose_done=False)
    assert watch.acted("plugins", {"plugins": detail(201.0)}, compose_done=False)  # started again, failed again
    assert watch.acted("plugins", {"plugins": detail(100.0, restarts=1)}, compose_done=False)
    assert watch.acted("plugins", {"plugins": detail(100.0, id="b")}, compose_done=False)  # a new container
    assert watch.acted("plugins", {"plugins": detail(100.0)}, compose_done=True)


def test_a_container_in_a_restart_loop_is_judged_only_once_compose_replaced_it():
    """Docker's restart policy restarts a crashing container by itself: a newer start or a higher
    restart count of the container Compose is about to replace says nothing of the operation."""
    for before in (detail(100.0, restarts=3, status="restarting"), detail(100.0, restarts=3, status="running")):
        watch = stack.Watch({"plugins": before}, began=200.0)
        assert not watch.acted("plugins", {"plugins": detail(201.0, restarts=4, status="restarting")}, compose_done=False)
        assert not watch.acted("plugins", {"plugins": detail(205.0, restarts=5, status="exited")}, compose_done=False)
        assert watch.acted("plugins", {"plugins": detail(206.0, id="b")}, compose_done=False)  # Compose replaced it
        assert watch.acted("plugins", {"plugins": detail(207.0, restarts=6)}, compose_done=True)


def test_a_service_is_judged_only_by_a_start_made_with_its_dependencies_ready():
    """After an engine restart every container starts at once: PostHog's worker exits while web or
    ClickHouse is not ready and Docker restarts it. Those crashes say nothing; one after its
    dependencies were ready does."""
    running, starting = ServiceState("web", "running", "healthy"), ServiceState("web", "running", "starting")
    deps = stack.Dependencies({"worker": ["web", "redis"], "web": ["db"]})
    expected = ["web", "worker", "db"]  # redis is external here: not waited for
    deps.update({"web": starting, "db": ServiceState("db", "running", "healthy")}, expected, at=100.0)
    assert deps.judgeable("web", detail(50.0)) is False  # started before its dependencies were seen ready
    assert deps.judgeable("web", detail(100.5)) is True
    assert deps.judgeable("worker", detail(150.0)) is False  # web is not ready yet
    deps.update({"web": running}, expected, at=200.0)
    assert deps.judgeable("worker", detail(150.0)) is False  # its last start was before web was ready
    assert deps.judgeable("worker", detail(201.0)) is True   # restarted with web ready, and failed again
    deps.update({"web": starting}, expected, at=300.0)       # web replaced: the worker waits again
    assert deps.judgeable("worker", detail(301.0)) is False
    assert stack.Dependencies({}).judgeable("worker", None) is False  # never updated: nothing known yet


def _compose_that_gives_up(tmp_path, succeed_on: int | None):
    """A `compose up` stand-in: exits 1 with Compose's 'dependency failed to start' until run
    ``succeed_on`` times (never when None); each run is counted in a file."""
    runs = tmp_path / "runs"
    script = tmp_path / "compose-up"
    succeed = f'[ "$(wc -l < {runs})" -ge {succeed_on} ] && exit 0\n' if succeed_on else ""
    script.write_text(f"#!/bin/sh\necho run >> {runs}\n{succeed}"
                      "echo 'dependency failed to start: container posthog-clickhouse-1 is restarting' >&2\nexit 1\n")
    script.chmod(0o755)
    return runs, [str(script)]


def _web_waits_for_clickhouse(root):
    (root / "docker-compose.yml").write_text(
        "services:\n  clickhouse:\n    image: c\n  web:\n    image: w\n"
        "    depends_on:\n      clickhouse:\n        condition: service_healthy\n")


def test_compose_that_gave_up_on_a_dependency_still_coming_back_is_started_again(tmp_path, monkeypatch, capsys):
    """After an engine or host restart Docker brings containers back in no order, and Compose gives up on
    a dependency that is still coming back (web crashes until ClickHouse answers): up starts Compose
    again instead of failing, and judges web only once ClickHouse is ready."""
    runs, command = _compose_that_gives_up(tmp_path, succeed_on=3)
    _web_waits_for_clickhouse(tmp_path)
    coming_back = [ServiceState("clickhouse", "running", "starting"), ServiceState("web", "restarting")]
    healthy = [ServiceState("clickhouse", "running", "healthy"), ServiceState("web", "running", "healthy")]
    monkeypatch.setattr(stack, "service_states",
                        lambda root, runner: healthy if runs.exists() and len(runs.read_text().split()) >= 3
                        else coming_back)
    monkeypatch.setattr(stack, "inspect_containers", lambda root, runner: {})
    monkeypatch.setattr(stack.time, "sleep", lambda seconds: None)
    stack.start_and_wait(tmp_path, Runner(tmp_path), command, ["clickhouse", "web"], timeout=60)
    assert len(runs.read_text().split()) == 3
    assert capsys.readouterr().out.count("Compose gave up on a dependency that is still coming back") == 2


def test_compose_that_keeps_giving_up_fails_with_the_logs_after_its_retries(tmp_path, monkeypatch, capsys):
    runs, command = _compose_that_gives_up(tmp_path, succeed_on=None)
    _web_waits_for_clickhouse(tmp_path)
    monkeypatch.setattr(stack, "DEPENDENCY_RETRIES", 2)
    monkeypatch.setattr(stack, "service_states", lambda root, runner: [ServiceState("clickhouse", "running", "starting"),
                                                                       ServiceState("web", "restarting")])
    monkeypatch.setattr(stack, "inspect_containers", lambda root, runner: {})
    monkeypatch.setattr(stack, "recent_logs", lambda root, runner, name, lines: f"{name}-1  | Connection refused")
    monkeypatch.setattr(stack.time, "sleep", lambda seconds: None)
    with pytest.raises(OperatorError, match=r"services failed: clickhouse \(starting\), web \(restarting\); "
                                            "dependency failed to start"):
        stack.start_and_wait(tmp_path, Runner(tmp_path), command, ["clickhouse", "web"], timeout=60)
    assert len(runs.read_text().split()) == 3  # the first run and two more


def test_docker_times_parse_with_nanoseconds():
    assert stack._epoch("2026-11-26T06:30:01.500000000Z") == pytest.approx(1795674601.5)
    assert stack._epoch("0001-01-01T00:00:00Z") == 0.0


def test_readiness_fails_fast_once_the_server_answers(monkeypatch):
    answers = iter([(False, False, "refused"), (False, True, "503"), (False, True, "503"), (True, True, "200"),
                    (False, True, "503")])
    monkeypatch.setattr(stack, "readiness", lambda values: next(answers))
    clock = iter([0.0, 1.0, 20.0, 21.0, 22.0])
    monkeypatch.setattr(stack.time, "monotonic", lambda: next(clock))
    probe = stack.Readiness({}, fail_after=8.0)
    assert probe.poll() == (False, None)  # not answering: still migrating, the container state decides
    assert probe.poll() == (False, None)  # answered 503 just now
    ready, reason = probe.poll()          # still 503 after 19 s of answering
    assert not ready and "not ready" in reason
    probe = stack.Readiness({}, fail_after=8.0)
    answers = iter([(True, True, "200"), (False, True, "503: postgres failing")])
    ready, reason = probe.poll()
    assert ready
    ready, reason = probe.poll()          # ready once, then not: a failure at once
    assert not ready and "postgres failing" in reason


def test_status_marks_services_whose_dependencies_are_down():
    states = {name: ServiceState(name, "running", "healthy") for name in lifecycle.SERVICES}
    states["db"] = ServiceState("db", "exited", exit_code=137)
    depends = {"web": ["db", "redis"], "worker": ["db"], "plugins": ["web"], "redis": []}
    verdicts = lifecycle.assess(states, depends, (False, False, "unreachable"))
    assert verdicts["db"].startswith("down")
    assert verdicts["web"].startswith("degraded: readiness fails")
    assert verdicts["worker"] == "degraded: depends on db (not running)"
    assert verdicts["redis"] == "ok"
    healthy = {name: ServiceState(name, "running", "healthy") for name in lifecycle.SERVICES}
    assert set(lifecycle.assess(healthy, depends, (True, True, "200")).values()) == {"ok"}


def test_the_disk_checks_name_docker_root_and_backups(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "docker_root", lambda env=None: str(tmp_path))
    labels = [label for label, path, free in engine.disks(tmp_path)]
    assert labels == ["Docker's data root", "backups/"]
    monkeypatch.setattr(engine, "docker_root", lambda env=None: None)
    found = engine.disks(tmp_path)
    assert found[0] == ("Docker's data root", None, None)


def test_doctor_measures_docker_root_and_backups_and_says_when_it_cannot(tmp_path, monkeypatch):
    from posthog_compose.operations import doctor

    monkeypatch.setattr(engine, "disks", lambda root, env=None: [("Docker's data root", "/var/lib/docker", None),
                                                                  ("backups/", str(tmp_path), 50.0)])
    check = doctor._disk(tmp_path)
    assert check.status == "warning"
    assert "Docker's data root: cannot be measured from this host (/var/lib/docker is not readable here)" in check.detail
    monkeypatch.setattr(engine, "disks", lambda root, env=None: [("Docker's data root", "/d", 5.0),
                                                                  ("backups/", str(tmp_path), 0.5)])
    check = doctor._disk(tmp_path)
    assert check.status == "error" and "5.0 GiB free on Docker's data root (/d)" in check.detail


_TASK_THAT_STARTS_COMPOSE = """
import sys, time
from pathlib import Path
from posthog_compose.operations import stack
from posthog_compose.operations.engine import Runner

def wait(root, runner, services, timeout, process=None, **kw):
    print(process.pid, flush=True)
    time.sleep(60)

stack.wait_until_healthy = wait
root = Path(sys.argv[1])
stack.start_and_wait(root, Runner(root), [sys.executable, "-c", "import time; time.sleep(60)"], ["web"], timeout=60)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return state[state.rindex(")") + 2] in "ZX"  # exited, waiting to be reaped by whoever adopted it


def test_a_killed_task_takes_its_compose_up_with_it(tmp_path):
    """SIGKILL on a task while its `compose up` runs (in its own session, so Ctrl-C does not reach it):
    the Compose process ends too, instead of racing the next task's `compose up`."""
    import signal
    import subprocess
    import sys
    import time

    task = subprocess.Popen([sys.executable, "-c", _TASK_THAT_STARTS_COMPOSE, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        compose_pid = int(task.stdout.readline())
        assert not _gone(compose_pid)
        # The parent-death signal is set by setpriv just before it executes Compose: kill the task
        # once that has happened (a loaded machine ran the kill first, before there was a signal to send).
        deadline = time.monotonic() + 5
        while b"setpriv" in Path(f"/proc/{compose_pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        task.send_signal(signal.SIGKILL)
        task.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not _gone(compose_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(compose_pid), "the task's compose up outlived it"
    finally:
        task.kill()
        task.wait()
        with contextlib.suppress(NameError, ProcessLookupError):
            os.kill(compose_pid, signal.SIGKILL)


def test_ctrl_c_while_waiting_for_health_is_acknowledged_at_once(tmp_path, monkeypatch, capsys):
    """Ctrl-C during `up`'s wait for health ends the wait; Compose may still be replacing containers,
    so the task lets it finish, and says so at once (before, nothing was printed for up to 30 s)."""
    import time

    from posthog_compose.operations.engine import Runner

    said = {}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real_wait = subprocess.Popen.wait

    def watching_wait(self, timeout=None):
        said.setdefault("before the wait", capsys.readouterr().out)
        return real_wait(self, timeout)

    monkeypatch.setattr(stack, "wait_until_healthy", interrupted)
    monkeypatch.setattr(subprocess.Popen, "wait", watching_wait)
    clock = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        stack.start_and_wait(tmp_path, Runner(tmp_path), [sys.executable, "-c", "import time; time.sleep(1)"],
                             ["web"], timeout=60)
    assert "stopping after the current step: letting Compose finish replacing containers" in said["before the wait"]
    assert time.monotonic() - clock < 10


# ----------------------------------------------------------------------------- a killed task's children
_TASK = """
import sys, time
from pathlib import Path
from posthog_compose.operations import stack
from posthog_compose.operations.engine import Runner

stack.wait_until_healthy = lambda *args, **kwargs: time.sleep(300)  # the wait for health, never ending
root = Path(sys.argv[1])
stack.start_and_wait(root, Runner(root), [sys.argv[2]], ["web"], 600)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie no longer runs: only its parent's wait is missing


@pytest.mark.skipif(not shutil.which("setpriv"), reason="the parent-death signal needs util-linux's setpriv")
def test_a_sigkilled_harden_leaves_no_process_of_its_compose_up_behind(tmp_path):
    """Fault row "harden | compose up started | SIGKILL", on a real process tree: harden starts its
    `compose up` through stack.start_and_wait (harden/changes.py) in a session of its own. The fake
    Compose is a CLI with a child of its own, as `docker compose` runs its plugin: when the task is
    SIGKILLed, the CLI and its child must both end (before, the parent-death signal reached the CLI
    only, and the child kept running)."""
    pids = tmp_path / "pids"
    fake = tmp_path / "compose"
    fake.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    fake.chmod(0o755)
    task = subprocess.Popen([sys.executable, "-c", _TASK, str(tmp_path), str(fake)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    started = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(started) < 2:
            started = [int(word) for word in pids.read_text().split()] if pids.exists() else []
            time.sleep(0.05)
        assert len(started) == 2, "the fake compose did not start"
        os.kill(task.pid, signal.SIGKILL)
        task.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(_gone(pid) for pid in started):
            time.sleep(0.05)
        assert all(_gone(pid) for pid in started), f"left running: {[p for p in started if not _gone(p)]}"
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if task.poll() is None:
            task.kill()

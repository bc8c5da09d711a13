"""Ctrl-C is acknowledged within a second by every long task (posthog_compose/interrupts.py): the real
`invoke TASK` runs in a process group of its own against a slow fake Docker (a script on PATH that
ignores SIGINT and sleeps, as an engine call that takes its time), the group gets SIGINT as a terminal
sends it, and "stopping after the current step: <step>" must be on stdout within 1 s; the task then
ends on its own, without a traceback."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

_POPEN = subprocess.Popen  # the real one: the fake engine of the restore case replaces subprocess.Popen

import pytest

from posthog_compose import interrupts, journal
from tests.conftest import REPO, set_env
from tests.unit.test_backup import engine  # noqa: F401  (the fake engine the archive is made with)

#: Each long task as the operator starts it (`restore` gets a verified archive made by the fixture).
TASKS = {
    "up": ["up", "--timeout", "60"],
    "down": ["down"],
    "status": ["status"],
    "doctor": ["doctor"],
    "upgrade": ["upgrade", "--to", "a" * 40, "--skip-backup"],
    "backup": ["backup", "--no-encrypt"],
    "restore": ["restore", "ARCHIVE", "--yes"],
    "harden": ["harden", "--yes"],
    "migrate-datastore": ["migrate-datastore", "postgres", "--to", "postgres://posthog:pw@db.example.com:5432/posthog",
                          "--yes"],
    "proxy": ["proxy", "--enable", "--domain", "posthog.example.com"],
    "probe": ["probe"],
    "logs --follow": ["logs", "--follow"],
}
ACKNOWLEDGED = b"stopping after the current step: "


def _slow_docker(directory, calls):
    """`docker` and Compose in one script: versions answer at once, every other call records its pid
    and sleeps with SIGINT ignored (exec: the sleep is the recorded process)."""
    script = directory / "docker"
    script.write_text(f"""#!/bin/sh
[ "$1" = version ] && {{ echo 28.2.2; exit 0; }}
[ "$1 $2" = "compose version" ] && {{ echo 2.29.1; exit 0; }}
echo "$$ $*" >> {calls}
trap '' INT
exec sleep 30
""")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("task", list(TASKS))
def test_ctrl_c_is_acknowledged_within_a_second_and_the_task_then_ends(deployed, tmp_path, task, request):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.write_text("")
    docker = _slow_docker(bin_dir, calls)
    args = list(TASKS[task])
    if task == "restore":
        args[1] = str(request.getfixturevalue("made_archive"))
    if task == "migrate-datastore":
        set_env(deployed, ALLOW_PLAINTEXT_DATASTORES="true")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "POSTHOG_COMPOSE_BINARY": str(docker),
           "POSTHOG_COMPOSE_ROOT": str(deployed), "PYTHONPATH": str(REPO)}
    process = _POPEN([sys.executable, "-m", "invoke", *args], cwd=deployed, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[tuple[float, bytes]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line)
                                                          for line in iter(process.stdout.readline, b"")), daemon=True)
    reader.start()
    try:
        waited = time.monotonic()
        while not calls.read_text().strip() and process.poll() is None and time.monotonic() - waited < 60:
            time.sleep(0.05)
        assert calls.read_text().strip(), f"`invoke {task}` ended before a slow engine call: " + \
            b"".join(line for _, line in lines).decode(errors="replace")
        time.sleep(0.3)  # inside the call
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        while time.monotonic() - sent < 3 and not any(ACKNOWLEDGED in line for _, line in lines):
            time.sleep(0.02)
        said = [(at - sent, line) for at, line in lines if ACKNOWLEDGED in line]
        output = b"".join(line for _, line in lines).decode(errors="replace")
        assert said, f"`invoke {task}` did not acknowledge Ctrl-C within 3 s:\n{output}"
        assert said[0][0] < 1.0, f"acknowledged after {said[0][0]:.2f} s"
        assert process.wait(timeout=10) != 0  # and it stops: no engine call it waits for outlives the task
        reader.join(5)
        output = b"".join(line for _, line in lines).decode(errors="replace")
        assert "Traceback" not in output, output
    finally:
        with_pids = [line.split()[0] for line in calls.read_text().splitlines() if line.split()]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in with_pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture
def made_archive(deployed, engine):
    """An unencrypted archive of the deployment, written by backup.create against the fake engine."""
    from posthog_compose.operations import backup
    from tests.unit.test_backup import FakeRunner

    return backup.create(deployed, FakeRunner(deployed), encrypt=False, out=io.StringIO()).path


def test_a_signal_inside_a_critical_section_is_acknowledged_with_its_step_and_raised_at_its_end(capsys):
    with pytest.raises(KeyboardInterrupt):
        with journal.critical("replacing .env"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            said = capsys.readouterr().out
            assert said.strip() == "stopping after the current step: replacing .env"
    assert interrupts.ACKNOWLEDGEMENT == "stopping after the current step: {step}"


def test_the_step_named_is_the_innermost_of_the_main_thread(capsys):
    with interrupts.acknowledged("up"):
        assert interrupts.current() == "`invoke up`"
        with interrupts.step("waiting for the services to become healthy"):
            seen = []
            worker = threading.Thread(target=lambda: seen.append(interrupts.current()))
            with_thread_step = threading.Thread(target=lambda: interrupts.step("a probe").__enter__())
            with_thread_step.start()
            with_thread_step.join()
            worker.start()
            worker.join()
            assert seen == ["waiting for the services to become healthy"]
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
        assert interrupts.current() == "`invoke up`"
    assert "stopping after the current step: waiting for the services to become healthy" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_does_not_outlive_its_task():
    # Tasks run one after another in one process (the test suite does): a Ctrl-C of one must not make the
    # next one's probe threads refuse their commands.
    import signal

    from posthog_compose import interrupts

    with pytest.raises(KeyboardInterrupt):
        with interrupts.acknowledged("demo"):
            interrupts._stop(signal.SIGINT, None)
    assert not interrupts.requested()

"""The worker's health check, run for real: the command the real Compose binary resolves from
docker-compose.yml, executed by sh in a private PID namespace (its own /proc) beside real processes
whose command lines are those of PostHog 1.43's worker container (bin/docker-worker-celery:65-86):
the launcher, the `celery beat` scheduler and migrate-check are not Celery consuming; a `celery ...
worker` process holding an established TCP connection (its broker) is."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import textwrap
import time

import pytest

from tests.conftest import REPO

COMPOSE = REPO / ".venv" / "bin" / "docker-compose"


def _worker_check() -> str:
    result = subprocess.run([str(COMPOSE), "--env-file", ".env.example", "config", "--format", "json"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    test = json.loads(result.stdout)["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return test[1].replace("$$", "$")  # Compose's config output keeps $$; the engine runs a single $


def _can_unshare() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode == 0


# Each scenario starts these processes (in the private namespace), waits, then runs the check.
# CONNECT holds a TCP connection to the listener the test opened, as a consuming worker holds its broker's.
LAUNCHER = "bash ./bin/docker-worker-celery --with-scheduler &"
MIGRATE_CHECK = "python3 ./manage.py migrate --check &"
BEAT_CONNECTED = "python3 ./celery -A posthog beat -S redbeat.RedBeatScheduler CONNECT &"
WORKER_IDLE = "python3 ./celery -A posthog worker -Ofair -n node@%h &"
WORKER_CONSUMING = "python3 ./celery -A posthog worker -Ofair -n node@%h CONNECT &"

SCENARIOS = {
    "only the launcher": ([LAUNCHER], False),
    "launcher, scheduler and migrate-check": ([LAUNCHER, BEAT_CONNECTED, MIGRATE_CHECK], False),
    "a worker process that has not reached its broker": ([LAUNCHER, WORKER_IDLE], False),
    "a worker consuming from its broker": ([LAUNCHER, BEAT_CONNECTED, WORKER_CONSUMING], True),
}


def _fake_code(tmp_path, port):
    """Programs whose argv look like the real ones; each sleeps, and with CONNECT holds a connection."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker-worker-celery").write_text("sleep 30\n")
    program = textwrap.dedent(f"""\
        import os, socket, sys, time
        held = socket.create_connection(("127.0.0.1", {port})) if "CONNECT" in sys.argv else None
        open(f"ready.{{os.getpid()}}", "w").close()  # started (and connected): the check may judge it now
        time.sleep(30)
        """)
    (tmp_path / "celery").write_text(program)
    (tmp_path / "manage.py").write_text(program)


def _until_ready(processes: list[str]) -> str:
    """Shell that waits (at most 30 s) until every fake Python process has started and connected: a
    fixed sleep judged them too early on a loaded machine."""
    wanted = sum("python3" in line for line in processes)
    return (f"for i in $(seq 300); do [ \"$(ls ready.* 2>/dev/null | wc -l)\" -ge {wanted} ] && break; "
            "sleep 0.1; done\n")


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare(1) with PID namespaces (root)")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_worker_health_means_celery_consumes(scenario, tmp_path):
    processes, healthy = SCENARIOS[scenario]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    _fake_code(tmp_path, listener.getsockname()[1])
    script = "\n".join(processes) + "\n" + _until_ready(processes) + _worker_check() + \
        "\necho \"check=$?\"\nkill $(jobs -p) 2>/dev/null\n"
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    listener.close()
    assert f"check={0 if healthy else 1}" in result.stdout, (scenario, result.stdout, result.stderr)


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare(1) with PID namespaces (root)")
def test_worker_health_check_is_cheap(tmp_path):
    """CPU (user + system, children included) of one run, on a container-sized process table: the
    figure docs/operations.md quotes. `celery inspect ping` cost 0.134 s per run on the stand-in."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    _fake_code(tmp_path, listener.getsockname()[1])
    runs = 50
    check = _worker_check()
    script = (f"{LAUNCHER}\n{BEAT_CONNECTED}\n{WORKER_CONSUMING}\n{_until_ready([BEAT_CONNECTED, WORKER_CONSUMING])}"
              f"start=$(date +%s%N)\nfor i in $(seq {runs}); do sh -c '{check.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'"
              " || echo FAILED; done\nkill $(jobs -p) 2>/dev/null\ntimes\n")
    before = os.times()
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    after = os.times()
    listener.close()
    assert "FAILED" not in result.stdout, result.stdout + result.stderr
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    per_run = cpu / runs
    print(f"worker health check: {per_run * 1000:.1f} ms CPU per run (upper bound: includes the fake processes)")
    assert per_run < 0.134 / 4, per_run

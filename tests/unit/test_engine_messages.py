"""The first hour on a stock host: without Compose v2 and without a daemon, `invoke up` and
`invoke doctor` each say in one line what to do next, in the words of the task that was run.

Most tests put a fake docker (and docker-compose) on PATH and run the real `invoke` CLI with a
Python whose folder holds no bundled Compose; one test uses the real docker CLI against a socket
nobody listens on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from tests.conftest import REPO, copy_repository

DEBIAN_DOCKER_WITHOUT_PLUGIN = """#!/bin/sh
# Debian's docker.io client: no Compose plugin, so `docker compose` is an unknown command.
if [ "$1" = compose ]; then
  echo "unknown flag: --project-directory" >&2; echo "See 'docker --help'." >&2
  echo "Usage:  docker [OPTIONS] COMMAND" >&2; exit 125
fi
if [ "$1" = version ]; then echo '{"Client":{"Version":"20.10.24"},"Server":{"Version":"20.10.24"}}'; echo 20.10.24; exit 0; fi
exit 1
"""

NO_DAEMON = ("failed to connect to the docker API at unix:///run/nothing.sock; check if the path is correct "
             "and if the daemon is running: dial unix /run/nothing.sock: connect: no such file or directory")

DOCKER_WITHOUT_DAEMON = f"""#!/bin/sh
if [ "$1" = version ] && [ "$2" = --format ]; then echo '{{"Client":{{"Version":"28.2.2"}},"Server":null}}'; fi
echo "{NO_DAEMON}" >&2; exit 1
"""

COMPOSE_WITHOUT_DAEMON = f"""#!/bin/sh
case "$*" in
  *"version --short"*) echo 2.29.7; exit 0 ;;
  *" config "*|*" config") exit 0 ;;
esac
echo "{NO_DAEMON}" >&2; exit 1
"""


def _python_without_compose(prefix: Path) -> Path:
    """``prefix/bin/python``: the test's own interpreter and packages, with no Compose beside it.

    In a virtual environment (the README's way), the environment is found from the path the
    interpreter was started by, so a bare link would fall back to the base interpreter and its
    packages. The fake host is made a virtual environment of its own instead: the same pyvenv.cfg,
    and its site-packages are the test environment's."""
    bin_dir = prefix / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").symlink_to(os.path.realpath(sys.executable))
    if sys.prefix != sys.base_prefix:
        (prefix / "pyvenv.cfg").write_text((Path(sys.prefix) / "pyvenv.cfg").read_text())
        for site in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
            link = prefix / Path(site).relative_to(sys.prefix)
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(site)
    return bin_dir / "python"


def _host(tmp_path: Path, docker: str | None, compose: str | None = None) -> tuple[Path, dict]:
    """A deployment copy and an environment whose PATH holds only the given fakes (plus the
    system's /usr/bin tools) and whose Python has no Compose beside it."""
    bin_dir = _python_without_compose(tmp_path).parent
    for name, script in (("docker", docker), ("docker-compose", compose)):
        if script:
            (bin_dir / name).write_text(script)
            (bin_dir / name).chmod(0o755)
    root = tmp_path / "deployment"
    root.mkdir()
    copy_repository(root)
    system = ":".join(d for d in ("/usr/bin", "/bin") if not (Path(d) / "docker").exists())
    assert not any((Path(d) / "docker-compose").exists() for d in system.split(":")), "the host has a docker-compose"
    env = {"HOME": str(tmp_path), "PATH": f"{bin_dir}:{system}", "LANG": "C.UTF-8",
           "PYTHONPATH": str(REPO), "POSTHOG_COMPOSE_ROOT": str(root)}
    return root, env


def _invoke(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    python = Path(env["PATH"].split(":")[0]) / "python"
    return subprocess.run([str(python), "-m", "invoke", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def _lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def test_up_without_compose_says_one_line_and_changes_nothing(tmp_path):
    root, env = _host(tmp_path, DEBIAN_DOCKER_WITHOUT_PLUGIN)
    result = _invoke(root, env, "up")
    assert result.returncode == 1
    assert len(_lines(result)) == 1, _lines(result)
    line = _lines(result)[0]
    assert line.startswith("error: `invoke up` needs Docker Compose v2") and "pip install" in line, line
    assert "Usage" not in line and "--project-directory" not in line
    assert not (root / ".env").exists()


def test_doctor_without_compose_names_the_fix_on_its_line(tmp_path):
    root, env = _host(tmp_path, DEBIAN_DOCKER_WITHOUT_PLUGIN)
    result = _invoke(root, env, "doctor")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "\\n" not in output and "Usage" not in output
    compose_lines = [line for line in _lines(result) if "docker compose" in line]
    assert len(compose_lines) == 1 and compose_lines[0].startswith("error")
    assert "docker-compose-plugin" in compose_lines[0] and "pip install" in compose_lines[0]
    assert _lines(result)[-1].startswith("doctor: ") and "Fix the errors" in _lines(result)[-1]


def test_up_without_daemon_says_one_line_in_its_own_words(tmp_path):
    root, env = _host(tmp_path, DOCKER_WITHOUT_DAEMON, COMPOSE_WITHOUT_DAEMON)
    result = _invoke(root, env, "up")
    assert result.returncode == 1
    assert len(_lines(result)) == 1, _lines(result)
    line = _lines(result)[0]
    assert line.startswith("error: `invoke up` cannot reach the Docker engine"), line
    assert "sudo systemctl start docker" in line and "DOCKER_HOST" in line and "`invoke doctor`" in line
    assert " ps" not in line and "dial unix" not in line


@pytest.mark.parametrize("task", ["status", "logs", "down"])
def test_other_tasks_without_daemon_speak_in_their_own_words(tmp_path, task):
    root, env = _host(tmp_path, DOCKER_WITHOUT_DAEMON, COMPOSE_WITHOUT_DAEMON)
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import manifest

    bootstrap.init(root, manifest.load(root))
    result = _invoke(root, env, task)
    assert result.returncode == 1
    error = [line for line in _lines(result) if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith(f"error: `invoke {task}` cannot reach the Docker engine"), _lines(result)


def test_doctor_without_daemon_names_the_fix(tmp_path):
    root, env = _host(tmp_path, DOCKER_WITHOUT_DAEMON, COMPOSE_WITHOUT_DAEMON)
    result = _invoke(root, env, "doctor")
    assert result.returncode == 1
    engine = [line for line in _lines(result) if "docker engine" in line]
    assert len(engine) == 1 and engine[0].startswith("error") and "sudo systemctl start docker" in engine[0]
    assert "\\n" not in result.stdout


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed (.ci/run installs it)")
def test_real_docker_cli_against_a_socket_nobody_listens_on(tmp_path):
    import socket
    import tempfile

    # A socket's path holds at most 107 bytes: a pytest-xdist worker's tmp_path is longer than that.
    short = tempfile.TemporaryDirectory(prefix="sock-")
    silent = Path(short.name) / "nobody.sock"
    with short, socket.socket(socket.AF_UNIX) as server:  # bound, never listening: connections are refused
        server.bind(str(silent))
        (tmp_path / "deployment").mkdir()
        root = copy_repository(tmp_path / "deployment")
        env = {**os.environ, "DOCKER_HOST": f"unix://{silent}", "POSTHOG_COMPOSE_ROOT": str(root),
               "PYTHONPATH": str(REPO)}
        up = subprocess.run([sys.executable, "-m", "invoke", "up"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=120)
        doctor = subprocess.run([sys.executable, "-m", "invoke", "doctor"], cwd=root, env=env, capture_output=True,
                                text=True, timeout=120)
    lines = _lines(up)
    assert up.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: `invoke up` cannot reach the Docker engine") and f"DOCKER_HOST=unix://{silent}" in lines[0]
    engine = [line for line in _lines(doctor) if "docker engine" in line]
    assert doctor.returncode == 1 and engine[0].startswith("error") and "DOCKER_HOST" in engine[0]


@settings(max_examples=200, deadline=None)
@given(before=st.text(), after=st.text(), marker=st.sampled_from([
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
    NO_DAEMON, "unknown flag: --project-directory", "docker: 'compose' is not a docker command.",
    "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
    "Error response from daemon: no such image: confluentinc/cp-kafka:7.5.3: No such image: confluentinc/cp-kafka:7.5.3",
    'failed to resolve reference "docker.io/library/postgres:15.12-alpine": dial tcp: lookup registry-1.docker.io']),
    task=st.sampled_from(["up", "down", "upgrade", ""]))
def test_a_known_failure_is_explained_in_one_line(before, after, marker, task):
    from posthog_compose.operations.engine import explain

    message = explain(f"{before}\n{marker}\n{after}", task)
    assert message and "\n" not in message and "\r" not in message
    assert message.startswith(f"`invoke {task}`" if task else "this task")
    assert any(step in message for step in ("systemctl", "docker group", "pip install", "DOCKER_HOST", "docker pull"))
    if "image" in marker:
        assert re.search(r"cannot get the image (confluentinc/cp-kafka:7\.5\.3|docker\.io/library/postgres:15\.12-alpine):",
                         message), message


def test_runner_failure_of_an_unknown_cause_names_the_command_without_the_directory(tmp_path):
    from posthog_compose.operations.engine import Runner

    error = Runner(tmp_path, task="up").failure(["/x/bin/docker-compose", "--project-directory", str(tmp_path), "ps",
                                                 "--all"], 3, "boom\nno such service: x\n")
    assert str(error) == "`docker-compose ps --all` failed (exit 3): no such service: x"


def test_compose_is_found_in_the_kits_environment_first(tmp_path, monkeypatch):
    from posthog_compose.configuration import compose

    monkeypatch.delenv("POSTHOG_COMPOSE_BINARY", raising=False)
    bundled = tmp_path / "venv" / "bin"
    bundled.mkdir(parents=True)
    (bundled / "docker-compose").write_text("#!/bin/sh\n")
    (bundled / "docker-compose").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bundled / "python"))
    assert compose.compose_binary() == [str(bundled / "docker-compose")]
    (bundled / "docker-compose").unlink()
    monkeypatch.setattr(compose, "which", lambda name: "/usr/bin/docker" if name == "docker" else None)
    monkeypatch.setattr(compose, "_plugin_installed", lambda: False)
    monkeypatch.setattr(compose, "_plugin_answers", lambda: False)
    with pytest.raises(compose.OperatorError, match="pip install"):
        compose.compose_binary()  # never a bare `docker compose` that answers with usage text
    monkeypatch.setattr(compose, "_plugin_installed", lambda: True)
    assert compose.compose_binary() == ["docker", "compose"]


HEALTHY_DOCKER = """#!/bin/sh
if [ "$1" = version ] && [ "$2" = --format ] && [ "$3" = "{{.Server.Version}}" ]; then echo 28.2.2; exit 0; fi
if [ "$1" = version ]; then echo '{"Client":{"Version":"28.2.2"},"Server":{"Version":"28.2.2"}}'; exit 0; fi
exit 1
"""

RUNNING_COMPOSE = """#!/bin/sh
case "$*" in
  *"version --short"*) echo 2.29.7 ;;
  *" ps "*) echo '{"Service":"web","State":"running","Health":"healthy","Publishers":[]}' ;;
esac
exit 0
"""


def test_doctor_on_a_running_stack_does_not_offer_up(tmp_path):
    root, env = _host(tmp_path, HEALTHY_DOCKER, RUNNING_COMPOSE)
    result = _invoke(root, env, "doctor")
    last = _lines(result)[-1]
    assert "held by this deployment's web service" in result.stdout
    assert "Ready for `invoke up`" not in last and "The deployment is running" in last, last


def test_harden_check_pass_lines_do_not_repeat_themselves():
    from posthog_compose.operations.harden import Result

    passed = Result("env-file", ".env is mode 0600 and not tracked by git", "apply", "pass",
                    ".env is 0600 and not tracked").text()
    assert passed == "PASS   env-file: .env is 0600 and not tracked"
    failed = Result("env-file", ".env is mode 0600 and not tracked by git", "apply", "fail", ".env is mode 0644",
                    "invoke harden --only env-file").text()
    assert failed.startswith("FAIL   env-file: .env is mode 0600 and not tracked by git: .env is mode 0644")

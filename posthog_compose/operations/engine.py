"""Running external commands (docker, docker compose, pg_dump inside containers), and turning
their failures into one line that names the next step.

Every command is an argument list, never a shell string, so no value from .env or the
command line is ever interpreted by a shell. `--dry-run` prints commands instead of running
them; `-v` prints them as they run. A failure Docker or Compose reports (no engine, no Compose
v2, no permission) becomes a sentence in the words of the task the operator ran.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from posthog_compose import interrupts
from posthog_compose.errors import OperatorError


@dataclass
class Runner:
    """Runs commands for a task, honouring --dry-run and --verbose."""

    cwd: Path
    dry_run: bool = False
    verbose: bool = False
    env: dict[str, str] | None = None
    task: str = ""  # the task the operator ran, e.g. "up": failures are told in its words

    def failure(self, cmd: list[str], returncode: int, stderr: str) -> OperatorError:
        """The OperatorError for a failed command: the next step when the cause is known, else
        the command and its last error line."""
        return OperatorError(explain(stderr, self.task) or
                             f"`{_short(cmd)}` failed (exit {returncode})"
                             f"{': ' + last_line(stderr) if last_line(stderr) else ''}")

    def show(self, cmd: list[str]) -> None:
        print(f"$ {shlex.join(cmd)}", file=sys.stderr if not self.dry_run else sys.stdout, flush=True)

    def run(self, cmd: list[str], *, capture: bool = False, check: bool = True, input: str | None = None,
            mutating: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd``. In dry-run mode a ``mutating`` command is only printed; read-only
        commands (``mutating=False``) still run so the plan can be computed."""
        if self.dry_run and mutating:
            self.show(cmd)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if self.verbose:
            self.show(cmd)
        if not mutating and interrupts.requested() and not interrupts.in_main_thread():
            # A probe thread after Ctrl-C: the task is on its way out and waits for this thread.
            raise OperatorError(f"`{_short(cmd)}` not run: interrupted (Ctrl-C)")
        try:
            with interrupts.step(f"`{_short(cmd)}`"):  # what Ctrl-C is said to wait for
                result = _run(cmd, self.cwd, self.env, input, timeout, capture, abortable=not mutating)
        except FileNotFoundError:
            raise OperatorError(not_installed(cmd[0], self.task))
        except subprocess.TimeoutExpired:
            raise OperatorError(f"`{shlex.join(cmd[:4])} ...` did not finish within {timeout:.0f} s")
        if check and result.returncode != 0:
            # An uncaptured command's error went to the terminal: ask the engine why, once.
            raise self.failure(cmd, result.returncode, result.stderr if capture else self.probe())
        return result

    def probe(self) -> str:
        """The engine's own complaint (stderr of `docker version`) when it cannot be used, else ''."""
        try:
            result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                    text=True, env=self.env, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return "" if result.returncode == 0 and result.stdout.strip() else result.stderr

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        if self.verbose or self.dry_run:
            self.show(cmd)
        try:
            return subprocess.Popen(cmd, cwd=self.cwd, env=self.env, **kwargs)
        except FileNotFoundError:
            raise OperatorError(not_installed(cmd[0], self.task))


def _run(cmd: list[str], cwd, env, input: str | None, timeout: float | None, capture: bool,
         abortable: bool) -> subprocess.CompletedProcess:
    """subprocess.run's way (the child killed on a timeout or an exception), with a read-only command
    (``abortable``) ended by Ctrl-C also when a thread other than the main one waits for it."""
    pipe = subprocess.PIPE if capture else None
    with subprocess.Popen(cmd, cwd=cwd, env=env, text=True, errors="replace", stdout=pipe, stderr=pipe,
                          stdin=subprocess.PIPE if input is not None else None) as process:
        with (interrupts.abortable(process) if abortable else contextlib.nullcontext()):
            if abortable and interrupts.requested() and not interrupts.in_main_thread():
                process.kill()  # started just as Ctrl-C was pressed: the handler did not see it
            try:
                stdout, stderr = process.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
            except BaseException:  # Ctrl-C included: the child goes with the task's step
                process.kill()
                raise
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


def _short(cmd: list[str]) -> str:
    shown = [os.path.basename(cmd[0]), *cmd[1:]]
    if "--project-directory" in shown:  # the deployment directory is implied
        at = shown.index("--project-directory")
        del shown[at:at + 2]
    return shlex.join(shown[:4]) + (" ..." if len(shown) > 4 else "")


def last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _doing(task: str) -> str:
    return f"`invoke {task}`" if task else "this task"


# What Docker and Compose print when the engine is not there, and the next step for each.
NO_ENGINE = re.compile(r"Cannot connect to the Docker daemon|failed to connect to the docker API|"
                       r"Is the docker daemon running|error during connect", re.IGNORECASE)
NO_PERMISSION = re.compile(r"permission denied while trying to connect to the Docker daemon", re.IGNORECASE)
NO_COMPOSE = re.compile(r"unknown flag: --project-directory|'compose' is not a docker command|"
                        r"unknown command:? \"?compose|docker: unknown command", re.IGNORECASE)
NO_IMAGE = re.compile(r"No such image: (\S+?)(?::\s|\s|$)|pull access denied for ([^\s,]+)|"
                      r"failed to resolve reference \"([^\"]+)\"|manifest for (\S+) not found", re.IGNORECASE)
HOW_TO_GET_COMPOSE = ("reinstall the kit in its virtual environment (`.venv/bin/pip install -e .` brings a pinned "
                      "Compose), or install Docker's docker-compose-plugin package")


def engine_fix() -> str:
    where = os.environ.get("DOCKER_HOST")
    target = f"DOCKER_HOST={where} does not answer: start that engine or unset DOCKER_HOST" if where else \
        "start it with `sudo systemctl start docker` (or start Docker Desktop), or set DOCKER_HOST to a running engine"
    return f"{target}; `invoke doctor` checks the host"


def engine_reason(line: str) -> str:
    """The first clause of Docker's connection error (it goes on about paths and dial details)."""
    return line.split(";")[0].split(". ")[0].strip().rstrip(".")[:160]


def explain(stderr: str | None, task: str = "") -> str | None:
    """One line naming the next step for a failure whose cause is known, else None."""
    text = stderr or ""
    if NO_PERMISSION.search(text):
        return (f"{_doing(task)} may not use the Docker engine (permission denied on its socket): add yourself to "
                f"the docker group (`sudo usermod -aG docker $USER`, then log in again) or run as root")
    if NO_ENGINE.search(text):
        reason = next((line.strip() for line in text.splitlines() if NO_ENGINE.search(line)), "")
        return f"{_doing(task)} cannot reach the Docker engine ({engine_reason(reason)}): {engine_fix()}"
    image = NO_IMAGE.search(text)
    if image:
        name = next(group for group in image.groups() if group)
        return (f"{_doing(task)} cannot get the image {name}: the engine does not have it and could not pull it. "
                f"Check the *_IMAGE values in .env (`invoke config-check`) and that this host reaches the registry "
                f"(`docker pull {name}` shows why)")
    if NO_COMPOSE.search(text):
        return f"{_doing(task)} needs Docker Compose v2, which is not installed: {HOW_TO_GET_COMPOSE}"
    return None


def preflight(task: str, env: dict[str, str] | None = None, engine: bool = True) -> None:
    """Before a task changes anything: Compose v2 is there and (with ``engine``) the engine
    answers. Each failure is one line with the next step, in the words of ``task``."""
    from posthog_compose.configuration import compose

    try:
        compose.compose_binary()
    except OperatorError:
        raise OperatorError(f"{_doing(task)} needs Docker Compose v2, which is not installed: {HOW_TO_GET_COMPOSE}")
    if not engine:
        return
    try:
        result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, env=env, timeout=30)
    except FileNotFoundError:
        raise OperatorError(not_installed("docker", task))
    except subprocess.TimeoutExpired:
        raise OperatorError(f"{_doing(task)}: the Docker engine did not answer within 30 s; "
                            "check it with `sudo systemctl status docker`")
    if result.returncode != 0 or not result.stdout.strip():
        raise OperatorError(explain(result.stderr, task) or
                            f"{_doing(task)} cannot use the Docker engine ({last_line(result.stderr) or 'no answer'}): "
                            f"{engine_fix()}")


def not_installed(program: str, task: str = "") -> str:
    if os.path.basename(program) in ("docker-compose", "docker"):
        what = "Docker Compose v2" if "compose" in program else "the docker client"
        fix = HOW_TO_GET_COMPOSE if "compose" in program else "install Docker Engine (Debian/Ubuntu: `sudo apt-get install docker.io`)"
        return f"{_doing(task)} needs {what}, which is not installed: {fix}"
    return f"`{program}` is not installed or not on PATH; `invoke doctor` checks what is needed"


def which(program: str) -> str | None:
    return shutil.which(program)


def docker_env() -> dict[str, str]:
    """The environment for docker commands: ours (DOCKER_HOST is honoured). Outside a terminal
    Compose's own progress (dozens of lines per `down`) is turned off: the task prints a summary
    line instead, and Compose's errors still reach stderr. COMPOSE_PROGRESS set by the operator wins."""
    env = dict(os.environ)
    if not sys.stderr.isatty():
        env.setdefault("COMPOSE_PROGRESS", "quiet")
    return env


# ----------------------------------------------------------------------------- streams
class Streaming:
    """A command whose stderr is read in the background while the caller streams its stdout (or
    feeds its stdin), so neither pipe can fill up and stall it (backup's members, restore's loads)::

        stream = Streaming(command, runner, cwd, stdout=subprocess.PIPE)
        with stream as process:
            consume(process.stdout)
        if stream.returncode != 0:
            raise OperatorError(stream.last_error())

    On leaving the block the command has ended; an exception inside the block kills it first."""

    def __init__(self, command: list[str], runner: Runner, cwd: Path | None = None, **popen) -> None:
        import threading

        if runner.verbose:
            runner.show(command)
        self.process = subprocess.Popen(command, cwd=cwd, env=runner.env, stderr=subprocess.PIPE, **popen)
        self._errors: list[bytes] = []
        self._reader = threading.Thread(target=lambda: self._errors.append(self.process.stderr.read()), daemon=True)
        self._reader.start()

    def __enter__(self) -> subprocess.Popen:
        return self.process

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            if exc_type is not None:
                self.process.kill()
        finally:
            self.process.wait()
            self._reader.join(timeout=10)
        return False

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def last_error(self) -> str:
        """The last line the command wrote to stderr (at most 300 characters), or its exit code."""
        lines = b"".join(self._errors).decode(errors="replace").strip().splitlines()[-1:]
        return (lines or [f"exit {self.process.returncode}"])[0][:300]


# ----------------------------------------------------------------------------- disks
def docker_root(env: dict | None = None) -> str | None:
    """Docker's data root (`docker info` DockerRootDir), where images and volumes live; None when the
    engine does not answer."""
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True,
                                env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout or "").strip() or None if result.returncode == 0 else None


def disks(root: Path, env: dict | None = None) -> list[tuple[str, str | None, float | None]]:
    """(label, path, free GiB) for the filesystems that matter: Docker's data root (the volumes and
    images) and the deployment's backups/ (dumps, logs, history). Free is None when the path cannot
    be measured from this host (a remote engine, a data root this user cannot read)."""
    found = []
    docker_dir = docker_root(env)
    backups = Path(root) / "backups"
    for label, path in (("Docker's data root", docker_dir), ("backups/", str(backups if backups.exists() else root))):
        free = None
        if path:
            try:
                free = shutil.disk_usage(path).free / 1024 ** 3
            except OSError:
                free = None
        found.append((label, path, free))
    return found

"""The running deployment as Compose reports it: service states from `compose ps`, waiting
for health with live per-service progress, the URL check the seed promises, recent logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import compose
from .engine import Runner
from .errors import OperatorError
from .manifest import SERVICES


@dataclass
class ServiceState:
    service: str
    state: str  # created, running, restarting, exited, dead, paused, or "missing"
    health: str = ""  # healthy, unhealthy, starting, or "" when there is no healthcheck
    exit_code: int = 0
    status: str = ""
    image: str = ""
    ports: list[str] = field(default_factory=list)
    running_for: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "")

    @property
    def failed(self) -> bool:
        return (self.state in ("exited", "dead") or self.state == "restarting" or self.health == "unhealthy"
                or "Restarting" in self.status)

    def label(self) -> str:
        if self.state == "running":
            return self.health or "running"
        if self.state == "exited":
            return f"exited ({self.exit_code})"
        return self.state


def parse_ps(output: str) -> list[ServiceState]:
    """`compose ps --format json`: JSON Lines (one object per line), or one array (older Compose)."""
    rows: list[dict] = []
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        parsed = json.loads(line)
        rows.extend(parsed if isinstance(parsed, list) else [parsed])
    states = []
    for row in rows:
        ports = []
        for publisher in row.get("Publishers") or []:
            if publisher.get("PublishedPort"):
                ports.append(f"{publisher.get('URL') or '0.0.0.0'}:{publisher['PublishedPort']}->{publisher['TargetPort']}"
                             f"/{publisher.get('Protocol', 'tcp')}")
        states.append(ServiceState(
            service=row.get("Service", ""), state=row.get("State", ""), health=row.get("Health", "") or "",
            exit_code=int(row.get("ExitCode") or 0), status=row.get("Status", ""), image=row.get("Image", ""),
            ports=sorted(set(ports)), running_for=row.get("RunningFor", ""),
        ))
    return states


def service_states(root: Path, runner: Runner) -> list[ServiceState]:
    command = compose.command(root, "ps", "--all", "--format", "json")
    for attempt in range(5):
        result = runner.run(command, capture=True, check=False, mutating=False)
        # While `up` creates or replaces containers, ps can see one vanish mid-listing.
        if result.returncode == 0 or "No such container" not in (result.stderr or "") or attempt == 4:
            break
        time.sleep(0.5)
    if result.returncode != 0:
        raise runner.failure(command, result.returncode, result.stderr)
    try:
        return parse_ps(result.stdout)
    except (ValueError, TypeError) as exc:
        raise OperatorError(f"`docker compose ps --format json` gave output this tool cannot read ({exc}); "
                            "check the Compose version with `invoke doctor`")


def recent_logs(root: Path, runner: Runner, service: str, lines: int = 30) -> str:
    result = runner.run(compose.command(root, "logs", "--no-color", "--tail", str(lines), service), capture=True,
                        check=False, mutating=False)
    return (result.stdout or "") + (result.stderr or "")


class Progress:
    """Live progress of a wait for health.

    On a terminal: one status line, redrawn in place and cut to the terminal's width (read again at
    every redraw, so a resized window never wraps it and no stale rows are left), e.g.
    ``[ 12s] 5/8 ready | starting: web, worker | waiting: plugins``. Elsewhere (a log, CI, a pipe):
    a plain line per service whose state changed. Both end with one summary line from finish().
    """

    def __init__(self, services: list[str], enabled: bool = True, stream=None):
        self.services = services
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last: dict[str, str] = {}
        self.started = time.monotonic()
        self.drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @staticmethod
    def width() -> int:
        import shutil

        return max(20, shutil.get_terminal_size((80, 24)).columns)

    def compact(self, labels: dict[str, str]) -> str:
        """The one-line view: ready count, then the other services grouped by their state."""
        ready = [name for name, label in labels.items() if label in ("healthy", "running")]
        groups: dict[str, list[str]] = {}
        for name, label in labels.items():
            if name not in ready:
                groups.setdefault(label, []).append(name)
        parts = [f"[{self.elapsed():4.0f}s] {len(ready)}/{len(labels)} ready"]
        parts += [f"{label}: {', '.join(names)}" for label, names in groups.items()]
        return " | ".join(parts)

    @staticmethod
    def fit(line: str, width: int) -> str:
        """``line`` cut to fit ``width`` columns, never touching the last one (some terminals wrap there)."""
        limit = width - 1
        return line if len(line) <= limit else line[:max(0, limit - 3)] + "..."

    def update(self, states: dict[str, ServiceState]) -> None:
        if not self.enabled:
            return
        labels = {name: states[name].label() if name in states else "waiting" for name in self.services}
        if self.tty:
            self.stream.write("\r\033[K" + self.fit(self.compact(labels), self.width()))
            self.drawn = True
        else:
            for name, label in labels.items():
                if self.last.get(name) != label:
                    self.stream.write(f"  [{self.elapsed():4.0f}s] {name:<10} {label}\n")
        self.stream.flush()
        self.last = labels

    def summary(self) -> str:
        ready = [name for name, label in self.last.items() if label in ("healthy", "running")]
        if self.last and len(ready) == len(self.last):
            return f"{len(ready)} of {len(self.services)} services ready in {self.elapsed():.0f}s."
        others = ", ".join(f"{name} ({label})" for name, label in self.last.items() if name not in ready)
        return f"{len(ready)} of {len(self.services)} services ready after {self.elapsed():.0f}s" + \
            (f"; not ready: {others}." if others else ".")

    def finish(self) -> None:
        """End the live view with one summary line (on a terminal it replaces the status line)."""
        if not self.enabled:
            return
        line = self.summary()
        if self.tty:
            self.stream.write("\r\033[K" + self.fit(line, self.width()) + "\n")
        else:
            self.stream.write(f"  {line}\n")
        self.stream.flush()


def wait_until_healthy(root: Path, runner: Runner, services: list[str] | None = None, timeout: float = 600.0,
                       progress: bool = True, process: subprocess.Popen | None = None) -> float:
    """Poll until every service is running and healthy; return the seconds it took.

    ``process`` is an optional `compose up` running in the background: its exit ends the wait
    (success when every service is ready). A service that exits, restarts or turns unhealthy
    fails the wait at once, with its last log lines and the matching troubleshooting hints.
    """
    expected = list(services or SERVICES)
    display = Progress(expected, progress)
    while True:
        states = {s.service: s for s in service_states(root, runner)}
        display.update(states)
        failed = [name for name in expected if name in states and states[name].failed]
        if failed:
            display.finish()
            if process is not None and process.poll() is None:
                process.terminate()
            raise_failure(root, runner, failed, states)
        if all(name in states and states[name].ready for name in expected):
            if process is None or process.poll() is not None:
                display.finish()
                if process is not None and process.returncode != 0:
                    raise OperatorError(_start_failed(runner, process))
                return display.elapsed()
        elif process is not None and process.poll() is not None and process.returncode != 0:
            display.finish()
            stuck = [name for name in expected if not (name in states and states[name].ready)]
            message = _process_error(process)
            if any(name in states for name in stuck):  # containers exist: their logs say why
                raise_failure(root, runner, stuck, states, message)
            raise OperatorError(_start_failed(runner, process))  # none was created (e.g. an image could not be pulled)
        if display.elapsed() > timeout:
            display.finish()
            if process is not None and process.poll() is None:
                process.terminate()
            stuck = [name for name in expected if not (name in states and states[name].ready)]
            raise_failure(root, runner, stuck, states, f"not healthy after {timeout:.0f} s (--timeout)")
        time.sleep(1)


def start_and_wait(root: Path, runner: Runner, command: list[str], services: list[str], timeout: float) -> float:
    """Run ``command`` (a `compose up`) in the background and wait until ``services`` are healthy,
    with live progress; a failing service or the timeout raises OperatorError with its last logs."""
    import tempfile

    if runner.verbose:
        runner.show(command)
    error_log = tempfile.NamedTemporaryFile(prefix="compose-up-", suffix=".log", delete=False)
    process = subprocess.Popen(command, cwd=root, env=runner.env, stdout=subprocess.DEVNULL, stderr=error_log,
                               text=True)
    process.error_log = error_log.name
    try:
        return wait_until_healthy(root, runner, services, timeout=timeout, process=process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        error_log.close()
        Path(error_log.name).unlink(missing_ok=True)


def _start_failed(runner: Runner, process: subprocess.Popen) -> str:
    """`compose up` failed: one line in the words of the task that ran it."""
    from .engine import explain

    path = getattr(process, "error_log", None)
    known = explain(Path(path).read_text(errors="replace") if path and Path(path).exists() else "", runner.task)
    if known:
        return known
    what = f"`invoke {runner.task}`" if runner.task else "`docker compose up`"
    return f"{what} could not start the services (Compose exit {process.returncode}): {_process_error(process)}"


def _process_error(process: subprocess.Popen) -> str:
    """The last error line `compose up` wrote (its stderr goes to a file: a pipe could fill up)."""
    path = getattr(process, "error_log", None)
    output = Path(path).read_text(errors="replace") if path and Path(path).exists() else ""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line]
    return (errors or lines or ["no output"])[-1][:300]


def raise_failure(root: Path, runner: Runner, failing: list[str], states: dict[str, ServiceState],
                  reason: str = "") -> None:
    """Print each failing service's last log lines and matched hints, then raise one line."""
    from . import hints

    matched = []
    for name in failing:
        logs = recent_logs(root, runner, name, 20)
        label = states[name].label() if name in states else "not started"
        print(f"--- {name} ({label}): last log lines ---")
        print(logs.rstrip() or "(no output)")
        matched.extend(hints.match(logs))
    for hint in dict.fromkeys(matched):
        print(f"hint: {hint}")
    details = ", ".join(f"{n} ({states[n].label() if n in states else 'not started'})" for n in failing)
    raise OperatorError(f"services failed: {details}{'; ' + reason if reason else ''}. "
                        f"See the log lines above; more with `invoke logs -s {','.join(failing)} --tail 200`")


def check_url(values: dict[str, str], timeout: float = 30.0) -> tuple[bool, str]:
    """What the seed promises: `/` answers 302 to /preflight on a fresh install, or /_health 200."""
    from . import proxy

    if proxy.enabled(values):  # WEB_PORT is not published: ask through the proxy, over verified HTTPS
        return proxy.check_url(values, timeout=timeout)
    base = f"http://127.0.0.1:{values.get('WEB_PORT', '8080')}"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    deadline = time.monotonic() + timeout
    detail = "no answer"
    while True:
        try:
            with opener.open(f"{base}/", timeout=5) as response:
                detail = f"GET / answered {response.status}"
                if response.status == 200:
                    return True, f"{base}/ answers 200"
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location", "")
            if exc.code == 302 and location.rstrip("/").endswith("/preflight"):
                return True, f"{base}/ redirects to /preflight (PostHog's first-run setup)"
            detail = f"GET / answered {exc.code}"
            try:
                with opener.open(f"{base}/_health", timeout=5) as health:
                    if health.status == 200:
                        return True, f"{base}/_health answers 200"
            except (urllib.error.URLError, OSError) as health_error:
                detail += f"; /_health: {getattr(health_error, 'code', health_error)}"
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{base}/ unreachable ({getattr(exc, 'reason', exc)})"
        if time.monotonic() > deadline:
            return False, detail
        time.sleep(0.5)

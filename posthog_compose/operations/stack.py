"""The running deployment as Compose reports it: service states from `compose ps` and `docker
inspect`, waiting for health with live per-service progress (judging a service only after
Compose acted on it, and web by PostHog's readiness), the readiness and URL checks, recent logs.
Also which services run on this host (`services_here`: every service but the datastores .env makes
external) and how an external datastore is named to people (host:port, never credentials): waits
judge only local services, and a failing /_readyz check that reaches an external datastore says so."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.configuration.manifest import SERVICES

#: How the operator names each datastore (datastores.DATASTORES).
DATASTORE_LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}
#: PostHog's /_readyz check names (posthog/health.py: http, postgres, postgres_migrations_uptodate, clickhouse,
#: kafka_connected, celery_broker, cache; later builds add postgres_flags) -> the datastore each one reaches.
READYZ_DATASTORES = {"postgres": "postgres", "postgres_migrations_uptodate": "postgres", "postgres_flags": "postgres",
                     "clickhouse": "clickhouse",
                     "kafka_connected": "kafka", "kafka": "kafka", "celery_broker": "redis", "cache": "redis",
                     "redis": "redis"}


def services_here(values: dict[str, str] | None) -> list[str]:
    """The compose services that run on this host, in the canonical order: every service but the
    datastores .env declares external (ZooKeeper goes when both ClickHouse and Kafka are external)."""
    from posthog_compose.configuration import datastores

    values = values or {}
    outside = {datastores.SERVICE[name] for name in datastores.external(values)}
    if "zookeeper" not in datastores.local_services(values):
        outside.add("zookeeper")
    return [name for name in SERVICES if name not in outside]


def external_services(values: dict[str, str] | None) -> dict[str, object]:
    """compose service -> the datastores.Endpoint it stands for, for each datastore that is external
    (None when its endpoint cannot be read); ``zookeeper`` -> None when it does not run here."""
    from posthog_compose.configuration import datastores

    values = values or {}
    outside = datastores.external(values)
    if not outside:
        return {}
    by_name = first_endpoints(values)
    found: dict[str, object] = {datastores.SERVICE[name]: by_name.get(name) for name in outside}
    if "zookeeper" not in services_here(values):
        found["zookeeper"] = None
    return found


def endpoints(values: dict[str, str]) -> list:
    """datastores.endpoints, or none when .env holds a URL it cannot read (config-check's finding)."""
    from posthog_compose.configuration import datastores

    try:
        return list(datastores.endpoints(values))
    except (ValueError, KeyError, AttributeError):
        return []


def first_endpoints(values: dict[str, str]) -> dict:
    """datastore -> its endpoint (Kafka: the first broker) for each external datastore."""
    found: dict = {}
    for endpoint in endpoints(values):
        found.setdefault(endpoint.datastore, endpoint)
    return found


def endpoint_text(endpoint) -> str:
    """host:port of an endpoint (never its credentials), or "endpoint unknown"."""
    if endpoint is None or not getattr(endpoint, "host", ""):
        return "endpoint unknown"
    host = endpoint.host if ":" not in endpoint.host else f"[{endpoint.host}]"
    return f"{host}:{endpoint.port}" if endpoint.port else host


def external_note(values: dict[str, str], failing: list[str]) -> str:
    """For /_readyz checks that fail: which of them reach an external datastore, said plainly."""
    from posthog_compose.configuration import datastores

    outside = set(datastores.external(values or {}))
    named = []
    for check in failing:
        datastore = READYZ_DATASTORES.get(check)
        if datastore in outside and datastore not in named:
            named.append(datastore)
    if not named:
        return ""
    found = first_endpoints(values)
    parts = [f"{DATASTORE_LABELS[name]} is external ({endpoint_text(found.get(name))})" for name in named]
    return f"; {', '.join(parts)}: `invoke doctor` checks {'it' if len(parts) == 1 else 'them'} from this host"


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


def _values(root: Path) -> dict[str, str]:
    """The .env values ({} before the first run)."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    return EnvFile.load(path).resolved() if path.exists() else {}


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


#: After web's server first answers (its migrations are done: `./bin/migrate && exec server`), how long
#: readiness may keep failing before the version counts as broken. The datastores were healthy when
#: it started, so a healthy PostHog turns ready within seconds; waiting for --timeout would only
#: prolong the outage of a broken version.
READINESS_FAIL_AFTER = 8.0


@dataclass
class ContainerDetail:
    """What `docker inspect` adds to `compose ps`: when the container started, how often it restarted."""

    id: str
    service: str
    started_at: float  # epoch seconds (0 when unknown)
    restart_count: int
    image: str  # the reference the container was created from (Config.Image)
    image_id: str
    status: str = ""  # running, exited, restarting, ... at the moment of the inspect
    health: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("exited", "dead", "restarting") or self.health == "unhealthy"


def inspect_containers(root: Path, runner: Runner) -> dict[str, ContainerDetail]:
    """One `docker inspect` for every container of the project (by Compose's labels)."""
    listed = runner.run(["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter",
                         f"label=com.docker.compose.project={compose.PROJECT_NAME}"], capture=True, check=False,
                        mutating=False, timeout=60)
    ids = (listed.stdout or "").split()
    if listed.returncode != 0 or not ids:
        return {}
    result = runner.run(["docker", "inspect", *ids], capture=True, check=False, mutating=False, timeout=60)
    try:
        rows = json.loads(result.stdout or "[]")
    except ValueError:
        return {}
    details = {}
    for row in rows or []:
        labels = (row.get("Config") or {}).get("Labels") or {}
        service = labels.get("com.docker.compose.service")
        if not service or labels.get("com.docker.compose.oneoff") == "True":
            continue
        state = row.get("State") or {}
        details[service] = ContainerDetail(row.get("Id", ""), service, _epoch(state.get("StartedAt", "")),
                                           int(row.get("RestartCount") or 0),
                                           (row.get("Config") or {}).get("Image", ""), row.get("Image", ""),
                                           "restarting" if state.get("Restarting") else state.get("Status", ""),
                                           (state.get("Health") or {}).get("Status", ""))
    return details


def _epoch(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds (2026-11-26T06:30:01.123456789Z) as epoch seconds."""
    import calendar

    if not stamp or stamp.startswith("0001-"):
        return 0.0
    main, _, rest = stamp.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(main.rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    fraction = "".join(ch for ch in rest if ch.isdigit())
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


class Watch:
    """Judges services only once Compose has acted on them (reconcile, do not judge early).

    A container that had already exited or was restarting when the operation began is the state
    the operation is about to repair, not a failure; it counts as failed once it was (re)started
    after the operation began, its restart count rose, or Compose has finished. A container that was
    in a restart loop when the operation began (Docker's restart policy starts it again and again by
    itself) is judged only once Compose replaced it or has finished: its restarts are not Compose's.
    """

    def __init__(self, before: dict[str, ContainerDetail], began: float):
        self.before = before
        self.began = began

    def acted(self, name: str, now: dict[str, ContainerDetail], compose_done: bool) -> bool:
        if compose_done:
            return True
        detail = now.get(name)
        if detail is None:
            return False
        old = self.before.get(name)
        if old is None or old.id != detail.id:
            return True  # created by this operation
        if old.status == "restarting" or old.restart_count > 0:
            return False  # the restart policy's loop, not Compose: wait for the replacement
        return detail.started_at >= self.began - 1 or detail.restart_count > old.restart_count


class Readiness:
    """Web's readiness over HTTP, with the fast-failure rule (READINESS_FAIL_AFTER)."""

    def __init__(self, values: dict[str, str], fail_after: float = READINESS_FAIL_AFTER):
        self.values = values
        self.fail_after = fail_after
        self.answered_at: float | None = None
        self.was_ready = False
        self.detail = "not asked yet"

    def poll(self) -> tuple[bool, str | None]:
        """(ready, failure): failure is a reason once the version counts as broken."""
        ok, answered, detail = readiness(self.values)
        self.detail = detail
        now = time.monotonic()
        if ok:
            self.was_ready = True
            self.answered_at = None
            return True, None
        if not answered:
            return False, None  # still migrating or starting: the container's state tells failures
        if self.answered_at is None:
            self.answered_at = now
        if self.was_ready or now - self.answered_at >= self.fail_after:
            return False, f"web answers but is not ready: {detail}"
        return False, None


def wait_until_healthy(root: Path, runner: Runner, services: list[str] | None = None, timeout: float = 600.0,
                       progress: bool = True, process: subprocess.Popen | None = None,
                       readiness_values: dict[str, str] | None = None) -> float:
    """Poll until every service is running and healthy; return the seconds it took.

    ``process`` is an optional `compose up` running in the background: its exit ends the wait
    (success when every service is ready). A service fails the wait, at once and with its last
    log lines and hints, when it exits, restarts or turns unhealthy AFTER Compose acted on it (see
    Watch). With ``readiness_values`` (the .env values), web counts as ready when PostHog's
    readiness answers 200, and as failed when its server answers without becoming ready.
    """
    expected = list(services or services_here(readiness_values if readiness_values is not None else _values(root)))
    display = Progress(expected, progress)
    began = time.time()
    watch = Watch(inspect_containers(root, runner), began)
    ready_probe = Readiness(readiness_values) if readiness_values is not None and "web" in expected else None
    while True:
        # Whether Compose had finished BEFORE the states were read: a state read earlier may
        # predate what Compose did last, and must not be judged as final.
        compose_done = process is None or process.poll() is not None
        states = {s.service: s for s in service_states(root, runner)}
        display.update(states)
        suspects = [name for name in expected if name in states and states[name].failed]
        now = inspect_containers(root, runner) if suspects else {}
        # Judged on the inspect, which is newer than the listing: Compose may have started the
        # container in between.
        failed = [name for name in suspects if watch.acted(name, now, compose_done)
                  and (name not in now or now[name].failed)]
        if failed:
            display.finish()
            if process is not None and process.poll() is None:
                process.terminate()
            raise_failure(root, runner, failed, states)
        ready = {name: name in states and states[name].ready for name in expected}
        # Readiness is asked once Compose is done: before, the answer may come from the web
        # container Compose is about to replace.
        if ready_probe is not None and compose_done and "web" in states and states["web"].state == "running":
            web_ready, broken = ready_probe.poll()
            if broken:
                display.finish()
                if process is not None and process.poll() is None:
                    process.terminate()
                raise_failure(root, runner, ["web"], states, broken)
            # Readiness judges failure early (Docker's health lags: interval 5 s, start_period 300 s);
            # success needs both, so that `status` agrees the moment the task reports it.
            ready["web"] = web_ready and ready["web"]
        if all(ready.values()):
            if process is None or process.poll() is not None:
                display.finish()
                if process is not None and process.returncode != 0:
                    raise OperatorError(_start_failed(runner, process))
                return display.elapsed()
        elif process is not None and process.poll() is not None and process.returncode != 0:
            display.finish()
            stuck = [name for name in expected if not ready[name]]
            message = _process_error(process)
            if any(name in states for name in stuck):  # containers exist: their logs say why
                raise_failure(root, runner, stuck, states, message)
            raise OperatorError(_start_failed(runner, process))  # none was created (e.g. an image could not be pulled)
        if display.elapsed() > timeout:
            display.finish()
            if process is not None and process.poll() is None:
                process.terminate()
            stuck = [name for name in expected if not ready[name]]
            reason = f"not healthy after {timeout:.0f} s (--timeout)"
            if ready_probe is not None and not ready.get("web", True):
                reason += f"; readiness: {ready_probe.detail}"
            raise_failure(root, runner, stuck, states, reason)
        time.sleep(0.5)


def start_and_wait(root: Path, runner: Runner, command: list[str], services: list[str], timeout: float,
                   readiness_values: dict[str, str] | None = None) -> float:
    """Run ``command`` (a `compose up` without --wait) in the background and wait until ``services``
    are healthy, with live progress; a failing service or the timeout raises OperatorError with its
    last logs.

    Compose runs in its own session, so a terminal's Ctrl-C reaches only this process: it ends the
    wait for health, and Compose is then allowed to finish replacing containers (a critical
    section) instead of being killed with a half-made container.
    """
    import tempfile

    from posthog_compose import journal

    if runner.verbose:
        runner.show(command)
    # Compose's stderr goes to a file (a pipe could fill up) without a name: nothing is left behind,
    # even by a task that is killed.
    error_log = tempfile.TemporaryFile(mode="w+", errors="replace", prefix="compose-up-", suffix=".log")
    process = None
    try:
        with journal.critical("Compose is starting"):
            process = subprocess.Popen(command, cwd=root, env=runner.env, stdout=subprocess.DEVNULL, stderr=error_log,
                                       text=True, **journal.popen_kwargs())
            process.error_log = error_log
        journal.fault_point("compose-up-started")
        return wait_until_healthy(root, runner, services, timeout=timeout, process=process,
                                  readiness_values=readiness_values)
    finally:
        if process is not None and process.poll() is None:
            with journal.critical("letting Compose finish replacing containers"):
                try:
                    process.wait(timeout=COMPOSE_FINISH_SECONDS)
                except subprocess.TimeoutExpired:
                    process.terminate()
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
        error_log.close()


def _start_failed(runner: Runner, process: subprocess.Popen) -> str:
    """`compose up` failed: one line in the words of the task that ran it."""
    from posthog_compose.operations.engine import explain

    known = explain(_error_output(process), runner.task)
    if known:
        return known
    what = f"`invoke {runner.task}`" if runner.task else "`docker compose up`"
    return f"{what} could not start the services (Compose exit {process.returncode}): {_process_error(process)}"


#: After an interrupt, how long Compose may go on replacing containers before it is stopped.
COMPOSE_FINISH_SECONDS = 30.0


def readiness(values: dict[str, str], timeout: float = 3.0) -> tuple[bool, bool, str]:
    """PostHog's readiness: `GET /_readyz` (every check: PostgreSQL reachable and migrated, ClickHouse,
    Kafka, Redis, the Celery broker; 503 naming the failing ones). Returns (ready, answered, detail).
    A server without /_readyz (404, older releases) is asked /_health instead. The header keeps
    Django's SSL redirect (IS_BEHIND_PROXY=true) from answering 301, as the web healthcheck does."""
    from posthog_compose.configuration import edge

    if edge.enabled(values):  # WEB_PORT is not published: ask through the proxy
        return _readiness_through_proxy(values, timeout)
    base = f"http://127.0.0.1:{values.get('WEB_PORT', '8080')}"
    detail = ""
    for path in ("/_readyz", "/_health"):
        request = urllib.request.Request(f"{base}{path}", headers={"X-Forwarded-Proto": "https"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return True, True, f"{path} answered {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path == "/_readyz":
                continue
            text, failing = _failing_checks(exc)
            return False, True, f"{path} answered {exc.code}{text}{external_note(values, failing)}"
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{base} unreachable ({getattr(exc, 'reason', exc)})"
            return False, False, detail
    return False, True, detail or "no readiness endpoint"


def _readiness_through_proxy(values: dict[str, str], timeout: float) -> tuple[bool, bool, str]:
    import http.client

    from posthog_compose.operations import probes

    try:
        status, _, body = probes.request(values, "/_readyz", timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return False, False, f"the proxy is unreachable or its certificate does not verify ({exc})"
    if status == 200:
        return True, True, "/_readyz answered 200 through the proxy"
    text, failing = _failing_body(body.decode(errors="replace"))
    return False, True, f"/_readyz answered {status} through the proxy{text}{external_note(values, failing)}"


def _failing_checks(error: urllib.error.HTTPError) -> tuple[str, list[str]]:
    """(': postgres, cache failing', the failing check names) from /_readyz's JSON body, or its first line."""
    try:
        body = error.read(2000).decode(errors="replace")
    except OSError:
        return "", []
    return _failing_body(body)


def _failing_body(body: str) -> tuple[str, list[str]]:
    try:
        checks = json.loads(body)
    except ValueError:
        first = body.strip().splitlines()[:1]
        return (f": {first[0][:120]}" if first else ""), []
    if isinstance(checks, dict):
        failing = [str(name) for name, ok in checks.items() if ok is False]
        if failing:
            return f": {', '.join(failing)} failing", failing
    return "", []


def _error_output(process: subprocess.Popen) -> str:
    """What `compose up` has written to its error log so far ("" when it has none or it is closed)."""
    log = getattr(process, "error_log", None)
    if log is None or log.closed:
        return ""
    log.flush()
    log.seek(0)
    return log.read()


def _process_error(process: subprocess.Popen) -> str:
    """The last error line `compose up` wrote."""
    output = _error_output(process)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line]
    return (errors or lines or ["no output"])[-1][:300]


def raise_failure(root: Path, runner: Runner, failing: list[str], states: dict[str, ServiceState],
                  reason: str = "") -> None:
    """Print each failing service's last log lines and matched hints, then raise one line."""
    from posthog_compose import hints

    matched = []
    for name in failing:
        logs = recent_logs(root, runner, name, 20)
        label = states[name].label() if name in states else "not started"
        print(f"--- {name} ({label}): last log lines ---")
        print(logs.rstrip() or "(no output)")
        matched.extend(hints.match(logs))
    for hint in dict.fromkeys(matched):
        print(f"hint: {hint}")
    outside = _external_hint(root, failing, reason)
    if outside:
        print(f"hint: {outside}")
    details = ", ".join(f"{n} ({states[n].label() if n in states else 'not started'})" for n in failing)
    raise OperatorError(f"services failed: {details}{'; ' + reason if reason else ''}. "
                        f"See the log lines above; more with `invoke logs -s {','.join(failing)} --tail 200`")


def _external_hint(root: Path, failing: list[str], reason: str) -> str:
    """When PostHog's services fail and datastores are external: they are reached over the network
    from the containers, so say which and how to check them (unless the reason already says so)."""
    if not {"web", "worker", "plugins"} & set(failing) or "is external" in reason:
        return ""
    try:
        found = first_endpoints(_values(root))
    except Exception:  # .env unreadable: config-check's finding, not this hint's
        return ""
    if not found:
        return ""
    names = ", ".join(f"{DATASTORE_LABELS[name]} at {endpoint_text(endpoint)}" for name, endpoint in found.items())
    return (f"external datastores: {names}. If the logs above show connection, TLS or authentication errors, "
            "`invoke doctor` checks each one from this host")


def check_url(values: dict[str, str], timeout: float = 30.0) -> tuple[bool, str]:
    """A fresh install's promise: `/` answers 302 to /preflight on a fresh install, or /_health 200."""
    from posthog_compose.configuration import edge
    from posthog_compose.operations import probes

    if edge.enabled(values):  # WEB_PORT is not published: ask through the proxy, over verified HTTPS
        return probes.check_url(values, timeout=timeout)
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

"""The running deployment as Compose reports it: service states from `compose ps` and `docker
inspect`, waiting for health with live per-service progress (judging a service only after
Compose acted on it, and web by PostHog's readiness), the readiness and URL checks, recent logs.
Also which services run on this host (`services_here`: every service but the datastores .env makes
external) and how an external datastore is named to people (host:port, never credentials): waits
judge only local services, and a failing /_readyz check that reaches an external datastore says so.

One part per module: here (which services run on this host, how an external datastore is named),
states (`compose ps` and `docker inspect`, recent logs), progress (the live per-service lines and what
changed since the wait began), http_checks (PostHog's readiness and the URL check), process (the
output of a `compose up` that failed), drift (whether what runs is what the files say) and capability
(whether each local datastore takes writes, and the free space of each data volume's filesystem). This
module holds the waits (``wait_until_healthy``,
``start_and_wait``) and the failure they raise, and calls every engine step through its own names, so a
test can replace a step here.
"""

from __future__ import annotations

import sys
import json
import subprocess
import time
from pathlib import Path

from posthog_compose import interrupts
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.operations.stack.here import (
    DATASTORE_LABELS,
    READYZ_DATASTORES,
    services_here,
    deployment_services,
    known_services,
    external_services,
    endpoints,
    first_endpoints,
    endpoint_text,
    external_note,
    _external_hint,
)
from posthog_compose.operations.stack.states import (
    ServiceState,
    parse_ps,
    service_states,
    _values,
    recent_logs,
    ContainerDetail,
    inspect_containers,
    _epoch,
    NOTHING_RUNS,
    nothing_runs,
)
from posthog_compose.operations.stack.drift import Finding, Survey, survey
from posthog_compose.operations.stack import capability
from posthog_compose.operations.stack.capability import Capability, Space
from posthog_compose.operations.stack.progress import Dependencies, Progress, Watch, depends_on
from posthog_compose.operations.stack.http_checks import (
    READINESS_FAIL_AFTER,
    readiness,
    _readiness_through_proxy,
    _failing_body,
    check_url,
)
from posthog_compose.operations.stack.process import (
    _start_failed,
    COMPOSE_FINISH_SECONDS,
    _error_output,
    _process_error,
)


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


class DependencyNotReady(Exception):
    """Compose gave up on a dependency that Docker's restart policy is still bringing back."""


#: How often `compose up` is started again after it gave up on a dependency that was still coming back.
DEPENDENCY_RETRIES = 5


def wait_until_healthy(root: Path, runner: Runner, services: list[str] | None = None, timeout: float = 600.0,
                       progress: bool = True, process: subprocess.Popen | None = None,
                       readiness_values: dict[str, str] | None = None, retry_dependencies: bool = False) -> float:
    """Poll until every service is running and healthy; return the seconds it took.

    ``process`` is an optional `compose up` running in the background: its exit ends the wait
    (success when every service is ready). A service fails the wait, at once and with its last
    log lines and hints, when it exits, restarts or turns unhealthy AFTER Compose acted on it (see
    Watch) and after it was started with its dependencies ready (see Dependencies). With
    ``readiness_values`` (the .env values), web counts as ready when PostHog's readiness answers 200,
    and as failed when its server answers without becoming ready. With ``retry_dependencies``, a
    `compose up` that gave up because a dependency "failed to start" raises DependencyNotReady, so
    that the caller starts it again, instead of failing.
    """
    expected = list(services or services_here(readiness_values if readiness_values is not None else _values(root)))
    display = Progress(expected, progress)
    began = time.time()
    watch = Watch(inspect_containers(root, runner), began)
    dependencies = Dependencies(depends_on(root))
    ready_probe = Readiness(readiness_values) if readiness_values is not None and "web" in expected else None
    with interrupts.step("waiting for the services to become healthy"):
        while True:
            # Whether Compose had finished BEFORE the states were read: a state read earlier may
            # predate what Compose did last, and must not be judged as final.
            compose_done = process is None or process.poll() is not None
            listed_at = time.time()
            states = {s.service: s for s in service_states(root, runner)}
            display.update(states)
            dependencies.update(states, expected, listed_at)
            suspects = [name for name in expected if name in states and states[name].failed]
            now = inspect_containers(root, runner) if suspects else {}
            # Judged on the inspect, which is newer than the listing: Compose may have started the
            # container in between.
            failed = [name for name in suspects if watch.acted(name, now, compose_done)
                      and (name not in now or now[name].failed) and dependencies.judgeable(name, now.get(name))]
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
                if retry_dependencies and "dependency failed to start" in _error_output(process) \
                        and display.elapsed() < timeout:
                    raise DependencyNotReady(message)
                if any(name in states for name in stuck):  # containers exist: their logs say why
                    raise_failure(root, runner, stuck, states, message)
                # None was created (e.g. an image could not be pulled).
                raise OperatorError(_start_failed(runner, process))
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
    started = time.monotonic()
    try:
        attempt = 0
        while True:
            error_log.seek(0)
            error_log.truncate()
            with journal.critical("Compose is starting"):
                process = subprocess.Popen(journal.dies_with_task(command), cwd=root, env=runner.env,
                                           stdout=subprocess.DEVNULL,
                                           stderr=error_log, text=True, **journal.popen_kwargs())
                process.error_log = error_log
            journal.fault_point("compose-up-started")
            try:
                return wait_until_healthy(root, runner, services, timeout=timeout - (time.monotonic() - started),
                                          process=process, readiness_values=readiness_values,
                                          retry_dependencies=attempt < DEPENDENCY_RETRIES)
            except DependencyNotReady:
                # After a host or engine restart, Docker brings the containers back in no order and
                # Compose refuses to act on a dependency that is still restarting: start it again.
                attempt += 1
                print(f"Compose gave up on a dependency that is still coming back; starting it again "
                      f"(attempt {attempt + 1} of {DEPENDENCY_RETRIES + 1}).", flush=True)
                time.sleep(2)
    finally:
        if process is not None and process.poll() is None:
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):  # say at once what the wait is for
                interrupts.acknowledge(f"letting Compose finish replacing containers (at most "
                                       f"{COMPOSE_FINISH_SECONDS:.0f} s)")
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

"""Daily operations: up (with first-run init, config-check, live progress and the URL check),
status, logs (with an errors-only view), and down (data kept unless confirmed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import compose
from .engine import Runner
from .errors import OperatorError
from .manifest import SERVICES


def _services(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise OperatorError(f"unknown service(s) {', '.join(unknown)}; the services are {', '.join(SERVICES)}")
    return names


def _values(root: Path) -> dict[str, str]:
    from .envfile import EnvFile, env_path

    return EnvFile.load(env_path(root)).resolved()


# ----------------------------------------------------------------------------- up
def up(root: Path, runner: Runner, services: list[str], wait: bool = True, timeout: float = 600.0) -> None:
    from . import bootstrap, checks, manifest, stack
    from .envfile import env_path

    services = _services(services)
    targets = services or list(SERVICES)
    print(f"Plan: {'create .env, ' if not env_path(root).exists() else ''}check the configuration, start "
          f"{', '.join(targets)}{', wait until healthy' if wait else ''}"
          f"{', check the URL' if wait and 'web' in targets else ''}.")
    if not env_path(root).exists():
        if runner.dry_run:
            print("(dry run) would write .env with fresh secrets (invoke init)")
        else:
            print(bootstrap.init(root, manifest.load(root)).summary())
    if env_path(root).exists():
        checks.require_clean(root)
        if not runner.dry_run:
            compose.record_project_name(root)
    command = compose.command(root, "up", "--detach", *(["--wait", "--wait-timeout", str(int(timeout))] if wait else []),
                              *services)
    if runner.dry_run:
        runner.run(command)
        return
    started = time.monotonic()
    if not wait:
        runner.run(command)
        print(f"Started {', '.join(targets)} without waiting; follow with `invoke status`.")
        return
    stack.start_and_wait(root, runner, command, targets, timeout + 30)
    elapsed = time.monotonic() - started
    if "web" not in targets:
        print(f"Started {', '.join(targets)}: healthy in {elapsed:.0f}s.")
        return
    values = _values(root)
    ok, detail = stack.check_url(values)
    if not ok:
        stack.raise_failure(root, runner, ["web"], {s.service: s for s in stack.service_states(root, runner)},
                            f"URL check failed: {detail}")
    print(f"URL check: {detail}.")
    print(f"PostHog is up at {values.get('SITE_URL', '')} ({len(targets)} services healthy in {elapsed:.0f}s).")


# ----------------------------------------------------------------------------- status
def status(root: Path, runner: Runner, as_json: bool = False) -> None:
    from . import stack

    from . import diskusage

    states = {s.service: s for s in stack.service_states(root, runner)}
    disk = diskusage.for_status(root, runner)
    if as_json:
        print(json.dumps({"services": [{"service": name, **(vars(states[name]) if name in states else {"state": "missing"})}
                                       for name in SERVICES], "disk": disk.to_dict()}, indent=2))
        return
    rows = [("SERVICE", "STATE", "HEALTH", "UPTIME", "PORTS", "IMAGE")]
    for name in SERVICES:
        state = states.get(name)
        if state is None:
            rows.append((name, "not created", "-", "-", "-", "-"))
            continue
        uptime = state.status.split("(")[0].replace("Up ", "") if state.state == "running" else "-"
        rows.append((name, state.state, state.health or "-", uptime.strip() or "-", ",".join(state.ports) or "-",
                     state.image.rsplit("/", 1)[-1]))
    from .cli import table

    print(table(rows))
    print("\n".join(disk.lines()))
    ready = sum(1 for name in SERVICES if name in states and states[name].ready)
    print(f"{ready} of {len(SERVICES)} services running and healthy.")


# ----------------------------------------------------------------------------- logs
def logs(root: Path, runner: Runner, services: list[str], follow: bool = False, tail: str | None = None,
         since: str | None = None, errors: bool = False) -> int:
    services = _services(services)
    options = [*(["--tail", str(tail)] if tail else []), *(["--since", since] if since else [])]
    if not errors:
        runner.run(compose.command(root, "logs", *(["--follow"] if follow else []), *options, *services),
                   mutating=False)
        return 0
    from . import hints

    if follow:
        raise OperatorError("--errors reads the logs once; drop --follow")
    result = runner.run(compose.command(root, "logs", "--no-color", *options, *services), capture=True, mutating=False)
    counts = {name: 0 for name in (services or SERVICES)}
    matched_text = []
    for line in result.stdout.splitlines():
        service, _, message = line.partition("|")
        service = service.strip().rsplit("-", 1)[0].removeprefix(f"{compose.project_name(root)}-")
        if hints.is_error_line(message):
            counts[service] = counts.get(service, 0) + 1
            matched_text.append(message)
            print(line)
    total = sum(counts.values())
    for hint in dict.fromkeys(hints.match("\n".join(matched_text))):
        print(f"hint: {hint}")
    summary = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(f"{total} error line(s) ({summary}); benign warnings left out.")
    return 1 if total else 0


# ----------------------------------------------------------------------------- down
def down(root: Path, runner: Runner, volumes: bool = False, yes: bool = False) -> None:
    command = compose.command(root, "down", *(["--volumes"] if volumes else []))
    if not volumes:
        print("Plan: stop and remove the containers and the network; data volumes are kept.")
        runner.run(command)
        if runner.dry_run:
            return  # nothing was stopped
        print("Stopped. Data is kept in the volumes; `invoke up` starts again.")
        return
    document = compose.load_document(root)
    project = compose.project_name(root)
    doomed = [f"{project}_{name}" for name in (document.data.get("volumes") or {})]
    print("Plan: stop the deployment and DELETE its data volumes:")
    for name in doomed:
        print(f"  - {name}")
    print("Every event, user and setting stored in them is lost. Back up first: `invoke backup`.")
    if runner.dry_run:
        runner.run(command)
        return
    if not yes:
        sys.stdout.write(f"Type the deployment name ({project}) to delete the data: ")
        sys.stdout.flush()
        answer = sys.stdin.readline()
        if not answer:
            raise OperatorError("no confirmation (no input): nothing was deleted; pass --yes for automation")
        if answer.strip() != project:
            raise OperatorError(f"confirmation {answer.strip()!r} is not {project!r}: nothing was deleted")
    runner.run(command)
    print(f"Stopped and deleted {len(doomed)} data volume(s).")

"""Daily operations: up (with first-run init, config-check, live progress and the URL check),
status, logs (with an errors-only view), and down (data kept unless confirmed). An external datastore
is a row of its own in status (external, host:port) and outside the verdict; up waits only for the
services that run here."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from posthog_compose.cli import confirm_by_name
from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.configuration.manifest import SERVICES


def _services(names: list[str], root: Path | None = None) -> list[str]:
    """The services named with -s, checked: the eight of docker-compose.yml, and the edge proxy while
    .env switches it on."""
    from posthog_compose.configuration import edge
    from posthog_compose.configuration.envfile import env_path
    from posthog_compose.operations import stack

    values = _values(root) if root is not None and env_path(root).exists() else {}
    known = stack.known_services(values)
    unknown = [n for n in names if n not in known]
    if unknown == [edge.SERVICE]:
        raise OperatorError(f"-s {edge.SERVICE}: the edge proxy is off, so it has no container; switch it on with "
                            "`invoke proxy --enable --domain NAME`")
    if unknown:
        raise OperatorError(f"unknown service(s) {', '.join(unknown)}; the services are {', '.join(known)}")
    return names


def _values(root: Path) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    return EnvFile.load(env_path(root)).resolved()


# ----------------------------------------------------------------------------- up
def up(root: Path, runner: Runner, services: list[str], wait: bool = True, timeout: float = 600.0,
       as_json: bool = False) -> None:
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import checks, manifest
    from posthog_compose import journal
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import env_path
    from posthog_compose.operations.restore import POSTHOG_SERVICES, InterruptedRestore

    services = _services(services, root)
    if as_json:  # the plan, for a machine: only with --dry-run, and nothing else printed
        if not runner.dry_run:
            raise OperatorError("--json goes with --dry-run (the plan, for a machine to read); "
                                "`invoke status --json` says what runs")
        if runner.verbose:
            raise OperatorError("--json prints one document and nothing else: leave out --verbose")
        if not env_path(root).exists():
            raise OperatorError(".env does not exist yet: there is nothing to compare; `invoke up` writes it first")
        planned = planned_changes(root, runner, services)
        print(json.dumps(planned, indent=2))
        if planned["error"]:
            raise SystemExit(1)  # no plan could be made: the document says why
        return
    present = _values(root) if env_path(root).exists() else {}
    targets = services or stack.deployment_services(present)
    outside = stack.external_services(present)
    print(f"Plan: {'create .env, ' if not env_path(root).exists() else ''}check the configuration, start "
          f"{', '.join(targets)}{', wait until PostHog is ready' if wait else ''}.")
    for name, endpoint in outside.items():
        if name != "zookeeper":
            from posthog_compose.configuration.datastores import datastore_of_service

            print(f"  {name}: external {stack.DATASTORE_LABELS[datastore_of_service(name)]} at "
                  f"{stack.endpoint_text(endpoint)}{' (started here as asked)' if name in services else ''}")
    if runner.dry_run:
        if not env_path(root).exists():
            print("(dry run) would write .env with fresh secrets (invoke init)")
        else:
            show_changes(root, runner, services)
        runner.run(compose.command(root, "up", "--detach", *services))
        return
    with journal.deployment_lock(root, "up"):
        if not env_path(root).exists():
            print(bootstrap.init(root, manifest.load(root), lock=False).summary())  # up holds the lock
        withheld = None
        try:
            recover(root, runner)
        except InterruptedRestore as exc:  # start the datastores only, then end on the line that finishes it
            # The edge proxy depends on web: starting it would start web too.
            withheld, services = exc, [name for name in targets if name not in (*POSTHOG_SERVICES, "proxy")]
            targets = services
        checks.require_clean(root)
        compose.record_project_name(root)
        # No --wait: Compose starts what is missing, exited or outdated, and this tool judges the
        # result only after Compose has acted on each service (stack.Watch).
        command = compose.command(root, "up", "--detach", *services)
        started = time.monotonic()
        if not wait:
            if targets and not withheld:
                _warn_web_recreated_in_place(root, runner, services)
            if targets or not withheld:  # an empty list would start every service
                runner.run(command)
            if withheld:
                raise withheld
            print(f"Started {', '.join(targets)} without waiting; follow with `invoke status`.")
            return
        values = _values(root)
        if not services and not withheld:  # .env may have been written just now
            targets = stack.deployment_services(values)
        if targets and not withheld:
            _recreate_changed(root, runner, targets, timeout, values)
        if targets or not withheld:
            stack.start_and_wait(root, runner, command, targets, timeout,
                                 readiness_values=values if "web" in targets else None)
        elapsed = time.monotonic() - started
        check_images_match(root, runner, targets)
    if withheld:
        # Before the write probes: a restore that stopped halfway leaves ClickHouse without PostHog's
        # database, and the one line that matters is how to finish the restore.
        print(f"Started {', '.join(targets) or 'nothing'}; web, worker and plugins are not started until the "
              "restore is finished.")
        raise withheld
    check_datastores_write(root, runner, values, targets)
    if "web" not in targets:
        print(f"Started {', '.join(targets)}: healthy in {elapsed:.0f}s.")
        return
    ok, detail = stack.check_url(values)
    if not ok:
        stack.raise_failure(root, runner, ["web"], {s.service: s for s in stack.service_states(root, runner)},
                            f"URL check failed: {detail}")
    print(f"Readiness and URL check: {detail}.")
    print(f"PostHog is up at {values.get('SITE_URL', '')} ({len(targets)} services healthy in {elapsed:.0f}s).")


def _recreate_changed(root: Path, runner: Runner, targets: list[str], timeout: float,
                      values: dict[str, str]) -> None:
    """Recreate, in order and one group at a time, only the services whose configuration changed
    (operations/recreation.py): the datastores, then web (surging when it can), then worker and
    plugins. Nothing to recreate (a first start, only stopped containers) is left to Compose."""
    from posthog_compose.operations import recreation

    planned = recreation.plan(root, runner, targets)
    if planned.error or not planned.recreates:
        return
    print("Recreating only what changed, in this order:")
    for line in planned.lines():
        print(f"  {line}")
    if planned.unchanged:
        print(f"  left as they are: {', '.join(planned.unchanged)}")
    recreation.apply(root, runner, planned, timeout, values)


def _warn_web_recreated_in_place(root: Path, runner: Runner, services: list[str]) -> None:
    """`up --no-wait` hands every change to Compose at once: said before it acts when that costs the
    surge (web changed behind the edge proxy, also as a dependency of a service named with -s), since
    replacing web beside itself waits for its readiness."""
    from posthog_compose.operations import recreation

    # The plan `up --dry-run` shows (no plan, no order: nothing to warn of).
    order = planned_changes(root, runner, services)["order"]
    if any(step["service"] == "web" and step["action"] == recreation.SURGE for step in order):
        print("warning: web changed, and with --no-wait Compose recreates it in place: the URL fails while it "
              "boots. Without --no-wait it is replaced beside the running one, behind the proxy.", flush=True)


def _acted_on(root: Path, found, services: list[str]) -> list[str]:
    """The services `compose up` acts on: every active one, or those named with -s and the ones they
    depend on (Compose starts and recreates those too)."""
    if not services:
        return found.active
    depends = dependencies(root)
    wanted, queue = [], list(services)
    while queue:
        name = queue.pop(0)
        # A service named with -s runs even when its profile is off (Compose enables it).
        if (name in found.active or name in services) and name not in wanted:
            wanted.append(name)
            queue.extend(depends.get(name, []))
    return list(dict.fromkeys(name for name in [*found.active, *services] if name in wanted))


def planned_changes(root: Path, runner: Runner, services: list[str]) -> dict:
    """What `up` would create, recreate, pull or start, and why, and in which order and how it
    recreates (surge or in place); nothing is changed. Compose also acts on the dependencies of the
    services named with -s, so they are listed too. The shape `up --dry-run --json` prints:
    {"error", "changes": [{"service", "action", "why"}], "unchanged", "order": [{"service", "action",
    "why", "line"}], "surge_unavailable", "not_changed_by_up"}; "changes" speaks Compose's words (create,
    recreate, pull, start), "order" the kit's (surge, recreate in place, start)."""
    from posthog_compose.operations import recreation, stack

    found = stack.survey(root, runner)
    if found.error:
        return {"error": found.error, "changes": [], "unchanged": [], "order": [],
                "surge_unavailable": recreation.surge_unavailable(root), "not_changed_by_up": []}
    targets = _acted_on(root, found, services)
    plan, unchanged = stack.drift.changes(found, targets)
    ordered = recreation.from_survey(found, targets, recreation.surge_reason(root, found))
    return {
        "error": None,
        "changes": [{"service": c.service, "action": c.action, "why": c.why} for c in plan],
        "unchanged": unchanged,
        **ordered.to_dict(),
        "not_changed_by_up": [finding.reason for finding in found.findings
                              if finding.kind not in stack.drift.UP_FIXES and not finding.blocks_up
                              and (finding.service in targets or not finding.service)],
    }


def show_changes(root: Path, runner: Runner, services: list[str]) -> None:
    """`up --dry-run`: ``planned_changes`` for people."""
    from posthog_compose.operations import recreation

    planned = planned_changes(root, runner, services)
    if planned["error"]:
        print(f"(dry run) what runs could not be compared with the files: {planned['error']}")
        return
    if planned["changes"]:
        width = max(len(change["service"]) for change in planned["changes"])
        print("(dry run) up would change:")
        for change in planned["changes"]:
            print(f"  {change['service'].ljust(width)}  {change['action']}: {change['why']}")
    else:
        print("(dry run) up would change nothing: every service it would start runs as the files say.")
    if planned["changes"] and planned["unchanged"]:
        print(f"  left as they are (running as the files say): {', '.join(planned['unchanged'])}")
    if any(step["action"] in (recreation.RECREATE, recreation.SURGE) for step in planned["order"]):
        print("(dry run) in this order:")
        for step in planned["order"]:
            print(f"  {step['line']}")
    for reason in planned["not_changed_by_up"]:
        print(f"  not changed by up: {reason}")


def recover(root: Path, runner: Runner) -> None:
    """Finish or undo what a killed task left in the journal (the caller holds the deployment lock):
    each operation registered its replay with the journal (journal.recovers)."""
    from posthog_compose import journal

    from posthog_compose.operations.surge import drain

    journal.replay(root, runner)
    drain.take_out_leftover(root, runner)  # no switch is under way now: a pin left in the proxy goes


def check_images_match(root: Path, runner: Runner, services: list[str]) -> None:
    """Success only when the running containers were created from the images .env names."""
    from posthog_compose.operations import stack
    from posthog_compose.configuration.manifest import SERVICES as ALL

    document = compose.load_document(root)
    values = _values(root)
    details = stack.inspect_containers(root, runner)
    wrong = []
    for name in services:
        if name not in ALL or name not in details:
            continue
        configured = str(((document.data.get("services") or {}).get(name) or {}).get("image", ""))
        expected = _interpolate(configured, values)
        if expected and details[name].image != expected:
            wrong.append(f"{name} runs {details[name].image}, .env says {expected}")
    if wrong:
        raise OperatorError(f"containers do not match .env ({'; '.join(wrong)}); run `invoke up` to recreate them")


def check_datastores_write(root: Path, runner: Runner, values: dict[str, str], services: list[str]) -> None:
    """Success only when every local datastore just started takes a write: a full data volume leaves its
    container running and healthy while every INSERT fails."""
    from posthog_compose.operations import stack

    found = stack.capability.check(root, runner, values, [name for name in services if name in stack.capability.MOUNTS])
    for capability in found.values():
        if capability.verdict == "cannot tell":
            print(f"note: {capability.line()}.")
    _refuse_unwritable(found)


def _interpolate(text: str, values: dict[str, str]) -> str:
    """${NAME}, ${NAME:?message} and ${NAME:-default} as Compose reads them (enough for image lines)."""
    import re

    def replace(match):
        name, _, rest = match.group(1).partition(":")
        if name in values and values[name] != "":
            return values[name]
        return rest[1:] if rest.startswith("-") else ""

    return re.sub(r"\$\{([^}]+)\}", replace, text)


# ----------------------------------------------------------------------------- status
def dependencies(root: Path) -> dict[str, list[str]]:
    """service -> the services it depends on (docker-compose.yml's depends_on; the edge proxy, while .env
    switches it on, on web, as its overlay says)."""
    from posthog_compose.configuration import edge
    from posthog_compose.configuration.envfile import env_path

    document = compose.load_document(root)
    result = {}
    for name, body in (document.data.get("services") or {}).items():
        depends = (body or {}).get("depends_on") or []
        result[name] = list(depends) if isinstance(depends, (list, dict)) else []
    if env_path(root).exists() and edge.enabled(_values(root)):
        result[edge.SERVICE] = ["web"]  # docker-compose.proxy.yml: depends_on web (its `!reset` is Compose's own YAML)
    return result


def assess(states: dict, depends: dict[str, list[str]], ready: tuple[bool, bool, str] | None,
           external: dict | None = None, capabilities: dict | None = None,
           services: list[str] | None = None) -> dict[str, str]:
    """service -> "ok", "degraded: ...", "down: ...", "failing: cannot write: ..." or "external: host:port";
    web is degraded when PostHog's readiness fails even though Docker calls it healthy, and any service
    whose dependency is not ready is degraded (web "healthy" while db has exited cannot serve). A running
    datastore that cannot take a write (``capabilities``, service -> stack.Capability) is failing, and
    the services that depend on it degraded. A datastore in ``external`` (service -> endpoint) is not a
    container here: PostHog's readiness speaks for it. ``services``: the ones to judge (SERVICES, and the
    edge proxy while it is on)."""
    from posthog_compose.operations.stack import endpoint_text

    external = external or {}
    names = list(services or SERVICES)
    verdicts: dict[str, str] = {}
    for name in names:
        state = states.get(name)
        if name in external:
            verdicts[name] = ("not needed: ClickHouse and Kafka are external" if name == "zookeeper" else
                              f"external: {endpoint_text(external[name])}")
        elif state is None:
            verdicts[name] = "down: not created"
        elif not state.ready:
            verdicts[name] = f"down: {state.label()}"
        else:
            verdicts[name] = "ok"
    for name, found in (capabilities or {}).items():
        if verdicts.get(name) == "ok" and found.failing:
            verdicts[name] = f"failing: cannot write: {found.reason}"
    if ready is not None and verdicts.get("web") == "ok" and not ready[0]:
        verdicts["web"] = f"degraded: readiness fails ({ready[2]})"
    for name in names:
        if verdicts[name] != "ok":
            continue
        missing = [dep for dep in depends.get(name, []) if not verdicts.get(dep, "ok").startswith("ok")
                   and dep in SERVICES and dep not in external and not (states.get(dep) and states[dep].ready)]
        if missing:
            verdicts[name] = f"degraded: depends on {', '.join(missing)} (not running)"
            continue
        refusing = [dep for dep in depends.get(name, []) if verdicts.get(dep, "").startswith("failing")]
        if refusing:
            verdicts[name] = f"degraded: depends on {', '.join(refusing)} (cannot write)"
    return verdicts


def status(root: Path, runner: Runner, as_json: bool = False) -> None:
    from posthog_compose.configuration import datastores
    from posthog_compose import journal
    from concurrent.futures import ThreadPoolExecutor

    from posthog_compose.operations import diskusage, stack
    from posthog_compose.operations import restore as restoring
    from posthog_compose.operations.surge import drain
    from posthog_compose.configuration.envfile import env_path

    values = _values(root) if env_path(root).exists() else {}
    external = stack.external_services(values)
    shown = stack.known_services(values)  # with the edge proxy while it is on
    here = [name for name in shown if name not in external]
    unfinished = journal.pending(root)
    with ThreadPoolExecutor(max_workers=5) as pool:
        # Whether what runs is what the files say, whether each local datastore takes a write (each
        # probe with its own deadline), the disk and web's readiness, all asked while the states are
        # listed: one after the other they added up to the task's time. Readiness is asked before
        # web's state is known (a web that is not running refuses the connection at once) and used
        # only when web runs. Before the first run there is nothing to compare or probe.
        surveyed = pool.submit(stack.survey, root, runner) if env_path(root).exists() else None
        probed = (pool.submit(stack.capability.check, root, runner, values,
                              [name for name in here if name in stack.capability.MOUNTS])
                  if env_path(root).exists() else None)
        measured = pool.submit(diskusage.for_status, root, runner)
        asked = pool.submit(stack.readiness, values) if env_path(root).exists() else None
        # A switch under way or interrupted pins on purpose: the journal's line says so, not a pin's.
        pin = pool.submit(drain.leftover, root, runner) if "proxy" in shown and "surge" not in unfinished else None
        states = {s.service: s for s in stack.service_states(root, runner)}
        disk = measured.result()
        ready = None
        if "web" in states and states["web"].state == "running" and asked is not None:
            ready = asked.result()
        drift = surveyed.result() if surveyed is not None else stack.Survey()
        # A datastore that is not running is judged by its state; its probe says nothing more.
        capabilities = {name: found for name, found in (probed.result() if probed is not None else {}).items()
                        if name in states and states[name].ready}
        leftover = pin.result() if pin is not None and "proxy" in states and states["proxy"].ready else None
    disk.add_filesystems(found.space for found in capabilities.values())
    verdicts = assess(states, dependencies(root), ready, external, capabilities, shown)
    if leftover is not None and leftover.stale and verdicts.get("proxy") == "ok":
        verdicts["proxy"] = "degraded: " + leftover.line().removeprefix("proxy: ")
    if as_json:
        rows = []
        for name in shown:
            if name in external:
                endpoint = external[name]
                row = {"service": name, "state": "not needed" if name == "zookeeper" else "external",
                       "verdict": verdicts[name],
                       "datastore": datastores.datastore_of_service(name),
                       "endpoint": stack.endpoint_text(endpoint) if endpoint else None,
                       "tls": endpoint.tls if endpoint else None}
                if name in states:  # a container left from before the switch (e.g. the migration's source)
                    row["container"] = vars(states[name])
                rows.append(row)
                continue
            row = {"service": name, **(vars(states[name]) if name in states else {"state": "missing"}),
                   "verdict": verdicts[name], "drift": [finding.to_dict() for finding in drift.of(name)]}
            if name == "web" and ready is not None:
                row["readiness"] = {"ready": ready[0], "detail": ready[2]}
            if name in capabilities:
                row["writes"] = capabilities[name].to_dict()
            if name == "proxy" and leftover is not None:
                row["web_pinned_to"] = {"addresses": list(leftover.addresses), "stale": leftover.stale,
                                        "line": leftover.line()}
            rows.append(row)
        idle = stack.nothing_runs(states, here)
        print(json.dumps({"services": rows, "drift": drift.to_dict(), "disk": disk.to_dict(),
                          "unfinished": list(unfinished), "interrupted_restore": restoring.interrupted_line(root),
                          "next_step": "invoke up" if idle else None}, indent=2))
        if "restore" in unfinished or idle:
            raise SystemExit(1)
        _refuse_unwritable(capabilities)
        return
    rows = [("SERVICE", "STATE", "HEALTH", "VERDICT", "UPTIME", "PORTS", "IMAGE")]
    for name in shown:
        state = states.get(name)
        if name in external:
            endpoint = external[name]
            if name == "zookeeper":
                rows.append((name, "not needed", "-", "-", "-", "-", "-"))
                continue
            datastore = datastores.datastore_of_service(name)
            more = sum(1 for e in stack.endpoints(values) if e.datastore == datastore) - 1
            where = stack.endpoint_text(endpoint) + (f" (+{more})" if more > 0 else "")
            rows.append((name, "external", "-", "external", "-", where, stack.DATASTORE_LABELS[datastore]))
            continue
        if state is None:
            rows.append((name, "not created", "-", verdicts[name].split(":")[0], "-", "-", "-"))
            continue
        uptime = state.status.split("(")[0].replace("Up ", "") if state.state == "running" else "-"
        rows.append((name, state.state, state.health or "-", verdicts[name].split(":")[0], uptime.strip() or "-",
                     ",".join(state.ports) or "-", state.image.rsplit("/", 1)[-1]))
    from posthog_compose.cli import table

    print(table(rows))
    for name in shown:
        if verdicts[name].startswith("degraded"):
            print(f"{name}: {verdicts[name]}")
    for found in capabilities.values():
        if found.verdict != "ok":
            print(found.line())
    for name in external:
        if name in states and states[name].state == "running":
            print(f"{name}: a local container still runs although .env makes it external; "
                  f"`invoke compose -- stop {name}` stops it (its volume is kept)")
    for line in drift.lines():
        print(line)
    if leftover is not None and not leftover.stale:  # a stale one is the proxy's verdict, said above
        print(leftover.line())
    if drift.error:
        print(f"Not compared with the files: {drift.error}.")
    if ready is not None:
        print(f"PostHog readiness: {ready[2]}.")
    for kind in unfinished:
        if kind == "restore":
            print(f"{restoring.interrupted_line(root)}; until then `invoke up` starts the datastores only "
                  "(`invoke restore ARCHIVE --abandon` gives it up and keeps the data as it is now).")
            continue
        print(f"An interrupted {kind} is recorded in .deploy/journal/: `invoke up` finishes or undoes it.")
    print("\n".join(disk.lines()))
    good = sum(1 for name in here if verdicts[name] == "ok")
    outside = [name for name in external if name != "zookeeper"]
    # Drift does not change the exit code: status reports, and a change staged in .env on purpose is
    # no failure; the line says it and the next step, and --json carries it for monitoring.
    settled = good == len(here) and not unfinished
    print(f"{good} of {len(here)} services running and healthy{'' if settled else ' (see above)'}"
          f"{'; external: ' + ', '.join(outside) + ' (PostHog readiness speaks for them)' if outside else ''}"
          f"{'; not as the files say: ' + ', '.join(drift.subjects()) if drift.findings else ''}"
          f"{' (see above)' if settled and drift.findings else ''}.")
    if "restore" in unfinished:
        raise SystemExit(1)  # the data is not there, whatever the containers say
    if stack.nothing_runs(states, here):
        print(stack.NOTHING_RUNS)
        raise SystemExit(1)
    _refuse_unwritable(capabilities)


def _refuse_unwritable(capabilities: dict) -> None:
    """A datastore that cannot take a write fails the task (exit 1), whatever Docker says of it."""
    from posthog_compose.operations import stack

    if stack.capability.failing(capabilities):
        raise OperatorError(stack.capability.refusal(capabilities))


# ----------------------------------------------------------------------------- logs
def logs(root: Path, runner: Runner, services: list[str], follow: bool = False, tail: str | None = None,
         since: str | None = None, errors: bool = False) -> int:
    services = _services(services, root)
    _say_external(root, services)
    options = [*(["--tail", str(tail)] if tail else []), *(["--since", since] if since else [])]
    if not errors:
        runner.run(compose.command(root, "logs", *(["--follow"] if follow else []), *options, *services),
                   mutating=False)
        return 0
    from posthog_compose import hints

    if follow:
        raise OperatorError("--errors reads the logs once; drop --follow")
    result = runner.run(compose.command(root, "logs", "--no-color", *options, *services), capture=True, mutating=False)
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import env_path

    counts = {name: 0 for name in (services or stack.known_services(_values(root) if env_path(root).exists() else {}))}
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


def _say_external(root: Path, services: list[str]) -> None:
    """A named service that is an external datastore has no logs here: say where they are."""
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import env_path

    if not services or not env_path(root).exists():
        return
    from posthog_compose.configuration.datastores import datastore_of_service

    for name, endpoint in stack.external_services(_values(root)).items():
        if name in services and name != "zookeeper":
            print(f"{name}: {stack.DATASTORE_LABELS[datastore_of_service(name)]} is external "
                  f"({stack.endpoint_text(endpoint)}); "
                  "its logs are at your provider (a container left here from before shows below, if any).",
                  file=sys.stderr)


# ----------------------------------------------------------------------------- down
def down(root: Path, runner: Runner, volumes: bool = False, yes: bool = False) -> None:
    # Every profile ("*"): a local db kept stopped after `invoke migrate-datastore` belongs to the
    # deployment, and `down` removes its container (and, with --volumes, the volume listed in the
    # plan) like every other. A --profile flag replaces COMPOSE_PROFILES instead of adding to it, so
    # naming only `external` would leave every local datastore running.
    command = compose.command(root, "--profile", "*", "down", *(["--volumes"] if volumes else []))
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
        confirm_by_name(project, "delete the data", "nothing was deleted")
    runner.run(command)
    print(f"Stopped and deleted {len(doomed)} data volume(s).")

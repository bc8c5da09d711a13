"""`invoke upgrade`: move one image variable to a new version and never leave the deployment broken.

Owns the upgrade plan (which variable, which services, the exact .env diff), the gates of
upgrades.yml, the PostgreSQL backup before the switch (pg_dump inside `db`, verified with
pg_restore), the switch itself, the automatic rollback, the history file, and the replay of an
upgrade a killed task left half done (``recover``).

Order, so that every failure before the switch changes nothing:
validate --to -> take the deployment lock -> finish or undo an interrupted operation -> plan
("already at the target" is decided here, under the lock) -> gates -> config-check -> free disk
(Docker's data root and backups/) -> backup -> pull (or use the local image) -> --pin-digest ->
Postgres major check -> journal the intent -> switch .env -> recreate (web judged by PostHog's
readiness: a version that exits, restarts, or answers without turning ready fails within
seconds) -> the containers run the new image -> URL check. A failure or Ctrl-C after the switch
restores the old value and recreates the services on it, with Ctrl-C deferred until the
rollback has finished and a full disk costing only the saved logs; the journal lets the next
task undo a switch whose task was killed.

External datastores: `--service` refuses a datastore that does not run here; with PostgreSQL
external no dump can be taken here, so a PostHog upgrade asks for a snapshot at the provider and
--skip-backup, and says that snapshot is the way back.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose, images
from posthog_compose.operations.engine import Runner
from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.configuration import formats
from posthog_compose.fileops import atomic_write, timestamp

BACKUP_DIR = "backups"
HISTORY_FILE = "upgrade-history.jsonl"  # in backups/, next to the dumps it names
GATES_FILE = "upgrades.yml"
POSTGRES_MAJOR_DOC = "docs/upgrading.md#postgres-major-upgrade"
GIB = 1024 ** 3

#: --service -> (image variable, services that run it, free GiB the new image needs on the engine's disk)
TARGETS: dict[str, tuple[str, list[str], float]] = {
    "posthog": ("POSTHOG_IMAGE", ["web", "worker", "plugins"], 4.0),
    "postgres": ("POSTGRES_IMAGE", ["db"], 1.0),
    "redis": ("REDIS_IMAGE", ["redis"], 0.5),
    "clickhouse": ("CLICKHOUSE_IMAGE", ["clickhouse"], 2.0),
    "zookeeper": ("ZOOKEEPER_IMAGE", ["zookeeper"], 1.0),
    "kafka": ("KAFKA_IMAGE", ["kafka"], 1.0),
}
#: Read as "newer than every numbered release": commit-SHA tags and digests came after 1.43.x.
AFTER_NUMBERED_RELEASES = (1, 43, 10 ** 6)


@dataclass
class Request:
    """What the operator asked for on the command line."""

    to: str | None
    service: str = "posthog"
    allow_latest: bool = False
    pin_digest: bool = False
    skip_backup: bool = False
    timeout: float = 600.0


@dataclass
class Gate:
    id: str
    version: tuple[int, int, int]
    service: str
    check: list[str]
    requires: str
    instructions: str


@dataclass
class Plan:
    """Everything the upgrade will do, computed before anything changes."""

    service: str
    variable: str
    services: list[str]
    current: str
    target: str
    env_before: str
    env_after: str
    gates: list[Gate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    free_gib_needed: float = 1.0
    #: host:port of PostgreSQL when it is external (no dump is taken here), else None
    external_postgres: str | None = None

    def diff(self) -> str:
        import difflib

        return "".join(difflib.unified_diff(self.env_before.splitlines(keepends=True),
                                            self.env_after.splitlines(keepends=True), "a/.env", "b/.env", n=0))


@dataclass
class HistoryEntry:
    time: str
    service: str
    variable: str
    from_: str
    to: str
    result: str  # upgraded | rolled back | rollback failed | aborted
    seconds: float
    backup: str | None = None
    reason: str = ""
    logs: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["from"] = data.pop("from_")
        return data


# ----------------------------------------------------------------------------- tags and plan
def target_reference(current: str, to: str | None, service: str, allow_latest: bool) -> str:
    """The new image reference for ``--to`` (a tag or a digest), validated before anything runs."""
    if not to:
        raise OperatorError("--to is required, e.g. `invoke upgrade --to release-1.43.0` (or --history)")
    ref = images.parse(current)
    value = to.strip()
    if ("/" in value or (":" in value and not value.startswith("sha256:"))) and _parses(value):
        raise OperatorError(f"--to takes a tag or a digest, not an image reference ({value!r}); the repository "
                            f"stays {ref.repository} (change it in .env if you really mean another one)")
    if service == "posthog":
        kind = images.posthog_tag_kind(value, allow_latest=allow_latest)
    elif value.startswith("sha256:"):
        kind = "digest"
    elif value in images.MOVING_TAGS and not allow_latest:
        raise OperatorError(f"--to {value!r} is a moving tag: the deployment could change version on the next pull; "
                            "pin an exact version or a digest (or pass --allow-latest)")
    else:
        kind = "tag"
    new = ref.with_digest(value) if kind == "digest" else ref.with_tag(value)
    return str(new)


def _parses(reference: str) -> bool:
    try:
        images.parse(reference)
    except OperatorError:
        return False
    return True


def version_of(reference: str) -> tuple[int, int, int]:
    """The PostHog version a reference stands for, for the gates (see upgrades.yml)."""
    ref = images.parse(reference)
    return images.release_version(ref.tag) or AFTER_NUMBERED_RELEASES


def load_gates(root: Path) -> list[Gate]:
    from posthog_compose.configuration.manifest import load_yaml

    path = Path(root) / GATES_FILE
    if not path.exists():
        return []
    data = load_yaml(path) or {}
    gates = []
    for index, raw in enumerate(data.get("gates") or []):
        try:
            major, minor, patch = (int(part) for part in str(raw["version"]).split("."))
            check = raw["check"]
            if not isinstance(check, list) or not all(isinstance(arg, str) for arg in check) or not check:
                raise ValueError("check must be a list of arguments")
            gates.append(Gate(str(raw["id"]), (major, minor, patch), str(raw.get("service", "web")), check,
                              str(raw.get("requires", "")), str(raw.get("instructions", "")).strip()))
        except (KeyError, TypeError, ValueError) as exc:
            raise OperatorError(f"{GATES_FILE}: gate {index + 1} is malformed ({exc}); it needs id, version X.Y.Z, "
                                "service and a check argument list")
    return gates


def applicable_gates(gates: list[Gate], current: str, target: str) -> list[Gate]:
    """The gates an upgrade from ``current`` to ``target`` crosses."""
    before, after = version_of(current), version_of(target)
    return [gate for gate in gates if before < gate.version <= after]


def make_plan(root: Path, request: Request) -> Plan:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    if request.service not in TARGETS:
        raise OperatorError(f"--service {request.service!r} is not one of {', '.join(TARGETS)}")
    variable, services, free_gib = TARGETS[request.service]
    env = EnvFile.load(env_path(root))
    values = env.resolved()
    current = values.get(variable, "")
    if not current:
        raise OperatorError(f".env: {variable} is not set; run `invoke config-check`")
    outside = _external(values)
    if any(service in outside for service in services):
        endpoint = next(outside[service] for service in services if service in outside)
        what = (f"{LABELS[endpoint.datastore]} is external ({_where(endpoint)})" if endpoint is not None
                else f"{', '.join(services)} does not run here (ClickHouse and Kafka are both external)")
        raise OperatorError(f"--service {request.service}: {what}, so {variable} runs nowhere on this host; upgrade it "
                            "at your provider and check the new version with `invoke doctor`; nothing was changed")
    target = target_reference(current, request.to, request.service, request.allow_latest)
    before = env.render()
    env.set(variable, target)
    plan = Plan(request.service, variable, services, current, target, before, env.render(), free_gib_needed=free_gib)
    if "db" in outside:
        plan.external_postgres = _where(outside["db"])
        if request.service == "posthog" and not request.skip_backup:
            raise OperatorError(
                f"PostgreSQL is external ({plan.external_postgres}), so this kit cannot take the pre-upgrade backup "
                "that a rollback of PostHog's migrations needs: take a snapshot at your provider, then run the upgrade "
                "again with --skip-backup; nothing was changed")
    # A digest the kit pinned stands for the tag it was pinned from (images.DIGEST_VERSIONS_FILE).
    known_current, known_target = images.with_known_tag(root, current), images.with_known_tag(root, target)
    if request.service == "posthog":
        plan.gates = applicable_gates(load_gates(root), known_current, known_target)
    if formats.is_downgrade(images.parse(known_current).tag or "",
                            images.parse(known_target).tag or ""):  # hook: hostile input
        plan.warnings.append(f"{target} is OLDER than {current}: this is a downgrade, which database migrations "
                             "may not survive; restore the backup of that version instead if you mean to go back")
    if images.parse(target).tag in images.MOVING_TAGS:
        plan.warnings.append(f"{images.parse(target).tag} is a moving tag: the next pull can change the version "
                             "without an upgrade; today's posthog/posthog:latest also expects a larger stack than "
                             "this one. Not for production.")
    if request.service == "postgres":
        old, new = postgres_major(current), postgres_major(target)
        if old and new and old != new:
            raise OperatorError(f"POSTGRES_IMAGE {current} -> {target} changes PostgreSQL's major version ({old} -> "
                                f"{new}): the data files are incompatible. Follow the dump-and-restore procedure in "
                                f"{POSTGRES_MAJOR_DOC}")
    from posthog_compose.configuration import compatibility  # a datastore outside the range the target accepts (compatibility.yml)
    refused = compatibility.upgrade_problems(values, {**values, variable: target}, root)
    if refused:
        raise OperatorError("; ".join(refused))
    return plan


LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}


def _external(values: dict[str, str]) -> dict:
    """compose service -> endpoint (or None) for what .env makes external (stack.external_services)."""
    from posthog_compose.operations import stack

    return stack.external_services(values)


def _where(endpoint) -> str:
    from posthog_compose.operations import stack

    return stack.endpoint_text(endpoint)


def postgres_major(reference: str) -> str | None:
    """'15' for postgres:15.12-alpine; None when the tag does not say (a digest, latest)."""
    tag = images.parse(reference).tag or ""
    match = re.match(r"^(\d+)", tag)
    return match.group(1) if match else None


def print_plan(plan: Plan, request: Request, dry_run: bool) -> None:
    if plan.current == plan.target:
        return
    steps = []
    if plan.gates:
        steps.append(f"check upgrade gate(s) {', '.join(g.id for g in plan.gates)} in the running {plan.gates[0].service}")
    steps.append("run config-check and check free disk")
    if plan.external_postgres:
        steps.append(f"no PostgreSQL dump here: PostgreSQL is external ({plan.external_postgres}); "
                     + ("the snapshot taken at the provider is the way back" if plan.service == "posthog"
                        else f"upgrading {plan.variable} does not touch it"))
    else:
        steps.append("skip the PostgreSQL backup (--skip-backup)" if request.skip_backup
                     else "back up PostgreSQL (`invoke backup --only postgres`: a verified pg_dump archive in backups/)")
    steps.append(f"pull {plan.target}" + (" and pin its digest" if request.pin_digest else ""))
    steps.append(f"set {plan.variable} in .env and recreate {', '.join(plan.services)}")
    steps.append(f"wait until healthy (at most {request.timeout:.0f} s) and check the URL; roll back on any failure")
    print(f"Plan: upgrade {plan.variable} {plan.current} -> {plan.target}")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    if dry_run:
        print(plan.diff(), end="")


# ----------------------------------------------------------------------------- the run
def run(root: Path, runner: Runner, request: Request) -> int:
    """The upgrade task. Returns the exit code: 0 upgraded (or nothing to do), 1 failed and rolled
    back or aborted before the switch, 2 when even the rollback did not come back healthy."""
    from posthog_compose import journal

    root = Path(root)
    if runner.dry_run:
        plan = make_plan(root, request)
        if plan.current == plan.target and not request.pin_digest:
            print(f"{plan.variable} is already {plan.target}: nothing to do.")
            return 0
        print_plan(plan, request, True)
        print("Dry run: nothing changed.")
        return 0
    # Every decision below is taken under the lock: a second upgrade to the same target waits
    # for nothing and decides nothing until the first one has finished (or been undone).
    with journal.deployment_lock(root, "upgrade"):
        from posthog_compose.journal import replay as recover

        recover(root, runner)
        plan = make_plan(root, request)
        if plan.current == plan.target and not request.pin_digest:
            _require_running_on(root, runner, plan)
            print(f"{plan.variable} is already {plan.target} and the running containers use it: nothing to do.")
            return 0
        print_plan(plan, request, False)
        return _run(root, runner, request, plan)


def _require_running_on(root: Path, runner: Runner, plan: Plan) -> None:
    """"Already at the target" holds only when the containers that exist were created from it."""
    from posthog_compose.operations import stack

    details = stack.inspect_containers(root, runner)
    stale = [f"{name} runs {details[name].image}" for name in plan.services
             if name in details and details[name].image != plan.target]
    if stale:
        raise OperatorError(f".env already names {plan.target} but {'; '.join(stale)}: run `invoke up` to recreate "
                            "them on it")


def _run(root: Path, runner: Runner, request: Request, plan: Plan) -> int:
    from posthog_compose.configuration import checks
    from posthog_compose import journal

    started = time.monotonic()
    backup: Path | None = None
    try:
        check_gates(root, runner, plan.gates)
        checks.require_clean(root)
        check_free_disk(root, runner, plan.free_gib_needed)
        journal.fault_point("upgrade-backup")
        if plan.external_postgres:
            print(f"No PostgreSQL backup here: PostgreSQL is external ({plan.external_postgres})"
                  + ("; the snapshot taken at the provider is the way back." if plan.service == "posthog" else "."))
        elif request.skip_backup:
            print("Skipping the PostgreSQL backup (--skip-backup): if the new version migrates data and has to be "
                  "rolled back, there is no dump to restore.")
        else:
            backup = take_backup(root, runner)
        journal.fault_point("upgrade-pull")
        target = fetch_image(runner, plan.target, request.pin_digest)
        if target != plan.target:  # pinned: remember the version the digest stands for
            images.record_digest_version(root, plan.target, target)
        if request.service == "postgres":
            check_postgres_major_of_image(runner, plan.current, target)
    except (OperatorError, KeyboardInterrupt, OSError) as exc:
        if isinstance(exc, OSError) and not journal.is_disk_full(exc):
            raise
        reason = (journal.disk_full_message(exc, "taking the backup") if isinstance(exc, OSError)
                  else str(exc) or "interrupted")
        _record_safely(root, plan, plan.target, "interrupted" if isinstance(exc, KeyboardInterrupt) else "aborted",
                       started, backup, reason)
        if isinstance(exc, KeyboardInterrupt):
            raise OperatorError("upgrade interrupted before the switch: nothing changed", code=130)
        raise OperatorError(f"upgrade stopped before the switch, nothing changed: {reason}")
    if target == plan.current:
        print(f"{plan.variable} is already {target}: nothing to do.")
        return 0
    plan.target = target

    print(f"Switching {plan.variable} to {target} and recreating {', '.join(plan.services)} ...", flush=True)
    switched_at = time.monotonic()
    entry = {"variable": plan.variable, "service": plan.service, "services": plan.services, "from": plan.current,
             "to": target, "backup": str(backup.relative_to(root)) if backup else None, "phase": "switching"}
    try:
        with journal.critical("the upgrade is switching .env"):
            journal.write(root, "upgrade", entry)  # the intent, before the first irreversible step
            journal.fault_point("upgrade-journal-written")
            _set_image(root, plan.variable, target)
            journal.fault_point("upgrade-env-switched")
        _recreate(root, runner, plan.services, request.timeout)
        check_running_images(root, runner, plan.services, target)
    except BaseException as exc:  # noqa: B902 - the rollback must run whatever stopped the switch
        reason = _reason(exc)
        code = _roll_back(root, runner, request, plan, reason, started, backup, entry,
                          interrupted=isinstance(exc, KeyboardInterrupt))
        if not isinstance(exc, (OperatorError, KeyboardInterrupt)) and not journal.is_disk_full(exc):
            raise
        return code
    _record_safely(root, plan, target, "upgraded", started, backup)
    journal.clear(root, "upgrade")
    where = f"; backup {backup.relative_to(root)}" if backup else ""
    print(f"Upgraded {plan.variable} {plan.current} -> {target}: ready {time.monotonic() - switched_at:.0f} s after "
          f"the switch ({time.monotonic() - started:.0f} s in all){where}.")
    return 0


def _reason(exc: BaseException) -> str:
    from posthog_compose import journal

    return journal.failure_reason(exc, "switching")


def _new_version_ran(runner: Runner, root: Path, plan: Plan) -> bool:
    """Whether a container of the new version exists (only then can it have migrated data)."""
    from posthog_compose.operations import stack

    try:
        details = stack.inspect_containers(root, runner)
    except Exception:  # noqa: BLE001 - unknown counts as "may have run"
        return True
    return any(d.image == plan.target for d in details.values())


def _roll_back(root: Path, runner: Runner, request: Request, plan: Plan, reason: str, started: float,
               backup: Path | None, entry: dict, interrupted: bool = False) -> int:
    """Put the previous version back. Runs with Ctrl-C deferred, and survives its own I/O errors
    (a full backups/ only loses the saved logs): the deployment comes first, the paperwork second."""
    from posthog_compose import journal

    with journal.critical("the rollback is running and will finish first", reraise=False):
        print(f"Upgrade failed: {reason}", flush=True)
        ran = _new_version_ran(runner, root, plan)
        logs = None
        try:
            logs = save_logs(root, runner, plan.services)
        except Exception as exc:  # noqa: BLE001 - logs are a courtesy; the rollback is not
            print(f"warning: the failed version's logs were not saved ({_reason(exc)}).")
        try:
            journal.write(root, "upgrade", {**entry, "phase": "rolling back"})
        except OSError as exc:
            print(f"warning: the journal could not be updated ({_reason(exc)}); going on with the rollback.")
        print(f"Rolling back: {plan.variable} -> {plan.current} and recreating {', '.join(plan.services)} ...",
              flush=True)
        rollback_started = time.monotonic()
        try:
            journal.fault_point("upgrade-rollback")
            _set_image(root, plan.variable, plan.current)
            _recreate(root, runner, plan.services, request.timeout)
            check_running_images(root, runner, plan.services, plan.current)
        except BaseException as exc:  # noqa: B902
            detail = _reason(exc)
            _record_safely(root, plan, plan.target, "rollback failed", started, backup,
                           f"{'interrupted; ' if interrupted else ''}{reason}; rollback: {detail}", logs)
            if ran:
                restore = (f"if `invoke up` does not bring it back, the new version may have migrated the database: "
                           f"restore {backup.relative_to(root)} as described in docs/upgrading.md#restoring-a-backup"
                           if backup else f"PostgreSQL is external ({plan.external_postgres}): restore the snapshot "
                           "taken at the provider" if plan.external_postgres else "there is no backup (--skip-backup)")
            else:
                restore = "the new version never started, so the database is unchanged"
            raise OperatorError(f"the rollback to {plan.current} did not come back healthy ({detail}). .env is back "
                                f"on {plan.current}; run `invoke up` to start it again ({restore}). Logs of the failed "
                                f"version: {logs.relative_to(root) if logs else 'not saved'}", code=2)
        result = "interrupted" if interrupted else "rolled back"
        _record_safely(root, plan, plan.target, result, started, backup, reason, logs)
        journal.clear(root, "upgrade")
        print(f"Rolled back in {time.monotonic() - rollback_started:.0f} s: the deployment is back on {plan.current} "
              "and healthy.")
        print(f"error: upgrade to {plan.target} {'interrupted' if interrupted else 'failed'} "
              f"({reason.splitlines()[0][:300]}); logs of the failed version are in "
              f"{logs.relative_to(root) if logs else '(could not be saved)'}; history: `invoke upgrade --history`.",
              file=sys.stderr)
    return 130 if interrupted else 1


@journal.recovers("upgrade")
def recover(root: Path, runner: Runner) -> None:
    """Undo an upgrade that a killed task left half done: .env goes back to the previous image (the
    caller then recreates the services on it), and the history says it was interrupted."""
    from posthog_compose import journal

    entry = journal.read(root, "upgrade")
    if not entry:
        return
    variable, previous = entry.get("variable"), entry.get("from")
    if not variable or not previous:
        journal.clear(root, "upgrade")
        return
    print(f"An upgrade of {variable} to {entry.get('to')} was interrupted ({entry.get('phase')}); undoing it: "
          f"{variable} back to {previous}.")
    with journal.critical("undoing an interrupted upgrade"):
        _set_image(root, variable, previous)
        plan = Plan(entry.get("service", "posthog"), variable, list(entry.get("services") or []), previous,
                    entry.get("to", ""), "", "")
        backup = entry.get("backup")
        _record_safely(root, plan, plan.target, "interrupted", time.monotonic(), Path(root) / backup if backup else None,
                       f"the task was killed while {entry.get('phase')}; undone by the next task")
        journal.clear(root, "upgrade")
    # Containers already made from the interrupted version go back to the previous one now; the
    # others are left to the task that called (`up` starts what is missing).
    from posthog_compose.operations import stack

    details = stack.inspect_containers(root, runner)
    stale = [name for name in entry.get("services") or [] if name in details and details[name].image != previous]
    if stale:
        print(f"Recreating {', '.join(stale)} on {previous} ...")
        _recreate(root, runner, stale, 600)


def check_running_images(root: Path, runner: Runner, services: list[str], reference: str) -> None:
    """Success is reported only when the containers of ``services`` were created from ``reference``."""
    from posthog_compose.operations import stack

    details = stack.inspect_containers(root, runner)
    wrong = [f"{name} runs {details[name].image if name in details else 'nothing'}" for name in services
             if name not in details or details[name].image != reference]
    if wrong:
        raise OperatorError(f"the containers do not run {reference}: {'; '.join(wrong)}")


def _set_image(root: Path, variable: str, value: str) -> None:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    env = EnvFile.load(env_path(root))
    env.set(variable, value)
    env.write()


def _recreate(root: Path, runner: Runner, services: list[str], timeout: float) -> None:
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import EnvFile, env_path

    # One service at a time, web first, without touching the others (--no-deps): web runs the new
    # version's migrations before new workers start, and the URL is down only while web restarts.
    # Web is judged by PostHog's readiness: a version whose server answers but never turns ready,
    # or whose container exits or restarts, fails within seconds, not after --timeout.
    values = EnvFile.load(env_path(root)).resolved()
    deadline = time.monotonic() + timeout
    for service in services:
        remaining = max(deadline - time.monotonic(), 1.0)
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--no-deps", service), [service],
                             remaining, readiness_values=values if service == "web" else None)
    if "web" in services:
        ok, detail = stack.check_url(values, timeout=min(60.0, timeout))
        if not ok:
            raise OperatorError(f"URL check failed: {detail}")
        print(f"URL check: {detail}.")


# ----------------------------------------------------------------------------- steps before the switch
def check_gates(root: Path, runner: Runner, gates: list[Gate]) -> None:
    """Run each applicable gate's check in its running service; stop with its instructions."""
    for gate in gates:
        print(f"Gate {gate.id}: checking that {gate.requires} ...")
        result = runner.run(compose.command(root, "exec", "-T", gate.service, *gate.check), capture=True, check=False,
                            mutating=False, timeout=300)
        if result.returncode != 0:
            output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
            detail = output[-1][:200] if output else f"exit {result.returncode}"
            raise OperatorError(f"upgrade gate {gate.id} not passed ({detail}). {gate.instructions}")


def check_free_disk(root: Path, runner: Runner, needed_gib: float) -> None:
    """Enough room for the new image on Docker's data root, and for the dump and logs in backups/."""
    from posthog_compose.operations.engine import disks

    for label, path, free in disks(root, runner.env):
        if free is None:
            print(f"note: free space on {label} cannot be measured from this host"
                  f"{f' ({path})' if path else ''}; make sure it has {needed_gib:.1f} GiB free")
            continue
        need = needed_gib if label.startswith("Docker") else BACKUP_MIN_GIB
        if free < need:
            raise OperatorError(f"only {free:.1f} GiB free on {label} ({path}); the upgrade needs at least "
                                f"{need:.1f} GiB there. Free space (e.g. `docker image prune`, old dumps in backups/) "
                                "and run it again")


#: backups/ holds the dump, the failed version's logs and the history: a floor, not the dump's size.
BACKUP_MIN_GIB = 0.05


def take_backup(root: Path, runner: Runner) -> Path:
    """The pre-upgrade backup: ONE call, so that a dedicated backup module can replace it."""
    return backup_postgres(root, runner)


def backup_postgres(root: Path, runner: Runner) -> Path:
    """The pre-upgrade backup: `invoke backup --only postgres` (configuration and a pg_dump verified with
    pg_restore --list, in one archive under backups/; encrypted when a backup passphrase is configured)."""
    from posthog_compose.operations.backup import create

    return create(root, runner, subset="postgres").path


def fetch_image(runner: Runner, target: str, pin_digest: bool) -> str:
    """Pull ``target``; an image that cannot be pulled but is already on the engine (loaded by hand,
    an air-gapped host) is used as it is. Returns the reference to write (the digest with --pin-digest)."""
    print(f"Pulling {target} ...")
    result = runner.run(["docker", "pull", "--quiet", target], capture=True, check=False, timeout=3600)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        if not images.image_exists(runner, target):
            raise OperatorError(f"cannot pull {target} ({detail[0][:200]}) and the engine does not have it; check "
                                "the tag exists (PostHog tags: release-X.Y.Z or a 40-hex commit SHA)")
        print(f"Pull failed ({detail[0][:120]}); using the image already on this engine.")
    if not pin_digest or images.is_digest_pinned(target):
        return target
    digest = images.repo_digest(runner, target)
    if not digest:
        raise OperatorError(f"{target} has no registry digest on this engine (it was built or loaded locally), so "
                            "--pin-digest cannot pin it; push it to a registry or upgrade without --pin-digest")
    print(f"Pinned {target} to {digest}.")
    return digest


def check_postgres_major_of_image(runner: Runner, current: str, target: str) -> None:
    """For digests and unusual tags: compare PG_MAJOR from the images' environment."""
    def major(reference: str) -> str | None:
        result = runner.run(["docker", "image", "inspect", "--format", "{{json .Config.Env}}", reference],
                            capture=True, check=False, mutating=False)
        try:
            env = json.loads(result.stdout or "null") or []
        except ValueError:
            return None
        found = [item.split("=", 1)[1] for item in env if item.startswith("PG_MAJOR=")]
        return found[0] if found else postgres_major(reference)

    old, new = major(current), major(target)
    if old and new and old != new:
        raise OperatorError(f"{target} is PostgreSQL {new} but the data volume was written by {old}: follow the "
                            f"dump-and-restore procedure in {POSTGRES_MAJOR_DOC}")


def save_logs(root: Path, runner: Runner, services: list[str]) -> Path | None:
    """The failed version's last log lines, kept (0600) for the operator."""
    result = runner.run(compose.command(root, "logs", "--no-color", "--tail", "300", *services), capture=True,
                        check=False, mutating=False, timeout=120)
    directory = root / BACKUP_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"upgrade-{timestamp()}-failed.log"
    atomic_write(path, (result.stdout or "") + (result.stderr or ""), 0o600)
    return path


# ----------------------------------------------------------------------------- history and lock
def history_path(root: Path) -> Path:
    return Path(root) / BACKUP_DIR / HISTORY_FILE


def _record(root: Path, plan: Plan, target: str, result: str, started: float, backup: Path | None,
            reason: str = "", logs: Path | None = None) -> None:
    entry = HistoryEntry(
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), service=plan.service, variable=plan.variable,
        from_=plan.current, to=target, result=result, seconds=round(time.monotonic() - started, 1),
        backup=str(backup.relative_to(root)) if backup else None, reason=reason.splitlines()[0][:300] if reason else "",
        logs=str(logs.relative_to(root)) if logs else None)
    path = history_path(root)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry.to_dict()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _record_safely(root: Path, plan: Plan, target: str, result: str, started: float, backup: Path | None,
                   reason: str = "", logs: Path | None = None) -> None:
    """_record, but a full or broken disk only costs the history line (said so), never the caller's work."""
    from posthog_compose import journal

    try:
        _record(root, plan, target, result, started, backup, reason, logs)
    except OSError as exc:
        what = journal.disk_full_message(exc, "writing the upgrade history") if journal.is_disk_full(exc) else str(exc)
        print(f"warning: the history line ({result}) was not written: {what}", file=sys.stderr)


def read_history(root: Path) -> list[dict]:
    path = history_path(root)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise OperatorError(f"{path.relative_to(root)} line {number} is not JSON; fix or remove that line")
    return entries


def print_history(root: Path, as_json: bool = False) -> None:
    entries = read_history(Path(root))
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        print("No upgrades yet (the history is kept in backups/upgrade-history.jsonl).")
        return
    rows = [("TIME", "IMAGE", "FROM", "TO", "RESULT", "SECONDS", "BACKUP")]
    for entry in entries:
        rows.append((entry.get("time", ""), entry.get("variable", ""), _short(entry.get("from", "")),
                     _short(entry.get("to", "")), entry.get("result", ""), str(entry.get("seconds", "")),
                     entry.get("backup") or "-"))
    from posthog_compose.cli import table

    print(table(rows))
    failed = [e for e in entries if e.get("result") != "upgraded"]
    print(f"{len(entries)} upgrade(s), {len(failed)} not completed; reasons with --json.")


def _short(reference: str) -> str:
    """The tag or digest part, which is what differs between rows."""
    ref = images.parse(reference) if reference else None
    if not ref:
        return "-"
    return (ref.tag or "") + (f"@{ref.digest[:19]}" if ref.digest else "")


def _lock(root: Path):
    """One changing task at a time per deployment (kept for callers of the old name)."""
    from posthog_compose.journal import deployment_lock

    return deployment_lock(root, "upgrade")

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

One part per module: versions (--to and the versions references stand for), plan (the plan and how it is
shown), gates (upgrades.yml), preflight (the steps before the switch: datastores that take writes, free
disk, the backup, the pull, the PostgreSQL major check), switch (.env, recreating the services, what they run, the logs kept for a
failure) and history (upgrade-history.jsonl). This module runs them in order and holds the rollback and the replay (``recover``): every call to a step goes through
this module's names, so a test can replace a step here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from posthog_compose.configuration import images
from posthog_compose.operations.engine import Runner
from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations.upgrade.plan import (
    BACKUP_DIR,
    POSTGRES_MAJOR_DOC,
    GIB,
    TARGETS,
    Request,
    Plan,
    make_plan,
    LABELS,
    _external,
    _where,
    print_plan,
)
from posthog_compose.operations.upgrade.versions import (
    AFTER_NUMBERED_RELEASES,
    target_reference,
    _parses,
    version_of,
    postgres_major,
)
from posthog_compose.operations.upgrade.gates import GATES_FILE, Gate, load_gates, applicable_gates, check_gates
from posthog_compose.operations.upgrade.surge_gate import surge_refusal
from posthog_compose.operations.upgrade.preflight import (
    check_datastores_write,
    check_free_disk,
    BACKUP_MIN_GIB,
    backup_postgres,
    fetch_image,
    check_postgres_major_of_image,
)
from posthog_compose.operations.upgrade.switch import (
    _require_running_on,
    _new_version_ran,
    check_running_images,
    _set_image,
    _recreate,
    replaying,
    save_logs,
)
from posthog_compose.operations.upgrade.history import (
    HISTORY_FILE,
    HistoryEntry,
    history_path,
    _record,
    read_history,
    print_history,
    _short,
    _lock,
)


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
        print_plan(plan, request, True, root)
        print("Dry run: nothing changed.")
        return 0
    # Every decision below is taken under the lock: a second upgrade to the same target waits
    # for nothing and decides nothing until the first one has finished (or been undone).
    with journal.deployment_lock(root, "upgrade"):
        from posthog_compose.operations.lifecycle import recover  # the journal's replays, then a leftover pin

        recover(root, runner)
        plan = make_plan(root, request)
        if plan.current == plan.target and not request.pin_digest:
            _require_running_on(root, runner, plan)
            print(f"{plan.variable} is already {plan.target} and the running containers use it: nothing to do.")
            return 0
        print_plan(plan, request, False, root)
        return _run(root, runner, request, plan)


def _run(root: Path, runner: Runner, request: Request, plan: Plan) -> int:
    from posthog_compose.configuration import checks
    from posthog_compose import journal

    started = time.monotonic()
    backup: Path | None = None
    try:
        check_gates(root, runner, plan.gates)
        checks.require_clean(root)
        check_datastores_write(root, runner)
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
        # The journal entry is gone by now, so the versions are named here: web can still be replaced
        # beside itself behind the proxy (no failed request) rather than recreated in place.
        with replaying(str(entry.get("to") or ""), previous):
            _recreate(root, runner, stale, 600)


def take_backup(root: Path, runner: Runner) -> Path:
    """The pre-upgrade backup: ONE call, so that a dedicated backup module can replace it."""
    return backup_postgres(root, runner)


def _record_safely(root: Path, plan: Plan, target: str, result: str, started: float, backup: Path | None,
                   reason: str = "", logs: Path | None = None) -> None:
    """_record, but a full or broken disk only costs the history line (said so), never the caller's work."""
    from posthog_compose import journal

    try:
        _record(root, plan, target, result, started, backup, reason, logs)
    except OSError as exc:
        what = journal.disk_full_message(exc, "writing the upgrade history") if journal.is_disk_full(exc) else str(exc)
        print(f"warning: the history line ({result}) was not written: {what}", file=sys.stderr)

"""`invoke harden`: the production checklist, checked (--check) and applied.

Owns the checklist items (what each checks, whether it can be applied, the handbook section for
the rest), the plan and confirmation, the backups of changed files, and the order of a live
application: PostgreSQL's password is changed inside the database before .env, then .env and the
TLS files are written, then the services whose configuration changed are recreated and checked.
Secret rotation rules live in rotation.py, certificates in certs.py.

External datastores (datastores.py): their TLS items are checked, never applied (TLS on with
verification, the CA bundle under datastore-ca/ present and not expiring, no plaintext allowance),
and the override harden writes leaves out the internal-TLS parts of every datastore that is external
(its service's certificates, CLICKHOUSE_CA and the plugin server's NODE_EXTRA_CA_CERTS pointing at
the deployment's own CA), so that the provider's CA settings from .env reach PostHog.

One part per module: checklist (the items, their titles and handbook sections, the result and state
types), state (reading the deployment), items (each item's check and ``evaluate``), external (the items
of external datastores: their TLS, CA bundles, the plaintext allowance), override (the TLS override harden
writes), planning (what applying the selected items will change) and changes (backups, writing the files,
recreating services). This module holds the two entry points, ``check`` and ``apply``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from posthog_compose.configuration import certs
from posthog_compose.operations import rotation
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import KEEP_SECRET_COPIES, retain
from posthog_compose.operations.harden.checklist import (
    OVERRIDE_FILE,
    TLS_TEMPLATE,
    CONTAINER_CA,
    POSTGRES_TLS_QUERY,
    REDIS_TLS_QUERY,
    IMAGE_VARIABLES,
    IMAGE_SERVICES,
    ITEMS,
    TLS_DATASTORES,
    EXTERNAL_DOC,
    EXTERNAL_SECRETS,
    DOCS,
    APPLY_ORDER,
    TLS_ITEMS,
    Result,
    State,
)
from posthog_compose.operations.harden.state import read_state, _container_image
from posthog_compose.operations.harden.external import (
    _external_redis_password,
    _endpoint,
    _external_tls,
    _override_kit_ca,
    _ca_bundles,
    _datastore_ca,
    _is_ca,
    _plaintext_datastores,
)
from posthog_compose.operations.harden.override import render_override, _without_external
from posthog_compose.operations.harden.items import (
    evaluate,
    _env_file,
    _secrets,
    _redis_password,
    _debug,
    _images,
    _moving,
    _certificates,
    _override_in_place,
    _tls_wiring,
    _clickhouse_tls,
    _postgres_tls,
    _redis_tls,
    _ports,
    _https,
    _public_https,
    _app_private,
    _kafka_tls,
    _managed,
    CHECKS,
)
from posthog_compose.operations.harden.planning import Change, plan, _with_query
from posthog_compose.operations.harden.acceptance import ACCEPTABLE, ACCEPT_FILE, app_private, record as accept
from posthog_compose.operations.harden.changes import (
    predicted_recreation,
    services_mounting,
    _recreate_all,
    _all_services,
    _services_running,
    _confirm,
    _backup_files,
    _apply,
    _ensure_db_running,
)


# ----------------------------------------------------------------------------- --check
def _finishes(root: Path, kind: str) -> str:
    """The command that finishes an interrupted operation: `up` replays every kind but a restore."""
    if kind == "restore":
        from posthog_compose.operations import restore

        return restore.finishing_command(Path(root), restore.journal.read(Path(root), "restore") or {})
    return "invoke up (finishes or undoes it)"


def check(root: Path, runner: Runner, as_json: bool = False) -> int:
    """Report every item; exit 1 when an item that can be checked fails."""
    from posthog_compose import journal

    results = evaluate(read_state(Path(root)))
    for kind in journal.pending(Path(root)):
        # A rotation killed between ALTER ROLE and the .env write: .env may not hold the password.
        results.insert(0, Result("unfinished", f"no interrupted {kind} is pending", "check", "fail",
                                 f"an interrupted {kind} is recorded in {journal.JOURNAL_DIR}/",
                                 _finishes(root, kind)))
    failed = [r for r in results if r.status == "fail"]
    if as_json:
        print(json.dumps({"ok": not failed, "items": [asdict(r) for r in results]}, indent=2))
    else:
        for result in results:
            print(result.text())
        manual = sum(1 for r in results if r.status == "manual")
        warned = sum(1 for r in results if r.status == "warn")
        applicable = [r.id for r in failed if r.kind == "apply"]
        tail = f"; `invoke harden` applies {', '.join(applicable)}" if applicable else ""
        print(f"harden --check: {len(results) - len(failed) - manual - warned} passed, "
              + (f"{warned} warned, " if warned else "") + f"{len(failed)} failed, {manual} manual{tail}.")
    return 1 if failed else 0


def apply(root: Path, runner: Runner, only: list[str], yes: bool = False, rotate_all: bool = False) -> int:
    """Show the plan, confirm, back up, apply, recreate what changed, and verify.

    Everything, from reading the state to the verification, runs under the deployment lock and
    after an interrupted operation in the journal was finished or undone: a plan is never made
    from a .env that a killed rotation left behind."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    EnvFile.load(env_path(root)).refuse_duplicates()  # before any backup or plan
    root = Path(root)
    if runner.dry_run:
        return _apply_planned(root, runner, only, yes, rotate_all)
    from posthog_compose import journal
    from posthog_compose.operations.lifecycle import recover  # the journal's replays, then a leftover pin

    with journal.deployment_lock(root, "harden"):
        recover(root, runner)
        return _apply_planned(root, runner, only, yes, rotate_all)


def _print_recreation(planned) -> None:
    """The plan's lines on recreation: each service that changes, in order, and how."""
    if planned.error:
        print(f"  - then recreate the services whose configuration changed and check health and the URL "
              f"(which ones could not be foreseen: {planned.error})")
    elif planned.changing:
        print("  - then recreate only what changes, in this order, and check health and the URL:")
        for line in planned.lines():
            print(f"      {line}")
    else:
        print("  - no running service's configuration changes: no container is recreated; health and the URL "
              "are checked")


def _apply_planned(root: Path, runner: Runner, only: list[str], yes: bool, rotate_all: bool) -> int:
    change, results = plan(root, runner, only, rotate_all)
    for line in change.skipped:
        print(f"cannot apply: {line}")
    if change.empty and not change.needs_engine:
        left = [r for r in results if r.status == "fail" and (not only or r.id in only)]
        print("Nothing to apply: every selected item that harden can fix already passes"
              + (f"; still failing (fix by hand): {', '.join(r.id for r in left)}." if left else "."))
        return 1 if left and any(r.kind == "apply" for r in left) else 0
    running = change.running
    print("Plan:")
    for line in change.lines:
        print(f"  - {line}")
    if change.needs_engine:
        print(f"  - needs the engine: {'; '.join(change.needs_engine)}")
    if change.rotation:
        for warning in change.rotation.warnings:
            print(f"  ! {warning}")
    print(f"  - back up .env{' and ' + OVERRIDE_FILE if (root / OVERRIDE_FILE).exists() else ''} under backups/")
    if change.offline:
        print("  - then recreate the services that run (the Docker engine does not answer: which run is unknown)")
    elif not running:
        print("  - the deployment is not running: start it afterwards with `invoke up`")
    else:
        _print_recreation(predicted_recreation(root, runner, change))
    if runner.dry_run:
        print("Dry run: nothing changed." + (" The Docker engine does not answer" + (
            ", so the steps that need it are listed, not planned in full." if change.needs_engine else ".")
            if change.offline else ""))
        return 0
    if not yes:
        _confirm()
    saved = _backup_files(root)
    print(f"Backed up to {saved.relative_to(root)}.")
    try:
        _apply(root, runner, change)
    except KeyboardInterrupt:
        raise OperatorError("interrupted; what was started was finished or not begun. `invoke harden --check` shows "
                            "where it stands, and `invoke up` recreates the services on the current .env", code=130)
    pruned = retain(root / "backups", "harden-")  # after a successful write: old copies of secrets go
    if pruned:
        print(f"Removed {len(pruned)} older backups/harden-* cop{'y' if len(pruned) == 1 else 'ies'} of .env "
              f"(the newest {KEEP_SECRET_COPIES} are kept).")
    if running:
        try:
            # A first TLS run changes every mounting service's configuration, so `up` recreates them anyway;
            # a renewal changes no configuration, so those services are recreated explicitly.
            renewed = [] if change.override else services_mounting(root, change.certs_written)
            _recreate_all(root, runner, force=renewed)
        except KeyboardInterrupt:
            raise OperatorError("interrupted after the new configuration was written: run `invoke up` to recreate "
                                "the services on it", code=130)
    if running:
        from posthog_compose.operations import stack
        from posthog_compose.configuration.envfile import EnvFile, env_path

        ok, detail = stack.check_url(EnvFile.load(env_path(root)).resolved())
        if not ok:
            raise OperatorError(f"applied, but the URL check fails: {detail}. The previous files are in "
                                f"{saved.relative_to(root)}")
        print(f"URL check: {detail}.")
    after = {r.id: r for r in evaluate(read_state(root))}
    still = [i for i in change.items if i in after and after[i].status == "fail"]
    print(f"Hardened: {', '.join(change.items)}" + (f"; still failing: {', '.join(still)}" if still else "")
          + (". The deployment is healthy." if running else ". Start it with `invoke up`."))
    return 1 if still else 0

"""`invoke migrate-datastore postgres --to URL`: move PostHog's PostgreSQL from the local `db` service to an
external (managed) PostgreSQL, prove the copy, and switch the deployment to it. The local volume is kept.

Owns the checks of the target URL (TLS with certificate verification and a CA bundle from datastore-ca/,
unless ALLOW_PLAINTEXT_DATASTORES is true), the preflight, the steps and their journal
(.deploy/journal/migration.json), the verification, and the recovery of a migration a killed task left
behind (``recover``). ClickHouse, Redis and Kafka are refused with the way to move them.

Order, so that every failure before the switch leaves .env untouched:
parse --to -> take the deployment lock -> finish or undo an interrupted operation -> preflight (the local
`db` runs, the target answers over verified TLS, its version is inside the compatibility matrix and not
older than the local one, its database is empty and writable, backups/ has room for the dump; one line per
problem, nothing changed) -> plan -> confirmation -> journal -> stop web, worker and plugins (the outage
starts) -> pg_dump -Fc from `db` into backups/ (0600) -> pg_restore into the target in ONE transaction
(a failed or killed restore leaves it empty) -> verify (row counts of every table and sequence values on
both sides, md5 checksums of every table up to CHECKSUM_MAX_ROWS rows) -> switch .env (POSTGRES_MODE and
DATABASE_URL, one file transaction) -> config-check -> start the stack on the target and wait for PostHog's
readiness -> stop `db`. A failure after the switch puts .env back and restarts PostHog on the local `db`,
which nothing wrote to since the dump.

The target's connection settings reach the client tools only through the environment of the
`docker compose exec` child (libpq's PG* variables, named with `-e NAME`), never on a command line:
the URL holds a password. The client tools run inside `db`, which has them and the datastore-ca mount.

One step per module: target (the --to URL and its checks), state (the deployment as found), servers
(psql, pg_dump and pg_restore inside `db`), preflight (facts, plan, confirmation), request (what was asked,
what happened), dump, restore, verify, switch (start on the target, finish), rollback (the ways back before
and after the switch) and recovery (a migration a killed task left behind). This module runs them in order.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.target import (
    DATASTORES,
    ALIASES,
    CA_DIR,
    CA_MOUNT,
    VERIFIED_SSLMODES,
    PARAMETERS,
    FILE_PARAMETERS,
    FROM_ENVIRONMENT,
    REFUSED,
    Target,
    secrets_of_url,
    parse_target,
    container_path,
    target_problems,
    host_path,
    ca_file_problem,
    refuse_datastore,
    read_url_file,
)
from posthog_compose.operations.migrate.state import (
    APP_SERVICES,
    BACKUP_DIR,
    VOLUME,
    mode,
    running_services,
    volume_name,
    active_services,
)
from posthog_compose.operations.migrate.servers import (
    CHECKSUM_MAX_ROWS,
    STABLE_TEXT,
    Servers,
    psql_error,
    INSPECT_SQL,
    TABLES_SQL,
    SEQUENCES_SQL,
    _literal,
    count_sql,
    checksum_sql,
    version_tuple,
    _wait_with_progress,
    PROGRESS_SECONDS,
)
from posthog_compose.operations.migrate.request import Request, Result
from posthog_compose.operations.migrate.preflight import Facts, accepted_range, preflight, plan_lines, confirm
from posthog_compose.operations.migrate.dump import dump_local
from posthog_compose.operations.migrate.restore import restore_target
from posthog_compose.operations.migrate.verify import verify
from posthog_compose.operations.migrate.switch import start_on_target, finish, set_values
from posthog_compose.operations.migrate.rollback import _reason, _restart, _back_before_switch, _back_after_switch
from posthog_compose.operations.migrate.recovery import recover


def run(root: Path, runner: Runner, request: Request) -> int:
    """The task. Exit codes: 0 migrated (or a dry run without problems, or already on this target), 1 refused
    or failed with the deployment back on the local db (.env unchanged), 2 the way back failed too,
    130 interrupted before the switch (services restarted)."""

    if request.as_json:  # every line for people goes to stderr, stdout carries only the JSON
        import contextlib

        real_stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            result, code = _run(root, runner, request)
        print(json.dumps(dataclasses.asdict(result), indent=2), file=real_stdout)
        return code
    return _run(root, runner, request)[1]


def _run(root: Path, runner: Runner, request: Request) -> tuple[Result, int]:
    from posthog_compose import masking

    out = sys.stdout
    result = Result()
    started = time.monotonic()
    try:
        refuse_datastore(request.datastore)
        url = read_url_file(request.to_file) if request.to_file else (request.to or "")
        if request.to and request.to_file:
            raise OperatorError("--to and --to-file together: give the URL one way")
        masking.MASKER.add_all(secrets_of_url(url))
        target = parse_target(url)
        result.target = target.where
        code = _locked(root, runner, request, target, result, out)
    except OperatorError as exc:
        result.message = exc.message
        if not request.as_json:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        code = exc.code
    result.seconds = round(time.monotonic() - started, 1)
    return result, code


def _locked(root: Path, runner: Runner, request: Request, target: Target, result: Result, out) -> int:
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    with journal.deployment_lock(root, "migrate-datastore"):
        if not runner.dry_run:
            from posthog_compose.journal import replay as recover

            recover(root, runner)
        values = EnvFile.load(env_path(root)).resolved()
        current = mode(values)
        if current == "external":
            if values.get("DATABASE_URL") == target.url:
                result.result = "already migrated"
                print(f"PostgreSQL already runs on {target.where} (POSTGRES_MODE=external): nothing to do.", file=out)
                return 0
            raise OperatorError("POSTGRES_MODE is already external: there is no local PostgreSQL to migrate from "
                                "(moving between two external servers is a job for the provider's tools)")
        problems = target_problems(root, target, values)
        if problems:
            return _refused(problems, result, out)
        from posthog_compose.operations import engine

        engine.preflight("migrate-datastore", runner.env)
        servers = Servers(root, runner, values, target)
        facts = preflight(root, runner, values, target, servers, problems)
        if problems:
            return _refused(problems, result, out)
        dump = Path(BACKUP_DIR) / f"migrate-postgres-{_stamp()}.dump"
        result.dump = str(dump)
        result.volume = volume_name(root)
        for line in plan_lines(root, target, facts, str(dump)):
            print(line, file=out)
        for warning in facts.warnings:
            print(f"warning: {warning}", file=out)
        if runner.dry_run:
            result.result = "dry run"
            print("Dry run: every check passed; nothing changed.", file=out)
            return 0
        if not request.yes:
            confirm(root, out)
        return _migrate(root, runner, request, target, servers, facts, values, root / dump, result, out)


def _refused(problems: list[str], result: Result, out) -> int:
    result.problems = problems
    for problem in problems:
        print(f"problem: {problem}", file=out)
    raise OperatorError(f"migrate-datastore refused: {len(problems)} problem(s) above; nothing was changed")


def _stamp() -> str:
    from posthog_compose.fileops import timestamp

    return timestamp()


def _migrate(root: Path, runner: Runner, request: Request, target: Target, servers: Servers, facts: Facts,
             values: dict[str, str], dump: Path, result: Result, out) -> int:
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    # The journal is 0600 next to .env (as a rotation's): "previous" holds the values the switch replaces.
    raw = EnvFile.load(env_path(root)).values()
    entry = {"datastore": "postgres", "target": target.where, "fingerprint": target.fingerprint,
             "restart": facts.was_running, "dump": str(dump.relative_to(root)), "phase": "stopping",
             "previous": {name: raw.get(name) for name in ("POSTGRES_MODE", "DATABASE_URL")}}
    started = time.monotonic()
    outage_from = None
    try:
        journal.write(root, "migration", entry)
        journal.fault_point("migrate-journal-written")
        print(f"Stopping {', '.join(APP_SERVICES)} (PostHog is unavailable until the switch) ...", file=out, flush=True)
        outage_from = time.monotonic()
        runner.run(compose.command(root, "stop", "--timeout", "60", *APP_SERVICES), capture=True, timeout=300)
        journal.fault_point("migrate-stopped")
        journal.write(root, "migration", {**entry, "phase": "dumping"})
        size = dump_local(root, servers, dump, out)
        journal.fault_point("migrate-dumped")
        journal.write(root, "migration", {**entry, "phase": "restoring"})
        restore_target(root, servers, dump, size, out)
        journal.fault_point("migrate-restored")
        journal.write(root, "migration", {**entry, "phase": "verifying"})
        verify(servers, result, out)
        journal.fault_point("migrate-verified")
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the services come back whatever stopped us
        return _back_before_switch(root, runner, request, values, facts, exc, result, out,
                                   restored=journal.read(root, "migration") or entry)
    # ---- the switch
    from posthog_compose.journal import Transaction

    env = EnvFile.load(env_path(root))
    env.set("POSTGRES_MODE", "external")
    env.set("DATABASE_URL", target.url)
    transaction = Transaction(root, "migrate-datastore: switch .env to the external PostgreSQL")
    transaction.stage(env_path(root), env.render(), 0o600)
    committed = False
    try:
        with journal.critical("migrate-datastore is switching .env"):
            journal.write(root, "migration", {**entry, "phase": "switching"})
            journal.fault_point("migrate-switching")
            transaction.commit()
            committed = True
            journal.fault_point("migrate-env-switched")
            journal.write(root, "migration", {**entry, "phase": "switched"})
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        if committed:
            return _back_after_switch(root, runner, request, entry, facts, exc, result, out)
        return _back_before_switch(root, runner, request, values, facts, exc, result, out, restored=entry)
    print(f"Switched .env: POSTGRES_MODE=external, DATABASE_URL -> {target.where}.", file=out, flush=True)
    try:
        from posthog_compose.configuration import checks

        checks.require_clean(root)
        journal.fault_point("migrate-checked")
        ready = start_on_target(root, runner, request.timeout, out)
        result.outage_seconds = round(time.monotonic() - outage_from, 1) if outage_from else None
        journal.fault_point("migrate-started")
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        return _back_after_switch(root, runner, request, entry, facts, exc, result, out)
    finish(root, runner, out)
    result.result = "migrated"
    result.seconds = round(time.monotonic() - started, 1)
    print(f"PostHog runs on {target.where} ({ready}); the outage lasted {result.outage_seconds or 0:.0f} s.",
          file=out)
    print(f"Migrated PostgreSQL to {target.where}: {result.tables} tables and {result.rows:,} rows verified "
          f"({result.checksummed} checksummed, {result.sequences} sequences); dump kept in {result.dump}. The local "
          f"volume {volume_name(root)} is kept (db stopped); remove it when you no longer need it: "
          f"docker volume rm {volume_name(root)}", file=out)
    return 0

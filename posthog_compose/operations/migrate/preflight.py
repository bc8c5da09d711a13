"""The preflight of a migration: everything that can be known before a change (the local `db`
runs, the target answers, its version is accepted and not older, its database is empty and writable, backups/
has room), one problem per line; then the plan and the typed confirmation. Nothing here changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.cli import confirm_by_name
from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.servers import (
    CHECKSUM_MAX_ROWS,
    INSPECT_SQL,
    Servers,
    TABLES_SQL,
    version_tuple,
)
from posthog_compose.operations.migrate import state
from posthog_compose.operations.migrate.state import APP_SERVICES, volume_name
from posthog_compose.operations.migrate.target import Target


# ----------------------------------------------------------------------------- preflight
@dataclass
class Facts:
    """What the preflight learned; the plan is made of it."""

    local_version: tuple = ()
    local_size: int = 0
    local_tables: int = 0
    target_version: tuple = ()
    target_user: str = ""
    was_running: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def accepted_range(root: Path, values: dict[str, str]):
    """The PostgreSQL range the pinned PostHog version accepts (compatibility.yml), or None when unknown."""
    from posthog_compose.configuration import compatibility

    try:
        matrix = compatibility.load(root)
    except OperatorError:
        return None, None
    from posthog_compose.configuration.images import with_known_tags

    image = with_known_tags(root, values).get("POSTHOG_IMAGE", "")
    row = matrix.row_for(compatibility.posthog_version(image, matrix.aliases))
    if row is None or "postgresql" not in row.accepts:
        return None, None
    return row.accepts["postgresql"].range, row.label


def preflight(root: Path, runner: Runner, values: dict[str, str], target: Target, servers: Servers,
              problems: list[str]) -> Facts:
    """Everything that can be known before a change, appended to ``problems`` (one line each)."""
    from posthog_compose.operations.engine import disks

    facts = Facts()
    states = state.running_services(root, runner)
    facts.was_running = [name for name in APP_SERVICES if states.get(name)]
    if not states.get("db"):
        if runner.dry_run:
            problems.append("the local db is not running, so the target cannot be checked from it; start it with "
                            "`invoke up -s db` and run the dry run again")
            return facts
        from posthog_compose.operations import stack

        print("Starting the local db for the checks ...", flush=True)
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "db"), ["db"], 300)
    try:
        local = servers.sql("local", INSPECT_SQL)[0]
    except (OperatorError, IndexError) as exc:
        problems.append(f"cannot read the local database: {exc}")
        return facts
    facts.local_version, facts.local_size = version_tuple(int(local["version"])), int(local["size"])
    try:
        facts.local_tables = len(servers.sql("local", TABLES_SQL))
    except OperatorError as exc:
        problems.append(str(exc))
    try:
        found = servers.sql("target", INSPECT_SQL, timeout=120)[0]
    except (OperatorError, IndexError) as exc:
        problems.append(f"cannot connect to {exc}; check the address, the firewall, the CA bundle and the credentials")
        found = None
    if found:
        facts.target_version, facts.target_user = version_tuple(int(found["version"])), str(found["user"])
        shown = ".".join(map(str, facts.target_version[:2]))
        accepted, label = accepted_range(root, values)
        if accepted is None:
            facts.warnings.append(f"the pinned PostHog version is not in compatibility.yml, so PostgreSQL {shown} "
                                  "cannot be checked against it; PostHog checks it at boot")
        elif not accepted.contains(facts.target_version):
            problems.append(f"the target runs PostgreSQL {shown}, outside {accepted}, the range {label} accepts: "
                            "PostHog would exit at boot; use a server inside that range")
        if facts.local_version and facts.target_version[0] < facts.local_version[0]:
            problems.append(f"the target runs PostgreSQL {shown}, older than the local {facts.local_version[0]}: "
                            "a dump cannot be restored into an older major version; use "
                            f"{facts.local_version[0]} or newer (inside the accepted range)")
        if int(found["relations"]):
            problems.append(f"the target database {target.database} is not empty ({found['relations']} relations"
                            f"{', e.g. ' + found['examples'] if found.get('examples') else ''}); migrate into an "
                            "empty database (create a new one, or drop what is there)")
        if found.get("encoding") != local.get("encoding"):
            problems.append(f"the target database is encoded {found.get('encoding')}, the local one "
                            f"{local.get('encoding')}: PostHog's text would not survive; create the database with "
                            f"ENCODING '{local.get('encoding')}'")
        missing = sorted(set(local.get("extensions") or []) - set(found.get("available") or []))
        if missing:
            problems.append(f"the local database uses the extension(s) {', '.join(missing)}, which the target "
                            "does not offer; ask the provider to enable them")
        if not found["create"]:
            problems.append(f"user {found['user']} may not create tables in schema public of {target.database}; "
                            f"grant it (GRANT CREATE ON SCHEMA public TO {found['user']}) or use the database's owner")
    need = max(facts.local_size, 16 * 1024 ** 2)
    for label, path, free in disks(root, runner.env):
        if label != "backups/":
            continue
        if free is None:
            facts.warnings.append(f"free space on backups/ cannot be measured; the dump needs up to "
                                  f"{need / 1024 ** 2:,.0f} MiB")
        elif free * 1024 ** 3 < need:
            problems.append(f"only {free:.2f} GiB free in backups/ ({path}); the dump needs up to "
                            f"{need / 1024 ** 3:.2f} GiB (the database's size). Free space there and run it again")
    return facts


# ----------------------------------------------------------------------------- plan and confirmation
def plan_lines(root: Path, target: Target, facts: Facts, dump: str) -> list[str]:
    stopped = ", ".join(facts.was_running) or "web, worker, plugins (not running now)"
    return [
        f"Plan: move PostgreSQL from the local db ({facts.local_tables} tables, {facts.local_size / 1024 ** 2:,.1f} MiB) "
        f"to {target.where} as {target.user}",
        f"  1. stop {stopped}: PostHog is unavailable from here until step 6",
        f"  2. pg_dump the local database into {dump} (mode 0600, kept)",
        f"  3. pg_restore it into {target.database} on {target.host} in one transaction",
        f"  4. verify: row counts of every table, sequence values, checksums of tables up to "
        f"{CHECKSUM_MAX_ROWS:,} rows",
        "  5. set POSTGRES_MODE=external and DATABASE_URL to the target in .env",
        "  6. start PostHog on the target and wait until it is ready; on failure go back to the local db",
        f"  7. stop the local db; its volume {volume_name(root)} is kept until you remove it",
    ]


def confirm(root: Path, out) -> None:
    project = compose.project_name(root)
    confirm_by_name(project, "start the migration", "nothing was changed", out)

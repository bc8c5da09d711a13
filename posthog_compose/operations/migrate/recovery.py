"""The replay of a migration a killed task left in the journal (``recover``, registered for the
"migration" kind): finish it after the switch, undo it before.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from posthog_compose.operations.engine import Runner
from posthog_compose import journal
from posthog_compose.operations.migrate.rollback import _restart
from posthog_compose.operations.migrate import state
from posthog_compose.operations.migrate.state import APP_SERVICES, mode, volume_name
from posthog_compose.operations.migrate.switch import finish, set_values, start_on_target


@journal.recovers("migration")
def recover(root: Path, runner: Runner) -> None:
    """Finish or undo a migration a killed task left behind (the caller holds the deployment lock).
    Before the switch (.env still local): start web, worker and plugins again. After it: finish (start on the
    target, stop the local db)."""
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    entry = journal.read(root, "migration")
    if not entry:
        return
    values = EnvFile.load(env_path(root)).resolved()
    switched = mode(values) == "external" and hashlib.sha256(
        values.get("DATABASE_URL", "").encode("utf-8")).hexdigest() == entry.get("fingerprint")
    restart = [s for s in entry.get("restart") or [] if s in APP_SERVICES]
    if switched and entry.get("phase") != "rolling back":
        print(f"A PostgreSQL migration to {entry.get('target')} was interrupted after the switch; finishing it ...")
        with journal.critical("finishing an interrupted migration"):
            start_on_target(root, runner, 600, sys.stdout)
            finish(root, runner, sys.stdout)
        print(f"Migration finished: PostHog uses {entry.get('target')}; the local volume {volume_name(root)} is kept.")
        return
    if switched:  # killed while going back to the local db: finish going back
        print("A migration was interrupted while going back to the local db; finishing that ...")
        set_values(root, entry.get("previous") or {"POSTGRES_MODE": "local"})
        values = EnvFile.load(env_path(root)).resolved()
    print(f"A PostgreSQL migration to {entry.get('target')} was interrupted before the switch ({entry.get('phase')}); "
          f".env is unchanged. Restarting {', '.join(restart) or 'nothing'} on the local db.")
    with journal.critical("restarting after an interrupted migration"):
        _restart(root, runner, [*(["db"] if not state.running_services(root, runner).get("db") else []), *restart], 600,
                 values)
        journal.clear(root, "migration")
    if entry.get("phase") in ("verifying", "switching"):
        print(f"note: {entry.get('target')} holds a copy of the data; empty its database before migrating again.")

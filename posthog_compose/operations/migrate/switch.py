"""After .env switched to the target: start the stack on it and wait for PostHog's readiness, then
stop the local `db` and close the journal; and putting .env's previous values back.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.state import active_services


def start_on_target(root: Path, runner: Runner, timeout: float, out) -> str:
    """Start the stack as .env now says (without the local db) and wait for PostHog's readiness."""
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import EnvFile, env_path

    values = EnvFile.load(env_path(root)).resolved()
    services = active_services(values)
    print(f"Starting {', '.join(services)} on the external PostgreSQL ...", file=out, flush=True)
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", *services), services, timeout,
                         readiness_values=values)
    ok, detail = stack.check_url(values, timeout=min(60.0, timeout))
    if not ok:
        raise OperatorError(f"URL check failed: {detail}")
    return detail


def finish(root: Path, runner: Runner, out) -> None:
    """The switch holds: stop the local db (its volume stays) and close the journal."""
    from posthog_compose import journal

    print("Stopping the local db (its volume is kept) ...", file=out, flush=True)
    runner.run(compose.command(root, "stop", "--timeout", "60", "db"), capture=True, timeout=300)
    journal.fault_point("migrate-db-stopped")
    journal.clear(root, "migration")


def set_values(root: Path, values: dict) -> None:
    """Put .env's values back (None: the line was absent), atomically and 0600."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    env = EnvFile.load(env_path(root))
    for name, value in values.items():
        if value is None:
            env.remove(name)
        else:
            env.set(name, value)
    env.write()

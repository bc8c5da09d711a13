"""The ways back: before the switch (.env unchanged: restart what was stopped) and after it (.env
goes back, PostHog restarts on the local `db`, which nothing wrote to since the dump).
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.preflight import Facts
from posthog_compose.operations.migrate.request import Request, Result
from posthog_compose.operations.migrate.switch import set_values


# ----------------------------------------------------------------------------- the ways back
def _reason(exc: BaseException) -> str:
    from posthog_compose import journal

    return journal.failure_reason(exc, "migrating")


def _restart(root: Path, runner: Runner, services: list[str], timeout: float, values: dict[str, str]) -> None:
    from posthog_compose.operations import stack

    if not services:
        return
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--no-deps", *services), services,
                         timeout, readiness_values=values if "web" in services else None)


def _back_before_switch(root: Path, runner: Runner, request: Request, values: dict[str, str], facts: Facts,
                        exc: BaseException, result: Result, out, restored: dict) -> int:
    """.env was never changed: start what was stopped, and say what the target may hold."""
    from posthog_compose import journal

    reason = _reason(exc)
    interrupted = isinstance(exc, KeyboardInterrupt)
    phase = restored.get("phase", "stopping")
    with journal.critical("restarting PostHog on the local db", reraise=False):
        print(f"Migration stopped before the switch ({reason}); .env is unchanged. Restarting "
              f"{', '.join(facts.was_running) or 'nothing (web, worker and plugins were not running)'} ...",
              file=out, flush=True)
        try:
            _restart(root, runner, facts.was_running, request.timeout, values)
        except (Exception, KeyboardInterrupt) as again:  # noqa: BLE001
            result.result = "failed"
            raise OperatorError(f"migration stopped before the switch ({reason}) and restarting the services failed "
                                f"({_reason(again)}); .env is unchanged: run `invoke up`", code=2)
        journal.clear(root, "migration")
    result.result = "interrupted" if interrupted else "failed"
    after = "" if phase in ("stopping", "dumping", "restoring") else (
        "; the target now holds a copy: empty its database before you try again")
    raise OperatorError(f"migration {'interrupted' if interrupted else 'stopped'} before the switch: {reason}; "
                        f"PostHog runs on the local db again, nothing changed{after}", code=130 if interrupted else 1)


def _back_after_switch(root: Path, runner: Runner, request: Request, entry: dict, facts: Facts,
                       exc: BaseException, result: Result, out) -> int:
    """The stack did not come up on the target: .env goes back, PostHog restarts on the local db (nothing wrote
    to it since the dump). Ctrl-C waits until this has finished."""
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    reason = _reason(exc)
    with journal.critical("going back to the local db", reraise=False):
        print(f"PostHog did not come up on the external PostgreSQL ({reason}); going back to the local db ...",
              file=out, flush=True)
        try:
            journal.write(root, "migration", {**entry, "phase": "rolling back"})
            journal.fault_point("migrate-rolling-back")
            set_values(root, entry.get("previous") or {"POSTGRES_MODE": "local"})
            journal.fault_point("migrate-env-restored")
            values = EnvFile.load(env_path(root)).resolved()
            _restart(root, runner, ["db", *facts.was_running], request.timeout, values)
            journal.clear(root, "migration")
        except (Exception, KeyboardInterrupt) as again:  # noqa: BLE001
            result.result = "rollback failed"
            raise OperatorError(f"PostHog did not come up on the external PostgreSQL ({reason}) and going back failed "
                                f"({_reason(again)}); .env is back on the local db: run `invoke up`", code=2)
    result.result = "rolled back"
    raise OperatorError(f"PostHog did not come up on the external PostgreSQL ({reason}); .env and PostHog are back on "
                        "the local db. The target keeps the copy: empty its database before you try again")

"""The switch and what it is judged by: the image variable written to .env, the services
recreated on it (web judged by PostHog's readiness), the containers checked to run the new image, whether a
container of the new version ever ran, and the logs kept when it failed.

Behind the edge proxy web is replaced beside the running container (operations/surge: no request
fails) when the upgrade's surge gate allows the two versions side by side, the rollback the same way
back, and the replay of a killed upgrade too; otherwise it is recreated in place.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write, timestamp
from posthog_compose.operations.upgrade.plan import BACKUP_DIR, Plan
from posthog_compose.operations.upgrade import surge_gate


def _require_running_on(root: Path, runner: Runner, plan: Plan) -> None:
    """"Already at the target" holds only when the containers that exist were created from it."""
    from posthog_compose.operations import stack

    details = stack.inspect_containers(root, runner)
    stale = [f"{name} runs {details[name].image}" for name in plan.services
             if name in details and details[name].image != plan.target]
    if stale:
        raise OperatorError(f".env already names {plan.target} but {'; '.join(stale)}: run `invoke up` to recreate "
                            "them on it")


def _new_version_ran(runner: Runner, root: Path, plan: Plan) -> bool:
    """Whether a container of the new version exists (only then can it have migrated data)."""
    from posthog_compose.operations import stack

    try:
        details = stack.inspect_containers(root, runner)
    except Exception:  # noqa: BLE001 - unknown counts as "may have run"
        return True
    return any(d.image == plan.target for d in details.values())


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
        if service == "web" and _replace_web_by_surge(root, runner, remaining):
            continue
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--no-deps", service), [service],
                             remaining, readiness_values=values if service == "web" else None)
    if "web" in services:
        ok, detail = stack.check_url(values, timeout=min(60.0, timeout))
        if not ok:
            raise OperatorError(f"URL check failed: {detail}")
        print(f"URL check: {detail}.")


#: (running, wanted) named by the replay of a killed upgrade, which has cleared its journal entry
#: before it recreates what the killed task left on the new version (see ``replaying``).
_replayed: tuple[str, str] | None = None


@contextlib.contextmanager
def replaying(running: str, wanted: str):
    """While the replay of a killed upgrade recreates web: the versions it switches between, so that web
    is replaced beside itself (when the gate allows) rather than recreated in place."""
    global _replayed
    saved, _replayed = _replayed, (running, wanted)
    try:
        yield
    finally:
        _replayed = saved


def _versions_switched(root: Path) -> tuple[str, str] | None:
    """(running, wanted) for the switch under way, read from the upgrade's journal entry: from -> to
    while switching, to -> from while rolling back; those the replay names (``replaying``); None
    outside an upgrade."""
    from posthog_compose import journal

    if _replayed is not None and all(_replayed):
        return _replayed
    entry = journal.read(root, "upgrade") or {}
    current, target = str(entry.get("from") or ""), str(entry.get("to") or "")
    if not current or not target:
        return None
    return (target, current) if entry.get("phase") == "rolling back" else (current, target)


def _replace_web_by_surge(root: Path, runner: Runner, timeout: float) -> bool:
    """Replace web beside itself behind the edge proxy (operations/surge) when that is possible here and
    the gate allows the two versions side by side; says in one line how web is switched. True when done."""
    from posthog_compose.operations import surge

    reason = surge.unavailable_reason(root)
    versions = _versions_switched(root)
    if reason is None and versions is None:
        reason = "the versions switched are not known"
    if reason is None:
        refusal = surge_gate.surge_refusal(root, *versions)
        if refusal is not None:  # the gate's own line says what is done and why
            print(f"{refusal.rstrip('.')}; the URL is down while web restarts.", flush=True)
            return False
    if reason is not None:
        print(f"web: recreated in place ({reason}); the URL is down while it restarts.", flush=True)
        return False
    # The surge says itself what it did: "replaced beside ...", or "nothing to replace" when web already
    # runs .env's version (the rollback of a version whose new container never served).
    surge.replace_web(root, runner, timeout)
    return True


def save_logs(root: Path, runner: Runner, services: list[str]) -> Path | None:
    """The failed version's last log lines, kept (0600) for the operator."""
    result = runner.run(compose.command(root, "logs", "--no-color", "--tail", "300", *services), capture=True,
                        check=False, mutating=False, timeout=120)
    directory = root / BACKUP_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"upgrade-{timestamp()}-failed.log"
    atomic_write(path, (result.stdout or "") + (result.stderr or ""), 0o600)
    return path

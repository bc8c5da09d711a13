"""Replacing web behind the edge proxy without failed requests (the surge switch).

Owns whether web can be switched this way here (``unavailable_reason``) and the switch itself
(``replace_web``): a new web container beside the old one, joined to the proxy's rotation once
PostHog's readiness says ready, then the old one retired.
"""

from __future__ import annotations

import time
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner


def unavailable_reason(root: Path) -> str | None:
    """None when web can be switched by surge here (the proxy overlay is in effect and web runs),
    else one short phrase saying why not."""
    from posthog_compose.configuration import edge
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(Path(root))
    if not path.exists():
        return ".env does not exist yet"
    if not edge.enabled(EnvFile.load(path).resolved()):
        return "the edge proxy is off"
    from posthog_compose.operations import stack

    try:
        details = stack.inspect_containers(Path(root), Runner(Path(root)))
    except OperatorError:
        return "the Docker engine does not answer"
    web = details.get("web")
    if web is None or web.state != "running":
        return "web is not running"
    return None


def replace_web(root: Path, runner: Runner, timeout: float) -> None:
    """Replace the running web container by one made from the current effective configuration.

    First version: recreates web in place (the interface other code builds on; the surge itself
    follows)."""
    from posthog_compose.configuration import compose
    from posthog_compose.configuration.envfile import EnvFile, env_path
    from posthog_compose.operations import stack

    values = EnvFile.load(env_path(Path(root))).resolved()
    started = time.monotonic()
    stack.start_and_wait(Path(root), runner, compose.command(Path(root), "up", "--detach", "--no-deps", "web"),
                         ["web"], max(timeout - (time.monotonic() - started), 1.0), readiness_values=values)

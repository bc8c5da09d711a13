"""The deployment as a migration finds it: the PostgreSQL mode .env declares, which services run, the
local volume's name, and the services that run with given values.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner


APP_SERVICES = ("web", "worker", "plugins")
BACKUP_DIR = "backups"
VOLUME = "postgres-data"


# ----------------------------------------------------------------------------- the deployment's state
def mode(values: dict[str, str]) -> str:
    from posthog_compose.configuration import datastores

    return datastores.mode(values, "postgres")


def running_services(root: Path, runner: Runner) -> dict[str, bool]:
    from posthog_compose.operations import stack

    return {s.service: s.ready for s in stack.service_states(root, runner)}


def volume_name(root: Path) -> str:
    return f"{compose.project_name(root)}_{VOLUME}"


def active_services(values: dict[str, str]) -> list[str]:
    """The services that run with these values: the local datastores and web, worker, plugins."""
    from posthog_compose.configuration import datastores

    return datastores.local_services(values)

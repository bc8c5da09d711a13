"""Step 1 of the surge switch: a second web container beside the serving one, made by Compose from
the files and .env as they are now, and started OUTSIDE the proxy's rotation.

Preflight: exactly one web container runs (the one serving). Action: `compose up --no-start
--no-deps --no-recreate --scale web=2 web` creates the second one as Compose would (same labels,
config hash and networks, so a later plain `up` keeps it), its aliases on the proxy's network are
noted, it is disconnected from that network before it starts (the proxy resolves `web` through
Docker's DNS on that network, so a container not attached there gets no request), then started: it
runs `./bin/migrate` and then gunicorn on the default network only. Undo: remove it (`remove`)."""

from __future__ import annotations

from pathlib import Path

from posthog_compose import journal
from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge import containers
from posthog_compose.operations.surge.containers import WebContainer


def preflight(root: Path, runner: Runner) -> WebContainer:
    """The one running web container the switch replaces."""
    found = containers.web_containers(root, runner)
    running = [c for c in found if c.state == "running"]
    if len(found) != 1 or len(running) != 1:
        listed = ", ".join(f"{c.name} ({c.state})" for c in found) or "none"
        raise OperatorError(f"web is replaced beside the running one only when exactly one web container runs "
                            f"(found: {listed}); run `invoke up` first")
    if not running[0].on_edge:
        raise OperatorError(f"{running[0].name} is not on the proxy's network: run `invoke up` first")
    return running[0]


def create(root: Path, runner: Runner, old: WebContainer) -> tuple[WebContainer, tuple[str, ...]]:
    """Create the new container (not started) and take it off the proxy's network; returns it and the
    aliases Compose gave it there (given back when it joins)."""
    runner.run(compose.command(root, "up", "--no-start", "--no-deps", "--no-recreate", "--scale", "web=2", "web"),
               capture=True, timeout=300)
    new = [c for c in containers.web_containers(root, runner) if c.id != old.id]
    if len(new) != 1:
        raise OperatorError(f"Compose made {len(new)} new web containers beside {old.name}, expected one")
    created = new[0]
    journal.fault_point("surge-created")
    aliases = created.edge_aliases or ("web", created.name)
    if created.on_edge:
        runner.run(["docker", "network", "disconnect", containers.edge_network(root), created.id], capture=True,
                   timeout=60)
    runner.run(["docker", "start", created.id], capture=True, timeout=120)
    journal.fault_point("surge-started")
    return created, tuple(aliases)


def remove(runner: Runner, container_id: str) -> None:
    """Undo: the container goes (it never served through the proxy, so nothing is cut short)."""
    runner.run(["docker", "rm", "--force", container_id], capture=True, check=False, timeout=120)

"""What the surge switch reads from the engine: web's containers (id, name, state, Compose's config
hash, their addresses and aliases on the proxy's network), the hash Compose would give web from the
files and .env as they are now, and the proxy's container."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.configuration.edge import NETWORK, SERVICE
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner

#: Compose's label holding the hash of the service configuration a container was created from: a
#: container whose label equals `compose config --hash web` is one a plain `up` leaves alone.
HASH_LABEL = "com.docker.compose.config-hash"


@dataclass
class WebContainer:
    id: str
    name: str
    state: str  # running, created, exited, restarting, ...
    config_hash: str
    number: int = 0
    edge_address: str = ""  # its IPv4 address on the proxy's network ("" when not attached)
    edge_aliases: tuple[str, ...] = ()
    networks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def on_edge(self) -> bool:
        return bool(self.edge_address) or any(n.endswith(f"_{NETWORK}") for n in self.networks)


def edge_network(root: Path) -> str:
    return f"{compose.project_name(root)}_{NETWORK}"


def parse_inspect(rows: list, network: str, service: str = "web") -> list[WebContainer]:
    """Web's containers from `docker inspect` rows (one-off containers of `compose run` left out)."""
    found = []
    for row in rows or []:
        if not isinstance(row, dict):
            continue
        labels = (row.get("Config") or {}).get("Labels") or {}
        if labels.get("com.docker.compose.service") != service or labels.get("com.docker.compose.oneoff") == "True":
            continue
        networks = ((row.get("NetworkSettings") or {}).get("Networks") or {})
        edge = networks.get(network) or {}
        try:
            number = int(labels.get("com.docker.compose.container-number") or 0)
        except ValueError:
            number = 0
        state = row.get("State") or {}
        found.append(WebContainer(
            id=str(row.get("Id", "")), name=str(row.get("Name", "")).lstrip("/"),
            state="restarting" if state.get("Restarting") else str(state.get("Status", "")),
            config_hash=str(labels.get(HASH_LABEL, "")), number=number,
            edge_address=str(edge.get("IPAddress") or "") if network in networks else "",
            edge_aliases=tuple(str(a) for a in (edge.get("Aliases") or [])),
            networks=tuple(sorted(networks))))
    return sorted(found, key=lambda c: c.number)


def web_containers(root: Path, runner: Runner) -> list[WebContainer]:
    """Every container of web in this project, by Compose's labels, in container-number order."""
    listed = runner.run(["docker", "ps", "--all", "--quiet", "--no-trunc",
                         "--filter", f"label=com.docker.compose.project={compose.project_name(root)}",
                         "--filter", "label=com.docker.compose.service=web"],
                        capture=True, check=False, mutating=False, timeout=60)
    if listed.returncode != 0:
        raise runner.failure(["docker", "ps"], listed.returncode, listed.stderr)
    ids = (listed.stdout or "").split()
    if not ids:
        return []
    result = runner.run(["docker", "inspect", *ids], capture=True, check=False, mutating=False, timeout=60)
    try:
        rows = json.loads(result.stdout or "[]")
    except ValueError:
        rows = []
    return parse_inspect(rows, edge_network(root))


def wanted_hash(root: Path, runner: Runner) -> str:
    """The hash Compose gives web from the files and .env as they are now (`compose config --hash web`)."""
    result = runner.run(compose.command(root, "config", "--hash", "web"), capture=True, check=False,
                        mutating=False, timeout=120)
    for line in (result.stdout or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "web":
            return parts[1]
    raise OperatorError(f"`docker compose config --hash web` did not give web's configuration hash "
                        f"({(result.stderr or '').strip().splitlines()[-1:] or 'no output'}); run `invoke config-check`")


def proxy_container(root: Path, runner: Runner) -> str | None:
    """The id of the running proxy container, or None."""
    listed = runner.run(["docker", "ps", "--quiet", "--no-trunc",
                         "--filter", f"label=com.docker.compose.project={compose.project_name(root)}",
                         "--filter", f"label=com.docker.compose.service={SERVICE}"],
                        capture=True, check=False, mutating=False, timeout=60)
    ids = (listed.stdout or "").split()
    return ids[0] if listed.returncode == 0 and ids else None

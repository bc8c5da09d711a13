"""The services as Compose and the engine report them: `compose ps` parsed into ServiceState,
`docker inspect` into ContainerDetail (image, restarts, start time), and a service's recent logs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError


@dataclass
class ServiceState:
    service: str
    state: str  # created, running, restarting, exited, dead, paused, or "missing"
    health: str = ""  # healthy, unhealthy, starting, or "" when there is no healthcheck
    exit_code: int = 0
    status: str = ""
    image: str = ""
    ports: list[str] = field(default_factory=list)
    running_for: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "")

    @property
    def failed(self) -> bool:
        return (self.state in ("exited", "dead") or self.state == "restarting" or self.health == "unhealthy"
                or "Restarting" in self.status)

    def label(self) -> str:
        if self.state == "running":
            return self.health or "running"
        if self.state == "exited":
            return f"exited ({self.exit_code})"
        return self.state


def parse_ps(output: str) -> list[ServiceState]:
    """`compose ps --format json`: JSON Lines (one object per line), or one array (older Compose)."""
    rows: list[dict] = []
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        parsed = json.loads(line)
        rows.extend(parsed if isinstance(parsed, list) else [parsed])
    states = []
    for row in rows:
        ports = []
        for publisher in row.get("Publishers") or []:
            if publisher.get("PublishedPort"):
                ports.append(f"{publisher.get('URL') or '0.0.0.0'}:{publisher['PublishedPort']}->{publisher['TargetPort']}"
                             f"/{publisher.get('Protocol', 'tcp')}")
        states.append(ServiceState(
            service=row.get("Service", ""), state=row.get("State", ""), health=row.get("Health", "") or "",
            exit_code=int(row.get("ExitCode") or 0), status=row.get("Status", ""), image=row.get("Image", ""),
            ports=sorted(set(ports)), running_for=row.get("RunningFor", ""),
        ))
    return states


def service_states(root: Path, runner: Runner) -> list[ServiceState]:
    command = compose.command(root, "ps", "--all", "--format", "json")
    for attempt in range(5):
        result = runner.run(command, capture=True, check=False, mutating=False)
        # While `up` creates or replaces containers, ps can see one vanish mid-listing.
        if result.returncode == 0 or "No such container" not in (result.stderr or "") or attempt == 4:
            break
        time.sleep(0.5)
    if result.returncode != 0:
        raise runner.failure(command, result.returncode, result.stderr)
    try:
        return parse_ps(result.stdout)
    except (ValueError, TypeError) as exc:
        raise OperatorError(f"`docker compose ps --format json` gave output this tool cannot read ({exc}); "
                            "check the Compose version with `invoke doctor`")


def _values(root: Path) -> dict[str, str]:
    """The .env values ({} before the first run)."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    return EnvFile.load(path).resolved() if path.exists() else {}


def recent_logs(root: Path, runner: Runner, service: str, lines: int = 30) -> str:
    result = runner.run(compose.command(root, "logs", "--no-color", "--tail", str(lines), service), capture=True,
                        check=False, mutating=False)
    return (result.stdout or "") + (result.stderr or "")


@dataclass
class ContainerDetail:
    """What `docker inspect` adds to `compose ps`: when the container started, how often it restarted."""

    id: str
    service: str
    started_at: float  # epoch seconds (0 when unknown)
    restart_count: int
    image: str  # the reference the container was created from (Config.Image)
    image_id: str
    status: str = ""  # running, exited, restarting, ... at the moment of the inspect
    health: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("exited", "dead", "restarting") or self.health == "unhealthy"


def inspect_containers(root: Path, runner: Runner) -> dict[str, ContainerDetail]:
    """One `docker inspect` for every container of the project (by Compose's labels)."""
    listed = runner.run(["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter",
                         f"label=com.docker.compose.project={compose.project_name(root)}"], capture=True, check=False,
                        mutating=False, timeout=60)
    ids = (listed.stdout or "").split()
    if listed.returncode != 0 or not ids:
        return {}
    result = runner.run(["docker", "inspect", *ids], capture=True, check=False, mutating=False, timeout=60)
    try:
        rows = json.loads(result.stdout or "[]")
    except ValueError:
        return {}
    details = {}
    for row in rows or []:
        labels = (row.get("Config") or {}).get("Labels") or {}
        service = labels.get("com.docker.compose.service")
        if not service or labels.get("com.docker.compose.oneoff") == "True":
            continue
        state = row.get("State") or {}
        details[service] = ContainerDetail(row.get("Id", ""), service, _epoch(state.get("StartedAt", "")),
                                           int(row.get("RestartCount") or 0),
                                           (row.get("Config") or {}).get("Image", ""), row.get("Image", ""),
                                           "restarting" if state.get("Restarting") else state.get("Status", ""),
                                           (state.get("Health") or {}).get("Status", ""))
    return details


def _epoch(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds (2026-11-26T06:30:01.123456789Z) as epoch seconds."""
    import calendar

    if not stamp or stamp.startswith("0001-"):
        return 0.0
    main, _, rest = stamp.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(main.rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    fraction = "".join(ch for ch in rest if ch.isdigit())
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


#: What `invoke status` ends with when no service of the deployment runs: the one next step (`up` also
#: writes .env on a first run and finishes an interrupted change, so it is the step in every case).
NOTHING_RUNS = "Nothing runs: `invoke up` starts the deployment."


def nothing_runs(states: dict[str, ServiceState], here: list[str]) -> bool:
    """True when not one of the services that run on this host is running (stopped, never created, or
    gone): status then exits non-zero with NOTHING_RUNS as its last line."""
    return bool(here) and not any(states.get(name) is not None and states[name].state == "running" for name in here)

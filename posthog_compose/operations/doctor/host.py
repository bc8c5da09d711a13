"""The host's checks, one Check line each: the Docker engine, Compose v2+, RAM, CPUs and free disk
against PostHog's needs, the data disk, and the published ports free or held by this deployment: WEB_PORT,
or the edge proxy's PROXY_HTTP_PORT and PROXY_HTTPS_PORT while it is on (web then publishes nothing).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from posthog_compose.configuration import compose


# PostHog's hobby deployment asks for about 4 vCPUs, 16 GB RAM and 30 GB of disk; below the
# minimums the stack is known to fall over (ClickHouse and Kafka are memory-hungry). RAM and disk are
# measured and compared in GiB (2^30 bytes, what /proc/meminfo and statvfs give divided by 1024^3),
# and printed with that unit: a 16 GB host has about 15.6 GiB of RAM.
MIN_CPUS, GOOD_CPUS = 2, 4
MIN_RAM_GB, GOOD_RAM_GB = 8, 16
MIN_DISK_GB, GOOD_DISK_GB = 20, 30


@dataclass
class Check:
    name: str
    status: str  # ok, warning, error
    detail: str
    fix: str = ""


def _engine(env) -> Check:
    from posthog_compose.operations.engine import NO_PERMISSION, engine_fix, engine_reason, last_line

    try:
        result = subprocess.run(["docker", "version", "--format", "{{json .}}"], capture_output=True, text=True,
                                env=env, timeout=20)
    except FileNotFoundError:
        return Check("docker engine", "error", "the docker client is not installed",
                     "install Docker Engine (Debian/Ubuntu: `sudo apt-get install docker.io`) or Docker Desktop")
    except subprocess.TimeoutExpired:
        return Check("docker engine", "error", "the engine did not answer within 20 s",
                     "check it with `sudo systemctl status docker`")
    try:
        info = json.loads(result.stdout or "{}")
    except ValueError:
        info = {}
    server = (info or {}).get("Server") or {}
    if result.returncode != 0 or not server:
        reason = last_line(result.stderr) or "no answer"
        if NO_PERMISSION.search(result.stderr or ""):
            return Check("docker engine", "error", "permission denied on the engine's socket",
                         "add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in again)")
        return Check("docker engine", "error", f"not reachable ({engine_reason(reason)})",
                     engine_fix().replace("; `invoke doctor` checks the host", ""))
    return Check("docker engine", "ok", f"reachable, version {server.get('Version', '?')}")


def _compose(root: Path, env) -> Check:
    from posthog_compose.operations.engine import HOW_TO_GET_COMPOSE, last_line
    from posthog_compose.errors import OperatorError

    try:
        binary = compose.compose_binary()
    except OperatorError:
        return Check("docker compose", "error", "Docker Compose v2 is not installed", HOW_TO_GET_COMPOSE)
    shown = " ".join(binary)
    try:
        result = subprocess.run([*binary, "version", "--short"], capture_output=True, text=True, env=env, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("docker compose", "error", f"`{shown} version` could not run ({type(exc).__name__})",
                     HOW_TO_GET_COMPOSE)
    version = result.stdout.strip().lstrip("v")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        # e.g. `docker compose` without the plugin prints Docker's usage text: name it, never echo it
        return Check("docker compose", "error", f"`{shown} version` did not answer with a version"
                     f"{' (' + last_line(result.stderr)[:120] + ')' if last_line(result.stderr) else ''}",
                     HOW_TO_GET_COMPOSE)
    if major < 2:
        return Check("docker compose", "error", f"version {version} is Compose v1, which lacks --wait and `ps --format json`",
                     HOW_TO_GET_COMPOSE)
    return Check("docker compose", "ok", f"version {version} ({shown})")


#: Where the kernel says how much RAM the host has (in KiB).
MEMINFO = "/proc/meminfo"


def _ram() -> Check:
    try:
        with open(MEMINFO) as meminfo:
            total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return Check("memory", "warning", "cannot read /proc/meminfo")
    gib = total_kb / 1024 / 1024
    if gib < MIN_RAM_GB:
        return Check("memory", "error", f"{gib:.1f} GiB; PostHog needs at least {MIN_RAM_GB} GiB", "use a larger host")
    if gib < GOOD_RAM_GB:
        return Check("memory", "warning", f"{gib:.1f} GiB; {GOOD_RAM_GB} GiB recommended",
                     "expect slow queries under load")
    return Check("memory", "ok", f"{gib:.1f} GiB")


def _cpus() -> Check:
    count = os.cpu_count() or 1
    if count < MIN_CPUS:
        return Check("cpus", "error", f"{count}; PostHog needs at least {MIN_CPUS}", "use a larger host")
    if count < GOOD_CPUS:
        return Check("cpus", "warning", f"{count}; {GOOD_CPUS} recommended", "expect slow ingestion under load")
    return Check("cpus", "ok", str(count))


def _disk(root: Path, env: dict | None = None) -> Check:
    """Free space where it matters: Docker's data root (volumes, images) and backups/ (dumps)."""
    from posthog_compose.operations.engine import disks

    worst, notes, fix = "ok", [], ""
    for label, path, free_gb in disks(root, env):
        if free_gb is None:
            notes.append(f"{label}: cannot be measured from this host"
                         + (f" ({path} is not readable here)" if path else " (the engine does not say where it is)"))
            worst = "warning" if worst == "ok" else worst
            continue
        if label == "backups/":
            notes.append(f"{_gib(free_gb)} GiB free for backups/")
            if free_gb < 1:
                worst, fix = "error", "free space under backups/: an upgrade's dump and logs need room"
            continue
        notes.append(f"{_gib(free_gb)} GiB free on Docker's data root ({path})")
        if free_gb < MIN_DISK_GB:
            worst, fix = "error", f"free space or move Docker's data root to a larger disk ({MIN_DISK_GB} GiB at least)"
        elif free_gb < GOOD_DISK_GB and worst == "ok":
            worst, fix = "warning", f"{GOOD_DISK_GB} GiB recommended; watch volume growth"
    return Check("disk", worst, "; ".join(notes), fix)


def _gib(amount: float) -> str:
    """A free space in GiB: whole units, with a decimal below 10 (0.5 GiB is not 0 GiB)."""
    return f"{amount:.0f}" if amount >= 10 else f"{amount:.1f}"


def _web_port(root: Path, runner) -> tuple[Check, bool]:
    """The WEB_PORT check, and whether this deployment's web service is the one running there."""
    checks, running = _published_ports(root, runner)
    return checks[0], running


def _published_ports(root: Path, runner) -> tuple[list[Check], bool]:
    """The checks of the host ports the deployment publishes, and whether its web service runs: WEB_PORT
    (free or held by web), or, while the edge proxy is on, PROXY_HTTP_PORT and PROXY_HTTPS_PORT (free or
    held by the proxy) instead, as web then publishes nothing."""
    from posthog_compose.configuration import edge
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    values = EnvFile.load(path).resolved() if path.exists() else {}
    try:
        from posthog_compose.operations import stack

        running = {s.service for s in stack.service_states(root, runner) if s.state == "running"}
    except Exception:
        running = set()
    if edge.enabled(values):
        checks = [_port_check("proxy http port", "PROXY_HTTP_PORT", values.get("PROXY_HTTP_PORT", "80"),
                              "proxy" in running, "edge proxy", "PROXY_HTTP_PORT"),
                  _port_check("proxy https port", "PROXY_HTTPS_PORT", values.get("PROXY_HTTPS_PORT", "443"),
                              "proxy" in running, "edge proxy", "PROXY_HTTPS_PORT (and SITE_URL to match)")]
        return checks, "web" in running
    check = _port_check("web port", "WEB_PORT", values.get("WEB_PORT", "8080"), "web" in running,
                        "web service", "WEB_PORT (and SITE_URL to match)")
    return [check], "web" in running


def _port_check(name: str, variable: str, port: str, ours: bool, holder: str, setting: str) -> Check:
    """One published port: free, held by this deployment's ``holder``, or taken by another program."""
    from posthog_compose.configuration.validators import PORT_PROBLEM, port_number

    number = port_number(port)
    if number is None:
        return Check(name, "error", f"{variable} {PORT_PROBLEM}", "run `invoke config-check`")
    if ours:
        return Check(name, "ok", f"{port} is held by this deployment's {holder}")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", number))
        except OSError:
            return Check(name, "error", f"{port} ({variable}) is already in use by another program",
                         f"stop it, or set another {setting} in .env")
    return Check(name, "ok", f"{port} ({variable}) is free")


def _one_line(text: str) -> str:
    """Tool output can hold newlines; a doctor line never does."""
    return " ".join(text.split())


def _data_disk(root: Path, runner, capabilities: dict | None = None) -> Check:
    """`invoke doctor`'s line about the engine's data disk and the filesystem of each data volume that runs
    (``capabilities``: stack.Capability by service, whose ``space`` was measured inside the container)."""
    from posthog_compose.operations.diskusage import CRITICAL_FREE_GB, GB, human, measure
    from posthog_compose.operations.stack.capability import FULL_BYTES

    report = measure(root, runner)
    report.add_filesystems(found.space for found in (capabilities or {}).values())
    own = {name: fs for name, fs in report.filesystems.items() if report._own(fs)}
    apart = "".join(f"; {name}: {human(fs['free_bytes'])} free of {human(fs['total_bytes'])} on a filesystem of its own"
                    for name, fs in own.items())
    full = [name for name, fs in own.items() if fs["free_bytes"] < FULL_BYTES]
    if report.free_bytes is None:
        if full:
            return Check("data disk", "error", f"free space unknown ({report.error}){apart}",
                         f"free space on the filesystem of {', '.join(full)} or move it to a larger disk")
        return Check("data disk", "warning", f"free space unknown ({report.error}){apart}",
                     "run `docker info` and `df -h`")
    volumes = sum(v for v in report.volumes.values() if v)
    detail = (f"{human(report.free_bytes)} free on the engine's data disk ({report.data_root or report.measured_by}); "
              f"the deployment's volumes hold {human(volumes)}{apart}")
    if full:
        return Check("data disk", "error", detail,
                     f"free space on the filesystem of {', '.join(full)} or move it to a larger disk")
    if report.free_bytes / GB < CRITICAL_FREE_GB:
        return Check("data disk", "error", detail, "free space now: `docker system prune`, lower Kafka retention")
    if report.warning:
        return Check("data disk", "warning", detail, "see the handbook's Disk and logs page")
    return Check("data disk", "ok", detail)


def _datastore_writes(root: Path, runner) -> tuple[Check | None, dict]:
    """`invoke doctor`'s line on whether each local datastore that runs takes a write (None when none
    runs), and the probes' findings (their volumes' free space serves the data disk line)."""
    from posthog_compose.configuration.envfile import EnvFile, env_path
    from posthog_compose.operations import stack

    path = env_path(root)
    try:
        values = EnvFile.load(path).resolved() if path.exists() else {}
        states = stack.service_states(root, runner)
    except Exception:  # no .env yet, or an engine that does not answer: other lines say so
        return None, {}
    local = set(stack.services_here(values))
    running = [s.service for s in states if s.ready and s.service in stack.capability.MOUNTS and s.service in local]
    if not running:
        return None, {}
    found = stack.capability.check(root, runner, values, running)
    bad = stack.capability.failing(found)
    if bad:
        return Check("datastore writes", "error", "; ".join(c.line().split(". Fix:")[0] for c in bad),
                     bad[0].fix), found
    unknown = [c for c in found.values() if c.verdict == "cannot tell"]
    if unknown:
        return Check("datastore writes", "warning", "; ".join(c.line() for c in unknown),
                     f"run `invoke doctor` again; if it stays so, `invoke logs -s {unknown[0].service} --tail 50`"
                     ), found
    probed = [name for name in found if name in stack.capability.WRITE_PROBES]
    return Check("datastore writes", "ok", f"{', '.join(probed) or 'none'} took a test write; every data volume "
                 "has room"), found

"""Disk safety: how much each data volume holds, how much the engine's data disk has left
(`invoke status`, `invoke doctor`, `status --json` for monitoring). config-check's rule that every
service rotates its logs, and the size units, are configuration/logrotation.py.

The filesystem of each data volume is measured from inside its container (`df` on its mount point,
stack/capability.py) and added to the report: a volume on a filesystem of its own fills up on its own.

Volume sizes come from the engine (`docker system df -v`, which measures every volume); the free
space from the engine's data root (`docker info`): measured directly when that directory is on
this machine, else from inside a running container of the deployment (`df` on a data volume),
which sees the same disk on a remote engine or Docker Desktop. Only the volumes of services that
run here are listed: an external datastore's data is the provider's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from posthog_compose.configuration.logrotation import GB, human, parse_size  # noqa: F401 - also callers' names

WARN_FREE_GB = 10.0  # below this, status and doctor warn: a day of growth plus a PostgreSQL dump
WARN_FREE_PERCENT = 10.0
CRITICAL_FREE_GB = 3.0  # below this, doctor errors: Kafka and ClickHouse stop writing soon
# Where a data volume is mounted, to ask `df` from inside a running container (remote engines).
DF_PROBES = (("db", "/var/lib/postgresql/data"), ("clickhouse", "/var/lib/clickhouse"), ("kafka", "/var/lib/kafka/data"))


@dataclass
class DiskReport:
    data_root: str = ""
    measured_by: str = ""  # "local" (statvfs of the data root) or "container:<service>" or ""
    total_bytes: int | None = None
    free_bytes: int | None = None
    volumes: dict[str, int | None] = field(default_factory=dict)  # volume (without project prefix) -> bytes
    warning: str = ""
    error: str = ""  # why a number could not be measured
    # The filesystem of each data volume (df inside its container): volume -> {total_bytes, free_bytes}.
    # A volume on a filesystem of its own (another disk, a tmpfs, a volume driver's) fills up on its own.
    filesystems: dict[str, dict] = field(default_factory=dict)

    def add_filesystems(self, spaces) -> None:
        """Add each data volume's filesystem (stack.Space items, grouped or not) and judge its free space."""
        for group in spaces:
            for space in (group if isinstance(group, (tuple, list)) else (group,)):
                self.filesystems[space.volume] = {"total_bytes": space.total_bytes, "free_bytes": space.free_bytes}
        low = [name for name, fs in self.filesystems.items() if self._own(fs) and _low(fs)]
        if low and not self.warning:
            self.warning = (f"little free space on the filesystem of {', '.join(low)}: the datastore stops writing "
                            "when it is full. Free space there or move the volume to a larger disk (handbook: Disk "
                            "and logs)")

    def _own(self, fs: dict) -> bool:
        """Whether a volume's filesystem is not the engine's data disk (same size: the same disk)."""
        return fs.get("free_bytes") is not None and fs.get("total_bytes") != self.total_bytes

    @property
    def free_percent(self) -> float | None:
        if not self.total_bytes or self.free_bytes is None:
            return None
        return 100.0 * self.free_bytes / self.total_bytes

    def to_dict(self) -> dict:
        data = asdict(self)
        data["free_percent"] = None if self.free_percent is None else round(self.free_percent, 1)
        data["volumes_total_bytes"] = sum(v for v in self.volumes.values() if v)
        data["warn_free_bytes"] = int(WARN_FREE_GB * GB)
        return data

    def lines(self) -> list[str]:
        out = []
        if self.free_bytes is not None:
            where = f" ({self.data_root})" if self.data_root else ""
            percent = f" ({self.free_percent:.0f}%)" if self.free_percent is not None else ""
            total = f" of {human(self.total_bytes)}" if self.total_bytes else ""
            out.append(f"Disk: {human(self.free_bytes)} free{total}{percent} on the engine's data disk{where}.")
        else:
            out.append(f"Disk: free space unknown ({self.error or 'not measured'}).")
        for name, fs in self.filesystems.items():
            if self._own(fs):
                total = fs["total_bytes"]
                percent = f" ({100.0 * fs['free_bytes'] / total:.0f}%)" if total else ""
                out.append(f"Volume {name}: {human(fs['free_bytes'])} free of {human(total)}{percent} "
                           "on a filesystem of its own.")
        if self.volumes:
            sizes = ", ".join(f"{name} {human(size) if size is not None else '?'}" for name, size in self.volumes.items())
            out.append(f"Volumes: {sizes} (total {human(sum(v for v in self.volumes.values() if v))}).")
        if self.warning:
            out.append(f"warning: {self.warning}")
        return out


def _low(fs: dict) -> bool:
    return below_warning(fs.get("free_bytes"), fs.get("total_bytes"))


def below_warning(free: int | None, total: int | None) -> bool:
    """The one warning rule of every filesystem the kit measures, as the handbook's disk page states it:
    less than WARN_FREE_GB free, or less than WARN_FREE_PERCENT of the filesystem free."""
    if free is None:
        return False
    return free < WARN_FREE_GB * GB or bool(total and 100.0 * free / total < WARN_FREE_PERCENT)


def project_volumes(df_volumes: list[dict], project: str) -> dict[str, int | None]:
    """The project's volumes from `docker system df -v`'s Volumes, by their name in the compose file."""
    found = {}
    for row in df_volumes or []:
        name = str(row.get("Name", ""))
        labels = str(row.get("Labels", ""))
        if name.startswith(f"{project}_") or f"com.docker.compose.project={project}" in labels:
            found[name.removeprefix(f"{project}_")] = parse_size(str(row.get("Size", "")))
    return dict(sorted(found.items()))


def judge(report: DiskReport) -> DiskReport:
    if report.free_bytes is None:
        return report
    if below_warning(report.free_bytes, report.total_bytes):
        report.warning = (f"only {human(report.free_bytes)} free on the engine's data disk: Kafka, ClickHouse and "
                          "PostgreSQL stop writing when it is full. Free space (`docker system prune`), lower "
                          "KAFKA_LOG_RETENTION_HOURS, or move Docker's data root to a larger disk "
                          "(handbook: Disk and logs)")
    return report


def not_here(values: dict[str, str] | None) -> set[str]:
    """The volumes of datastores .env declares external: they are not this deployment's data any
    more (a volume left from before a migration is the operator's to remove), so they are not listed."""
    from posthog_compose.configuration import datastores

    values = values or {}
    return set(datastores.local_volumes({})) - set(datastores.local_volumes(values))


def _env_values(root: Path) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    try:
        return EnvFile.load(path).resolved() if path.exists() else {}
    except Exception:  # an unreadable .env is config-check's finding; measure as if everything ran here
        return {}


def measure(root: Path, runner, project: str | None = None, values: dict[str, str] | None = None) -> DiskReport:
    """Volume sizes and free space of the engine's data disk. Never raises: what cannot be
    measured is said in ``error``. Only the volumes of services that run here are listed."""
    from posthog_compose.configuration import compose

    project = project or compose.project_name(root)
    values = _env_values(root) if values is None else values
    skipped = not_here(values)
    report = DiskReport()
    errors = []
    result = runner.run(["docker", "system", "df", "-v", "--format", "{{json .Volumes}}"], capture=True, check=False,
                        mutating=False, timeout=120)
    if result.returncode == 0:
        try:
            report.volumes = {name: size for name, size in
                              project_volumes(json.loads(result.stdout or "[]"), project).items() if name not in skipped}
        except ValueError:
            errors.append("`docker system df -v` gave output this tool cannot read")
    else:
        errors.append(f"`docker system df -v` failed: {(result.stderr or '').strip().splitlines()[-1:] or result.returncode}")
    info = runner.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture=True, check=False, mutating=False,
                      timeout=30)
    report.data_root = info.stdout.strip() if info.returncode == 0 else ""
    if report.data_root and _engine_is_local(runner) and os.path.isdir(report.data_root):
        usage = shutil.disk_usage(report.data_root)
        report.total_bytes, report.free_bytes, report.measured_by = usage.total, usage.free, "local"
    else:
        from posthog_compose.operations.stack import services_here

        here = services_here(values)
        for service, path in [(service, path) for service, path in DF_PROBES if service in here]:
            probe = runner.run(compose.command(root, "exec", "-T", service, "df", "-Pk", path), capture=True,
                               check=False, mutating=False, timeout=30)
            sizes = parse_df(probe.stdout) if probe.returncode == 0 else None
            if sizes:
                report.total_bytes, report.free_bytes = sizes
                report.measured_by = f"container:{service}"
                break
        else:
            errors.append("the engine's data root is not on this machine and no data service runs to ask `df`")
    report.error = "; ".join(errors)
    return judge(report)


def _engine_is_local(runner) -> bool:
    host = (getattr(runner, "env", None) or os.environ).get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


def parse_df(output: str) -> tuple[int, int] | None:
    """(total, available) bytes from `df -Pk PATH`."""
    lines = [line for line in (output or "").splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    try:
        return int(fields[1]) * 1024, int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- hooks
def for_status(root: Path, runner) -> DiskReport:
    """What `invoke status` shows under its table (and carries in --json as "disk")."""
    return measure(root, runner)

"""What an archive holds and where archives live: the configuration files and directories, the
volumes of each subset, what is not backed up, the archive's name, the external datastores it records
instead of taking, and the result of a backup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError


BACKUP_DIR = "backups"
PASSPHRASE_ENV = "POSTHOG_BACKUP_PASSPHRASE"
SUFFIX = ".backup"
FORMAT = 1
MIB = 1024 ** 2

#: Configuration members: files and folders of the deployment, relative to its root.
CONFIG_FILES = (".env", "docker-compose.yml", "docker-compose.tls.yml", "variables.yml", "upgrades.yml")
CONFIG_DIRS = ("clickhouse", "postgres", "certs")

#: Data volumes copied as tar streams: member -> (service, mount point in a helper container,
#: {volume: path below the mount point}).
#: ZooKeeper first: it is stopped only for its own (small) copy, while ClickHouse, which writes to it,
#: stays stopped for both copies.
VOLUMES = {
    "volumes/zookeeper.tar": ("zookeeper", "/var/lib/zookeeper", {"zookeeper-data": "data", "zookeeper-logs": "log"}),
    "volumes/clickhouse.tar": ("clickhouse", "/var/lib/clickhouse", {"clickhouse-data": "."}),
}
SUBSETS = {
    "all": "configuration, PostgreSQL, ClickHouse and ZooKeeper",
    "postgres": "configuration and PostgreSQL only (no ClickHouse pause; what `invoke upgrade` takes)",
}
NOT_BACKED_UP = [
    "kafka-data: Kafka's log of events in flight. Events that had not yet been consumed into ClickHouse when "
    "ClickHouse stopped for the copy are not in the archive; a restore starts with an empty Kafka.",
    "redis: cache, Celery queue and locks only. Queued background jobs (e.g. an export in progress) are lost; "
    "PostHog rebuilds the cache.",
    "container images: pulled again from the registry by the image references in .env.",
]
NAME_RE = re.compile(r"^posthog-(\d{8}-\d{6})(?:-([a-z]+))?(?:-(\d+))?\.backup$")


@dataclass
class Result:
    path: Path
    manifest: dict
    seconds: float
    size: int
    pause: float | None = None
    removed: list[Path] = field(default_factory=list)

    def summary(self) -> dict:
        return {"archive": str(self.path), "size": self.size, "seconds": round(self.seconds, 1),
                "clickhouse_pause_seconds": None if self.pause is None else round(self.pause, 1),
                "encrypted": self.manifest.get("encrypted"), "subset": self.manifest.get("subset"),
                "removed_by_keep": [str(p) for p in self.removed],
                "members": self.manifest.get("members", [])}


# ----------------------------------------------------------------------------- helpers
def backup_dir(root: Path) -> Path:
    return Path(root) / BACKUP_DIR


def _values(root: Path) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    if not path.exists():
        raise OperatorError(".env does not exist: there is no deployment to back up here (run `invoke up` first)")
    return EnvFile.load(path).resolved()


#: Why each external datastore is not in an archive, as the plan says it.
EXTERNAL_LINES = {
    "postgres": "PostgreSQL is external ({where}): back it up at your provider",
    "clickhouse": "ClickHouse is external ({where}): back it up at your provider",
    "redis": "Redis is external ({where}): not backed up here (cache, queue and locks)",
    "kafka": "Kafka is external ({where}): its events in flight stay with your provider",
}


def external_datastores(values: dict[str, str]) -> dict[str, dict]:
    """datastore -> {"endpoint": "host:port", "line": why it is not in the archive} for each external one."""
    from posthog_compose.configuration import datastores
    from posthog_compose.operations import stack

    found = stack.first_endpoints(values)
    result = {}
    for name in datastores.external(values):
        where = stack.endpoint_text(found.get(name))
        result[name] = {"endpoint": where, "line": EXTERNAL_LINES[name].format(where=where)}
    return result


def local_volume_members(values: dict[str, str]) -> dict:
    """The VOLUMES members whose service runs here. ZooKeeper is copied with ClickHouse (it holds its
    replication metadata); with ClickHouse external it serves only Kafka, whose log is not backed up."""
    from posthog_compose.operations import stack

    here = set(stack.services_here(values))
    if "clickhouse" not in here:
        here.discard("zookeeper")
    return {member: spec for member, spec in VOLUMES.items() if spec[0] in here}


def volume_name(project: str, volume: str) -> str:
    """The engine's name of a volume of the deployment named ``project`` (Compose prefixes it)."""
    return f"{project}_{volume}"


def config_files(root: Path) -> list[Path]:
    """Every configuration file that exists, relative to ``root``, in a stable order."""
    root = Path(root)
    found = [Path(name) for name in CONFIG_FILES if (root / name).is_file()]
    for folder in CONFIG_DIRS:
        base = root / folder
        if base.is_dir():
            found.extend(sorted(p.relative_to(root) for p in base.rglob("*") if p.is_file() and not p.is_symlink()))
    return found


def last_line(root: Path, result: Result) -> str:
    where = result.path.relative_to(root) if result.path.is_relative_to(root) else result.path
    pause = f"; ClickHouse paused {result.pause:.1f} s" if result.pause is not None else ""
    removed = f"; removed {len(result.removed)} old archive(s) (--keep)" if result.removed else ""
    kind = "encrypted" if result.manifest.get("encrypted") else "NOT encrypted"
    return (f"Backup written: {where} ({result.size / MIB:,.1f} MiB, {kind}, {len(result.manifest['members'])} "
            f"members) in {result.seconds:.0f} s{pause}{removed}.")

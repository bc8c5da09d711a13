"""What an archive holds and where archives live: the configuration files and directories, the
volumes of each subset, what is not backed up, the archive's name, the external datastores it records
instead of taking, and the result of a backup. Also what a reader accepts of it: the members a
backup writes (member_problem) and the manifest's fields, each typed and bounded (check_manifest).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.operations.archive_checks import FORMAT, ArchiveError, manifest_format, name_problem, shown


BACKUP_DIR = "backups"
PASSPHRASE_ENV = "POSTHOG_BACKUP_PASSPHRASE"
SUFFIX = ".backup"
MIB = 1024 ** 2

#: Configuration members: files and folders of the deployment, relative to its root. Everything the
#: configuration refers to lives here (references.py): the TLS override `invoke harden` writes, the
#: proxy's overlays and Caddyfile, and the CA files of external datastores that .env names.
CONFIG_FILES = (".env", "docker-compose.yml", "docker-compose.tls.yml", "docker-compose.override.yml",
                "docker-compose.proxy.yml", "docker-compose.proxy-private.yml", "variables.yml", "upgrades.yml")
CONFIG_DIRS = ("clickhouse", "postgres", "certs", "datastore-ca", "proxy")

#: Data volumes copied as tar streams: member -> (service, mount point in a helper container,
#: {volume: path below the mount point}).
#: ZooKeeper first: it is stopped only for its own (small) copy, and a running ClickHouse's tables are
#: frozen meanwhile, so the ClickHouse copy that follows matches ZooKeeper's.
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
    "ClickHouse's tables were frozen for the copy are not in the archive; a restore starts with an empty Kafka.",
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
    #: service -> seconds it was stopped for its copy (ZooKeeper; ClickHouse only when it was not running)
    paused: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"archive": str(self.path), "size": self.size, "seconds": round(self.seconds, 1),
                "clickhouse_pause_seconds": None if self.pause is None else round(self.pause, 1),
                "paused_seconds": {service: round(seconds, 1) for service, seconds in self.paused.items()},
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
    """Every configuration file that exists, relative to ``root``, in a stable order. A name no
    reader would accept (control characters) is refused here, before anything is written."""
    root = Path(root)
    found = [Path(name) for name in CONFIG_FILES if (root / name).is_file()]
    for folder in CONFIG_DIRS:
        base = root / folder
        if base.is_dir():
            found.extend(sorted(p.relative_to(root) for p in base.rglob("*") if p.is_file() and not p.is_symlink()))
    for path in found:
        problem = name_problem(f"config/{path.as_posix()}")
        if problem:
            raise OperatorError(f"{shown(path.as_posix())}: this file name cannot go into an archive ({problem}); "
                                "rename or remove it and back up again")
    return found


def last_line(root: Path, result: Result) -> str:
    where = result.path.relative_to(root) if result.path.is_relative_to(root) else result.path
    pause = ("; ClickHouse kept serving" if result.pause == 0 else f"; ClickHouse paused {result.pause:.1f} s"
             ) if result.pause is not None else ""
    pause += "".join(f", {service} paused {seconds:.1f} s" for service, seconds in result.paused.items())
    removed = f"; removed {len(result.removed)} old archive(s) (--keep)" if result.removed else ""
    kind = "encrypted" if result.manifest.get("encrypted") else "NOT encrypted"
    return (f"Backup written: {where} ({result.size / MIB:,.1f} MiB, {kind}, {len(result.manifest['members'])} "
            f"members) in {result.seconds:.0f} s{pause}{removed}.")


# ----------------------------------------------------------------------------- what a reader accepts
def member_problem(name: str) -> str | None:
    """Why ``name`` (already a valid member name) is not a member a backup writes, or None."""
    parts = name.split("/")
    if parts[0] == "config" and len(parts) > 1:
        if "/".join(parts[1:]) in CONFIG_FILES or (len(parts) > 2 and parts[1] in CONFIG_DIRS):
            return None
    elif name in VOLUMES or (len(parts) == 2 and parts[0] == "postgres" and parts[1].endswith(".dump")
                             and len(parts[1]) > len(".dump")):
        return None
    return f"unexpected member {name!r} (not a file this kit backs up)"


def _text(value: object, limit: int = 4096) -> bool:
    # Values that come from .env are not required to be printable: printing escapes them (shown).
    return isinstance(value, str) and len(value) <= limit


def _mapping(value: object, count: int, key: Callable[[str], bool], item: Callable[[object], bool]) -> bool:
    return isinstance(value, dict) and len(value) <= count and all(key(k) and item(v) for k, v in value.items())


def _seconds(value: object) -> bool:
    return value is None or (type(value) in (int, float) and math.isfinite(value) and 0 <= value <= 10 ** 7)


def _postgres(value: object) -> bool:
    return value is None or (isinstance(value, dict) and set(value) == {"database", "user", "entries"}
                             and _text(value["database"]) and _text(value["user"])
                             and (value["entries"] is None or (type(value["entries"]) is int
                                                               and 0 <= value["entries"] <= 10 ** 9)))


def _row_counts(value: object) -> bool:
    """{"postgres": {table: rows} or None, "clickhouse": {table: rows} or None}: what the drill checks."""
    return isinstance(value, dict) and set(value) == {"postgres", "clickhouse"} and all(
        counts is None or _mapping(counts, 4096, lambda k: _text(k, 512),
                                   lambda n: type(n) is int and 0 <= n <= 10 ** 15) for counts in value.values())


def _kit(value: object) -> bool:
    return (isinstance(value, dict) and set(value) == {"version", "commit", "modified"} and _text(value["version"], 64)
            and (value["commit"] is None or (isinstance(value["commit"], str) and bool(_COMMIT.fullmatch(value["commit"]))))
            and value["modified"] in (None, True, False))


_COMMIT = re.compile(r"[0-9a-f]{40}")
_DATASTORES = ("postgres", "redis", "clickhouse", "kafka")
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
#: The manifest's fields beside "format" and "members" (archive.py checks those two), each with its
#: check. An archive has every field of its format (FIELD_SINCE); a format-1 archive may lack some.
MANIFEST_FIELDS: dict[str, Callable[[object], bool]] = {
    "kind": lambda v: v == "posthog-compose backup",
    "subset": lambda v: isinstance(v, str) and v in SUBSETS,
    "created": lambda v: isinstance(v, str) and bool(_CREATED.fullmatch(v)),
    "encrypted": lambda v: type(v) is bool,
    "posthog_image": _text,
    "posthog_version": _text,
    "images": lambda v: _mapping(v, 256, lambda k: _text(k, 256) and k.endswith("_IMAGE"), _text),
    "versions": lambda v: _mapping(v, 2, lambda k: k in ("postgres", "clickhouse"), lambda x: x is None or _text(x)),
    "postgres": _postgres,
    "clickhouse_pause_seconds": _seconds,
    "external": lambda v: _mapping(v, 4, lambda k: k in _DATASTORES,
                                   lambda x: isinstance(x, dict) and set(x) == {"endpoint"} and _text(x["endpoint"])),
    "not_backed_up": lambda v: isinstance(v, list) and len(v) <= 64 and all(_text(x) for x in v),
    "kit": _kit,
    "tables": _row_counts,
}
#: The format that introduced a field (2 unless named): an archive of an older format may lack it.
FIELD_SINCE = {"kit": 3, "tables": 3}


def check_manifest(manifest: dict) -> None:
    """ArchiveError unless the manifest (its member list already checked against the members) has
    only the fields a backup writes, each of its type and within its bounds, and members a backup
    writes: config/.env, at most one PostgreSQL dump, volumes only in an archive of everything."""
    version = manifest_format(manifest)
    unknown = sorted(set(manifest) - set(MANIFEST_FIELDS) - {"format", "members"})
    if unknown:
        raise ArchiveError(f"damaged (the manifest has fields no backup writes: {shown(', '.join(unknown), 80)})")
    missing = [key for key in MANIFEST_FIELDS if key not in manifest and version >= FIELD_SINCE.get(key, 2)]
    if missing:
        raise ArchiveError(f"damaged (the manifest lacks {', '.join(missing)})")
    for key, check in MANIFEST_FIELDS.items():
        if key in manifest and not check(manifest[key]):
            raise ArchiveError(f"damaged (the manifest's {key} is not what a backup writes)")
    names = [entry["name"] for entry in manifest["members"]]
    for name in names:
        problem = member_problem(name)
        if problem:
            raise ArchiveError(problem)
    if "config/.env" not in names:
        raise ArchiveError("the archive holds no .env, so the data's keys are unknown")
    if sum(name.startswith("postgres/") for name in names) > 1:
        raise ArchiveError("damaged (more than one PostgreSQL dump)")
    if manifest.get("subset") == "postgres" and any(name in VOLUMES for name in names):
        raise ArchiveError("damaged (a PostgreSQL-only archive holds volumes)")

"""`invoke backup`: one archive with everything needed to bring the deployment back on a new host.

Owns what goes into an archive and how it is taken: the configuration (.env with every secret, the
compose files, the manifest, clickhouse/, postgres/, certs/), PostgreSQL as a pg_dump custom-format
dump (run inside `db`, streamed out in parallel with the volume copies, checked by `pg_restore --list`), and the
ClickHouse and ZooKeeper volumes as tar streams taken while those two services are stopped (the
pause is measured and recorded; events keep arriving in Kafka meanwhile and are consumed after).
Also: the passphrase (environment variable or key file, never the command line), the free-space
preflight, live progress, retention (--keep), --list and --verify. The archive format and its
encryption live in archive.py; restoring lives in restore.py.

A datastore that .env makes external (datastores.py) is not taken: one line says so and the
archive's manifest records it under "external", with the endpoint (host:port, never credentials);
its backups are the provider's. `create(root, runner, subset="postgres")` is the pre-upgrade backup
of `invoke upgrade`, which refuses when PostgreSQL is external (`upgrade` decides what then).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner, Streaming
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import _fsync_dir, atomic_write, timestamp

BACKUP_DIR = "backups"
PASSPHRASE_ENV = "POSTHOG_BACKUP_PASSPHRASE"
SUFFIX = ".backup"
FORMAT = 1
MIB = 1024 ** 2
#: Free space demanded beyond the estimate: 10 % plus 256 MiB.
MARGIN_RATIO, MARGIN_BYTES = 1.10, 256 * MIB

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


# ----------------------------------------------------------------------------- passphrase
def read_passphrase(passphrase_file: str | None, required: bool) -> bytes | None:
    """The passphrase from --passphrase-file or POSTHOG_BACKUP_PASSPHRASE; never from a command-line value."""
    from posthog_compose.operations.archive import MIN_PASSPHRASE

    if passphrase_file:
        path = Path(passphrase_file).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise OperatorError(f"--passphrase-file {path}: cannot read it ({exc.strerror}); give a readable file "
                                "holding the passphrase")
        if path.stat().st_mode & 0o077:
            raise OperatorError(f"--passphrase-file {path} is readable by other users; run `chmod 600 {path}`")
        value, source = raw.rstrip(b"\r\n"), f"--passphrase-file {path}"
    elif os.environ.get(PASSPHRASE_ENV):
        value, source = os.environ[PASSPHRASE_ENV].encode(), PASSPHRASE_ENV
    else:
        if required:
            raise OperatorError(f"no passphrase: set {PASSPHRASE_ENV} in the environment or pass --passphrase-file "
                                "FILE (a 0600 file)")
        return None
    if len(value) < MIN_PASSPHRASE:
        raise OperatorError(f"{source}: the passphrase has {len(value)} characters; use at least {MIN_PASSPHRASE}")
    return value


# ----------------------------------------------------------------------------- progress
class Meter:
    """Live progress of a long copy: one rewritten line on a terminal, a line every 5 s otherwise."""

    def __init__(self, label: str, stream=None, enabled: bool = True):
        self.label, self.stream, self.enabled = label, stream or sys.stdout, enabled
        self.tty = self.stream.isatty()
        self.started = self.last = time.monotonic()
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        self._print("\r\033[K" if self.tty else "", "" if self.tty else "\n")

    def _print(self, prefix: str, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.stream.write(f"{prefix}  {self.label}: {self.done / MIB:,.1f} MiB ({self.done / MIB / elapsed:,.0f} "
                          f"MiB/s, {elapsed:.0f} s){end}")
        self.stream.flush()

    def finish(self) -> float:
        elapsed = time.monotonic() - self.started
        if self.enabled:
            self._print("\r\033[K" if self.tty else "", "\n")
        return elapsed


class _CountingFile:
    """The archive file: counts what is written."""

    def __init__(self, handle):
        self.handle, self.size = handle, 0

    def write(self, data) -> int:
        self.handle.write(data)
        self.size += len(data)
        return len(data)


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


def volume_name(volume: str) -> str:
    return f"{compose.PROJECT_NAME}_{volume}"


def existing_volumes(runner: Runner) -> set[str]:
    result = runner.run(["docker", "volume", "ls", "--quiet", "--filter",
                         f"label=com.docker.compose.project={compose.PROJECT_NAME}"], capture=True, check=False,
                        mutating=False, timeout=60)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"cannot list Docker volumes ({detail[0][:200]}); is the engine running? (`invoke doctor`)")
    return set((result.stdout or "").split())


def config_files(root: Path) -> list[Path]:
    """Every configuration file that exists, relative to ``root``, in a stable order."""
    root = Path(root)
    found = [Path(name) for name in CONFIG_FILES if (root / name).is_file()]
    for folder in CONFIG_DIRS:
        base = root / folder
        if base.is_dir():
            found.extend(sorted(p.relative_to(root) for p in base.rglob("*") if p.is_file() and not p.is_symlink()))
    return found


def _running(root: Path, runner: Runner) -> dict[str, bool]:
    from posthog_compose.operations import stack

    return {s.service: s.state == "running" for s in stack.service_states(root, runner)}


def _exec_text(root: Path, runner: Runner, service: str, *command: str) -> str | None:
    result = runner.run(compose.command(root, "exec", "-T", service, *command), capture=True, check=False,
                        mutating=False, timeout=120)
    return result.stdout.strip() if result.returncode == 0 and result.stdout else None


def _psql(root: Path, runner: Runner, values: dict[str, str], sql: str) -> str | None:
    return _exec_text(root, runner, "db", "psql", "-At", "-U", values.get("POSTGRES_USER", "posthog"), "-d",
                      values.get("POSTGRES_DB", "posthog"), "-c", sql)


def _volume_sizes(runner: Runner, image: str, volumes: dict) -> dict[str, int]:
    """Bytes used by each member's volumes, measured in one throwaway container (read-only mounts)."""
    command = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "du"]
    paths = {}
    for member, (_service, _mount, vols) in volumes.items():
        for volume in vols:
            paths[f"/measure/{volume}"] = member
            command += ["--volume", f"{volume_name(volume)}:/measure/{volume}:ro"]
    result = runner.run([*command, image, "-sk", *paths], capture=True, check=False, mutating=False, timeout=600)
    sizes = dict.fromkeys(volumes, 0)
    try:
        for line in (result.stdout or "").splitlines():
            kib, path = line.split(None, 1)
            sizes[paths[path.strip()]] += int(kib) * 1024
    except (KeyError, ValueError):
        pass
    if result.returncode != 0 or not (result.stdout or "").strip():
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"cannot measure the volumes to back up ({detail[0][:200]})")
    return sizes


def _tar_command(image: str, volumes: dict[str, str], mount: str) -> list[str]:
    command = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "tar"]
    for volume, sub in volumes.items():
        command += ["--volume", f"{volume_name(volume)}:{os.path.normpath(os.path.join(mount, sub))}:ro"]
    # --sparse: ZooKeeper pads its transaction logs to 64 MiB with a hole at the end.
    return [*command, image, "--numeric-owner", "--sparse", "-C", mount, "-cf", "-", "."]


def _stream_member(writer, name: str, command: list[str], runner: Runner, meter: Meter, cwd: Path | None = None):
    """Run ``command`` and store its stdout as member ``name``."""
    stream = Streaming(command, runner, cwd, stdout=subprocess.PIPE)
    with stream as producer:
        info = writer.add_stream(name, producer.stdout, 0o600, meter)
    if stream.returncode != 0:
        raise OperatorError(f"`{' '.join(command[:2])} ...` for {name} failed: {stream.last_error()}")
    return info


class _PgDump:
    """pg_dump inside `db`, streamed straight into a 0600 file next to the archive while the volumes are
    copied (it runs in parallel: its compression is the slowest part of a backup); then
    `pg_restore --list` must read it."""

    def __init__(self, root: Path, runner: Runner, user: str, database: str, path: Path):
        import tempfile

        self.root, self.runner, self.path = root, runner, path
        self.errors = tempfile.TemporaryFile()
        command = compose.command(root, "exec", "-T", "db", "pg_dump", "-U", user, "-d", database, "--format=custom")
        if runner.verbose:
            runner.show(command)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.process = subprocess.Popen(command, cwd=root, env=runner.env, stdout=fd, stderr=self.errors)
        finally:
            os.close(fd)

    def finish(self) -> int:
        """Wait for pg_dump and check the dump; the number of entries pg_restore lists."""
        code = self.process.wait()
        if code != 0:
            self.errors.seek(0)
            lines = self.errors.read().decode(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
            raise OperatorError(f"pg_dump inside `db` failed ({lines[0][:300]}); no archive was written")
        command = compose.command(self.root, "exec", "-T", "db", "pg_restore", "--list")
        with open(self.path, "rb") as handle:
            checker = subprocess.Popen(command, cwd=self.root, env=self.runner.env, stdin=handle,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            listing, error = checker.communicate(timeout=600)
        entries = pg_restore_entries(listing.decode(errors="replace"))
        if checker.returncode != 0 or not entries or self.path.stat().st_size == 0:
            raise OperatorError(f"the PostgreSQL dump cannot be read by pg_restore "
                                f"({error.decode(errors='replace').strip()[:200] or 'no entries'}); no archive was "
                                "written")
        return entries

    def abort(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.errors.close()
        self.path.unlink(missing_ok=True)


def pg_restore_entries(listing: str) -> int:
    return sum(1 for line in listing.splitlines() if line.strip() and not line.startswith(";"))


def posthog_version(image: str) -> str:
    """'1.43.0' for a release tag; the tag or digest otherwise (commit-SHA builds came after 1.43.x)."""
    from posthog_compose.configuration import images

    try:
        ref = images.parse(image)
    except OperatorError:
        return image
    version = images.release_version(ref.tag)
    return ".".join(map(str, version)) if version else (ref.tag or ref.digest or image)


# ----------------------------------------------------------------------------- create
def create(root: Path, runner: Runner, subset: str = "all", *, encrypt: bool | None = None,
           passphrase_file: str | None = None, keep: int | None = None, out=None,
           allow_stopped_db: bool = False) -> Result:
    """Write one archive into backups/ and return it. ``encrypt``: True needs a passphrase, False
    writes a plain archive (only into a 0700 folder), None encrypts when a passphrase is configured
    (the pre-upgrade backup). A failure at any step leaves no archive under its final name."""
    from posthog_compose.operations import archive

    root = Path(root)
    out = out or sys.stdout
    if subset not in SUBSETS:
        raise OperatorError(f"--only {subset!r} is not one of: {', '.join(s for s in SUBSETS if s != 'all')}")
    values = _values(root)
    passphrase = read_passphrase(passphrase_file, required=encrypt is True)
    encrypted = passphrase is not None and encrypt is not False
    directory = backup_dir(root)
    directory.mkdir(mode=0o700, exist_ok=True)
    if not encrypted and directory.stat().st_mode & 0o077:
        raise OperatorError(f"{BACKUP_DIR}/ is readable by other users and an unencrypted archive holds every secret: "
                            f"run `chmod 700 {directory}` (or encrypt: set {PASSPHRASE_ENV})")
    if keep is not None and keep < 1:
        raise OperatorError("--keep must be 1 or more (the archive just written counts)")

    outside = external_datastores(values)
    pg_local = "postgres" not in outside
    if subset == "postgres" and not pg_local:
        raise OperatorError(f"{outside['postgres']['line']}; `--only postgres` has nothing to take here "
                            "(`invoke backup` still saves the configuration)")
    running = _running(root, runner)
    if pg_local and not running.get("db"):
        raise OperatorError("`db` is not running, so PostgreSQL cannot be dumped: start it with `invoke up` "
                            "(or `invoke up -s db`) and back up again")
    volumes = local_volume_members(values) if subset == "all" else {}
    present = existing_volumes(runner) if volumes else set()
    for member, (service, _mount, vols) in list(volumes.items()):
        missing = [v for v in vols if volume_name(v) not in present]
        if missing:
            raise OperatorError(f"volume {volume_name(missing[0])} does not exist: the deployment has never run "
                                f"{service}; start it once with `invoke up`")

    # Estimate and preflight.
    user, database = values.get("POSTGRES_USER", "posthog"), values.get("POSTGRES_DB", "posthog")
    # The three measurements are container round trips: they run side by side.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        pg_future = pool.submit(_psql, root, runner, values, "SELECT pg_database_size(current_database()) || ' ' || "
                                                              "current_setting('server_version')") if pg_local else None
        sizes_future = pool.submit(_volume_sizes, runner, values["POSTGRES_IMAGE"], volumes) if volumes else None
        ch_future = pool.submit(_exec_text, root, runner, "clickhouse", "clickhouse-client", "--query",
                                "SELECT version()") if running.get("clickhouse") else None
        answer = ((pg_future.result() if pg_future else None) or "0 ?").split(" ", 1)
        sizes = sizes_future.result() if sizes_future else {}
        clickhouse_version = ch_future.result() if ch_future else None
    pg_bytes, pg_version = int(answer[0]), answer[1] if len(answer) > 1 and pg_local else None
    # The dump is written twice: a temporary file while the volumes are copied, then into the archive.
    estimate = 2 * pg_bytes + sum((root / p).stat().st_size for p in config_files(root))
    estimate += sum(sizes.values())
    needed = int(estimate * MARGIN_RATIO + MARGIN_BYTES)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OperatorError(f"only {free / MIB:,.0f} MiB free in {directory} and this backup needs about "
                            f"{needed / MIB:,.0f} MiB (estimate {estimate / MIB:,.0f} MiB plus 10 % and 256 MiB): "
                            "free space, or remove old archives (`invoke backup --keep N`)")

    stamp = timestamp()
    name = f"posthog-{stamp}{'' if subset == 'all' else '-' + subset}{SUFFIX}"
    final = directory / name
    counter = 1
    while final.exists():
        final = directory / name.replace(SUFFIX, f"-{counter}{SUFFIX}")
        counter += 1
    partial = directory / f".{final.name}.partial"

    print(f"Plan: back up {SUBSETS[subset]} into {final.relative_to(root)} "
          f"({'encrypted, AES-256-GCM' if encrypted else 'NOT encrypted: it holds every secret of .env'}); "
          f"about {estimate / MIB:,.0f} MiB.", file=out)
    if volumes and (running.get("clickhouse") or running.get("zookeeper")):
        print("  ClickHouse and ZooKeeper stop while their volumes are copied; events wait in Kafka meanwhile.",
              file=out)
    for entry in outside.values():
        print(f"  {entry['line']}.", file=out)
    started = time.monotonic()
    versions = {"postgres": pg_version, "clickhouse": clickhouse_version}
    stopped: list[str] = []
    pause_started: float | None = None
    pause: float | None = None
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    dump: _PgDump | None = None
    try:
        with os.fdopen(fd, "wb", buffering=archive.CHUNK) as handle:
            if pg_local:
                dump = _PgDump(root, runner, user, database, directory / f".{final.name}.pgdump.partial")
            hashed = _CountingFile(handle)
            sink = archive.EncryptingWriter(hashed, passphrase) if encrypted else hashed
            writer = archive.ArchiveWriter(sink)
            for path in config_files(root):
                data = (root / path).read_bytes()
                writer.add_bytes(f"config/{path.as_posix()}", data, (root / path).stat().st_mode & 0o777)
            if volumes and running.get("clickhouse"):
                pause_started = time.monotonic()
                print("Stopping clickhouse for a consistent copy ...", file=out)
                _stop(root, runner, "clickhouse")
                stopped.append("clickhouse")
            for member, (service, mount, vols) in volumes.items():
                if service != "clickhouse" and running.get(service):
                    _stop(root, runner, service)
                    stopped.append(service)
                meter = Meter(f"{member} ({sizes[member] / MIB:,.0f} MiB on disk)", out)
                _stream_member(writer, member, _tar_command(values[f"{service.upper()}_IMAGE"], vols, mount), runner,
                               meter, cwd=root)
                meter.finish()
                if service != "clickhouse" and service in stopped:
                    _start(root, runner, [service])
                    stopped.remove(service)
            if stopped:
                _start(root, runner, stopped)
                pause = time.monotonic() - pause_started
                print(f"Started {', '.join(stopped)} again: paused {pause:.1f} s.", file=out)
                stopped = []
            entries = None
            if dump is not None:
                if volumes:
                    print(f"Waiting for pg_dump (database {pg_bytes / MIB:,.0f} MiB) ...", file=out)
                entries = dump.finish()
                meter = Meter(f"postgres/{database}.dump", out)
                with open(dump.path, "rb") as source:
                    info = writer.add_stream(f"postgres/{database}.dump", source, 0o600, meter)
                meter.finish()
                print(f"PostgreSQL dump verified: {info.size / MIB:,.1f} MiB, {entries} entries readable by "
                      "pg_restore.", file=out)
            manifest = writer.close({
                "format": FORMAT, "kind": "posthog-compose backup", "subset": subset,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "encrypted": encrypted,
                "posthog_image": values.get("POSTHOG_IMAGE", ""),
                "posthog_version": posthog_version(values.get("POSTHOG_IMAGE", "")),
                "images": {key: value for key, value in sorted(values.items()) if key.endswith("_IMAGE")},
                "versions": versions,
                "postgres": {"database": database, "user": user, "entries": entries} if pg_local else None,
                "clickhouse_pause_seconds": None if pause is None else round(pause, 2),
                "external": {name: {key: value for key, value in entry.items() if key != "line"}
                             for name, entry in outside.items()},
                "not_backed_up": [entry["line"] for entry in outside.values()] + (NOT_BACKED_UP if subset == "all" else
                ["clickhouse, zookeeper: only PostgreSQL and the configuration are in this subset"] + NOT_BACKED_UP),
            })
            if encrypted:
                sink.finish()
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        _fsync_dir(directory)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if dump is not None:
            dump.abort()
        if stopped:
            try:
                _start(root, runner, stopped)
            except OperatorError as again:
                print(f"warning: could not start {', '.join(stopped)} again ({again}); run `invoke up`", file=sys.stderr)
        if isinstance(exc, OSError):
            raise OperatorError(f"writing {final.relative_to(root)} failed ({exc.strerror or exc}); no archive was "
                                "written") from exc
        raise
    if dump is not None:
        dump.abort()  # the dump is in the archive now: remove the temporary file
    sidecar = {key: value for key, value in manifest.items()}
    sidecar.update({"archive": final.name, "archive_size": hashed.size})
    atomic_write(sidecar_path(final), json.dumps(sidecar, indent=2) + "\n", 0o600)
    restarted = [VOLUMES[m][0] for m in volumes if running.get(VOLUMES[m][0])]
    if restarted:  # only what this backup stopped; a stopped deployment stays stopped
        from posthog_compose.operations import stack

        stack.wait_until_healthy(root, runner, restarted, timeout=600, progress=False)
    result = Result(final, manifest, time.monotonic() - started, hashed.size, pause)
    if keep:
        result.removed = apply_retention(directory, keep, subset)
    return result


def last_line(root: Path, result: Result) -> str:
    where = result.path.relative_to(root) if result.path.is_relative_to(root) else result.path
    pause = f"; ClickHouse paused {result.pause:.1f} s" if result.pause is not None else ""
    removed = f"; removed {len(result.removed)} old archive(s) (--keep)" if result.removed else ""
    kind = "encrypted" if result.manifest.get("encrypted") else "NOT encrypted"
    return (f"Backup written: {where} ({result.size / MIB:,.1f} MiB, {kind}, {len(result.manifest['members'])} "
            f"members) in {result.seconds:.0f} s{pause}{removed}.")


def _stop(root: Path, runner: Runner, service: str) -> None:
    runner.run(compose.command(root, "stop", "--timeout", "60", service), capture=True, timeout=300)


def _start(root: Path, runner: Runner, services: list[str]) -> None:
    runner.run(compose.command(root, "start", *services), capture=True, timeout=300)


def sidecar_path(archive_path: Path) -> Path:
    return archive_path.with_name(archive_path.name + ".json")


def archives(directory: Path, subset: str | None = None) -> list[Path]:
    """The archives in ``directory``, oldest first (by the time in their name)."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = NAME_RE.match(path.name)
            if match and path.is_file() and (subset is None or (match.group(2) or "all") == subset):
                found.append(path)
    return sorted(found, key=lambda p: p.name)


def apply_retention(directory: Path, keep: int, subset: str = "all") -> list[Path]:
    """Delete the oldest archives of ``subset`` (and their sidecars) beyond the newest ``keep``."""
    doomed = archives(directory, subset)[:-keep]
    for path in doomed:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
    return doomed


# ----------------------------------------------------------------------------- list and verify
def list_archives(root: Path, as_json: bool = False) -> None:
    directory = backup_dir(root)
    rows, entries = [], []
    for path in archives(directory):
        meta = {}
        try:
            meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        entry = {"archive": str(path.relative_to(root)), "size": path.stat().st_size,
                 "created": meta.get("created", "?"), "subset": meta.get("subset", "?"),
                 "encrypted": meta.get("encrypted"), "posthog_version": meta.get("posthog_version", "?"),
                 "clickhouse_pause_seconds": meta.get("clickhouse_pause_seconds")}
        entries.append(entry)
        rows.append((entry["archive"], entry["created"], f"{entry['size'] / MIB:,.1f} MiB", entry["subset"],
                     {True: "yes", False: "NO"}.get(entry["encrypted"], "?"), str(entry["posthog_version"])))
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        print(f"No archives in {BACKUP_DIR}/ yet; `invoke backup` writes one.")
        return
    from posthog_compose.cli import table

    print(table([("ARCHIVE", "CREATED", "SIZE", "CONTENT", "ENCRYPTED", "POSTHOG"), *rows]))
    print(f"{len(entries)} archive(s); check one with `invoke backup --verify ARCHIVE`.")


def resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(root) / path, backup_dir(root) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise OperatorError(f"{value}: no such archive; `invoke backup --list` shows them")


def verify_archive(root: Path, value: str, passphrase_file: str | None = None, as_json: bool = False) -> dict:
    """Read the whole archive: every chunk authenticated, every member's sha256 checked."""
    from posthog_compose.operations import archive

    path = resolve(root, value)
    passphrase = _passphrase_for(path, passphrase_file)
    started = time.monotonic()
    meter = Meter(f"verifying {path.name}", sys.stderr if as_json else sys.stdout)
    with open(path, "rb") as handle:
        try:
            result = archive.verify(_Counting(handle, meter), passphrase)
        except archive.ArchiveError as exc:
            raise OperatorError(describe(path, exc))
    meter.finish()
    manifest = result.manifest
    summary = {"archive": str(path), "ok": True, "seconds": round(time.monotonic() - started, 1),
               "created": manifest.get("created"), "subset": manifest.get("subset"),
               "posthog_version": manifest.get("posthog_version"), "members": len(result.seen),
               "bytes": sum(m.size for m in result.seen)}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{path.name}: OK, {len(result.seen)} members ({summary['bytes'] / MIB:,.1f} MiB) match their sha256; "
              f"created {summary['created']}, PostHog {summary['posthog_version']}.")
    return summary


def _passphrase_for(path: Path, passphrase_file: str | None) -> bytes | None:
    from posthog_compose.operations import archive

    try:
        encrypted = archive.is_encrypted(path)
    except archive.ArchiveError as exc:
        raise OperatorError(describe(path, exc))
    except OSError as exc:
        raise OperatorError(f"{path}: cannot read it ({exc.strerror})")
    return read_passphrase(passphrase_file, required=True) if encrypted else None


def describe(path: Path, exc: Exception) -> str:
    from posthog_compose.operations import archive

    if isinstance(exc, archive.WrongPassphrase):
        return (f"{path.name}: wrong passphrase ({PASSPHRASE_ENV} or --passphrase-file does not open this archive); "
                "nothing was changed")
    return f"{path.name}: the archive is damaged and cannot be used ({exc}); nothing was changed"


class _Counting:
    """A read-only file that reports progress."""

    def __init__(self, handle, meter: Meter):
        self.handle, self.meter, self.done = handle, meter, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.done += len(data)
        self.meter(self.done)
        return data

    def seek(self, *args):
        self.done = 0
        return self.handle.seek(*args)

    def readable(self) -> bool:
        return True

"""`invoke restore ARCHIVE`: bring a deployment back from an archive of `invoke backup`, here or on
a new host.

Order, so that a bad archive changes nothing: find the archive -> passphrase (checked against the
archive's key check) -> read the WHOLE archive once, authenticating every chunk and checking every
member's sha256 against the manifest -> refuse an archive from a newer PostHog than this kit pins ->
check the disk -> ask before replacing existing data (type the deployment's name, or --yes) -> only then:
stop the deployment, remove the volumes the archive replaces, write the configuration (.env first:
its encryption keys belong to the data), load the volumes (tar inside a throwaway container of the
service's own image), start `db` and pg_restore the dump in one transaction, start everything and
wait until healthy with the URL check. The second read checks the sha256 again as it streams.

External datastores: restore never writes into one. A member whose datastore is external in this
deployment's .env (or in the archive's) is refused before anything changes, with the way forward;
the datastores the archive recorded as external are left as the provider keeps them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

from posthog_compose.configuration import compose
from posthog_compose.operations.backup import (BACKUP_DIR, CONFIG_DIRS, CONFIG_FILES, MIB, VOLUMES, Meter, _Counting, _passphrase_for,
                     describe, existing_volumes, resolve, volume_name)
from posthog_compose.operations.engine import Runner, Streaming
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write, timestamp

MAX_CONFIG_BYTES = 64 * MIB


def _config_target(name: str) -> PurePosixPath | None:
    """The deployment-relative path of a config member, or None when the name is not one this kit writes."""
    if not name.startswith("config/"):
        return None
    path = PurePosixPath(name[len("config/"):])
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    if str(path) in CONFIG_FILES or (len(path.parts) > 1 and path.parts[0] in CONFIG_DIRS):
        return path
    return None


def pinned_version(root: Path) -> tuple[int, int, int] | None:
    """The PostHog release this checkout of the kit pins (variables.yml's default POSTHOG_IMAGE)."""
    from posthog_compose.configuration import images
    from posthog_compose.configuration import manifest

    default = manifest.load(root)["POSTHOG_IMAGE"].default or ""
    try:
        return images.release_version(images.parse(default).tag)
    except OperatorError:
        return None


def archive_version(manifest: dict) -> tuple[int, int, int] | None:
    """The release an archive was made with; None for a commit-SHA tag, a digest or a local tag, which
    cannot be ordered against a release (the kit itself can upgrade to those)."""
    from posthog_compose.configuration import images

    try:
        return images.release_version(images.parse(manifest.get("posthog_image", "")).tag)
    except OperatorError:
        return None


def check_version(root: Path, manifest: dict, name: str) -> None:
    pinned, made = pinned_version(root), archive_version(manifest)
    if pinned and made and made > pinned:
        raise OperatorError(f"{name} was made by PostHog {manifest.get('posthog_version')} "
                            f"({manifest.get('posthog_image')}), newer than release-{'.'.join(map(str, pinned))} "
                            "that this checkout of the deployment kit pins; its data may need migrations this "
                            "kit does not know. Update the kit first (`git pull`, or check out the version that "
                            "made the archive), then restore; nothing was changed")


def _verify(path: Path, passphrase: bytes | None, out) -> tuple[dict, dict[str, tuple[bytes, int]]]:
    """First pass: the manifest and the configuration files (kept in memory until everything checks)."""
    from posthog_compose.operations import archive

    config: dict[str, tuple[bytes, int]] = {}
    total = 0
    meter = Meter(f"verifying {path.name}", out)
    result = archive.ReadResult({})
    with open(path, "rb") as handle:
        try:
            for member in archive.iter_members(archive.open_stream(_Counting(handle, meter), passphrase), result):
                if member.name.startswith("config/"):
                    target = _config_target(member.name)
                    if target is None:
                        raise archive.ArchiveError(f"unexpected member {member.name!r}")
                    data = member.stream.read()
                    total += len(data)
                    if total > MAX_CONFIG_BYTES:
                        raise archive.ArchiveError("the configuration members are implausibly large")
                    config[str(target)] = (data, member.mode)
                elif member.name not in VOLUMES and not (member.name.startswith("postgres/")
                                                         and member.name.endswith(".dump")):
                    raise archive.ArchiveError(f"unexpected member {member.name!r}")
        except archive.ArchiveError as exc:
            raise OperatorError(describe(path, exc))
    meter.finish()
    if ".env" not in config:
        raise OperatorError(f"{path.name}: the archive holds no .env, so the data's keys are unknown; nothing was "
                            "changed")
    return result.manifest, config


def restore(root: Path, runner: Runner, value: str, *, yes: bool = False, passphrase_file: str | None = None,
            timeout: float = 600.0, out=None) -> dict:
    from posthog_compose.configuration import checks
    from posthog_compose.operations import stack

    root = Path(root)
    out = out or sys.stdout
    path = resolve(root, value)
    passphrase = _passphrase_for(path, passphrase_file)
    print(f"Plan: verify every checksum of {path.name}, then replace this deployment's configuration and data with "
          "it, start it and wait until healthy.", file=out)
    started = time.monotonic()
    manifest, config = _verify(path, passphrase, out)
    check_version(root, manifest, path.name)
    members = {m["name"]: m for m in manifest["members"]}
    target_values = _archive_values(config)
    refuse_external(root, members, target_values)
    dumps = [name for name in members if name.startswith("postgres/")]
    replaced = [vol for member in members if member in VOLUMES for vol in VOLUMES[member][2]]
    if dumps:
        replaced.append("postgres-data")
    from posthog_compose.operations.stack import services_here

    if manifest.get("subset") == "all" and "kafka" in services_here(target_values):
        replaced.append("kafka-data")  # events in flight belong to the old ZooKeeper state: start Kafka empty
    print(f"Archive OK: created {manifest.get('created')}, PostHog {manifest.get('posthog_version')}, "
          f"{len(members)} members verified.", file=out)
    for name, entry in (manifest.get("external") or {}).items():
        if isinstance(entry, dict):
            print(f"  {_LABELS.get(name, name)} was external ({entry.get('endpoint', '?')}) when the archive was "
                  "made: its data is not in the archive and stays as the provider keeps it.", file=out)

    # The deployment restored into is the one the archive's configuration names (the shell's
    # COMPOSE_PROJECT_NAME first, as Compose reads it): its volumes, and only its, are replaced.
    project = compose.project_name_of(target_values)
    present = existing_volumes(runner, project)
    existing = [volume_name(project, v) for v in replaced if volume_name(project, v) in present]
    if existing:
        print(f"The deployment {project!r} already holds data: {', '.join(existing)}. Restoring DELETES it and "
              "puts the archive's data in its place.", file=out)
        if not yes:
            out.write(f"Type the deployment's name ({project}) to replace the data: ")
            out.flush()
            answer = sys.stdin.readline()
            if not answer:
                raise OperatorError("no confirmation (no input): nothing was changed; pass --yes for automation")
            if answer.strip() != project:
                raise OperatorError(f"confirmation {answer.strip()!r} is not {project!r}: nothing was changed")
    _check_disk(runner, sum(m["size"] for n, m in members.items() if not n.startswith("config/")))

    # From here on the deployment changes.
    if (root / ".env").exists():  # a new host's fresh checkout has no .env and nothing running
        print("Stopping the deployment ...", file=out)
        runner.run(compose.command(root, "down", "--remove-orphans"), capture=True, timeout=600)
    for volume in existing:
        runner.run(["docker", "volume", "rm", volume], capture=True, timeout=120)
    try:
        saved = _write_config(root, config)
    except OSError as exc:
        raise OperatorError(f"writing the configuration failed ({exc.strerror or exc}); the deployment is stopped and "
                            "half restored: fix the cause and restore again with --yes")
    if saved:
        print(f"Previous configuration kept in {saved.relative_to(root)}/.", file=out)
    values = _values(root)
    if dumps:
        print("Starting db ...", file=out)
        _up(root, runner, ["db"], timeout, out)
    _load_data(root, runner, path, passphrase, values, out)
    print("Starting PostHog ...", file=out)
    checks.require_clean(root)
    _up(root, runner, [], timeout, out)
    ok, detail = stack.check_url(values, timeout=min(60.0, timeout))
    if not ok:
        raise OperatorError(f"the data is restored and every service is healthy, but the URL check failed: {detail}")
    print(f"URL check: {detail}.", file=out)
    seconds = time.monotonic() - started
    summary = {"archive": str(path), "created": manifest.get("created"), "posthog_version":
               manifest.get("posthog_version"), "seconds": round(seconds, 1), "replaced_volumes": existing}
    print(f"Restored {path.name} (made {manifest.get('created')}) in {seconds:.0f} s; PostHog is up and healthy.",
          file=out)
    return summary


_LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}
#: archive member -> (compose service it loads into, datastore, the .env switch)
_MEMBER_SERVICES = {"volumes/clickhouse.tar": ("clickhouse", "clickhouse", "CLICKHOUSE_MODE"),
                    "volumes/zookeeper.tar": ("zookeeper", "clickhouse", "CLICKHOUSE_MODE")}


def _archive_values(config: dict[str, tuple[bytes, int]]) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile

    try:
        return EnvFile.parse(config[".env"][0].decode("utf-8", errors="replace")).resolved()
    except Exception:  # the archive's .env is checked again by config-check once written
        return {}


def refuse_external(root: Path, members: dict, archive_values: dict[str, str]) -> None:
    """Refuse, before anything changes, to load a member into a datastore that is external now (in this
    deployment's .env) or in the archive's own .env: restore writes into local services only."""
    from posthog_compose.configuration import datastores
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    current = {}
    if path.exists():
        try:
            current = EnvFile.load(path).resolved()
        except Exception:
            current = {}
    for member in members:
        if member.startswith("postgres/"):
            service, datastore, switch = "db", "postgres", "POSTGRES_MODE"
        elif member in _MEMBER_SERVICES:
            service, datastore, switch = _MEMBER_SERVICES[member]
        else:
            continue
        for values, where in ((current, ".env"), (archive_values, "the archive's .env")):
            if datastores.mode(values, datastore) != "external":
                continue
            found = stack.first_endpoints(values)
            endpoint = stack.endpoint_text(found.get(datastore))
            raise OperatorError(
                f"{member}: {_LABELS[datastore]} is external in {where} ({endpoint}) and restore loads data only into "
                f"a local {service}. Load it at the provider yourself (handbook: External datastores), or set "
                f"{switch}=local in .env to bring {service} back here and restore again; nothing was changed")


def _up(root: Path, runner: Runner, services: list[str], timeout: float, out) -> None:
    """`compose up --detach --wait` (Compose shows each container's progress on stderr); a service that
    does not become healthy ends with its last log lines."""
    from posthog_compose.operations import stack

    command = compose.command(root, "up", "--detach", "--wait", "--wait-timeout", str(int(timeout)), *services)
    result = runner.run(command, check=False, timeout=timeout + 120)
    if result.returncode != 0:
        states = {s.service: s for s in stack.service_states(root, runner)}
        expected = services or stack.services_here(_values(root))
        failing = [n for n in expected if not (n in states and states[n].ready)] or list(expected)
        with contextlib.redirect_stdout(out):
            stack.raise_failure(root, runner, failing, states, f"not healthy after the restore (compose exit "
                                                                f"{result.returncode})")


def _values(root: Path) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    return EnvFile.load(env_path(root)).resolved()


def _check_disk(runner: Runner, needed: int) -> None:
    import shutil

    result = runner.run(["docker", "info", "--format", "{{.DockerRootDir}}"], capture=True, check=False,
                        mutating=False, timeout=30)
    docker_root = (result.stdout or "").strip()
    if result.returncode != 0 or not docker_root or not Path(docker_root).exists():
        return  # a remote engine: its disk cannot be measured from here
    free = shutil.disk_usage(docker_root).free
    want = int(needed * 1.5 + 256 * MIB)  # a restored PostgreSQL is larger than its compressed dump
    if free < want:
        raise OperatorError(f"only {free / MIB:,.0f} MiB free on Docker's data root ({docker_root}); restoring "
                            f"needs about {want / MIB:,.0f} MiB. Free space and restore again; nothing was changed")


def _write_config(root: Path, config: dict[str, tuple[bytes, int]]) -> Path | None:
    """Write the archive's configuration; files that differ are kept under backups/pre-restore-<time>/."""
    saved_dir = root / BACKUP_DIR / f"pre-restore-{timestamp()}"
    saved = False
    for name in sorted(config, key=lambda n: n != ".env"):  # .env first
        data, mode = config[name]
        target = root / name
        if target.exists() and target.read_bytes() != data:
            keep = saved_dir / name
            keep.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            (root / BACKUP_DIR).chmod(0o700)
            keep.write_bytes(target.read_bytes())
            keep.chmod(0o600)
            saved = True
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == ".env":
            mode = 0o600
        atomic_write(target, data, mode)
    return saved_dir if saved else None


def _load_data(root: Path, runner: Runner, path: Path, passphrase: bytes | None, values: dict[str, str], out) -> None:
    """Second pass: stream each data member into its consumer; the sha256 is checked again at the end."""
    from posthog_compose.operations import archive

    result = archive.ReadResult({})
    with open(path, "rb") as handle:
        try:
            for member in archive.iter_members(archive.open_stream(handle, passphrase), result):
                if member.name in VOLUMES:
                    service, mount, _volumes = VOLUMES[member.name]
                    command = compose.command(root, "run", "--rm", "--no-deps", "-T", "--user", "0:0", "--entrypoint",
                                              "tar", service, "--numeric-owner", "-C", mount, "-xf", "-")
                    _feed(member, command, runner, root, Meter(f"loading {member.name}", out))
                elif member.name.startswith("postgres/"):
                    user, database = values.get("POSTGRES_USER", "posthog"), values.get("POSTGRES_DB", "posthog")
                    command = compose.command(root, "exec", "-T", "db", "pg_restore", "-U", user, "-d", database,
                                              "--exit-on-error", "--single-transaction")
                    _feed(member, command, runner, root, Meter(f"pg_restore {member.name}", out))
        except archive.ArchiveError as exc:
            raise OperatorError(f"{path.name} changed or failed while it was being restored ({exc}); the "
                                "deployment is half restored: fix the cause and restore again with --yes")


def _feed(member, command: list[str], runner: Runner, root: Path, meter: Meter) -> None:
    stream = Streaming(command, runner, root, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    done = 0
    with stream as process:
        try:
            while True:
                data = member.stream.read(1024 * 1024)
                if not data:
                    break
                process.stdin.write(data)
                done += len(data)
                meter(done)
            process.stdin.close()
        except BrokenPipeError:
            pass
    meter.finish()
    if stream.returncode != 0:
        raise OperatorError(f"loading {member.name} failed ({stream.last_error()}); the deployment is half restored: "
                            "fix the cause and restore again with --yes")


def print_summary(summary: dict) -> None:
    print(json.dumps(summary, indent=2))

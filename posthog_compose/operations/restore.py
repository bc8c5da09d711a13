"""`invoke restore ARCHIVE`: bring a deployment back from an archive of `invoke backup`, here or on
a new host.

Order, so that a bad archive changes nothing: find the archive -> passphrase (checked against the
archive's key check) -> read the WHOLE archive once, authenticating every chunk, checking every
member's sha256, size and mode against the manifest and every field of the manifest -> check what
the archive's configuration needs: its .env reads as KEY=VALUE lines, every file it and its compose
files refer to is in the archive or in this checkout, no file of it collides with a folder here ->
refuse an archive from a newer PostHog than this kit pins -> check the disk -> ask before replacing
existing data (type the deployment's name, or --yes) -> only then: stop the deployment, remove the
volumes the archive replaces, write the configuration (.env first: its encryption keys belong to the
data), load the volumes (tar inside a throwaway container of the service's own image), start `db` and
pg_restore the dump in one transaction, start everything and wait until healthy with the URL check.
The second read (of the same open file) checks the sha256 again as it streams.

Journaled: from the first change on, ``.deploy/journal/restore.json`` names the archive (path and
sha256), the deployment and the step reached; it is cleared once every service is healthy, or by
`invoke restore ARCHIVE --abandon`. Until then `status` names the restore and the one command that finishes
it, and every changing task refuses (``recover``); `up` starts only the datastores, because PostHog
would migrate a fresh schema into the emptied database and take events that the restore then drops.
Restoring the same archive again finishes it: every volume it replaces is removed and loaded anew.

Every value of the archive that is printed goes through ``archive.shown`` (no terminal escapes).

External datastores: restore never writes into one. A member whose datastore is external in this
deployment's .env (or in the archive's) is refused before anything changes, with the way forward;
the datastores the archive recorded as external are left as the provider keeps them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

from posthog_compose import journal
from posthog_compose.cli import confirm_by_name
from posthog_compose.configuration import compose
from posthog_compose.operations.archive_checks import shown
from posthog_compose.operations.backup import (BACKUP_DIR, MIB, VOLUMES, Meter, _Counting, _passphrase_for, describe,
                                               existing_volumes, resolve, volume_name)
from posthog_compose.operations.engine import Runner, Streaming
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write, timestamp

MAX_CONFIG_BYTES = 64 * MIB
#: Folders of the configuration that hold private keys: created 0700 when a restore creates them.
PRIVATE_DIRS = ("certs",)


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
        release = ".".join(map(str, pinned))
        raise OperatorError(f"{shown(name)} was made by PostHog {shown(manifest.get('posthog_version'))} "
                            f"({shown(manifest.get('posthog_image'))}), newer than release-{release} "
                            "that this checkout of the deployment kit pins; its data may need migrations this "
                            "kit does not know. Update the kit first (`git pull`, or check out the version that "
                            "made the archive), then restore; nothing was changed")


def _warn_other_kit(root: Path, path: Path, manifest: dict, out) -> None:
    from posthog_compose.operations.backup import provenance

    line = provenance.mismatch_line(path.name, manifest.get("kit"), provenance.kit_version(root))
    if line:
        print(line, file=out)


#: The configuration of an archive, held in memory until everything checks: path -> (bytes, mode).
Config = dict[str, tuple[bytes, int]]


def _verify(path: Path, handle, passphrase: bytes | None, out) -> tuple[dict, Config, str]:
    """First pass: every member read and checked, the manifest and its fields checked, the
    configuration files kept in memory; also the file's sha256."""
    from posthog_compose.operations import archive
    from posthog_compose.operations.backup.contents import check_manifest, member_problem

    config: dict[str, bytes] = {}
    total = 0
    meter = Meter(f"verifying {shown(path.name)}", out)
    result = archive.ReadResult({})
    hashing = _Hashing(handle)
    try:
        for member in archive.iter_members(archive.open_stream(_Counting(hashing, meter), passphrase), result):
            problem = member_problem(member.name)
            if problem:
                raise archive.ArchiveError(problem)
            if member.name.startswith("config/"):
                data = member.stream.read_all(MAX_CONFIG_BYTES - total)
                total += len(data)
                config[member.name[len("config/"):]] = data
        check_manifest(result.manifest)
    except archive.ArchiveError as exc:
        raise OperatorError(describe(path, exc))
    meter.finish()
    while hashing.read(MIB):  # whatever follows the manifest belongs to the file's sha256 too
        pass
    return (result.manifest, {name: (data, result.mode_of(f"config/{name}")) for name, data in config.items()},
            hashing.hexdigest())


class _Hashing:
    """The archive file as the first pass reads it, hashed on the way: the journal names the archive
    by its sha256 without a third read of a file that may be many GiB."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def seek(self, offset: int, whence: int = 0):
        if (offset, whence) != (0, 0):  # the reader only rewinds after sniffing the magic
            raise OSError("the first pass reads the archive once, from its start")
        self.digest = hashlib.sha256()
        return self.handle.seek(0)

    def readable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _archive_values(path: Path, config: Config) -> dict[str, str]:
    """The archive's .env as Compose will see it; one line when it cannot configure a deployment
    (checked here, before anything is written, rather than by the first command after)."""
    from posthog_compose.configuration.envfile import EnvFile

    where = f"{shown(path.name)}: the archive's .env"
    try:
        text = config[".env"][0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OperatorError(f"{where} is not UTF-8 text (byte {exc.start}), so no deployment can use it; nothing "
                            "was changed")
    env = EnvFile.parse(text)
    broken = [entry.line for entry in env.entries if entry.error]
    if broken:
        raise OperatorError(f"{where} has a line that is not KEY=VALUE (line {broken[0]}), which Compose rejects; "
                            "nothing was changed")
    return env.resolved()


def _check_configuration(root: Path, path: Path, config: Config, values: dict[str, str]) -> None:
    """Before anything is written: every file the archive's configuration refers to is in the archive
    or already here, and no file of it would have to replace a folder (or sit below a file) here."""
    from posthog_compose.operations.backup import references

    names = set(config)
    folders = {str(parent) for name in names for parent in PurePosixPath(name).parents if str(parent) != "."}
    for name in sorted(names):
        clash = (root / name).is_dir() or name in folders or next(
            (str(p) for p in PurePosixPath(name).parents if str(p) != "." and (root / p).exists()
             and not (root / p).is_dir()), None)
        if clash:
            raise OperatorError(f"{shown(path.name)}: config/{shown(name)} cannot be written here (a folder of that "
                                "name, or a file where its folder should be); move that away and restore again; "
                                "nothing was changed")

    def exists(name: str) -> bool:
        return name in names or any(n.startswith(name + "/") for n in names) or (root / name).exists()

    def read(name: str) -> bytes | None:
        if name in config:
            return config[name][0]
        try:
            return (root / name).read_bytes() if (root / name).is_file() else None
        except OSError:
            return None

    problems = references.missing(root, values, read, exists)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise OperatorError(f"{shown(path.name)}: the archive's configuration is incomplete here: "
                            f"{shown(problems[0], 300)}{more}. Put what it names in place (from the host the archive "
                            "came from) and restore again, or restore another archive; nothing was changed")


def restore(root: Path, runner: Runner, value: str, *, yes: bool = False, passphrase_file: str | None = None,
            timeout: float = 600.0, out=None) -> dict:
    root = Path(root)
    out = out or sys.stdout
    path = resolve(root, value)
    left = journal.read(root, "restore")
    passphrase = _passphrase_for(path, passphrase_file)
    print(f"Plan: verify every checksum of {shown(path.name)}, then replace this deployment's configuration and "
          "data with it, start it and wait until healthy.", file=out)
    started = time.monotonic()
    # One open file for both reads: the archive loaded is the one verified, whatever happens to its name.
    with open(path, "rb") as handle:
        try:
            return _restore(root, runner, path, handle, passphrase, yes, timeout, out, started,
                            _Record(root, path, passphrase_file, left))
        except KeyboardInterrupt:
            line = interrupted_line(root)  # Ctrl-C after the first change: say at once how to finish
            if line:
                print(f"{line}.", file=out)
            raise


def _restore(root: Path, runner: Runner, path: Path, handle, passphrase: bytes | None, yes: bool, timeout: float,
             out, started: float, record: "_Record") -> dict:
    from posthog_compose.configuration import checks
    from posthog_compose.operations import stack

    manifest, config, sha256 = _verify(path, handle, passphrase, out)
    target_values = _archive_values(path, config)
    _check_configuration(root, path, config, target_values)
    check_version(root, manifest, path.name)
    _warn_other_kit(root, path, manifest, out)
    members = {m["name"]: m for m in manifest["members"]}
    refuse_external(root, members, target_values)
    dumps = [name for name in members if name.startswith("postgres/")]
    replaced = [vol for member in members if member in VOLUMES for vol in VOLUMES[member][2]]
    if dumps:
        replaced.append("postgres-data")
    from posthog_compose.operations.stack import services_here

    if manifest.get("subset") == "all" and "kafka" in services_here(target_values):
        replaced.append("kafka-data")  # events in flight belong to the old ZooKeeper state: start Kafka empty
    print(f"Archive OK: created {shown(manifest.get('created'))}, PostHog {shown(manifest.get('posthog_version'))}, "
          f"{len(members)} members verified.", file=out)
    for name, entry in (manifest.get("external") or {}).items():
        print(f"  {_LABELS[name]} was external ({shown(entry['endpoint'])}) when the archive was made: its data is "
              "not in the archive and stays as the provider keeps it.", file=out)

    # The deployment restored into is the one the archive's configuration names (the shell's
    # COMPOSE_PROJECT_NAME first, as Compose reads it): its volumes, and only its, are replaced.
    project = compose.project_name_of(target_values)
    present = existing_volumes(runner, project)
    existing = [volume_name(project, v) for v in replaced if volume_name(project, v) in present]
    if existing:
        print(f"The deployment {project!r} already holds data: {', '.join(existing)}. Restoring DELETES it and "
              "puts the archive's data in its place.", file=out)
        if not yes:
            confirm_by_name(project, "replace the data", "nothing was changed", out)
    _check_disk(runner, sum(m["size"] for n, m in members.items() if not n.startswith("config/")))
    record.announce(sha256, out)

    # From here on the deployment changes: the journal first, so that a task killed at any later
    # step leaves a record that `status` and `up` name, instead of a deployment that looks healthy
    # with its database empty.
    record.start(sha256, manifest, project, existing)
    if (root / ".env").exists():  # a new host's fresh checkout has no .env and nothing running
        print("Stopping the deployment ...", file=out)
        runner.run(compose.command(root, "down", "--remove-orphans"), capture=True, timeout=600)
    record.step("removing the data volumes")
    for volume in existing:
        runner.run(["docker", "volume", "rm", volume], capture=True, timeout=120)
    record.step("writing the configuration")
    try:
        saved = _write_config(root, config)
    except OSError as exc:
        raise OperatorError(f"writing the configuration failed ({exc.strerror or exc}); the deployment is stopped and "
                            "half restored: fix the cause and restore again with --yes")
    journal.fault_point("restore-config-written")
    if saved:
        print(f"Previous configuration kept in {saved.relative_to(root)}/.", file=out)
    values = _values(root)
    if dumps:
        record.step("starting db")
        print("Starting db ...", file=out)
        _up(root, runner, ["db"], timeout, out)
    _load_data(root, runner, path, handle, passphrase, manifest, values, out, record)
    record.step("starting PostHog")
    journal.fault_point("restore-final-start")
    print("Starting PostHog ...", file=out)
    checks.require_clean(root)
    _up(root, runner, [], timeout, out)
    journal.clear(root, "restore")  # every service healthy on the archive's data: the restore is done
    ok, detail = stack.check_url(values, timeout=min(60.0, timeout))
    if not ok:
        raise OperatorError(f"the data is restored and every service is healthy, but the URL check failed: {detail}")
    print(f"URL check: {detail}.", file=out)
    seconds = time.monotonic() - started
    summary = {"archive": str(path), "created": manifest.get("created"), "posthog_version":
               manifest.get("posthog_version"), "seconds": round(seconds, 1), "replaced_volumes": existing}
    print(f"Restored {shown(path.name)} (made {shown(manifest.get('created'))}) in {seconds:.0f} s; PostHog is up "
          "and healthy.", file=out)
    return summary


_LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}
#: archive member -> (compose service it loads into, datastore, the .env switch)
_MEMBER_SERVICES = {"volumes/clickhouse.tar": ("clickhouse", "clickhouse", "CLICKHOUSE_MODE"),
                    "volumes/zookeeper.tar": ("zookeeper", "clickhouse", "CLICKHOUSE_MODE")}


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
        expected = services or stack.deployment_services(_values(root))  # the edge proxy too, when it is on
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
        top = PurePosixPath(name).parts[0]
        if top in PRIVATE_DIRS and not (root / top).exists():
            (root / top).mkdir(mode=0o700)
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == ".env":
            mode = 0o600
        atomic_write(target, data, mode)
    return saved_dir if saved else None


def _load_data(root: Path, runner: Runner, path: Path, handle, passphrase: bytes | None, verified: dict,
               values: dict[str, str], out, record: "_Record") -> None:
    """Second pass over the open file: stream each data member into its consumer; the sha256 is
    checked again at the end, and a member that differs from the first pass stops the load."""
    from posthog_compose.operations import archive

    result = archive.ReadResult({})
    expected = [m["name"] for m in verified["members"]]
    handle.seek(0)
    try:
        for index, member in enumerate(archive.iter_members(archive.open_stream(handle, passphrase), result)):
            if index >= len(expected) or member.name != expected[index]:
                raise archive.ArchiveError("its members differ from the first read")
            if member.name in VOLUMES:
                service, mount, _volumes = VOLUMES[member.name]
                command = compose.command(root, "run", "--rm", "--no-deps", "-T", "--user", "0:0", "--entrypoint",
                                          "tar", service, "--numeric-owner", "-C", mount, "-xf", "-")
                record.step(f"loading {member.name}")
                _feed(member, command, runner, root, Meter(f"loading {member.name}", out), "restore-loading-volume")
            elif member.name.startswith("postgres/"):
                user, database = values.get("POSTGRES_USER", "posthog"), values.get("POSTGRES_DB", "posthog")
                command = compose.command(root, "exec", "-T", "db", "pg_restore", "-U", user, "-d", database,
                                          "--exit-on-error", "--single-transaction")
                record.step(f"pg_restore of {member.name}")
                _feed(member, command, runner, root, Meter(f"pg_restore {member.name}", out), "restore-pg-restore")
    except archive.ArchiveError as exc:
        raise OperatorError(f"{shown(path.name)} changed or failed while it was being restored ({exc}); the "
                            "deployment is half restored: fix the cause and restore again with --yes")


def _feed(member, command: list[str], runner: Runner, root: Path, meter: Meter, fault: str) -> None:
    stream = Streaming(command, runner, root, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    done = 0
    with stream as process:
        journal.fault_point(fault)  # the loader runs and has been fed nothing yet
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


# ----------------------------------------------------------------------------- the journal entry
class InterruptedRestore(OperatorError):
    """A restore was interrupted after it began replacing data: its line names the command that finishes it."""


class _Record:
    """The restore's journal entry (.deploy/journal/restore.json): written before the first change,
    its step updated as the restore goes, cleared once every service is healthy."""

    def __init__(self, root: Path, path: Path, passphrase_file: str | None, left: dict | None):
        self.root, self.path, self.left = root, path.resolve(), left
        self.passphrase_file = str(Path(passphrase_file).resolve()) if passphrase_file else None
        self.entry: dict = {}

    def announce(self, sha256: str, out) -> None:
        """Before anything changes: say whether this run finishes an interrupted restore or replaces it."""
        if not self.left:
            return
        if self.left.get("sha256") == sha256:
            reached = shown(self.left.get("step"))
            print(f"Finishing the interrupted restore of this archive (it had reached: {reached}).", file=out)
        else:
            print(f"An interrupted restore of {_archive_shown(self.root, self.left)} is recorded; this restore of "
                  f"{shown(self.path.name)} takes its place.", file=out)

    def start(self, sha256: str, manifest: dict, project: str, replaced: list[str]) -> None:
        self.entry = {"archive": str(self.path), "sha256": sha256, "created": manifest.get("created"),
                      "project": project, "root": str(Path(self.root).resolve()), "replaced_volumes": replaced,
                      "passphrase_file": self.passphrase_file}
        self.step("stopping the deployment")
        journal.fault_point("restore-journal-written")

    def step(self, step: str) -> None:
        self.entry["step"] = step
        journal.write(self.root, "restore", self.entry)

    def command(self) -> str:
        return finishing_command(self.root, {**self.entry, "archive": str(self.path)})


def _archive_shown(root: Path, entry: dict) -> str:
    """The archive as the operator types it: relative to the deployment when it lies inside it."""
    archive = Path(str(entry.get("archive") or "?"))
    with contextlib.suppress(ValueError):
        archive = archive.relative_to(Path(root).resolve())
    return shown(str(archive), 4096)  # whole: it is typed back


def finishing_command(root: Path, entry: dict) -> str:
    command = f"invoke restore {shlex.quote(_archive_shown(root, entry))} --yes"
    if entry.get("passphrase_file"):
        command += f" --passphrase-file {shlex.quote(shown(str(entry['passphrase_file']), 4096))}"
    return command


def interrupted_line(root: Path, entry: dict | None = None) -> str | None:
    """The one line naming a recorded interrupted restore and the command that finishes it; None when
    there is none."""
    entry = journal.read(root, "restore") if entry is None else entry
    if entry is None:
        return None
    return (f"An interrupted restore of {_archive_shown(root, entry)} is recorded (step: {shown(entry.get('step'))}): "
            f"finish it with `{finishing_command(root, entry)}`")


#: What `up` leaves stopped while a restore is pending: PostHog itself would migrate a fresh schema into
#: the emptied database and take in events that finishing the restore then deletes.
POSTHOG_SERVICES = ("web", "worker", "plugins")


@journal.recovers("restore")
def recover(root: Path, runner: Runner) -> None:
    """A changing task found an interrupted restore: refuse it. Nothing can finish a restore but the
    archive (and its passphrase), and an upgrade, rotation or migration on half-restored data would
    be lost or wrong once the restore is finished."""
    line = interrupted_line(root)
    if line:
        raise InterruptedRestore(line)


def abandon(root: Path, value: str, yes: bool = False, out=None) -> None:
    """`invoke restore ARCHIVE --abandon`: drop the record of the interrupted restore of ARCHIVE, knowingly
    (the archive is named so that nobody abandons a restore they have not read about; it need not
    exist any more), and say what that means."""
    out = out or sys.stdout
    root = Path(root)
    entry = journal.read(root, "restore")
    if entry is None:
        raise OperatorError("no interrupted restore is recorded in this deployment: there is nothing to abandon")
    recorded = Path(str(entry.get("archive") or ""))
    named = {str(Path(value).resolve()), str((root / value).resolve()), str((root / BACKUP_DIR / value).resolve())}
    if str(recorded) not in named:
        raise OperatorError(f"the interrupted restore recorded here is of {_archive_shown(root, entry)}, not "
                            f"{shown(value, 300)}: name that archive with --abandon to give it up; nothing was changed")
    print(interrupted_line(root, entry) + ".", file=out)
    print("Abandoning it undoes nothing: the data it had already deleted stays deleted and what it had not loaded "
          "yet stays missing (PostgreSQL may be empty), and `invoke up` will then start PostHog on that data as it "
          "is. To get the archive's data back instead, run the command above.", file=out)
    project = str(entry.get("project") or compose.project_name(root))
    if not yes:
        confirm_by_name(project, "abandon the restore", "the restore is still recorded", out)
    journal.clear(root, "restore")
    print(f"The interrupted restore of {_archive_shown(root, entry)} is abandoned; `invoke up` starts the deployment "
          "on the data it has now.", file=out)

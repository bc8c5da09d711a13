"""`invoke backup`: one archive with everything needed to bring the deployment back on a new host.

Owns what goes into an archive and how it is taken: the configuration (.env with every secret, the
compose files, the manifest, clickhouse/, postgres/, certs/), PostgreSQL as a pg_dump custom-format
dump (run inside `db`, streamed out in parallel with the volume copies, checked by `pg_restore --list`), the
ZooKeeper volumes as a tar stream taken while ZooKeeper is stopped (a few seconds, measured), and the
ClickHouse volume taken while ClickHouse serves: every MergeTree-family table is frozen
(`ALTER TABLE ... FREEZE WITH NAME`) while ZooKeeper is stopped, so the frozen parts and ZooKeeper's
record of them are of the same moment; the tar holds the data directory with the frozen parts in
place of the live ones (capture.CLICKHOUSE_COPY), so a restore extracts it as it extracted the tar of
a stopped ClickHouse. A stopped ClickHouse is copied as it is.
Also: the passphrase (environment variable or key file, never the command line), the free-space
preflight, live progress, retention (--keep), --list and --verify. The archive format and its
encryption live in archive.py; restoring lives in restore.py.

A datastore that .env makes external (datastores.py) is not taken: one line says so and the
archive's manifest records it under "external", with the endpoint (host:port, never credentials);
its backups are the provider's. `create(root, runner, subset="postgres")` is the pre-upgrade backup
of `invoke upgrade`, which refuses when PostgreSQL is external (`upgrade` decides what then).

One part per module: contents (what an archive holds and where archives live), passphrase, progress (the
live meter), capture (taking each part from the engine: the pg_dump stream, the volume tars, the sizes),
retention (the archives on disk, the backup sequence and --keep), recovery (what a killed backup left:
its stopped services, through the journal, and its .partial files), verify (--list and --verify) and
references (the files the configuration refers to, which an archive must carry), provenance (the kit's own
version, recorded as "kit") and inventory (every table's row count, recorded as "tables" for the
restore drill). This module holds ``create``,
which takes them in order and calls every engine step through its own names, so a test can replace a
step here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from posthog_compose import journal
from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import _fsync_dir, atomic_write, timestamp
from posthog_compose.operations.backup.contents import (
    BACKUP_DIR,
    PASSPHRASE_ENV,
    SUFFIX,
    FORMAT,
    MIB,
    CONFIG_FILES,
    CONFIG_DIRS,
    VOLUMES,
    SUBSETS,
    NOT_BACKED_UP,
    NAME_RE,
    Result,
    backup_dir,
    _values,
    EXTERNAL_LINES,
    external_datastores,
    local_volume_members,
    volume_name,
    config_files,
    last_line,
)
from posthog_compose.operations.backup import references
from posthog_compose.operations.backup.passphrase import read_passphrase
from posthog_compose.operations.backup.progress import Meter, _CountingFile, _Counting
from posthog_compose.operations.backup.capture import (
    existing_volumes,
    _running,
    _exec_text,
    _psql,
    _volume_sizes,
    _tar_command,
    _stream_member,
    _PgDump,
    pg_restore_entries,
    posthog_version,
    _stop,
    _start,
    FREEZE_PREFIX,
    freeze_name,
    mergetree_tables,
    freeze,
    unfreeze,
    clickhouse_copy_command,
    remove_frozen,
)
from posthog_compose.operations.backup.retention import (sidecar_path, archives, apply_retention, next_sequence,
                                                         order_of)
from posthog_compose.operations.backup import provenance, recovery
from posthog_compose.operations.backup.inventory import clickhouse_counts, postgres_counts
from posthog_compose.operations.backup.verify import list_archives, resolve, verify_archive, _passphrase_for, describe


#: Free space demanded beyond the estimate: 10 % plus 256 MiB.
MARGIN_RATIO, MARGIN_BYTES = 1.10, 256 * MIB


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
    # What a killed backup left: its stopped services first (the checks below need them running).
    recovery.recover_if_pending(root, runner, out)
    recovery.remove_stale(directory, out)

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
    project = compose.project_name(root)
    present = existing_volumes(runner, project) if volumes else set()
    for member, (service, _mount, vols) in list(volumes.items()):
        missing = [v for v in vols if volume_name(project, v) not in present]
        if missing:
            raise OperatorError(f"volume {volume_name(project, missing[0])} does not exist: the deployment "
                                f"{project!r} has never run {service}; start it once with `invoke up`")

    # Estimate and preflight.
    user, database = values.get("POSTGRES_USER", "posthog"), values.get("POSTGRES_DB", "posthog")
    # The measurements are container round trips: they run side by side.
    counting_clickhouse = "volumes/clickhouse.tar" in volumes and running.get("clickhouse")
    with ThreadPoolExecutor(5) as pool:
        pg_future = pool.submit(_psql, root, runner, values, "SELECT pg_database_size(current_database()) || ' ' || "
                                                              "current_setting('server_version')") if pg_local else None
        sizes_future = pool.submit(_volume_sizes, runner, values["POSTGRES_IMAGE"], volumes, project) if volumes else None
        ch_future = pool.submit(_exec_text, root, runner, "clickhouse", "clickhouse-client", "--query",
                                "SELECT version()") if running.get("clickhouse") else None
        # Row counts for the restore drill, taken before anything is copied (inventory.py).
        pg_counts = pool.submit(postgres_counts, root, runner, values) if pg_local else None
        ch_counts = pool.submit(clickhouse_counts, root, runner) if counting_clickhouse else None
        kit = pool.submit(provenance.kit_version, root)
        answer = ((pg_future.result() if pg_future else None) or "0 ?").split(" ", 1)
        row_counts = {"postgres": pg_counts.result() if pg_counts else None,
                      "clickhouse": ch_counts.result() if ch_counts else None}
        kit = kit.result()
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
          f"({'encrypted with age and the passphrase' if encrypted else 'NOT encrypted: it holds every secret of .env'}); "
          f"about {estimate / MIB:,.0f} MiB.", file=out)
    # A running ClickHouse is copied from its own snapshot and never stops; only ZooKeeper does.
    online = bool(volumes) and "volumes/clickhouse.tar" in volumes and bool(running.get("clickhouse"))
    if online:
        print("  ClickHouse keeps serving: its tables are frozen (ALTER TABLE ... FREEZE) while ZooKeeper stops for "
              "the copy of its volumes (seconds); inserts wait in Kafka meanwhile.", file=out)
    elif volumes and running.get("zookeeper"):
        print("  ZooKeeper stops while its volumes are copied.", file=out)
    for entry in outside.values():
        print(f"  {entry['line']}.", file=out)
    for line in references.uncarried(root, values, {path.as_posix() for path in config_files(root)}):
        print(f"  warning: {line}; a restore on a new host refuses without it.", file=out)
    started = time.monotonic()
    versions = {"postgres": pg_version, "clickhouse": clickhouse_version}
    stopped: list[str] = []
    pause_started: float | None = None
    pause: float | None = 0.0 if online else None  # ClickHouse's: it no longer stops
    paused: dict[str, float] = {}  # service -> seconds it was stopped for its copy
    owner = recovery.owner_path(directory, final.name)
    to_pause = [VOLUMES[m][0] for m in volumes if running.get(VOLUMES[m][0])
                and not (online and VOLUMES[m][0] == "clickhouse")]
    frozen_as = freeze_name(stamp)
    tables: list[tuple[str, str]] = []
    froze = False
    dump: _PgDump | None = None
    try:
        sequence = next_sequence(root, directory)
        recovery.claim(directory, final.name)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=archive.CHUNK) as handle:
            if pg_local:
                dump = _PgDump(root, runner, user, database, directory / f".{final.name}.pgdump.partial")
            hashed = _CountingFile(handle)
            # Format 4: a tar, inside age with the passphrase (archive.writer); stock tools read it.
            writer, sink = archive.writer(hashed, passphrase if encrypted else None)
            for path in config_files(root):
                data = (root / path).read_bytes()
                writer.add_bytes(f"config/{path.as_posix()}", data, (root / path).stat().st_mode & 0o777)
            if online:
                tables = mergetree_tables(root, runner)
            if to_pause:
                recovery.record_pause(root, to_pause)
            for member, (service, mount, vols) in volumes.items():  # ZooKeeper first (contents.VOLUMES)
                online_copy = online and service == "clickhouse"
                if not online_copy and running.get(service):
                    pause_started = time.monotonic()
                    print(f"Stopping {service} for a consistent copy ...", file=out)
                    stopped.append(service)  # before the call: a stop cut short is started again too
                    _stop(root, runner, service)
                    journal.fault_point(f"backup-{service}-stopped")
                freeze_now, froze = online and not froze, froze or online
                if freeze_now and online_copy:  # no ZooKeeper copy to run beside: freeze, then copy
                    freeze(root, runner, tables, frozen_as)
                meter = Meter(f"{member} ({sizes[member] / MIB:,.0f} MiB on disk)", out)
                image = values[f"{service.upper()}_IMAGE"]
                command = (clickhouse_copy_command(image, volume_name(project, "clickhouse-data"), mount, frozen_as)
                           if online_copy else _tar_command(image, vols, mount, project))
                # With ZooKeeper stopped, no part of a Replicated table can be committed or merged, so
                # parts frozen now are the parts ZooKeeper's copy records: FREEZE runs beside that copy,
                # which keeps ZooKeeper's pause short. Leaving the block waits for both.
                with ThreadPoolExecutor(1) as pool:
                    freezing = pool.submit(freeze, root, runner, tables, frozen_as) if freeze_now and not online_copy \
                        else None
                    _stream_member(writer, member, command, runner, meter, cwd=root)
                if freezing is not None:
                    freezing.result()
                    journal.fault_point("backup-clickhouse-frozen")
                meter.finish()
                if service in stopped:
                    _start(root, runner, [service])
                    stopped.remove(service)
                    paused[service] = time.monotonic() - pause_started
                    print(f"Started {service} again: paused {paused[service]:.1f} s"
                          f"{'; ClickHouse kept serving' if online else ''}.", file=out)
            if froze:
                froze = False
                _thaw(root, runner, tables, frozen_as, values["CLICKHOUSE_IMAGE"], project, out)
            if to_pause:
                recovery.pause_over(root)
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
                "kit": kit, "tables": row_counts,
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
        owner.unlink(missing_ok=True)
        try:
            if stopped:
                _start(root, runner, stopped)
            if to_pause:
                recovery.pause_over(root)
            if froze:  # after ZooKeeper is back: UNFREEZE of a Replicated table may ask it
                _thaw(root, runner, tables, frozen_as, values["CLICKHOUSE_IMAGE"], project, sys.stderr)
        except OperatorError as again:
            print(f"warning: could not start {', '.join(stopped)} again ({again}); run `invoke up`", file=sys.stderr)
        if isinstance(exc, OSError):
            raise OperatorError(f"writing {final.relative_to(root)} failed ({exc.strerror or exc}); no archive was "
                                "written") from exc
        raise
    if dump is not None:
        dump.abort()  # the dump is in the archive now: remove the temporary file
    owner.unlink(missing_ok=True)
    sidecar = {key: value for key, value in manifest.items()}
    # The sequence orders archives for --keep (retention.py); the clock in the name never does.
    sidecar.update({"archive": final.name, "archive_size": hashed.size, "sequence": sequence})
    atomic_write(sidecar_path(final), json.dumps(sidecar, indent=2) + "\n", 0o600)
    # Only what this backup stopped (a stopped deployment stays stopped), and Kafka, whose broker
    # reconnects to the ZooKeeper it registers in.
    restarted = to_pause + (["kafka"] if "zookeeper" in to_pause and running.get("kafka") else [])
    if restarted:
        from posthog_compose.operations import stack

        stack.wait_until_healthy(root, runner, restarted, timeout=600, progress=False)
    result = Result(final, manifest, time.monotonic() - started, hashed.size, pause, paused=paused)
    if keep:
        result.removed = apply_retention(directory, keep, subset, written=final, out=out)
    return result


def _thaw(root: Path, runner: Runner, tables: list[tuple[str, str]], name: str, image: str, project: str,
          out) -> None:
    """UNFREEZE this backup's snapshot, then remove what is left under shadow/ (empty folders, and
    the snapshots of killed backups). Never fails the backup: the archive does not depend on it, and
    the next backup removes what this one could not."""
    for step in (lambda: unfreeze(root, runner, tables, name),
                 lambda: remove_frozen(runner, image, volume_name(project, "clickhouse-data"), "/var/lib/clickhouse")):
        try:
            step()
        except OperatorError as exc:
            print(f"warning: ClickHouse's snapshot {name} under shadow/ could not be removed ({exc}); the next backup "
                  "removes it", file=out)
            return

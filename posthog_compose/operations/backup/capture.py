"""Taking each part from the engine: which volumes exist and which services run, the sizes the
free-space preflight needs, the tar stream of a volume, the pg_dump stream from `db` (checked by
pg_restore --list), stopping and starting ZooKeeper (and a stopped-anyway ClickHouse) around their
copies, and ClickHouse's own snapshot of a running server: `ALTER TABLE ... FREEZE WITH NAME` of
every MergeTree-family table, a tar of the data directory with the frozen parts in place of the live
ones, then `UNFREEZE` and the removal of what is left under shadow/.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner, Streaming
from posthog_compose.errors import OperatorError
from posthog_compose.operations.backup.contents import volume_name
from posthog_compose.operations.backup.progress import Meter


def existing_volumes(runner: Runner, project: str) -> set[str]:
    """The engine's volumes of the deployment named ``project`` (by Compose's label, never by prefix)."""
    result = runner.run(["docker", "volume", "ls", "--quiet", "--filter",
                         f"label=com.docker.compose.project={project}"], capture=True, check=False,
                        mutating=False, timeout=60)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"cannot list Docker volumes ({detail[0][:200]}); is the engine running? (`invoke doctor`)")
    return set((result.stdout or "").split())


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


def _volume_sizes(runner: Runner, image: str, volumes: dict, project: str) -> dict[str, int]:
    """Bytes used by each member's volumes, measured in one throwaway container (read-only mounts)."""
    command = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "du"]
    paths = {}
    for member, (_service, _mount, vols) in volumes.items():
        for volume in vols:
            paths[f"/measure/{volume}"] = member
            command += ["--volume", f"{volume_name(project, volume)}:/measure/{volume}:ro"]
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


def _tar_command(image: str, volumes: dict[str, str], mount: str, project: str) -> list[str]:
    command = ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "tar"]
    for volume, sub in volumes.items():
        command += ["--volume", f"{volume_name(project, volume)}:{os.path.normpath(os.path.join(mount, sub))}:ro"]
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


def _stop(root: Path, runner: Runner, service: str) -> None:
    runner.run(compose.command(root, "stop", "--timeout", "60", service), capture=True, timeout=300)


def _start(root: Path, runner: Runner, services: list[str]) -> None:
    runner.run(compose.command(root, "start", *services), capture=True, timeout=300)


# ----------------------------------------------------------------------------- ClickHouse, while it serves
#: Every FREEZE of a backup is named FREEZE_PREFIX + the archive's time stamp; what a killed backup
#: left under shadow/ is removed by the next one (`remove_frozen`). Letters, digits and _ only:
#: ClickHouse escapes any other character of the name in the folder's name (escapeForFileName).
FREEZE_PREFIX = "posthog_compose_backup_"
#: Names the kit puts between backquotes in ALTER TABLE: PostHog's tables, and the inner tables of
#: materialized views (`.inner_id.<uuid>`). Anything else is refused rather than quoted.
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
#: The tables FREEZE covers: MergeTree and every engine of its family (Replacing-, Collapsing-,
#: Aggregating-, Replicated...). Kafka-engine tables, materialized views with TO, Distributed tables
#: and dictionaries keep no parts: their definitions (metadata/) are copied as they are.
MERGETREE_TABLES = ("SELECT database, name FROM system.tables WHERE engine LIKE '%MergeTree' AND database NOT IN "
                    "('system', 'INFORMATION_SCHEMA', 'information_schema') ORDER BY database, name FORMAT TSV")


def clickhouse_query(root: Path, runner: Runner, sql: str, *, multiquery: bool = False) -> str:
    """``sql`` through clickhouse-client inside the `clickhouse` container (it reads the password from
    the container's environment); one line naming the statement when ClickHouse refuses it."""
    command = ["clickhouse-client", *(["--multiquery"] if multiquery else []), "--query", sql]
    result = runner.run(compose.command(root, "exec", "-T", "clickhouse", *command), capture=True, check=False,
                        timeout=600)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"ClickHouse refused `{sql[:80]}` ({detail[0][:300]}); no archive was written")
    return result.stdout or ""


def mergetree_tables(root: Path, runner: Runner) -> list[tuple[str, str]]:
    """(database, table) of every table FREEZE can snapshot."""
    tables = []
    for line in clickhouse_query(root, runner, MERGETREE_TABLES).splitlines():
        database, _, table = line.partition("\t")
        if not (_TABLE_NAME.fullmatch(database) and _TABLE_NAME.fullmatch(table)):
            raise OperatorError(f"ClickHouse table {line[:200]!r} has a name the backup does not quote (it takes "
                                "letters, digits, `_`, `.` and `-`): rename the table and back up again")
        tables.append((database, table))
    return tables


def _alter_all(tables: list[tuple[str, str]], clause: str) -> str:
    return "; ".join(f"ALTER TABLE `{database}`.`{table}` {clause}" for database, table in tables)


def freeze(root: Path, runner: Runner, tables: list[tuple[str, str]], name: str) -> None:
    """Hard links of every active part under shadow/NAME/ (one clickhouse-client for all tables)."""
    if tables:
        clickhouse_query(root, runner, _alter_all(tables, f"FREEZE WITH NAME '{name}'"), multiquery=True)


def unfreeze(root: Path, runner: Runner, tables: list[tuple[str, str]], name: str) -> None:
    if tables:
        clickhouse_query(root, runner, _alter_all(tables, f"UNFREEZE WITH NAME '{name}'"), multiquery=True)


#: The copy of a running ClickHouse, run by sh in a throwaway container of the ClickHouse image with
#: the volume mounted read-only at $1. A table FREEZE covered is a directory three levels below
#: shadow/$2 (store/<abc>/<uuid> for an Atomic database, data/<db>/<table> for an Ordinary one), the
#: same path as its live directory. The tar holds the data directory as it is, except: no shadow/
#: and no tmp/, and in each frozen table's directory its files (format_version.txt, mutation_*.txt)
#: and detached/ but not the live parts, whose places the frozen parts take. Restore extracts it like
#: the tar of a stopped ClickHouse: the same layout, and ClickHouse starts on it.
#: tar exits 1 when a live file changed while it was read (a log, a Distributed table's queue): what
#: the snapshot covers cannot change (FREEZE's hard links), so only 2 and above fail the copy.
CLICKHOUSE_COPY = r"""
set -uf  # -f: the patterns below go to find as they are, never expanded by the shell
cd "$1" || exit 2
frozen="shadow/$2"
prune=""
if [ -d "$frozen" ]; then
    for table in $(cd "$frozen" && find . -mindepth 3 -maxdepth 3 -type d); do
        prune="$prune -o ( -path $table/* ! -path $table/*/* -type d ! -name detached )"
    done
fi
{
    # shellcheck disable=SC2086  # $prune is a list of find expressions, split on purpose
    find . \( -path ./shadow -o -path ./tmp $prune \) -prune -o -print0  # "." too: the volume's owner and mode
    [ -d "$frozen" ] && find "./$frozen" -mindepth 4 -print0
} | tar --numeric-owner --ignore-failed-read --null --no-recursion -T - \
        --transform "s|^\./$frozen/|./|" -cf -
code=$?
[ "$code" -le 1 ] || exit "$code"
"""


def freeze_name(stamp: str) -> str:
    return FREEZE_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", stamp)


def clickhouse_copy_command(image: str, volume: str, mount: str, name: str) -> list[str]:
    """The tar of a running ClickHouse's volume with FREEZE ``name``'s parts in place (CLICKHOUSE_COPY)."""
    return ["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--volume", f"{volume}:{mount}:ro",
            "--entrypoint", "sh", image, "-c", CLICKHOUSE_COPY, "clickhouse-copy", mount, name]


def remove_frozen(runner: Runner, image: str, volume: str, mount: str) -> None:
    """Remove shadow/FREEZE_PREFIX* (what UNFREEZE leaves, empty folders, and what a killed backup
    froze). Only hard links go: ClickHouse's live parts keep their files."""
    result = runner.run(["docker", "run", "--rm", "--network", "none", "--user", "0:0", "--volume", f"{volume}:{mount}",
                         "--entrypoint", "find", image, mount, "-mindepth", "2", "-maxdepth", "2", "-path",
                         f"{mount}/shadow/{FREEZE_PREFIX}*", "-prune", "-exec", "rm", "-rf", "{}", "+"],
                        capture=True, check=False, timeout=600)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"removing shadow/{FREEZE_PREFIX}* failed ({detail[0][:200]})")

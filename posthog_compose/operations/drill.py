"""`invoke restore --drill ARCHIVE`: restore an archive into a scratch deployment beside the live one,
check that PostgreSQL and ClickHouse hold what the archive's manifest says, time each phase, and
remove the scratch deployment whatever happens.

The scratch deployment is its own Compose project (``<name>-drill``) with its own volumes and network,
configured from the archive's own files written into ``.deploy/drill/`` (0700), plus one more compose
file that publishes no port; only the datastores the archive holds are started (db, ClickHouse and
what ClickHouse waits for), never PostHog nor the proxy. The live deployment's volumes, containers
and .env are never named by any command here: every engine call carries the drill's project name.

What is checked: the archive reads through (every checksum, as a restore reads it), the dump loads
with pg_restore in one transaction, the volumes load and ClickHouse starts on them, and then every
table's row count against the manifest's "tables" (recorded by `invoke backup` just before the copy,
inventory.py). A table missing, or empty where the archive counted rows, fails the drill; a count that
differs is printed (rows written or merged while the backup ran), not failed. An archive made before
row counts were recorded is checked with what it has: it loads, the servers start, the tables are
listed with their counts.

Removal: containers, volumes and network by the drill project's Compose label, then the scratch
folder; in a ``finally`` that Ctrl-C and SIGTERM reach (a second Ctrl-C during removal is ignored).
A drill killed outright (SIGKILL) leaves them: the next drill removes them first.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write
from posthog_compose.operations.archive_checks import shown
from posthog_compose.operations.engine import Runner

SUFFIX = "-drill"
SCRATCH = Path(".deploy") / "drill"
LOCK = Path(".deploy") / "drill.lock"
#: The archive a scheduled drill names: the newest archive of everything in backups/.
LATEST = "latest"
OVERRIDE = "docker-compose.drill.yml"
#: The services a drill may start: the datastores an archive holds and what ClickHouse waits for.
DATASTORES = ("db", "zookeeper", "kafka", "clickhouse")
_LABELS = {"postgres": "PostgreSQL", "clickhouse": "ClickHouse"}


def project_of(root: Path) -> str:
    return compose.project_name(root) + SUFFIX


def resolve(root: Path, value: str) -> Path:
    """The archive to drill: a path or a name in backups/, or `latest` (the newest full archive)."""
    from posthog_compose.operations import backup

    if value == LATEST and not (Path.cwd() / value).exists():
        ordered = [(backup.order_of(p), p) for p in backup.archives(backup.backup_dir(root), "all")]
        ordered = [(key, p) for key, p in ordered if key is not None]
        if not ordered:
            raise OperatorError(f"--drill {LATEST}: no archive of everything with a readable sidecar in "
                                f"{backup.BACKUP_DIR}/; `invoke backup` writes one")
        return max(ordered)[1]
    return backup.resolve(root, value)


def override_text() -> str:
    """The drill's last compose file: no published port and no restart for any service it may start."""
    lines = ["# Written by `invoke restore --drill latest` for its scratch deployment: nothing published.",
             "services:"]
    for service in DATASTORES:
        lines += [f"  {service}:", "    ports: !reset []", '    restart: "no"']
    return "\n".join(lines) + "\n"


class _Phases:
    """Each phase's seconds, in order; ``line()`` is the timing line the drill ends with."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = time.monotonic()

    @contextlib.contextmanager
    def __call__(self, name: str):
        begun = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - begun

    def total(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        return f"Drill phases: {parts}; total {self.total():.1f} s."


class _NoJournal:
    """A restore's journal steps, dropped: a drill changes nothing of the live deployment to record."""

    def step(self, step: str) -> None:
        pass


@contextlib.contextmanager
def _interruptible():
    """SIGTERM (systemd stopping the unit) ends the drill like Ctrl-C, so that its removal runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _shielded():
    """Ctrl-C ignored while the scratch deployment is removed (the removal is what it would cut short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _lock(root: Path):
    import fcntl

    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OperatorError("another restore drill of this deployment is running; wait for it to end")
        yield


def leftovers(runner: Runner, project: str) -> dict[str, list[str]]:
    """What of the drill's project the engine holds: containers, volumes, networks (by Compose's label)."""
    found = {}
    label = f"label=com.docker.compose.project={project}"
    for kind, command in (("containers", ["docker", "ps", "--all", "--quiet", "--filter", label]),
                          ("volumes", ["docker", "volume", "ls", "--quiet", "--filter", label]),
                          ("networks", ["docker", "network", "ls", "--quiet", "--filter", label])):
        result = runner.run(command, capture=True, check=False, mutating=False, timeout=60)
        found[kind] = (result.stdout or "").split() if result.returncode == 0 else []
    return found


def remove(root: Path, runner: Runner, project: str) -> dict[str, list[str]]:
    """Remove the drill's containers, then its volumes and networks, then the scratch folder; what is
    still there afterwards (nothing, normally)."""
    if not project.endswith(SUFFIX) or project == compose.project_name(root):
        raise AssertionError(f"refusing to remove project {project!r}: not a drill's")  # a bug, never an input
    found = leftovers(runner, project)
    for kind, command in (("containers", ["docker", "rm", "--force", "--volumes"]),
                          ("volumes", ["docker", "volume", "rm", "--force"]),
                          ("networks", ["docker", "network", "rm"])):
        if found[kind]:
            runner.run([*command, *found[kind]], capture=True, check=False, timeout=300)
    shutil.rmtree(Path(root) / SCRATCH, ignore_errors=True)
    return {kind: names for kind, names in leftovers(runner, project).items() if names}


def run(root: Path, runner: Runner, value: str, *, passphrase_file: str | None = None, timeout: float = 600.0,
        out=None) -> dict:
    """The drill of one archive; its summary (raises OperatorError when the drill fails, after removal)."""
    from posthog_compose.operations import restore
    from posthog_compose.operations.backup import _passphrase_for

    root = Path(root)
    out = out or sys.stdout
    path = resolve(root, value)
    passphrase = _passphrase_for(path, passphrase_file)
    project = project_of(root)
    phases = _Phases()
    summary: dict = {"archive": str(path), "project": project, "passed": False}
    print(f"Plan: restore {shown(path.name)} into the scratch deployment {project!r} (nothing published, the live "
          "deployment untouched), check its tables against the archive's manifest, then remove it.", file=out)
    with _lock(root), _interruptible():
        failure: OperatorError | None = None
        try:
            if any(leftovers(runner, project).values()) or (root / SCRATCH).exists():
                print(f"Removing what an interrupted drill left of {project!r} ...", file=out)
                with _shielded(), phases("earlier leftovers"):
                    remove(root, runner, project)
            summary.update(_drill(root, runner, restore, path, passphrase, project, timeout, phases, out))
        except OperatorError as exc:
            failure = exc
        finally:
            with _shielded(), phases("removal"):
                still = remove(root, runner, project)
            if still:
                print(f"warning: the drill's {', '.join(f'{k} {v}' for k, v in still.items())} could not be removed: "
                      f"remove them with `docker rm -f` / `docker volume rm` / `docker network rm` (the next drill "
                      "tries again)", file=out)
            print(phases.line(), file=out)
    summary["phases"] = {name: round(seconds, 1) for name, seconds in phases.seconds.items()}
    summary["seconds"] = round(phases.total(), 1)
    if failure is not None:
        raise OperatorError(f"the drill of {shown(path.name)} failed: {failure}; the scratch deployment "
                            f"{project!r} is removed and the live deployment was not touched")
    problems = summary.get("problems") or []
    if problems:
        more = f" (and {len(problems) - 1} more above)" if len(problems) > 1 else ""
        raise OperatorError(f"the drill of {shown(path.name)} failed: {problems[0]}{more}; the scratch deployment "
                            f"{project!r} is removed and the live deployment was not touched")
    summary["passed"] = True
    print(f"Drill passed: {shown(path.name)} restores, and its data is what the archive says, in "
          f"{summary['seconds']:.0f} s.", file=out)
    return summary


def _drill(root: Path, runner: Runner, restore, path: Path, passphrase: bytes | None, project: str, timeout: float,
           phases: _Phases, out) -> dict:
    from posthog_compose.operations.backup import inventory, provenance

    scratch = root / SCRATCH
    with open(path, "rb") as handle:
        with phases("verify"):
            manifest, config, _sha256 = restore._verify(path, handle, passphrase, out)
            values = restore._archive_values(path, config)
        line = provenance.mismatch_line(path.name, manifest.get("kit"), provenance.kit_version(root))
        if line:
            print(line, file=out)
        try:
            restore.check_version(root, manifest, path.name)
        except OperatorError as exc:
            print(f"note: a restore into this deployment would refuse: {exc}", file=out)
        members = [m["name"] for m in manifest["members"]]
        holds = {"postgres": any(n.startswith("postgres/") for n in members),
                 "clickhouse": "volumes/clickhouse.tar" in members}
        with phases("configuration"):
            drill_runner = _configure(root, runner, scratch, config, project)
        try:
            if holds["postgres"]:
                with phases("start db"):
                    restore._up(scratch, drill_runner, ["db"], timeout, out)
            with phases("load"):
                restore._load_data(scratch, drill_runner, path, handle, passphrase, manifest, values, out, _NoJournal())
            if holds["clickhouse"]:
                with phases("start ClickHouse"):
                    restore._up(scratch, drill_runner, ["clickhouse"], timeout, out)
        except OperatorError as exc:
            raise OperatorError(str(exc).split("; the deployment is half restored")[0]) from exc
        _refuse_published(drill_runner, project)
        with phases("check"):
            found = {"postgres": inventory.postgres_counts(scratch, drill_runner, values) if holds["postgres"] else None,
                     "clickhouse": inventory.clickhouse_counts(scratch, drill_runner) if holds["clickhouse"] else None}
    recorded = manifest.get("tables") if isinstance(manifest.get("tables"), dict) else {}
    problems, lines = compare(recorded, found, holds)
    for text in lines:
        print(text, file=out)
    return {"problems": problems, "tables": {name: {"recorded": recorded.get(name), "restored": found[name]}
                                             for name in found}}


def _configure(root: Path, runner: Runner, scratch: Path, config, project: str) -> Runner:
    """Write the archive's configuration into the scratch folder, and the Runner whose Compose runs the
    drill's project from it, with the drill's compose file last."""
    from posthog_compose.operations import restore

    scratch.mkdir(parents=True, mode=0o700)
    restore._write_config(scratch, config)
    atomic_write(scratch / OVERRIDE, override_text(), 0o600)
    env = dict(runner.env if runner.env is not None else os.environ)
    env.pop("COMPOSE_FILE", None)  # the live deployment's list: the archive's own is read below
    env["COMPOSE_PROJECT_NAME"] = project
    files = [str(p) for p in compose.selected_files(scratch)] + [str(scratch / OVERRIDE)]
    env["COMPOSE_FILE"] = os.pathsep.join(files)
    env["COMPOSE_PATH_SEPARATOR"] = os.pathsep
    drill_runner = copy.copy(runner)  # the same Runner (its task name, --verbose), on the drill's project
    drill_runner.env = env
    return drill_runner


def _refuse_published(runner: Runner, project: str) -> None:
    """Nothing of the drill may listen on the host: a compose file of the archive that publishes a port
    anyway (a long syntax the override does not reset) stops the drill."""
    result = runner.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={project}", "--format",
                         "{{.Names}} {{.Ports}}"], capture=True, check=False, mutating=False, timeout=60)
    published = [line for line in (result.stdout or "").splitlines() if "->" in line]
    if published:
        raise OperatorError(f"the scratch deployment publishes a port ({shown(published[0], 200)}), which a drill "
                            "never does; stopped")


def compare(recorded: dict, found: dict, holds: dict) -> tuple[list[str], list[str]]:
    """(problems, lines): each datastore's restored row counts against the archive's. A table missing,
    or empty where the archive counted rows, is a problem; a count that differs is only told (the
    counts are taken just before the copy, while PostHog may still write, and ClickHouse merges)."""
    problems, lines = [], []
    for name, label in _LABELS.items():
        if not holds.get(name):
            lines.append(f"{label}: not in this archive.")
            continue
        got, expected = found.get(name), recorded.get(name)
        if got is None:
            problems.append(f"{label} did not answer the row count after the restore")
            lines.append(f"{label}: FAILED, the restored server did not answer the row count.")
            continue
        rows = sum(got.values())
        if not isinstance(expected, dict):
            lines.append(f"{label}: {len(got)} tables, {rows:,} rows restored (the archive records no row counts "
                         "to compare: it was made before they were recorded, or the server did not answer then).")
            continue
        found_here = [f"{label} table {shown(t)} is missing after the restore" for t in sorted(set(expected) - set(got))]
        emptied = sorted(t for t in expected if t in got and expected[t] > 0 and got[t] == 0)
        found_here += [f"{label} table {shown(t)} is empty after the restore ({expected[t]:,} rows in the archive)"
                       for t in emptied]
        differ = sorted(t for t in expected if t in got and got[t] != expected[t] and t not in emptied)
        detail = (f"{len(expected)} tables and {sum(expected.values()):,} rows recorded, {len(got)} tables and "
                  f"{rows:,} rows restored")
        if differ:
            detail += (f"; {len(differ)} table(s) differ (rows written or merged while the backup ran): " +
                       ", ".join(f"{shown(t, 80)} {expected[t]:,} -> {got[t]:,}" for t in differ[:3]))
        lines.append(f"{label}: {'FAILED' if found_here else 'OK'}, {detail}.")
        lines += [f"  {problem}" for problem in found_here]
        problems += found_here
    return problems, lines

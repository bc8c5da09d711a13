"""--keep by the backup sequence, never by a clock (a property test over skewed, equal and future
clocks), and what a killed backup leaves behind: its stopped services, started again by the next
task through the journal, and its .partial files, removed by the next backup."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose import journal
from posthog_compose.operations import backup
from posthog_compose.operations.backup import recovery, retention
from tests.unit.test_backup import FakeRunner, engine  # noqa: F401  (engine: the fake engine fixture)


def _archive(directory, stamp: str, meta: dict | None, subset: str = "") -> object:
    path = directory / f"posthog-{stamp}{'-' + subset if subset else ''}.backup"
    path.write_bytes(b"x")
    if meta is not None:
        retention.sidecar_path(path).write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return path


# ----------------------------------------------------------------------------- the clock a day behind
def _backup_at(deployed, monkeypatch, stamp: str, keep: int):
    """A backup with the host's clock at ``stamp`` (its name and its manifest's creation time)."""
    moment = time.strptime(stamp, "%Y%m%d-%H%M%S")
    monkeypatch.setattr(backup, "timestamp", lambda: stamp)
    monkeypatch.setattr(backup.time, "gmtime", lambda *args: moment)
    return backup.create(deployed, FakeRunner(deployed), encrypt=True, keep=keep, out=io.StringIO())


def test_keep_with_the_clock_a_day_behind_keeps_what_it_wrote_and_then_the_newest(deployed, engine, monkeypatch):
    first = _backup_at(deployed, monkeypatch, "20261207-100000", keep=2)
    second = _backup_at(deployed, monkeypatch, "20261207-110000", keep=2)
    behind = _backup_at(deployed, monkeypatch, "20261206-120000", keep=2)  # the clock a day behind
    assert behind.path.exists(), "--keep deleted the archive it had just written"
    assert [p.name for p in behind.removed] == [first.path.name] and second.path.exists()
    right = _backup_at(deployed, monkeypatch, "20261207-120000", keep=2)  # the clock corrected
    assert [p.name for p in right.removed] == [second.path.name]
    assert right.path.exists() and behind.path.exists()
    sequences = [json.loads(retention.sidecar_path(p.path).read_text())["sequence"] for p in (behind, right)]
    assert sequences == [3, 4]


def test_the_sequence_never_goes_back_when_its_counter_is_lost(deployed, engine, monkeypatch):
    _backup_at(deployed, monkeypatch, "20261207-100000", keep=5)
    (deployed / retention.SEQUENCE_FILE).unlink()
    later = _backup_at(deployed, monkeypatch, "20261207-110000", keep=5)
    assert json.loads(retention.sidecar_path(later.path).read_text())["sequence"] == 2


def test_an_archive_whose_order_cannot_be_read_is_kept_and_named(tmp_path):
    orphan = _archive(tmp_path, "20200101-000000", None)
    damaged = _archive(tmp_path, "20200102-000000", "{not json")
    old = _archive(tmp_path, "20200103-000000", {"created": "2020-01-03T00:00:00Z"})  # before sequences
    numbered = _archive(tmp_path, "20200104-000000", {"sequence": 1, "created": "2020-01-04T00:00:00Z"})
    written = _archive(tmp_path, "20190101-000000", {"sequence": 2})
    out = io.StringIO()
    removed = retention.apply_retention(tmp_path, 1, written=written, out=out)
    assert removed == [old, numbered]
    assert orphan.exists() and damaged.exists() and written.exists()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and orphan.name in lines[0] and damaged.name in lines[0] and "never deleted" in lines[0]


# ----------------------------------------------------------------------------- the property
CLOCKS = st.sampled_from(["20261207-100000", "20261206-100000", "20991231-235959", "19700101-000000",
                          "20261207-100001"])
ARCHIVE = st.tuples(
    CLOCKS,                                                       # the clock in the name
    st.one_of(st.none(), st.integers(1, 30)),                     # its sequence (None: written before sequences)
    st.sampled_from(["2026-12-07T10:00:00Z", "2026-12-06T10:00:00Z", "2099-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
                     None]),                                      # its manifest's creation time (skewed, equal, future)
    st.sampled_from(["sidecar", "sidecar", "sidecar", "missing", "damaged"]),
    st.sampled_from(["", "", "postgres"]),                        # its subset
)
EXAMPLES = {"count": 0}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(existing=st.lists(ARCHIVE, max_size=10), written_clock=CLOCKS, counter=st.one_of(st.none(), st.integers(0, 40)),
       keep=st.integers(1, 6))
def retention_keeps_what_it_wrote_and_never_a_older_archive_over_a_newer(tmp_path_factory, existing,
                                                                          written_clock, counter, keep):
    EXAMPLES["count"] += 1
    root = tmp_path_factory.mktemp("deployment")
    directory = root / "backups"
    directory.mkdir()
    paths = {}
    for index, (clock, sequence, created, sidecar, subset) in enumerate(existing):
        meta = {key: value for key, value in (("sequence", sequence), ("created", created)) if value is not None}
        path = _archive(directory, f"{clock[:-2]}{index:02d}", {"sidecar": meta, "missing": None,
                                                                "damaged": '{"sequence": '}[sidecar], subset)
        paths[path] = retention.order_of(path)
    if counter is not None:
        (root / ".deploy").mkdir()
        (root / retention.SEQUENCE_FILE).write_text(f"{counter}\n")
    number = retention.next_sequence(root, directory)
    written = _archive(directory, f"{written_clock[:-2]}99", {"sequence": number, "created": "1970-01-01T00:00:00Z"})
    removed = set(retention.apply_retention(directory, keep, "all", written=written, out=io.StringIO()))

    assert written.exists() and written not in removed
    assert all(key is None or key < (1, number, "") for key in paths.values())  # the written one is the newest
    same_kind = {p: key for p, key in paths.items() if "-postgres" not in p.name}
    assert all(p in same_kind for p in removed)  # another kind's archives are not counted nor touched
    assert all(same_kind[p] is not None for p in removed)  # an unreadable order is never deleted
    kept = {p: key for p, key in same_kind.items() if p not in removed and key is not None}
    for gone in removed:
        for stays in kept.values():
            # never a removed archive newer (by sequence; numbered after unnumbered) than one kept
            assert same_kind[gone][:2] <= stays[:2]
    assert len(kept) == min(keep - 1, len(kept) + len(removed))
    for path in paths:
        assert path.exists() == (path not in removed)


def test_retention_keeps_what_it_wrote_and_never_a_older_archive_over_a_newer(tmp_path_factory):
    # The property runs here and its examples are counted in the same test (a silent zero would hide a
    # broken strategy), whichever process or order the suite runs it in.
    EXAMPLES["count"] = 0
    retention_keeps_what_it_wrote_and_never_a_older_archive_over_a_newer(tmp_path_factory)
    assert EXAMPLES["count"] >= 100, EXAMPLES


# ----------------------------------------------------------------------------- a killed backup
def _kill_backup_while_zookeeper_is_stopped(deployed) -> None:
    """Run a backup in a child process that SIGKILLs itself at the step where ZooKeeper is stopped
    for the copy (journal.fault_point), as the fault table does on a real engine."""
    pid = os.fork()
    if pid == 0:  # the child: the fake engine is the parent's, inherited
        try:
            os.environ.update(POSTHOG_COMPOSE_FAULT_TEST="1", POSTHOG_COMPOSE_FAULT_AT="kill:backup-zookeeper-stopped")
            backup.create(deployed, FakeRunner(deployed), encrypt=True, out=io.StringIO())
        finally:
            os._exit(3)  # reached only when the fault point did not kill it
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_a_killed_backup_is_taken_back_by_the_next_backup(deployed, engine):
    _kill_backup_while_zookeeper_is_stopped(deployed)
    entry = journal.read(deployed, "backup")
    assert entry["what"] == "paused zookeeper for backup" and entry["paused"] == ["zookeeper"]
    left = sorted(p.name for p in (deployed / "backups").iterdir())
    assert any(name.endswith(".backup.partial") for name in left) and any(".pgdump.partial" in n for n in left), left

    runner, out = FakeRunner(deployed), io.StringIO()
    result = backup.create(deployed, runner, encrypt=True, out=out)
    starts = [c for c in runner.commands if "start" in c]
    assert starts[0][-1:] == ["zookeeper"]  # before anything else is started or stopped
    assert runner.commands.index(starts[0]) < min(runner.commands.index(c) for c in runner.commands if "stop" in c)
    text = out.getvalue()
    assert "A backup was interrupted while zookeeper were stopped for its copy" in text
    assert "Removed 2 file(s) left by a backup that was interrupted" in text
    assert sorted(p.name for p in (deployed / "backups").iterdir()) == sorted(
        [result.path.name, retention.sidecar_path(result.path).name])
    assert journal.pending(deployed) == []


def test_a_killed_backup_is_taken_back_by_up_through_the_journal(deployed, engine):
    """`invoke up` (and every task that replays the journal) starts what the killed backup stopped,
    in a process that never imported the backup module (the entry names it)."""
    _kill_backup_while_zookeeper_is_stopped(deployed)
    assert journal.read(deployed, "backup")["replayed_by"] == "posthog_compose.operations.backup.recovery"
    runner = FakeRunner(deployed)
    journal.replay(deployed, runner)
    assert [c[-1:] for c in runner.commands if "start" in c] == [["zookeeper"]]
    assert journal.pending(deployed) == []


def test_partial_files_of_a_live_writer_are_left_and_of_a_dead_one_removed(tmp_path):
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for name, writer in (("posthog-20260101-000000.backup", live.pid),
                             ("posthog-20260102-000000.backup", dead.pid)):
            (tmp_path / f".{name}.partial").write_bytes(b"x")
            (tmp_path / f".{name}{recovery.OWNER}").write_text(json.dumps(journal.process_identity(writer)))
        (tmp_path / ".posthog-20260103-000000.backup.pgdump.partial").write_bytes(b"x")  # no owner: an older kit's
        (tmp_path / "notes.partial").write_bytes(b"mine")
        out = io.StringIO()
        removed = recovery.remove_stale(tmp_path, out)
    finally:
        live.kill()
        live.wait()
    assert sorted(removed) == [".posthog-20260102-000000.backup.partial",
                               ".posthog-20260103-000000.backup.pgdump.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".posthog-20260101-000000.backup.owner", ".posthog-20260101-000000.backup.partial", "notes.partial"]
    assert out.getvalue().count("\n") == 1

"""A full backup copies a running ClickHouse from its own snapshot: the order of the engine steps
(ClickHouse never stops; FREEZE while ZooKeeper is stopped; UNFREEZE and the removal of shadow/
after), the failures at each of them, and the copy script itself (CLICKHOUSE_COPY), run here with
the host's sh, find and GNU tar on data directories laid out as ClickHouse lays them out (example
and property tests). The end-to-end proof, with queries answered throughout, is
tests/e2e/test_backup_online.py."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.errors import OperatorError
from posthog_compose.operations import backup
from posthog_compose.operations.backup import capture
from tests.unit.test_backup import FakeRunner, _files, engine  # noqa: F401  (engine: the fake engine fixture)

TABLES = "posthog\tevents\nposthog\tsharded_events\nposthog\t.inner_id.5f1c-77\n"
EXAMPLES = {"count": 0}


class ClickHouseRunner(FakeRunner):
    """The fake engine's runner, with a ClickHouse that lists its MergeTree tables; every command
    (and, through ``log``, every streamed copy) in one ordered log; ``refuse`` fails a statement."""

    def __init__(self, root, log: list, refuse: str | None = None):
        super().__init__(root)
        self.log, self.refuse = log, refuse

    def run(self, cmd, **kwargs):
        self.commands.append(list(cmd))
        self.log.append(" ".join(cmd))
        text = " ".join(cmd)
        if self.refuse and self.refuse in text:
            return subprocess.CompletedProcess(cmd, 81, "", "Code: 60. DB::Exception: Table posthog.events doesn't "
                                                            "exist. (UNKNOWN_TABLE)\n")
        if "FROM system.tables" in text:
            return subprocess.CompletedProcess(cmd, 0, TABLES, "")
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def logged(engine, monkeypatch):
    """The fake engine, with the streamed copies entered in the same log as the runner's commands."""
    log: list[str] = []
    popen = backup.subprocess.Popen

    def logging_popen(command, **kwargs):
        log.append(" ".join(command))
        return popen(command, **kwargs)

    monkeypatch.setattr(backup.subprocess, "Popen", logging_popen)
    engine.log = log
    return engine


def _index(log: list[str], *words: str) -> int:
    found = [i for i, line in enumerate(log) if all(word in line for word in words)]
    assert len(found) == 1, (words, log)
    return found[0]


def test_clickhouse_keeps_running_and_is_frozen_while_zookeeper_is_stopped(deployed, logged):
    """FREEZE (one clickhouse-client for every table) and ZooKeeper's copy both fall between its stop and
    start; the ClickHouse copy, UNFREEZE and the clean-up of shadow/ come after, with ZooKeeper back."""
    runner = ClickHouseRunner(deployed, logged.log)
    out = io.StringIO()
    result = backup.create(deployed, runner, encrypt=True, out=out)
    log = logged.log
    assert not [line for line in log if " stop " in f"{line} " and "clickhouse" in line.split()[-1:]], log
    listed = _index(log, "FROM system.tables WHERE engine LIKE")  # the tables to freeze (not the row counts)
    stopped, started = _index(log, "stop", "zookeeper"), _index(log, "start", "zookeeper")
    frozen = _index(log, "` FREEZE WITH NAME")
    zookeeper_copy = _index(log, "-cf", "/var/lib/zookeeper")
    clickhouse_copy = _index(log, "clickhouse-copy")
    thawed = _index(log, "UNFREEZE WITH NAME")
    removed = _index(log, "-exec rm -rf")
    # FREEZE runs beside ZooKeeper's copy: both while ZooKeeper is stopped.
    assert listed < stopped < min(frozen, zookeeper_copy) and max(frozen, zookeeper_copy) < started
    assert started < clickhouse_copy < thawed < removed
    name = backup.freeze_name(result.path.name[len("posthog-"):-len(".backup")])
    freeze = log[frozen]
    assert freeze.count("` FREEZE WITH NAME") == 3 and f"'{name}'" in freeze and "--multiquery" in freeze
    assert "ALTER TABLE `posthog`.`.inner_id.5f1c-77` FREEZE" in freeze
    assert log[clickhouse_copy].endswith(f"clickhouse-copy /var/lib/clickhouse {name}")
    assert ":/var/lib/clickhouse:ro" in log[clickhouse_copy]  # the copy reads; only the removal writes
    assert f"/var/lib/clickhouse/shadow/{backup.FREEZE_PREFIX}*" in log[removed]
    assert result.pause == 0.0 and result.manifest["clickhouse_pause_seconds"] == 0.0
    assert set(result.paused) == {"zookeeper"}
    assert "ClickHouse keeps serving" in out.getvalue() and "ClickHouse kept serving" in out.getvalue()
    assert "ClickHouse kept serving, zookeeper paused" in backup.last_line(deployed, result)


def test_a_stopped_clickhouse_is_copied_as_it_is(deployed, logged, monkeypatch):
    # A guard of the branch that did not change: no FREEZE, the plain tar of the volume.
    monkeypatch.setattr(backup, "_running", lambda root, runner: {"db": True, "clickhouse": False, "zookeeper": True})
    runner = ClickHouseRunner(deployed, logged.log)
    result = backup.create(deployed, runner, encrypt=True, out=io.StringIO())
    assert not [line for line in logged.log if "FREEZE" in line or "system.tables" in line or "clickhouse-copy" in line]
    _index(logged.log, "-cf", "/var/lib/clickhouse")
    assert result.pause is None and result.manifest["clickhouse_pause_seconds"] is None


@pytest.mark.parametrize("refused", ["FROM system.tables", "` FREEZE WITH NAME", "UNFREEZE WITH NAME", "-exec rm -rf"])
def test_a_refused_statement_fails_only_before_the_copy_and_zookeeper_always_runs_again(deployed, logged, refused):
    runner = ClickHouseRunner(deployed, logged.log, refuse=refused)
    err = io.StringIO()
    if refused in ("FROM system.tables", "` FREEZE WITH NAME"):
        with pytest.raises(OperatorError) as caught:
            backup.create(deployed, runner, encrypt=True, out=io.StringIO())
        assert "\n" not in str(caught.value) and "ClickHouse refused" in str(caught.value)
        assert not [f for f in _files(deployed) if f.endswith((".backup", ".partial", ".json"))]
    else:  # the archive is whole: what is left under shadow/ goes with the next backup
        import contextlib

        with contextlib.redirect_stderr(err):
            result = backup.create(deployed, runner, encrypt=True, out=err)
        assert result.path.exists() and "the next backup removes it" in err.getvalue()
    stops = [i for i, line in enumerate(logged.log) if line.split()[-2:] == ["stop", "zookeeper"] or
             (" stop " in line and line.endswith("zookeeper"))]
    starts = [i for i, line in enumerate(logged.log) if " start " in line and line.endswith("zookeeper")]
    assert len(starts) == len(stops)  # whatever failed, ZooKeeper runs again
    if refused == "` FREEZE WITH NAME":  # a FREEZE cut short is undone, after ZooKeeper is back
        assert starts and _index(logged.log, "UNFREEZE WITH NAME") > starts[-1]


def test_without_zookeeper_running_clickhouse_is_frozen_before_its_copy(deployed, logged, monkeypatch):
    monkeypatch.setattr(backup, "_running", lambda root, runner: {"db": True, "clickhouse": True, "zookeeper": False})
    runner = ClickHouseRunner(deployed, logged.log)
    result = backup.create(deployed, runner, encrypt=True, out=io.StringIO())
    assert not [line for line in logged.log if " stop " in line]
    assert _index(logged.log, "` FREEZE WITH NAME") < _index(logged.log, "clickhouse-copy")
    assert result.pause == 0.0 and result.paused == {}


def test_a_failed_clickhouse_copy_unfreezes_after_zookeeper_is_back(deployed, logged):
    logged.fail = "tar /var/lib/clickhouse"
    runner = ClickHouseRunner(deployed, logged.log)
    with pytest.raises(OperatorError):
        backup.create(deployed, runner, encrypt=True, out=io.StringIO())
    assert _index(logged.log, "start", "zookeeper") < _index(logged.log, "UNFREEZE WITH NAME")
    assert _index(logged.log, "-exec rm -rf")
    assert not [f for f in _files(deployed) if f.endswith((".backup", ".partial"))]


@pytest.mark.parametrize("line", ["posthog\tev`ents", "posthog\tevents; DROP TABLE x", "posthog\t", "po sthog\tevents"])
def test_a_table_name_the_backup_would_have_to_quote_is_refused(deployed, line):
    class Odd(FakeRunner):
        def run(self, cmd, **kwargs):
            return subprocess.CompletedProcess(cmd, 0, line + "\n", "")

    with pytest.raises(OperatorError, match="has a name the backup does not quote"):
        capture.mergetree_tables(deployed, Odd(deployed))


def test_the_freeze_name_is_one_clickhouse_keeps_as_it_is():
    # ClickHouse names shadow/<name> with escapeForFileName: only [A-Za-z0-9_] stay as they are.
    name = backup.freeze_name("20261207-052500-1")
    assert name == "posthog_compose_backup_20261207_052500_1"
    assert all(c.isalnum() or c == "_" for c in name)


# ----------------------------------------------------------------------------- the copy script
needs_tools = pytest.mark.skipif(not (shutil.which("sh") and shutil.which("find") and shutil.which("tar")),
                                 reason="sh, find and tar run the copy inside the ClickHouse image")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _run_copy(data: Path, name: str) -> dict[str, str]:
    """Run CLICKHOUSE_COPY on ``data`` and return the tar's regular files: path -> content."""
    done = subprocess.run(["sh", "-c", capture.CLICKHOUSE_COPY, "clickhouse-copy", str(data), name],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    files, names = {}, []
    with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:") as archive:
        for member in archive:
            names.append(member.name)
            if member.isfile():
                files[os.path.normpath(member.name)] = archive.extractfile(member).read().decode()
    assert len(names) == len(set(names)), "a path is in the tar twice"
    assert names[0] in (".", "./"), names[:3]  # the volume's own owner and mode, as a tar of "." has them
    return files


@needs_tools
def test_the_copy_puts_the_frozen_parts_in_place_of_the_live_ones(tmp_path):
    data, name = tmp_path / "clickhouse", "posthog_compose_backup_1"
    table = data / "store/5f1/5f1c-77"  # an Atomic database's table
    _write(table / "all_1_1_0/data.bin", "live, merged away after the freeze")
    _write(table / "all_1_2_1/data.bin", "merged after the freeze")
    _write(table / "format_version.txt", "1")
    _write(table / "mutation_3.txt", "mutation")
    _write(table / "detached/broken_all_0_0_0/data.bin", "detached")
    _write(data / "shadow" / name / "store/5f1/5f1c-77/all_1_1_0/data.bin", "frozen 1")
    _write(data / "shadow" / name / "store/5f1/5f1c-77/all_2_2_0/data.bin", "frozen 2")
    _write(data / "shadow/increment.txt", "3")
    _write(data / "shadow/someone_else/store/5f1/5f1c-77/all_1_1_0/data.bin", "another freeze")
    _write(data / "metadata/posthog.sql", "ATTACH DATABASE posthog ENGINE = Atomic")
    _write(data / "store/abc/abc-db/events.sql", "ATTACH TABLE events ...")
    _write(data / "store/de0/de0-kafka/format_version.txt", "not frozen: copied as it is")
    _write(data / "tmp/query.bin", "temporary")
    os.symlink("/var/lib/clickhouse/store/5f1/5f1c-77", data / "metadata/link")
    assert _run_copy(data, name) == {
        "store/5f1/5f1c-77/all_1_1_0/data.bin": "frozen 1",
        "store/5f1/5f1c-77/all_2_2_0/data.bin": "frozen 2",
        "store/5f1/5f1c-77/format_version.txt": "1",
        "store/5f1/5f1c-77/mutation_3.txt": "mutation",
        "store/5f1/5f1c-77/detached/broken_all_0_0_0/data.bin": "detached",
        "metadata/posthog.sql": "ATTACH DATABASE posthog ENGINE = Atomic",
        "store/abc/abc-db/events.sql": "ATTACH TABLE events ...",
        "store/de0/de0-kafka/format_version.txt": "not frozen: copied as it is",
    }


@needs_tools
def test_without_a_snapshot_the_copy_is_the_data_directory_without_shadow_and_tmp(tmp_path):
    data = tmp_path / "clickhouse"
    _write(data / "data/posthog/events/all_1_1_0/data.tsv", "1")
    _write(data / "tmp/x", "temporary")
    _write(data / "shadow/old/data/posthog/events/all_1_1_0/data.tsv", "old")
    assert _run_copy(data, "posthog_compose_backup_none") == {"data/posthog/events/all_1_1_0/data.tsv": "1"}


part_names = st.builds(lambda a, b, level: f"all_{a}_{a + b}_{level}", st.integers(0, 30), st.integers(0, 3),
                       st.integers(0, 2))
tables_strategy = st.dictionaries(
    st.sampled_from(["store/5f1/5f1c-77", "store/5f1/5f1c-88", "store/0aa/0aa-01", "data/posthog/events",
                     "data/posthog/person"]),
    st.tuples(st.sets(part_names, max_size=4), st.sets(part_names, max_size=4), st.booleans(), st.booleans()),
    max_size=4)


@needs_tools
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=tables_strategy, extra=st.sets(st.sampled_from(["metadata/posthog.sql", "status", "format_schemas/x",
                                                              "store/abc/abc-db/t.sql"]), max_size=4))
def any_data_directory_copies_as_frozen_parts_plus_everything_but_live_parts(tmp_path, tables, extra):
    """Whatever tables (frozen or not), live parts and frozen parts: the copy holds exactly the frozen
    parts of a frozen table, its own files and detached/, every file outside tables, and nothing of
    shadow/ or tmp/."""
    EXAMPLES["count"] += 1
    data, name = tmp_path / f"case{EXAMPLES['count']}", "posthog_compose_backup_p"
    expected = {}
    for path in extra:
        _write(data / path, path)
        expected[path] = path
    _write(data / "tmp/spill.bin", "tmp")
    for table, (live, frozen, frozen_table, has_detached) in tables.items():
        _write(data / table / "format_version.txt", "1")
        expected[f"{table}/format_version.txt"] = "1"
        if has_detached:
            _write(data / table / "detached/ignored_all_9_9_0/data.bin", "detached")
            expected[f"{table}/detached/ignored_all_9_9_0/data.bin"] = "detached"
        for part in live:
            _write(data / table / part / "data.bin", f"live {part}")
            if not frozen_table:
                expected[f"{table}/{part}/data.bin"] = f"live {part}"
        if frozen_table:
            (data / "shadow" / name / table).mkdir(parents=True, exist_ok=True)
            for part in frozen:
                _write(data / "shadow" / name / table / part / "data.bin", f"frozen {part}")
                expected[f"{table}/{part}/data.bin"] = f"frozen {part}"
    assert _run_copy(data, name) == expected
    shutil.rmtree(data)


@needs_tools
def test_any_data_directory_copies_as_frozen_parts_plus_everything_but_live_parts(tmp_path):
    # The property runs here and its examples are counted in the same test (a silent zero would hide a
    # broken strategy), whichever process or order the suite runs it in.
    EXAMPLES["count"] = 0
    any_data_directory_copies_as_frozen_parts_plus_everything_but_live_parts(tmp_path)
    assert EXAMPLES["count"] >= 25, EXAMPLES


# ----------------------------------------------------------------------------- the stand-in's FREEZE
def _standin_freeze():
    import importlib.util

    from tests.conftest import REPO

    path = REPO / "tests" / "e2e" / "images" / "clickhouse-standin" / "freeze.py"
    spec = importlib.util.spec_from_file_location("si_freeze", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standin = _standin_freeze()


def _standin_table(data: Path, database: str, table: str, engine: str, parts: list[str]) -> None:
    _write(data / "metadata" / database / f"{table}.sql", f"ATTACH TABLE _ (id Int64) ENGINE = {engine} ORDER BY id\n")
    for part in parts:
        _write(data / "data" / database / table / part / "data.tsv", f"{part}\n")


def test_the_standin_lists_only_mergetree_family_tables_for_the_backups_query(tmp_path):
    data = tmp_path / "clickhouse"
    _standin_table(data, "posthog", "sharded_events", "ReplicatedReplacingMergeTree('/zk/p', '{replica}', _timestamp)", [])
    _standin_table(data, "posthog", "person", "ReplacingMergeTree(version)", [])
    _standin_table(data, "posthog", "kafka_events_json", "Kafka('kafka:9092', 'clickhouse_events_json', 'group1', "
                                                         "'JSONEachRow')", [])
    _write(data / "metadata/posthog/events_json_mv.sql", "CREATE MATERIALIZED VIEW posthog.events_json_mv TO "
                                                          "posthog.sharded_events AS SELECT id FROM posthog.kafka_events_json\n")
    _standin_table(data, "default", "t", "MergeTree", [])
    assert standin.TABLES.fullmatch(capture.MERGETREE_TABLES)  # the kit's query is the one the stand-in answers
    assert standin.mergetree_tables(str(data)) == [("default", "t"), ("posthog", "person"),
                                                    ("posthog", "sharded_events")]


def test_the_standin_freezes_hard_links_read_only_and_unfreezes_the_parts(tmp_path):
    data = tmp_path / "clickhouse"
    _standin_table(data, "posthog", "events", "MergeTree", ["all_1_1_0", "all_2_2_0"])
    name = "posthog_compose_backup_1"
    standin.freeze(str(data), "posthog", "events", name, ["all_1_1_0", "all_2_2_0"], "MergeTree")
    frozen = data / "shadow" / name / "data/posthog/events/all_1_1_0/data.tsv"
    live = data / "data/posthog/events/all_1_1_0/data.tsv"
    assert frozen.stat().st_ino == live.stat().st_ino and frozen.stat().st_mode & 0o777 == 0o444
    assert (data / "shadow/increment.txt").read_text() == "1\n"
    with pytest.raises(NotImplementedError, match="Partition operations are not supported by storage Kafka"):
        standin.freeze(str(data), "posthog", "kafka_events_json", name, [], "Kafka")
    # A later insert is not in the snapshot, and the kit's copy holds the snapshot's parts only.
    _write(data / "data/posthog/events/all_3_3_0/data.tsv", "all_3_3_0\n")
    copied = _run_copy(data, name) if shutil.which("tar") else {}
    assert not shutil.which("tar") or sorted(p for p in copied if p.startswith("data/")) == [
        "data/posthog/events/all_1_1_0/data.tsv", "data/posthog/events/all_2_2_0/data.tsv"]
    standin.unfreeze(str(data), "posthog", "events", name)
    assert live.read_text() == "all_1_1_0\n" and list((data / "shadow" / name / "data/posthog/events").iterdir()) == []
    assert standin.escape_for_file_name("backup-1.x_y") == "backup%2D1%2Ex_y"
    match = standin.ALTER.fullmatch(f"ALTER TABLE `posthog`.`events` UNFREEZE WITH NAME '{name}'")
    assert match and match.groups() == ("posthog", "events", "UN", name)

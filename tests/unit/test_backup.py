"""backup and restore without an engine: the archive format and its encryption (property tests over
contents and tampering), the passphrase rules, retention, and fault injection at every step of
backup and restore that writes a file or changes the deployment. The end-to-end proof on a real
engine is tests/e2e/test_backup.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.operations import archive, archive_age, backup, restore
from posthog_compose.operations.backup import provenance
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from tests.conftest import set_env

PASSPHRASE = b"a passphrase of some length"
FAST_N = 2 ** 10  # the smallest work factor a reader accepts: property tests derive many keys


def _write(members: list[tuple[str, bytes]], passphrase: bytes | None = PASSPHRASE, chunk: int = archive.CHUNK,
           manifest: dict | None = None) -> bytes:
    out = io.BytesIO()
    sink = archive.EncryptingWriter(out, passphrase, n=FAST_N, chunk=chunk) if passphrase else out
    writer = archive.ArchiveWriter(sink)
    for name, data in members:
        writer.add_bytes(name, data)
    writer.close(manifest or {"format": 1})
    if passphrase:
        sink.finish()
    return out.getvalue()


def _read(blob: bytes, passphrase: bytes | None = PASSPHRASE) -> tuple[dict, dict[str, bytes]]:
    contents = {}
    result = archive.ReadResult({})
    for member in archive.iter_members(archive.open_stream(io.BytesIO(blob), passphrase), result):
        contents[member.name] = member.stream.read()
    return result.manifest, contents


#: Member names a writer accepts: relative POSIX paths of printable characters (archive_checks.name_problem).
printable = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs"],
                          exclude_characters="/")
name_parts = st.text(printable, min_size=1, max_size=8).filter(lambda part: part not in (".", ".."))
names_strategy = st.lists(name_parts, min_size=1, max_size=3).map("/".join)
members_strategy = st.lists(st.tuples(names_strategy, st.binary(max_size=3000)), max_size=5,
                            unique_by=lambda member: member[0])


# ----------------------------------------------------------------------------- format properties
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=members_strategy, chunk=st.integers(1, 700), encrypted=st.booleans())
def test_every_archive_reads_back_exactly(members, chunk, encrypted):
    blob = _write(members, PASSPHRASE if encrypted else None, chunk)
    manifest, contents = _read(blob, PASSPHRASE if encrypted else None)
    assert contents == dict(members)
    assert [m["name"] for m in manifest["members"]] == [name for name, _ in members]
    with _tmpfile(blob) as path:
        assert archive.is_encrypted(path) is encrypted


@contextlib.contextmanager
def _tmpfile(blob: bytes):
    """``blob`` as a file for as long as the block runs (hypothesis examples cannot use tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="archive-") as folder:
        path = Path(folder) / "archive.pcbk"
        path.write_bytes(blob)
        yield path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=members_strategy.filter(bool), data=st.data())
def test_any_changed_byte_or_truncation_of_an_encrypted_archive_is_refused(members, data):
    blob = _write(members, chunk=97)
    position = data.draw(st.integers(0, len(blob) - 1))
    if data.draw(st.booleans()):
        flipped = bytearray(blob)
        flipped[position] ^= data.draw(st.integers(1, 255))
        tampered = bytes(flipped)
    else:
        tampered = blob[:position]
    with pytest.raises(archive.ArchiveError):
        _read(tampered)


@settings(max_examples=60, deadline=None)
@given(members=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.binary(min_size=1, max_size=500)),
                        min_size=1, max_size=4, unique_by=lambda m: m[0]), data=st.data())
def test_a_changed_content_byte_of_a_plain_archive_fails_its_checksum(members, data):
    blob = bytearray(_write(members, None))
    name, content = data.draw(st.sampled_from(members))
    start = blob.index(json.dumps({"mode": 0o600, "name": name}, sort_keys=True).encode()) + len(
        json.dumps({"mode": 0o600, "name": name}, sort_keys=True)) + 4  # after the first frame's length
    offset = data.draw(st.integers(0, min(len(content), archive.FRAME) - 1))
    blob[start + offset] ^= 0x01
    with pytest.raises(archive.ArchiveError, match="checksum mismatch"):
        _read(bytes(blob), None)


def test_chunks_cannot_be_reordered_dropped_or_appended():
    blob = _write([("a", os.urandom(1000))], chunk=100)
    header_end = blob.index(b"}") + 1 + 16
    frames, rest = [], blob[header_end:]
    while rest:
        size = int.from_bytes(rest[:4], "big")
        frames.append(rest[:4 + size])
        rest = rest[4 + size:]
    head = blob[:header_end]
    for variant in (head + frames[1] + frames[0] + b"".join(frames[2:]), head + b"".join(frames[:-1]),
                    head + b"".join(frames) + frames[-1], head + b"".join(frames[:3] + frames[4:])):
        with pytest.raises(archive.ArchiveError):
            _read(variant)


def test_a_wrong_passphrase_is_told_apart_from_damage():
    blob = _write([("config/.env", b"SECRET_KEY=x\n")])
    with pytest.raises(archive.WrongPassphrase):
        _read(blob, b"another passphrase, long")
    with pytest.raises(archive.WrongPassphrase):
        _read(blob, None)
    assert b"SECRET_KEY" not in blob


def test_the_encrypted_stream_is_written_in_chunks_not_held_in_memory():
    class Sink:
        def __init__(self):
            self.largest = 0

        def write(self, data):
            self.largest = max(self.largest, len(data))
            return len(data)

    sink = Sink()
    writer = archive.ArchiveWriter(archive.EncryptingWriter(sink, PASSPHRASE, n=FAST_N))
    writer.add_stream("big", io.BytesIO(b"\0" * (8 * archive.CHUNK)))
    assert sink.largest <= archive.CHUNK + 16 + 4


def test_a_short_passphrase_is_refused():
    with pytest.raises(ValueError):
        archive.EncryptingWriter(io.BytesIO(), b"short")


# ----------------------------------------------------------------------------- passphrase
def test_passphrase_from_the_environment_or_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv(backup.PASSPHRASE_ENV, raising=False)
    with pytest.raises(OperatorError, match="no passphrase: set POSTHOG_BACKUP_PASSPHRASE"):
        backup.read_passphrase(None, required=True)
    assert backup.read_passphrase(None, required=False) is None
    monkeypatch.setenv(backup.PASSPHRASE_ENV, "too short")
    with pytest.raises(OperatorError, match="at least 12"):
        backup.read_passphrase(None, required=True)
    monkeypatch.setenv(backup.PASSPHRASE_ENV, "long enough passphrase")
    assert backup.read_passphrase(None, required=True) == b"long enough passphrase"
    key = tmp_path / "key"
    key.write_text("from the file, long\n")
    key.chmod(0o644)
    with pytest.raises(OperatorError, match="chmod 600"):
        backup.read_passphrase(str(key), required=True)
    key.chmod(0o600)
    assert backup.read_passphrase(str(key), required=True) == b"from the file, long"


# ----------------------------------------------------------------------------- a fake engine
class FakeRunner(Runner):
    def __init__(self, root):
        super().__init__(root)
        self.commands: list[list[str]] = []

    def run(self, cmd, **kwargs):
        self.commands.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, "", "")


class FakeProcess:
    """A stand-in for subprocess.Popen: stdout from ``output``, stdin collected."""

    def __init__(self, output: bytes = b"", returncode: int = 0, stderr: bytes = b""):
        self.stdout, self.stderr = io.BytesIO(output), io.BytesIO(stderr)
        self.stdin = io.BytesIO()
        self.stdin.close = lambda: None
        self.returncode = returncode

    def wait(self, timeout=None):
        return self.returncode

    def communicate(self, input=None, timeout=None):
        return self.stdout.read(), self.stderr.read()

    def poll(self):
        return self.returncode

    def kill(self):
        self.returncode = -9


DUMP = b"PGDMP" + os.urandom(3000)
KIT = {"version": "0.1.0", "commit": None, "modified": None}
TARS = {"/var/lib/clickhouse": b"clickhouse-tar" + os.urandom(5000), "/var/lib/zookeeper": b"zk-tar" + os.urandom(500)}


@pytest.fixture
def engine(deployed, monkeypatch):
    """Fake every engine step of backup and restore; ``engine.fail`` injects a failure at a step."""
    class State:
        fail: str | None = None
        fed: dict[str, bytes] = {}
        popens: list[list[str]] = []

    state = State()
    state.fed = {}
    state.popens = []
    # age's default scrypt work factor costs 256 MiB and a second or more per archive: the fake backups
    # use the smallest a reader accepts (the real factor is tested in test_archive_age.py).
    monkeypatch.setattr(archive_age, "AGE_WORK_FACTOR", archive_age.AGE_MIN_WORK_FACTOR)
    monkeypatch.setattr(backup, "_running", lambda root, runner: {s: True for s in ("db", "clickhouse", "zookeeper")})
    monkeypatch.setattr(backup, "existing_volumes", lambda runner, project: {backup.volume_name(project, v) for v in (
        "postgres-data", "clickhouse-data", "zookeeper-data", "zookeeper-logs", "kafka-data")})
    monkeypatch.setattr(restore, "existing_volumes", lambda runner, project: set())
    monkeypatch.setattr(backup, "_psql", lambda root, runner, values, sql: "123456 15.5")
    monkeypatch.setattr(backup, "_exec_text", lambda *args: "22.3.13.80")
    monkeypatch.setattr(backup, "_volume_sizes", lambda runner, image, volumes, project: dict.fromkeys(volumes, 10_000))
    monkeypatch.setattr("posthog_compose.operations.stack.wait_until_healthy", lambda *a, **k: 0.0)
    monkeypatch.setattr("posthog_compose.operations.stack.check_url", lambda values, timeout=30.0: (True, "302 to /preflight"))
    monkeypatch.setattr("posthog_compose.configuration.checks.require_clean", lambda root: None)
    monkeypatch.setenv(backup.PASSPHRASE_ENV, PASSPHRASE.decode())
    # The kit's version comes from git, whose subprocess the fake Popen below would answer.
    monkeypatch.setattr(provenance, "kit_version", lambda root: dict(KIT))

    def popen(command, **kwargs):
        state.popens.append(command)
        text = " ".join(command)
        if "pg_dump" in command:
            os.write(kwargs["stdout"], DUMP)
            if state.fail == "pg_dump":
                kwargs["stderr"].write(b"pg_dump: error: connection lost\n")
            return FakeProcess(b"", 1 if state.fail == "pg_dump" else 0)
        if "--list" in command:
            return FakeProcess(b";\n; Archive created\n3; 2615 TABLE public t posthog\n",
                               1 if state.fail == "pg_restore --list" else 0, b"pg_restore: error: bad header")
        if "-cf" in command or "clickhouse-copy" in command:
            mount = command[command.index("-C" if "-cf" in command else "clickhouse-copy") + 1]
            if state.fail == f"tar {mount}":
                return FakeProcess(b"", 2, b"tar: read error")
            return FakeProcess(TARS[mount])
        if "-xf" in command or "pg_restore" in command:
            process = FakeProcess(b"", 0)
            target = command[command.index("-C") + 1] if "-xf" in command else "postgres"
            if state.fail == f"load {target}":
                process.returncode = 2
                process.stderr = io.BytesIO(b"tar: write error")
            sink = process.stdin
            sink.close = lambda: state.fed.__setitem__(target, sink.getvalue())
            return process
        raise AssertionError(f"unexpected command {text}")

    monkeypatch.setattr(backup.subprocess, "Popen", popen)
    monkeypatch.setattr(restore.subprocess, "Popen", popen)
    return state


def _files(root: Path) -> list[str]:
    directory = root / "backups"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_backup_holds_config_postgres_and_the_volumes(deployed, engine):
    runner = FakeRunner(deployed)
    result = backup.create(deployed, runner, encrypt=True)
    assert result.path.name.startswith("posthog-") and oct(result.path.stat().st_mode & 0o777) == "0o600"
    assert oct((deployed / "backups").stat().st_mode & 0o777) == "0o700"
    manifest, contents = _read(result.path.read_bytes())
    assert contents["config/.env"] == (deployed / ".env").read_bytes()
    assert contents["postgres/posthog.dump"] == DUMP
    assert contents["volumes/clickhouse.tar"] == TARS["/var/lib/clickhouse"]
    assert contents["volumes/zookeeper.tar"] == TARS["/var/lib/zookeeper"]
    assert manifest["versions"] == {"postgres": "15.5", "clickhouse": "22.3.13.80"}
    assert manifest["posthog_version"] == "1.43.0" and manifest["encrypted"] is True
    assert any("kafka" in line for line in manifest["not_backed_up"])
    stops = [c for c in runner.commands if "stop" in c]
    starts = [c for c in runner.commands if "start" in c]
    # A running ClickHouse never stops (its tables are frozen); ZooKeeper is stopped around its own copy.
    assert [c[-1] for c in stops] == ["zookeeper"] and [c[-1] for c in starts] == ["zookeeper"]
    assert manifest["clickhouse_pause_seconds"] == 0.0
    assert not any(f.endswith(".partial") for f in _files(deployed))
    sidecar = json.loads(backup.sidecar_path(result.path).read_text())
    assert sidecar["archive_size"] == result.path.stat().st_size


def inject_backup_fault(engine, monkeypatch, step: str) -> None:
    """Make backup step ``step`` fail: a command of the fake engine, a full disk while writing, Ctrl-C,
    a failing fsync or rename (shared with the external-datastore fault table)."""
    engine.fail = step
    if step == "write":
        original = archive.TarArchiveWriter.add_stream

        def full_disk(self, name, *args, **kwargs):
            if name == "volumes/zookeeper.tar":
                raise OSError(28, "No space left on device")
            return original(self, name, *args, **kwargs)

        monkeypatch.setattr(archive.TarArchiveWriter, "add_stream", full_disk)
    if step == "interrupt":
        monkeypatch.setattr(backup.Meter, "__call__", lambda self, done: (_ for _ in ()).throw(KeyboardInterrupt()))
    if step == "fsync":
        monkeypatch.setattr(backup.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    if step == "rename":
        monkeypatch.setattr(backup.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(18, "cross-device")))


def assert_every_stopped_service_started(runner) -> None:
    stopped = {c[-1] for c in runner.commands if "stop" in c}
    started = {s for c in runner.commands if "start" in c for s in c[c.index("start") + 1:]}
    assert stopped <= started, f"{stopped - started} left stopped"


@pytest.mark.parametrize("step", ["pg_dump", "pg_restore --list", "tar /var/lib/clickhouse", "tar /var/lib/zookeeper",
                                  "write", "fsync", "rename", "interrupt"])
def test_a_failure_at_any_step_leaves_no_archive_and_clickhouse_running(deployed, engine, monkeypatch, step):
    inject_backup_fault(engine, monkeypatch, step)
    runner = FakeRunner(deployed)
    with pytest.raises((OperatorError, KeyboardInterrupt)) as caught:
        backup.create(deployed, runner, encrypt=True)
    assert step == "interrupt" or "\n" not in str(caught.value)
    assert not [f for f in _files(deployed) if f.endswith(".backup") or f.endswith(".partial") or f.endswith(".json")]
    assert_every_stopped_service_started(runner)


def test_unencrypted_only_with_no_encrypt_and_into_a_private_folder(deployed, engine, monkeypatch):
    monkeypatch.delenv(backup.PASSPHRASE_ENV)
    with pytest.raises(OperatorError, match="no passphrase"):
        backup.create(deployed, FakeRunner(deployed), encrypt=True)
    (deployed / "backups").mkdir(mode=0o755)
    (deployed / "backups").chmod(0o755)
    with pytest.raises(OperatorError, match="chmod 700"):
        backup.create(deployed, FakeRunner(deployed), encrypt=False)
    (deployed / "backups").chmod(0o700)
    result = backup.create(deployed, FakeRunner(deployed), encrypt=False)
    assert not archive.is_encrypted(result.path)


def test_too_little_free_space_is_refused_before_anything_runs(deployed, engine, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(backup.shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9, 1024))
    runner = FakeRunner(deployed)
    with pytest.raises(OperatorError, match="MiB free"):
        backup.create(deployed, runner, encrypt=True)
    assert not [c for c in runner.commands if "stop" in c] and not engine.popens
    assert not [f for f in _files(deployed) if "backup" in f]


def test_the_postgres_subset_never_stops_clickhouse(deployed, engine):
    runner = FakeRunner(deployed)
    result = backup.create(deployed, runner, subset="postgres")
    assert result.path.name.endswith("-postgres.backup")
    assert not [c for c in runner.commands if "stop" in c]
    _manifest, contents = _read(result.path.read_bytes())
    assert "volumes/clickhouse.tar" not in contents and contents["postgres/posthog.dump"] == DUMP


def test_keep_deletes_only_the_oldest_of_the_same_kind(tmp_path):
    for number, stamp in enumerate(("20260101-000000", "20260102-000000", "20260103-000000"), 1):
        (tmp_path / f"posthog-{stamp}.backup").write_bytes(b"x")
        backup.sidecar_path(tmp_path / f"posthog-{stamp}.backup").write_text(json.dumps({"sequence": number}))
    (tmp_path / "posthog-20250101-000000-postgres.backup").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    removed = backup.apply_retention(tmp_path, 2)
    assert [p.name for p in removed] == ["posthog-20260101-000000.backup"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt", "posthog-20250101-000000-postgres.backup", "posthog-20260102-000000.backup",
        "posthog-20260102-000000.backup.json", "posthog-20260103-000000.backup", "posthog-20260103-000000.backup.json"]


# ----------------------------------------------------------------------------- restore
@pytest.fixture
def made(deployed, engine):
    return backup.create(deployed, FakeRunner(deployed), encrypt=True).path


def test_restore_writes_env_and_feeds_every_member(deployed, engine, made):
    original = (deployed / ".env").read_bytes()
    (deployed / ".env").write_text("SOMETHING=else\n")
    runner = FakeRunner(deployed)
    summary = restore.restore(deployed, runner, str(made), yes=True)
    assert (deployed / ".env").read_bytes() == original
    assert oct((deployed / ".env").stat().st_mode & 0o777) == "0o600"
    assert engine.fed == {"/var/lib/clickhouse": TARS["/var/lib/clickhouse"],
                          "/var/lib/zookeeper": TARS["/var/lib/zookeeper"], "postgres": DUMP}
    ups = [c for c in runner.commands if "up" in c]
    assert ups[0][-1] == "db" and ups[-1][-4:] == ["--detach", "--wait", "--wait-timeout", "600"]
    kept = list((deployed / "backups").glob("pre-restore-*/.env"))
    assert kept and kept[0].read_text() == "SOMETHING=else\n"
    assert summary["archive"] == str(made)


def test_restore_onto_a_fresh_checkout_without_env(deployed, engine, made):
    env = (deployed / ".env").read_bytes()
    (deployed / ".env").unlink()
    runner = FakeRunner(deployed)
    restore.restore(deployed, runner, str(made))
    assert (deployed / ".env").read_bytes() == env
    assert not [c for c in runner.commands if "down" in c]
    assert set(engine.fed) == {"/var/lib/clickhouse", "/var/lib/zookeeper", "postgres"}


def _no_change(deployed, runner, engine, before):
    assert (deployed / ".env").read_bytes() == before
    assert not [c for c in runner.commands if "down" in c or "rm" in c]
    assert not [c for c in engine.popens if "-xf" in c or ("pg_restore" in c and "--list" not in c)]


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong passphrase", "not an archive"])
def test_a_bad_archive_or_passphrase_is_one_line_and_changes_nothing(deployed, engine, made, monkeypatch, damage):
    blob = bytearray(made.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x20
    elif damage == "truncate":
        blob = blob[:-50]
    elif damage == "not an archive":
        blob = bytearray(b"hello world, not a backup")
    else:
        monkeypatch.setenv(backup.PASSPHRASE_ENV, "this is not the passphrase")
    made.write_bytes(bytes(blob))
    before = (deployed / ".env").read_bytes()
    engine.popens.clear()
    runner = FakeRunner(deployed)
    with pytest.raises(OperatorError) as caught:
        restore.restore(deployed, runner, str(made), yes=True)
    message = str(caught.value)
    assert "\n" not in message and "nothing was changed" in message
    assert ("wrong passphrase" in message) == (damage == "wrong passphrase")
    _no_change(deployed, runner, engine, before)


def test_an_archive_from_a_newer_posthog_is_refused_with_the_fix(deployed, engine):
    from tests.conftest import set_env

    set_env(deployed, POSTHOG_IMAGE="posthog/posthog:release-1.44.0")
    newer = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    set_env(deployed, POSTHOG_IMAGE="posthog/posthog:release-1.43.0")
    before = (deployed / ".env").read_bytes()
    runner = FakeRunner(deployed)
    with pytest.raises(OperatorError, match=r"made by PostHog 1\.44\.0 .* Update the kit first"):
        restore.restore(deployed, runner, str(newer), yes=True)
    _no_change(deployed, runner, engine, before)


def test_existing_data_needs_the_typed_project_name(deployed, engine, made, monkeypatch):
    monkeypatch.setattr(restore, "existing_volumes", lambda runner, project: {f"{project}_postgres-data"})
    before = (deployed / ".env").read_bytes()
    for answer in ("", "yes\n"):
        monkeypatch.setattr("sys.stdin", io.StringIO(answer))
        runner = FakeRunner(deployed)
        with pytest.raises(OperatorError, match="nothing was changed"):
            restore.restore(deployed, runner, str(made))
        _no_change(deployed, runner, engine, before)
    monkeypatch.setattr("sys.stdin", io.StringIO("posthog\n"))
    runner = FakeRunner(deployed)
    restore.restore(deployed, runner, str(made))
    assert ["docker", "volume", "rm", "posthog_postgres-data"] in runner.commands


@pytest.mark.parametrize("step", ["load /var/lib/clickhouse", "load /var/lib/zookeeper", "load postgres"])
def test_a_failure_while_loading_says_half_restored_and_how_to_retry(deployed, engine, made, step):
    engine.fail = step
    with pytest.raises(OperatorError, match="half restored: fix the cause and restore again with --yes"):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)


def test_members_outside_the_deployment_are_refused(deployed, engine, tmp_path):
    from tests.unit.test_archive_hostile import member, plain

    evil = tmp_path / "evil.backup"
    evil.write_bytes(plain({"members": [member("config/.env", b"A=1\n"), member("config/../../etc/passwd", b"x")],
                            "manifest": {"format": 1}, "tail": b""}))
    with pytest.raises(OperatorError, match="not a plain relative path"):
        restore.restore(deployed, FakeRunner(deployed), str(evil), yes=True)
    assert not (tmp_path.parent / "etc").exists()


def test_verify_and_list(deployed, engine, made, capsys):
    summary = backup.verify_archive(deployed, made.name)
    assert summary["ok"] and summary["members"] >= 5
    capsys.readouterr()
    backup.list_archives(deployed, as_json=True)
    entries = json.loads(capsys.readouterr().out)
    assert entries[0]["archive"] == f"backups/{made.name}" and entries[0]["encrypted"] is True


def test_volume_sizes_come_from_one_read_only_du(tmp_path):
    class DuRunner(FakeRunner):
        def run(self, cmd, **kwargs):
            self.commands.append(list(cmd))
            return subprocess.CompletedProcess(cmd, 0, "4\t/measure/zookeeper-data\n8\t/measure/zookeeper-logs\n"
                                                       "1000\t/measure/clickhouse-data\n", "")

    runner = DuRunner(tmp_path)
    sizes = backup._volume_sizes(runner, "postgres:15", backup.VOLUMES, "analytics")
    assert sizes == {"volumes/zookeeper.tar": 12 * 1024, "volumes/clickhouse.tar": 1000 * 1024}
    mounts = [v for v in runner.commands[0] if v.startswith("analytics_")]
    assert len(runner.commands) == 1 and len(mounts) == 3 and all(v.endswith(":ro") for v in mounts)


def test_a_failure_while_writing_the_configuration_leaves_whole_files(deployed, engine, made, monkeypatch):
    original = (deployed / ".env").read_bytes()
    (deployed / ".env").write_text("OLD=1\n")
    (deployed / ".env").chmod(0o600)
    calls = []

    def failing(path, text, mode=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        from posthog_compose.fileops import atomic_write as real

        real(path, text, mode)

    monkeypatch.setattr(restore, "atomic_write", failing)
    with pytest.raises(OperatorError, match="No space left on device.*restore again with --yes"):
        restore.restore(deployed, FakeRunner(deployed), str(made), yes=True)
    assert calls[0].name == ".env" and (deployed / ".env").read_bytes() == original  # .env first, whole
    assert not list(deployed.rglob(".*.tmp"))
    assert not [c for c in engine.popens if "-xf" in c]  # no data was loaded after the failure


class WaitFails(FakeRunner):
    """The restore's `up --wait` of the whole deployment fails (the one of db alone succeeds)."""

    def run(self, cmd, **kwargs):
        self.commands.append(list(cmd))
        failed = "--wait" in cmd and cmd[-1] != "db"
        return subprocess.CompletedProcess(cmd, 1 if failed else 0, "a log line\n", "")


def test_a_service_that_stays_unhealthy_after_the_restore_is_named_with_its_logs(deployed, engine, made, monkeypatch,
                                                                                   capsys):
    from posthog_compose.operations import stack

    monkeypatch.setattr(stack, "service_states", lambda root, runner: [
        stack.ServiceState(name, "running", "unhealthy" if name == "web" else "healthy") for name in
        ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")])
    with pytest.raises(OperatorError, match=r"services failed: web \(unhealthy\); not healthy after the restore"):
        restore.restore(deployed, WaitFails(deployed), str(made), yes=True)


def test_a_named_deployment_is_backed_up_and_restored_under_its_own_name(deployed, engine, monkeypatch):
    """COMPOSE_PROJECT_NAME names the deployment: backup reads, and restore asks for and replaces, the
    volumes of that name (before, both looked for `posthog_*` and restore skipped its confirmation)."""
    set_env(deployed, COMPOSE_PROJECT_NAME="analytics")
    asked: list[str] = []

    def volumes_of(runner, project):
        asked.append(project)
        return {backup.volume_name(project, v) for v in (
            "postgres-data", "clickhouse-data", "zookeeper-data", "zookeeper-logs", "kafka-data")}

    monkeypatch.setattr(backup, "existing_volumes", volumes_of)
    monkeypatch.setattr(backup, "_volume_sizes", lambda runner, image, volumes, project: (
        asked.append(project), dict.fromkeys(volumes, 10_000))[1])
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    assert set(asked) == {"analytics"}
    tars = [c for c in engine.popens if "tar" in c and "-cf" in c]
    mounts = [c[i + 1] for c in tars for i, arg in enumerate(c) if arg == "--volume"]
    assert mounts and all(m.startswith("analytics_") for m in mounts), mounts

    monkeypatch.setattr(restore, "existing_volumes", volumes_of)
    before = (deployed / ".env").read_bytes()
    monkeypatch.setattr("sys.stdin", io.StringIO("posthog\n"))
    runner = FakeRunner(deployed)
    with pytest.raises(OperatorError, match="is not 'analytics': nothing was changed"):
        restore.restore(deployed, runner, str(made))
    _no_change(deployed, runner, engine, before)
    monkeypatch.setattr("sys.stdin", io.StringIO("analytics\n"))
    runner = FakeRunner(deployed)
    restore.restore(deployed, runner, str(made))
    removed = [c[-1] for c in runner.commands if c[:3] == ["docker", "volume", "rm"]]
    assert removed and all(name.startswith("analytics_") for name in removed), removed


def test_the_shell_names_the_deployment_before_the_archive_does(monkeypatch):
    from posthog_compose.configuration import compose

    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    assert compose.project_name_of({}) == "posthog"
    assert compose.project_name_of({"COMPOSE_PROJECT_NAME": "analytics"}) == "analytics"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "staging")
    assert compose.project_name_of({"COMPOSE_PROJECT_NAME": "analytics"}) == "staging"


def test_an_edge_proxy_that_stays_unhealthy_after_the_restore_is_named(deployed, engine, made, monkeypatch):
    # With the proxy on, `up --wait` waits for it too; when it is the one that fails, the message
    # names it (not the eight services, which are healthy).
    from posthog_compose.operations import stack

    monkeypatch.setattr(stack, "service_states", lambda root, runner: [
        stack.ServiceState(name, "running", "healthy") for name in
        ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")])
    monkeypatch.setattr(restore, "_values", lambda root: {"COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml"})
    with pytest.raises(OperatorError, match=r"services failed: proxy \(not started\); not healthy after the restore"):
        restore.restore(deployed, WaitFails(deployed), str(made), yes=True)

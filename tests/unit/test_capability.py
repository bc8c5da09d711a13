"""Health from capability: a datastore is healthy only when it takes a write (stack/capability.py), and
status, up, doctor and the upgrade's preflight say so. The engine is a fake runner answering each probe
as the real client does (psql's and clickhouse-client's messages on a full data volume)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose.errors import OperatorError
from posthog_compose.operations import diskusage, lifecycle, stack, upgrade
from posthog_compose.operations.doctor import host
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.stack import capability
from posthog_compose.operations.stack.states import ServiceState

# What psql prints when the new table's first block cannot be written (PostgreSQL 13 on a full volume).
PG_FULL = 'ERROR:  could not extend file "base/16384/16999": No space left on device\nHINT:  Check free disk space.\n'
# What clickhouse-client prints when the server refuses the part (ClickHouse 22.3's NOT_ENOUGH_SPACE).
CH_FULL = ("Received exception from server (version 22.3.6):\nCode: 243. DB::Exception: Cannot reserve 1.00 MiB, "
           "not enough space. (NOT_ENOUGH_SPACE)\n")
# What cp-kafka's kafka-console-producer --sync prints when the broker cannot append to the log (ConsoleProducer's
# printStackTrace of the send's ExecutionException), and when no broker answers before max.block.ms.
KAFKA_STORAGE = ("[2026-01-01 00:00:00,000] WARN [Producer clientId=console-producer] Received invalid metadata error "
                 "in produce request on partition posthog_compose_write_probe-0 due to "
                 "org.apache.kafka.common.errors.KafkaStorageException: Disk error when trying to access log file on "
                 "the disk.. Going to request metadata update now\n"
                 "java.util.concurrent.ExecutionException: org.apache.kafka.common.errors.KafkaStorageException: Disk "
                 "error when trying to access log file on the disk.\n\tat org.apache.kafka.clients.producer.internals."
                 "FutureRecordMetadata.valueOrError(FutureRecordMetadata.java:97)\n")
KAFKA_TIMEOUT = ("java.util.concurrent.ExecutionException: org.apache.kafka.common.errors.TimeoutException: Topic "
                 "posthog_compose_write_probe not present in metadata after 4000 ms.\n")
DF = "Filesystem 1024-blocks Used Available Capacity Mounted on\n{rows}"


def df_rows(*free_kb: int, total_kb: int = 65536) -> str:
    return DF.format(rows="".join(f"tmpfs {total_kb} {total_kb - f} {f} 50% /v{i}\n" for i, f in enumerate(free_kb)))


class FakeRunner(Runner):
    """Answers `compose exec SERVICE psql|sh|df` from ``answers`` (service, program) -> (code, stdout,
    stderr), or raises what the real Runner raises when a command passes its deadline."""

    def __init__(self, root, answers=None, delay=0.0, hang=()):
        super().__init__(Path(root))
        self.answers, self.delay, self.hang = dict(answers or {}), delay, set(hang)
        self.calls: list[list[str]] = []
        self.inputs: list[str | None] = []
        self.lock = threading.Lock()

    def run(self, cmd, *, capture=False, check=True, input=None, mutating=True, timeout=None):
        assert not mutating, cmd
        with self.lock:
            self.calls.append(list(cmd))
            self.inputs.append(input)
        index = cmd.index("exec")
        service, program = cmd[index + 2], cmd[index + 3]
        if (service, program) in self.hang:
            raise OperatorError(f"`{' '.join(cmd[:4])} ...` did not finish within {timeout:.0f} s")
        time.sleep(self.delay)
        paths = len(cmd) - cmd.index("-Pk") - 1 if program == "df" else 0  # df prints one row per path asked
        code, out, err = self.answers.get((service, program), (0, df_rows(*[60000] * paths) if paths else "", ""))
        return subprocess.CompletedProcess(cmd, code, out, err)


VALUES = {"POSTGRES_USER": "posthog", "POSTGRES_DB": "posthog", "CLICKHOUSE_DATABASE": "posthog"}


# ----------------------------------------------------------------------------- each verdict
def test_a_datastore_that_takes_the_write_and_has_room_is_ok(tmp_path):
    found = capability.check(tmp_path, FakeRunner(tmp_path), VALUES, ["db", "clickhouse", "kafka"])
    assert {name: c.verdict for name, c in found.items()} == {"db": "ok", "clickhouse": "ok", "kafka": "ok"}
    assert found["db"].space[0].volume == "postgres-data" and found["db"].space[0].free_bytes == 60000 * 1024


def test_the_postgres_probe_writes_a_new_block_in_a_transaction_it_rolls_back(tmp_path):
    runner = FakeRunner(tmp_path)
    assert capability.probe_postgres(tmp_path, runner, VALUES) == ("ok", "")
    script = runner.inputs[0]
    # A fresh table's first row needs a new block on the data volume; nothing is left behind.
    assert "BEGIN;" in script and "CREATE TABLE posthog_compose_write_probe_" in script and "INSERT INTO" in script
    assert script.rstrip().endswith("ROLLBACK;") and "TEMP" not in script and "statement_timeout" in script
    assert runner.calls[0][-4:] == ["-U", "posthog", "-d", "posthog"] and "psql" in runner.calls[0]


def test_postgres_refusing_the_insert_is_failing_with_the_reason_and_a_fix(tmp_path):
    runner = FakeRunner(tmp_path, {("db", "psql"): (3, "", PG_FULL)})
    found = capability.check(tmp_path, runner, VALUES, ["db"])["db"]
    assert found.verdict == "failing" and "No space left on device" in found.reason
    assert "postgres-data" in found.fix and "\n" not in found.line()
    assert found.line().startswith("db (PostgreSQL): cannot write: could not extend file")


def test_clickhouse_refusing_the_part_is_failing(tmp_path):
    runner = FakeRunner(tmp_path, {("clickhouse", "clickhouse-client"): (243, "", CH_FULL)})
    found = capability.check(tmp_path, runner, VALUES, ["clickhouse"])["clickhouse"]
    assert found.verdict == "failing" and found.reason.startswith("Cannot reserve 1.00 MiB, not enough space")
    assert "clickhouse-data" in found.fix
    # The probe's own call, wherever the other probes' calls (in threads of their own) fall beside it.
    insert = [call for call in runner.calls if call[-1] == "INSERT INTO posthog.posthog_compose_write_probe FORMAT TSV"]
    assert len(insert) == 1, runner.calls
    assert "--password" not in insert[0]  # the client reads CLICKHOUSE_PASSWORD in the container


def test_the_clickhouse_table_is_made_once_when_it_is_missing(tmp_path):
    class FirstRun(FakeRunner):
        def run(self, cmd, **kwargs):
            result = super().run(cmd, **kwargs)
            if cmd[-1].startswith("INSERT") and not any(c[-1].startswith("CREATE") for c in self.calls):
                return subprocess.CompletedProcess(cmd, 60, "", "Code: 60. DB::Exception: Table posthog.x doesn't "
                                                   "exist. (UNKNOWN_TABLE)")
            return result

    runner = FirstRun(tmp_path)
    assert capability.probe_clickhouse(tmp_path, runner, VALUES) == ("ok", "")
    queries = [call[-1] for call in runner.calls]
    assert queries[0].startswith("INSERT") and queries[2].startswith("INSERT")
    assert queries[1].startswith("CREATE TABLE IF NOT EXISTS posthog.posthog_compose_write_probe ") and "TTL" in queries[1]


def test_the_kafka_probe_produces_one_acknowledged_message_to_a_topic_posthog_never_reads(tmp_path):
    from posthog_compose.operations.ingestion import path as ingestion_path

    runner = FakeRunner(tmp_path)
    values = {**VALUES, "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://kafka:9092"}
    assert capability.probe_kafka(tmp_path, runner, values) == ("ok", "")
    call = runner.calls[0]
    tool = call[call.index("kafka-console-producer"):]
    assert tool[:5] == ["kafka-console-producer", "--bootstrap-server", "kafka:9092", "--topic",
                        "posthog_compose_write_probe"]
    assert "--sync" in tool and tool[tool.index("--request-required-acks") + 1] == "all"
    assert runner.inputs[0].count("\n") == 1  # one message
    # The client's own timeouts end before the probe's deadline kills it, so that the broker's error is read.
    assert capability.KAFKA_CLIENT_MS / 1000 < capability.KAFKA_PROBE_SECONDS
    assert "max.block.ms=4000" in tool and "delivery.timeout.ms=4000" in tool
    topics = {value for name, value in vars(ingestion_path).items() if name.isupper() and isinstance(value, str)}
    assert capability.KAFKA_PROBE_TOPIC not in topics and not capability.KAFKA_PROBE_TOPIC.startswith(
        ("clickhouse_", "events_", "plugin_"))


def test_kafka_refusing_the_produce_is_failing_with_the_reason_and_a_fix(tmp_path):
    runner = FakeRunner(tmp_path, {("kafka", "kafka-console-producer"): (1, "", KAFKA_STORAGE)})
    found = capability.check(tmp_path, runner, VALUES, ["kafka"])["kafka"]
    assert found.verdict == "failing"
    assert found.reason == "KafkaStorageException: Disk error when trying to access log file on the disk"
    assert "kafka-data" in found.fix and found.fix.startswith("free space")
    assert found.line().startswith("kafka (Kafka): cannot write: KafkaStorageException: Disk error")
    refused = FakeRunner(tmp_path, {("kafka", "kafka-console-producer"): (1, "", (
        "org.apache.kafka.common.errors.NotEnoughReplicasException: Messages are rejected since there are fewer "
        "in-sync replicas than required.\n"))})
    other = capability.check(tmp_path, refused, VALUES, ["kafka"])["kafka"]
    assert other.verdict == "failing" and other.fix == "read `invoke logs -s kafka --tail 50` for why it refuses writes"


def test_kafka_that_answers_too_late_or_not_at_all_is_cannot_tell(tmp_path):
    runner = FakeRunner(tmp_path, {("kafka", "kafka-console-producer"): (1, "", KAFKA_TIMEOUT)})
    verdict, reason = capability.probe_kafka(tmp_path, runner, VALUES)
    assert verdict == "cannot tell" and reason.startswith("TimeoutException: Topic posthog_compose_write_probe")
    hung = FakeRunner(tmp_path, hang={("kafka", "kafka-console-producer")})
    assert capability.probe_kafka(tmp_path, hung, VALUES) == (
        "cannot tell", f"no answer within {capability.KAFKA_PROBE_SECONDS:.0f} s")
    stopped = FakeRunner(tmp_path, {("kafka", "kafka-console-producer"): (1, "", 'service "kafka" is not running')})
    assert capability.probe_kafka(tmp_path, stopped, VALUES) == ("cannot tell", "not running")


def test_a_client_that_cannot_connect_or_a_stopped_container_is_cannot_tell(tmp_path):
    runner = FakeRunner(tmp_path, {
        ("clickhouse", "clickhouse-client"): (210, "", "Code: 210. DB::NetException: Connection refused (127.0.0.1:9000)."),
        ("db", "psql"): (1, "", 'service "db" is not running'),
    })
    found = capability.check(tmp_path, runner, VALUES, ["db", "clickhouse"])
    assert found["db"].verdict == "cannot tell" and found["db"].reason == "not running"
    assert found["clickhouse"].verdict == "cannot tell" and "Connection refused" in found["clickhouse"].reason
    assert not capability.failing(found)


def test_a_probe_past_its_deadline_is_cannot_tell_not_failing(tmp_path):
    runner = FakeRunner(tmp_path, hang={("db", "psql"), ("clickhouse", "clickhouse-client")})
    found = capability.check(tmp_path, runner, VALUES, ["db", "clickhouse"])
    assert {c.verdict for c in found.values()} == {"cannot tell"}
    assert found["db"].reason == f"no answer within {capability.PROBE_SECONDS:.0f} s"


def test_the_real_deadline_ends_a_hanging_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(capability, "PROBE_SECONDS", 0.5)
    monkeypatch.setattr(capability.compose, "command", lambda root, *args: ["sleep", "30"])
    clock = time.monotonic()
    assert capability.probe_postgres(tmp_path, Runner(tmp_path), VALUES)[0] == "cannot tell"
    assert time.monotonic() - clock < 5


def test_a_full_volume_filesystem_is_failing_even_without_a_write_probe(tmp_path):
    runner = FakeRunner(tmp_path, {("kafka", "df"): (0, df_rows(0), "")})
    found = capability.check(tmp_path, runner, VALUES, ["kafka"])["kafka"]
    assert found.verdict == "failing" and found.reason == "the filesystem of volume kafka-data is full"
    assert "kafka-data" in found.fix


def test_every_probe_runs_at_once(tmp_path):
    runner = FakeRunner(tmp_path, delay=1.0)
    clock = time.monotonic()
    found = capability.check(tmp_path, runner, VALUES, ["db", "clickhouse", "kafka", "zookeeper"])
    assert len(found) == 4 and time.monotonic() - clock < 2.5  # six calls of 1 s each


# ----------------------------------------------------------------------------- fuzzing what the clients print
@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 255), stderr=st.text(max_size=300))
def test_any_client_output_gives_one_of_the_three_verdicts(tmp_path_factory, code, stderr):
    root = tmp_path_factory.getbasetemp()
    runner = FakeRunner(root, {("db", "psql"): (code, "", stderr), ("clickhouse", "clickhouse-client"): (code, "", stderr)})
    runner.answers[("kafka", "kafka-console-producer")] = (code, "", stderr)
    for probe in (capability.probe_postgres, capability.probe_clickhouse, capability.probe_kafka):
        verdict, reason = probe(root, runner, VALUES)
        assert verdict in ("ok", "failing", "cannot tell") and "\n" not in reason
        assert (verdict == "ok") == (code == 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), max_size=6))
def test_any_df_output_parses_without_raising(lines):
    rows = capability.parse_df_rows("\n".join(lines))
    assert len(rows) <= max(0, sum(1 for line in "\n".join(lines).split("\n")[1:] if line.split()))
    assert all(len(row) == 2 for row in rows)


# ----------------------------------------------------------------------------- status, up, doctor, upgrade
def _healthy():
    return [ServiceState(name, "running", "healthy" if name != "worker" else "", image=f"x/{name}")
            for name in ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")]


@pytest.fixture
def status_engine(deployed, monkeypatch):
    """Everything status asks besides the probes answers "healthy"."""
    monkeypatch.setattr(stack, "service_states", lambda root, runner: _healthy())
    monkeypatch.setattr(stack, "survey", lambda root, runner: stack.Survey())
    monkeypatch.setattr(stack, "readiness", lambda values, timeout=3.0: (True, True, "/_readyz answered 200"))
    monkeypatch.setattr(diskusage, "for_status", lambda root, runner: diskusage.DiskReport(
        data_root="/var/lib/docker", measured_by="local", total_bytes=100 * diskusage.GB, free_bytes=80 * diskusage.GB))
    return deployed


def test_status_says_cannot_write_and_exits_non_zero_while_every_container_is_healthy(status_engine, capsys):
    runner = FakeRunner(status_engine, {("db", "psql"): (3, "", PG_FULL), ("db", "df"): (0, df_rows(0), "")})
    with pytest.raises(OperatorError) as caught:
        lifecycle.status(status_engine, runner)
    out = capsys.readouterr().out
    assert "db cannot write (could not extend file" in str(caught.value) and "Fix: free space" in str(caught.value)
    db = next(line.split() for line in out.splitlines() if line.startswith("db "))
    assert db[3] == "failing", out
    assert "web: degraded: depends on db (cannot write)" in out
    assert "db (PostgreSQL): cannot write: could not extend file" in out
    assert "Volume postgres-data: 0 B free of 67.1 MB (0%) on a filesystem of its own." in out
    assert "8 of 8 services running and healthy" not in out


def test_status_json_carries_the_write_verdicts_and_still_exits_non_zero(status_engine, capsys):
    runner = FakeRunner(status_engine, {("db", "psql"): (3, "", PG_FULL)})
    with pytest.raises(OperatorError):
        lifecycle.status(status_engine, runner, as_json=True)
    report = json.loads(capsys.readouterr().out)
    db = next(row for row in report["services"] if row["service"] == "db")
    assert db["verdict"].startswith("failing: cannot write") and db["writes"]["verdict"] == "failing"
    assert report["disk"]["filesystems"]["postgres-data"]["free_bytes"] == 60000 * 1024


def test_status_and_upgrade_refuse_on_a_kafka_that_refuses_writes(status_engine, monkeypatch, capsys):
    runner = FakeRunner(status_engine, {("kafka", "kafka-console-producer"): (1, "", KAFKA_STORAGE)})
    with pytest.raises(OperatorError, match=r"^kafka cannot write \(KafkaStorageException: Disk error"):
        lifecycle.status(status_engine, runner)
    out = capsys.readouterr().out
    kafka = next(line.split() for line in out.splitlines() if line.startswith("kafka "))
    assert kafka[1:4] == ["running", "healthy", "failing"], out
    assert "kafka (Kafka): cannot write: KafkaStorageException" in out and "Fix: free space on the filesystem of " \
        "kafka-data" in out
    monkeypatch.setattr(upgrade, "check_gates", lambda root, runner, gates: None)
    monkeypatch.setattr("posthog_compose.configuration.checks.require_clean", lambda root: None)
    for name in ("check_free_disk", "backup_postgres", "fetch_image", "_recreate", "_set_image"):
        monkeypatch.setattr(upgrade, name, lambda *args: pytest.fail("the upgrade went on"))
    with pytest.raises(OperatorError, match="upgrade stopped before the switch, nothing changed: kafka cannot write"):
        upgrade.run(status_engine, runner, upgrade.Request(to="a" * 40))


def test_status_that_cannot_tell_stays_healthy_and_exits_0(status_engine, capsys):
    runner = FakeRunner(status_engine, hang={("db", "psql")})
    lifecycle.status(status_engine, runner)
    out = capsys.readouterr().out
    assert "db (PostgreSQL): whether it can write cannot be told (no answer within 5 s)" in out
    assert out.rstrip().endswith("8 of 8 services running and healthy.")


def test_up_fails_when_a_datastore_it_started_cannot_write(tmp_path):
    runner = FakeRunner(tmp_path, {("clickhouse", "clickhouse-client"): (243, "", CH_FULL)})
    with pytest.raises(OperatorError, match=r"^clickhouse cannot write \(Cannot reserve"):
        lifecycle.check_datastores_write(tmp_path, runner, VALUES, ["db", "clickhouse", "web"])
    lifecycle.check_datastores_write(tmp_path, FakeRunner(tmp_path), VALUES, ["db", "clickhouse", "web"])


def test_doctor_errors_on_a_datastore_that_cannot_write_and_a_full_volume(deployed, monkeypatch):
    monkeypatch.setattr(stack, "service_states", lambda root, runner: _healthy())
    runner = FakeRunner(deployed, {("db", "psql"): (3, "", PG_FULL), ("db", "df"): (0, df_rows(0), "")})
    check, found = host._datastore_writes(deployed, runner)
    assert check.status == "error" and check.name == "datastore writes" and "postgres-data" in check.fix
    monkeypatch.setattr(diskusage, "measure", lambda root, runner: diskusage.DiskReport(
        data_root="/var/lib/docker", total_bytes=100 * diskusage.GB, free_bytes=80 * diskusage.GB))
    disk = host._data_disk(deployed, runner, found)
    assert disk.status == "error" and "postgres-data: 0 B free of 67.1 MB on a filesystem of its own" in disk.detail
    ok, _ = host._datastore_writes(deployed, FakeRunner(deployed))
    assert ok.status == "ok"


def test_upgrade_refuses_before_anything_changes_when_a_datastore_cannot_write(deployed, monkeypatch):
    monkeypatch.setattr(stack, "service_states", lambda root, runner: _healthy())
    monkeypatch.setattr(upgrade, "check_gates", lambda root, runner, gates: None)
    monkeypatch.setattr("posthog_compose.configuration.checks.require_clean", lambda root: None)
    steps = []
    for name in ("check_free_disk", "backup_postgres", "fetch_image", "_recreate", "_set_image"):
        monkeypatch.setattr(upgrade, name, lambda *args, name=name: steps.append(name))
    env_before = (deployed / ".env").read_text()
    runner = FakeRunner(deployed, {("db", "psql"): (3, "", PG_FULL)})
    with pytest.raises(OperatorError, match="upgrade stopped before the switch, nothing changed: db cannot write"):
        upgrade.run(deployed, runner, upgrade.Request(to="a" * 40))
    assert steps == [] and (deployed / ".env").read_text() == env_before


def test_status_asks_the_states_disk_readiness_and_probes_at_once(status_engine, monkeypatch, capsys):
    """Each part of status takes 0.8 s here (the listing, the disk, web's readiness, every probe): asked
    one after the other they took 2.4 s and more; at once, about one part's time."""
    def slow(result):
        def call(*args, **kwargs):
            time.sleep(0.8)
            return result
        return call

    monkeypatch.setattr(stack, "service_states", slow(_healthy()))
    monkeypatch.setattr(diskusage, "for_status", slow(diskusage.DiskReport(
        data_root="/var/lib/docker", measured_by="local", total_bytes=100 * diskusage.GB, free_bytes=80 * diskusage.GB)))
    monkeypatch.setattr(stack, "readiness", slow((True, True, "/_readyz answered 200")))
    clock = time.monotonic()
    lifecycle.status(status_engine, FakeRunner(status_engine, delay=0.8))
    took = time.monotonic() - clock
    assert capsys.readouterr().out.rstrip().endswith("8 of 8 services running and healthy.")
    assert took < 2.0, f"status took {took:.1f} s"

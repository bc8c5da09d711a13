"""The stand-ins carry an event along PostHog 1.43.0's ingestion path (tests/e2e/images/posthog-standin/
BOUNDARIES.md, "Ingestion path"), exercised without an engine: the Kafka stand-in's broker runs here on a
loopback port, and capture, the plugin server's consumer and ClickHouse's Kafka engine talk to it for real.
Each test names the files of the 1.43.0 tag it holds the stand-ins to."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest
from hypothesis import example, given, settings, strategies as st

from tests.conftest import REPO

IMAGES = REPO / "tests" / "e2e" / "images"
KAFKA = IMAGES / "kafka-standin"
POSTHOG = IMAGES / "posthog-standin"
CLICKHOUSE = IMAGES / "clickhouse-standin"


def _load(name, path):
    """A stand-in file as a module (its folder on sys.path meanwhile; SIGTERM handler restored)."""
    handler = signal.getsignal(signal.SIGTERM)
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
        signal.signal(signal.SIGTERM, handler)
    return module


kafka_standin = _load("si_kafka_standin", KAFKA / "kafka_standin.py")
kafka_wire = _load("si_kafka_wire", KAFKA / "kafka_wire.py")
capture = _load("si_capture", POSTHOG / "capture.py")
consumer = _load("si_ingestion_consumer", POSTHOG / "ingestion_consumer.py")
engine = _load("si_kafka_engine", CLICKHOUSE / "kafka_engine.py")
where = _load("si_select_where", CLICKHOUSE / "select_where.py")


@pytest.fixture
def broker(tmp_path):
    """The Kafka stand-in's broker on a loopback port: (Broker, ["127.0.0.1:PORT"])."""
    state = kafka_standin.Broker(str(tmp_path / "kafka"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    threading.Thread(target=kafka_standin.serve, args=(state, listener), daemon=True).start()
    yield state, [f"127.0.0.1:{listener.getsockname()[1]}"]
    listener.close()


def _produce(hosts):
    return lambda topic, key, value: kafka_wire.produce(hosts, topic, key, value)


def _send(hosts, body, find_team=lambda token: (7, False) if token == "phc_project_key" else None, path="/capture/"):
    return capture.capture(path, {}, json.dumps(body).encode(), "http://posthog.example", "203.0.113.9", find_team,
                           _produce(hosts), now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))


def _messages(state, topic):
    return state.logs.get(topic, [])


# posthog/api/capture.py:41-63,386-411 and posthog/settings/data_stores.py:142-149: one message per event to
# events_plugin_ingestion, keyed by sha256("team_id:distinct_id"), the event itself as JSON under "data".
def test_capture_takes_an_event_into_events_plugin_ingestion(broker):
    state, hosts = broker
    event = {"api_key": "phc_project_key", "event": "ingestion probe", "distinct_id": "d-1", "properties": {"a": 1}}
    assert _send(hosts, event) == (200, {"status": 1})
    [message] = _messages(state, "events_plugin_ingestion")
    assert message["key"] == hashlib.sha256(b"7:d-1").hexdigest()
    value = json.loads(message["value"])
    assert {k: value[k] for k in ("distinct_id", "team_id", "ip", "site_url", "token", "sent_at")} == {
        "distinct_id": "d-1", "team_id": 7, "ip": "203.0.113.9", "site_url": "http://posthog.example",
        "token": "phc_project_key", "sent_at": ""}
    assert value["now"] == "2026-01-02T03:04:05+00:00" and json.loads(value["data"])["properties"] == {"a": 1}
    # A batch under "batch", the token in it; each event is its own message (capture.py:239-249).
    batch = {"api_key": "phc_project_key", "batch": [{"event": "a", "distinct_id": "x"}, {"event": "b", "distinct_id": "y"}]}
    assert _send(hosts, batch, path="/batch") == (200, {"status": 1})
    assert [json.loads(m["value"])["distinct_id"] for m in _messages(state, "events_plugin_ingestion")] == ["d-1", "x", "y"]
    assert capture.is_capture_path("/e") and capture.is_capture_path("/e/") and not capture.is_capture_path("/decide/")


def _raise(*args):
    raise RuntimeError("no connection")


# posthog/api/capture.py:208-221,297-342 and posthog/api/utils.py:242-278: the answers.
def test_capture_answers_as_1_43_does(broker):
    state, hosts = broker
    status, body = _send(hosts, {"event": "e", "distinct_id": "d"})
    assert (status, body["code"]) == (401, "missing_api_key")
    status, body = _send(hosts, {"api_key": "phc_other_key_", "event": "e", "distinct_id": "d"})
    assert (status, body["code"]) == (401, "invalid_api_key")
    status, body = _send(hosts, {"api_key": "phc_project_key", "event": "e"})
    assert (status, body["code"]) == (400, "invalid_payload") and "distinct_id" in body["detail"]
    assert _send(hosts, {"api_key": "phc_project_key", "distinct_id": "d"}) == (200, {"status": 1})  # dropped, no name
    assert _messages(state, "events_plugin_ingestion") == []
    refused = capture.capture("/e/", {}, b'{"api_key": "phc_project_key", "event": "e", "distinct_id": "d"}', "http://h",
                              "1.2.3.4", lambda token: (1, False), _raise)
    assert refused[0] == 503 and refused[1]["code"] == "server_error"
    # PostgreSQL fails while the team is read: the event goes to the dead letter queue, still 200.
    assert _send(hosts, {"token": "phc_project_key", "event": "e", "distinct_id": "d"}, find_team=_raise) == (200, {"status": 1})
    [dead] = _messages(state, "events_dead_letter_queue")
    assert "Unable to fetch team from Postgres" in json.loads(dead["value"])["error"]
    assert capture.capture("/e/", {}, b"{not json", "h", None, _raise, _raise)[1]["code"] == "invalid_payload"


# plugin-server kafka-queue.ts:41-75,101-110, event.ts:91-101, process-event.ts:229-254: group clickhouse-ingestion
# reads events_plugin_ingestion and produces the row to clickhouse_events_json keyed by the uuid, then commits.
def test_the_plugin_server_turns_the_message_into_the_clickhouse_row(broker):
    state, hosts = broker
    client = kafka_wire.Client(hosts)
    assert consumer.consume_once(client, environ={}) == 0  # joins at the end of each topic (kafkajs's default)
    assert state.committed["clickhouse-ingestion"] == {"events_plugin_ingestion": 0, "clickhouse_events_json": 0}
    _send(hosts, {"api_key": "phc_project_key", "event": "ingestion probe", "distinct_id": "d-2",
                  "timestamp": "2026-01-02T03:04:00Z", "properties": {"k": "v"}})
    now = datetime(2026, 1, 2, 3, 4, 6, 500000, tzinfo=timezone.utc)
    assert consumer.consume_once(client, environ={}, now=now) == 1
    [message] = _messages(state, "clickhouse_events_json")
    row = json.loads(message["value"])
    assert message["key"] == row["uuid"]
    assert {k: row[k] for k in ("event", "team_id", "distinct_id", "timestamp", "created_at", "elements_chain")} == {
        "event": "ingestion probe", "team_id": 7, "distinct_id": "d-2", "timestamp": "2026-01-02 03:04:00.000000",
        "created_at": "2026-01-02 03:04:06.500000", "elements_chain": ""}
    assert json.loads(row["properties"]) == {"k": "v", "$ip": "203.0.113.9"}
    assert state.committed["clickhouse-ingestion"]["events_plugin_ingestion"] == 1
    assert consumer.names({"KAFKA_PREFIX": "p_"}) == ("p_clickhouse-ingestion", "p_events_plugin_ingestion",
                                                      "p_clickhouse_events_json")
    client.close()


@pytest.fixture
def standin_module(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("CLICKHOUSE_", "KAFKA_")):
            monkeypatch.delenv(name)
    return _load("si_standin", POSTHOG / "standin.py")


# posthog/models/event/sql.py:95-141, posthog/clickhouse/kafka_engine.py:38-41, data_stores.py:118,131.
def test_the_migration_writes_1_43s_kafka_table_and_view(standin_module, monkeypatch):
    monkeypatch.setenv("KAFKA_URL", "kafka://kafka-a:9092,kafka://kafka-b:19092")
    events, kafka_table, view = standin_module.clickhouse_schema({"CLICKHOUSE_DATABASE": "posthog"}, "v1")
    assert engine.kafka_settings(kafka_table) == {"broker_list": "kafka-a:9092,kafka-b:19092",
                                                  "topic": "clickhouse_events_json", "group": "group1",
                                                  "format": "JSONEachRow"}
    assert engine.kafka_settings(events) is None and "ORDER BY (team_id, toDate(timestamp), event" in events
    found = engine.view(view)
    assert (found["name"], found["target"], found["source"]) == ("posthog.events_json_mv", "posthog.events",
                                                                "posthog.kafka_events_json")
    names = [name for name, _ in engine.columns(events)]
    assert names[:6] == ["uuid", "event", "properties", "timestamp", "team_id", "distinct_id"]
    assert found["columns"] == names  # sql.py:109-141 selects every column, _timestamp and _offset included
    assert found["if_not_exists"]  # so the stand-in's migration, re-run after a kill, does not fail on the view
    assert standin_module.clickhouse_schema({"CLICKHOUSE_DATABASE": "posthog"}, "v2") == []
    assert "api_token varchar(200) UNIQUE NOT NULL" in standin_module.POSTGRES_SCHEMA["v1"][0]


def _clickhouse_consumer(hosts, inserted, standin_module):
    events, kafka_table, view = standin_module.clickhouse_schema({"CLICKHOUSE_DATABASE": "posthog"}, "v1")
    settings_ = {**engine.kafka_settings(kafka_table), "broker_list": hosts[0]}
    return engine.Consumer(settings_, engine.view(view), engine.columns(events),
                           lambda target, rows: inserted.append((target, rows)), lambda line: None,
                           kafka_wire.Client), engine.columns(events)


# The Kafka engine with a view: group group1 from the first message, the row into the target, then the commit.
def test_clickhouse_consumes_with_group1_into_the_events_table(broker, standin_module):
    state, hosts = broker
    plugin = kafka_wire.Client(hosts)
    consumer.consume_once(plugin, environ={})
    _send(hosts, {"api_key": "phc_project_key", "event": "ingestion probe", "distinct_id": "d-3"})
    consumer.consume_once(plugin, environ={})
    kafka_wire.produce(hosts, "clickhouse_events_json", None, "not json")  # skipped, as kafka_skip_broken_messages
    inserted = []
    clickhouse, columns = _clickhouse_consumer(hosts, inserted, standin_module)
    client = kafka_wire.Client(hosts)
    assert clickhouse.once(client) == 1
    [(target, rows)] = inserted
    cells = dict(zip([name for name, _ in columns], rows.rstrip("\n").split("\t")))
    assert target == "posthog.events" and cells["distinct_id"] == "d-3" and cells["team_id"] == "7"
    assert cells["person_id"] == "00000000-0000-0000-0000-000000000000" and cells["_offset"] == "0"
    assert state.committed["group1"] == {"clickhouse_events_json": 2}
    assert clickhouse.once(client) == 0 and len(inserted) == 1
    client.close()
    plugin.close()


def test_where_reads_back_what_the_consumer_wrote(broker, standin_module):
    state, hosts = broker
    plugin = kafka_wire.Client(hosts)
    consumer.consume_once(plugin, environ={})
    _send(hosts, {"api_key": "phc_project_key", "event": "ingestion probe", "distinct_id": "ingestion-probe-00ff"})
    consumer.consume_once(plugin, environ={})
    inserted = []
    clickhouse, columns = _clickhouse_consumer(hosts, inserted, standin_module)
    clickhouse.once(kafka_wire.Client(hosts))
    line = inserted[0][1].splitlines()[0]
    names = [name for name, _ in columns]
    asked = where.parse("team_id = 7 AND event = 'ingestion probe' AND distinct_id = 'ingestion-probe-00ff'")
    assert asked == [("team_id", "7"), ("event", "ingestion probe"), ("distinct_id", "ingestion-probe-00ff")]
    assert where.matches(names, line, asked)
    assert not where.matches(names, line, where.parse("team_id = 8 AND event = 'ingestion probe'"))
    assert where.parse("event LIKE 'x'") is None and where.parse("a = 1 OR b = 2") is None
    plugin.close()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_a_tab_separated_value_reads_back_as_written(text):
    """What the Kafka engine writes (ClickHouse's TSV escaping) is what WHERE compares against."""
    assert where.unescape(engine.tsv(text)) == text
    assert "\t" not in engine.tsv(text) and "\n" not in engine.tsv(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
@example("' AND '")  # an AND between two quotes inside the literal: a split by counting quotes cut it there
@example("a\\' AND b = 'c")
def test_a_quoted_literal_reads_back_as_written(text):
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    assert where.parse(f"distinct_id = {quoted} AND team_id = 1") == [("distinct_id", text), ("team_id", "1")]


def test_the_broker_keeps_messages_and_committed_offsets_across_a_restart(broker):
    state, hosts = broker
    kafka_wire.produce(hosts, "t", "k", "v1")
    client = kafka_wire.Client(hosts)
    assert [m["value"] for m in client.call({"api": "fetch", "group": "g", "topics": ["t"], "reset": "earliest"})["messages"]] == ["v1"]
    client.call({"api": "commit", "group": "g", "offsets": {"t": 1}})
    client.close()
    again = kafka_standin.Broker(state.data)
    assert [m["value"] for m in again.logs["t"]] == ["v1"] and again.committed["g"] == {"t": 1}
    assert again.answer("c", "/h", {"api": "nothing"}) == {"error": "unknown api 'nothing'"}
    assert "error" in again.answer("c", "/h", {"api": "produce", "topic": "../x"})


def _consumer_groups(hosts, *args):
    return subprocess.run([sys.executable, str(KAFKA / "kafka_consumer_groups.py"), "--bootstrap-server", hosts[0], *args],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(KAFKA)})


# cp-kafka's kafka-consumer-groups --describe, as the probe (posthog_compose/operations/ingestion/lag.py) parses it.
def test_kafka_consumer_groups_prints_what_the_probe_parses(broker):
    from posthog_compose.operations.ingestion import lag

    state, hosts = broker
    plugin = kafka_wire.Client(hosts)
    consumer.consume_once(plugin, environ={})
    _send(hosts, {"api_key": "phc_project_key", "event": "e", "distinct_id": "d"})
    result = _consumer_groups(hosts, "--describe", "--all-groups")
    assert result.returncode == 0, result.stderr
    assert "GROUP" in result.stdout and "has no active members" not in result.stdout
    rows = {(row.group, row.topic): row for row in lag.parse(result.stdout)}
    ingestion = rows[("clickhouse-ingestion", "events_plugin_ingestion")]
    assert (ingestion.committed, ingestion.end, ingestion.lag, ingestion.member) == (0, 1, 1, "plugin-server")
    plugin.close()  # the plugin server stops: it leaves its group
    for _ in range(50):
        result = _consumer_groups(hosts, "--describe", "--group", "clickhouse-ingestion")
        if "has no active members" in result.stdout:
            break
    assert "Consumer group 'clickhouse-ingestion' has no active members." in result.stdout
    assert lag.parse(result.stdout)[0].member == "-"
    assert _consumer_groups(hosts, "--list").stdout.split() == ["clickhouse-ingestion"]
    missing = _consumer_groups(hosts, "--describe", "--group", "nobody")
    assert "Error: Consumer group 'nobody' does not exist." in missing.stderr
    unreachable = _consumer_groups(["127.0.0.1:1"], "--describe", "--all-groups")
    assert unreachable.returncode == 1 and "TimeoutException" in unreachable.stderr


# cp-kafka's kafka-console-producer --sync, as the kit's write probe (posthog_compose/operations/stack/capability.py)
# runs it in the kafka container and reads what it prints.
def test_kafka_console_producer_takes_the_probe_and_reports_a_log_it_cannot_write(broker, tmp_path):
    from posthog_compose.operations.stack import capability

    state, hosts = broker

    class InContainer:
        """Runs the probe's `compose exec -T kafka kafka-console-producer ...` as the stand-in's script."""

        def run(self, cmd, *, capture, check, input, mutating, timeout):
            tool = cmd[cmd.index("kafka-console-producer") + 1:]
            tool[tool.index("--bootstrap-server") + 1] = hosts[0]
            return subprocess.run([sys.executable, str(KAFKA / "kafka_console_producer.py"), *tool], input=input,
                                  capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": str(KAFKA)})

    assert capability.probe_kafka(tmp_path, InContainer(), {}) == ("ok", "")
    assert len(state.logs[capability.KAFKA_PROBE_TOPIC]) == 1
    # The segment cannot be appended to (as on a full volume): Kafka's KAFKA_STORAGE_ERROR, not acknowledged.
    segment = os.path.join(state.data, f"{capability.KAFKA_PROBE_TOPIC}-0", kafka_standin.LOG_NAME)
    os.replace(segment, segment + ".kept")
    os.mkdir(segment)
    assert capability.probe_kafka(tmp_path, InContainer(), {}) == (
        "failing", "KafkaStorageException: Disk error when trying to access log file on the disk")
    assert len(state.logs[capability.KAFKA_PROBE_TOPIC]) == 1
    hosts[0] = "127.0.0.1:1"  # no broker
    verdict, reason = capability.probe_kafka(tmp_path, InContainer(), {})
    assert verdict == "cannot tell" and reason.startswith("TimeoutException: Topic posthog_compose_write_probe")

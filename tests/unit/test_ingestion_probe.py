"""`invoke probe` (posthog_compose/operations/ingestion/) with every hop faked: a healthy path passes with the
time each hop was seen; each way an event can stop is named at its hop with the next step; the lag output
of cp-kafka's kafka-consumer-groups is parsed (a sample in Kafka's format, and whatever the Kafka stand-in
prints); the event is sent to web's port or through the edge proxy, certificate verified."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose.errors import OperatorError
from posthog_compose.operations import ingestion
from posthog_compose.operations.ingestion import lag, send, stored
from posthog_compose.operations.ingestion.lag import LagRow
from tests.conftest import REPO

HEALTHY = {"web": "healthy", "plugins": "healthy", "kafka": "healthy", "clickhouse": "healthy", "db": "healthy"}


def rows(plugin_committed, ingestion_end, events_end, clickhouse_committed, plugin_member="plugin-server",
         clickhouse_member="ClickHouse-1"):
    """What kafka-consumer-groups reports for 1.43's two groups."""
    return [
        LagRow("clickhouse-ingestion", "clickhouse_events_json", 0, events_end, events_end, 0, plugin_member),
        LagRow("clickhouse-ingestion", "events_plugin_ingestion", 0, plugin_committed, ingestion_end,
               ingestion_end - plugin_committed, plugin_member),
        LagRow("group1", "clickhouse_events_json", 0, clickhouse_committed, events_end, events_end - clickhouse_committed,
               clickhouse_member),
    ]


class World:
    """A deployment seen through the probe's steps: ``looks`` are the lag reports after the event was sent (the
    last repeats), ``counts`` the rows ClickHouse answers (an exception is raised), ``answer`` capture's."""

    def __init__(self, looks, counts, answer=None, labels=None, values=None):
        self.looks, self.counts = list(looks), list(counts)
        self.answer = answer or send.Answer(200, "POST /capture/ answered 200")
        self.labels = HEALTHY if labels is None else labels
        self.values = values or {"KAFKA_MODE": "local", "CLICKHOUSE_MODE": "local", "WEB_PORT": "8000"}
        self.sent = None
        self.described = 0

    def install(self, monkeypatch):
        monkeypatch.setattr(ingestion, "POLL_INTERVAL", 0.01)
        monkeypatch.setattr(ingestion, "_values", lambda root: self.values)
        monkeypatch.setattr(ingestion, "_project", lambda root, runner, values, token: send.Project("phc_x" * 3, 2))
        monkeypatch.setattr(ingestion, "_send", self._send)
        monkeypatch.setattr(ingestion, "_describe", self._describe)
        monkeypatch.setattr(ingestion, "_count", self._count)
        monkeypatch.setattr(ingestion, "_service_labels", lambda root, runner: self.labels)
        return self

    def _send(self, values, root, body, timeout):
        self.sent = json.loads(body)
        return self.answer

    @staticmethod
    def _next(queue):
        item = queue[0] if len(queue) == 1 else queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def _describe(self, root, runner, values, timeout):
        self.described += 1
        if self.sent is None:
            return rows(5, 5, 5, 5)  # before the event: everything caught up
        return self._next(self.looks)

    def _count(self, root, runner, values, team_id, distinct_id, timeout):
        assert self.sent is not None and distinct_id == self.sent["distinct_id"] and team_id == 2
        return self._next(self.counts)


def probe(tmp_path, timeout=2, as_json=False):
    out = io.StringIO()
    try:
        code = ingestion.run(tmp_path, runner=None, timeout=timeout, as_json=as_json, out=out)
    except OperatorError as exc:
        return 1, out.getvalue(), str(exc)
    return code, out.getvalue(), ""


def test_a_healthy_path_passes_with_the_time_of_each_hop(tmp_path, monkeypatch):
    world = World([rows(5, 6, 5, 5), rows(6, 6, 6, 5), rows(6, 6, 6, 6)], [0, 0, 0, 1]).install(monkeypatch)
    code, out, error = probe(tmp_path)
    assert (code, error) == (0, ""), out
    assert world.sent["event"] == "ingestion probe" and world.sent["distinct_id"].startswith("ingestion-probe-")
    assert world.sent["api_key"] == "phc_x" * 3 and "phc_x" not in out  # the key is not printed
    table = out.split("Consumer lag")[0]
    for number in range(1, 6):
        line = next(line for line in table.splitlines() if line.startswith(f"{number}. "))
        assert " s " in line + " " and "not seen" not in line, line
    assert "group1" in out and "events_plugin_ingestion" in out  # every group's lag
    assert out.strip().splitlines()[-1].startswith("The event went through every hop seen from here in ")


@pytest.mark.parametrize("looks, counts, labels, expected", [
    # plugins stopped: its group's lag on events_plugin_ingestion stays
    ([rows(5, 6, 5, 5, plugin_member="-")], [0], {**HEALTHY, "plugins": "exited (0)"},
     ["hop 2 of 5 (plugin server)", "the plugin server has not consumed it",
      "group clickhouse-ingestion is 1 message(s) behind it", "plugins is not running (exited (0))",
      "`invoke up -s plugins`", "`invoke logs -s plugins`"]),
    # plugins running but stuck
    ([rows(5, 6, 5, 5)], [0], HEALTHY, ["hop 2 of 5 (plugin server)", ": `invoke logs -s plugins`"]),
    # consumed, but nothing produced for ClickHouse
    ([rows(6, 6, 5, 5)], [0], HEALTHY, ["hop 3 of 5 (clickhouse_events_json)", "produced nothing to clickhouse_events_json",
                                        "`invoke logs -s plugins --tail 200`"]),
    # ClickHouse stopped: group1's lag grows, and ClickHouse cannot be asked for the row
    ([rows(6, 6, 6, 5, clickhouse_member="-")], [OperatorError("ClickHouse could not be asked for the row")],
     {**HEALTHY, "clickhouse": "exited (0)"},
     ["hop 4 of 5 (ClickHouse)", "ClickHouse has not read it from clickhouse_events_json",
      "group group1 is 1 message(s) behind it", "clickhouse is not running (exited (0))", "`invoke up -s clickhouse`"]),
    # consumed by ClickHouse but no row
    ([rows(6, 6, 6, 6)], [0], HEALTHY, ["hop 5 of 5 (events table)", "no row is in events", "`invoke logs -s clickhouse`"]),
    # Kafka went away after capture
    ([OperatorError("Kafka's consumer groups could not be asked (exit 1)")], [0], {**HEALTHY, "kafka": "exited (137)"},
     ["hop 2 of 5", "kafka is not running (exited (137))", "`invoke up -s kafka`"]),
    ([OperatorError("Kafka's consumer groups could not be asked (exit 1)")], [0], HEALTHY,
     ["hop 2 of 5", "Kafka's consumer groups could not be asked", "`invoke logs -s kafka`"]),
    # the plugin server never joined its group (a fresh install whose plugins never started)
    ([[row for row in rows(6, 6, 6, 6) if row.topic != "events_plugin_ingestion"]], [0], HEALTHY,
     ["hop 2 of 5", "group clickhouse-ingestion has no offset on events_plugin_ingestion: it has never read it"]),
], ids=["plugins-stopped", "plugins-stuck", "nothing-produced", "clickhouse-stopped", "no-row", "kafka-stopped",
        "kafka-unasked", "never-joined"])
def test_each_hop_where_the_event_stops_is_named_with_the_next_step(tmp_path, monkeypatch, looks, counts, labels,
                                                                    expected):
    World(looks, counts, labels=labels).install(monkeypatch)
    code, out, error = probe(tmp_path, timeout=1)
    assert code == 1 and error.startswith("the event stopped at hop "), (out, error)
    assert "\n" not in error  # one line
    for fragment in expected:
        assert fragment in error, (fragment, error)
    assert "Consumer lag" in out  # the table is shown before the verdict


@pytest.mark.parametrize("answer, fragment", [
    (send.Answer(503, "web could not hand the event to Kafka (Unable to store event.): `invoke logs -s kafka`, then "
                      "`invoke logs -s web`"), "`invoke logs -s kafka`"),
    (send.Answer(0, "nothing answered at http://127.0.0.1:8000/capture/ (Connection refused): `invoke status`, then "
                    "`invoke logs -s web`"), "`invoke logs -s web`"),
])
def test_a_refused_capture_stops_at_hop_1(tmp_path, monkeypatch, answer, fragment):
    world = World([rows(5, 5, 5, 5)], [0], answer=answer).install(monkeypatch)
    code, out, error = probe(tmp_path)
    assert code == 1 and error.startswith("the event stopped at hop 1 of 5 (capture): ") and fragment in error
    assert world.described == 1  # only the look before sending: nothing is waited for


def test_json_names_the_stopped_hop_for_machines(tmp_path, monkeypatch, capsys):
    World([rows(5, 6, 5, 5)], [0], labels={**HEALTHY, "plugins": "exited (0)"}).install(monkeypatch)
    code, out, error = probe(tmp_path, timeout=1, as_json=True)
    document = json.loads(out)
    assert code == 1 and error == ""
    assert document["ok"] is False and document["stopped_before"] == "plugin-server"
    assert "`invoke logs -s plugins`" in document["next_step"]
    hops = {hop["hop"]: hop for hop in document["hops"]}
    assert hops["capture"]["reached"] and hops["capture"]["seconds"] is not None
    assert not hops["plugin-server"]["reached"] and hops["plugin-server"]["service"] == "plugins"
    assert {row["group"] for row in document["lag"]} == {"clickhouse-ingestion", "group1"}
    streams = capsys.readouterr()
    assert "error: the event stopped at hop 2" in streams.err and "waiting for" in streams.err  # progress not in JSON


def test_json_of_a_healthy_path(tmp_path, monkeypatch):
    World([rows(6, 6, 6, 6)], [1]).install(monkeypatch)
    code, out, _ = probe(tmp_path, as_json=True)
    document = json.loads(out)
    assert code == 0 and document["ok"] and document["stopped_before"] is None
    assert all(hop["reached"] and hop["seconds"] is not None for hop in document["hops"])


def test_progress_says_what_it_waits_for_while_it_waits(tmp_path, monkeypatch):
    World([rows(5, 6, 5, 5)] * 3 + [rows(6, 6, 6, 5)] * 3 + [rows(6, 6, 6, 6)], [0] * 6 + [1]).install(monkeypatch)
    code, out, _ = probe(tmp_path, timeout=5)
    waits = [line for line in out.splitlines() if "waiting for" in line]
    assert code == 0
    assert any("the plugin server to consume it" in line for line in waits)
    assert any("ClickHouse to consume it (group group1 is 1 message(s) behind it" in line for line in waits)
    assert len(waits) == len({line.split("] ", 1)[1] for line in waits})  # a line per change, not per look


def test_with_kafka_external_the_lag_hops_are_not_judged(tmp_path, monkeypatch):
    world = World([rows(0, 0, 0, 0)], [0, 1], values={"KAFKA_MODE": "external", "CLICKHOUSE_MODE": "local",
                                                       "WEB_PORT": "8000"}).install(monkeypatch)
    code, out, _ = probe(tmp_path)
    assert code == 0 and world.described == 0
    assert "not asked: Kafka is external" in out and "n/a" in out
    assert "(not seen from here: plugin server consumed it" in out


def test_the_deadline_must_be_a_second_or_more(tmp_path, monkeypatch):
    World([rows(6, 6, 6, 6)], [1]).install(monkeypatch)
    with pytest.raises(OperatorError, match="--timeout must be 1 second or more"):
        ingestion.run(tmp_path, None, timeout=0)


# ----------------------------------------------------------------------------- kafka-consumer-groups output
KAFKA_SAMPLE = """
Consumer group 'clickhouse-ingestion' has no active members.

GROUP                TOPIC                   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID     HOST            CLIENT-ID
clickhouse-ingestion clickhouse_events_json  0          120             122             2               -               -               -
clickhouse-ingestion events_plugin_ingestion 0          98              131             33              -               -               -

GROUP           TOPIC                  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID                                                        HOST            CLIENT-ID
group1          clickhouse_events_json 0          122             122             0               ClickHouse-ch-posthog-kafka_events_json-3f0e5a31-7a9d-4c5e-9bde /172.18.0.6     ClickHouse-ch-posthog-kafka_events_json
group1          clickhouse_session_recording_events 0 -         7               -               ClickHouse-ch-posthog-kafka_session_recording_events-9f1 /172.18.0.6     ClickHouse-ch-posthog-kafka_session_recording_events
"""


def test_kafka_s_describe_output_is_parsed():
    parsed = lag.parse(KAFKA_SAMPLE)
    assert parsed[1] == LagRow("clickhouse-ingestion", "events_plugin_ingestion", 0, 98, 131, 33, "-")
    assert parsed[2] == LagRow("group1", "clickhouse_events_json", 0, 122, 122, 0, "ClickHouse-ch-posthog-kafka_events_json")
    assert parsed[3].committed is None and parsed[3].lag is None and parsed[3].end == 7
    assert lag.topic_ends(parsed, "clickhouse_events_json") == {0: 122}
    assert lag.offsets(parsed, "group1", "clickhouse_events_json") == {0: (122, 122)}


@functools.lru_cache(maxsize=None)
def _standin_tool():
    path = REPO / "tests" / "e2e" / "images" / "kafka-standin" / "kafka_consumer_groups.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("probe_kafka_consumer_groups", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


NAMES = st.from_regex(r"[a-z][a-z0-9_.-]{0,30}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(NAMES, st.tuples(st.dictionaries(NAMES, st.integers(0, 10**9), max_size=3),
                                       st.lists(NAMES, max_size=2)), max_size=4),
       st.dictionaries(NAMES, st.integers(0, 10**9), max_size=4))
def test_whatever_the_standin_prints_the_probe_reads_back(groups, extra_ends):
    """Structure-aware: any groups, offsets and members, printed in Kafka's format by the stand-in's tool."""
    tool = _standin_tool()
    topics = dict(extra_ends)
    answer_groups = {}
    for group, (committed, member_topics) in groups.items():
        for topic, offset in committed.items():
            topics[topic] = max(topics.get(topic, 0), offset)
        members = [{"client_id": f"c-{group}", "host": "/10.0.0.1", "topics": member_topics}] if member_topics else []
        answer_groups[group] = {"committed": committed, "members": members}
    answer = {"topics": topics, "groups": answer_groups}
    parsed = lag.parse(tool.describe(answer, None))
    expected = [LagRow(row[0], row[1], 0, None if row[3] == "-" else int(row[3]), int(row[4]),
                       None if row[5] == "-" else int(row[5]), row[8])
                for group in sorted(answer_groups) for row in tool.rows_of(group, answer_groups[group], topics)]
    assert parsed == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_output_parses_without_failing(text):
    for row in lag.parse(text):
        assert row.group and row.topic


def test_the_describe_command_is_the_handbook_s():
    command = lag.command(REPO, {"KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://kafka:9092"})
    assert command[-8:] == ["exec", "-T", "kafka", "kafka-consumer-groups", "--bootstrap-server", "kafka:9092",
                            "--describe", "--all-groups"]
    assert lag.bootstrap_server({"KAFKA_ADVERTISED_LISTENERS": "nonsense"}) == "localhost:9092"
    assert "kafka-consumer-groups --bootstrap-server kafka:9092 --describe --all-groups" in \
        (REPO / "docs" / "bad-days.md").read_text()


# ----------------------------------------------------------------------------- the project and the row
class Runner:
    def __init__(self, stdout="", returncode=0):
        self.stdout, self.returncode, self.commands = stdout, returncode, []

    def run(self, cmd, **kwargs):
        self.commands.append(cmd)
        return subprocess.CompletedProcess(cmd, self.returncode, self.stdout, "boom" if self.returncode else "")


LOCAL = {"POSTGRES_MODE": "local", "POSTGRES_USER": "posthog", "POSTGRES_DB": "posthog"}


def test_the_first_project_is_read_from_the_local_postgresql(tmp_path):
    runner = Runner("3|phc_AbCdEfGhIjKl_-9")
    assert send.project(tmp_path, runner, LOCAL, None) == send.Project("phc_AbCdEfGhIjKl_-9", 3)
    assert "ORDER BY id LIMIT 1" in runner.commands[0][-1] and "psql" in runner.commands[0]
    with pytest.raises(OperatorError, match="no project yet"):
        send.project(tmp_path, Runner(""), LOCAL, None)
    with pytest.raises(OperatorError, match="cannot be read from PostgreSQL"):
        send.project(tmp_path, Runner("", returncode=2), LOCAL, None)


def test_a_token_is_checked_before_it_is_used(tmp_path):
    runner = Runner("4")
    assert send.project(tmp_path, runner, LOCAL, "phc_Zyxwvutsrq") == send.Project("phc_Zyxwvutsrq", 4)
    for bad in ("short", "phc_'; DROP TABLE x; --", "phc_" + "a" * 300):
        quiet = Runner("4")
        with pytest.raises(OperatorError, match="--token takes a project API key"):
            send.project(tmp_path, quiet, LOCAL, bad)
        assert quiet.commands == []  # refused before anything ran
    with pytest.raises(OperatorError, match="no project of this PostHog has that API key"):
        send.project(tmp_path, Runner(""), LOCAL, "phc_Zyxwvutsrq")
    external = {**LOCAL, "POSTGRES_MODE": "external"}
    assert send.project(tmp_path, Runner(), external, "phc_Zyxwvutsrq") == send.Project("phc_Zyxwvutsrq", None)
    with pytest.raises(OperatorError, match="PostgreSQL is external"):
        send.project(tmp_path, Runner(), external, None)


def test_the_row_is_asked_on_the_sort_key_with_the_password_read_in_the_container(tmp_path):
    sql = stored.query({"CLICKHOUSE_DATABASE": "posthog"}, 2, "ingestion-probe-0a1b")
    assert sql == ("SELECT count() FROM posthog.events WHERE team_id = 2 AND event = 'ingestion probe' AND "
                   "distinct_id = 'ingestion-probe-0a1b'")
    command = stored.command(tmp_path, sql)
    # The password stays in the container (clickhouse-client reads CLICKHOUSE_PASSWORD); no shell in between.
    assert command[-5:] == ["-T", "clickhouse", "clickhouse-client", "--query", sql] and "sh" not in command
    assert stored.count(tmp_path, Runner("1\n"), {"CLICKHOUSE_DATABASE": "posthog"}, 2, "ingestion-probe-0a1b") == 1
    with pytest.raises(OperatorError, match="ClickHouse could not be asked"):
        stored.count(tmp_path, Runner("", returncode=210), {}, 2, "ingestion-probe-0a1b")
    with pytest.raises(OperatorError, match="CLICKHOUSE_DATABASE in .env is not a plain name"):
        stored.query({"CLICKHOUSE_DATABASE": "x; DROP"}, 2, "ingestion-probe-0a1b")


# ----------------------------------------------------------------------------- sending the event
class Capture(BaseHTTPRequestHandler):
    answers: list = []
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.seen.append((self.path, dict(self.headers), json.loads(body)))
        status, headers, text = Capture.answers.pop(0)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())


@pytest.fixture
def web():
    Capture.answers, Capture.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_event_goes_to_web_s_port_as_a_server_library_sends_it(tmp_path, web):
    values = {"WEB_PORT": str(web.server_address[1])}
    Capture.answers = [(200, {}, '{"status": 1}'),
                       (301, {"Location": "https://posthog.example/capture/"}, ""),
                       (401, {}, '{"type": "authentication_error", "code": "invalid_api_key", "detail": "Project API key invalid."}'),
                       (503, {}, '{"type": "server_error", "detail": "Unable to store event."}')]
    body = send.payload(send.Project("phc_AbCdEfGhIjKl", 1), "ingestion-probe-1", "2026-01-01T00:00:00+00:00")
    assert send.send(values, tmp_path, body).status == 200
    path, headers, sent = Capture.seen[0]
    assert path == "/capture/" and headers["X-Forwarded-Proto"] == "https"
    assert (sent["api_key"], sent["event"], sent["distinct_id"]) == ("phc_AbCdEfGhIjKl", "ingestion probe", "ingestion-probe-1")
    assert "DISABLE_SECURE_SSL_REDIRECT" in send.send(values, tmp_path, body).detail
    assert "--token" in send.send(values, tmp_path, body).detail
    refused = send.send(values, tmp_path, body)
    assert refused.status == 503 and "Unable to store event." in refused.detail and "`invoke logs -s kafka`" in refused.detail
    web.shutdown()
    web.server_close()
    gone = send.send(values, tmp_path, body, timeout=2)
    assert gone.status == 0 and "nothing answered at http://127.0.0.1:" in gone.detail


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_with_the_proxy_on_the_event_goes_through_it_with_the_certificate_verified(tmp_path):
    from posthog_compose.configuration import edge

    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=probe test CA", cwd=certs)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "proxy.key", "-out", "proxy.csr", "-subj",
             "/CN=posthog.test", cwd=certs)
    (certs / "ext").write_text("subjectAltName=DNS:posthog.test\n")
    _openssl("x509", "-req", "-in", "proxy.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "proxy.crt", "-days", "1", "-extfile", "ext", cwd=certs)
    names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "proxy.crt", certs / "proxy.key")
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    Capture.answers, Capture.seen = [(200, {}, '{"status": 1}')], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    values = {"COMPOSE_FILE": f"{edge.BASE_FILE}:{edge.OVERLAY}:{edge.PRIVATE_OVERLAY}", "DOMAIN": "posthog.test",
              "PROXY_HTTPS_PORT": str(server.server_address[1]), "PROXY_TLS": "private",
              "SITE_URL": "https://posthog.test", "WEB_PORT": "1"}
    try:
        body = send.payload(send.Project("phc_AbCdEfGhIjKl", 1), "ingestion-probe-2", "2026-01-01T00:00:00+00:00")
        answer = send.send(values, tmp_path, body)
        assert answer.status == 200, answer.detail
        assert names == ["posthog.test"] and Capture.seen[0][1]["Host"] == "posthog.test"
        assert send.target(values) == "https://posthog.test/capture/ (through the edge proxy)"
        (certs / "ca.crt").write_text((certs / "proxy.crt").read_text())  # a CA that did not sign it
        refused = send.send(values, tmp_path, body)
        assert refused.status == 0 and "does not verify" in refused.detail
    finally:
        server.shutdown()
        server.server_close()

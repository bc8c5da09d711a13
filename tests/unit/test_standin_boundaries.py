"""The PostHog stand-in at PostHog 1.43.0's boundaries (tests/e2e/images/posthog-standin/BOUNDARIES.md),
exercised without an engine: its Python and its scripts run here for real, against small local servers
where a datastore is needed. Each test names the file of the 1.43.0 tag it holds the stand-in to."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

STANDIN = REPO / "tests" / "e2e" / "images" / "posthog-standin"


def _load(name, path):
    handler = signal.getsignal(signal.SIGTERM)
    sys.path.insert(0, str(STANDIN))
    try:
        spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, str(path)))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(STANDIN))
        signal.signal(signal.SIGTERM, handler)  # the stand-in installs its own for its container
    return module


@pytest.fixture()
def standin(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("CLICKHOUSE_", "KAFKA_", "SKIP_")):
            monkeypatch.delenv(name)
    sys.modules.pop("standin", None)
    module = _load("standin", STANDIN / "standin.py")
    monkeypatch.setitem(sys.modules, "standin", module)
    return module


# 1. ClickHouse ceiling: posthog/settings/service_requirements.py:20 (>=21.6.0,<22.9.0).
def test_clickhouse_ceiling_is_1_43s_and_the_kits(standin):
    spec = dict(standin.SERVICE_VERSION_REQUIREMENTS)["clickhouse"]
    assert spec == ">=21.6.0,<22.9.0"
    assert standin._in_spec(standin.version_string_to_semver("22.8.21.38"), spec)
    assert not standin._in_spec(standin.version_string_to_semver("22.9.1.2603"), spec)
    matrix = yaml.safe_load((REPO / "compatibility.yml").read_text())
    row = next(r for r in matrix["rows"] if r["posthog"] == ">=1.43.0,<1.44.0")
    assert {name: spec for name, spec in standin.SERVICE_VERSION_REQUIREMENTS} == {
        name: accepts["range"] for name, accepts in row["accepts"].items()}


# 2. /_readyz roles and exclude=: posthog/health.py:43-61, 97-127.
@pytest.fixture()
def server(standin):
    return _load("standin_docker_server", STANDIN / "bin" / "docker-server")


def _checks(failing=()):
    names = ("clickhouse", "postgres", "postgres_migrations_uptodate", "kafka_connected", "celery_broker", "cache")
    return {name: (lambda name=name: name not in failing) for name in names}


def test_readyz_worker_role_is_http_postgres_migrations_clickhouse_and_broker(server):
    status, body = server.readyz({"role": ["worker"]}, _checks(failing=("cache", "kafka_connected")))
    assert (status, set(body)) == (200, {"postgres", "postgres_migrations_uptodate", "clickhouse", "celery_broker"})
    status, body = server.readyz({"role": ["web"]}, _checks(failing=("clickhouse",)))
    assert (status, set(body)) == (200, {"postgres", "postgres_migrations_uptodate", "cache"})
    assert server.readyz({"role": ["events"]}, _checks())[1] == {"kafka_connected": True}
    assert server.readyz({"role": ["scheduler"]}, _checks()) == (400, {"error": "InvalidRole"})
    status, body = server.readyz({}, _checks())
    assert status == 200 and list(body) == ["clickhouse", "postgres", "postgres_migrations_uptodate",
                                            "kafka_connected", "celery_broker", "cache"]


def test_readyz_exclude_keeps_a_check_in_the_answer_but_not_in_the_status(server):
    status, body = server.readyz({"exclude": ["kafka_connected"]}, _checks(failing=("kafka_connected",)))
    assert status == 200 and body["kafka_connected"] is False
    status, _ = server.readyz({"exclude": ["kafka_connected"]}, _checks(failing=("kafka_connected", "cache")))
    assert status == 503


# 3. ENCRYPTION_SALT_KEYS: no file of the 1.43.0 tag reads it (git grep over posthog/, plugin-server/, bin/).
def test_no_standin_program_reads_encryption_salt_keys():
    programs = [STANDIN / "standin.py", STANDIN / "plugin_server.py", STANDIN / "manage.py", STANDIN / "celery",
                STANDIN / "datastores_tls.py", STANDIN / "bin" / "docker-server"]
    for path in programs:
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        read = [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and id(node) not in docstrings
                and isinstance(node.value, str) and "ENCRYPTION" in node.value]
        assert not read, (path.name, [node.value for node in read])
    for script in (path for path in (STANDIN / "bin").iterdir() if path.is_file()):  # not a __pycache__/ another test made
        if script.read_text().startswith("#!/bin/bash"):
            code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
            assert "ENCRYPTION" not in code, script.name


# 4. Django to ClickHouse: the native protocol (9000, 9440 with TLS) through clickhouse-driver 0.2.1, which
#    does not verify the certificate (posthog/clickhouse/client/connection.py:33-46, requirements.txt:58).
def _self_signed(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=not-the-host"], check=True, capture_output=True)
    return cert, key


def _native_server(context):
    """A ClickHouse stand-in's native port in small: one JSON line in, one out; records what it saw."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    seen = []

    def serve():
        connection, _ = listener.accept()
        if context is not None:
            connection = context.wrap_socket(connection, server_side=True)
        request = json.loads(connection.makefile().readline())
        seen.append(request)
        connection.sendall(json.dumps({"data": "22.8.21.38\n"}).encode() + b"\n")
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], seen


@pytest.mark.parametrize("secure, port", [(True, 9440), (False, 9000)])
def test_django_reaches_clickhouse_natively_without_verifying_its_certificate(standin, monkeypatch, tmp_path,
                                                                              secure, port):
    context = None
    if secure:
        cert, key = _self_signed(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    local_port, seen = _native_server(context)
    dialled = []
    real = socket.create_connection

    def dial(address, *args, **kwargs):
        dialled.append(address)
        return real(("127.0.0.1", local_port), *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", dial)
    monkeypatch.setenv("CLICKHOUSE_HOST", "clickhouse")
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "pw")
    monkeypatch.setenv("CLICKHOUSE_SECURE", "true" if secure else "false")
    monkeypatch.setenv("CLICKHOUSE_VERIFY", "true")  # 0.2.1 applies it to the wrong option: still unverified
    settings = standin.django_settings()
    assert standin.clickhouse_native_query(settings, "SELECT version()") == "22.8.21.38\n"
    assert dialled == [("clickhouse", port)]
    assert seen[0]["password"] == "pw" and seen[0]["query"] == "SELECT version()"


def test_django_with_an_empty_clickhouse_ca_fails_once_tls_is_on(standin, monkeypatch):
    monkeypatch.setenv("CLICKHOUSE_SECURE", "true")
    monkeypatch.setenv("CLICKHOUSE_CA", "")
    with pytest.raises(standin.ClickHouseError, match="No such file or directory: ''"):
        standin.clickhouse_native_query(standin.django_settings())


# 5. The plugin server's start (plugin-server/src/utils/db/hub.ts:141-176, pluginsServer.ts:380-392):
#    SELECT 1 on ClickHouse over HTTP, then a Kafka producer; either failing exits 1 before /_health exists.
def _loopback():
    return f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def _run_plugin_server(tmp_path, **env):
    environ = {"PATH": os.environ["PATH"], "PYTHONPATH": str(STANDIN), "DATABASE_URL": "postgres://u:p@127.0.0.1:1/db",
               "REDIS_URL": "redis://127.0.0.1:1/0", **env}
    return subprocess.run([sys.executable, str(STANDIN / "plugin_server.py")], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_plugin_server_exits_when_clickhouse_does_not_answer(tmp_path):
    result = _run_plugin_server(tmp_path, CLICKHOUSE_HOST=_loopback(), KAFKA_HOSTS=f"{_loopback()}:1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Connecting to ClickHouse" in result.stdout and "Launchpad failure" in result.stdout
    assert "Kafka" not in result.stdout


def test_plugin_server_exits_when_no_kafka_broker_answers(tmp_path):
    host = _loopback()
    queries = []

    class ClickHouse(BaseHTTPRequestHandler):
        def do_GET(self):
            queries.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"1\n")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    try:
        http = ThreadingHTTPServer((host, 8123), ClickHouse)
    except OSError as exc:
        pytest.fail(f"cannot listen on {host}:8123 for the test: {exc}")
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        result = _run_plugin_server(tmp_path, CLICKHOUSE_HOST=host, KAFKA_HOSTS=f"{_loopback()}:1")
    finally:
        http.shutdown()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SELECT%201" in queries[0]
    assert "ClickHouse ready" in result.stdout and "KafkaJSNumberOfRetriesExceeded" in result.stdout


# 6. KAFKA_URL (posthog/settings/data_stores.py:118-122): default kafka://kafka:9092, and kafka-python 2.0.2
#    gives a broker without a port 9092.
@pytest.mark.parametrize("kafka_url, brokers", [
    (None, ["kafka:9092"]),
    ("kafka://kafka", ["kafka:9092"]),
    ("kafka://a:19092,kafka://b", ["a:19092", "b:9092"]),
    ("kafka:9092", [""]),  # without the scheme urlparse finds no host: no broker at all
])
def test_kafka_url_as_django_reads_it(standin, monkeypatch, kafka_url, brokers):
    if kafka_url is not None:
        monkeypatch.setenv("KAFKA_URL", kafka_url)
    assert standin.django_settings()["KAFKA_HOSTS_LIST"] == brokers


def test_a_kafka_broker_without_a_port_is_reached_on_9092(standin, monkeypatch):
    dialled = []

    def dial(address, *args, **kwargs):
        dialled.append(address)
        raise OSError("refused")

    monkeypatch.setattr(socket, "create_connection", dial)
    monkeypatch.setenv("KAFKA_URL", "kafka://kafka")
    assert standin.kafka_reachable(standin.django_settings()["KAFKA_HOSTS_LIST"]) is False
    assert dialled == [("kafka", 9092)]


# Boot order: bin/docker-worker-celery:65-90 runs the scheduler, then ./bin/migrate-check under set -e, and
# only then the Celery worker; bin/plugin-server:29 ignores migrate-check's result.
def _scripts(tmp_path, pending):
    code = tmp_path / "code"
    shutil.copytree(STANDIN / "bin", code / "bin")
    # The check gives a scheduler started before it (in the background) up to 5 s to record itself, so a
    # loaded machine cannot end the launcher before the scheduler's line is written.
    (code / "manage.py").write_text(
        "import os, sys, time\n"
        "if sys.argv[1:] == ['migrate', '--check']:\n"
        "    deadline = time.monotonic() + 5\n"
        "    while time.monotonic() < deadline and 'beat' not in (open('calls').read() if os.path.exists('calls') else ''):\n"
        "        time.sleep(0.05)\n"
        "open('calls', 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"sys.exit(1 if {pending!r} and sys.argv[1:] == ['migrate', '--check'] else 0)\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "celery").write_text("#!/bin/sh\necho \"celery $*\" >> calls\nsleep 1\n")
    (tools / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return code, {"PATH": f"{tools}:{os.environ['PATH']}"}


@pytest.mark.parametrize("pending", [True, False])
def test_worker_launcher_exits_while_a_migration_is_pending(tmp_path, pending):
    code, env = _scripts(tmp_path, pending)
    result = subprocess.run(["bash", "./bin/docker-worker-celery", "--with-scheduler"], cwd=code, env=env,
                            capture_output=True, text=True, timeout=30)
    calls = (code / "calls").read_text()
    assert "celery -A posthog beat" in calls  # started before the check, as at the tag
    if pending:
        assert result.returncode != 0 and "celery -A posthog worker" not in calls
        assert "migrate_clickhouse --check" not in calls  # set -e: the first failure ends it
    else:
        assert result.returncode == 0 and "celery -A posthog worker -Ofair -n node@%h" in calls


def test_plugin_server_launcher_ignores_migrate_check(tmp_path):
    code, env = _scripts(tmp_path, pending=True)
    (code / "bin" / "plugin-server").write_text(
        (code / "bin" / "plugin-server").read_text().replace("exec python /code/plugin_server.py", "echo node-started"))
    result = subprocess.run(["bash", "./bin/plugin-server", "--no-restart-loop"], cwd=code, env=env,
                            capture_output=True, text=True, timeout=30)
    assert "migrate --check" in (code / "calls").read_text()
    assert result.returncode == 0 and "node-started" in result.stdout


def test_boundaries_table_cites_the_tag_for_every_row():
    table = (STANDIN / "BOUNDARIES.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Behaviour")
            and not set(line) <= set("|- ")]
    assert len(rows) >= 20
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) >= 3 and cells[1] and cells[2], row
        source = cells[1]
        assert ":" in source or "not in 1.43" in source or "stand-in only" in source, row

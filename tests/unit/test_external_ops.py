"""The operations with external datastores.

`invoke doctor`'s probes run against real TLS servers started here (Python ssl sockets with
certificates made by posthog_compose/configuration/certs.py): a PostgreSQL stand-in that answers the SSLRequest
as PostgreSQL does (its protocol: "S" then the TLS handshake, "N" when it offers no TLS), a Redis
stand-in that speaks RESP and refuses INFO before AUTH as a Redis with requirepass does, a ClickHouse
stand-in on HTTPS that refuses a wrong password, and a bare TLS port for Kafka. Certificates that
name another host or come from another CA must fail, as must a port that never answers.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from posthog_compose.configuration import certs, datastores
from posthog_compose.operations import doctor

PASSWORD = "s3cret-Redis-pass-xyz"
CH_PASSWORD = "s3cret-ClickHouse-pass-xyz"


# ----------------------------------------------------------------------------- certificates and servers
def _pki(tmp_path: Path, names=("localhost",), ca_dir="pki"):
    """A CA and a server certificate for ``names`` (plus 127.0.0.1); returns (ca.crt, server.crt, server.key)."""
    from cryptography import x509

    base = tmp_path / ca_dir
    certs.cert_dir(base).mkdir(parents=True, exist_ok=True)
    ca, key = certs.make_ca(base, "managed")
    alt = [x509.DNSName(name) for name in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certs.make_server_cert(base, "server", ca, key, names=alt)
    return certs.paths(base, "ca")[0], *certs.paths(base, "server")


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


class Server:
    """A TCP server on 127.0.0.1 that hands each connection to ``handler`` in a thread."""

    def __init__(self, handler):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.handler = handler
        self.seen: list[bytes] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(10)
            self.handler(self, conn)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            conn.close()

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop: the port is closed for good
        except OSError:
            pass
        self.listener.close()


PG_PASSWORD = "s3cret-Postgres-pass-xyz"


def _pg(kind: bytes, payload: bytes) -> bytes:
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


def _pg_client_message(reader) -> tuple[bytes, bytes]:
    head = reader.read(5)
    return head[:1], reader.read(int.from_bytes(head[1:5], "big") - 4)


def postgres_handler(context, answer=b"S", auth="scram", version="13.13 (Debian 13.13-0+deb11u1)",
                     password=PG_PASSWORD):
    """PostgreSQL's start: an 8-byte SSLRequest (length 8, code 80877103); 'S' and a TLS handshake,
    or 'N'. Anything else first is a startup packet PostgreSQL would treat as plain: refused here.
    Then the startup message and the login as PostgreSQL 13 runs it (SCRAM-SHA-256 by default, or md5),
    a wrong password answered with 28P01, and server_version among the ParameterStatus messages."""
    import base64
    import hashlib
    import hmac

    def handle(server, conn):
        request = conn.recv(8)
        server.seen.append(request)
        if request != doctor.PG_SSL_REQUEST:
            return
        conn.sendall(answer)
        if answer != b"S":
            return
        tls = context.wrap_socket(conn, server_side=True)
        reader = tls.makefile("rb")
        length = int.from_bytes(reader.read(4), "big")
        startup = reader.read(length - 4)
        assert startup[:4] == (196608).to_bytes(4, "big")
        params = startup[4:].split(b"\0")
        server.seen.append(dict(zip(params[0::2], params[1::2])).get(b"user", b""))
        refused = _pg(b"E", b"SFATAL\0C28P01\0Mpassword authentication failed for user \"posthog\"\0\0")
        if auth == "md5":
            salt = b"\x01\x02\x03\x04"
            tls.sendall(_pg(b"R", (5).to_bytes(4, "big") + salt))
            _, sent = _pg_client_message(reader)
            inner = hashlib.md5((password + "posthog").encode()).hexdigest().encode()
            if sent.rstrip(b"\0") != b"md5" + hashlib.md5(inner + salt).hexdigest().encode():
                tls.sendall(refused)
                return
        else:
            tls.sendall(_pg(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0"))
            _, initial = _pg_client_message(reader)
            mechanism, _, rest = initial.partition(b"\0")
            assert mechanism == b"SCRAM-SHA-256"
            client_first = rest[4:].decode()
            bare = client_first.split(",", 2)[2]
            nonce = dict(item.split("=", 1) for item in bare.split(","))["r"] + "server-nonce"
            salt, rounds = b"salty-salt-16byt", 4096
            server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={rounds}"
            tls.sendall(_pg(b"R", (11).to_bytes(4, "big") + server_first.encode()))
            _, final = _pg_client_message(reader)
            final = final.decode()
            without_proof, _, proof = final.rpartition(",p=")
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
            stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
            message = f"{bare},{server_first},{without_proof}".encode()
            signature = hmac.new(stored, message, "sha256").digest()
            client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
            if hashlib.sha256(client_key).digest() != stored:
                tls.sendall(refused)
                return
            server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            verifier = base64.b64encode(hmac.new(server_key, message, "sha256").digest())
            tls.sendall(_pg(b"R", (12).to_bytes(4, "big") + b"v=" + verifier))
        tls.sendall(_pg(b"R", (0).to_bytes(4, "big")) + _pg(b"S", b"server_version\0" + version.encode() + b"\0")
                    + _pg(b"S", b"client_encoding\0UTF8\0") + _pg(b"K", b"\0" * 8) + _pg(b"Z", b"I"))
        kind, _ = _pg_client_message(reader)
        server.seen.append(kind)  # Terminate
    return handle


def redis_handler(context, version="6.2.14", password=PASSWORD):
    def handle(server, conn):
        tls = context.wrap_socket(conn, server_side=True)
        reader = tls.makefile("rb")
        authed = False
        while True:
            line = reader.readline()
            if not line:
                return
            count = int(line[1:])
            words = []
            for _ in range(count):
                size = int(reader.readline()[1:])
                words.append(reader.read(size + 2)[:size].decode())
            server.seen.append(" ".join(words).encode())
            if words[0].upper() == "AUTH":
                if words[-1] == password:
                    authed = True
                    tls.sendall(b"+OK\r\n")
                else:
                    tls.sendall(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
            elif words[0].upper() == "INFO":
                if not authed:
                    tls.sendall(b"-NOAUTH Authentication required.\r\n")
                    continue
                body = f"# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n".encode()
                tls.sendall(b"$%d\r\n%s\r\n" % (len(body), body))
    return handle


def tls_only_handler(context):
    def handle(server, conn):
        tls = context.wrap_socket(conn, server_side=True)
        tls.recv(1)
    return handle


def silent_handler(server, conn):
    while conn.recv(1024):  # accepts and reads, never answers
        pass


class ClickHouseHTTPS:
    """ClickHouse's HTTP interface as far as the probe uses it: SELECT version() with the
    X-ClickHouse-User / X-ClickHouse-Key headers; a wrong password answers 516 with
    "Authentication failed" as ClickHouse 22.8 does."""

    def __init__(self, context, version="22.8.11.15"):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                query = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.headers.get("X-ClickHouse-User") != "default" or \
                        self.headers.get("X-ClickHouse-Key") != CH_PASSWORD:
                    body = b"Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)\n"
                    self.send_response(516)
                elif query.strip() == "SELECT version()":
                    body = f"{outer.version}\n".encode()
                    self.send_response(200)
                else:
                    body = b"Code: 62. DB::Exception: Syntax error\n"
                    self.send_response(400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.version = version
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def deployment(tmp_path):
    root = tmp_path / "deployment"
    (root / "datastore-ca").mkdir(parents=True)
    from tests.conftest import REPO

    (root / "compatibility.yml").write_text((REPO / "compatibility.yml").read_text())
    return root


@pytest.fixture
def pki(tmp_path, deployment):
    ca, cert, key = _pki(tmp_path)
    (deployment / "datastore-ca" / "ca.crt").write_bytes(ca.read_bytes())
    return _server_context(cert, key)


@pytest.fixture
def servers():
    started = []
    yield started
    for server in started:
        server.close()


def _endpoint(datastore, port, tls=True, verify=True, host="localhost", ca="ca.crt"):
    container = f"/etc/posthog/datastore-ca/{ca}" if ca else ""
    return datastores.Endpoint(datastore=datastore, host=host, port=port, tls=tls, verify=verify,
                               ca_path=container or None,
                               variable={"postgres": "DATABASE_URL", "redis": "REDIS_URL",
                                         "clickhouse": "CLICKHOUSE_HOST", "kafka": "KAFKA_HOSTS"}[datastore])


VALUES = {"POSTHOG_IMAGE": "posthog/posthog:release-1.43.0",
          "DATABASE_URL": f"postgres://posthog:{PG_PASSWORD}@localhost:5432/posthog?sslmode=verify-full"
                          "&sslrootcert=/etc/posthog/datastore-ca/ca.crt",
          "REDIS_URL": f"rediss://:{PASSWORD}@localhost:6379/0?ssl_cert_reqs=required"
                       "&ssl_ca_certs=/etc/posthog/datastore-ca/ca.crt",
          "CLICKHOUSE_USER": "default", "CLICKHOUSE_PASSWORD": CH_PASSWORD}


def _no_secret(check):
    text = json.dumps(check.__dict__)
    assert PASSWORD not in text and CH_PASSWORD not in text and PG_PASSWORD not in text
    assert "\n" not in check.detail


# ----------------------------------------------------------------------------- doctor: PostgreSQL
def test_postgres_sslrequest_then_verified_tls(deployment, pki, servers):
    server = Server(postgres_handler(pki))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=3)
    assert check.status == "ok", check.detail
    assert "TCP connects" in check.detail and "verified against datastore-ca/ca.crt" in check.detail
    assert f"localhost:{server.port}" in check.detail
    assert "PostgreSQL 13.13 is inside >=11.0.0,<=14.1.0" in check.detail
    # The SSLRequest came first, before any TLS byte; then the login as DATABASE_URL's user; then Terminate.
    assert server.seen == [doctor.PG_SSL_REQUEST, b"posthog", b"X"]
    _no_secret(check)


@pytest.mark.parametrize("auth", ["scram", "md5"])
def test_postgres_login_reads_the_version_and_a_wrong_password_is_named(deployment, pki, servers, auth):
    server = Server(postgres_handler(pki, auth=auth, version="15.5"))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=3)
    assert check.status == "error" and "PostgreSQL 15.5 is OUTSIDE >=11.0.0,<=14.1.0" in check.detail
    wrong = Server(postgres_handler(pki, auth=auth, password="the-server-has-another"))
    servers.append(wrong)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", wrong.port), timeout=3)
    assert check.status == "error" and "refuses the login (28P01)" in check.detail
    _no_secret(check)


def test_postgres_without_tls_is_named(deployment, pki, servers):
    server = Server(postgres_handler(pki, answer=b"N"))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=3)
    assert check.status == "error" and "does not offer TLS" in check.detail


def test_a_tls_port_that_is_not_postgres_is_named(deployment, pki, servers):
    server = Server(tls_only_handler(pki))  # answers the SSLRequest with a TLS alert, not 'S'
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=2)
    assert check.status == "error" and "PostgreSQL" in check.detail


# ----------------------------------------------------------------------------- doctor: certificates
def test_a_certificate_for_another_host_fails(tmp_path, deployment, servers):
    ca, cert, key = _pki(tmp_path, names=("db.other.example",), ca_dir="other-host")
    (deployment / "datastore-ca" / "ca.crt").write_bytes(ca.read_bytes())
    server = Server(tls_only_handler(_server_context(cert, key)))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("kafka", server.port), timeout=3)
    assert check.status == "error"
    assert "does not verify" in check.detail and "localhost" in check.detail


def test_a_certificate_from_another_ca_fails(tmp_path, deployment, pki, servers):
    other_ca, _, _ = _pki(tmp_path, ca_dir="another-ca")
    (deployment / "datastore-ca" / "ca.crt").write_bytes(other_ca.read_bytes())  # not the server's CA
    server = Server(postgres_handler(pki))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=3)
    assert check.status == "error" and "does not verify against datastore-ca/ca.crt" in check.detail


def test_without_verification_the_handshake_passes_with_a_warning(tmp_path, deployment, pki, servers):
    (deployment / "datastore-ca" / "ca.crt").unlink()
    server = Server(tls_only_handler(pki))
    servers.append(server)
    endpoint = _endpoint("kafka", server.port, verify=False, ca="")
    check = doctor.probe(deployment, VALUES, endpoint, timeout=3)
    assert check.status == "warning" and "NOT verified" in check.detail


def test_a_missing_ca_bundle_is_one_line(deployment, pki, servers):
    server = Server(tls_only_handler(pki))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("kafka", server.port, ca="provider.pem"), timeout=3)
    assert check.status == "error" and "datastore-ca/provider.pem" in check.detail and "missing" in check.detail


# ----------------------------------------------------------------------------- doctor: Redis
def test_redis_auth_and_version_inside_the_matrix(deployment, pki, servers):
    server = Server(redis_handler(pki, version="6.2.14"))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("redis", server.port), timeout=3)
    assert check.status == "ok", check.detail
    assert "Redis 6.2.14 is inside >=5.0.0,<=6.3.0" in check.detail
    assert server.seen[0].startswith(b"AUTH ") and server.seen[1] == b"INFO server"
    _no_secret(check)


def test_redis_outside_the_matrix_is_an_error(deployment, pki, servers):
    server = Server(redis_handler(pki, version="7.2.4"))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("redis", server.port), timeout=3)
    assert check.status == "error" and "7.2.4 is OUTSIDE >=5.0.0,<=6.3.0" in check.detail


def test_redis_wrong_password_is_named_without_printing_it(deployment, pki, servers):
    server = Server(redis_handler(pki, password="another-one"))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("redis", server.port), timeout=3)
    assert check.status == "error" and "WRONGPASS" in check.detail and "password in REDIS_URL" in check.detail
    _no_secret(check)


# ----------------------------------------------------------------------------- doctor: ClickHouse
def test_clickhouse_version_over_https(deployment, pki, servers, monkeypatch):
    https = ClickHouseHTTPS(pki, version="22.8.11.15")
    servers.append(https)
    native = Server(tls_only_handler(pki))  # the native protocol's TLS port: the handshake is what is checked
    servers.append(native)
    monkeypatch.setattr(doctor, "CLICKHOUSE_NATIVE_TLS_PORT", native.port)
    check = doctor.probe(deployment, VALUES, _endpoint("clickhouse", https.port), timeout=3)
    assert check.status == "ok", check.detail
    assert "ClickHouse 22.8.11.15 is inside >=21.6.0,<22.9.0" in check.detail
    assert f"native port {native.port} (web, worker) serves TLS too" in check.detail
    _no_secret(check)
    native.close()
    check = doctor.probe(deployment, VALUES, _endpoint("clickhouse", https.port), timeout=3)
    assert check.status == "error" and f"TCP to port {native.port} fails" in check.detail


def test_clickhouse_too_new_and_wrong_password(deployment, pki, servers, monkeypatch):
    https = ClickHouseHTTPS(pki, version="23.8.2.7")
    servers.append(https)
    monkeypatch.setattr(doctor, "CLICKHOUSE_NATIVE_TLS_PORT", https.port)
    check = doctor.probe(deployment, VALUES, _endpoint("clickhouse", https.port), timeout=3)
    assert check.status == "error" and "23.8.2.7 is OUTSIDE" in check.detail
    wrong = {**VALUES, "CLICKHOUSE_PASSWORD": "not-it"}
    assert "not-it" not in json.dumps(check.__dict__)
    check = doctor.probe(deployment, wrong, _endpoint("clickhouse", https.port), timeout=3)
    assert check.status == "error" and "refuses CLICKHOUSE_USER and CLICKHOUSE_PASSWORD" in check.detail
    assert "not-it" not in check.detail


# ----------------------------------------------------------------------------- doctor: network failures
def test_a_closed_port_a_silent_port_and_an_unknown_host(deployment, pki, servers):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    check = doctor.probe(deployment, VALUES, _endpoint("kafka", closed), timeout=2)
    assert check.status == "error" and f"TCP to port {closed} fails" in check.detail

    silent = Server(silent_handler)
    servers.append(silent)
    import time

    started = time.monotonic()
    check = doctor.probe(deployment, VALUES, _endpoint("kafka", silent.port), timeout=1)
    assert check.status == "error" and "timed out" in check.detail
    assert time.monotonic() - started < 5

    check = doctor.probe(deployment, VALUES, _endpoint("postgres", 5432, host="db.does-not-exist.invalid"),
                         timeout=2)
    assert check.status == "error" and "does not resolve" in check.detail


def test_plain_tcp_is_an_error_unless_allowed(deployment, servers):
    server = Server(silent_handler)
    servers.append(server)
    endpoint = _endpoint("kafka", server.port, tls=False, verify=False, ca="")
    assert doctor.probe(deployment, VALUES, endpoint, timeout=2).status == "error"
    allowed = doctor.probe(deployment, {**VALUES, "ALLOW_PLAINTEXT_DATASTORES": "true"}, endpoint, timeout=2)
    assert allowed.status == "warning" and "without TLS" in allowed.detail


def test_external_checks_read_env_and_list_one_line_per_external_datastore(deployment, pki, servers):
    server = Server(postgres_handler(pki))
    servers.append(server)
    url = (f"postgres://posthog:{PG_PASSWORD}@localhost:{server.port}/posthog?sslmode=verify-full"
           "&sslrootcert=/etc/posthog/datastore-ca/ca.crt")
    (deployment / ".env").write_text(f"POSTGRES_MODE=external\nDATABASE_URL={url}\n"
                                     "POSTHOG_IMAGE=posthog/posthog:release-1.43.0\n")
    (deployment / ".env").chmod(0o600)
    checks = doctor.external_checks(deployment, timeout=3)
    assert [c.name for c in checks] == ["postgres (ext)"]
    assert checks[0].status == "ok", checks[0].detail
    assert PG_PASSWORD not in checks[0].detail
    (deployment / ".env").write_text("POSTHOG_IMAGE=posthog/posthog:release-1.43.0\n")
    assert doctor.external_checks(deployment) == []


# ============================================================================= the operations
from posthog_compose.operations import backup, diskusage, lifecycle, restore, stack, upgrade  # noqa: E402
from posthog_compose.operations.engine import Runner  # noqa: E402
from posthog_compose.errors import OperatorError  # noqa: E402
from tests.conftest import run_invoke, set_env  # noqa: E402
from tests.unit.test_backup import DUMP, TARS, FakeRunner, _read, engine  # noqa: E402,F401

EXTERNAL_PG = ("postgres://posthog:pg-secret-not-shown-42@pg.managed.example:5432/posthog?sslmode=verify-full"
               "&sslrootcert=/etc/posthog/datastore-ca/ca.crt")


def _external_postgres(root):
    set_env(root, POSTGRES_MODE="external", DATABASE_URL=EXTERNAL_PG)


def _external_analytics(root):
    set_env(root, CLICKHOUSE_MODE="external", CLICKHOUSE_HOST="ch.managed.example", CLICKHOUSE_SECURE="true",
            CLICKHOUSE_VERIFY="true", CLICKHOUSE_CA=datastores.CLICKHOUSE_CA_DEFAULT,
            KAFKA_MODE="external", KAFKA_HOSTS="kafka.managed.example:9093", KAFKA_URL="kafka://kafka.managed.example:9093")


# ----------------------------------------------------------------------------- the services that run here
def test_services_here_follow_the_switches():
    assert stack.services_here({}) == list(stack.SERVICES)
    assert "db" not in stack.services_here({"POSTGRES_MODE": "external"})
    only_ch = stack.services_here({"CLICKHOUSE_MODE": "external"})
    assert "clickhouse" not in only_ch and "zookeeper" in only_ch  # Kafka still needs it
    both = stack.services_here({"CLICKHOUSE_MODE": "external", "KAFKA_MODE": "external"})
    assert both == ["db", "redis", "web", "worker", "plugins"]


def test_assess_leaves_external_datastores_out_of_the_verdict():
    healthy = {name: stack.ServiceState(name, "running", "healthy") for name in ("redis", "clickhouse", "zookeeper",
                                                                                 "kafka", "web", "worker", "plugins")}
    values = {"POSTGRES_MODE": "external", "DATABASE_URL": EXTERNAL_PG}
    external = stack.external_services(values)
    depends = {"web": ["db", "redis", "clickhouse"], "worker": ["db"]}
    verdicts = lifecycle.assess(healthy, depends, (True, True, "/_readyz answered 200"), external)
    assert verdicts["db"] == "external: pg.managed.example:5432"
    assert verdicts["web"] == "ok" and verdicts["worker"] == "ok"
    # Without the switch the same states mean db is down and web depends on it.
    local = lifecycle.assess(healthy, depends, (True, True, "ok"))
    assert local["db"].startswith("down") and local["web"].startswith("degraded")


@pytest.fixture
def fake_compose(tmp_path):
    """`docker compose` answering ps with every service but db running and healthy."""
    calls = tmp_path / "calls.jsonl"
    rows = "\n".join(json.dumps({"Service": name, "State": "running", "Health": "healthy", "ExitCode": 0,
                                 "Status": "Up 2 minutes (healthy)", "Image": f"{name}:1", "Publishers": []})
                     for name in ("redis", "clickhouse", "zookeeper", "kafka", "worker", "plugins"))
    script = tmp_path / "fake-compose"
    script.write_text(f"#!/usr/bin/env python3\nimport json, sys\nopen({str(calls)!r}, 'a').write(json.dumps("
                      f"sys.argv[1:]) + '\\n')\nif 'ps' in sys.argv:\n    print({rows!r})\n")
    script.chmod(0o755)
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")
    docker.chmod(0o755)
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script), "PATH": f"{tmp_path}:{os.environ['PATH']}"}


import os  # noqa: E402


def test_status_shows_external_rows_with_the_endpoint_and_no_password(deployed, fake_compose):
    _external_postgres(deployed)
    result = run_invoke(deployed, "status", env=fake_compose)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    db = next(line for line in lines if line.startswith("db "))
    assert db.split()[:2] == ["db", "external"] and "pg.managed.example:5432" in db and "PostgreSQL" in db
    assert "pg-secret-not-shown-42" not in result.stdout
    # web is not created here, so worker and plugins (which wait for it) are degraded; nothing blames db.
    assert "plugins: degraded: depends on web (not running)" in lines
    assert "worker: degraded: depends on web (not running)" in lines
    assert not [line for line in lines if "depends on" in line and "db" in line]
    assert lines[-1] == "4 of 7 services running and healthy (see above); external: db (PostHog readiness speaks for them)."
    _external_analytics(deployed)
    set_env(deployed, KAFKA_HOSTS="kafka1.managed.example:9093,kafka2.managed.example:9093")
    lines = run_invoke(deployed, "status", env=fake_compose).stdout.splitlines()
    assert next(line for line in lines if line.startswith("zookeeper ")).split()[1:3] == ["not", "needed"]
    kafka = next(line for line in lines if line.startswith("kafka "))
    assert "kafka1.managed.example:9093 (+1)" in kafka and kafka.split()[1] == "external"
    data = json.loads(run_invoke(deployed, "status", "--json", env=fake_compose).stdout)
    row = next(r for r in data["services"] if r["service"] == "db")
    assert row == {"service": "db", "state": "external", "verdict": "external: pg.managed.example:5432",
                   "datastore": "postgres", "endpoint": "pg.managed.example:5432", "tls": True}


def test_disk_lists_only_the_volumes_of_services_that_run_here(deployed):
    class Engine(Runner):
        def run(self, cmd, **kwargs):
            import subprocess

            if cmd[:3] == ["docker", "system", "df"]:
                volumes = [{"Name": f"posthog_{v}", "Size": "1MB", "Labels": ""} for v in
                           ("postgres-data", "clickhouse-data", "zookeeper-data", "zookeeper-logs", "kafka-data")]
                return subprocess.CompletedProcess(cmd, 0, json.dumps(volumes), "")
            return subprocess.CompletedProcess(cmd, 1, "", "no")

    runner = Engine(deployed)
    assert set(diskusage.measure(deployed, runner, "posthog", values={}).volumes) == {
        "postgres-data", "clickhouse-data", "zookeeper-data", "zookeeper-logs", "kafka-data"}
    values = {"POSTGRES_MODE": "external", "CLICKHOUSE_MODE": "external", "KAFKA_MODE": "external"}
    assert diskusage.measure(deployed, runner, "posthog", values=values).volumes == {}
    assert set(diskusage.measure(deployed, runner, "posthog", values={"CLICKHOUSE_MODE": "external"}).volumes) == {
        "postgres-data", "zookeeper-data", "zookeeper-logs", "kafka-data"}


def test_up_waits_only_for_the_services_that_run_here(deployed, monkeypatch, capsys):
    _external_postgres(deployed)
    waited = {}
    monkeypatch.setattr("posthog_compose.configuration.checks.require_clean", lambda root: None)
    monkeypatch.setattr(lifecycle, "recover", lambda root, runner: None)
    monkeypatch.setattr(stack, "start_and_wait", lambda root, runner, command, targets, timeout, readiness_values=None:
                        waited.update(command=command, targets=targets))
    monkeypatch.setattr(lifecycle, "check_images_match", lambda root, runner, targets: None)
    monkeypatch.setattr(stack, "check_url", lambda values, timeout=30.0: (True, "302 to /preflight"))
    lifecycle.up(deployed, Runner(deployed), [])
    assert waited["targets"] == ["redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"]
    assert "db" not in waited["command"][waited["command"].index("up"):]
    out = capsys.readouterr().out
    assert "db: external PostgreSQL at pg.managed.example:5432" in out and "pg-secret" not in out


def test_readiness_names_the_external_datastore_that_fails(monkeypatch):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"http": True, "postgres": False, "postgres_migrations_uptodate": False,
                               "cache": True}).encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        values = {"WEB_PORT": str(server.server_address[1]), "POSTGRES_MODE": "external", "DATABASE_URL": EXTERNAL_PG}
        ready, answered, detail = stack.readiness(values)
        assert (ready, answered) == (False, True)
        assert "postgres, postgres_migrations_uptodate failing" in detail
        assert "PostgreSQL is external (pg.managed.example:5432)" in detail and "invoke doctor" in detail
        assert "pg-secret" not in detail
        local = stack.readiness({"WEB_PORT": str(server.server_address[1])})[2]
        assert "external" not in local  # a local db that fails is not blamed on a provider
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- backup and restore
def test_backup_skips_external_postgres_with_one_line_and_records_it(deployed, engine, capsys):
    _external_postgres(deployed)
    result = backup.create(deployed, FakeRunner(deployed), encrypt=True)
    manifest, contents = _read(result.path.read_bytes())
    assert not [name for name in contents if name.startswith("postgres/")]
    assert "volumes/clickhouse.tar" in contents and "volumes/zookeeper.tar" in contents
    assert not [c for c in engine.popens if "pg_dump" in c]
    assert manifest["external"] == {"postgres": {"endpoint": "pg.managed.example:5432"}}
    assert manifest["postgres"] is None and manifest["versions"]["postgres"] is None
    assert "PostgreSQL is external (pg.managed.example:5432): back it up at your provider" in \
        manifest["not_backed_up"]
    out = capsys.readouterr().out
    assert out.count("PostgreSQL is external (pg.managed.example:5432): back it up at your provider") == 1
    assert "pg-secret-not-shown-42" not in json.dumps(manifest) + out
    with pytest.raises(OperatorError, match=r"PostgreSQL is external \(pg.managed.example:5432\): back it up at your "
                                            r"provider; `--only postgres` has nothing to take here"):
        backup.create(deployed, FakeRunner(deployed), subset="postgres", encrypt=True)


def test_backup_with_external_clickhouse_and_kafka_stops_nothing(deployed, engine, capsys):
    _external_analytics(deployed)
    runner = FakeRunner(deployed)
    result = backup.create(deployed, runner, encrypt=True)
    manifest, contents = _read(result.path.read_bytes())
    assert contents["postgres/posthog.dump"] == DUMP
    assert not [name for name in contents if name.startswith("volumes/")]
    assert not [c for c in runner.commands if "stop" in c]
    assert set(manifest["external"]) == {"clickhouse", "kafka"}
    out = capsys.readouterr().out
    assert "ClickHouse is external (ch.managed.example:" in out and "Kafka is external (kafka.managed.example:9093)" in out


def test_restore_refuses_a_member_whose_datastore_is_now_external(deployed, engine):
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path  # PostgreSQL local: the dump is in it
    _external_postgres(deployed)
    before = (deployed / ".env").read_bytes()
    runner = FakeRunner(deployed)
    with pytest.raises(OperatorError) as caught:
        restore.restore(deployed, runner, str(made), yes=True)
    message = str(caught.value)
    assert message.startswith("postgres/posthog.dump: PostgreSQL is external in .env (pg.managed.example:5432)")
    assert "POSTGRES_MODE=local" in message and "nothing was changed" in message and "\n" not in message
    assert "pg-secret" not in message
    assert (deployed / ".env").read_bytes() == before
    assert not [c for c in runner.commands if "down" in c or "rm" in c or "up" in c]
    assert not [c for c in engine.popens if "-xf" in c or ("pg_restore" in c and "--list" not in c)]


def test_restore_of_an_archive_made_with_external_postgres_leaves_it_alone(deployed, engine, capsys):
    _external_postgres(deployed)
    (deployed / "datastore-ca" / "ca.crt").write_text("the provider's CA\n")  # DATABASE_URL names it: archived
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    runner = FakeRunner(deployed)
    restore.restore(deployed, runner, str(made), yes=True)
    assert "postgres" not in engine.fed and set(engine.fed) == {"/var/lib/clickhouse", "/var/lib/zookeeper"}
    assert not [c for c in runner.commands if c[-1:] == ["db"]]  # db is never started for a restore
    assert "PostgreSQL was external (pg.managed.example:5432) when the archive was made" in capsys.readouterr().out


# ----------------------------------------------------------------------------- upgrade
from tests.unit.test_upgrade import SHA, engine_steps  # noqa: E402,F401


def test_upgrade_with_external_postgres_needs_a_provider_snapshot(deployed, engine_steps, monkeypatch, capsys):
    _external_postgres(deployed)
    before = (deployed / ".env").read_bytes()
    with pytest.raises(OperatorError) as caught:
        upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA))
    assert "PostgreSQL is external (pg.managed.example:5432)" in str(caught.value)
    assert "snapshot at your provider" in str(caught.value) and "--skip-backup" in str(caught.value)
    assert engine_steps == [] and (deployed / ".env").read_bytes() == before
    monkeypatch.setattr(upgrade, "_recreate", lambda *args: None)
    assert upgrade.run(deployed, Runner(deployed), upgrade.Request(to=SHA, skip_backup=True)) == 0
    assert "backup" not in engine_steps
    out = capsys.readouterr().out
    assert "PostgreSQL is external (pg.managed.example:5432); the snapshot taken at the provider is the way back" in out


def test_upgrade_of_an_external_datastore_image_is_refused(deployed):
    _external_postgres(deployed)
    with pytest.raises(OperatorError, match=r"--service postgres: PostgreSQL is external \(pg.managed.example:5432\)"):
        upgrade.make_plan(deployed, upgrade.Request(to="14.1-alpine", service="postgres"))
    _external_analytics(deployed)
    with pytest.raises(OperatorError, match="--service zookeeper: zookeeper does not run here"):
        upgrade.make_plan(deployed, upgrade.Request(to="3.8.4", service="zookeeper"))
    # Redis is local: its upgrade needs no PostgreSQL snapshot, and says why no dump is taken.
    plan = upgrade.make_plan(deployed, upgrade.Request(to="6.2.14-alpine", service="redis"))
    assert plan.external_postgres == "pg.managed.example:5432"


# ----------------------------------------------------------------------------- harden
from posthog_compose.operations import harden  # noqa: E402
from posthog_compose.configuration.envfile import EnvFile  # noqa: E402


@pytest.fixture
def no_engine(tmp_path, monkeypatch):
    """`docker compose` that knows no containers (a deployment not started yet)."""
    script = tmp_path / "fake-compose-empty"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    monkeypatch.setenv("POSTHOG_COMPOSE_BINARY", str(script))
    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}


def _items(root) -> dict:
    return {r.id: r for r in harden.evaluate(harden.read_state(root))}


def _provider_ca(root, tmp_path, days=None):
    from cryptography import x509  # noqa: F401

    base = tmp_path / "provider"
    certs.cert_dir(base).mkdir(parents=True, exist_ok=True)
    if days is not None:
        original = certs.CA_DAYS
        certs.CA_DAYS = days
        try:
            certs.make_ca(base, "provider")
        finally:
            certs.CA_DAYS = original
    else:
        certs.make_ca(base, "provider")
    (root / "datastore-ca").mkdir(exist_ok=True)
    (root / "datastore-ca" / "ca.crt").write_bytes(certs.paths(base, "ca")[0].read_bytes())


def test_harden_check_items_for_an_external_clickhouse(deployed, tmp_path, no_engine):
    _external_analytics(deployed)
    set_env(deployed, KAFKA_SECURITY_PROTOCOL="SSL")
    items = _items(deployed)
    # PostHog 1.43 does not verify ClickHouse's certificate (clickhouse-driver 0.2.1): advised, not failed.
    assert items["clickhouse-tls"].kind == "check" and items["clickhouse-tls"].status == "warn", items["clickhouse-tls"]
    assert "ch.managed.example" in items["clickhouse-tls"].reason and "does not verify" in items["clickhouse-tls"].reason
    assert items["kafka-tls"].kind == "check" and items["kafka-tls"].status == "pass"
    assert items["datastore-ca"].status == "fail" and "datastore-ca/ca.crt is missing" in items["datastore-ca"].reason
    _provider_ca(deployed, tmp_path)
    items = _items(deployed)
    assert items["datastore-ca"].status == "pass" and "the first expires" in items["datastore-ca"].reason
    assert items["postgres-tls"].kind == "apply"  # PostgreSQL still runs here: harden's own TLS applies
    set_env(deployed, CLICKHOUSE_VERIFY="false")
    failing = _items(deployed)["clickhouse-tls"]
    assert failing.status == "fail" and "CLICKHOUSE_VERIFY not true" in failing.reason


def test_an_expiring_or_non_ca_bundle_fails(deployed, tmp_path, no_engine):
    _external_postgres(deployed)
    _provider_ca(deployed, tmp_path, days=10)
    item = _items(deployed)["datastore-ca"]
    assert item.status == "fail" and "datastore-ca/ca.crt expires in" in item.reason
    _, cert, _ = _pki(tmp_path, ca_dir="server-only")
    (deployed / "datastore-ca" / "ca.crt").write_bytes(cert.read_bytes())  # a server certificate, not a CA
    item = _items(deployed)["datastore-ca"]
    assert item.status == "fail" and "holds no CA certificate" in item.reason


def test_plaintext_datastores_fail_in_production(deployed, tmp_path, no_engine):
    assert _items(deployed)["plaintext-datastores"].status == "pass"
    set_env(deployed, ALLOW_PLAINTEXT_DATASTORES="true")
    assert _items(deployed)["plaintext-datastores"].status == "warn"
    _external_postgres(deployed)
    set_env(deployed, DATABASE_URL="postgres://posthog:pw@pg.managed.example:5432/posthog")
    items = _items(deployed)
    assert items["plaintext-datastores"].status == "fail"
    assert items["postgres-tls"].status == "fail" and "TLS is off" in items["postgres-tls"].reason


def _effective(root, monkeypatch) -> dict:
    """The services as the real Compose binary merges them (docker-compose.yml and the override)."""
    import subprocess

    from posthog_compose.configuration import compose

    monkeypatch.delenv("POSTHOG_COMPOSE_BINARY")
    env = dict(os.environ)
    result = subprocess.run([*compose.compose_binary(), "config", "--format", "json"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_harden_leaves_out_internal_tls_for_an_external_clickhouse(deployed, tmp_path, no_engine, monkeypatch):
    _external_analytics(deployed)
    _provider_ca(deployed, tmp_path)
    result = run_invoke(deployed, "harden", "--yes", env=no_engine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "without the parts for the external clickhouse" in result.stdout
    values = EnvFile.load(deployed / ".env").values()
    assert values["CLICKHOUSE_CA"] == datastores.CLICKHOUSE_CA_DEFAULT  # the provider's CA stays
    assert "sslrootcert=/etc/posthog/certs/ca.crt" in values["DATABASE_URL"]  # local db: the kit's own TLS
    override = (deployed / "docker-compose.override.yml").read_text()
    assert "clickhouse:" not in override and "CLICKHOUSE_CA" not in override
    assert "NODE_EXTRA_CA_CERTS" in override  # Redis runs here with the kit's CA
    again = run_invoke(deployed, "harden", "--yes", env=no_engine)
    assert "Nothing to apply" in again.stdout
    services = _effective(deployed, monkeypatch)
    for name in ("web", "worker", "plugins"):
        assert (services[name].get("environment") or {}).get("CLICKHOUSE_CA") != harden.CONTAINER_CA
    assert "ssl=on" in services["db"]["command"]
    items = _items(deployed)
    assert items["clickhouse-tls"].status == "warn" and items["postgres-tls"].status == "pass", \
        (items["clickhouse-tls"], items["postgres-tls"])


def test_an_override_from_before_the_switch_is_named_and_rewritten(deployed, tmp_path, no_engine):
    assert run_invoke(deployed, "harden", "--yes", env=no_engine).returncode == 0
    assert (deployed / "docker-compose.override.yml").read_text() == (deployed / "docker-compose.tls.yml").read_text()
    set_env(deployed, REDIS_MODE="external",
            REDIS_URL="rediss://:pw-redis-managed@redis.managed.example:6379/0?ssl_cert_reqs=required"
                      "&ssl_ca_certs=/etc/posthog/datastore-ca/ca.crt")
    _provider_ca(deployed, tmp_path)
    item = _items(deployed)["redis-tls"]
    assert item.status == "fail" and "NODE_EXTRA_CA_CERTS" in item.reason and item.kind == "check"
    import time

    time.sleep(1.1)  # harden's copies of .env are named by the second
    result = run_invoke(deployed, "harden", "--yes", env=no_engine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker-compose.override.yml from docker-compose.tls.yml (mounts the certificates) without the parts " \
        "for the external redis" in " ".join(result.stdout.split())  # as one line, however the terminal wraps it
    assert "REDIS_PASSWORD" not in result.stdout  # the provider's password in REDIS_URL is not harden's to change
    override = (deployed / "docker-compose.override.yml").read_text()
    assert "NODE_EXTRA_CA_CERTS" not in override and "\n  redis:" not in override
    assert _items(deployed)["redis-tls"].status == "pass"
    assert "pw-redis-managed" not in result.stdout + result.stderr


def test_clickhouse_certificate_that_does_not_verify_is_a_warning(tmp_path, deployment, pki, servers, monkeypatch):
    """PostHog 1.43 connects to ClickHouse without verifying its certificate: the host check says so
    as a warning; for PostgreSQL the same failure is an error (libpq with verify-full refuses)."""
    https = ClickHouseHTTPS(pki)
    servers.append(https)
    monkeypatch.setattr(doctor, "CLICKHOUSE_NATIVE_TLS_PORT", https.port)
    other_ca, _, _ = _pki(tmp_path, ca_dir="another-ca-ch")
    (deployment / "datastore-ca" / "ca.crt").write_bytes(other_ca.read_bytes())
    endpoint = datastores.Endpoint("clickhouse", "localhost", https.port, True, False,
                                   datastores.CLICKHOUSE_CA_DEFAULT, "CLICKHOUSE_HOST")
    check = doctor.probe(deployment, VALUES, endpoint, timeout=3)
    assert check.status == "warning" and "does not verify against datastore-ca/ca.crt" in check.detail
    assert "would connect anyway" in check.detail


def test_harden_does_not_rotate_the_password_of_an_external_datastore(deployed, no_engine):
    _external_postgres(deployed)
    before = (deployed / ".env").read_bytes()
    result = run_invoke(deployed, "harden", "--rotate-secrets", "--dry-run", env=no_engine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "secrets: POSTGRES_PASSWORD is not rotated: PostgreSQL is external" in result.stdout
    assert "secrets: POSTGRES_PASSWORD:" not in result.stdout  # not in the plan
    assert "secrets: REDIS_PASSWORD:" in result.stdout  # Redis runs here: still rotated
    assert (deployed / ".env").read_bytes() == before and "pg-secret" not in result.stdout


def test_logs_of_an_external_datastore_say_where_they_are(deployed, fake_compose):
    _external_postgres(deployed)
    result = run_invoke(deployed, "logs", "-s", "db", env=fake_compose)
    assert result.returncode == 0, result.stderr
    assert "db: PostgreSQL is external (pg.managed.example:5432); its logs are at your provider" in result.stderr
    assert "pg-secret" not in result.stdout + result.stderr
    plain = run_invoke(deployed, "logs", "-s", "redis", env=fake_compose)
    assert "external" not in plain.stderr


# ----------------------------------------------------------------------------- properties
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

MODES = st.fixed_dictionaries({name: st.sampled_from(["local", "external"])
                               for name in ("POSTGRES_MODE", "REDIS_MODE", "CLICKHOUSE_MODE", "KAFKA_MODE")})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=st.binary(min_size=0, max_size=64), datastore=st.sampled_from(["postgres", "redis", "kafka"]))
def test_any_answer_of_a_broken_server_is_one_line_without_secrets(deployment, answer, datastore):
    """Whatever a server answers first (PostgreSQL's SSLRequest, or a TLS ClientHello), the probe ends
    with one line and an error, never a traceback or a hang."""
    def handle(server, conn):
        conn.recv(1024)
        if answer:
            conn.sendall(answer)

    server = Server(handle)
    try:
        check = doctor.probe(deployment, VALUES, _endpoint(datastore, server.port), timeout=0.5)
    finally:
        server.close()
    if datastore == "postgres" and answer[:1] == b"S":
        assert check.status == "error"  # 'S' and then no TLS (or garbage): the handshake fails
    assert check.status == "error", check.detail
    assert "\n" not in check.detail and check.detail.startswith(stack.DATASTORE_LABELS[datastore])
    _no_secret(check)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=st.binary(max_size=200) | st.builds(lambda n: b"+OK\r\n$%d\r\n" % n, st.integers(-10, 10 ** 12)))
def test_any_redis_reply_after_tls_is_one_line(deployment, pki, reply):
    """A TLS server that answers AUTH with arbitrary bytes: one line, never a traceback, never the password."""
    def handle(server, conn):
        tls = pki.wrap_socket(conn, server_side=True)
        tls.recv(4096)
        tls.sendall(reply)  # and closes: a hanging server is the timeout test's case

    server = Server(handle)
    try:
        check = doctor.probe(deployment, VALUES, _endpoint("redis", server.port), timeout=0.5)
    finally:
        server.close()
    assert check.status in ("ok", "warning", "error") and "\n" not in check.detail
    _no_secret(check)


@settings(max_examples=40, deadline=None)
@given(modes=MODES)
def test_what_runs_here_and_what_is_listed_follow_the_switches(modes):
    here = stack.services_here(modes)
    external = stack.external_services(modes)
    assert set(here) | set(external) == set(stack.SERVICES) and not set(here) & set(external)
    assert here == datastores.local_services(modes)
    for name in ("postgres", "redis", "clickhouse", "kafka"):
        assert (datastores.SERVICE[name] in here) == (modes[f"{name.upper()}_MODE"] == "local")
    assert ("zookeeper" in here) == (modes["CLICKHOUSE_MODE"] == "local" or modes["KAFKA_MODE"] == "local")
    listed = set(datastores.local_volumes({})) - diskusage.not_here(modes)
    assert listed == set(datastores.local_volumes(modes))
    members = backup.local_volume_members(modes)
    assert ("volumes/clickhouse.tar" in members) == (modes["CLICKHOUSE_MODE"] == "local")
    assert set(members) <= {"volumes/clickhouse.tar", "volumes/zookeeper.tar"}
    states = {name: stack.ServiceState(name, "running", "healthy") for name in here}
    verdicts = lifecycle.assess(states, lifecycle.dependencies(Path(__file__).resolve().parents[2]),
                                (True, True, "ok"), external)
    assert all(verdicts[name] == "ok" for name in here), verdicts
    assert all(verdicts[name].startswith("external") for name in external if name != "zookeeper")
    if "zookeeper" in external:
        assert verdicts["zookeeper"] == "not needed: ClickHouse and Kafka are external"


@settings(max_examples=16, deadline=None)
@given(modes=MODES)
def test_the_override_leaves_out_exactly_the_external_parts(modes):
    import yaml

    from tests.conftest import REPO

    template = (REPO / harden.TLS_TEMPLATE).read_text()
    rendered = harden.render_override(template, modes)
    outside = set(datastores.external(modes))
    if not outside & {"postgres", "redis", "clickhouse"}:
        assert rendered == template
        return
    services = yaml.safe_load(rendered)["services"]
    for name in ("postgres", "redis", "clickhouse"):
        assert (datastores.SERVICE[name] in services) == (name not in outside)
    for name in ("web", "worker", "plugins"):
        environment = services[name].get("environment") or {}
        assert ("CLICKHOUSE_CA" in environment) == ("clickhouse" not in outside)
        assert services[name]["volumes"] == ["./certs/ca.crt:/etc/posthog/certs/ca.crt:ro"]
    assert ("NODE_EXTRA_CA_CERTS" in (services["plugins"].get("environment") or {})) == ("redis" not in outside)
    assert "invoke harden" in rendered[:400]


def test_a_failing_posthog_service_points_at_the_external_datastores(deployed, monkeypatch, capsys):
    _external_postgres(deployed)
    monkeypatch.setattr(stack, "recent_logs", lambda root, runner, service, lines=30:
                        "django.db.utils.OperationalError: could not connect to server\n")
    with pytest.raises(OperatorError) as caught:
        stack.raise_failure(deployed, Runner(deployed), ["web"], {}, "not healthy after 600 s (--timeout)")
    out = capsys.readouterr().out
    assert "hint: external datastores: PostgreSQL at pg.managed.example:5432" in out and "invoke doctor" in out
    assert "pg-secret" not in out + str(caught.value)
    set_env(deployed, POSTGRES_MODE="local")
    with pytest.raises(OperatorError):
        stack.raise_failure(deployed, Runner(deployed), ["web"], {}, "not healthy")
    assert "external datastores" not in capsys.readouterr().out


@pytest.mark.parametrize("step", ["tar /var/lib/clickhouse", "tar /var/lib/zookeeper", "write", "rename", "interrupt"])
def test_a_failure_at_any_step_with_external_postgres_leaves_no_archive(deployed, engine, monkeypatch, step):
    """Without the dump (PostgreSQL external) the other steps still fail cleanly: no archive, no
    partial file, every stopped service started again."""
    from tests.unit.test_backup import assert_every_stopped_service_started, inject_backup_fault

    _external_postgres(deployed)
    inject_backup_fault(engine, monkeypatch, step)
    runner = FakeRunner(deployed)
    with pytest.raises((OperatorError, KeyboardInterrupt)):
        backup.create(deployed, runner, encrypt=True)
    left = sorted(p.name for p in (deployed / "backups").iterdir()) if (deployed / "backups").exists() else []
    assert not [name for name in left if name.endswith((".backup", ".partial", ".json"))], left
    assert_every_stopped_service_started(runner)
    assert not [c for c in engine.popens if "pg_dump" in c]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=st.binary(max_size=120) | st.builds(lambda code, body: b"R" + (len(body) + 8).to_bytes(4, "big")
                                                  + code.to_bytes(4, "big") + body,
                                                  st.sampled_from([0, 3, 5, 7, 10, 11, 12]), st.binary(max_size=40)))
def test_any_postgres_reply_to_the_login_is_one_line(deployment, pki, reply):
    """After 'S' and TLS, a server that answers the startup message with arbitrary bytes (or an
    authentication request with a random body): one line, never a traceback, never the password."""
    def handle(server, conn):
        conn.recv(8)
        conn.sendall(b"S")
        tls = pki.wrap_socket(conn, server_side=True)
        tls.recv(4096)
        tls.sendall(reply)  # and closes

    server = Server(handle)
    try:
        check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=0.5)
    finally:
        server.close()
    assert check.status in ("ok", "error") and "\n" not in check.detail
    _no_secret(check)


def test_verify_ca_checks_the_chain_but_not_the_host_name(tmp_path, deployment, servers):
    """libpq's sslmode=verify-ca: the certificate must chain to the CA, its host name is not compared."""
    ca, cert, key = _pki(tmp_path, names=("db.other.example",), ca_dir="verify-ca")
    (deployment / "datastore-ca" / "ca.crt").write_bytes(ca.read_bytes())
    server = Server(postgres_handler(_server_context(cert, key)))
    servers.append(server)
    values = {**VALUES, "DATABASE_URL": VALUES["DATABASE_URL"].replace("verify-full", "verify-ca")}
    check = doctor.probe(deployment, values, _endpoint("postgres", server.port), timeout=3)
    assert check.status == "ok", check.detail
    assert "host name not checked: sslmode=verify-ca" in check.detail
    full = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=3)
    assert full.status == "error" and "does not verify" in full.detail

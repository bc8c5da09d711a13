"""The operations with external datastores.

`invoke doctor`'s probes run against real TLS servers started here (Python ssl sockets with
certificates made by posthog_compose/certs.py): a PostgreSQL stand-in that answers the SSLRequest
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

from posthog_compose import certs, datastores, doctor

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
        self.listener.close()


def postgres_handler(context, answer=b"S"):
    """PostgreSQL's start: an 8-byte SSLRequest (length 8, code 80877103); 'S' and a TLS handshake,
    or 'N'. Anything else first is a startup packet PostgreSQL would treat as plain: refused here."""
    def handle(server, conn):
        request = conn.recv(8)
        server.seen.append(request)
        if request != doctor.PG_SSL_REQUEST:
            return
        conn.sendall(answer)
        if answer == b"S":
            tls = context.wrap_socket(conn, server_side=True)
            tls.recv(1)  # the client closes after the handshake
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
    return datastores.Endpoint(datastore=datastore, host=host, port=port, tls=tls, verify=verify, ca_path=container,
                               ca_host_path=Path("datastore-ca") / ca if ca else None,
                               variable={"postgres": "DATABASE_URL", "redis": "REDIS_URL",
                                         "clickhouse": "CLICKHOUSE_HOST", "kafka": "KAFKA_HOSTS"}[datastore])


VALUES = {"POSTHOG_IMAGE": "posthog/posthog:release-1.43.0",
          "REDIS_URL": f"rediss://:{PASSWORD}@localhost:6379/0?ssl_cert_reqs=required"
                       "&ssl_ca_certs=/etc/posthog/datastore-ca/ca.crt",
          "CLICKHOUSE_USER": "default", "CLICKHOUSE_PASSWORD": CH_PASSWORD}


def _no_secret(check):
    text = json.dumps(check.__dict__)
    assert PASSWORD not in text and CH_PASSWORD not in text
    assert "\n" not in check.detail


# ----------------------------------------------------------------------------- doctor: PostgreSQL
def test_postgres_sslrequest_then_verified_tls(deployment, pki, servers):
    server = Server(postgres_handler(pki))
    servers.append(server)
    check = doctor.probe(deployment, VALUES, _endpoint("postgres", server.port), timeout=3)
    assert check.status == "ok", check.detail
    assert "TCP connects" in check.detail and "verified against datastore-ca/ca.crt" in check.detail
    assert f"localhost:{server.port}" in check.detail
    assert server.seen == [doctor.PG_SSL_REQUEST]  # the SSLRequest came first, before any TLS byte
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
    monkeypatch.setattr(doctor, "CLICKHOUSE_HTTPS_PORT", https.port)
    check = doctor.probe(deployment, VALUES, _endpoint("clickhouse", https.port), timeout=3)
    assert check.status == "ok", check.detail
    assert "ClickHouse 22.8.11.15 is inside >=21.6.0,<22.9.0" in check.detail
    _no_secret(check)


def test_clickhouse_too_new_and_wrong_password(deployment, pki, servers, monkeypatch):
    https = ClickHouseHTTPS(pki, version="23.8.2.7")
    servers.append(https)
    monkeypatch.setattr(doctor, "CLICKHOUSE_HTTPS_PORT", https.port)
    check = doctor.probe(deployment, VALUES, _endpoint("clickhouse", https.port), timeout=3)
    assert check.status == "error" and "23.8.2.7 is OUTSIDE" in check.detail
    wrong = {**VALUES, "CLICKHOUSE_PASSWORD": "not-it"}
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
    url = (f"postgres://posthog:pw-not-shown-123@localhost:{server.port}/posthog?sslmode=verify-full"
           "&sslrootcert=/etc/posthog/datastore-ca/ca.crt")
    (deployment / ".env").write_text(f"POSTGRES_MODE=external\nDATABASE_URL={url}\n"
                                     "POSTHOG_IMAGE=posthog/posthog:release-1.43.0\n")
    (deployment / ".env").chmod(0o600)
    checks = doctor.external_checks(deployment, timeout=3)
    assert [c.name for c in checks] == ["postgres (ext)"]
    assert checks[0].status == "ok", checks[0].detail
    assert "pw-not-shown-123" not in checks[0].detail
    (deployment / ".env").write_text("POSTHOG_IMAGE=posthog/posthog:release-1.43.0\n")
    assert doctor.external_checks(deployment) == []

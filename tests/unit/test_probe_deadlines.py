"""Every probe of the kit ends within its deadline, whatever the server does, with one line saying what
the server did: real servers on 127.0.0.1 (threads, ephemeral ports) that stall (accept and say
nothing), trickle (one byte at a time, during the TLS handshake or after it), announce huge lengths or
ask for absurd work (a SCRAM iteration count of two billion), against doctor's PostgreSQL, Redis,
ClickHouse and Kafka probes, the URL check through the proxy, and the readiness and URL checks on
WEB_PORT. A per-read timeout alone would let a trickling server keep each of them alive for ever.

Then properties: whatever bytes a server answers, the parsers of the PostgreSQL login, of Redis' replies
and of an HTTP response raise nothing but their own error and never outlive their deadline.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.operations import doctor, probes, stack, wire
from posthog_compose.operations.doctor.network import _ProbeFailed
from tests.unit.test_external_ops import (  # noqa: F401 - deployment, pki and servers are fixtures
    VALUES,
    Server,
    _endpoint,
    _no_secret,
    _pg,
    _pg_client_message,
    deployment,
    pki,
    servers,
)

DEADLINE = 0.8
#: What a loaded two-core machine may add to a deadline: thread start, the TLS handshake's CPU.
MARGIN = 1.2
#: A trickling server stops by itself after this long, so that a probe without a deadline fails the
#: test by its time instead of hanging the run.
TRICKLE_CAP = 12.0


# ----------------------------------------------------------------------------- hostile servers
def _wait_for_close(sock) -> None:
    """Say nothing; return when the client goes away (or after TRICKLE_CAP)."""
    sock.settimeout(TRICKLE_CAP)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def _trickle(sock, data: bytes, delay: float = 0.02) -> None:
    """Send ``data`` one byte every ``delay`` seconds, until it is sent, the client leaves or TRICKLE_CAP."""
    ends = time.monotonic() + TRICKLE_CAP
    for byte in data:
        if time.monotonic() > ends:
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(delay)


def _endless(prefix: bytes, repeated: bytes, size: int = 100_000) -> bytes:
    return prefix + repeated * (size // len(repeated))


def _tls_trickled_handshake(context, conn, delay: float = 0.02) -> None:
    """A TLS server whose handshake messages leave one byte at a time (the ssl module's memory BIO)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    ends = time.monotonic() + TRICKLE_CAP
    while time.monotonic() < ends:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            _trickle(conn, outgoing.read(), delay)
            conn.settimeout(TRICKLE_CAP)
            data = conn.recv(16384)
            if not data:
                return
            incoming.write(data)


def _after_tls(context, then, postgres: bool = False, read_first: bool = True):
    """A TLS server (PostgreSQL's: 'S' to the SSLRequest first) that reads the client's first message and
    then behaves as ``then(tls)`` says."""
    def handle(server, conn):
        if postgres:
            conn.recv(8)
            conn.sendall(b"S")
        tls = context.wrap_socket(conn, server_side=True)
        tls.settimeout(TRICKLE_CAP)
        if read_first:
            tls.recv(4096)
        then(tls)
    return handle


def _scram_asking(iterations: str):
    """PostgreSQL's SASL start, then a server-first message asking for ``iterations``."""
    def then(tls):
        tls.sendall(_pg(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0"))
        reader = tls.makefile("rb")
        _, initial = _pg_client_message(reader)
        nonce = initial.split(b"r=", 1)[1].decode() + "server-nonce"
        salt = base64.b64encode(b"salty-salt-16byt").decode()
        tls.sendall(_pg(b"R", (11).to_bytes(4, "big") + f"r={nonce},s={salt},i={iterations}".encode()))
        _wait_for_close(tls)
    return then


def _run_probe(deployment, datastore, handler, servers, values=VALUES, **endpoint):
    server = Server(handler)
    servers.append(server)
    started = time.monotonic()
    check = doctor.probe(deployment, values, _endpoint(datastore, server.port, **endpoint), timeout=DEADLINE)
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + MARGIN, f"{datastore} probe took {elapsed:.1f} s: {check.detail}"
    assert check.status == "error" and "\n" not in check.detail, check.detail
    _no_secret(check)
    return check.detail


def _serve(handler):
    """A bare TCP server: each connection's socket handed to ``handler`` (no TLS of its own)."""
    return Server(lambda server, conn: handler(conn))


# ----------------------------------------------------------------------------- doctor: PostgreSQL
POSTGRES_CASES = {
    "stalls before the SSLRequest's answer": (
        lambda pki: (lambda server, conn: _wait_for_close(conn)),
        "no answer to PostgreSQL's SSLRequest within 0.8 s"),
    "trickles its TLS handshake": (
        lambda pki: (lambda server, conn: (conn.recv(8), conn.sendall(b"S"), _tls_trickled_handshake(pki, conn))),
        "the TLS handshake timed out after 0.8 s"),
    "stalls after TLS": (
        lambda pki: _after_tls(pki, _wait_for_close, postgres=True),
        "PostgreSQL sent nothing within 0.8 s during the login"),
    "trickles its login messages": (
        lambda pki: _after_tls(pki, lambda tls: _trickle(tls, _endless(
            _pg(b"R", (0).to_bytes(4, "big")), _pg(b"S", b"application_name\0psql\0"))), postgres=True),
        "PostgreSQL was still sending the login when the 0.8 s deadline passed"),
    "announces a 2 GiB message": (
        lambda pki: _after_tls(pki, lambda tls: (tls.sendall(b"R" + (2 ** 31 - 1).to_bytes(4, "big")),
                                                 _wait_for_close(tls)), postgres=True),
        "announces a 2,147,483,647-byte login message"),
    "floods messages that never end the login": (
        lambda pki: _after_tls(pki, lambda tls: (tls.sendall(_pg(b"S", b"a\0b\0") * 400), _wait_for_close(tls)),
                               postgres=True),
        "more than 256 messages"),
    "asks for two billion SCRAM iterations": (
        lambda pki: _after_tls(pki, _scram_asking("2000000000"), postgres=True),
        "asks for 2,000,000,000 SCRAM iterations, more than the 1,000,000"),
    "asks for a 40-digit SCRAM iteration count": (
        lambda pki: _after_tls(pki, _scram_asking("9" * 40), postgres=True),
        "asks for a 40-digit number of SCRAM iterations"),
    "asks for SCRAM iterations in Arabic-Indic digits": (
        lambda pki: _after_tls(pki, _scram_asking("\u0664\u0660\u0669\u0666"), postgres=True),
        "SCRAM challenge is not ASCII text"),
}


@pytest.mark.parametrize("case", list(POSTGRES_CASES))
def test_a_hostile_postgres_ends_within_the_deadline_with_one_line(deployment, pki, servers, case):
    make, finding = POSTGRES_CASES[case]
    detail = _run_probe(deployment, "postgres", make(pki), servers)
    assert detail.startswith("PostgreSQL at localhost:") and finding in detail, detail


def test_scram_up_to_the_bound_is_computed_and_one_more_is_refused(monkeypatch):
    scram = doctor._Scram("pw")
    assert scram.iterations("4096") == 4096 and scram.iterations(str(doctor.SCRAM_MAX_ITERATIONS)) == 1_000_000
    for refused in (str(doctor.SCRAM_MAX_ITERATIONS + 1), "0", "", "-4096", "+4096", "4_096", " 4096", "\uff14"):
        with pytest.raises(_ProbeFailed):
            scram.iterations(refused)


# ----------------------------------------------------------------------------- doctor: Redis, ClickHouse, Kafka
REDIS_CASES = {
    "stalls after TLS": (lambda tls: _wait_for_close(tls), "Redis sent nothing within 0.8 s during the answer to AUTH"),
    "trickles its answer": (lambda tls: _trickle(tls, _endless(b"+", b"O", 8000)),
                            "Redis was still sending the answer to AUTH when the 0.8 s deadline passed"),
    "announces a 100 GB reply": (lambda tls: (tls.sendall(b"$99999999999\r\n"), _wait_for_close(tls)),
                                 "announces a 99,999,999,999-byte reply"),
    "sends a line without end": (lambda tls: (tls.sendall(b"+" + b"x" * 20000), _wait_for_close(tls)),
                                 "sent a line longer than 8192 bytes"),
    "gives a length in other digits": (lambda tls: (tls.sendall("$\u0661\u0660\r\n".encode()), _wait_for_close(tls)),
                                       "a reply length that is not a number"),
}


@pytest.mark.parametrize("case", list(REDIS_CASES))
def test_a_hostile_redis_ends_within_the_deadline_with_one_line(deployment, pki, servers, case):
    then, finding = REDIS_CASES[case]
    detail = _run_probe(deployment, "redis", _after_tls(pki, then), servers)
    assert detail.startswith("Redis at localhost:") and finding in detail, detail


CLICKHOUSE_CASES = {
    "stalls after TLS": (lambda tls: _wait_for_close(tls), "ClickHouse sent nothing within 0.8 s during the status line"),
    "trickles its headers": (lambda tls: _trickle(tls, _endless(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n")),
                             "ClickHouse was still sending the response headers when the 0.8 s deadline passed"),
    "sends endless headers": (lambda tls: (tls.sendall(_endless(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", 4000)),
                                           _wait_for_close(tls)), "more than 100 header lines"),
    "sends a 10 kB header line": (lambda tls: (tls.sendall(b"HTTP/1.1 200 OK\r\nX-A: " + b"b" * 10000),
                                               _wait_for_close(tls)), "a line longer than 8192 bytes"),
    "answers something else than HTTP": (lambda tls: (tls.sendall(b"SSH-2.0-OpenSSH_9.6\r\n"), _wait_for_close(tls)),
                                         "does not answer HTTP"),
}


@pytest.mark.parametrize("case", list(CLICKHOUSE_CASES))
def test_a_hostile_clickhouse_ends_within_the_deadline_with_one_line(deployment, pki, servers, case):
    then, finding = CLICKHOUSE_CASES[case]
    detail = _run_probe(deployment, "clickhouse", _after_tls(pki, then), servers)
    assert detail.startswith("ClickHouse at localhost:") and finding in detail, detail


def test_a_clickhouse_announcing_a_huge_body_is_read_only_as_far_as_the_version(deployment, pki, servers,
                                                                                monkeypatch):
    def then(tls):
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n22.8.11.15\n" + b"x" * 8000)
        _wait_for_close(tls)

    server = Server(_after_tls(pki, then))
    servers.append(server)
    monkeypatch.setattr(doctor, "CLICKHOUSE_NATIVE_TLS_PORT", server.port)
    started = time.monotonic()
    check = doctor.probe(deployment, VALUES, _endpoint("clickhouse", server.port), timeout=DEADLINE)
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert "ClickHouse 22.8.11.15 is inside" in check.detail, check.detail


@pytest.mark.parametrize("trickle", [False, True], ids=["stalls", "trickles its handshake"])
def test_a_kafka_broker_that_stalls_or_trickles_its_handshake(deployment, pki, servers, trickle):
    handler = (lambda server, conn: _tls_trickled_handshake(pki, conn)) if trickle else \
        (lambda server, conn: _wait_for_close(conn))
    detail = _run_probe(deployment, "kafka", handler, servers)
    assert "the TLS handshake timed out after 0.8 s" in detail, detail


# ----------------------------------------------------------------------------- the proxy, readiness, the URL check
def _proxy_values(deployment, port: int) -> dict[str, str]:
    return {"DOMAIN": "localhost", "PROXY_HTTPS_PORT": str(port), "PROXY_TLS": "private",
            "SITE_URL": "https://localhost"}


HTTP_CASES = {
    "stalls": (_wait_for_close, "sent nothing within 0.8 s during the status line"),
    "trickles": (lambda sock: _trickle(sock, _endless(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n")),
                 "was still sending the response headers when the 0.8 s deadline passed"),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_the_proxy_probe_ends_within_its_deadline(deployment, pki, servers, case):
    behave, finding = HTTP_CASES[case]
    (deployment / "certs").mkdir()  # the CA that signed the (stand-in) proxy's certificate
    (deployment / "certs" / "ca.crt").write_bytes((deployment / "datastore-ca" / "ca.crt").read_bytes())
    server = Server(_after_tls(pki, behave))
    servers.append(server)
    started = time.monotonic()
    with pytest.raises(wire.WireError) as caught:
        probes.request(_proxy_values(deployment, server.port), "/_readyz", deployment, timeout=DEADLINE)
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert str(caught.value).startswith("the proxy ") and finding in str(caught.value)


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_readiness_on_web_port_ends_within_its_deadline(servers, case):
    behave, finding = HTTP_CASES[case]
    server = _serve(lambda conn: (conn.recv(4096), behave(conn)))
    servers.append(server)
    started = time.monotonic()
    ready, answered, detail = stack.readiness({"WEB_PORT": str(server.port)}, timeout=DEADLINE)
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert (ready, answered) == (False, False) and f"web on port {server.port} {finding}" in detail, detail


def test_the_url_check_gives_up_at_its_timeout_on_a_trickling_web(servers):
    behave, finding = HTTP_CASES["trickles"]
    server = _serve(lambda conn: (conn.recv(4096), behave(conn)))
    servers.append(server)
    started = time.monotonic()
    ok, detail = stack.check_url({"WEB_PORT": str(server.port)}, timeout=1.5)
    assert time.monotonic() - started < 1.5 + 0.5 + 0.5 + MARGIN  # the last request's floor, one pause
    assert not ok and finding.split(" when")[0] in detail, detail


# ----------------------------------------------------------------------------- properties of the parsers
#: The parsers' deadline in the properties: half the examples are a server that stays silent after its bytes.
PROPERTY_DEADLINE = 0.04


def _converse(reply: bytes, close: bool, seconds: float):
    """A socket pair whose far end has sent ``reply`` (and then closed, or stays silent)."""
    near, far = socket.socketpair()
    far.sendall(reply)
    if close:
        far.shutdown(socket.SHUT_WR)
    return near, far, wire.Deadline(seconds)


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


CLIENT_NONCE = base64.b64encode(b"\0" * 18).decode()
SCRAM_COUNTS = st.sampled_from(["1", "4096", "100000", "1000001", "2000000000", "9" * 30, "", "0", "-1", "+4096",
                                "4_096", "\u0664\u0660\u0669\u0666", "\uff14\uff10", "4096.0", "0x1000"])
SASL_START = _message(b"R", (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0")
SCRAM_CHALLENGE = st.builds(lambda count, salt, extra: _message(b"R", (11).to_bytes(4, "big") +
                                                                f"r={CLIENT_NONCE}srv,s={salt},i={count}{extra}".encode()),
                            SCRAM_COUNTS, st.sampled_from(["c2FsdA==", "", "!!!", "c2FsdA"]),
                            st.sampled_from(["", ",m=x", ",,"]))
AUTH = st.one_of(
    st.builds(lambda code, body: _message(b"R", code.to_bytes(4, "big") + body),
              st.sampled_from([0, 3, 5, 7, 10, 11, 12, 2 ** 32 - 1]), st.binary(max_size=24)),
    st.just(SASL_START),
    SCRAM_CHALLENGE,
    st.builds(lambda body: _message(b"R", (12).to_bytes(4, "big") + body), st.binary(max_size=40)),
)
PG_MESSAGE = st.one_of(
    AUTH,
    st.builds(lambda name, value: _message(b"S", name + b"\0" + value + b"\0"),
              st.sampled_from([b"server_version", b"client_encoding", b""]), st.binary(max_size=30)),
    st.builds(lambda body: _message(b"E", body), st.binary(max_size=60)),
    st.builds(lambda body: _message(b"N", body), st.binary(max_size=30)),
    st.just(_message(b"Z", b"I")),
    st.builds(lambda kind, size: kind + size.to_bytes(4, "big"), st.sampled_from([b"R", b"S", b"D", b"\0"]),
              st.sampled_from([0, 3, 2 ** 31 - 1, 2 ** 32 - 1, 70000])),
    st.binary(max_size=16),
)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(PG_MESSAGE, max_size=8) | st.builds(lambda challenge, rest: [SASL_START, challenge, *rest],
                                                              SCRAM_CHALLENGE, st.lists(PG_MESSAGE, max_size=4)),
       close=st.booleans())
def test_the_postgres_login_parser_raises_only_its_own_error_within_its_deadline(messages, close):
    from unittest import mock

    near, far, deadline = _converse(b"".join(messages), close, PROPERTY_DEADLINE)
    started = time.monotonic()
    try:
        with mock.patch("secrets.token_bytes", lambda size: b"\0" * size):  # the client nonce the messages continue
                doctor._login(wire.Conversation(near, deadline, "PostgreSQL"), "posthog", "pw", "posthog")
    except (_ProbeFailed, wire.WireError) as exc:
        assert "\n" not in str(exc)
    finally:
        near.close()
        far.close()
    assert time.monotonic() - started < PROPERTY_DEADLINE + 0.6  # PBKDF2 of up to 100,000 iterations included


REDIS_REPLY = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda size: b"$%d\r\n" % size, st.integers(-5, 10 ** 15)),
    st.builds(lambda kind, text: kind + text + b"\r\n", st.sampled_from([b"+", b"-", b":", b"$", b"*", b"="]),
              st.binary(max_size=30)),
    st.builds(lambda body: b"$%d\r\n%s\r\n" % (len(body), body), st.binary(max_size=60)),
    st.just("$\u0661\u0660\r\n".encode()),
)


@settings(max_examples=300, deadline=None)
@given(replies=st.lists(REDIS_REPLY, max_size=4), close=st.booleans())
def test_the_redis_reply_parser_raises_only_its_own_error_within_its_deadline(replies, close):
    near, far, deadline = _converse(b"".join(replies), close, PROPERTY_DEADLINE)
    started = time.monotonic()
    try:
        doctor._ask_version(wire.Conversation(near, deadline, "Redis"), "", "pw")
    except (_ProbeFailed, wire.WireError) as exc:
        assert "\n" not in str(exc)
    finally:
        near.close()
        far.close()
    assert time.monotonic() - started < PROPERTY_DEADLINE + 0.5


HTTP_LINE = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 516 x\r\n", b"HTTP/1.1 2000\r\n", b"HTTP/1.1 \xd9\xa2\xd9\xa0\xd9\xa0\r\n",
                     b"Content-Length: 5\r\n", b"Content-Length: 99999999999999999999999\r\n",
                     b"Content-Length: \xef\xbc\x95\r\n", b"Transfer-Encoding: chunked\r\n", b"\r\n", b"5\r\nhello\r\n",
                     b"fffffffffffffff\r\n", b"0\r\n\r\n", b"zz\r\n", b"X-A: b\r\n" * 120]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(HTTP_LINE, max_size=10), close=st.booleans())
def test_the_http_response_parser_raises_only_its_own_error_within_its_deadline(lines, close):
    near, far, deadline = _converse(b"".join(lines), close, PROPERTY_DEADLINE)
    started = time.monotonic()
    try:
        response = wire.http_exchange(wire.Conversation(near, deadline, "ClickHouse"), "POST", "/",
                                      {"Host": "h"}, body=b"SELECT version()", max_body=4096)
        assert 0 <= response.status <= 999 and len(response.body) <= 4096
    except wire.WireError as exc:
        assert "\n" not in str(exc)
    finally:
        near.close()
        far.close()
    assert time.monotonic() - started < PROPERTY_DEADLINE + 0.5


@pytest.mark.parametrize("header", ["X-ClickHouse-Key", "X-ClickHouse-User"])
def test_a_line_break_in_a_clickhouse_credential_is_one_line_not_a_second_header(deployment, pki, servers, header,
                                                                                monkeypatch):
    values = {**VALUES, "CLICKHOUSE_PASSWORD" if header.endswith("Key") else "CLICKHOUSE_USER": "x\r\nX-Evil: 1"}
    detail = _run_probe(deployment, "clickhouse", _after_tls(pki, _wait_for_close), servers, values=values)
    assert "holds a line break" in detail

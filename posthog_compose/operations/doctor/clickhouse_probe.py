"""ClickHouse's version, read from its HTTPS interface with the verified TLS context, within the
check's deadline and with the response bounded (wire.http_exchange).
"""

from __future__ import annotations

from posthog_compose.operations import wire
from posthog_compose.operations.doctor.network import _ProbeFailed, _connect
from posthog_compose.operations.wire import Conversation, Deadline


#: ClickHouse's HTTPS interface (what PostHog's HTTP client uses with CLICKHOUSE_SECURE): the version is asked
#: there; datastores.clickhouse_endpoint names it, this is the fallback.
CLICKHOUSE_HTTPS_PORT = 8443
#: The most of the answer read: a version is a line of a few characters, an error a few hundred.
MAX_ANSWER = 4096


def _clickhouse_version(host: str, port: int, context, values: dict[str, str], deadline: Deadline) -> str:
    """`SELECT version()` over ClickHouse's HTTPS interface, with the user and password as headers."""
    import socket
    import ssl

    user = values.get("CLICKHOUSE_USER", "default") or "default"
    password = values.get("CLICKHOUSE_PASSWORD", "")
    if any(c in user + password for c in "\r\n\0"):
        raise _ProbeFailed("CLICKHOUSE_USER or CLICKHOUSE_PASSWORD holds a line break, which an HTTP header "
                           "cannot carry")
    headers = {"Host": f"{host}:{port}", "X-ClickHouse-User": user, "X-ClickHouse-Key": password}
    sock = _connect(host, port, deadline)
    try:
        try:
            sock = wire.tls(context, sock, host, deadline)
        except ssl.SSLCertVerificationError as exc:
            raise _ProbeFailed(f"HTTPS port {port}: the certificate does not verify "
                               f"({exc.verify_message or exc.reason})", certificate=True)
        except socket.timeout:
            raise _ProbeFailed(f"HTTPS port {port}: the TLS handshake did not finish within {deadline.text()}")
        except (ssl.SSLError, OSError) as exc:
            raise _ProbeFailed(f"HTTPS port {port} (where the version is asked) fails "
                               f"({getattr(exc, 'reason', None) or getattr(exc, 'strerror', None) or type(exc).__name__})")
        response = wire.http_exchange(Conversation(sock, deadline, "ClickHouse"), "POST", "/", headers,
                                      body=b"SELECT version()", max_body=MAX_ANSWER)
    except wire.WireError as exc:
        raise _ProbeFailed(f"HTTPS port {port} (where the version is asked): {exc}") from None
    finally:
        sock.close()
    body = response.body.decode(errors="replace")
    if response.status in (401, 403) or "Authentication failed" in body:
        raise _ProbeFailed(f"HTTPS port {port} refuses CLICKHOUSE_USER and CLICKHOUSE_PASSWORD")
    if response.status != 200:
        raise _ProbeFailed(f"HTTPS port {port} answers {response.status} to SELECT version()")
    lines = body.strip().splitlines()
    version = "".join(c for c in lines[0] if c.isprintable())[:40] if lines else ""
    return version or "?"

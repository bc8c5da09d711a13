"""Reaching an external datastore from this host: DNS, TCP, and the TLS context and handshake
verified against the CA bundle under datastore-ca/ and the host name (or plaintext, when allowed),
all under the one deadline of the datastore's check (wire.py).
"""

from __future__ import annotations

import socket
from pathlib import Path

from posthog_compose.operations import wire
from posthog_compose.operations.wire import Deadline


# ----------------------------------------------------------------------------- external datastores
#: Seconds one datastore's whole check may take: DNS, TCP, the TLS handshake and the login with its version
#: question, together (wire.Deadline). A managed server across a continent needs a second or two; a server that
#: stalls or trickles its answers is reported when this has passed, however it spreads its bytes.
PROBE_TIMEOUT = 10.0


class _ProbeFailed(Exception):
    """One step failed: its message is the doctor line's detail (never a secret). ``certificate``: the
    failure is the certificate's verification (the connection itself works)."""

    def __init__(self, message: str, certificate: bool = False):
        super().__init__(message)
        self.certificate = certificate


def _plaintext_allowed(values: dict[str, str]) -> bool:
    return values.get("ALLOW_PLAINTEXT_DATASTORES", "").strip().lower() == "true"


def _resolve(host: str, port: int, deadline: Deadline) -> list:
    """The addresses of ``host`` (getaddrinfo's answers), within the deadline."""
    try:
        return wire.resolve(host, port, deadline)
    except wire.WireError as exc:
        raise _ProbeFailed(str(exc)) from None


def _connect(host: str, port: int, deadline: Deadline, infos: list | None = None) -> socket.socket:
    try:
        return wire.connect(host, port, deadline, infos)
    except wire.WireError as exc:
        raise _ProbeFailed(str(exc)) from None


def _context(root: Path, values: dict[str, str], endpoint):
    """The TLS context PostHog's settings ask for, and how its trust anchor is named in the line."""
    import ssl

    context = ssl.create_default_context()
    ca_text = "the system's CAs"
    path = endpoint.ca_host_path(root) if endpoint.ca_path else None
    if path is not None:
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        if not path.is_file():
            raise _ProbeFailed(f"the CA bundle {shown} (for {endpoint.ca_path}) is missing; put the provider's CA "
                               "certificate there")
        context = ssl.create_default_context(cafile=str(path)) if _readable_pem(path) else None
        if context is None:
            raise _ProbeFailed(f"the CA bundle {shown} holds no PEM certificate")
        ca_text = str(shown)
    elif endpoint.ca_path:
        # A file of the image (e.g. its public CA bundle): this host checks with its own public CAs.
        ca_text = f"this host's public CAs ({endpoint.ca_path} is not under datastore-ca/)"
    elif endpoint.datastore == "kafka" and values.get("KAFKA_BASE64_KEYS") == "true" and \
            values.get("KAFKA_TRUSTED_CERT_B64"):
        import base64
        import binascii

        try:
            context = ssl.create_default_context(cadata=base64.b64decode(values["KAFKA_TRUSTED_CERT_B64"]).decode())
        except (binascii.Error, ValueError, ssl.SSLError):
            raise _ProbeFailed("KAFKA_TRUSTED_CERT_B64 is not a base64 PEM certificate")
        context.check_hostname = False  # as PostHog does with KAFKA_TRUSTED_CERT_B64
        ca_text = "KAFKA_TRUSTED_CERT_B64 (host name not checked, as PostHog does)"
    if not _verifies(endpoint):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif endpoint.datastore == "postgres" and "sslmode=verify-ca" in values.get("DATABASE_URL", ""):
        context.check_hostname = False  # libpq's verify-ca checks the chain, not the host name
        ca_text += " (host name not checked: sslmode=verify-ca)"
    return context, ca_text


def _verifies(endpoint) -> bool:
    """Whether this host verifies the certificate: as PostHog does, and always for ClickHouse over TLS
    (PostHog 1.43 does not verify it; the check from here says whether it could be verified)."""
    return bool(endpoint.verify or (endpoint.datastore == "clickhouse" and endpoint.tls))


def _readable_pem(path: Path) -> bool:
    try:
        return b"-----BEGIN CERTIFICATE-----" in path.read_bytes()
    except OSError:
        return False


def _handshake(context, sock: socket.socket, host: str, ca_text: str, deadline: Deadline):
    import ssl

    try:
        return wire.tls(context, sock, host, deadline)
    except ssl.SSLCertVerificationError as exc:
        raise _ProbeFailed(f"the certificate does not verify against {ca_text} for the host {host} "
                           f"({exc.verify_message or exc.reason})", certificate=True)
    except socket.timeout:
        raise _ProbeFailed(f"the TLS handshake timed out after {deadline.text()}: the server stalls or "
                           "answers too slowly")
    except wire.WireError as exc:
        raise _ProbeFailed(str(exc))
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise _ProbeFailed(f"the TLS handshake fails ({reason}): does the port serve TLS?")

"""Reaching an external datastore from this host: DNS, TCP, and the TLS context and handshake
verified against the CA bundle under datastore-ca/ and the host name (or plaintext, when allowed).
"""

from __future__ import annotations

import socket
from pathlib import Path


# ----------------------------------------------------------------------------- external datastores
#: Seconds each network step (resolve, connect, handshake, one question) may take.
PROBE_TIMEOUT = 4.0


class _ProbeFailed(Exception):
    """One step failed: its message is the doctor line's detail (never a secret). ``certificate``: the
    failure is the certificate's verification (the connection itself works)."""

    def __init__(self, message: str, certificate: bool = False):
        super().__init__(message)
        self.certificate = certificate


def _plaintext_allowed(values: dict[str, str]) -> bool:
    return values.get("ALLOW_PLAINTEXT_DATASTORES", "").strip().lower() == "true"


def _resolve(host: str, port: int, timeout: float) -> str:
    """The first address of ``host`` (in a thread: getaddrinfo knows no timeout)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise _ProbeFailed(f"{host} does not resolve within {timeout:.0f} s (DNS)")
    except (socket.gaierror, UnicodeError) as exc:
        raise _ProbeFailed(f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})")
    finally:
        pool.shutdown(wait=False)
    return infos[0][4][0]


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise _ProbeFailed(f"TCP to port {port} timed out after {timeout:.0f} s (a firewall or a wrong port)")
    except OSError as exc:
        raise _ProbeFailed(f"TCP to port {port} fails ({exc.strerror or exc})")


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


def _handshake(context, sock: socket.socket, host: str, ca_text: str, timeout: float):
    import ssl

    sock.settimeout(timeout)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise _ProbeFailed(f"the certificate does not verify against {ca_text} for the host {host} "
                           f"({exc.verify_message or exc.reason})", certificate=True)
    except socket.timeout:
        raise _ProbeFailed(f"the TLS handshake timed out after {timeout:.0f} s")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise _ProbeFailed(f"the TLS handshake fails ({reason}): does the port serve TLS?")

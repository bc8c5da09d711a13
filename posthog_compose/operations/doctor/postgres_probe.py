"""PostgreSQL's version, read over the verified TLS connection: the SSLRequest, the protocol's
messages, and SCRAM-SHA-256 authentication. No secret is printed.
"""

from __future__ import annotations

import socket

from posthog_compose.operations.doctor.network import _ProbeFailed


#: PostgreSQL's SSLRequest: length 8, then the code 1234.5679 (the protocol's "SSL negotiation" number).
PG_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def _postgres_ssl_request(sock: socket.socket, timeout: float) -> None:
    """PostgreSQL speaks plain first: ask for TLS, and expect 'S'."""
    sock.settimeout(timeout)
    try:
        sock.sendall(PG_SSL_REQUEST)
        answer = sock.recv(1)
    except socket.timeout:
        raise _ProbeFailed(f"no answer to PostgreSQL's SSLRequest within {timeout:.0f} s: is this PostgreSQL?")
    except OSError as exc:
        raise _ProbeFailed(f"the SSLRequest failed ({exc.strerror or exc})")
    if answer == b"N":
        raise _ProbeFailed("the server answers the SSLRequest with N: it does not offer TLS")
    if answer != b"S":
        raise _ProbeFailed("the server does not answer the SSLRequest as PostgreSQL does: is this PostgreSQL?")


def _pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


def _pg_read(reader) -> tuple[bytes, bytes]:
    """One backend message: (type, payload)."""
    head = reader.read(5)
    if len(head) < 5:
        raise _ProbeFailed("PostgreSQL closed the connection during the login")
    size = int.from_bytes(head[1:5], "big") - 4
    if size < 0 or size > 1024 * 1024:
        raise _ProbeFailed("the server's answer is not PostgreSQL's")
    payload = reader.read(size)
    if len(payload) < size:
        raise _ProbeFailed("PostgreSQL closed the connection during the login")
    return head[:1], payload


def _pg_error(payload: bytes) -> str:
    """SQLSTATE and PostgreSQL's message (it names the user or database, never a password)."""
    fields = {part[:1]: part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
    code = fields.get(b"C", "?")
    if code in ("28P01", "28000"):
        return f"PostgreSQL refuses the login ({code}): check the user and password in DATABASE_URL"
    return f"PostgreSQL answers {code}: {fields.get(b'M', '')[:120]}"


def _postgres_version(tls, values: dict[str, str], timeout: float) -> str | None:
    """Log in as DATABASE_URL says (SCRAM-SHA-256, md5 or a password over TLS) and read the
    server_version PostgreSQL reports at startup; nothing is queried."""
    from urllib.parse import unquote

    from posthog_compose.configuration.formats import urlsplit

    url = urlsplit(values.get("DATABASE_URL", ""))
    user, password = unquote(url.username or ""), unquote(url.password or "")
    database = unquote((url.path or "/").lstrip("/")) or user
    startup = (196608).to_bytes(4, "big") + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    reader = tls.makefile("rb")
    try:
        tls.sendall((len(startup) + 4).to_bytes(4, "big") + startup)
        scram = None
        version = None
        while True:
            kind, payload = _pg_read(reader)
            if kind == b"E":
                raise _ProbeFailed(_pg_error(payload))
            if kind == b"R":
                code = int.from_bytes(payload[:4], "big")
                if code == 0:
                    continue
                if code == 3:  # a password in clear: inside TLS only, which this is
                    tls.sendall(_pg_message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    import hashlib

                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    tls.sendall(_pg_message(b"p", b"md5" + hashlib.md5(inner + payload[4:8]).hexdigest().encode()
                                            + b"\0"))
                elif code == 10:
                    if b"SCRAM-SHA-256\0" not in payload[4:]:
                        raise _ProbeFailed("PostgreSQL asks for a SASL mechanism this check does not speak")
                    scram = _Scram(password)
                    first = scram.client_first()
                    tls.sendall(_pg_message(b"p", b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first))
                elif code == 11 and scram is not None:
                    tls.sendall(_pg_message(b"p", scram.client_final(payload[4:])))
                elif code == 12 and scram is not None:
                    scram.verify_server(payload[4:])
                else:
                    raise _ProbeFailed(f"PostgreSQL asks for an authentication this check does not speak ({code})")
            elif kind == b"S":
                name, _, rest = payload.partition(b"\0")
                if name == b"server_version":
                    version = rest.split(b"\0", 1)[0].decode(errors="replace").split()[0][:40]
            elif kind == b"Z":
                tls.sendall(_pg_message(b"X", b""))
                return version
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise _ProbeFailed(f"the PostgreSQL login failed ({getattr(exc, 'strerror', None) or type(exc).__name__})")
    finally:
        reader.close()


class _Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: the user name travels in
    the startup message, so the SCRAM user name is empty; no channel binding."""

    def __init__(self, password: str):
        import base64
        import secrets as random

        self.password = password
        self.nonce = base64.b64encode(random.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def client_final(self, server_first: bytes) -> bytes:
        import base64
        import hashlib
        import hmac

        text = server_first.decode()
        fields = dict(item.split("=", 1) for item in text.split(","))
        if not fields.get("r", "").startswith(self.nonce):
            raise _ProbeFailed("PostgreSQL's SCRAM answer does not continue this login")
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        import base64
        import hmac

        text = server_final.decode(errors="replace")
        if not text.startswith("v=") or not hmac.compare_digest(base64.b64decode(text[2:]), self.server_signature):
            raise _ProbeFailed("PostgreSQL's SCRAM signature does not match: this is not the server DATABASE_URL "
                               "trusts")

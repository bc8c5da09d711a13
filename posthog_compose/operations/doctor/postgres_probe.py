"""PostgreSQL's version, read over the verified TLS connection: the SSLRequest, the protocol's
messages, and SCRAM-SHA-256 authentication, all within the check's deadline and with every message
bounded (its length, how many come, and the work SCRAM asks for). No secret is printed.
"""

from __future__ import annotations

import socket

from posthog_compose.operations.doctor.network import _ProbeFailed
from posthog_compose.operations.wire import Conversation, Deadline


#: PostgreSQL's SSLRequest: length 8, then the code 1234.5679 (the protocol's "SSL negotiation" number).
PG_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
#: The longest message the login reads. libpq refuses most message types above 30,000 bytes; an error or notice
#: is a few hundred. A length field beyond this is not PostgreSQL speaking.
MAX_LOGIN_MESSAGE = 64 * 1024
#: How many messages the login reads before ReadyForQuery: a PostgreSQL sends about twenty (authentication,
#: ParameterStatus, BackendKeyData).
MAX_LOGIN_MESSAGES = 256
#: The most SCRAM iterations this check computes. PostgreSQL's default is 4,096 (the `scram_iterations` setting
#: since 16, which allows up to 2^31-1); hardened servers use up to 100,000 or so. Ten times that costs about a
#: quarter of a second of PBKDF2 here; a server asking for more (two billion is minutes of CPU) is refused
#: instead of keeping doctor busy.
SCRAM_MAX_ITERATIONS = 1_000_000
#: The message types a server sends during a login (Authentication, ParameterStatus, BackendKeyData,
#: ReadyForQuery, ErrorResponse, NoticeResponse, NegotiateProtocolVersion).
LOGIN_MESSAGE_TYPES = frozenset(b"RSKZENv")
NOT_POSTGRES = "the server's answer is not PostgreSQL's"


def _postgres_ssl_request(sock: socket.socket, deadline: Deadline) -> None:
    """PostgreSQL speaks plain first: ask for TLS, and expect 'S' (one byte only: anything the server
    sends before the handshake must not be read as part of it)."""
    try:
        sock.settimeout(max(deadline.remaining(), 0.001))
        sock.sendall(PG_SSL_REQUEST)
        answer = sock.recv(1)
    except socket.timeout:
        raise _ProbeFailed(f"no answer to PostgreSQL's SSLRequest within {deadline.text()}: is this PostgreSQL?")
    except OSError as exc:
        raise _ProbeFailed(f"the SSLRequest failed ({exc.strerror or exc})")
    if answer == b"N":
        raise _ProbeFailed("the server answers the SSLRequest with N: it does not offer TLS")
    if answer != b"S":
        raise _ProbeFailed("the server does not answer the SSLRequest as PostgreSQL does: is this PostgreSQL?")


def _pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


def _pg_read(conversation: Conversation) -> tuple[bytes, bytes]:
    """One backend message of the login: (type, payload), its length bounded."""
    head = conversation.read_exact(5, "the login")
    if head[0] not in LOGIN_MESSAGE_TYPES:
        raise _ProbeFailed(f"{NOT_POSTGRES} (a message of a type no login has)")
    size = int.from_bytes(head[1:5], "big") - 4
    if size < 0:
        raise _ProbeFailed(f"{NOT_POSTGRES} (a message length below 4)")
    if size > MAX_LOGIN_MESSAGE:
        raise _ProbeFailed(f"the server announces a {size + 4:,}-byte login message, more than the {MAX_LOGIN_MESSAGE:,} "
                           f"a login needs: {NOT_POSTGRES}")
    return head[:1], conversation.read_exact(size, "the login")


def _text(data: bytes, limit: int) -> str:
    """Server text for a doctor line: printable characters only, cut at ``limit``."""
    return "".join(c if c.isprintable() else "?" for c in data.decode(errors="replace"))[:limit]


def _pg_error(payload: bytes) -> str:
    """SQLSTATE and PostgreSQL's message (it names the user or database, never a password)."""
    fields = {part[:1]: part[1:] for part in payload.split(b"\0") if part}
    code = _text(fields.get(b"C", b"?"), 5)
    if code in ("28P01", "28000"):
        return f"PostgreSQL refuses the login ({code}): check the user and password in DATABASE_URL"
    return f"PostgreSQL answers {code}: {_text(fields.get(b'M', b''), 120)}"


def _postgres_version(tls, values: dict[str, str], deadline: Deadline) -> str | None:
    """Log in as DATABASE_URL says (SCRAM-SHA-256, md5 or a password over TLS) and read the
    server_version PostgreSQL reports at startup; nothing is queried."""
    from posthog_compose.configuration import datastores

    url = datastores.postgres_url(values)
    if url is None:
        raise _ProbeFailed("DATABASE_URL cannot be read (`invoke config-check` says why)")
    return _login(Conversation(tls, deadline, "PostgreSQL"), url.user, url.password, url.database)


def _login(conversation: Conversation, user: str, password: str, database: str) -> str | None:
    startup = (196608).to_bytes(4, "big") + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    conversation.send((len(startup) + 4).to_bytes(4, "big") + startup, "the login")
    scram = None
    version = None
    for _ in range(MAX_LOGIN_MESSAGES):
        kind, payload = _pg_read(conversation)
        if kind == b"E":
            raise _ProbeFailed(_pg_error(payload))
        if kind == b"R":
            if len(payload) < 4:
                raise _ProbeFailed(f"{NOT_POSTGRES} (an authentication message without its code)")
            code = int.from_bytes(payload[:4], "big")
            if code == 0:
                continue
            if code == 3:  # a password in clear: inside TLS only, which this is
                conversation.send(_pg_message(b"p", password.encode() + b"\0"), "the login")
            elif code == 5 and len(payload) == 8:
                import hashlib

                inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                conversation.send(_pg_message(b"p", b"md5" + hashlib.md5(inner + payload[4:8]).hexdigest().encode()
                                              + b"\0"), "the login")
            elif code == 10:
                if b"SCRAM-SHA-256" not in payload[4:].split(b"\0"):
                    raise _ProbeFailed("PostgreSQL asks for a SASL mechanism this check does not speak")
                scram = _Scram(password)
                first = scram.client_first()
                conversation.send(_pg_message(b"p", b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first),
                                  "the login")
            elif code == 11 and scram is not None:
                conversation.send(_pg_message(b"p", scram.client_final(payload[4:])), "the login")
            elif code == 12 and scram is not None:
                scram.verify_server(payload[4:])
            else:
                raise _ProbeFailed(f"PostgreSQL asks for an authentication this check does not speak ({code})")
        elif kind == b"S":
            name, _, rest = payload.partition(b"\0")
            if name == b"server_version":
                words = _text(rest.split(b"\0", 1)[0], 80).split()
                version = words[0][:40] if words else None
        elif kind == b"Z":
            conversation.send(_pg_message(b"X", b""), "the end of the login")
            return version
    raise _ProbeFailed(f"PostgreSQL sent more than {MAX_LOGIN_MESSAGES} messages without finishing the login: "
                       f"{NOT_POSTGRES}")


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

    @staticmethod
    def _fields(message: bytes, what: str) -> dict[str, str]:
        try:
            text = message.decode("ascii")
        except UnicodeDecodeError:
            raise _ProbeFailed(f"PostgreSQL's SCRAM {what} is not ASCII text: {NOT_POSTGRES}") from None
        fields: dict[str, str] = {}
        for item in text.split(","):
            key, eq, value = item.partition("=")
            if not eq or len(key) != 1:
                raise _ProbeFailed(f"PostgreSQL's SCRAM {what} is malformed: {NOT_POSTGRES}")
            fields.setdefault(key, value)
        return fields

    def iterations(self, text: str) -> int:
        """The iteration count the server asks for, refused when it is no count or absurd work."""
        from posthog_compose.configuration.validators import whole_number

        count = whole_number(text)
        too_long = count is None and text.isascii() and text.isdigit()  # more digits than any number read
        if not too_long and (count is None or count < 1):
            raise _ProbeFailed(f"PostgreSQL's SCRAM answer has no valid iteration count: {NOT_POSTGRES}")
        if count is not None and count <= SCRAM_MAX_ITERATIONS:
            return count
        shown = f"{count:,}" if count is not None else f"a {len(text.lstrip('0'))}-digit number of"
        raise _ProbeFailed(f"PostgreSQL asks for {shown} SCRAM iterations, more than the {SCRAM_MAX_ITERATIONS:,} "
                           "this check computes (PostgreSQL's default is 4,096): refused as absurd work")

    def client_final(self, server_first: bytes) -> bytes:
        import base64
        import binascii
        import hashlib
        import hmac

        fields = self._fields(server_first, "challenge")
        if "m" in fields:
            raise _ProbeFailed("PostgreSQL's SCRAM challenge asks for an extension this check does not speak")
        if not fields.get("r", "").startswith(self.nonce) or len(fields["r"]) == len(self.nonce):
            raise _ProbeFailed("PostgreSQL's SCRAM answer does not continue this login")
        iterations = self.iterations(fields.get("i", ""))
        try:
            salt = base64.b64decode(fields.get("s", ""), validate=True)
        except (binascii.Error, ValueError):
            salt = b""
        if not salt:
            raise _ProbeFailed(f"PostgreSQL's SCRAM challenge has no valid salt: {NOT_POSTGRES}")
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{self.first_bare},{server_first.decode('ascii')},{without_proof}".encode()
        signature = hmac.new(stored_key, message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        import base64
        import binascii
        import hmac

        fields = self._fields(server_final, "signature")
        if "e" in fields:
            raise _ProbeFailed(f"PostgreSQL ends SCRAM with the error {_text(fields['e'].encode(), 40)!r}")
        try:
            signature = base64.b64decode(fields.get("v", ""), validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if not self.server_signature or not hmac.compare_digest(signature, self.server_signature):
            raise _ProbeFailed("PostgreSQL's SCRAM signature does not match: this is not the server DATABASE_URL "
                               "trusts")

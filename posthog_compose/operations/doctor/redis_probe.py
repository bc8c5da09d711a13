"""Redis's version, read over the verified TLS connection (AUTH with REDIS_URL's credentials,
then INFO server), within the check's deadline and with every reply bounded.
"""

from __future__ import annotations

from posthog_compose.operations.doctor.network import _ProbeFailed
from posthog_compose.operations.wire import Conversation, Deadline

#: The longest status, error or length line read (Redis' own are under a hundred bytes).
MAX_REDIS_LINE = 8192
#: The largest reply read: INFO server is a few kB.
MAX_REDIS_BULK = 1024 * 1024
NOT_REDIS = "the server's answer is not Redis'"


def _redis_command(conversation: Conversation, *words: str) -> bytes:
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        data = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    conversation.send(payload, f"the {words[0]} command")
    return payload


def _redis_reply(conversation: Conversation, doing: str) -> bytes:
    """One RESP reply: a status (+), an integer (:) or a bulk string ($); an error (-) is raised."""
    from posthog_compose.configuration.validators import whole_number

    line = conversation.read_line(MAX_REDIS_LINE, doing).rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"-":
        code = "".join(c if c.isprintable() else "?" for c in rest.split(b" ", 1)[0].decode(errors="replace"))[:40]
        raise _ProbeFailed(f"Redis answers {code}" + (": the password in REDIS_URL is refused"
                                                        if code in ("WRONGPASS", "NOAUTH") else ""))
    if kind in (b"+", b":"):
        return rest
    if kind != b"$":
        raise _ProbeFailed(f"{NOT_REDIS} (RESP)")
    if rest == b"-1":
        return b""
    size = whole_number(rest.decode("latin-1"))
    if size is None:
        raise _ProbeFailed(f"{NOT_REDIS} (a reply length that is not a number)")
    if size > MAX_REDIS_BULK:
        raise _ProbeFailed(f"the server announces a {size:,}-byte reply, more than the {MAX_REDIS_BULK:,} INFO ever "
                           f"needs: {NOT_REDIS}")
    data = conversation.read_exact(size + 2, doing)
    if data[size:] != b"\r\n":
        raise _ProbeFailed(f"{NOT_REDIS} (a reply longer than it announced)")
    return data[:size]


def _redis_version(tls, values: dict[str, str], deadline: Deadline) -> str | None:
    """AUTH with REDIS_URL's credentials, then INFO server's redis_version."""
    from posthog_compose.configuration import datastores

    url = datastores.redis_url(values)
    if url is None:
        raise _ProbeFailed("REDIS_URL cannot be read (`invoke config-check` says why)")
    return _ask_version(Conversation(tls, deadline, "Redis"), url.user, url.password)


def _ask_version(conversation: Conversation, user: str, password: str) -> str | None:
    if password:
        _redis_command(conversation, "AUTH", *([user] if user else []), password)
        _redis_reply(conversation, "the answer to AUTH")
    _redis_command(conversation, "INFO", "server")
    info = _redis_reply(conversation, "the answer to INFO").decode(errors="replace")
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            version = "".join(c for c in line.split(":", 1)[1].strip() if c.isprintable())[:40]
            return version or None
    return None

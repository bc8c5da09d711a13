"""Redis's version, read over the verified TLS connection (AUTH with REDIS_URL's credentials,
then INFO server).
"""

from __future__ import annotations

from posthog_compose.operations.doctor.network import _ProbeFailed


def _redis_command(sock, *words: str) -> bytes:
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        data = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(payload)
    return payload


def _redis_reply(reader) -> bytes:
    line = reader.readline(65536)
    if not line:
        raise _ProbeFailed("Redis closed the connection")
    if line.startswith(b"-"):
        code = line[1:].split(b" ", 1)[0].decode(errors="replace")[:40]
        raise _ProbeFailed(f"Redis answers {code}" + (": the password in REDIS_URL is refused"
                                                        if code in ("WRONGPASS", "NOAUTH") else ""))
    if line.startswith(b"$"):
        size = int(line[1:].strip())
        if size > 1024 * 1024:  # INFO server is a few kB: anything larger is not Redis
            raise _ProbeFailed("the server's answer is not Redis' (an implausibly large reply)")
        return reader.read(size + 2)[:size] if size >= 0 else b""
    return line.rstrip(b"\r\n")


def _redis_version(tls, values: dict[str, str], timeout: float) -> str | None:
    """AUTH with REDIS_URL's credentials, then INFO server's redis_version."""
    from urllib.parse import unquote, urlsplit

    url = urlsplit(values.get("REDIS_URL", ""))
    password = unquote(url.password or "")
    user = unquote(url.username or "")
    reader = tls.makefile("rb")
    try:
        if password:
            _redis_command(tls, "AUTH", *([user] if user else []), password)
            _redis_reply(reader)
        _redis_command(tls, "INFO", "server")
        info = _redis_reply(reader).decode(errors="replace")
    except (OSError, ValueError) as exc:
        raise _ProbeFailed(f"Redis does not answer INFO ({getattr(exc, 'strerror', None) or type(exc).__name__})")
    finally:
        reader.close()
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return None

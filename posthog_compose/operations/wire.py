"""Talking to a server with a deadline and bounded replies: the one way the kit's own probes read from
the network (doctor's datastore checks, `up`'s readiness and URL checks, directly or through the proxy).

A timeout on each read does not bound a conversation: a server that sends one byte a second keeps
every read short and the whole exchange alive for ever. Here a conversation has ONE deadline, each
read waits only for what is left of it, and every reply is bounded (a line's length, a message's
size, the number of lines), so a slow or hostile server costs at most the deadline and a few
kilobytes, and ends in one line saying what it did (``WireError``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

#: The most a conversation reads in all: every reply the probes wait for is a few kilobytes (each reader
#: bounds its own replies more tightly; this is the backstop).
MAX_TOTAL = 2 * 1024 * 1024
#: An HTTP status or header line, and how many header lines a response may have (http.client's own limits
#: are 65536 and 100; 8 KiB is what common servers accept for a request line).
MAX_HTTP_LINE = 8192
MAX_HTTP_HEADERS = 100


class WireError(OSError):
    """What the server did, as one line (never a secret): the probe's finding. An OSError, so that the
    callers that handle a refused connection handle this too."""


class Deadline:
    """One deadline for a whole conversation (connect, TLS handshake, every question and answer)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def text(self) -> str:
        return f"{round(self.seconds, 1):g} s"


class Conversation:
    """A connected socket (plain or TLS) read under a Deadline, with a buffer and the bounds above.

    ``peer`` names the server in the lines ("PostgreSQL", "the proxy"); ``doing`` in each call names the
    step ("the login", "the answer to INFO")."""

    def __init__(self, sock, deadline: Deadline, peer: str = "the server", max_total: int = MAX_TOTAL):
        self.sock, self.deadline, self.peer, self.max_total = sock, deadline, peer, max_total
        self.buffer = bytearray()
        self.received = 0

    # -- the deadline
    def _wait(self, doing: str) -> None:
        """Let the next socket call wait at most what is left of the deadline."""
        left = self.deadline.remaining()
        if left <= 0:
            raise self._too_slow(doing)
        self.sock.settimeout(left)

    def _too_slow(self, doing: str) -> WireError:
        if self.received == 0:
            return WireError(f"{self.peer} sent nothing within {self.deadline.text()} during {doing}: it accepts the "
                             "connection but does not answer")
        return WireError(f"{self.peer} was still sending {doing} when the {self.deadline.text()} deadline passed "
                         f"({self.received} bytes so far): it answers too slowly")

    # -- sending
    def send(self, data: bytes, doing: str) -> None:
        self._wait(doing)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise WireError(f"{self.peer} does not take the request ({doing}) within {self.deadline.text()}") from None
        except OSError as exc:
            raise WireError(f"{self.peer} closed the connection during {doing} "
                            f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None

    # -- reading
    def _fill(self, doing: str) -> bool:
        """Read what the server sends next into the buffer; False at the end of the stream."""
        self._wait(doing)
        try:
            chunk = self.sock.recv(16384)
        except socket.timeout:
            raise self._too_slow(doing) from None
        except OSError as exc:
            raise WireError(f"{self.peer} broke the connection during {doing} "
                            f"({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or type(exc).__name__})"
                            ) from None
        if not chunk:
            return False
        self.received += len(chunk)
        if self.received > self.max_total:
            raise WireError(f"{self.peer} sent more than {self.max_total:,} bytes during {doing}, far more than the "
                            "answer needs")
        self.buffer += chunk
        return True

    def _closed(self, doing: str) -> WireError:
        return WireError(f"{self.peer} closed the connection during {doing}")

    def read_exact(self, size: int, doing: str) -> bytes:
        while len(self.buffer) < size:
            if not self._fill(doing):
                raise self._closed(doing)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_line(self, limit: int, doing: str) -> bytes:
        """One line, its end (\\n) included; a longer line than ``limit`` is refused."""
        while True:
            end = self.buffer.find(b"\n", 0, limit)
            if end >= 0:
                line = bytes(self.buffer[:end + 1])
                del self.buffer[:end + 1]
                return line
            if len(self.buffer) >= limit:
                raise WireError(f"{self.peer} sent a line longer than {limit} bytes during {doing}")
            if not self._fill(doing):
                raise self._closed(doing)

    def read_up_to(self, size: int, doing: str) -> bytes:
        """Up to ``size`` bytes: fewer when the server ends the stream first."""
        while len(self.buffer) < size and self._fill(doing):
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def resolve(host: str, port: int, deadline: Deadline) -> list:
    """getaddrinfo's answers for ``host`` within the deadline (in a thread: getaddrinfo knows no timeout)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        return future.result(timeout=max(deadline.remaining(), 0.001))
    except concurrent.futures.TimeoutError:
        raise WireError(f"{host} does not resolve within {deadline.text()} (DNS)") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise WireError(f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        pool.shutdown(wait=False)


def connect(host: str, port: int, deadline: Deadline, infos: list | None = None) -> socket.socket:
    """TCP to ``host:port``: each address of the name tried in turn, all within the one deadline."""
    last = "no address"
    for family, kind, proto, _, address in infos if infos is not None else resolve(host, port, deadline):
        left = deadline.remaining()
        if left <= 0:
            last = f"timed out after {deadline.text()}: a firewall or a wrong port"
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(left)
        try:
            sock.connect(address)
            return sock
        except socket.timeout:
            sock.close()
            last = f"timed out after {deadline.text()}: a firewall or a wrong port"
        except OSError as exc:
            sock.close()
            last = exc.strerror or type(exc).__name__
    raise WireError(f"TCP to port {port} fails ({last})")


def tls(context, sock: socket.socket, server_hostname: str, deadline: Deadline):
    """The TLS handshake on ``sock``, ended by the deadline however slowly the server sends its part
    (the ssl module's handshake keeps one deadline over all its reads, set here to what is left)."""
    left = deadline.remaining()
    if left <= 0:
        raise WireError(f"no time left for the TLS handshake within {deadline.text()}")
    sock.settimeout(left)
    return context.wrap_socket(sock, server_hostname=server_hostname)


# ----------------------------------------------------------------------------- HTTP/1.1, as far as the probes need
@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case; a repeated one keeps the last
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def http_exchange(conversation: Conversation, method: str, path: str, headers: dict[str, str],
                  body: bytes = b"", max_body: int = 4096) -> Response:
    """Send one request (Connection: close) and read the response: the status line and at most
    MAX_HTTP_HEADERS header lines of at most MAX_HTTP_LINE bytes, then at most ``max_body`` bytes of
    the body (Content-Length, chunked, or up to the end of the stream); the rest is not read."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items()),
             f"Content-Length: {len(body)}" if body or method in ("POST", "PUT") else "", "Connection: close"]
    conversation.send(("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode("latin-1") + body,
                      "the request")
    status_line = conversation.read_line(MAX_HTTP_LINE, "the status line").decode("latin-1").rstrip("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not (code.isascii() and code.isdigit()) or rest[3:4] not in ("", " "):
        raise WireError(f"{conversation.peer} does not answer HTTP (its first line is not an HTTP status line)")
    response = Response(int(code))
    for _ in range(MAX_HTTP_HEADERS + 1):
        line = conversation.read_line(MAX_HTTP_LINE, "the response headers").decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, colon, value = line.partition(":")
        if colon:
            response.headers[name.strip().lower()] = value.strip()
    else:
        raise WireError(f"{conversation.peer} sent more than {MAX_HTTP_HEADERS} header lines")
    if method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
        return response
    response.body = _body(conversation, response, max_body)
    return response


def _body(conversation: Conversation, response: Response, max_body: int) -> bytes:
    from posthog_compose.configuration.validators import whole_number

    if "chunked" in response.header("transfer-encoding").lower():
        body = bytearray()
        while len(body) < max_body:
            size_text = conversation.read_line(MAX_HTTP_LINE, "the response body").split(b";")[0].strip()
            if not size_text or len(size_text) > 15 or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                raise WireError(f"{conversation.peer} sent a malformed chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            wanted = min(size, max_body - len(body))
            body += conversation.read_exact(wanted, "the response body")
            if wanted < size:
                break  # the rest is not needed, and not read
            conversation.read_line(MAX_HTTP_LINE, "the response body")  # the CRLF that ends the chunk
        return bytes(body)
    length_text = response.header("content-length")
    if length_text:
        length = whole_number(length_text)
        if length is None:
            raise WireError(f"{conversation.peer} sent a Content-Length that is not a number")
        return conversation.read_up_to(min(length, max_body), "the response body")
    return conversation.read_up_to(max_body, "the response body")


def http_request(host: str, port: int, method: str, path: str, headers: dict[str, str], seconds: float,
                 body: bytes = b"", max_body: int = 4096, context=None, server_hostname: str | None = None,
                 peer: str | None = None) -> Response:
    """One HTTP request to ``host:port`` (over TLS with ``context``), all of it within ``seconds``.
    Raises WireError (an OSError) with what went wrong, or ssl.SSLError from the handshake."""
    deadline = Deadline(seconds)
    peer = peer or f"{host}:{port}"
    sock = connect(host, port, deadline)
    try:
        if context is not None:
            try:
                sock = tls(context, sock, server_hostname or host, deadline)
            except socket.timeout:
                raise WireError(f"the TLS handshake with {peer} did not finish within {deadline.text()}") from None
        return http_exchange(Conversation(sock, deadline, peer), method, path, headers, body, max_body)
    finally:
        sock.close()

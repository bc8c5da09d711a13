"""The stand-in's web server stops as PostHog 1.43's gunicorn (20.1.0, gthread) does on SIGTERM, which the
surge switch relies on (tests/e2e/images/posthog-standin/graceful.py, BOUNDARIES.md "Stopping"): the
listener closes (a new connection is refused, so the proxy retries it elsewhere), a request in flight
still gets its answer, and the process ends within the graceful timeout whatever is still running."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from tests.conftest import REPO

STANDIN = REPO / "tests" / "e2e" / "images" / "posthog-standin"
SERVER = f"""
import sys, time
sys.path.insert(0, {str(STANDIN)!r})
import graceful
from http.server import BaseHTTPRequestHandler

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(float(self.path.strip("/") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = graceful.GracefulServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
time.sleep(float(sys.argv[2]))  # busy before its first accept: connections wait in the listener's queue
graceful.serve(server, graceful_timeout=float(sys.argv[1]))
"""


def start(graceful_timeout: float, busy_first: float = 0.0):
    process = subprocess.Popen([sys.executable, "-B", "-c", SERVER, str(graceful_timeout), str(busy_first)],
                               stdout=subprocess.PIPE, text=True)
    return process, int(process.stdout.readline())


def get_in_background(port: int, seconds: float) -> dict:
    result: dict = {}

    def fetch():
        try:
            result["status"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/{seconds}", timeout=30).status
        except Exception as exc:  # noqa: BLE001 - the test reports what failed
            result["error"] = repr(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    result["thread"] = thread
    return result


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_closes_the_listener_and_answers_the_request_in_flight():
    process, port = start(graceful_timeout=30)
    try:
        in_flight = get_in_background(port, 3)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2  # gthread leaves its loop within its 1 s select
        while not refused(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused(port), "the listener is still open after SIGTERM"
        assert process.poll() is None, "the server ended with a request in flight"
        in_flight["thread"].join(10)
        assert in_flight.get("status") == 200, in_flight.get("error")
        assert process.wait(5) == 0
    finally:
        process.kill()
        process.wait()


def test_past_the_graceful_timeout_the_server_ends_anyway():
    process, port = start(graceful_timeout=1)
    try:
        in_flight = get_in_background(port, 20)
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(6) == 0 and time.monotonic() - started < 5
        in_flight["thread"].join(10)
        assert "status" not in in_flight
    finally:
        process.kill()
        process.wait()


def test_connections_that_arrive_while_the_server_is_busy_wait_for_it_as_in_gunicorns_queue_of_2048():
    """gunicorn 20.1.0 listens with a backlog of 2048 (gunicorn/config.py:613-620, sock.py:56; PostHog's
    bin/docker-server and gunicorn.config.py set none): a burst of connections to a web that is slow to
    accept, as a freshly joined one on a loaded host is, waits and is answered. socketserver's own backlog
    of 5 made the kernel answer such a burst with SYN cookies and then reset the request's second segment
    (the proxy writes headers and body apart): the proxy's 502s while a new web joined."""
    process, port = start(graceful_timeout=5, busy_first=1.5)
    clients = []
    try:
        for number in range(64):
            # A SYN that a full queue drops is sent again only after 1 s: a wait gunicorn never makes.
            client = socket.create_connection(("127.0.0.1", port), timeout=0.5)
            client.settimeout(10)
            body = b'{"n": %d}' % number
            client.sendall(b"POST /e/ HTTP/1.1\r\nHost: web\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body))
            clients.append((client, body))
        time.sleep(0.05)
        for client, body in clients:
            client.sendall(body)  # the second segment, as the proxy sends a request's body
        for client, body in clients:
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(body), answer[:80]
    finally:
        for client, _ in clients:
            client.close()
        process.kill()
        process.wait()


def test_the_web_server_of_the_standin_stops_this_way():
    source = (STANDIN / "bin" / "docker-server").read_text()
    main = source[source.index('if __name__ == "__main__":'):]
    assert "graceful.serve(graceful.GracefulServer(" in main and "serve_forever" not in main
    assert "posthog-standin/graceful.py" in (STANDIN / "Dockerfile").read_text()

"""How the edge proxy reaches web (proxy/Caddyfile's web-upstream snippet), run by the real Caddy release
the kit pins in front of a server that stops as gunicorn does: a request without a body waits while no
web listens instead of failing, and every request gets a connection of its own (no keep-alive to web, so
no request is ever written on a connection a stopping gunicorn no longer reads). Also: web's stop grace
in docker-compose.proxy.yml is the surge switch's."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from posthog_compose.operations.surge import retire
from tests.conftest import REPO
from tests.unit.test_crossings_caddy import CADDY, _free_ports

STANDIN = REPO / "tests" / "e2e" / "images" / "posthog-standin"
#: A web stand-in that answers every request with the port of the client connection it came on, and
#: keeps connections open as gunicorn does for PostHog (keepalive = 120, gunicorn.config.py:16 at 1.43.0).
UPSTREAM = f"""
import sys
sys.path.insert(0, {str(STANDIN)!r})
import graceful
from http.server import BaseHTTPRequestHandler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = f"{{self.client_address[1]}} {{len(body)}}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = answer

graceful.serve(graceful.GracefulServer(("127.0.0.1", int(sys.argv[1])), Handler), graceful_timeout=5)
"""


def snippet() -> str:
    text = (REPO / "proxy" / "Caddyfile").read_text()
    found = re.search(r"^\(web-upstream\) \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL)
    assert found, "proxy/Caddyfile has no (web-upstream) snippet"
    return found.group(0)


@pytest.fixture()
def proxy(tmp_path):
    """Caddy on a local port with the Caddyfile's web-upstream snippet, in front of 127.0.0.1:UPSTREAM."""
    assert CADDY.is_file(), f"{CADDY} is missing: install the test extra (pip install -e '.[test]')"
    listen, upstream = _free_ports(2)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text("{\n\tadmin off\n\tauto_https off\n}\n" + snippet() +
                         f"http://:{listen} {{\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:{upstream} {{\n"
                         "\t\timport web-upstream\n\t}\n}\n")
    process = subprocess.Popen([str(CADDY), "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
                                    "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "Caddy did not start"
            time.sleep(0.1)
    yield listen, upstream
    process.terminate()
    process.wait(10)


def web(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-B", "-c", UPSTREAM, str(port)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            assert time.monotonic() < deadline, "the web stand-in did not start"
            time.sleep(0.05)


def call(listen: int, post: bool) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{listen}/capture", data=b"x" * 100 if post else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_while_no_web_listens_requests_without_a_body_wait_for_one_instead_of_failing(proxy):
    listen, upstream = proxy
    first = web(upstream)
    results: list[tuple[int, str]] = []

    def load(stop: threading.Event):
        while not stop.is_set():
            results.append(call(listen, post=False))
            time.sleep(0.02)

    stop = threading.Event()
    loaders = [threading.Thread(target=load, args=(stop,)) for _ in range(3)]
    try:
        for thread in loaders:
            thread.start()
        time.sleep(1)
        first.send_signal(signal.SIGTERM)  # as `docker stop` does to the old web
        first.wait(10)
        time.sleep(1.5)  # nothing listens: dials are refused
        second = web(upstream)
        time.sleep(1)
    finally:
        stop.set()
        for thread in loaders:
            thread.join(60)
    try:
        failed = [status for status, _ in results if status != 200]
        assert len(results) > 50 and not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    finally:
        second.terminate()
        second.wait(10)


def test_every_request_reaches_web_on_a_connection_of_its_own(proxy):
    listen, upstream = proxy
    server = web(upstream)
    try:
        ports = [call(listen, post=i % 2 == 1)[1].split()[0] for i in range(6)]
        assert len(set(ports)) == 6, f"connections were reused: {ports}"
    finally:
        server.terminate()
        server.wait(10)


def test_compose_stops_web_with_the_grace_of_the_surge_switch():
    text = (REPO / "docker-compose.proxy.yml").read_text()
    web = text[text.index("\n  web:\n"):text.index("\nnetworks:")]
    assert re.search(rf"^    stop_grace_period: {retire.GRACE}s$", web, re.MULTILINE)

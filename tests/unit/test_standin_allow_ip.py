"""The stand-in's model of PostHog 1.43's AllowIPMiddleware (tests/e2e/images/posthog-standin/allow_ip.py),
held to posthog/middleware.py:22-80 and posthog/settings/access.py:29-50 at the 1.43.0 tag: PostHog's own
tests of it (posthog/test/test_middleware.py:13-83) ported, and the web stand-in answering over HTTP."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import ThreadingHTTPServer

import pytest

from tests.unit.test_standin_boundaries import STANDIN, _load

# posthog/middleware.py:22-32 at 1.43.0.
TAG_ALWAYS_ALLOWED = ["decide", "engage", "track", "capture", "batch", "e", "s", "static", "_health"]
BLOCKS = "192.168.0.0/31,127.0.0.0/25,128.0.0.1"


@pytest.fixture()
def allow_ip():
    return _load("allow_ip", STANDIN / "allow_ip.py")


def settings(allow_ip, **environ):
    return allow_ip.settings_from({"ALLOWED_IP_BLOCKS": BLOCKS, **environ})


def test_the_public_endpoints_are_the_tags_word_for_word(allow_ip):
    assert allow_ip.ALWAYS_ALLOWED_ENDPOINTS == TAG_ALWAYS_ALLOWED


# posthog/test/test_middleware.py:13-65 (test_ip_range), ported.
@pytest.mark.parametrize("path, remote, refused", [
    ("/", "10.0.0.1", True), ("/batch/", "10.0.0.1", False),
    ("/", "192.168.0.1", False), ("/", "192.168.0.2", True), ("/batch/", "192.168.0.2", False),
    ("/", "127.0.0.1", False), ("/", "127.0.0.100", False), ("/", "127.0.0.200", True),
    ("/", "128.0.0.1", False), ("/", "128.0.0.2", True),
    # The first path segment decides (middleware.py:72): /e/ and /static/x are public, /ee and /api/ not.
    ("/e/", "10.0.0.1", False), ("/static/app.js", "10.0.0.1", False), ("/ee/", "10.0.0.1", True),
    ("/api/projects/", "10.0.0.1", True), ("/admin/", "10.0.0.1", True), ("/login", "10.0.0.1", True),
    ("/E/", "10.0.0.1", True),
])
def test_ip_range_as_posthogs_own_test(allow_ip, path, remote, refused):
    verdict = allow_ip.refusal(settings(allow_ip), path, remote, None)
    assert (verdict is not None) == refused
    if refused:
        assert verdict[0] == 403 and "IP is not allowed" in verdict[1]


def test_no_allow_list_refuses_nothing(allow_ip):
    # middleware.py:39-41: MiddlewareNotUsed.
    assert allow_ip.refusal(allow_ip.settings_from({}), "/admin/", "203.0.113.9", None) is None


def test_forwarded_for_is_read_only_behind_a_proxy(allow_ip):
    """settings/access.py:35-36: USE_X_FORWARDED_HOST comes with IS_BEHIND_PROXY alone; without it a forged
    X-Forwarded-For is ignored and REMOTE_ADDR decides."""
    plain = settings(allow_ip, TRUST_ALL_PROXIES="true")
    assert allow_ip.refusal(plain, "/", "10.0.0.1", "192.168.0.1") is not None
    assert allow_ip.refusal(plain, "/", "192.168.0.1", "10.0.0.1") is None


# posthog/test/test_middleware.py:67-83 (trusted proxies, spoofing, trust all), ported.
def test_trusted_proxy_spoofing_and_trust_all_as_posthogs_own_tests(allow_ip):
    trusted = settings(allow_ip, IS_BEHIND_PROXY="true", TRUSTED_PROXIES="10.0.0.1")
    assert allow_ip.refusal(trusted, "/", "10.0.0.1", "192.168.0.1,10.0.0.1") is None
    assert allow_ip.refusal(trusted, "/", "10.0.0.1", "192.168.0.1,10.0.0.2") is not None
    trust_all = settings(allow_ip, IS_BEHIND_PROXY="true", TRUST_ALL_PROXIES="true")
    assert allow_ip.refusal(trust_all, "/", "10.0.0.1", "192.168.0.1,10.0.0.1") is None


def test_a_forged_forwarded_for_from_an_untrusted_peer_gains_nothing(allow_ip):
    behind = settings(allow_ip, IS_BEHIND_PROXY="true", TRUSTED_PROXIES="10.254.254.6")
    assert allow_ip.refusal(behind, "/", "203.0.113.9", "192.168.0.1") is not None
    # A network in TRUSTED_PROXIES never matches: compared as text (middleware.py:66).
    network = settings(allow_ip, IS_BEHIND_PROXY="true", TRUSTED_PROXIES="10.254.254.0/29")
    assert allow_ip.refusal(network, "/", "10.254.254.6", "192.168.0.1") is not None


def test_trust_all_proxies_is_any_non_empty_value(allow_ip):
    # settings/access.py:32 reads it with os.getenv: "false" is a non-empty string.
    spoofable = settings(allow_ip, IS_BEHIND_PROXY="true", TRUST_ALL_PROXIES="false")
    assert allow_ip.refusal(spoofable, "/", "203.0.113.9", "192.168.0.1") is None


def test_an_unreadable_address_is_a_server_error(allow_ip):
    # ip_address() raises ValueError (middleware.py:75), which Django answers with 500.
    trust_all = settings(allow_ip, IS_BEHIND_PROXY="true", TRUST_ALL_PROXIES="1")
    assert allow_ip.refusal(trust_all, "/", "203.0.113.9", "not-an-address")[0] == 500
    assert allow_ip.refusal(trust_all, "/", "203.0.113.9", ", 192.168.0.1")[0] == 403  # empty first entry


# ----------------------------------------------------------------------------- the web stand-in over HTTP
@pytest.fixture()
def web(monkeypatch):
    from tests.unit import test_standin_boundaries as boundaries

    for name in ("IS_BEHIND_PROXY", "TRUSTED_PROXIES", "TRUST_ALL_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALLOWED_IP_BLOCKS", "192.0.2.0/24")  # loopback, where this test connects from, is outside
    standin = boundaries._load("standin", STANDIN / "standin.py")
    monkeypatch.setitem(__import__("sys").modules, "standin", standin)
    server_module = _load("standin_docker_server", STANDIN / "bin" / "docker-server")
    server_module.settings = {**server_module.settings, "SECURE_SSL_REDIRECT": False}
    server = ThreadingHTTPServer(("127.0.0.1", 0), server_module.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], monkeypatch
    server.shutdown()
    server.server_close()


def _get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read().decode()


def test_the_web_standin_refuses_the_app_and_serves_the_public_paths(web):
    port, monkeypatch = web
    for path in ("/login", "/api/projects/", "/admin/", "/"):
        status, body = _get(port, path)
        assert status == 403 and "Your IP is not allowed" in body, path
    status, body = _get(port, "/decide/")  # public: served from outside too
    assert status == 200 and json.loads(body)["featureFlags"] == []
    assert _get(port, "/_livez") == (200, '{"http": true}')  # health middleware sits above it (web.py:51-53)
    monkeypatch.setenv("ALLOWED_IP_BLOCKS", "127.0.0.1")
    assert _get(port, "/login")[0] == 200


def test_the_web_standin_ignores_a_forged_forwarded_for(web):
    port, monkeypatch = web
    monkeypatch.setenv("IS_BEHIND_PROXY", "true")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.254.254.6")
    assert _get(port, "/login", {"X-Forwarded-For": "192.0.2.7"})[0] == 403
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1")  # now this peer is the trusted proxy
    assert _get(port, "/login", {"X-Forwarded-For": "192.0.2.7"})[0] == 200

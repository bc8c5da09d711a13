"""The edge proxy as a service of the deployment, without an engine: with it on, `status` and `up` count
and show it, `logs -s proxy` is accepted and Caddy's warn-level lines are no errors, `doctor` checks the
proxy's ports instead of WEB_PORT, harden's published-ports item allows the proxy's 80 and 443, and the
`--enable` plan names every service Compose recreates. The live proof is tests/e2e/test_proxy.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from posthog_compose import hints
from posthog_compose.configuration import manifest
from posthog_compose.configuration.envfile import EnvFile
from posthog_compose.errors import OperatorError
from posthog_compose.operations import bootstrap, diskusage, doctor, lifecycle, proxy, stack
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.harden import items as harden_items
from posthog_compose.operations.harden.checklist import State
from tests.conftest import set_env

ON = {"DOMAIN": "posthog.example.com", "PROXY_TLS": "acme", "SITE_URL": "https://posthog.example.com",
      "IS_BEHIND_PROXY": "true", "TRUSTED_PROXIES": "10.254.254.6", "DISABLE_SECURE_SSL_REDIRECT": "false",
      "SECURE_COOKIES": "true", "COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml"}

#: Caddy's warning for a certificate without an OCSP responder (every certificate of the deployment's CA).
OCSP_WARNING = ('{"level":"warn","ts":1765090000.1,"logger":"tls","msg":"stapling OCSP","error":"no OCSP stapling '
                'for [posthog.test]: no OCSP server specified in certificate","identifiers":["posthog.test"]}')


@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest.load(repo))
    return repo


def _healthy(names):
    return [stack.ServiceState(name, "running", "healthy", status="Up 5 minutes (healthy)",
                               image=f"example/{name}:1") for name in names]


@pytest.fixture
def engine(monkeypatch):
    """Every engine step of status replaced: all nine services healthy, nothing drifted, no probe."""
    states = _healthy([*manifest.SERVICES, "proxy"])
    monkeypatch.setattr(stack, "service_states", lambda root, runner: list(states))
    monkeypatch.setattr(stack, "survey", lambda root, runner: stack.Survey())
    monkeypatch.setattr(stack.capability, "check", lambda *args, **kwargs: {})
    monkeypatch.setattr(diskusage, "for_status", lambda root, runner: diskusage.DiskReport())
    monkeypatch.setattr(stack, "readiness", lambda values, timeout=3.0: (True, True, "GET /_readyz answered 200"))
    return states


# ----------------------------------------------------------------------------- status and up
def test_status_counts_and_shows_the_proxy_while_it_is_on(deployment, engine, capsys):
    set_env(deployment, **ON)
    lifecycle.status(deployment, Runner(deployment, env=dict(os.environ)))
    out = capsys.readouterr().out
    assert any(line.split()[:4] == ["proxy", "running", "healthy", "ok"] for line in out.splitlines()), out
    assert "9 of 9 services running and healthy." in out
    lifecycle.status(deployment, Runner(deployment, env=dict(os.environ)), as_json=True)
    rows = {row["service"]: row for row in json.loads(capsys.readouterr().out)["services"]}
    assert rows["proxy"]["health"] == "healthy" and rows["proxy"]["verdict"] == "ok"


def test_status_judges_an_unhealthy_proxy_and_leaves_it_out_when_off(deployment, engine, capsys):
    set_env(deployment, **ON)
    engine[-1] = stack.ServiceState("proxy", "running", "unhealthy", status="Up 1 minute (unhealthy)")
    lifecycle.status(deployment, Runner(deployment, env=dict(os.environ)))
    out = capsys.readouterr().out
    assert "8 of 9 services running and healthy (see above)." in out
    set_env(deployment, COMPOSE_FILE=None)
    del engine[-1]
    lifecycle.status(deployment, Runner(deployment, env=dict(os.environ)))
    out = capsys.readouterr().out
    assert "8 of 8 services running and healthy." in out
    assert not any(line.startswith("proxy ") for line in out.splitlines())


def test_the_proxy_depends_on_web_in_status_verdicts(deployment):
    set_env(deployment, **ON)
    assert lifecycle.dependencies(deployment)["proxy"] == ["web"]
    states = {s.service: s for s in _healthy(["proxy"])}
    verdicts = lifecycle.assess(states, lifecycle.dependencies(deployment), None, services=["web", "proxy"])
    assert verdicts == {"web": "down: not created", "proxy": "degraded: depends on web (not running)"}


def test_up_waits_for_the_proxy_too(deployment, monkeypatch, capsys):
    """`up` with the proxy on starts and waits for nine services and reports nine healthy."""
    from posthog_compose.configuration import checks

    set_env(deployment, **ON)
    waited = []
    monkeypatch.setattr(checks, "require_clean", lambda root: None)
    monkeypatch.setattr(stack, "start_and_wait", lambda root, runner, command, services, timeout, **kw:
                        waited.append(list(services)) or 1.0)
    monkeypatch.setattr(lifecycle, "check_images_match", lambda root, runner, services: None)
    monkeypatch.setattr(lifecycle, "check_datastores_write", lambda root, runner, values, services: None)
    monkeypatch.setattr(stack, "check_url", lambda values, timeout=30.0: (True, "GET / answered 302"))
    lifecycle.up(deployment, Runner(deployment, env=dict(os.environ)), [])
    assert waited == [[*manifest.SERVICES, "proxy"]]
    out = capsys.readouterr().out
    assert "start db, redis, zookeeper, kafka, clickhouse, worker, web, plugins, proxy" in out.replace("\n", " ") \
        or ", proxy" in out.splitlines()[0]
    assert "(9 services healthy in" in out


# ----------------------------------------------------------------------------- logs
def test_logs_accepts_the_proxy_only_while_it_is_on(deployment):
    with pytest.raises(OperatorError, match="the edge proxy is off"):
        lifecycle._services(["proxy"], deployment)
    with pytest.raises(OperatorError, match="unknown service"):
        lifecycle._services(["proxy", "webb"], deployment)
    set_env(deployment, **ON)
    assert lifecycle._services(["proxy", "web"], deployment) == ["proxy", "web"]


@pytest.mark.parametrize("line, error", [
    (f"proxy-1  | {OCSP_WARNING}", False),
    ('proxy-1  | {"level":"info","logger":"http","msg":"enabling HTTP/3 listener","error":""}', False),
    ('proxy-1  | {"level":"debug","msg":"TLS handshake failed","error":"EOF"}', False),
    ('proxy-1  | {"level":"error","logger":"tls.obtain","msg":"could not get certificate from issuer"}', True),
    ('proxy-1  | {"level":"fatal","msg":"loading config"}', True),
    (OCSP_WARNING, False),
    ("web-1  | ERROR: could not connect", True),  # plain text: judged by its words, as before
    ("plugins-1  | Skipping async migrations setup. Error-free", False),
    ('web-1  | {"msg": "failed"}', True),  # JSON without a level: judged by its words
])
def test_a_structured_line_is_an_error_by_its_level(line, error):
    assert hints.is_error_line(line) is error


def test_logs_errors_with_the_proxy_on_leaves_out_caddys_warnings(deployment, monkeypatch, capsys):
    set_env(deployment, **ON)
    output = f"proxy-1  | {OCSP_WARNING}\nweb-1  | Booting gunicorn\n"

    class Logs(Runner):
        def run(self, cmd, **kwargs):
            return subprocess.CompletedProcess(cmd, 0, output, "")

    code = lifecycle.logs(deployment, Logs(deployment, env=dict(os.environ)), [], errors=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 error line(s) (" in out and "proxy 0" in out


# ----------------------------------------------------------------------------- doctor
def _listening():
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()
    return server, server.getsockname()[1]


def test_doctor_checks_the_proxys_ports_and_not_web_port_when_the_proxy_is_on(deployment, monkeypatch):
    server, taken = _listening()
    with server:
        free_socket = socket.socket()
        free_socket.bind(("0.0.0.0", 0))
        free = free_socket.getsockname()[1]
        free_socket.close()
        set_env(deployment, **ON, PROXY_HTTP_PORT=str(free), PROXY_HTTPS_PORT=str(taken), WEB_PORT=str(taken))
        monkeypatch.setattr(stack, "service_states", lambda root, runner: [])
        runner = Runner(deployment, env=dict(os.environ))
        checks, running = doctor._published_ports(deployment, runner)
        assert [c.name for c in checks] == ["proxy http port", "proxy https port"] and not running
        assert checks[0].status == "ok" and f"{free} (PROXY_HTTP_PORT) is free" in checks[0].detail
        assert checks[1].status == "error" and "PROXY_HTTPS_PORT" in checks[1].fix
        # Held by the deployment's own proxy: fine.
        monkeypatch.setattr(stack, "service_states", lambda root, runner: _healthy(["web", "proxy"]))
        checks, running = doctor._published_ports(deployment, runner)
        assert [c.status for c in checks] == ["ok", "ok"] and running
        assert "held by this deployment's edge proxy" in checks[1].detail
        # Off: WEB_PORT again, and only it.
        set_env(deployment, COMPOSE_FILE=None)
        monkeypatch.setattr(stack, "service_states", lambda root, runner: [])
        checks, _ = doctor._published_ports(deployment, runner)
        assert [(c.name, c.status) for c in checks] == [("web port", "error")]


# ----------------------------------------------------------------------------- harden --check
def _state(root, published):
    return State(root, EnvFile.load(root / ".env").resolved(), [], None, "", published)


def test_harden_ports_allows_the_proxys_80_and_443_while_it_is_on(deployment):
    set_env(deployment, **ON)
    proxy_ports = [{"target": 80, "published": "80"}, {"target": 443, "published": "443"}]
    status, reason, _ = harden_items._ports(_state(deployment, {"proxy": proxy_ports, "web": [], "db": []}))
    assert status == "pass" and "only the edge proxy publishes" in reason
    status, reason, _ = harden_items._ports(_state(deployment, {"proxy": ["80:80", "443:443"], "web": []}))
    assert status == "pass"
    status, reason, _ = harden_items._ports(_state(deployment, {"proxy": proxy_ports, "web": ["8080:8000"]}))
    assert status == "fail" and "web" in reason
    status, reason, _ = harden_items._ports(_state(deployment, {"proxy": [*proxy_ports, {"target": 2019}]}))
    assert status == "fail" and "2019" in reason
    set_env(deployment, COMPOSE_FILE=None)
    status, reason, _ = harden_items._ports(_state(deployment, {"proxy": proxy_ports, "web": ["8080:8000"]}))
    assert status == "fail" and "proxy" in reason


def test_harden_check_passes_ports_with_the_real_compose_model(deployment):
    """What Compose makes of the overlay: the proxy's two ports, web none; the item passes."""
    from posthog_compose.operations.harden.state import read_state

    set_env(deployment, **ON)
    results = {r.id: r for r in harden_items.evaluate(read_state(deployment))}
    assert results["ports"].status == "pass", results["ports"].reason


# ----------------------------------------------------------------------------- the --enable plan
def test_the_enable_plan_names_every_service_compose_recreates(deployment, monkeypatch, capsys):
    monkeypatch.setattr(stack, "service_states", lambda root, runner: _healthy(manifest.SERVICES))
    runner = Runner(deployment, dry_run=True, env=dict(os.environ))
    assert proxy.switch(deployment, runner, True, domain="posthog.example.com") == 0
    out = capsys.readouterr().out
    assert "  - recreate web, worker and plugins (their settings change) and start the proxy" in out, out
    assert proxy.recreated_services(deployment, ["SITE_URL"]) == ["web", "worker", "plugins"]
    assert proxy.recreated_services(deployment, ["COMPOSE_FILE"]) == ["web"]


def test_proxy_dry_run_needs_no_engine(deployment, monkeypatch, capsys):
    def no_engine(root, runner):
        raise OperatorError("proxy cannot reach the Docker engine (Cannot connect to the Docker daemon)")

    monkeypatch.setattr(stack, "service_states", no_engine)
    before = (deployment / ".env").read_text()
    assert proxy.switch(deployment, Runner(deployment, dry_run=True, env=dict(os.environ)), True,
                        domain="posthog.example.com") == 0
    out = capsys.readouterr().out
    assert "Dry run: nothing changed." in out and "the Docker engine does not answer" in out
    assert (deployment / ".env").read_text() == before
    with pytest.raises(OperatorError, match="Docker engine"):  # a real switch still needs it
        proxy.switch(deployment, Runner(deployment, env=dict(os.environ)), True, domain="posthog.example.com")
    assert (deployment / ".env").read_text() == before


def test_without_compose_the_overlays_ports_still_count(deployment):
    """When Compose cannot build its model (a stand-in binary), the files COMPOSE_FILE adds are merged as
    Compose would: the overlay's `!reset` empties web's ports and the proxy's two are added."""
    from posthog_compose.operations.harden.state import _with_overlays

    set_env(deployment, **ON)
    values = EnvFile.load(deployment / ".env").resolved()
    merged = _with_overlays(deployment, values, {"web": ["8080:8000"], "db": []})
    assert merged["web"] == [] and merged["db"] == []
    assert [str(port).rsplit(":", 1)[-1] for port in merged["proxy"]] == ["80", "443"]
    status, _, _ = harden_items._ports(_state(deployment, merged))
    assert status == "pass"

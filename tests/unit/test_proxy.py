"""The edge proxy without an engine: config-check's HTTPS and proxy rules (one case per mistake,
and a property: whatever `--enable` writes passes them), enabling and disabling on a stopped
deployment (the certificate from the deployment's CA, the previous values restored, .env put back
when the check fails), the real Compose binary's view of the overlay, and harden's item.
The live proof is tests/e2e/test_proxy.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.operations import bootstrap

from posthog_compose.configuration import checks, manifest
from posthog_compose.configuration import compose
from posthog_compose.operations import proxy
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import run_invoke, set_env

ON = {"DOMAIN": "posthog.example.com", "PROXY_TLS": "acme", "SITE_URL": "https://posthog.example.com",
      "IS_BEHIND_PROXY": "true", "TRUSTED_PROXIES": "10.254.254.6", "DISABLE_SECURE_SSL_REDIRECT": "false",
      "SECURE_COOKIES": "true", "COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml"}


@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest.load(repo))
    return repo


def _findings(root, environ=None):
    report = checks._Report()
    env = EnvFile.load(root / ".env")
    proxy.check(root, env, env.resolved(), report, environ or {})
    return report.findings


def _rules(findings):
    return {(f.severity, f.rule, f.subject) for f in findings}


def test_a_consistent_proxy_configuration_has_no_finding(deployment):
    set_env(deployment, **ON)
    assert _findings(deployment) == []


@pytest.mark.parametrize("change, expected, fragment", [
    ({"SITE_URL": "http://posthog.example.com"}, ("error", "proxy", "SITE_URL"), "PostHog would build http:// links"),
    ({"SITE_URL": "https://other.example.com"}, ("error", "proxy", "SITE_URL"), "names other.example.com"),
    ({"SITE_URL": "https://posthog.example.com:8443"}, ("error", "proxy", "SITE_URL"), "PROXY_HTTPS_PORT=443"),
    ({"IS_BEHIND_PROXY": "false"}, ("error", "proxy", "IS_BEHIND_PROXY"), "redirects forever"),
    ({"DOMAIN": ""}, ("error", "proxy", "DOMAIN"), "is empty"),
    ({"DOMAIN": "https://posthog.example.com"}, ("error", "proxy", "DOMAIN"), "not a host name"),
    ({"DOMAIN": "192.168.1.20", "SITE_URL": "https://192.168.1.20"}, ("error", "proxy", "DOMAIN"), "IP address"),
    ({"DOMAIN": "posthog.internal", "SITE_URL": "https://posthog.internal"}, ("error", "proxy", "PROXY_TLS"),
     "not a public name"),
    ({"PROXY_TLS": "selfsigned"}, ("error", "proxy", "PROXY_TLS"), "'selfsigned'"),
    ({"PROXY_TLS": "private"}, ("error", "proxy", "COMPOSE_FILE"), "does not list docker-compose.proxy-private.yml"),
    ({"TRUSTED_PROXIES": ""}, ("warning", "proxy", "TRUSTED_PROXIES"), "10.254.254.6"),
    ({"PROXY_ADDRESS": "10.254.254.1"}, ("error", "proxy", "PROXY_ADDRESS"), "the first one is the gateway"),
    ({"PROXY_ADDRESS": "10.254.254.2", "TRUSTED_PROXIES": "10.254.254.2"}, ("warning", "proxy", "PROXY_ADDRESS"),
     "Address already in use"),
    ({"PROXY_ADDRESS": "10.9.9.9"}, ("error", "proxy", "PROXY_ADDRESS"), "not a usable address"),
    ({"PROXY_SUBNET": "8.8.8.0/29"}, ("error", "proxy", "PROXY_SUBNET"), "private IPv4"),
    ({"PROXY_SUBNET": "10.254.254.1/29"}, ("error", "proxy", "PROXY_SUBNET"), "not a network"),
    ({"PROXY_HTTPS_PORT": "80", "SITE_URL": "https://posthog.example.com:80"}, ("error", "proxy", "PROXY_HTTPS_PORT"),
     "equals PROXY_HTTP_PORT"),
    ({"SECURE_COOKIES": "false"}, ("warning", "proxy", "SECURE_COOKIES"), "could leak"),
    ({"PROXY_HSTS_MAX_AGE": "0"}, ("warning", "proxy", "PROXY_HSTS_MAX_AGE"), "plain http first"),
    ({"COMPOSE_FILE": "docker-compose.proxy.yml:docker-compose.yml"}, ("error", "compose-file-variable", "COMPOSE_FILE"),
     "must start with docker-compose.yml"),
    ({"COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml:docker-compose.nope.yml"},
     ("error", "compose-file-variable", "COMPOSE_FILE"), "docker-compose.nope.yml, which does not exist"),
])
def test_each_proxy_mistake_is_one_finding(deployment, change, expected, fragment):
    set_env(deployment, **{**ON, **change})
    findings = _findings(deployment)
    assert expected in _rules(findings), "\n".join(f.text() for f in findings)
    assert any(fragment in f.message for f in findings), "\n".join(f.text() for f in findings)
    assert all("\n" not in f.text() for f in findings)


def test_the_tls_override_dropped_by_compose_file_is_an_error(deployment):
    shutil.copy(deployment / "docker-compose.tls.yml", deployment / "docker-compose.override.yml")
    set_env(deployment, **ON)
    assert ("error", "compose-file-variable", "COMPOSE_FILE") in _rules(_findings(deployment))
    set_env(deployment, COMPOSE_FILE="docker-compose.yml:docker-compose.override.yml:docker-compose.proxy.yml")
    assert _findings(deployment) == []


@pytest.mark.parametrize("site, cookies, flagged", [
    ("http://192.168.1.20:8080", "true", True),
    ("http://posthog.lan", "true", True),
    ("http://192.168.1.20:8080", "false", False),
    ("http://localhost:8080", "true", False),
    ("http://127.0.0.1:8080", "true", False),
    ("https://posthog.example.com", "true", False),
])
def test_plain_http_with_secure_cookies_breaks_logins_off_localhost(deployment, site, cookies, flagged):
    set_env(deployment, SITE_URL=site, SECURE_COOKIES=cookies)
    assert (("error", "https-cookies", "SITE_URL") in _rules(_findings(deployment))) is flagged


def test_a_compose_file_in_the_shell_that_differs_is_a_warning(deployment):
    set_env(deployment, **ON)
    findings = _findings(deployment, environ={"COMPOSE_FILE": "docker-compose.yml"})
    assert ("warning", "compose-file-variable", "COMPOSE_FILE") in _rules(findings)


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(LABEL, min_size=2, max_size=4), port=st.sampled_from(["443", "8443", "10443"]),
       private=st.booleans(), before=st.sampled_from(["http://localhost:8080", "http://10.0.0.5:8080", "https://x.io"]))
def test_what_enable_writes_passes_the_rules_and_disable_restores(deployment, labels, port, private, before):
    """Property: for any host name and HTTPS port, the values `--enable` plans pass every proxy
    rule, and `--disable` after it puts back exactly the values it replaced."""
    domain = ".".join(labels)
    if proxy.domain_problem(domain):  # an IP address: refused with one line, nothing planned
        with pytest.raises(Exception, match="IP address"):
            proxy.plan_enable(deployment, EnvFile.load(deployment / ".env").resolved(), domain, None)
        return
    set_env(deployment, SITE_URL=before, PROXY_HTTPS_PORT=port, COMPOSE_FILE=None, DOMAIN="", PROXY_TLS="acme")
    values = EnvFile.load(deployment / ".env").resolved()
    if proxy.is_private_name(domain):  # ACME asked for explicitly: refused, nothing planned
        with pytest.raises(Exception, match="not a public name"):
            proxy.plan_enable(deployment, values, domain, False)
    plan = proxy.plan_enable(deployment, values, domain, True if private else None)  # None: chosen by the name
    assert plan.env["SITE_URL"] == f"https://{domain}" + ("" if port == "443" else f":{port}")
    assert {**values, **plan.env}["PROXY_TLS"] == ("private" if private or proxy.is_private_name(domain) else "acme")
    if plan.certificate:
        proxy.ensure_certificate(deployment, domain)
    set_env(deployment, **plan.env)
    assert [f for f in _findings(deployment) if f.severity == "error"] == []
    (deployment / ".deploy").mkdir(exist_ok=True)
    (deployment / proxy.STATE_FILE).write_text(json.dumps(plan.previous))
    after = EnvFile.load(deployment / ".env").resolved()
    undo = proxy.plan_disable(deployment, after)
    set_env(deployment, **{k: (None if k == "COMPOSE_FILE" else v) for k, v in undo.env.items()})
    restored = EnvFile.load(deployment / ".env").resolved()
    assert {name: restored.get(name, "") for name in proxy.TOLD} == {name: values.get(name, "") for name in proxy.TOLD}
    assert "COMPOSE_FILE" not in restored
    (deployment / proxy.STATE_FILE).unlink()


def test_private_names_and_addresses():
    for name in ("localhost", "posthog", "10.0.0.5", "posthog.internal", "a.b.local", "x.test", "x.home.arpa", "[::1]"):
        assert proxy.is_private_name(name), name
    for name in ("posthog.example.com", "analytics.acme.io"):
        assert not proxy.is_private_name(name), name


# ----------------------------------------------------------------------------- invoke proxy (stopped deployment)
@pytest.fixture
def stopped(deployment, tmp_path):
    """The real Compose binary for config-check; `ps` answers that nothing runs."""
    real = compose.compose_binary()
    script = tmp_path / "compose-without-containers"
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = ps ] && exit 0; done\nexec " +
                      " ".join(real) + " \"$@\"\n")
    script.chmod(0o755)
    import os

    return {**os.environ, "POSTHOG_COMPOSE_BINARY": str(script)}


def test_enable_and_disable_a_stopped_deployment(deployment, stopped):
    before = EnvFile.load(deployment / ".env").resolved()
    result = run_invoke(deployment, "proxy", "--enable", "--domain", "posthog.internal", env=stopped)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Edge proxy on in .env. Start the deployment with `invoke up`."
    values = EnvFile.load(deployment / ".env").resolved()
    assert values["PROXY_TLS"] == "private" and values["SITE_URL"] == "https://posthog.internal"
    assert values["COMPOSE_FILE"] == "docker-compose.yml:docker-compose.proxy.yml:docker-compose.proxy-private.yml"
    assert (deployment / ".env").stat().st_mode & 0o777 == 0o600
    assert proxy.certificate_problem(deployment, "posthog.internal") == ""
    assert (deployment / "certs" / "proxy.key").stat().st_mode & 0o777 == 0o600
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(deployment / "certs/ca.crt"),
                             str(deployment / "certs/proxy.crt")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    for secret in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        assert before[secret] not in result.stdout + result.stderr
    assert run_invoke(deployment, "config-check", env=stopped).returncode == 0
    shown = run_invoke(deployment, "proxy", env=stopped).stdout
    assert "Edge proxy: on. https://posthog.internal" in shown and "valid for posthog.internal" in shown

    again = run_invoke(deployment, "proxy", "--enable", env=stopped)
    assert again.returncode == 0 and "already on" in again.stdout

    off = run_invoke(deployment, "proxy", "--disable", env=stopped)
    assert off.returncode == 0, off.stdout + off.stderr
    after = EnvFile.load(deployment / ".env").resolved()
    assert {k: after.get(k) for k in proxy.TOLD} == {k: before.get(k) for k in proxy.TOLD}
    assert "COMPOSE_FILE" not in after and not (deployment / proxy.STATE_FILE).exists()
    assert run_invoke(deployment, "proxy", "--disable", env=stopped).stdout.startswith("The edge proxy is already off")


def test_a_failing_check_puts_env_back_and_bad_input_is_one_line(deployment, stopped):
    set_env(deployment, PROXY_SUBNET="not-a-network")
    before = (deployment / ".env").read_text()
    result = run_invoke(deployment, "proxy", "--enable", "--domain", "posthog.internal", env=stopped)
    assert result.returncode == 1 and "PROXY_SUBNET" in result.stdout
    assert result.stderr.strip().endswith(".env was put back as it was") and "Traceback" not in result.stderr
    assert (deployment / ".env").read_text() == before
    for args in (["--enable", "--domain", "https://x"], ["--enable", "--domain", "posthog.internal", "--disable"],
                 ["--enable", "--domain", "localhost"]):
        bad = run_invoke(deployment, "proxy", *args, env=stopped)
        assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
        assert (deployment / ".env").read_text() == before


def test_dry_run_changes_nothing(deployment, stopped):
    before = (deployment / ".env").read_text()
    result = run_invoke(deployment, "proxy", "--enable", "--domain", "posthog.example.com", "--dry-run", env=stopped)
    assert result.returncode == 0 and "Dry run: nothing changed." in result.stdout
    assert ".env: SITE_URL=https://posthog.example.com" in result.stdout
    assert (deployment / ".env").read_text() == before and not (deployment / "certs").exists()


# ----------------------------------------------------------------------------- the real Compose binary
def _config(root):
    result = subprocess.run(compose.command(root, "config", "--format", "json"), cwd=root, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_applies_the_overlay_from_env_only_when_on(deployment):
    services = _config(deployment)
    assert set(services) == set(manifest.SERVICES) and services["web"]["ports"][0]["target"] == 8000
    for name, service in services.items():
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}}, name
    set_env(deployment, **ON)
    services = _config(deployment)
    assert "ports" not in services["web"] and set(services["web"]["networks"]) == {"default", "edge"}
    assert sorted(p["target"] for p in services["proxy"]["ports"]) == [80, 443]
    assert services["proxy"]["networks"]["edge"]["ipv4_address"] == "10.254.254.6"
    assert services["proxy"]["logging"]["options"] == {"max-size": "20m", "max-file": "5"}
    assert all(service.get("logging", {}).get("options", {}).get("max-file") for service in services.values())


# ----------------------------------------------------------------------------- harden's item
def test_harden_item_public_https(deployment):
    values = EnvFile.load(deployment / ".env").resolved()
    status, reason, fix = proxy.harden_item(values, [])
    assert status == "fail" and "plain HTTP" in reason and "invoke proxy --enable" in fix
    status, reason, _ = proxy.harden_item({**values, "SITE_URL": "https://posthog.example.com"}, [])
    assert status == "fail" and "still publishes plain HTTP" in reason
    set_env(deployment, **ON)
    values = EnvFile.load(deployment / ".env").resolved()
    assert proxy.harden_item(values, _findings(deployment))[0] == "pass"
    set_env(deployment, IS_BEHIND_PROXY="false")
    status, reason, _ = proxy.harden_item(EnvFile.load(deployment / ".env").resolved(), _findings(deployment))
    assert status == "fail" and "misconfigured" in reason and "IS_BEHIND_PROXY" in reason


def test_harden_writing_the_override_keeps_it_applied_with_the_proxy_on(deployment):
    set_env(deployment, **ON)
    assert proxy.include_override(deployment) is False  # no override yet: nothing to do
    shutil.copy(deployment / "docker-compose.tls.yml", deployment / "docker-compose.override.yml")
    assert proxy.include_override(deployment) is True
    values = EnvFile.load(deployment / ".env").resolved()
    assert values["COMPOSE_FILE"] == "docker-compose.yml:docker-compose.override.yml:docker-compose.proxy.yml"
    assert proxy.include_override(deployment) is False and _findings(deployment) == []
    assert (deployment / ".env").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("fail_at", ["start", "url"])
def test_a_failure_while_switching_a_running_deployment_puts_everything_back(deployment, stopped, monkeypatch, fail_at):
    """Fault injection on a running deployment: the proxy does not come up (or the URL check
    fails); the previous .env is written back and the deployment recreated from it."""
    import os

    from posthog_compose.operations import stack
    from posthog_compose.operations.engine import Runner
    from posthog_compose.errors import OperatorError

    monkeypatch.setattr(stack, "service_states", lambda root, runner: [stack.ServiceState("web", "running", "healthy")])
    started = []

    def start_and_wait(root, runner, command, services, timeout):
        started.append((EnvFile.load(root / ".env").resolved().get("COMPOSE_FILE"), list(services)))
        if fail_at == "start" and len(started) == 1:
            raise OperatorError("services failed: proxy (exited (1))")
        return 1.0

    monkeypatch.setattr(stack, "start_and_wait", start_and_wait)
    monkeypatch.setattr(stack, "check_url", lambda values, timeout=30.0: (fail_at != "url" or not proxy.enabled(values),
                                                                         "GET / answered 502"))
    monkeypatch.setenv("POSTHOG_COMPOSE_BINARY", stopped["POSTHOG_COMPOSE_BINARY"])
    before = (deployment / ".env").read_text()
    with pytest.raises(OperatorError, match="previous configuration is back"):
        proxy.switch(deployment, Runner(deployment, env=dict(os.environ)), True, domain="posthog.internal")
    assert (deployment / ".env").read_text() == before
    assert not (deployment / proxy.STATE_FILE).exists()
    assert started[0][0].endswith("docker-compose.proxy-private.yml") and "proxy" in started[0][1]
    assert started[-1] == (None, list(manifest.SERVICES))


def test_a_failed_enable_removes_the_network_and_volumes_it_created_and_keeps_older_ones(deployment, stopped,
                                                                                          monkeypatch):
    """The rolled-back `--enable` left the proxy's network and volumes behind; now what this attempt
    created is removed, and a volume that existed before (an ACME account, a certificate) is kept."""
    import os
    import subprocess as sp

    from posthog_compose.operations import stack
    from posthog_compose.operations.engine import Runner
    from posthog_compose.errors import OperatorError

    engine = {"posthog_proxy-data"}  # kept from an earlier enable
    removed = []

    class EngineRunner(Runner):
        def run(self, cmd, **kwargs):
            if cmd[:2] in (["docker", "network"], ["docker", "volume"]) and cmd[2] == "ls":
                kind = cmd[1]
                names = [n for n in engine if n.endswith("_edge") == (kind == "network")]
                return sp.CompletedProcess(cmd, 0, "\n".join(names), "")
            if cmd[:2] in (["docker", "network"], ["docker", "volume"]) and cmd[2] == "rm":
                removed.append(cmd[3])
                engine.discard(cmd[3])
                return sp.CompletedProcess(cmd, 0, "", "")
            return super().run(cmd, **kwargs)

    def start_and_wait(root, runner, command, services, timeout):
        if "proxy" in services:
            engine.update({"posthog_edge", "posthog_proxy-data", "posthog_proxy-config"})
            raise OperatorError("services failed: proxy (exited (1))")
        return 1.0

    monkeypatch.setattr(stack, "service_states", lambda root, runner: [stack.ServiceState("web", "running", "healthy")])
    monkeypatch.setattr(stack, "start_and_wait", start_and_wait)
    monkeypatch.setattr(stack, "check_url", lambda values, timeout=30.0: (True, "302"))
    monkeypatch.setenv("POSTHOG_COMPOSE_BINARY", stopped["POSTHOG_COMPOSE_BINARY"])
    with pytest.raises(OperatorError, match="previous configuration is back"):
        proxy.switch(deployment, EngineRunner(deployment, env=dict(os.environ)), True, domain="posthog.internal")
    assert sorted(removed) == ["posthog_edge", "posthog_proxy-config"]
    assert engine == {"posthog_proxy-data"}

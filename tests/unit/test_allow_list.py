"""ALLOWED_IP_BLOCKS (who may use the app) and config-check's rules for it: the value as PostHog 1.43
parses it (posthog/settings/utils.py:25-28 get_list, posthog/middleware.py:75 ip_network(strict=False)),
and the combinations with the proxy settings that lock the operator out or let a forged
X-Forwarded-For through (posthog/middleware.py:55-68)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from posthog_compose.configuration import access, checks, edge, manifest as manifest_module
from posthog_compose.configuration.checks.env import _check_values
from posthog_compose.configuration.compose import load_document
from posthog_compose.configuration.envfile import EnvFile
from posthog_compose.configuration.formats import parse_ip_blocks, problem
from posthog_compose.operations import bootstrap
from tests.conftest import copy_repository, set_env

PROXY_ON = {"DOMAIN": "posthog.example.com", "PROXY_TLS": "acme", "SITE_URL": "https://posthog.example.com",
            "IS_BEHIND_PROXY": "true", "TRUSTED_PROXIES": "10.254.254.6", "DISABLE_SECURE_SSL_REDIRECT": "false",
            "SECURE_COOKIES": "true", "COMPOSE_FILE": "docker-compose.yml:docker-compose.proxy.yml"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    target = copy_repository(tmp_path_factory.mktemp("deployment"))
    bootstrap.init(target, manifest_module.load(target))
    return target


def findings(root, **changes):
    """The errors config-check's value and edge/allow-list rules give for .env with ``changes``."""
    env = EnvFile.load(root / ".env")
    values = {**env.resolved(), **{k: v for k, v in changes.items() if v is not None}}
    for name in [k for k, v in changes.items() if v is None]:
        values.pop(name, None)
    report = checks._Report()
    _check_values(manifest_module.load(root), env, values, report)
    edge.check(root, env, values, report, {})
    access.check(env, values, load_document(root), report)
    return [f for f in report.findings if f.severity == "error"]


# (id, .env changes, subject of the one error, fragment of its message); None: no error at all
CASES = [
    ("empty-is-public", {"ALLOWED_IP_BLOCKS": ""}, None, None),
    ("one-network", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24"}, None, None),
    ("spaces-as-posthog-strips-them", {"ALLOWED_IP_BLOCKS": " 203.0.113.0/24 , 198.51.100.7"}, None, None),
    ("malformed-entry", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24,office"}, "ALLOWED_IP_BLOCKS", "'office' is not an IP"),
    ("prefix-too-long", {"ALLOWED_IP_BLOCKS": "203.0.113.0/33"}, "ALLOWED_IP_BLOCKS", "'203.0.113.0/33' is not"),
    ("empty-entry", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24,"}, "ALLOWED_IP_BLOCKS", "holds an empty entry"),
    ("leading-zero", {"ALLOWED_IP_BLOCKS": "010.1.2.3"}, "ALLOWED_IP_BLOCKS", "'010.1.2.3' is not"),
    ("zone-id", {"ALLOWED_IP_BLOCKS": "fe80::1%eth0"}, "ALLOWED_IP_BLOCKS", "is not an IP"),
    # Behind the kit's proxy: PostHog must believe the proxy's X-Forwarded-For, or it refuses everyone.
    ("proxy-on-trusted", {**PROXY_ON, "ALLOWED_IP_BLOCKS": "203.0.113.0/24"}, None, None),
    ("proxy-on-untrusted", {**PROXY_ON, "ALLOWED_IP_BLOCKS": "203.0.113.0/24", "TRUSTED_PROXIES": ""},
     "TRUSTED_PROXIES", "does not list the proxy's address 10.254.254.6 while ALLOWED_IP_BLOCKS is set"),
    ("proxy-network-in-trusted", {**PROXY_ON, "ALLOWED_IP_BLOCKS": "203.0.113.0/24",
                                  "TRUSTED_PROXIES": "10.254.254.0/29"}, "TRUSTED_PROXIES", "compares each entry as text"),
    ("allow-list-covers-the-proxy-gateway", {**PROXY_ON, "ALLOWED_IP_BLOCKS": "10.0.0.0/8"}, "ALLOWED_IP_BLOCKS",
     "holds 10.254.254.1, the gateway of the proxy's network"),
    # One client's address inside the proxy's network is not the gateway every forwarded client shares.
    ("allow-list-names-one-address-of-the-proxy-network", {**PROXY_ON, "ALLOWED_IP_BLOCKS": "10.254.254.5"}, None, None),
    ("too-many-for-the-edge", {**PROXY_ON, "ALLOWED_IP_BLOCKS": ",".join(f"203.0.113.{i}" for i in range(11))},
     "ALLOWED_IP_BLOCKS", "the edge proxy takes at most 10"),
    # Without the kit's proxy.
    ("own-proxy-untrusted", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24", "IS_BEHIND_PROXY": "true"},
     "TRUSTED_PROXIES", "PostHog refuses every request that arrives through a proxy"),
    ("own-proxy-trusted", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24", "IS_BEHIND_PROXY": "true",
                           "TRUSTED_PROXIES": "192.0.2.10"}, None, None),
    ("trust-all-with-web-published", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24", "IS_BEHIND_PROXY": "true",
                                      "TRUST_ALL_PROXIES": "true"}, "TRUST_ALL_PROXIES", "anyone can send X-Forwarded-For"),
    # IS_BEHIND_PROXY=false: PostHog ignores X-Forwarded-For altogether (settings/access.py:35-38).
    ("trust-all-not-behind-a-proxy", {"ALLOWED_IP_BLOCKS": "203.0.113.0/24", "TRUST_ALL_PROXIES": "true"}, None, None),
    # The kit's proxy replaces X-Forwarded-For and web is not published: TRUST_ALL_PROXIES forges nothing.
    ("trust-all-behind-the-kit-proxy", {**PROXY_ON, "ALLOWED_IP_BLOCKS": "203.0.113.0/24", "TRUSTED_PROXIES": "",
                                        "TRUST_ALL_PROXIES": "true"}, None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_combination_gives_its_one_line(root, case):
    _, changes, subject, fragment = case
    errors = findings(root, **changes)
    if subject is None:
        assert errors == [], [f.text() for f in errors]
        return
    assert [f.subject for f in errors] == [subject], [f.text() for f in errors]
    assert fragment in errors[0].message and "\n" not in errors[0].text()


def test_config_check_reports_the_lockout_from_the_deployments_files(deployed):
    """The rule is wired into `invoke config-check` itself, not only callable."""
    target = deployed
    set_env(target, ALLOWED_IP_BLOCKS="203.0.113.0/24", IS_BEHIND_PROXY="true")
    texts = [f.text() for f in checks.collect(target, environ={"PATH": "/usr/bin:/bin"}) if f.severity == "error"]
    assert any("TRUSTED_PROXIES" in t and "refuses every request that arrives through a proxy" in t for t in texts), texts


def test_web_gets_the_value_as_posthog_reads_it(root):
    """docker-compose.yml hands ALLOWED_IP_BLOCKS to web unchanged (PostHog splits it itself)."""
    web = load_document(root).services["web"]["environment"]
    assert web["ALLOWED_IP_BLOCKS"] == "${ALLOWED_IP_BLOCKS:-}"


# ----------------------------------------------------------------------------- the parser against ipaddress
def _posthog_reads(value: str):
    """What PostHog 1.43 does with the value: get_list, then ip_network(block, strict=False) per request."""
    items = [item.strip() for item in value.split(",")] if value else []
    return [ipaddress.ip_network(item, strict=False) for item in items]


NETWORK = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv4Address(a)}/{p}", strict=False),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv6Address(a)}/{p}", strict=False),
              st.integers(0, 2**128 - 1), st.integers(0, 128)),
)
PIECES = st.sampled_from(["1", "0", "10", "255", "256", "010", ".", ":", "::", "/", "/8", "/32", "/33", "/08", ",", " ",
                          "a", "f", "ffff", "%", "eth0", "\t", "1.2.3.4", "::1", "0x1", "-", "+", "٣"])
HOSTILE = st.lists(PIECES, max_size=10).map("".join)


@st.composite
def valid_lists(draw):
    networks = draw(st.lists(NETWORK, min_size=1, max_size=5))
    parts = []
    for network in networks:
        host = draw(st.sampled_from([network.network_address, network.broadcast_address]))
        pad = " " * draw(st.integers(0, 2))
        bare = network.prefixlen == network.max_prefixlen and draw(st.booleans())
        parts.append(pad + (str(host) if bare else f"{host}/{network.prefixlen}") + pad)
    return ",".join(parts), networks


@settings(max_examples=300, deadline=None)
@given(case=valid_lists())
def test_every_list_ipaddress_reads_is_accepted_as_the_same_networks(case):
    value, networks = case
    assert parse_ip_blocks(value) == networks == _posthog_reads(value)
    assert problem("ip-block-list", value) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(HOSTILE, st.text(max_size=20)))
@example(value="010.0.0.1")
@example(value="1.2.3.4,,5.6.7.8")
@example(value="fe80::1%eth0")
def test_whatever_it_accepts_posthog_reads_as_the_same_networks(value):
    """Accepted: PostHog reads exactly these networks. Refused: one line, and PostHog would have failed or
    read it otherwise than Caddy (leading zeros, zones). Never an exception."""
    bad = problem("ip-block-list", value)
    if bad is None:
        assert parse_ip_blocks(value) == _posthog_reads(value)
        return
    assert "\n" not in bad
    try:
        read = _posthog_reads(value)
    except ValueError:
        return  # PostHog would answer 500 to every request it judges: refusing is right
    # ipaddress read it: only spellings Go's netip (the edge proxy) reads otherwise may be refused.
    assert any("%" in item or any(part.startswith("0") and len(part) > 1 for part in item.split("/")[0].split("."))
               or (item.split("/")[1:] and item.split("/")[1].startswith("0") and item.split("/")[1] != "0")
               or not item.isascii() for item in (v.strip() for v in value.split(","))), (value, read)

"""Public ingestion, private app, on a real engine: with ALLOWED_IP_BLOCKS set, a client outside the allowed
networks can capture events and ask /decide, while the login page, /api/ and /admin/ refuse it, directly at
web (PostHog's AllowIPMiddleware, modelled by the stand-in) and through the edge proxy (Caddy, which
refuses before PostHog); an allowed client gets everything; a forged X-Forwarded-For from outside gains
nothing on either path.

Where the addresses come from: the e2e engine runs with --bridge=none --iptables=false, so a request from
the host through a published port arrives through Docker's userland proxy, from a gateway address, and
would not show a real outside/inside split. Every client here is a throwaway container on the
deployment's own networks instead, whose address is its own:
- web directly, proxy off: an outside client on the deployment's default network (its address, handed
  out by Docker, is in no allowed block); the inside client is web's own loopback (127.0.0.1, allowed),
  asked from inside web's container.
- proxy on: two clients on the proxy's network (PROXY_SUBNET, a /29 the test picks) with fixed
  addresses: .4 (outside) and .5 (allowed); they talk to the proxy at PROXY_ADDRESS (.6) and to web
  directly (web joins that network when the proxy is on).
One deployment, the direct checks first, then `invoke proxy --enable` and both paths."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.e2e.harness import free_port, free_proxy_subnet

pytestmark = [pytest.mark.e2e, pytest.mark.lanes(
    "local", reason="captures for a project written straight into the stand-in's posthog_team table")]

DOMAIN = "posthog.test"
TOKEN = "phc_private_app_e2e_token"
EVENT = json.dumps({"api_key": TOKEN, "event": "e2e-private-app", "distinct_id": "outside-client"})
REFUSED = "Your IP is not allowed"


def _requests(base: str, extra: str = "") -> list[tuple[str, str]]:
    """(label, curl arguments) for each request a client makes against ``base``."""
    return [
        ("login", f"{extra} {base}/login"),
        ("api", f"{extra} {base}/api/projects/"),
        ("admin", f"{extra} {base}/admin/"),
        ("capture", f"{extra} -X POST -H 'Content-Type: application/json' --data {shlex.quote(EVENT)} {base}/e/"),
        ("decide", f"{extra} -X POST --data '{{}}' {base}/decide/?v=3"),
        # The client claims to be an allowed address: it must gain nothing.
        ("forged", f"{extra} -H 'X-Forwarded-For: {{allowed}}' {base}/login"),
    ]


def _client(deployment, network: str, requests: list[tuple[str, str]], image: str, ip: str | None = None,
            volumes: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Run the requests from one throwaway container: label -> (status, start of the body)."""
    script = "".join(
        f"code=$(curl --silent --max-time 10 --output /tmp/body --write-out '%{{http_code}}' {args}); "
        f"printf '%s\\t%s\\t%s\\n' {label} \"$code\" \"$(head -c 400 /tmp/body | tr '\\n\\t' '  ')\"; "
        for label, args in requests)
    result = deployment.engine.docker(
        "run", "--rm", "--network", network, *(["--ip", ip] if ip else []), *volumes, image, "sh", "-c", script,
        check=False)
    assert result.returncode == 0, result.stderr
    answers = {}
    for line in result.stdout.splitlines():
        label, code, body = (line.split("\t") + ["", ""])[:3]
        answers[label] = (int(code or 0), body)
    return answers


def _refused(answer: tuple[int, str]) -> bool:
    return answer[0] == 403 and REFUSED in answer[1]


def test_ingestion_is_public_and_the_app_private_directly_and_through_the_proxy(deployment):
    third = int(free_proxy_subnet()[1].split(".")[2])  # a /29 no bridge here routes, in this worker's band
    subnet, proxy_address = f"10.254.{third}.0/29", f"10.254.{third}.6"
    outside_edge, inside_edge = f"10.254.{third}.4", f"10.254.{third}.5"
    deployment.set_env(PROXY_HTTP_PORT=str(free_port()), PROXY_HTTPS_PORT=str(free_port()), PROXY_SUBNET=subnet,
                       PROXY_ADDRESS=proxy_address, ALLOWED_IP_BLOCKS=f"127.0.0.1, {inside_edge}/32")
    image = deployment.values()["PROXY_IMAGE"]  # has sh and curl
    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        deployment.psql(f"INSERT INTO posthog_team (api_token, name) VALUES ('{TOKEN}', 'e2e');")

        # 1. Directly at web, proxy off (IS_BEHIND_PROXY=false: PostHog ignores X-Forwarded-For altogether).
        outside = _client(deployment, "posthog_default",
                          [(label, args.replace("{allowed}", "127.0.0.1")) for label, args in _requests("http://web:8000")],
                          image)
        assert all(_refused(outside[label]) for label in ("login", "api", "admin", "forged")), outside
        assert outside["capture"][0] == 200 and outside["decide"][0] == 200, outside
        inside = deployment.compose("exec", "-T", "web", "python", "-c", (
            "import urllib.request as u, urllib.error as e\n"
            "for path in ('/login', '/api/projects/', '/admin/'):\n"
            "    try:\n        code = u.urlopen('http://127.0.0.1:8000' + path, timeout=5).status\n"
            "    except e.HTTPError as error:\n        code = error.code\n"
            "    print(path, code)\n")).stdout.split()
        inside = dict(zip(inside[::2], map(int, inside[1::2])))
        # Allowed: nothing is refused (the stand-in has no API or admin views of its own: 404, not 403).
        assert inside["/login"] == 200 and 403 not in inside.values(), inside

        # 2. The edge proxy on: Caddy judges the connection's address, PostHog the one Caddy forwards.
        enabled = deployment.invoke("proxy", "--enable", "--domain", DOMAIN)
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        assert deployment.values()["TRUSTED_PROXIES"] == proxy_address
        ca = ("-v", f"{deployment.root / 'certs' / 'ca.crt'}:/ca.crt:ro")
        through = f"--cacert /ca.crt --resolve {DOMAIN}:443:{proxy_address}"
        direct = "-H 'X-Forwarded-Proto: https'"  # past Django's SSL redirect, which comes first
        requests = ([(f"proxy-{label}", args.replace("{allowed}", inside_edge))
                     for label, args in _requests(f"https://{DOMAIN}", through)]
                    + [(f"web-{label}", args.replace("{allowed}", inside_edge))
                       for label, args in _requests("http://web:8000", direct)]
                    + [("seen", f"{through} -H 'X-Forwarded-For: 203.0.113.9' https://{DOMAIN}/_standin/request")])
        outside = _client(deployment, "posthog_edge", requests, image, ip=outside_edge, volumes=ca)
        for path in ("proxy", "web"):
            assert all(_refused(outside[f"{path}-{label}"]) for label in ("login", "api", "admin", "forged")), outside
            assert outside[f"{path}-capture"][0] == 200 and outside[f"{path}-decide"][0] == 200, outside
        assert outside["seen"][0] == 403, outside["seen"]  # not a public path: Caddy refuses it

        inside = _client(deployment, "posthog_edge", requests, image, ip=inside_edge, volumes=ca)
        for path in ("proxy", "web"):
            assert inside[f"{path}-login"][0] == 200, inside
            assert not any(_refused(inside[f"{path}-{label}"]) for label in ("login", "api", "admin")), inside
            assert inside[f"{path}-capture"][0] == 200 and inside[f"{path}-decide"][0] == 200, inside
        # Through the proxy a client's X-Forwarded-For is replaced by its own address (PostHog saw .5, not
        # the forged value); directly, 1.43 refuses any X-Forwarded-For from a peer that is not a trusted
        # proxy, even an allowed one (posthog/middleware.py:64-67).
        assert inside["proxy-forged"][0] == 200 and _refused(inside["web-forged"]), inside
        assert inside["seen"][0] == 200 and f'"client_ip": "{inside_edge}"' in inside["seen"][1], inside["seen"]

        checked = deployment.invoke("harden", "--check", "--json")
        assert {i["id"]: i["status"] for i in json.loads(checked.stdout)["items"]}["app-private"] == "pass"
    finally:
        # The fixture's `down --volumes` reads COMPOSE_FILE, which lists the proxy while it is on.
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)

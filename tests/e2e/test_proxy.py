"""The edge proxy on a real engine, with the Caddy release the kit pins: `invoke proxy --enable` on a
running deployment that holds data, then HTTPS verified with the deployment's CA, HTTP redirected,
WEB_PORT closed, PostHog (the stand-in) seeing the forwarded scheme, host and client address and
no spoofed X-Forwarded-For; `invoke proxy --disable` and everything is as before, data intact.
With the proxy on, `status` counts and shows it, `logs -s proxy` and `logs --errors` read its log (its
warnings are no errors), `doctor` checks its ports and `harden --check` allows them. Also `invoke status`
showing volume sizes and free disk, and log rotation on the containers."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from posthog_compose.configuration import manifest
from tests.conftest import REPO
from tests.e2e.harness import free_port, free_proxy_subnet

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="reads what PostHog saw from the stand-in's /_standin/request endpoint")]

DOMAIN = "posthog.test"


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "10", *args], capture_output=True,
                          text=True)


def _closed(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_proxy_on_and_off_on_a_live_deployment(deployment):
    http_port, https_port = free_port(), free_port()
    third = int(free_proxy_subnet()[1].split(".")[2])  # a /29 no bridge here routes, in this worker's band
    subnet, address = f"10.254.{third}.0/29", f"10.254.{third}.6"
    deployment.set_env(PROXY_HTTP_PORT=str(http_port), PROXY_HTTPS_PORT=str(https_port), PROXY_SUBNET=subnet,
                       PROXY_ADDRESS=address)
    started = deployment.invoke("up", "--timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr
    deployment.psql("CREATE TABLE e2e_proxy_probe (note text); INSERT INTO e2e_proxy_probe VALUES ('kept');")
    before = deployment.values()
    web_port = int(before["WEB_PORT"])
    assert deployment.http("/")[0] == 302

    # Log rotation reaches the containers, from .env.
    logging = json.loads(deployment.engine.docker("inspect", "--format", "{{json .HostConfig.LogConfig}}",
                                                  "posthog-kafka-1").stdout)
    assert logging == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "20m"}}

    checked = deployment.invoke("harden", "--check", "--json")
    assert {i["id"]: i["status"] for i in json.loads(checked.stdout)["items"]}["public-https"] == "fail"

    enabled = deployment.invoke("proxy", "--enable", "--domain", DOMAIN)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    assert "through the proxy (certificate verified)" in enabled.stdout
    values = deployment.values()
    # The tested Caddy is the shipped one: the release PROXY_IMAGE's default pins (caddy:X.Y.Z).
    shipped = manifest.load(REPO).by_name["PROXY_IMAGE"].default.split("@")[0].split(":")[1]
    running = deployment.compose("exec", "-T", "proxy", "caddy", "version").stdout
    assert running.startswith(f"v{shipped} "), (shipped, running)
    site = f"https://{DOMAIN}:{https_port}"
    assert (values["SITE_URL"], values["IS_BEHIND_PROXY"], values["TRUSTED_PROXIES"], values["PROXY_TLS"]) == \
        (site, "true", address, "private")
    ca = str(deployment.root / "certs" / "ca.crt")
    resolve = f"{DOMAIN}:{https_port}:127.0.0.1"

    # HTTPS: the certificate verifies against the deployment's CA (and not without it); HSTS is sent.
    verified = _curl("--cacert", ca, "--resolve", resolve, "--include", f"{site}/")
    assert verified.returncode == 0, verified.stderr
    head = verified.stdout.lower()
    assert head.startswith("http/") and " 302" in head.splitlines()[0] and "location: /preflight" in head
    assert "strict-transport-security: max-age=31536000" in head and "x-content-type-options: nosniff" in head
    unverified = _curl("--resolve", resolve, f"{site}/")
    assert unverified.returncode == 60, unverified  # curl: peer certificate cannot be authenticated

    # HTTP answers only with a redirect to the same path on SITE_URL.
    redirect = _curl("--include", "-H", f"Host: {DOMAIN}", f"http://127.0.0.1:{http_port}/insights?x=1")
    assert redirect.returncode == 0 and " 308" in redirect.stdout.splitlines()[0], redirect.stdout
    assert f"location: {site}/insights?x=1" in redirect.stdout.lower()

    # Plain WEB_PORT is closed.
    assert _closed(web_port)

    # What PostHog sees: https, the public host, the proxy's fixed address as peer, and a client
    # address the client cannot forge (Caddy replaces a spoofed X-Forwarded-For).
    seen = _curl("--cacert", ca, "--resolve", resolve, "-H", "X-Forwarded-For: 6.6.6.6",
                 f"{site}/_standin/request")
    assert seen.returncode == 0, seen.stderr
    request = json.loads(seen.stdout)
    assert request["scheme"] == "https" and request["host"] == f"{DOMAIN}:{https_port}"
    assert request["remote_addr"] == address and address in values["TRUSTED_PROXIES"].split(",")
    assert request["client_ip"] != "6.6.6.6" and "6.6.6.6" not in request["x_forwarded_for"]

    # A client inside the proxy's network: PostHog sees exactly its address.
    client = deployment.engine.docker(
        "run", "--rm", "--network", "posthog_edge", "-v", f"{ca}:/ca.crt:ro", values["PROXY_IMAGE"], "sh", "-c",
        f"hostname -i; curl --silent --show-error --cacert /ca.crt --resolve {DOMAIN}:443:{address} "
        f"https://{DOMAIN}/_standin/request", check=False)
    assert client.returncode == 0, client.stderr
    own_address, body = client.stdout.strip().split("\n", 1)
    assert json.loads(body)["client_ip"] == own_address.split()[0]

    # The checks agree.
    assert deployment.invoke("config-check").returncode == 0
    # The proxy's volumes are no longer in the compose files the fixture's `down --volumes` reads.
    deployment.engine.docker("volume", "rm", "posthog_proxy-data", "posthog_proxy-config", check=False)
    checked = deployment.invoke("harden", "--check", "--json")
    items = {i["id"]: i for i in json.loads(checked.stdout)["items"]}
    assert items["public-https"]["status"] == "pass"
    # The proxy's 80 and 443 are the published ports allowed while it is on; web publishes none.
    assert items["ports"]["status"] == "pass", items["ports"]["reason"]

    # The proxy is a service of the deployment: status counts and shows it, its log is there, and
    # Caddy's warn-level lines (the OCSP stapling warning of a certificate from the deployment's CA) are
    # no errors.
    shown = deployment.invoke("status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert any(line.startswith("proxy ") for line in shown.stdout.splitlines()), shown.stdout
    assert "9 of 9 services running and healthy" in " ".join(shown.stdout.split()), shown.stdout
    rows = {row["service"]: row for row in json.loads(deployment.invoke("status", "--json").stdout)["services"]}
    assert (rows["proxy"]["state"], rows["proxy"]["health"], rows["proxy"]["verdict"]) == ("running", "healthy", "ok")
    proxy_logs = deployment.invoke("logs", "-s", "proxy", "--tail", "50")
    assert proxy_logs.returncode == 0 and "proxy-1" in proxy_logs.stdout, proxy_logs.stdout + proxy_logs.stderr
    errors = deployment.invoke("logs", "--errors", "-s", "proxy")
    assert errors.returncode == 0 and "0 error line(s) (proxy 0)" in errors.stdout, errors.stdout
    # doctor checks the proxy's ports (held by it), not WEB_PORT, which is no longer published.
    doctor = {c["name"]: c for c in json.loads(deployment.invoke("doctor", "--json").stdout)}
    assert "web port" not in doctor, doctor
    for name in ("proxy http port", "proxy https port"):
        assert doctor[name]["status"] == "ok" and "held by this deployment's edge proxy" in doctor[name]["detail"]

    # status: volume sizes and free disk, for people and for monitoring.
    status = deployment.invoke("status", "--json")
    assert status.returncode == 0, status.stderr
    disk = json.loads(status.stdout)["disk"]
    assert disk["free_bytes"] > 0 and disk["total_bytes"] >= disk["free_bytes"]
    assert disk["volumes"]["postgres-data"] > 1_000_000 and "proxy-data" in disk["volumes"]
    text = deployment.invoke("status").stdout
    assert "free of" in text and "postgres-data" in text

    # Off again: WEB_PORT serves plain HTTP as before, the proxy's ports are closed, data intact.
    disabled = deployment.invoke("proxy", "--disable")
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    after = deployment.values()
    for name in ("SITE_URL", "IS_BEHIND_PROXY", "TRUSTED_PROXIES", "DISABLE_SECURE_SSL_REDIRECT", "SECURE_COOKIES"):
        assert after[name] == before[name], name
    assert "COMPOSE_FILE" not in after
    assert deployment.http("/")[0] == 302
    assert _closed(https_port) and _closed(http_port)
    assert "proxy" not in deployment.states()
    assert deployment.engine.docker("network", "inspect", "posthog_edge", check=False).returncode != 0
    assert deployment.psql("SELECT note FROM e2e_proxy_probe;").stdout.strip() == "kept"
    assert deployment.invoke("config-check").returncode == 0
    # The proxy's volumes are no longer in the compose files the fixture's `down --volumes` reads.
    deployment.engine.docker("volume", "rm", "posthog_proxy-data", "posthog_proxy-config", check=False)

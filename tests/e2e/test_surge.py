"""Replacing web behind the edge proxy fails no request, on a real engine with the Caddy release the kit
pins: with the proxy on, a bounded loop of GET /_health and POST /capture through it runs while `invoke
upgrade` moves web to a new version (web replaced beside the old one) and while an upgrade to a broken
version rolls back (the broken web never joins the rotation). Afterwards exactly one web container runs,
and a plain `compose up -d` recreates nothing. (tests/e2e/test_zero_downtime.py measures more.)"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import threading
import time

import pytest

from tests.e2e.harness import free_port, start_registry
from tests.e2e.test_upgrade import REPOSITORY

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="upgrades between stand-in tags pushed to a "
                                                 "registry built here (v1, v2, broken)")]

# Numbered releases whose moves upgrades.yml reviewed and allowed to surge (1.41.2 -> 1.41.3 -> 1.41.4): the
# stand-in v1, v2 and broken are published under them.
V1, V2, BROKEN = "release-1.41.2", "release-1.41.3", "release-1.41.4"

DOMAIN = "posthog.test"
#: At most this many requests a second in all (two clients), so the loop measures the switch, not the host.
RATE = 100


@pytest.fixture(scope="module")
def registry(e2e_engine):
    registry = start_registry(e2e_engine)
    prefix = "posthog-compose-e2e/posthog-standin"
    registry.publish(f"{prefix}:v1", REPOSITORY, V1)
    registry.publish(f"{prefix}:v2", REPOSITORY, V2)
    registry.publish(f"{prefix}:broken", REPOSITORY, BROKEN)
    yield registry
    registry.stop()


class Traffic:
    """Requests through the proxy (HTTPS, verified with the deployment's CA) until stopped: each one
    either answers below 500 or counts as failed."""

    def __init__(self, port: int, ca: str):
        self.port = port
        self.context = ssl.create_default_context(cafile=ca)
        self.stop = threading.Event()
        self.sent = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(post,)) for post in (False, True)]

    def one(self, post: bool) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        connection = http.client.HTTPSConnection(DOMAIN, self.port, context=self.context, timeout=30)
        connection.sock = self.context.wrap_socket(sock, server_hostname=DOMAIN)
        try:
            if post:
                body = json.dumps({"api_key": "phc_e2e_surge", "event": "surge", "distinct_id": "e2e"})
                connection.request("POST", "/capture/", body=body, headers={"Content-Type": "application/json"})
            else:
                connection.request("GET", "/_health")
            answer = connection.getresponse()
            answer.read()
            if answer.status >= 500:
                raise RuntimeError(f"{answer.status}")
        finally:
            connection.close()

    def loop(self, post: bool) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.one(post)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, with what it was
                with self.lock:
                    self.failed.append(f"{'POST /capture' if post else 'GET /_health'} at "
                                       f"{time.strftime('%H:%M:%S')}: {exc!r}")
            with self.lock:
                self.sent += 1
            time.sleep(max(0.0, 2 / RATE - (time.monotonic() - started)))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def web_containers(deployment) -> list[dict]:
    ids = deployment.engine.docker("ps", "--all", "--quiet", "--filter", "label=com.docker.compose.project=posthog",
                                   "--filter", "label=com.docker.compose.service=web").stdout.split()
    return json.loads(deployment.engine.docker("inspect", *ids).stdout) if ids else []


def all_containers(deployment) -> set[str]:
    return set(deployment.engine.docker("ps", "--all", "--quiet", "--no-trunc", "--filter",
                                        "label=com.docker.compose.project=posthog").stdout.split())


def test_web_is_replaced_behind_the_proxy_without_a_failed_request(deployment, registry):
    image = f"{registry.address}/{REPOSITORY}"
    third = random.randint(1, 250)  # engines of parallel runs share the host's routes: one subnet each
    https_port = free_port()
    deployment.set_env(POSTHOG_IMAGE=f"{image}:{V1}", PROXY_HTTP_PORT=str(free_port()),
                       PROXY_HTTPS_PORT=str(https_port), PROXY_SUBNET=f"10.254.{third}.0/29",
                       PROXY_ADDRESS=f"10.254.{third}.6")
    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        enabled = deployment.invoke("proxy", "--enable", "--domain", DOMAIN)
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        ca = str(deployment.root / "certs" / "ca.crt")

        # v1 -> v2: web replaced beside the old container.
        with Traffic(https_port, ca) as traffic:
            time.sleep(2)
            upgraded = deployment.invoke("upgrade", "--to", V2, "--timeout", "240")
            time.sleep(2)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        assert "web: replaced beside the running container behind the edge proxy" in upgraded.stdout
        assert "the proxy now dials it alone" in upgraded.stdout  # drained before the old one stopped
        assert traffic.sent > 100 and not traffic.failed, (traffic.sent, traffic.failed[:10])
        # The pin is gone again: the proxy's /etc/hosts is as Docker wrote it, and web resolves by DNS.
        hosts = deployment.compose("exec", "-T", "proxy", "cat", "/etc/hosts").stdout
        assert "posthog-compose" not in hosts and "\tweb\t" not in hosts, hosts
        (web,) = web_containers(deployment)
        assert web["Config"]["Image"] == f"{image}:{V2}" and web["State"]["Status"] == "running"

        # v2 -> broken: the broken web never turns ready, never joins; the old one serves throughout.
        with Traffic(https_port, ca) as traffic:
            time.sleep(2)
            broken = deployment.invoke("upgrade", "--to", BROKEN, "--timeout", "90")
            time.sleep(2)
        assert broken.returncode == 1, broken.stdout + broken.stderr
        # The messages are true: the new web was not replaced in, and the rollback had nothing to replace.
        assert "web was not replaced" in broken.stdout + broken.stderr
        assert "web: replaced beside" not in broken.stdout and "nothing to replace" in broken.stdout
        assert "Rolled back in" in broken.stdout
        assert traffic.sent > 100 and not traffic.failed, (traffic.sent, traffic.failed[:10])
        (after,) = web_containers(deployment)
        assert after["Id"] == web["Id"]  # the serving container was never touched

        # What runs is what Compose expects: a plain `up -d` recreates nothing.
        before = all_containers(deployment)
        deployment.compose("up", "--detach")
        assert all_containers(deployment) == before
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", check=False)

"""Recreating only what changed, on a real Docker Engine: after an .env change that reaches worker
alone, `invoke up --dry-run` names worker (after nothing else) and changes nothing, and `invoke up`
recreates worker and leaves every other container as it was (same container id). The hashes compared
are the ones Compose itself computes and labels. With the edge proxy on, a change that reaches web
and worker replaces web beside itself (the surge), with every request through the proxy answered,
then recreates worker, and leaves the rest alone."""

from __future__ import annotations

import subprocess
import threading

import pytest

from tests.e2e.harness import free_port, free_proxy_subnet

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")

def _container_ids(deployment) -> dict[str, str]:
    return {service: row["ID"] for service, row in deployment.states().items()}


def test_an_env_change_that_reaches_worker_only_recreates_only_worker(deployment):
    # The kit reads no .env name for worker alone: the operator's own, added the documented way
    # (docs/adding-variables.md), reaches worker only.
    added = deployment.invoke("add-env-var", "WORKER_TUNING", "--description", "A setting of the worker alone.",
                              "--category", "PostHog App", "--services", "worker", "--value", "a")
    assert added.returncode == 0, added.stdout + added.stderr
    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        before = _container_ids(deployment)
        assert set(before) == set(SERVICES)

        deployment.set_env(WORKER_TUNING="b")
        dry = deployment.invoke("up", "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        lines = dry.stdout.splitlines()
        assert "(dry run) in this order:" in lines, dry.stdout
        ordered = lines[lines.index("(dry run) in this order:") + 1:]
        assert ordered[0].startswith("  worker: recreated in place; configuration changed since it was started"), \
            dry.stdout
        assert not any(line.startswith(f"  {name}: ") for line in ordered for name in SERVICES if name != "worker")
        assert _container_ids(deployment) == before  # the dry run changed nothing

        again = deployment.invoke("up", "--timeout", "300")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Recreating only what changed, in this order:\n  worker: recreated in place" in again.stdout
        after = _container_ids(deployment)
        assert {name for name in SERVICES if after[name] != before[name]} == {"worker"}
        status = deployment.invoke("status")
        assert status.stdout.strip().splitlines()[-1] == "8 of 8 services running and healthy.", status.stdout
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def test_with_the_proxy_on_up_surges_web_then_recreates_worker_and_no_request_fails(deployment):
    https_port = free_port()
    third = int(free_proxy_subnet()[1].split(".")[2])  # a /29 no bridge here routes, in this worker's band
    deployment.set_env(PROXY_HTTP_PORT=str(free_port()), PROXY_HTTPS_PORT=str(https_port),
                       PROXY_SUBNET=f"10.254.{third}.0/29", PROXY_ADDRESS=f"10.254.{third}.6")
    added = deployment.invoke("add-env-var", "WEB_AND_WORKER_TUNING", "--description", "A setting of web and worker.",
                              "--category", "PostHog App", "--services", "web,worker", "--value", "a")
    assert added.returncode == 0, added.stdout + added.stderr
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def probe() -> None:  # GET / through the proxy, one after another, until told to stop
        nonlocal answered
        ca, site = str(deployment.root / "certs" / "ca.crt"), f"https://posthog.test:{https_port}/"
        while not stop.is_set():
            result = subprocess.run(["curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}",
                                     "--max-time", "10", "--cacert", ca, "--resolve",
                                     f"posthog.test:{https_port}:127.0.0.1", site], capture_output=True, text=True)
            if result.stdout in ("200", "302"):
                answered += 1
            else:
                failures.append(f"{result.returncode} {result.stdout} {result.stderr.strip()}")

    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        enabled = deployment.invoke("proxy", "--enable", "--domain", "posthog.test")
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        before = _container_ids(deployment)
        deployment.set_env(WEB_AND_WORKER_TUNING="b")
        dry = deployment.invoke("up", "--dry-run")
        assert "  web: surge (no failed requests through the proxy); configuration changed since it was started " \
               "(WEB_AND_WORKER_TUNING)" in dry.stdout.splitlines(), dry.stdout
        assert _container_ids(deployment) == before

        watcher = threading.Thread(target=probe, daemon=True)
        watcher.start()
        again = deployment.invoke("up", "--timeout", "300")
        stop.set()
        watcher.join(timeout=30)
        assert again.returncode == 0, again.stdout + again.stderr
        lines = again.stdout.splitlines()
        assert lines.index("  web: surge (no failed requests through the proxy); configuration changed since it "
                           "was started (WEB_AND_WORKER_TUNING)") + 1 == \
            lines.index("  worker: recreated after web; configuration changed since it was started "
                        "(WEB_AND_WORKER_TUNING)"), again.stdout
        after = _container_ids(deployment)
        assert {name for name in after if after[name] != before.get(name)} == {"web", "worker"}
        assert answered > 0 and failures == [], (answered, failures[:5])
    finally:
        stop.set()
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        deployment.engine.docker("volume", "rm", "posthog_proxy-data", "posthog_proxy-config", check=False)

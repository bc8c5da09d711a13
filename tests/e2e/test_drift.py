"""Drift on a real Docker Engine: `invoke status` tells which running containers no longer match the
files (a changed .env value, an image pinned but not pulled, a container started by hand, an orphan),
`invoke up --dry-run` lists what `up` would recreate without touching anything, and `invoke up` makes
status clean again. The hashes compared are the ones Compose itself computes and labels."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")


def _container_ids(deployment) -> dict[str, str]:
    return {service: row["ID"] for service, row in deployment.states().items()}


def _drift(deployment) -> tuple[dict[str, list[str]], dict]:
    """status --json: service -> the kinds of drift it has (services without any left out), and the
    whole drift section."""
    result = deployment.invoke("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    flagged = {row["service"]: [f["kind"] for f in row["drift"]] for row in report["services"] if row.get("drift")}
    return flagged, report["drift"]


def test_a_changed_env_value_is_flagged_on_the_services_that_read_it_until_up_recreates_them(deployment):
    from posthog_compose.configuration import manifest

    readers = set(manifest.load(deployment.root)["TRUSTED_PROXIES"].services)
    assert readers == {"web", "worker"}  # what the test is about: some services read it, others do not
    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        flagged, section = _drift(deployment)
        assert flagged == {} and section == {"checked": True, "error": None, "findings": []}

        before = _container_ids(deployment)
        deployment.set_env(TRUSTED_PROXIES="10.1.2.3")
        flagged, _ = _drift(deployment)
        assert flagged == {name: ["config"] for name in readers}
        status = deployment.invoke("status")
        assert status.returncode == 0, status.stderr  # drift is reported, not an error
        reason = "configuration changed since it was started (TRUSTED_PROXIES): run `invoke up` to recreate it"
        assert f"web: {reason}" in status.stdout.splitlines() and f"worker: {reason}" in status.stdout.splitlines()
        assert status.stdout.strip().splitlines()[-1] == (
            "8 of 8 services running and healthy; not as the files say: web, worker (see above).")

        dry = deployment.invoke("up", "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        lines = dry.stdout.splitlines()
        assert "  web     recreate: configuration changed since it was started (TRUSTED_PROXIES)" in lines
        assert "  worker  recreate: configuration changed since it was started (TRUSTED_PROXIES)" in lines
        unchanged = "db, redis, clickhouse, zookeeper, kafka, plugins"
        assert f"  left as they are (running as the files say): {unchanged}" in lines
        assert _container_ids(deployment) == before  # nothing was recreated
        assert set(_drift(deployment)[0]) == readers  # and nothing was applied

        again = deployment.invoke("up", "--timeout", "300")
        assert again.returncode == 0, again.stdout + again.stderr
        after = _container_ids(deployment)
        assert {name for name in SERVICES if after[name] != before[name]} == readers
        flagged, section = _drift(deployment)
        assert flagged == {} and section["findings"] == []
        clean = deployment.invoke("status")
        assert clean.stdout.strip().splitlines()[-1] == "8 of 8 services running and healthy."
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def test_an_image_not_pulled_a_container_started_by_hand_and_an_orphan_are_told(deployment):
    redis_image = deployment.values()["REDIS_IMAGE"]
    by_hand, orphan = "posthog-debug", "posthog-retired-1"
    try:
        deployment.compose("up", "--detach", "--wait", "--wait-timeout", "120", "redis")
        deployment.set_env(REDIS_IMAGE=redis_image.rsplit(":", 1)[0] + ":not-pulled-here")
        flagged, _ = _drift(deployment)
        assert flagged == {"redis": ["image-missing", "config"]}
        dry = deployment.invoke("up", "--dry-run")
        assert any(line.startswith("  redis") and "pull and recreate: configuration changed since it was started "
                   "(image); the image" in line for line in dry.stdout.splitlines()), dry.stdout
        deployment.set_env(REDIS_IMAGE=redis_image)

        deployment.engine.docker("run", "--detach", "--name", by_hand, "--network", "posthog_default",
                                 "--entrypoint", "sleep", redis_image, "600")
        deployment.engine.docker("run", "--detach", "--name", orphan, "--label", "com.docker.compose.project=posthog",
                                 "--label", "com.docker.compose.service=retired", "--entrypoint", "sleep",
                                 redis_image, "600")
        _, section = _drift(deployment)
        assert [(f["kind"], f["container"]) for f in section["findings"]] == [("by-hand", by_hand),
                                                                             ("orphan", orphan)]
        lines = deployment.invoke("status").stdout.splitlines()
        assert f"Container {by_hand} was started by hand, not by Compose (it has no Compose labels): `invoke up` " \
               f"does not manage it; `docker rm -f {by_hand}` when it is not needed" in lines
        assert any(line.startswith(f"Container {orphan} runs service retired, which no compose file") for line in lines)
    finally:
        deployment.engine.docker("rm", "--force", by_hand, orphan, check=False)
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)

"""Recreating only what changed, on a real Docker Engine: after an .env change that reaches worker
alone, `invoke up --dry-run` names worker (after nothing else) and changes nothing, and `invoke up`
recreates worker and leaves every other container as it was (same container id). The hashes compared
are the ones Compose itself computes and labels."""

from __future__ import annotations

import pytest

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

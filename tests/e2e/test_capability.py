"""Health from capability on a real Docker Engine: PostgreSQL's, ClickHouse's and Kafka's data volumes each
on a small filesystem of its own (tmpfs volumes made before the stack starts), filled until the datastore
cannot write (PostgreSQL cannot extend a file; ClickHouse cannot reserve room for a part; Kafka cannot
append the probe's message to its log). Every
container stays running and healthy, yet `invoke status` must exit non-zero saying db cannot write,
`invoke doctor` must say so, and `invoke upgrade` must refuse before it changes anything; once the
space is freed the deployment is healthy again. Also the time `invoke status` takes. (A row of the fault table in spirit; it needs its
own stack because the volume must exist before the first `up`.)"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from tests.e2e import harness

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

#: Large enough for each datastore's data with PostHog's tables, small enough to fill at once.
VOLUMES = {"postgres-data": ("db", "/var/lib/postgresql/data", "160m"),
           "clickhouse-data": ("clickhouse", "/var/lib/clickhouse", "256m"),
           "kafka-data": ("kafka", "/var/lib/kafka/data", "64m")}
FILLER = "posthog-compose-e2e-filler"


def _fill(deployment, volume):
    service, path, _ = VOLUMES[volume]
    deployment.compose("exec", "-T", service, "sh", "-c", f"dd if=/dev/zero of={path}/{FILLER} bs=1M 2>/dev/null; sync",
                       check=False)


def _free(deployment, volume):
    service, path, _ = VOLUMES[volume]
    deployment.compose("exec", "-T", service, "rm", "-f", f"{path}/{FILLER}")


def _status_seconds(deployment, checkout=None, runs=3) -> float:
    """The median wall time of `invoke status` (with the package of ``checkout`` when given)."""
    env = dict(deployment.env, POSTHOG_COMPOSE_ROOT=str(deployment.root))
    if checkout:
        env["PYTHONPATH"] = checkout
    else:
        from tests.conftest import REPO

        env["PYTHONPATH"] = str(REPO)
    times = []
    for _ in range(runs):
        clock = time.monotonic()
        subprocess.run([sys.executable, "-m", "invoke", "status"], cwd=deployment.root, env=env, capture_output=True,
                       timeout=300)
        times.append(time.monotonic() - clock)
    return statistics.median(times)


def _status(deployment):
    result = deployment.invoke("status", "--json")
    report = json.loads(result.stdout)
    return result, {row["service"]: row for row in report["services"]}, report


def test_a_full_postgres_volume_is_failing_blocks_the_upgrade_and_recovers(deployment):
    engine = deployment.engine
    deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
    for name, (_, _, size) in VOLUMES.items():
        volume = f"posthog_{name}"  # the project is "posthog" (every deployment of the suite)
        engine.docker("volume", "rm", "-f", volume, check=False)
        # Labelled as Compose labels its own volumes, so that `up` adopts it as the deployment's.
        engine.docker("volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                      "--opt", f"o=size={size}", "--label", "com.docker.compose.project=posthog",
                      "--label", f"com.docker.compose.volume={name}", volume)
    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        result, rows, report = _status(deployment)
        assert result.returncode == 0, result.stdout + result.stderr
        for service in ("db", "clickhouse", "kafka"):
            assert rows[service]["verdict"] == "ok" and rows[service]["writes"]["verdict"] == "ok", rows[service]
        own = report["disk"]["filesystems"]["postgres-data"]
        assert own["total_bytes"] <= 170 * 1024 * 1024, own  # measured on the volume, not on the data root
        seconds = _status_seconds(deployment)
        compared = os.environ.get("E2E_COMPARE_CHECKOUT")  # another checkout's package, for before/after
        before_seconds = _status_seconds(deployment, compared) if compared else None
        harness.progress(f"    invoke status: {seconds:.2f} s (median of 3)"
                 f"{f'; {before_seconds:.2f} s with the package of {compared}' if compared else ''}")

        # Fill the volume (dd stops at ENOSPC): PostgreSQL keeps running and pg_isready stays happy.
        _fill(deployment, "postgres-data")
        assert deployment.states()["db"].get("Health") == "healthy"
        text = deployment.invoke("status")
        assert text.returncode == 1, text.stdout + text.stderr
        assert "db (PostgreSQL): cannot write: could not extend file" in text.stdout, text.stdout
        assert "No space left on device" in text.stdout and "Fix: free space on the filesystem of postgres-data" \
            in text.stdout
        assert "db cannot write" in text.stderr and "Traceback" not in text.stdout + text.stderr
        assert "8 of 8 services running and healthy" not in text.stdout
        db = next(line.split() for line in text.stdout.splitlines() if line.startswith("db "))
        assert db[1:4] == ["running", "healthy", "failing"], text.stdout
        result, rows, _ = _status(deployment)
        assert result.returncode == 1 and rows["db"]["writes"]["verdict"] == "failing"

        doctor = deployment.invoke("doctor")
        assert any(line.startswith("error") and "datastore writes" in line and "cannot write" in line
                   for line in doctor.stdout.splitlines()), doctor.stdout
        assert doctor.returncode == 1

        before = deployment.values()["POSTHOG_IMAGE"]
        target = hashlib.sha1(b'capability').hexdigest()
        refused = deployment.invoke("upgrade", "--to", target, "--skip-backup")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "upgrade stopped before the switch, nothing changed: db cannot write" in refused.stderr, refused.stderr
        assert "Pulling" not in refused.stdout and deployment.values()["POSTHOG_IMAGE"] == before

        # Free the space: the next status is healthy again, without a restart.
        _free(deployment, "postgres-data")
        healed = deployment.invoke("status")
        assert healed.returncode == 0, healed.stdout + healed.stderr
        assert healed.stdout.strip().splitlines()[-1] == "8 of 8 services running and healthy.", healed.stdout
        assert deployment.psql("CREATE TABLE e2e_after (x int); INSERT INTO e2e_after VALUES (1); "
                               "SELECT count(*) FROM e2e_after;").stdout.strip().endswith("1")

        # ClickHouse on a full volume refuses the part (NOT_ENOUGH_SPACE) while /ping still answers.
        _fill(deployment, "clickhouse-data")
        full = deployment.invoke("status")
        assert full.returncode == 1, full.stdout + full.stderr
        assert "clickhouse (ClickHouse): cannot write: Cannot reserve" in full.stdout, full.stdout
        assert "clickhouse cannot write" in full.stderr
        _free(deployment, "clickhouse-data")
        again = deployment.invoke("status")
        assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == "8 of 8 services running and healthy."

        # Kafka on a full volume is failing while its port answers: the produce is refused (KafkaStorageException)
        # or, where the message still fits the segment's last page, the volume's filesystem is full.
        _fill(deployment, "kafka-data")
        kafka = deployment.invoke("status")
        assert kafka.returncode == 1, kafka.stdout + kafka.stderr
        assert "kafka (Kafka): cannot write: " in kafka.stdout, kafka.stdout
        assert "Fix: free space on the filesystem of kafka-data" in kafka.stdout and "kafka cannot write" in kafka.stderr
        _free(deployment, "kafka-data")
        assert deployment.invoke("status").returncode == 0
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        for name in VOLUMES:
            engine.docker("volume", "rm", "-f", f"posthog_{name}", check=False)

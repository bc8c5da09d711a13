"""ClickHouse keeps serving during `invoke backup`: a query loop inside the clickhouse container asks
`SELECT count() FROM posthog.events` every 100 ms for the whole backup and no query fails; the archive
restores with the same counts. An archive of a stopped ClickHouse (the way every archive was taken
before: a tar of the whole volume) restores too. The pause and the queries answered are written to
test-artifacts/e2e-backup-online.json."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.harness import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

PASSPHRASE = "correct horse battery staple online"
COUNT = "SELECT count() FROM posthog.events"
STOP_FILE = "/tmp/e2e-stop-queries"
#: One line per query: "<epoch seconds> ok <answer>" or "<epoch seconds> fail <last line of the error>".
#: Runs inside the container (sh and clickhouse-client are in the real image and in the stand-in), so
#: every query is a real client round trip without a `compose exec` per query.
QUERY_LOOP = f"""
while [ ! -e {STOP_FILE} ]; do
    at=$(date +%s.%N)
    if answer=$(clickhouse-client --query "{COUNT}" 2>&1); then
        echo "$at ok $answer"
    else
        echo "$at fail $(printf '%s' "$answer" | tail -n 1)"
    fi
    sleep 0.1
done
echo "$(date +%s.%N) stopped"
"""


def _clickhouse(deployment: Deployment, sql: str, data: str | None = None) -> str:
    return deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query", sql, input=data).stdout


def _counts(deployment: Deployment) -> tuple[str, str]:
    return (_clickhouse(deployment, COUNT).strip(),
            _clickhouse(deployment, "SELECT count() FROM posthog.e2e_online").strip())


def _backup_while_querying(deployment: Deployment) -> tuple[dict, list[str], float, float]:
    """`invoke backup --json` with the query loop running; the summary, the loop's lines, start and end."""
    from posthog_compose.configuration import compose

    deployment.compose("exec", "-T", "clickhouse", "rm", "-f", STOP_FILE)
    loop = subprocess.Popen(compose.command(deployment.root, "exec", "-T", "clickhouse", "sh", "-c", QUERY_LOOP),
                            cwd=deployment.root, env=deployment.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        time.sleep(2)  # the loop answers before the backup starts
        started = time.time()
        made = deployment.invoke("backup", "--json")
        ended = time.time()
        time.sleep(1)
        assert made.returncode == 0, made.stdout + made.stderr
        deployment.compose("exec", "-T", "clickhouse", "touch", STOP_FILE, check=False)
        output, _ = loop.communicate(timeout=60)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    return json.loads(made.stdout), output.splitlines(), started, ended


def test_clickhouse_answers_every_query_during_a_backup_and_both_ways_of_copying_restore(deployment):
    deployment.engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"] = PASSPHRASE
    try:
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        _clickhouse(deployment, "CREATE TABLE IF NOT EXISTS posthog.e2e_online (id Int64, note String) "
                                "ENGINE = MergeTree ORDER BY id")
        for batch in range(20):  # twenty parts
            rows = "".join(f"{n}\tnote {n}\n" for n in range(batch * 100, batch * 100 + 100))
            _clickhouse(deployment, "INSERT INTO posthog.e2e_online FORMAT TSV", rows)
        before = _counts(deployment)
        assert before[1] == "2000"

        # The way every archive was taken before: ClickHouse stopped, its whole volume in the tar.
        deployment.compose("stop", "clickhouse")
        stopped_copy = deployment.invoke("backup", "--json")
        assert stopped_copy.returncode == 0, stopped_copy.stdout + stopped_copy.stderr
        old_way = json.loads(stopped_copy.stdout)
        assert old_way["clickhouse_pause_seconds"] is None
        deployment.compose("start", "clickhouse")
        deployment.compose("up", "--detach", "--wait", "clickhouse")

        summary, lines, began, ended = _backup_while_querying(deployment)
        answers = [line.split(" ", 2) for line in lines if " ok " in line or " fail " in line]
        failed = [line for line in lines if " fail " in line]
        assert not failed, failed[:5]
        assert lines and lines[-1].endswith("stopped"), lines[-5:]  # the loop ran until told to stop
        during = sorted(float(at) for at, outcome, _ in answers if began <= float(at) <= ended and outcome == "ok")
        assert during, (began, ended, lines[:3], lines[-3:])
        gaps = [b - a for a, b in zip([began, *during], [*during, ended])]
        assert max(gaps) < 5, max(gaps)  # answered all along, not only before and after
        assert all(answer.strip() == before[0] for _, _, answer in answers), "the count changed while nothing wrote"
        assert summary["clickhouse_pause_seconds"] == 0.0
        assert set(summary["paused_seconds"]) <= {"zookeeper"}
        assert all(s["State"] == "running" for s in deployment.states().values())
        leftovers = _clickhouse(deployment, "SELECT 1")  # still serving after UNFREEZE and the clean-up
        assert leftovers.strip() == "1"
        shadow = deployment.compose("exec", "-T", "clickhouse", "sh", "-c",
                                    "ls /var/lib/clickhouse/shadow 2>/dev/null | grep -c posthog_compose_backup_ || true")
        assert shadow.stdout.strip() == "0", shadow.stdout

        for archive in (summary["archive"], old_way["archive"]):
            gone = deployment.invoke("down", "--volumes", "--yes")
            assert gone.returncode == 0, gone.stdout + gone.stderr
            clock = time.monotonic()
            restored = deployment.invoke("restore", archive, "--yes")
            assert restored.returncode == 0, restored.stdout + restored.stderr
            assert _counts(deployment) == before, archive
            if archive == summary["archive"]:
                restore_seconds = time.monotonic() - clock

        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "e2e-backup-online.json").write_text(json.dumps({
            "backup_seconds": summary["seconds"], "clickhouse_pause_seconds": summary["clickhouse_pause_seconds"],
            "paused_seconds": summary["paused_seconds"], "queries_answered_during_backup": len(during),
            "queries_failed": len(failed), "longest_gap_between_answers_seconds": round(max(gaps), 2),
            "stopped_clickhouse_backup_seconds": old_way["seconds"], "restore_seconds": round(restore_seconds, 1),
        }, indent=2) + "\n")
    finally:
        deployment.engine.extra_env.pop("POSTHOG_BACKUP_PASSPHRASE", None)
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)

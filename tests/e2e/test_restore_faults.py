"""Restore interrupted at each of its steps, on a real engine (issue 27): SIGKILL and SIGINT after the
configuration is written, while a volume is loaded, while pg_restore runs and before the final start.

Each row ends with `status` naming the interrupted restore (exit 1), `up` starting the datastores
only and refusing to call the deployment healthy (exit 1, the same line), and then the one command
that line names, `invoke restore ARCHIVE --yes`, finishing it with the data present. One deployment
and one archive (rows in PostgreSQL, events in the ClickHouse stand-in) are made once for the module;
the faults are the package's test-only fault points (journal.fault_point), as in test_faults.py.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.e2e import test_faults as faults
from tests.e2e.harness import make_deployment

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="the stand-in's stack, killed on demand")]

PASSPHRASE = "quartz lantern 9023 meadow falcon"  # no word the output uses: the masking layer hides it
ROWS = 3000
EVENTS = 400
TIMINGS: dict[str, float] = {}


def _rows(deployment) -> str:
    result = deployment.psql("SELECT count(*) FROM e2e_restore_probe", check=False)
    return result.stdout.strip() if result.returncode == 0 else "missing"


def _events(deployment) -> str:
    result = deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query",
                                "SELECT count() FROM posthog.e2e_restore_events", check=False)
    return result.stdout.strip() if result.returncode == 0 else "missing"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, e2e_engine):
    """A healthy deployment with data and one archive of it."""
    deployment = make_deployment(tmp_path_factory.mktemp("restore-faults") / "deployment", e2e_engine)
    deployment.engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"] = PASSPHRASE
    deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
    try:
        code, output = faults.run(deployment, "up", "--timeout", "300")
        assert code == 0, output[-3000:]
        deployment.psql("CREATE TABLE e2e_restore_probe (id int primary key, note text); "
                        f"INSERT INTO e2e_restore_probe SELECT n, md5(n::text) FROM generate_series(1, {ROWS}) n;")
        deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query",
                           "CREATE DATABASE IF NOT EXISTS posthog")
        deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query",
                           "CREATE TABLE posthog.e2e_restore_events (id Int64) ENGINE = MergeTree ORDER BY id")
        deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query",
                           "INSERT INTO posthog.e2e_restore_events FORMAT TSV",
                           input="".join(f"{n}\n" for n in range(EVENTS)))
        made = deployment.invoke("backup", "--json")
        assert made.returncode == 0, made.stdout + made.stderr
        archive = json.loads(made.stdout)["archive"]
        yield deployment, archive
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        # The engine is the session's: a passphrase left there encrypts every later test's backups.
        deployment.engine.extra_env.pop("POSTHOG_BACKUP_PASSPHRASE", None)
        print(f"\nrestore fault rows, seconds: {TIMINGS}")


STEPS = [("restore-config-written", "after the configuration is written"),
         ("restore-loading-volume", "while a volume is loaded"),
         ("restore-pg-restore", "while pg_restore runs"),
         ("restore-final-start", "before the final start")]
# Every step with one signal, SIGKILL and SIGINT alternating, to keep CI's time: the four other pairs passed
# when the rows were written (the unit tests interrupt every step both ways on a fake engine).
CASES = [(step, "kill" if n % 2 == 0 else "int", what) for n, (step, what) in enumerate(STEPS)]


@pytest.mark.parametrize("step,fault", [(step, fault) for step, fault, _ in CASES],
                         ids=[f"{fault}|{what}" for _, fault, what in CASES])
def test_an_interrupted_restore_is_named_until_the_same_command_finishes_it(prepared, step, fault):
    deployment, archive = prepared
    clock = time.monotonic()
    relative = archive.split(str(deployment.root) + "/", 1)[-1]
    finish = f"invoke restore {relative} --yes"
    code, output = faults.run(deployment, "restore", relative, "--yes", fault=f"{fault}:{step}")
    assert code == (-signal.SIGKILL if fault == "kill" else 130), output[-3000:]
    faults.no_traceback(output)
    assert (deployment.root / ".deploy" / "journal" / "restore.json").exists()

    code, status = faults.run(deployment, "status")
    assert code != 0, status[-3000:]
    assert f"An interrupted restore of {relative} is recorded (step: " in status and f"`{finish}`" in status
    assert "8 of 8 services running and healthy." not in status

    code, up = faults.run(deployment, "up", "--timeout", "240")
    assert code != 0, up[-3000:]
    assert "PostHog is up" not in up and f"An interrupted restore of {relative}" in up and f"`{finish}`" in up
    faults.no_traceback(up)
    states = deployment.states()
    assert all(states.get(name, {}).get("State") != "running" for name in ("web", "worker", "plugins")), states
    assert states["db"]["State"] == "running"
    if step != "restore-final-start":
        assert _rows(deployment) == "missing"  # what the old `up` called healthy: an empty database

    code, done = faults.run(deployment, "restore", relative, "--yes")
    assert code == 0, done[-3000:]
    assert "Finishing the interrupted restore of this archive" in done and "up and healthy" in done
    assert _rows(deployment) == str(ROWS) and _events(deployment) == str(EVENTS)
    assert not (deployment.root / ".deploy" / "journal" / "restore.json").exists()
    code, status = faults.run(deployment, "status")
    assert code == 0 and "8 of 8 services running and healthy" in status, status[-3000:]
    TIMINGS[f"{fault}|{step}"] = round(time.monotonic() - clock, 1)


def test_abandon_drops_the_record_and_up_calls_it_what_it_is(prepared):
    """Abandoned knowingly: the record goes, nothing is undone, `up` starts PostHog on the data as it is."""
    deployment, archive = prepared
    relative = archive.split(str(deployment.root) + "/", 1)[-1]
    code, output = faults.run(deployment, "restore", relative, "--yes", fault="kill:restore-final-start")
    assert code == -signal.SIGKILL
    code, output = faults.run(deployment, "restore", relative, "--abandon", "--yes")
    assert code == 0 and "undoes nothing" in output, output[-3000:]
    faults.recover_with_up(deployment)
    assert _rows(deployment) == str(ROWS)

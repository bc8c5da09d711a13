"""`invoke upgrade` on a real engine, pulling from a real registry: the PostHog stand-in is
published as release-1.41.0 (v1), a commit-SHA tag (v2) and another commit-SHA tag whose web never
becomes healthy (broken). A Postgres row written first must survive both upgrades."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time

import pytest

from posthog_compose.configuration import compose
from tests.conftest import REPO
from tests.e2e.harness import REAL_UPGRADE_FROM, DowntimeProbe, start_registry

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="upgrades between stand-in tags pushed to a registry built here (v1, v2 with a migration, broken)")]

SHA_V2 = hashlib.sha1(b"stand-in v2").hexdigest()
SHA_BROKEN = hashlib.sha1(b"stand-in broken").hexdigest()
REPOSITORY = "posthog/posthog"


@pytest.fixture(scope="module")
def registry(e2e_engine):
    registry = start_registry(e2e_engine)
    prefix = "posthog-compose-e2e/posthog-standin"
    registry.publish(f"{prefix}:v1", REPOSITORY, "release-1.41.0")
    registry.publish(f"{prefix}:v2", REPOSITORY, SHA_V2)
    registry.publish(f"{prefix}:broken", REPOSITORY, SHA_BROKEN)
    yield registry
    registry.stop()


def _history(deployment) -> list[dict]:
    result = deployment.invoke("upgrade", "--history", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _all_healthy(deployment) -> bool:
    states = deployment.states()
    return len(states) == 8 and all(s["State"] == "running" and s["Health"] == "healthy" for s in states.values())


def _version(deployment) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{deployment.values()['WEB_PORT']}/_version", timeout=5) as answer:
        return answer.read().decode()


def test_upgrade_to_a_new_tag_then_a_broken_one_rolls_back(deployment, registry):
    image = f"{registry.address}/{REPOSITORY}"
    deployment.set_env(POSTHOG_IMAGE=f"{image}:release-1.41.0")
    started = deployment.invoke("up", "--timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr
    assert _version(deployment) == "v1"
    deployment.psql("CREATE TABLE e2e_upgrade_probe (note text); INSERT INTO e2e_upgrade_probe VALUES ('kept');")

    # A gate the deployment has not passed stops the upgrade before anything changes.
    deployment.psql("CREATE TABLE IF NOT EXISTS posthog_standin_async_migration (name text, complete boolean); "
                    "INSERT INTO posthog_standin_async_migration VALUES ('0007_persons_and_groups_on_events', false);")
    env_before = (deployment.root / ".env").read_bytes()
    gated = deployment.invoke("upgrade", "--to", SHA_V2)
    assert gated.returncode == 1
    assert "gate async-migrations-0005-0007-before-1.42 not passed" in gated.stderr
    assert "Async migrations are not completed: 0007_persons_and_groups_on_events" in gated.stderr
    assert (deployment.root / ".env").read_bytes() == env_before
    assert _history(deployment)[-1]["result"] == "aborted"
    deployment.psql("UPDATE posthog_standin_async_migration SET complete = true;")

    # The dry run shows the exact diff and changes nothing.
    dry = deployment.invoke("upgrade", "--to", SHA_V2, "--dry-run")
    assert dry.returncode == 0 and f"+POSTHOG_IMAGE={image}:{SHA_V2}" in dry.stdout
    assert (deployment.root / ".env").read_bytes() == env_before

    # v1 (release-1.41.0) -> v2 (commit SHA), pulled from the registry and pinned to its digest.
    with DowntimeProbe(int(deployment.values()["WEB_PORT"])) as probe:
        clock = time.monotonic()
        upgraded = deployment.invoke("upgrade", "--to", SHA_V2, "--pin-digest", "--timeout", "240")
        upgrade_seconds = time.monotonic() - clock
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "Gate async-migrations-0005-0007-before-1.42" in upgraded.stdout
    assert re.search(r"PostgreSQL dump verified: [\d.,]+ [KMG]iB, \d+ entries readable by pg_restore", upgraded.stdout)
    assert upgraded.stdout.strip().splitlines()[-1].startswith(f"Upgraded POSTHOG_IMAGE {image}:release-1.41.0 -> ")
    pinned = deployment.values()["POSTHOG_IMAGE"]
    assert re.fullmatch(rf"{re.escape(image)}@sha256:[0-9a-f]{{64}}", pinned), pinned
    digests = deployment.engine.docker("image", "inspect", "--format", "{{json .RepoDigests}}", pinned).stdout
    assert pinned in json.loads(digests)
    assert _version(deployment) == "v2" and _all_healthy(deployment)
    # v2 brought a migration that v1 had not applied: web ran it, and the v2 worker, whose launcher exits
    # while a migration is pending, started after it without a single restart.
    applied = deployment.psql("SELECT version FROM posthog_standin_migration ORDER BY applied_at;").stdout.split()
    assert applied == ["v1", "v2"], applied
    for service in ("web", "worker", "plugins"):
        container = deployment.compose("ps", "--all", "-q", service).stdout.strip()
        restarts = deployment.engine.docker("inspect", "-f", "{{.RestartCount}}", container).stdout.strip()
        assert restarts == "0", (service, restarts)

    entry = _history(deployment)[-1]
    assert entry["result"] == "upgraded" and entry["to"] == pinned and entry["from"].endswith(":release-1.41.0")
    archive = deployment.root / entry["backup"]
    assert archive.name.endswith("-postgres.backup") and oct(archive.stat().st_mode & 0o777) == "0o600"
    verified = deployment.invoke("backup", "--verify", str(archive))
    assert verified.returncode == 0 and ": OK," in verified.stdout, verified.stdout + verified.stderr
    from posthog_compose.operations import archive as archives

    with open(archive, "rb") as handle:
        # Encrypted when the environment holds a passphrase (the kit's rule), plain otherwise.
        passphrase = deployment.env.get("POSTHOG_BACKUP_PASSPHRASE")
        members = archives.iter_members(archives.open_stream(handle, passphrase.encode() if passphrase else None),
                                        archives.ReadResult({}))
        dump = next(m for m in members if m.name.startswith("postgres/") and m.name.endswith(".dump")).stream.read()
    listing = subprocess.run(compose.command(deployment.root, "exec", "-T", "db", "pg_restore", "--list"),
                             input=dump, capture_output=True, env=deployment.env, cwd=deployment.root,
                             check=True).stdout.decode()
    assert "TABLE public e2e_upgrade_probe" in listing

    # v2 -> broken: web never becomes healthy; the upgrade rolls back to the pinned v2 by itself.
    clock = time.monotonic()
    broken = deployment.invoke("upgrade", "--to", SHA_BROKEN, "--timeout", "90")
    broken_seconds = time.monotonic() - clock
    assert broken.returncode == 1, broken.stdout + broken.stderr
    # Found when it fails (its server answers but never turns ready), not when --timeout runs out.
    assert broken_seconds < 90, broken_seconds
    assert f"back on {pinned} and healthy" in broken.stdout
    assert f"upgrade to {image}:{SHA_BROKEN} failed" in broken.stderr
    rollback = float(re.search(r"Rolled back in (\d+) s", broken.stdout).group(1))
    assert deployment.values()["POSTHOG_IMAGE"] == pinned
    assert _version(deployment) == "v2" and _all_healthy(deployment)
    entry = _history(deployment)[-1]
    assert entry["result"] == "rolled back" and "web" in entry["reason"]
    assert "Booting gunicorn stand-in broken" in (deployment.root / entry["logs"]).read_text()

    assert deployment.psql("SELECT note FROM e2e_upgrade_probe;").stdout.strip() == "kept"
    measurements = {"successful_upgrade_seconds": round(upgrade_seconds, 1),
                    "url_check_failing_seconds_during_upgrade": round(probe.longest_outage(), 1),
                    "broken_upgrade_total_seconds": round(broken_seconds, 1), "rollback_seconds": rollback}
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "e2e-upgrade.json").write_text(json.dumps(measurements, indent=2) + "\n")
    print(f"\nupgrade measurements: {measurements}")


@pytest.mark.lanes("real", reason="upgrades between two real PostHog releases pulled from their registry; "
                           "the local lane proves the same flow between stand-in tags above")
def test_upgrade_between_two_real_releases_keeps_data(deployment):
    """The real lane's upgrade: from the last numbered release before the kit's pin to the pin itself,
    with a row written first; PostHog's own readiness decides, and the row survives."""
    pinned = deployment.values()["POSTHOG_IMAGE"]  # the kit's default, release-1.43.0
    deployment.set_env(POSTHOG_IMAGE=REAL_UPGRADE_FROM)
    started = deployment.invoke("up", "--timeout", "900")
    assert started.returncode == 0, started.stdout + started.stderr
    deployment.psql("CREATE TABLE e2e_upgrade_probe (note text); INSERT INTO e2e_upgrade_probe VALUES ('kept');")

    upgraded = deployment.invoke("upgrade", "--to", pinned.split(":", 1)[1], "--timeout", "900")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert deployment.values()["POSTHOG_IMAGE"].startswith(pinned)
    assert _all_healthy(deployment), deployment.states()
    assert deployment.psql("SELECT note FROM e2e_upgrade_probe;").stdout.strip() == "kept"
    assert _history(deployment)[-1]["result"] == "upgraded"

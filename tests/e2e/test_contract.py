"""The PostHog contract on the real engine: the default-shaped deployment (PostgreSQL 13 and Redis 6.0, in
PostHog's ranges) boots and reports ready; each process gets the names it reads; an out-of-range
PostgreSQL is refused by config-check before anything starts, and, forced past the check, the PostHog
stand-in exits with PostHog's own message and `invoke up` shows the hint."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="the stand-in's release tag and a PostgreSQL 15 built here provoke PostHog's version check")]

OUT_OF_RANGE_POSTGRES = "posthog-compose-e2e/postgres-out-of-range:15-bookworm"
POSTHOG_MESSAGE = "Service postgresql is in version 15."
# The stand-in under a release tag, so that config-check knows which PostHog version's ranges apply.
STANDIN_RELEASE = "posthog-compose-e2e/posthog-standin:release-1.43.0"


@pytest.fixture
def release_tagged(deployment):
    deployment.engine.docker("tag", deployment.engine.image_env["POSTHOG_IMAGE"], STANDIN_RELEASE)
    deployment.set_env(POSTHOG_IMAGE=STANDIN_RELEASE)
    yield deployment
    deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
    deployment.engine.docker("image", "rm", STANDIN_RELEASE, check=False)


def _exec_json(deployment, service: str, url: str) -> tuple[int, dict]:
    """GET ``url`` from inside ``service`` (the plugin server's port is not published)."""
    script = ("import json, urllib.request as u, urllib.error as e\n"
              f"try:\n    r = u.urlopen({url!r}, timeout=5); print(r.status, r.read().decode())\n"
              "except e.HTTPError as x:\n    print(x.code, x.read().decode())\n")
    out = deployment.compose("exec", "-T", service, "python3", "-c", script).stdout.strip()
    code, _, body = out.partition(" ")
    return int(code), json.loads(body)


def _json(deployment, path: str, timeout: float = 10) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{deployment.values()['WEB_PORT']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_in_range_datastores_boot_and_each_process_gets_its_names(release_tagged):
    deployment = release_tagged
    values = deployment.values()
    assert values["POSTGRES_IMAGE"].endswith(":13-bullseye") and values["REDIS_IMAGE"].endswith(":6.0-bullseye")
    checked = deployment.invoke("config-check")
    assert checked.returncode == 0 and "cannot be known" not in checked.stdout, checked.stdout

    result = deployment.invoke("up", "--timeout", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    # The real servers' versions, as the stand-in asked them at boot (SHOW server_version, INFO server).
    assert deployment.psql("SHOW server_version;").stdout.startswith("13.")
    redis_info = deployment.compose("exec", "-T", "redis", "sh", "-c",
                                    'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli INFO server').stdout
    assert "redis_version:6.0." in redis_info

    assert _json(deployment, "/_livez") == (200, {"http": True})
    # posthog/health.py:43-61 at 1.43: "http" is listed per role but is no check, so it is never answered.
    status, checks = _json(deployment, "/_readyz?role=web")
    assert status == 200 and checks == {"postgres": True, "postgres_migrations_uptodate": True, "cache": True}
    # The worker role reaches ClickHouse through Django's native client (port 9000), and no cache check.
    status, checks = _json(deployment, "/_readyz?role=worker")
    assert status == 200 and checks == {"postgres": True, "postgres_migrations_uptodate": True, "clickhouse": True,
                                        "celery_broker": True}, checks
    # A first boot with no restart loop: the worker and the plugin server started after web's migrations.
    for service in ("web", "worker", "plugins"):
        container = deployment.compose("ps", "--all", "-q", service).stdout.strip()
        restarts = deployment.engine.docker("inspect", "-f", "{{.RestartCount}}", container).stdout.strip()
        assert restarts == "0", (service, restarts)
    # The worker's health check, run 100 times inside the worker: its CPU per run (children's user + sys).
    check = json.loads(deployment.compose("config", "--format", "json").stdout)["services"]["worker"]["healthcheck"]
    runs = 100
    timed = deployment.compose("exec", "-T", "worker", "bash", "-c",
                               f"for i in $(seq {runs}); do sh -c \"$0\" || echo FAILED; done; times",
                               check["test"][1].replace("$$", "$"))
    assert "FAILED" not in timed.stdout, timed.stdout + timed.stderr
    children = timed.stdout.strip().splitlines()[-1].split()  # e.g. 0m0.412s 0m0.310s
    seconds = sum(float(value.split("m")[0]) * 60 + float(value.split("m")[1].rstrip("s")) for value in children)
    print(f"worker health check: {seconds / runs * 1000:.1f} ms CPU per run (in the worker container)")
    assert seconds / runs < 0.134 / 4
    status, checks = _json(deployment, "/_readyz")
    assert status == 200 and set(checks) >= {"clickhouse", "kafka_connected", "celery_broker"}, checks
    assert _json(deployment, "/_readyz?role=nonsense")[0] == 400
    assert _exec_json(deployment, "plugins", "http://127.0.0.1:6738/_ready")[0] == 200

    # Django gets KAFKA_URL (derived, kafka:// per broker) and not KAFKA_HOSTS; the plugin server the reverse.
    def env_of(service):
        out = deployment.compose("exec", "-T", service, "env").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    web, plugins = env_of("web"), env_of("plugins")
    assert web["KAFKA_URL"] == "kafka://" + values["KAFKA_HOSTS"] and "KAFKA_HOSTS" not in web
    assert plugins["KAFKA_HOSTS"] == values["KAFKA_HOSTS"] and "KAFKA_URL" not in plugins
    assert "ENCRYPTION_KEYS" not in web
    # SECRET_KEY reaches the plugins container for bin/plugin-server's Django migrate-check, which now passes.
    assert plugins["SECRET_KEY"] == values["SECRET_KEY"]
    assert "default SECRET_KEY" not in deployment.compose("logs", "--no-log-prefix", "plugins").stdout

    # Readiness follows the migrations: without this version's migration row, web is not ready.
    deployment.psql("UPDATE posthog_standin_migration SET version = 'hidden' WHERE version = 'v1';")
    status, checks = _json(deployment, "/_readyz?role=web")
    assert status == 503 and checks["postgres_migrations_uptodate"] is False
    assert _json(deployment, "/_livez")[0] == 200  # alive, only not ready
    deployment.psql("UPDATE posthog_standin_migration SET version = 'v1' WHERE version = 'hidden';")
    # ...and Redis: stopped, the web role is not ready; started again, it is.
    deployment.compose("stop", "redis")
    started = time.monotonic()
    status, checks = _json(deployment, "/_readyz?role=web", timeout=60)
    print(f"/_readyz?role=web with Redis stopped answered in {time.monotonic() - started:.1f} s")
    assert status == 503 and checks["cache"] is False
    deployment.compose("start", "redis")
    deadline = time.monotonic() + 60
    while _json(deployment, "/_readyz?role=web")[0] != 200:
        assert time.monotonic() < deadline, "web did not become ready again after Redis came back"
        time.sleep(1)


def test_out_of_range_postgres_is_refused_before_start_and_posthog_exits_with_its_message(release_tagged):
    deployment = release_tagged
    deployment.set_env(POSTGRES_IMAGE=OUT_OF_RANGE_POSTGRES)
    checked = deployment.invoke("config-check")
    assert checked.returncode == 1
    assert "POSTGRES_IMAGE" in checked.stdout and ">=11.0.0,<=14.1.0" in checked.stdout, checked.stdout

    refused = deployment.invoke("up", "--timeout", "120")
    assert refused.returncode != 0 and "nothing was started" in refused.stdout + refused.stderr
    assert deployment.states() == {}  # nothing started

    # Forced past the check: the services started with docker compose directly.
    deployment.compose("up", "--detach", "--wait", "--wait-timeout", "180", "db", "redis", "zookeeper", "kafka",
                       "clickhouse")
    deployment.compose("up", "--detach", "--no-deps", "web")
    deadline = time.monotonic() + 90
    while POSTHOG_MESSAGE not in deployment.compose("logs", "--no-color", "web").stdout:
        assert time.monotonic() < deadline, "the PostHog stand-in did not refuse PostgreSQL 15"
        time.sleep(1)
    logs = deployment.compose("logs", "--no-color", "web").stdout
    assert "Expected range: >=11.0.0,<=14.1.0" in logs and "SKIP_SERVICE_VERSION_REQUIREMENTS=1" in logs
    # It exits 1 and Docker's restart policy brings it back, to exit again.
    container = deployment.compose("ps", "--all", "-q", "web").stdout.strip()
    deadline = time.monotonic() + 60
    while int(deployment.engine.docker("inspect", "-f", "{{.RestartCount}}", container).stdout.strip() or 0) < 1:
        assert time.monotonic() < deadline, "web did not exit and restart"
        time.sleep(1)

    # An image whose PostHog version config-check cannot know (a commit-SHA tag) gets only a warning, so
    # `invoke up` starts; PostHog exits at boot and up's failure output carries the hint.
    sha = "0123456789abcdef0123456789abcdef01234567"
    deployment.engine.docker("tag", deployment.engine.image_env["POSTHOG_IMAGE"], f"posthog-compose-e2e/posthog-standin:{sha}")
    try:
        deployment.set_env(POSTHOG_IMAGE=f"posthog-compose-e2e/posthog-standin:{sha}")
        warned = deployment.invoke("config-check")
        assert warned.returncode == 0 and "POSTHOG_IMAGE" in warned.stdout, warned.stdout
        failed = deployment.invoke("up", "--timeout", "120")
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "hint: a datastore's version is outside the range this PostHog version accepts" in output, output
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        deployment.engine.docker("image", "rm", f"posthog-compose-e2e/posthog-standin:{sha}", check=False)

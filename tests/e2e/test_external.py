"""External datastores on a real engine: the kit's deployment with POSTGRES_MODE=external and
REDIS_MODE=external uses a "managed" PostgreSQL 13 and Redis 6.0 that accept only TLS (a separate
Compose project on its own network, certificates from the kit's own CA code; tests/e2e/managed).

The deployment reaches them by routing, the way a host reaches a provider's service: the URLs hold
the managed addresses, the CA bundle is in datastore-ca/ca.crt (mounted read-only into the
containers), and nothing of the managed project is shared with the kit's: no common network, no
override file. The kit starts no db and no redis of its own; what PostHog (the stand-in) writes lands
in the managed PostgreSQL and Redis; config-check refuses the same deployment when DATABASE_URL drops
TLS, unless ALLOW_PLAINTEXT_DATASTORES=true."""

from __future__ import annotations

import json

import pytest

from tests.e2e.managed import CONTAINER_CA

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="writes through the stand-in's /_standin/notes endpoint; managed servers are built here")]

DATABASE = "posthog_external"
REDIS_DB = 1
KIT_SERVICES_WITHOUT_DATASTORES = {"clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"}


def _use_managed(deployment, managed, user: str, password: str) -> str:
    """The operator's steps: the provider's CA into datastore-ca/, both datastores external in .env."""
    managed.install_ca(deployment.root)
    url = managed.database_url(user, password, DATABASE)
    deployment.set_env(POSTGRES_MODE="external", REDIS_MODE="external", DATABASE_URL=url,
                       REDIS_URL=managed.redis_url(REDIS_DB), EXTERNAL_CA_FILE=CONTAINER_CA)
    return url


def _exec_python(deployment, service: str, code: str, *env: str):
    """Python inside a running container of the kit (the stand-in's own modules are importable)."""
    extra = [item for pair in (("-e", value) for value in env) for item in pair]
    return deployment.compose("exec", "-T", *extra, "-w", "/code", service, "python3", "-c", code, check=False)


def test_external_postgres_and_redis_with_tls(deployment, managed_datastores):
    managed = managed_datastores
    user, password = managed.create_database(DATABASE)
    try:
        url = _use_managed(deployment, managed, user, password)

        checked = deployment.invoke("config-check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert password not in checked.stdout + checked.stderr

        volumes_before = set(deployment.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split())
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.strip().splitlines()[-1].startswith("PostHog is up at http://localhost:")
        assert password not in started.stdout + started.stderr and managed.redis_password not in started.stdout

        # The kit runs no PostgreSQL and no Redis of its own; everything else is up and healthy.
        states = deployment.states()
        assert set(states) == KIT_SERVICES_WITHOUT_DATASTORES, states
        assert all(s["State"] == "running" and s["Health"] == "healthy" for s in states.values()), states
        volumes = set(deployment.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split())
        assert not {"posthog_postgres-data", "posthog_redis-data"} & (volumes - volumes_before), volumes

        # The host reaches the managed addresses too (it is on every bridge): doctor's external checks
        # connect from here, verify TLS against datastore-ca/ca.crt and read Redis's version.
        doctor = deployment.invoke("doctor", "--json")
        assert password not in doctor.stdout and managed.redis_password not in doctor.stdout
        external = {c["name"]: c for c in json.loads(doctor.stdout) if "(ext)" in c["name"]}
        assert len(external) == 2 and all(c["status"] == "ok" for c in external.values()), external
        assert all("datastore-ca/ca.crt" in c["detail"] for c in external.values()), external
        assert any("6.0" in c["detail"] for c in external.values()), external

        # What PostHog wrote at start is in the managed PostgreSQL: its migration.
        assert managed.psql("SELECT version FROM posthog_standin_migration", DATABASE).stdout.split() == ["v1"]
        # A write through PostHog's web process lands there too, and its cache key in the managed Redis.
        status, body = deployment.post("/_standin/notes", "written through the stand-in")
        assert status == 201, body
        row = json.loads(body)["id"]
        assert managed.psql(f"SELECT note FROM posthog_standin_note WHERE id = {int(row)}",
                            DATABASE).stdout.strip() == "written through the stand-in"
        assert managed.redis("-n", str(REDIS_DB), "GET", "standin:last-note").stdout.strip() == str(row)
        # The worker's heartbeat and the plugin server's client reach the managed Redis as well.
        assert managed.redis("-n", str(REDIS_DB), "KEYS", "standin:heartbeat:*").stdout.strip()
        assert managed.redis("-n", str(REDIS_DB), "GET", "standin:plugin-server:started").stdout.strip() == "v1"
        # The managed services really are TLS only, and the plugin server trusts their CA only
        # through NODE_EXTRA_CA_CERTS (EXTERNAL_CA_FILE): the facts the kit's settings rest on.
        plain = _exec_python(deployment, "web", "import os, psycopg2; psycopg2.connect(os.environ['DATABASE_URL']"
                             ".replace('sslmode=verify-full', 'sslmode=disable'))")
        assert plain.returncode != 0 and "SSL off" in plain.stderr, plain.stderr
        assert _exec_python(deployment, "plugins", "from datastores_tls import node_redis_client; "
                            "node_redis_client().ping()").returncode == 0
        untrusted = _exec_python(deployment, "plugins", "from datastores_tls import node_redis_client; "
                                 "node_redis_client().ping()", "NODE_EXTRA_CA_CERTS=")
        assert untrusted.returncode != 0 and "certificate verify failed" in untrusted.stderr, untrusted.stderr

        # The same deployment with TLS dropped from DATABASE_URL: refused, unless explicitly allowed.
        plaintext = managed.database_url(user, password, DATABASE, sslmode="disable")
        deployment.set_env(DATABASE_URL=plaintext)
        refused = deployment.invoke("config-check")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "DATABASE_URL" in refused.stdout + refused.stderr
        assert "ALLOW_PLAINTEXT_DATASTORES" in refused.stdout + refused.stderr
        assert password not in refused.stdout + refused.stderr and "Traceback" not in refused.stderr
        deployment.set_env(ALLOW_PLAINTEXT_DATASTORES="true")
        allowed = deployment.invoke("config-check")
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        deployment.set_env(DATABASE_URL=url, ALLOW_PLAINTEXT_DATASTORES="false")
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        managed.drop_database(DATABASE)
        managed.redis("-n", str(REDIS_DB), "FLUSHDB", check=False)

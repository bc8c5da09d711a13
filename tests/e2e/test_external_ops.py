"""The operations with external datastores on a real engine: a REAL PostgreSQL 13 and a REAL Redis 6
(the test images built from Debian) run as "managed" servers outside the deployment, with TLS from a
CA made by posthog_compose/configuration/certs.py, and the deployment's .env makes both external.

`invoke doctor` reaches them from the host as PostHog's settings say (PostgreSQL's SSLRequest, then
TLS verified against datastore-ca/ and the host name, then the login; Redis over TLS with AUTH and
INFO), reads both versions and compares them with the compatibility matrix; a CA that did not sign the servers fails;
`invoke status` shows both as external rows; `invoke backup --only postgres` refuses with one line."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import uuid

import pytest

from posthog_compose.configuration import certs
from tests.e2e.harness import free_port

pytestmark = pytest.mark.lanes("local", reason="the managed PostgreSQL and Redis are images built here")


def _pki(base):
    from cryptography import x509
    import ipaddress

    certs.cert_dir(base).mkdir(parents=True, exist_ok=True)
    ca, key = certs.make_ca(base, "managed")
    certs.make_server_cert(base, "server", ca, key,
                           names=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    mounted = base / "mounted"
    mounted.mkdir()
    for name in ("server.crt", "server.key"):
        shutil.copy(certs.cert_dir(base) / name, mounted / name)
        (mounted / name).chmod(0o644)  # a test key, read by the server's own user inside the container
    return certs.paths(base, "ca")[0], mounted


@pytest.fixture
def managed(tmp_path, e2e_engine):
    """A TLS PostgreSQL and a TLS Redis outside the deployment, published on 127.0.0.1."""
    ca, mounted = _pki(tmp_path / "pki")
    tag = uuid.uuid4().hex[:8]
    pg_name, redis_name = f"managed-pg-{tag}", f"managed-redis-{tag}"
    pg_port, redis_port = free_port(), free_port()
    pg_password, redis_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    images = e2e_engine.image_env
    env = {**e2e_engine.env, "POSTGRES_PASSWORD": pg_password}
    import subprocess

    def docker(*args, environ=None):
        return subprocess.run(["docker", *args], env=environ or e2e_engine.env, capture_output=True, text=True,
                              timeout=300)

    started = []
    network = f"managed-{tag}"
    # The engine has no default bridge: the "managed" servers get a network of their own.
    assert docker("network", "create", network).returncode == 0
    try:
        run = docker("run", "-d", "--name", pg_name, "--network", network, "-p", f"127.0.0.1:{pg_port}:5432", "-e", "POSTGRES_USER=posthog",
                     "-e", "POSTGRES_PASSWORD", "-e", "POSTGRES_DB=posthog", "-v", f"{mounted}:/certs:ro",
                     "--entrypoint", "sh", images["POSTGRES_IMAGE"], "-c",
                     "install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/tls && "
                     "install -o postgres -g postgres -m 0600 /certs/server.key /var/lib/postgresql/tls/server.key && "
                     "install -o postgres -g postgres -m 0644 /certs/server.crt /var/lib/postgresql/tls/server.crt && "
                     "exec docker-entrypoint.sh postgres -c ssl=on "
                     "-c ssl_cert_file=/var/lib/postgresql/tls/server.crt "
                     "-c ssl_key_file=/var/lib/postgresql/tls/server.key", environ=env)
        assert run.returncode == 0, run.stderr
        started.append(pg_name)
        run = docker("run", "-d", "--name", redis_name, "--network", network, "-p", f"127.0.0.1:{redis_port}:6379", "-v",
                     f"{mounted}:/certs:ro", images["REDIS_IMAGE"], "redis-server", "--port", "0", "--tls-port",
                     "6379", "--tls-cert-file", "/certs/server.crt", "--tls-key-file", "/certs/server.key",
                     "--tls-auth-clients", "no", "--requirepass", redis_password)
        assert run.returncode == 0, run.stderr
        started.append(redis_name)
        deadline = time.monotonic() + 120
        while docker("exec", pg_name, "pg_isready", "-h", "127.0.0.1", "-U", "posthog").returncode != 0:
            assert time.monotonic() < deadline, docker("logs", pg_name).stderr[-2000:]
            time.sleep(1)
        yield {"ca": ca, "pg_port": pg_port, "redis_port": redis_port, "pg_password": pg_password,
               "redis_password": redis_password}
    finally:
        for name in started:
            docker("rm", "--force", "--volumes", name)
        docker("network", "rm", network)


def test_doctor_status_and_backup_with_external_postgres_and_redis(deployment, managed, tmp_path):
    # The matrix is read by PostHog release: the stand-in is tagged as the release it stands for.
    standin = deployment.values()["POSTHOG_IMAGE"]
    release = standin.rsplit(":", 1)[0] + ":release-1.43.0"
    assert deployment.engine.docker("tag", standin, release).returncode == 0
    deployment.set_env(POSTHOG_IMAGE=release)
    (deployment.root / "datastore-ca").mkdir(exist_ok=True)
    shutil.copy(managed["ca"], deployment.root / "datastore-ca" / "ca.crt")
    ca = "/etc/posthog/datastore-ca/ca.crt"
    deployment.set_env(
        POSTGRES_MODE="external", REDIS_MODE="external", EXTERNAL_CA_FILE=ca,
        DATABASE_URL=f"postgres://posthog:{managed['pg_password']}@localhost:{managed['pg_port']}/posthog"
                     f"?sslmode=verify-full&sslrootcert={ca}",
        REDIS_URL=f"rediss://:{managed['redis_password']}@localhost:{managed['redis_port']}/0"
                  f"?ssl_cert_reqs=required&ssl_ca_certs={ca}")

    result = deployment.invoke("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    postgres, redis = checks["postgres (ext)"], checks["redis (ext)"]
    assert postgres["status"] == "ok", postgres
    assert f"PostgreSQL at localhost:{managed['pg_port']}" in postgres["detail"]
    assert "TCP connects" in postgres["detail"] and "verified against datastore-ca/ca.crt" in postgres["detail"]
    # The login as DATABASE_URL says, then the version PostgreSQL reports: Debian bullseye's 13.
    assert "PostgreSQL 13." in postgres["detail"] and "is inside >=11.0.0,<=14.1.0" in postgres["detail"]
    assert redis["status"] == "ok", redis
    # Debian bullseye's Redis 6.0: inside what release-1.43.0 accepts.
    assert "Redis 6.0." in redis["detail"] and "is inside >=5.0.0,<=6.3.0" in redis["detail"]
    for secret in (managed["pg_password"], managed["redis_password"]):
        assert secret not in result.stdout + result.stderr

    # Nothing of this deployment has been started: status shows the external rows, then exits 1 naming
    # the next step (a status of a deployment where nothing runs is not a success).
    status = deployment.invoke("status")
    assert status.returncode == 1, status.stderr
    assert status.stdout.strip().splitlines()[-1] == "Nothing runs: `invoke up` starts the deployment."
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert rows["db"].split()[1] == "external" and f"localhost:{managed['pg_port']}" in rows["db"]
    assert rows["redis"].split()[1] == "external" and f"localhost:{managed['redis_port']}" in rows["redis"]
    assert managed["pg_password"] not in status.stdout

    refused = deployment.invoke("backup", "--only", "postgres", "--no-encrypt")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"PostgreSQL is external (localhost:{managed['pg_port']}): back it up at your provider" in refused.stderr

    # A CA that did not sign the servers: the real PostgreSQL's certificate no longer verifies.
    other = tmp_path / "other"
    certs.cert_dir(other).mkdir(parents=True)
    certs.make_ca(other, "other")
    shutil.copy(certs.paths(other, "ca")[0], deployment.root / "datastore-ca" / "ca.crt")
    result = deployment.invoke("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 1
    assert checks["postgres (ext)"]["status"] == "error"
    assert "does not verify against datastore-ca/ca.crt" in checks["postgres (ext)"]["detail"]
    assert checks["redis (ext)"]["status"] == "error"

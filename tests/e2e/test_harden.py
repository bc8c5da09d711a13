"""`invoke harden` on a running stack that holds data, on a real engine: every secret rotated
live, TLS for ClickHouse (stand-in), PostgreSQL and Redis (both real), then everything healthy,
the old Postgres password refused, the new one reading the row over TLS, plain connections
refused, and the rotated encryption key list keeping the old keys after the new one."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="re-tags the test images whose tags look floating (posthog-standin:v1)")]


def _exec(deployment, service: str, *command: str, env: dict | None = None, check: bool = False):
    flags = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
    return deployment.compose("exec", "-T", *flags, service, *command, check=check)


def _psql_over_tcp(deployment, password: str, sslmode: str, sql: str = "SELECT note FROM e2e_harden_probe;"):
    values = deployment.values()
    dsn = (f"host=db user={values['POSTGRES_USER']} dbname={values['POSTGRES_DB']} sslmode={sslmode} "
           "sslrootcert=/etc/posthog/certs/ca.crt connect_timeout=5")
    return _exec(deployment, "db", "psql", dsn, "-At", "-c", sql, env={"PGPASSWORD": password})


def _exact_tags(deployment) -> None:
    """Give the two test images whose tags look floating (posthog-standin:v1, postgres:13-bullseye) the
    exact tags a production .env would carry: the stand-in as the release it stands for, PostgreSQL by
    the version its server binary reports. harden's image item then judges them as it would real ones."""
    images = deployment.engine.image_env
    posthog = images["POSTHOG_IMAGE"].rsplit(":", 1)[0] + ":release-1.43.0"
    deployment.engine.docker("tag", images["POSTHOG_IMAGE"], posthog)
    reported = deployment.engine.docker("run", "--rm", "--entrypoint", "psql", images["POSTGRES_IMAGE"],
                                        "--version").stdout  # psql (PostgreSQL) 13.22 (Debian 13.22-...)
    version = re.search(r"\(PostgreSQL\) (\d+\.\d+)", reported).group(1)
    postgres = images["POSTGRES_IMAGE"].rsplit(":", 1)[0] + f":{version}-bullseye"
    deployment.engine.docker("tag", images["POSTGRES_IMAGE"], postgres)
    deployment.set_env(POSTHOG_IMAGE=posthog, POSTGRES_IMAGE=postgres)


def test_harden_a_live_stack_rotates_secrets_and_turns_on_tls(deployment):
    _exact_tags(deployment)
    started = deployment.invoke("up", "--timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr
    deployment.psql("CREATE TABLE e2e_harden_probe (note text); INSERT INTO e2e_harden_probe VALUES ('still here');")
    before = deployment.values()

    checked = deployment.invoke("harden", "--check", "--json")
    assert checked.returncode == 1
    failing = {i["id"] for i in json.loads(checked.stdout)["items"] if i["status"] == "fail"}
    # app-private: a default deployment answers every network (ALLOWED_IP_BLOCKS is the operator's choice).
    assert failing == {"certificates", "clickhouse-tls", "postgres-tls", "redis-tls", "https", "public-https",
                       "app-private"}

    hardened = deployment.invoke("harden", "--yes", "--rotate-secrets")
    assert hardened.returncode == 0, hardened.stdout + hardened.stderr
    assert "PostgreSQL password changed inside the database (ALTER ROLE); now .env." in hardened.stdout
    assert "The deployment is healthy." in hardened.stdout.strip().splitlines()[-1]
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "REDIS_PASSWORD", "ENCRYPTION_SALT_KEYS"):
        assert before[name] not in hardened.stdout + hardened.stderr, f"{name} was printed"

    after = deployment.values()
    states = deployment.states()
    assert all(s["State"] == "running" and s["Health"] == "healthy" for s in states.values()), states
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "REDIS_PASSWORD"):
        assert after[name] != before[name], name
    old_keys = before["ENCRYPTION_SALT_KEYS"].split(",")
    assert after["ENCRYPTION_SALT_KEYS"].split(",")[1:] == old_keys  # new key first, old ones kept

    # PostHog 1.43 reads no ENCRYPTION_SALT_KEYS: the rotated list is the kit's, checked above.

    # PostgreSQL: the new password reads the row over verified TLS; the old one is refused; plain TCP too.
    new = _psql_over_tcp(deployment, after["POSTGRES_PASSWORD"], "verify-full")
    assert new.returncode == 0 and new.stdout.strip() == "still here", new.stderr
    ssl_in_use = _psql_over_tcp(deployment, after["POSTGRES_PASSWORD"], "verify-full",
                                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();")
    assert ssl_in_use.stdout.strip() == "t"
    old = _psql_over_tcp(deployment, before["POSTGRES_PASSWORD"], "verify-full")
    assert old.returncode != 0 and "password authentication failed" in old.stderr
    plain = _psql_over_tcp(deployment, after["POSTGRES_PASSWORD"], "disable")
    # PostgreSQL 13 says "SSL off", 15 "no encryption": the same pg_hba.conf refusal.
    assert plain.returncode != 0 and "pg_hba.conf rejects connection" in plain.stderr and (
        "SSL off" in plain.stderr or "no encryption" in plain.stderr), plain.stderr

    # Redis: TLS with the deployment's CA answers; the plain port is closed.
    tls = _exec(deployment, "redis", "sh", "-c",
                'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --tls --cacert /etc/posthog/certs/ca.crt -h redis ping')
    assert tls.stdout.strip() == "PONG", tls.stdout + tls.stderr
    cleartext = _exec(deployment, "redis", "sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h redis ping')
    assert "PONG" not in cleartext.stdout

    # The certificate PostgreSQL serves is the generated one (checked from the host side with openssl).
    served = _exec(deployment, "db", "sh", "-c",
                   "openssl s_client -starttls postgres -connect db:5432 -servername db "
                   "-CAfile /etc/posthog/certs/ca.crt -verify_return_error </dev/null 2>&1 | grep -E 'Verify return code'")
    assert "Verify return code: 0 (ok)" in served.stdout, served.stdout + served.stderr

    final = deployment.invoke("harden", "--check", "--json")
    failing = {i["id"] for i in json.loads(final.stdout)["items"] if i["status"] == "fail"}
    # need the edge proxy and a domain (invoke proxy), and the operator's allow-list
    assert failing == {"https", "public-https", "app-private"}

    again = deployment.invoke("harden", "--yes")
    assert again.returncode == 0 and "Nothing to apply" in again.stdout

"""config-check: one table-driven case per rule (bad .env, compose and XML), each asserting the
exact finding and the exit code, plus a clean deployment with zero findings."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from posthog_compose.operations import bootstrap

from posthog_compose.configuration import checks, manifest as manifest_module
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import run_invoke, set_env


@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest_module.load(repo))
    return repo


def edit(repo, name, old, new, count=1):
    path = repo / name
    text = path.read_text()
    assert old in text, f"fixture drift: {old!r} not in {name}"
    path.write_text(text.replace(old, new, count))


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in manifest_module.load(checks_root()).by_name}


def checks_root():
    from tests.conftest import REPO

    return REPO


# (id, change, severity, rule, file, subject, message fragment)
CASES = [
    # 1. Compose itself
    ("compose-interpolation", lambda r: edit(r, "docker-compose.yml", "${SITE_URL:?SITE_URL is missing in .env}",
                                             "${SITE_URL:?SITE_URL is missing in .env} ${NOT_SET:?NOT_SET is missing}"),
     "error", "compose", "docker-compose.yml", "", "required variable NOT_SET is missing a value"),
    ("compose-schema", lambda r: edit(r, "docker-compose.yml", "    restart: unless-stopped\n", "    restart: unless-stopped\n    colour: blue\n"),
     "error", "compose", "docker-compose.yml", "", "services.db.colour"),
    # 2. Against the manifest
    ("env-missing", lambda r: (r / ".env").unlink(), "error", "env-missing", ".env", "", "not found"),
    ("env-required", lambda r: set_env(r, KAFKA_HOSTS=None), "error", "env-required", ".env", "KAFKA_HOSTS",
     "is required but missing"),
    # The PostHog contract (compatibility.yml)
    ("compatibility-postgres", lambda r: set_env(r, POSTGRES_IMAGE="postgres:15.12-alpine"), "error", "compatibility",
     ".env", "POSTGRES_IMAGE", "is PostgreSQL 15.12, outside >=11.0.0,<=14.1.0"),
    ("compatibility-redis", lambda r: set_env(r, REDIS_IMAGE="redis:7.2-alpine"), "error", "compatibility",
     ".env", "REDIS_IMAGE", "is Redis 7.2, outside >=5.0.0,<=6.3.0"),
    ("compatibility-clickhouse", lambda r: set_env(r, CLICKHOUSE_IMAGE="clickhouse/clickhouse-server:24.8"), "error",
     "compatibility", ".env", "CLICKHOUSE_IMAGE", "is ClickHouse 24.8, outside >=21.6.0,<22.9.0"),
    ("compatibility-digest", lambda r: set_env(r, REDIS_IMAGE="redis@sha256:" + "e" * 64), "warning", "compatibility",
     ".env", "REDIS_IMAGE", "cannot be known"),
    ("kafka-url-stale", lambda r: set_env(r, KAFKA_HOSTS="broker:9092", KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://broker:9092"),
     "error", "consistency", ".env", "KAFKA_URL", "names other brokers than KAFKA_HOSTS"),
    ("env-unknown", lambda r: set_env(r, POSTGRES_PASWORD="x"), "warning", "env-unknown", ".env", "POSTGRES_PASWORD",
     "is not in the manifest"),
    ("env-empty", lambda r: set_env(r, CLICKHOUSE_HOST=""), "error", "env-empty", ".env", "CLICKHOUSE_HOST", "is empty"),
    ("env-syntax", lambda r: (r / ".env").write_text((r / ".env").read_text() + "this is not an assignment\n"),
     "error", "env-syntax", ".env", "", "line is not KEY=VALUE"),
    ("format-key-43", lambda r: set_env(r, ENCRYPTION_SALT_KEYS="a" * 43), "error", "format", ".env",
     "ENCRYPTION_SALT_KEYS", "43 characters, the output of `openssl rand -base64 32 | tr`"),
    ("format-key-std-b64", lambda r: set_env(r, ENCRYPTION_SALT_KEYS="abc+/abcabcabcabcabcabcabcabcab="), "error", "format",
     ".env", "ENCRYPTION_SALT_KEYS", "containing + / or =: that is standard base64"),
    ("format-key-list-entry", lambda r: set_env(r, ENCRYPTION_SALT_KEYS="A" * 32 + ",short"), "error", "format", ".env",
     "ENCRYPTION_SALT_KEYS", "has an entry of 5 characters"),
    # PostHog 1.43 reads TRUST_ALL_PROXIES with os.getenv (posthog/settings/access.py:32): "false" is true.
    ("format-trust-all-proxies-false", lambda r: set_env(r, TRUST_ALL_PROXIES="false"), "error", "format", ".env",
     "TRUST_ALL_PROXIES", "PostHog reads any non-empty value, 'false' included, as true"),
    ("format-url", lambda r: set_env(r, SITE_URL="localhost:8080"), "error", "format", ".env", "SITE_URL",
     "must be an http:// or https:// URL"),
    ("format-port", lambda r: set_env(r, WEB_PORT="80800"), "error", "format", ".env", "WEB_PORT", "must be a port number"),
    ("format-boolean", lambda r: set_env(r, CLICKHOUSE_SECURE="False"), "error", "format", ".env", "CLICKHOUSE_SECURE",
     "must be written true or false"),
    ("format-integer", lambda r: set_env(r, ZOOKEEPER_TICK_TIME="2s"), "error", "format", ".env", "ZOOKEEPER_TICK_TIME",
     "must be a whole number"),
    ("format-memory", lambda r: set_env(r, REDIS_MAX_MEMORY="lots"), "error", "format", ".env", "REDIS_MAX_MEMORY",
     "must be a size such as 200mb"),
    ("format-image", lambda r: set_env(r, POSTHOG_IMAGE="posthog/posthog:has space"), "error", "format", ".env",
     "POSTHOG_IMAGE", "must be an image reference"),
    # 3. Insecure values
    ("insecure-placeholder", lambda r: set_env(r, SECRET_KEY=manifest_module.load(r)["SECRET_KEY"].default), "error",
     "insecure-placeholder", ".env", "SECRET_KEY", "still has the example placeholder"),
    ("insecure-posthog-default", lambda r: set_env(r, ENCRYPTION_SALT_KEYS="00beef0000beef0000beef0000beef00"), "error",
     "insecure-default", ".env", "ENCRYPTION_SALT_KEYS", "PostHog's built-in development key"),
    ("insecure-known-password", lambda r: set_env(r, CLICKHOUSE_PASSWORD="changeme"), "error", "insecure-default", ".env",
     "CLICKHOUSE_PASSWORD", "well-known default"),
    ("insecure-empty-password", lambda r: set_env(r, REDIS_PASSWORD=""), "error", "env-empty", ".env", "REDIS_PASSWORD",
     "is empty"),
    ("insecure-short-secret-key", lambda r: set_env(r, SECRET_KEY="abcdefghijklmnopqrstuvwxyz"), "error", "insecure-short",
     ".env", "SECRET_KEY", "is 26 characters; at least 50 are needed"),
    # 4. Consistency
    ("database-url", lambda r: set_env(r, DATABASE_URL="postgres://posthog:other@db:5432/posthog"), "error", "consistency",
     ".env", "DATABASE_URL", "password differs from POSTGRES_PASSWORD"),
    ("database-url-host", lambda r: set_env(r, DATABASE_URL=EnvFile.load(r / ".env").values()["DATABASE_URL"].replace("@db:", "@localhost:")),
     "error", "consistency", ".env", "DATABASE_URL", "host is not the `db` service"),
    ("redis-url", lambda r: set_env(r, REDIS_URL="redis://:x@cache:6379/"), "error", "consistency", ".env", "REDIS_URL",
     "does not point at the `redis` service"),
    ("kafka-replication", lambda r: set_env(r, KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="3"), "error", "consistency", ".env",
     "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "is 3 but there is 1 Kafka broker"),
    ("kafka-min-isr", lambda r: set_env(r, KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="2"), "error", "consistency", ".env",
     "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "is 2 but there is 1 Kafka broker"),
    ("clickhouse-password-xml", lambda r: set_env(r, CLICKHOUSE_PASSWORD="abc<def&ghijklmnopq"), "error", "format", ".env",
     "CLICKHOUSE_PASSWORD", "contains < or &, which break ClickHouse's XML config"),
    ("site-url-ssl-redirect", lambda r: set_env(r, DISABLE_SECURE_SSL_REDIRECT="false"), "error", "consistency", ".env",
     "SITE_URL", "Django redirects every request to https"),
    ("site-url-https-no-proxy", lambda r: set_env(r, SITE_URL="https://posthog.example.com"), "warning", "consistency",
     ".env", "IS_BEHIND_PROXY", "is false but SITE_URL is https://"),
    ("site-url-port", lambda r: set_env(r, SITE_URL="http://localhost:9000"), "warning", "consistency", ".env", "SITE_URL",
     "uses port 9000 but WEB_PORT is 8080"),
    # 5. Compose anti-patterns
    ("compose-literal", lambda r: edit(r, "docker-compose.yml", "POSTGRES_DB: ${POSTGRES_DB:?POSTGRES_DB is missing in .env}",
                                       "POSTGRES_DB: posthog"),
     "error", "compose-literal", "docker-compose.yml", "db.POSTGRES_DB", "has a literal value in `environment:`"),
    ("compose-missing-service", lambda r: edit(r, "docker-compose.yml", "\n  redis:\n    profiles:", "\n  cache:\n    profiles:"), "error",
     "compose-services", "docker-compose.yml", "redis", "service is missing"),
    ("compose-depends", lambda r: edit(r, "docker-compose.yml",
                                       "    depends_on: *datastore-dependencies\n    healthcheck:\n      # Readiness of the web role",
                                       "    depends_on:\n      db:\n        condition: service_healthy\n      redis:\n        condition: service_healthy\n"
                                       "      clickhouse:\n        condition: service_healthy\n    healthcheck:\n      # Readiness of the web role"),
     "error", "compose-depends", "docker-compose.yml", "web -> kafka", "depends_on edge is missing"),
    # The seed's order: web waiting for the worker, which waits for web's migrations.
    ("compose-depends-deadlock", lambda r: edit(r, "docker-compose.yml",
                                                "    depends_on: *datastore-dependencies\n    healthcheck:\n      # Readiness of the web role",
                                                "    depends_on:\n      <<: *datastore-dependencies\n      worker:\n        condition: service_healthy\n"
                                                "    healthcheck:\n      # Readiness of the web role"),
     "error", "compose-depends", "docker-compose.yml", "web -> worker", "which waits for web's migrations"),
    ("compose-volume-renamed", lambda r: [edit(r, "docker-compose.yml", "postgres-data", "pg-data", 2)], "error",
     "compose-volumes", "docker-compose.yml", "postgres-data", "data volume is missing or renamed"),
    ("compose-unknown-variable", lambda r: edit(r, "docker-compose.yml", "restart: unless-stopped\n    environment:\n      POSTGRES_USER",
                                                "restart: ${DB_RESTART:-unless-stopped}\n    environment:\n      POSTGRES_USER"),
     "error", "compose-unknown-variable", "docker-compose.yml", "DB_RESTART", "is referenced but not in the manifest"),
    # ClickHouse XML
    ("clickhouse-malformed", lambda r: edit(r, "clickhouse/config.xml", "</logger>", "</loger>"), "error", "clickhouse-xml",
     "clickhouse/config.xml", "", "is not well-formed XML"),
    ("clickhouse-env-not-passed", lambda r: edit(r, "docker-compose.yml",
                                                 "      CLICKHOUSE_LOG_LEVEL: ${CLICKHOUSE_LOG_LEVEL:?CLICKHOUSE_LOG_LEVEL is missing in .env}\n", ""),
     "error", "clickhouse-from-env", "clickhouse/config.xml", "CLICKHOUSE_LOG_LEVEL", "not passed to the clickhouse service"),
    ("clickhouse-hardcoded-password", lambda r: edit(r, "clickhouse/users.xml", '<password from_env="CLICKHOUSE_PASSWORD"/>',
                                                     "<password>hunter2</password>"),
     "error", "clickhouse-password", "clickhouse/users.xml", "password", "is hard-coded in the XML"),
    # 6. Drift and .env protection
    ("drift-env-example", lambda r: edit(r, ".env.example", "WEB_PORT=8080", "WEB_PORT=9090"), "warning", "drift",
     ".env.example", "", "differs from what variables.yml generates"),
    ("drift-readme", lambda r: edit(r, "README.md", "| `WEB_PORT` |", "| `WEB-PORT` |"), "warning", "drift", "README.md", "",
     "differs from what variables.yml generates"),
    ("env-permissions", lambda r: os.chmod(r / ".env", 0o644), "error", "env-permissions", ".env", "",
     "is readable by other users (mode 644)"),
    ("env-tracked", lambda r: [subprocess.run(c, cwd=r, check=True, capture_output=True) for c in (
        ["git", "init", "-q"], ["git", "add", "-f", ".env"])], "error", "env-tracked", ".env", "", "is tracked by git"),
]


def test_a_fresh_deployment_has_no_findings(deployment):
    assert checks.collect(deployment, environ=clean_env()) == []
    result = run_invoke(deployment, "config-check", env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("config-check passed: 0 error(s), 0 warning(s)")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_rule_reports_its_finding(deployment, case):
    _, change, severity, rule, file, subject, fragment = case
    change(deployment)
    findings = checks.collect(deployment, environ=clean_env())
    matching = [f for f in findings if (f.severity, f.rule, f.file, f.subject) == (severity, rule, file, subject)
                and fragment in f.message]
    assert matching, "\n".join(f.text() for f in findings)
    assert all("\n" not in f.text() for f in findings)
    expected_code = 1 if severity == "error" else 0
    assert checks.main(deployment) == expected_code


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "format-key-43", "env-unknown", "compose-literal", "clickhouse-malformed", "drift-readme", "kafka-replication")],
    ids=lambda c: c[0])
def test_exit_codes_and_strict_through_the_cli(deployment, case):
    _, change, severity, rule, file, subject, fragment = case
    change(deployment)
    result = run_invoke(deployment, "config-check", env=clean_env())
    assert result.returncode == (1 if severity == "error" else 0), result.stdout
    assert " ".join(fragment.split()) in " ".join(result.stdout.split())  # however the terminal wraps it
    strict = run_invoke(deployment, "config-check", "--strict", env=clean_env())
    assert strict.returncode == 1


def test_json_output_is_machine_readable(deployment):
    set_env(deployment, WEB_PORT="0")
    result = run_invoke(deployment, "config-check", "--json", env=clean_env())
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["errors"] == 1
    finding = report["findings"][0]
    assert finding == {"severity": "error", "rule": "format", "file": ".env", "line": finding["line"],
                       "subject": "WEB_PORT", "message": "must be a port number from 1 to 65535",
                       "fix": "use TCP port, 1 to 65535"}
    assert isinstance(finding["line"], int)


def test_no_secret_value_is_ever_printed(deployment):
    values = EnvFile.load(deployment / ".env").values()
    # Break every secret so that each appears in a finding's subject.
    set_env(deployment, ENCRYPTION_SALT_KEYS=values["ENCRYPTION_SALT_KEYS"] + "x",
            DATABASE_URL=values["DATABASE_URL"].replace("@db:", "@elsewhere:"))
    secrets = [v for k, v in EnvFile.load(deployment / ".env").values().items()
               if manifest_module.load(deployment)[k].secret and v]  # an unset one (KAFKA_SASL_PASSWORD) has no value
    assert len(secrets) >= 6
    for args in (["config-check"], ["config-check", "--json"]):
        result = run_invoke(deployment, *args, env=clean_env())
        output = result.stdout + result.stderr
        assert "ENCRYPTION_SALT_KEYS" in output
        for secret in secrets:
            assert secret not in output


def test_shell_environment_overriding_env_is_a_warning(deployment):
    environ = {**clean_env(), "WEB_PORT": "9999"}
    findings = checks.collect(deployment, environ=environ)
    assert [(f.rule, f.subject) for f in findings] == [("shell-override", "WEB_PORT")]
    assert "9999" not in findings[0].text()


def test_missing_compose_is_a_clear_error_not_a_traceback(deployment):
    env = {**clean_env(), "POSTHOG_COMPOSE_BINARY": "/nonexistent/docker-compose"}
    result = run_invoke(deployment, "config-check", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "compose-missing" in json.loads(run_invoke(deployment, "config-check", "--json", env=env).stdout)["findings"][0]["rule"]


def test_require_clean_refuses_on_errors(deployment, capsys):
    from posthog_compose.errors import OperatorError

    set_env(deployment, WEB_PORT="x")
    with pytest.raises(OperatorError, match=r"config-check found 2 error\(s\); nothing was started or changed"):
        checks.require_clean(deployment)
    assert "WEB_PORT" in capsys.readouterr().out


def test_a_certificate_that_expires_within_30_days_is_a_warning(deployed, monkeypatch):
    from posthog_compose.configuration import certs, checks

    certs.ensure(deployed)
    assert not [f for f in checks.collect(deployed) if f.rule.startswith("certificate")]
    monkeypatch.setattr(certs, "SERVER_DAYS", 10)
    certs.make_server_cert(deployed, "redis", *certs._load(deployed, "ca"))
    found = [f for f in checks.collect(deployed) if f.rule.startswith("certificate")]
    assert [(f.severity, f.rule, f.file) for f in found] == [("warning", "certificate-expiry", "certs/redis.crt")]
    assert "expires in 9 day(s)" in found[0].message or "expires in 10 day(s)" in found[0].message
    assert "invoke harden --only certificates" in found[0].fix
    result = run_invoke(deployed, "config-check")
    assert result.returncode == 0 and "certs/redis.crt" in result.stdout + result.stderr


def test_a_port_of_unicode_digits_is_a_format_error_not_a_crash():
    from posthog_compose.configuration import formats

    assert formats._port("²") == "must be a port number from 1 to 65535"  # "²".isdigit() is True, int() fails
    assert formats._port("٨٠") and formats._port("8080") is None

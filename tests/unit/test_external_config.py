"""External datastores in configuration: the one switch per datastore as Compose itself reads it
(real Compose binary), and config-check's rules for the external endpoints (TLS, CA, addresses)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.operations import bootstrap

from posthog_compose.configuration import certs, checks, datastores, manifest as manifest_module
from posthog_compose.configuration.envfile import EnvFile
from tests.conftest import compose_command, run_invoke, set_env

PG_URL = ("postgres://posthog:{password}@pg.managed.example:5432/posthog"
          "?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt")
REDIS_URL = ("rediss://:{password}@redis.managed.example:6380/0"
             "?ssl_cert_reqs=required&ssl_ca_certs=/etc/posthog/datastore-ca/ca.crt")
PASSWORD = "Ext3rnal-s3cret-passw0rd-xyz"


def compose(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(compose_command(root, *args), capture_output=True, text=True,
                          cwd=root, timeout=60)


def write_ca(root: Path) -> Path:
    """A real CA certificate (the kit's own CA code) saved where the operator puts the provider's CA."""
    certs.cert_dir(root).mkdir(mode=0o700, exist_ok=True)
    certs.make_ca(root, "managed")
    target = root / datastores.CA_DIR / "ca.crt"
    shutil.copy(certs.paths(root, certs.CA_NAME)[0], target)
    return target


@pytest.fixture
def deployment(repo):
    bootstrap.init(repo, manifest_module.load(repo))
    return repo


@pytest.fixture
def external_pg(deployment):
    write_ca(deployment)
    set_env(deployment, POSTGRES_MODE="external", DATABASE_URL=PG_URL.format(password=PASSWORD))
    return deployment


def findings(root: Path, rule_prefix: str = "external"):
    return [f for f in checks.collect(root, environ=_environ()) if f.rule.startswith(rule_prefix)]


def _environ():
    import os

    names = manifest_module.load(checks_root()).by_name
    return {k: v for k, v in os.environ.items() if k not in names}


def checks_root():
    from tests.conftest import REPO

    return REPO


# ----------------------------------------------------------------------------- the switch, in Compose
@pytest.mark.parametrize("modes", list(itertools.product(datastores.MODES, repeat=4)),
                         ids=lambda modes: "-".join(m[0] for m in modes))
def test_compose_runs_exactly_the_local_datastores(deployment, modes):
    values = dict(zip(datastores.MODE_VARIABLE.values(), modes))
    set_env(deployment, **values)
    result = compose(deployment, "config", "--services")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(datastores.local_services(values))


def test_external_postgres_acceptance(external_pg):
    """With PostgreSQL external, `docker compose config` has no db service and web gets the
    external URL with its TLS settings and the CA folder."""
    result = compose(external_pg, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert "db" not in model["services"]
    for name in ("web", "worker", "plugins"):
        service = model["services"][name]
        url = service["environment"]["DATABASE_URL"]
        assert "@pg.managed.example:5432/" in url and "sslmode=verify-full" in url
        assert "sslrootcert=/etc/posthog/datastore-ca/ca.crt" in url
        mounts = {(m["target"], m.get("read_only")) for m in service["volumes"]}
        assert (str(datastores.CA_MOUNT), True) in mounts
        assert service["depends_on"]["db"]["required"] is False
    # The rest of the deployment is untouched.
    assert {"redis", "clickhouse", "kafka", "zookeeper"} <= set(model["services"])
    assert not [f for f in checks.collect(external_pg, environ=_environ()) if f.severity == "error"]


def test_down_names_every_service_of_the_deployment(external_pg):
    """`invoke down` passes --profile '*': a --profile flag REPLACES COMPOSE_PROFILES (Compose does not
    add it), so `--profile external` alone would leave out every local datastore, while '*' also
    reaches a local db kept stopped after a migration."""
    only_external = compose(external_pg, "--profile", "external", "config", "--services")
    assert only_external.returncode == 0, only_external.stderr
    assert sorted(only_external.stdout.split()) == ["db", "plugins", "web", "worker"]
    everything = compose(external_pg, "--profile", "*", "config", "--services")
    assert sorted(everything.stdout.split()) == sorted(datastores.ALL_SERVICES)


def test_plain_text_is_refused_unless_allowed(external_pg):
    set_env(external_pg, DATABASE_URL=PG_URL.format(password=PASSWORD).replace("verify-full", "disable"))
    [finding] = [f for f in findings(external_pg) if f.subject == "DATABASE_URL"]
    assert (finding.severity, finding.rule) == ("error", "external-tls")
    assert "ALLOW_PLAINTEXT_DATASTORES" in finding.fix
    result = run_invoke(external_pg, "config-check", env=_environ())
    assert result.returncode == 1 and "DATABASE_URL" in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    set_env(external_pg, ALLOW_PLAINTEXT_DATASTORES="true")
    [finding] = [f for f in findings(external_pg) if f.subject == "DATABASE_URL"]
    assert finding.severity == "warning" and "allowed by ALLOW_PLAINTEXT_DATASTORES=true" in finding.message
    assert run_invoke(external_pg, "config-check", env=_environ()).returncode == 0


# (id, .env changes on top of an external PostgreSQL, severity, rule, subject, message fragment)
CASES = [
    ("pg-local-host", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).replace("pg.managed.example", "db")),
     "error", "external-address", "DATABASE_URL", "points at the local `db` service"),
    ("pg-no-sslmode", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).split("?")[0]),
     "error", "external-tls", "DATABASE_URL", "has no sslmode"),
    ("pg-require", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).replace("verify-full", "require")),
     "error", "external-tls", "DATABASE_URL", "does not verify"),
    ("pg-verify-ca", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).replace("verify-full", "verify-ca")),
     "warning", "external-tls", "DATABASE_URL", "not the host name"),
    ("pg-no-verify", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).replace("verify-full", "no-verify")),
     "error", "external-tls", "DATABASE_URL", "only Node.js knows"),
    ("pg-no-rootcert", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).split("&")[0]),
     "error", "external-ca", "DATABASE_URL", "without sslrootcert"),
    ("pg-ca-missing", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).replace("ca.crt", "other.crt")),
     "error", "external-ca", "DATABASE_URL", "datastore-ca/other.crt does not exist"),
    ("pg-ca-outside", dict(DATABASE_URL=PG_URL.format(password=PASSWORD).replace("/etc/posthog/datastore-ca/", "/tmp/")),
     "warning", "external-ca", "DATABASE_URL", "is outside /etc/posthog/datastore-ca"),
    ("redis-plain", dict(REDIS_MODE="external", REDIS_URL=f"redis://:{PASSWORD}@redis.managed.example:6379/0"),
     "error", "external-tls", "REDIS_URL", "is redis://"),
    ("redis-no-cert-reqs", dict(REDIS_MODE="external",
                                REDIS_URL=f"rediss://:{PASSWORD}@redis.managed.example:6379/0"),
     "error", "external-tls", "REDIS_URL", "Celery refuses"),
    ("redis-cert-none", dict(REDIS_MODE="external", REDIS_URL=REDIS_URL.format(password=PASSWORD).replace(
        "required", "none")), "error", "external-tls", "REDIS_URL", "is not verified"),
    ("redis-capitals", dict(REDIS_MODE="external", REDIS_URL=REDIS_URL.format(password=PASSWORD).replace(
        "required", "CERT_REQUIRED")), "error", "external-tls", "REDIS_URL", "lower-case"),
    ("redis-local-host", dict(REDIS_MODE="external", REDIS_URL=REDIS_URL.format(password=PASSWORD).replace(
        "redis.managed.example", "redis")), "error", "external-address", "REDIS_URL", "local `redis` service"),
    ("redis-node-ca", dict(REDIS_MODE="external", REDIS_URL=REDIS_URL.format(password=PASSWORD)),
     "warning", "external-ca", "EXTERNAL_CA_FILE", "plugin server (Node.js)"),
    ("clickhouse-plain", dict(CLICKHOUSE_MODE="external", CLICKHOUSE_HOST="ch.managed.example"),
     "error", "external-tls", "CLICKHOUSE_SECURE", "plain text"),
    ("clickhouse-no-ca", dict(CLICKHOUSE_MODE="external", CLICKHOUSE_HOST="ch.managed.example",
                              CLICKHOUSE_SECURE="true", CLICKHOUSE_VERIFY="true"),
     "error", "external-ca", "CLICKHOUSE_CA", "fails without a CA file"),
    ("clickhouse-unverified", dict(CLICKHOUSE_MODE="external", CLICKHOUSE_HOST="ch.managed.example",
                                   CLICKHOUSE_SECURE="true", CLICKHOUSE_VERIFY="true",
                                   CLICKHOUSE_CA=datastores.CLICKHOUSE_CA_DEFAULT),
     "warning", "external-tls", "CLICKHOUSE_HOST", "does not verify ClickHouse's certificate"),
    ("clickhouse-local-host", dict(CLICKHOUSE_MODE="external", CLICKHOUSE_SECURE="true",
                                   CLICKHOUSE_CA=datastores.CLICKHOUSE_CA_DEFAULT),
     "error", "external-address", "CLICKHOUSE_HOST", "local `clickhouse` service"),
    ("kafka-plain", dict(KAFKA_MODE="external", KAFKA_HOSTS="b1.managed.example:9093",
                         KAFKA_URL="kafka://b1.managed.example:9093"),
     "error", "external-tls", "KAFKA_SECURITY_PROTOCOL", "plain text"),
    ("kafka-sasl-incomplete", dict(KAFKA_MODE="external", KAFKA_HOSTS="b1.managed.example:9093",
                                   KAFKA_URL="kafka://b1.managed.example:9093", KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                                   KAFKA_SASL_MECHANISM="SCRAM-SHA-512"),
     "error", "external-kafka", "KAFKA_SECURITY_PROTOCOL", "not all set"),
    ("kafka-sasl-without-protocol", dict(KAFKA_MODE="external", KAFKA_HOSTS="b1.managed.example:9093",
                                         KAFKA_URL="kafka://b1.managed.example:9093", KAFKA_SECURITY_PROTOCOL="SSL",
                                         KAFKA_SASL_MECHANISM="PLAIN", KAFKA_SASL_USER="u", KAFKA_SASL_PASSWORD=PASSWORD),
     "error", "external-kafka", "KAFKA_SASL_MECHANISM", "the plugin server would use SASL"),
    ("kafka-b64-incomplete", dict(KAFKA_MODE="external", KAFKA_HOSTS="b1.managed.example:9093",
                                  KAFKA_URL="kafka://b1.managed.example:9093", KAFKA_SECURITY_PROTOCOL="SSL",
                                  KAFKA_BASE64_KEYS="true"),
     "error", "external-kafka", "KAFKA_BASE64_KEYS", "not all set"),
    ("kafka-system-cas", dict(KAFKA_MODE="external", KAFKA_HOSTS="b1.managed.example:9093",
                              KAFKA_URL="kafka://b1.managed.example:9093", KAFKA_SECURITY_PROTOCOL="SSL"),
     "warning", "external-tls", "KAFKA_SECURITY_PROTOCOL", "system's CAs"),
    ("kafka-local-host", dict(KAFKA_MODE="external", KAFKA_SECURITY_PROTOCOL="SSL"),
     "error", "external-address", "KAFKA_HOSTS", "local `kafka` service"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_external_rule_reports_its_finding(external_pg, case):
    _, changes, severity, rule, subject, fragment = case
    set_env(external_pg, **changes)
    found = [f for f in findings(external_pg) if f.subject == subject and f.rule == rule]
    assert found, "\n".join(f.text() for f in findings(external_pg))
    assert any(f.severity == severity and fragment in f.message for f in found), "\n".join(f.text() for f in found)
    for finding in findings(external_pg):
        assert PASSWORD not in finding.text()


def test_a_local_deployment_has_no_external_findings(deployment):
    assert findings(deployment) == []


@pytest.mark.parametrize("content,problem", [
    (b"not a certificate", "is not a PEM certificate"),
    (b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n", "holds a private key"),
])
def test_a_broken_ca_file_is_named(external_pg, content, problem):
    (external_pg / "datastore-ca" / "ca.crt").write_bytes(content)
    [finding] = [f for f in findings(external_pg) if f.rule == "external-ca"]
    assert finding.severity == "error" and problem in finding.message and "datastore-ca/ca.crt" in finding.message


def test_an_expiring_ca_is_a_warning(external_pg, monkeypatch):
    real_now = dt.datetime.now(dt.timezone.utc)

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_now + dt.timedelta(days=certs.CA_DAYS - 10)

    monkeypatch.setattr(dt, "datetime", Later)
    found = [f for f in findings(external_pg) if f.rule == "external-ca"]
    assert [f.severity for f in found] == ["warning"] and "expires in" in found[0].message


def test_host_path_maps_container_paths_back_to_the_folder(tmp_path):
    assert datastores.host_path(tmp_path, "/etc/posthog/datastore-ca/ca.crt") == tmp_path / "datastore-ca" / "ca.crt"
    assert datastores.host_path(tmp_path, datastores.CLICKHOUSE_CA_DEFAULT) == tmp_path / "datastore-ca" / "ca.crt"
    for outside in ("/etc/posthog/datastore-ca/../../../etc/passwd", "/etc/ssl/certs/ca-certificates.crt",
                    "/etc/posthog/datastore-ca", "", None):
        assert datastores.host_path(tmp_path, outside) is None


def test_endpoints_never_carry_a_password():
    values = {"POSTGRES_MODE": "external", "DATABASE_URL": PG_URL.format(password=PASSWORD),
              "REDIS_MODE": "external", "REDIS_URL": REDIS_URL.format(password=PASSWORD),
              "CLICKHOUSE_MODE": "external", "CLICKHOUSE_HOST": "ch.example", "CLICKHOUSE_SECURE": "true",
              "KAFKA_MODE": "external", "KAFKA_HOSTS": "b1.example:9093,b2.example:9093",
              "KAFKA_SECURITY_PROTOCOL": "SSL"}
    found = datastores.endpoints(values)
    assert [(e.datastore, e.address, e.tls, e.verify) for e in found] == [
        ("postgres", "pg.managed.example:5432", True, True), ("redis", "redis.managed.example:6380", True, True),
        ("clickhouse", "ch.example:8443", True, False), ("kafka", "b1.example:9093", True, True),
        ("kafka", "b2.example:9093", True, True)]
    assert PASSWORD not in repr(found)
    assert datastores.local_services(values) == ["web", "worker", "plugins"]
    assert datastores.local_volumes(values) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=8, max_size=30),
       host=st.text(st.characters(codec="ascii"), min_size=0, max_size=20),
       query=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_any_external_url_gets_findings_not_a_crash_nor_a_leak(external_pg, password, host, query):
    """Whatever the operator pastes as DATABASE_URL / REDIS_URL, the rules answer with findings and
    never print the password, encoded or not."""
    if "\n" in password + host + query or "\r" in password + host + query or "\x00" in password + host + query:
        return  # one .env line per value
    env = EnvFile.load(external_pg / ".env")
    values = env.values()
    values.update(POSTGRES_MODE="external", REDIS_MODE="external",
                  DATABASE_URL=f"postgres://posthog:{quote(password, safe='')}@{host}/posthog?{query}",
                  REDIS_URL=f"rediss://:{quote(password, safe='')}@{host}:6379/0?{query}")
    report = checks._Report()
    datastores.check(external_pg, env, values, report)
    for finding in report.findings:
        assert quote(password, safe="") not in finding.text()
        if len(password.strip()) >= 8:
            assert password not in finding.text()


@pytest.mark.parametrize("name,value", [("KAFKA_LOG_RETENTION_HOURS", "١٦٨"), ("WEB_PORT", "８０００"),
                                        ("KAFKA_HOSTS", "kafka:９０９２"), ("LOG_MAX_FILE", "⁵")])
def test_digits_of_other_scripts_are_not_numbers(deployment, name, value):
    """str.isdigit() accepts them and int() even parses some; Compose would hand them on verbatim."""
    set_env(deployment, **{name: value})
    found = [f for f in checks.collect(deployment, environ=_environ()) if f.subject == name]
    assert any(f.severity == "error" and f.rule == "format" for f in found), [f.text() for f in found]

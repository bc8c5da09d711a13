"""docker-compose.yml: the fixed services, variables only from the manifest, and the real
Compose binary accepting it (and rejecting a missing secret clearly)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from posthog_compose.configuration import compose
from posthog_compose.configuration.manifest import SERVICES
from tests.conftest import REPO, run_invoke

REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
FROM_ENV_RE = re.compile(r'from_env="([A-Za-z_][A-Za-z0-9_]*)"')


def _compose_text():
    return (REPO / "docker-compose.yml").read_text()


def _compose():
    return yaml.safe_load(_compose_text())


def test_the_eight_services_have_their_fixed_names():
    assert set(_compose()["services"]) == set(SERVICES)


def test_every_reference_is_in_the_manifest_and_every_variable_is_used(manifest):
    referenced = set(REFERENCE_RE.findall(_compose_text() + (REPO / "docker-compose.proxy.yml").read_text()))
    from_env = set()
    for xml in (REPO / "clickhouse").glob("*.xml"):
        from_env |= set(FROM_ENV_RE.findall(xml.read_text()))
    names = {v.name for v in manifest.variables}
    assert referenced - names == set()
    assert from_env - names == set()
    # Read by Compose itself from .env (the active profiles) and by config-check alone, not by a container.
    read_elsewhere = {"COMPOSE_PROFILES", "ALLOW_PLAINTEXT_DATASTORES"}
    assert names - referenced - from_env - read_elsewhere == set()
    assert read_elsewhere <= names


def test_no_literal_value_in_any_environment_block():
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Z0-9_]+(:[?-][^}]*)?\}", value), (name, key, value)


def test_clickhouse_config_holds_no_secret_or_env_value(manifest):
    for xml in (REPO / "clickhouse").glob("*.xml"):
        text = xml.read_text()
        assert "<password>" not in text and "password_sha256" not in text
        for tag in ("level", "max_memory_usage", "kafka_broker_list"):
            assert f"<{tag}>" not in text, f"{xml.name}: <{tag}> must use from_env"
    config = (REPO / "clickhouse" / "config.xml").read_text()
    for needed in ("<remote_servers>", "<posthog>", "<macros>", "<zookeeper>", "<distributed_ddl>", "kafka_broker_list"):
        assert needed in config


def test_only_web_publishes_a_port_and_data_volumes_are_named():
    data = _compose()
    published = {name for name, s in data["services"].items() if s.get("ports")}
    assert published == {"web"}
    assert {"postgres-data", "clickhouse-data", "zookeeper-data", "zookeeper-logs", "kafka-data"} <= set(data["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in data["services"]["db"]["volumes"]


def test_every_service_has_a_healthcheck_and_web_waits_for_its_dependencies():
    data = _compose()
    for name, service in data["services"].items():
        assert service.get("healthcheck", {}).get("test"), name
    web = data["services"]["web"]["depends_on"]
    for dependency in ("db", "redis", "clickhouse", "kafka"):
        assert web[dependency]["condition"] == "service_healthy"


def test_boot_order_runs_migrations_before_the_processes_that_check_them():
    """Only web runs ./bin/migrate; the worker's launcher exits while a migration is pending
    (bin/docker-worker-celery:84 at 1.43.0) and the plugin server needs the schema. So worker and plugins
    wait for a healthy web, and web waits for neither (that would wait for a process waiting for web)."""
    services = _compose()["services"]
    assert not {"worker", "plugins"} & set(services["web"]["depends_on"])
    for name in ("worker", "plugins"):
        assert services[name]["depends_on"]["web"] == {"condition": "service_healthy"}, name
        for datastore in ("db", "redis", "clickhouse", "kafka"):
            assert services[name]["depends_on"][datastore]["condition"] == "service_healthy", (name, datastore)
    assert "./bin/migrate" in services["web"]["command"][-1]
    assert "migrate" not in " ".join(services["worker"]["command"] + services["plugins"]["command"])


def _resolved_environment(repo, service):
    import json

    result = subprocess.run(compose.command(repo, "config", "--format", "json"), cwd=repo, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"][service]


def test_real_compose_passes_no_trust_all_proxies_that_posthog_reads_as_true(repo):
    """PostHog 1.43 reads TRUST_ALL_PROXIES with os.getenv (posthog/settings/access.py:32): any non-empty
    value is true. With the defaults the web and worker containers get an empty one (off)."""
    assert run_invoke(repo, "init").returncode == 0
    for service in ("web", "worker"):
        environment = _resolved_environment(repo, service)["environment"]
        assert not environment.get("TRUST_ALL_PROXIES"), (service, environment.get("TRUST_ALL_PROXIES"))


def test_an_empty_clickhouse_ca_never_reaches_posthog(repo):
    """posthog/settings/data_stores.py:93 reads CLICKHOUSE_CA with os.getenv: empty is not unset. The
    services' entrypoint, run by a real sh, drops an empty value and keeps a set one."""
    assert run_invoke(repo, "init").returncode == 0
    for service in ("web", "worker", "plugins"):
        resolved = _resolved_environment(repo, service)
        entrypoint = [part.replace("$$", "$") for part in resolved["entrypoint"]]
        probe = ["sh", "-c", 'echo "${CLICKHOUSE_CA-UNSET}"']
        for value, seen in (("", "UNSET"), ("../etc/posthog/datastore-ca/ca.crt", "../etc/posthog/datastore-ca/ca.crt")):
            env = {"PATH": "/usr/bin:/bin", "CLICKHOUSE_CA": value}
            out = subprocess.run(entrypoint + probe, env=env, capture_output=True, text=True)
            assert out.stdout.strip() == seen, (service, value, out.stdout, out.stderr)


def test_posthog_services_use_production_entrypoints():
    services = _compose()["services"]
    assert "runserver" not in _compose_text()
    assert services["web"]["command"][-1] == "./bin/migrate && exec ./bin/docker-server"
    assert services["worker"]["command"] == ["./bin/docker-worker-celery", "--with-scheduler"]
    assert services["plugins"]["command"] == ["./bin/plugin-server", "--no-restart-loop"]
    assert {services[s]["image"] for s in ("web", "worker", "plugins")} == {"${POSTHOG_IMAGE:?POSTHOG_IMAGE is missing in .env}"}


def _compose_config(repo):
    return subprocess.run(compose.command(repo, "config", "--quiet"), cwd=repo, capture_output=True, text=True)


def test_real_compose_accepts_the_deployment_after_init(repo):
    compose.compose_binary()  # the kit's own Compose, installed by the README's steps; raises if missing
    assert run_invoke(repo, "init").returncode == 0
    result = _compose_config(repo)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variable", ["SECRET_KEY", "ENCRYPTION_SALT_KEYS", "POSTGRES_PASSWORD"])
def test_real_compose_rejects_a_removed_secret_clearly(repo, variable):
    assert run_invoke(repo, "init").returncode == 0
    env = repo / ".env"
    env.write_text("".join(line for line in env.read_text().splitlines(True) if not line.startswith(f"{variable}=")))
    result = _compose_config(repo)
    assert result.returncode != 0
    assert f"required variable {variable} is missing a value: {variable} is missing in .env" in result.stderr

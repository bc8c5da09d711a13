"""Each PostHog process gets the names it reads at the pinned release, and KAFKA_URL follows KAFKA_HOSTS."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from posthog_compose.configuration.manifest import DERIVE_FILTERS

from .test_compose_file import _compose  # noqa: F401  (the compose file as the project loads it)

HOSTS = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}:[1-9][0-9]{0,4}", fullmatch=True), min_size=1, max_size=4)


@given(HOSTS)
def test_kafka_url_is_what_django_parses_back_to_kafka_hosts(hosts):
    from urllib.parse import urlparse

    kafka_hosts = ",".join(hosts)
    kafka_url = DERIVE_FILTERS["kafka-url"](kafka_hosts)
    # PostHog 1.4x, posthog/settings/data_stores.py:
    #   KAFKA_HOSTS_LIST = [urlparse(host).netloc for host in KAFKA_URL.split(",")]
    assert ",".join(urlparse(entry).netloc for entry in kafka_url.split(",")) == kafka_hosts


def test_django_gets_kafka_url_and_the_plugin_server_kafka_hosts():
    services = _compose()["services"]
    for name in ("web", "worker"):
        environment = services[name]["environment"]
        assert "KAFKA_URL" in environment and "KAFKA_HOSTS" not in environment, name
        assert "SECRET_KEY" in environment
    plugins = services["plugins"]["environment"]
    assert "KAFKA_HOSTS" in plugins and "KAFKA_URL" not in plugins
    # The plugin server reads none of Django's own settings; SECRET_KEY goes to the Django migrate-check
    # that bin/plugin-server runs first (bin/plugin-server:29 at 1.43.0), which exits on the default key.
    assert "SECRET_KEY" in plugins
    for name in ("IS_BEHIND_PROXY", "DISABLE_SECURE_SSL_REDIRECT", "TRUST_ALL_PROXIES", "CLICKHOUSE_VERIFY"):
        assert name not in plugins, name
    assert "KAFKA_URL" not in services["clickhouse"]["environment"]
    for service in services.values():
        assert "ENCRYPTION_KEYS" not in (service.get("environment") or {})


def test_manifest_services_match_the_compose_environments(manifest):
    services = _compose()["services"]
    for variable in manifest.variables:
        # Read by Compose itself (image:, logging:, ports:, the project name), not handed to a process.
        if variable.category in ("Images", "Logs and Disk", "Deployment") or variable.name == "WEB_PORT":
            continue
        for name in ("web", "worker", "plugins"):
            environment = services[name].get("environment") or {}
            # Handed under its own name, or under the name the runtime reads (EXTERNAL_CA_FILE ->
            # NODE_EXTRA_CA_CERTS, which Node.js itself reads).
            handed = variable.name in environment or any(
                str(value).startswith("${" + variable.name + ":") for value in environment.values())
            assert handed == (name in variable.services), (variable.name, name)


def test_real_compose_config_gives_django_kafka_url_consistent_with_kafka_hosts(repo):
    """What Compose itself resolves (the acceptance check): web and worker see KAFKA_URL derived from
    KAFKA_HOSTS, also after KAFKA_HOSTS changes and `invoke init` re-derives it."""
    import json
    import subprocess

    from posthog_compose.configuration import compose

    from ..conftest import run_invoke, set_env

    def resolved():
        result = subprocess.run(compose.command(repo, "config", "--format", "json"), cwd=repo, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["services"]

    assert run_invoke(repo, "init").returncode == 0
    services = resolved()
    for name in ("web", "worker"):
        assert services[name]["environment"]["KAFKA_URL"] == "kafka://kafka:9092", name
    assert services["plugins"]["environment"]["KAFKA_HOSTS"] == "kafka:9092"

    set_env(repo, KAFKA_HOSTS="kafka:9092,kafka2:9093", KAFKA_URL=None)
    assert run_invoke(repo, "init").returncode == 0  # fills in the missing, derived KAFKA_URL
    services = resolved()
    assert services["web"]["environment"]["KAFKA_URL"] == "kafka://kafka:9092,kafka://kafka2:9093"
    assert services["plugins"]["environment"]["KAFKA_HOSTS"] == "kafka:9092,kafka2:9093"

"""Each PostHog process gets the names it reads at the pinned release, and KAFKA_URL follows KAFKA_HOSTS."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from posthog_compose.manifest import DERIVE_FILTERS

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
    # The plugin server reads none of Django's own settings.
    for name in ("SECRET_KEY", "IS_BEHIND_PROXY", "DISABLE_SECURE_SSL_REDIRECT", "TRUST_ALL_PROXIES", "CLICKHOUSE_VERIFY"):
        assert name not in plugins, name
    assert "KAFKA_HOSTS" not in services["clickhouse"]["environment"]
    for service in services.values():
        assert "ENCRYPTION_KEYS" not in (service.get("environment") or {})


def test_manifest_services_match_the_compose_environments(manifest):
    services = _compose()["services"]
    for variable in manifest.variables:
        if variable.category == "Images" or variable.name == "WEB_PORT":  # used in image: and ports:
            continue
        for name in ("web", "worker", "plugins"):
            handed = variable.name in (services[name].get("environment") or {})
            assert handed == (name in variable.services), (variable.name, name)

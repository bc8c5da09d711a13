"""Which services run on this host (every service but the datastores .env makes external, and the
edge proxy when it is on), how an external datastore is named to people (host:port, never
credentials), and the note a failing check that reaches an external datastore carries.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.operations.stack.states import _values


#: How the operator names each datastore (datastores.DATASTORES).
DATASTORE_LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}

#: PostHog's /_readyz check names (posthog/health.py: http, postgres, postgres_migrations_uptodate, clickhouse,
#: kafka_connected, celery_broker, cache; later builds add postgres_flags) -> the datastore each one reaches.
READYZ_DATASTORES = {"postgres": "postgres", "postgres_migrations_uptodate": "postgres", "postgres_flags": "postgres",
                     "clickhouse": "clickhouse",
                     "kafka_connected": "kafka", "kafka": "kafka", "celery_broker": "redis", "cache": "redis",
                     "redis": "redis"}


def services_here(values: dict[str, str] | None) -> list[str]:
    """The compose services that run on this host, in the canonical order: every service but the
    datastores .env declares external (ZooKeeper goes when both ClickHouse and Kafka are external)."""
    from posthog_compose.configuration import datastores

    values = values or {}
    outside = {datastores.SERVICE[name] for name in datastores.external(values)}
    if "zookeeper" not in datastores.local_services(values):
        outside.add("zookeeper")
    return [name for name in SERVICES if name not in outside]


def deployment_services(values: dict[str, str] | None) -> list[str]:
    """What the deployment runs on this host as the operator sees it: ``services_here`` and, when .env
    switches it on (COMPOSE_FILE lists its overlay), the edge proxy, which status, up and logs count
    like any other service."""
    from posthog_compose.configuration import edge

    return services_here(values) + ([edge.SERVICE] if edge.enabled(values or {}) else [])


def known_services(values: dict[str, str] | None) -> list[str]:
    """Every service name a task accepts with -s: the eight of docker-compose.yml, and the edge proxy
    while it is on."""
    from posthog_compose.configuration import edge

    return list(SERVICES) + ([edge.SERVICE] if edge.enabled(values or {}) else [])


def external_services(values: dict[str, str] | None) -> dict[str, object]:
    """compose service -> the datastores.Endpoint it stands for, for each datastore that is external
    (None when its endpoint cannot be read); ``zookeeper`` -> None when it does not run here."""
    from posthog_compose.configuration import datastores

    values = values or {}
    outside = datastores.external(values)
    if not outside:
        return {}
    by_name = first_endpoints(values)
    found: dict[str, object] = {datastores.SERVICE[name]: by_name.get(name) for name in outside}
    if "zookeeper" not in services_here(values):
        found["zookeeper"] = None
    return found


def endpoints(values: dict[str, str]) -> list:
    """datastores.endpoints, or none when .env holds a URL it cannot read (config-check's finding)."""
    from posthog_compose.configuration import datastores

    try:
        return list(datastores.endpoints(values))
    except (ValueError, KeyError, AttributeError):
        return []


def first_endpoints(values: dict[str, str]) -> dict:
    """datastore -> its endpoint (Kafka: the first broker) for each external datastore."""
    found: dict = {}
    for endpoint in endpoints(values):
        found.setdefault(endpoint.datastore, endpoint)
    return found


def endpoint_text(endpoint) -> str:
    """host:port of an endpoint (never its credentials), or "endpoint unknown"."""
    if endpoint is None or not getattr(endpoint, "host", ""):
        return "endpoint unknown"
    host = endpoint.host if ":" not in endpoint.host else f"[{endpoint.host}]"
    return f"{host}:{endpoint.port}" if endpoint.port else host


def external_note(values: dict[str, str], failing: list[str]) -> str:
    """For /_readyz checks that fail: which of them reach an external datastore, said plainly."""
    from posthog_compose.configuration import datastores

    outside = set(datastores.external(values or {}))
    named = []
    for check in failing:
        datastore = READYZ_DATASTORES.get(check)
        if datastore in outside and datastore not in named:
            named.append(datastore)
    if not named:
        return ""
    found = first_endpoints(values)
    parts = [f"{DATASTORE_LABELS[name]} is external ({endpoint_text(found.get(name))})" for name in named]
    return f"; {', '.join(parts)}: `invoke doctor` checks {'it' if len(parts) == 1 else 'them'} from this host"


def _external_hint(root: Path, failing: list[str], reason: str) -> str:
    """When PostHog's services fail and datastores are external: they are reached over the network
    from the containers, so say which and how to check them (unless the reason already says so)."""
    if not {"web", "worker", "plugins"} & set(failing) or "is external" in reason:
        return ""
    try:
        found = first_endpoints(_values(root))
    except Exception:  # .env unreadable: config-check's finding, not this hint's
        return ""
    if not found:
        return ""
    names = ", ".join(f"{DATASTORE_LABELS[name]} at {endpoint_text(endpoint)}" for name, endpoint in found.items())
    return (f"external datastores: {names}. If the logs above show connection, TLS or authentication errors, "
            "`invoke doctor` checks each one from this host")


def kafka_bootstrap_server(values: dict[str, str]) -> str:
    """The broker as the kafka container knows itself: the first of KAFKA_ADVERTISED_LISTENERS (the
    handbook's own command uses it too), else localhost:9092."""
    first = (values.get("KAFKA_ADVERTISED_LISTENERS") or "").split(",")[0].strip()
    address = first.split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    return address if host and port.isdigit() else "localhost:9092"

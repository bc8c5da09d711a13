"""Which datastores run here and which are external, and their endpoints (placeholder of the shared
contract until the core lands; the core's version replaces this file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DATASTORES = ("postgres", "redis", "clickhouse", "kafka")
SERVICE = {"postgres": "db", "redis": "redis", "clickhouse": "clickhouse", "kafka": "kafka"}
VOLUMES = {"db": ("postgres-data",), "clickhouse": ("clickhouse-data",), "zookeeper": ("zookeeper-data", "zookeeper-logs"),
           "kafka": ("kafka-data",), "redis": ()}
CONTAINER_CA_DIR = "/etc/posthog/datastore-ca"
HOST_CA_DIR = "datastore-ca"


@dataclass
class Endpoint:
    datastore: str
    host: str
    port: int
    tls: bool
    verify: bool
    ca_path: str
    ca_host_path: Path | None
    variable: str


def mode(values: dict[str, str], name: str) -> str:
    return (values.get(f"{name.upper()}_MODE") or "local").strip().lower()


def external(values: dict[str, str]) -> list[str]:
    return [name for name in DATASTORES if mode(values, name) == "external"]


def local_services(values: dict[str, str]) -> list[str]:
    from .manifest import SERVICES

    outside = {SERVICE[name] for name in external(values)}
    if "clickhouse" in outside and "kafka" in outside:
        outside.add("zookeeper")
    return [service for service in SERVICES if service not in outside]


def local_volumes(values: dict[str, str]) -> list[str]:
    return [volume for service in local_services(values) for volume in VOLUMES.get(service, ())]


def host_path(root: Path | None, container_path: str) -> Path | None:
    if not container_path or not container_path.startswith(CONTAINER_CA_DIR + "/"):
        return None
    relative = Path(HOST_CA_DIR) / container_path[len(CONTAINER_CA_DIR) + 1:]
    return Path(root) / relative if root is not None else relative


def endpoints(values: dict[str, str]) -> list[Endpoint]:
    root = None
    found = []
    for name in external(values):
        if name == "postgres":
            url = urlsplit(values.get("DATABASE_URL", ""))
            query = parse_qs(url.query)
            ssl = (query.get("sslmode") or [""])[0]
            ca = unquote((query.get("sslrootcert") or [""])[0])
            found.append(Endpoint(name, url.hostname or "", url.port or 5432, ssl in ("require", "verify-ca", "verify-full"),
                                  ssl == "verify-full", ca, host_path(root, ca), "DATABASE_URL"))
        elif name == "redis":
            url = urlsplit(values.get("REDIS_URL", ""))
            query = parse_qs(url.query)
            ca = unquote((query.get("ssl_ca_certs") or [""])[0])
            found.append(Endpoint(name, url.hostname or "", url.port or 6379, url.scheme == "rediss",
                                  (query.get("ssl_cert_reqs") or ["required"])[0] == "required", ca, host_path(root, ca),
                                  "REDIS_URL"))
        elif name == "clickhouse":
            secure = values.get("CLICKHOUSE_SECURE", "").lower() == "true"
            ca = values.get("CLICKHOUSE_CA", "")
            found.append(Endpoint(name, values.get("CLICKHOUSE_HOST", ""), 9440 if secure else 9000, secure,
                                  values.get("CLICKHOUSE_VERIFY", "").lower() == "true", ca, host_path(root, ca),
                                  "CLICKHOUSE_HOST"))
        elif name == "kafka":
            first = values.get("KAFKA_HOSTS", "").split(",")[0].strip()
            host, _, port = first.rpartition(":")
            tls = values.get("KAFKA_SECURITY_PROTOCOL", "").upper() in ("SSL", "SASL_SSL")
            ca = values.get("EXTERNAL_CA_FILE", "")
            found.append(Endpoint(name, host, int(port) if port.isdigit() else 9092, tls, tls, ca, host_path(root, ca),
                                  "KAFKA_HOSTS"))
    return found

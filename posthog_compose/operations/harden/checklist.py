"""The production checklist's vocabulary: its items (title and whether harden can apply it), the
handbook section of each, the order they are applied in, the files and TLS settings they concern, and the
types an evaluation deals in (Result, State).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


OVERRIDE_FILE = "docker-compose.override.yml"
TLS_TEMPLATE = "docker-compose.tls.yml"
CONTAINER_CA = "/etc/posthog/certs/ca.crt"
POSTGRES_TLS_QUERY = f"sslmode=verify-full&sslrootcert={CONTAINER_CA}"
REDIS_TLS_QUERY = f"ssl_cert_reqs=required&ssl_ca_certs={CONTAINER_CA}"
IMAGE_VARIABLES = ("POSTHOG_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "CLICKHOUSE_IMAGE", "ZOOKEEPER_IMAGE",
                   "KAFKA_IMAGE")
IMAGE_SERVICES = {"POSTHOG_IMAGE": "web", "POSTGRES_IMAGE": "db", "REDIS_IMAGE": "redis",
                  "CLICKHOUSE_IMAGE": "clickhouse", "ZOOKEEPER_IMAGE": "zookeeper", "KAFKA_IMAGE": "kafka"}

#: item id -> (title, kind). kind: "apply" (harden fixes it), "check" (checked; the fix is the
#: operator's), "manual" (cannot be checked from here; the handbook explains).
ITEMS: dict[str, tuple[str, str]] = {
    "env-file": (".env is mode 0600 and not tracked by git", "apply"),
    "secrets": ("every secret is random: not the example, not a known default, long enough", "apply"),
    "redis-password": ("Redis requires a password", "apply"),
    "debug": ("DEBUG is off", "apply"),
    "images": ("no image on latest or another moving tag; POSTHOG_IMAGE pinned by digest", "apply"),
    "certificates": ("the deployment's CA and server certificates exist, chain to the CA and are not expiring", "apply"),
    "clickhouse-tls": ("ClickHouse over TLS with verification (CLICKHOUSE_SECURE=true, CLICKHOUSE_VERIFY=true)", "apply"),
    "postgres-tls": ("PostgreSQL over TLS only, certificate verified (sslmode=verify-full)", "apply"),
    "redis-tls": ("Redis over TLS only, certificate verified (rediss://)", "apply"),
    "ports": ("only the web port is published", "check"),
    "https": ("SITE_URL is https behind a TLS-terminating proxy, with the proxy settings", "check"),
    "public-https": ("public traffic is encrypted: the edge proxy serves HTTPS, HTTP redirects, WEB_PORT is closed", "check"),
    "app-private": ("the app (login, admin, API) answers only the networks of ALLOWED_IP_BLOCKS, or its being "
                    "public was accepted (--accept app-public --reason ...)", "check"),
    "kafka-tls": ("Kafka over TLS", "manual"),
    "datastore-ca": ("the CA bundle of the external datastores is under datastore-ca/, holds a CA certificate and is "
                     "not expiring", "check"),
    "plaintext-datastores": ("no external datastore is allowed without TLS (ALLOW_PLAINTEXT_DATASTORES is not true)",
                             "check"),
    "managed-services": ("managed PostgreSQL, Redis, Kafka and ClickHouse instead of containers", "manual"),
}

#: checklist TLS item -> the datastore it is about
TLS_DATASTORES = {"clickhouse-tls": "clickhouse", "postgres-tls": "postgres", "redis-tls": "redis",
                  "kafka-tls": "kafka"}
EXTERNAL_DOC = "docs/external-datastores.md"

#: Secrets of a local datastore service -> that datastore (not harden's to rotate while it is external).
EXTERNAL_SECRETS = {"POSTGRES_PASSWORD": "postgres", "REDIS_PASSWORD": "redis", "CLICKHOUSE_PASSWORD": "clickhouse"}
DOCS = {
    "ports": "docs/hardening.md#only-the-web-port",
    "https": "docs/hardening.md#https-and-the-proxy",
    "public-https": "docs/https.md",
    "app-private": "docs/support-status.md#who-may-use-the-app",
    "kafka-tls": "docs/tls.md#kafka",
    "managed-services": "docs/hardening.md#managed-services",
    "secrets": "docs/hardening.md#secrets",
    "images": "docs/upgrading.md",
}
APPLY_ORDER = ["env-file", "secrets", "redis-password", "debug", "images", "certificates", "clickhouse-tls",
               "postgres-tls", "redis-tls"]
TLS_ITEMS = ("clickhouse-tls", "postgres-tls", "redis-tls")


@dataclass
class Result:
    id: str
    title: str
    kind: str
    status: str  # pass | warn (advised, does not fail the check) | fail | manual
    reason: str
    fix: str = ""

    def text(self) -> str:
        mark = {"pass": "PASS  ", "warn": "WARN  ", "fail": "FAIL  ", "manual": "MANUAL"}[self.status]
        # A pass states what was found, which says the requirement again: the title would repeat it.
        line = f"{mark} {self.id}: {self.reason}" if self.status == "pass" and self.reason else \
            f"{mark} {self.id}: {self.title}: {self.reason}"
        return line + (f" (fix: {self.fix})" if self.fix and self.status != "pass" else "")


@dataclass
class State:
    """What the checks look at, read once."""

    root: Path
    values: dict[str, str]
    findings: list
    override: str | None
    template: str
    published: dict[str, list]
    containers: dict[str, str] = field(default_factory=dict)  # service -> container state ("running", ...)
    engine_error: str | None = None  # a dry run without an engine: why the containers could not be read

    @property
    def running(self) -> bool:
        return any(state == "running" for state in self.containers.values())

"""Known symptoms in service logs, each mapped to a one-line hint and the handbook section
that explains it. The troubleshooting page documents the same table (a test keeps them in step)."""

from __future__ import annotations

import re
from dataclasses import dataclass

HANDBOOK_PAGE = "docs/troubleshooting.md"


@dataclass(frozen=True)
class Hint:
    anchor: str  # section id on the troubleshooting page
    pattern: re.Pattern
    text: str


HINTS = (
    Hint("encryption-key-length", re.compile(r"Key must be 32-byte long base64url encoded string"),
         "ENCRYPTION_SALT_KEYS entries must be exactly 32 characters of [A-Za-z0-9_-] (not the 43 of "
         "`openssl rand -base64 32`): run `invoke config-check`; on a fresh install `invoke init --rotate "
         "ENCRYPTION_SALT_KEYS`, on a live one fix the broken entry and keep the old keys"),
    Hint("encryption-keys-not-set", re.compile(r"Encryption keys are not set"),
         "ENCRYPTION_SALT_KEYS is empty: run `invoke init` (it fills in missing variables)"),
    Hint("encryption-key-lost", re.compile(r"cannot decrypt|InvalidToken"),
         "a key that encrypted stored plugin secrets is no longer in ENCRYPTION_SALT_KEYS: put the old key back "
         "(after the new one); never drop a key from a live deployment"),
    Hint("postgres-password", re.compile(r"password authentication failed"),
         "DATABASE_URL's password does not match the database: the data volume keeps the password it was "
         "created with; see the hardening page for a safe rotation (`invoke harden`)"),
    Hint("default-secret-key", re.compile(r"default SECRET_KEY"),
         "SECRET_KEY is PostHog's default: run `invoke init --rotate SECRET_KEY`"),
    Hint("clickhouse-auth", re.compile(r"Authentication failed|AUTHENTICATION_FAILED"),
         "ClickHouse rejected the password: CLICKHOUSE_PASSWORD must be passed to the clickhouse service and "
         "contain no < or &; run `invoke config-check`"),
    Hint("kafka-replication", re.compile(r"replication factor|Number of alive brokers"),
         "with one Kafka broker every KAFKA_*_REPLICATION_FACTOR and MIN_ISR must be 1"),
    Hint("csrf", re.compile(r"CSRF verification failed|Origin checking failed"),
         "SITE_URL must be exactly the URL users type (scheme, host and port); behind a proxy also set "
         "IS_BEHIND_PROXY=true"),
    Hint("redis-auth", re.compile(r"NOAUTH|invalid password|WRONGPASS"),
         "REDIS_URL's password differs from REDIS_PASSWORD: run `invoke config-check`"),
    Hint("zookeeper-unreachable", re.compile(r"Timed out waiting for connection to ZooKeeper|cannot reach ZooKeeper"),
         "ZooKeeper is not reachable: check `invoke logs -s zookeeper` and KAFKA_ZOOKEEPER_CONNECT"),
    Hint("disk-full", re.compile(r"No space left on device"),
         "the disk is full: ZooKeeper snapshots and Kafka logs grow without the Retention settings; see `invoke doctor`"),
    Hint("service-version", re.compile(r"Service (postgresql|redis|clickhouse) is in version .*Expected range"),
         "a datastore's version is outside the range this PostHog version accepts (it exits at boot): "
         "`invoke config-check` names the image and a release inside the range (handbook: compatibility)"),
    Hint("async-migrations", re.compile(r"async migrations? .*(required|pending|not completed)", re.IGNORECASE),
         "an async migration must complete before this upgrade: see the upgrading page's gates"),
)

# Warnings PostHog prints that are safe to ignore (listed in the operator's guide).
BENIGN = (
    re.compile(r"Skipping async migrations setup"),
    re.compile(r"pkg_resources is deprecated"),
    re.compile(r"GeoLite2 MMDB file not found"),
)
ERROR_LINE = re.compile(r"error|failed|exception", re.IGNORECASE)
#: Levels of a structured (JSON) log line that are errors. The edge proxy (Caddy) logs JSON with a level,
#: and its warnings carry an "error" field: the OCSP stapling warning for a certificate without an OCSP
#: server (every certificate of the deployment's CA) is {"level":"warn",...,"error":"no OCSP stapling ..."}.
#: Such a line is judged by its level, never by the words in it.
ERROR_LEVELS = frozenset({"error", "err", "fatal", "panic", "dpanic", "critical", "crit", "alert", "emerg",
                          "emergency"})


def match(text: str) -> list[str]:
    """Hints whose symptom appears in ``text`` (log lines), each with its handbook section."""
    return [f"{hint.text} (handbook: troubleshooting#{hint.anchor})" for hint in HINTS if hint.pattern.search(text)]


def is_error_line(line: str) -> bool:
    """An error/failed/exception line that is not one of PostHog's known benign warnings; a structured
    line that states its level (Caddy's JSON) is an error only at an error level (ERROR_LEVELS)."""
    level = structured_level(line)
    if level is not None:
        return level in ERROR_LEVELS
    return bool(ERROR_LINE.search(line)) and not any(pattern.search(line) for pattern in BENIGN)


def structured_level(line: str) -> str | None:
    """The lower-cased "level" of a JSON object log line (after Compose's `service |` prefix, if any),
    or None when the line is not one."""
    import json

    text = line.partition("|")[2] if "|" in line and not line.lstrip().startswith("{") else line
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    level = data.get("level") if isinstance(data, dict) else None
    return level.strip().lower() if isinstance(level, str) and level.strip() else None

"""Value formats of the manifest: what each accepts, how it is described, and the hint
given when a value does not fit. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

ENCRYPTION_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
URL_SAFE_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
MEMORY_RE = re.compile(r"^[0-9]+(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)
LOG_LEVELS = ("none", "fatal", "critical", "error", "warning", "notice", "information", "debug", "trace", "test")
# An image reference as Docker parses it: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    check: Callable[[str], "str | None"]  # returns a problem (with its hint) or None


def _identifier(value: str) -> str | None:
    if not IDENTIFIER_RE.match(value):
        return "must be letters, digits and underscores, not starting with a digit"
    return None


def _password(value: str) -> str | None:
    if not URL_SAFE_RE.match(value):
        return "may only contain letters, digits and - _ . ~ (it is placed in a URL unencoded)"
    return None


def _xml_safe_password(value: str) -> str | None:
    if "<" in value or "&" in value:
        return "contains < or &, which break ClickHouse's XML config (the value is parsed as XML)"
    if any(ch.isspace() for ch in value):
        return "contains white space"
    return None


def _secret_key(value: str) -> str | None:
    if any(ch.isspace() for ch in value) or "'" in value or '"' in value:
        return "must not contain white space or quotes"
    return None


def encryption_key_problem(entry: str) -> str | None:
    """Why one entry of ENCRYPTION_SALT_KEYS is wrong for PostHog, with the likely cause."""
    if ENCRYPTION_KEY_RE.match(entry):
        return None
    if entry == "":
        return "has an empty entry (check for a stray comma)"
    if any(ch in entry for ch in "+/="):
        return (f"has an entry of {len(entry)} characters containing + / or =: that is standard base64; "
                "PostHog needs exactly 32 characters of [A-Za-z0-9_-]")
    if len(entry) == 43:
        return ("has an entry of 43 characters, the output of `openssl rand -base64 32 | tr`: "
                "PostHog needs exactly 32 characters of [A-Za-z0-9_-]")
    if len(entry) == 44:
        return "has a 44-character entry (a Fernet key?): PostHog needs exactly 32 characters of [A-Za-z0-9_-]"
    return f"has an entry of {len(entry)} characters: PostHog needs exactly 32 characters of [A-Za-z0-9_-]"


def _encryption_key_list(value: str) -> str | None:
    for entry in value.split(","):
        problem = encryption_key_problem(entry)
        if problem:
            return problem
    return None


def _url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host, e.g. https://posthog.example.com"
    if parts.path not in ("", "/"):
        return "must not have a path (PostHog is served at the root)"
    return None


def _postgres_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql"):
        return "must start with postgres:// (postgres://USER:PASSWORD@db:5432/DB)"
    if not parts.hostname or not parts.username or not parts.path.strip("/"):
        return "must name user, host and database: postgres://USER:PASSWORD@db:5432/DB"
    try:
        parts.port
    except ValueError:
        return "has an invalid port"
    return None


def _redis_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss"):
        return "must start with redis:// or rediss:// (redis://:PASSWORD@redis:6379/)"
    if not parts.hostname:
        return "must name a host: redis://:PASSWORD@redis:6379/"
    try:
        parts.port
    except ValueError:
        return "has an invalid port"
    return None


def _port(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return "must be a port number from 1 to 65535"
    return None


def _boolean(value: str) -> str | None:
    if value not in ("true", "false"):
        if value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return f"must be written true or false (found {value!r}; PostHog and Compose read other spellings inconsistently)"
        return "must be true or false"
    return None


def _integer(value: str) -> str | None:
    if not value.isdigit():
        return "must be a whole number"
    return None


def _memory_size(value: str) -> str | None:
    if not MEMORY_RE.match(value):
        return "must be a size such as 200mb, 1gb or 536870912"
    return None


def _image(value: str) -> str | None:
    if not IMAGE_RE.match(value):
        return "must be an image reference: name:tag or name@sha256:<64 hex>"
    return None


def _log_level(value: str) -> str | None:
    if value not in LOG_LEVELS:
        return "must be one of " + ", ".join(LOG_LEVELS)
    return None


def _hostname(value: str) -> str | None:
    if not HOSTNAME_RE.match(value):
        return "must be a host name such as clickhouse"
    return None


def _host_port(entry: str) -> bool:
    host, sep, port = entry.rpartition(":")
    return bool(sep) and bool(HOSTNAME_RE.match(host)) and port.isdigit() and 1 <= int(port) <= 65535


def _host_port_list(value: str) -> str | None:
    if not all(_host_port(entry.strip()) for entry in value.split(",")):
        return "must be host:port entries separated by commas, e.g. kafka:9092"
    return None


def _listener_list(value: str) -> str | None:
    for entry in value.split(","):
        name, sep, address = entry.strip().partition("://")
        if not sep or not IDENTIFIER_RE.match(name) or not _host_port(address):
            return "must be NAME://host:port entries separated by commas, e.g. PLAINTEXT://kafka:9092"
    return None


def _ip_list(value: str) -> str | None:
    if value == "":
        return None
    for entry in value.split(","):
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            return f"{entry.strip()!r} is not an IP address or network; use comma-separated addresses"
    return None


def _string(value: str) -> str | None:
    if "\n" in value:
        return "must be a single line"
    return None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("identifier", "letters, digits and underscores", _identifier),
        Format("password", "random string of letters, digits and - _ . ~ (safe unencoded in URLs)", _password),
        Format("xml-safe-password", "random string without `<`, `&` or white space (safe in ClickHouse XML)", _xml_safe_password),
        Format("secret-key", "long random string without white space or quotes (50+ characters)", _secret_key),
        Format("encryption-key-list", "comma-separated keys, each exactly 32 characters of [A-Za-z0-9_-]", _encryption_key_list),
        Format("url", "http:// or https:// URL without a path", _url),
        Format("postgres-url", "postgres://USER:PASSWORD@HOST:PORT/DB", _postgres_url),
        Format("redis-url", "redis://[:PASSWORD@]HOST:PORT/", _redis_url),
        Format("port", "TCP port, 1 to 65535", _port),
        Format("boolean", "true or false", _boolean),
        Format("integer", "whole number", _integer),
        Format("memory-size", "size such as 200mb or 1gb", _memory_size),
        Format("image", "container image reference: name:tag or name@sha256:digest", _image),
        Format("log-level", "ClickHouse log level: " + ", ".join(LOG_LEVELS), _log_level),
        Format("hostname", "host name", _hostname),
        Format("host-port-list", "comma-separated host:port", _host_port_list),
        Format("listener-list", "comma-separated NAME://host:port", _listener_list),
        Format("ip-list", "comma-separated IP addresses or networks (may be empty)", _ip_list),
        Format("string", "single line of text", _string),
    )
}


def problem(format_name: str, value: str) -> str | None:
    """The problem with ``value`` for ``format_name``, or None when it fits."""
    return FORMATS[format_name].check(value)

"""The target URL of `migrate-datastore --to`: parsed into libpq settings, checked (TLS with
certificate verification and a CA bundle from datastore-ca/, unless ALLOW_PLAINTEXT_DATASTORES is true), and
the refusals of the datastores that are not moved this way (ClickHouse, Redis, Kafka).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from posthog_compose.errors import OperatorError


DATASTORES = ("postgres", "redis", "clickhouse", "kafka")
ALIASES = {"postgresql": "postgres", "pg": "postgres"}
CA_DIR = "datastore-ca"  # datastores.CA_DIR, mounted at datastores.CA_MOUNT
CA_MOUNT = "/etc/posthog/datastore-ca"
VERIFIED_SSLMODES = ("verify-full", "verify-ca")

#: The URL's query parameters the task can hand to libpq, and the environment variable of each.
PARAMETERS = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
    "options": "PGOPTIONS", "target_session_attrs": "PGTARGETSESSIONATTRS",
}

#: A URI with nothing in it: libpq takes every connection setting from the PG* environment.
FROM_ENVIRONMENT = "postgresql://"
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?)*\.?$")
_IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0")

REFUSED = {
    "clickhouse": (
        "migrate-datastore cannot move ClickHouse honestly: PostHog's ClickHouse schema holds Kafka-engine tables "
        "and materialized views bound to this host's Kafka, which a copy does not carry over. Do it this way: "
        "create the external ClickHouse (with the Kafka table engine), point CLICKHOUSE_* at it with "
        "CLICKHOUSE_MODE=external, let `invoke up` run PostHog's ClickHouse migrations there, then copy each "
        "table with INSERT INTO ... SELECT * FROM remote(...) (the handbook's External datastores page)"),
    "redis": (
        "Redis holds only PostHog's cache and Celery queue, there is nothing to move: set REDIS_MODE=external "
        "and REDIS_URL=rediss://... in .env (the handbook's External datastores page), then `invoke up`"),
    "kafka": (
        "Kafka holds events in transit only, there is nothing to copy: let ingestion drain, set KAFKA_MODE=external "
        "and the KAFKA_* variables, then recreate ClickHouse's Kafka-engine tables, which keep the broker list "
        "they were created with (the handbook's External datastores page)"),
}


# ----------------------------------------------------------------------------- the target URL
@dataclass
class Target:
    """An external PostgreSQL named by a postgres:// URL (the password never appears in repr)."""

    url: str = field(repr=False)
    user: str
    password: str = field(repr=False)
    host: str
    port: int
    database: str
    params: dict[str, str]

    @property
    def where(self) -> str:
        """host:port/database, for the operator (no credentials)."""
        return f"{self.host}:{self.port}/{self.database}"

    @property
    def sslmode(self) -> str:
        return self.params.get("sslmode", "")

    @property
    def fingerprint(self) -> str:
        """Identifies the URL in the journal without writing its password there."""
        return hashlib.sha256(self.url.encode("utf-8")).hexdigest()

    def environment(self) -> dict[str, str]:
        """libpq's PG* variables for this target. PGPASSWORD is always set (empty means "none"), so that a
        password set inside the container can never be sent to another server."""
        env = {"PGHOST": self.host.strip("[]"), "PGPORT": str(self.port), "PGUSER": self.user,
               "PGDATABASE": self.database, "PGPASSWORD": self.password}
        for name, value in self.params.items():
            env[PARAMETERS[name]] = value
        return env


def secrets_of_url(url: str) -> list[str]:
    """The pieces of ``url`` that must never be printed (password, user:password), raw and decoded."""
    from posthog_compose.masking import url_passwords

    found = []
    for piece in url_passwords(url):
        found += [piece, unquote(piece)]
    rest = url.split("://", 1)[-1]
    if "@" in rest:
        userinfo = rest[:rest.rfind("@")]
        found += [userinfo, unquote(userinfo)]
    return [piece for piece in found if piece]


def parse_target(url: str) -> Target:
    """Read a postgres:// URL the way Django (urlparse) and libpq agree on it, or raise one line."""
    what = "--to"
    url = (url or "").strip()
    if not url:
        raise OperatorError(f"{what} is required: the external PostgreSQL's URL, e.g. postgres://USER:PASS@HOST:5432/DB"
                            f"?sslmode=verify-full&sslrootcert={CA_MOUNT}/ca.crt")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise OperatorError(f"{what} contains spaces or control characters; percent-encode them (a space is %20)")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        shown = f"{scheme}://" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", scheme) else "something else"
        raise OperatorError(f"{what} must start with postgres:// or postgresql:// (got {shown})")
    if "#" in rest:
        raise OperatorError(f"{what} contains '#': percent-encode it as %23 (in a password too)")
    before_query, _, query = rest.partition("?")
    at = before_query.rfind("@")
    if at < 0:
        raise OperatorError(f"{what} names no user: write postgres://USER:PASSWORD@HOST:PORT/DB")
    userinfo, location = before_query[:at], before_query[at + 1:]
    for char, code in (("@", "%40"), ("/", "%2F"), ("?", "%3F")):
        if char in userinfo:
            raise OperatorError(f"{what}: the user or password contains {char!r}, which URL readers split at; "
                                f"percent-encode it as {code}")
    _check_escapes(userinfo, what)
    user_raw, _, password_raw = userinfo.partition(":")
    user, password = unquote(user_raw), unquote(password_raw)
    if not user:
        raise OperatorError(f"{what} names no user: write postgres://USER:PASSWORD@HOST:PORT/DB")
    hostport, slash, path = location.partition("/")
    if not slash or not path:
        raise OperatorError(f"{what} names no database: end the address with /DBNAME, e.g. .../posthog")
    _check_escapes(path, what)
    database = unquote(path)
    if "/" in database or "=" in database or not database.strip():
        raise OperatorError(f"{what}: database name {database!r} is not a plain name")
    if "," in hostport:
        raise OperatorError(f"{what} names several hosts; PostHog's Django reads one: give the primary's address")
    if hostport.startswith("["):
        close = hostport.find("]")
        host, port_text = hostport[:close + 1], hostport[close + 1:]
        if close < 0 or (port_text and not port_text.startswith(":")):
            raise OperatorError(f"{what}: the IPv6 address must be written [ADDRESS]:PORT")
        port_text = port_text[1:]
        if not _IPV6_RE.match(host):
            raise OperatorError(f"{what}: {host!r} is not an IPv6 address")
    else:
        host, _, port_text = hostport.partition(":")
        if not host or not _HOST_RE.match(host):
            raise OperatorError(f"{what}: {host!r} is not a host name or address")
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise OperatorError(f"{what}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    else:
        port = 5432
    params: dict[str, str] = {}
    for item in query.split("&") if query else []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise OperatorError(f"{what}: query part {item!r} is not NAME=VALUE")
        _check_escapes(value, what)
        if name in params:
            raise OperatorError(f"{what}: {name} is given twice")
        if name not in PARAMETERS:
            raise OperatorError(f"{what}: parameter {name!r} is not one this task can pass on "
                                f"({', '.join(PARAMETERS)}); remove it")
        params[name] = unquote(value)
    return Target(url=url, user=user, password=password, host=host.lower(), port=port, database=database,
                  params=params)


def _check_escapes(text: str, what: str) -> None:
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise OperatorError(f"{what} has a '%' that starts no %XX escape; write a literal % as %25")


def target_problems(root: Path, target: Target, values: dict[str, str]) -> list[str]:
    """What is wrong with the target before anything runs: a local host, TLS without verification (unless
    ALLOW_PLAINTEXT_DATASTORES is true), a CA bundle outside datastore-ca/ or missing there. One line each."""
    from posthog_compose.configuration.manifest import SERVICES

    problems = []
    if target.host in LOCAL_HOSTS or target.host in SERVICES:
        problems.append(f"--to: host {target.host} is {'a service of this deployment' if target.host in SERVICES else 'the container itself'}, "
                        "not an external PostgreSQL; give the external server's address")
    plaintext_allowed = values.get("ALLOW_PLAINTEXT_DATASTORES") == "true"  # as config-check reads it
    if target.sslmode not in VERIFIED_SSLMODES and not plaintext_allowed:
        shown = f"sslmode={target.sslmode}" if target.sslmode else "no sslmode"
        problems.append(f"--to has {shown}: the connection would not verify the server's certificate; add "
                        f"sslmode=verify-full&sslrootcert={CA_MOUNT}/ca.crt (or set ALLOW_PLAINTEXT_DATASTORES=true "
                        "in .env for a network you trust, never for production)")
    for name in ("sslrootcert", "sslcert", "sslkey", "sslcrl"):
        value = target.params.get(name)
        if name == "sslrootcert" and value is None and target.sslmode in VERIFIED_SSLMODES:
            problems.append(f"--to has sslmode={target.sslmode} but no sslrootcert: add sslrootcert={CA_MOUNT}/ca.crt "
                            f"and put the CA bundle that signed the server's certificate in {CA_DIR}/ca.crt")
            continue
        if value is None:
            continue
        problem = ca_file_problem(root, name, value)
        if problem:
            problems.append(problem)
    return problems


def host_path(root: Path, container_path: str) -> Path | None:
    """The file in datastore-ca/ an absolute container path under /etc/posthog/datastore-ca/ refers to (the
    client tools run in `db`, whose working directory is not PostHog's, so a relative path is refused)."""
    from posthog_compose.configuration import datastores

    if not container_path.startswith("/"):
        return None
    return datastores.host_path(root, container_path)


def ca_file_problem(root: Path, name: str, value: str) -> str | None:
    """What config-check would say about the file behind ``value`` (datastores.ca_problem), as one line."""
    from posthog_compose.configuration import datastores

    path = host_path(root, value)
    if path is None:
        return (f"--to: {name}={value} is not an absolute path under {CA_MOUNT}/, the only folder the containers "
                f"share with this host; put the file in {CA_DIR}/ and write {name}={CA_MOUNT}/FILE")
    relative = f"{CA_DIR}/{path.relative_to(Path(root) / CA_DIR)}"
    if not path.is_file():
        return f"--to: {name} names {relative}, which does not exist; copy the file there"
    if name != "sslrootcert":
        return None
    try:
        problem = datastores.ca_problem(path)
    except OSError as exc:
        return f"--to: {relative} cannot be read ({exc.strerror}); check its owner and mode"
    return f"--to: {relative} {problem}; save the server's CA certificate (PEM) there" if problem else None


def refuse_datastore(name: str) -> str:
    """The datastore argument, normalized; anything but postgres ends with one line."""
    normal = ALIASES.get((name or "").strip().lower(), (name or "").strip().lower())
    if normal == "postgres":
        return normal
    if normal in REFUSED:
        raise OperatorError(REFUSED[normal])
    raise OperatorError(f"unknown datastore {name!r}: migrate-datastore moves postgres "
                        f"(the datastores are {', '.join(DATASTORES)})")


def read_url_file(path: str) -> str:
    """--to-file: the URL from a file (first line), so that it is not in the shell history or `ps`."""
    file = Path(path).expanduser()
    try:
        if file.stat().st_mode & 0o077:
            raise OperatorError(f"{path} is readable by other users; `chmod 600 {path}` (it holds a password)")
        lines = file.read_text(encoding="utf-8").strip().splitlines()
    except FileNotFoundError:
        raise OperatorError(f"{path} does not exist")
    except OSError as exc:
        raise OperatorError(f"{path} cannot be read ({exc.strerror})")
    if not lines:
        raise OperatorError(f"{path} is empty; write the URL on its first line")
    return lines[0].strip()

"""One validator per kind of value the deployment is configured with: whole numbers, ports, host
names, and the URL of each datastore (DATABASE_URL, REDIS_URL). config-check's formats (formats.py),
its external-datastore rules (datastores.py), `migrate-datastore --to`, the numbers of the command line
(cli.py) and doctor's probes all read these values through the functions here, so a value one of them
accepts is one all of them accept, and a refusal gives the same reason wherever it is made.

A reason reads after the value's name ("DATABASE_URL names no user: ...", "--to names no user: ...")
and never repeats a password. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote


class InvalidValue(ValueError):
    """Why a value is refused, as one line that follows the value's name."""


# ----------------------------------------------------------------------------- numbers
#: The largest whole number a setting may hold: a signed 64-bit integer, what Kafka and ZooKeeper (Java
#: longs) and ClickHouse read. Beyond it nothing parses the value, and Python's own int() refuses digit
#: strings longer than 4,300 characters with an error of its own.
MAX_WHOLE_NUMBER = 2 ** 63 - 1


def whole_number(text) -> int | None:
    """``text`` as a whole number, or None: ASCII digits 0-9 only (str.isdigit() and int() also accept
    other scripts' digits and superscripts, which Compose hands on verbatim and no server parses), at most
    MAX_WHOLE_NUMBER. The one reading of a number: formats, the command line and the tasks use it."""
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 19:
        return None
    number = int(text)
    return number if number <= MAX_WHOLE_NUMBER else None


def is_ascii_number(text) -> bool:
    """Whether ``text`` is a whole number as whole_number reads it."""
    return whole_number(text) is not None


NUMBER_PROBLEM = f"must be a whole number (digits 0-9, at most {MAX_WHOLE_NUMBER})"


def number_problem(text: str) -> str | None:
    return None if is_ascii_number(text) else NUMBER_PROBLEM


# ----------------------------------------------------------------------------- ports
PORT_PROBLEM = "must be a port number from 1 to 65535"


def port_number(text) -> int | None:
    """A TCP port (1-65535) written in ASCII digits, or None."""
    number = whole_number(text)
    return number if number is not None and 1 <= number <= 65535 else None


def port_problem(text: str) -> str | None:
    return None if port_number(text) is not None else PORT_PROBLEM


# ----------------------------------------------------------------------------- host names
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
HOSTNAME_PROBLEM = "must be a host name such as clickhouse"


def is_hostname(text) -> bool:
    """A DNS name or IPv4 address in ASCII letters, digits, dots and hyphens (no underscore, no
    non-ASCII letter: write an internationalized name in its xn-- form)."""
    return isinstance(text, str) and text.isascii() and bool(HOSTNAME_RE.match(text))


def hostname_problem(text: str) -> str | None:
    return None if is_hostname(text) else HOSTNAME_PROBLEM


def host_port_entry(entry: str) -> tuple[str, int] | None:
    """``host:port`` (KAFKA_HOSTS, KAFKA_ZOOKEEPER_CONNECT), or None when either part is not valid."""
    host, sep, port = entry.rpartition(":")
    number = port_number(port)
    return (host, number) if sep and is_hostname(host) and number is not None else None


# ----------------------------------------------------------------------------- URLs: the shared parts
def _printable_ascii_problem(url: str) -> str | None:
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains spaces or control characters; percent-encode them (a space is %20)"
    return None


def _escapes_problem(text: str) -> str | None:
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        return "has a '%' that starts no %XX escape; write a literal % as %25"
    return None


def _split_userinfo(before_query: str) -> tuple[str | None, str]:
    """(userinfo or None, host[:port] and path), refusing the characters URL readers split a password at."""
    at = before_query.rfind("@")
    if at < 0:
        return None, before_query
    userinfo, location = before_query[:at], before_query[at + 1:]
    for char, code in (("@", "%40"), ("/", "%2F"), ("?", "%3F")):
        if char in userinfo:
            raise InvalidValue(f"has {char!r} in the user or password, which URL readers split at; "
                               f"percent-encode it as {code}")
    problem = _escapes_problem(userinfo)
    if problem:
        raise InvalidValue(problem)
    return userinfo, location


def _host_and_port(hostport: str, default_port: int, echo: bool) -> tuple[str, int]:
    """(host without brackets, lower case; port) of ``host[:port]`` or ``[IPv6][:port]``. The reason shows
    the host or port only when ``echo``: in a URL without user info, what stands there may be a password
    that lost its @."""
    if "," in hostport:
        raise InvalidValue("names several hosts; PostHog reads one: give the primary's address")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise InvalidValue("has an IPv6 address that is not written [ADDRESS]:PORT")
        host, port_text = hostport[1:close], hostport[close + 1:]
        if port_text and not port_text.startswith(":"):
            raise InvalidValue("has an IPv6 address that is not written [ADDRESS]:PORT")
        port_text = port_text[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidValue(f"names {'[' + host + '], which is' if echo else 'a host in brackets that is'} not an "
                               "IPv6 address") from None
    else:
        host, _, port_text = hostport.partition(":")
        if not host:
            raise InvalidValue("names no host")
        if not is_hostname(host):
            raise InvalidValue(f"names {'the host ' + repr(host) + ', which is' if echo else 'a host that is'} not a "
                               "host name or address (letters, digits, dots and hyphens; an IPv6 address in [brackets])")
    if not port_text:
        return host.lower(), default_port
    port = port_number(port_text)
    if port is None:
        raise InvalidValue(f"has {'the port ' + repr(port_text) + ', which is' if echo else 'a port that is'} not a "
                           "number from 1 to 65535")
    return host.lower(), port


def _query(query: str, allowed: dict[str, str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in query.split("&") if query else []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise InvalidValue(f"has the query part {item!r}, which is not NAME=VALUE")
        problem = _escapes_problem(name + value)
        if problem:
            raise InvalidValue(problem)
        name = unquote(name)
        if name in params:
            raise InvalidValue(f"has {name} given twice")
        if allowed is not None and name not in allowed:
            raise InvalidValue(f"has the parameter {name!r}, which the kit cannot check or pass on (it takes "
                               f"{', '.join(allowed)}); remove it")
        params[name] = unquote(value)
    return params


def _scheme(url: str, schemes: tuple[str, ...], form: str) -> str:
    """What follows ``scheme://``, after the checks every URL shares."""
    problem = _printable_ascii_problem(url)
    if problem:
        raise InvalidValue(problem)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        # The scheme is shown only when it looks like one: what precedes :// may be a password.
        shown = f"{scheme}://" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", scheme) else "something else"
        raise InvalidValue(f"must start with {' or '.join(s + '://' for s in schemes)} (got {shown}): {form}")
    if "#" in rest:
        raise InvalidValue("contains '#': percent-encode it as %23 (in a password too)")
    return rest


# ----------------------------------------------------------------------------- DATABASE_URL
POSTGRES_SCHEMES = ("postgres", "postgresql")
POSTGRES_FORM = "postgres://USER:PASSWORD@HOST:PORT/DB"
#: The query parameters a PostgreSQL URL may carry, and libpq's environment variable for each: what PostHog's
#: Django hands to libpq (which refuses a name it does not know) and what migrate-datastore can give its client
#: tools. `host`, `hostaddr`, `port`, `dbname`, `passfile` are not among them: they would send PostHog elsewhere
#: than the address the kit checks.
POSTGRES_PARAMETERS = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
    "options": "PGOPTIONS", "target_session_attrs": "PGTARGETSESSIONATTRS",
}


@dataclass(frozen=True)
class PostgresURL:
    """A PostgreSQL URL read the way Django (urlparse) and libpq agree on it; the password never in repr."""

    user: str
    password: str = field(repr=False)
    host: str  # without brackets, lower case
    port: int
    database: str
    params: dict[str, str]

    @property
    def address(self) -> str:
        """host:port, with an IPv6 address in brackets."""
        return f"{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"


def parse_postgres_url(url: str) -> PostgresURL:
    """Read DATABASE_URL (or `migrate-datastore --to`), or raise InvalidValue with the reason."""
    rest = _scheme(url, POSTGRES_SCHEMES, POSTGRES_FORM)
    before_query, _, query = rest.partition("?")
    userinfo, location = _split_userinfo(before_query)
    if userinfo is None:
        raise InvalidValue(f"names no user: write {POSTGRES_FORM}")
    user_raw, _, password_raw = userinfo.partition(":")
    user, password = unquote(user_raw), unquote(password_raw)
    if not user:
        raise InvalidValue(f"names no user: write {POSTGRES_FORM}")
    hostport, slash, path = location.partition("/")
    if not slash or not path:
        raise InvalidValue("names no database: end the address with /DBNAME, e.g. .../posthog")
    problem = _escapes_problem(path)
    if problem:
        raise InvalidValue(problem)
    database = unquote(path)
    if "/" in database or "=" in database or not database.strip():
        # libpq reads a database name with = in it as a whole connection string (host=..., sslmode=...).
        raise InvalidValue(f"names the database {database!r}, which is not a plain name (no / or =)")
    host, port = _host_and_port(hostport, 5432, echo=True)  # after the user info: never the password
    params = _query(query, POSTGRES_PARAMETERS)
    return PostgresURL(user=user, password=password, host=host, port=port, database=database, params=params)


def postgres_url_problem(url: str) -> str | None:
    try:
        parse_postgres_url(url)
    except InvalidValue as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- REDIS_URL
REDIS_SCHEMES = ("redis", "rediss")
REDIS_FORM = "redis://:PASSWORD@HOST:6379/"


@dataclass(frozen=True)
class RedisURL:
    """A Redis URL as redis-py reads it; the password never in repr."""

    tls: bool
    user: str
    password: str = field(repr=False)
    host: str
    port: int
    database: int
    params: dict[str, str]


def parse_redis_url(url: str) -> RedisURL:
    """Read REDIS_URL, or raise InvalidValue with the reason. The query's names are redis-py's and
    Celery's (they differ between versions), so only their form is checked here."""
    rest = _scheme(url, REDIS_SCHEMES, REDIS_FORM)
    before_query, _, query = rest.partition("?")
    userinfo, location = _split_userinfo(before_query)
    user_raw, _, password_raw = (userinfo or "").partition(":")
    hostport, _, path = location.partition("/")
    host, port = _host_and_port(hostport, 6379, echo=userinfo is not None)
    database = whole_number(path) if path else 0
    if database is None:
        raise InvalidValue(f"ends with a path that is not a database number (0-15 on a stock Redis): {REDIS_FORM}0")
    return RedisURL(tls=url.startswith("rediss://"), user=unquote(user_raw), password=unquote(password_raw),
                    host=host, port=port, database=database, params=_query(query, None))


def redis_url_problem(url: str) -> str | None:
    try:
        parse_redis_url(url)
    except InvalidValue as exc:
        return str(exc)
    return None


def read_postgres_url(url: str) -> PostgresURL | None:
    """DATABASE_URL as every task reads it, or None when config-check would refuse it (or it is unset)."""
    try:
        return parse_postgres_url(url)
    except InvalidValue:
        return None


def read_redis_url(url: str) -> RedisURL | None:
    """REDIS_URL as every task reads it, or None when config-check would refuse it (or it is unset)."""
    try:
        return parse_redis_url(url)
    except InvalidValue:
        return None

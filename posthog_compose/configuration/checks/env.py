""".env's rules: the file itself, every value against its format, values that contradict one
another, the compatibility matrix, and shell variables that would override the file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from posthog_compose.configuration.formats import urlsplit
from posthog_compose.configuration.validators import port_number, whole_number
from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.findings import COMPOSE_OWN, ENV, _Report


KAFKA_BROKER_LIMITED = ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR")
POSTHOG_DEFAULT_KEY = "00beef0000beef0000beef0000beef00"
MIN_SECRET_KEY = 50
MIN_PASSWORD = 16


# ----------------------------------------------------------------------------- .env
def _check_env_file(root: Path, manifest, environ, report: _Report):
    from posthog_compose.configuration.envfile import EnvFile

    path = root / ENV
    if not path.exists() and not path.is_symlink():
        report.error("env-missing", ENV, None, "", "not found", "run `invoke init` to create it with fresh secrets")
        return None, None
    try:
        env = EnvFile.load(path)
    except OperatorError as exc:
        report.error("env-unreadable", ENV, None, "", str(exc).split(": ", 1)[-1], "")
        return None, None
    if not env.keys():
        report.error("env-empty-file", ENV, None, "", "sets no variable at all",
                     "run `invoke init` (it fills in every variable, with fresh secrets)")
        return None, None
    for entry in env.entries:
        if entry.error:
            report.error("env-syntax", ENV, entry.line, "", "line is not KEY=VALUE (Compose will reject it)",
                         "fix or remove the line")
    for key, lines in env.duplicates().items():
        report.error("env-duplicate", ENV, lines[-1], key,
                     f"is set {len(lines)} times (lines {', '.join(map(str, lines))}); Compose uses the last, and "
                     "every editing task refuses to run until one remains",
                     "delete the lines you do not want")
    values = env.resolved(environ={k: v for k, v in environ.items() if k not in env.keys()})
    known = set(manifest.by_name)
    for key in env.keys():
        if key in known or COMPOSE_OWN.match(key):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else "add it with `invoke add-env-var` or remove it"
        report.warning("env-unknown", ENV, env.line_of(key), key, "is not in the manifest (variables.yml)",
                       hint)
    for variable in manifest.variables:
        if variable.name not in values:
            if variable.required:
                report.error("env-required", ENV, None, variable.name, "is required but missing",
                             "run `invoke init` (it adds missing variables and keeps existing values)")
        elif values[variable.name] == "" and variable.required:
            report.error("env-empty", ENV, env.line_of(variable.name), variable.name, "is empty",
                         f"set a value ({_format_description(variable.format)})"
                         + (f" or run `invoke init --rotate {variable.name}`" if variable.generate else ""))
    return env, values


def _format_description(name: str) -> str:
    from posthog_compose.configuration.formats import FORMATS

    return FORMATS[name].description


def _check_values(manifest, env, values: dict[str, str], report: _Report) -> None:
    from posthog_compose.configuration.formats import KNOWN_WEAK_VALUES
    from posthog_compose.configuration.formats import low_variety, problem

    for variable in manifest.variables:
        value = values.get(variable.name)
        if not value:
            continue
        line = env.line_of(variable.name)
        bad = problem(variable.format, value)
        if bad:
            fix = (f"run `invoke init --rotate {variable.name}`" if variable.generate
                   else f"use {_format_description(variable.format)}")
            report.error("format", ENV, line, variable.name, bad, fix)
            continue
        if not variable.secret or variable.derive:
            continue
        rotate = f"run `invoke init --rotate {variable.name}`" if variable.generate else "set a random value"
        entries = value.split(",") if variable.format == "encryption-key-list" else [value]
        if value == variable.default:
            report.error("insecure-placeholder", ENV, line, variable.name,
                         "still has the example placeholder from .env.example", rotate)
        elif any(entry == POSTHOG_DEFAULT_KEY for entry in entries):
            report.error("insecure-default", ENV, line, variable.name,
                         "uses PostHog's built-in development key 00beef...", rotate)
        elif any(entry.lower() in KNOWN_WEAK_VALUES for entry in entries):
            report.error("insecure-default", ENV, line, variable.name, "is a well-known default value", rotate)
        elif any(low_variety(entry) for entry in entries):
            weak = next(low_variety(entry) for entry in entries if low_variety(entry))
            report.error("insecure-weak", ENV, line, variable.name, f"{weak}: it can be guessed", rotate)
        elif len(set(entries)) < len(entries):
            report.error("insecure-repeated", ENV, line, variable.name,
                         "lists the same key twice (a rotation that added the old key again?)",
                         "keep each key once, newest first")
        elif variable.format == "secret-key" and len(value) < MIN_SECRET_KEY:
            report.error("insecure-short", ENV, line, variable.name,
                         f"is {len(value)} characters; at least {MIN_SECRET_KEY} are needed", rotate)
        elif variable.format in ("password", "xml-safe-password") and len(value) < MIN_PASSWORD:
            report.warning("insecure-short", ENV, line, variable.name,
                           f"is {len(value)} characters; use at least {MIN_PASSWORD}", rotate)


def _check_consistency(env, values: dict[str, str], report: _Report) -> None:
    from posthog_compose.configuration import datastores
    from posthog_compose.configuration.datastores import is_external

    get = values.get
    database = datastores.postgres_url(values) if get("DATABASE_URL") else None
    if database is not None and not is_external(values, "postgres"):
        mismatches = []
        if database.user != get("POSTGRES_USER", ""):
            mismatches.append("user differs from POSTGRES_USER")
        if database.password != get("POSTGRES_PASSWORD", ""):
            mismatches.append("password differs from POSTGRES_PASSWORD")
        if database.database != get("POSTGRES_DB", ""):
            mismatches.append("database differs from POSTGRES_DB")
        if database.host != "db":
            mismatches.append("host is not the `db` service (an unencoded @ or / in the password also moves it)")
        elif database.port != 5432:
            mismatches.append("port is not 5432, the port PostgreSQL listens on in the `db` service")
        if mismatches:
            report.error("consistency", ENV, env.line_of("DATABASE_URL"), "DATABASE_URL", "; ".join(mismatches),
                         "make it postgres://POSTGRES_USER:POSTGRES_PASSWORD@db:5432/POSTGRES_DB")
    redis = datastores.redis_url(values) if get("REDIS_URL") else None
    if redis is not None and not is_external(values, "redis"):
        if redis.host != "redis":
            report.error("consistency", ENV, env.line_of("REDIS_URL"), "REDIS_URL",
                         "does not point at the `redis` service (an unencoded @ or / in the password also moves the host)",
                         "make it redis://:REDIS_PASSWORD@redis:6379/")
        elif redis.port != 6379:
            report.error("consistency", ENV, env.line_of("REDIS_URL"), "REDIS_URL",
                         "uses a port other than 6379, the port Redis listens on in the `redis` service",
                         "make it redis://:REDIS_PASSWORD@redis:6379/")
        elif get("REDIS_PASSWORD") and redis.password != get("REDIS_PASSWORD"):
            report.error("consistency", ENV, env.line_of("REDIS_URL"), "REDIS_URL",
                         "password differs from REDIS_PASSWORD (Redis will refuse PostHog)",
                         "make it redis://:REDIS_PASSWORD@redis:6379/")
    brokers = 1  # one `kafka` service
    factors = {}
    for name in () if is_external(values, "kafka") else KAFKA_BROKER_LIMITED:
        if whole_number(get(name, "")) is not None:
            factors[name] = whole_number(get(name))
            if factors[name] > brokers:
                report.error("consistency", ENV, env.line_of(name), name,
                             f"is {factors[name]} but there is {brokers} Kafka broker; topic creation would fail",
                             "set it to 1")
            elif factors[name] < 1:
                report.error("consistency", ENV, env.line_of(name), name, "must be at least 1", "set it to 1")
    zk_connect, zk_port = get("KAFKA_ZOOKEEPER_CONNECT", ""), get("ZOOKEEPER_CLIENT_PORT", "")
    if zk_connect and zk_port and f"zookeeper:{zk_port}" not in zk_connect.split(","):
        report.error("consistency", ENV, env.line_of("KAFKA_ZOOKEEPER_CONNECT"), "KAFKA_ZOOKEEPER_CONNECT",
                     "does not point at the `zookeeper` service on ZOOKEEPER_CLIENT_PORT",
                     "set it to zookeeper:<ZOOKEEPER_CLIENT_PORT>")
    hosts, listeners = get("KAFKA_HOSTS", ""), get("KAFKA_ADVERTISED_LISTENERS", "")
    if hosts and listeners and not is_external(values, "kafka"):
        advertised = {entry.split("://", 1)[-1].strip() for entry in listeners.split(",")}
        if not {h.strip() for h in hosts.split(",")} & advertised:
            report.error("consistency", ENV, env.line_of("KAFKA_HOSTS"), "KAFKA_HOSTS",
                         "matches none of KAFKA_ADVERTISED_LISTENERS; clients would be redirected elsewhere",
                         "use the host:port the broker advertises (kafka:9092)")
    site_url = get("SITE_URL", "")
    from posthog_compose.configuration.formats import site_url_problem

    if site_url and site_url_problem(site_url):
        report.error("format", ENV, env.line_of("SITE_URL"), "SITE_URL", site_url_problem(site_url),
                     "set it to the bare address people open, e.g. https://posthog.example.com")
    scheme = urlsplit(site_url).scheme
    behind_proxy = get("IS_BEHIND_PROXY") == "true"
    if scheme == "http" and get("DISABLE_SECURE_SSL_REDIRECT") == "false" and not behind_proxy:
        report.error("consistency", ENV, env.line_of("SITE_URL"), "SITE_URL",
                     "is http:// while DISABLE_SECURE_SSL_REDIRECT=false: Django redirects every request to https",
                     "serve PostHog over https behind a proxy, or set DISABLE_SECURE_SSL_REDIRECT=true")
    if scheme == "https" and not behind_proxy:
        report.warning("consistency", ENV, env.line_of("IS_BEHIND_PROXY"), "IS_BEHIND_PROXY",
                       "is false but SITE_URL is https://; the web service itself serves plain http",
                       "set IS_BEHIND_PROXY=true when a TLS proxy fronts PostHog")
    if scheme == "http" and behind_proxy:
        report.warning("consistency", ENV, env.line_of("SITE_URL"), "SITE_URL",
                       "is http:// although IS_BEHIND_PROXY=true", "use the proxy's https:// URL")
    if get("TRUST_ALL_PROXIES") == "true":
        report.warning("consistency", ENV, env.line_of("TRUST_ALL_PROXIES"), "TRUST_ALL_PROXIES",
                       "trusts X-Forwarded-For from anyone", "list your proxy in TRUSTED_PROXIES instead")
    host, port = urlsplit(site_url).hostname, None
    try:
        port = urlsplit(site_url).port
    except ValueError:
        pass
    web_port = port_number(get("WEB_PORT", ""))
    if host in ("localhost", "127.0.0.1") and web_port is not None and (port or 80) != web_port:
        report.warning("consistency", ENV, env.line_of("SITE_URL"), "SITE_URL",
                       f"uses port {port or 80} but WEB_PORT is {get('WEB_PORT')}; logins fail with CSRF errors",
                       f"set SITE_URL=http://{host}:{get('WEB_PORT')}")


def _port(parts):
    try:
        return parts.port
    except ValueError:
        return -1


def _check_compatibility(root: Path, env, values: dict[str, str], report: _Report) -> None:
    """The PostHog contract (compatibility.yml): datastore versions and KAFKA_URL (posthog_compose/configuration/compatibility.py)."""
    from posthog_compose.configuration import compatibility

    for problem in compatibility.problems(values, root):
        getattr(report, problem.severity)(problem.rule, ENV, env.line_of(problem.name), problem.name, problem.message,
                                          problem.fix)


def _check_shell_overrides(manifest, env, environ, report: _Report) -> None:
    file_values = env.values()
    for name in manifest.by_name:
        if name in environ and name in file_values and environ[name] != file_values[name]:
            report.warning("shell-override", ENV, env.line_of(name), name,
                           "is also set in your shell with a different value, and Compose uses the shell's",
                           f"`unset {name}` before running tasks")


# ----------------------------------------------------------------------------- one variable, before a task writes it
class _NoLines:
    """An .env that is not written yet: its findings have no line."""

    def line_of(self, name: str) -> None:
        return None


def refusals(root: Path, values: dict[str, str], name: str) -> list[tuple[str, str]]:
    """config-check's errors about the .env variable ``name`` if .env held ``values``, as (reason, fix): the
    format the manifest gives it and, for a datastore's address, the external-datastore rules. A task about
    to write ``name`` (migrate-datastore writes DATABASE_URL) asks this first, so that config-check never
    refuses afterwards what the task wrote, and the task refuses it for config-check's reason."""
    from types import SimpleNamespace

    from posthog_compose.configuration import datastores, manifest as manifest_module

    variable = manifest_module.load(root).by_name[name]
    report = _Report()
    _check_values(SimpleNamespace(variables=[variable]), _NoLines(), values, report)
    datastores.check(root, _NoLines(), values, report)
    return [(finding.message, finding.fix) for finding in report.findings
            if finding.severity == "error" and finding.subject == name]

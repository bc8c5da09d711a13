"""config-check: every rule that catches an operator mistake in .env, docker-compose.yml and
clickhouse/*.xml before anything starts, and the report (text or JSON).

Each rule yields Findings; no rule ever puts a secret's value in a message. The real
`docker compose config` runs in the background while the Python rules run, so the whole
check costs little more than Compose's own validation.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote

from posthog_compose.configuration.formats import is_ascii_number, urlsplit

from posthog_compose.errors import OperatorError

ENV = ".env"
COMPOSE = "docker-compose.yml"
FIXED_SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")
WEB_DEPENDENCIES = ("db", "redis", "clickhouse", "kafka")
#: Never a dependency of web: they wait for web's migrations (the worker's launcher exits while one is pending).
WEB_MUST_NOT_WAIT_FOR = ("worker", "plugins")
DATA_VOLUMES = {  # volume -> (service, mount path)
    "postgres-data": ("db", "/var/lib/postgresql/data"),
    "clickhouse-data": ("clickhouse", "/var/lib/clickhouse"),
    "zookeeper-data": ("zookeeper", "/var/lib/zookeeper/data"),
    "zookeeper-logs": ("zookeeper", "/var/lib/zookeeper/log"),
    "kafka-data": ("kafka", "/var/lib/kafka/data"),
}
KAFKA_BROKER_LIMITED = ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR")
REFERENCE_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}$")
ANY_REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
POSTHOG_DEFAULT_KEY = "00beef0000beef0000beef0000beef00"
MIN_SECRET_KEY = 50
MIN_PASSWORD = 16
# Variables Compose itself reads from .env; not PostHog's, not typos.
COMPOSE_OWN = re.compile(r"^(COMPOSE_|DOCKER_)")


@dataclass
class Finding:
    severity: str  # "error" or "warning"
    rule: str
    file: str
    line: int | None
    subject: str
    message: str
    fix: str

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def text(self) -> str:
        # A subject comes from the operator's files and may hold any character: one finding stays one line.
        subject = f" {_printable(self.subject)}:" if self.subject else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.severity:<7} {self.where()}{subject} {_printable(self.message)}.{fix}"

    def to_dict(self) -> dict:
        return asdict(self)


def _printable(text: str) -> str:
    """Control characters (a newline in a key, an escape sequence) shown escaped, never acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, rule, file, line, subject, message, fix=""):
        self.findings.append(Finding("error", rule, file, line, subject, message, fix))

    def warning(self, rule, file, line, subject, message, fix=""):
        self.findings.append(Finding("warning", rule, file, line, subject, message, fix))


# ----------------------------------------------------------------------------- entry points
def collect(root: Path, environ: dict[str, str] | None = None) -> list[Finding]:
    """Run every rule on the deployment at ``root``; return the findings (errors first)."""
    root = Path(root)
    environ = dict(os.environ if environ is None else environ)
    report = _Report()
    compose_process = _start_compose(root, report)

    from posthog_compose.configuration import manifest as manifest_module

    try:
        manifest = manifest_module.load(root)
    except OperatorError as exc:
        report.error("manifest", manifest_module.MANIFEST_FILE, None, "", str(exc).split(": ", 1)[-1],
                     "repair variables.yml (see the handbook's Configuration page)")
        manifest = None

    values: dict[str, str] | None = None
    env = None
    document = None
    if manifest is not None:
        env, values = _check_env_file(root, manifest, environ, report)
        if values is not None:
            _check_values(manifest, env, values, report)
            _check_consistency(env, values, report)
            _check_compatibility(root, env, values, report)
            _check_shell_overrides(manifest, env, environ, report)
        document = _check_compose_file(root, manifest, report)
        _check_compose_sources(root, manifest, values, report)
        _check_clickhouse_xml(root, manifest, document, report)
        if values:
            _check_edge_and_disk(root, env, values, document, report, environ)
        _check_drift(root, manifest, report)
    _check_env_protection(root, report)
    _check_certificate_expiry(root, report)
    env_usable = values is not None and bool(values)
    model = _finish_compose(compose_process, root, report, _secret_values(manifest, values), quiet=not env_usable)
    if model is not None:
        _check_effective(root, model, report, environ)
    report.findings.sort(key=lambda f: f.severity != "error")
    return report.findings


def require_clean(root: Path) -> list[Finding]:
    """Print the findings and raise OperatorError when any is an error (used before changes)."""
    findings = collect(root)
    errors = [f for f in findings if f.severity == "error"]
    for finding in findings:
        print(finding.text())
    if errors:
        raise OperatorError(f"config-check found {len(errors)} error(s); nothing was started or changed. "
                            "Fix them and run `invoke config-check`")
    return findings


def main(root: Path, strict: bool = False, as_json: bool = False) -> int:
    """The config-check task: report and return the exit code."""
    findings = collect(root)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    failed = errors > 0 or (strict and warnings > 0)
    if as_json:
        import json

        print(json.dumps({"ok": not failed, "errors": errors, "warnings": warnings,
                          "findings": [f.to_dict() for f in findings]}, indent=2))
    else:
        for finding in findings:
            print(finding.text())
        verdict = "FAILED" if failed else "passed"
        strict_note = " (--strict: warnings fail)" if strict and warnings and not errors else ""
        print(f"config-check {verdict}: {errors} error(s), {warnings} warning(s){strict_note} "
              f"in .env, {COMPOSE} and clickhouse/.")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- Compose itself
def _start_compose(root: Path, report: _Report):
    from posthog_compose.configuration import compose

    try:
        return compose.start_config_check(root)
    except OperatorError as exc:
        report.error("compose-missing", COMPOSE, None, "", str(exc).rstrip("."), "install Docker Compose v2, then rerun")
        return None


def _finish_compose(process, root: Path, report: _Report, secrets: list[str], quiet: bool = False):
    """Compose's verdict as findings; returns its model of the deployment (None when it failed).
    With ``quiet`` (no usable .env: one error says so already), Compose's complaints about unset
    variables are left out."""
    if process is None:
        return None
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        report.error("compose", COMPOSE, None, "", "`docker compose config` did not answer within 60 s",
                     "run it by hand to see why")
        return None
    if process.returncode == 0:
        return process.model
    if quiet:
        return None
    seen = set()
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line in seen:
            continue
        seen.add(line)
        for secret in secrets:
            line = line.replace(secret, "***")
        report.error("compose", COMPOSE, None, "", f"docker compose config: {line}",
                     "see the message; `invoke init` fills in missing variables")
    return None


def _secret_values(manifest, values) -> list[str]:
    if manifest is None or not values:
        return []
    found = [values[v.name] for v in manifest.secrets if values.get(v.name)]
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


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
    from posthog_compose.configuration.datastores import is_external

    get = values.get
    database_url = get("DATABASE_URL")
    if database_url and not is_external(values, "postgres") and urlsplit(database_url).scheme in ("postgres", "postgresql"):
        parts = urlsplit(database_url)
        mismatches = []
        if unquote(parts.username or "") != get("POSTGRES_USER", ""):
            mismatches.append("user differs from POSTGRES_USER")
        if unquote(parts.password or "") != get("POSTGRES_PASSWORD", ""):
            mismatches.append("password differs from POSTGRES_PASSWORD")
        if parts.path.strip("/") != get("POSTGRES_DB", ""):
            mismatches.append("database differs from POSTGRES_DB")
        if parts.hostname != "db":
            mismatches.append("host is not the `db` service (an unencoded @ or / in the password also moves it)")
        elif _port(parts) not in (None, 5432):
            mismatches.append("port is not 5432, the port PostgreSQL listens on in the `db` service")
        if mismatches:
            report.error("consistency", ENV, env.line_of("DATABASE_URL"), "DATABASE_URL", "; ".join(mismatches),
                         "make it postgres://POSTGRES_USER:POSTGRES_PASSWORD@db:5432/POSTGRES_DB")
    redis_url = get("REDIS_URL")
    if redis_url and not is_external(values, "redis") and urlsplit(redis_url).scheme in ("redis", "rediss"):
        parts = urlsplit(redis_url)
        if parts.hostname != "redis":
            report.error("consistency", ENV, env.line_of("REDIS_URL"), "REDIS_URL",
                         "does not point at the `redis` service (an unencoded @ or / in the password also moves the host)",
                         "make it redis://:REDIS_PASSWORD@redis:6379/")
        elif _port(parts) not in (None, 6379):
            report.error("consistency", ENV, env.line_of("REDIS_URL"), "REDIS_URL",
                         "uses a port other than 6379, the port Redis listens on in the `redis` service",
                         "make it redis://:REDIS_PASSWORD@redis:6379/")
        elif get("REDIS_PASSWORD") and unquote(parts.password or "") != get("REDIS_PASSWORD"):
            report.error("consistency", ENV, env.line_of("REDIS_URL"), "REDIS_URL",
                         "password differs from REDIS_PASSWORD (Redis will refuse PostHog)",
                         "make it redis://:REDIS_PASSWORD@redis:6379/")
    brokers = 1  # one `kafka` service
    factors = {}
    for name in () if is_external(values, "kafka") else KAFKA_BROKER_LIMITED:
        if is_ascii_number(get(name, "")):
            factors[name] = int(get(name))
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
    if host in ("localhost", "127.0.0.1") and is_ascii_number(get("WEB_PORT", "")) and (port or 80) != int(get("WEB_PORT")):
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


# ----------------------------------------------------------------------------- docker-compose.yml
def _check_compose_file(root: Path, manifest, report: _Report):
    from posthog_compose.configuration import compose

    try:
        document = compose.load_document(root)
    except OperatorError as exc:
        report.error("compose-file", COMPOSE, None, "", str(exc).split(": ", 1)[-1], "")
        return None
    services = document.services if isinstance(document.services, dict) else {}
    for name in FIXED_SERVICES:
        if name not in services:
            report.error("compose-services", COMPOSE, document.line_of("services"), name,
                         "service is missing (PostHog expects the eight fixed service names)",
                         f"restore `{name}` from git: git checkout -- {COMPOSE}")
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        environment = service.get("environment") or {}
        items = environment.items() if isinstance(environment, dict) else (
            (item.split("=", 1)[0], item.split("=", 1)[1] if "=" in item else None) for item in environment)
        for key, value in items:
            if value is None or not REFERENCE_RE.match(str(value)):
                report.error("compose-literal", COMPOSE, document.line_of("services", name, "environment", key)
                             or document.line_of("services", name, "environment"), f"{name}.{key}",
                             "has a literal value in `environment:`; all configuration belongs in .env",
                             f"write `{key}: ${{{key}}}` and add the variable with `invoke add-env-var`")
    web = services.get("web") if isinstance(services.get("web"), dict) else None
    if web is not None:
        depends = web.get("depends_on") or {}
        depends = set(depends) if isinstance(depends, (dict, list)) else set()
        for dependency in WEB_DEPENDENCIES:
            if dependency not in depends:
                report.error("compose-depends", COMPOSE, document.line_of("services", "web", "depends_on")
                             or document.line_of("services", "web"), f"web -> {dependency}",
                             "depends_on edge is missing (web would start before its dependency)",
                             f"add `{dependency}: {{condition: service_healthy}}` under web.depends_on")
        for dependency in WEB_MUST_NOT_WAIT_FOR:
            if dependency in depends:
                report.error("compose-depends", COMPOSE, document.line_of("services", "web", "depends_on", dependency)
                             or document.line_of("services", "web"), f"web -> {dependency}",
                             f"web waits for {dependency}, which waits for web's migrations: a first start or an "
                             "upgrade with a migration never comes up",
                             f"remove {dependency} from web.depends_on")
    volumes = document.data.get("volumes") or {}
    for volume, (service, target) in DATA_VOLUMES.items():
        mounts = (services.get(service) or {}).get("volumes") or [] if isinstance(services.get(service), dict) else []
        mounted = any(isinstance(m, str) and m.split(":")[:2] == [volume, target] for m in mounts) or any(
            isinstance(m, dict) and m.get("source") == volume and m.get("target") == target for m in mounts)
        if volume not in volumes or not mounted:
            report.error("compose-volumes", COMPOSE, document.line_of("volumes") or document.line_of("services", service),
                         volume, f"data volume is missing or renamed (must be declared and mounted at {service}:{target})",
                         "restore the volume name; a renamed volume starts empty and the old data is orphaned")
    text = document.path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        for name in ANY_REFERENCE_RE.findall(line):
            if name not in manifest.by_name:
                report.error("compose-unknown-variable", COMPOSE, number, name,
                             "is referenced but not in the manifest, so nothing documents or checks it",
                             "add it with `invoke add-env-var`")
    return document


def _check_edge_and_disk(root: Path, env, values, document, report: _Report, environ) -> None:
    """The rules of the edge proxy (HTTPS, cookies, COMPOSE_FILE) and of log rotation, kept in their modules."""
    from posthog_compose.configuration import edge, logrotation

    edge.check(root, env, values, report, environ)
    logrotation.check(root, document, values, report)
    _check_external(root, env, values, report, environ)


def _check_external(root: Path, env, values, report: _Report, environ) -> None:
    """External datastores (rules in datastores.py), and a local volume left behind by one."""
    from posthog_compose.configuration import compose
    from posthog_compose.configuration import datastores

    datastores.check(root, env, values, report)
    gone = [name for name in datastores.external(values) if datastores.VOLUMES[name]]
    if not gone:
        return
    project = compose.recorded_project_name(root) or values.get("COMPOSE_PROJECT_NAME") or "posthog"
    left = _project_volumes(project, environ) or set()
    for name in gone:
        for volume in datastores.VOLUMES[name]:
            if f"{project}_{volume}" in left:
                variable = datastores.MODE_VARIABLE[name]
                report.warning("external-volume", ENV, env.line_of(variable), variable,
                               f"is external, but the local volume {project}_{volume} still holds the data of the "
                               f"local {datastores.TITLE[name]}: nothing uses it now",
                               f"once the external server has everything, remove it: docker volume rm {project}_{volume}")
# ----------------------------------------------------------------------------- what Compose will run
DATASTORES = ("db", "redis", "clickhouse", "zookeeper", "kafka")
UNBRACED_RE = re.compile(r"(?<!\$)(?:\$\$)*\$([A-Za-z_][A-Za-z0-9_]*)")
DEFAULTED_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-+]([^}]*)\}")


def _check_compose_sources(root: Path, manifest, values, report: _Report) -> None:
    """Rules on the text of every file Compose selects (docker-compose.yml, its override,
    COMPOSE_FILE's list): which files, references nobody documents, literal secrets."""
    from posthog_compose.configuration import compose

    try:
        files = compose.selected_files(root)
    except OperatorError as exc:
        report.error("compose-files", COMPOSE, None, "", str(exc).split(": ", 1)[-1] if str(exc).startswith(COMPOSE)
                     else str(exc), "")
        return
    secret_names = {v.name for v in manifest.secrets}
    secrets = [values[n] for n in secret_names if values and len(values.get(n) or "") >= 8]
    for path in files:
        name = _relative(root, path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            report.error("compose-files", name, None, "", f"cannot be read ({exc.strerror})",
                         "fix the path in COMPOSE_FILE or restore the file")
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for variable in UNBRACED_RE.findall(line):
                report.error("compose-unbraced", name, number, variable,
                             f"is written as ${variable}; the checks and the manifest only know ${{{variable}}}",
                             f"write ${{{variable}}} (or $${variable} for a literal dollar in a command)")
            for variable, default in DEFAULTED_RE.findall(line):
                if variable in secret_names and default.strip():
                    report.error("compose-secret-default", name, number, variable,
                                 "has a default in the compose file: that literal becomes the secret when .env "
                                 "lacks it", f"write ${{{variable}}} and keep the value in .env only")
            if any(secret in line for secret in secrets):
                report.error("compose-literal-secret", name, number, "",
                             "holds the literal value of a secret from .env (committed files must not)",
                             "refer to the variable (${NAME}) instead, then rotate the secret")
            if path.name != COMPOSE:
                for variable in ANY_REFERENCE_RE.findall(line):
                    if variable not in manifest.by_name and not COMPOSE_OWN.match(variable):
                        report.error("compose-unknown-variable", name, number, variable,
                                     "is referenced but not in the manifest, so nothing documents or checks it",
                                     "add it with `invoke add-env-var`")


def _relative(root: Path, path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _check_effective(root: Path, model: dict, report: _Report, environ: dict[str, str]) -> None:
    """Rules on the deployment as Compose will run it (every file merged, values interpolated)."""
    from posthog_compose.configuration import compose

    services = model.get("services") or {}
    name = model.get("name")
    recorded = compose.recorded_project_name(root)
    if name and recorded and name != recorded:
        has_data = _project_has_data(recorded, environ)
        message = (f"is {name!r}, but this deployment was started as {recorded!r}: the next `up` starts a second, "
                   "empty deployment" + (" while the data of the current one stays in its volumes" if has_data else ""))
        fix = f"set COMPOSE_PROJECT_NAME={recorded} in .env again (and keep `name:` in the compose files as it was)"
        if has_data is False:
            report.warning("project-name", ENV, None, "project name", message, fix)
        else:
            report.error("project-name", ENV, None, "project name", message, fix)
    for service_name, service in services.items():
        if not isinstance(service, dict):
            continue
        where = f"services.{service_name}"
        if service.get("privileged"):
            report.error("compose-privileged", COMPOSE, None, service_name, "runs privileged (full access to the host)",
                         f"remove `privileged: true` from {where}")
        for key in ("network_mode", "pid", "ipc", "userns_mode", "uts"):
            if str(service.get(key) or "") == "host":
                report.error("compose-host-namespace", COMPOSE, None, service_name,
                             f"shares the host's {key.replace('_mode', '')} namespace ({key}: host)",
                             f"remove `{key}: host` from {where}")
        dangerous = {c.upper().removeprefix("CAP_") for c in service.get("cap_add") or []} & {
            "ALL", "SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "SYS_MODULE", "DAC_READ_SEARCH"}
        if dangerous:
            report.error("compose-capabilities", COMPOSE, None, service_name,
                         f"adds the capabilities {', '.join(sorted(dangerous))}", f"remove them from {where}.cap_add")
        for volume in service.get("volumes") or []:
            source = str(volume.get("source") or "") if isinstance(volume, dict) else ""
            if source.endswith("docker.sock") or source in ("/", "/etc", "/root", "/proc", "/sys"):
                report.error("compose-host-mount", COMPOSE, None, service_name,
                             f"mounts {source} from the host", f"remove that volume from {where}")
        if service_name in DATASTORES and service.get("ports"):
            published = [str(p.get("published") or p.get("target")) for p in service["ports"] if isinstance(p, dict)]
            report.error("compose-datastore-port", COMPOSE, None, service_name,
                         f"publishes port(s) {', '.join(published)} on the host: the datastore is reachable from "
                         "outside the deployment", f"remove `ports:` from {where} (services reach it by name)")
        for dependency, condition in (service.get("depends_on") or {}).items():
            if not isinstance(condition, dict) or condition.get("condition") != "service_healthy":
                continue
            if dependency not in services and condition.get("required") is False:
                continue  # an external datastore: its service is left out (datastores.py)
            target = services.get(dependency) or {}
            check = target.get("healthcheck") if isinstance(target, dict) else None
            if not check or check.get("disable") or (check.get("test") or [""])[0] == "NONE":
                report.error("compose-healthcheck", COMPOSE, None, dependency,
                             f"has no healthcheck, but {service_name} waits for it to be healthy: `up` never finishes",
                             f"restore the healthcheck of {dependency} from git")


def _project_volumes(project: str, environ: dict[str, str]) -> set[str] | None:
    """The volumes the engine holds for ``project`` (None when the engine cannot be asked)."""
    try:
        result = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                                capture_output=True, text=True, timeout=10, env={**os.environ, **environ})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(result.stdout.split()) if result.returncode == 0 else None


def _project_has_data(project: str, environ: dict[str, str]) -> bool | None:
    """Whether the engine holds volumes of ``project`` (None when the engine cannot be asked)."""
    volumes = _project_volumes(project, environ)
    return None if volumes is None else bool(volumes)


# ----------------------------------------------------------------------------- clickhouse/*.xml
def _check_clickhouse_xml(root: Path, manifest, document, report: _Report) -> None:
    import xml.etree.ElementTree as ElementTree

    directory = root / "clickhouse"
    clickhouse_env = set()
    if document is not None:
        service = document.services.get("clickhouse") if isinstance(document.services, dict) else None
        environment = (service or {}).get("environment") or {}
        clickhouse_env = set(environment) if isinstance(environment, dict) else {
            item.split("=", 1)[0] for item in environment}
    for path in sorted(directory.glob("*.xml")):
        relative = f"clickhouse/{path.name}"
        try:
            tree = ElementTree.parse(path)
        except ElementTree.ParseError as exc:
            line = exc.position[0] if getattr(exc, "position", None) else None
            report.error("clickhouse-xml", relative, line, "", f"is not well-formed XML ({exc.msg if hasattr(exc, 'msg') else exc})",
                         "fix the XML; ClickHouse will not start with it")
            continue
        for element in tree.iter():
            name = element.get("from_env")
            if name is not None:
                if name not in manifest.by_name:
                    report.error("clickhouse-from-env", relative, None, name,
                                 "is read with from_env but is not in the manifest", "add it with `invoke add-env-var`")
                elif document is not None and name not in clickhouse_env:
                    report.error("clickhouse-from-env", relative, None, name,
                                 "is read with from_env but not passed to the clickhouse service; ClickHouse would read an empty value",
                                 f"add `{name}: ${{{name}}}` to clickhouse.environment in {COMPOSE}")
            elif element.tag == "password" and (element.text or "").strip():
                report.error("clickhouse-password", relative, None, "password",
                             "is hard-coded in the XML (and drifts from .env)",
                             'use <password from_env="CLICKHOUSE_PASSWORD"/>')
            elif element.tag in ("password_sha256_hex", "password_double_sha1_hex", "password_bcrypt_hash"):
                report.error("clickhouse-password", relative, None, element.tag,
                             "is a literal password hash in the XML: it drifts from CLICKHOUSE_PASSWORD in .env",
                             'use <password from_env="CLICKHOUSE_PASSWORD"/>')
        users = tree.getroot().find("users")
        for user in list(users) if users is not None else []:
            kinds = {child.tag for child in user}
            if not kinds & {"password", "password_sha256_hex", "password_double_sha1_hex", "password_bcrypt_hash",
                            "ldap", "kerberos", "ssl_certificates", "no_password"} or "no_password" in kinds:
                report.error("clickhouse-password", relative, None, f"user {user.tag}",
                             "has no password: anyone who reaches ClickHouse logs in as it",
                             'add <password from_env="CLICKHOUSE_PASSWORD"/> to the user')


# ----------------------------------------------------------------------------- drift and .env protection
def _check_drift(root: Path, manifest, report: _Report) -> None:
    from posthog_compose.documents import generate

    try:
        stale = generate.drift(root, manifest)
    except OperatorError as exc:
        report.warning("drift", "README.md", None, "", str(exc).split(": ", 1)[-1], "")
        return
    for path in stale:
        report.warning("drift", path.name, None, "", "differs from what variables.yml generates",
                       "run `invoke generate` (never edit generated files by hand)")


def _check_certificate_expiry(root: Path, report: _Report) -> None:
    """A warning for each certificate under certs/ that expires within certs.RENEW_DAYS (or has expired):
    TLS connections inside the deployment fail on that day."""
    import datetime as dt

    from posthog_compose.configuration import certs

    found = sorted(certs.cert_dir(root).glob("*.crt")) if certs.cert_dir(root).is_dir() else []
    if not found:
        return  # no TLS yet: nothing to load (and config-check stays instant)
    from cryptography import x509

    now = dt.datetime.now(dt.timezone.utc)
    for path in found:
        relative = path.relative_to(root).as_posix()
        try:
            expires = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
        except (ValueError, OSError) as exc:
            report.warning("certificate", relative, None, "", f"cannot be read as a PEM certificate ({exc})",
                           "invoke harden --only certificates")
            continue
        days = (expires - now).days
        if days < certs.RENEW_DAYS:
            when = f"expired on {expires:%Y-%m-%d}" if expires <= now else f"expires in {days} day(s) ({expires:%Y-%m-%d})"
            report.warning("certificate-expiry", relative, None, "", f"{when}: TLS inside the deployment fails then",
                           "renew it with `invoke harden --only certificates` (running services are recreated)")


def _check_env_protection(root: Path, report: _Report) -> None:
    path = root / ENV
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        report.error("env-permissions", ENV, None, "", f"is readable by other users (mode {mode:o}); it holds secrets",
                     f"chmod 600 {ENV}")
    if (root / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ENV], cwd=root,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if tracked.returncode == 0:
            report.error("env-tracked", ENV, None, "", "is tracked by git; its secrets are in the history",
                         f"git rm --cached {ENV}, then rotate every secret (`invoke init --force` on a fresh install)")

"""`invoke migrate-datastore postgres --to URL`: move PostHog's PostgreSQL from the local `db` service to an
external (managed) PostgreSQL, prove the copy, and switch the deployment to it. The local volume is kept.

Owns the checks of the target URL (TLS with certificate verification and a CA bundle from datastore-ca/,
unless ALLOW_PLAINTEXT_DATASTORES is true), the preflight, the steps and their journal
(.deploy/journal/migration.json), the verification, and the recovery of a migration a killed task left
behind (``recover``). ClickHouse, Redis and Kafka are refused with the way to move them.

Order, so that every failure before the switch leaves .env untouched:
parse --to -> take the deployment lock -> finish or undo an interrupted operation -> preflight (the local
`db` runs, the target answers over verified TLS, its version is inside the compatibility matrix and not
older than the local one, its database is empty and writable, backups/ has room for the dump; one line per
problem, nothing changed) -> plan -> confirmation -> journal -> stop web, worker and plugins (the outage
starts) -> pg_dump -Fc from `db` into backups/ (0600) -> pg_restore into the target in ONE transaction
(a failed or killed restore leaves it empty) -> verify (row counts of every table and sequence values on
both sides, md5 checksums of every table up to CHECKSUM_MAX_ROWS rows) -> switch .env (POSTGRES_MODE and
DATABASE_URL, one file transaction) -> config-check -> start the stack on the target and wait for PostHog's
readiness -> stop `db`. A failure after the switch puts .env back and restarts PostHog on the local `db`,
which nothing wrote to since the dump.

The target's connection settings reach the client tools only through the environment of the
`docker compose exec` child (libpq's PG* variables, named with `-e NAME`), never on a command line:
the URL holds a password. The client tools run inside `db`, which has them and the datastore-ca mount.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose import journal
from posthog_compose.errors import OperatorError

DATASTORES = ("postgres", "redis", "clickhouse", "kafka")
ALIASES = {"postgresql": "postgres", "pg": "postgres"}
APP_SERVICES = ("web", "worker", "plugins")
CA_DIR = "datastore-ca"  # datastores.CA_DIR, mounted at datastores.CA_MOUNT
CA_MOUNT = "/etc/posthog/datastore-ca"
BACKUP_DIR = "backups"
VOLUME = "postgres-data"
VERIFIED_SSLMODES = ("verify-full", "verify-ca")
#: Tables with at most this many rows are compared row by row (md5 over the ordered row hashes).
CHECKSUM_MAX_ROWS = 200_000
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
#: Session settings that make a row's text form the same on both servers (for the checksums).
STABLE_TEXT = ("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET extra_float_digits = 3; "
               "SET bytea_output = 'hex'; SET IntervalStyle = 'postgres';\n")

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


# ----------------------------------------------------------------------------- the deployment's state
def mode(values: dict[str, str]) -> str:
    from posthog_compose.configuration import datastores

    return datastores.mode(values, "postgres")


def running_services(root: Path, runner: Runner) -> dict[str, bool]:
    from posthog_compose.operations import stack

    return {s.service: s.ready for s in stack.service_states(root, runner)}


def volume_name(root: Path) -> str:
    return f"{compose.project_name(root)}_{VOLUME}"


# ----------------------------------------------------------------------------- talking to the servers
class Servers:
    """psql, pg_dump and pg_restore inside `db`: against the local database (the socket, as its owner) or
    the target (its settings only in the child's environment, named with `exec -e NAME`)."""

    def __init__(self, root: Path, runner: Runner, values: dict[str, str], target: Target):
        self.root, self.runner, self.target = Path(root), runner, target
        self.user = values.get("POSTGRES_USER", "posthog")
        self.database = values.get("POSTGRES_DB", "posthog")
        base = dict(runner.env if runner.env is not None else os.environ)
        self.target_runner = dataclasses.replace(runner, env={**base, **target.environment()})

    def local_command(self, program: str, *args: str) -> list[str]:
        return compose.command(self.root, "exec", "-T", "db", program, "-U", self.user, "-d", self.database, *args)

    def target_command(self, program: str, *args: str) -> list[str]:
        names = [item for name in self.target.environment() for item in ("-e", name)]
        return compose.command(self.root, "exec", "-T", *names, "db", program, f"--dbname={FROM_ENVIRONMENT}", *args)

    def sql(self, side: str, script: str, timeout: float = 600) -> list[dict]:
        """Run ``script`` (each result row one JSON object) on ``side`` ("local" or "target")."""
        args = ("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")
        if side == "local":
            command, runner = self.local_command("psql", *args), self.runner
        else:
            command, runner = self.target_command("psql", *args), self.target_runner
        result = runner.run(command, capture=True, check=False, input=script, mutating=False, timeout=timeout)
        if result.returncode != 0:
            raise OperatorError(f"{self.describe(side)}: {psql_error(result.stderr, result.returncode)}")
        rows = []
        for line in (result.stdout or "").splitlines():
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
        return rows

    def describe(self, side: str) -> str:
        return "the local PostgreSQL (db)" if side == "local" else f"the target PostgreSQL ({self.target.where})"


def psql_error(stderr: str | None, code: int) -> str:
    """The useful line of a psql/pg_restore failure (libpq puts the reason after 'FATAL:' or 'error:')."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        for marker in ("FATAL:", "error:", "ERROR:"):
            if marker in line:
                return line.split(marker, 1)[1].strip()[:300]
    return lines[-1][:300] if lines else f"exit {code}"


INSPECT_SQL = (
    "SELECT json_build_object("
    "'version', current_setting('server_version_num')::int, "
    "'size', pg_database_size(current_database()), "
    "'user', current_user, "
    "'create', has_schema_privilege('public', 'CREATE'), "
    "'encoding', current_setting('server_encoding'), "
    "'extensions', (SELECT coalesce(json_agg(extname ORDER BY extname), '[]') FROM pg_extension "
    "  WHERE extname <> 'plpgsql'), "
    "'available', (SELECT coalesce(json_agg(name ORDER BY name), '[]') FROM pg_available_extensions), "
    "'relations', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'), "
    "'examples', (SELECT string_agg(name, ', ') FROM (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
    "  AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "  ORDER BY 1 LIMIT 3) AS first));\n")

TABLES_SQL = (
    "SELECT json_build_object('table', name) FROM (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
    "AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp%') AS found ORDER BY name COLLATE \"C\";\n")

SEQUENCES_SQL = (
    "SELECT json_build_object('sequence', name, 'last', last_value) FROM (SELECT quote_ident(schemaname) || '.' "
    "|| quote_ident(sequencename) AS name, last_value FROM pg_sequences) AS found ORDER BY name COLLATE \"C\";\n")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def count_sql(tables: list[str]) -> str:
    """One row count per table; ``tables`` are already quoted identifiers (schema.table) from the server."""
    return "".join(f"SELECT json_build_object('table', {_literal(t)}, 'rows', (SELECT count(*) FROM {t}));\n"
                   for t in tables)


def checksum_sql(tables: list[str]) -> str:
    """An md5 per table over the md5 of every row's text, in a collation-free order (the same on any server)."""
    return STABLE_TEXT + "".join(
        f"SELECT json_build_object('table', {_literal(t)}, 'md5', (SELECT md5(coalesce(string_agg(h, '' ORDER BY h "
        f"COLLATE \"C\"), '')) FROM (SELECT md5(r::text) AS h FROM {t} AS r) AS rows));\n" for t in tables)


def version_tuple(number: int) -> tuple[int, int, int]:
    """server_version_num -> (major, minor, 0): 130022 -> (13, 22, 0); 90624 -> (9, 6, 24)."""
    if number >= 100000:
        return (number // 10000, number % 10000, 0)
    return (number // 10000, number // 100 % 100, number % 100)


# ----------------------------------------------------------------------------- preflight
@dataclass
class Facts:
    """What the preflight learned; the plan is made of it."""

    local_version: tuple = ()
    local_size: int = 0
    local_tables: int = 0
    target_version: tuple = ()
    target_user: str = ""
    was_running: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def accepted_range(root: Path, values: dict[str, str]):
    """The PostgreSQL range the pinned PostHog version accepts (compatibility.yml), or None when unknown."""
    from posthog_compose.configuration import compatibility

    try:
        matrix = compatibility.load(root)
    except OperatorError:
        return None, None
    from posthog_compose.configuration.images import with_known_tags

    image = with_known_tags(root, values).get("POSTHOG_IMAGE", "")
    row = matrix.row_for(compatibility.posthog_version(image, matrix.aliases))
    if row is None or "postgresql" not in row.accepts:
        return None, None
    return row.accepts["postgresql"].range, row.label


def preflight(root: Path, runner: Runner, values: dict[str, str], target: Target, servers: Servers,
              problems: list[str]) -> Facts:
    """Everything that can be known before a change, appended to ``problems`` (one line each)."""
    from posthog_compose.operations.engine import disks

    facts = Facts()
    states = running_services(root, runner)
    facts.was_running = [name for name in APP_SERVICES if states.get(name)]
    if not states.get("db"):
        if runner.dry_run:
            problems.append("the local db is not running, so the target cannot be checked from it; start it with "
                            "`invoke up -s db` and run the dry run again")
            return facts
        from posthog_compose.operations import stack

        print("Starting the local db for the checks ...", flush=True)
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "db"), ["db"], 300)
    try:
        local = servers.sql("local", INSPECT_SQL)[0]
    except (OperatorError, IndexError) as exc:
        problems.append(f"cannot read the local database: {exc}")
        return facts
    facts.local_version, facts.local_size = version_tuple(int(local["version"])), int(local["size"])
    try:
        facts.local_tables = len(servers.sql("local", TABLES_SQL))
    except OperatorError as exc:
        problems.append(str(exc))
    try:
        found = servers.sql("target", INSPECT_SQL, timeout=120)[0]
    except (OperatorError, IndexError) as exc:
        problems.append(f"cannot connect to {exc}; check the address, the firewall, the CA bundle and the credentials")
        found = None
    if found:
        facts.target_version, facts.target_user = version_tuple(int(found["version"])), str(found["user"])
        shown = ".".join(map(str, facts.target_version[:2]))
        accepted, label = accepted_range(root, values)
        if accepted is None:
            facts.warnings.append(f"the pinned PostHog version is not in compatibility.yml, so PostgreSQL {shown} "
                                  "cannot be checked against it; PostHog checks it at boot")
        elif not accepted.contains(facts.target_version):
            problems.append(f"the target runs PostgreSQL {shown}, outside {accepted}, the range {label} accepts: "
                            "PostHog would exit at boot; use a server inside that range")
        if facts.local_version and facts.target_version[0] < facts.local_version[0]:
            problems.append(f"the target runs PostgreSQL {shown}, older than the local {facts.local_version[0]}: "
                            "a dump cannot be restored into an older major version; use "
                            f"{facts.local_version[0]} or newer (inside the accepted range)")
        if int(found["relations"]):
            problems.append(f"the target database {target.database} is not empty ({found['relations']} relations"
                            f"{', e.g. ' + found['examples'] if found.get('examples') else ''}); migrate into an "
                            "empty database (create a new one, or drop what is there)")
        if found.get("encoding") != local.get("encoding"):
            problems.append(f"the target database is encoded {found.get('encoding')}, the local one "
                            f"{local.get('encoding')}: PostHog's text would not survive; create the database with "
                            f"ENCODING '{local.get('encoding')}'")
        missing = sorted(set(local.get("extensions") or []) - set(found.get("available") or []))
        if missing:
            problems.append(f"the local database uses the extension(s) {', '.join(missing)}, which the target "
                            "does not offer; ask the provider to enable them")
        if not found["create"]:
            problems.append(f"user {found['user']} may not create tables in schema public of {target.database}; "
                            f"grant it (GRANT CREATE ON SCHEMA public TO {found['user']}) or use the database's owner")
    need = max(facts.local_size, 16 * 1024 ** 2)
    for label, path, free in disks(root, runner.env):
        if label != "backups/":
            continue
        if free is None:
            facts.warnings.append(f"free space on backups/ cannot be measured; the dump needs up to "
                                  f"{need / 1024 ** 2:,.0f} MiB")
        elif free * 1024 ** 3 < need:
            problems.append(f"only {free:.2f} GiB free in backups/ ({path}); the dump needs up to "
                            f"{need / 1024 ** 3:.2f} GiB (the database's size). Free space there and run it again")
    return facts


# ----------------------------------------------------------------------------- plan and confirmation
def plan_lines(root: Path, target: Target, facts: Facts, dump: str) -> list[str]:
    stopped = ", ".join(facts.was_running) or "web, worker, plugins (not running now)"
    return [
        f"Plan: move PostgreSQL from the local db ({facts.local_tables} tables, {facts.local_size / 1024 ** 2:,.1f} MiB) "
        f"to {target.where} as {target.user}",
        f"  1. stop {stopped}: PostHog is unavailable from here until step 6",
        f"  2. pg_dump the local database into {dump} (mode 0600, kept)",
        f"  3. pg_restore it into {target.database} on {target.host} in one transaction",
        f"  4. verify: row counts of every table, sequence values, checksums of tables up to "
        f"{CHECKSUM_MAX_ROWS:,} rows",
        "  5. set POSTGRES_MODE=external and DATABASE_URL to the target in .env",
        "  6. start PostHog on the target and wait until it is ready; on failure go back to the local db",
        f"  7. stop the local db; its volume {volume_name(root)} is kept until you remove it",
    ]


def confirm(root: Path, out) -> None:
    project = compose.project_name(root)
    out.write(f"Type the deployment name ({project}) to start the migration: ")
    out.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise OperatorError("no confirmation (no input): nothing was changed; pass --yes for automation")
    if answer.strip() != project:
        raise OperatorError(f"confirmation {answer.strip()!r} is not {project!r}: nothing was changed")


# ----------------------------------------------------------------------------- the run
@dataclass
class Request:
    datastore: str
    to: str | None = None
    to_file: str | None = None
    yes: bool = False
    timeout: float = 600.0
    as_json: bool = False


@dataclass
class Result:
    result: str = "refused"
    target: str = ""
    tables: int = 0
    rows: int = 0
    checksummed: int = 0
    sequences: int = 0
    dump: str | None = None
    volume: str = ""
    seconds: float = 0.0
    outage_seconds: float | None = None
    problems: list[str] = field(default_factory=list)
    message: str = ""


def run(root: Path, runner: Runner, request: Request) -> int:
    """The task. Exit codes: 0 migrated (or a dry run without problems, or already on this target), 1 refused
    or failed with the deployment back on the local db (.env unchanged), 2 the way back failed too,
    130 interrupted before the switch (services restarted)."""

    if request.as_json:  # every line for people goes to stderr, stdout carries only the JSON
        import contextlib

        real_stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            result, code = _run(root, runner, request)
        print(json.dumps(dataclasses.asdict(result), indent=2), file=real_stdout)
        return code
    return _run(root, runner, request)[1]


def _run(root: Path, runner: Runner, request: Request) -> tuple[Result, int]:
    from posthog_compose import masking

    out = sys.stdout
    result = Result()
    started = time.monotonic()
    try:
        refuse_datastore(request.datastore)
        url = read_url_file(request.to_file) if request.to_file else (request.to or "")
        if request.to and request.to_file:
            raise OperatorError("--to and --to-file together: give the URL one way")
        masking.MASKER.add_all(secrets_of_url(url))
        target = parse_target(url)
        result.target = target.where
        code = _locked(root, runner, request, target, result, out)
    except OperatorError as exc:
        result.message = exc.message
        if not request.as_json:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        code = exc.code
    result.seconds = round(time.monotonic() - started, 1)
    return result, code


def _locked(root: Path, runner: Runner, request: Request, target: Target, result: Result, out) -> int:
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    with journal.deployment_lock(root, "migrate-datastore"):
        if not runner.dry_run:
            from posthog_compose.journal import replay as recover

            recover(root, runner)
        values = EnvFile.load(env_path(root)).resolved()
        current = mode(values)
        if current == "external":
            if values.get("DATABASE_URL") == target.url:
                result.result = "already migrated"
                print(f"PostgreSQL already runs on {target.where} (POSTGRES_MODE=external): nothing to do.", file=out)
                return 0
            raise OperatorError("POSTGRES_MODE is already external: there is no local PostgreSQL to migrate from "
                                "(moving between two external servers is a job for the provider's tools)")
        problems = target_problems(root, target, values)
        if problems:
            return _refused(problems, result, out)
        from posthog_compose.operations import engine

        engine.preflight("migrate-datastore", runner.env)
        servers = Servers(root, runner, values, target)
        facts = preflight(root, runner, values, target, servers, problems)
        if problems:
            return _refused(problems, result, out)
        dump = Path(BACKUP_DIR) / f"migrate-postgres-{_stamp()}.dump"
        result.dump = str(dump)
        result.volume = volume_name(root)
        for line in plan_lines(root, target, facts, str(dump)):
            print(line, file=out)
        for warning in facts.warnings:
            print(f"warning: {warning}", file=out)
        if runner.dry_run:
            result.result = "dry run"
            print("Dry run: every check passed; nothing changed.", file=out)
            return 0
        if not request.yes:
            confirm(root, out)
        return _migrate(root, runner, request, target, servers, facts, values, root / dump, result, out)


def _refused(problems: list[str], result: Result, out) -> int:
    result.problems = problems
    for problem in problems:
        print(f"problem: {problem}", file=out)
    raise OperatorError(f"migrate-datastore refused: {len(problems)} problem(s) above; nothing was changed")


def _stamp() -> str:
    from posthog_compose.fileops import timestamp

    return timestamp()


def _migrate(root: Path, runner: Runner, request: Request, target: Target, servers: Servers, facts: Facts,
             values: dict[str, str], dump: Path, result: Result, out) -> int:
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    # The journal is 0600 next to .env (as a rotation's): "previous" holds the values the switch replaces.
    raw = EnvFile.load(env_path(root)).values()
    entry = {"datastore": "postgres", "target": target.where, "fingerprint": target.fingerprint,
             "restart": facts.was_running, "dump": str(dump.relative_to(root)), "phase": "stopping",
             "previous": {name: raw.get(name) for name in ("POSTGRES_MODE", "DATABASE_URL")}}
    started = time.monotonic()
    outage_from = None
    try:
        journal.write(root, "migration", entry)
        journal.fault_point("migrate-journal-written")
        print(f"Stopping {', '.join(APP_SERVICES)} (PostHog is unavailable until the switch) ...", file=out, flush=True)
        outage_from = time.monotonic()
        runner.run(compose.command(root, "stop", "--timeout", "60", *APP_SERVICES), capture=True, timeout=300)
        journal.fault_point("migrate-stopped")
        journal.write(root, "migration", {**entry, "phase": "dumping"})
        size = dump_local(root, servers, dump, out)
        journal.fault_point("migrate-dumped")
        journal.write(root, "migration", {**entry, "phase": "restoring"})
        restore_target(root, servers, dump, size, out)
        journal.fault_point("migrate-restored")
        journal.write(root, "migration", {**entry, "phase": "verifying"})
        verify(servers, result, out)
        journal.fault_point("migrate-verified")
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the services come back whatever stopped us
        return _back_before_switch(root, runner, request, values, facts, exc, result, out,
                                   restored=journal.read(root, "migration") or entry)
    # ---- the switch
    from posthog_compose.journal import Transaction

    env = EnvFile.load(env_path(root))
    env.set("POSTGRES_MODE", "external")
    env.set("DATABASE_URL", target.url)
    transaction = Transaction(root, "migrate-datastore: switch .env to the external PostgreSQL")
    transaction.stage(env_path(root), env.render(), 0o600)
    committed = False
    try:
        with journal.critical("migrate-datastore is switching .env"):
            journal.write(root, "migration", {**entry, "phase": "switching"})
            journal.fault_point("migrate-switching")
            transaction.commit()
            committed = True
            journal.fault_point("migrate-env-switched")
            journal.write(root, "migration", {**entry, "phase": "switched"})
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        if committed:
            return _back_after_switch(root, runner, request, entry, facts, exc, result, out)
        return _back_before_switch(root, runner, request, values, facts, exc, result, out, restored=entry)
    print(f"Switched .env: POSTGRES_MODE=external, DATABASE_URL -> {target.where}.", file=out, flush=True)
    try:
        from posthog_compose.configuration import checks

        checks.require_clean(root)
        journal.fault_point("migrate-checked")
        ready = start_on_target(root, runner, request.timeout, out)
        result.outage_seconds = round(time.monotonic() - outage_from, 1) if outage_from else None
        journal.fault_point("migrate-started")
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        return _back_after_switch(root, runner, request, entry, facts, exc, result, out)
    finish(root, runner, out)
    result.result = "migrated"
    result.seconds = round(time.monotonic() - started, 1)
    print(f"PostHog runs on {target.where} ({ready}); the outage lasted {result.outage_seconds or 0:.0f} s.",
          file=out)
    print(f"Migrated PostgreSQL to {target.where}: {result.tables} tables and {result.rows:,} rows verified "
          f"({result.checksummed} checksummed, {result.sequences} sequences); dump kept in {result.dump}. The local "
          f"volume {volume_name(root)} is kept (db stopped); remove it when you no longer need it: "
          f"docker volume rm {volume_name(root)}", file=out)
    return 0


def dump_local(root: Path, servers: Servers, dump: Path, out) -> int:
    """pg_dump -Fc inside `db` into ``dump`` (0600, never under its name half-written), then pg_restore --list
    must read it. Returns its size."""
    dump.parent.mkdir(mode=0o700, exist_ok=True)
    partial = dump.with_name(dump.name + ".partial")
    command = servers.local_command("pg_dump", "--format=custom", "--no-comments")
    print(f"Dumping the local database into {dump.relative_to(root)} ...", file=out, flush=True)
    started = time.monotonic()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(os.devnull, "rb") as nothing:
            process = servers.runner.popen(command, stdin=nothing, stdout=fd, stderr=subprocess.PIPE)
        os.close(fd)
        fd = -1
        _, error = _wait_with_progress(process, partial, "dumped", out)
        if process.returncode != 0:
            raise OperatorError(f"pg_dump inside db failed: {psql_error(error.decode(errors='replace'), process.returncode)}")
        with open(partial, "rb") as handle:
            check = servers.runner.popen(compose.command(root, "exec", "-T", "db", "pg_restore", "--list"),
                                         stdin=handle, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            listing, error = check.communicate(timeout=600)
        if check.returncode != 0 or not listing.strip():
            raise OperatorError(f"the dump cannot be read back by pg_restore "
                                f"({psql_error(error.decode(errors='replace'), check.returncode)})")
        os.replace(partial, dump)
    finally:
        if fd >= 0:
            os.close(fd)
        partial.unlink(missing_ok=True)
    size = dump.stat().st_size
    print(f"Dump written: {size / 1024 ** 2:,.1f} MiB in {time.monotonic() - started:.0f} s.", file=out, flush=True)
    return size


def restore_target(root: Path, servers: Servers, dump: Path, size: int, out) -> None:
    """pg_restore into the target in one transaction: on any error (or a killed task) the target stays empty."""
    command = servers.target_command("pg_restore", "--no-owner", "--no-privileges", "--no-comments",
                                     "--single-transaction", "--exit-on-error")
    print(f"Restoring into {servers.target.where} ({size / 1024 ** 2:,.1f} MiB, one transaction) ...", file=out,
          flush=True)
    started = time.monotonic()
    with open(dump, "rb") as handle:
        process = servers.target_runner.popen(command, stdin=handle, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, error = _wait_with_progress(process, None, "restoring", out)
    if process.returncode != 0:
        raise OperatorError(f"pg_restore into {servers.target.where} failed, so it rolled back and the target is "
                            f"still empty: {psql_error(error.decode(errors='replace'), process.returncode)}")
    print(f"Restored in {time.monotonic() - started:.0f} s.", file=out, flush=True)


def _wait_with_progress(process: subprocess.Popen, grows: Path | None, what: str, out) -> tuple[bytes, bytes]:
    """Wait for ``process``, printing a line every PROGRESS_SECONDS (the size of ``grows`` when given)."""
    import threading

    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read() if process.stderr else b""),
                              daemon=True)
    reader.start()
    began = time.monotonic()
    try:
        while True:
            try:
                process.wait(timeout=PROGRESS_SECONDS)
                break
            except subprocess.TimeoutExpired:
                size = f" ({grows.stat().st_size / 1024 ** 2:,.1f} MiB)" if grows and grows.exists() else ""
                print(f"  ... {what}{size}, {time.monotonic() - began:.0f} s", file=out, flush=True)
    except BaseException:
        process.kill()
        process.wait()
        raise
    reader.join(timeout=10)
    return b"", b"".join(errors)


PROGRESS_SECONDS = 10.0


def verify(servers: Servers, result: Result, out) -> None:
    """Both sides hold the same tables, row counts and sequence values, and the same rows in every table up to
    CHECKSUM_MAX_ROWS rows. Raises one line naming the first differences."""
    print("Verifying the copy (row counts, sequences, checksums) ...", file=out, flush=True)
    tables = {side: [row["table"] for row in servers.sql(side, TABLES_SQL)] for side in ("local", "target")}
    missing = sorted(set(tables["local"]) - set(tables["target"]))
    extra = sorted(set(tables["target"]) - set(tables["local"]))
    if missing or extra:
        raise OperatorError(f"verification failed: tables missing on the target ({', '.join(missing[:5]) or 'none'})"
                            f" or only there ({', '.join(extra[:5]) or 'none'})")
    names = tables["local"]
    counts = {side: {row["table"]: int(row["rows"]) for row in servers.sql(side, count_sql(names), timeout=3600)}
              for side in ("local", "target")}
    differ = [f"{t} {counts['local'].get(t)} vs {counts['target'].get(t)}" for t in names
              if counts["local"].get(t) != counts["target"].get(t)]
    if differ:
        raise OperatorError(f"verification failed: row counts differ ({'; '.join(differ[:5])})")
    sequences = {side: {row["sequence"]: row["last"] for row in servers.sql(side, SEQUENCES_SQL)}
                 for side in ("local", "target")}
    if sequences["local"] != sequences["target"]:
        wrong = sorted(k for k in set(sequences["local"]) | set(sequences["target"])
                       if sequences["local"].get(k) != sequences["target"].get(k))
        raise OperatorError(f"verification failed: sequence values differ ({', '.join(wrong[:5])})")
    small = [t for t in names if counts["local"][t] <= CHECKSUM_MAX_ROWS]
    if small:
        sums = {side: {row["table"]: row["md5"] for row in servers.sql(side, checksum_sql(small), timeout=3600)}
                for side in ("local", "target")}
        differ = [t for t in small if sums["local"].get(t) != sums["target"].get(t) or not sums["local"].get(t)]
        if differ:
            raise OperatorError(f"verification failed: the rows of {', '.join(differ[:5])} differ (md5)")
    result.tables, result.rows = len(names), sum(counts["local"].values())
    result.checksummed, result.sequences = len(small), len(sequences["local"])
    print(f"Verified: {result.tables} tables, {result.rows:,} rows, {result.sequences} sequences; "
          f"{result.checksummed} of them compared row by row (md5).", file=out, flush=True)


def start_on_target(root: Path, runner: Runner, timeout: float, out) -> str:
    """Start the stack as .env now says (without the local db) and wait for PostHog's readiness."""
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import EnvFile, env_path

    values = EnvFile.load(env_path(root)).resolved()
    services = active_services(values)
    print(f"Starting {', '.join(services)} on the external PostgreSQL ...", file=out, flush=True)
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", *services), services, timeout,
                         readiness_values=values)
    ok, detail = stack.check_url(values, timeout=min(60.0, timeout))
    if not ok:
        raise OperatorError(f"URL check failed: {detail}")
    return detail


def active_services(values: dict[str, str]) -> list[str]:
    """The services that run with these values: the local datastores and web, worker, plugins."""
    from posthog_compose.configuration import datastores

    return datastores.local_services(values)


def finish(root: Path, runner: Runner, out) -> None:
    """The switch holds: stop the local db (its volume stays) and close the journal."""
    from posthog_compose import journal

    print("Stopping the local db (its volume is kept) ...", file=out, flush=True)
    runner.run(compose.command(root, "stop", "--timeout", "60", "db"), capture=True, timeout=300)
    journal.fault_point("migrate-db-stopped")
    journal.clear(root, "migration")


# ----------------------------------------------------------------------------- the ways back
def _reason(exc: BaseException) -> str:
    from posthog_compose import journal

    return journal.failure_reason(exc, "migrating")


def _restart(root: Path, runner: Runner, services: list[str], timeout: float, values: dict[str, str]) -> None:
    from posthog_compose.operations import stack

    if not services:
        return
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--no-deps", *services), services,
                         timeout, readiness_values=values if "web" in services else None)


def _back_before_switch(root: Path, runner: Runner, request: Request, values: dict[str, str], facts: Facts,
                        exc: BaseException, result: Result, out, restored: dict) -> int:
    """.env was never changed: start what was stopped, and say what the target may hold."""
    from posthog_compose import journal

    reason = _reason(exc)
    interrupted = isinstance(exc, KeyboardInterrupt)
    phase = restored.get("phase", "stopping")
    with journal.critical("restarting PostHog on the local db", reraise=False):
        print(f"Migration stopped before the switch ({reason}); .env is unchanged. Restarting "
              f"{', '.join(facts.was_running) or 'nothing (web, worker and plugins were not running)'} ...",
              file=out, flush=True)
        try:
            _restart(root, runner, facts.was_running, request.timeout, values)
        except (Exception, KeyboardInterrupt) as again:  # noqa: BLE001
            result.result = "failed"
            raise OperatorError(f"migration stopped before the switch ({reason}) and restarting the services failed "
                                f"({_reason(again)}); .env is unchanged: run `invoke up`", code=2)
        journal.clear(root, "migration")
    result.result = "interrupted" if interrupted else "failed"
    after = "" if phase in ("stopping", "dumping", "restoring") else (
        "; the target now holds a copy: empty its database before you try again")
    raise OperatorError(f"migration {'interrupted' if interrupted else 'stopped'} before the switch: {reason}; "
                        f"PostHog runs on the local db again, nothing changed{after}", code=130 if interrupted else 1)


def _back_after_switch(root: Path, runner: Runner, request: Request, entry: dict, facts: Facts,
                       exc: BaseException, result: Result, out) -> int:
    """The stack did not come up on the target: .env goes back, PostHog restarts on the local db (nothing wrote
    to it since the dump). Ctrl-C waits until this has finished."""
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    reason = _reason(exc)
    with journal.critical("going back to the local db", reraise=False):
        print(f"PostHog did not come up on the external PostgreSQL ({reason}); going back to the local db ...",
              file=out, flush=True)
        try:
            journal.write(root, "migration", {**entry, "phase": "rolling back"})
            journal.fault_point("migrate-rolling-back")
            set_values(root, entry.get("previous") or {"POSTGRES_MODE": "local"})
            journal.fault_point("migrate-env-restored")
            values = EnvFile.load(env_path(root)).resolved()
            _restart(root, runner, ["db", *facts.was_running], request.timeout, values)
            journal.clear(root, "migration")
        except (Exception, KeyboardInterrupt) as again:  # noqa: BLE001
            result.result = "rollback failed"
            raise OperatorError(f"PostHog did not come up on the external PostgreSQL ({reason}) and going back failed "
                                f"({_reason(again)}); .env is back on the local db: run `invoke up`", code=2)
    result.result = "rolled back"
    raise OperatorError(f"PostHog did not come up on the external PostgreSQL ({reason}); .env and PostHog are back on "
                        "the local db. The target keeps the copy: empty its database before you try again")


def set_values(root: Path, values: dict) -> None:
    """Put .env's values back (None: the line was absent), atomically and 0600."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    env = EnvFile.load(env_path(root))
    for name, value in values.items():
        if value is None:
            env.remove(name)
        else:
            env.set(name, value)
    env.write()


@journal.recovers("migration")
def recover(root: Path, runner: Runner) -> None:
    """Finish or undo a migration a killed task left behind (the caller holds the deployment lock).
    Before the switch (.env still local): start web, worker and plugins again. After it: finish (start on the
    target, stop the local db)."""
    from posthog_compose import journal
    from posthog_compose.configuration.envfile import EnvFile, env_path

    entry = journal.read(root, "migration")
    if not entry:
        return
    values = EnvFile.load(env_path(root)).resolved()
    switched = mode(values) == "external" and hashlib.sha256(
        values.get("DATABASE_URL", "").encode("utf-8")).hexdigest() == entry.get("fingerprint")
    restart = [s for s in entry.get("restart") or [] if s in APP_SERVICES]
    if switched and entry.get("phase") != "rolling back":
        print(f"A PostgreSQL migration to {entry.get('target')} was interrupted after the switch; finishing it ...")
        with journal.critical("finishing an interrupted migration"):
            start_on_target(root, runner, 600, sys.stdout)
            finish(root, runner, sys.stdout)
        print(f"Migration finished: PostHog uses {entry.get('target')}; the local volume {volume_name(root)} is kept.")
        return
    if switched:  # killed while going back to the local db: finish going back
        print("A migration was interrupted while going back to the local db; finishing that ...")
        set_values(root, entry.get("previous") or {"POSTGRES_MODE": "local"})
        values = EnvFile.load(env_path(root)).resolved()
    print(f"A PostgreSQL migration to {entry.get('target')} was interrupted before the switch ({entry.get('phase')}); "
          f".env is unchanged. Restarting {', '.join(restart) or 'nothing'} on the local db.")
    with journal.critical("restarting after an interrupted migration"):
        _restart(root, runner, [*(["db"] if not running_services(root, runner).get("db") else []), *restart], 600,
                 values)
        journal.clear(root, "migration")
    if entry.get("phase") in ("verifying", "switching"):
        print(f"note: {entry.get('target')} holds a copy of the data; empty its database before migrating again.")

"""Shared code of the PostHog STAND-IN (test only): the configuration checks every PostHog
entrypoint makes, its migrations, and its connections to the real PostgreSQL / Redis and the
ClickHouse and Kafka stand-ins. Every behaviour cites the file of PostHog's 1.43.0 tag it models
(path:line); BOUNDARIES.md lists them in one table with the test that holds each."""
import os
import posixpath
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

VERSION = os.environ.get("STANDIN_VERSION", "v1")
BROKEN = bool(os.environ.get("STANDIN_BROKEN"))
# PostHog's DEFAULT_SECRET_KEY; in production Django refuses to start with it (posthog/settings/access.py:56-62).
DEFAULT_SECRET_KEYS = ("", "<randomly generated secret key>")

# The versions PostHog release-1.43.0 accepts (posthog/settings/service_requirements.py; the same data is
# in the kit's compatibility.yml). Written as semantic_version SimpleSpec strings, as PostHog prints them.
SERVICE_VERSION_REQUIREMENTS = (
    ("postgresql", ">=11.0.0,<=14.1.0"),
    ("redis", ">=5.0.0,<=6.3.0"),
    ("clickhouse", ">=21.6.0,<22.9.0"),  # posthog/settings/service_requirements.py:18-20
)

# The migrations each stand-in version knows (Django's and ClickHouse's migration modules): v2 brings
# one more, so an upgrade to v2 leaves one pending until web's ./bin/migrate has run.
KNOWN_MIGRATIONS = {"v1": ("v1",), "v2": ("v1", "v2")}
MIGRATIONS = KNOWN_MIGRATIONS.get(VERSION, ("v1", VERSION))

# As gunicorn, Celery and the plugin server do: SIGTERM (docker stop) ends the process at once.
# A PID 1 without a handler ignores it, and every stop would wait for Docker's 10 s SIGKILL.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def log(message):
    print(message, flush=True)


def str_to_bool(value):
    """posthog/settings/utils.py: str_to_bool."""
    return str(value).lower() in ("y", "yes", "t", "true", "on", "1")


def env_bool(name, default):
    value = os.environ.get(name)
    return default if value is None else str_to_bool(value)


# ----------------------------------------------------------------------------- Django (web, worker)
def django_settings():
    """The names PostHog 1.43's Django settings read, with its production defaults. Django does NOT read
    KAFKA_HOSTS at 1.43: its brokers come from KAFKA_URL (posthog/settings/data_stores.py:
    KAFKA_HOSTS_LIST = [urlparse(host).netloc for host in KAFKA_URL.split(",")]), so without the kafka://
    scheme an entry is empty."""
    from urllib.parse import urlparse

    kafka_url = os.environ.get("KAFKA_URL", "kafka://kafka:9092")  # posthog/settings/data_stores.py:121
    secure_cookies = env_bool("SECURE_COOKIES", True)  # posthog/settings/access.py: true outside DEBUG/TEST
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY", "<randomly generated secret key>"),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "CLICKHOUSE_HOST": os.environ.get("CLICKHOUSE_HOST", "localhost"),
        "CLICKHOUSE_USER": os.environ.get("CLICKHOUSE_USER", "default"),
        "CLICKHOUSE_PASSWORD": os.environ.get("CLICKHOUSE_PASSWORD", ""),
        "CLICKHOUSE_DATABASE": os.environ.get("CLICKHOUSE_DATABASE", "default"),
        "CLICKHOUSE_SECURE": env_bool("CLICKHOUSE_SECURE", True),  # `not TEST and not DEBUG`
        "CLICKHOUSE_VERIFY": env_bool("CLICKHOUSE_VERIFY", True),
        # os.getenv("CLICKHOUSE_CA", None): an empty value stays "" and reaches the driver as ca_certs=""
        # (posthog/settings/data_stores.py:93, posthog/clickhouse/client/connection.py:45); a relative
        # path is taken from /code.
        "CLICKHOUSE_CA": os.environ.get("CLICKHOUSE_CA"),
        # data_stores.py:118-122: urlparse(entry).netloc; kafka-python 2.0.2 (requirements.txt:184) then
        # takes a broker without a port as port 9092.
        "KAFKA_HOSTS_LIST": [kafka_python_broker(urlparse(entry).netloc) for entry in kafka_url.split(",")],
        "SECURE_SSL_REDIRECT": secure_cookies and not env_bool("DISABLE_SECURE_SSL_REDIRECT", False),
        "IS_BEHIND_PROXY": env_bool("IS_BEHIND_PROXY", False),
        "SKIP_SERVICE_VERSION_REQUIREMENTS": env_bool("SKIP_SERVICE_VERSION_REQUIREMENTS", False),
    }


def kafka_python_broker(netloc):
    """kafka-python 2.0.2 (conn.py get_ip_port_afi): "host" means host:9092 (DEFAULT_KAFKA_PORT); an empty
    entry (a KAFKA_URL entry without the kafka:// scheme) stays empty and is never reachable."""
    if not netloc:
        return ""
    host, _, port = netloc.rpartition(":")
    return netloc if host and port.isdigit() else f"{netloc}:9092"


def django_setup():
    """What importing PostHog's settings and `django.setup()` do before any management command, gunicorn
    or Celery runs: refuse a missing database/Redis URL or the default SECRET_KEY, then (posthog/apps.py,
    PostHogConfig.ready) check the versions of PostgreSQL, Redis and ClickHouse."""
    settings = django_settings()
    if not settings["DATABASE_URL"]:
        log('django.core.exceptions.ImproperlyConfigured: The environment vars "DATABASE_URL" or '
            '"POSTHOG_DB_NAME" are absolutely required to run this software')
        sys.exit(1)
    if not settings["REDIS_URL"]:
        log("django.core.exceptions.ImproperlyConfigured: Env var REDIS_URL or POSTHOG_REDIS_HOST is absolutely "
            "required to run this software.")
        sys.exit(1)
    if settings["SECRET_KEY"] in DEFAULT_SECRET_KEYS:
        log("django.core.exceptions.ImproperlyConfigured: You are using the default SECRET_KEY in a production "
            "environment!")
        sys.exit(1)
    check_service_versions(settings)
    # posthog/apps.py:61-64 with posthog/settings/async_migrations.py:6-9: async-migration setup is skipped
    # unless the command is `runserver` or SKIP_ASYNC_MIGRATIONS_SETUP says otherwise; so in production
    # only the Celery worker, started with SKIP_ASYNC_MIGRATIONS_SETUP=0 (bin/docker-worker-celery:86),
    # sets them up. SKIP_SERVICE_VERSION_REQUIREMENTS only changes that default.
    command = sys.argv[1] if len(sys.argv) >= 2 else None
    if env_bool("SKIP_ASYNC_MIGRATIONS_SETUP", settings["SKIP_SERVICE_VERSION_REQUIREMENTS"] or command != "runserver"):
        log("Skipping async migrations setup. This is unsafe in production!")
    return settings


def version_string_to_semver(version):
    """posthog/version_requirement.py: drop `(...)` and `-...` suffixes, then major.minor.patch."""
    parts = version.split("(")[0].split("-")[0].strip().split(".")
    numbers = [int(part) for part in parts[:3]] + [0] * (3 - len(parts[:3]))
    return tuple(numbers)


def _in_spec(version, spec):
    import operator

    ops = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
    for clause in spec.split(","):
        op = next(o for o in (">=", "<=", ">", "<", "==") if clause.startswith(o))
        if not ops[op](version, version_string_to_semver(clause[len(op):])):
            return False
    return True


def service_version(service, settings):
    """Ask the running server, as PostHog does: SHOW server_version, INFO's redis_version, SELECT version()."""
    if service == "postgresql":
        connection = connect_db()
        with connection, connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    if service == "redis":
        return str(redis_client().info("server")["redis_version"])
    # posthog/version_requirement.py:54-58: clickhouse-driver's native client, `SELECT version()`; an
    # error there is uncaught in PostHogConfig.ready and ends the process.
    try:
        answer = clickhouse_native_query(settings, "SELECT version()").strip()
    except ClickHouseError as exc:
        log(str(exc))
        sys.exit(1)
    # The ClickHouse STAND-IN answers every query with `1`; a real server answers e.g. 22.8.11.15.
    return answer if "." in answer else None


def check_service_versions(settings):
    if settings["SKIP_SERVICE_VERSION_REQUIREMENTS"]:
        # posthog/settings/service_requirements.py:10-15 and posthog/apps.py:50
        log("Skipping service version requirements. This is dangerous and PostHog might not work as expected!")
        return
    for service, spec in SERVICE_VERSION_REQUIREMENTS:
        raw = service_version(service, settings)
        if raw is None:
            log(f"stand-in: the {service} server did not report a version; not checked")
            continue
        version = version_string_to_semver(raw)
        if not _in_spec(version, spec):
            shown = ".".join(str(n) for n in version)
            # posthog/apps.py, PostHogConfig.ready (1.4x), word for word.
            log(f"\033[91mService {service} is in version {shown}. Expected range: {spec}. PostHog may not work "
                "correctly with the current version. To continue anyway, add SKIP_SERVICE_VERSION_REQUIREMENTS=1 "
                "as an environment variable\033[0m")
            sys.exit(1)


# ----------------------------------------------------------------------------- plugin server (Node)
def plugin_server_settings():
    """The names PostHog 1.4x's plugin server reads (plugin-server/src/config/config.ts: only the keys of
    its default config, each overridable by the environment). KAFKA_HOSTS, not KAFKA_URL; its
    CLICKHOUSE_SECURE defaults to false; it has no CLICKHOUSE_VERIFY and no SECRET_KEY."""
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1"),
        "CLICKHOUSE_HOST": os.environ.get("CLICKHOUSE_HOST", "localhost"),
        "CLICKHOUSE_USER": os.environ.get("CLICKHOUSE_USER", "default"),
        "CLICKHOUSE_PASSWORD": os.environ.get("CLICKHOUSE_PASSWORD", ""),
        "CLICKHOUSE_DATABASE": os.environ.get("CLICKHOUSE_DATABASE", "default"),
        "CLICKHOUSE_SECURE": env_bool("CLICKHOUSE_SECURE", False),
        # plugin-server/src/config/config.ts:30-33 (CLICKHOUSE_CA null, CLICKHOUSE_SECURE false, KAFKA_HOSTS
        # kafka:9092); plugin-server/src/utils/db/hub.ts:154-157: with a CA, rejectUnauthorized is false.
        "CLICKHOUSE_VERIFY": not os.environ.get("CLICKHOUSE_CA"),
        # plugin-server (release-1.43.0): `ca: fs.readFileSync(path.join(BASE_DIR, CLICKHOUSE_CA))` when set,
        # BASE_DIR being /code: Node's path.join keeps an absolute value under /code ("/etc/x" -> "/code/etc/x").
        "CLICKHOUSE_CA": (posixpath.normpath("/code/" + os.environ["CLICKHOUSE_CA"])
                          if os.environ.get("CLICKHOUSE_CA") else None),
        "KAFKA_HOSTS_LIST": [h.strip() for h in os.environ.get("KAFKA_HOSTS", "kafka:9092").split(",") if h.strip()],
    }


def plugin_server_setup():
    settings = plugin_server_settings()
    if not settings["DATABASE_URL"]:
        log("Error: DATABASE_URL is required (plugin server)")
        sys.exit(1)
    return settings


def kafka_connects(hosts, timeout=2.0):
    """A Kafka client's bootstrap: connected when any listed broker (host:port) answers. An entry without
    a port cannot be used (the plugin server's kafkajs needs host:port; Django's entries get 9092 from
    kafka_python_broker before they come here); an empty entry is none."""
    import socket

    for entry in hosts:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


kafka_reachable = kafka_connects  # posthog/kafka_client/client.py:151 can_connect: a producer bootstraps


def connect_db(timeout=60, node=False):
    """A connection to DATABASE_URL, retried while the server is not there yet; read as Django's libpq
    does, or with ``node`` as the plugin server's node-postgres does (datastores_tls.py)."""
    import psycopg2

    from datastores_tls import pg_connect

    deadline = time.time() + timeout
    fatal = ("password authentication failed", "does not match", "pg_hba.conf rejects", "certificate verify failed",
             "invalid sslmode", "no such file", "root certificate file")
    while True:
        try:
            return pg_connect(os.environ.get("DATABASE_URL", ""), node=node, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            if time.time() > deadline or any(text in str(exc) for text in fatal):
                log(f"{'Error: connect' if node else 'django.db.utils.OperationalError'}: {str(exc).strip()}")
                sys.exit(1)
            time.sleep(1)


def redis_client():
    """Django's Redis: REDIS_URL through redis-py, query parameters included (datastores_tls.py)."""
    import redis

    return redis.Redis.from_url(os.environ.get("REDIS_URL") or "redis://127.0.0.1", socket_timeout=5,
                                socket_connect_timeout=3)


def clickhouse_url(settings, path=""):
    """CLICKHOUSE_HTTP_URL (posthog/settings/data_stores.py:108-114) and the plugin server's client
    (plugin-server/src/utils/db/hub.ts:143-145): https on 8443 when secure, else http on 8123."""
    scheme, port = ("https", 8443) if settings["CLICKHOUSE_SECURE"] else ("http", 8123)
    return f"{scheme}://{settings['CLICKHOUSE_HOST']}:{port}/{path}"


def _ca_problem(settings):
    """A CLICKHOUSE_CA that cannot be loaded fails the connection before any query: clickhouse-driver
    0.2.1 loads ca_certs="" and fails (Django); Node's fs.readFileSync fails on a missing file (plugins)."""
    if settings["CLICKHOUSE_CA"] == "":
        return "clickhouse_driver.errors.NetworkError: [Errno 2] No such file or directory: ''"
    if settings["CLICKHOUSE_CA"] and not os.path.isfile(settings["CLICKHOUSE_CA"]):
        return f"Error: ENOENT: no such file or directory, open '{settings['CLICKHOUSE_CA']}'"
    return None


def _unverified_context(cafile=None):
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _http_context(settings, verify):
    """TLS of an HTTP connection to ClickHouse: ``verify`` False models migrate_clickhouse's
    verify_ssl_cert=False (posthog/management/commands/migrate_clickhouse.py:45-52); True the plugin
    server's client, which verifies against Node's CAs unless a CA is given (hub.ts:154-157)."""
    if not settings["CLICKHOUSE_SECURE"]:
        return None
    problem = _ca_problem(settings)
    if problem:
        log(problem)
        sys.exit(1)
    if not verify or not settings["CLICKHOUSE_VERIFY"]:
        return _unverified_context(settings["CLICKHOUSE_CA"] or None)
    from datastores_tls import node_ca_bundle

    return ssl.create_default_context(cafile=node_ca_bundle())


def clickhouse_http_query(sql="SELECT 1", timeout=60, settings=None, verify=False):
    """One query over ClickHouse's HTTP interface, retried while the server is not there yet; a
    refused query (HTTP error) ends the process, as an exception in PostHog's command does."""
    settings = settings or django_settings()
    context = _http_context(settings, verify)
    request = urllib.request.Request(
        clickhouse_url(settings, f"?query={urllib.parse.quote(sql)}"),
        headers={"X-ClickHouse-User": settings["CLICKHOUSE_USER"], "X-ClickHouse-Key": settings["CLICKHOUSE_PASSWORD"]})
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            log(f"clickhouse_driver.errors.ServerException: {exc.read().decode().strip()}")
            sys.exit(1)
        except (OSError, ssl.SSLError) as exc:
            if time.time() > deadline:
                log(f"clickhouse_driver.errors.NetworkError: {exc}")
                sys.exit(1)
            time.sleep(1)


class ClickHouseError(Exception):
    """clickhouse_driver.errors.Error (what posthog/health.py:183 catches)."""


def clickhouse_native_query(settings, sql="SELECT 1", timeout=5.0):
    """Django's ClickHouse client (posthog/clickhouse/client/connection.py:33-46, clickhouse-driver 0.2.1,
    requirements.txt:58): the NATIVE protocol on 9000, or 9440 with TLS when CLICKHOUSE_SECURE. 0.2.1
    applies CLICKHOUSE_VERIFY to the wrong SSL option, so the certificate is never verified; ca_certs is
    still loaded. The ClickHouse stand-in answers on those ports with a one-line JSON exchange of its own
    (the real wire format is not modelled): the port, the TLS and the credentials are what is tested."""
    import json
    import socket

    port = 9440 if settings["CLICKHOUSE_SECURE"] else 9000
    if settings["CLICKHOUSE_SECURE"]:
        problem = _ca_problem(settings)
        if problem:
            raise ClickHouseError(problem)
    try:
        with socket.create_connection((settings["CLICKHOUSE_HOST"], port), timeout=timeout) as raw:
            connection = raw
            if settings["CLICKHOUSE_SECURE"]:
                connection = _unverified_context(settings["CLICKHOUSE_CA"] or None).wrap_socket(raw)
            request = {"user": settings["CLICKHOUSE_USER"], "password": settings["CLICKHOUSE_PASSWORD"],
                       "database": settings["CLICKHOUSE_DATABASE"], "query": sql}
            connection.sendall(json.dumps(request).encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except (OSError, ssl.SSLError) as exc:
        raise ClickHouseError(f"clickhouse_driver.errors.NetworkError: Code: 210. {exc} ({settings['CLICKHOUSE_HOST']}:{port})")
    try:
        reply = json.loads(answer)
    except ValueError:
        raise ClickHouseError(f"clickhouse_driver.errors.UnexpectedPacketFromServerError: {answer[:80]!r}")
    if "error" in reply:
        raise ClickHouseError(f"clickhouse_driver.errors.ServerException: {reply['error']}")
    return reply["data"]


def clickhouse_ping(settings):
    """posthog/health.py:175-187: `SELECT 1` through the native client; a driver error is False."""
    try:
        clickhouse_native_query(settings, "SELECT 1")
        return True
    except ClickHouseError:
        return False


# ----------------------------------------------------------------------------- migrations
# bin/migrate (1.43.0:bin/migrate:4-17) applies; bin/migrate-check (bin/migrate-check:4-6) runs the three
# `--check` commands under `set -e`. The stand-in keeps Django's applied migrations in the table
# posthog_standin_migration (one row per migration name) and ClickHouse's in infi_clickhouse_orm_migrations
# in CLICKHOUSE_DATABASE, as infi.clickhouse_orm does.
CH_MIGRATIONS_TABLE = "infi_clickhouse_orm_migrations"


def postgres_applied(cursor):
    cursor.execute("CREATE TABLE IF NOT EXISTS posthog_standin_migration (version text, applied_at timestamptz DEFAULT now())")
    cursor.execute("SELECT version FROM posthog_standin_migration")
    return {row[0] for row in cursor.fetchall()}


def postgres_pending(connection):
    with connection, connection.cursor() as cursor:
        applied = postgres_applied(cursor)
    return [name for name in MIGRATIONS if name not in applied]


def clickhouse_pending(settings):
    database = settings["CLICKHOUSE_DATABASE"]
    clickhouse_http_query(f"CREATE DATABASE IF NOT EXISTS {database}", settings=settings)
    clickhouse_http_query(f"CREATE TABLE IF NOT EXISTS {database}.{CH_MIGRATIONS_TABLE} (package_name String, "
                          "module_name String, applied Date) ENGINE = MergeTree ORDER BY (package_name, module_name)",
                          settings=settings)
    rows = clickhouse_http_query(f"SELECT * FROM {database}.{CH_MIGRATIONS_TABLE} FORMAT TSV", settings=settings)
    applied = {line.split("\t")[1] for line in rows.splitlines() if line.count("\t") >= 1}
    return [name for name in MIGRATIONS if name not in applied]


# The schema PostHog's ingestion path writes to, created by the stand-in's first migration (v1) as PostHog's own
# migrations create it (BOUNDARIES.md, "Ingestion path"): posthog_team with its api_token (Django's 0001;
# posthog/models/team/team.py:102-115), and in ClickHouse the events table, the Kafka-engine table
# kafka_events_json on clickhouse_events_json with group group1, and the view events_json_mv between them
# (posthog/clickhouse/migrations/0001_initial.py:8, 0030_created_at_persons_and_groups_on_events.py:25-31;
# posthog/models/event/sql.py:17-45,95-141). The events table is the layout without replication
# (sql.py:9-10: CLICKHOUSE_REPLICATION off), where `events` holds the rows itself; ON CLUSTER is left out.
POSTGRES_SCHEMA = {
    "v1": ("CREATE TABLE IF NOT EXISTS posthog_team (id serial PRIMARY KEY, api_token varchar(200) UNIQUE NOT NULL, "
           "name varchar(200) NOT NULL DEFAULT 'Default Project', anonymize_ips boolean NOT NULL DEFAULT false, "
           "created_at timestamptz NOT NULL DEFAULT now())",),
}
EVENT_COLUMNS = (
    ("uuid", "UUID"), ("event", "VARCHAR"), ("properties", "VARCHAR CODEC(ZSTD(3))"),
    ("timestamp", "DateTime64(6, 'UTC')"), ("team_id", "Int64"), ("distinct_id", "VARCHAR"),
    ("elements_chain", "VARCHAR"), ("created_at", "DateTime64(6, 'UTC')"), ("person_id", "UUID"),
    ("person_created_at", "DateTime64"), ("person_properties", "VARCHAR Codec(ZSTD(3))"),
    *((f"group{n}_properties", "VARCHAR Codec(ZSTD(3))") for n in range(5)),
    *((f"group{n}_created_at", "DateTime64") for n in range(5)),
)


def kafka_hosts_for_clickhouse():
    """KAFKA_HOSTS_FOR_CLICKHOUSE (posthog/settings/data_stores.py:118,131): the netlocs of
    KAFKA_URL_FOR_CLICKHOUSE, else of KAFKA_URL; written into the Kafka-engine table at migration time."""
    from urllib.parse import urlparse

    url = os.environ.get("KAFKA_URL_FOR_CLICKHOUSE") or os.environ.get("KAFKA_URL", "kafka://kafka:9092")
    return ",".join(urlparse(host).netloc for host in url.split(","))


def clickhouse_schema(settings, name):
    """The DDL the stand-in's ClickHouse migration ``name`` runs."""
    if name != "v1":
        return []
    database = settings["CLICKHOUSE_DATABASE"]
    prefix = os.environ.get("KAFKA_PREFIX", "")  # posthog/kafka_client/topics.py:3-5
    columns = ", ".join(f"{column} {kind}" for column, kind in EVENT_COLUMNS)
    names = ", ".join(column for column, _ in EVENT_COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.events ({columns}, _timestamp DateTime, _offset UInt64) ENGINE = "
        "ReplacingMergeTree(_timestamp) PARTITION BY toYYYYMM(timestamp) "
        "ORDER BY (team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(uuid))",
        f"CREATE TABLE IF NOT EXISTS {database}.kafka_events_json ({columns}) ENGINE = Kafka('{kafka_hosts_for_clickhouse()}', "
        f"'{prefix}clickhouse_events_json', 'group1', 'JSONEachRow') SETTINGS kafka_skip_broken_messages = 100",
        # IF NOT EXISTS, which 1.43's view has not (0030 drops it first): a migration re-run after a kill then succeeds.
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.events_json_mv TO {database}.events AS SELECT {names}, "
        "_timestamp, _offset "
        f"FROM {database}.kafka_events_json",
    ]


def clickhouse_apply(settings, names):
    database = settings["CLICKHOUSE_DATABASE"]
    for name in names:
        for statement in clickhouse_schema(settings, name):
            clickhouse_http_query(statement, settings=settings)
    body = "".join(f"posthog.clickhouse.migrations\t{name}\t{time.strftime('%Y-%m-%d')}\n" for name in names)
    request = urllib.request.Request(
        clickhouse_url(settings, "?query=" + urllib.parse.quote(f"INSERT INTO {database}.{CH_MIGRATIONS_TABLE} FORMAT TSV")),
        data=body.encode(), method="POST",
        headers={"X-ClickHouse-User": settings["CLICKHOUSE_USER"], "X-ClickHouse-Key": settings["CLICKHOUSE_PASSWORD"]})
    with urllib.request.urlopen(request, timeout=10, context=_http_context(settings, verify=False)) as response:
        response.read()

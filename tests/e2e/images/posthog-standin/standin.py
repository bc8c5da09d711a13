"""Shared code of the PostHog STAND-IN (test only): the configuration checks every PostHog
entrypoint makes, connections to the real PostgreSQL / Redis, and PostHog's key handling."""
import base64
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
# PostHog's DEFAULT_SECRET_KEY; in production Django refuses to start with it (posthog/settings/base_variables.py).
DEFAULT_SECRET_KEYS = ("", "<randomly generated secret key>")

# The versions PostHog release-1.43.0 accepts (posthog/settings/service_requirements.py; the same data is
# in the kit's compatibility.yml). Written as semantic_version SimpleSpec strings, as PostHog prints them.
SERVICE_VERSION_REQUIREMENTS = (
    ("postgresql", ">=11.0.0,<=14.1.0"),
    ("redis", ">=5.0.0,<=6.3.0"),
    ("clickhouse", ">=21.6.0,<23.0.0"),
)

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

    kafka_url = os.environ.get("KAFKA_URL", "kafka://kafka")
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
        # (release-1.43.0, posthog/settings/data_stores.py); a relative path is taken from /code.
        "CLICKHOUSE_CA": os.environ.get("CLICKHOUSE_CA"),
        "KAFKA_HOSTS_LIST": [urlparse(entry).netloc for entry in kafka_url.split(",")],
        "SECURE_SSL_REDIRECT": secure_cookies and not env_bool("DISABLE_SECURE_SSL_REDIRECT", False),
        "IS_BEHIND_PROXY": env_bool("IS_BEHIND_PROXY", False),
        "SKIP_SERVICE_VERSION_REQUIREMENTS": env_bool("SKIP_SERVICE_VERSION_REQUIREMENTS", False),
    }


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
    answer = clickhouse_query("SELECT version()", settings=settings).strip()
    # The ClickHouse STAND-IN answers every query with `1`; a real server answers e.g. 22.8.11.15.
    return answer if "." in answer else None


def check_service_versions(settings):
    if settings["SKIP_SERVICE_VERSION_REQUIREMENTS"]:
        # posthog/settings/service_requirements.py and posthog/apps.py
        log("Skipping service version requirements. This is dangerous and PostHog might not work as expected!")
        log("Skipping async migrations setup. This is unsafe in production!")
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
        "CLICKHOUSE_VERIFY": True,
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


def kafka_reachable(hosts, timeout=2.0):
    import socket

    for entry in hosts:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            return False
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError:
            return False
    return bool(hosts)


def connect_db(timeout=60):
    import psycopg2

    deadline = time.time() + timeout
    while True:
        try:
            return psycopg2.connect(os.environ.get("DATABASE_URL", ""), connect_timeout=5)
        except psycopg2.OperationalError as exc:
            if time.time() > deadline or "password authentication failed" in str(exc):
                log(f"django.db.utils.OperationalError: {str(exc).strip()}")
                sys.exit(1)
            time.sleep(1)


def redis_client():
    import redis

    return redis.Redis.from_url(os.environ.get("REDIS_URL") or "redis://127.0.0.1", socket_timeout=5,
                                socket_connect_timeout=3)


def fernet():
    """PostHog's key handling: each entry's UTF-8 bytes, base64url-encoded, is a Fernet key;
    the first key encrypts and every key decrypts (MultiFernet)."""
    from cryptography.fernet import Fernet, MultiFernet

    keys = [k for k in os.environ.get("ENCRYPTION_SALT_KEYS", "").split(",") if k]
    if not keys:
        log("Error: Encryption keys are not set")
        sys.exit(1)
    try:
        return MultiFernet([Fernet(base64.urlsafe_b64encode(key.encode("utf-8"))) for key in keys])
    except ValueError:
        log("Error: Key must be 32-byte long base64url encoded string")
        sys.exit(1)


def clickhouse_url(settings, path=""):
    """CLICKHOUSE_HTTP_URL as posthog/settings/data_stores.py builds it: https on 8443 when secure."""
    scheme, port = ("https", 8443) if settings["CLICKHOUSE_SECURE"] else ("http", 8123)
    return f"{scheme}://{settings['CLICKHOUSE_HOST']}:{port}/{path}"


def _clickhouse_context(settings):
    if not settings["CLICKHOUSE_SECURE"]:
        return None
    if settings["CLICKHOUSE_CA"] == "":
        # clickhouse-driver loads ca_certs="" and fails before any query (Django only: the plugin server
        # treats an empty value as unset).
        log("clickhouse_driver.errors.NetworkError: [Errno 2] No such file or directory: ''")
        sys.exit(1)
    if settings["CLICKHOUSE_CA"] and not os.path.isfile(settings["CLICKHOUSE_CA"]):
        log(f"Error: ENOENT: no such file or directory, open '{settings['CLICKHOUSE_CA']}'")
        sys.exit(1)
    context = ssl.create_default_context(cafile=settings["CLICKHOUSE_CA"] or None)
    if not settings["CLICKHOUSE_VERIFY"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def clickhouse_ping(settings):
    try:
        with urllib.request.urlopen(clickhouse_url(settings, "ping"), timeout=3,
                                    context=_clickhouse_context(settings)) as response:
            return response.status == 200
    except (OSError, ssl.SSLError):
        return False


def clickhouse_query(sql="SELECT 1", timeout=60, settings=None):
    settings = settings or django_settings()
    context = _clickhouse_context(settings)
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

"""Shared code of the PostHog STAND-IN (test only): the configuration checks every PostHog
entrypoint makes, connections to the real PostgreSQL / Redis, and PostHog's key handling."""
import base64
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

VERSION = os.environ.get("STANDIN_VERSION", "v1")
BROKEN = bool(os.environ.get("STANDIN_BROKEN"))
REQUIRED = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CLICKHOUSE_HOST", "CLICKHOUSE_PASSWORD", "KAFKA_HOSTS",
            "ENCRYPTION_SALT_KEYS")
DEFAULT_SECRET_KEYS = ("", "<randomly generated secret key>")

# As gunicorn, Celery and the plugin server do: SIGTERM (docker stop) ends the process at once.
# A PID 1 without a handler ignores it, and every stop would wait for Docker's 10 s SIGKILL.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def log(message):
    print(message, flush=True)


def require_configuration():
    missing = [name for name in REQUIRED if name not in os.environ]
    if missing:
        log(f"ImproperlyConfigured: missing environment variable(s): {', '.join(missing)}")
        sys.exit(1)
    if os.environ["SECRET_KEY"] in DEFAULT_SECRET_KEYS:
        log("ImproperlyConfigured: You are using the default SECRET_KEY in a production environment!")
        sys.exit(1)


def connect_db(timeout=60):
    import psycopg2

    deadline = time.time() + timeout
    while True:
        try:
            return psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=5)
        except psycopg2.OperationalError as exc:
            if time.time() > deadline or "password authentication failed" in str(exc):
                log(f"django.db.utils.OperationalError: {str(exc).strip()}")
                sys.exit(1)
            time.sleep(1)


def redis_client():
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)


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


def clickhouse_query(sql="SELECT 1", timeout=60):
    secure = os.environ.get("CLICKHOUSE_SECURE", "true").lower() == "true"
    verify = os.environ.get("CLICKHOUSE_VERIFY", "true").lower() == "true"
    scheme, port = ("https", 8443) if secure else ("http", 8123)
    context = None
    if secure:
        context = ssl.create_default_context(cafile=os.environ.get("CLICKHOUSE_CA") or None)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"{scheme}://{os.environ['CLICKHOUSE_HOST']}:{port}/?query={urllib.parse.quote(sql)}",
        headers={"X-ClickHouse-User": os.environ.get("CLICKHOUSE_USER", "default"),
                 "X-ClickHouse-Key": os.environ["CLICKHOUSE_PASSWORD"]})
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


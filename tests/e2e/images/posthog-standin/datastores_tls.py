"""How the PostHog STAND-IN (test only) reaches PostgreSQL and Redis, as PostHog release-1.43.0's two
kinds of processes read DATABASE_URL and REDIS_URL, TLS included. Sources (at 1.43.0, commit 8af8515):

Django (web, worker, migrate):
- dj-database-url 0.5.0 turns every query parameter of DATABASE_URL (sslmode, sslrootcert, ...) into
  OPTIONS, which Django passes to psycopg2 and so to libpq (posthog/settings/data_stores.py;
  psycopg2-binary==2.8.6 in requirements.txt, whose bundled libpq is older than 15). The
  POSTHOG_POSTGRES_SSL_MODE / _CLI_SSL_* settings reach no connection (a key Django ignores).
- redis-py 4.3.4 / django-redis 5.2.0 read REDIS_URL with its query parameters
  (rediss://...?ssl_cert_reqs=required&ssl_ca_certs=FILE); no host name check unless ssl_check_hostname.
- Celery 4.4.7's Redis result backend (CELERY_RESULT_BACKEND = REDIS_URL, posthog/settings/celery.py)
  refuses a rediss:// URL without a valid ssl_cert_reqs (celery/backends/redis.py).

Plugin server (Node.js):
- node-postgres 8.8.0 with pg-connection-string 2.5.0 (plugin-server/pnpm-lock.yaml): any of sslmode /
  sslrootcert / sslcert / sslkey -> TLS with FULL verification, host name included, even for `prefer`
  and `require`; `disable` -> none; `no-verify` -> unverified TLS; sslrootcert is read at once and is
  then the only CA; otherwise Node's CAs plus NODE_EXTRA_CA_CERTS; no parameter -> PGSSLMODE, else
  plaintext (lib/connection-parameters.js: the URL's ssl wins over the pool's `ssl:` option).
- ioredis 4.28.5 (plugin-server/src/utils/utils.ts createRedis): POSTHOG_REDIS_HOST, when set, wins
  (plain); else REDIS_URL, where rediss:// turns TLS on with Node's CAs plus NODE_EXTRA_CA_CERTS and a
  host name check; the URL's ssl_* parameters are ignored (ioredis has no such options).

This stand-in's psycopg2 links libpq 15 and Python's ssl, so the stricter parts of the real clients
are enforced here on top of them (check_peer_name)."""
import ipaddress
import os
import socket
import ssl
import struct
import sys
import tempfile
from urllib.parse import parse_qs, unquote, urlsplit

_NAME_CHECKED = {}
CELERY_SSL_CERT_REQS = ("CERT_REQUIRED", "CERT_OPTIONAL", "CERT_NONE", "required", "optional", "none")


def _log(message):
    print(message, flush=True)


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _server_certificate(host, port, cafile):
    """The PostgreSQL server's certificate, verified against ``cafile``, fetched the way libpq starts
    TLS (an SSLRequest, then the handshake). None when the server refuses TLS or the chain does not
    verify: the real connection then fails with libpq's own message."""
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))
            if sock.recv(1) != b"S":
                return None
            context = ssl.create_default_context(cafile=cafile)
            context.check_hostname = False
            with context.wrap_socket(sock) as tls:
                return tls.getpeercert()
    except (OSError, ssl.SSLError, ValueError):
        return None


def _name_matches(host, pattern):
    """One certificate name against the host: case-insensitive; a leading `*.` covers one label."""
    host, pattern = host.lower(), pattern.lower()
    if pattern.startswith("*.") and not _is_ip(host):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


def check_peer_name(host, port, cafile, node):
    """verify-full's host name check as the REAL clients of 1.43 make it (libpq 15 is more lenient):
    - libpq before 15 (Django): only dNSName SANs count and IP address SANs are ignored; the Common Name
      only when there is no dNSName; an IP host matches a dNSName holding its text (IP SANs arrived in
      libpq 15: PostgreSQL commit c1932e5, "libpq: Allow IP address SANs in server certificates");
    - Node.js (plugin server, tls.checkServerIdentity): an IP host matches only an IP address SAN, a
      name only a dNSName SAN.
    Returns the client's error text, or None when the certificate fits."""
    key = (host, str(port), cafile, node)
    if key not in _NAME_CHECKED:
        certificate = _server_certificate(host, port, cafile)
        problem = None
        if certificate is not None:
            sans = certificate.get("subjectAltName", ())
            dns = [value for kind, value in sans if kind == "DNS"]
            ips = [value for kind, value in sans if kind == "IP Address"]
            common = [value for rdn in certificate.get("subject", ()) for name, value in rdn if name == "commonName"]
            if node:
                names = ips if _is_ip(host) else dns
                if not any(_name_matches(host, name) for name in names):
                    problem = (f"Hostname/IP does not match certificate's altnames: "
                               f"{'IP' if _is_ip(host) else 'Host'}: {host} is not in the cert's list: "
                               + ", ".join(names))
            else:
                names = dns or common
                if not any(_name_matches(host, name) for name in names):
                    shown = names[0] if names else ""
                    more = f" (and {len(names) - 1} other name{'s' if len(names) > 2 else ''})" if len(names) > 1 else ""
                    problem = f'server certificate for "{shown}"{more} does not match host name "{host}"'
        _NAME_CHECKED[key] = problem
    return _NAME_CHECKED[key]


def node_ca_bundle():
    """Node's trust as one file: its built-in CAs (here: the system's) plus NODE_EXTRA_CA_CERTS. A
    NODE_EXTRA_CA_CERTS that cannot be read is skipped with Node's warning, not an error."""
    with open("/etc/ssl/certs/ca-certificates.crt") as handle:
        parts = [handle.read()]
    path = os.environ.get("NODE_EXTRA_CA_CERTS")
    if path:
        try:
            with open(path) as handle:
                parts.append(handle.read())
        except OSError as exc:
            _log(f"Warning: Ignoring extra certs from `{path}`, load failed: {exc.strerror}")
    bundle = tempfile.NamedTemporaryFile("w", prefix="node-ca-", suffix=".pem", delete=False)
    bundle.write("\n".join(parts))
    bundle.close()
    return bundle.name


def node_pg_options(url):
    """DATABASE_URL's TLS as node-postgres reads it, as psycopg2 keywords (see the module docstring)."""
    query = {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    sslmode, rootcert = query.get("sslmode"), query.get("sslrootcert")
    if any(name in query for name in ("sslmode", "sslrootcert", "sslcert", "sslkey")):
        mode = {"disable": "off", "no-verify": "unverified"}.get(sslmode, "verify")
    else:
        rootcert = None
        mode = {"disable": "off", "prefer": "verify", "require": "verify", "verify-ca": "verify",
                "verify-full": "verify", "no-verify": "unverified"}.get(os.environ.get("PGSSLMODE", ""), "off")
    if mode == "off":
        return {"sslmode": "disable"}
    if mode == "unverified":
        return {"sslmode": "require", "sslrootcert": ""}
    if rootcert:
        open(rootcert).close()  # read at once by pg-connection-string: a missing file fails (ENOENT)
        return {"sslmode": "verify-full", "sslrootcert": rootcert}
    return {"sslmode": "verify-full", "sslrootcert": node_ca_bundle()}


def pg_connect(url, node=False, **kwargs):
    """psycopg2.connect as the REAL client of 1.43 connects: Django's libpq (``node`` False) or the
    plugin server's node-postgres (``node`` True)."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    try:
        params = parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        raise psycopg2.OperationalError(str(exc).strip())
    if node:
        for name in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
            params.pop(name, None)
        try:
            params.update(node_pg_options(url))
        except OSError as exc:
            raise psycopg2.OperationalError(f"ENOENT: no such file or directory, open '{exc.filename}'")
    if params.get("sslmode") == "verify-full" and params.get("host"):
        problem = check_peer_name(params["host"], params.get("port", 5432), params.get("sslrootcert") or None, node)
        if problem:
            raise psycopg2.OperationalError(problem)
    params.update(kwargs)
    return psycopg2.connect(**params)


def celery_check_redis_url():
    """Celery's result backend at worker start: a rediss:// REDIS_URL needs a valid ssl_cert_reqs."""
    url = os.environ.get("REDIS_URL", "")
    if urlsplit(url).scheme != "rediss":
        return
    value = parse_qs(urlsplit(url).query).get("ssl_cert_reqs", ["MISSING"])[-1]
    if value not in CELERY_SSL_CERT_REQS:
        _log("ValueError: A rediss:// URL must have parameter ssl_cert_reqs and this must be set to "
             "CERT_REQUIRED, CERT_OPTIONAL, or CERT_NONE")
        sys.exit(1)


def node_redis_client():
    """The plugin server's Redis client (ioredis), see the module docstring."""
    import redis

    host = os.environ.get("POSTHOG_REDIS_HOST", "")
    if host:
        return redis.Redis(host=host, port=int(os.environ.get("POSTHOG_REDIS_PORT") or 6379),
                           password=os.environ.get("POSTHOG_REDIS_PASSWORD") or None, socket_timeout=5,
                           socket_connect_timeout=3)
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1")
    options = {"host": parts.hostname or "localhost", "port": parts.port or 6379,
               "password": unquote(parts.password) if parts.password else None,
               "db": int(parts.path.strip("/") or 0), "socket_timeout": 5, "socket_connect_timeout": 3}
    if parts.scheme == "rediss":
        options.update(ssl=True, ssl_cert_reqs="required", ssl_ca_certs=node_ca_bundle(), ssl_check_hostname=True)
    return redis.Redis(**options)

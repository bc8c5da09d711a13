"""Which datastores run on this host and which are external (managed services or other hosts),
and where PostHog reaches each one.

One switch per datastore in .env (POSTGRES_MODE, REDIS_MODE, CLICKHOUSE_MODE, KAFKA_MODE: `local`
or `external`). docker-compose.yml gives each datastore service the profile named by its switch and
.env activates only the profile `local` (COMPOSE_PROFILES=local), so Compose itself, not only the
kit, leaves an external datastore's service out. ZooKeeper follows ClickHouse and Kafka: it runs
while either of them is local.

The CA bundle that signs the external datastores' certificates lives in the folder datastore-ca/,
mounted read-only at /etc/posthog/datastore-ca in web, worker, plugins and db; URLs in .env name
files by that container path, and `host_path` maps them back to the host copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from posthog_compose.configuration.validators import InvalidValue, parse_postgres_url, parse_redis_url, port_number

DATASTORES = ("postgres", "redis", "clickhouse", "kafka")
#: The Compose service of each datastore when it runs here.
SERVICE = {"postgres": "db", "redis": "redis", "clickhouse": "clickhouse", "kafka": "kafka"}
#: The .env switch of each datastore.
MODE_VARIABLE = {"postgres": "POSTGRES_MODE", "redis": "REDIS_MODE", "clickhouse": "CLICKHOUSE_MODE",
                 "kafka": "KAFKA_MODE"}
#: How each datastore is named to people.
TITLE = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}
#: The named volumes of each local service (ZooKeeper's under "zookeeper").
VOLUMES = {"postgres": ("postgres-data",), "redis": (), "clickhouse": ("clickhouse-data",),
           "kafka": ("kafka-data",), "zookeeper": ("zookeeper-data", "zookeeper-logs")}
#: Every service of the deployment in the canonical order (the order of `status`).
ALL_SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")
MODES = ("local", "external")
#: The Compose profile .env activates; a datastore whose switch names another profile is left out.
ACTIVE_PROFILE = "local"

CA_DIR = "datastore-ca"
CA_MOUNT = PurePosixPath("/etc/posthog/datastore-ca")
DEFAULT_CA = CA_MOUNT / "ca.crt"
#: PostHog's working folder in its image: relative paths (CLICKHOUSE_CA) are taken from there.
POSTHOG_WORKDIR = PurePosixPath("/code")
#: CLICKHOUSE_CA for the default CA: relative, because the plugin server joins it onto /code.
CLICKHOUSE_CA_DEFAULT = "../etc/posthog/datastore-ca/ca.crt"

#: libpq's sslmode values that encrypt, and those that also verify the server's certificate.
POSTGRES_TLS_MODES = ("require", "verify-ca", "verify-full")
POSTGRES_VERIFY_MODES = ("verify-ca", "verify-full")
#: Kafka security protocols (librdkafka / kafka-python / kafkajs names) that use TLS.
KAFKA_TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def mode(values: dict[str, str], datastore: str) -> str:
    """`local` or `external` for ``datastore``; anything else in .env counts as local here
    (config-check reports it) so that no task silently drops a service it should run."""
    return "external" if values.get(MODE_VARIABLE[datastore], "local") == "external" else "local"


def is_external(values: dict[str, str], datastore: str) -> bool:
    return mode(values, datastore) == "external"


def external(values: dict[str, str]) -> list[str]:
    """The external datastores, in the canonical order."""
    return [name for name in DATASTORES if is_external(values, name)]


def zookeeper_needed(values: dict[str, str]) -> bool:
    return not (is_external(values, "clickhouse") and is_external(values, "kafka"))


def local_services(values: dict[str, str]) -> list[str]:
    """The Compose services that run on this host, in the canonical order."""
    off = {SERVICE[name] for name in external(values)}
    if not zookeeper_needed(values):
        off.add("zookeeper")
    return [service for service in ALL_SERVICES if service not in off]


def external_services(values: dict[str, str]) -> list[str]:
    """The services of ALL_SERVICES that do not run here (zookeeper included when neither needs it)."""
    here = set(local_services(values))
    return [service for service in ALL_SERVICES if service not in here]


def local_volumes(values: dict[str, str]) -> list[str]:
    """The named volumes that hold data on this host."""
    names = [volume for name in DATASTORES if not is_external(values, name) for volume in VOLUMES[name]]
    if zookeeper_needed(values):
        names.extend(VOLUMES["zookeeper"])
    return names


def datastore_of_service(service: str) -> str | None:
    return next((name for name, svc in SERVICE.items() if svc == service), None)


@dataclass(frozen=True)
class Endpoint:
    """Where PostHog reaches one datastore, as .env says (never with its password)."""

    datastore: str
    host: str
    port: int | None
    tls: bool
    verify: bool
    ca_path: str | None  # the CA file as the containers see it
    variable: str  # the .env variable that holds the address

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host

    def ca_host_path(self, root: Path) -> Path | None:
        return host_path(root, self.ca_path) if self.ca_path else None


def postgres_url(values: dict[str, str]):
    """DATABASE_URL as the shared validator reads it, or None when config-check refuses it."""
    try:
        return parse_postgres_url(values.get("DATABASE_URL", ""))
    except InvalidValue:
        return None


def redis_url(values: dict[str, str]):
    """REDIS_URL as the shared validator reads it, or None when config-check refuses it."""
    try:
        return parse_redis_url(values.get("REDIS_URL", ""))
    except InvalidValue:
        return None


def postgres_endpoint(values: dict[str, str]) -> Endpoint:
    url = postgres_url(values)
    if url is None:  # config-check names what is wrong; the endpoint has no address
        return Endpoint("postgres", "", 5432, False, False, None, "DATABASE_URL")
    sslmode = url.params.get("sslmode", "prefer")
    return Endpoint("postgres", url.host, url.port, sslmode in POSTGRES_TLS_MODES, sslmode in POSTGRES_VERIFY_MODES,
                    url.params.get("sslrootcert"), "DATABASE_URL")


def redis_endpoint(values: dict[str, str]) -> Endpoint:
    url = redis_url(values)
    if url is None:
        return Endpoint("redis", "", 6379, False, False, None, "REDIS_URL")
    query = {key.lower(): value for key, value in url.params.items()}
    # redis-py and Celery: ssl_cert_reqs=none (or CERT_NONE) turns verification off.
    verify = url.tls and query.get("ssl_cert_reqs", "required").lower() not in ("none", "cert_none", "optional",
                                                                               "cert_optional")
    return Endpoint("redis", url.host, url.port, url.tls, verify, query.get("ssl_ca_certs"), "REDIS_URL")


def clickhouse_endpoint(values: dict[str, str]) -> Endpoint:
    secure = values.get("CLICKHOUSE_SECURE") == "true"
    # At release 1.43 neither process verifies ClickHouse's certificate (see _check_clickhouse).
    verify = False
    # PostHog's HTTP port: 8443 over TLS, 8123 without (posthog/settings/data_stores.py).
    return Endpoint("clickhouse", values.get("CLICKHOUSE_HOST", ""), 8443 if secure else 8123, secure, verify,
                    values.get("CLICKHOUSE_CA") or None, "CLICKHOUSE_HOST")


def kafka_endpoints(values: dict[str, str]) -> list[Endpoint]:
    protocol = values.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    tls = protocol in KAFKA_TLS_PROTOCOLS
    found = []
    for entry in (values.get("KAFKA_HOSTS") or "").split(","):
        host, _, port = entry.strip().rpartition(":")
        if host:
            found.append(Endpoint("kafka", host, port_number(port), tls, tls, None, "KAFKA_HOSTS"))
    return found


def address_problem(values: dict[str, str], datastore: str) -> str | None:
    """What config-check's format rule says about the variable holding ``datastore``'s address, or None."""
    from posthog_compose.configuration.validators import (
        host_port_entry,
        hostname_problem,
        postgres_url_problem,
        redis_url_problem,
    )

    if datastore == "postgres":
        return postgres_url_problem(values.get("DATABASE_URL", ""))
    if datastore == "redis":
        return redis_url_problem(values.get("REDIS_URL", ""))
    if datastore == "clickhouse":
        return hostname_problem(values.get("CLICKHOUSE_HOST", ""))
    entries = (values.get("KAFKA_HOSTS") or "").split(",")
    if not all(host_port_entry(entry.strip()) for entry in entries):
        return "must be host:port entries separated by commas, e.g. kafka:9092"
    return None


ENDPOINT = {"postgres": postgres_endpoint, "redis": redis_endpoint, "clickhouse": clickhouse_endpoint}


def endpoints(values: dict[str, str], only_external: bool = True) -> list[Endpoint]:
    """The endpoint of each (external) datastore; Kafka has one per broker."""
    found: list[Endpoint] = []
    for name in DATASTORES:
        if only_external and not is_external(values, name):
            continue
        if name == "kafka":
            found.extend(kafka_endpoints(values))
        else:
            found.append(ENDPOINT[name](values))
    return found


def host_path(root: Path, container_path: str | None) -> Path | None:
    """The host file behind a container path under /etc/posthog/datastore-ca, or None when the
    path lies elsewhere (then no host copy is known)."""
    if not container_path:
        return None
    import posixpath

    path = PurePosixPath(posixpath.normpath(str(POSTHOG_WORKDIR / unquote(container_path))))
    try:
        relative = path.relative_to(CA_MOUNT)
    except ValueError:
        return None
    if ".." in relative.parts or not relative.parts:
        return None
    return Path(root) / CA_DIR / Path(*relative.parts)


# ----------------------------------------------------------------------------- config-check rules
LOCAL_HOSTS = {"postgres": ("db",), "redis": ("redis",), "clickhouse": ("clickhouse",), "kafka": ("kafka",)}
URL_EXAMPLE = {
    "postgres": "postgres://USER:PASSWORD@HOST:5432/DB?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt",
    "redis": "rediss://:PASSWORD@HOST:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/posthog/datastore-ca/ca.crt",
}
#: Warn this long before a CA in datastore-ca/ expires.
CA_EXPIRY_WARNING_DAYS = 30


def ca_problem(path: Path) -> str | None:
    """Why the PEM file at ``path`` cannot serve as a CA bundle, or None. Lazy: cryptography loads
    only when a file is there to read."""
    import datetime as dt

    if not path.is_file():
        return "does not exist"
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return "holds a private key; only CA certificates belong in datastore-ca/"
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        return "is not a PEM certificate (-----BEGIN CERTIFICATE-----)"
    now = dt.datetime.now(dt.timezone.utc)
    expired = [c for c in certificates if c.not_valid_after_utc <= now]
    if len(expired) == len(certificates):
        return "has expired: TLS to the datastore fails"
    return None


def ca_expires_soon(path: Path) -> int | None:
    """Days until the first certificate of the bundle expires, when that is within the warning window."""
    import datetime as dt

    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    days = min((c.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days for c in certificates)
    return days if days < CA_EXPIRY_WARNING_DAYS else None


#: Names that, inside PostHog's containers, are the container itself.
LOOPBACK_HOSTS = ("localhost", "localhost.localdomain", "ip6-localhost", "0.0.0.0", "::", "::1")


def _local_address(host: str, datastore: str) -> str | None:
    """Why ``host`` cannot be an external datastore's address seen from PostHog's containers, or None."""
    from posthog_compose.configuration.manifest import OPTIONAL_SERVICES, SERVICES

    mode_variable = MODE_VARIABLE[datastore]
    if host in LOCAL_HOSTS[datastore]:
        return f"points at the local `{host}` service, which does not run while {mode_variable}=external"
    if host.lower() in LOOPBACK_HOSTS or host.startswith("127."):
        return (f"points at {host}, which inside PostHog's containers is the container itself, not an external "
                f"{TITLE[datastore]} server")
    if host in SERVICES + OPTIONAL_SERVICES:
        return f"points at `{host}`, a service of this deployment, not an external {TITLE[datastore]} server"
    return None


def check(root: Path, env, values: dict[str, str], report) -> None:
    """config-check's rules for external datastores: the address is not the local service, TLS with
    certificate verification unless ALLOW_PLAINTEXT_DATASTORES=true, the CA file behind each
    container path exists in datastore-ca/, and the settings each PostHog process needs."""
    line = env.line_of
    allow_plaintext = values.get("ALLOW_PLAINTEXT_DATASTORES") == "true"
    seen_ca: dict[str, str] = {}

    def plaintext(datastore: str, variable: str, message: str, fix: str) -> None:
        if allow_plaintext:
            report.warning("external-tls", ".env", line(variable), variable, message + " (allowed by "
                           "ALLOW_PLAINTEXT_DATASTORES=true)", fix)
        else:
            report.error("external-tls", ".env", line(variable), variable, message,
                         fix + ", or set ALLOW_PLAINTEXT_DATASTORES=true on a network you trust end to end")

    def ca_file(variable: str, container_path: str, what: str) -> None:
        host = host_path(root, container_path)
        if host is None:
            report.warning("external-ca", ".env", line(variable), variable,
                           f"{what} {container_path} is outside {CA_MOUNT}, so no host copy can be checked",
                           f"put the CA in {CA_DIR}/ and use {DEFAULT_CA}")
            return
        key = str(host)
        if key not in seen_ca:
            seen_ca[key] = ca_problem(host) or ""
            if not seen_ca[key]:
                days = ca_expires_soon(host)
                if days is not None:
                    report.warning("external-ca", _relative(root, host), None, "",
                                   f"a certificate in this CA bundle expires in {max(days, 0)} days",
                                   "get the provider's new CA and add it to the bundle before then")
        if seen_ca[key]:
            report.error("external-ca", ".env", line(variable), variable,
                         f"{what} {container_path}: {_relative(root, host)} {seen_ca[key]}",
                         f"save the datastore's CA certificate (PEM) as {_relative(root, host)}")

    for datastore in DATASTORES:
        mode_variable = MODE_VARIABLE[datastore]
        if not is_external(values, datastore):
            continue
        title = TITLE[datastore]
        found = kafka_endpoints(values) if datastore == "kafka" else [ENDPOINT[datastore](values)]
        for endpoint in found:
            problem = _local_address(endpoint.host, datastore)
            if problem:
                report.error("external-address", ".env", line(endpoint.variable), endpoint.variable, problem,
                             f"give the external {title} server's address, or set {mode_variable}=local")
                break
        if datastore == "postgres":
            _check_postgres(values, report, line, plaintext, ca_file)
        elif datastore == "redis":
            _check_redis(values, report, line, plaintext, ca_file)
        elif datastore == "clickhouse":
            _check_clickhouse(values, report, line, plaintext, ca_file)
        elif datastore == "kafka":
            _check_kafka(values, report, line, plaintext)
    external_ca = values.get("EXTERNAL_CA_FILE", "")
    if external_ca:
        ca_file("EXTERNAL_CA_FILE", external_ca, "the CA bundle")
    elif is_external(values, "redis") and redis_endpoint(values).tls and redis_endpoint(values).ca_path:
        report.warning("external-ca", ".env", line("EXTERNAL_CA_FILE"), "EXTERNAL_CA_FILE",
                       "is empty although REDIS_URL names a private CA: the plugin server (Node.js) reads no "
                       "ssl_ca_certs and trusts only its built-in CAs",
                       f"set EXTERNAL_CA_FILE={redis_endpoint(values).ca_path}")


def _relative(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _check_postgres(values, report, line, plaintext, ca_file) -> None:
    url = postgres_url(values)
    if url is None:
        return  # the format rule names what is wrong with it
    query = url.params
    sslmode = query.get("sslmode")
    fix = "append ?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt to DATABASE_URL"
    if sslmode == "no-verify":
        report.error("external-tls", ".env", line("DATABASE_URL"), "DATABASE_URL",
                     "has sslmode=no-verify, which only Node.js knows: Django's libpq refuses it and PostHog exits",
                     "use sslmode=verify-full with sslrootcert")
        return
    if sslmode not in POSTGRES_TLS_MODES:
        plaintext("postgres", "DATABASE_URL", f"has {'no sslmode' if sslmode is None else 'sslmode=' + sslmode}: "
                  "PostHog may talk to the external PostgreSQL in plain text", fix)
    elif sslmode not in POSTGRES_VERIFY_MODES:
        plaintext("postgres", "DATABASE_URL", "has sslmode=require: Django's libpq encrypts but does not verify the "
                  "server's certificate", "use sslmode=verify-full with sslrootcert")
    elif sslmode == "verify-ca":
        report.warning("external-tls", ".env", line("DATABASE_URL"), "DATABASE_URL",
                       "has sslmode=verify-ca: the certificate is checked but not the host name", "use sslmode=verify-full")
    if sslmode in POSTGRES_VERIFY_MODES and not query.get("sslrootcert"):
        report.error("external-ca", ".env", line("DATABASE_URL"), "DATABASE_URL",
                     f"has sslmode={sslmode} without sslrootcert: libpq looks for ~/.postgresql/root.crt, which no "
                     "PostHog container has", "append &sslrootcert=/etc/posthog/datastore-ca/ca.crt")
    if query.get("sslrootcert"):
        ca_file("DATABASE_URL", query["sslrootcert"], "sslrootcert")


def _check_redis(values, report, line, plaintext, ca_file) -> None:
    url = redis_url(values)
    if url is None:
        return  # the format rule names what is wrong with it
    query = {key.lower(): value for key, value in url.params.items()}
    if not url.tls:
        plaintext("redis", "REDIS_URL", "is redis://: PostHog would talk to the external Redis in plain text",
                  "use rediss://:PASSWORD@HOST:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/posthog/datastore-ca/ca.crt")
        return
    reqs = query.get("ssl_cert_reqs")
    if reqs is None:
        # Celery's Redis result backend refuses a rediss:// URL without it (E_REDIS_SSL_CERT_REQS_MISSING).
        report.error("external-tls", ".env", line("REDIS_URL"), "REDIS_URL",
                     "is rediss:// without ssl_cert_reqs: PostHog's Celery refuses such a URL",
                     "append ?ssl_cert_reqs=required (and ssl_ca_certs=... for a private CA)")
    elif reqs.lower() in ("none", "cert_none", "optional", "cert_optional"):
        plaintext("redis", "REDIS_URL", f"has ssl_cert_reqs={reqs}: the server's certificate is not verified",
                  "use ssl_cert_reqs=required")
    elif reqs != "required":
        report.error("external-tls", ".env", line("REDIS_URL"), "REDIS_URL",
                     f"has ssl_cert_reqs={reqs}: redis-py accepts only the lower-case words none, optional, required",
                     "use ssl_cert_reqs=required")
    if query.get("ssl_ca_certs"):
        ca_file("REDIS_URL", query["ssl_ca_certs"], "ssl_ca_certs")


def _check_clickhouse(values, report, line, plaintext, ca_file) -> None:
    if values.get("CLICKHOUSE_SECURE") != "true":
        plaintext("clickhouse", "CLICKHOUSE_SECURE", "is not true: PostHog would talk to the external ClickHouse in "
                  "plain text", "set CLICKHOUSE_SECURE=true (ports 9440 and 8443)")
        return
    if not values.get("CLICKHOUSE_CA"):
        # Django hands ca_certs="" to its ClickHouse driver, which fails; None would need the name unset.
        report.error("external-ca", ".env", line("CLICKHOUSE_CA"), "CLICKHOUSE_CA",
                     "is empty while CLICKHOUSE_SECURE=true: Django's ClickHouse connection fails without a CA file",
                     f"save the CA in {CA_DIR}/ca.crt and set CLICKHOUSE_CA={CLICKHOUSE_CA_DEFAULT} (the public CAs: "
                     "../etc/ssl/certs/ca-certificates.crt)")
    else:
        ca_file("CLICKHOUSE_CA", values["CLICKHOUSE_CA"], "CLICKHOUSE_CA")
    # clickhouse-driver 0.2.1 (pinned by release 1.43) sets the check on the wrong SSL option and the
    # plugin server passes rejectUnauthorized: false with a CA: neither verifies the certificate.
    report.warning("external-tls", ".env", line("CLICKHOUSE_HOST"), "CLICKHOUSE_HOST",
                   "is reached over TLS, but PostHog 1.43 does not verify ClickHouse's certificate (neither Django's "
                   "ClickHouse driver nor the plugin server does, whatever CLICKHOUSE_VERIFY says)",
                   "keep the path to ClickHouse private (a private network, VPN or peering)")


def _check_kafka(values, report, line, plaintext) -> None:
    protocol = values.get("KAFKA_SECURITY_PROTOCOL", "")
    if protocol not in KAFKA_TLS_PROTOCOLS:
        plaintext("kafka", "KAFKA_SECURITY_PROTOCOL", f"is {protocol or 'empty'}: PostHog would talk to the external "
                  "Kafka in plain text", "set KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL with the KAFKA_SASL_* values)")
    sasl = [values.get(name, "") for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USER", "KAFKA_SASL_PASSWORD")]
    if protocol.startswith("SASL_") and not all(sasl):
        report.error("external-kafka", ".env", line("KAFKA_SECURITY_PROTOCOL"), "KAFKA_SECURITY_PROTOCOL",
                     f"is {protocol} but KAFKA_SASL_MECHANISM, KAFKA_SASL_USER and KAFKA_SASL_PASSWORD are not all set",
                     "set all three (the mechanism in capitals, e.g. SCRAM-SHA-512)")
    elif any(sasl) and not protocol.startswith("SASL_"):
        # The plugin server applies SASL whenever the three are set; Django only with a SASL_ protocol.
        report.error("external-kafka", ".env", line("KAFKA_SASL_MECHANISM"), "KAFKA_SASL_MECHANISM",
                     f"SASL values are set but KAFKA_SECURITY_PROTOCOL is {protocol}: the plugin server would use "
                     "SASL and Django would not", "set KAFKA_SECURITY_PROTOCOL=SASL_SSL, or empty the KAFKA_SASL_* values")
    b64 = [values.get(name, "") for name in ("KAFKA_CLIENT_CERT_B64", "KAFKA_CLIENT_CERT_KEY_B64", "KAFKA_TRUSTED_CERT_B64")]
    if values.get("KAFKA_BASE64_KEYS") == "true":
        if not all(b64):
            report.error("external-kafka", ".env", line("KAFKA_BASE64_KEYS"), "KAFKA_BASE64_KEYS",
                         "is true but KAFKA_CLIENT_CERT_B64, KAFKA_CLIENT_CERT_KEY_B64 and KAFKA_TRUSTED_CERT_B64 are "
                         "not all set: Django fails to start its Kafka client", "set all three, or KAFKA_BASE64_KEYS=false")
        elif protocol != "SSL":
            report.error("external-kafka", ".env", line("KAFKA_BASE64_KEYS"), "KAFKA_BASE64_KEYS",
                         f"is true, which makes Django use SSL without SASL, but KAFKA_SECURITY_PROTOCOL is {protocol}",
                         "set KAFKA_SECURITY_PROTOCOL=SSL")
        else:
            report.warning("external-tls", ".env", line("KAFKA_BASE64_KEYS"), "KAFKA_BASE64_KEYS",
                           "is true: on this path Django does not check the broker's host name and the plugin server "
                           "does not verify the broker at all", "keep the path to Kafka private")
    elif all(b64):
        report.error("external-kafka", ".env", line("KAFKA_BASE64_KEYS"), "KAFKA_BASE64_KEYS",
                     "is false but the three KAFKA_*_B64 values are set: the plugin server uses them, Django does not",
                     "set KAFKA_BASE64_KEYS=true, or empty the three values")
    elif protocol in KAFKA_TLS_PROTOCOLS:
        report.warning("external-tls", ".env", line("KAFKA_SECURITY_PROTOCOL"), "KAFKA_SECURITY_PROTOCOL",
                       "uses TLS with the system's CAs: Django cannot be given a private CA for Kafka at release 1.43",
                       "use a broker certificate from a public CA, or KAFKA_BASE64_KEYS with the provider's CA")

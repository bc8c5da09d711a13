"""The target URL of `migrate-datastore --to`: read by the validator config-check applies to DATABASE_URL
(configuration/validators.py) into libpq settings, checked by config-check's own rules for the .env the switch
would write (TLS with certificate verification and a CA bundle from datastore-ca/, unless
ALLOW_PLAINTEXT_DATASTORES is true; not a host of this deployment), and the refusals of the datastores that are
not moved this way (ClickHouse, Redis, Kafka).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from posthog_compose.configuration.validators import POSTGRES_PARAMETERS, InvalidValue, parse_postgres_url
from posthog_compose.errors import OperatorError


DATASTORES = ("postgres", "redis", "clickhouse", "kafka")
ALIASES = {"postgresql": "postgres", "pg": "postgres"}
CA_DIR = "datastore-ca"  # datastores.CA_DIR, mounted at datastores.CA_MOUNT
CA_MOUNT = "/etc/posthog/datastore-ca"
VERIFIED_SSLMODES = ("verify-full", "verify-ca")

#: The URL's query parameters the task can hand to libpq, and the environment variable of each: the ones the
#: shared validator accepts in DATABASE_URL.
PARAMETERS = POSTGRES_PARAMETERS
#: The parameters that name a file, which the client tools in `db` must find under the datastore-ca mount.
FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")

#: A URI with nothing in it: libpq takes every connection setting from the PG* environment.
FROM_ENVIRONMENT = "postgresql://"

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
    host: str  # without brackets
    port: int
    database: str
    params: dict[str, str]

    @property
    def where(self) -> str:
        """host:port/database, for the operator (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"

    @property
    def sslmode(self) -> str:
        return self.params.get("sslmode", "")

    @property
    def fingerprint(self) -> str:
        """Identifies the URL in the journal without writing its password there."""
        return hashlib.sha256(self.url.encode("utf-8")).hexdigest()

    def environment(self) -> dict[str, str]:
        """libpq's PG* variables for this target. PGPASSWORD is always set (empty means "none"), so that a
        password set inside the container can never be sent to another server. A file named relative to
        PostHog's working folder (as PostHog reads it) is given to the tools in `db` as the absolute path."""
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
               "PGDATABASE": self.database, "PGPASSWORD": self.password}
        for name, value in self.params.items():
            env[PARAMETERS[name]] = container_path(value) if name in FILE_PARAMETERS else value
        return env


def container_path(value: str) -> str:
    """The absolute container path of a file PostHog's processes open as ``value`` (relative: from /code)."""
    import posixpath

    from posthog_compose.configuration import datastores

    return posixpath.normpath(str(datastores.POSTHOG_WORKDIR / unquote(value)))


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
    """Read a postgres:// URL with the validator config-check applies to DATABASE_URL, or raise its reason
    as one line."""
    url = (url or "").strip()
    if not url:
        raise OperatorError(f"--to is required: the external PostgreSQL's URL, e.g. postgres://USER:PASS@HOST:5432/DB"
                            f"?sslmode=verify-full&sslrootcert={CA_MOUNT}/ca.crt")
    try:
        parsed = parse_postgres_url(url)
    except InvalidValue as exc:
        raise OperatorError(f"--to {exc}") from None
    return Target(url=url, user=parsed.user, password=parsed.password, host=parsed.host, port=parsed.port,
                  database=parsed.database, params=dict(parsed.params))


def target_problems(root: Path, target: Target, values: dict[str, str]) -> list[str]:
    """What is wrong with the target before anything runs, one line each: first what config-check would
    refuse in .env after the switch (POSTGRES_MODE=external and DATABASE_URL=the target), with its reason
    (a host of this deployment, TLS without verification unless ALLOW_PLAINTEXT_DATASTORES is true, a CA
    bundle missing or broken in datastore-ca/); then what the client tools in `db` need besides: every file
    the URL names under datastore-ca/, where `db` finds it too."""
    from posthog_compose.configuration.checks.env import refusals

    after_switch = {**values, "POSTGRES_MODE": "external", "DATABASE_URL": target.url}
    problems = [f"--to {reason}; {fix}" if fix else f"--to {reason}"
                for reason, fix in refusals(root, after_switch, "DATABASE_URL")]
    for name in FILE_PARAMETERS:
        value = target.params.get(name)
        if value is None:
            continue
        problem = ca_file_problem(root, name, value)
        if problem:
            problems.append(problem)
    return problems


def host_path(root: Path, container_path: str) -> Path | None:
    """The file in datastore-ca/ a container path under /etc/posthog/datastore-ca/ refers to (a relative one
    read from /code, as PostHog reads it), or None when the path lies elsewhere."""
    from posthog_compose.configuration import datastores

    return datastores.host_path(root, container_path)


def ca_file_problem(root: Path, name: str, value: str) -> str | None:
    """What the client tools in `db` cannot use: a file outside the datastore-ca mount (config-check only warns:
    PostHog's own image may hold it, `db` does not), or a client certificate, key or CRL that is not there
    (config-check judges sslrootcert's file itself)."""
    path = host_path(root, value)
    if path is None:
        return (f"--to: {name}={value} is not under {CA_MOUNT}/, the only folder the containers share with this "
                f"host; put the file in {CA_DIR}/ and write {name}={CA_MOUNT}/FILE")
    relative = f"{CA_DIR}/{path.relative_to(Path(root) / CA_DIR)}"
    if name != "sslrootcert" and not path.is_file():
        return f"--to: {name} names {relative}, which does not exist; copy the file there"
    return None


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

"""The "managed" datastores of the end-to-end tests: a separate Compose project (docker-compose.yml
next to this file) with a REAL PostgreSQL 13 and a REAL Redis 6.0 that accept only TLS, on their
own network with a fixed subnet, and certificates issued by the kit's own CA code.

How the kit's deployment reaches them: by routing, as a host reaches a provider's managed service.
The private engine runs without iptables rules (scripts/e2e-engine: --iptables=false), so the host
forwards between the bridges of the two projects: a container of the kit's project sends to the
managed address through its gateway (the host), and the host itself is on every bridge. No shared
Docker network and no override file is needed, and the URLs hold the managed address itself.
(On a host that does not forward between bridges, e.g. an iptables FORWARD policy of DROP, the
operator's pattern for datastores in another Compose project on the same host is a
docker-compose.override.yml that attaches web, worker, plugins and db to that project's network,
declared `external: true`; routing_problem names that case instead of letting PostHog time out.)

The certificates name the address twice: as an iPAddress SAN (Python's ssl, Node.js and libpq 15
match that) and as a dNSName holding the address text (libpq before 15 matches an IP host only
against dNSName SANs or the Common Name: IP address SANs arrived in libpq 15, PostgreSQL commit
c1932e5 "libpq: Allow IP address SANs in server certificates"), plus a DNS name.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.e2e.harness import Engine, HarnessError, progress

HERE = Path(__file__).resolve().parent
PROJECT = "posthog-managed"
#: The /24 networks the managed project may take; the first that no route of this host covers is used
#: (a bridge of any engine on this machine, or a network of the host itself, shows up as a route).
CANDIDATES = [ipaddress.ip_network(f"172.30.{n}.0/24") for n in range(240, 255)]
#: The CA bundle's path inside the kit's containers (the datastore-ca/ folder, mounted read-only).
CONTAINER_CA = "/etc/posthog/datastore-ca/ca.crt"


def _host_routes() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination this host routes (from /proc/net/route: little-endian hex)."""
    routes = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        routes.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return routes


def pick_subnet() -> ipaddress.IPv4Network:
    taken = _host_routes()
    for candidate in CANDIDATES:
        if not any(candidate.overlaps(route) for route in taken):
            return candidate
    raise HarnessError(f"no free /24 for the managed datastores among {CANDIDATES[0]} .. {CANDIDATES[-1]}")


@dataclass
class ManagedDatastores:
    """A running "managed" project: its addresses, CA and administrator access."""

    engine: Engine
    workdir: Path
    subnet: ipaddress.IPv4Network
    postgres_ip: str
    redis_ip: str
    postgres_password: str
    redis_password: str

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "ca.crt"

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env,
                "MANAGED_SUBNET": str(self.subnet), "MANAGED_POSTGRES_IP": self.postgres_ip,
                "MANAGED_REDIS_IP": self.redis_ip, "MANAGED_CERTS": str(self.workdir / "certs"),
                "MANAGED_POSTGRES_PASSWORD": self.postgres_password, "MANAGED_REDIS_PASSWORD": self.redis_password,
                "POSTGRES_IMAGE": self.engine.image_env["POSTGRES_IMAGE"],
                "REDIS_IMAGE": self.engine.image_env["REDIS_IMAGE"]}

    def compose(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
        from posthog_compose.configuration import compose

        command = [*compose.compose_binary(), "--project-name", PROJECT, "--project-directory", str(HERE),
                   "--file", str(HERE / "docker-compose.yml"), *args]
        result = subprocess.run(command, cwd=HERE, env=self.env, capture_output=True, text=True, input=input,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise HarnessError(f"managed: docker compose {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
        return result

    # --- administrator access (inside the managed containers, as the provider's console would) ---
    def psql(self, sql: str, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        """SQL as the managed administrator over the server's local socket (the SQL travels on stdin)."""
        return self.compose("exec", "-T", "postgres", "psql", "-v", "ON_ERROR_STOP=1", "-At", "-U", "managed_admin",
                            "-d", database, check=check, input=sql)

    def redis(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", "-e", f"REDISCLI_AUTH={self.redis_password}", "redis", "redis-cli", "--tls",
                            "--cacert", "/managed/certs/ca.crt", "-h", "127.0.0.1", *args, check=check)

    def create_database(self, name: str) -> tuple[str, str]:
        """A database and its owner (a login role with a new password), as a provider's console makes
        them: returns (user, password). The name is the test's own, not from outside."""
        password = secrets.token_urlsafe(18)
        self.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'; CREATE DATABASE {name} OWNER {name};")
        return name, password

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE); DROP ROLE IF EXISTS {name};", check=False)

    # --- what the deployment's .env gets (the contract of issue 20) ---
    def database_url(self, user: str, password: str, database: str, sslmode: str = "verify-full") -> str:
        query = f"sslmode={sslmode}" + (f"&sslrootcert={CONTAINER_CA}" if sslmode != "disable" else "")
        return f"postgres://{quote(user, safe='')}:{quote(password, safe='')}@{self.postgres_ip}:5432/{database}?{query}"

    def redis_url(self, db: int = 0) -> str:
        return (f"rediss://:{quote(self.redis_password, safe='')}@{self.redis_ip}:6379/{db}"
                f"?ssl_cert_reqs=required&ssl_ca_certs={CONTAINER_CA}")

    def install_ca(self, deployment_root: Path) -> Path:
        """The operator's step: put the provider's CA bundle in the deployment's datastore-ca/ folder."""
        target = Path(deployment_root) / "datastore-ca" / "ca.crt"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(self.ca_file, target)
        target.chmod(0o644)
        return target

    def stop(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def _issue_certificates(workdir: Path, postgres_ip: str, redis_ip: str) -> None:
    """The CA and the two server certificates, made by the kit's own certificate code."""
    from cryptography import x509

    from posthog_compose.configuration import certs

    directory = workdir / "certs"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_certificate, ca_key = certs.make_ca(workdir, project="managed datastores")
    for service, address in (("postgres", postgres_ip), ("redis", redis_ip)):
        names = [x509.DNSName(f"{service}.managed.internal"), x509.IPAddress(ipaddress.ip_address(address)),
                 x509.DNSName(address)]
        certs.make_server_cert(workdir, service, ca_certificate, ca_key, names=names)


def routing_problem(managed: ManagedDatastores) -> str | None:
    """Why the kit's containers could not reach the managed addresses, or None: the host must
    forward between bridges (ip_forward on, no iptables FORWARD policy that drops), and the host
    itself must reach the managed PostgreSQL's port."""
    import socket

    try:
        forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        forwarding = "1"
    if forwarding != "1":
        return "this host does not forward IPv4 (net.ipv4.ip_forward=0): containers cannot reach the managed network"
    if shutil.which("iptables"):
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False).stdout
        if "-P FORWARD DROP" in rules:
            return ("this host's iptables FORWARD policy is DROP (another Docker engine may have set it): "
                    f"containers cannot reach the managed network {managed.subnet}")
    try:
        socket.create_connection((managed.postgres_ip, 5432), timeout=3).close()
    except OSError as exc:
        return f"this host cannot reach the managed PostgreSQL at {managed.postgres_ip}:5432 ({exc})"
    return None


def start_managed(engine: Engine, workdir: Path) -> ManagedDatastores:
    """Issue the certificates, start the project and wait until both servers are healthy."""
    import time

    subnet = pick_subnet()
    hosts = list(subnet.hosts())
    managed = ManagedDatastores(engine, Path(workdir), subnet, str(hosts[9]), str(hosts[10]),
                                secrets.token_urlsafe(18), secrets.token_urlsafe(18))
    _issue_certificates(managed.workdir, managed.postgres_ip, managed.redis_ip)
    started = time.monotonic()
    try:
        managed.compose("up", "--detach", "--wait", "--wait-timeout", "120")
    except BaseException:
        logs = managed.compose("logs", "--no-color", "--tail", "20", check=False)
        progress(f"managed datastores did not start:\n{logs.stdout[-2000:]}")
        managed.stop()
        raise
    problem = routing_problem(managed)
    if problem:
        managed.stop()
        raise HarnessError(problem)
    progress(f"e2e harness: managed PostgreSQL at {managed.postgres_ip}, Redis at {managed.redis_ip} "
             f"(TLS only, {subnet}) up in {time.monotonic() - started:.0f}s")
    return managed

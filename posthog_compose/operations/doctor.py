"""Preflight, as Sentry's self-hosted installer does it: the Docker engine, Compose v2+,
host RAM, CPUs and free disk against PostHog's needs, and WEB_PORT free; for each external
datastore, from this host: DNS, TCP, the TLS handshake verified against the CA bundle under
datastore-ca/ and the host name, and where a version can be read, the version against the
compatibility matrix. Read-only; no secret is ever printed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from posthog_compose.configuration import compose

# PostHog's hobby deployment asks for about 4 vCPUs, 16 GB RAM and 30 GB of disk; below the
# minimums the stack is known to fall over (ClickHouse and Kafka are memory-hungry).
MIN_CPUS, GOOD_CPUS = 2, 4
MIN_RAM_GB, GOOD_RAM_GB = 8, 16
MIN_DISK_GB, GOOD_DISK_GB = 20, 30


@dataclass
class Check:
    name: str
    status: str  # ok, warning, error
    detail: str
    fix: str = ""


def _engine(env) -> Check:
    from posthog_compose.operations.engine import NO_PERMISSION, engine_fix, engine_reason, last_line

    try:
        result = subprocess.run(["docker", "version", "--format", "{{json .}}"], capture_output=True, text=True,
                                env=env, timeout=20)
    except FileNotFoundError:
        return Check("docker engine", "error", "the docker client is not installed",
                     "install Docker Engine (Debian/Ubuntu: `sudo apt-get install docker.io`) or Docker Desktop")
    except subprocess.TimeoutExpired:
        return Check("docker engine", "error", "the engine did not answer within 20 s",
                     "check it with `sudo systemctl status docker`")
    try:
        info = json.loads(result.stdout or "{}")
    except ValueError:
        info = {}
    server = (info or {}).get("Server") or {}
    if result.returncode != 0 or not server:
        reason = last_line(result.stderr) or "no answer"
        if NO_PERMISSION.search(result.stderr or ""):
            return Check("docker engine", "error", "permission denied on the engine's socket",
                         "add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in again)")
        return Check("docker engine", "error", f"not reachable ({engine_reason(reason)})",
                     engine_fix().replace("; `invoke doctor` checks the host", ""))
    return Check("docker engine", "ok", f"reachable, version {server.get('Version', '?')}")


def _compose(root: Path, env) -> Check:
    from posthog_compose.operations.engine import HOW_TO_GET_COMPOSE, last_line
    from posthog_compose.errors import OperatorError

    try:
        binary = compose.compose_binary()
    except OperatorError:
        return Check("docker compose", "error", "Docker Compose v2 is not installed", HOW_TO_GET_COMPOSE)
    shown = " ".join(binary)
    try:
        result = subprocess.run([*binary, "version", "--short"], capture_output=True, text=True, env=env, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("docker compose", "error", f"`{shown} version` could not run ({type(exc).__name__})",
                     HOW_TO_GET_COMPOSE)
    version = result.stdout.strip().lstrip("v")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        # e.g. `docker compose` without the plugin prints Docker's usage text: name it, never echo it
        return Check("docker compose", "error", f"`{shown} version` did not answer with a version"
                     f"{' (' + last_line(result.stderr)[:120] + ')' if last_line(result.stderr) else ''}",
                     HOW_TO_GET_COMPOSE)
    if major < 2:
        return Check("docker compose", "error", f"version {version} is Compose v1, which lacks --wait and `ps --format json`",
                     HOW_TO_GET_COMPOSE)
    return Check("docker compose", "ok", f"version {version} ({shown})")


def _ram() -> Check:
    try:
        with open("/proc/meminfo") as meminfo:
            total_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return Check("memory", "warning", "cannot read /proc/meminfo")
    gb = total_kb / 1024 / 1024
    if gb < MIN_RAM_GB:
        return Check("memory", "error", f"{gb:.1f} GB; PostHog needs at least {MIN_RAM_GB} GB", "use a larger host")
    if gb < GOOD_RAM_GB:
        return Check("memory", "warning", f"{gb:.1f} GB; {GOOD_RAM_GB} GB recommended", "expect slow queries under load")
    return Check("memory", "ok", f"{gb:.1f} GB")


def _cpus() -> Check:
    count = os.cpu_count() or 1
    if count < MIN_CPUS:
        return Check("cpus", "error", f"{count}; PostHog needs at least {MIN_CPUS}", "use a larger host")
    if count < GOOD_CPUS:
        return Check("cpus", "warning", f"{count}; {GOOD_CPUS} recommended", "expect slow ingestion under load")
    return Check("cpus", "ok", str(count))


def _disk(root: Path, env: dict | None = None) -> Check:
    """Free space where it matters: Docker's data root (volumes, images) and backups/ (dumps)."""
    from posthog_compose.operations.engine import disks

    worst, notes, fix = "ok", [], ""
    for label, path, free_gb in disks(root, env):
        if free_gb is None:
            notes.append(f"{label}: cannot be measured from this host"
                         + (f" ({path} is not readable here)" if path else " (the engine does not say where it is)"))
            worst = "warning" if worst == "ok" else worst
            continue
        if label == "backups/":
            notes.append(f"{free_gb:.0f} GB free for backups/")
            if free_gb < 1:
                worst, fix = "error", "free space under backups/: an upgrade's dump and logs need room"
            continue
        notes.append(f"{free_gb:.0f} GB free on Docker's data root ({path})")
        if free_gb < MIN_DISK_GB:
            worst, fix = "error", "free space or move Docker's data root to a larger disk"
        elif free_gb < GOOD_DISK_GB and worst == "ok":
            worst, fix = "warning", f"{GOOD_DISK_GB} GB recommended; watch volume growth"
    return Check("disk", worst, "; ".join(notes), fix)


def _web_port(root: Path, runner) -> tuple[Check, bool]:
    """The WEB_PORT check, and whether this deployment's web service is the one running there."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    port = EnvFile.load(path).resolved().get("WEB_PORT", "8080") if path.exists() else "8080"
    if not port.isdigit():
        return Check("web port", "error", f"WEB_PORT {port!r} is not a number", "run `invoke config-check`"), False
    try:
        from posthog_compose.operations import stack

        ours = any(s.service == "web" and s.state == "running" for s in stack.service_states(root, runner))
    except Exception:
        ours = False
    if ours:
        return Check("web port", "ok", f"{port} is held by this deployment's web service"), True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", int(port)))
        except OSError:
            return Check("web port", "error", f"{port} is already in use by another program",
                         "stop it, or set another WEB_PORT in .env (and SITE_URL to match)"), False
    return Check("web port", "ok", f"{port} is free"), False


def _one_line(text: str) -> str:
    """Tool output can hold newlines; a doctor line never does."""
    return " ".join(text.split())


def _data_disk(root: Path, runner) -> Check:
    """`invoke doctor`'s line about the engine's data disk."""
    from posthog_compose.operations.diskusage import CRITICAL_FREE_GB, GB, human, measure

    report = measure(root, runner)
    if report.free_bytes is None:
        return Check("data disk", "warning", f"free space unknown ({report.error})", "run `docker info` and `df -h`")
    volumes = sum(v for v in report.volumes.values() if v)
    detail = (f"{human(report.free_bytes)} free on the engine's data disk ({report.data_root or report.measured_by}); "
              f"the deployment's volumes hold {human(volumes)}")
    if report.free_bytes / GB < CRITICAL_FREE_GB:
        return Check("data disk", "error", detail, "free space now: `docker system prune`, lower Kafka retention")
    if report.warning:
        return Check("data disk", "warning", detail, "see the handbook's Disk and logs page")
    return Check("data disk", "ok", detail)


def run(root: Path, runner, as_json: bool = False) -> int:
    env = runner.env
    port, running = _web_port(root, runner)
    checks = [_engine(env), _compose(root, env), _ram(), _cpus(), _disk(root), port]
    if checks[0].status == "ok":
        checks.append(_data_disk(root, runner))
    checks.extend(external_checks(root))
    for check in checks:
        check.detail, check.fix = _one_line(check.detail), _one_line(check.fix)
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for check in checks:
            fix = f" Fix: {check.fix}" if check.fix and check.status != "ok" else ""
            print(f"{check.status:<8} {check.name:<15} {check.detail.rstrip('.')}.{fix}")
        errors = sum(c.status == "error" for c in checks)
        warnings = sum(c.status == "warning" for c in checks)
        if errors:
            verdict = " Fix the errors before `invoke up`."
        elif running:
            verdict = " The deployment is running: `invoke status` shows its services."
        else:
            verdict = " Ready for `invoke up`."
        print(f"doctor: {errors} error(s), {warnings} warning(s).{verdict}")
    return 1 if any(c.status == "error" for c in checks) else 0


# ----------------------------------------------------------------------------- external datastores
#: Seconds each network step (resolve, connect, handshake, one question) may take.
PROBE_TIMEOUT = 4.0
#: PostgreSQL's SSLRequest: length 8, then the code 1234.5679 (the protocol's "SSL negotiation" number).
PG_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
#: ClickHouse's HTTPS interface (what PostHog's HTTP client uses with CLICKHOUSE_SECURE): the version is asked
#: there; datastores.clickhouse_endpoint names it, this is the fallback.
CLICKHOUSE_HTTPS_PORT = 8443
#: ClickHouse's native protocol over TLS: what Django's ClickHouse driver (web, worker) connects to
#: with CLICKHOUSE_SECURE=true (clickhouse-driver's default secure port).
CLICKHOUSE_NATIVE_TLS_PORT = 9440
#: datastore -> its name in compatibility.yml's `accepts`.
MATRIX_NAMES = {"postgres": "postgresql", "redis": "redis", "clickhouse": "clickhouse"}


class _ProbeFailed(Exception):
    """One step failed: its message is the doctor line's detail (never a secret). ``certificate``: the
    failure is the certificate's verification (the connection itself works)."""

    def __init__(self, message: str, certificate: bool = False):
        super().__init__(message)
        self.certificate = certificate


def external_checks(root: Path, values: dict[str, str] | None = None, timeout: float = PROBE_TIMEOUT) -> list[Check]:
    """One line per external datastore (none when .env makes none external)."""
    from posthog_compose.operations import stack

    if values is None:
        from posthog_compose.configuration.envfile import EnvFile, env_path

        path = env_path(root)
        if not path.exists():
            return []
        try:
            values = EnvFile.load(path).resolved()
        except Exception:  # config-check says what is wrong with .env
            return []
    return [probe(root, values, endpoint, timeout) for endpoint in stack.endpoints(values)]


def probe(root: Path, values: dict[str, str], endpoint, timeout: float = PROBE_TIMEOUT) -> Check:
    """DNS, TCP, TLS (verified), and the version where it can be read, for one external endpoint."""
    from posthog_compose.operations import stack

    label = stack.DATASTORE_LABELS.get(endpoint.datastore, endpoint.datastore)
    name = f"{endpoint.datastore} (ext)"
    where = stack.endpoint_text(endpoint)
    if not endpoint.host or not endpoint.port:
        return Check(name, "error", f"{label} is external but {endpoint.variable} names no "
                     f"{'host' if not endpoint.host else 'port'}",
                     f"set {endpoint.variable} in .env (`invoke config-check` shows the expected form)")
    done: list[str] = []
    try:
        address = _resolve(endpoint.host, endpoint.port, timeout)
        if address != endpoint.host:
            done.append(f"resolves to {address}")
        sock = _connect(endpoint.host, endpoint.port, timeout)
        done.append("TCP connects")
        try:
            if not endpoint.tls:
                status = "ok" if _plaintext_allowed(values) else "error"
                plain = ("without TLS (ALLOW_PLAINTEXT_DATASTORES=true)" if status == "ok" else
                         "without TLS, which only ALLOW_PLAINTEXT_DATASTORES=true permits")
                return Check(name, "warning" if status == "ok" else "error",
                             f"{label} at {where}: {', '.join(done)}; {plain}",
                             "turn TLS on at the provider and in .env (handbook: External datastores)")
            context, ca_text = _context(root, values, endpoint)
            if endpoint.datastore == "postgres":
                _postgres_ssl_request(sock, timeout)
            tls = _handshake(context, sock, endpoint.host, ca_text, timeout)
            sock = tls
            done.append(f"TLS {tls.version()} {'verified against ' + ca_text if _verifies(endpoint) else 'NOT verified'}")
            version = None
            if endpoint.datastore == "redis":
                version = _redis_version(tls, values, timeout)
            elif endpoint.datastore == "postgres":
                version = _postgres_version(tls, values, timeout)
        finally:
            sock.close()
        if endpoint.datastore == "clickhouse":
            version = _clickhouse_version(endpoint.host, endpoint.port or CLICKHOUSE_HTTPS_PORT, context, values,
                                          timeout)
            if CLICKHOUSE_NATIVE_TLS_PORT != endpoint.port:
                native = _connect(endpoint.host, CLICKHOUSE_NATIVE_TLS_PORT, timeout)
                try:
                    _handshake(context, native, endpoint.host, ca_text, timeout).close()
                finally:
                    native.close()
                done.append(f"native port {CLICKHOUSE_NATIVE_TLS_PORT} (web, worker) serves TLS too")
    except _ProbeFailed as exc:
        reached = f"{', '.join(done)}; " if done else ""
        if exc.certificate and endpoint.datastore == "clickhouse":
            # PostHog 1.43 connects without verifying ClickHouse's certificate: a warning, not a stop.
            return Check(name, "warning", f"{label} at {where}: {reached}{exc} (PostHog 1.43 does not verify "
                         "ClickHouse's certificate and would connect anyway)",
                         "check CLICKHOUSE_CA and the provider's certificate; keep the path to ClickHouse private")
        return Check(name, "error", f"{label} at {where}: {reached}{exc}",
                     "the certificate: put the provider's CA in datastore-ca/ (handbook: External datastores)"
                     if exc.certificate else
                     "check the endpoint and the firewall from this host; the handbook's External datastores page")
    detail = f"{label} at {where}: {', '.join(done)}"
    verified = _verifies(endpoint)
    status, fix = "ok" if verified else "warning", "" if verified else \
        "verify the certificate (the TLS settings in the handbook's External datastores page)"
    if version:
        verdict, inside = _against_matrix(root, values, endpoint.datastore, version)
        detail += f"; {label} {version} {verdict}"
        if inside is False:
            status, fix = "error", "use a version inside the range, or an older PostHog (handbook: Compatibility)"
    return Check(name, status, detail, fix)


def _plaintext_allowed(values: dict[str, str]) -> bool:
    return values.get("ALLOW_PLAINTEXT_DATASTORES", "").strip().lower() == "true"


def _resolve(host: str, port: int, timeout: float) -> str:
    """The first address of ``host`` (in a thread: getaddrinfo knows no timeout)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise _ProbeFailed(f"{host} does not resolve within {timeout:.0f} s (DNS)")
    except (socket.gaierror, UnicodeError) as exc:
        raise _ProbeFailed(f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})")
    finally:
        pool.shutdown(wait=False)
    return infos[0][4][0]


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise _ProbeFailed(f"TCP to port {port} timed out after {timeout:.0f} s (a firewall or a wrong port)")
    except OSError as exc:
        raise _ProbeFailed(f"TCP to port {port} fails ({exc.strerror or exc})")


def _context(root: Path, values: dict[str, str], endpoint):
    """The TLS context PostHog's settings ask for, and how its trust anchor is named in the line."""
    import ssl

    context = ssl.create_default_context()
    ca_text = "the system's CAs"
    path = endpoint.ca_host_path(root) if endpoint.ca_path else None
    if path is not None:
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        if not path.is_file():
            raise _ProbeFailed(f"the CA bundle {shown} (for {endpoint.ca_path}) is missing; put the provider's CA "
                               "certificate there")
        context = ssl.create_default_context(cafile=str(path)) if _readable_pem(path) else None
        if context is None:
            raise _ProbeFailed(f"the CA bundle {shown} holds no PEM certificate")
        ca_text = str(shown)
    elif endpoint.ca_path:
        # A file of the image (e.g. its public CA bundle): this host checks with its own public CAs.
        ca_text = f"this host's public CAs ({endpoint.ca_path} is not under datastore-ca/)"
    elif endpoint.datastore == "kafka" and values.get("KAFKA_BASE64_KEYS") == "true" and \
            values.get("KAFKA_TRUSTED_CERT_B64"):
        import base64
        import binascii

        try:
            context = ssl.create_default_context(cadata=base64.b64decode(values["KAFKA_TRUSTED_CERT_B64"]).decode())
        except (binascii.Error, ValueError, ssl.SSLError):
            raise _ProbeFailed("KAFKA_TRUSTED_CERT_B64 is not a base64 PEM certificate")
        context.check_hostname = False  # as PostHog does with KAFKA_TRUSTED_CERT_B64
        ca_text = "KAFKA_TRUSTED_CERT_B64 (host name not checked, as PostHog does)"
    if not _verifies(endpoint):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif endpoint.datastore == "postgres" and "sslmode=verify-ca" in values.get("DATABASE_URL", ""):
        context.check_hostname = False  # libpq's verify-ca checks the chain, not the host name
        ca_text += " (host name not checked: sslmode=verify-ca)"
    return context, ca_text


def _verifies(endpoint) -> bool:
    """Whether this host verifies the certificate: as PostHog does, and always for ClickHouse over TLS
    (PostHog 1.43 does not verify it; the check from here says whether it could be verified)."""
    return bool(endpoint.verify or (endpoint.datastore == "clickhouse" and endpoint.tls))


def _readable_pem(path: Path) -> bool:
    try:
        return b"-----BEGIN CERTIFICATE-----" in path.read_bytes()
    except OSError:
        return False


def _postgres_ssl_request(sock: socket.socket, timeout: float) -> None:
    """PostgreSQL speaks plain first: ask for TLS, and expect 'S'."""
    sock.settimeout(timeout)
    try:
        sock.sendall(PG_SSL_REQUEST)
        answer = sock.recv(1)
    except socket.timeout:
        raise _ProbeFailed(f"no answer to PostgreSQL's SSLRequest within {timeout:.0f} s: is this PostgreSQL?")
    except OSError as exc:
        raise _ProbeFailed(f"the SSLRequest failed ({exc.strerror or exc})")
    if answer == b"N":
        raise _ProbeFailed("the server answers the SSLRequest with N: it does not offer TLS")
    if answer != b"S":
        raise _ProbeFailed("the server does not answer the SSLRequest as PostgreSQL does: is this PostgreSQL?")


def _handshake(context, sock: socket.socket, host: str, ca_text: str, timeout: float):
    import ssl

    sock.settimeout(timeout)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise _ProbeFailed(f"the certificate does not verify against {ca_text} for the host {host} "
                           f"({exc.verify_message or exc.reason})", certificate=True)
    except socket.timeout:
        raise _ProbeFailed(f"the TLS handshake timed out after {timeout:.0f} s")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise _ProbeFailed(f"the TLS handshake fails ({reason}): does the port serve TLS?")


def _pg_message(kind: bytes, payload: bytes) -> bytes:
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


def _pg_read(reader) -> tuple[bytes, bytes]:
    """One backend message: (type, payload)."""
    head = reader.read(5)
    if len(head) < 5:
        raise _ProbeFailed("PostgreSQL closed the connection during the login")
    size = int.from_bytes(head[1:5], "big") - 4
    if size < 0 or size > 1024 * 1024:
        raise _ProbeFailed("the server's answer is not PostgreSQL's")
    payload = reader.read(size)
    if len(payload) < size:
        raise _ProbeFailed("PostgreSQL closed the connection during the login")
    return head[:1], payload


def _pg_error(payload: bytes) -> str:
    """SQLSTATE and PostgreSQL's message (it names the user or database, never a password)."""
    fields = {part[:1]: part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
    code = fields.get(b"C", "?")
    if code in ("28P01", "28000"):
        return f"PostgreSQL refuses the login ({code}): check the user and password in DATABASE_URL"
    return f"PostgreSQL answers {code}: {fields.get(b'M', '')[:120]}"


def _postgres_version(tls, values: dict[str, str], timeout: float) -> str | None:
    """Log in as DATABASE_URL says (SCRAM-SHA-256, md5 or a password over TLS) and read the
    server_version PostgreSQL reports at startup; nothing is queried."""
    from urllib.parse import unquote

    from posthog_compose.configuration.formats import urlsplit

    url = urlsplit(values.get("DATABASE_URL", ""))
    user, password = unquote(url.username or ""), unquote(url.password or "")
    database = unquote((url.path or "/").lstrip("/")) or user
    startup = (196608).to_bytes(4, "big") + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    reader = tls.makefile("rb")
    try:
        tls.sendall((len(startup) + 4).to_bytes(4, "big") + startup)
        scram = None
        version = None
        while True:
            kind, payload = _pg_read(reader)
            if kind == b"E":
                raise _ProbeFailed(_pg_error(payload))
            if kind == b"R":
                code = int.from_bytes(payload[:4], "big")
                if code == 0:
                    continue
                if code == 3:  # a password in clear: inside TLS only, which this is
                    tls.sendall(_pg_message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    import hashlib

                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    tls.sendall(_pg_message(b"p", b"md5" + hashlib.md5(inner + payload[4:8]).hexdigest().encode()
                                            + b"\0"))
                elif code == 10:
                    if b"SCRAM-SHA-256\0" not in payload[4:]:
                        raise _ProbeFailed("PostgreSQL asks for a SASL mechanism this check does not speak")
                    scram = _Scram(password)
                    first = scram.client_first()
                    tls.sendall(_pg_message(b"p", b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first))
                elif code == 11 and scram is not None:
                    tls.sendall(_pg_message(b"p", scram.client_final(payload[4:])))
                elif code == 12 and scram is not None:
                    scram.verify_server(payload[4:])
                else:
                    raise _ProbeFailed(f"PostgreSQL asks for an authentication this check does not speak ({code})")
            elif kind == b"S":
                name, _, rest = payload.partition(b"\0")
                if name == b"server_version":
                    version = rest.split(b"\0", 1)[0].decode(errors="replace").split()[0][:40]
            elif kind == b"Z":
                tls.sendall(_pg_message(b"X", b""))
                return version
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise _ProbeFailed(f"the PostgreSQL login failed ({getattr(exc, 'strerror', None) or type(exc).__name__})")
    finally:
        reader.close()


class _Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: the user name travels in
    the startup message, so the SCRAM user name is empty; no channel binding."""

    def __init__(self, password: str):
        import base64
        import secrets as random

        self.password = password
        self.nonce = base64.b64encode(random.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def client_final(self, server_first: bytes) -> bytes:
        import base64
        import hashlib
        import hmac

        text = server_first.decode()
        fields = dict(item.split("=", 1) for item in text.split(","))
        if not fields.get("r", "").startswith(self.nonce):
            raise _ProbeFailed("PostgreSQL's SCRAM answer does not continue this login")
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        import base64
        import hmac

        text = server_final.decode(errors="replace")
        if not text.startswith("v=") or not hmac.compare_digest(base64.b64decode(text[2:]), self.server_signature):
            raise _ProbeFailed("PostgreSQL's SCRAM signature does not match: this is not the server DATABASE_URL "
                               "trusts")


def _redis_command(sock, *words: str) -> bytes:
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        data = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(payload)
    return payload


def _redis_reply(reader) -> bytes:
    line = reader.readline(65536)
    if not line:
        raise _ProbeFailed("Redis closed the connection")
    if line.startswith(b"-"):
        code = line[1:].split(b" ", 1)[0].decode(errors="replace")[:40]
        raise _ProbeFailed(f"Redis answers {code}" + (": the password in REDIS_URL is refused"
                                                        if code in ("WRONGPASS", "NOAUTH") else ""))
    if line.startswith(b"$"):
        size = int(line[1:].strip())
        if size > 1024 * 1024:  # INFO server is a few kB: anything larger is not Redis
            raise _ProbeFailed("the server's answer is not Redis' (an implausibly large reply)")
        return reader.read(size + 2)[:size] if size >= 0 else b""
    return line.rstrip(b"\r\n")


def _redis_version(tls, values: dict[str, str], timeout: float) -> str | None:
    """AUTH with REDIS_URL's credentials, then INFO server's redis_version."""
    from urllib.parse import unquote, urlsplit

    url = urlsplit(values.get("REDIS_URL", ""))
    password = unquote(url.password or "")
    user = unquote(url.username or "")
    reader = tls.makefile("rb")
    try:
        if password:
            _redis_command(tls, "AUTH", *([user] if user else []), password)
            _redis_reply(reader)
        _redis_command(tls, "INFO", "server")
        info = _redis_reply(reader).decode(errors="replace")
    except (OSError, ValueError) as exc:
        raise _ProbeFailed(f"Redis does not answer INFO ({getattr(exc, 'strerror', None) or type(exc).__name__})")
    finally:
        reader.close()
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return None


def _clickhouse_version(host: str, port: int, context, values: dict[str, str], timeout: float) -> str:
    """`SELECT version()` over ClickHouse's HTTPS interface, with the user and password as headers."""
    import http.client

    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    headers = {"X-ClickHouse-User": values.get("CLICKHOUSE_USER", "default") or "default",
               "X-ClickHouse-Key": values.get("CLICKHOUSE_PASSWORD", "")}
    try:
        connection.request("POST", "/", body=b"SELECT version()", headers=headers)
        response = connection.getresponse()
        body = response.read(4096).decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        import ssl

        if isinstance(exc, ssl.SSLCertVerificationError):
            raise _ProbeFailed(f"HTTPS port {port}: the certificate does not verify "
                               f"({exc.verify_message or exc.reason})", certificate=True)
        raise _ProbeFailed(f"HTTPS port {port} (where the version is asked) fails "
                           f"({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or type(exc).__name__})")
    finally:
        connection.close()
    if response.status in (401, 403) or "Authentication failed" in body:
        raise _ProbeFailed(f"HTTPS port {port} refuses CLICKHOUSE_USER and CLICKHOUSE_PASSWORD")
    if response.status != 200:
        raise _ProbeFailed(f"HTTPS port {port} answers {response.status} to SELECT version()")
    return body.strip().splitlines()[0][:40] if body.strip() else "?"


def _against_matrix(root: Path, values: dict[str, str], datastore: str, version: str) -> tuple[str, bool | None]:
    """("inside >=5.0.0,<=6.3.0 (release-1.43.0)", True), or why it cannot be judged (None)."""
    from posthog_compose.configuration import compatibility
    from posthog_compose.errors import OperatorError

    from posthog_compose.configuration.images import with_known_tag

    service = MATRIX_NAMES.get(datastore)
    try:
        matrix = compatibility.load(root)
        # A digest the kit pinned stands for the tag it was pinned from.
        posthog = compatibility.posthog_version(with_known_tag(root, values.get("POSTHOG_IMAGE", "")), matrix.aliases)
        parsed = compatibility.parse_version(version)
    except (OperatorError, ValueError):
        return "(not compared: the PostHog version or this version cannot be read)", None
    if posthog is None:
        return "(not compared: POSTHOG_IMAGE names no PostHog release)", None
    row = matrix.row_for(posthog)
    accepts = row.accepts.get(service) if row is not None and service else None
    if accepts is None:
        return "(no range in compatibility.yml for this PostHog version)", None
    if accepts.range.contains(parsed):
        return f"is inside {accepts.range}, what {row.label} accepts", True
    return f"is OUTSIDE {accepts.range}, what {row.label} accepts: PostHog's web and worker exit at boot", False

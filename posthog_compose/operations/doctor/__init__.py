"""Preflight, as Sentry's self-hosted installer does it: the Docker engine, Compose v2+,
host RAM, CPUs and free disk against PostHog's needs (and on the filesystem of each data volume), each
local datastore that runs taking a test write, and WEB_PORT free (the edge proxy's ports instead while
it is on); for each external datastore, from this host: DNS, TCP, the TLS handshake verified against
the CA bundle under datastore-ca/ and the host name, and where a version can be read, the version
against the compatibility matrix. Changes nothing (the test writes are rolled back, or one row in a
kit-owned ClickHouse table that expires); no secret is ever printed.

One part per module: host (the engine, Compose, RAM, CPUs, disks, the published ports), network
(reaching an external datastore: DNS, TCP, the verified TLS handshake), postgres_probe, redis_probe and
clickhouse_probe (each server's version, read over that TLS). This module holds ``run``,
``external_checks`` and ``probe``, which puts one datastore's steps together and compares its version
with the compatibility matrix.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from posthog_compose.operations.doctor.host import (
    MIN_CPUS,
    GOOD_CPUS,
    MIN_RAM_GB,
    GOOD_RAM_GB,
    MIN_DISK_GB,
    GOOD_DISK_GB,
    Check,
    _engine,
    _compose,
    _ram,
    _cpus,
    _disk,
    _web_port,
    _published_ports,
    _port_check,
    _one_line,
    _data_disk,
    _datastore_writes,
)
from posthog_compose.operations.doctor.network import (
    PROBE_TIMEOUT,
    _ProbeFailed,
    _plaintext_allowed,
    _resolve,
    _connect,
    _context,
    _verifies,
    _readable_pem,
    _handshake,
)
from posthog_compose.operations.doctor.postgres_probe import (
    PG_SSL_REQUEST,
    MAX_LOGIN_MESSAGE,
    MAX_LOGIN_MESSAGES,
    SCRAM_MAX_ITERATIONS,
    _postgres_ssl_request,
    _pg_message,
    _pg_read,
    _pg_error,
    _postgres_version,
    _login,
    _Scram,
)
from posthog_compose.operations.doctor.redis_probe import (
    MAX_REDIS_BULK,
    MAX_REDIS_LINE,
    _redis_command,
    _redis_reply,
    _redis_version,
    _ask_version,
)
from posthog_compose.operations.doctor.clickhouse_probe import CLICKHOUSE_HTTPS_PORT, _clickhouse_version
from posthog_compose.operations.wire import Deadline, WireError


def run(root: Path, runner, as_json: bool = False) -> int:
    env = runner.env
    ports, running = _published_ports(root, runner)
    checks = [_engine(env), _compose(root, env), _ram(), _cpus(), _disk(root), *ports]
    if checks[0].status == "ok":
        writes, found = _datastore_writes(root, runner)
        checks.append(_data_disk(root, runner, found))
        if writes is not None:
            checks.append(writes)
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


#: ClickHouse's native protocol over TLS: what Django's ClickHouse driver (web, worker) connects to
#: with CLICKHOUSE_SECURE=true (clickhouse-driver's default secure port).
CLICKHOUSE_NATIVE_TLS_PORT = 9440


#: datastore -> its name in compatibility.yml's `accepts`.
MATRIX_NAMES = {"postgres": "postgresql", "redis": "redis", "clickhouse": "clickhouse"}


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
    """DNS, TCP, TLS (verified), and the version where it can be read, for one external endpoint, all of it
    within ``timeout`` seconds (one deadline, however the server spreads its answers)."""
    from posthog_compose.configuration import datastores
    from posthog_compose.operations import stack

    label = stack.DATASTORE_LABELS.get(endpoint.datastore, endpoint.datastore)
    name = f"{endpoint.datastore} (ext)"
    where = stack.endpoint_text(endpoint)
    if not endpoint.host or not endpoint.port:
        # An address the shared validator refuses has no host here: say why, as config-check does.
        refused = datastores.address_problem(values, endpoint.datastore)
        return Check(name, "error", f"{label} is external but {endpoint.variable} "
                     f"{refused or ('names no host' if not endpoint.host else 'names no valid port')}",
                     f"set {endpoint.variable} in .env (`invoke config-check` shows the expected form)")
    deadline = Deadline(timeout)
    done: list[str] = []
    try:
        infos = _resolve(endpoint.host, endpoint.port, deadline)
        address = infos[0][4][0]
        if address != endpoint.host:
            done.append(f"resolves to {address}")
        sock = _connect(endpoint.host, endpoint.port, deadline, infos)
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
                _postgres_ssl_request(sock, deadline)
            tls = _handshake(context, sock, endpoint.host, ca_text, deadline)
            sock = tls
            done.append(f"TLS {tls.version()} {'verified against ' + ca_text if _verifies(endpoint) else 'NOT verified'}")
            version = None
            if endpoint.datastore == "redis":
                version = _redis_version(tls, values, deadline)
            elif endpoint.datastore == "postgres":
                version = _postgres_version(tls, values, deadline)
        finally:
            sock.close()
        if endpoint.datastore == "clickhouse":
            version = _clickhouse_version(endpoint.host, endpoint.port or CLICKHOUSE_HTTPS_PORT, context, values,
                                          deadline)
            if CLICKHOUSE_NATIVE_TLS_PORT != endpoint.port:
                native = _connect(endpoint.host, CLICKHOUSE_NATIVE_TLS_PORT, deadline)
                try:
                    _handshake(context, native, endpoint.host, ca_text, deadline).close()
                finally:
                    native.close()
                done.append(f"native port {CLICKHOUSE_NATIVE_TLS_PORT} (web, worker) serves TLS too")
    except (_ProbeFailed, WireError) as exc:
        reached = f"{', '.join(done)}; " if done else ""
        if getattr(exc, "certificate", False) and endpoint.datastore == "clickhouse":
            # PostHog 1.43 connects without verifying ClickHouse's certificate: a warning, not a stop.
            return Check(name, "warning", f"{label} at {where}: {reached}{exc} (PostHog 1.43 does not verify "
                         "ClickHouse's certificate and would connect anyway)",
                         "check CLICKHOUSE_CA and the provider's certificate; keep the path to ClickHouse private")
        return Check(name, "error", f"{label} at {where}: {reached}{exc}",
                     "the certificate: put the provider's CA in datastore-ca/ (handbook: External datastores)"
                     if getattr(exc, "certificate", False) else
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

"""The checklist items of external datastores, checked and never applied: TLS on with certificate
verification, the CA bundles under datastore-ca/ present and not expiring, no plaintext allowance.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import certs
from posthog_compose.operations.harden.checklist import CONTAINER_CA, EXTERNAL_DOC, OVERRIDE_FILE, State
from posthog_compose.operations.harden.override import render_override


def _external_redis_password(state: State):
    """An external Redis: the provider's password travels in REDIS_URL (REDIS_PASSWORD is the local one's)."""
    from posthog_compose.configuration.validators import read_redis_url

    url = read_redis_url(state.values.get("REDIS_URL", ""))
    if url is None or not url.password:
        return "fail", "Redis is external and REDIS_URL carries no password", \
            f"turn on authentication at the provider and put its password in REDIS_URL ({EXTERNAL_DOC})"
    return "pass", "Redis is external and REDIS_URL carries its password", ""


def _endpoint(state: State, datastore: str):
    from posthog_compose.operations import stack

    return stack.first_endpoints(state.values).get(datastore)


def _external_tls(state: State, datastore: str):
    """TLS on and verified towards an external datastore, through the settings PostHog reads."""
    from posthog_compose.operations import stack

    label = stack.DATASTORE_LABELS[datastore]
    endpoint = _endpoint(state, datastore)
    where = stack.endpoint_text(endpoint)
    problems = []
    if endpoint is None:
        return "fail", f"{label} is external but .env does not say where (config-check names the variable)", ""
    if not endpoint.tls:
        problems.append("TLS is off")
    elif not endpoint.verify and datastore != "clickhouse":
        problems.append("the certificate is not verified")
    if datastore == "clickhouse":
        off = [n for n in ("CLICKHOUSE_SECURE", "CLICKHOUSE_VERIFY") if state.values.get(n, "").lower() != "true"]
        if off:
            problems.append(f"{', '.join(off)} not true")
        if not state.values.get("CLICKHOUSE_CA"):
            problems.append("CLICKHOUSE_CA is empty")
    if datastore == "postgres":
        from posthog_compose.configuration.validators import read_postgres_url

        url = read_postgres_url(state.values.get("DATABASE_URL", ""))
        if url is None or url.params.get("sslmode") != "verify-full":
            problems.append("DATABASE_URL has no sslmode=verify-full")
    if datastore == "redis" and not state.values.get("REDIS_URL", "").startswith("rediss://"):
        problems.append("REDIS_URL is not rediss://")
    if datastore == "kafka" and state.values.get("KAFKA_SECURITY_PROTOCOL", "").upper() not in ("SSL", "SASL_SSL"):
        problems.append("KAFKA_SECURITY_PROTOCOL is not SSL or SASL_SSL")
    kit_ca = _override_kit_ca(state, datastore)
    if kit_ca:
        problems.append(kit_ca)
    if problems:
        return "fail", f"{label} is external ({where}): {'; '.join(problems)}", \
            ("invoke harden (rewrites the override)" if kit_ca and len(problems) == 1 else EXTERNAL_DOC)
    if datastore == "clickhouse":
        # clickhouse-driver 0.2.1 (release 1.43) and the plugin server do not verify ClickHouse's certificate.
        return "warn", (f"ClickHouse is external ({where}): TLS on with CLICKHOUSE_CA, but PostHog 1.43 does not "
                        "verify ClickHouse's certificate whatever CLICKHOUSE_VERIFY says"), \
            "keep the path to ClickHouse private; `invoke doctor` verifies the certificate from this host"
    return "pass", f"{label} is external ({where}): TLS on, certificate and host name verified", ""


def _override_kit_ca(state: State, datastore: str) -> str:
    """Whether the override in place still points PostHog at the deployment's own CA for this
    external datastore (the setting from .env would be overridden)."""
    if state.override is None or CONTAINER_CA not in state.override:
        return ""
    if state.override == render_override(state.template, state.values):
        return ""
    if datastore == "clickhouse" and "CLICKHOUSE_CA" in state.override:
        return f"{OVERRIDE_FILE} sets CLICKHOUSE_CA to the deployment's own CA"
    if datastore == "redis" and "NODE_EXTRA_CA_CERTS" in state.override:
        return f"{OVERRIDE_FILE} gives the plugin server the deployment's own CA (NODE_EXTRA_CA_CERTS)"
    if datastore in ("postgres", "redis") and f"\n  {'db' if datastore == 'postgres' else 'redis'}:" in state.override:
        return f"{OVERRIDE_FILE} still configures the local {'db' if datastore == 'postgres' else 'redis'} for TLS"
    return ""


def _ca_bundles(state: State) -> list[tuple[str, Path | None, str]]:
    """(datastore, host path of its CA bundle or None, container path) for each external datastore with TLS."""
    from posthog_compose.operations import stack

    from posthog_compose.configuration import datastores

    found = []
    for endpoint in stack.endpoints(state.values):
        if endpoint.tls:
            found.append((endpoint.datastore, endpoint.ca_host_path(state.root) if endpoint.ca_path else None,
                          endpoint.ca_path or ""))
    extra = state.values.get("EXTERNAL_CA_FILE", "")
    if extra and found:  # the plugin server's bundle (NODE_EXTRA_CA_CERTS)
        found.append(("plugin server", datastores.host_path(state.root, extra), extra))
    return found


def _datastore_ca(state: State):
    from cryptography import x509

    from posthog_compose.configuration import datastores

    if not datastores.external(state.values):
        return "pass", "no external datastore", ""
    bundles = _ca_bundles(state)
    if not bundles:
        return "pass", "no external datastore uses TLS (see plaintext-datastores)", ""
    problems, soonest = [], None
    for datastore, path, container in bundles:
        if path is None:
            continue  # the image's own CAs (a provider with a public certificate): nothing of ours to expire
        shown = path.relative_to(state.root) if path.is_relative_to(state.root) else path
        try:
            certificates = x509.load_pem_x509_certificates(path.read_bytes())
        except FileNotFoundError:
            problems.append(f"{datastore}: {shown} is missing")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{datastore}: {shown} cannot be read as PEM certificates ({type(exc).__name__})")
            continue
        authorities = [c for c in certificates if _is_ca(c)]
        if not authorities:
            problems.append(f"{datastore}: {shown} holds no CA certificate (a server certificate?)")
            continue
        for certificate in authorities:
            days = (certificate.not_valid_after_utc - certs._now()).days
            if days < certs.RENEW_DAYS:
                problems.append(f"{datastore}: {shown} expires in {days} day(s) "
                                f"({certificate.not_valid_after_utc:%Y-%m-%d})")
            elif soonest is None or certificate.not_valid_after_utc < soonest:
                soonest = certificate.not_valid_after_utc
    if problems:
        return "fail", "; ".join(problems), f"put the provider's current CA bundle under datastore-ca/ ({EXTERNAL_DOC})"
    where = f"; the first expires {soonest:%Y-%m-%d}" if soonest else ""
    return "pass", f"the CA bundles of {', '.join(sorted({d for d, _, _ in bundles}))} are present{where}", ""


def _is_ca(certificate) -> bool:
    from cryptography import x509

    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return certificate.issuer == certificate.subject  # an old self-signed root without the extension


def _plaintext_datastores(state: State):
    from posthog_compose.configuration import datastores

    allowed = state.values.get("ALLOW_PLAINTEXT_DATASTORES", "").strip().lower() == "true"
    if not allowed:
        return "pass", "ALLOW_PLAINTEXT_DATASTORES is not true", ""
    if datastores.external(state.values):
        return "fail", "ALLOW_PLAINTEXT_DATASTORES=true lets PostHog reach an external datastore without TLS or "\
            "certificate checks", "set ALLOW_PLAINTEXT_DATASTORES=false and turn TLS on (" + EXTERNAL_DOC + ")"
    return "warn", "ALLOW_PLAINTEXT_DATASTORES=true (no datastore is external yet)", \
        "set ALLOW_PLAINTEXT_DATASTORES=false"

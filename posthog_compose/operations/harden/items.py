"""Each checklist item's check (pass / warn / fail / manual, the reason, the fix) and ``evaluate``,
which runs them in order.
"""

from __future__ import annotations

from posthog_compose.configuration import certs
from posthog_compose.configuration import images
from posthog_compose.errors import OperatorError
from posthog_compose.operations.harden.checklist import (
    DOCS,
    EXTERNAL_DOC,
    IMAGE_VARIABLES,
    ITEMS,
    OVERRIDE_FILE,
    Result,
    State,
    TLS_DATASTORES,
    TLS_TEMPLATE,
)
from posthog_compose.operations.harden.external import (
    _datastore_ca,
    _external_redis_password,
    _external_tls,
    _plaintext_datastores,
)
from posthog_compose.operations.harden.override import render_override


def evaluate(state: State) -> list[Result]:
    """Every checklist item, in order, with pass / warn / fail / manual and the reason. The TLS item
    of an external datastore is checked against the provider's settings and is the operator's to fix."""
    from posthog_compose.configuration import datastores

    outside = set(datastores.external(state.values))
    results = []
    for item, (title, kind) in ITEMS.items():
        if item == "redis-password" and "redis" in outside:
            status, reason, fix = _external_redis_password(state)
            results.append(Result(item, title, "check", status, reason, fix))
            continue
        if TLS_DATASTORES.get(item) in outside:
            status, reason, fix = _external_tls(state, TLS_DATASTORES[item])
            results.append(Result(item, title, "check", status, reason, fix or EXTERNAL_DOC))
            continue
        status, reason, fix = CHECKS[item](state)
        results.append(Result(item, title, kind, status, reason, fix or DOCS.get(item, "")))
    return results


def _env_file(state: State):
    problems = [f.message for f in state.findings if f.rule in ("env-permissions", "env-tracked")]
    if problems:
        return "fail", "; ".join(problems), "invoke harden --only env-file"
    return "pass", ".env is 0600 and not tracked", ""


def _secrets(state: State):
    insecure = sorted({f.subject for f in state.findings if f.rule.startswith("insecure")})
    if insecure:
        return "fail", f"insecure: {', '.join(insecure)}", "invoke harden --only secrets (rotates them safely)"
    return "pass", "every secret is random and long enough", ""


def _redis_password(state: State):
    from posthog_compose.configuration.validators import read_redis_url

    password = state.values.get("REDIS_PASSWORD", "")
    url = read_redis_url(state.values.get("REDIS_URL", ""))
    url_password = url.password if url else ""
    if not password:
        return "fail", "REDIS_PASSWORD is empty: anyone on the network can use Redis", "invoke harden --only redis-password"
    if url_password != password:
        return "fail", "REDIS_URL does not carry REDIS_PASSWORD", "invoke harden --only redis-password"
    return "pass", "Redis runs with --requirepass and REDIS_URL carries it", ""


def _debug(state: State):
    if state.values.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return "fail", "DEBUG is on: error pages show settings and stack traces", "invoke harden --only debug"
    return "pass", "DEBUG is not set (PostHog's default is off)", ""


def _images(state: State):
    moving = [name for name in IMAGE_VARIABLES if state.values.get(name) and _moving(state.values[name])]
    if moving:
        return "fail", f"on a moving tag: {', '.join(moving)}", "invoke harden --only images (pins the running image's digest)"
    digests = sum(1 for name in IMAGE_VARIABLES if "@sha256:" in state.values.get(name, ""))
    counted = f"{digests} of {len(IMAGE_VARIABLES)} by digest"
    if "@sha256:" not in state.values.get("POSTHOG_IMAGE", ""):
        # A warning, not a failure: an exact tag is safe from surprise updates unless the registry re-points
        # it, and an image built or loaded locally has no registry digest to pin (air-gapped hosts).
        return ("warn", f"every image has an exact tag, but POSTHOG_IMAGE is not pinned by digest ({counted}): a "
                "re-pushed tag would change what runs", "invoke harden --only images (pins the running images' digests)")
    return "pass", f"every image has an exact tag or digest ({counted})", ""


def _moving(reference: str) -> bool:
    try:
        return images.is_moving(reference)
    except OperatorError:
        return False  # a malformed reference is config-check's finding


def _certificates(state: State):
    statuses = certs.all_status(state.root)
    problems = [s.problem for s in statuses if s.problem]
    if problems:
        return "fail", "; ".join(problems), "invoke harden --only certificates"
    soonest = min(statuses, key=lambda s: s.expires)
    return "pass", f"CA and {len(certs.SERVICES)} server certificates valid; the first expires {soonest.expires:%Y-%m-%d}", ""


def _override_in_place(state: State) -> bool:
    return state.override is not None and state.override == render_override(state.template, state.values)


def _tls_wiring(state: State) -> list[str]:
    """What is missing for the TLS files to be mounted (empty when the override is in place)."""
    if state.override is None:
        return [f"{OVERRIDE_FILE} is missing (it mounts the certificates)"]
    if not _override_in_place(state):
        return [f"{OVERRIDE_FILE} differs from {TLS_TEMPLATE}"
                + (" as harden writes it for the external datastores" if state.template != render_override(
                    state.template, state.values) else "")]
    return []


def _clickhouse_tls(state: State):
    off = [name for name in ("CLICKHOUSE_SECURE", "CLICKHOUSE_VERIFY") if state.values.get(name, "").lower() != "true"]
    problems = ([f"{', '.join(off)} not true"] if off else []) + _tls_wiring(state)
    if problems:
        return "fail", "; ".join(problems), "invoke harden --only certificates,clickhouse-tls"
    return "pass", "PostHog uses ClickHouse's TLS ports and verifies them against the deployment's CA", ""


def _postgres_tls(state: State):
    from posthog_compose.configuration.validators import read_postgres_url

    url = read_postgres_url(state.values.get("DATABASE_URL", ""))
    problems = [] if url and url.params.get("sslmode") == "verify-full" else ["DATABASE_URL has no sslmode=verify-full"]
    problems += _tls_wiring(state)
    if problems:
        return "fail", "; ".join(problems), "invoke harden --only certificates,postgres-tls"
    return "pass", "PostHog connects with sslmode=verify-full; plain TCP is refused by pg_hba", ""


def _redis_tls(state: State):
    problems = [] if state.values.get("REDIS_URL", "").startswith("rediss://") else ["REDIS_URL is not rediss://"]
    problems += _tls_wiring(state)
    if problems:
        return "fail", "; ".join(problems), "invoke harden --only certificates,redis-tls"
    return "pass", "Redis serves TLS only and PostHog verifies it", ""


#: The container ports the edge proxy publishes (HTTP, redirecting, and HTTPS): docker-compose.proxy.yml.
PROXY_TARGETS = (80, 443)


def _ports(state: State):
    """Only web publishes a port; while the edge proxy is on, only the proxy, on its ports 80 and 443 (web
    then publishes nothing: every request goes through the proxy)."""
    from posthog_compose.configuration import edge

    on = edge.enabled(state.values)
    allowed = edge.SERVICE if on else "web"
    others = [name for name, ports in state.published.items() if ports and name != allowed]
    if on:
        stray = [port for port in state.published.get(edge.SERVICE) or [] if _target(port) not in PROXY_TARGETS]
        if stray:
            others.append(f"{edge.SERVICE} (container port{'s' if len(stray) > 1 else ''} "
                          f"{', '.join(str(_target(port)) for port in stray)} besides 80 and 443)")
    if others:
        return "fail", f"published by {', '.join(others)}: reachable from outside the host", DOCS["ports"]
    if on:
        return ("pass", f"only the edge proxy publishes ports: {state.values.get('PROXY_HTTP_PORT', '?')} (HTTP, "
                f"redirects) and {state.values.get('PROXY_HTTPS_PORT', '?')} (HTTPS); web publishes none", "")
    return "pass", "only web publishes a port", ""


def _target(port) -> int | str:
    """The container port of a published port: Compose's model ({"target": 80, ...}) or the short form
    of a compose file ("8080:8000", "127.0.0.1:443:443/tcp")."""
    if isinstance(port, dict):
        return port.get("target", "?")
    text = str(port).rsplit(":", 1)[-1].split("/", 1)[0]
    return int(text) if text.isdigit() else text


def _https(state: State):
    site = state.values.get("SITE_URL", "")
    if not site.startswith("https://"):
        return "fail", f"SITE_URL is {site or 'empty'}: logins and API keys travel in clear", DOCS["https"]
    if state.values.get("IS_BEHIND_PROXY", "").lower() != "true":
        return "fail", "SITE_URL is https but IS_BEHIND_PROXY is not true (CSRF errors, wrong redirects)", DOCS["https"]
    return "pass", "https with IS_BEHIND_PROXY=true", ""


def _public_https(state: State):
    from posthog_compose.operations import proxy  # the edge proxy's own verdict (invoke proxy)

    return proxy.harden_item(state.values, state.findings)


def _app_private(state: State):
    from posthog_compose.operations.harden import acceptance

    return acceptance.app_private(state)


def _kafka_tls(state: State):
    return "manual", "Confluent's images need keystores and SSL listeners on both sides; follow the handbook", ""


def _managed(state: State):
    from posthog_compose.configuration import datastores

    outside = datastores.external(state.values)
    if outside:
        here = [name for name in datastores.DATASTORES if name not in outside]
        return "manual", (f"external: {', '.join(outside)}" + (f"; still local: {', '.join(here)}" if here else "")
                          + " (the checks above cover the external ones)"), ""
    return "manual", "RDS, ElastiCache, MSK or a self-managed ClickHouse cluster (not ClickHouse Cloud: no Kafka engine)", ""


CHECKS = {
    "env-file": _env_file, "secrets": _secrets, "redis-password": _redis_password, "debug": _debug,
    "images": _images, "certificates": _certificates, "clickhouse-tls": _clickhouse_tls,
    "postgres-tls": _postgres_tls, "redis-tls": _redis_tls, "ports": _ports, "https": _https,
    "public-https": _public_https, "app-private": _app_private,
    "kafka-tls": _kafka_tls, "datastore-ca": _datastore_ca, "plaintext-datastores": _plaintext_datastores,
    "managed-services": _managed,
}

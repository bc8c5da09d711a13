"""`invoke harden`: the production checklist, checked (--check) and applied.

Owns the checklist items (what each checks, whether it can be applied, the handbook section for
the rest), the plan and confirmation, the backups of changed files, and the order of a live
application: PostgreSQL's password is changed inside the database before .env, then .env and the
TLS files are written, then the services whose configuration changed are recreated and checked.
Secret rotation rules live in rotation.py, certificates in certs.py.

External datastores (datastores.py): their TLS items are checked, never applied (TLS on with
verification, the CA bundle under datastore-ca/ present and not expiring, no plaintext allowance),
and the override harden writes leaves out the internal-TLS parts of every datastore that is external
(its service's certificates, CLICKHOUSE_CA and the plugin server's NODE_EXTRA_CA_CERTS pointing at
the deployment's own CA), so that the provider's CA settings from .env reach PostHog.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from posthog_compose.configuration import certs
from posthog_compose.configuration import compose, images
from posthog_compose.operations import rotation
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import KEEP_SECRET_COPIES, atomic_write, retain, timestamp

OVERRIDE_FILE = "docker-compose.override.yml"
TLS_TEMPLATE = "docker-compose.tls.yml"
CONTAINER_CA = "/etc/posthog/certs/ca.crt"
POSTGRES_TLS_QUERY = f"sslmode=verify-full&sslrootcert={CONTAINER_CA}"
REDIS_TLS_QUERY = f"ssl_cert_reqs=required&ssl_ca_certs={CONTAINER_CA}"
IMAGE_VARIABLES = ("POSTHOG_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "CLICKHOUSE_IMAGE", "ZOOKEEPER_IMAGE",
                   "KAFKA_IMAGE")
IMAGE_SERVICES = {"POSTHOG_IMAGE": "web", "POSTGRES_IMAGE": "db", "REDIS_IMAGE": "redis",
                  "CLICKHOUSE_IMAGE": "clickhouse", "ZOOKEEPER_IMAGE": "zookeeper", "KAFKA_IMAGE": "kafka"}

#: item id -> (title, kind). kind: "apply" (harden fixes it), "check" (checked; the fix is the
#: operator's), "manual" (cannot be checked from here; the handbook explains).
ITEMS: dict[str, tuple[str, str]] = {
    "env-file": (".env is mode 0600 and not tracked by git", "apply"),
    "secrets": ("every secret is random: not the example, not a known default, long enough", "apply"),
    "redis-password": ("Redis requires a password", "apply"),
    "debug": ("DEBUG is off", "apply"),
    "images": ("no image on latest or another moving tag; POSTHOG_IMAGE pinned by digest", "apply"),
    "certificates": ("the deployment's CA and server certificates exist, chain to the CA and are not expiring", "apply"),
    "clickhouse-tls": ("ClickHouse over TLS with verification (CLICKHOUSE_SECURE=true, CLICKHOUSE_VERIFY=true)", "apply"),
    "postgres-tls": ("PostgreSQL over TLS only, certificate verified (sslmode=verify-full)", "apply"),
    "redis-tls": ("Redis over TLS only, certificate verified (rediss://)", "apply"),
    "ports": ("only the web port is published", "check"),
    "https": ("SITE_URL is https behind a TLS-terminating proxy, with the proxy settings", "check"),
    "public-https": ("public traffic is encrypted: the edge proxy serves HTTPS, HTTP redirects, WEB_PORT is closed", "check"),
    "kafka-tls": ("Kafka over TLS", "manual"),
    "datastore-ca": ("the CA bundle of the external datastores is under datastore-ca/, holds a CA certificate and is "
                     "not expiring", "check"),
    "plaintext-datastores": ("no external datastore is allowed without TLS (ALLOW_PLAINTEXT_DATASTORES is not true)",
                             "check"),
    "managed-services": ("managed PostgreSQL, Redis, Kafka and ClickHouse instead of containers", "manual"),
}
#: checklist TLS item -> the datastore it is about
TLS_DATASTORES = {"clickhouse-tls": "clickhouse", "postgres-tls": "postgres", "redis-tls": "redis",
                  "kafka-tls": "kafka"}
EXTERNAL_DOC = "docs/external-datastores.md"
#: Secrets of a local datastore service -> that datastore (not harden's to rotate while it is external).
EXTERNAL_SECRETS = {"POSTGRES_PASSWORD": "postgres", "REDIS_PASSWORD": "redis", "CLICKHOUSE_PASSWORD": "clickhouse"}
DOCS = {
    "ports": "docs/hardening.md#only-the-web-port",
    "https": "docs/hardening.md#https-and-the-proxy",
    "public-https": "docs/https.md",
    "kafka-tls": "docs/tls.md#kafka",
    "managed-services": "docs/hardening.md#managed-services",
    "secrets": "docs/hardening.md#secrets",
    "images": "docs/upgrading.md",
}
APPLY_ORDER = ["env-file", "secrets", "redis-password", "debug", "images", "certificates", "clickhouse-tls",
               "postgres-tls", "redis-tls"]
TLS_ITEMS = ("clickhouse-tls", "postgres-tls", "redis-tls")


@dataclass
class Result:
    id: str
    title: str
    kind: str
    status: str  # pass | warn (advised, does not fail the check) | fail | manual
    reason: str
    fix: str = ""

    def text(self) -> str:
        mark = {"pass": "PASS  ", "warn": "WARN  ", "fail": "FAIL  ", "manual": "MANUAL"}[self.status]
        # A pass states what was found, which says the requirement again: the title would repeat it.
        line = f"{mark} {self.id}: {self.reason}" if self.status == "pass" and self.reason else \
            f"{mark} {self.id}: {self.title}: {self.reason}"
        return line + (f" (fix: {self.fix})" if self.fix and self.status != "pass" else "")


@dataclass
class State:
    """What the checks look at, read once."""

    root: Path
    values: dict[str, str]
    findings: list
    override: str | None
    template: str
    published: dict[str, list]
    containers: dict[str, str] = field(default_factory=dict)  # service -> container state ("running", ...)
    engine_error: str | None = None  # a dry run without an engine: why the containers could not be read

    @property
    def running(self) -> bool:
        return any(state == "running" for state in self.containers.values())


# ----------------------------------------------------------------------------- reading the state
def read_state(root: Path, runner: Runner | None = None, without_engine: bool = False) -> State:
    from posthog_compose.configuration import checks
    from posthog_compose.configuration.envfile import EnvFile, env_path

    values = EnvFile.load(env_path(root)).resolved()
    override_path = root / OVERRIDE_FILE
    document = compose.load_document(root)
    published = {name: service.get("ports") or [] for name, service in  # what Compose runs (hook: hostile input)
                 (compose.effective_services(root) or document.services).items()
                 if isinstance(service, dict)}
    state = State(root, values, checks.collect(root),
                  override_path.read_text(encoding="utf-8") if override_path.exists() else None,
                  (root / TLS_TEMPLATE).read_text(encoding="utf-8") if (root / TLS_TEMPLATE).exists() else "",
                  published)
    if runner is not None:
        from posthog_compose.operations import stack

        try:
            state.containers = {s.service: s.state for s in stack.service_states(root, runner)}
        except OperatorError as exc:
            if not without_engine:  # only a dry run may plan without the engine
                raise
            state.engine_error = str(exc)
    return state


def _container_image(runner: Runner, service: str) -> str | None:
    """The image ID the service's container runs."""
    result = runner.run(["docker", "inspect", "--format", "{{.Image}}", f"{compose.project_name(runner.cwd)}-{service}-1"],
                        capture=True, check=False, mutating=False)
    return result.stdout.strip() or None if result.returncode == 0 else None


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


def _external_redis_password(state: State):
    """An external Redis: the provider's password travels in REDIS_URL (REDIS_PASSWORD is the local one's)."""
    from urllib.parse import urlsplit

    if not urlsplit(state.values.get("REDIS_URL", "")).password:
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
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(state.values.get("DATABASE_URL", "")).query)
        if query.get("sslmode") != ["verify-full"]:
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


def render_override(template: str, values: dict[str, str]) -> str:
    """The override harden writes: the TLS template as it is when every datastore runs here; else the
    template without the internal-TLS parts of the external ones (their service's entry, CLICKHOUSE_CA
    for an external ClickHouse, the plugin server's NODE_EXTRA_CA_CERTS for an external Redis)."""
    from posthog_compose.configuration import datastores

    outside = set(datastores.external(values))
    if not outside & {"postgres", "redis", "clickhouse"} or not template:
        return template
    import yaml

    data = yaml.safe_load(template) or {}
    services = data.get("services") or {}
    for datastore in outside:
        services.pop(datastores.SERVICE[datastore], None)
    for name in ("web", "worker", "plugins"):
        body = services.get(name)
        if not isinstance(body, dict):
            continue
        environment = body.get("environment") or {}
        if "clickhouse" in outside:
            environment.pop("CLICKHOUSE_CA", None)
        if "redis" in outside:
            environment.pop("NODE_EXTRA_CA_CERTS", None)
        if environment:
            body["environment"] = environment
        else:
            body.pop("environment", None)
    data = {key: value for key, value in data.items() if not str(key).startswith("x-")}
    header = [line for line in template.splitlines() if line.startswith("#")]
    note = (f"# Written by `invoke harden` for a deployment whose {', '.join(sorted(outside))} "
            f"{'is' if len(outside) == 1 else 'are'} external: the template's parts for "
            f"{'it' if len(outside) == 1 else 'them'} are left out.")
    return "\n".join(header + [note]) + "\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


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
    from urllib.parse import unquote, urlsplit

    password = state.values.get("REDIS_PASSWORD", "")
    url_password = unquote(urlsplit(state.values.get("REDIS_URL", "")).password or "")
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
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(state.values.get("DATABASE_URL", "")).query)
    problems = [] if query.get("sslmode") == ["verify-full"] else ["DATABASE_URL has no sslmode=verify-full"]
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


def _ports(state: State):
    others = [name for name, ports in state.published.items() if ports and name != "web"]
    if others:
        return "fail", f"published by {', '.join(others)}: reachable from outside the host", DOCS["ports"]
    return "pass", "only web publishes a port", ""


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
    "public-https": _public_https,
    "kafka-tls": _kafka_tls, "datastore-ca": _datastore_ca, "plaintext-datastores": _plaintext_datastores,
    "managed-services": _managed,
}


# ----------------------------------------------------------------------------- --check
def check(root: Path, runner: Runner, as_json: bool = False) -> int:
    """Report every item; exit 1 when an item that can be checked fails."""
    from posthog_compose import journal

    results = evaluate(read_state(Path(root)))
    for kind in journal.pending(Path(root)):
        # A rotation killed between ALTER ROLE and the .env write: .env may not hold the password.
        results.insert(0, Result("unfinished", f"no interrupted {kind} is pending", "check", "fail",
                                 f"an interrupted {kind} is recorded in {journal.JOURNAL_DIR}/",
                                 "invoke up (finishes or undoes it)"))
    failed = [r for r in results if r.status == "fail"]
    if as_json:
        print(json.dumps({"ok": not failed, "items": [asdict(r) for r in results]}, indent=2))
    else:
        for result in results:
            print(result.text())
        manual = sum(1 for r in results if r.status == "manual")
        warned = sum(1 for r in results if r.status == "warn")
        applicable = [r.id for r in failed if r.kind == "apply"]
        tail = f"; `invoke harden` applies {', '.join(applicable)}" if applicable else ""
        print(f"harden --check: {len(results) - len(failed) - manual - warned} passed, "
              + (f"{warned} warned, " if warned else "") + f"{len(failed)} failed, {manual} manual{tail}.")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- apply
@dataclass
class Change:
    """What applying the selected items will do, computed before anything changes."""

    items: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # new .env values
    env_remove: list[str] = field(default_factory=list)
    rotation: rotation.Rotation | None = None
    chmod_env: bool = False
    untrack_env: bool = False
    certificates: bool = False
    override: bool = False
    running: bool = False  # the deployment runs: recreate and check it afterwards
    lines: list[str] = field(default_factory=list)  # the plan, for people
    skipped: list[str] = field(default_factory=list)
    needs_engine: list[str] = field(default_factory=list)  # a dry run without an engine: steps not planned in full
    certs_written: list[str] = field(default_factory=list)  # certificates (re)written by this run: ca, db, ...
    offline: bool = False  # a dry run without an engine: whether services run is unknown
    pinned: dict[str, str] = field(default_factory=dict)  # digest reference -> the reference it was pinned from

    @property
    def empty(self) -> bool:
        return not (self.env or self.env_remove or self.rotation or self.chmod_env or self.untrack_env
                    or self.certificates or self.override)


def plan(root: Path, runner: Runner, only: list[str], rotate_all: bool) -> tuple[Change, list[Result]]:
    from posthog_compose.configuration import manifest as manifest_module

    unknown = [item for item in only if item not in ITEMS]
    if unknown:
        raise OperatorError(f"--only {', '.join(unknown)}: unknown item(s); the items are {', '.join(ITEMS)}")
    state = read_state(root, runner, without_engine=runner.dry_run)
    offline = state.engine_error is not None
    results = {r.id: r for r in evaluate(state)}
    selected = [item for item in APPLY_ORDER if (not only or item in only)]
    if rotate_all and "secrets" not in selected:
        selected.insert(0, "secrets")
    change = Change(running=state.running, offline=offline)
    values = dict(state.values)
    manifest = manifest_module.load(root)

    if "env-file" in selected and results["env-file"].status == "fail":
        change.items.append("env-file")
        change.chmod_env = any(f.rule == "env-permissions" for f in state.findings)
        change.untrack_env = any(f.rule == "env-tracked" for f in state.findings)
        change.lines.append("env-file: " + " and ".join(
            (["chmod 600 .env"] if change.chmod_env else []) + (["git rm --cached .env (the file stays)"] if change.untrack_env else [])))

    to_rotate: list[str] = []
    if "secrets" in selected and (rotate_all or results["secrets"].status == "fail"):
        insecure = {f.subject for f in state.findings if f.rule.startswith("insecure")}
        to_rotate += [n for n in rotation.generated_secrets(manifest) if rotate_all or n in insecure]
    if "redis-password" in selected and results["redis-password"].status == "fail" and \
            results["redis-password"].kind == "apply" and "REDIS_PASSWORD" not in to_rotate:
        to_rotate.append("REDIS_PASSWORD")
    from posthog_compose.configuration import datastores

    for name in [n for n in to_rotate if n in EXTERNAL_SECRETS and datastores.is_external(values, EXTERNAL_SECRETS[n])]:
        # The provider owns that password: rotating it here would only break PostHog's connection.
        to_rotate.remove(name)
        change.skipped.append(f"secrets: {name} is not rotated: {datastores.TITLE[EXTERNAL_SECRETS[name]]} is external "
                              "and its password is the provider's (change it there, then in .env)")
    if to_rotate:
        # Without an engine, plan as on a live deployment (key lists keep their old keys, ALTER ROLE first).
        live = True if offline else rotation.has_data(root, runner)
        if offline:
            change.needs_engine.append("secrets (whether PostgreSQL holds data, so that its password changes inside "
                                       "the database first)")
        change.rotation = rotation.plan(manifest, values, to_rotate, live)
        values.update(change.rotation.changes)
        change.env.update(change.rotation.changes)
        change.items.append("secrets")
        for name in change.rotation.rotated:
            change.lines.append(f"secrets: {name}: {change.rotation.describe(name)}")

    if "debug" in selected and results["debug"].status == "fail":
        change.items.append("debug")
        change.env_remove.append("DEBUG")
        change.lines.append("debug: remove DEBUG from .env (PostHog's default is off)")

    # A moving tag is always pinned; exact tags only when `--only images` asks for it (the warning's fix).
    pin_exact = "images" in only and results["images"].status != "pass"
    if "images" in selected and (results["images"].status == "fail" or pin_exact):
        change.items.append("images")
        if offline:
            change.needs_engine.append("images (the digests to pin are read from the engine)")
        for name in IMAGE_VARIABLES if not offline else ():
            reference = values.get(name, "")
            if not reference or not (_moving(reference) or (pin_exact and "@" not in reference)):
                continue
            # The digest of the image the deployment runs (of the local image when it does not run).
            service = IMAGE_SERVICES[name]
            image = _container_image(runner, service) if service in state.containers else None
            pinned = images.repo_digest(runner, reference, image=image)
            if pinned:
                change.env[name] = pinned
                change.pinned[pinned] = reference
                change.lines.append(f"images: {name} {reference} -> {pinned}")
            elif not _moving(reference):
                change.skipped.append(f"images: {name} ({reference}) has no registry digest on this engine (built or "
                                      "loaded locally); it keeps its exact tag")
            else:
                change.skipped.append(f"images: {name} ({reference}) has no registry digest on this engine; set an "
                                      "exact version tag by hand (`invoke upgrade --service ... --to TAG`)")

    # The TLS items of external datastores are checks (kind "check"): the provider's TLS is not harden's.
    wanted_tls = [item for item in TLS_ITEMS if item in selected and results[item].status == "fail"
                  and results[item].kind == "apply"]
    if "certificates" in selected and (results["certificates"].status == "fail" or wanted_tls):
        if results["certificates"].status == "fail":
            change.certificates = True
            change.items.append("certificates")
            change.lines.append("certificates: create or renew the CA and the clickhouse, db and redis certificates "
                                "under certs/ (0700; keys 0600)")
    elif wanted_tls and results["certificates"].status == "fail":
        raise OperatorError("TLS needs valid certificates first: add `certificates` to --only")
    if wanted_tls:
        if state.override is not None and not _override_in_place(state) and \
                "invoke harden" not in state.override[:400]:  # the template's header names harden
            raise OperatorError(f"{OVERRIDE_FILE} exists and is not the one harden writes; merge {TLS_TEMPLATE} into "
                                "it by hand (see docs/tls.md), then run `invoke harden` again")
        if not _override_in_place(state):
            change.override = True
            change.lines.append(f"tls: write {OVERRIDE_FILE} from {TLS_TEMPLATE} (mounts the certificates)"
                                + _without_external(state))
        change.items.extend(wanted_tls)
        if "clickhouse-tls" in wanted_tls:
            change.env.update(CLICKHOUSE_SECURE="true", CLICKHOUSE_VERIFY="true")
            change.lines.append("clickhouse-tls: CLICKHOUSE_SECURE=true, CLICKHOUSE_VERIFY=true")
        if "postgres-tls" in wanted_tls:
            change.env["DATABASE_URL"] = _with_query(values.get("DATABASE_URL", ""), POSTGRES_TLS_QUERY)
            change.lines.append("postgres-tls: DATABASE_URL gets sslmode=verify-full; plain TCP to db is refused")
        if "redis-tls" in wanted_tls:
            url = values.get("REDIS_URL", "")
            change.env["REDIS_URL"] = _with_query(url.replace("redis://", "rediss://", 1), REDIS_TLS_QUERY)
            change.lines.append("redis-tls: REDIS_URL becomes rediss:// with the CA; the plain port is closed")
    elif state.override is not None and not _override_in_place(state) and "invoke harden" in state.override[:400] \
            and state.template != render_override(state.template, state.values) and not only:
        # A datastore turned external after harden wrote the override: its internal-TLS parts must go, or
        # they override the provider's CA settings from .env.
        change.override = True
        change.items.append("tls-override")
        change.lines.append(f"tls: rewrite {OVERRIDE_FILE}{_without_external(state)}")
    return change, list(results.values())


def _without_external(state: State) -> str:
    from posthog_compose.configuration import datastores

    outside = [name for name in datastores.external(state.values) if name in ("postgres", "redis", "clickhouse")]
    return f" without the parts for the external {', '.join(outside)}" if outside else ""


def _with_query(url: str, query: str) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    merged = dict(parse_qsl(parts.query))
    merged.update(dict(parse_qsl(query)))
    return urlunsplit(parts._replace(query=urlencode(merged, safe="/")))


def apply(root: Path, runner: Runner, only: list[str], yes: bool = False, rotate_all: bool = False) -> int:
    """Show the plan, confirm, back up, apply, recreate what changed, and verify.

    Everything, from reading the state to the verification, runs under the deployment lock and
    after an interrupted operation in the journal was finished or undone: a plan is never made
    from a .env that a killed rotation left behind."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    EnvFile.load(env_path(root)).refuse_duplicates()  # before any backup or plan
    root = Path(root)
    if runner.dry_run:
        return _apply_planned(root, runner, only, yes, rotate_all)
    from posthog_compose import journal
    from posthog_compose.journal import replay as recover

    with journal.deployment_lock(root, "harden"):
        recover(root, runner)
        return _apply_planned(root, runner, only, yes, rotate_all)


def _apply_planned(root: Path, runner: Runner, only: list[str], yes: bool, rotate_all: bool) -> int:
    change, results = plan(root, runner, only, rotate_all)
    for line in change.skipped:
        print(f"cannot apply: {line}")
    if change.empty and not change.needs_engine:
        left = [r for r in results if r.status == "fail" and (not only or r.id in only)]
        print("Nothing to apply: every selected item that harden can fix already passes"
              + (f"; still failing (fix by hand): {', '.join(r.id for r in left)}." if left else "."))
        return 1 if left and any(r.kind == "apply" for r in left) else 0
    running = change.running
    print("Plan:")
    for line in change.lines:
        print(f"  - {line}")
    if change.needs_engine:
        print(f"  - needs the engine: {'; '.join(change.needs_engine)}")
    if change.rotation:
        for warning in change.rotation.warnings:
            print(f"  ! {warning}")
    print(f"  - back up .env{' and ' + OVERRIDE_FILE if (root / OVERRIDE_FILE).exists() else ''} under backups/")
    if change.offline:
        print("  - then recreate the services that run (the Docker engine does not answer: which run is unknown)")
    else:
        print("  - then recreate the services whose configuration changed and check health and the URL"
              if running else "  - the deployment is not running: start it afterwards with `invoke up`")
    if runner.dry_run:
        print("Dry run: nothing changed." + (" The Docker engine does not answer" + (
            ", so the steps that need it are listed, not planned in full." if change.needs_engine else ".")
            if change.offline else ""))
        return 0
    if not yes:
        _confirm()
    saved = _backup_files(root)
    print(f"Backed up to {saved.relative_to(root)}.")
    try:
        _apply(root, runner, change)
    except KeyboardInterrupt:
        raise OperatorError("interrupted; what was started was finished or not begun. `invoke harden --check` shows "
                            "where it stands, and `invoke up` recreates the services on the current .env", code=130)
    pruned = retain(root / "backups", "harden-")  # after a successful write: old copies of secrets go
    if pruned:
        print(f"Removed {len(pruned)} older backups/harden-* cop{'y' if len(pruned) == 1 else 'ies'} of .env "
              f"(the newest {KEEP_SECRET_COPIES} are kept).")
    if running:
        try:
            # A first TLS run changes every mounting service's configuration, so `up` recreates them anyway;
            # a renewal changes no configuration, so those services are recreated explicitly.
            renewed = [] if change.override else services_mounting(root, change.certs_written)
            _recreate_all(root, runner, force=renewed)
        except KeyboardInterrupt:
            raise OperatorError("interrupted after the new configuration was written: run `invoke up` to recreate "
                                "the services on it", code=130)
    if running:
        from posthog_compose.operations import stack
        from posthog_compose.configuration.envfile import EnvFile, env_path

        ok, detail = stack.check_url(EnvFile.load(env_path(root)).resolved())
        if not ok:
            raise OperatorError(f"applied, but the URL check fails: {detail}. The previous files are in "
                                f"{saved.relative_to(root)}")
        print(f"URL check: {detail}.")
    after = {r.id: r for r in evaluate(read_state(root))}
    still = [i for i in change.items if i in after and after[i].status == "fail"]
    print(f"Hardened: {', '.join(change.items)}" + (f"; still failing: {', '.join(still)}" if still else "")
          + (". The deployment is healthy." if running else ". Start it with `invoke up`."))
    return 1 if still else 0


def services_mounting(root: Path, names: list[str]) -> list[str]:
    """The services whose containers mount one of the certificates ``names`` (ca, db, ...) through the
    override file. A renewed certificate is a new file (written by rename), which a running container
    does not see, and Compose does not recreate a service whose configuration did not change."""
    from posthog_compose.configuration.manifest import load_yaml

    path = root / OVERRIDE_FILE
    if not names or not path.exists():
        return []
    try:
        services = (load_yaml(path) or {}).get("services") or {}
    except Exception:  # an unreadable override: `up` reports it; recreate every certificate user instead
        return list(_all_services())
    wanted = {f"./certs/{name}.{suffix}" for name in names for suffix in ("crt", "key")}
    found = []
    for service, body in services.items():
        volumes = (body or {}).get("volumes") or [] if isinstance(body, dict) else []
        sources = {str(v.get("source", "")) if isinstance(v, dict) else str(v).split(":", 1)[0] for v in volumes}
        if sources & wanted:
            found.append(str(service))
    return [service for service in _all_services() if service in found]


def _recreate_all(root: Path, runner: Runner, force: list[str] | None = None) -> None:
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import EnvFile, env_path

    here = stack.services_here(EnvFile.load(env_path(root)).resolved())
    force = [service for service in force or [] if service in here]  # never start an external datastore's service
    if force:
        print(f"Recreating {', '.join(force)} so that they load the renewed certificates ...")
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--force-recreate", "--no-deps",
                                                           *force),
                             list(force), 600, readiness_values=EnvFile.load(env_path(root)).resolved())
    print("Recreating the services whose configuration changed ...")
    values = EnvFile.load(env_path(root)).resolved()
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--remove-orphans"),
                         stack.services_here(values), 600, readiness_values=values)


def _all_services() -> tuple[str, ...]:
    from posthog_compose.configuration.manifest import SERVICES

    return SERVICES


def _services_running(root: Path, runner: Runner) -> list[str]:
    from posthog_compose.operations import stack

    return [s.service for s in stack.service_states(root, runner) if s.state == "running"]


def _confirm() -> None:
    sys.stdout.write("Apply these changes? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise OperatorError("no confirmation (no input): nothing was changed; pass --yes for automation")
    if answer.strip().lower() not in ("y", "yes"):
        raise OperatorError("not confirmed: nothing was changed")


def _backup_files(root: Path) -> Path:
    directory = root / "backups" / f"harden-{timestamp()}"
    directory.mkdir(parents=True, mode=0o700)
    for name in (".env", OVERRIDE_FILE):
        source = root / name
        if source.exists():
            shutil.copy2(source, directory / name)
            (directory / name).chmod(0o600)
    return directory


def _apply(root: Path, runner: Runner, change: Change) -> None:
    if change.untrack_env:
        runner.run(["git", "-C", str(root), "rm", "--cached", "--quiet", "--", ".env"], capture=True)
    if change.certificates:
        written = certs.ensure(root)
        change.certs_written = list(written)
        print(f"Certificates written: {', '.join(written) or 'none needed'}.")
    if change.override:
        from posthog_compose.configuration.envfile import EnvFile, env_path

        values = EnvFile.load(env_path(root)).resolved()
        values.update(change.env)
        text = render_override((root / TLS_TEMPLATE).read_text(encoding="utf-8"), values)
        atomic_write(root / OVERRIDE_FILE, text, 0o644)
        from posthog_compose.operations import proxy  # with the edge proxy on, COMPOSE_FILE must list the override too

        proxy.include_override(root)
    for pinned, reference in change.pinned.items():  # the version each digest stands for (upgrade gates)
        images.record_digest_version(root, reference, pinned)
    # Journaled: the new values are recorded (0600) before PostgreSQL's password changes, so a
    # kill between ALTER ROLE and the .env write cannot lose it (see rotation.commit).
    rotation.commit(root, runner, dict(change.env),
                    change.rotation.postgres_password if change.rotation else None, list(change.env_remove))


def _ensure_db_running(root: Path, runner: Runner) -> None:
    from posthog_compose.operations import stack

    if "db" not in _services_running(root, runner):
        print("Starting db to change its password ...")
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "db"), ["db"], 300)

"""The optional edge proxy: public HTTPS in front of PostHog (`invoke proxy`).

Owns switching the proxy on and off (COMPOSE_FILE in .env lists docker-compose.proxy.yml, plus
docker-compose.proxy-private.yml for a certificate from the deployment's CA), the proxy's
certificate (certs/proxy.crt, signed by certs/ca.crt of certs.py), the values PostHog must be told
behind it (SITE_URL, IS_BEHIND_PROXY, TRUSTED_PROXIES, DISABLE_SECURE_SSL_REDIRECT, SECURE_COOKIES),
what `invoke proxy` shows and harden's item. The declared state and the config-check rules are
configuration/edge.py; the URL check through the proxy is probes.py (both re-exported here).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from posthog_compose.configuration.edge import (  # noqa: F401 - the proxy's names, used here and by callers
    BASE_FILE,
    OVERRIDE_FILE,
    OVERLAY,
    PRIVATE_OVERLAY,
    CADDYFILE,
    SERVICE,
    NETWORK,
    STATE_FILE,
    TLS_MODES,
    CERT_NAME,
    CERT_DAYS,
    LOCAL_HOSTS,
    PRIVATE_SUFFIXES,
    TOLD,
    PLAIN_DEFAULTS,
    compose_files,
    enabled,
    wanted_files,
    is_private_name,
    HOST_RE,
    domain_problem,
    site_url,
    check,
    certificate_problem,
)
from posthog_compose.errors import OperatorError
from posthog_compose.operations.probes import check_url, request  # noqa: F401


# ----------------------------------------------------------------------------- the certificate
def ensure_certificate(root: Path, domain: str) -> bool:
    """certs/proxy.crt for ``domain`` from the deployment's CA (created when missing); True when written."""
    from posthog_compose.configuration import certs

    root = Path(root)
    if (certs.paths(root, CERT_NAME)[0]).exists() and not certificate_problem(root, domain):
        return False
    directory = certs.cert_dir(root)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = certs.inspect(root, certs.CA_NAME)
    if ca.problem:
        if ca.exists:
            raise OperatorError(f"certs/ca.crt: {ca.problem}; renew the CA with `invoke harden --only certificates` "
                                "first (every certificate it signed is renewed with it)")
        certs.make_ca(root)
    ca_certificate, ca_key = certs._load(root, certs.CA_NAME)
    _make_certificate(root, domain, ca_certificate, ca_key)
    return True


def _make_certificate(root: Path, domain: str, ca_certificate, ca_key) -> None:
    import ipaddress

    from cryptography import x509

    from posthog_compose.configuration import certs

    try:
        names = [x509.IPAddress(ipaddress.ip_address(domain))]
    except ValueError:
        names = [x509.DNSName(domain)]
    certs.make_server_cert(root, CERT_NAME, ca_certificate, ca_key, names=names, days=CERT_DAYS)


# ----------------------------------------------------------------------------- enable / disable
@dataclass
class Plan:
    env: dict[str, str] = field(default_factory=dict)  # new .env values ("" removes COMPOSE_FILE)
    previous: dict[str, str] = field(default_factory=dict)
    certificate: bool = False
    lines: list[str] = field(default_factory=list)


def plan_enable(root: Path, values: dict[str, str], domain: str | None, private_ca: bool | None) -> Plan:
    root = Path(root)
    domain = (domain or values.get("DOMAIN", "")).strip().lower()
    problem = domain_problem(domain)
    if problem:
        raise OperatorError(f"--domain: {problem}; give the public host name, e.g. --domain posthog.example.com")
    if private_ca is None:
        private_ca = values.get("PROXY_TLS") == "private" if enabled(values) else is_private_name(domain)
    tls = "private" if private_ca else "acme"
    if tls == "acme" and is_private_name(domain):
        raise OperatorError(f"{domain} is not a public name, so no public certificate authority issues for it; "
                            "add --private-ca for a certificate from the deployment's CA (certs/ca.crt)")
    port = values.get("PROXY_HTTPS_PORT", "443") or "443"
    address = values.get("PROXY_ADDRESS", "")
    wanted = {
        "DOMAIN": domain, "PROXY_TLS": tls, "SITE_URL": site_url(domain, port), "IS_BEHIND_PROXY": "true",
        "TRUSTED_PROXIES": address, "DISABLE_SECURE_SSL_REDIRECT": "false", "SECURE_COOKIES": "true",
        "COMPOSE_FILE": ":".join(wanted_files(root, tls)),
    }
    plan = Plan()
    plan.env = {k: v for k, v in wanted.items() if values.get(k) != v}
    if not enabled(values):
        plan.previous = {name: values.get(name, "") for name in TOLD}
    plan.certificate = tls == "private" and bool(certificate_problem(root, domain))
    for name, value in plan.env.items():
        plan.lines.append(f".env: {name}={value}")
    if plan.certificate:
        plan.lines.append(f"certs/proxy.crt: a certificate for {domain} signed by certs/ca.crt"
                          + ("" if (root / "certs" / "ca.crt").exists() else " (a new CA is created first)"))
    return plan


def plan_disable(root: Path, values: dict[str, str]) -> Plan:
    root = Path(root)
    saved = _read_state(root)
    restore = {name: saved.get(name, values.get(name, "")) for name in TOLD}
    if not saved:
        restore.update(PLAIN_DEFAULTS)
        restore["SITE_URL"] = f"http://localhost:{values.get('WEB_PORT', '8080')}"
    files = wanted_files(root, None)
    wanted = dict(restore)
    # Compose's own discovery applies the base file and the override: COMPOSE_FILE is not needed.
    wanted["COMPOSE_FILE"] = "" if files in ([BASE_FILE], [BASE_FILE, OVERRIDE_FILE]) else ":".join(files)
    plan = Plan()
    plan.env = {k: v for k, v in wanted.items() if values.get(k, "") != v or (k == "COMPOSE_FILE" and "COMPOSE_FILE" in values and v == "")}
    for name, value in plan.env.items():
        plan.lines.append(f".env: remove {name}" if name == "COMPOSE_FILE" and value == "" else f".env: {name}={value}")
    return plan


def _read_state(root: Path) -> dict[str, str]:
    try:
        data = json.loads((Path(root) / STATE_FILE).read_text(encoding="utf-8"))
        return {k: str(v) for k, v in data.items() if k in TOLD}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_env(root: Path, changes: dict[str, str]) -> None:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    env = EnvFile.load(env_path(root))
    for name, value in changes.items():
        if name == "COMPOSE_FILE" and value == "":
            env.remove(name)
        else:
            env.set(name, value)
    env.write()  # atomic, 0600


def switch(root: Path, runner, enable: bool, domain: str | None = None, private_ca: bool | None = None,
           timeout: float = 600.0) -> int:
    """`invoke proxy --enable` and `invoke proxy --disable`: plan, write .env (and the certificate), check the whole
    configuration (rolling .env back when it fails), then recreate what changed when it runs."""
    from posthog_compose.configuration import checks
    from posthog_compose.configuration import compose
    from posthog_compose.operations import stack
    from posthog_compose.configuration.envfile import EnvFile, env_path
    from posthog_compose.fileops import atomic_write

    root = Path(root)
    if not env_path(root).exists():
        raise OperatorError(".env does not exist yet: run `invoke init` (or `invoke up`) first")
    values = EnvFile.load(env_path(root)).resolved()
    if not enable and not enabled(values):
        print("The edge proxy is already off: nothing to do.")
        return 0
    plan = plan_enable(root, values, domain, private_ca) if enable else plan_disable(root, values)
    try:
        running: bool | None = any(s.state == "running" for s in stack.service_states(root, runner))
    except OperatorError:
        if not runner.dry_run:
            raise
        running = None  # a plan needs no engine: whether the deployment runs is said to be unknown
    if not plan.env and not plan.certificate:
        print(f"The edge proxy is already {'on' if enable else 'off'} with these settings: nothing to do.")
        return 0
    print("Plan:")
    for line in plan.lines:
        print(f"  - {line}")
    print("  - check the configuration (.env is put back if it fails)")
    recreate = (f"recreate {_and(recreated_services(root, plan.env))} (their settings change) and "
                + ("start the proxy" if enable else "remove the proxy; WEB_PORT is published again"))
    if running:
        print(f"  - {recreate}")
    elif running is None:
        print(f"  - the Docker engine does not answer, so whether the deployment runs is unknown: if it runs, "
              f"{recreate}; if not, `invoke up` starts it with these settings")
    else:
        print("  - the deployment is not running: `invoke up` starts it with these settings")
    if runner.dry_run:
        print("Dry run: nothing changed.")
        return 0
    original = env_path(root).read_text(encoding="utf-8")
    if plan.certificate:
        ensure_certificate(root, plan.env.get("DOMAIN", values.get("DOMAIN", "")))
        print("Certificate written: certs/proxy.crt (install certs/ca.crt in the browsers that use PostHog).")
    _write_env(root, plan.env)
    errors = [f for f in checks.collect(root) if f.severity == "error"]
    if errors:
        atomic_write(env_path(root), original, 0o600)
        for finding in errors:
            print(finding.text())
        raise OperatorError(f"config-check found {len(errors)} error(s) with the proxy {'on' if enable else 'off'}; "
                            ".env was put back as it was")
    state = root / STATE_FILE
    saved_state = state.read_text(encoding="utf-8") if state.exists() else None
    if enable and plan.previous:
        state.parent.mkdir(exist_ok=True)
        atomic_write(state, json.dumps(plan.previous, indent=2) + "\n", 0o600)
    elif not enable:
        state.unlink(missing_ok=True)
    if not running:
        print(f"Edge proxy {'on' if enable else 'off'} in .env. Start the deployment with `invoke up`.")
        return 0
    print("Recreating what changed ...")
    from posthog_compose.configuration.manifest import SERVICES

    services = list(SERVICES) + ([SERVICE] if enable else [])
    up = compose.command(root, "up", "--detach", "--remove-orphans")
    existed = _proxy_resources(root, runner) if enable else set()
    try:
        stack.start_and_wait(root, runner, up, services, timeout)
        after = EnvFile.load(env_path(root)).resolved()
        ok, detail = stack.check_url(after)
        if not ok:
            raise OperatorError(f"the URL check fails: {detail}")
    except (OperatorError, KeyboardInterrupt) as exc:
        # Back to the deployment as it was: the previous .env, recreated the same way.
        reason = getattr(exc, "message", None) or "interrupted"
        print(f"Switching the proxy {'on' if enable else 'off'} failed ({reason}); putting the previous "
              "configuration back ...")
        atomic_write(env_path(root), original, 0o600)
        if enable and plan.previous:
            state.unlink(missing_ok=True)
        elif not enable and saved_state is not None:
            atomic_write(state, saved_state, 0o600)
        stack.start_and_wait(root, runner, up, list(SERVICES) + ([] if enable else [SERVICE]), timeout)
        if enable:
            _remove_created(root, runner, existed)
        raise OperatorError(f"the proxy could not be switched {'on' if enable else 'off'}: {reason}. The previous "
                            "configuration is back and healthy; see the log lines above")
    if not enable:
        # Compose leaves the proxy's network behind when the overlay is gone; nothing uses it now.
        runner.run(["docker", "network", "rm", f"{compose.project_name(root)}_{NETWORK}"], capture=True, check=False)
    print(f"URL check: {detail}.")
    print(f"Edge proxy {'on' if enable else 'off'}: PostHog is at {after.get('SITE_URL', '')}.")
    return 0


def recreated_services(root: Path, changed) -> list[str]:
    """The services Compose recreates when the proxy is switched: web (the overlay changes its ports and
    networks) and every service of docker-compose.yml that reads one of the ``changed`` .env values
    (SITE_URL, IS_BEHIND_PROXY, ... reach worker and plugins too), in docker-compose.yml's order."""
    import re

    from posthog_compose.configuration import compose
    from posthog_compose.configuration.manifest import SERVICES

    names = [name for name in changed if name != "COMPOSE_FILE"]
    reads = re.compile(r"\$\{?(" + "|".join(map(re.escape, names)) + r")\b") if names else None
    services = (compose.load_document(root).data.get("services") or {})
    found = [name for name in SERVICES if name == "web" or (
        reads is not None and reads.search(json.dumps(services.get(name) or {})))]
    return found


def _and(names: list[str]) -> str:
    """web, worker and plugins."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


#: The volumes docker-compose.proxy.yml declares (its certificates and ACME account, Caddy's state).
PROXY_VOLUMES = ("proxy-data", "proxy-config")


def _proxy_resources(root: Path, runner) -> set[str]:
    """The engine's names of the proxy's network and volumes that exist now (by Compose's labels)."""
    from posthog_compose.configuration import compose

    project = compose.project_name(root)
    wanted = {f"{project}_{NETWORK}", *(f"{project}_{volume}" for volume in PROXY_VOLUMES)}
    found = set()
    for kind in ("network", "volume"):
        listed = runner.run(["docker", kind, "ls", "--quiet" if kind == "volume" else "--format={{.Name}}",
                             "--filter", f"label=com.docker.compose.project={project}"],
                            capture=True, check=False, mutating=False, timeout=60)
        found |= set((listed.stdout or "").split()) & wanted
    return found


def _remove_created(root: Path, runner, existed: set[str]) -> None:
    """After a failed `--enable` was rolled back: remove the proxy's network and volumes that this
    attempt created (never ones that held a certificate or ACME account before it)."""
    for name in sorted(_proxy_resources(root, runner) - existed):
        kind = "network" if name.endswith(f"_{NETWORK}") else "volume"
        runner.run(["docker", kind, "rm", name], capture=True, check=False, timeout=60)


def status_line(values: dict[str, str]) -> str:
    """One line for people about public traffic (used by the harden item)."""
    if enabled(values):
        return f"the edge proxy serves {values.get('SITE_URL', '')} ({values.get('PROXY_TLS', '?')} certificate)"
    return "no edge proxy"


def show(root: Path) -> None:
    """`invoke proxy` without --enable/--disable: whether the proxy is on, and with what."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    root = Path(root)
    if not env_path(root).exists():
        print("Edge proxy: off (.env does not exist yet). Switch it on with `invoke proxy --enable --domain NAME`.")
        return
    values = EnvFile.load(env_path(root)).resolved()
    if not enabled(values):
        print(f"Edge proxy: off. PostHog is published on WEB_PORT {values.get('WEB_PORT', '?')} as "
              f"{values.get('SITE_URL', '?')}. Switch it on with `invoke proxy --enable --domain NAME`.")
        return
    tls = values.get("PROXY_TLS", "?")
    source = "the deployment's CA (certs/ca.crt)" if tls == "private" else "ACME (Let's Encrypt)"
    print(f"Edge proxy: on. {values.get('SITE_URL', '?')} with a certificate from {source}; HTTP on port "
          f"{values.get('PROXY_HTTP_PORT', '?')} redirects to it; WEB_PORT is not published.")
    if tls == "private":
        problem = certificate_problem(root, values.get("DOMAIN", ""))
        print(f"Certificate: {problem or 'certs/proxy.crt is valid for ' + values.get('DOMAIN', '')}.")


def harden_item(values: dict[str, str], findings: list) -> tuple[str, str, str]:
    """`harden --check`'s item public-https: (pass|fail, reason, fix). Public traffic is encrypted
    only when the edge proxy runs with a consistent configuration: an HTTPS SITE_URL alone says
    nothing about WEB_PORT, which then still publishes plain HTTP on every interface."""
    site = values.get("SITE_URL", "")
    if not enabled(values):
        if site.startswith("https://"):
            return ("fail", f"SITE_URL is {site}, but WEB_PORT {values.get('WEB_PORT', '?')} still publishes plain "
                    "HTTP on every interface, past whatever proxy serves that URL",
                    f"`invoke proxy --enable --domain {urlsplit(site).hostname}`")
        return "fail", f"no edge proxy: PostHog is served over plain HTTP ({site or 'SITE_URL empty'})", \
            "`invoke proxy --enable --domain NAME` (docs/https.md)"
    problems = [f"{f.subject + ' ' if f.subject else ''}{f.message}" for f in findings
                if f.severity == "error" and f.rule in ("proxy", "compose-file-variable", "https-cookies")]
    if problems:
        return "fail", f"the edge proxy is on but misconfigured: {problems[0]}", "`invoke config-check`, then `invoke proxy --enable`"
    hsts = values.get("PROXY_HSTS_MAX_AGE", "0")
    return ("pass", f"{status_line(values)}; HTTP redirects to it; WEB_PORT is not published; HSTS max-age {hsts}", "")


def include_override(root: Path) -> bool:
    """After `invoke harden` wrote docker-compose.override.yml: when COMPOSE_FILE (the proxy's) is
    set, list the override right after the base file, or Compose would ignore it. True when .env
    changed."""
    from posthog_compose.configuration.envfile import EnvFile, env_path

    root = Path(root)
    path = env_path(root)
    if not path.exists() or not (root / OVERRIDE_FILE).exists():
        return False
    env = EnvFile.load(path)
    values = env.resolved()
    files = compose_files(values)
    if not files or OVERRIDE_FILE in [os.path.basename(f) for f in files]:
        return False
    separator = values.get("COMPOSE_PATH_SEPARATOR") or ":"
    env.set("COMPOSE_FILE", separator.join([files[0], OVERRIDE_FILE, *files[1:]]))
    env.write()
    return True

"""The optional edge proxy: public HTTPS in front of PostHog (`invoke proxy`).

Owns switching the proxy on and off (COMPOSE_FILE in .env lists docker-compose.proxy.yml, plus
docker-compose.proxy-private.yml for a certificate from the deployment's CA), the proxy's
certificate (certs/proxy.crt, signed by certs/ca.crt of certs.py), the values PostHog must be told
behind it (SITE_URL, IS_BEHIND_PROXY, TRUSTED_PROXIES, DISABLE_SECURE_SSL_REDIRECT, SECURE_COOKIES),
the config-check rules for the combinations that break logins, CSRF or redirects, and the URL
check through the proxy.

What PostHog 1.4x does with these (posthog/settings/access.py): SECURE_COOKIES (default true
outside debug) makes the session, CSRF and toolbar cookies Secure and turns on Django's SSL
redirect; DISABLE_SECURE_SSL_REDIRECT turns off only the redirect; IS_BEHIND_PROXY sets
USE_X_FORWARDED_HOST, USE_X_FORWARDED_PORT and SECURE_PROXY_SSL_HEADER=(X-Forwarded-Proto, https);
TRUSTED_PROXIES is read by the IP allow-list middleware; the client address of an event is the
first entry of X-Forwarded-For (posthog/utils.py get_ip_address), which Caddy always replaces
with the address it saw.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.formats import is_ascii_number

BASE_FILE = "docker-compose.yml"
OVERRIDE_FILE = "docker-compose.override.yml"
OVERLAY = "docker-compose.proxy.yml"
PRIVATE_OVERLAY = "docker-compose.proxy-private.yml"
CADDYFILE = "proxy/Caddyfile"
SERVICE = "proxy"
NETWORK = "edge"
STATE_FILE = ".deploy/proxy-previous.json"  # the values `--enable` replaced, restored by `--disable`
TLS_MODES = ("acme", "private")
CERT_NAME = "proxy"
CERT_DAYS = 825
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
# Names no public certificate authority issues for (RFC 2606, 6761, 6762, 8375 and common LAN suffixes).
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home", ".corp", ".test", ".example", ".invalid",
                    ".home.arpa", ".intranet", ".private")
#: .env values `--enable` sets (besides DOMAIN, PROXY_TLS, COMPOSE_FILE) and `--disable` restores.
TOLD = ("SITE_URL", "IS_BEHIND_PROXY", "TRUSTED_PROXIES", "DISABLE_SECURE_SSL_REDIRECT", "SECURE_COOKIES")
PLAIN_DEFAULTS = {"IS_BEHIND_PROXY": "false", "TRUSTED_PROXIES": "", "DISABLE_SECURE_SSL_REDIRECT": "true"}


# ----------------------------------------------------------------------------- COMPOSE_FILE
def compose_files(values: dict[str, str]) -> list[str]:
    """The files COMPOSE_FILE lists (Compose reads it from .env), or [] when it is not set."""
    separator = values.get("COMPOSE_PATH_SEPARATOR") or ":"
    return [item.strip() for item in (values.get("COMPOSE_FILE") or "").split(separator) if item.strip()]


def enabled(values: dict[str, str]) -> bool:
    """Whether Compose applies the proxy overlay (COMPOSE_FILE lists it)."""
    return OVERLAY in [os.path.basename(f) for f in compose_files(values)]


def wanted_files(root: Path, tls: str | None) -> list[str]:
    """COMPOSE_FILE for the proxy on (tls given) or off (None): the override stays in as Compose's
    default discovery would have applied it (`invoke harden` keeps its TLS overlay there)."""
    files = [BASE_FILE] + ([OVERRIDE_FILE] if (Path(root) / OVERRIDE_FILE).exists() else [])
    if tls is not None:
        files.append(OVERLAY)
        if tls == "private":
            files.append(PRIVATE_OVERLAY)
    return files


def is_private_name(host: str) -> bool:
    """True for names and addresses no public CA can issue a certificate for."""
    host = host.strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    return "." not in host or host in LOCAL_HOSTS or host.endswith(PRIVATE_SUFFIXES)


HOST_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def domain_problem(domain: str) -> str | None:
    if not domain:
        return "is empty"
    if not HOST_RE.match(domain):
        return f"{domain!r} is not a host name (letters, digits, dots and hyphens; no scheme, port or path)"
    try:
        ipaddress.ip_address(domain)
        # Clients send no server name for an address, and Caddy picks certificates by name.
        return f"{domain} is an IP address; give the host a name (in DNS, or in the clients' hosts files)"
    except ValueError:
        return None


def site_url(domain: str, https_port: str) -> str:
    return f"https://{domain}" + ("" if str(https_port) == "443" else f":{https_port}")


# ----------------------------------------------------------------------------- config-check rules
def check(root: Path, env, values: dict[str, str] | None, report, environ: dict[str, str] | None = None) -> None:
    """config-check's rules for HTTPS, cookies and the edge proxy (called once by checks.collect)."""
    if env is None or values is None:
        return
    root = Path(root)
    line = env.line_of
    get = values.get
    site = get("SITE_URL", "")
    parts = urlsplit(site)
    host = (parts.hostname or "").lower()
    secure_cookies = get("SECURE_COOKIES", "true").lower() != "false"  # PostHog's default outside debug
    on = enabled(values)

    if parts.scheme == "http" and host and host not in LOCAL_HOSTS and secure_cookies and not on:
        report.error("https-cookies", ".env", line("SITE_URL"), "SITE_URL",
                     f"is http:// on {host} while SECURE_COOKIES=true: browsers drop PostHog's Secure session and "
                     "CSRF cookies on plain http (only localhost is exempt), so nobody can log in",
                     f"serve HTTPS with `invoke proxy --enable --domain {_name_for(host)}`, or set "
                     "SECURE_COOKIES=false for a plain-http trial on a private network")
    _check_compose_file_variable(root, values, report, line, environ)
    if not on:
        return

    domain = get("DOMAIN", "")
    problem = domain_problem(domain)
    if problem:
        report.error("proxy", ".env", line("DOMAIN"), "DOMAIN", f"{problem}, but the edge proxy is on",
                     "run `invoke proxy --enable --domain NAME`, or `invoke proxy --disable`")
    if parts.scheme != "https":
        report.error("proxy", ".env", line("SITE_URL"), "SITE_URL",
                     f"is {site or 'empty'} but the edge proxy serves HTTPS: PostHog would build http:// links "
                     "and the browser's Origin and Referer would not match", f"set SITE_URL={site_url(domain or 'DOMAIN', get('PROXY_HTTPS_PORT', '443'))}")
    elif domain and not problem and host != domain.lower():
        report.error("proxy", ".env", line("SITE_URL"), "SITE_URL",
                     f"names {host} but the proxy serves {domain}: logins fail (cookies and CSRF are bound to "
                     "the host the browser uses) and HTTP redirects lead elsewhere",
                     f"set SITE_URL={site_url(domain, get('PROXY_HTTPS_PORT', '443'))}")
    else:
        port = _port(parts)
        if port is not None and is_ascii_number(get("PROXY_HTTPS_PORT", "443")) and port != int(get("PROXY_HTTPS_PORT", "443")):
            report.error("proxy", ".env", line("SITE_URL"), "SITE_URL",
                         f"uses port {port} but the proxy serves HTTPS on PROXY_HTTPS_PORT={get('PROXY_HTTPS_PORT')}",
                         f"set SITE_URL={site_url(domain, get('PROXY_HTTPS_PORT', '443'))}")
    if get("IS_BEHIND_PROXY", "").lower() != "true":
        report.error("proxy", ".env", line("IS_BEHIND_PROXY"), "IS_BEHIND_PROXY",
                     "is not true behind the edge proxy: PostHog takes every request for plain http (it ignores "
                     "X-Forwarded-Proto), builds http:// links and, with its SSL redirect on, redirects forever",
                     "set IS_BEHIND_PROXY=true")
    if not secure_cookies:
        report.warning("proxy", ".env", line("SECURE_COOKIES"), "SECURE_COOKIES",
                       "is false although PostHog is served over HTTPS: session cookies could leak over plain http",
                       "set SECURE_COOKIES=true")
    _check_network(values, report, line)
    tls = get("PROXY_TLS", "")
    if tls not in TLS_MODES:
        report.error("proxy", ".env", line("PROXY_TLS"), "PROXY_TLS", f"is {tls!r}", "use acme or private")
    elif tls == "acme" and domain and not problem and is_private_name(domain):
        report.error("proxy", ".env", line("PROXY_TLS"), "PROXY_TLS",
                     f"is acme but {domain} is not a public name: no public certificate authority issues for it",
                     f"`invoke proxy --enable --domain {domain} --private-ca` (certificate from certs/ca.crt)")
    files = [os.path.basename(f) for f in compose_files(values)]
    if tls == "private" and PRIVATE_OVERLAY not in files:
        report.error("proxy", ".env", line("COMPOSE_FILE"), "COMPOSE_FILE",
                     f"does not list {PRIVATE_OVERLAY} although PROXY_TLS=private: the proxy would have no certificate",
                     "run `invoke proxy --enable` again")
    if tls == "acme" and PRIVATE_OVERLAY in files:
        report.error("proxy", ".env", line("COMPOSE_FILE"), "COMPOSE_FILE",
                     f"lists {PRIVATE_OVERLAY} although PROXY_TLS=acme", "run `invoke proxy --enable` again")
    if tls == "private" and domain and not problem:
        trouble = certificate_problem(root, domain)
        if trouble:
            report.error("proxy", "certs/proxy.crt", None, "", trouble,
                         "run `invoke proxy --enable` again (it renews the proxy's certificate)")
    if not (root / CADDYFILE).exists():
        report.error("proxy", CADDYFILE, None, "", "is missing", f"restore it from git: git checkout -- {CADDYFILE}")
    for name in ("PROXY_HTTP_PORT", "PROXY_HTTPS_PORT"):
        if not is_ascii_number(get(name, "")):
            report.error("proxy", ".env", line(name), name, "is not a port number", "set a port, e.g. 80 and 443")
    if get("PROXY_HTTP_PORT") and get("PROXY_HTTP_PORT") == get("PROXY_HTTPS_PORT"):
        report.error("proxy", ".env", line("PROXY_HTTPS_PORT"), "PROXY_HTTPS_PORT", "equals PROXY_HTTP_PORT",
                     "use two ports, normally 80 and 443")
    max_age = get("PROXY_HSTS_MAX_AGE", "")
    if is_ascii_number(max_age) and int(max_age) == 0:
        report.warning("proxy", ".env", line("PROXY_HSTS_MAX_AGE"), "PROXY_HSTS_MAX_AGE",
                       "is 0: browsers may still try plain http first", "set 31536000 once HTTPS works")


def _name_for(host: str) -> str:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return "NAME"
    except ValueError:
        return host


def _port(parts) -> int | None:
    try:
        return parts.port or 443
    except ValueError:
        return None


def _check_compose_file_variable(root: Path, values, report, line, environ) -> None:
    """COMPOSE_FILE replaces Compose's own discovery: nothing it drops may be dropped silently."""
    files = compose_files(values)
    shell = (environ if environ is not None else os.environ).get("COMPOSE_FILE")
    if shell is not None and shell != values.get("COMPOSE_FILE", shell):
        report.warning("compose-file-variable", ".env", line("COMPOSE_FILE"), "COMPOSE_FILE",
                       "is also set in your shell, and Compose uses the shell's", "`unset COMPOSE_FILE`")
    if not files:
        return
    names = [os.path.basename(f) for f in files]
    if names[0] != BASE_FILE:
        report.error("compose-file-variable", ".env", line("COMPOSE_FILE"), "COMPOSE_FILE",
                     f"must start with {BASE_FILE}", "run `invoke proxy --enable` or `--disable` to rewrite it")
    for name in files:
        if not (root / name).exists():
            report.error("compose-file-variable", ".env", line("COMPOSE_FILE"), "COMPOSE_FILE",
                         f"lists {name}, which does not exist", "restore it from git, or run `invoke proxy --disable`")
    if (root / OVERRIDE_FILE).exists() and OVERRIDE_FILE not in names:
        report.error("compose-file-variable", ".env", line("COMPOSE_FILE"), "COMPOSE_FILE",
                     f"leaves out {OVERRIDE_FILE} (the TLS overlay of `invoke harden`): Compose would ignore it",
                     f"run `invoke proxy --enable` again (it lists {OVERRIDE_FILE})")


def _check_network(values, report, line) -> None:
    get = values.get
    try:
        subnet = ipaddress.ip_network(get("PROXY_SUBNET", ""), strict=True)
    except ValueError:
        report.error("proxy", ".env", line("PROXY_SUBNET"), "PROXY_SUBNET",
                     f"{get('PROXY_SUBNET', '')!r} is not a network such as 10.254.254.0/29", "set PROXY_SUBNET=10.254.254.0/29")
        return
    if subnet.version != 4 or not subnet.is_private or subnet.num_addresses < 4:
        report.error("proxy", ".env", line("PROXY_SUBNET"), "PROXY_SUBNET",
                     "must be a private IPv4 network of at least 4 addresses", "set PROXY_SUBNET=10.254.254.0/29")
        return
    try:
        address = ipaddress.ip_address(get("PROXY_ADDRESS", ""))
    except ValueError:
        report.error("proxy", ".env", line("PROXY_ADDRESS"), "PROXY_ADDRESS", "is not an IP address",
                     f"set PROXY_ADDRESS={list(subnet.hosts())[-1]}")
        return
    hosts = list(subnet.hosts())
    if address not in subnet or address == hosts[0] or address not in hosts:
        report.error("proxy", ".env", line("PROXY_ADDRESS"), "PROXY_ADDRESS",
                     f"{address} is not a usable address of {subnet} (the first one is the gateway)",
                     f"set PROXY_ADDRESS={hosts[-1]}")
        return
    if address != hosts[-1]:
        report.warning("proxy", ".env", line("PROXY_ADDRESS"), "PROXY_ADDRESS",
                       f"is not the last address of {subnet}: Docker hands out addresses to web from the first up, "
                       "so the proxy may find its address taken (\"Address already in use\")",
                       f"set PROXY_ADDRESS={hosts[-1]}")
    trusted = [item.strip() for item in get("TRUSTED_PROXIES", "").split(",") if item.strip()]
    if str(address) not in trusted:
        report.warning("proxy", ".env", line("TRUSTED_PROXIES"), "TRUSTED_PROXIES",
                       f"does not list the proxy's address {address}: PostHog logs a warning at boot and its IP "
                       "allow-list (ALLOWED_IP_BLOCKS) would not trust the forwarded client address",
                       f"set TRUSTED_PROXIES={address}")


# ----------------------------------------------------------------------------- the certificate
def certificate_problem(root: Path, domain: str) -> str:
    """Why certs/proxy.crt does not serve ``domain`` (missing, not from certs/ca.crt, wrong name,
    expiring, key mismatch), or ''."""
    from cryptography import x509

    from posthog_compose.configuration import certs

    status = certs.inspect(Path(root), CERT_NAME)
    if status.problem and "does not name the host" not in status.problem:
        return status.problem
    certificate, _ = certs._load(Path(root), CERT_NAME)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    named = [n.lower() for n in names.get_values_for_type(x509.DNSName)]
    named += [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    if domain.lower() not in named:
        return f"proxy.crt does not name {domain}"
    return ""


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
    from posthog_compose.operations import compose, stack
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
    running = any(s.state == "running" for s in stack.service_states(root, runner))
    if not plan.env and not plan.certificate:
        print(f"The edge proxy is already {'on' if enable else 'off'} with these settings: nothing to do.")
        return 0
    print("Plan:")
    for line in plan.lines:
        print(f"  - {line}")
    print("  - check the configuration (.env is put back if it fails)")
    print("  - recreate web and " + ("start the proxy" if enable else "remove the proxy; WEB_PORT is published again")
          if running else "  - the deployment is not running: `invoke up` starts it with these settings")
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
        raise OperatorError(f"the proxy could not be switched {'on' if enable else 'off'}: {reason}. The previous "
                            "configuration is back and healthy; see the log lines above")
    if not enable:
        # Compose leaves the proxy's network behind when the overlay is gone; nothing uses it now.
        runner.run(["docker", "network", "rm", f"{compose.project_name(root)}_{NETWORK}"], capture=True, check=False)
    print(f"URL check: {detail}.")
    print(f"Edge proxy {'on' if enable else 'off'}: PostHog is at {after.get('SITE_URL', '')}.")
    return 0


# ----------------------------------------------------------------------------- URL check through the proxy
def request(values: dict[str, str], path: str, root: Path | None = None, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """GET ``path`` through the proxy: HTTPS on 127.0.0.1:PROXY_HTTPS_PORT with DOMAIN as the TLS
    server name and the certificate verified (certs/ca.crt for PROXY_TLS=private, the system's CAs
    for ACME). Returns (status, Location, body); raises OSError, ssl.SSLError or HTTPException."""
    import http.client
    import socket
    import ssl

    from posthog_compose import ROOT

    root = Path(root or ROOT)
    domain = values.get("DOMAIN", "")
    port = int(values.get("PROXY_HTTPS_PORT", "443") or 443)
    if values.get("PROXY_TLS") == "private":
        context = ssl.create_default_context(cafile=str(root / "certs" / "ca.crt"))
    else:
        context = ssl.create_default_context()

    class Connection(http.client.HTTPSConnection):
        def connect(self):
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            self.sock = context.wrap_socket(raw, server_hostname=domain)

    connection = Connection(domain, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": urlsplit(values.get("SITE_URL", "")).netloc or domain})
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read(4000)
    finally:
        connection.close()


def check_url(values: dict[str, str], root: Path | None = None, timeout: float = 30.0) -> tuple[bool, str]:
    """stack.check_url's answer when the proxy is on: GET / through the proxy, certificate verified."""
    import http.client
    import ssl
    import time

    domain = values.get("DOMAIN", "")
    port = int(values.get("PROXY_HTTPS_PORT", "443") or 443)
    shown = values.get("SITE_URL", f"https://{domain}")
    deadline = time.monotonic() + timeout
    detail = "no answer"
    while True:
        try:
            for path in ("/", "/_health"):
                status, location, _ = request(values, path, root)
                if status == 200:
                    return True, f"{shown}{path} answers 200 through the proxy (certificate verified)"
                if path == "/" and status == 302 and location.rstrip("/").endswith("/preflight"):
                    return True, f"{shown}/ redirects to /preflight through the proxy (certificate verified)"
                detail = f"GET {path} through the proxy answered {status}"
        except ssl.SSLCertVerificationError as exc:
            detail = f"the proxy's certificate does not verify ({exc.verify_message})"
        except (OSError, http.client.HTTPException) as exc:
            detail = f"https://127.0.0.1:{port} (as {domain}) unreachable ({exc})"
        if time.monotonic() > deadline:
            return False, detail
        time.sleep(0.5)


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

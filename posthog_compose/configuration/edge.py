"""The edge proxy as the operator declares it: which files COMPOSE_FILE lists, the names a
certificate can be issued for, and config-check's rules for HTTPS, cookies and the proxy (the
combinations that break logins, CSRF or redirects), plus the state of certs/proxy.crt.

Switching the proxy on and off is operations/proxy.py (`invoke proxy`); asking PostHog through it
is operations/probes.py.

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
import os
import re
from pathlib import Path
from posthog_compose.configuration.formats import HOSTNAME_RE, is_ascii_number, urlsplit  # urlsplit that never raises

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


# Always fullmatch: the pattern ends in `$`, which also matches before a final line break, and DOMAIN
# is pasted into the Caddyfile's text.
HOST_RE = HOSTNAME_RE


def domain_problem(domain: str) -> str | None:
    if not domain:
        return "is empty"
    if not HOST_RE.fullmatch(domain):
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
    elif domain and not problem:
        # The proxy redirects plain HTTP to SITE_URL: it is https://DOMAIN[:PORT] and nothing else (a
        # port that is not a number, a space or a line break after it would pass urlsplit).
        exact = re.fullmatch(rf"https://{re.escape(domain)}(?::([0-9]{{1,5}}))?/?", site, re.IGNORECASE)
        wanted = get("PROXY_HTTPS_PORT", "443")
        if not exact:
            report.error("proxy", ".env", line("SITE_URL"), "SITE_URL",
                         "holds more than https://DOMAIN[:PORT] (the proxy redirects plain HTTP to it, and PostHog "
                         "builds its links from it)", f"set SITE_URL={site_url(domain, wanted)}")
        elif is_ascii_number(wanted) and int(exact.group(1) or 443) != int(wanted):
            report.error("proxy", ".env", line("SITE_URL"), "SITE_URL",
                         f"uses port {int(exact.group(1) or 443)} but the proxy serves HTTPS on PROXY_HTTPS_PORT={wanted}",
                         f"set SITE_URL={site_url(domain, wanted)}")
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
    for name in parse_time_names(root):
        if name not in ("DOMAIN", "PROXY_TLS") and name in values:  # those two have their own rules above
            trouble = caddy_value_problem(name, values[name])
            if trouble:
                report.error("proxy", ".env", line(name), name, f"{trouble}, {PASTED}", CADDY_FIX)
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
    if str(address) not in trusted and not get("ALLOWED_IP_BLOCKS"):  # with an allow-list: access.py's error
        report.warning("proxy", ".env", line("TRUSTED_PROXIES"), "TRUSTED_PROXIES",
                       f"does not list the proxy's address {address}: PostHog logs a warning at boot and its IP "
                       "allow-list (ALLOWED_IP_BLOCKS) would not trust the forwarded client address",
                       f"set TRUSTED_PROXIES={address}")


# ----------------------------------------------------------------------------- values pasted into the Caddyfile
#: Caddy replaces a dollar sign and NAME in braces with the value of NAME in the Caddyfile's TEXT before it
#: reads the file, comments included: such a value is Caddyfile syntax, and a space, brace, quote or line
#: break in it could add a directive or a whole site. proxy/Caddyfile uses it only where Caddy needs the
#: value when it loads the file (the site's name, the certificate snippet); env.NAME in braces is read
#: while a request is served and stays a value.
PARSE_TIME_RE = re.compile(r"\{\$([^}:]*)(?::[^}]*)?\}")
#: What any other value pasted into the Caddyfile may hold: one plain word.
CADDY_WORD_RE = re.compile(r"[A-Za-z0-9._-]+")
PASTED = "and Caddy pastes it into proxy/Caddyfile's text before reading it, so it could add configuration"
CADDY_FIX = "correct it in .env, then run `invoke config-check`"


def parse_time_names(root: Path) -> list[str]:
    """The variables proxy/Caddyfile pastes into its own text, in order of first use."""
    try:
        text = (Path(root) / CADDYFILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return list(dict.fromkeys(PARSE_TIME_RE.findall(text)))


def caddy_value_problem(name: str, value: str) -> str | None:
    """Why ``value`` may not be pasted into the Caddyfile as ``name``, or None: DOMAIN is a host name,
    PROXY_TLS acme or private, anything else one plain word."""
    if name == "DOMAIN":
        return domain_problem(value)
    if name == "PROXY_TLS":
        return None if value in TLS_MODES else f"is {value!r}, not acme or private"
    if not CADDY_WORD_RE.fullmatch(value):
        return "holds more than letters, digits, dots, hyphens and underscores"
    return None


def check_proxy_environment(root: Path, service, report, line) -> None:
    """config-check's rule on the proxy's environment as Compose hands it over (its effective model): the
    values Caddy pastes into the Caddyfile, wherever they came from (a value in the shell wins over .env's).
    A name already refused from .env is not reported twice."""
    environment = (service or {}).get("environment") if isinstance(service, dict) else None
    if not isinstance(environment, dict):
        return
    refused = {f.subject for f in report.findings if f.severity == "error"}
    for name in parse_time_names(root):
        value = environment.get(name)
        if value is None or name in refused:
            continue
        trouble = caddy_value_problem(name, str(value))
        if trouble:
            report.error("proxy", ".env", line(name), name,
                         f"reaches the proxy (Compose prefers a value set in your shell to .env's) and {trouble}, "
                         f"{PASTED}", f"`unset {name}` in your shell, or correct it in .env")


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

"""Who may use the app: ALLOWED_IP_BLOCKS, and config-check's rules for it together with the proxy
settings PostHog reads beside it (TRUSTED_PROXIES, TRUST_ALL_PROXIES, IS_BEHIND_PROXY).

What PostHog 1.43.0 does (posthog/middleware.py:22-80, posthog/settings/access.py:29-50):
AllowIPMiddleware is on when ALLOWED_IP_BLOCKS is not empty. It lets every request whose first path
segment is one of ALWAYS_ALLOWED_ENDPOINTS through (ingestion and public files), and answers 403 to any
other request whose client address is not in one of the blocks. The client address is REMOTE_ADDR,
unless IS_BEHIND_PROXY (which sets USE_X_FORWARDED_HOST) and the request carries X-Forwarded-For: then
it is the first X-Forwarded-For entry, believed only when TRUST_ALL_PROXIES is non-empty or when the
peer and every later entry are in TRUSTED_PROXIES, compared as TEXT (a network never matches); otherwise
there is no client address and the request is refused.

The edge proxy enforces the same split before PostHog (proxy/Caddyfile); the path list lives there once.
"""

from __future__ import annotations

import ipaddress

from posthog_compose.configuration import edge
from posthog_compose.configuration.formats import parse_ip_blocks

NAME = "ALLOWED_IP_BLOCKS"
#: The proxy's entrypoint hands at most this many blocks to Caddy (one placeholder each in proxy/Caddyfile).
EDGE_SLOTS = 10
RULE = "allow-list"  # written out at each report below: the handbook lists the literal ids it finds
PUBLIC_INTERFACES = ("", "0.0.0.0", "::", "[::]")


def blocks(values: dict[str, str]) -> list:
    """The allow-list's networks, or [] when the app is public or the value is malformed (a format error)."""
    try:
        return parse_ip_blocks(values.get(NAME, ""))
    except ValueError:
        return []


def is_private(values: dict[str, str]) -> bool:
    """Whether only some networks may use the app: an allow-list that does not cover every address."""
    return any(block.prefixlen > 0 for block in blocks(values))


def trusted_proxies(values: dict[str, str]) -> list[str]:
    """TRUSTED_PROXIES as PostHog 1.43 splits it (middleware.py:45)."""
    value = values.get("TRUSTED_PROXIES") or ""
    return [item.strip() for item in value.split(",")] if value else []


def web_published_publicly(document) -> bool:
    """Whether docker-compose.yml (a ComposeDocument, or None) publishes web's port on every interface."""
    web = (getattr(document, "services", None) or {}).get("web")
    ports = (web.get("ports") if isinstance(web, dict) else None) or []
    for port in ports:
        if isinstance(port, dict):
            if str(port.get("host_ip") or "") in PUBLIC_INTERFACES:
                return True
        elif isinstance(port, (str, int)) and not str(port).startswith(("127.0.0.1:", "[::1]:", "localhost:")):
            return True  # "PORT:8000" or "${WEB_PORT...}:8000": every interface
    return False


def check(env, values: dict[str, str], document, report) -> None:
    """config-check's rules for the allow-list (called with the edge proxy's rules)."""
    line = env.line_of
    allowed = blocks(values)
    behind = values.get("IS_BEHIND_PROXY", "").lower() == "true"
    trust_all = bool(values.get("TRUST_ALL_PROXIES"))
    trusted = trusted_proxies(values)
    proxy_on = edge.enabled(values)
    if not allowed:
        if trust_all and behind:
            report.warning("allow-list", ".env", line("TRUST_ALL_PROXIES"), "TRUST_ALL_PROXIES",
                           "is set: it does nothing until ALLOWED_IP_BLOCKS is set, and then believes any "
                           "client's X-Forwarded-For", "leave it empty; list your proxy in TRUSTED_PROXIES")
        return

    misspelt = [entry for entry in trusted if not _is_exact_address(entry)]
    for entry in misspelt[:1]:  # one line: the first that never matches
        report.error("allow-list", ".env", line("TRUSTED_PROXIES"), "TRUSTED_PROXIES",
                     f"holds {entry!r}: PostHog 1.43 compares each entry as text with the proxy's address "
                     "(posthog/middleware.py:66), so a network or another spelling never matches and every "
                     "request through the proxy is refused", "list each proxy's address as it connects, "
                     "e.g. TRUSTED_PROXIES=10.254.254.6")
    if proxy_on:
        _check_behind_the_edge_proxy(values, allowed, trusted, trust_all or bool(misspelt), report, line)
    elif behind and not trust_all and not trusted:
        report.error("allow-list", ".env", line("TRUSTED_PROXIES"), "TRUSTED_PROXIES",
                     "is empty while ALLOWED_IP_BLOCKS is set and IS_BEHIND_PROXY=true: PostHog refuses every "
                     "request that arrives through a proxy (it trusts no X-Forwarded-For), so nobody can log in",
                     "list your reverse proxy's address in TRUSTED_PROXIES, or set IS_BEHIND_PROXY=false")
    if trust_all and behind and not proxy_on and web_published_publicly(document):
        report.error("allow-list", ".env", line("TRUST_ALL_PROXIES"), "TRUST_ALL_PROXIES",
                     f"is set while web's port (WEB_PORT={values.get('WEB_PORT', '')}) is published on every "
                     "interface: anyone can send X-Forwarded-For: <an allowed address> and get past "
                     "ALLOWED_IP_BLOCKS", "leave TRUST_ALL_PROXIES empty and list your proxy in TRUSTED_PROXIES")


def _check_behind_the_edge_proxy(values, allowed, trusted, trusted_reported, report, line) -> None:
    address = values.get("PROXY_ADDRESS", "")
    if not trusted_reported and address not in trusted:
        report.error("allow-list", ".env", line("TRUSTED_PROXIES"), "TRUSTED_PROXIES",
                     f"does not list the proxy's address {address} while ALLOWED_IP_BLOCKS is set: every request "
                     "reaches PostHog from the proxy, whose X-Forwarded-For it would not believe, so it refuses "
                     "them all and nobody can log in", f"set TRUSTED_PROXIES={address} "
                     "(`invoke proxy --enable` does)")
    if len(allowed) > EDGE_SLOTS:
        report.error("allow-list", ".env", line(NAME), NAME,
                     f"lists {len(allowed)} networks; the edge proxy takes at most {EDGE_SLOTS}",
                     "merge neighbouring networks into larger ones")
    try:
        subnet = ipaddress.ip_network(values.get("PROXY_SUBNET", ""), strict=True)
        gateway = next(subnet.hosts())
    except (ValueError, StopIteration):
        return  # the proxy's own rule reports it
    for block in allowed:
        if block.version == gateway.version and gateway in block:
            report.error("allow-list", ".env", line(NAME), NAME,
                         f"includes {block}, which holds {gateway}, the gateway of the proxy's network "
                         f"PROXY_SUBNET={subnet}: a client that Docker's userland proxy forwards appears to come "
                         "from it, so this would let anyone in", "leave that address out of ALLOWED_IP_BLOCKS, "
                         "or move PROXY_SUBNET elsewhere")
            return


def _is_exact_address(entry: str) -> bool:
    try:
        return str(ipaddress.ip_address(entry)) == entry
    except ValueError:
        return False

"""STAND-IN for PostHog 1.43's AllowIPMiddleware (posthog/middleware.py:22-80 at the 1.43.0 tag) and the
settings it reads (posthog/settings/access.py:29-50, posthog/settings/utils.py:25-28). Pure functions: the
web stand-in (bin/docker-server) asks `refusal` after its view ran, as the middleware does."""

import os
from ipaddress import ip_address, ip_network

# posthog/middleware.py:22-32, word for word.
ALWAYS_ALLOWED_ENDPOINTS = [
    "decide",
    "engage",
    "track",
    "capture",
    "batch",
    "e",
    "s",
    "static",
    "_health",
]
# posthog/middleware.py:77-80: the body and status of a refusal.
NOT_ALLOWED_STATUS = 403
NOT_ALLOWED_BODY = ("Your IP is not allowed. Check your ALLOWED_IP_BLOCKS settings. If you are behind a proxy, you "
                    "need to set TRUSTED_PROXIES. See https://posthog.com/docs/deployment/running-behind-proxy")


def get_list(text):
    """posthog/settings/utils.py:25-28."""
    if not text:
        return []
    return [item.strip() for item in text.split(",")]


def settings_from(environ=None):
    """The settings the middleware reads, as posthog/settings/access.py:30-50 sets them. USE_X_FORWARDED_HOST
    is true only with IS_BEHIND_PROXY (:35-36, str_to_bool); TRUST_ALL_PROXIES is os.getenv (:32): any
    non-empty value counts; TRUSTED_PROXIES os.getenv (:31), split by the middleware (middleware.py:45)."""
    environ = os.environ if environ is None else environ
    behind = environ.get("IS_BEHIND_PROXY", "").strip().lower() in ("y", "yes", "t", "true", "on", "1")
    trusted = environ.get("TRUSTED_PROXIES") or None
    return {
        "ALLOWED_IP_BLOCKS": get_list(environ.get("ALLOWED_IP_BLOCKS", "")),
        "USE_X_FORWARDED_HOST": behind,
        "TRUSTED_PROXIES": [item.strip() for item in trusted.split(",")] if trusted else [],
        "TRUST_ALL_PROXIES": environ.get("TRUST_ALL_PROXIES", False),
    }


def extract_client_ip(settings, remote_addr, forwarded_for_header):
    """posthog/middleware.py:48-68: REMOTE_ADDR, or with USE_X_FORWARDED_HOST and an X-Forwarded-For the
    first entry of it, believed when TRUST_ALL_PROXIES is set or when the peer and every later entry are
    in TRUSTED_PROXIES (compared as text); None when not believed."""
    client_ip = remote_addr
    if settings["USE_X_FORWARDED_HOST"]:
        forwarded_for = [ip.strip() for ip in forwarded_for_header.split(",")] if forwarded_for_header is not None else []
        if forwarded_for:
            closest_proxy = client_ip
            client_ip = forwarded_for.pop(0)
            if settings["TRUST_ALL_PROXIES"]:
                return client_ip
            proxies = [closest_proxy] + forwarded_for
            for proxy in proxies:
                if proxy not in settings["TRUSTED_PROXIES"]:
                    return None
    return client_ip


def refusal(settings, path, remote_addr, forwarded_for_header):
    """posthog/middleware.py:38-42, 70-80: None when the response stands (no allow-list: the middleware is
    not used; a public endpoint; an allowed client), else (status, body). An address or block ipaddress
    cannot read raises ValueError there, which Django answers with 500."""
    if not settings["ALLOWED_IP_BLOCKS"]:
        return None
    if path.split("/")[1] in ALWAYS_ALLOWED_ENDPOINTS:
        return None
    ip = extract_client_ip(settings, remote_addr, forwarded_for_header)
    try:
        if ip and any(ip_address(ip) in ip_network(block, strict=False) for block in settings["ALLOWED_IP_BLOCKS"]):
            return None
    except ValueError:
        return 500, "Server Error (500)"
    return NOT_ALLOWED_STATUS, NOT_ALLOWED_BODY

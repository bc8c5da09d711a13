"""Asking PostHog over HTTPS through the edge proxy from this host: 127.0.0.1:PROXY_HTTPS_PORT
with DOMAIN as the TLS server name and the certificate verified (`up`'s URL check and readiness
when the proxy is on; stack.py asks WEB_PORT directly otherwise). Every request has one deadline
and a bounded answer (wire.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit


#: The longest answer body read through the proxy: a readiness report is a few hundred bytes.
MAX_BODY = 4000


def _proxy_port(values: dict[str, str]) -> int:
    from posthog_compose.configuration.validators import port_number

    return port_number(values.get("PROXY_HTTPS_PORT", "443") or "443") or 443


def request(values: dict[str, str], path: str, root: Path | None = None, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """GET ``path`` through the proxy: HTTPS on 127.0.0.1:PROXY_HTTPS_PORT with DOMAIN as the TLS
    server name and the certificate verified (certs/ca.crt for PROXY_TLS=private, the system's CAs
    for ACME), all of it within ``timeout`` seconds and the body cut at MAX_BODY bytes (wire.py).
    Returns (status, Location, body); raises OSError (wire.WireError among them) or ssl.SSLError."""
    import ssl

    from posthog_compose import ROOT
    from posthog_compose.operations import wire

    root = Path(root or ROOT)
    domain = values.get("DOMAIN", "")
    if values.get("PROXY_TLS") == "private":
        context = ssl.create_default_context(cafile=str(root / "certs" / "ca.crt"))
    else:
        context = ssl.create_default_context()
    response = wire.http_request("127.0.0.1", _proxy_port(values), "GET", path,
                                 {"Host": urlsplit(values.get("SITE_URL", "")).netloc or domain}, seconds=timeout,
                                 max_body=MAX_BODY, context=context, server_hostname=domain, peer="the proxy")
    return response.status, response.header("Location"), response.body


def check_url(values: dict[str, str], root: Path | None = None, timeout: float = 30.0) -> tuple[bool, str]:
    """stack.check_url's answer when the proxy is on: GET / through the proxy, certificate verified.
    Asked again until ``timeout``; each request within what is left of it (at most 5 s)."""
    import ssl
    import time

    domain = values.get("DOMAIN", "")
    port = _proxy_port(values)
    shown = values.get("SITE_URL", f"https://{domain}")
    deadline = time.monotonic() + timeout
    detail = "no answer"
    while True:
        try:
            for path in ("/", "/_health"):
                left = min(5.0, max(deadline - time.monotonic(), 0.5))
                status, location, _ = request(values, path, root, timeout=left)
                if status == 200:
                    return True, f"{shown}{path} answers 200 through the proxy (certificate verified)"
                if path == "/" and status == 302 and location.rstrip("/").endswith("/preflight"):
                    return True, f"{shown}/ redirects to /preflight through the proxy (certificate verified)"
                detail = f"GET {path} through the proxy answered {status}"
        except ssl.SSLCertVerificationError as exc:
            detail = f"the proxy's certificate does not verify ({exc.verify_message})"
        except OSError as exc:
            detail = f"https://127.0.0.1:{port} (as {domain}) unreachable ({exc})"
        if time.monotonic() > deadline:
            return False, detail
        time.sleep(0.5)

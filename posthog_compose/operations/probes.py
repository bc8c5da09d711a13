"""Asking PostHog over HTTPS through the edge proxy from this host: 127.0.0.1:PROXY_HTTPS_PORT
with DOMAIN as the TLS server name and the certificate verified (`up`'s URL check and readiness
when the proxy is on; stack.py asks WEB_PORT directly otherwise)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit


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

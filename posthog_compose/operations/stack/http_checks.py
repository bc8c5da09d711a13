"""PostHog over HTTP: the readiness check (/_readyz, directly or through the proxy, with the
failing checks named) and the URL check of SITE_URL. Every request has one deadline and a bounded
answer (wire.py): a web server that stalls or trickles costs the check's timeout, never more.
"""

from __future__ import annotations

import json
import time

from posthog_compose.operations import wire
from posthog_compose.operations.stack.here import external_note

#: The longest answer body read: /_readyz's report is a few hundred bytes.
MAX_BODY = 2000


#: After web's server first answers (its migrations are done: `./bin/migrate && exec server`), how long
#: readiness may keep failing before the version counts as broken. The datastores were healthy when
#: it started, so a healthy PostHog turns ready within seconds; waiting for --timeout would only
#: prolong the outage of a broken version.
READINESS_FAIL_AFTER = 8.0


def _get(values: dict[str, str], path: str, seconds: float) -> wire.Response:
    """GET ``path`` from web on 127.0.0.1:WEB_PORT within ``seconds``, the body cut at MAX_BODY bytes.
    The header keeps Django's SSL redirect (IS_BEHIND_PROXY=true) from answering 301, as the web
    healthcheck does."""
    port = _web_port(values)
    if port is None:
        raise wire.WireError("WEB_PORT is not a port number (`invoke config-check` says more)")
    return wire.http_request("127.0.0.1", port, "GET", path,
                             {"Host": f"127.0.0.1:{port}", "X-Forwarded-Proto": "https"}, seconds=seconds,
                             max_body=MAX_BODY, peer=f"web on port {port}")


def _web_port(values: dict[str, str]) -> int | None:
    from posthog_compose.configuration.validators import port_number

    return port_number(values.get("WEB_PORT", "8080"))


def readiness(values: dict[str, str], timeout: float = 3.0) -> tuple[bool, bool, str]:
    """PostHog's readiness: `GET /_readyz` (every check: PostgreSQL reachable and migrated, ClickHouse,
    Kafka, Redis, the Celery broker; 503 naming the failing ones). Returns (ready, answered, detail).
    A server without /_readyz (404, older releases) is asked /_health instead; both within ``timeout``."""
    from posthog_compose.configuration import edge

    if edge.enabled(values):  # WEB_PORT is not published: ask through the proxy
        return _readiness_through_proxy(values, timeout)
    base = f"http://127.0.0.1:{values.get('WEB_PORT', '8080')}"
    ends = time.monotonic() + timeout
    for path in ("/_readyz", "/_health"):
        try:
            response = _get(values, path, max(ends - time.monotonic(), 0.001))
        except OSError as exc:
            return False, False, f"{base} unreachable ({exc})"
        if 200 <= response.status < 300:
            return True, True, f"{path} answered {response.status}"
        if response.status == 404 and path == "/_readyz":
            continue
        text, failing = _failing_body(response.body.decode(errors="replace"))
        return False, True, f"{path} answered {response.status}{text}{external_note(values, failing)}"
    return False, True, "no readiness endpoint"


def _readiness_through_proxy(values: dict[str, str], timeout: float) -> tuple[bool, bool, str]:
    from posthog_compose.operations import probes

    try:
        status, _, body = probes.request(values, "/_readyz", timeout=timeout)
    except OSError as exc:
        return False, False, f"the proxy is unreachable or its certificate does not verify ({exc})"
    if status == 200:
        return True, True, "/_readyz answered 200 through the proxy"
    text, failing = _failing_body(body.decode(errors="replace"))
    return False, True, f"/_readyz answered {status} through the proxy{text}{external_note(values, failing)}"


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _failing_body(body: str) -> tuple[str, list[str]]:
    try:
        checks = json.loads(body)
    except ValueError:
        first = body.strip().splitlines()[:1]
        return (f": {_printable(first[0], 120)}" if first else ""), []
    if isinstance(checks, dict):
        failing = [_printable(str(name), 40) for name, ok in checks.items() if ok is False][:20]
        if failing:
            return f": {', '.join(failing)} failing", failing
    return "", []


def check_url(values: dict[str, str], timeout: float = 30.0) -> tuple[bool, str]:
    """A fresh install's promise: `/` answers 302 to /preflight on a fresh install, or /_health 200.
    Asked again until ``timeout``; each request within what is left of it (at most 5 s)."""
    from posthog_compose.configuration import edge
    from posthog_compose.operations import probes

    if edge.enabled(values):  # WEB_PORT is not published: ask through the proxy, over verified HTTPS
        return probes.check_url(values, timeout=timeout)
    base = f"http://127.0.0.1:{values.get('WEB_PORT', '8080')}"
    deadline = time.monotonic() + timeout
    detail = "no answer"
    while True:
        try:
            response = _get(values, "/", min(5.0, max(deadline - time.monotonic(), 0.5)))
            detail = f"GET / answered {response.status}"
            if response.status == 200:
                return True, f"{base}/ answers 200"
            if response.status == 302 and response.header("Location").rstrip("/").endswith("/preflight"):
                return True, f"{base}/ redirects to /preflight (PostHog's first-run setup)"
            try:
                health = _get(values, "/_health", min(5.0, max(deadline - time.monotonic(), 0.5)))
                if health.status == 200:
                    return True, f"{base}/_health answers 200"
                detail += f"; /_health: {health.status}"
            except OSError as health_error:
                detail += f"; /_health: {health_error}"
        except OSError as exc:
            detail = f"{base}/ unreachable ({exc})"
        if time.monotonic() > deadline:
            return False, detail
        time.sleep(0.5)

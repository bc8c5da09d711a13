"""PostHog over HTTP: the readiness check (/_readyz, directly or through the proxy, with the
failing checks named) and the URL check of SITE_URL.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from posthog_compose.operations.stack.here import external_note


#: After web's server first answers (its migrations are done: `./bin/migrate && exec server`), how long
#: readiness may keep failing before the version counts as broken. The datastores were healthy when
#: it started, so a healthy PostHog turns ready within seconds; waiting for --timeout would only
#: prolong the outage of a broken version.
READINESS_FAIL_AFTER = 8.0


def readiness(values: dict[str, str], timeout: float = 3.0) -> tuple[bool, bool, str]:
    """PostHog's readiness: `GET /_readyz` (every check: PostgreSQL reachable and migrated, ClickHouse,
    Kafka, Redis, the Celery broker; 503 naming the failing ones). Returns (ready, answered, detail).
    A server without /_readyz (404, older releases) is asked /_health instead. The header keeps
    Django's SSL redirect (IS_BEHIND_PROXY=true) from answering 301, as the web healthcheck does."""
    from posthog_compose.configuration import edge

    if edge.enabled(values):  # WEB_PORT is not published: ask through the proxy
        return _readiness_through_proxy(values, timeout)
    base = f"http://127.0.0.1:{values.get('WEB_PORT', '8080')}"
    detail = ""
    for path in ("/_readyz", "/_health"):
        request = urllib.request.Request(f"{base}{path}", headers={"X-Forwarded-Proto": "https"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return True, True, f"{path} answered {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path == "/_readyz":
                continue
            text, failing = _failing_checks(exc)
            return False, True, f"{path} answered {exc.code}{text}{external_note(values, failing)}"
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{base} unreachable ({getattr(exc, 'reason', exc)})"
            return False, False, detail
    return False, True, detail or "no readiness endpoint"


def _readiness_through_proxy(values: dict[str, str], timeout: float) -> tuple[bool, bool, str]:
    import http.client

    from posthog_compose.operations import probes

    try:
        status, _, body = probes.request(values, "/_readyz", timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        return False, False, f"the proxy is unreachable or its certificate does not verify ({exc})"
    if status == 200:
        return True, True, "/_readyz answered 200 through the proxy"
    text, failing = _failing_body(body.decode(errors="replace"))
    return False, True, f"/_readyz answered {status} through the proxy{text}{external_note(values, failing)}"


def _failing_checks(error: urllib.error.HTTPError) -> tuple[str, list[str]]:
    """(': postgres, cache failing', the failing check names) from /_readyz's JSON body, or its first line."""
    try:
        body = error.read(2000).decode(errors="replace")
    except OSError:
        return "", []
    return _failing_body(body)


def _failing_body(body: str) -> tuple[str, list[str]]:
    try:
        checks = json.loads(body)
    except ValueError:
        first = body.strip().splitlines()[:1]
        return (f": {first[0][:120]}" if first else ""), []
    if isinstance(checks, dict):
        failing = [str(name) for name, ok in checks.items() if ok is False]
        if failing:
            return f": {', '.join(failing)} failing", failing
    return "", []


def check_url(values: dict[str, str], timeout: float = 30.0) -> tuple[bool, str]:
    """A fresh install's promise: `/` answers 302 to /preflight on a fresh install, or /_health 200."""
    from posthog_compose.configuration import edge
    from posthog_compose.operations import probes

    if edge.enabled(values):  # WEB_PORT is not published: ask through the proxy, over verified HTTPS
        return probes.check_url(values, timeout=timeout)
    base = f"http://127.0.0.1:{values.get('WEB_PORT', '8080')}"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    deadline = time.monotonic() + timeout
    detail = "no answer"
    while True:
        try:
            with opener.open(f"{base}/", timeout=5) as response:
                detail = f"GET / answered {response.status}"
                if response.status == 200:
                    return True, f"{base}/ answers 200"
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location", "")
            if exc.code == 302 and location.rstrip("/").endswith("/preflight"):
                return True, f"{base}/ redirects to /preflight (PostHog's first-run setup)"
            detail = f"GET / answered {exc.code}"
            try:
                with opener.open(f"{base}/_health", timeout=5) as health:
                    if health.status == 200:
                        return True, f"{base}/_health answers 200"
            except (urllib.error.URLError, OSError) as health_error:
                detail += f"; /_health: {getattr(health_error, 'code', health_error)}"
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{base}/ unreachable ({getattr(exc, 'reason', exc)})"
        if time.monotonic() > deadline:
            return False, detail
        time.sleep(0.5)

"""The probe's first hop: which project the event goes to, and sending it to PostHog's public capture endpoint
as any client would: through the edge proxy when it is on (HTTPS to 127.0.0.1:PROXY_HTTPS_PORT as DOMAIN,
certificate verified, as probes.request asks), else to web's published port.

Capture needs a project API key (posthog/api/capture.py:208-221; the token is checked against
posthog_team.api_token: posthog/api/utils.py:312-327). Unless --token names one, the first project's is
read from the local PostgreSQL (psql in the db container); it is never printed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from posthog_compose.configuration import compose, datastores, edge
from posthog_compose.errors import OperatorError
from posthog_compose.operations.ingestion.path import CAPTURE_PATH, PROBE_EVENT

#: A project API key as PostHog makes them (phc_ and URL-safe base64) or older hex ones.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{10,200}")


@dataclass(frozen=True)
class Project:
    token: str
    team_id: int | None  # None when PostgreSQL is external and --token named the project


@dataclass(frozen=True)
class Answer:
    """What capture answered: ``status`` 0 when nothing answered; ``detail`` says what happened."""

    status: int
    detail: str
    body: str = ""


def _psql(root: Path, runner, values: dict[str, str], sql: str) -> str:
    result = runner.run(compose.command(root, "exec", "-T", "db", "psql", "-At", "-U",
                                        values.get("POSTGRES_USER", "posthog"), "-d",
                                        values.get("POSTGRES_DB", "posthog"), "-c", sql),
                        capture=True, check=False, mutating=False, timeout=30)
    if result.returncode != 0:
        raise OperatorError("the project's API key cannot be read from PostgreSQL (`db` is not running or "
                            "refuses psql): start it with `invoke up`, or pass --token with the project API key "
                            "(PostHog: Project settings)")
    return (result.stdout or "").strip()


def project(root: Path, runner, values: dict[str, str], token: str | None) -> Project:
    """The project the probe's event goes to: --token's, else the first project of the local PostgreSQL."""
    if token is not None:
        token = token.strip()
        if not TOKEN_RE.fullmatch(token):
            raise OperatorError("--token takes a project API key (10-200 letters, digits, _ or -, e.g. phc_...): "
                                "PostHog shows it under Project settings")
    if datastores.is_external(values, "postgres"):
        if token is None:
            raise OperatorError("PostgreSQL is external, so the probe cannot look up a project API key: pass "
                                "--token with the project API key (PostHog: Project settings)")
        return Project(token, None)
    if token is not None:
        found = _psql(root, runner, values, f"SELECT id FROM posthog_team WHERE api_token = '{token}'")
        if not found.isdigit():
            raise OperatorError("--token: no project of this PostHog has that API key (PostHog: Project settings)")
        return Project(token, int(found))
    found = _psql(root, runner, values, "SELECT id || '|' || api_token FROM posthog_team ORDER BY id LIMIT 1")
    team_id, _, first = found.partition("|")
    if not team_id.isdigit() or not TOKEN_RE.fullmatch(first):
        raise OperatorError("PostHog has no project yet, so there is nowhere to send an event: finish the "
                            "first-run setup at SITE_URL (it creates the first project), then run `invoke probe` "
                            "again")
    return Project(first, int(team_id))


def payload(project: Project, distinct_id: str, timestamp: str) -> bytes:
    """A single event as the server libraries send it to /capture/ (api_key, event, distinct_id, properties)."""
    return json.dumps({"api_key": project.token, "event": PROBE_EVENT, "distinct_id": distinct_id,
                       "timestamp": timestamp,
                       "properties": {"$lib": "posthog-compose-probe", "probe": distinct_id}}).encode()


def target(values: dict[str, str]) -> str:
    """Where the event goes, as people read it."""
    if edge.enabled(values):
        site = values.get("SITE_URL") or f"https://{values.get('DOMAIN', '')}"
        return f"{site.rstrip('/')}{CAPTURE_PATH} (through the edge proxy)"
    return f"http://127.0.0.1:{values.get('WEB_PORT', '8000')}{CAPTURE_PATH}"


def _post_through_proxy(values: dict[str, str], root: Path, body: bytes, timeout: float):
    """POST through the proxy with the connection probes.request makes (HTTPS on 127.0.0.1 as DOMAIN)."""
    import http.client
    import socket
    import ssl

    domain = values.get("DOMAIN", "")
    port = int(values.get("PROXY_HTTPS_PORT", "443") or 443)
    if values.get("PROXY_TLS") == "private":
        context = ssl.create_default_context(cafile=str(Path(root) / "certs" / "ca.crt"))
    else:
        context = ssl.create_default_context()

    class Connection(http.client.HTTPSConnection):
        def connect(self):
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            self.sock = context.wrap_socket(raw, server_hostname=domain)

    connection = Connection(domain, port, timeout=timeout)
    try:
        connection.request("POST", CAPTURE_PATH, body=body, headers={
            "Host": urlsplit(values.get("SITE_URL", "")).netloc or domain, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read(2000)
    finally:
        connection.close()


def _post_direct(values: dict[str, str], body: bytes, timeout: float):
    """POST to web's published port. The header is what a proxy in front adds: with IS_BEHIND_PROXY it keeps
    Django's SSL redirect from answering 301, as web's healthcheck does."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", int(values.get("WEB_PORT", "8000") or 8000), timeout=timeout)
    try:
        connection.request("POST", CAPTURE_PATH, body=body, headers={"Content-Type": "application/json",
                                                                     "X-Forwarded-Proto": "https"})
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read(2000)
    finally:
        connection.close()


def send(values: dict[str, str], root: Path, body: bytes, timeout: float = 15.0) -> Answer:
    """POST the event; the answer with a sentence for people (the next step when it is not 200)."""
    import http.client
    import ssl

    try:
        if edge.enabled(values):
            status, location, raw = _post_through_proxy(values, root, body, timeout)
        else:
            status, location, raw = _post_direct(values, body, timeout)
    except ssl.SSLCertVerificationError as exc:
        return Answer(0, f"the proxy's certificate does not verify ({exc.verify_message}): `invoke proxy` shows it")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, f"nothing answered at {target(values)} ({getattr(exc, 'strerror', None) or exc}): "
                         "`invoke status`, then `invoke logs -s web`")
    text = raw.decode(errors="replace")
    detail = _answer_detail(text)
    if status == 200:
        return Answer(status, f"POST {CAPTURE_PATH} answered 200", text)
    if status in (301, 302, 308) and location.startswith("https:"):
        return Answer(status, f"web redirects plain HTTP to HTTPS ({status} to {location}): send events over HTTPS "
                              "through the edge proxy (`invoke proxy --enable`), or set "
                              "DISABLE_SECURE_SSL_REDIRECT=true", text)
    if status == 401:
        return Answer(status, f"capture refused the project API key ({detail or 'HTTP 401'}): pass --token with "
                              "the key PostHog shows under Project settings", text)
    if status == 503:
        return Answer(status, f"web could not hand the event to Kafka ({detail or 'HTTP 503'}): "
                              "`invoke logs -s kafka`, then `invoke logs -s web`", text)
    return Answer(status, f"POST {CAPTURE_PATH} answered {status}{': ' + detail if detail else ''}: "
                          "`invoke logs -s web`", text)


def _answer_detail(text: str) -> str:
    """PostHog's error detail (generate_exception_response's `detail`), or the body's first line."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0][:160] if text.strip() else ""
    return str(answer.get("detail", ""))[:160] if isinstance(answer, dict) else ""

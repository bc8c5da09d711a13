"""Step 2 of the surge switch: the new web container judged by PostHog's readiness, asked inside it
(it has no published port and is not on the proxy's network yet) exactly as web's healthcheck in
docker-compose.yml asks: GET 127.0.0.1:8000/_readyz?role=web with X-Forwarded-Proto: https (the
header keeps Django's SSL redirect from answering 301 behind the proxy).

The port opens only after `./bin/migrate`, so "connection refused" means still starting. A container
that exits or restarts fails at once; one that answers but does not turn ready within
READINESS_FAIL_AFTER fails too (the rule `invoke up` applies to web). Nothing to undo here."""

from __future__ import annotations

import json
import time

from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge.containers import WebContainer
from posthog_compose.operations.stack.http_checks import READINESS_FAIL_AFTER

#: Runs inside the new container with its own python (PostHog's image and web's healthcheck use it):
#: prints "ready", "status CODE" (answered, not ready) or "starting" (nothing listens yet).
PROBE = ("import urllib.request as u, urllib.error as e\n"
         "try:\n"
         " r = u.urlopen(u.Request('http://127.0.0.1:8000/_readyz?role=web', headers={'X-Forwarded-Proto': 'https'}),"
         " timeout=5)\n"
         " print('ready' if r.status == 200 else 'status %d' % r.status)\n"
         "except e.HTTPError as x:\n"
         " print('status %d' % x.code)\n"
         "except Exception:\n"
         " print('starting')\n")


def state_of(runner: Runner, container_id: str) -> tuple[str, int]:
    result = runner.run(["docker", "inspect", "--format", "{{json .State}}", container_id], capture=True,
                        check=False, mutating=False, timeout=30)
    try:
        state = json.loads(result.stdout or "{}")
    except ValueError:
        state = {}
    status = "restarting" if state.get("Restarting") else str(state.get("Status") or "gone")
    return status, int(state.get("ExitCode") or 0)


def ask(runner: Runner, container_id: str) -> str:
    result = runner.run(["docker", "exec", container_id, "python", "-c", PROBE], capture=True, check=False,
                        mutating=False, timeout=20)
    return (result.stdout or "").strip().splitlines()[-1] if (result.stdout or "").strip() else "starting"


def wait(runner: Runner, new: WebContainer, timeout: float, fail_after: float = READINESS_FAIL_AFTER,
         interval: float = 1.0) -> float:
    """Wait until the new container is ready; returns the seconds it took."""
    started = time.monotonic()
    answered_at: float | None = None
    last = "not asked yet"
    while True:
        status, code = state_of(runner, new.id)
        if status != "running":
            raise OperatorError(f"the new web container {status}"
                                f"{f' (exit {code})' if status == 'exited' else ''} before it was ready: "
                                f"`invoke logs web` shows why")
        answer = ask(runner, new.id)
        now = time.monotonic()
        if answer == "ready":
            return now - started
        if answer.startswith("status"):
            last = f"/_readyz answers {answer.split()[-1]}"
            answered_at = answered_at if answered_at is not None else now
            if now - answered_at >= fail_after:
                raise OperatorError(f"the new web container answers but is not ready ({last}): "
                                    f"`invoke logs web` shows why")
        if now - started >= timeout:
            raise OperatorError(f"the new web container was not ready within {timeout:.0f} s ({last}); raise "
                                "--timeout when migrations take longer")
        time.sleep(interval)

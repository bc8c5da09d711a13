"""Step 5 of the surge switch (and the undo of step 3): a web container leaves the rotation and goes.

`docker stop --time GRACE` sends SIGTERM, which PostHog's gunicorn 20.1.0 (requirements.txt at the
1.43.0 tag) handles gracefully: the arbiter closes its listener and passes SIGTERM to the workers
(gunicorn/arbiter.py:370-398); each gthread worker leaves its loop within a second, closes its
listeners and waits for its requests in flight for up to graceful_timeout (gunicorn/workers/
gthread.py:193-229), which PostHog leaves at gunicorn's 30 s (its gunicorn.config.py sets a misspelled
`grateful_timeout`; gunicorn/config.py:792-799). Connections queued on a listener when it closes are
reset, which the proxy cannot retry for a request with a body: so in the switch the proxy is drained
off the container first (drain.py), and from then on dials the other one alone; Docker takes the
container out of the network's DNS when it has exited. GRACE adds a margin to those 30 s before
Docker's SIGKILL. Then the container is removed, so that exactly one web container is left."""

from __future__ import annotations

from posthog_compose import journal
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge.containers import WebContainer

#: gunicorn's graceful_timeout in PostHog 1.43 (30 s) plus a margin for the process to exit.
GRACE = 35


def retire(runner: Runner, container: WebContainer) -> None:
    runner.run(["docker", "stop", "--time", str(GRACE), container.id], capture=True, check=False,
               timeout=GRACE + 60)
    journal.fault_point("surge-stopped")
    runner.run(["docker", "rm", "--force", container.id], capture=True, check=False, timeout=120)

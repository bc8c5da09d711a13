"""Step 3 of the surge switch: the ready container joins the proxy's rotation, and the proxy is
seen to reach it.

Action: `docker network connect` to the proxy's network with the aliases Compose gave it there
(noted in step 1; `web` among them), so Docker's DNS on that network answers `web` with both
containers' addresses. proxy/Caddyfile dials `web:8000` afresh for every request (no keep-alive to
the upstream), so the next requests already go to either. Check: from inside the proxy container,
the name `web` resolves to the new address and the new container answers /_readyz there. Undo: the
new container is retired like an old one (retire.py: a graceful stop), since requests may already
be in flight on it."""

from __future__ import annotations

import time
from pathlib import Path

from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge import containers
from posthog_compose.operations.surge.containers import WebContainer

#: How long the proxy may take to see the new container (Docker's DNS answers at once; this covers a
#: loaded host).
SEE_WITHIN = 30.0


def connect(root: Path, runner: Runner, new: WebContainer, aliases: tuple[str, ...]) -> str:
    """Join the proxy's network; returns the new container's address there."""
    command = ["docker", "network", "connect"]
    for alias in aliases:
        command += ["--alias", alias]
    runner.run([*command, containers.edge_network(root), new.id], capture=True, timeout=60)
    journal.fault_point("surge-joined")
    joined = [c for c in containers.web_containers(root, runner) if c.id == new.id]
    address = joined[0].edge_address if joined else ""
    if not address:
        raise OperatorError(f"{new.name} was connected to the proxy's network but has no address there")
    return address


def resolved(output: str) -> set[str]:
    """The IPv4 addresses a name resolved to: every one in `getent ahostsv4`'s lines, or those of
    nslookup's answer section (after its "Name:" line; the server's own address comes before it)."""
    import re

    address = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
    lines = output.splitlines()
    names = [i for i, line in enumerate(lines) if line.strip().lower().startswith("name:")]
    answer = lines[names[0] + 1:] if names else lines
    return {found for line in answer for found in address.findall(line)}


#: How the proxy's container resolves `web`: glibc's and musl's getent (the official image is Alpine,
#: whose base has musl-utils), else busybox's nslookup.
LOOKUPS = (["getent", "ahostsv4", "web"], ["nslookup", "web"])


def proxy_sees(root: Path, runner: Runner, address: str, within: float | None = None, interval: float = 0.5) -> None:
    """The proxy resolves `web` to ``address`` and reaches it: checked from inside its container."""
    proxy = containers.proxy_container(root, runner)
    if proxy is None:
        raise OperatorError("the proxy container does not run; run `invoke up`")
    deadline = time.monotonic() + (SEE_WITHIN if within is None else within)
    last = ""
    while True:
        seen: set[str] = set()
        for lookup in LOOKUPS:
            answer = runner.run(["docker", "exec", proxy, *lookup], capture=True, check=False, mutating=False,
                                timeout=20)
            seen |= resolved(answer.stdout or "") if answer.returncode == 0 else set()
        if address in seen:
            answer = runner.run(["docker", "exec", proxy, "wget", "-q", "-O", "/dev/null", "--header",
                                 "X-Forwarded-Proto: https", f"http://{address}:8000/_readyz?role=web"],
                                capture=True, check=False, mutating=False, timeout=20)
            if answer.returncode == 0:
                return
            last = f"the proxy cannot reach {address}:8000 ({(answer.stderr or '').strip()[:120] or 'no answer'})"
        else:
            last = f"the proxy's DNS does not answer web with {address} yet"
        if time.monotonic() >= deadline:
            raise OperatorError(f"the proxy does not see the new web container: {last}")
        time.sleep(interval)

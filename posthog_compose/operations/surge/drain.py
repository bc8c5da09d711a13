"""Step 4 of the surge switch: the proxy stops dialling the old web container before it gets SIGTERM
(the drain), and lets go again once the old one is gone.

Why: while both containers are on the proxy's network, Docker's DNS answers `web` with both
addresses, and the proxy dials afresh for every request (proxy/Caddyfile: no keep-alive). When the old
gunicorn gets SIGTERM its gthread worker closes its listener, and the connections the kernel had
queued but the worker never accepted are reset (gunicorn 20.1.0 workers/gthread.py:193-229; modelled
by tests/e2e/images/posthog-standin/graceful.py). Caddy 2.8.4 resends such a request only when it has
no body, so a POST /e/ fails with 502. No new connection may reach the old container once it is told
to stop.

How: the proxy (Caddy 2.8.4, built with go1.22.3: `caddy build-info`) resolves names with Go's own
resolver, which reads /etc/hosts before DNS: nsswitch.conf says `hosts: files dns` (Debian's default,
and what the official Alpine image writes for Go programs), and without nsswitch.conf Go's default is
files first too (net/conf.go). A name found in /etc/hosts is not asked of DNS (net/dnsclient_unix.go,
goLookupIPCNAMEOrder). Go re-reads /etc/hosts when its size or mtime changed, looking at most every
cacheMaxAge = 5 s (net/hosts.go, readHosts). So:

Preflight: the proxy's /etc/hosts can be read and written from inside its container; a pin left by
an earlier switch is drift and is taken out (``preflight``). Action: one line `ADDRESS web` is
appended to the proxy's /etc/hosts (``pin``: the address, read from `docker inspect`, is checked to be
an IPv4 address and is passed as data on stdin, never on a command line), the proxy's own resolver is seen
to answer `web` with that address only (getent reads nsswitch.conf in the same order), and Go's
cache age plus a margin is waited out (``settle``). Undo: the line is taken out again (``unpin``);
Docker's DNS then answers the one web container left.

/etc/hosts is a file Docker bind-mounts into the container (and rewrites when the container is
recreated), so it is rewritten in place (`tee`/`tee -a` inside the container, no shell), never
replaced by a rename, which would detach it from the mount.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge import containers

#: Marks the kit's own line in the proxy's /etc/hosts (Go and glibc ignore what follows '#').
MARK = "# posthog-compose: web pinned while web is replaced"
#: Go's cacheMaxAge for /etc/hosts (net/hosts.go, go1.22): a change is seen within this many seconds.
HOSTS_CACHE_AGE = 5.0
#: Beyond the cache age: connections dialled just before the pin took effect are accepted by the old
#: gunicorn (it accepts as it polls, within a second) before it is told to stop.
MARGIN = 3.0
#: How long the proxy's resolver may take to answer `web` with the pinned address only.
SEE_WITHIN = 15.0
HOSTS = "/etc/hosts"


def checked_address(address: str) -> str:
    """The address as written in the pin line: an IPv4 address, or OperatorError (never shell text)."""
    try:
        return str(ipaddress.IPv4Address(str(address).strip()))
    except ValueError:
        raise OperatorError(f"the new web container's address on the proxy's network is not an IPv4 address "
                            f"({str(address)[:40]!r}); run `invoke status` and `invoke up`") from None


def pin_line(address: str) -> str:
    return f"{checked_address(address)}\tweb\t{MARK}\n"


def lines_of(text: str) -> list[str]:
    """The file's lines as Go and glibc read them: split at "\\n" only, each keeping its own."""
    pieces = text.split("\n")
    return [piece + "\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def without_pins(text: str) -> str:
    """The file with every line the kit added taken out (the rest kept byte for byte)."""
    return "".join(line for line in lines_of(text) if MARK not in line)


def pinned(text: str) -> list[str]:
    """The addresses the kit's lines pin `web` to."""
    return [line.split()[0] for line in lines_of(text) if MARK in line and line.split()]


def read_hosts(runner: Runner, proxy: str) -> str:
    result = runner.run(["docker", "exec", proxy, "cat", HOSTS], capture=True, check=False, mutating=False,
                        timeout=20)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[:120] or "no output"
        raise OperatorError(f"the proxy's {HOSTS} cannot be read ({detail})")
    return result.stdout or ""


def write_hosts(runner: Runner, proxy: str, before: str, after: str) -> None:
    """Rewrite the proxy's /etc/hosts in place: an append when only lines are added (the file is never
    seen empty), else truncate-and-write. The text goes on stdin; the command is fixed."""
    if after == before:
        return
    append = after.startswith(before)
    # tee opens the file itself (appending, or truncating it): the same inode, no shell, text on stdin.
    result = runner.run(["docker", "exec", "-i", proxy, "tee", *(["-a"] if append else []), HOSTS],
                        input=after[len(before):] if append else after, capture=True, check=False, timeout=20)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[:120] or "no output"
        raise OperatorError(f"the proxy's {HOSTS} cannot be written ({detail}); `invoke compose -- up --detach "
                            "--force-recreate proxy` gives the proxy a fresh one")


def preflight(root: Path, runner: Runner) -> str:
    """The proxy container, its /etc/hosts readable and writable and free of any earlier pin."""
    proxy = containers.proxy_container(root, runner)
    if proxy is None:
        raise OperatorError("the proxy container does not run; run `invoke up`")
    text = read_hosts(runner, proxy)
    check = runner.run(["docker", "exec", proxy, "test", "-w", HOSTS], capture=True, check=False, mutating=False,
                       timeout=20)
    if check.returncode != 0:
        raise OperatorError(f"the proxy's {HOSTS} cannot be written (a read-only container?)")
    _take_out_pins(runner, proxy, text)
    return proxy


def _take_out_pins(runner: Runner, proxy: str, text: str) -> None:
    """A pin an earlier switch left in ``text`` (the proxy's /etc/hosts as read) goes, said in one line."""
    if pinned(text):
        print(f"proxy: its {HOSTS} still pinned web to {', '.join(pinned(text))} (left by an interrupted switch "
              "of web); taking that out.", flush=True)
        write_hosts(runner, proxy, text, without_pins(text))


def pin(runner: Runner, proxy: str, address: str) -> None:
    """Action: the proxy resolves `web` to ``address`` alone from now on (within HOSTS_CACHE_AGE)."""
    line = pin_line(address)
    text = read_hosts(runner, proxy)
    base = without_pins(text)
    if base and not base.endswith("\n"):
        base += "\n"
    write_hosts(runner, proxy, text, base + line)
    journal.fault_point("surge-pinned")


def settle(runner: Runner, proxy: str, address: str, pinned_at: float, within: float | None = None,
           interval: float = 0.5) -> None:
    """Wait until the proxy's resolver answers `web` with ``address`` only, and Go's cache of /etc/hosts
    (HOSTS_CACHE_AGE) plus MARGIN has passed since the pin was written."""
    from posthog_compose.operations.surge import join

    deadline = time.monotonic() + (SEE_WITHIN if within is None else within)
    seen: set[str] = set()
    while True:
        answer = runner.run(["docker", "exec", proxy, *join.LOOKUPS[0]], capture=True, check=False, mutating=False,
                            timeout=20)
        seen = join.resolved(answer.stdout or "") if answer.returncode == 0 else set()
        if seen == {address}:
            break
        if time.monotonic() >= deadline:
            raise OperatorError(f"the proxy still resolves web to {', '.join(sorted(seen)) or 'nothing'}, not to "
                                f"{address} alone, after {address} was pinned in its {HOSTS}")
        time.sleep(interval)
    left = pinned_at + HOSTS_CACHE_AGE + MARGIN - time.monotonic()
    if left > 0:
        time.sleep(left)


def unpin(root: Path, runner: Runner, proxy: str | None = None) -> None:
    """Undo: every line the kit added goes from the proxy's /etc/hosts (nothing to do when the proxy
    does not run: a new proxy container gets a fresh file from Docker)."""
    proxy = proxy or containers.proxy_container(root, runner)
    if proxy is None:
        return
    text = read_hosts(runner, proxy)
    write_hosts(runner, proxy, text, without_pins(text))


# ----------------------------------------------------------------------------- a pin no switch is making
@dataclass(frozen=True)
class Leftover:
    """A pin found in the running proxy's /etc/hosts while no switch is under way (a switch killed
    before its undo, or a journal removed by hand). Harmless while web keeps that address; once web is
    recreated any other way, the proxy dials an address nobody answers and every request fails."""

    addresses: tuple[str, ...]  # what `web` is pinned to
    stale: bool  # no web container has one of them on the proxy's network now

    def line(self) -> str:
        pinned_to = ", ".join(self.addresses)
        if self.stale:
            return (f"proxy: its {HOSTS} pins web to {pinned_to}, which no web container has: every request "
                    "through the proxy fails; `invoke up` takes the pin out")
        return (f"proxy: its {HOSTS} pins web to {pinned_to} (web's address now), left by an interrupted switch; "
                "`invoke up` takes it out before web is recreated")


def leftover(root: Path, runner: Runner) -> Leftover | None:
    """The pin in the running proxy's /etc/hosts, read only; None when there is none, or no proxy runs,
    or the file cannot be read (status says what it can, and never fails on this). A switch under way
    in another task pins too: status then reads its journal entry as well."""
    try:
        proxy = containers.proxy_container(root, runner)
        if proxy is None:
            return None
        addresses = pinned(read_hosts(runner, proxy))
        if not addresses:
            return None
        serving = {c.edge_address for c in containers.web_containers(root, runner) if c.state == "running"}
    except OperatorError:
        return None
    return Leftover(tuple(addresses), stale=not serving.intersection(addresses))


def take_out_leftover(root: Path, runner: Runner) -> None:
    """The recovery of `up`, `upgrade` and `harden`, after the journal's replays (so no switch is under
    way, and the caller holds the deployment lock), with the edge proxy on: a pin left in the proxy's
    /etc/hosts goes before anything recreates web, said in one line. One that cannot be read or written
    is a warning: starting the deployment comes first, and `status` names the pin again."""
    from posthog_compose.configuration import edge
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(Path(root))
    if not path.exists() or not edge.enabled(EnvFile.load(path).resolved()):
        return
    try:
        proxy = containers.proxy_container(root, runner)
        if proxy is None:
            return
        _take_out_pins(runner, proxy, read_hosts(runner, proxy))
    except OperatorError as exc:
        print(f"warning: {exc.message} (a pin of web left in it stays until then).", flush=True)

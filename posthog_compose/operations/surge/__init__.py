"""Replacing web behind the edge proxy without failed requests (the surge switch).

Owns whether web can be switched this way here (``unavailable_reason``), the switch itself
(``replace_web``) and the replay of a switch a killed task left half done (``recover``).

The pattern of docker-rollout for Compose and of Kubernetes' rolling updates with readiness gates,
in five steps, one module each (preflight, action and undo side by side):

1. beside: Compose creates a second web container from the files and .env as they are now
   (`up --no-start --no-deps --no-recreate --scale web=2 web`); it starts off the proxy's network,
   so no request reaches it while `./bin/migrate` runs and gunicorn boots. Undo: remove it.
2. ready: PostHog's readiness (/_readyz?role=web), asked inside the new container. Undo: none.
3. join: it joins the proxy's network with the aliases Compose gave it; the proxy is seen to
   resolve and reach it. Undo: retire it gracefully.
4. drain: the proxy's /etc/hosts pins `web` to the new container, and the proxy is seen to dial it
   alone, so no new connection reaches the old one once it is told to stop. Undo: take the pin out.
5. retire: the old container gets SIGTERM (gunicorn finishes its requests in flight) and is
   removed; then the pin goes (Docker's DNS answers the one left). One web container is left, with
   the config hash `compose config --hash web` gives, so a later plain `docker compose up -d`
   changes nothing.

Why the proxy needs no health checks of its own (Caddy v2.8.4, modules/caddyhttp/reverseproxy/):
active health checks do not run for dynamic upstreams (healthchecks.go:44) and, for the static
upstream `web:8000`, they would judge the name rather than each container; so readiness gates the
membership of the network instead, and proxy/Caddyfile keeps the static upstream, which Go dials
afresh (a DNS lookup each time) for every request because keep-alive to the upstream is off, where
`dynamic a` would cache the answer for its refresh interval. Dial errors are retried whatever the
method (reverseproxy.go:1033-1046), within lb_try_duration.

A kill at any step is undone by the next task (``recover``): whichever web container is not the one
.env describes, or never joined the rotation, is removed (drained first when it may be serving), and
the proxy's pin is taken out.
"""

from __future__ import annotations

import time
from pathlib import Path

from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge import beside, containers, drain, join, ready, retire
from posthog_compose.operations.surge.containers import WebContainer, web_containers, wanted_hash

JOURNAL_KIND = "surge"


def unavailable_reason(root: Path) -> str | None:
    """None when web can be switched by surge here (the proxy overlay is in effect and web runs),
    else one short phrase saying why not."""
    from posthog_compose.configuration import edge
    from posthog_compose.configuration.envfile import EnvFile, env_path

    root = Path(root)
    path = env_path(root)
    if not path.exists():
        return ".env does not exist yet"
    if not edge.enabled(EnvFile.load(path).resolved()):
        return "the edge proxy is off"
    try:
        found = web_containers(root, Runner(root))
    except OperatorError:
        return "the Docker engine does not answer"
    running = [c for c in found if c.state == "running"]
    if not running:
        return "web is not running"
    if len(found) != 1:
        return f"{len(found)} web containers exist"
    # The edge turned on in .env but not yet applied (or a `proxy --enable` cut short): web joins the
    # proxy's network, and the proxy starts, only once web is recreated by Compose.
    if not running[0].on_edge:
        return "web is not on the proxy's network yet"
    try:
        if containers.proxy_container(root, Runner(root)) is None:
            return "the proxy does not run"
    except OperatorError:
        return "the Docker engine does not answer"
    return None


def replace_web(root: Path, runner: Runner, timeout: float) -> bool:
    """Replace the running web container by one made from the current effective configuration (.env as
    it is now), without failed requests through the proxy. False when web already runs it (nothing
    done). On failure the old container keeps serving, the new one is removed, and OperatorError says
    why in one line."""
    root = Path(root)
    started = time.monotonic()
    old = beside.preflight(root, runner)
    if old.config_hash == wanted_hash(root, runner):
        print(f"web ({old.name}) already runs the current configuration: nothing to replace.")
        return False
    proxy = _drain_preflight(root, runner)
    # No request fails only when the old container is drained first (see _drain_preflight).
    promise = " (no request fails)" if proxy is not None else ""
    print(f"web: replacing {old.name} beside it behind the edge proxy{promise} ...", flush=True)
    entry = {"old": old.id, "old_name": old.name, "new": None, "phase": "creating"}
    journal.write(root, JOURNAL_KIND, entry)
    new: WebContainer | None = None
    try:
        with journal.critical("Compose is creating the new web container"):
            new, aliases = beside.create(root, runner, old)
            entry.update(new=new.id, new_name=new.name, phase="starting")
            journal.write(root, JOURNAL_KIND, entry)
        print(f"web: {new.name} started beside {old.name}, outside the proxy's rotation; waiting for its "
              "readiness ...", flush=True)
        took = ready.wait(runner, new, max(timeout - (time.monotonic() - started), 1.0))
    except BaseException as exc:  # noqa: B902 - Ctrl-C too: the new container goes, the old one serves on
        with journal.critical("removing the new web container", reraise=False):
            if new is not None and isinstance(exc, OperatorError):
                ready.show_logs(runner, new.id)
            for container in ([new] if new else [c for c in web_containers(root, runner) if c.id != old.id]):
                beside.remove(runner, container.id)
            journal.clear(root, JOURNAL_KIND)
        if isinstance(exc, OperatorError):
            raise OperatorError(f"web was not replaced: {exc.message}; {old.name} serves on unchanged") from None
        raise
    with journal.critical("the new web container is joining the proxy's rotation"):
        entry["phase"] = "joining"
        journal.write(root, JOURNAL_KIND, entry)
        try:
            address = join.connect(root, runner, new, aliases)
            join.proxy_sees(root, runner, address)
            if proxy is not None:
                # The pin is journalled before it is written: a kill from here on leaves it to recover().
                entry.update(phase="draining", pin=address)
                journal.write(root, JOURNAL_KIND, entry)
                pinned_at = time.monotonic()
                drain.pin(runner, proxy, address)
                print(f"web: {new.name} ready after {took:.0f} s and in the proxy's rotation; the proxy now dials it "
                      f"alone (waiting {drain.HOSTS_CACHE_AGE + drain.MARGIN:.0f} s for its resolver) ...", flush=True)
                drain.settle(runner, proxy, address, pinned_at)
        except OperatorError as exc:
            if proxy is not None:
                try:
                    drain.unpin(root, runner, proxy)
                except OperatorError:
                    # The proxy may dial the new container alone now: it keeps serving, and the journal
                    # keeps the switch for the next task's recover(), which drains one of the two.
                    raise OperatorError(f"web was not replaced: {exc.message}; the proxy's pin of {new.name} "
                                        f"could not be taken out, so {new.name} serves beside {old.name} until "
                                        "`invoke up` finishes the switch") from None
            retire.retire(runner, new)
            journal.clear(root, JOURNAL_KIND)
            raise OperatorError(f"web was not replaced: {exc.message}; {old.name} serves on unchanged") from None
        entry["phase"] = "retiring"
        journal.write(root, JOURNAL_KIND, entry)
        print(f"web: retiring {old.name} (requests in flight finish, at most {retire.GRACE} s) ...", flush=True)
        retire.retire(runner, old)
        if proxy is not None:
            drain.unpin(root, runner, proxy)
        journal.clear(root, JOURNAL_KIND)
    print(f"web: replaced beside the running container behind the edge proxy{promise}: {new.name} serves.",
          flush=True)
    return True


def _drain_preflight(root: Path, runner: Runner) -> str | None:
    """The proxy container whose /etc/hosts the drain pins, or None (said in one line) when it cannot:
    the switch then retires the old container undrained, which may cost a few requests with a body
    (see drain.py) but never the URL."""
    try:
        return drain.preflight(root, runner)
    except OperatorError as exc:
        print(f"warning: web is replaced without draining the old container ({exc.message}): a request with a "
              "body that reaches it as it stops may fail.", flush=True)
        return None


@journal.recovers(JOURNAL_KIND)
def recover(root: Path, runner: Runner) -> None:
    """After a killed switch: keep the new web container when it joined the rotation and is the one
    .env describes (or the old one no longer runs), else the old one; the other goes (drained and then
    stopped gracefully when it may be serving), and the proxy's pin is taken out."""
    root = Path(root)
    entry = journal.read(root, JOURNAL_KIND)
    if not entry:
        return
    found = {c.id: c for c in web_containers(root, runner)}
    old = found.get(str(entry.get("old") or ""))
    new = found.get(str(entry.get("new") or ""))
    if new is None and entry.get("new") is None:
        others = [c for c in found.values() if old is None or c.id != old.id]
        new = others[0] if len(others) == 1 and old is not None else None
    try:
        wanted = wanted_hash(root, runner)
    except OperatorError:
        wanted = ""
    joined = new is not None and new.state == "running" and new.on_edge
    old_serves = old is not None and old.state == "running"
    # The one .env describes, when it had joined the rotation; but never a stopped old one over a new one
    # that serves (killed while the old was retiring and .env put back since): the caller's replay or
    # `up` then makes web what .env says, from a deployment that serves.
    keep_new = joined and (new.config_hash == wanted or not old_serves)
    kept, gone = (new, old) if keep_new else (old, new)
    print(f"A switch of web was interrupted ({entry.get('phase')}); keeping "
          f"{kept.name if kept else 'neither container'}{', removing ' + gone.name if gone else ''}.", flush=True)
    with journal.critical("finishing an interrupted switch of web"):
        if gone is not None:
            if gone.on_edge and gone.state == "running" and kept is not None:
                _drained_retire(root, runner, kept, gone)  # it may be serving: let its requests finish
            else:
                beside.remove(runner, gone.id)
        # Whatever the phase: a pin naming a container that is gone would send every request nowhere.
        drain.unpin(root, runner)
        journal.clear(root, JOURNAL_KIND)


def _drained_retire(root: Path, runner: Runner, kept: WebContainer, gone: WebContainer) -> None:
    """Retire ``gone`` once the proxy dials ``kept`` alone, as the switch does; undrained (said so) when
    the pin cannot be made, since finishing the recovery comes first."""
    try:
        proxy = drain.preflight(root, runner)
        if not kept.edge_address:
            raise OperatorError(f"{kept.name} has no address on the proxy's network")
        pinned_at = time.monotonic()
        drain.pin(runner, proxy, kept.edge_address)
        drain.settle(runner, proxy, kept.edge_address, pinned_at)
    except OperatorError as exc:
        print(f"warning: {gone.name} is retired without draining it first ({exc.message}).", flush=True)
    retire.retire(runner, gone)

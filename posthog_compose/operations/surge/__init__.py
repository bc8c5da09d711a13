"""Replacing web behind the edge proxy without failed requests (the surge switch).

Owns whether web can be switched this way here (``unavailable_reason``), the switch itself
(``replace_web``) and the replay of a switch a killed task left half done (``recover``).

The pattern of docker-rollout for Compose and of Kubernetes' rolling updates with readiness gates,
in four steps, one module each (preflight, action and undo side by side):

1. beside: Compose creates a second web container from the files and .env as they are now
   (`up --no-start --no-deps --no-recreate --scale web=2 web`); it starts off the proxy's network,
   so no request reaches it while `./bin/migrate` runs and gunicorn boots. Undo: remove it.
2. ready: PostHog's readiness (/_readyz?role=web), asked inside the new container. Undo: none.
3. join: it joins the proxy's network with the aliases Compose gave it; the proxy is seen to
   resolve and reach it. Undo: retire it gracefully.
4. retire: the old container gets SIGTERM (gunicorn finishes its requests in flight) and is
   removed. One web container is left, with the config hash `compose config --hash web` gives,
   so a later plain `docker compose up -d` changes nothing.

Why the proxy needs no health checks of its own (Caddy v2.8.4, modules/caddyhttp/reverseproxy/):
active health checks do not run for dynamic upstreams (healthchecks.go:44) and, for the static
upstream `web:8000`, they would judge the name rather than each container; so readiness gates the
membership of the network instead, and proxy/Caddyfile keeps the static upstream, which Go dials
afresh (a DNS lookup each time) for every request because keep-alive to the upstream is off, where
`dynamic a` would cache the answer for its refresh interval. Dial errors are retried whatever the
method (reverseproxy.go:1033-1046), within lb_try_duration.

A kill at any step is undone by the next task (``recover``): whichever web container is not the one
.env describes, or never joined the rotation, is removed.
"""

from __future__ import annotations

import time
from pathlib import Path

from posthog_compose import journal
from posthog_compose.errors import OperatorError
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.surge import beside, containers, join, ready, retire
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
    return None


def replace_web(root: Path, runner: Runner, timeout: float) -> None:
    """Replace the running web container by one made from the current effective configuration (.env as
    it is now), without failed requests through the proxy. On failure the old container keeps serving,
    the new one is removed, and OperatorError says why in one line."""
    root = Path(root)
    started = time.monotonic()
    old = beside.preflight(root, runner)
    if old.config_hash == wanted_hash(root, runner):
        print(f"web ({old.name}) already runs the current configuration: nothing to replace.")
        return
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
        except OperatorError as exc:
            retire.retire(runner, new)
            journal.clear(root, JOURNAL_KIND)
            raise OperatorError(f"web was not replaced: {exc.message}; {old.name} serves on unchanged") from None
        entry["phase"] = "retiring"
        journal.write(root, JOURNAL_KIND, entry)
        print(f"web: {new.name} ready after {took:.0f} s and in the proxy's rotation; retiring {old.name} "
              f"(requests in flight finish, at most {retire.GRACE} s) ...", flush=True)
        retire.retire(runner, old)
        journal.clear(root, JOURNAL_KIND)


@journal.recovers(JOURNAL_KIND)
def recover(root: Path, runner: Runner) -> None:
    """After a killed switch: keep the new web container when it joined the rotation and is the one
    .env describes, else the old one; the other goes (gracefully when it may be serving)."""
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
    keep_new = new is not None and new.state == "running" and new.on_edge and new.config_hash == wanted
    kept, gone = (new, old) if keep_new else (old, new)
    print(f"A switch of web was interrupted ({entry.get('phase')}); keeping "
          f"{kept.name if kept else 'neither container'}{', removing ' + gone.name if gone else ''}.", flush=True)
    with journal.critical("finishing an interrupted switch of web"):
        if gone is not None:
            if gone.on_edge and gone.state == "running" and kept is not None:
                retire.retire(runner, gone)  # it may be serving: let its requests finish
            else:
                beside.remove(runner, gone.id)
        journal.clear(root, JOURNAL_KIND)

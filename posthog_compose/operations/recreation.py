"""Which services `up` and `harden` recreate, in which order and how, decided the way Compose decides
it, and the recreation itself.

A service is recreated when its container's label ``com.docker.compose.config-hash`` is not the hash
`compose config --hash '*'` gives now, or when the image its reference names is not the one the
container was created from (stack.drift reads both); a missing or stopped container is started; every
other service is left alone (its container, and so its id, stays). The plan lists the services in the
order they are acted on: the datastores first, then web, then worker, plugins and the edge proxy.
Worker and plugins follow web because PostHog's worker exits while a migration is pending
(bin/docker-worker-celery runs bin/migrate-check under `set -e`) and only web's start runs the
migrations. Web is switched by the surge (operations/surge: a second web behind the edge proxy, so no
request fails) when the surge is available, else recreated in place (no answers while it stops and boots).

``predict`` makes the same plan for a .env not written yet (harden's plan, shown before it asks):
Compose computes the hashes from that text, given with --env-file, in a 0600 file under .deploy/.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.operations.engine import Runner

UNCHANGED = "unchanged"
START = "start"
RECREATE = "recreate in place"
SURGE = "surge"

POSTHOG_SERVICES = ("web", "worker", "plugins")
#: The datastores web talks to while it serves (PostgreSQL, Redis, ClickHouse for queries, Kafka for
#: capture): one recreated before web is gone for the old web too, whatever the switch.
WEB_USES = ("db", "redis", "clickhouse", "kafka")
#: The services that serve web's users or read what web migrated: acted on after web.
AFTER_WEB = ("worker", "plugins", "proxy")
#: Drift kinds after which Compose recreates a container (stack.drift.UP_FIXES less "pull only").
_RECREATING = ("config", "image-updated", "image-missing")


@dataclass(frozen=True)
class Step:
    service: str
    action: str  # UNCHANGED, START, RECREATE or SURGE
    why: str = ""
    force: bool = False  # recreated although Compose sees no change (a renewed certificate)
    after_web: bool = False  # web is acted on first in the same plan

    def line(self) -> str:
        """One short line for people: what happens to the service, and why."""
        if self.action == SURGE and self.restarting:
            # The switch fails nothing, but the old web loses the datastores that restart before it goes.
            what = (f"surge (up through the proxy; requests that need {' or '.join(self.restarting)} fail while "
                    f"{'it restarts' if len(self.restarting) == 1 else 'they restart'})")
        elif self.action == SURGE:
            what = "surge (no failed requests through the proxy)"
        elif self.action == RECREATE and self.service == "web":
            what = f"recreated in place ({self.why_not_surge}: no answers while it stops and boots)"
        elif self.action == RECREATE:
            what = "recreated after web" if self.after_web else "recreated in place"
        elif self.action == START:
            what = "started after web" if self.after_web else "started"
        else:
            what = "unchanged"
        return f"{self.service}: {what}" + (f"; {self.why}" if self.why and self.action != UNCHANGED else "")

    why_not_surge: str = field(default="", compare=False)
    restarting: tuple[str, ...] = field(default=(), compare=False)  # for web: datastores recreated before it


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    surge_unavailable: str | None = None
    error: str = ""  # why no plan could be made (then Compose decides alone, as before)

    @property
    def changing(self) -> list[Step]:
        return [step for step in self.steps if step.action != UNCHANGED]

    @property
    def recreates(self) -> bool:
        return any(step.action in (RECREATE, SURGE) for step in self.steps)

    @property
    def unchanged(self) -> list[str]:
        return [step.service for step in self.steps if step.action == UNCHANGED]

    def lines(self) -> list[str]:
        return [step.line() for step in self.changing]

    def to_dict(self) -> dict:
        """The services that change, in order, each with its action (surge, recreate in place, start), why,
        and its line for people; and why web cannot surge here (None when it can)."""
        return {"surge_unavailable": self.surge_unavailable,
                "order": [{"service": s.service, "action": s.action, "why": s.why, "line": s.line()}
                          for s in self.changing]}


def in_order(names) -> list[str]:
    """Datastores first (in the kit's order), then web, then worker, plugins, the edge proxy, any other."""
    names = list(dict.fromkeys(names))
    first = [n for n in SERVICES if n in names and n not in POSTHOG_SERVICES]
    others = sorted(n for n in names if n not in SERVICES and n not in AFTER_WEB)
    return [*first, *others, *(["web"] if "web" in names else []), *[n for n in AFTER_WEB if n in names]]


def decide(targets: list[str], containers: dict[str, list], changed: dict[str, str],
           surge_unavailable: str | None, force: dict[str, str] | None = None) -> Plan:
    """The plan, from what was read (no engine call: tests feed it directly).

    ``containers``: service -> its containers (objects with ``running`` and ``label()``); ``changed``:
    service -> why Compose would recreate it; ``surge_unavailable``: None when web can surge, else why
    not; ``force``: service -> why it is recreated although nothing changed for Compose."""
    force = force or {}
    steps: list[Step] = []
    for service in in_order(targets):
        mine = containers.get(service) or []
        if not mine:
            steps.append(Step(service, START, "not created"))
        elif service in changed or service in force:
            surge = service == "web" and surge_unavailable is None
            steps.append(Step(service, SURGE if surge else RECREATE,
                              changed[service] if service in changed else force[service],
                              force=service in force and service not in changed,
                              why_not_surge=surge_unavailable or ""))
        elif not all(container.running for container in mine):
            steps.append(Step(service, START, ", ".join(c.label() for c in mine if not c.running)))
        else:
            steps.append(Step(service, UNCHANGED))
    web_moves = any(step.service == "web" and step.action != UNCHANGED for step in steps)
    if web_moves:
        steps = [Step(s.service, s.action, s.why, s.force, True, s.why_not_surge)
                 if s.service in AFTER_WEB and s.action != UNCHANGED else s for s in steps]
    restarting = tuple(s.service for s in steps if s.action == RECREATE and s.service in WEB_USES)
    if restarting:
        steps = [replace(s, restarting=restarting) if s.service == "web" and s.action == SURGE else s for s in steps]
    return Plan(steps, surge_unavailable)


def from_survey(found, targets: list[str] | None, surge_unavailable: str | None,
                force: dict[str, str] | None = None) -> Plan:
    """The plan from a stack.Survey (what runs compared with the files)."""
    if found.error:
        return Plan(error=found.error, surge_unavailable=surge_unavailable)
    changed: dict[str, str] = {}
    for finding in found.findings:
        if finding.kind in _RECREATING and finding.service:
            changed.setdefault(finding.service, finding.why)
    return decide(list(targets or found.active), _by_service(found.containers), changed, surge_unavailable, force)


def _by_service(containers) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for container in containers:
        if container.service:
            grouped.setdefault(container.service, []).append(container)
    return grouped


def surge_unavailable(root: Path) -> str | None:
    """None when web can be switched without failed requests (the surge), else why not."""
    from posthog_compose.operations import surge

    return surge.unavailable_reason(Path(root))


def gated(root: Path, reason: str | None, current: str | None, wanted: str | None,
          image_updated: bool = False) -> str | None:
    """``reason`` (why web cannot surge here), or, when it can, why web from image ``current`` (its
    running container's) and web from ``wanted`` (the image Compose would give it now) may not run side
    by side: the surge gate decides for `up` and `harden` as for `upgrade`
    (operations/upgrade/surge_gate.py), so an image changed in .env by hand never runs its migrations
    under a release they were not reviewed against. Asked only when web's image changes: its
    reference, or the image the same reference names (``image_updated``: a pull since)."""
    if reason is not None:
        return reason
    if not current or not wanted or (current == wanted and not image_updated):
        return None
    from posthog_compose.operations.upgrade import surge_gate

    return surge_gate.side_by_side_refusal(root, current, wanted, web=True)


#: How `docker ps` shows a container's image once its reference names another image: by the old id.
_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{12,64}")


def _running_web(found):
    return next((c for c in found.containers if c.service == "web" and c.running), None)


def _created_from(found, web) -> str:
    """The reference web's container was created from. `docker ps` shows the image id instead once the
    reference names another image; the configuration hash (which covers the reference) is then
    unchanged, or drift read the reference itself, so the model's reference is the one."""
    return found.images.get("web", web.image) if _IMAGE_ID.fullmatch(web.image) else web.image


def _same_image_id(found, web, reference: str) -> bool | None:
    """Whether ``reference`` names, now, the image web's container was created from; None when either id
    is unknown (an image not on the engine, a container without Compose's label)."""
    from posthog_compose.operations.stack import drift

    now, created = found.image_ids.get(reference), web.labels.get(drift.IMAGE_LABEL)
    return now == created if now and created else None


def _web_move_refusal(root: Path, found, web, wanted: str | None,
                      stands_for: dict[str, str] | None = None) -> str | None:
    """The surge gate on the move from the image web runs to ``wanted``: nothing to ask when ``wanted``
    names the very image web runs (a digest harden pinned from it), else `gated`, told whether the same
    reference now names another image (a pull since). ``stands_for``: a digest not recorded yet -> the
    tagged reference it was pinned from, which the gate judges instead."""
    current = _created_from(found, web)
    if wanted and _same_image_id(found, web, wanted):
        return None
    renamed = current == wanted and _same_image_id(found, web, current) is False
    return gated(root, None, current, (stands_for or {}).get(wanted or "", wanted), renamed)


def surge_reason(root: Path, found) -> str | None:
    """Why web cannot surge to what the files say now (a stack.Survey of what runs), or None."""
    reason = surge_unavailable(root)
    web = _running_web(found)
    if reason is not None or web is None:
        return reason
    return _web_move_refusal(root, found, web, found.images.get("web"))


def replace_web(root: Path, runner: Runner, timeout: float) -> None:
    """Switch web to its new configuration without a failed request (operations/surge)."""
    from posthog_compose.operations import surge

    surge.replace_web(root, runner, timeout)


def plan(root: Path, runner: Runner, targets: list[str] | None = None,
         force: dict[str, str] | None = None) -> Plan:
    """What `up` (or harden, after writing its files) recreates now."""
    from posthog_compose.operations import stack

    found = stack.survey(root, runner)
    return from_survey(found, targets, surge_reason(root, found), force)


def predict(root: Path, runner: Runner, env_text: str, force: dict[str, str] | None = None,
            stands_for: dict[str, str] | None = None) -> Plan:
    """The plan for the .env ``env_text`` before it is written: the hashes Compose gives with it
    (--env-file) compared with the running containers' labels. Only the services that run are judged:
    a deployment that does not run is started afterwards by `invoke up`. ``stands_for``: a digest the
    change pins -> the tagged reference it was pinned from (recorded only when the change is applied)."""
    from posthog_compose.operations import stack
    from posthog_compose.operations.stack import drift

    root = Path(root)
    found = stack.survey(root, runner)
    reason = surge_unavailable(root)
    if found.error:
        return Plan(error=found.error, surge_unavailable=reason)
    folder = root / ".deploy"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"planned-env-{os.getpid()}"
    # 0600 from the start: the text holds the new secrets. Removed at once; a killed task leaves it
    # beside the hashes' cache under .deploy/ (0700), never elsewhere.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(env_text)
        result = runner.run(compose.command(root, "--env-file", str(path), "config", "--hash", "*"), capture=True,
                            check=False, mutating=False, timeout=60)
    finally:
        path.unlink(missing_ok=True)
    if result.returncode != 0:
        return Plan(error="Compose rejects the planned configuration (`invoke config-check` says why after the "
                    "change)", surge_unavailable=reason)
    wanted = drift.parse_hashes(result.stdout)
    containers = _by_service([c for c in found.containers if c.service in found.active])
    from posthog_compose.configuration.envfile import EnvFile

    web = _running_web(found)
    if reason is None and web is not None:
        # The shell's value wins over .env's in Compose's interpolation of ${POSTHOG_IMAGE}.
        image = os.environ.get("POSTHOG_IMAGE") or EnvFile.parse(env_text).resolved().get("POSTHOG_IMAGE")
        reason = _web_move_refusal(root, found, web, image, stands_for)
    changed = {service: "configuration changes" for service, mine in containers.items() if service in wanted
               and any(c.labels.get(drift.HASH_LABEL, "").lower() != wanted[service] for c in mine)}
    running = [service for service, mine in containers.items() if any(c.running for c in mine)]
    return decide(running, containers, changed, reason, force)


# ----------------------------------------------------------------------------- apply
def apply(root: Path, runner: Runner, planned: Plan, timeout: float, readiness_values: dict[str, str] | None) -> None:
    """Act on the services that change, in the plan's order, each group healthy before the next:
    the datastores, then web (through the surge when the plan says so), then worker, plugins and the
    proxy, each with `compose up --detach --no-deps` so that Compose touches nothing else. The caller
    then runs its usual `compose up` and health wait, which finds nothing left to change."""
    from posthog_compose import journal
    from posthog_compose.operations import stack

    changing = planned.changing
    groups = [[s for s in changing if s.service != "web" and s.service not in AFTER_WEB],
              [s for s in changing if s.service == "web"],
              [s for s in changing if s.service in AFTER_WEB]]
    for group in groups:
        if not group:
            continue
        if group[0].action == SURGE:
            print("Switching web without failed requests (a second web behind the edge proxy) ...", flush=True)
            replace_web(Path(root), runner, timeout)
        else:
            names = [step.service for step in group]
            forced = ["--force-recreate"] if any(step.force for step in group) else []
            print(f"Recreating {', '.join(names)} ...", flush=True)
            stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", *forced, "--no-deps", *names),
                                 names, timeout, readiness_values=readiness_values if "web" in names else None)
        journal.fault_point(f"recreated-{group[0].service}")

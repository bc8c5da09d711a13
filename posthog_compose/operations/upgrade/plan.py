"""The plan of an upgrade: what was asked (Request), which image variable and services, the target
reference (--to checked, `latest` refused unless allowed), the external datastores it must not touch, and
the plan as printed before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import images
from posthog_compose.errors import OperatorError
from posthog_compose.configuration import formats
from posthog_compose.operations.upgrade.gates import Gate, applicable_gates, load_gates
from posthog_compose.operations.upgrade.versions import postgres_major, target_reference


BACKUP_DIR = "backups"
POSTGRES_MAJOR_DOC = "docs/upgrading.md#postgres-major-upgrade"
GIB = 1024 ** 3

#: --service -> (image variable, services that run it, free GiB the new image needs on the engine's disk)
TARGETS: dict[str, tuple[str, list[str], float]] = {
    "posthog": ("POSTHOG_IMAGE", ["web", "worker", "plugins"], 4.0),
    "postgres": ("POSTGRES_IMAGE", ["db"], 1.0),
    "redis": ("REDIS_IMAGE", ["redis"], 0.5),
    "clickhouse": ("CLICKHOUSE_IMAGE", ["clickhouse"], 2.0),
    "zookeeper": ("ZOOKEEPER_IMAGE", ["zookeeper"], 1.0),
    "kafka": ("KAFKA_IMAGE", ["kafka"], 1.0),
}


@dataclass
class Request:
    """What the operator asked for on the command line."""

    to: str | None
    service: str = "posthog"
    allow_latest: bool = False
    pin_digest: bool = False
    skip_backup: bool = False
    timeout: float = 600.0


@dataclass
class Plan:
    """Everything the upgrade will do, computed before anything changes."""

    service: str
    variable: str
    services: list[str]
    current: str
    target: str
    env_before: str
    env_after: str
    gates: list[Gate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    free_gib_needed: float = 1.0
    #: host:port of PostgreSQL when it is external (no dump is taken here), else None
    external_postgres: str | None = None

    def diff(self) -> str:
        import difflib

        return "".join(difflib.unified_diff(self.env_before.splitlines(keepends=True),
                                            self.env_after.splitlines(keepends=True), "a/.env", "b/.env", n=0))


def make_plan(root: Path, request: Request) -> Plan:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    if request.service not in TARGETS:
        raise OperatorError(f"--service {request.service!r} is not one of {', '.join(TARGETS)}")
    variable, services, free_gib = TARGETS[request.service]
    env = EnvFile.load(env_path(root))
    values = env.resolved()
    current = values.get(variable, "")
    if not current:
        raise OperatorError(f".env: {variable} is not set; run `invoke config-check`")
    outside = _external(values)
    if any(service in outside for service in services):
        endpoint = next(outside[service] for service in services if service in outside)
        what = (f"{LABELS[endpoint.datastore]} is external ({_where(endpoint)})" if endpoint is not None
                else f"{', '.join(services)} does not run here (ClickHouse and Kafka are both external)")
        raise OperatorError(f"--service {request.service}: {what}, so {variable} runs nowhere on this host; upgrade it "
                            "at your provider and check the new version with `invoke doctor`; nothing was changed")
    target = target_reference(current, request.to, request.service, request.allow_latest)
    before = env.render()
    env.set(variable, target)
    plan = Plan(request.service, variable, services, current, target, before, env.render(), free_gib_needed=free_gib)
    if "db" in outside:
        plan.external_postgres = _where(outside["db"])
        if request.service == "posthog" and not request.skip_backup:
            raise OperatorError(
                f"PostgreSQL is external ({plan.external_postgres}), so this kit cannot take the pre-upgrade backup "
                "that a rollback of PostHog's migrations needs: take a snapshot at your provider, then run the upgrade "
                "again with --skip-backup; nothing was changed")
    # A digest the kit pinned stands for the tag it was pinned from (images.DIGEST_VERSIONS_FILE).
    known_current, known_target = images.with_known_tag(root, current), images.with_known_tag(root, target)
    if request.service == "posthog":
        plan.gates = applicable_gates(load_gates(root), known_current, known_target)
    if formats.is_downgrade(images.parse(known_current).tag or "",
                            images.parse(known_target).tag or ""):  # hook: hostile input
        plan.warnings.append(f"{target} is OLDER than {current}: this is a downgrade, which database migrations "
                             "may not survive; restore the backup of that version instead if you mean to go back")
    if images.parse(target).tag in images.MOVING_TAGS:
        plan.warnings.append(f"{images.parse(target).tag} is a moving tag: the next pull can change the version "
                             "without an upgrade; today's posthog/posthog:latest also expects a larger stack than "
                             "this one. Not for production.")
    if request.service == "postgres":
        old, new = postgres_major(current), postgres_major(target)
        if old and new and old != new:
            raise OperatorError(f"POSTGRES_IMAGE {current} -> {target} changes PostgreSQL's major version ({old} -> "
                                f"{new}): the data files are incompatible. Follow the dump-and-restore procedure in "
                                f"{POSTGRES_MAJOR_DOC}")
    from posthog_compose.configuration import compatibility  # a datastore outside the range the target accepts (compatibility.yml)
    refused = compatibility.upgrade_problems(values, {**values, variable: target}, root)
    if refused:
        raise OperatorError("; ".join(refused))
    return plan


LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse", "kafka": "Kafka"}


def _external(values: dict[str, str]) -> dict:
    """compose service -> endpoint (or None) for what .env makes external (stack.external_services)."""
    from posthog_compose.operations import stack

    return stack.external_services(values)


def _where(endpoint) -> str:
    from posthog_compose.operations import stack

    return stack.endpoint_text(endpoint)


def print_plan(plan: Plan, request: Request, dry_run: bool, root: Path | None = None) -> None:
    """The plan, before anything changes; with ``root``, each service to recreate says how (web
    surges when the edge proxy makes it possible, worker and plugins follow web)."""
    if plan.current == plan.target:
        return
    steps = []
    if plan.gates:
        steps.append(f"check upgrade gate(s) {', '.join(g.id for g in plan.gates)} in the running {plan.gates[0].service}")
    steps.append("run config-check and check free disk")
    if plan.external_postgres:
        steps.append(f"no PostgreSQL dump here: PostgreSQL is external ({plan.external_postgres}); "
                     + ("the snapshot taken at the provider is the way back" if plan.service == "posthog"
                        else f"upgrading {plan.variable} does not touch it"))
    else:
        steps.append("skip the PostgreSQL backup (--skip-backup)" if request.skip_backup
                     else "back up PostgreSQL (`invoke backup --only postgres`: a verified pg_dump archive in backups/)")
    steps.append(f"pull {plan.target}" + (" and pin its digest" if request.pin_digest else ""))
    steps.append(f"set {plan.variable} in .env and recreate {', '.join(plan.services)}"
                 + ("".join(f"\n       {line}" for line in _recreation_lines(plan, root)) if root is not None else ""))
    steps.append(f"wait until healthy (at most {request.timeout:.0f} s) and check the URL; roll back on any failure")
    print(f"Plan: upgrade {plan.variable} {plan.current} -> {plan.target}")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    if dry_run:
        print(plan.diff(), end="")


class _Running:
    """A running container as recreation.decide reads it: every service of an upgrade runs."""

    running = True

    @staticmethod
    def label() -> str:
        return "running"


def _recreation_lines(plan: Plan, root: Path) -> list[str]:
    """One line per service the upgrade recreates, in the order the switch takes them, and how."""
    from posthog_compose.operations import recreation
    from posthog_compose.operations.upgrade import surge_gate

    reason = recreation.surge_unavailable(root)
    why = {name: "" for name in plan.services}
    if reason is None and "web" in plan.services:
        refusal, basis = surge_gate.decide(root, plan.current, plan.target)
        if refusal is not None:
            reason = surge_gate.side_by_side(plan.current, plan.target, refusal)
        why["web"] = basis  # why the two may run side by side
    planned = recreation.decide(plan.services, {name: [_Running()] for name in plan.services}, why, reason)
    return planned.lines()



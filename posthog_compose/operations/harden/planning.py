"""The plan of `invoke harden`: what applying the selected items will change (Change), computed
before anything changes, one line per change for the confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import images
from posthog_compose.operations import rotation
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.harden.checklist import (
    APPLY_ORDER,
    EXTERNAL_SECRETS,
    IMAGE_SERVICES,
    IMAGE_VARIABLES,
    ITEMS,
    OVERRIDE_FILE,
    POSTGRES_TLS_QUERY,
    REDIS_TLS_QUERY,
    Result,
    TLS_ITEMS,
    TLS_TEMPLATE,
)
from posthog_compose.operations.harden.items import _moving, _override_in_place, evaluate
from posthog_compose.operations.harden.override import _without_external, render_override
from posthog_compose.operations.harden.state import _container_image, read_state


# ----------------------------------------------------------------------------- apply
@dataclass
class Change:
    """What applying the selected items will do, computed before anything changes."""

    items: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # new .env values
    env_remove: list[str] = field(default_factory=list)
    rotation: rotation.Rotation | None = None
    chmod_env: bool = False
    untrack_env: bool = False
    certificates: bool = False
    override: bool = False
    running: bool = False  # the deployment runs: recreate and check it afterwards
    lines: list[str] = field(default_factory=list)  # the plan, for people
    skipped: list[str] = field(default_factory=list)
    needs_engine: list[str] = field(default_factory=list)  # a dry run without an engine: steps not planned in full
    certs_written: list[str] = field(default_factory=list)  # certificates (re)written by this run: ca, db, ...
    offline: bool = False  # a dry run without an engine: whether services run is unknown
    pinned: dict[str, str] = field(default_factory=dict)  # digest reference -> the reference it was pinned from

    @property
    def empty(self) -> bool:
        return not (self.env or self.env_remove or self.rotation or self.chmod_env or self.untrack_env
                    or self.certificates or self.override)


def plan(root: Path, runner: Runner, only: list[str], rotate_all: bool) -> tuple[Change, list[Result]]:
    from posthog_compose.configuration import manifest as manifest_module

    unknown = [item for item in only if item not in ITEMS]
    if unknown:
        raise OperatorError(f"--only {', '.join(unknown)}: unknown item(s); the items are {', '.join(ITEMS)}")
    state = read_state(root, runner, without_engine=runner.dry_run)
    offline = state.engine_error is not None
    results = {r.id: r for r in evaluate(state)}
    selected = [item for item in APPLY_ORDER if (not only or item in only)]
    if rotate_all and "secrets" not in selected:
        selected.insert(0, "secrets")
    change = Change(running=state.running, offline=offline)
    values = dict(state.values)
    manifest = manifest_module.load(root)

    if "env-file" in selected and results["env-file"].status == "fail":
        change.items.append("env-file")
        change.chmod_env = any(f.rule == "env-permissions" for f in state.findings)
        change.untrack_env = any(f.rule == "env-tracked" for f in state.findings)
        change.lines.append("env-file: " + " and ".join(
            (["chmod 600 .env"] if change.chmod_env else []) + (["git rm --cached .env (the file stays)"] if change.untrack_env else [])))

    to_rotate: list[str] = []
    if "secrets" in selected and (rotate_all or results["secrets"].status == "fail"):
        insecure = {f.subject for f in state.findings if f.rule.startswith("insecure")}
        to_rotate += [n for n in rotation.generated_secrets(manifest) if rotate_all or n in insecure]
    if "redis-password" in selected and results["redis-password"].status == "fail" and \
            results["redis-password"].kind == "apply" and "REDIS_PASSWORD" not in to_rotate:
        to_rotate.append("REDIS_PASSWORD")
    from posthog_compose.configuration import datastores

    for name in [n for n in to_rotate if n in EXTERNAL_SECRETS and datastores.is_external(values, EXTERNAL_SECRETS[n])]:
        # The provider owns that password: rotating it here would only break PostHog's connection.
        to_rotate.remove(name)
        change.skipped.append(f"secrets: {name} is not rotated: {datastores.TITLE[EXTERNAL_SECRETS[name]]} is external "
                              "and its password is the provider's (change it there, then in .env)")
    if to_rotate:
        # Without an engine, plan as on a live deployment (key lists keep their old keys, ALTER ROLE first).
        live = True if offline else rotation.has_data(root, runner)
        if offline:
            change.needs_engine.append("secrets (whether PostgreSQL holds data, so that its password changes inside "
                                       "the database first)")
        change.rotation = rotation.plan(manifest, values, to_rotate, live)
        values.update(change.rotation.changes)
        change.env.update(change.rotation.changes)
        change.items.append("secrets")
        for name in change.rotation.rotated:
            change.lines.append(f"secrets: {name}: {change.rotation.describe(name)}")

    if "debug" in selected and results["debug"].status == "fail":
        change.items.append("debug")
        change.env_remove.append("DEBUG")
        change.lines.append("debug: remove DEBUG from .env (PostHog's default is off)")

    # A moving tag is always pinned; exact tags only when `--only images` asks for it (the warning's fix).
    pin_exact = "images" in only and results["images"].status != "pass"
    if "images" in selected and (results["images"].status == "fail" or pin_exact):
        change.items.append("images")
        if offline:
            change.needs_engine.append("images (the digests to pin are read from the engine)")
        for name in IMAGE_VARIABLES if not offline else ():
            reference = values.get(name, "")
            if not reference or not (_moving(reference) or (pin_exact and "@" not in reference)):
                continue
            # The digest of the image the deployment runs (of the local image when it does not run).
            service = IMAGE_SERVICES[name]
            image = _container_image(runner, service) if service in state.containers else None
            pinned = images.repo_digest(runner, reference, image=image)
            if pinned:
                change.env[name] = pinned
                change.pinned[pinned] = reference
                change.lines.append(f"images: {name} {reference} -> {pinned}")
            elif not _moving(reference):
                change.skipped.append(f"images: {name} ({reference}) has no registry digest on this engine (built or "
                                      "loaded locally); it keeps its exact tag")
            else:
                change.skipped.append(f"images: {name} ({reference}) has no registry digest on this engine; set an "
                                      "exact version tag by hand (`invoke upgrade --service ... --to TAG`)")

    # The TLS items of external datastores are checks (kind "check"): the provider's TLS is not harden's.
    wanted_tls = [item for item in TLS_ITEMS if item in selected and results[item].status == "fail"
                  and results[item].kind == "apply"]
    if "certificates" in selected and (results["certificates"].status == "fail" or wanted_tls):
        if results["certificates"].status == "fail":
            change.certificates = True
            change.items.append("certificates")
            change.lines.append("certificates: create or renew the CA and the clickhouse, db and redis certificates "
                                "under certs/ (0700; keys 0600)")
    elif wanted_tls and results["certificates"].status == "fail":
        raise OperatorError("TLS needs valid certificates first: add `certificates` to --only")
    if wanted_tls:
        if state.override is not None and not _override_in_place(state) and \
                "invoke harden" not in state.override[:400]:  # the template's header names harden
            raise OperatorError(f"{OVERRIDE_FILE} exists and is not the one harden writes; merge {TLS_TEMPLATE} into "
                                "it by hand (see docs/tls.md), then run `invoke harden` again")
        if not _override_in_place(state):
            change.override = True
            change.lines.append(f"tls: write {OVERRIDE_FILE} from {TLS_TEMPLATE} (mounts the certificates)"
                                + _without_external(state))
        change.items.extend(wanted_tls)
        if "clickhouse-tls" in wanted_tls:
            change.env.update(CLICKHOUSE_SECURE="true", CLICKHOUSE_VERIFY="true")
            change.lines.append("clickhouse-tls: CLICKHOUSE_SECURE=true, CLICKHOUSE_VERIFY=true")
        if "postgres-tls" in wanted_tls:
            change.env["DATABASE_URL"] = _with_query(values.get("DATABASE_URL", ""), POSTGRES_TLS_QUERY)
            change.lines.append("postgres-tls: DATABASE_URL gets sslmode=verify-full; plain TCP to db is refused")
        if "redis-tls" in wanted_tls:
            url = values.get("REDIS_URL", "")
            change.env["REDIS_URL"] = _with_query(url.replace("redis://", "rediss://", 1), REDIS_TLS_QUERY)
            change.lines.append("redis-tls: REDIS_URL becomes rediss:// with the CA; the plain port is closed")
    elif state.override is not None and not _override_in_place(state) and "invoke harden" in state.override[:400] \
            and state.template != render_override(state.template, state.values) and not only:
        # A datastore turned external after harden wrote the override: its internal-TLS parts must go, or
        # they override the provider's CA settings from .env.
        change.override = True
        change.items.append("tls-override")
        change.lines.append(f"tls: rewrite {OVERRIDE_FILE}{_without_external(state)}")
    return change, list(results.values())


def _with_query(url: str, query: str) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    merged = dict(parse_qsl(parts.query))
    merged.update(dict(parse_qsl(query)))
    return urlunsplit(parts._replace(query=urlencode(merged, safe="/")))

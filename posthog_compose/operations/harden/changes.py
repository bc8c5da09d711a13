"""Applying a planned change: the confirmation, the backups of the files it replaces, PostgreSQL's
password changed inside the database before .env, .env and the TLS files written, and the services whose
configuration changed recreated.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from posthog_compose.configuration import certs
from posthog_compose.configuration import compose, images
from posthog_compose.operations import rotation
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write, timestamp
from posthog_compose.operations.harden.checklist import OVERRIDE_FILE, TLS_TEMPLATE
from posthog_compose.operations.harden.override import render_override
from posthog_compose.operations.harden.planning import Change


def services_mounting(root: Path, names: list[str]) -> list[str]:
    """The services whose containers mount one of the certificates ``names`` (ca, db, ...) through the
    override file. A renewed certificate is a new file (written by rename), which a running container
    does not see, and Compose does not recreate a service whose configuration did not change."""
    from posthog_compose.configuration.manifest import load_yaml

    path = root / OVERRIDE_FILE
    if not names or not path.exists():
        return []
    try:
        services = (load_yaml(path) or {}).get("services") or {}
    except Exception:  # an unreadable override: `up` reports it; recreate every certificate user instead
        return list(_all_services())
    wanted = {f"./certs/{name}.{suffix}" for name in names for suffix in ("crt", "key")}
    found = []
    for service, body in services.items():
        volumes = (body or {}).get("volumes") or [] if isinstance(body, dict) else []
        sources = {str(v.get("source", "")) if isinstance(v, dict) else str(v).split(":", 1)[0] for v in volumes}
        if sources & wanted:
            found.append(str(service))
    return [service for service in _all_services() if service in found]


def _recreate_all(root: Path, runner: Runner, force: list[str] | None = None) -> None:
    """Recreate only the services whose configuration changed (and ``force``: those that mount a
    renewed certificate), in order (operations/recreation.py), then wait for every service's health."""
    from posthog_compose.operations import recreation, stack
    from posthog_compose.configuration.envfile import EnvFile, env_path

    values = EnvFile.load(env_path(root)).resolved()
    here = stack.services_here(values)
    force = [service for service in force or [] if service in here]  # never start an external datastore's service
    planned = recreation.plan(root, runner, force={service: "loads the renewed certificates" for service in force})
    if planned.error:  # what runs could not be compared: every service is brought up to date by Compose
        if force:
            print(f"Recreating {', '.join(force)} so that they load the renewed certificates ...")
            stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--force-recreate",
                                                               "--no-deps", *force),
                                 list(force), 600, readiness_values=values)
        print("Recreating the services whose configuration changed ...")
    elif planned.changing:
        print("Recreating only what changed, in this order:")
        for line in planned.lines():
            print(f"  {line}")
        recreation.apply(root, runner, planned, 600, values)
    else:
        print("No service's configuration changed: no container is recreated.")
    stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "--remove-orphans"),
                         here, 600, readiness_values=values)


def predicted_recreation(root: Path, runner: Runner, change: Change):
    """What applying ``change`` will recreate (a recreation.Plan), before anything is written: the
    hashes of the planned .env compared with the running containers; the services the override file
    mounts certificates into (first TLS run) or that mount a renewed certificate are recreated too."""
    from posthog_compose.configuration.envfile import EnvFile, env_path
    import yaml

    from posthog_compose.operations import recreation

    env = EnvFile.load(env_path(root))
    for name, value in change.env.items():
        env.set(name, value)
    for name in change.env_remove:
        env.remove(name)
    force: dict[str, str] = {}
    if change.override:
        values = {**env.resolved(), **change.env}
        try:
            text = render_override((root / TLS_TEMPLATE).read_text(encoding="utf-8"), values)
            mounted = [str(name) for name in ((yaml.safe_load(text) or {}).get("services") or {})]
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            mounted = list(_all_services())
        force.update({name: "mounts the certificates (TLS)" for name in mounted})
    elif change.certificates:
        force.update({name: "loads the renewed certificates"
                      for name in services_mounting(root, ["ca", "db", "redis", "clickhouse"])})
    return recreation.predict(root, runner, env.render(), force, stands_for=dict(change.pinned))


def _all_services() -> tuple[str, ...]:
    from posthog_compose.configuration.manifest import SERVICES

    return SERVICES


def _services_running(root: Path, runner: Runner) -> list[str]:
    from posthog_compose.operations import stack

    return [s.service for s in stack.service_states(root, runner) if s.state == "running"]


def _confirm() -> None:
    sys.stdout.write("Apply these changes? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise OperatorError("no confirmation (no input): nothing was changed; pass --yes for automation")
    if answer.strip().lower() not in ("y", "yes"):
        raise OperatorError("not confirmed: nothing was changed")


def _backup_files(root: Path) -> Path:
    directory = root / "backups" / f"harden-{timestamp()}"
    directory.mkdir(parents=True, mode=0o700)
    for name in (".env", OVERRIDE_FILE):
        source = root / name
        if source.exists():
            shutil.copy2(source, directory / name)
            (directory / name).chmod(0o600)
    return directory


def _apply(root: Path, runner: Runner, change: Change) -> None:
    if change.untrack_env:
        runner.run(["git", "-C", str(root), "rm", "--cached", "--quiet", "--", ".env"], capture=True)
    if change.certificates:
        written = certs.ensure(root)
        change.certs_written = list(written)
        print(f"Certificates written: {', '.join(written) or 'none needed'}.")
    if change.override:
        from posthog_compose.configuration.envfile import EnvFile, env_path

        values = EnvFile.load(env_path(root)).resolved()
        values.update(change.env)
        text = render_override((root / TLS_TEMPLATE).read_text(encoding="utf-8"), values)
        atomic_write(root / OVERRIDE_FILE, text, 0o644)
        from posthog_compose.operations import proxy  # with the edge proxy on, COMPOSE_FILE must list the override too

        proxy.include_override(root)
    for pinned, reference in change.pinned.items():  # the version each digest stands for (upgrade gates)
        images.record_digest_version(root, reference, pinned)
    # Journaled: the new values are recorded (0600) before PostgreSQL's password changes, so a
    # kill between ALTER ROLE and the .env write cannot lose it (see rotation.commit).
    rotation.commit(root, runner, dict(change.env),
                    change.rotation.postgres_password if change.rotation else None, list(change.env_remove))


def _ensure_db_running(root: Path, runner: Runner) -> None:
    from posthog_compose.operations import stack

    if "db" not in _services_running(root, runner):
        print("Starting db to change its password ...")
        stack.start_and_wait(root, runner, compose.command(root, "up", "--detach", "db"), ["db"], 300)

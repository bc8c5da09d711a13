"""First run: `invoke init` writes .env from the manifest with fresh secrets, fills in
variables a newer manifest added, and rotates single secrets on request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.configuration import credentials
from posthog_compose.operations import rotation
from posthog_compose.configuration.envfile import ENV_MODE, EnvFile, env_path
from posthog_compose.errors import OperatorError
from posthog_compose.fileops import KEEP_SECRET_COPIES, atomic_write, backup, retain
from posthog_compose.configuration.manifest import Manifest


@dataclass
class InitResult:
    path: Path
    created: bool = False
    added: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    backup: Path | None = None
    warnings: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # old copies removed by the retention rule

    def _pruned(self) -> str:
        return (f" Removed {len(self.pruned)} older cop{'y' if len(self.pruned) == 1 else 'ies'} of .env (the newest "
                f"{KEEP_SECRET_COPIES} are kept)." if self.pruned else "")

    def summary(self) -> str:
        if self.created:
            extra = f" (previous file kept as {self.backup.name})" if self.backup else ""
            return f"Wrote {self.path.name} with fresh secrets, mode 0600{extra}.{self._pruned()}"
        parts = []
        if self.added:
            parts.append(f"added {len(self.added)} new variable(s): {', '.join(self.added)}")
        if self.rotated:
            parts.append(f"rotated {', '.join(self.rotated)}")
        if not parts:
            return f"{self.path.name} already exists and knows every variable; nothing changed."
        text = f"{self.path.name}: " + "; ".join(parts)
        text += f" (previous file kept as {self.backup.name})." if self.backup else "."
        text += self._pruned()
        return "\n".join([*(f"warning: {warning}" for warning in self.warnings), text])


def fresh_values(manifest: Manifest, keep: dict[str, str] | None = None) -> dict[str, str]:
    """Values for every variable: ``keep`` first, else a generated secret or the default;
    derived values are computed last so they agree with their parts."""
    keep = keep or {}
    values: dict[str, str] = {}
    for variable in manifest.variables:
        if variable.name in keep:
            values[variable.name] = keep[variable.name]
        elif variable.generate:
            values[variable.name] = credentials.generate(variable.generate)
        else:
            values[variable.name] = variable.default
    for variable in manifest.variables:
        if variable.derive and variable.name not in keep:
            values[variable.name] = variable.render_derived(values)
    return values


def env_header() -> list[str]:
    return [
        f"Written by `invoke init` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from variables.yml.",
        "Holds secrets: keep it mode 0600 and never commit it (it is git-ignored).",
        "Check it with `invoke config-check`; add variables with `invoke add-env-var`.",
    ]


def init(root: Path, manifest: Manifest | None = None, force: bool = False, rotate: list[str] | None = None, *,
         lock: bool = True) -> InitResult:
    """Create .env, or complete an existing one; ``force`` regenerates it (keeping a backup).

    All of it under the deployment lock (``lock=False``: the caller holds it, as `up` does), and
    with no ``manifest`` variables.yml is read once the lock is held: a variable added meanwhile
    by `invoke add-env-var` is then known, and its value in .env is never written back over."""
    from contextlib import nullcontext

    from posthog_compose import journal
    from posthog_compose.configuration.manifest import load

    with journal.deployment_lock(root, "init") if lock else nullcontext():
        return _init(root, manifest if manifest is not None else load(root), force, rotate)


def _init(root: Path, manifest: Manifest, force: bool, rotate: list[str] | None) -> InitResult:
    from posthog_compose.documents.generate import render_env

    path = env_path(root)
    rotate = list(rotate or [])
    for name in rotate:
        if name not in manifest:
            raise OperatorError(f"--rotate {name}: not a variable of variables.yml")
        if not manifest[name].generate:
            raise OperatorError(f"--rotate {name}: not a generated secret; set it in .env by hand")

    if not path.exists() or force:
        result = InitResult(path, created=True)
        if path.exists():
            result.backup = backup(path)
            result.backup.chmod(ENV_MODE)
        atomic_write(path, render_env(manifest, fresh_values(manifest), env_header()), ENV_MODE)
        result.pruned = retain(path.parent, f"{path.name}.backup-") if result.backup else []
        return result

    env = EnvFile.load(path)
    current = env.values()
    result = InitResult(path)
    missing = [v for v in manifest.variables if v.name not in current]
    if not missing and not rotate:
        if path.stat().st_mode & 0o077:
            path.chmod(ENV_MODE)
        return result
    env.refuse_duplicates()  # before the backup: a refusal changes nothing (hook: hostile input)
    if "POSTGRES_PASSWORD" in rotate:
        _require_engine_for_postgres(root, env.resolved())  # before the backup: a refusal changes nothing
    result.backup = backup(path)
    result.backup.chmod(ENV_MODE)
    values = fresh_values(manifest, keep=current)
    for variable in missing:
        env.set(variable.name, values[variable.name])
        result.added.append(variable.name)
    if missing or not rotate:
        env.write(path)
    if rotate:
        _rotate(root, manifest, rotate, result)
    result.pruned = retain(path.parent, f"{path.name}.backup-")  # after the write succeeded
    return result


def _rotate(root: Path, manifest: Manifest, rotate: list[str], result: InitResult) -> None:
    """`init --rotate`: journaled like harden's rotation (rotation.commit), after finishing whatever
    a killed task left (init holds the deployment lock). On a deployment whose PostgreSQL volume
    exists, POSTGRES_PASSWORD is changed inside the database first, so PostHog keeps its database."""
    from posthog_compose import journal
    from posthog_compose.operations.engine import Runner, docker_env

    runner = Runner(Path(root), env=docker_env())
    if journal.pending(root):
        journal.replay(root, runner)
    env = EnvFile.load(env_path(root))
    # The shared planner: derived URLs keep what was appended (`?sslmode=...`, rediss://).
    # Key lists keep their old keys as on a live deployment: init cannot tell whether data exists.
    planned = rotation.plan(manifest, env.values(), rotate, live=True)
    password = planned.changes.get("POSTGRES_PASSWORD")
    if password and not _has_data(root, runner):
        password = None
    rotation.commit(root, runner if password else None, planned.changes, password)
    result.rotated.extend(planned.rotated)
    result.warnings.extend(planned.warnings)


def _require_engine_for_postgres(root: Path, values: dict[str, str]) -> None:
    """`--rotate POSTGRES_PASSWORD` changes the password inside PostgreSQL first when its data volume
    exists, and only the engine can tell whether it does: without it, rotating .env alone would lock
    PostHog out of its database. So it is refused, as harden refuses it (an external PostgreSQL's
    password is the provider's, and rotation.plan leaves it alone)."""
    from posthog_compose.configuration import compose, datastores
    from posthog_compose.operations.engine import Runner, docker_env, engine_reason, last_line

    if datastores.is_external(values, "postgres"):
        return
    runner = Runner(Path(root), env=docker_env(), task="init")
    try:
        answer = runner.run(compose.command(root, "volumes", "--format", "json"), capture=True, check=False,
                            mutating=False, timeout=60)
        reason = "" if answer.returncode == 0 else engine_reason(last_line(answer.stderr) or f"exit {answer.returncode}")
    except OperatorError as exc:
        reason = exc.message
    if reason:
        raise OperatorError(f"--rotate POSTGRES_PASSWORD needs the Docker engine, which does not answer ({reason}): "
                            "the password must change inside PostgreSQL first when it holds data, and changing only "
                            ".env would lock PostHog out of its database; start the engine (`invoke doctor` checks "
                            "it) and run again. Nothing was changed")


def _has_data(root: Path, runner) -> bool:
    try:
        return rotation.has_data(root, runner)
    except OperatorError:
        return False  # no Compose or no engine here: nothing runs, so .env is the only place

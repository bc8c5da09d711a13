"""First run: `invoke init` writes .env from the manifest with fresh secrets, fills in
variables a newer manifest added, and rotates single secrets on request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import credentials
from .envfile import ENV_MODE, EnvFile, env_path
from .errors import OperatorError
from .fileops import atomic_write, backup
from .manifest import Manifest, Variable


@dataclass
class InitResult:
    path: Path
    created: bool = False
    added: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    backup: Path | None = None

    def summary(self) -> str:
        if self.created:
            extra = f" (previous file kept as {self.backup.name})" if self.backup else ""
            return f"Wrote {self.path.name} with fresh secrets, mode 0600{extra}."
        parts = []
        if self.added:
            parts.append(f"added {len(self.added)} new variable(s): {', '.join(self.added)}")
        if self.rotated:
            parts.append(f"rotated {', '.join(self.rotated)}")
        if not parts:
            return f"{self.path.name} already exists and knows every variable; nothing changed."
        text = f"{self.path.name}: " + "; ".join(parts)
        return text + (f" (previous file kept as {self.backup.name})." if self.backup else ".")


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


def init(root: Path, manifest: Manifest, force: bool = False, rotate: list[str] | None = None) -> InitResult:
    """Create .env, or complete an existing one; ``force`` regenerates it (keeping a backup)."""
    from .generate import render_env

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
        return result

    env = EnvFile.load(path)
    current = env.values()
    result = InitResult(path)
    missing = [v for v in manifest.variables if v.name not in current]
    if not missing and not rotate:
        if path.stat().st_mode & 0o077:
            path.chmod(ENV_MODE)
        return result
    result.backup = backup(path)
    result.backup.chmod(ENV_MODE)
    values = fresh_values(manifest, keep=current)
    for variable in missing:
        env.set(variable.name, values[variable.name])
        result.added.append(variable.name)
    for name in rotate:
        new_value = _rotated_value(manifest[name], current.get(name, ""))
        env.set(name, new_value)
        current[name] = new_value
        result.rotated.append(name)
        for dependant in manifest.variables:
            if name in dependant.derived_from():
                current_values = {**env.values()}
                env.set(dependant.name, dependant.render_derived(current_values))
    env.write(path)
    return result


def _rotated_value(variable: Variable, old: str) -> str:
    """A new value; encryption key lists get the new key first and keep the old ones,
    because PostHog decrypts with any key in the list and dropping one loses data."""
    new = credentials.generate(variable.generate)
    if variable.format == "encryption-key-list" and old:
        return ",".join([new] + [k for k in old.split(",") if k])
    return new

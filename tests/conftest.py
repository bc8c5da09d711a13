"""Shared fixtures: a disposable copy of the deployment repository for each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What an operator's clone holds: the deployment files and the tasks that operate it.
DEPLOYMENT_FILES = ("docker-compose.yml", "docker-compose.tls.yml", "variables.yml", "compatibility.yml", "upgrades.yml",
                    ".env.example",
                    "README.md", "tasks.py", "clickhouse", "postgres")
DEPLOYMENT_FILES += ("docker-compose.proxy.yml", "docker-compose.proxy-private.yml", "proxy")  # the edge proxy
DEPLOYMENT_FILES += ("datastore-ca",)  # CA of external datastores


def copy_repository(target: Path) -> Path:
    for name in DEPLOYMENT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        elif source.exists():
            shutil.copy2(source, target / name)
    # The package is imported from the real checkout; tasks resolve files from ROOT, so
    # tests that need the copy's files call the package functions with the copy as root.
    return target


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh copy of the deployment files (no .env) to modify freely."""
    target = tmp_path / "deployment"
    target.mkdir()
    return copy_repository(target)


@pytest.fixture
def manifest():
    from posthog_compose.configuration import manifest as manifest_module

    return manifest_module.load(REPO)


def run_invoke(root: Path, *args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `invoke` CLI against the deployment copy at ``root``.

    The copy's tasks.py imports the package from the checkout; POSTHOG_COMPOSE_ROOT points it at the copy.
    """
    environ = dict(os.environ if env is None else env)
    environ["POSTHOG_COMPOSE_ROOT"] = str(root)
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=environ, text=True,
                          capture_output=True, input=input, timeout=600)


@pytest.fixture
def deployed(repo: Path) -> Path:
    """A copy with a fresh .env from `invoke init`."""
    from posthog_compose.operations import bootstrap
    from posthog_compose.configuration import manifest as manifest_module

    bootstrap.init(repo, manifest_module.load(repo))
    return repo


def set_env(repo: Path, **values) -> None:
    """Set (or, with None, remove) values in the copy's .env."""
    from posthog_compose.configuration.envfile import EnvFile

    env = EnvFile.load(repo / ".env")
    for key, value in values.items():
        if value is None:
            env.remove(key)
        else:
            env.set(key, value)
    env.write()

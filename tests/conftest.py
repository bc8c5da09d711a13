"""Shared fixtures: a disposable copy of the deployment repository for each test, the Compose the
kit itself finds, and the removal of pytest's temporary folder at the end of a run."""

from __future__ import annotations

import contextlib
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


@pytest.fixture(autouse=True)
def _forget_registered_secrets():
    """The masking layer is one per process, as in a task; a test that registered secrets (some register
    hundreds of random ones) must not mask pieces of another test's messages."""
    yield
    from posthog_compose import masking

    masking.MASKER.__init__()


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


def compose_command(root: Path, *args: str) -> list[str]:
    """A Compose command for the deployment in ``root``, with the Compose the kit itself finds: the
    pinned binary installed into the kit's virtual environment by the README's steps. Never a bare
    `docker-compose` from PATH, which a host set up the README's way does not have."""
    from posthog_compose.configuration import compose

    return compose.command(root, *args)


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


def pytest_sessionfinish(session, exitstatus):
    """Remove pytest's base temporary folder at the end of every run, failed ones too: it holds
    generated secrets, certificates and backup archives (what a failure needs is in the report).
    A folder given with --basetemp is the caller's and stays."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    if basetemp is None or getattr(factory, "_given_basetemp", None) is not None:
        return
    shutil.rmtree(basetemp, ignore_errors=True)
    parent = Path(basetemp).parent  # pytest-of-<user>: empty now but for its link to the current run
    link = parent / "pytest-current"
    if link.is_symlink() and not link.exists():
        link.unlink()
    with contextlib.suppress(OSError):
        parent.rmdir()

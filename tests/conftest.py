"""Shared fixtures: a disposable copy of the deployment repository for each test, the Compose the
kit itself finds, and the removal of pytest's temporary folder at the end of a run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
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


@pytest.fixture(autouse=True)
def _forget_a_ctrl_c():
    """A Ctrl-C a test simulated belongs to that test, as it belongs to its task: a later test in the same
    process must not find its probe threads refusing to start a command ("not run: interrupted")."""
    yield
    from posthog_compose import interrupts

    interrupts._requested.clear()


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


# The end-to-end files that run on the second private engine; the others run on the first. Two
# engines side by side halve the end-to-end wall time (their tests mostly wait on containers); the
# split keeps the two sums of the files' times close, files sharing a session fixture together
# (the managed datastores: test_external*, test_migrate_datastore), and every file that switches the
# edge proxy on on the first engine: proxies of two engines never publish side by side.
SECOND_ENGINE_FILES = frozenset({
    "test_backup.py", "test_backup_online.py", "test_restore_faults.py", "test_faults.py",
})


def engine_group(nodeid: str) -> str | None:
    """The engine an end-to-end test runs on, by its file; None for a test that needs no engine."""
    if not nodeid.startswith("tests/e2e/"):
        return None
    if os.environ.get("E2E_DOCKER_HOST"):
        return "the given end-to-end engine"  # one engine given: its tests must not run side by side
    file = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return "the second end-to-end engine" if file in SECOND_ENGINE_FILES else "the first end-to-end engine"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """The end-to-end tests run one after another on a private engine, in two groups of files (one
    engine per group, each in its own worker); the rest of the suite goes to whichever worker is free
    (pyproject's addopts start two: a third beside the engines made their timing bounds flaky).

    One work unit per engine group, one per test elsewhere: pytest-xdist's own loadgroup relies on
    rewriting node ids, which pytest 9.2 no longer allows, so the grouping is said here. The biggest
    units are handed out first, so the two engines start at once."""
    from xdist.scheduler import LoadScopeScheduling

    class EngineGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return engine_group(nodeid) or nodeid

    return EngineGroups(config, log)


# What a task prints must not depend on the terminal the suite runs in (pytest-xdist gives its workers
# COLUMNS=80 and LINES=24, and the tasks fit their lines to COLUMNS): a test that wants a width says so.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

_E2E_STARTED: dict[str, float] = {}


def _say_on_the_terminal(config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(line)
        reporter.flush()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    global _CONFIG
    _CONFIG = config


_CONFIG = None


def pytest_runtest_logstart(nodeid, location):
    """Each end-to-end test's start and time on the terminal, so a CI log is never minutes of silence.
    Said here, in the conftest every process loads: the controller of a pytest-xdist run collects
    nothing and so never loads tests/e2e/conftest.py; its workers have no terminal."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not nodeid.startswith("tests/e2e/") or _CONFIG is None:
        return
    _say_on_the_terminal(_CONFIG, f"e2e: {nodeid} ...")
    _E2E_STARTED[nodeid] = time.monotonic()


def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid in _E2E_STARTED and _CONFIG is not None:
        took = time.monotonic() - _E2E_STARTED.pop(report.nodeid)
        _say_on_the_terminal(_CONFIG, f"e2e: {report.nodeid} {report.outcome} in {took:.0f}s")


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

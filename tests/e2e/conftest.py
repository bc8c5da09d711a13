"""Fixtures of the end-to-end suite: one private engine per session, a deployment per test.

Under CI=true an engine that cannot start FAILS the run; elsewhere the e2e tests are
skipped with the reason (a developer machine may have no way to run dockerd).

Progress goes to the terminal while it happens (image builds, each test's start, each task a
test runs), so a CI log is never minutes of silence; the engine and every file it wrote are
removed after the session, also when a test failed."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.e2e import harness
from tests.e2e.harness import HarnessError, RealLaneUnavailable, image_lane, make_deployment, start_engine, stop_engine


def _terminal_writer(config):
    """A progress writer that prints through pytest's terminal reporter, around output capture.
    The reporter is looked up at each call: it may not exist yet when this conftest is configured."""
    import contextlib

    fallback = harness.progress
    worker = getattr(config, "workerinput", {}).get("workerid")

    def write(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None and worker is None:
            fallback(line)
            return
        # Inside a test or fixture pytest captures the output: step around it for progress lines.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if worker is not None:
                # A pytest-xdist worker has no terminal of its own; its standard error is the run's.
                print(f"[{worker}] {line}", file=sys.__stderr__, flush=True)
                return
            reporter.ensure_newline()
            reporter.write_line(line)
            reporter.flush()

    return write


def pytest_configure(config):
    harness.progress = _terminal_writer(config)


def pytest_collection_modifyitems(config, items):
    """A test runs in the lanes its `lanes` marker names; in the other lane it is skipped with its reason
    (reported as skipped, never as passed)."""
    lane = image_lane()
    for item in items:
        marker = item.get_closest_marker("lanes")
        if marker is not None and lane not in marker.args:
            item.add_marker(pytest.mark.skip(reason=f"not in the {lane} lane: {marker.kwargs.get('reason', '')}"))


@pytest.fixture(scope="session")
def e2e_engine():
    try:
        engine = start_engine()
    except RealLaneUnavailable as exc:
        pytest.exit(str(exc), returncode=1)  # asked for real images and none can be had: stop, in one line
    except (HarnessError, OSError) as exc:
        message = f"e2e harness could not start: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield engine
    finally:
        stop_engine(engine)


@pytest.fixture
def deployment(tmp_path, e2e_engine):
    deployment = make_deployment(tmp_path / "deployment", e2e_engine)
    yield deployment
    deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture(scope="session")
def managed_datastores(e2e_engine, tmp_path_factory):
    """The "managed" PostgreSQL and Redis (TLS only, their own Compose project and network), shared by
    the tests of external datastores; each test makes its own database and Redis db number."""
    from tests.e2e.managed import start_managed

    try:
        managed = start_managed(e2e_engine, tmp_path_factory.mktemp("managed"))
    except HarnessError as exc:
        pytest.fail(f"the managed datastores could not start: {exc}", pytrace=False)
    try:
        yield managed
    finally:
        managed.stop()

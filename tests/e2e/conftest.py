"""Fixtures of the end-to-end suite: one private engine per session, a deployment per test.

Under CI=true an engine that cannot start FAILS the run; elsewhere the e2e tests are
skipped with the reason (a developer machine may have no way to run dockerd)."""

from __future__ import annotations

import os

import pytest

from tests.e2e.harness import HarnessError, make_deployment, start_engine, stop_engine


@pytest.fixture(scope="session")
def e2e_engine():
    try:
        engine = start_engine()
    except (HarnessError, OSError) as exc:
        message = f"e2e harness could not start: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield engine
    stop_engine(engine)


@pytest.fixture
def deployment(tmp_path, e2e_engine):
    deployment = make_deployment(tmp_path / "deployment", e2e_engine)
    yield deployment
    deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)

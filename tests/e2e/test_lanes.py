"""The real-image lane where no registry can be reached: the suite stops at once, in one line naming the
image it could not pull, with no image built and no stand-in used in its place, and its engine removed.
The registry is made unreachable on purpose (the engine's HTTPS proxy is a closed loopback port), so the
test proves the same on a host with internet."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e import harness

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", reason="runs the real lane itself, against a registry "
                                                                 "made unreachable on purpose")]


def test_the_real_lane_without_a_registry_stops_at_once_naming_the_image(tmp_path):
    state_root = Path(tempfile.mkdtemp(prefix="real-lane-", dir=os.environ.get("E2E_STATE_ROOT") or None))
    closed = harness.free_port()  # nothing listens there: every pull through it is refused at once
    env = {**os.environ, "E2E_IMAGES": "real", "CI": "true", "E2E_STATE_ROOT": str(state_root),
           "HTTPS_PROXY": f"http://127.0.0.1:{closed}", "HTTP_PROXY": f"http://127.0.0.1:{closed}"}
    env.pop("E2E_DOCKER_HOST", None)
    env.pop("E2E_STATE_DIR", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    began = time.monotonic()
    try:
        # -n 0: one process, whose stop (pytest.exit) is the run's; pytest-xdist reports it as a crash.
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0", "--basetemp",
                                 str(tmp_path / "inner"), "tests/e2e/test_lifecycle.py"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        took = time.monotonic() - began
        output = result.stdout + result.stderr
        first = harness.real_lane_pulls()[0]
        assert result.returncode != 0, output[-2000:]
        assert f"real lane: could not pull {first}: " in output, output[-2000:]
        assert "building the test images" not in output and "passed" not in output.splitlines()[-1], output[-2000:]
        assert took < 120, took
        assert list(state_root.iterdir()) == []  # the engine it started is stopped and its state removed
    finally:
        for state in state_root.glob("*/"):
            subprocess.run([str(harness.SCRIPT), "stop", "--state-dir", str(state)], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(state_root)], check=False)

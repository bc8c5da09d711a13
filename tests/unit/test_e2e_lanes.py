"""The real-image lane is wired, although CI here runs only the local one: every end-to-end test says
which lanes it runs in (and why not the other), a test of the real lane touches nothing only a stand-in
has, the real lane's images are the kit's own defaults from .env.example, its dry run prints the pulls
it would make, and an image that cannot be pulled ends the run in one line naming it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posthog_compose.configuration import manifest as manifest_module
from tests.conftest import REPO
from tests.e2e import harness

E2E = REPO / "tests" / "e2e"
#: What only the local lane has: the stand-ins' own endpoints and images, images built here, the local registry.
LOCAL_ONLY = ("/_standin/", "standin", "STANDIN", "posthog-compose-e2e/", "start_registry", "image_env")


def _lanes(call: ast.expr) -> tuple[tuple[str, ...], str] | None:
    """(lanes, reason) of a `pytest.mark.lanes(...)` call, else None."""
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "lanes":
        reason = next((k.value.value for k in call.keywords if k.arg == "reason" and isinstance(k.value, ast.Constant)), "")
        return tuple(a.value for a in call.args if isinstance(a, ast.Constant)), reason
    return None


def _tests() -> list[tuple[str, tuple[str, ...] | None, str, str]]:
    """(test id, lanes, reason, source) of every test function under tests/e2e."""
    found = []
    for path in sorted(E2E.rglob("test_*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        module_mark = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
                module_mark = next((m for m in map(_lanes, values) if m), None)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                mark = next((m for m in map(_lanes, node.decorator_list) if m), None) or module_mark
                lanes, reason = mark if mark else (None, "")
                found.append((f"{path.relative_to(REPO)}::{node.name}", lanes, reason, ast.get_source_segment(text, node)))
    return found


def test_the_suite_has_end_to_end_tests_to_classify():
    assert len(_tests()) >= 14


@pytest.mark.parametrize("test_id, lanes, reason, source", _tests(), ids=[t[0] for t in _tests()])
def test_every_e2e_test_is_shared_or_marked_for_one_lane_with_the_reason(test_id, lanes, reason, source):
    assert lanes, f"{test_id}: no @pytest.mark.lanes(...): say whether it runs in the local lane, the real one or both"
    assert set(lanes) <= set(harness.LANES) and lanes, (test_id, lanes)
    if set(lanes) != set(harness.LANES):
        assert len(reason) > 20, f"{test_id}: a test of one lane says why (reason=...)"
    if "real" in lanes:
        used = [token for token in LOCAL_ONLY if token in source]
        assert not used, f"{test_id} runs in the real lane but uses what only the local lane has: {used}"


def test_shared_modules_use_nothing_only_the_local_lane_has():
    """A module all of whose tests run in the real lane: its helpers and fixtures too."""
    tests = _tests()
    modules = {test_id.split("::")[0] for test_id, _, _, _ in tests}
    shared = [m for m in modules if all(lanes and "real" in lanes for test_id, lanes, _, _ in tests
                                        if test_id.startswith(m + "::"))]
    assert len(shared) >= 2, shared
    for module in shared:
        text = (REPO / module).read_text()
        assert not [t for t in LOCAL_ONLY if t in text], module


def test_the_real_lane_runs_the_kits_own_defaults():
    defaults = {v.name: v.default for v in manifest_module.load(REPO).variables}
    images = harness.real_lane_images()
    assert set(images) == set(harness.IMAGE_VARIABLES)
    assert images == {name: defaults[name] for name in harness.IMAGE_VARIABLES}
    assert images["POSTHOG_IMAGE"] == "posthog/posthog:release-1.43.0"
    assert not any("posthog-compose-e2e" in image for image in images.values())
    assert harness.REAL_UPGRADE_FROM.startswith("posthog/posthog:release-1.4")
    assert harness.REAL_UPGRADE_FROM != images["POSTHOG_IMAGE"]


def test_the_dry_run_prints_every_pull_the_real_lane_makes():
    result = subprocess.run([sys.executable, "-m", "tests.e2e.harness", "pulls"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"docker pull {image}" for image in harness.real_lane_pulls()]
    assert set(harness.real_lane_pulls()) == {*harness.real_lane_images().values(), harness.REAL_UPGRADE_FROM}


def test_an_image_that_cannot_be_pulled_ends_the_run_in_one_line_naming_it(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text('#!/bin/sh\necho "Error response from daemon: Get \\"https://registry.invalid/v2/\\": '
                                 'dial tcp: lookup registry.invalid: no such host" >&2\nexit 1\n')
    (fake / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(harness.RealLaneUnavailable) as raised:
        harness.pull_real_images(harness.Engine("unix:///nonexistent.sock", None))
    message = str(raised.value)
    first = harness.real_lane_pulls()[0]
    assert message.startswith(f"real lane: could not pull {first}: ") and "no such host" in message
    assert "\n" not in message


def test_an_unknown_lane_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("E2E_IMAGES", "remote")
    with pytest.raises(harness.HarnessError, match="E2E_IMAGES='remote' is not a lane: use local"):
        harness.image_lane()

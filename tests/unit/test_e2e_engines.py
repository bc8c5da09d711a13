"""How the end-to-end files are shared between the two private engines of a run (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SECOND_ENGINE_FILES, engine_group

E2E = Path(__file__).resolve().parents[1] / "e2e"


def test_every_file_named_for_the_second_engine_exists():
    missing = sorted(name for name in SECOND_ENGINE_FILES if not (E2E / name).is_file())
    assert not missing, f"tests/conftest.py names end-to-end files that do not exist: {missing}"


def test_each_end_to_end_file_runs_on_exactly_one_engine_and_other_tests_on_none(monkeypatch):
    monkeypatch.delenv("E2E_DOCKER_HOST", raising=False)
    groups = {engine_group(f"tests/e2e/{path.name}::test_x") for path in E2E.glob("test_*.py")}
    assert groups == {"the first end-to-end engine", "the second end-to-end engine"}
    assert engine_group("tests/unit/test_manifest.py::test_x") is None
    assert engine_group("tests/e2e/test_backup.py::test_x[a::b]") == "the second end-to-end engine"
    # The managed datastores are one session fixture: the files that use it share an engine.
    users = {path.name for path in E2E.glob("test_*.py") if "managed_datastores" in path.read_text()}
    assert len({engine_group(f"tests/e2e/{name}::t") for name in users}) == 1


def test_a_given_engine_runs_every_end_to_end_test_in_one_worker(monkeypatch):
    monkeypatch.setenv("E2E_DOCKER_HOST", "unix:///nowhere.sock")
    assert engine_group("tests/e2e/test_backup.py::t") == engine_group("tests/e2e/test_faults.py::t")

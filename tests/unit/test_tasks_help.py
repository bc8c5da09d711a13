"""Every task has a one-line help and every option has help text."""

from __future__ import annotations

import importlib
import inspect

from invoke import Collection

from tests.conftest import REPO, run_invoke


def _collection():
    import tasks

    importlib.reload(tasks)
    return Collection.from_module(tasks)


def test_every_task_has_a_docstring_and_every_option_help():
    collection = _collection()
    assert collection.task_names
    for name in collection.task_names:
        task = collection[name]
        assert task.__doc__ and task.__doc__.strip(), name
        parameters = [p for p in inspect.signature(task.body).parameters if p != "c"]
        for parameter in parameters:
            assert task.help.get(parameter) or task.help.get(parameter.replace("_", "-")), f"{name} --{parameter}"


def test_invoke_list_shows_every_task_with_help():
    result = run_invoke(REPO, "--list")
    assert result.returncode == 0, result.stderr
    for name in _collection().task_names:
        line = next(l for l in result.stdout.splitlines() if l.strip().startswith(name + " ") or l.strip() == name)
        assert len(line.split(None, 1)) == 2, f"{name} has no help in --list"

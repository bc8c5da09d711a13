"""The package's architecture, measured from its own imports (lazy imports inside functions count):
the import contracts of pyproject.toml ([tool.importlinter]: operations build on configuration,
never the reverse, the shared modules below both), and no import cycle at all between the
package's modules, also inside a layer; and no module longer than MAX_LINES (a long operation is a
package of steps, one module per step)."""

from __future__ import annotations

import os

import grimp
import pytest

from tests.conftest import REPO

PACKAGE = "posthog_compose"
#: The longest a module of the package may be; past it, split it by what its parts do.
MAX_LINES = 600


def test_the_import_contracts_hold(capsys):
    from importlinter.cli import lint_imports

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().out


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE, cache_dir=None)


def test_no_module_of_the_package_is_part_of_an_import_cycle(graph):
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(module):
            return {"a": {"b"}, "b": {"a"}, "c": {"a"}}[module]

    assert _cycles(Graph) == [["a", "b"]]


def _too_long(directory, limit: int) -> list[str]:
    """The modules under ``directory`` longer than ``limit`` lines, with their length, longest first."""
    lengths = {path.relative_to(directory.parent).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in directory.rglob("*.py")}
    return [f"{name}: {count} lines" for name, count in sorted(lengths.items(), key=lambda item: -item[1])
            if count > limit]


def test_no_module_of_the_package_is_longer_than_the_limit():
    assert _too_long(REPO / PACKAGE, MAX_LINES) == []


def test_the_length_check_finds_a_long_module(tmp_path):
    package = tmp_path / "package"
    (package / "steps").mkdir(parents=True)
    (package / "short.py").write_text("x = 1\n" * 3)
    (package / "steps" / "long.py").write_text("x = 1\n" * 4)
    assert _too_long(package, 3) == ["package/steps/long.py: 4 lines"]


def test_an_install_carries_every_package_and_the_templates():
    """pyproject.toml's package selection, as setuptools applies it, takes every directory of the package
    that has an __init__.py (a listed selection once left the step packages out of a wheel), and the
    templates the documents are rendered from."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = dict(config["packages"]["find"])
    # setuptools' default is namespaces = true (find_namespace_packages: every folder); the kit says false.
    assert find.pop("namespaces") is False
    selected = set(find_packages(where=str(REPO), **find))
    present = {str(path.parent.relative_to(REPO)).replace(os.sep, ".")
               for path in (REPO / PACKAGE).rglob("__init__.py")}
    assert present and selected == present, sorted(present ^ selected)
    (templates,) = config["package-data"][f"{PACKAGE}.documents"]
    assert list((REPO / PACKAGE / "documents").glob(templates))

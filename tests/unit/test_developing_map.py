"""docs/developing.md is the map of the code: every file and folder it names in backticks exists, in the
repository or in the package, and every package of steps it lists is one."""

from __future__ import annotations

import re

from tests.conftest import REPO

PAGE = REPO / "docs" / "developing.md"
PACKAGE = REPO / "posthog_compose"


def _named() -> list[str]:
    return sorted({name for name in re.findall(r"`([\w./-]+(?:\.py|/))`", PAGE.read_text())})


def _made_by_runs() -> set[str]:
    """Folders that runs create (test and build output), named in .gitignore: a fresh clone lacks them."""
    return {line.strip() for line in (REPO / ".gitignore").read_text().splitlines() if line.strip().endswith("/")}


def _exists(name: str) -> bool:
    if (REPO / name).exists() or (PACKAGE / name).exists() or name in _made_by_runs():
        return True
    return any(path.relative_to(PACKAGE).as_posix().endswith(name.rstrip("/"))
               for path in PACKAGE.rglob("*") if "__pycache__" not in path.parts)


def test_the_page_names_the_code():
    assert len(_named()) >= 30, _named()


def test_every_file_and_folder_the_page_names_exists():
    missing = [name for name in _named() if not _exists(name)]
    assert not missing, f"docs/developing.md names what does not exist: {missing}"


def test_every_step_package_the_page_lists_has_those_steps():
    listed = re.findall(r"^   - `(\w+)/`: ([\w, ]+)\.$", PAGE.read_text(), re.M)
    assert len(listed) >= 6, listed
    for package, steps in listed:
        folder = next(p for p in PACKAGE.rglob(package) if p.is_dir() and (p / "__init__.py").exists())
        for step in steps.split(", "):
            assert (folder / f"{step}.py").exists(), (package, step)
